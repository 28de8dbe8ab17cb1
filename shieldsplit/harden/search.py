"""The search of ``harden``: per defence, the weakest setting of its knob that meets the
target, by bisection on the knob's scale, in a bounded number of probes.

Both ends of the range are probed first (the strongest: can the defence reach the target
at all? the weakest: does it need to be strong?), then the boundary is bisected between
the weakest setting that fails and the strongest that meets. A verdict that is not
monotone over the probed points (a weaker setting meets where a stronger one fails) is
said in the result, never hidden.

Candidates include pairs of cut defences through the registered ``compose`` defence where
one is registered: the pair's knob moves both parts' knobs together along their scales
(:data:`PAIR_KNOB`), so no pair is written by hand. Where the cut depth is searched, the
cut is a knob too (:func:`~shieldsplit.defenses.knob.cut_knob`, declared once from the
model's valid cuts): a deeper cut alone (the undefended model cut deeper: label ``cut``),
and, for every defence whose declared surfaces include the split, that defence's knob
with the cut (label ``laplace+cut``: two knobs, searched by an Optuna study,
:mod:`shieldsplit.harden.study`).

Example:
    >>> from shieldsplit.defenses.knob import Knob
    >>> knob = Knob(option="scale", low=0.01, high=10.0, scale="log")
    >>> trace = bisect_knob(knob, lambda v: v >= 0.5, bound=6)
    >>> trace.chosen, len(trace.probes), trace.monotone
    (0.749895, 6, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from shieldsplit.defenses.base import (
    available_defenses,
    defense_options,
    defense_surfaces,
    require_knob,
)
from shieldsplit.defenses.knob import Knob, cut_knob

#: The registered name of the composition defence (from the registry, when present).
COMPOSE = "compose"
#: The undefended control, which a deeper cut alone is built as.
CONTROL = "none"
#: The label of a deeper cut alone, and the suffix of a defence searched with the cut.
CUT_LABEL = "cut"


@dataclass
class Trace:
    """What one bisection probed and chose.

    Attributes:
        probes: ``(value, meets)`` in the order probed.
        chosen: the weakest probed value that meets the target, or None.
        monotone: whether every probed value at least as strong as one that meets also
            meets (False: the verdict is not monotone over the probed points).
        reached: whether any probed value meets.
    """

    probes: list[tuple[float, bool]] = field(default_factory=list)
    chosen: float | None = None
    monotone: bool = True

    @property
    def reached(self) -> bool:
        return self.chosen is not None


def monotone_over(knob: Knob, probes: Sequence[tuple[float, bool]]) -> bool:
    """Whether the verdicts, ordered from weakest to strongest, never go from *meets*
    back to *fails*.

    Example:
        >>> k = Knob(option="a", low=0.0, high=1.0)
        >>> monotone_over(k, [(0.0, False), (1.0, True)])
        True
        >>> monotone_over(k, [(0.0, True), (1.0, False)])
        False
    """
    ordered = sorted(probes, key=lambda p: p[0], reverse=knob.stronger == "lower")
    seen_meet = False
    for _, meets in ordered:
        if seen_meet and not meets:
            return False
        seen_meet = seen_meet or meets
    return True


def bisect_knob(knob: Knob, meets: Callable[[float], bool], *, bound: int) -> Trace:
    """The weakest value of ``knob`` for which ``meets`` holds, in at most ``bound`` probes.

    The strongest end first, then the weakest, then bisection (on the knob's scale)
    between the weakest value that fails and the strongest that meets, until the bound is
    spent or the midpoint repeats (an integer knob).

    Args:
        knob: the declared (or narrowed) knob.
        meets: probes one value (trains and audits one candidate): whether it meets the
            target on every named position.
        bound: the most probes (at least 2: both ends).

    Returns:
        The trace.

    Example:
        >>> k = Knob(option="n", low=1, high=9, integer=True)
        >>> t = bisect_knob(k, lambda v: v >= 4, bound=8)
        >>> t.chosen, [v for v, _ in t.probes]
        (4.0, [9.0, 1.0, 5.0, 3.0, 4.0])
    """
    trace = Trace()

    def probe(value: float) -> bool:
        ok = bool(meets(value))
        trace.probes.append((value, ok))
        return ok

    strong, weak = knob.strongest, knob.weakest
    strong_ok = probe(strong)
    weak_ok = probe(weak) if bound >= 2 else False
    if weak_ok:
        trace.chosen = weak
    elif strong_ok:
        fail, meet = weak, strong
        while len(trace.probes) < bound:
            mid = knob.between(fail, meet)
            if mid in (fail, meet):
                break
            if probe(mid):
                meet = mid
            else:
                fail = mid
        trace.chosen = meet
    trace.monotone = monotone_over(knob, trace.probes)
    return trace


@dataclass(frozen=True)
class Candidate:
    """One searchable defence: a registered one with its knob, or a pair composed.

    Attributes:
        label: how reports name it (``laplace``, ``nopeek+laplace``, ``cut``,
            ``laplace+cut``).
        name: the registered defence built (``compose`` for a pair, ``none`` for a
            deeper cut alone).
        knob: the knob searched (the cut knob for a deeper cut alone).
        parts: the pair's parts, each with its own knob (empty for a single defence).
        depth: the cut knob searched together with ``knob`` (two knobs), or None.
    """

    label: str
    name: str
    knob: Knob
    parts: tuple[tuple[str, Knob], ...] = ()
    depth: Knob | None = None

    @property
    def knobs(self) -> tuple[Knob, ...]:
        """The knobs searched, in the order of a setting's values."""
        return (self.knob,) if self.depth is None else (self.knob, self.depth)

    def cut_at(self, point: Sequence[float], default: int | str) -> int | str:
        """The cut of the setting ``point`` (one value per knob): the cut knob's value,
        or ``default`` where the cut is not searched.

        Example:
            >>> from shieldsplit.defenses.base import require_knob
            >>> cut = Knob(option="cut", low=2, high=4, integer=True)
            >>> Candidate("laplace+cut", "laplace", require_knob("laplace"),
            ...           depth=cut).cut_at((0.5, 3.0), 2)
            3
        """
        for knob, value in zip(self.knobs, point, strict=True):
            if knob.is_cut:
                return int(value)
        return default

    def options(self, value: float) -> dict[str, Any]:
        """The keyword options of the defence at ``value`` of its knob (none for the cut
        knob: the cut is not an option of the defence's ``Config``).

        Example:
            >>> from shieldsplit.defenses.base import require_knob
            >>> Candidate("laplace", "laplace", require_knob("laplace")).options(0.5)
            {'scale': 0.5}
        """
        if self.knob.is_cut:
            return {}
        if not self.parts:
            return defense_options(self.name, self.knob.fields(value))
        return {"parts": [{"name": n, "options": defense_options(n, k.fields(pair_value(k, value)))}
                          for n, k in self.parts]}


#: The knob of a composed pair: 0 is both parts at their weakest, 1 both at their strongest.
PAIR_KNOB = Knob(option="together", low=0.0, high=1.0,
                 description="both parts' strengths moved together along their scales")


def pair_value(knob: Knob, t: float) -> float:
    """A part's value at position ``t`` (0 weakest, 1 strongest) of the pair's knob.

    Example:
        >>> pair_value(Knob(option="s", low=0.01, high=1.0, scale="log"), 0.5)
        0.1
    """
    return knob.at(t)


def depth_candidates(defenses: Sequence[str], knobs: dict[str, Knob], depth: Knob
                     ) -> list[Candidate]:
    """The cut searched as a knob: a deeper cut alone, then each defence whose declared
    surfaces include the split with its own knob and the cut (read from the declarations,
    no list of names).

    Example:
        >>> from shieldsplit.defenses.base import require_knob
        >>> cut = Knob(option="cut", low=2, high=4, integer=True)
        >>> [(c.label, c.name, [k.option for k in c.knobs]) for c in
        ...  depth_candidates(["pgsl"], {"pgsl": require_knob("pgsl")}, cut)]
        [('cut', 'none', ['cut']), ('pgsl+cut', 'pgsl', ['perturb.pixel_budget', 'cut'])]
    """
    out = [Candidate(CUT_LABEL, CONTROL, depth)]
    out += [Candidate(f"{n}+{CUT_LABEL}", n, knobs[n], depth=depth) for n in defenses
            if "split" in defense_surfaces(n)]
    return out


def candidates(defenses: Sequence[str], knobs: dict[str, Knob], *, model: nn.Module,
               cut: int | str, compose: bool, deeper: bool = False
               ) -> tuple[list[Candidate], list[str]]:
    """The searched candidates: each defence with its knob; where ``deeper`` is asked, the
    cut as a knob (:func:`depth_candidates`, from ``cut`` to the model's deepest cut);
    then, where ``compose`` is asked and a ``compose`` defence is registered, each pair
    of the cut defences.

    Returns:
        The candidates, and notes on what was not searched and why.
    """
    out = [Candidate(n, n, knobs[n]) for n in defenses]
    notes: list[str] = []
    if deeper:
        depth = cut_knob(model, cut)
        if depth is None:
            notes.append(f"no valid cut lies deeper than {cut!r} (or it names a point inside "
                         "a block): the cut depth is not searched")
        else:
            out += depth_candidates(defenses, knobs, depth)
    out_pairs, note = pairs(defenses, compose)
    return out + out_pairs, notes + ([note] if note else [])


def pairs(defenses: Sequence[str], compose: bool) -> tuple[list[Candidate], str]:
    """Each pair of the cut defences among ``defenses``, composed, where ``compose`` is
    asked and a ``compose`` defence is registered; and a note when there are none."""
    out: list[Candidate] = []
    if not compose:
        return out, ""
    if COMPOSE not in available_defenses():
        return out, "no 'compose' defence is registered: no pairs searched"
    from shieldsplit.defenses.compose import composable_defenses  # registered: importable

    parts = set(composable_defenses())  # read from the defences' classes, no name list
    cut_ones = [n for n in defenses if n in parts]
    for i, a in enumerate(cut_ones):
        for b in cut_ones[i + 1:]:
            out.append(Candidate(f"{a}+{b}", COMPOSE, PAIR_KNOB,
                                 parts=((a, require_knob(a)), (b, require_knob(b)))))
    note = "" if len(cut_ones) > 1 else ("fewer than two defences that compose "
                                         f"(of {sorted(parts)}): no pairs searched")
    return out, note


__all__ = ["COMPOSE", "CONTROL", "CUT_LABEL", "PAIR_KNOB", "Candidate", "Trace", "bisect_knob",
           "candidates", "depth_candidates", "monotone_over", "pair_value", "pairs"]
