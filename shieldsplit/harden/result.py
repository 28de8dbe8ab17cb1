"""The answer of ``harden``: pydantic records of the search, the confirmation on the test
split, and the words that open the report.

:class:`HardenResult` keeps every probe (its audit's verdicts and validation utility),
every confirmed setting (its 3 seeds on the test split, beside the undefended model's),
and the recommendation, never one stuck at the majority class. Its :meth:`summary`
opens with the recommended defence and setting, its utility against the undefended
model with intervals, the verdicts that hold, and what the search could not reach and
how close it came; when nothing meets the target it says so, which position fails and
what the best setting still leaks.
"""

from __future__ import annotations

import html
import statistics
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from shieldsplit._core.io import atomic_write_text
from shieldsplit.compare.report import DefenseRun
from shieldsplit.defenses.base import Defense
from shieldsplit.defenses.knob import Knob
from shieldsplit.experiments.reproduce.reading import seed_interval
from shieldsplit.harden.dp import DpCheck
from shieldsplit.harden.spec import UTILITIES


class Probe(BaseModel):
    """One candidate setting, trained on the training split and audited; utility on the
    validation split.

    Attributes:
        value: the knob's value (the cut, for a deeper cut alone).
        cut: the cut it was trained and audited at (None in records made before the cut
            was searched: the run's cut).
        method: what chose it: the bisection, or the Optuna study.
        meets: whether every named position reached the target (and it is not stuck).
        positions: named position -> its verdict (``n/a`` where the defence is not
            deployed there, ``no verdict`` where no attack finished).
        leaks: the failing positions' verdict sentences (what still leaks).
        utility: the searched metric on the validation split.
        stuck: the model predicts one class for every image.
        run: the full record (attacks, controls, verdicts).
    """

    model_config = ConfigDict(extra="forbid")

    value: float
    cut: int | str | None = None
    method: Literal["bisection", "optuna"] = "bisection"
    meets: bool
    positions: dict[str, str]
    leaks: list[str] = Field(default_factory=list)
    utility: float
    stuck: bool = False
    run: DefenseRun


class Trial(BaseModel):
    """One trial of an Optuna study.

    Attributes:
        number: Optuna's trial number.
        values: each knob's value (``{"scale": 2.0, "cut": 3.0}``).
        meets: whether the setting met the target (its constraint held).
        utility: the searched metric on the validation split (None where the setting
            could not be built or trained, or the metric is undefined).
        cost: what the study minimised: the undefended control's utility minus this one
            (None where ``utility`` is).
        probed: False when it was read back (probed before the study, or earlier in it).
        error: why the setting could not be built or trained, or None.
    """

    model_config = ConfigDict(extra="forbid")

    number: int
    values: dict[str, float]
    meets: bool
    utility: float | None
    cost: float | None
    probed: bool = True
    error: str | None = None


class Study(BaseModel):
    """The Optuna study of one candidate: why it ran, its seed and every trial.

    Attributes:
        sampler: the sampler (``TPESampler``).
        seed: its seed.
        why: the verdict was not monotone over the bisection's probes, or two knobs.
        bound: the most new settings it could probe.
        trials: every trial, in order.
        stopped: why it stopped before its bound, or "".
    """

    model_config = ConfigDict(extra="forbid")

    sampler: str = "TPESampler"
    seed: int
    why: str
    bound: int
    trials: list[Trial] = Field(default_factory=list)
    stopped: str = ""


