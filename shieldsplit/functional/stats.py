"""Pure statistics behind the auditor's verdicts: intervals, balanced accuracy, baselines.

Every function here is pure (inputs in, numbers out, nothing stored) and is tested
against scipy/scikit-learn/numpy references in ``tests/test_verdict.py``.

- :func:`wilson_interval`: the Wilson score interval of a proportion ``k / n``.
- :func:`bootstrap_interval`: a seeded percentile-bootstrap interval of any statistic
  of one sample (the mean per-image PSNR gain, a balanced accuracy).
- :func:`balanced_accuracy`: scikit-learn's balanced accuracy (mean per-class recall),
  computed over the classes present in the true labels.
- :func:`majority_rate`: the share of the most frequent label (what a constant guess scores).
- :func:`match_order`: pairs a batch of reconstructions with its originals by minimum
  total MSE (a gradient or update does not reveal the order of its images).
- :func:`no_attack_baselines`: what an attacker gets without observing anything: the
  mean auxiliary image, and (an oracle upper bound of any data-only guess) the auxiliary
  image nearest to each victim.
- :func:`lineup_identified`: whether each reconstruction picks its victim out of a
  line-up of the victim and every auxiliary image (nearest by MSE).

Example:
    >>> lo, hi = wilson_interval(8, 10)
    >>> round(lo, 3), round(hi, 3)
    (0.49, 0.943)
    >>> constant_guess = torch.tensor([0, 0, 0, 0])
    >>> balanced_accuracy(constant_guess, torch.tensor([0, 0, 0, 1]))
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import beta, norm
from sklearn.metrics import balanced_accuracy_score
from torch import Tensor

from shieldsplit.errors import ConfigError, InputShapeError

#: Resamples of :func:`bootstrap_interval` (the auditor's default).
BOOTSTRAP_RESAMPLES = 2000


def _check_binomial(k: int, n: int, level: float) -> None:
    """The arguments every binomial interval takes, or a typed error."""
    if not 0 < level < 1:
        raise ConfigError.build(what="level", expected="a float in (0, 1)", received=level,
                                fix="pass level=0.95")
    if n < 0 or not 0 <= k <= n:
        raise ConfigError.build(what="k, n", expected="0 <= k <= n", received=(k, n),
                                fix="count successes among the trials")


def wilson_interval(k: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    Args:
        k: successes, ``0 <= k <= n``.
        n: trials (0 gives the uninformative ``(0, 1)``).
        level: two-sided coverage.

    Returns:
        ``(low, high)`` in [0, 1].

    Raises:
        ConfigError: if ``k`` is outside ``[0, n]`` or ``level`` outside (0, 1).

    Example:
        >>> wilson_interval(0, 0)
        (0.0, 1.0)
    """
    _check_binomial(k, n, level)
    if n == 0:
        return 0.0, 1.0
    z = float(norm.ppf(0.5 + level / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def clopper_pearson_interval(k: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion.

    Unlike :func:`wilson_interval` it keeps its coverage near 0 and 1, where the line-up
    test lives: a line-up of 483 images has chance 0.2%, and Wilson's lower bound of
    1 re-identification in 64 (0.28%) already clears it, although one hit in 64 tries at
    0.2% happens by chance one time in eight.

    Args:
        k: successes, ``0 <= k <= n``.
        n: trials (0 gives the uninformative ``(0, 1)``).
        level: two-sided coverage.

    Returns:
        ``(low, high)`` in [0, 1].

    Raises:
        ConfigError: if ``k`` is outside ``[0, n]`` or ``level`` outside (0, 1).

    Example:
        >>> low, high = clopper_pearson_interval(0, 64)
        >>> low, round(high, 4)
        (0.0, 0.056)
    """
    _check_binomial(k, n, level)
    if n == 0:
        return 0.0, 1.0
    alpha = 1 - level
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def victims_to_bound(tolerance: float, *, level: float = 0.95) -> int:
    """The fewest trials whose exact upper bound falls below ``tolerance`` when none succeed.

    What a verdict quotes when its victims are too few to show a rate under the
    tolerance: with no success in ``n`` trials the upper bound is ``1 - (alpha/2)^(1/n)``.

    Args:
        tolerance: the rate the upper bound must fall below, in (0, 1).
        level: two-sided coverage of the interval.

    Returns:
        The smallest ``n``.

    Example:
        >>> victims_to_bound(0.3), victims_to_bound(0.1)
        (11, 36)
    """
    if not 0 < tolerance < 1:
        raise ConfigError.build(what="tolerance", expected="a rate in (0, 1)",
                                received=tolerance, fix="pass a tolerance such as 0.1")
    n = math.floor(math.log((1 - level) / 2) / math.log(1 - tolerance)) + 1
    while clopper_pearson_interval(0, n, level=level)[1] >= tolerance:
        n += 1
    return n


def holm_rejections(pvalues: Sequence[float], *, alpha: float = 0.05) -> list[bool]:
    """Holm's step-down rejections: which of a family of tests reject at family-wise
    error ``alpha`` (uniformly more powerful than Bonferroni, no assumption on how the
    tests depend on each other).

    Args:
        pvalues: one p-value per test.
        alpha: the family-wise error rate.

    Returns:
        One flag per test, in the given order.

    Example:
        >>> holm_rejections([0.01, 0.04, 0.03]), holm_rejections([0.01, 0.02, 0.03])
        ([True, False, False], [True, True, True])
    """
    m = len(pvalues)
    out = [False] * m
    for rank, i in enumerate(sorted(range(m), key=lambda j: pvalues[j])):
        if pvalues[i] > alpha / (m - rank):
            break
        out[i] = True
    return out


def bootstrap_interval(
    values: np.ndarray | Tensor,
    statistic: Callable[[np.ndarray], float] | None = None,
    *,
    seed: int = 0,
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``statistic`` over the rows of ``values``.

    Args:
        values: ``(n,)`` or ``(n, d)`` samples (rows are resampled together).
        statistic: maps a resample (same layout) to a number; default the mean.
        seed: seeds the resampling (same seed, same interval).
        level: two-sided coverage.
        resamples: number of bootstrap resamples.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for an empty sample; a single value gives a
        zero-width interval (one observation says nothing about spread: the auditor's
        rules treat such a count as too small to decide).

    Raises:
        ConfigError: if ``level`` is outside (0, 1) or ``resamples < 1``.

    Example:
        >>> lo, hi = bootstrap_interval(np.arange(100.0), seed=0)
        >>> 43 < lo < 49.5 < hi < 56
        True
    """
    if not 0 < level < 1 or resamples < 1:
        raise ConfigError.build(what="level, resamples",
                                expected="level in (0, 1) and resamples >= 1",
                                received=(level, resamples), fix="pass level=0.95")
    arr = values.detach().cpu().double().numpy() if isinstance(values, Tensor) else np.asarray(
        values, dtype=float)
    n = len(arr)
    if n == 0:
        return float("nan"), float("nan")
    stat = statistic or (lambda a: float(np.mean(a)))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    draws = np.array([stat(arr[i]) for i in idx])
    alpha = (1 - level) / 2
    return float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha))


def balanced_accuracy(predicted: Tensor, true: Tensor) -> float:
    """Balanced accuracy: the mean recall over the classes present in ``true``.

    Args:
        predicted: ``(n,)`` predicted labels.
        true: ``(n,)`` true labels.

    Returns:
        scikit-learn's ``balanced_accuracy_score`` (chance is ``1 / classes present``).

    Raises:
        InputShapeError: if the shapes differ or are empty.
    """
    if predicted.shape != true.shape or predicted.numel() == 0 or predicted.dim() != 1:
        raise InputShapeError.build(
            what="labels", expected="two non-empty (n,) tensors of equal shape",
            received=f"{tuple(predicted.shape)} and {tuple(true.shape)}",
            fix="pass one prediction per true label",
        )
    import warnings

    with warnings.catch_warnings():  # predicted classes absent from true: not our concern
        warnings.simplefilter("ignore")
        return float(balanced_accuracy_score(true.cpu().numpy(), predicted.cpu().numpy()))


def balanced_accuracy_interval(
    predicted: Tensor, true: Tensor, *, seed: int = 0, level: float = 0.95,
) -> tuple[float, float]:
    """Bootstrap interval of :func:`balanced_accuracy` (victims resampled with their labels).

    Args:
        predicted: ``(n,)`` predicted labels.
        true: ``(n,)`` true labels.
        seed: seeds the resampling.
        level: two-sided coverage.

    Returns:
        ``(low, high)``.
    """
    if predicted.shape != true.shape or predicted.numel() == 0:
        raise InputShapeError.build(
            what="labels", expected="two non-empty (n,) tensors of equal shape",
            received=f"{tuple(predicted.shape)} and {tuple(true.shape)}",
            fix="pass one prediction per true label",
        )
    t = true.cpu().long().numpy()
    correct = predicted.cpu().long().numpy() == t
    n = len(t)
    idx = np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
    tr, cr = t[idx], correct[idx]
    recalls, present = np.zeros(BOOTSTRAP_RESAMPLES), np.zeros(BOOTSTRAP_RESAMPLES)
    for c in np.unique(t):  # vectorised over resamples: per-class recall, mean over present
        den = (tr == c).sum(axis=1)
        num = ((tr == c) & cr).sum(axis=1)
        recalls += np.where(den > 0, num / np.maximum(den, 1), 0.0)
        present += den > 0
    draws = recalls / present
    alpha = (1 - level) / 2
    return float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha))


