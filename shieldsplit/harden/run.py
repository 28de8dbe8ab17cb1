"""``shieldsplit.harden``: the most useful defence setting that the audit cannot break.

For each named defence (and, where a ``compose`` defence is registered, each pair of
cut defences) the search bisects the defence's declared knob (:mod:`.search`) for the
weakest setting whose audit reaches the target verdict at every named attacker position.
Each candidate is trained once (:mod:`shieldsplit.compare.cache`) and audited through
compare's own :func:`~shieldsplit.compare.frontier.evaluate_defense` (one training
loop, one audit), with every applicable attack, the adaptive ones included, against one
undefended control audited once. Utility is measured on the validation split while
searching. The chosen setting of every defence that reached the target is then retrained
with 3 seeds and confirmed on the test split, beside the undefended model on the same
seeds; those seeds, not the search's best trial, are what the result reports and
recommends from.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from torch import nn

from shieldsplit._core.progress import progress_bar
from shieldsplit._core.validate import build_config, check_int
from shieldsplit.attacks.base import Budget
from shieldsplit.audit.auditor import library_versions
from shieldsplit.compare.cache import DefenseCache, as_cache
from shieldsplit.compare.frontier import Evaluation, RunSpec, evaluate_defense, with_adaptive
from shieldsplit.compare.report import DefenseRun, stuck
from shieldsplit.data import ImageDataset, make_loaders
from shieldsplit.datacontract import as_dataset
from shieldsplit.defenses.base import Defense, available_defenses, defense_surfaces, require_knob
from shieldsplit.errors import ConfigError, ShieldSplitError
from shieldsplit.functional.verdict import Tolerance
from shieldsplit.harden.result import (
    Confirmation,
    DefenseSearch,
    DpCheck,
    HardenResult,
    Probe,
    Study,
    Trial,
    Utility,
)
from shieldsplit.harden.search import CONTROL, Candidate, bisect_knob, candidates
from shieldsplit.harden.spec import (
    CONFIRM_SEEDS,
    POSITIONS,
    check_attacks,
    check_budget,
    check_positions,
    check_target,
    check_utility,
    default_attacks,
    ranged_knob,
)
from shieldsplit.harden.study import Outcome, Point, require_optuna, run_study

logger = logging.getLogger(__name__)


def position_verdicts(run: DefenseRun, positions: Sequence[str], name: str
                      ) -> tuple[dict[str, str], list[str]]:
    """Each named position's verdict in ``run`` (``n/a`` where the defence is not deployed
    there, ``no verdict`` where no attack finished), and the sentences of those that are
    not *no leakage found*.

    Example:
        >>> from shieldsplit.audit.results import PositionVerdict
        >>> v = PositionVerdict(position="split", verdict="leaks", sentence="It leaks.",
        ...                     attacks=["split-black-box"])
        >>> run = DefenseRun(defense="laplace", options={}, strength=None, strength_value=None,
        ...                  accuracy=0.9, f1=0.9, train_seconds=1.0, leakage={}, verdicts=[v])
        >>> position_verdicts(run, ["split-server", "federated-server"], "laplace")
        ({'split-server': 'leaks', 'federated-server': 'no verdict'}, ['It leaks.'])
    """
    out: dict[str, str] = {}
    leaks: list[str] = []
    for p in positions:
        position, server = POSITIONS[p]
        v = next((v for v in run.verdicts if v.position == position and v.server == server),
                 None)
        if v is not None:
            out[p] = v.verdict
            if v.verdict != "no leakage found":
                leaks.append(v.sentence)
        elif position != "membership" and position not in defense_surfaces(name):
            out[p] = "n/a"
        else:
            out[p] = "no verdict"
    return out, leaks


def meets_target(verdicts: Mapping[str, str], target: str) -> bool:
    """Every position at ``target`` or not applicable, and at least one at ``target``.

    Example:
        >>> meets_target({"a": "no leakage found", "b": "n/a"}, "no leakage found")
        True
        >>> meets_target({"a": "n/a"}, "no leakage found")
        False
    """
    values = list(verdicts.values())
    return target in values and all(v in (target, "n/a") for v in values)


def metric(run: DefenseRun, utility: str) -> float:
    """The searched utility of a run (on the split it was scored on)."""
    value = {"balanced_accuracy": run.balanced_accuracy, "f1": run.f1,
             "accuracy": run.accuracy}[utility]
    return float(value) if value is not None else float("nan")


def validation_view(data: ImageDataset) -> ImageDataset:
    """``data`` with its validation split in the test split's place: what the search
    scores candidates on (the training data, and so the cache's fingerprint, unchanged)."""
    return dataclasses.replace(data, x_test=data.x_val, y_test=data.y_val)


def lineup_chance(confirmation: Confirmation | None, data: ImageDataset) -> float:
    """The line-up's chance rate in the confirmed runs' audits (``1 / (auxiliary + 1)``),
    else the training split's ``1 / (n + 1)``."""
    for run in confirmation.runs if confirmation is not None else []:
        for res in run.leakage.values():
            chance = getattr(res.evidence, "lineup_chance", None) if res.evidence else None
            if chance:
                return float(chance)
    return 1.0 / (len(data.x_train) + 1)


def failing_below(search: DefenseSearch) -> float | None:
    """The strongest probed value weaker than the chosen one that failed the target: with
    the chosen value, the bracket the boundary lies in (None where nothing weaker failed).

    Example:
        >>> from shieldsplit.defenses.base import require_knob
        >>> from shieldsplit.harden.result import Probe
        >>> run = DefenseRun(defense="dpsgd", options={}, strength=None, strength_value=None,
        ...                  accuracy=0.9, f1=0.9, train_seconds=1.0, leakage={})
        >>> probes = [Probe(value=v, meets=m, positions={}, utility=0.8, run=run)
        ...           for v, m in ((8, True), (1e-4, False), (0.03, True), (0.002, False))]
        >>> failing_below(DefenseSearch(defense="dpsgd", knob=require_knob("dpsgd"),
        ...                             probes=probes, chosen=0.03))
        0.002
    """
    chosen, knob = search.chosen, search.knob
    if chosen is None:
        return None
    weaker = [p.value for p in search.probes if not p.meets and knob.is_stronger(chosen, p.value)]
    if not weaker:
        return None
    return max(weaker) if knob.stronger == "higher" else min(weaker)


def riskcal_check(search: DefenseSearch, confirmation: Confirmation | None,
                  data: ImageDataset, spec: RunSpec,
                  positions: Sequence[str] = ("federated-server",)) -> DpCheck:
    """DP-SGD's empirical setting beside riskcal's calibration for the same target.

    The target in attack terms: a reconstruction that picks the victim out of the audit's
    line-up succeeds with probability at most the DP-SGD trade-off curve's TPR at FPR =
    the line-up's chance rate (reconstruction robustness, Hayes et al. 2023; Kulynych et
    al. 2024), and the audit calls re-identification a leak above chance + its tolerance.
    So riskcal's noise is the least that keeps that TPR at or below chance + tolerance
    (:func:`shieldsplit.functional.dp_risk.compare_noise`), for the training's own
    sampling rate (one over the batches per epoch, as Opacus's accountant) and steps.
    They can differ because riskcal bounds the strongest possible attacker from the
    theory, while the search only measures the attacks that ran
    (:meth:`~shieldsplit.harden.result.DpCheck.words` says which is tighter, by how much
    and why).
    """
    noise = search.chosen
    runs = list(confirmation.runs) if confirmation is not None else []
    chosen = [p.run for p in search.probes if noise is not None and p.value == noise]
    first = next(iter(runs or chosen), None)
    batches = len(make_loaders(data, batch_size=spec.batch_size).train)
    chance = lineup_chance(confirmation, data)
    target = min(0.999, chance + Tolerance().reidentification)
    rate, steps = 1.0 / batches, spec.epochs * batches
    check = DpCheck(
        empirical_noise=noise, epsilon=None if first is None else first.epsilon,
        delta=None if first is None else first.delta,
        target_tpr=target, at_fpr=chance, sample_rate=rate, steps=steps,
        failing_noise=failing_below(search), positions=list(positions),
        attacks=list(spec.attacks),
        holds=[] if confirmation is None else list(confirmation.holds))
    try:
        from shieldsplit.functional import dp_risk

        if noise is None:
            check.riskcal_noise = dp_risk.noise_for_risk(target, chance, sample_rate=rate,
                                                         steps=steps)
        else:
            c = dp_risk.compare_noise(noise, target_tpr=target, at_fpr=chance,
                                      sample_rate=rate, steps=steps)
            check.riskcal_noise, check.riskcal_risk = c.riskcal_noise, c.riskcal_tpr_at_empirical
            check.tighter, check.ratio = c.tighter, c.ratio
            check.riskcal_one_step = dp_risk.noise_for_risk(target, chance, sample_rate=1.0,
                                                            steps=1)
    except ShieldSplitError as exc:  # riskcal absent, or a setting it cannot take
        check.reason = f"The riskcal cross-check was not computed: {exc}"
    check.note = check.words()
    return check


def harden(
    model: nn.Module,
    *,
    data: Any,
    defenses: Sequence[str],
    positions: Sequence[str] | str = ("split-server",),
    target: str = "no leakage found",
    utility: str = "balanced_accuracy",
    budget: Budget = "quick",
    attacks: Sequence[str] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    compose: bool = True,
    cut_depth: bool = True,
    candidates_per_defense: int | None = None,
    confirm_seeds: int = CONFIRM_SEEDS,
    cut: int | str = 2,
    epochs: int = 10,
    batch_size: int = 64,
    victims: int | None = None,
    seed: int = 0,
    cache: DefenseCache | str | Path | None = None,
    progress: bool = True,
) -> HardenResult:
    """Find the most useful defence setting whose audit reaches ``target`` everywhere named.

    Args:
        model: the classifier to defend (copied, never modified).
        data: labelled images in any form of docs/data.md (see :func:`shieldsplit.compare`).
        defenses: registered defences, each with a declared strength (a knob).
        positions: attacker positions that must reach the target: ``split-server``,
            ``federated-server``, their ``-malicious`` forms, ``membership``.
        target: the verdict to reach (``"no leakage found"``).
        utility: what to keep: ``balanced_accuracy``, ``f1`` (macro) or ``accuracy``.
        budget: ``quick`` / ``standard`` / ``thorough``: the audit's budget and the
            candidates per defence (4 / 6 / 8: both ends, then bisection).
        attacks: the attacks (default: at each named position, the audit's own default set
            at ``budget`` for these images; the adaptive ones are added).
        ranges: ``name -> (low, high)`` narrowing a defence's declared range (its ends
            must then give different verdicts).
        compose: also search pairs of cut defences through a registered ``compose``.
        cut_depth: also search the cut as a knob, from ``cut`` to the model's deepest
            (where a split position is named): a deeper cut alone, and every defence
            deployed at the split with its own knob and the cut (a seeded Optuna study).
        candidates_per_defense: the most candidates probed per defence (default: the
            budget's; at least 2, both ends of the range).
        confirm_seeds: seeds the chosen settings are confirmed with on the test split.
        cut: the cut of every defence (the shallowest searched where ``cut_depth``).
        epochs: training epochs of every candidate.
        batch_size: training batch size.
        victims: victim images per audit (default: the budget's).
        seed: seeds the search; the confirmation uses it and the next two.
        cache: a :class:`~shieldsplit.compare.cache.DefenseCache` or a folder shared with
            ``compare`` (default: in memory, for this call).
        progress: show progress (candidates done out of the search's bound).

    Returns:
        The result; ``.defense`` is the trained recommended defence.

    Raises:
        ConfigError: an unknown defence or position; a defence without a declared
            strength; a target no named position supports; a utility the data cannot
            give; a given range outside the declared one, or whose ends give the same
            verdict.
        InvalidCutError: ``cut`` is not a valid cut of ``model``.
        ShieldSplitError: optuna is not installed (``pip install -e ".[harden]"``).

    Example:
        >>> import shieldsplit as ss
        >>> from shieldsplit.data import load_dataset
        >>> ds = load_dataset("digits", seed=0, limit=90)
        >>> net = ss.PGSLNet(num_classes=10, image_size=8, width=8, hidden=16)
        >>> harden(net, data=ds, defenses=["none"], progress=False)
        Traceback (most recent call last):
        ...
        shieldsplit.errors.ConfigError: ...
    """
    valid = available_defenses()
    names = list(dict.fromkeys(defenses))
    for name in names:
        if name not in valid:
            raise ConfigError.build(what="defenses", expected=f"names from {valid}",
                                    received=repr(name), fix="pick registered defences")
    if not names:
        raise ConfigError.build(what="defenses", expected="at least one defence",
                                received="none", fix="pass defenses=['laplace']")
    declared = {n: require_knob(n) for n in names}
    for name in ranges or {}:
        if name not in names:
            raise ConfigError.build(what="ranges", expected=f"keys among {names}",
                                    received=repr(name), fix="drop it or search that defence")
    knobs = {n: ranged_knob(n, k, ranges) for n, k in declared.items()}
    pos = check_positions(positions, names)
    check_target(target, pos, names)
    per = check_budget(budget) if candidates_per_defense is None else check_int(
        "candidates_per_defense", candidates_per_defense, low=2,
        fix="pass 2 or more (both ends of the range), or None for the budget's")
    n_seeds = check_int("confirm_seeds", confirm_seeds, low=1, fix="pass 3")
    if attacks is not None:
        check_attacks(attacks, pos)
    if attacks is not None and not attacks:
        raise ConfigError.build(
            what="attacks", expected="at least one attack at the named positions",
            received="attacks=[]",
            fix="pass attacks=None for the audit's default set at each position")
    if not [p for p in pos if p != "membership"]:
        raise ConfigError.build(
            what="positions", expected="a reconstruction position beside 'membership'",
            received=repr(pos), fix="add 'split-server' (membership is audited beside it)")
    data = as_dataset(data, model=model, seed=seed)
    asked = list(attacks) if attacks is not None else default_attacks(
        pos, budget, image_shape=tuple(data.x_train.shape[1:]))
    check_utility(utility, data)
    require_optuna()  # a study searches two knobs, or a knob that is not monotone
    deeper = cut_depth and any(POSITIONS[p][0] == "split" for p in pos)
    cands, notes = candidates(names, {n: k for n, (k, _) in knobs.items()}, model=model,
                              cut=cut, compose=compose, deeper=deeper)
    parts = [n for c in cands for n, _ in c.parts]
    run_attacks = with_adaptive(asked, [*names, *parts])
    spec = build_config(RunSpec, dict(attacks=tuple(run_attacks), cut=cut, epochs=epochs,
                                      batch_size=batch_size, budget=budget, victims=victims,
                                      seed=seed, membership="membership" in pos,
                                      progress=False),
                        fix="see the options of shieldsplit.harden")
    from shieldsplit._core.provenance import machine_info

    result = HardenResult(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        dataset=data.summary().splitlines()[0], model=type(model).__name__, cut=cut,
        epochs=epochs, budget=budget, seed=seed, positions=pos, target=target,
        utility=utility, attacks=list(run_attacks), candidates_bound=per * len(cands),
        machine=machine_info(), versions=library_versions(),
        notes=notes)
    store = as_cache(cache) or DefenseCache()
    given = {c.label: knobs[c.label][1] if c.label in knobs else False for c in cands}
    try:
        _search(result, model, data, cands, given, spec, store, per, progress)
        _confirm(result, model, data, cands, spec, store, n_seeds, progress)
    except KeyboardInterrupt:
        result.complete = False
        logger.warning("harden cancelled; the result is partial")
    return result


class Searcher:
    """The search's state: one undefended control per cut (audited once, on first use),
    every setting audited once across candidates (``laplace+cut`` at the run's cut reads
    back ``laplace``'s probe), and the progress slots.

    Args:
        result: the result the probes and controls are recorded in.
        model: the classifier to defend.
        view: the data scored on (the validation split in the test split's place).
        spec: how candidates are trained and audited (its ``cut`` is the run's).
        store: the training cache.
        slot: the progress bar's slots (one per probe).
    """

    def __init__(self, result: HardenResult, model: nn.Module, view: ImageDataset,
                 spec: RunSpec, store: DefenseCache, slot: Iterator[int]) -> None:
        self.result, self.model, self.view, self.spec = result, model, view, spec
        self.store, self.slot = store, slot
        self.controls: dict[int | str, Evaluation] = {}
        self.seen: dict[tuple[str, str, int | str], Probe] = {}

    def control(self, cut: int | str) -> Evaluation:
        """The undefended model at ``cut``, trained and audited once."""
        if cut not in self.controls:
            ev = evaluate_defense(self.model, self.view, CONTROL, {},
                                  self.spec.model_copy(update={"cut": cut}), "auto",
                                  cache=self.store)
            self.controls[cut] = ev
            self.result.controls[str(cut)] = ev.run
        return self.controls[cut]

    @property
    def base_utility(self) -> float:
        """The undefended control's searched utility at the run's cut."""
        return metric(self.control(self.spec.cut).run, self.result.utility)

    def probe(self, cand: Candidate, search: DefenseSearch, point: Point,
              method: str) -> Probe:
        """Train and audit ``cand`` at ``point`` against the control at its cut (or read
        the setting back), and record the probe in ``search``."""
        next(self.slot, None)
        self.result.candidates_run += 1
        cut = cand.cut_at(point, self.spec.cut)
        options = cand.options(point[0])
        key = (cand.name, json.dumps(options, sort_keys=True, default=str), cut)
        found = self.seen.get(key)
        if found is None:
            control = self.control(cut)
            ev = control if cand.name == CONTROL and not options else evaluate_defense(
                self.model, self.view, cand.name, options,
                self.spec.model_copy(update={"cut": cut}), control.report, cache=self.store)
            verdicts, leaks = position_verdicts(ev.run, self.result.positions, cand.name)
            is_stuck = stuck(ev.run)
            found = Probe(value=point[0], cut=cut,
                          meets=meets_target(verdicts, self.result.target) and not is_stuck,
                          positions=verdicts, leaks=leaks,
                          utility=metric(ev.run, self.result.utility), stuck=is_stuck,
                          run=ev.run)
            self.seen[key] = found
        made = found.model_copy(update={"value": point[0], "cut": cut, "method": method})
        search.probes.append(made)
        return made

    def outcome(self, probe: Probe) -> Outcome:
        """What a probe tells a study: whether it meets, its utility cost against the
        undefended control, and how far it misses the target (positions failing, and one
        more for a model stuck at one class)."""
        missing = sum(v not in (self.result.target, "n/a") for v in probe.positions.values())
        return Outcome(meets=probe.meets, cost=self.base_utility - probe.utility,
                       violation=0.0 if probe.meets else float(max(1, missing + probe.stuck)))

    def study(self, cand: Candidate, search: DefenseSearch, *, bound: int, why: str,
              start: Sequence[Point] = ()) -> Point | None:
        """A seeded Optuna study of ``cand`` within ``bound`` new probes (the probes
        already in ``search`` told to it first); records it in ``search``."""
        known = {point_of(cand, p): self.outcome(p) for p in search.probes}
        utilities: dict[Point, float] = {}

        def evaluate(point: Point) -> Outcome:
            try:
                p = self.probe(cand, search, point, "optuna")
            except ShieldSplitError as exc:  # a setting that cannot be built or trained
                utilities[point] = float("nan")
                return Outcome(meets=False, cost=float("inf"),
                               violation=float(len(self.result.positions) + 1),
                               error=str(exc).splitlines()[0])
            utilities[point] = p.utility
            return self.outcome(p)

        trace = run_study(cand.knobs, evaluate, bound=bound, seed=self.result.seed,
                          known=known, start=start)
        for p in search.probes:
            utilities.setdefault(point_of(cand, p), p.utility)
        search.study = Study(
            seed=trace.seed, why=why, bound=bound,
            stopped=trace.stopped or ("" if bound else "the bisection spent the bound: "
                                      "pass a larger candidates_per_defense"),
            trials=[Trial(number=t.number,
                          values={k.option: v for k, v in zip(cand.knobs, t.point, strict=True)},
                          meets=t.outcome.meets, utility=_finite(utilities.get(t.point)),
                          cost=_finite(t.outcome.cost), probed=t.probed, error=t.outcome.error)
                    for t in trace.trials])
        return trace.chosen

    def search(self, cand: Candidate, search: DefenseSearch, per: int
               ) -> list[tuple[float, bool]]:
        """Search one candidate: a study over two knobs; else bisection, then a study
        where the bisection's verdicts are not monotone.

        Returns:
            The bisection's first two probes (both ends of the range), if it ran.
        """
        if cand.depth is not None:
            ends = [tuple(k.strongest for k in cand.knobs), tuple(k.weakest for k in cand.knobs)]
            chosen = self.study(cand, search, bound=per, start=ends,
                                why=f"two knobs: {cand.knob.option} and the cut")
            if chosen is not None:
                search.chosen, search.chosen_cut = chosen[0], cand.cut_at(chosen, self.spec.cut)
            return []
        trace = bisect_knob(cand.knob, lambda v: self.probe(cand, search, (v,),
                                                            "bisection").meets, bound=per)
        search.monotone = trace.monotone
        value = trace.chosen
        if not trace.monotone:
            point = self.study(cand, search, bound=per - len(trace.probes),
                               why="the bisection's verdicts are not monotone")
            value = value if point is None else point[0]
        if value is not None:
            search.chosen, search.chosen_cut = value, cand.cut_at((value,), self.spec.cut)
        return trace.probes[:2]


def point_of(cand: Candidate, probe: Probe) -> Point:
    """The setting of ``cand`` that ``probe`` tried (one value per knob)."""
    if cand.depth is None:
        return (probe.value,)
    return (probe.value, float(probe.cut) if isinstance(probe.cut, int) else 0.0)


def check_ends(cand: Candidate, ends: list[tuple[float, bool]], target: str) -> None:
    """Refuse a given range whose two ends gave the same verdict.

    Raises:
        ConfigError: both ends meet, or both fail, ``target``.
    """
    if len(ends) == 2 and ends[0][1] == ends[1][1]:
        verdict = "meet" if ends[0][1] else "fail"
        raise ConfigError.build(
            what=f"ranges[{cand.label!r}]",
            expected="a range whose weak end fails the target and strong end meets it",
            received=f"{cand.knob.low:g}..{cand.knob.high:g}, where both ends "
                     f"{verdict} {target!r}",
            fix="widen the range (or drop it to search the declared one)")


def _search(result: HardenResult, model: nn.Module, data: ImageDataset,
            cands: list[Candidate], given: dict[str, bool], spec: RunSpec,
            store: DefenseCache, per: int, progress: bool) -> None:
    with progress_bar(range(result.candidates_bound), total=result.candidates_bound,
                      description="harden: candidates", enabled=progress) as slots:
        slot: Iterator[int] = iter(slots)
        searcher = Searcher(result, model, validation_view(data), spec, store, slot)
        result.control = searcher.control(spec.cut).run
        for cand in cands:
            search = DefenseSearch(defense=cand.label, knob=cand.knob, depth=cand.depth)
            result.searches.append(search)
            try:
                ends = searcher.search(cand, search, per)
            except ShieldSplitError as exc:  # a candidate that cannot be built or trained
                search.error = str(exc).splitlines()[0]
                continue
            if given.get(cand.label):
                check_ends(cand, ends, result.target)
        for _ in slot:  # the bound not spent (a boundary found early): the bar completes
            pass


def _confirm(result: HardenResult, model: nn.Module, data: ImageDataset,
             cands: list[Candidate], spec: RunSpec, store: DefenseCache, n_seeds: int,
             progress: bool) -> None:
    seeds = [result.seed + i for i in range(n_seeds)]
    chosen = [s for s in result.searches if s.chosen is not None]
    base_cut = spec.cut
    work = [(CONTROL, None, None, base_cut),
            *[(s.defense, s, s.chosen, base_cut if s.chosen_cut is None else s.chosen_cut)
              for s in chosen]]
    controls: dict[tuple[int, int | str], Evaluation] = {}
    first: dict[str, Defense] = {}
    labels = {c.label: c for c in cands}

    def control(seed: int, cut: int | str) -> Evaluation:
        if (seed, cut) not in controls:
            seeded = spec.model_copy(update={"seed": seed, "cut": cut})
            controls[seed, cut] = evaluate_defense(model, data, CONTROL, {}, seeded, "auto",
                                                   cache=store)
        return controls[seed, cut]

    with progress_bar(work, total=len(work), description="harden: confirm on test",
                      enabled=progress) as todo:
        for label, search, value, cut in todo:
            runs = []
            for s in seeds:
                cand = labels.get(label)
                if cand is None or value is None or (cand.name == CONTROL
                                                     and not cand.options(value)):
                    ev = control(s, cut)
                else:
                    seeded = spec.model_copy(update={"seed": s, "cut": cut})
                    ev = evaluate_defense(model, data, cand.name, cand.options(value), seeded,
                                          control(s, cut).report, cache=store)
                first.setdefault(label, ev.defense)
                runs.append(ev.run)
            conf = _confirmation(label, value, seeds, runs, result, search)
            if label == CONTROL:
                result.baseline = conf
            else:
                conf.cut = cut
                result.confirmations.append(conf)
    for c in result.confirmations:
        base = result.baseline
        if base is not None:
            c.balanced_accuracy_cost = Utility.of(
                [b - a for a, b in zip(c.balanced_accuracy.values, base.balanced_accuracy.values,
                                       strict=True)])
            c.f1_cost = Utility.of([b - a for a, b in zip(c.f1.values, base.f1.values,
                                                         strict=True)])
    ok = [c for c in result.confirmations if c.confirmed]
    if ok:
        best = max(ok, key=lambda c: _mean([metric(r, result.utility) for r in c.runs]))
        result.recommend(best.defense, first[best.defense])
    dp = next((s for s in result.searches if s.defense == "dpsgd"), None)
    if dp is not None:
        result.dp = riskcal_check(dp, result.confirmation("dpsgd"), data, spec,
                                  positions=result.positions)


def _finite(value: float | None) -> float | None:
    """``value``, or None for a missing, NaN or infinite one (what JSON can hold)."""
    return value if value is not None and math.isfinite(value) else None


def _mean(values: list[float]) -> float:
    """The mean, NaN-free (a NaN utility ranks last)."""
    clean = [v for v in values if not math.isnan(v)]
    return sum(clean) / len(clean) if clean else float("-inf")


def _confirmation(label: str, value: float | None, seeds: list[int], runs: list[DefenseRun],
                  result: HardenResult, search: DefenseSearch | None) -> Confirmation:
    holds, stucks = [], []
    for r in runs:
        verdicts, _ = position_verdicts(r, result.positions, r.defense)
        holds.append(meets_target(verdicts, result.target))
        stucks.append(stuck(r))
    return Confirmation(
        defense=label, value=value, seeds=seeds, runs=runs, holds=holds, stuck=stucks,
        balanced_accuracy=Utility.of([float(r.balanced_accuracy or 0.0) for r in runs]),
        f1=Utility.of([float(r.f1) for r in runs]))


__all__ = ["harden", "meets_target", "metric", "position_verdicts", "riskcal_check",
           "validation_view"]