class DefenseSearch(BaseModel):
    """The search of one candidate defence (or composed pair, or deeper cut).

    Attributes:
        defense: its label (``laplace``, ``nopeek+laplace``, ``cut``, ``laplace+cut``).
        knob: the knob searched (its range narrowed where one was given).
        depth: the cut knob searched with ``knob`` (two knobs), or None.
        probes: the candidates probed, in order.
        chosen: the chosen value of ``knob``: the weakest that met the target (bisection),
            or the most useful that met it (a study); None if none met it.
        chosen_cut: the cut of the chosen setting.
        monotone: False when a weaker probed setting met the target where a stronger failed.
        study: the Optuna study, where one ran.
        error: why the defence could not be searched (it failed to build or train).
    """

    model_config = ConfigDict(extra="forbid")

    defense: str
    knob: Knob
    depth: Knob | None = None
    probes: list[Probe] = Field(default_factory=list)
    chosen: float | None = None
    chosen_cut: int | str | None = None
    monotone: bool = True
    study: Study | None = None
    error: str | None = None

    def setting(self, value: float, cut: int | str | None) -> str:
        """A setting in words: ``scale=2 and the cut at 3``, ``the cut at 4``, ``scale=2``.

        Example:
            >>> DefenseSearch(defense="laplace", knob=Knob(option="scale", low=0.1, high=10),
            ...               depth=Knob(option="cut", low=2, high=4)).setting(2.0, 3)
            'scale=2 and the cut at 3'
        """
        if self.knob.is_cut:
            return f"the cut at {cut if cut is not None else f'{value:g}'}"
        words = f"{self.knob.option}={value:g}"
        return words if self.depth is None else f"{words} and the cut at {cut}"

    def best(self) -> Probe | None:
        """The probe that came closest: the one meeting at the most positions, then the
        strongest among them."""
        if not self.probes:
            return None
        def score(p: Probe) -> tuple[int, float, float]:
            met = sum(v in ("no leakage found", "n/a") for v in p.positions.values())
            strength = p.value if self.knob.stronger == "higher" else -p.value
            return met, strength, float(p.cut) if isinstance(p.cut, int) else 0.0
        return max(self.probes, key=score)


class Utility(BaseModel):
    """A metric over seeds: the mean and its 95% Student-t interval across seeds."""

    model_config = ConfigDict(extra="forbid")

    values: list[float]
    mean: float
    low: float | None = None
    high: float | None = None

    @classmethod
    def of(cls, values: list[float]) -> Utility:
        """Example:
        >>> u = Utility.of([0.8, 0.82, 0.84]); round(u.mean, 2), u.low is not None
        (0.82, True)
        """
        ci = seed_interval(values)
        return cls(values=values, mean=statistics.mean(values),
                   low=None if ci is None else ci[0], high=None if ci is None else ci[1])

    def words(self, points: bool = False) -> str:
        """``81.2% [78.0, 84.4]`` (or in points, signed, for a difference)."""
        if points:
            ci = "" if self.low is None or self.high is None else \
                f" [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"
            return f"{100 * self.mean:+.1f} points{ci}"
        ci = "" if self.low is None or self.high is None else \
            f" [{100 * self.low:.1f}, {100 * self.high:.1f}]"
        return f"{self.mean:.1%}{ci}"


class Confirmation(BaseModel):
    """The chosen setting of one defence retrained with each confirmation seed and
    audited, scored on the test split.

    Attributes:
        defense: its label.
        value: the knob's value confirmed.
        cut: the cut it was trained and audited at (None in older records: the run's).
        seeds: the seeds.
        runs: one run per seed (test-split utility, verdicts).
        holds: per seed, whether every named position reached the target.
        stuck: per seed, whether the model predicts one class only.
        balanced_accuracy: over the seeds.
        f1: macro F1 over the seeds.
        balanced_accuracy_cost: the undefended model's minus this one's, seed by seed.
        f1_cost: the same for macro F1.
    """

    model_config = ConfigDict(extra="forbid")

    defense: str
    value: float | None
    cut: int | str | None = None
    seeds: list[int]
    runs: list[DefenseRun]
    holds: list[bool]
    stuck: list[bool]
    balanced_accuracy: Utility
    f1: Utility
    balanced_accuracy_cost: Utility | None = None
    f1_cost: Utility | None = None

    @property
    def confirmed(self) -> bool:
        """The target held on every seed and no seed is stuck at one class."""
        return all(self.holds) and not any(self.stuck)