def majority_rate(labels: Tensor) -> float:
    """The share of the most frequent label (the accuracy of always guessing it).

    Args:
        labels: ``(n,)`` integer labels, ``n >= 1``.

    Returns:
        A fraction in (0, 1].
    """
    if labels.numel() == 0:
        raise InputShapeError.build(what="labels", expected="at least one label",
                                    received="none", fix="pass the victims' labels")
    return float(torch.bincount(labels.cpu().long().flatten()).max()) / labels.numel()


def _flat(x: Tensor) -> Tensor:
    return x.detach().float().flatten(1)


def pairwise_mse(a: Tensor, b: Tensor, *, chunk: int = 1024) -> Tensor:
    """Mean squared error between every image of ``a`` and every image of ``b``.

    Args:
        a: ``(n, C, H, W)`` images.
        b: ``(m, C, H, W)`` images of the same shape.
        chunk: rows of ``b`` per step (bounds memory).

    Returns:
        ``(n, m)`` MSE.

    Example:
        >>> pairwise_mse(torch.zeros(1, 1, 2, 2), torch.ones(2, 1, 2, 2))
        tensor([[1., 1.]])
    """
    if a.shape[1:] != b.shape[1:]:
        raise InputShapeError.build(what="images", expected="the same (C, H, W)",
                                    received=f"{tuple(a.shape)} and {tuple(b.shape)}",
                                    fix="compare images of one data set")
    fa, fb = _flat(a), _flat(b)
    d = fa.shape[1]
    out = [torch.cdist(fa, fb[i : i + chunk]).pow(2) / d for i in range(0, len(fb), chunk)]
    return torch.cat(out, dim=1) if out else torch.zeros(len(fa), 0)


