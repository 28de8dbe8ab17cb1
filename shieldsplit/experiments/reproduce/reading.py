"""Sentences and cells computed from a run's numbers, read through the auditor's verdicts.

Every sentence a results page uses to interpret a number comes from here, so that it
follows the numbers of the run that made the page instead of being fixed text. The
rules (pure functions, tested in ``tests/test_reproduce.py``):

- verdicts are never read as stored: :func:`~shieldsplit.compare.frontier.redecide_run`
  decides a cell's attacks again from their stored evidence with the auditor's current
  rule before anything reads them;
- a paper's claim about images (MSE, PSNR) is *inconclusive* unless the attack behind it
  leaked *images* (re-identification or rebuilt images) on every undefended run
  (:func:`control_leaks_images`): an attack that leaked only labels or the class is not
  shown to rebuild images, so its failure on a defence says nothing about images;
- two rows are *separated* when the 95% Student-t intervals of their means over seeds
  (:func:`seed_interval`) are disjoint; a row measured on one seed has no such interval
  and never decides a claim (*inconclusive*, "one seed");
- a row whose classifier is *stuck* (it scores exactly the majority rate of the images it
  was evaluated on, or below chance: :func:`stuck_reason`) is reported as stuck and left
  out of every ordering;
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
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Literal, NamedTuple

from shieldsplit.audit.auditor import AttackResult
from shieldsplit.compare.frontier import MatchedPair
from shieldsplit.compare.report import stuck

ClaimLabel = Literal["holds", "does not hold", "inconclusive"]
Interval = tuple[float, float]


#: The confidence level of the intervals across seeds that decide orderings.
LEVEL = 0.95
#: The reason a one-seed row gives for not deciding.
ONE_SEED = "one seed (no interval across seeds)"


def seed_interval(values: Sequence[float], level: float = LEVEL) -> Interval | None:
    """The ``level`` Student-t confidence interval of the mean of ``values`` (one value per
    seed): ``mean ± t(1 - (1 - level) / 2, n - 1) * sd / sqrt(n)``. None for fewer than two
    values: one seed says nothing of the spread between seeds.

    Example:
        >>> lo, hi = seed_interval([1.0, 2.0, 3.0])
        >>> round(lo, 4), round(hi, 4)
        (-0.4841, 4.4841)
        >>> seed_interval([2.0]), seed_interval([])
        (None, None)
    """
    if len(values) < 2:
        return None
    from scipy.stats import t

    m, s = statistics.mean(values), statistics.stdev(values)
    half = float(t.ppf(1 - (1 - level) / 2, len(values) - 1)) * s / math.sqrt(len(values))
    return (m - half, m + half)


def separated(a: Interval | None, b: Interval | None) -> bool:
    """Whether two intervals are disjoint (a missing interval, such as a one-seed row's,
    or two points say nothing: False).

    Example:
        >>> separated((0.0, 1.0), (2.0, 3.0)), separated((0.0, 2.0), (1.0, 3.0))
        (True, False)
        >>> separated((1.0, 1.0), (2.0, 2.0)), separated((1.0, 1.0), None)
        (False, False)
    """
    if a is None or b is None or (a[0] == a[1] and b[0] == b[1]):
        return False
    return a[1] < b[0] or b[1] < a[0]


def seed_part(name: str, holds: bool, a: Sequence[float], b: Sequence[float]) -> Part:
    """One comparison of two rows over seeds: separated when their t-intervals are
    disjoint; a row with one seed leaves it undecided, saying so.

    Example:
        >>> seed_part("MSE", True, [1.0, 1.1, 1.2], [2.0, 2.1, 2.2]).separated
        True
        >>> seed_part("MSE", True, [1.0], [2.0, 2.1, 2.2]).why
        'MSE from one seed (no interval across seeds)'
    """
    if min(len(a), len(b)) < 2:
        return Part(name, holds, False, why=f"{name} from {ONE_SEED}")
    return Part(name, holds, separated(seed_interval(a), seed_interval(b)),
                why=f"{name}: the {LEVEL:.0%} t-intervals across seeds overlap")


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


def claim(parts: Sequence[Part], *, control_leaks: bool,
          control_why: str = "") -> tuple[ClaimLabel, str]:
    """Decide a paper's claim (a conjunction of ``parts``) and say why.

    Args:
        parts: the comparisons the claim makes.
        control_leaks: whether the attack leaks, in the way the claim needs, on the
            undefended run (for a claim about images: :func:`control_leaks_images`).
        control_why: why it does not (default: it does not leak).

    Returns:
        ``holds``, ``does not hold`` or ``inconclusive``, and the reason in words.

    Example:
        >>> claim([Part("MSE", True, True), Part("accuracy", True, False)],
        ...       control_leaks=True)
        ('inconclusive', 'accuracy within the seed spread')
    """
    if not control_leaks:
        return "inconclusive", control_why or "the attack does not leak on the undefended run"
    if not parts:
        return "inconclusive", "nothing was measured"
    wrong = [p.name for p in parts if p.separated and not p.holds]
    if wrong:
        return "does not hold", "; ".join(f"{n} the other way" for n in wrong)
    unsure = [p.why or f"{p.name} within the seed spread" for p in parts if not p.separated]
    if unsure:
        return "inconclusive", "; ".join(unsure)
    return "holds", (f"every comparison goes the claimed way, clear of the {LEVEL:.0%} "
                     "t-intervals across seeds")


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
    """Whether an attack leaked *images* (re-identification or rebuilt images, read from
    its evidence completed with exact bounds) on every undefended run given: only then
    can it decide a claim about images (MSE, PSNR); a label-only leak cannot.

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
        r.evidence is not None and r.evidence.completed().image_leak for r in results)