class HardenResult(BaseModel):
    """What :func:`shieldsplit.harden` found (see its docstring).

    Attributes:
        dataset, model, cut, epochs, budget, seed: the run.
        positions: the named attacker positions.
        target: the verdict every position must reach.
        utility: the metric maximised.
        attacks: the attacks run (the adaptive ones included).
        candidates_bound: the most candidates the search could probe.
        candidates_run: the candidates probed.
        control: the undefended model on the search data at the run's cut (every audit's
            control at that cut).
        controls: the undefended model at each cut searched (``str(cut)`` -> its run):
            every candidate is audited against the control at its own cut.
        searches: one per candidate defence or pair.
        baseline: the undefended model on the test split over the confirmation seeds.
        confirmations: the chosen settings confirmed on the test split.
        recommended: the recommended defence's label, or None.
        notes: what the search says about itself (pairs skipped, non-monotone verdicts).
        dp: the DP-SGD cross-check, where DP-SGD was searched.
    """

    model_config = ConfigDict(extra="forbid")

    created: str
    dataset: str
    model: str
    cut: int | str
    epochs: int
    budget: str
    seed: int
    positions: list[str]
    target: str
    utility: str
    attacks: list[str]
    candidates_bound: int
    candidates_run: int = 0
    control: DefenseRun | None = None
    controls: dict[str, DefenseRun] = Field(default_factory=dict)
    searches: list[DefenseSearch] = Field(default_factory=list)
    baseline: Confirmation | None = None
    confirmations: list[Confirmation] = Field(default_factory=list)
    recommended: str | None = None
    notes: list[str] = Field(default_factory=list)
    dp: DpCheck | None = None
    complete: bool = True
    machine: dict[str, str] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    _defense: Defense | None = PrivateAttr(default=None)

    @property
    def defense(self) -> Defense | None:
        """The trained recommended defence (its first confirmation seed's), ready to
        deploy or save; None when nothing is recommended or for a result read from JSON."""
        return self._defense

    def recommend(self, label: str, defense: Defense) -> None:
        """Record ``label`` as the recommendation and ``defense`` as its trained defence."""
        self.recommended = label
        self._defense = defense

    def confirmation(self, label: str | None = None) -> Confirmation | None:
        """The confirmation of ``label`` (default: the recommended one)."""
        label = label or self.recommended
        return next((c for c in self.confirmations if c.defense == label), None)

    # ------------------------------------------------------------------ words
    def search(self, label: str) -> DefenseSearch | None:
        """The search of the candidate ``label``."""
        return next((s for s in self.searches if s.defense == label), None)

    def setting(self, label: str, value: float | None, cut: int | str | None) -> str:
        """A candidate's setting in words (:meth:`DefenseSearch.setting`)."""
        search = self.search(label)
        if value is None:
            return "-"
        if search is None:
            return f"{value:g}"
        return search.setting(value, self.cut if cut is None else cut)

    def headline(self) -> list[str]:
        """The report's opening lines (see the module docstring)."""
        where = ", ".join(self.positions)
        metric = UTILITIES.get(self.utility, self.utility)
        chosen = self.confirmation()
        lines: list[str] = []
        if chosen is not None:
            search = self.search(chosen.defense)
            how = ("the most useful setting that reached" if search is not None
                   and search.study is not None else "the weakest setting that reached")
            lines.append(f"Recommended: {chosen.defense} with "
                         f"{self.setting(chosen.defense, chosen.value, chosen.cut)}, {how} "
                         f"'{self.target}' at {where} on the validation split, and held on "
                         f"the test split for seeds {chosen.seeds}.")
            base = self.baseline
            lines.append(
                f"Utility on the test split over {len(chosen.seeds)} seeds (95% interval "
                f"across seeds): balanced accuracy {chosen.balanced_accuracy.words()}, "
                f"macro F1 {chosen.f1.words()}"
                + ("" if base is None else
                   f"; undefended {base.balanced_accuracy.words()} and {base.f1.words()}")
                + ("" if chosen.balanced_accuracy_cost is None or chosen.f1_cost is None else
                   f"; cost {chosen.balanced_accuracy_cost.words(True)} of balanced accuracy"
                   f", {chosen.f1_cost.words(True)} of macro F1") + ".")
            held = sorted({f"{v.label}: {v.verdict}" for r in chosen.runs for v in r.verdicts})
            lines.append("Verdicts that hold on every seed: " + "; ".join(held) + ".")
        else:
            lines.append(f"No defence reached '{self.target}' at {where} within its range "
                         f"(and held on the test split) while learning more than the majority"
                         f" class: nothing is recommended.")
            for c in self.confirmations:
                failed = [s for s, ok in zip(c.seeds, c.holds, strict=True) if not ok]
                why = (f"the target failed on seeds {failed}" if failed else
                       "it is stuck at the majority class")
                lines.append(f"{c.defense} at {self.setting(c.defense, c.value, c.cut)} met it "
                             f"on the validation split, but {why} on the test split.")
        lines += self.unreached()
        lines.append(f"Utility searched: {metric} on the validation split; "
                     f"{self.candidates_run} of at most {self.candidates_bound} candidates "
                     "probed.")
        return lines + self.notes

    def unreached(self) -> list[str]:
        """One sentence per search that did not reach the target: its closest setting,
        which position fails there and what it still leaks; and what a study did where
        the verdict was not monotone."""
        out = []
        for s in self.searches:
            if s.error is not None:
                out.append(f"{s.defense}: not searched ({s.error}).")
                continue
            if not s.monotone:
                out.append(f"{s.defense}: the verdict is not monotone over the probed "
                           f"{s.knob.option} values "
                           + ", ".join(f"{p.value:g} ({'meets' if p.meets else 'fails'})"
                                       for p in s.probes if p.method == "bisection") + "."
                           + ("" if s.study is None else " " + study_words(s)))
            if s.chosen is not None:
                continue
            best = s.best()
            if best is None:
                continue
            failing = [f"{p} ({v})" for p, v in best.positions.items()
                       if v not in ("no leakage found", "n/a")]
            stuck_words = " (and it is stuck at the majority class)" if best.stuck else ""
            alone = (" A deeper cut alone is the undefended model at that cut, which is also "
                     "the audit's control there: the audit can show that it leaks, never that "
                     "it does not." if s.knob.is_cut else "")
            within = f"{s.knob.option} {s.knob.low:g}..{s.knob.high:g}" + (
                "" if s.depth is None else f" and the cut {s.depth.low:g}..{s.depth.high:g}")
            where = (("failing at " + ", ".join(failing)) if failing else
                     f"it reached '{self.target}' at every searched position, but a model "
                     "stuck at the majority class is never recommended" if best.stuck else
                     f"it reached '{self.target}' at every searched position on validation")
            leaking = any(v == "leaks" for v in best.positions.values())
            said = "Still leaks: " if leaking else "What the audit found there: "
            out.append(f"{s.defense} did not reach '{self.target}' within {within}; closest "
                       f"at {s.setting(best.value, best.cut if best.cut is not None else self.cut)}"
                       f"{stuck_words if failing else ''}: {where}"
                       + (". " + said + " ".join(best.leaks) if best.leaks else ".")
                       + alone)
        return out

    def summary(self) -> str:
        """One screen of text: the answer first, then a row per probe, then every Optuna
        study's trials.

        Returns:
            Plain text.
        """
        head = (f"shieldsplit harden: {self.model} on {self.dataset}, cut {self.cut}, "
                f"{self.epochs} epochs, budget {self.budget}, seed {self.seed}, target "
                f"'{self.target}' at {', '.join(self.positions)}"
                + ("" if self.complete else "  [INCOMPLETE: cancelled]"))
        lines = [head, "", *self.headline(), "",
                 f"{'defence':24s} {'setting':>10s} {'cut':>4s} "
                 f"{'val ' + self.utility[:12]:>17s}  verdicts"]
        for s in self.searches:
            for p in s.probes:
                verdicts = "; ".join(f"{k}: {v}" for k, v in p.positions.items())
                cut = self.cut if p.cut is None else p.cut
                lines.append(f"{s.defense[:24]:24s} {p.value:>10.4g} {cut!s:>4s} "
                             f"{p.utility:>17.1%}  {verdicts}{' [stuck]' if p.stuck else ''}"
                             f"{' [optuna]' if p.method == 'optuna' else ''}")
        studies = [s for s in self.searches if s.study is not None]
        if studies:
            lines += ["", "Optuna studies (each minimises the utility cost against the "
                      "undefended control, subject to meeting the target):"]
            for s in studies:
                lines.append(f"  {s.defense}: {study_words(s)}")
                lines += [f"    {trial_words(t)}" for t in s.study.trials] if s.study else []
        if self.dp is not None:
            lines += ["", f"DP cross-check: {self.dp.note}"]
        return "\n".join(lines)

    def to_json(self, path: str | Path) -> None:
        """Write the result as JSON, atomically."""
        atomic_write_text(path, self.model_dump_json(indent=2))

    def save_html(self, path: str | Path) -> None:
        """Write the answer, the probes and the confirmations as one HTML page, atomically."""
        atomic_write_text(path, render_html(self))