def match_order(reconstructed: Tensor, original: Tensor) -> Tensor:
    """Reorder a batch of reconstructions to pair each with its original (minimum total MSE).

    A gradient or a weight update is a sum over the batch, so it does not reveal which
    reconstruction belongs to which image; as in Geiping et al. 2020 (and breaching), the
    score pairs them by the assignment that minimises the total MSE (Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``).

    Args:
        reconstructed: ``(n, C, H, W)``.
        original: ``(n, C, H, W)``.

    Returns:
        ``reconstructed`` reordered so that row ``i`` pairs with ``original[i]``.

    Example:
        >>> x = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
        >>> match_order(x.flip(0), x).flatten(1).mean(1).tolist()
        [0.0, 1.0]
    """
    if reconstructed.shape != original.shape:
        raise InputShapeError.build(what="images", expected="two batches of equal shape",
                                    received=f"{tuple(reconstructed.shape)} and "
                                             f"{tuple(original.shape)}",
                                    fix="pass one reconstruction per original")
    cost = pairwise_mse(original, reconstructed).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    order = torch.as_tensor(cols[np.argsort(rows)], dtype=torch.long)
    return reconstructed[order]


def align_labels(inferred: Tensor, true: Tensor) -> Tensor:
    """Order a batch's inferred labels to agree with the true ones wherever the counts allow.

    A gradient or update reveals a batch's labels as a multiset, not in order; this puts
    each inferred label beside a true label of the same class while one is left, so that
    per-position agreement counts the multiset overlap ``sum_c min(inferred_c, true_c)``.

    Args:
        inferred: ``(n,)`` labels in any order.
        true: ``(n,)`` the true labels.

    Returns:
        ``(n,)`` the inferred labels, reordered.

    Example:
        >>> align_labels(torch.tensor([0, 1, 1]), torch.tensor([1, 0, 2])).tolist()
        [1, 0, 1]
    """
    if inferred.shape != true.shape or inferred.dim() != 1:
        raise InputShapeError.build(what="labels", expected="two (n,) tensors of equal shape",
                                    received=f"{tuple(inferred.shape)} and {tuple(true.shape)}",
                                    fix="pass one inferred label per image")
    pool = inferred.cpu().tolist()
    out: list[int | None] = [None] * len(pool)
    for i, t in enumerate(true.cpu().tolist()):
        if t in pool:
            pool.remove(t)
            out[i] = t
    rest = iter(pool)
    return torch.tensor([v if v is not None else next(rest) for v in out], dtype=torch.long)