def image_control_reason(results: Sequence[AttackResult]) -> str:
    """Why the undefended runs cannot decide a claim about images, in words ("" when they
    can: the attack leaked images on every one).

    Example:
        >>> image_control_reason([])
        'the attack does not leak on the undefended run'
        >>> from shieldsplit.audit.auditor import AttackResult
        >>> from shieldsplit.functional.verdict import Evidence
        >>> labels = AttackResult(attack="a", threat_model="t", observes="gradient",
        ...                       images=8, seconds=1.0, verdict="leaks",
        ...                       evidence=Evidence(label_low=0.9, majority=0.5))
        >>> image_control_reason([labels])
        'on the undefended run the attack leaked labels or the class only, not images (1 of 1 runs)'
    """
    if control_leaks_images(results):
        return ""
    if not control_leaks(results):
        return "the attack does not leak on the undefended run"
    short = sum(not (r.evidence is not None and r.evidence.completed().image_leak)
                for r in results)
    return ("on the undefended run the attack leaked labels or the class only, not images "
            f"({short} of {len(results)} runs)")


def image_leak_sentence(name: str, results: Sequence[AttackResult]) -> str:
    """Which kind of image evidence ``name`` showed on the undefended runs, counted (the
    rule counts re-identification alone as an image leak, whatever the PSNR).

    Example:
        >>> from shieldsplit.audit.auditor import AttackResult
        >>> from shieldsplit.functional.verdict import Evidence
        >>> r = AttackResult(attack="a", threat_model="t", observes="gradient", images=32,
        ...                  seconds=1.0, verdict="leaks",
        ...                  evidence=Evidence(images=32, identified=17, lineup_chance=0.002,
        ...                                    gain_low=-4.0))
        >>> image_leak_sentence("iDLG", [r]).split(" and ")[0]
        'iDLG re-identified victims in 1 of 1 undefended runs'
        >>> image_leak_sentence("iDLG", [r]).endswith("in 0 of 1")
        True
    """
    evs = [r.evidence.completed() for r in results if r.evidence is not None]
    return (f"{name} re-identified victims in {sum(e.reidentified for e in evs)} of "
            f"{len(results)} undefended runs and rebuilt images (PSNR gain above the "
            f"no-attack baseline) in {sum(e.rebuilt for e in evs)} of {len(results)}")