def study_words(search: DefenseSearch) -> str:
    """What a search's Optuna study was, in one sentence.

    Example:
        >>> knob = Knob(option="scale", low=0.1, high=10)
        >>> s = DefenseSearch(defense="laplace", knob=knob, study=Study(
        ...     seed=0, why="two knobs", bound=4, trials=[Trial(
        ...         number=0, values={"scale": 10.0}, meets=True, utility=0.8, cost=0.05)]))
        >>> print(study_words(s))
        An Optuna study (TPESampler, seed 0; two knobs) ran 1 trial (1 probed, bound 4); 1 met
        the target.
    """
    study = search.study
    if study is None:
        return ""
    probed = sum(t.probed for t in study.trials)
    met = sum(t.meets for t in study.trials)
    n = len(study.trials)
    return (f"An Optuna study ({study.sampler}, seed {study.seed}; {study.why}) ran {n} "
            f"trial{'s' if n != 1 else ''} ({probed} probed, bound {study.bound}); {met} met "
            "the target" + (f"; {study.stopped}" if study.stopped else "") + ".")


def trial_words(trial: Trial) -> str:
    """One trial in a line.

    Example:
        >>> trial_words(Trial(number=2, values={"scale": 1.5, "cut": 3.0}, meets=True,
        ...                   utility=0.81, cost=0.02))
        '#2 scale=1.5 cut=3: meets, utility 81.0%, cost +2.0 points'
    """
    values = " ".join(f"{k}={v:g}" for k, v in trial.values.items())
    if trial.error:
        return f"#{trial.number} {values}: not built or trained ({trial.error})"
    utility = "-" if trial.utility is None else f"{trial.utility:.1%}"
    cost = "-" if trial.cost is None else f"{100 * trial.cost:+.1f} points"
    return (f"#{trial.number} {values}: {'meets' if trial.meets else 'fails'}, utility "
            f"{utility}, cost {cost}" + ("" if trial.probed else " (read back)"))