def interleave_classes(labels: Tensor) -> Tensor:
    """An order of ``labels`` that takes the classes in turn (round-robin, first-come order
    within a class), so that every prefix is as class-balanced as the data allow.

    The auditor's federated attacks rebuild only the first victims; in this order a few
    victims of an imbalanced data set are not all of the majority class (which would make
    chance 100% and balanced accuracy blind).

    Args:
        labels: ``(n,)`` integer labels.

    Returns:
        ``(n,)`` a permutation of ``range(n)``.

    Example:
        >>> interleave_classes(torch.tensor([0, 0, 0, 1, 1, 2])).tolist()
        [0, 3, 5, 1, 4, 2]
    """
    per_class = [torch.nonzero(labels == c).flatten().tolist()
                 for c in torch.unique(labels, sorted=True).tolist()]
    order: list[int] = []
    for rank in range(max((len(idx) for idx in per_class), default=0)):
        order += [idx[rank] for idx in per_class if rank < len(idx)]
    return torch.tensor(order, dtype=torch.long)


def no_attack_baselines(victims: Tensor, auxiliary: Tensor) -> dict[str, Tensor]:
    """Images an attacker can produce without observing the victim.

    Args:
        victims: ``(n, C, H, W)`` the true victim images.
        auxiliary: ``(m, C, H, W)`` the attacker's auxiliary images (disjoint from victims).

    Returns:
        ``{"auxiliary mean": (n, C, H, W), "nearest auxiliary": (n, C, H, W)}``: the mean
        auxiliary image repeated, and for each victim the auxiliary image nearest to it by
        MSE (an oracle: it uses the truth, so it upper-bounds any guess drawn from the
        auxiliary data alone).

    Example:
        >>> v = torch.zeros(2, 1, 2, 2); aux = torch.stack([torch.ones(1, 2, 2) * t
        ...                                                for t in (0.1, 0.9)])
        >>> b = no_attack_baselines(v, aux)
        >>> [round(b[k].mean().item(), 3) for k in ("auxiliary mean", "nearest auxiliary")]
        [0.5, 0.1]
    """
    if len(auxiliary) == 0:
        raise InputShapeError.build(what="auxiliary", expected="at least one image",
                                    received="none", fix="grant the attacker auxiliary data")
    mean = auxiliary.float().mean(dim=0, keepdim=True).expand(len(victims), -1, -1, -1)
    nearest = pairwise_mse(victims, auxiliary).argmin(dim=1)
    return {"auxiliary mean": mean.clone(), "nearest auxiliary": auxiliary[nearest].float()}


def lineup_identified(reconstructed: Tensor, victims: Tensor, auxiliary: Tensor) -> Tensor:
    """Whether each reconstruction is nearer (MSE) to its own victim than to any auxiliary image.

    A line-up test of re-identification: given the rebuilt image, could the attacker pick
    the patient out of the victim's image and every auxiliary image? Chance is
    ``1 / (len(auxiliary) + 1)``.

    Args:
        reconstructed: ``(n, C, H, W)``, row ``i`` the reconstruction of ``victims[i]``.
        victims: ``(n, C, H, W)``.
        auxiliary: ``(m, C, H, W)``.

    Returns:
        ``(n,)`` bool.

    Example:
        >>> v = torch.zeros(1, 1, 2, 2); aux = torch.ones(3, 1, 2, 2)
        >>> lineup_identified(v + 0.1, v, aux).tolist(), lineup_identified(v + 0.9, v, aux).tolist()
        ([True], [False])
    """
    own = ((_flat(reconstructed) - _flat(victims)) ** 2).mean(dim=1)
    others = pairwise_mse(reconstructed, auxiliary).min(dim=1).values
    return own < others


__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "align_labels",
    "balanced_accuracy",
    "balanced_accuracy_interval",
    "bootstrap_interval",
    "interleave_classes",
    "lineup_identified",
    "majority_rate",
    "match_order",
    "no_attack_baselines",
    "pairwise_mse",
    "wilson_interval",
]