def stuck_reason(accuracy: float, labels: Sequence[int], classes: int) -> str:
    """Why a classifier scored on ``labels`` learned nothing ("" when it did not get stuck):
    its accuracy is exactly the majority rate of those labels (what always predicting the
    most common class scores, to within one image), or below chance (``1 / classes``).

    Args:
        accuracy: its accuracy on the evaluated images.
        labels: the labels of exactly those images.
        classes: the task's classes.

    Returns:
        The reason in words, or "".

    Example:
        >>> stuck_reason(31 / 48, [0] * 17 + [1] * 31, 2)
        'scores exactly the majority rate of the 48 images it was tested on (31/48 = 64.6%)'
        >>> stuck_reason(2 / 48, list(range(10)) * 4 + [0] * 8, 10)
        'scores below chance (4.2% < 10.0% on 10 classes)'
        >>> stuck_reason(0.8, [0] * 17 + [1] * 31, 2)
        ''
    """
    n = len(labels)
    if n == 0:
        return ""
    top = max(Counter(int(v) for v in labels).values())
    if abs(accuracy * n - top) < 0.5:
        return (f"scores exactly the majority rate of the {n} images it was tested on "
                f"({top}/{n} = {top / n:.1%})")
    if accuracy < 1 / classes:
        return f"scores below chance ({accuracy:.1%} < {1 / classes:.1%} on {classes} classes)"
    return ""


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


def matched_claim(pairs: Sequence[MatchedPair], control: Sequence[AttackResult], *,
                  mse_gain: float, accuracy_drop: float,
                  classes: int = 2) -> tuple[ClaimLabel, str]:
    """The latent paper's claim at matched accuracy, decided from matched pairs.

    The claim: the candidate's MSE is at least ``mse_gain`` higher *and* the attacker's
    balanced accuracy at least ``accuracy_drop`` lower (relative) than the baseline's. It
    is a claim about the reconstructions, so it needs the attack to leak *images* on every
    undefended run. Pairs whose baseline or candidate classifier is stuck (one class) are
    left out. MSE and balanced attacker accuracy are compared by their 95% t-intervals
    across seeds; one seed decides nothing. A flipped candidate (below chance) does not
    count as a drop.

    Args:
        pairs: baseline runs and their nearest candidate runs (one per seed).
        control: the attack's results on the undefended runs of the same seeds.
        mse_gain: the claimed relative MSE gain (0.124 for 12.4%).
        accuracy_drop: the claimed relative drop of attacker accuracy.
        classes: the task's classes (to tell a stuck classifier).

    Returns:
        ``holds``, ``does not hold`` or ``inconclusive``, and the reason.

    Example:
        >>> matched_claim([], [], mse_gain=0.124, accuracy_drop=0.125)
        ('inconclusive', 'the attack does not leak on the undefended run')
    """
    why = image_control_reason(control)
    if why:
        return claim([], control_leaks=False, control_why=why)
    if not pairs:
        return "inconclusive", "no run was scored"
    live = [p for p in pairs if not stuck(p.baseline, classes)
            and not stuck(p.candidate, classes)]
    if not live:
        return "inconclusive", (f"the classifier is stuck (one class) in all {len(pairs)} "
                                "pairs: left out of the comparison")
    left = (f" ({len(pairs) - len(live)} of {len(pairs)} pairs left out: a stuck classifier)"
            if len(live) < len(pairs) else "")
    attack = live[0].attack
    base = [p.baseline.leakage[attack] for p in live]
    cand = [p.candidate.leakage[attack] for p in live]
    flipped = sum(r.flipped for r in cand)
    gain = statistics.mean(p.mse_gain for p in live)
    drop = statistics.mean(p.attacker_accuracy_drop for p in live)
    bal = [_balanced(r) for r in base], [_balanced(r) for r in cand]
    acc = seed_part("balanced attacker accuracy", drop >= accuracy_drop and not flipped, *bal)
    if flipped:
        acc = Part(acc.name, False, False,
                   why=f"the candidate's reconstructions are flipped in {flipped} of "
                       f"{len(cand)} runs (below chance: not protection)")
    label, reason = claim([
        seed_part("MSE", gain >= mse_gain, [float(r.mse or 0) for r in base],
                  [float(r.mse or 0) for r in cand]),
        acc,
    ], control_leaks=True)
    return label, reason + left


def _balanced(r: AttackResult) -> float:
    return float(r.balanced_accuracy or 0.0)


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
    "LEVEL",
    "ClaimLabel",
    "Part",
    "balanced_cell",
    "chance_sentence",
    "claim",
    "control_leaks",
    "control_leaks_images",
    "image_control_reason",
    "image_leak_sentence",
    "matched_claim",
    "one_class",
    "psnr_range",
    "seed_interval",
    "seed_part",
    "separated",
    "stuck_reason",
    "sweep_sentence",
    "verdict_cell",
    "verdict_count_sentence",
]