def _cell(value: Any) -> str:
    return f"<td>{html.escape(str(value))}</td>"


def render_html(result: HardenResult) -> str:
    """Render a :class:`HardenResult` as HTML (every text escaped).

    Example:
        >>> r = HardenResult(created="now", dataset="<d>", model="m", cut=2, epochs=1,
        ...                  budget="quick", seed=0, positions=["split-server"],
        ...                  target="no leakage found", utility="f1", attacks=[],
        ...                  candidates_bound=4)
        >>> "&lt;d&gt;" in render_html(r)
        True
    """
    title = html.escape(f"shieldsplit harden: {result.dataset}")
    answer = "".join(f"<p>{html.escape(line)}</p>" for line in result.headline())
    probes = "".join(
        "<tr>" + _cell(s.defense) + _cell(f"{p.value:g}")
        + _cell(result.cut if p.cut is None else p.cut) + _cell(p.method)
        + _cell(f"{p.utility:.1%}")
        + _cell("meets" if p.meets else "fails") + _cell("yes" if p.stuck else "no")
        + _cell("; ".join(f"{k}: {v}" for k, v in p.positions.items())) + "</tr>"
        for s in result.searches for p in s.probes)
    trials = "".join(
        "<tr>" + _cell(s.defense) + _cell(t.number)
        + _cell(", ".join(f"{k}={v:g}" for k, v in t.values.items()))
        + _cell(t.error or ("meets" if t.meets else "fails"))
        + _cell("-" if t.utility is None else f"{t.utility:.1%}")
        + _cell("-" if t.cost is None else f"{100 * t.cost:+.1f}")
        + _cell("yes" if t.probed else "read back") + "</tr>"
        for s in result.searches if s.study is not None for t in s.study.trials)
    studies = "" if not trials else (
        "<h2>Optuna studies</h2><p>" + "".join(
            f"{html.escape(s.defense)}: {html.escape(study_words(s))}<br>"
            for s in result.searches if s.study is not None)
        + "</p><table><tr><th>candidate</th><th>trial</th><th>setting</th><th>target</th>"
        "<th>validation utility</th><th>cost (points)</th><th>probed</th></tr>"
        f"{trials}</table>")
    confirmed = "".join(
        "<tr>" + _cell(c.defense) + _cell(result.setting(c.defense, c.value, c.cut))
        + _cell(c.seeds) + _cell(c.balanced_accuracy.words()) + _cell(c.f1.words())
        + _cell("-" if c.balanced_accuracy_cost is None else c.balanced_accuracy_cost.words(True))
        + _cell(["holds" if h else "fails" for h in c.holds]) + "</tr>"
        for c in ([result.baseline] if result.baseline else []) + result.confirmations)
    dp = "" if result.dp is None else f"<h2>DP cross-check</h2><p>{html.escape(result.dp.note)}</p>"
    meta = html.escape(
        f"{result.model}, cut {result.cut}, {result.epochs} epochs, budget {result.budget}, "
        f"seed {result.seed}, attacks {', '.join(result.attacks)}, {result.created}"
        + ("" if result.complete else " - INCOMPLETE (cancelled)"))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}table{border-collapse:collapse}</style></head>"
        f"<body><h1>{title}</h1><p>{meta}</p><h2>Answer</h2>{answer}"
        "<h2>Confirmed on the test split</h2><table><tr><th>defence</th><th>setting</th>"
        "<th>seeds</th><th>balanced accuracy [95% CI]</th><th>macro F1 [95% CI]</th>"
        f"<th>cost (balanced accuracy)</th><th>target per seed</th></tr>{confirmed}</table>"
        "<h2>Search on the validation split</h2><table><tr><th>defence</th><th>setting</th>"
        "<th>cut</th><th>by</th><th>validation utility</th><th>target</th><th>stuck</th>"
        f"<th>verdicts</th></tr>{probes}</table>{studies}{dp}</body></html>")


__all__ = ["Confirmation", "DefenseSearch", "DpCheck", "HardenResult", "Probe", "Study", "Trial",
           "Utility", "render_html", "study_words", "trial_words"]
