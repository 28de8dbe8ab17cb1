"""``shieldsplit.compare.frontier``: train every defence on the same split, audit each the same way.

For each defence (and each point of a strength sweep) :func:`compare` builds it
around a fresh copy of the user's model, trains it with its own protocol
(:meth:`~shieldsplit.defenses.base.Defense.train_protocol`: DP-SGD through Opacus,
latent perturbation with its noise pre-training, PGSL with its three streams, ...)
on the same training split, scores accuracy and macro F1 on the same test split,
and runs the same attacks of :func:`shieldsplit.audit` on the same victim images.
The result is the privacy-utility frontier: a table and an accuracy-vs-leakage
plot in which a swept defence is a curve (as in Fig. 4 of Jiang et al. 2025).

An attack that does not apply to a defence (the federated attacks on PGSL, a split
learning protocol that never sends weight updates) is reported as ``n/a``, not
skipped silently.

The undefended run (``"none"``, added first when it is not asked for) is every other
defence's positive control: each defence's verdicts say *no leakage found* only where the
same attack, on the same victims, leaked on it (see ``docs/audit.md``). Accuracy is
reported with balanced accuracy and the test split's majority-class rate, since medical
labels are imbalanced.

Example:
    >>> import shieldsplit as ss
    >>> from shieldsplit.data import load_dataset
    >>> ds = load_dataset("digits", seed=0, limit=120)
    >>> net = ss.PGSLNet(num_classes=10, image_size=8, width=8, hidden=16)
    >>> table = ss.compare(net, data=ds, defenses=["none", "laplace"], epochs=1, seed=0,
    ...                    attacks=["split-black-box"], victims=8, progress=False)
    >>> [(r.defense, r.leakage["split-black-box"].status) for r in table.rows]
    [('none', 'ok'), ('laplace', 'ok')]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import torch
from pydantic import ConfigDict
from sklearn.metrics import balanced_accuracy_score, f1_score
from torch import nn

from shieldsplit._core.progress import progress_bar
from shieldsplit._core.validate import build_config
from shieldsplit.attacks.base import Budget, attack_class, available_attacks
from shieldsplit.audit.auditor import (
    AttackResult,
    AuditReport,
    audit,
    decide_results,
    defense_attacks,
    library_versions,
    membership_verdict,
)
from shieldsplit.audit.membership import decide_membership_report, heldout_of
from shieldsplit.compare.cache import DefenseCache, as_cache, train_defense
from shieldsplit.compare.report import (
    CompareTable,
    DefenseRun,
    MatchedPair,
    dp_sentence,
    match_by_accuracy,
    matched_on,
    membership_curves,
    number_or_none,
    render_html,
    run_label,
    stuck,
)
from shieldsplit.data import ImageDataset
from shieldsplit.datacontract import as_dataset
from shieldsplit.defenses.base import (
    Defense,
    available_defenses,
    defense_knob,
    defense_options,
    merge_options,
)
from shieldsplit.errors import ConfigError
from shieldsplit.functional.stats import majority_rate
from shieldsplit.functional.verdict import Tolerance
from shieldsplit.settings import AuditSettings, TrainSettings

logger = logging.getLogger(__name__)

#: The two threat models of issue 4's frontier: the federated Inverting Gradients attack
#: on a 5-local-epoch update of batch 8, and the split-learning black-box decoder.
DEFAULT_ATTACKS = ("inverting-gradients-fedavg", "split-black-box")


class RunSpec(TrainSettings, AuditSettings):
    """How every defence of a comparison is trained and audited: the one source of the
    options :func:`compare` and :func:`run_defense` share (and of what a result records),
    built from the run-settings family (:mod:`shieldsplit.settings`).

    Attributes:
        attacks: audit attack names; those whose threat model does not apply to a
            defence are reported as ``n/a``.
        cut: the cut of every defence.
        epochs: training epochs of every defence (and of the audit's undefended twin).
        batch_size: training batch size.
        budget: the audit budget.
        victims: victim images per audit (None: the budget's).
        seed: seeds the model copies, training, the victim split and the attacks.
        membership: also run membership inference (see :func:`compare`).
        progress: show progress bars.

    Example:
        >>> RunSpec(epochs=2, attacks=("split-black-box",)).budget
        'quick'
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    membership: bool = True



def fitting_defenses(attacks: Sequence[str] = DEFAULT_ATTACKS) -> list[str]:
    """Every registered defence that one of ``attacks`` can observe: what :func:`compare`
    (and ``shieldsplit compare``) compare when no defences are named.

    A defence fits when an attack's position (``split`` or ``federated``) is among the
    surfaces it declares; read from the declarations, so a defence registered later (a
    plugin) is compared with no other edit.

    Args:
        attacks: the audit's attacks.

    Returns:
        Defence names, sorted.

    Example:
        >>> "pgsl" in fitting_defenses(), "pgsl" in fitting_defenses(["idlg"])
        (True, False)
    """
    positions = {attack_class(a).position() for a in attacks}
    return sorted({d for p in positions if p in ("split", "federated")  # others: no surface
                   for d in available_defenses(surface=p)})


def not_applicable(attack: str, defense: str) -> AttackResult:
    """A comparison's cell for an attack at a position where ``defense`` is not deployed
    (``status="n/a"``: nothing to attack, not a missing measurement).

    Example:
        >>> cell = not_applicable("imprint", "pgsl")
        >>> cell.status, cell.error
        ('n/a', 'pgsl is not deployed under this threat model')
    """
    return AttackResult(attack=attack, threat_model="-", observes="-", images=0, seconds=0.0,
                        status="n/a", error=f"{defense} is not deployed under this threat model")


def with_adaptive(attacks: Sequence[str], defenses: Sequence[str]) -> tuple[str, ...]:
    """``attacks`` plus every registered attack that declares it adapts to one of
    ``defenses`` (a defence's *no leakage found* needs them; read from the declarations).

    Args:
        attacks: the attacks asked for.
        defenses: the defence names compared.

    Returns:
        The attacks to run, the asked ones first.

    Example:
        >>> with_adaptive(["split-black-box"], ["none", "pgsl"])
        ('split-black-box', 'adaptive-split')
        >>> with_adaptive(["split-black-box"], ["laplace"])
        ('split-black-box',)
    """
    extra = [a for a in available_attacks("reconstruction") if a not in attacks
             and any(d in attack_class(a, "reconstruction").adapts_to for d in defenses)]
    return (*attacks, *extra)


def redecide(table: CompareTable, tolerance: Tolerance | None = None) -> CompareTable:
    """Decide every row of a stored table again under the current rule, from its stored
    evidence (the attacks', their controls' and membership's): what a results page
    renders, so it never quotes a verdict the rule no longer gives.

    Args:
        table: a comparison (changed in place).
        tolerance: the rule's tolerance (default: the table's own).

    Returns:
        The same table.
    """
    if tolerance is not None:
        table.tolerance = tolerance
    for run in table.rows:
        redecide_run(run, table.tolerance)
    return table


def redecide_run(run: DefenseRun, tolerance: Tolerance | None = None) -> DefenseRun:
    """Decide one stored run again under the current rule (its attacks against their
    controls, and its membership audit); old records are completed with exact bounds first,
    and a record without its setting or upper bounds cannot give *no leakage found*.

    Args:
        run: a frontier point or a reproduction cell (changed in place).
        tolerance: the rule's tolerance (default: ``Tolerance()``).

    Returns:
        The same run.

    Example:
        >>> from shieldsplit.audit.auditor import AttackResult
        >>> r = AttackResult(attack="dlg", threat_model="t", observes="gradient", images=8,
        ...                  seconds=1.0, verdict="leaks")  # no evidence: not a leak
        >>> run = DefenseRun(defense="none", options={}, strength=None, strength_value=None,
        ...                  accuracy=0.8, f1=0.5, train_seconds=1.0, leakage={"dlg": r})
        >>> redecide_run(run).leakage["dlg"].verdict
        'inconclusive'
    """
    tol = tolerance or Tolerance()
    results = [r for r in run.leakage.values() if r.status != "n/a"]
    run.verdicts = decide_results(results, defense=run.defense, tolerance=tol)
    if run.membership is not None:
        decide_membership_report(run.membership, tol)
        run.verdicts.append(membership_verdict(run.membership))
    return run


def _specs(
    defenses: Sequence[str | tuple[str, Mapping[str, Any]]],
    sweeps: Mapping[str, Sequence[float]] | None,
) -> list[tuple[str, dict[str, Any]]]:
    valid = available_defenses()
    specs: list[tuple[str, dict[str, Any]]] = []
    for item in defenses:
        name, opts = (item, {}) if isinstance(item, str) else (item[0], dict(item[1]))
        if name not in valid:
            raise ConfigError.build(
                what="defenses", expected=f"names from {valid}", received=repr(name),
                fix="pick registered defences (shieldsplit.available_defenses())",
            )
        specs.append((name, opts))
    for name in sweeps or {}:
        if name not in [n for n, _ in specs]:
            raise ConfigError.build(
                what="sweeps", expected=f"keys among the compared defences {[n for n, _ in specs]}",
                received=repr(name), fix="add the defence to defenses= or drop the sweep",
            )
    return specs


def _utility(model: nn.Module, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[float, float, float, int]:
    """Accuracy, balanced accuracy, macro F1 and the classes predicted, of a trained defence."""
    preds = []
    with torch.no_grad():
        for i in range(0, len(x), 256):
            preds.append(model.predict_proba(x[i:i + 256]).argmax(-1)  # type: ignore[operator]
                         if hasattr(model, "predict_proba") else model(x[i:i + 256]).argmax(-1))
    p = torch.cat(preds)
    acc = float((p == y).double().mean())
    return (acc, float(balanced_accuracy_score(y.numpy(), p.numpy())),
            float(f1_score(y.numpy(), p.numpy(), average="macro", zero_division=0)),
            len(torch.unique(p)))


def compare(
    model: nn.Module,
    *,
    data: Any,
    defenses: Sequence[str | tuple[str, Mapping[str, Any]]] | None = None,
    sweeps: Mapping[str, Sequence[float]] | None = None,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    cut: int | str = 2,
    epochs: int = 10,
    batch_size: int = 64,
    budget: Budget = "quick",
    victims: int | None = None,
    seed: int = 0,
    membership: bool = True,
    progress: bool = True,
    cache: DefenseCache | str | Path | None = None,
) -> CompareTable:
    """Train each defence on the same split and audit each with the same attacks.

    Args:
        model: the classifier to defend; every defence gets its own copy (the model is
            never modified), so all start from the same weights.
        data: labelled images in any form of docs/data.md. An ``ImageDataset``
            (``shieldsplit.data.load_dataset``) is used as split; any other form (a
            ``TensorDataset``, a DataLoader, an ``(x, y)`` pair) gets a seeded stratified
            70/15/15 split (``ImageDataset.from_tensors``). The train split trains and is
            the audit's victims/auxiliary pool; the test split scores accuracy and F1.
        defenses: registered names, or ``(name, options)`` pairs (default: every
            registered defence that one of ``attacks`` can observe,
            :func:`fitting_defenses`). ``"none"`` (the undefended split, every other
            defence's positive control) runs first and is added when absent.
        sweeps: ``name -> values`` of the defence's strength option (e.g.
            ``{"laplace": [0.1, 0.5, 1.0]}``); each value is one run, drawn as a curve.
        attacks: audit attack names (default: federated IG on a FedAvg update and the
            split black-box decoder); every attack that declares it adapts to a compared
            defence is added (a *no leakage found* needs it), ``n/a`` for the others.
        cut: the cut of every defence.
        epochs: training epochs of every defence.
        batch_size: training batch size.
        budget: the audit budget.
        victims: victim images per audit (default: the budget's).
        seed: seeds model copies, training, the victim split and the attacks.
        membership: also run membership inference on every defence (its victims as
            members, the validation and test images as non-members; reference models
            trained with each defence's recipe, cached by seed and recipe, the
            overfitted control shared by every defence). A column per defence, DP-SGD's
            epsilon beside the TPR bound it implies, and the ROC curves in the HTML.
        progress: show progress bars.
        cache: a :class:`~shieldsplit.compare.cache.DefenseCache` or a folder: a setting
            already trained there (same model, data, defence, options, cut, seed,
            epochs) is read back instead of trained (``harden`` shares it).

    Returns:
        The frontier table. Ctrl-C returns what finished, marked ``complete=False``.

    Raises:
        ConfigError: an unknown defence, attack or sweep key, or a bad option.
        InputShapeError, LabelError, UnsupportedModelError: data or a model that breaks
            the data contract of docs/data.md (checked before any training).

    Reference:
        Jiang, Firouzi, Chakrabarty 2025 (Fig. 4); Khowaja et al. 2022 (Table I).
    """
    specs = _specs(fitting_defenses(attacks) if defenses is None else defenses, sweeps)
    attacks = with_adaptive(attacks, [n for n, _ in specs])
    spec = build_config(RunSpec, dict(attacks=tuple(attacks), cut=cut, epochs=epochs,
                         batch_size=batch_size, budget=budget, victims=victims, seed=seed,
                         membership=membership, progress=progress),
                        fix="see the options of shieldsplit.compare.frontier")
    data = as_dataset(data, model=model, seed=seed)  # the one data contract (docs/data.md)
    if "none" not in [n for n, _ in specs]:
        specs.insert(0, ("none", {}))
    specs.sort(key=lambda spec: spec[0] != "none")  # the control first
    from shieldsplit._core.provenance import machine_info

    table = CompareTable(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        dataset=data.summary().splitlines()[0], model=type(model).__name__, cut=cut,
        budget=budget, seed=seed, epochs=epochs, attacks=list(attacks),
        victims=victims or 0, machine=machine_info(), versions=library_versions(),
    )
    for name, _ in specs:  # a bad sweep fails now, not after hours of other rows
        if name in (sweeps or {}) and defense_knob(name) is None:
            raise ConfigError.build(
                what="sweeps", expected=f"a defence with a strength option ({name!r} has none)",
                received=repr(name), fix="drop its sweep",
            )
    store = as_cache(cache)
    runs: list[tuple[str, dict[str, Any], float | None]] = []
    for name, opts in specs:
        for value in (sweeps or {}).get(name, [None]):
            runs.append((name, opts, value))
    try:
        with progress_bar(runs, total=len(runs), description="compare",
                          enabled=progress) as todo:
            control: AuditReport | None = None
            for name, opts, value in todo:
                options = dict(opts)
                knob = defense_knob(name)
                if value is not None and knob is not None:  # checked above: it has one
                    options = merge_options(options, defense_options(name, knob.fields(value)))
                row, report, _ = evaluate_defense(model, data, name, options, spec,
                                                  "auto" if name == "none" else control,
                                                  cache=store)
                if name == "none" and value is None:
                    control = report
                if row.victims:
                    table.victims = row.victims
                table.rows.append(row)
    except KeyboardInterrupt:
        table.complete = False
        logger.warning("compare cancelled; the table is partial")
    return table


def run_defense(
    model: nn.Module,
    data: Any,
    name: str,
    *,
    options: Mapping[str, Any] | None = None,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    cut: int | str = 2,
    epochs: int = 10,
    batch_size: int = 64,
    budget: Budget = "quick",
    victims: int | None = None,
    seed: int = 0,
    progress: bool = True,
    control: Any = "auto",
    membership: bool = False,
    cache: DefenseCache | str | Path | None = None,
) -> DefenseRun:
    """Train one defence with its own protocol, score its utility, audit it: one frontier point.

    Args:
        model: the classifier to defend (copied, never modified).
        data: labelled images in any form of docs/data.md (see :func:`compare`): train
            split to train and audit on, test split for accuracy.
        name: a registered defence.
        options: its keyword options (besides cut and seed).
        attacks: audit attacks; those whose threat model does not apply get ``n/a``;
            the attacks that declare they adapt to ``name`` are added.
        cut: the defence's cut.
        epochs: training epochs.
        batch_size: training batch size.
        budget: the audit budget.
        victims: victim images of the audit (default: the budget's).
        seed: seeds the copy, training, the victim split and the attacks.
        progress: show progress bars.
        control: the audit's positive control (see :func:`shieldsplit.audit`): ``"auto"``
            trains the undefended twin for ``epochs``; pass the undefended run's
            :class:`~shieldsplit.audit.auditor.AuditReport` to reuse it.
        membership: also run membership inference (see :func:`compare`); off by
            default here, so the paper reproductions and the frontier, which report
            reconstruction, do not pay for it.
        cache: a :class:`~shieldsplit.compare.cache.DefenseCache` or a folder (see
            :func:`compare`).

    Returns:
        The run.

    Raises:
        ConfigError: an unknown defence, option or attack.
        KeyboardInterrupt: when the audit was cancelled (nothing partial is returned).

    Example:
        >>> from shieldsplit.data import load_dataset
        >>> from shieldsplit.models import PGSLNet
        >>> ds = load_dataset("digits", seed=0, limit=64)
        >>> net = PGSLNet(num_classes=10, image_size=8, width=8, hidden=16)
        >>> run = run_defense(net, ds, "laplace", options={"scale": 0.5}, epochs=1,
        ...                   attacks=["split-black-box"], victims=8, progress=False)
        >>> run.defense, run.strength, run.strength_value, run.leakage["split-black-box"].status
        ('laplace', 'scale', 0.5, 'ok')
    """
    spec = build_config(RunSpec, dict(attacks=with_adaptive(attacks, [name]), cut=cut,
                         epochs=epochs, batch_size=batch_size, budget=budget, victims=victims,
                         seed=seed, membership=membership, progress=progress),
                        fix="see the options of shieldsplit.compare.frontier")
    data = as_dataset(data, model=model, seed=seed)
    return evaluate_defense(model, data, name, dict(options or {}), spec, control,
                            cache=as_cache(cache)).run


class Evaluation(NamedTuple):
    """One defence trained, scored and audited (:func:`evaluate_defense`).

    Attributes:
        run: the frontier point (utility on ``data``'s test split, verdicts).
        report: the audit's report (None when no attack applied).
        defense: the trained defence.
    """

    run: DefenseRun
    report: AuditReport | None
    defense: Defense


def evaluate_defense(
    model: nn.Module, data: ImageDataset, name: str, options: Mapping[str, Any],
    spec: RunSpec, control: Any, *, cache: DefenseCache | None = None,
) -> Evaluation:
    """Train one defence (or read it from ``cache``), score it on ``data``'s test split
    and audit it: what :func:`compare`, :func:`run_defense` and ``harden`` each do per
    setting (one training loop, one audit).

    Args:
        model: the classifier to defend (copied, never modified).
        data: the split data (``harden`` passes one whose test split is the validation
            split while it searches).
        name: a registered defence.
        options: its keyword options.
        spec: how it is trained and audited.
        control: the audit's positive control (see :func:`run_defense`).
        cache: trained settings (see :mod:`shieldsplit.compare.cache`).

    Returns:
        The run, the audit's report and the trained defence.

    Raises:
        KeyboardInterrupt: the audit was cancelled.
    """
    # Noisy defences draw from torch's global generator: seed it here, so a run's numbers
    # depend on its seed only, not on what ran before it (a resumed sweep = an unbroken one).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return _train_and_audit(model, data, name, dict(options), spec, control, cache)


def _train_and_audit(
    model: nn.Module, data: ImageDataset, name: str, options: dict[str, Any], spec: RunSpec,
    control: Any, cache: DefenseCache | None,
) -> Evaluation:
    seed, attacks = spec.seed, spec.attacks
    defense, train_seconds = train_defense(
        model, data, name, options, cut=spec.cut, seed=seed, epochs=spec.epochs,
        batch_size=spec.batch_size, progress=spec.progress, cache=cache)
    strength = defense.strength
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        acc, bal, f1, predicted = _utility(defense, data.x_test, data.y_test)
        val_acc = _utility(defense, data.x_val, data.y_val)[0] if len(data.x_val) else None
    applicable = set(defense_attacks(defense))
    runnable = [a for a in attacks if a in applicable]
    leakage: dict[str, AttackResult] = {}
    dcor = None
    audited = 0
    report: AuditReport | None = None
    if runnable:
        report = audit(defense, data=(data.x_train, data.y_train), budget=spec.budget,
                       seed=seed, attacks=runnable, victims=spec.victims,
                       progress=spec.progress, control=control, control_epochs=spec.epochs,
                       batch_size=spec.batch_size,
                       heldout=heldout_of(data) if spec.membership else None)
        audited = report.victims
        leakage = {r.attack: r for r in report.results}
        dcor = report.distance_correlation
        if not report.complete:
            raise KeyboardInterrupt
    for a in attacks:
        if a not in applicable:
            leakage[a] = not_applicable(a, name)
    privacy = defense.privacy()
    eps = privacy.get("epsilon")
    run = DefenseRun(
        defense=name, options=defense.options(), strength=strength,
        strength_value=number_or_none(defense.options().get(strength)) if strength else None,
        accuracy=acc, val_accuracy=val_acc, predicted_classes=predicted, balanced_accuracy=bal,
        majority_rate=majority_rate(data.y_test),
        f1=f1, verdicts=report.verdicts if report is not None else [],
        control=report.control if report is not None else None,
        epsilon=None if eps is None else (float(eps) if math.isfinite(eps) else float("inf")),
        delta=privacy.get("delta"), train_seconds=train_seconds, leakage=leakage,
        distance_correlation=dcor, victims=audited,
        membership=report.membership if report is not None else None,
    )
    return Evaluation(run, report, defense)


__all__ = [
    "DEFAULT_ATTACKS",
    "CompareTable",
    "DefenseRun",
    "Evaluation",
    "MatchedPair",
    "RunSpec",
    "compare",
    "dp_sentence",
    "evaluate_defense",
    "fitting_defenses",
    "match_by_accuracy",
    "matched_on",
    "membership_curves",
    "redecide",
    "redecide_run",
    "render_html",
    "run_defense",
    "run_label",
    "stuck",
    "with_adaptive",
]
