"""Optuna for what bisection cannot search: a knob whose verdict is not monotone, and two
knobs at once (a defence's strength and the cut).

:func:`run_study` runs one seeded Optuna study (``TPESampler(seed=...)``) per candidate,
within the candidate's bound: it minimises the utility cost subject to meeting the target
(Optuna's constraint: how far a setting misses it, 0 when it meets). Settings already
probed (the bisection's, in a non-monotone search) are told to the study first and cost
nothing; a setting the sampler suggests twice is read back, not probed again. A suggested
value is rounded to 3 significant digits (what a report quotes; a study of a few trials
resolves no finer) and snapped onto its knob (an integer, a valid cut). Every trial is
kept, so a report can list them; the same seed gives the same trials.

Optuna is the ``harden`` extra: :func:`require_optuna` raises a typed error that says how
to install it.

Example:
    >>> from shieldsplit.defenses.knob import Knob
    >>> knob = Knob(option="s", low=0.0, high=1.0)
    >>> def outcome(point):  # meets only in the middle; the cost falls with s
    ...     s = point[0]
    ...     return Outcome(meets=0.3 <= s <= 0.6, cost=1.0 - s,
    ...                    violation=0.0 if 0.3 <= s <= 0.6 else 1.0)
    >>> trace = run_study([knob], outcome, bound=6, seed=0)
    >>> len([t for t in trace.trials if t.probed]) <= 6, trace.chosen is not None
    (True, True)
    >>> run_study([knob], outcome, bound=6, seed=0).points() == trace.points()
    True
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from shieldsplit.defenses.knob import Knob
from shieldsplit.errors import ConfigError, ShieldSplitError

#: A setting of a candidate: one value per knob, in the candidate's order.
Point = tuple[float, ...]


@dataclass(frozen=True)
class Outcome:
    """What probing one setting gave the study.

    Attributes:
        meets: the target was met at every named position (and the model is not stuck).
        cost: what the study minimises: the utility lost against the undefended model.
        violation: how far the setting misses the target (0 when it meets): Optuna's
            constraint.
        error: why the setting could not be built or trained (then it does not meet).
    """

    meets: bool
    cost: float
    violation: float
    error: str | None = None


@dataclass(frozen=True)
class StudyTrial:
    """One trial of a study.

    Attributes:
        number: Optuna's trial number.
        point: the setting (snapped onto each knob).
        outcome: what probing it gave.
        probed: False when it was read back (probed before the study, or earlier in it).
    """

    number: int
    point: Point
    outcome: Outcome
    probed: bool


@dataclass
class StudyTrace:
    """What one study tried and chose.

    Attributes:
        seed: the sampler's seed.
        trials: every trial, in order.
        chosen: the setting that met the target at the least cost, or None.
        stopped: why the study stopped before its bound, or "".
    """

    seed: int
    trials: list[StudyTrial] = field(default_factory=list)
    chosen: Point | None = None
    stopped: str = ""

    def points(self) -> list[Point]:
        """The settings tried, in order."""
        return [t.point for t in self.trials]


def require_optuna() -> ModuleType:
    """The ``optuna`` module.

    Raises:
        ShieldSplitError: optuna is not installed (it is the ``harden`` extra).

    Example:
        >>> require_optuna().__name__
        'optuna'
    """
    try:
        return importlib.import_module("optuna")
    except ImportError as exc:
        raise ShieldSplitError.build(
            what="optuna", expected="the optuna package (harden searches a knob whose verdict "
            "is not monotone, and a defence's strength with the cut, with an Optuna study)",
            received="not installed", fix='pip install -e ".[harden]"') from exc


def distribution(optuna: ModuleType, knob: Knob) -> Any:
    """The Optuna distribution of ``knob``'s range on its scale (integer for an integer
    knob, whose :attr:`~Knob.points` the suggestions are then snapped to)."""
    log = knob.scale == "log"
    if knob.integer:
        return optuna.distributions.IntDistribution(int(knob.low), int(knob.high), log=log)
    return optuna.distributions.FloatDistribution(knob.low, knob.high, log=log)


def chosen_of(trials: Sequence[StudyTrial]) -> Point | None:
    """The setting that met the target at the least cost (the first on ties).

    Example:
        >>> t = [StudyTrial(0, (1.0,), Outcome(True, 0.2, 0.0), True),
        ...      StudyTrial(1, (2.0,), Outcome(True, 0.1, 0.0), True),
        ...      StudyTrial(2, (3.0,), Outcome(False, 0.0, 1.0), True)]
        >>> chosen_of(t)
        (2.0,)
    """
    met = [t for t in trials if t.outcome.meets]
    return None if not met else min(met, key=lambda t: _finite(t.outcome.cost)).point


def _finite(cost: float) -> float:
    return cost if math.isfinite(cost) else float("inf")


def run_study(
    knobs: Sequence[Knob],
    evaluate: Callable[[Point], Outcome],
    *,
    bound: int,
    seed: int,
    known: Mapping[Point, Outcome] | None = None,
    start: Sequence[Point] = (),
) -> StudyTrace:
    """A seeded Optuna study over ``knobs``: the setting that meets the target at the
    least cost, in at most ``bound`` new probes.

    Args:
        knobs: the knobs searched (one or two), each over its declared range and scale.
        evaluate: probes one setting (trains and audits one candidate).
        bound: the most settings probed by the study (read-back ones are free).
        seed: the sampler's seed (the same seed gives the same trials).
        known: settings already probed (told to the study first, not probed again).
        start: settings to try first (the strongest and weakest corners of two knobs).

    Returns:
        The trace.

    Raises:
        ShieldSplitError: optuna is missing.
        ConfigError: no knob, or a bound below 0.
    """
    if not knobs or bound < 0:
        raise ConfigError.build(what="study", expected="one knob or more and a bound >= 0",
                                received=f"{len(knobs)} knobs, bound {bound}",
                                fix="pass the candidate's knobs and its remaining bound")
    optuna = require_optuna()
    names = [k.option for k in knobs]
    space = {k.option: distribution(optuna, k) for k in knobs}
    seen: dict[Point, Outcome] = dict(known or {})
    trace = StudyTrace(seed=seed)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=max(1, len(seen) + len(start)))
            study = optuna.create_study(direction="minimize", sampler=sampler)
            for point in [*seen, *start]:
                study.enqueue_trial(dict(zip(names, point, strict=True)))
            probed, asked, cap = 0, 0, 10 * (bound + len(seen) + len(start)) + 10
            while probed < bound and asked < cap:
                asked += 1
                trial = study.ask(space)
                point = tuple(k.snap(float(f"{trial.params[k.option]:.3g}")) for k in knobs)
                new = point not in seen
                if new:
                    seen[point] = evaluate(point)
                    probed += 1
                outcome = seen[point]
                trial.set_constraint("target", outcome.violation)
                study.tell(trial, outcome.cost if math.isfinite(outcome.cost) else 1e9)
                trace.trials.append(StudyTrial(trial.number, point, outcome, new))
            if probed < bound:
                trace.stopped = (f"the sampler suggested only settings already probed "
                                 f"({probed} of {bound} new)")
    finally:
        optuna.logging.set_verbosity(verbosity)
    trace.chosen = chosen_of(trace.trials)
    return trace


__all__ = ["Outcome", "Point", "StudyTrace", "StudyTrial", "chosen_of", "distribution",
           "require_optuna", "run_study"]
