"""Sentences and cells computed from a run's numbers, read through the auditor's verdicts.

Every sentence a results page uses to interpret a number comes from here, so that it
follows the numbers of the run that made the page instead of being fixed text. The
rules (pure functions, tested in ``tests/test_reproduce.py``):

- a paper's claim is *inconclusive* when the attack behind it does not leak on the
  undefended run (its verdict is not ``leaks``: the attack is not shown to work, so its
  failure on a defence says nothing), or when the numbers it compares are not
  separated: their mean ± sd intervals over seeds overlap (two single values say nothing
  of the seed spread);
- otherwise a claim that is a conjunction *does not hold* as soon as one of its parts
  is clearly false, and *holds* when every part is clearly true;
- attacker accuracy is balanced accuracy (chance: ``1 / classes``), beside the
  majority-class rate; below chance is *flipped* (the class is there, inverted), never
  protection.

Example:
    >>> claim([Part("MSE above", holds=True, separated=True)], control_leaks=False)[0]
    'inconclusive'
    >>> claim([Part("MSE above", holds=False, separated=True)], control_leaks=True)[0]
    'does not hold'
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Literal, NamedTuple

from shieldsplit.audit.auditor import AttackResult
from shieldsplit.compare.frontier import MatchedPair

ClaimLabel = Literal["holds", "does not hold", "inconclusive"]
Interval = tuple[float, float]


def spread(values: Sequence[float]) -> Interval | None:
    """``(mean - sd, mean + sd)`` of ``values``; a single value is a point; None if empty.

    Example:
        >>> spread([1.0, 3.0]), spread([2.0]), spread([])
        ((0.5857864376269049, 3.414213562373095), (2.0, 2.0), None)
    """
    if not values:
        return None
    if len(values) == 1:
        return (float(values[0]), float(values[0]))
    m, s = statistics.mean(values), statistics.stdev(values)
    return (m - s, m + s)


def separated(a: Interval | None, b: Interval | None) -> bool:
    """Whether two intervals are disjoint (two points say nothing of the spread: False).

    Example:
        >>> separated((0.0, 1.0), (2.0, 3.0)), separated((0.0, 2.0), (1.0, 3.0))
        (True, False)
        >>> separated((1.0, 1.0), (2.0, 2.0)), separated((1.0, 1.0), None)
        (False, False)
    """
    if a is None or b is None or (a[0] == a[1] and b[0] == b[1]):
        return False
    return a[1] < b[0] or b[1] < a[0]


class Part(NamedTuple):
    """One comparison a claim makes.

    Attributes:
        name: what is compared, in words (for the reason).
        holds: whether our numbers go the claimed way.
        separated: whether they are clear of the seed spread (intervals disjoint).
        why: the reason when it is not decided for another cause than the spread.
    """

    name: str
    holds: bool
    separated: bool
    why: str = ""


def claim(parts: Sequence[Part], *, control_leaks: bool) -> tuple[ClaimLabel, str]:
    """Decide a paper's claim (a conjunction of ``parts``) and say why.

    Args:
        parts: the comparisons the claim makes.
        control_leaks: whether the attack leaks on the undefended run (verdict ``leaks``).

    Returns:
        ``holds``, ``does not hold`` or ``inconclusive``, and the reason in words.

    Example:
        >>> claim([Part("MSE", True, True), Part("accuracy", True, False)],
        ...       control_leaks=True)
        ('inconclusive', 'accuracy within the seed spread')
    """
    if not control_leaks:
        return "inconclusive", "the attack does not leak on the undefended run"
    if not parts:
        return "inconclusive", "nothing was measured"
    wrong = [p.name for p in parts if p.separated and not p.holds]
    if wrong:
        return "does not hold", "; ".join(f"{n} the other way" for n in wrong)
    unsure = [p.why or f"{p.name} within the seed spread" for p in parts if not p.separated]
    if unsure:
        return "inconclusive", "; ".join(unsure)
    return "holds", "every comparison goes the claimed way, clear of the seed spread"


def control_leaks(results: Sequence[AttackResult]) -> bool:
    """Whether an attack leaked on every undefended run given (one per seed).

    Example:
        >>> from shieldsplit.audit.auditor import AttackResult
        >>> r = AttackResult(attack="a", threat_model="t", observes="gradient", images=8,
        ...                  seconds=1.0, verdict="leaks")
        >>> control_leaks([r]), control_leaks([r, r.model_copy(update={"verdict": None})])
        (True, False)
    """
    return bool(results) and all(r.status == "ok" and r.verdict == "leaks" for r in results)


def control_leaks_images(results: Sequence[AttackResult]) -> bool:
    """Whether an attack leaked *images* (re-identification or rebuilt images) on every
    undefended run given: only then can it decide a claim about images (MSE, PSNR); a
    label-only leak cannot.

    Example:
        >>> from shieldsplit.audit.auditor import AttackResult
        >>> from shieldsplit.functional.verdict import Evidence
        >>> labels = AttackResult(attack="a", threat_model="t", observes="gradient",
        ...                       images=8, seconds=1.0, verdict="leaks",
        ...                       evidence=Evidence(label_low=0.9, majority=0.5))
        >>> control_leaks([labels]), control_leaks_images([labels])
        (True, False)
    """
    return control_leaks(results) and all(
        r.evidence is not None and r.evidence.image_leak for r in results)


def verdict_cell(results: Sequence[AttackResult]) -> str:
    """The verdicts of one setting's runs (one per seed): ``leaks`` or ``leaks 2/3, ...``.

    Example:
        >>> from shieldsplit.audit.auditor import AttackResult
        >>> r = AttackResult(attack="a", threat_model="t", observes="gradient", images=8,
        ...                  seconds=1.0, verdict="leaks")
        >>> verdict_cell([r]), verdict_cell([r, r.model_copy(update={"verdict": "inconclusive"})])
        ('leaks', 'leaks 1/2, inconclusive 1/2')
    """
    scored = [r for r in results if r.status != "n/a"]
    if not scored:
        return "n/a"
    counts = Counter(r.verdict if r.status == "ok" and r.verdict else r.status for r in scored)
    if len(scored) == 1:
        return next(iter(counts))
    return ", ".join(f"{v} {n}/{len(scored)}" for v, n in counts.items())


def balanced_cell(results: Sequence[AttackResult]) -> str:
    """Mean ± sd balanced attacker accuracy over runs, with how many are flipped.

    Example:
        >>> from shieldsplit.audit.auditor import AttackResult
        >>> r = AttackResult(attack="a", threat_model="t", observes="gradient", images=8,
        ...                  seconds=1.0, balanced_accuracy=0.75)
        >>> balanced_cell([r])
        '75.0%'
    """
    ok = [r for r in results if r.status == "ok" and r.balanced_accuracy is not None]
    if not ok:
        return "-"
    from shieldsplit.experiments.reproduce.core import mean_sd

    text = mean_sd([float(r.balanced_accuracy or 0.0) for r in ok], ".1%")
    for flag, count in (("**flipped**", sum(r.flipped for r in ok)),
                        ("*one class*", sum(one_class(r) for r in ok))):
        if count:
            text += f" {flag}{'' if len(ok) == 1 else f' {count}/{len(ok)}'}"
    return text


def one_class(result: AttackResult) -> bool:
    """Whether the attack's victims hold a single class (chance 100%: balanced accuracy
    cannot show that the class leaks)."""
    return result.evidence is not None and result.evidence.chance == 1.0


def chance_sentence(results: Sequence[AttackResult]) -> str:
    """What balanced attacker accuracy is read against: chance and the majority rate.

    Example:
        >>> chance_sentence([])
        ''
    """
    evs = [r.evidence for r in results if r.evidence is not None
           and r.evidence.chance is not None]
    if not evs:
        return ""
    chances = sorted({float(e.chance or 0.0) for e in evs if e.chance != 1.0})
    majority = sorted({float(e.majority) for e in evs if e.majority is not None})
    single = sum(one_class(r) for r in results)
    flipped = sum(r.flipped for r in results)
    text = ("Attacker accuracy is the reference classifier's balanced accuracy on the "
            "reconstructions")
    if chances:
        text += (f": chance is {', '.join(f'{c:.1%}' for c in chances)} (1 / classes present "
                 "among the victims)")
    if majority:
        text += (f"; the victims' majority-class rate is "
                 f"{', '.join(f'{m:.1%}' for m in majority)}")
    text += (f". A value significantly below chance is flagged **flipped** (the class is "
             f"there, inverted), which is not protection; {flipped} of the {len(results)} "
             "scored runs here are flipped.")
    if single:
        text += (f" In {single} of the {len(results)} runs the victims hold a single class "
                 "(marked *one class*): chance is 100% there, and balanced accuracy cannot "
                 "show that the class leaks.")
    return text


def accuracy_interval(results: Sequence[AttackResult]) -> Interval | None:
    """Balanced attacker accuracy's interval: mean ± sd over runs, or for a single run its
    95% bootstrap interval (from the auditor's evidence).

    Example:
        >>> accuracy_interval([])
    """
    ok = [r for r in results if r.status == "ok" and r.balanced_accuracy is not None]
    ev = ok[0].evidence if len(ok) == 1 else None
    if ev is not None and ev.balanced_low is not None and ev.balanced_high is not None:
        return (ev.balanced_low, ev.balanced_high)
    return spread([float(r.balanced_accuracy or 0.0) for r in ok])


def matched_claim(pairs: Sequence[MatchedPair], control: Sequence[AttackResult], *,
                  mse_gain: float, accuracy_drop: float) -> tuple[ClaimLabel, str]:
    """The latent paper's claim at matched accuracy, decided from matched pairs.

    The claim: the candidate's MSE is at least ``mse_gain`` higher *and* the attacker's
    balanced accuracy at least ``accuracy_drop`` lower (relative) than the baseline's.
    MSE is compared over the pairs' mean ± sd (several seeds; one pair: undecided);
    balanced accuracy likewise, or by its bootstrap interval for a single pair. A flipped
    candidate (below chance) does not count as a drop.

    Args:
        pairs: baseline runs and their nearest candidate runs (one per seed).
        control: the attack's results on the undefended runs of the same seeds.
        mse_gain: the claimed relative MSE gain (0.124 for 12.4%).
        accuracy_drop: the claimed relative drop of attacker accuracy.

    Returns:
        ``holds``, ``does not hold`` or ``inconclusive``, and the reason.

    Example:
        >>> matched_claim([], [], mse_gain=0.124, accuracy_drop=0.125)
        ('inconclusive', 'the attack does not leak on the undefended run')
    """
    if not control_leaks(control):
        return claim([], control_leaks=False)
    if not pairs:
        return "inconclusive", "no run was scored"
    attack = pairs[0].attack
    base = [p.baseline.leakage[attack] for p in pairs]
    cand = [p.candidate.leakage[attack] for p in pairs]
    flipped = sum(r.flipped for r in cand)
    gain = statistics.mean(p.mse_gain for p in pairs)
    drop = statistics.mean(p.attacker_accuracy_drop for p in pairs)
    one = len(pairs) == 1
    return claim([
        Part("MSE", gain >= mse_gain, separated(spread([float(r.mse or 0) for r in base]),
                                                spread([float(r.mse or 0) for r in cand])),
             why="MSE from one seed (no spread to compare against)" if one else ""),
        Part("balanced attacker accuracy", drop >= accuracy_drop and not flipped,
             not flipped and separated(accuracy_interval(base), accuracy_interval(cand)),
             why=f"the candidate's reconstructions are flipped in {flipped} of {len(cand)} "
                 "runs (below chance: not protection)" if flipped else
                 "balanced attacker accuracy: the 95% intervals overlap" if one else ""),
    ], control_leaks=True)


def psnr_range(results: Sequence[AttackResult]) -> tuple[float, float] | None:
    """Lowest and highest PSNR among finished runs (None if none finished).

    Example:
        >>> psnr_range([])
    """
    vals = [float(r.psnr) for r in results if r.status == "ok" and r.psnr is not None]
    return (min(vals), max(vals)) if vals else None


def verdict_count_sentence(name: str, results: Sequence[AttackResult]) -> str:
    """``name``'s verdicts over the given runs, in words (e.g. on the undefended runs).

    Example:
        >>> verdict_count_sentence("iDLG", [])
        'iDLG: not run'
    """
    scored = [r for r in results if r.status != "n/a"]
    if not scored:
        return f"{name}: not run"
    counts = Counter(r.verdict if r.status == "ok" and r.verdict else r.status for r in scored)
    return f"{name}: " + ", ".join(f"{v} in {n} of {len(scored)}" for v, n in counts.items())


def sweep_sentence(mus: Sequence[float], mse: Sequence[float], attacked: float) -> str:
    """Where the mu sweep's MSE is lowest, whether it is monotonic, and what recovery does.

    Args:
        mus: the swept values, in order.
        mse: MSE of the recovered against the original images at each.
        attacked: MSE of the attacked (not recovered) images.

    Returns:
        One sentence.

    Example:
        >>> text = sweep_sentence([0.05, 0.15, 0.25], [0.02, 0.03, 0.04], 0.025)
        >>> text.split("; ")[0]
        'MSE is lowest at mu = 0.05 and rises monotonically with mu'
        >>> "at 1 of 3 values of mu" in text
        True
        >>> "makes the images worse" in sweep_sentence([0.05, 0.15], [0.03, 0.04], 0.01)
        True
    """
    if not mus or len(mus) != len(mse):
        return "The sweep has no values."
    best = min(range(len(mse)), key=lambda i: mse[i])
    steps = list(itertools.pairwise(mse))
    if steps and all(b > a for a, b in steps):
        shape = "rises monotonically with mu"
    elif steps and all(b < a for a, b in steps):
        shape = "falls monotonically with mu"
    else:
        shape = "is not monotonic in mu"
    lower = sum(m < attacked for m in mse)
    if lower == len(mse):
        rec = f"recovery lowers MSE below the attacked images' ({attacked:.5f}) at every mu."
    elif lower == 0:
        rec = (f"recovery raises MSE above the attacked images' ({attacked:.5f}) at every mu: "
               "it makes the images worse.")
    else:
        rec = (f"recovery lowers MSE below the attacked images' ({attacked:.5f}) at {lower} "
               f"of {len(mse)} values of mu.")
    return f"MSE is lowest at mu = {mus[best]:.2f} and {shape}; {rec}"


__all__ = [
    "ClaimLabel",
    "Part",
    "accuracy_interval",
    "balanced_cell",
    "chance_sentence",
    "claim",
    "control_leaks",
    "matched_claim",
    "one_class",
    "psnr_range",
    "separated",
    "spread",
    "sweep_sentence",
    "verdict_cell",
    "verdict_count_sentence",
]
