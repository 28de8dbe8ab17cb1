"""Membership inference, the pure part: scores, ROC metrics and the DP bound.

Every function here maps arrays to numbers (no models, no state). A *score* is
higher for examples the attack believes were in the training set; ``is_member``
is the ground truth (1 member, 0 non-member).

Metrics (scikit-learn's ``roc_curve`` and ``roc_auc_score``):

- :func:`roc_points`, :func:`membership_auc`, :func:`auc_interval` (a stratified
  bootstrap: members and non-members resampled separately);
- :func:`tpr_at_fpr`: the TPR at a low FPR (Carlini et al. 2022), with the honest rule
  that an FPR of ``f`` is resolvable only with at least ``1 / f`` non-members
  (:func:`min_nonmembers`): with fewer, the smallest non-zero FPR the data can show is
  above ``f`` and the function returns None;
- :func:`membership_advantage`: the balanced membership advantage
  ``max_t (TPR - FPR) = 2 * balanced accuracy - 1`` of the best threshold (Yeom et al. 2018).

Scores:

- :func:`loss_score`: the loss-threshold attack (Yeom et al. 2018): ``-loss = log p_y``;
- :func:`logit_confidence`: LiRA's scaled confidence ``log(p_y / (1 - p_y))``;
- :func:`lira_online`, :func:`lira_offline`: LiRA's per-example Gaussian tests
  (Carlini et al., "Membership Inference Attacks From First Principles", S&P 2022);
- :func:`rmia_score`: RMIA (Zarifzadeh et al., "Low-Cost High-Power Membership
  Inference Attacks", ICML 2024), pairwise likelihood ratios against population samples.

Bound: :func:`dp_tpr_bound`, the largest TPR any attack can reach at a given FPR against
an ``(epsilon, delta)``-DP training algorithm (Kairouz et al. 2015).

Example:
    >>> import numpy as np
    >>> scores, member = np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 1, 0, 0])
    >>> membership_auc(scores, member), membership_advantage(scores, member)
    (1.0, 1.0)
    >>> tpr_at_fpr(scores, member, 0.01) is None   # 2 non-members cannot resolve 1% FPR
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict
from scipy.stats import fisher_exact, mannwhitneyu, norm, rankdata
from sklearn.metrics import roc_auc_score, roc_curve

from shieldsplit._core.validate import check_number
from shieldsplit.errors import ConfigError, InputShapeError
from shieldsplit.functional.stats import BOOTSTRAP_RESAMPLES, holm_rejections, wilson_interval
from shieldsplit.functional.verdict import DEFAULT_TOLERANCE, Decision, Tolerance, decide

#: Probabilities are clipped to ``[EPS, 1 - EPS]`` before logarithms.
EPS = 1e-12


def _scores_labels(scores: ArrayLike, is_member: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=float).reshape(-1)
    m = np.asarray(is_member).reshape(-1)
    if s.shape != m.shape or not np.isin(m, (0, 1)).all():
        raise InputShapeError.build(
            what="scores, is_member", expected="two (n,) arrays of equal length, is_member 0/1",
            received=f"{s.shape} scores and {m.shape} labels", fix="pass one 0/1 label per score")
    if not np.isfinite(s).all():
        raise InputShapeError.build(what="scores", expected="finite scores",
                                    received="NaN or infinity", fix="check the attack's scores")
    m = m.astype(int)
    if m.sum() == 0 or m.sum() == len(m):
        raise InputShapeError.build(
            what="is_member", expected="at least one member and one non-member",
            received=f"{int(m.sum())} members of {len(m)}", fix="score both sets")
    return s, m


def min_nonmembers(fpr: float) -> int:
    """Non-members needed to resolve an FPR of ``fpr``: ``ceil(1 / fpr)``.

    With ``n`` non-members the smallest non-zero FPR a threshold can show is ``1 / n``;
    below ``1 / fpr`` non-members, "TPR at ``fpr``" is really the TPR at FPR 0.

    Args:
        fpr: the false-positive rate, in (0, 1).

    Returns:
        The count.

    Example:
        >>> min_nonmembers(0.001), min_nonmembers(0.01), min_nonmembers(0.3)
        (1000, 100, 4)
    """
    f = check_number("fpr", fpr, low=0.0, low_open=True, high=1.0, high_open=True,
                     fix="pass fpr=0.01 (1%) or 0.001 (0.1%)")
    return math.ceil(1.0 / f - 1e-9)


def roc_points(scores: ArrayLike, is_member: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve of a membership score (scikit-learn's ``roc_curve``).

    Args:
        scores: ``(n,)`` higher means "member".
        is_member: ``(n,)`` 1 for members, 0 for non-members (both present).

    Returns:
        ``(fpr, tpr)``, increasing, from ``(0, 0)`` to ``(1, 1)``.

    Raises:
        InputShapeError: mismatched lengths, labels other than 0/1, non-finite scores or
            a single class.

    Example:
        >>> fpr, tpr = roc_points([0.9, 0.1], [1, 0])
        >>> fpr.tolist(), tpr.tolist()
        ([0.0, 0.0, 1.0], [0.0, 1.0, 1.0])
    """
    s, m = _scores_labels(scores, is_member)
    fpr, tpr, _ = roc_curve(m, s, drop_intermediate=False)
    return fpr, tpr


def membership_auc(scores: ArrayLike, is_member: ArrayLike) -> float:
    """Area under the ROC curve (scikit-learn's ``roc_auc_score``; 0.5 is chance).

    Args:
        scores: ``(n,)`` higher means "member".
        is_member: ``(n,)`` 0/1.

    Returns:
        The AUC.

    Example:
        >>> membership_auc([0.2, 0.8, 0.5, 0.5], [0, 1, 1, 0])
        0.875
    """
    s, m = _scores_labels(scores, is_member)
    return float(roc_auc_score(m, s))


def auc_interval(scores: ArrayLike, is_member: ArrayLike, *, seed: int = 0,
                 level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                 ) -> tuple[float, float]:
    """Stratified percentile-bootstrap interval of the AUC.

    Members and non-members are resampled separately (each resample keeps the set
    sizes, so every resample has both classes); the AUC of a resample is the
    Mann-Whitney statistic from its ranks (ties count one half), as ``roc_auc_score``.

    Args:
        scores: ``(n,)`` higher means "member".
        is_member: ``(n,)`` 0/1.
        seed: seeds the resampling.
        level: two-sided coverage.
        resamples: bootstrap resamples.

    Returns:
        ``(low, high)``.

    Example:
        >>> lo, hi = auc_interval([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], [1, 1, 1, 0, 0, 0])
        >>> lo, hi
        (1.0, 1.0)
    """
    s, m = _scores_labels(scores, is_member)
    check_number("level", level, low=0.0, low_open=True, high=1.0, high_open=True,
                 fix="pass level=0.95")
    pos, neg = s[m == 1], s[m == 0]
    rng = np.random.default_rng(seed)
    rp = pos[rng.integers(0, len(pos), size=(resamples, len(pos)))]
    rn = neg[rng.integers(0, len(neg), size=(resamples, len(neg)))]
    ranks = rankdata(np.concatenate([rp, rn], axis=1), axis=1)
    n1, n0 = len(pos), len(neg)
    draws = (ranks[:, :n1].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    alpha = (1 - level) / 2
    return float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha))


def tpr_at_fpr(scores: ArrayLike, is_member: ArrayLike, fpr: float) -> float | None:
    """The TPR of the best threshold whose FPR is at most ``fpr``.

    Args:
        scores: ``(n,)`` higher means "member".
        is_member: ``(n,)`` 0/1.
        fpr: the target false-positive rate, in (0, 1).

    Returns:
        The TPR, or None when fewer than :func:`min_nonmembers` non-members make the
        FPR unresolvable.

    Example:
        >>> s = np.r_[np.arange(100.0), 200.0, 50.5]   # one member above every non-member
        >>> tpr_at_fpr(s, np.r_[np.zeros(100), 1, 1], 0.01)
        0.5
    """
    s, m = _scores_labels(scores, is_member)
    if int((m == 0).sum()) < min_nonmembers(fpr):
        return None
    fprs, tprs = roc_points(s, m)
    return float(tprs[fprs <= fpr + 1e-12].max())


def count_at_fpr(scores: ArrayLike, is_member: ArrayLike, fpr: float) -> tuple[int, int]:
    """Members and non-members flagged by the threshold of :func:`tpr_at_fpr`.

    Args:
        scores: ``(n,)`` higher means "member".
        is_member: ``(n,)`` 0/1.
        fpr: the target false-positive rate.

    Returns:
        ``(true positives, false positives)`` of the most permissive threshold whose
        FPR is at most ``fpr`` (the counts behind intervals of the TPR and the FPR).

    Example:
        >>> count_at_fpr([3.0, 2.0, 1.0, 0.0], [1, 0, 1, 0], 0.5)
        (2, 1)
    """
    s, m = _scores_labels(scores, is_member)
    fprs, tprs = roc_points(s, m)
    best = int(np.flatnonzero(fprs <= fpr + 1e-12)[-1])
    return round(tprs[best] * m.sum()), round(fprs[best] * (len(m) - m.sum()))


def membership_advantage(scores: ArrayLike, is_member: ArrayLike) -> float:
    """Balanced membership advantage ``max_t (TPR - FPR)`` (Yeom et al. 2018).

    Equals ``2 * balanced accuracy - 1`` of the best threshold: 0 is chance, 1 a perfect
    attack (it does not depend on the ratio of members to non-members).

    Args:
        scores: ``(n,)`` higher means "member".
        is_member: ``(n,)`` 0/1.

    Returns:
        The advantage in [0, 1].

    Example:
        >>> membership_advantage([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0])
        0.5
    """
    fprs, tprs = roc_points(scores, is_member)
    return float(np.max(tprs - fprs))


def _true_class(probs: ArrayLike, labels: ArrayLike) -> np.ndarray:
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels).reshape(-1)
    if p.ndim < 2 or p.shape[-2] != len(y):
        raise InputShapeError.build(
            what="probs", expected="(..., n, classes) probabilities, one row per label",
            received=f"shape {p.shape} for {len(y)} labels", fix="pass the softmax output")
    if not np.issubdtype(y.dtype, np.integer) or (y < 0).any() or (y >= p.shape[-1]).any():
        raise InputShapeError.build(
            what="labels", expected=f"integer labels in [0, {p.shape[-1] - 1}]",
            received=f"{y.dtype} in [{y.min()}, {y.max()}]", fix="pass the true classes")
    return np.take_along_axis(p, np.broadcast_to(y[:, None], (*p.shape[:-1], 1)),
                              axis=-1)[..., 0]


def loss_score(probs: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """The loss-threshold score (Yeom et al. 2018): minus the cross-entropy, ``log p_y``.

    Members of an overfitted model have low loss; flag an example a member when its
    score is above a threshold.

    Args:
        probs: ``(n, classes)`` the target's class probabilities.
        labels: ``(n,)`` the true classes.

    Returns:
        ``(n,)`` scores.

    Example:
        >>> loss_score([[0.5, 0.5], [0.9, 0.1]], [0, 0]).round(4).tolist()
        [-0.6931, -0.1054]
    """
    return np.log(np.clip(_true_class(probs, labels), EPS, 1.0))


def logit_confidence(probs: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """LiRA's scaled confidence ``log(p_y / (1 - p_y))``, close to Gaussian over models.

    Args:
        probs: ``(..., n, classes)`` class probabilities (a leading axis for models).
        labels: ``(n,)`` the true classes.

    Returns:
        ``(..., n)`` the logit of the true-class probability (clipped to ``[EPS, 1-EPS]``).

    Example:
        >>> logit_confidence([[0.5, 0.5], [0.75, 0.25]], [0, 0]).round(4).tolist()
        [0.0, 1.0986]
    """
    p = np.clip(_true_class(probs, labels), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def _gaussian_fit(ref: np.ndarray, global_std: bool) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref, dtype=float)
    if ref.ndim != 2 or ref.shape[0] < 1:
        raise InputShapeError.build(
            what="reference confidences", expected="(models, n) with at least one model",
            received=f"shape {ref.shape}", fix="score every example on every reference model")
    mu = ref.mean(axis=0)
    if global_std or ref.shape[0] < 2:
        std = np.full_like(mu, ref.std() if ref.shape[0] < 2 else
                           np.sqrt(ref.var(axis=0, ddof=1).mean()))
    else:
        std = ref.std(axis=0, ddof=1)
    return mu, np.maximum(std, 1e-6)


def lira_online(target: ArrayLike, ref_in: ArrayLike, ref_out: ArrayLike, *,
                global_std: bool = False) -> np.ndarray:
    """Online LiRA: the per-example Gaussian log-likelihood ratio IN versus OUT.

    ``log N(c; mu_in, s_in) - log N(c; mu_out, s_out)``, ``c`` the target's
    :func:`logit_confidence` on the example, the Gaussians fitted per example to the
    reference models that trained on it (IN) and those that did not (OUT).

    Args:
        target: ``(n,)`` the target model's scaled confidences.
        ref_in: ``(k_in, n)`` those of the IN reference models.
        ref_out: ``(k_out, n)`` those of the OUT reference models.
        global_std: one standard deviation for every example (the pooled per-example
            variance), as Carlini et al. advise below 64 reference models; forced with a
            single model, where the spread over all its examples stands in.

    Returns:
        ``(n,)`` scores (higher: member).

    Example:
        >>> ref_in, ref_out = np.array([[3.0], [5.0]]), np.array([[-1.0], [1.0]])
        >>> round(float(lira_online([4.0], ref_in, ref_out)[0]), 6)
        4.0
    """
    c = np.asarray(target, dtype=float).reshape(-1)
    mu_in, s_in = _gaussian_fit(np.asarray(ref_in), global_std)
    mu_out, s_out = _gaussian_fit(np.asarray(ref_out), global_std)
    if mu_in.shape != c.shape or mu_out.shape != c.shape:
        raise InputShapeError.build(what="reference confidences",
                                    expected=f"{len(c)} examples per reference model",
                                    received=f"{mu_in.shape} and {mu_out.shape}",
                                    fix="score the same examples on every model")
    return np.asarray(norm.logpdf(c, mu_in, s_in) - norm.logpdf(c, mu_out, s_out))


def lira_offline(target: ArrayLike, ref_out: ArrayLike, *, global_std: bool = False,
                 ) -> np.ndarray:
    """Offline LiRA: the one-sided test against the OUT Gaussian only.

    ``log P(Z <= c)`` for ``Z ~ N(mu_out, s_out)`` fitted per example to reference models
    that did not train on it: how far the target's confidence sits above what models
    that never saw the example give it (Carlini et al. 2022, section VI-C).

    Args:
        target: ``(n,)`` the target model's scaled confidences.
        ref_out: ``(k, n)`` those of the OUT reference models.
        global_std: see :func:`lira_online`.

    Returns:
        ``(n,)`` scores (higher: member).

    Example:
        >>> round(float(np.exp(lira_offline([1.0], np.array([[-1.0], [1.0]]))[0])), 4)
        0.7602
    """
    c = np.asarray(target, dtype=float).reshape(-1)
    mu, s = _gaussian_fit(np.asarray(ref_out), global_std)
    if mu.shape != c.shape:
        raise InputShapeError.build(what="ref_out", expected=f"{len(c)} examples per model",
                                    received=f"{mu.shape}", fix="score the same examples")
    return np.asarray(norm.logcdf(c, mu, s))


def rmia_score(target_x: ArrayLike, ref_x: ArrayLike, target_z: ArrayLike, ref_z: ArrayLike,
               *, a: float | None = 0.3, gamma: float = 1.0) -> np.ndarray:
    """RMIA (Zarifzadeh et al. 2024): the share of population samples ``z`` that ``x``
    dominates by a pairwise likelihood ratio above ``gamma``.

    ``LR(x, z) = (Pr(x | theta) / Pr(x)) / (Pr(z | theta) / Pr(z))``, ``Pr(. | theta)``
    the target's probability of the true class and ``Pr(.)`` its mean over the reference
    models. Offline (``a`` given: every reference model is OUT for ``x``), the mean over
    OUT models is scaled up to the mean over IN and OUT models as
    ``Pr(.) = ((1 + a) * mean_out + (1 - a)) / 2`` (the paper's linear approximation; the
    same scaling is applied to ``z``, as in ML Privacy Meter). ``a=None`` is online: the
    references mix IN and OUT models and their plain mean is used.

    Args:
        target_x: ``(n,)`` the target's true-class probabilities on the audited examples.
        ref_x: ``(k, n)`` the reference models' on the same examples.
        target_z: ``(m,)`` the target's on the population samples.
        ref_z: ``(k, m)`` the reference models' on them.
        a: the offline scaling in [0, 1], or None (online).
        gamma: the likelihood-ratio threshold, ``>= 1``.

    Returns:
        ``(n,)`` scores in [0, 1] (higher: member).

    Example:
        >>> rmia_score([0.9, 0.2], [[0.5, 0.5]], [0.5, 0.4], [[0.5, 0.5]], a=None).tolist()
        [1.0, 0.0]
    """
    gamma = check_number("gamma", gamma, low=1.0, low_open=False, fix="pass gamma=1")
    if a is not None:
        a = check_number("a", a, low=0.0, low_open=False, high=1.0, fix="pass a=0.3 or None")
    tx = np.asarray(target_x, dtype=float).reshape(-1)
    tz = np.asarray(target_z, dtype=float).reshape(-1)
    rx, rz = np.atleast_2d(np.asarray(ref_x, dtype=float)), np.atleast_2d(
        np.asarray(ref_z, dtype=float))
    if rx.shape[1:] != tx.shape or rz.shape[1:] != tz.shape or rx.shape[0] != rz.shape[0]:
        raise InputShapeError.build(
            what="reference probabilities", expected="ref_x (k, n) and ref_z (k, m) from the "
            "same k models", received=f"{rx.shape}, {rz.shape} for n={len(tx)}, m={len(tz)}",
            fix="score x and z on every reference model")

    def marginal(ref: np.ndarray) -> np.ndarray:
        mean = ref.mean(axis=0)
        return mean if a is None else ((1 + a) * mean + (1 - a)) / 2

    ratio_x = np.clip(tx, EPS, None) / np.clip(marginal(rx), EPS, None)
    ratio_z = np.clip(tz, EPS, None) / np.clip(marginal(rz), EPS, None)
    # LR(x, z) > gamma  <=>  ratio_z < ratio_x / gamma: count with one sort
    sorted_z = np.sort(ratio_z)
    return np.searchsorted(sorted_z, ratio_x / gamma, side="left") / len(sorted_z)


def dp_tpr_bound(fpr: ArrayLike, epsilon: float, delta: float = 0.0) -> np.ndarray:
    """The largest TPR at ``fpr`` of any membership test against ``(epsilon, delta)``-DP.

    ``TPR <= min(1, e^eps * FPR + delta, 1 - e^-eps * (1 - delta - FPR))`` (Kairouz et al.
    2015): the first term from ``FPR + e^eps * FNR``-type symmetry of the two hypotheses
    read one way, the second read the other way.

    Args:
        fpr: false-positive rates in [0, 1].
        epsilon: the privacy budget, ``>= 0``.
        delta: the failure probability, in [0, 1].

    Returns:
        The bound at each FPR.

    Example:
        >>> dp_tpr_bound([0.0, 0.01, 0.5], epsilon=1.0, delta=0.0).round(4).tolist()
        [0.0, 0.0272, 0.8161]
    """
    eps = check_number("epsilon", epsilon, low=0.0, low_open=False, fix="pass epsilon >= 0")
    dlt = check_number("delta", delta, low=0.0, low_open=False, high=1.0, fix="pass delta=1e-5")
    f = np.asarray(fpr, dtype=float)
    if ((f < 0) | (f > 1)).any() or not np.isfinite(f).all():
        raise ConfigError.build(what="fpr", expected="rates in [0, 1]",
                                received=f"[{f.min()}, {f.max()}]", fix="pass FPRs in [0, 1]")
    one = math.exp(eps) * f + dlt
    other = 1 - math.exp(-eps) * (1 - dlt - f)
    return np.clip(np.minimum(one, other), 0.0, 1.0)


# ------------------------------------------------------------------ evidence and verdict

#: The FPR at which a low-FPR leak is tested (1%: resolvable from 100 non-members).
LEAK_FPR = 0.01


class MembershipEvidence(BaseModel):
    """What one membership attack showed, reduced to the numbers the rule reads.

    Attributes:
        status: ``ok`` when the attack finished.
        members: members scored.
        nonmembers: non-members scored.
        auc: the ROC AUC.
        auc_low: its 95% stratified-bootstrap lower bound.
        auc_high: its 95% stratified-bootstrap upper bound.
        tpr_low_fpr: the TPR at :data:`LEAK_FPR`, None if not resolvable.
        tpr_low: Wilson lower bound of that TPR (its true positives among the members).
        fpr_high: Wilson upper bound of the FPR the same threshold reached (its false
            positives among the non-members).
        p_auc: one-sided p-value of the AUC above 0.5 (Mann-Whitney U).
        p_tpr: one-sided p-value of the TPR above the FPR at that threshold (Fisher's
            exact test), None when not resolvable.
        holm_leak: whether Holm's correction over every test of the audit's attacks
            rejects one of this attack's tests (set by
            :func:`shieldsplit.audit.membership.decide_membership_report`); None outside
            a family (then the AUC test alone decides).
    """

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok", "cancelled", "failed"] = "ok"
    members: int = 0
    nonmembers: int = 0
    auc: float | None = None
    auc_low: float | None = None
    auc_high: float | None = None
    tpr_low_fpr: float | None = None
    tpr_low: float | None = None
    fpr_high: float | None = None
    p_auc: float | None = None
    p_tpr: float | None = None
    holm_leak: bool | None = None

    @property
    def auc_leak(self) -> bool:
        """The AUC's lower bound is above chance (0.5)."""
        return self.auc_low is not None and self.auc_low > 0.5

    @property
    def tpr_leak(self) -> bool:
        """At the 1%-FPR threshold, the TPR's lower bound beats the FPR's upper bound."""
        return (self.tpr_low is not None and self.fpr_high is not None
                and self.tpr_low > self.fpr_high)

    @property
    def leaks(self) -> bool:
        """Membership leakage, corrected for multiple tests.

        Two tests per attack (the AUC above 0.5, the TPR above the FPR at 1% FPR) over
        several attacks would inflate the chance of a false *leaks*; so an attack leaks
        when Holm's correction over every test of the audit's attacks rejects one of
        its tests (:attr:`holm_leak`). Outside a family (an old record, one attack
        alone) the AUC's 95% lower bound above 0.5 decides."""
        if self.holm_leak is not None:
            return self.holm_leak
        return self.auc_leak

    def pvalues(self) -> list[float]:
        """This attack's tests' p-values (the AUC's, then the TPR's where resolvable); an
        old record without them gets the AUC's from its normal approximation."""
        p_auc = self.p_auc
        if p_auc is None and self.auc is not None and self.members and self.nonmembers:
            n1, n0 = self.members, self.nonmembers
            z = (self.auc - 0.5) / math.sqrt((n1 + n0 + 1) / (12 * n1 * n0))
            p_auc = float(norm.sf(z))
        return [p for p in (p_auc, self.p_tpr) if p is not None]

    @property
    def inverted(self) -> bool:
        """The AUC's upper bound is below 0.5: the score ranks members *below* non-members."""
        return self.auc_high is not None and self.auc_high < 0.5

    def leak_reason(self) -> str:
        """The tests that showed leakage, with their numbers."""
        shown = [f"AUC {self.auc:.3f} [{self.auc_low:.3f}, {self.auc_high:.3f}]"
                 + (f", p = {self.p_auc:.2g}" if self.p_auc is not None else ""),
                 f"TPR {self.tpr_low_fpr:.1%} at 1% FPR (lower bound {self.tpr_low:.1%}, the "
                 f"FPR's upper bound {self.fpr_high:.1%}"
                 + (f", p = {self.p_tpr:.2g})" if self.p_tpr is not None else ")")
                 if self.tpr_low_fpr is not None else ""]
        family = ("significant after Holm's correction over the audit's attacks"
                  if self.holm_leak is not None else "the AUC's lower bound above 0.5")
        return f"leaks membership ({family}): " + "; ".join(t for t in shown if t)

    def reversed_reason(self) -> str | None:
        """Inverted scores, in words, or None."""
        if not self.inverted:
            return None
        return (f"the scores rank members below non-members (AUC upper bound "
                f"{self.auc_high:.3f} < 0.5): the signal is there, inverted")

    def control_gap(self, control_name: str) -> str | None:
        """As a control it vouches when it finished and leaked."""
        if self.status == "ok" and self.leaks:
            return None
        return (f"the attack did not leak on {control_name} either: at this budget it is "
                "not shown to detect members")

    def setting_gap(self, control: Any) -> str | None:
        """None when the control scored as many members and non-members, else why not."""
        if not isinstance(control, MembershipEvidence):
            return "the control's evidence is of another type"
        if (self.members, self.nonmembers) != (control.members, control.nonmembers):
            return (f"the control scored {control.members} members and {control.nonmembers} "
                    f"non-members, the target {self.members} and {self.nonmembers}")
        return None

    def separation_gap(self, control: Any) -> str | None:
        """None when the target's AUC interval lies below the control's."""
        if (not isinstance(control, MembershipEvidence) or self.auc_high is None
                or control.auc_low is None or not self.auc_high < control.auc_low):
            return "the AUC is not significantly below the control's (the 95% intervals overlap)"
        return None

    def tolerance_gap(self, tolerance: Tolerance) -> str | None:
        """None when the AUC's upper bound is under 0.5 plus the tolerance."""
        if self.auc_high is None or self.auc_high >= 0.5 + tolerance.membership_auc:
            return (f"too few members or too close to call to rule out an AUC up to "
                    f"{self.auc_high if self.auc_high is not None else float('nan'):.3f} "
                    f"(tolerance 0.5 + {tolerance.membership_auc:g})")
        return None

    def no_leak_reason(self, control_name: str, tolerance: Tolerance) -> str:
        """The *no leakage found* sentence with its numbers and the tolerance."""
        return (f"AUC {self.auc:.3f} [{self.auc_low:.3f}, {self.auc_high:.3f}] on "
                f"{self.members} members and {self.nonmembers} non-members, significantly "
                f"below the same attack on {control_name}; tolerance: AUC 0.5 + "
                f"{tolerance.membership_auc:g}")


def membership_evidence(scores: ArrayLike, is_member: ArrayLike, *, seed: int = 0,
                        ) -> MembershipEvidence:
    """Reduce one attack's scores to :class:`MembershipEvidence` (95% intervals).

    Args:
        scores: ``(n,)`` higher means "member".
        is_member: ``(n,)`` 0/1.
        seed: seeds the bootstrap.

    Returns:
        The evidence; the TPR fields are None when fewer than 100 non-members leave 1% FPR
        unresolvable.

    Example:
        >>> ev = membership_evidence(np.r_[np.ones(50), np.zeros(50)], np.r_[np.ones(50),
        ...                          np.zeros(50)])
        >>> ev.auc, ev.auc_leak, ev.tpr_low_fpr
        (1.0, True, None)
    """
    s, m = _scores_labels(scores, is_member)
    n1, n0 = int(m.sum()), int(len(m) - m.sum())
    lo, hi = auc_interval(s, m, seed=seed)
    out = MembershipEvidence(members=n1, nonmembers=n0, auc=membership_auc(s, m),
                             auc_low=lo, auc_high=hi, tpr_low_fpr=tpr_at_fpr(s, m, LEAK_FPR))
    if n1 and n0:
        out.p_auc = float(mannwhitneyu(s[m == 1], s[m == 0], alternative="greater").pvalue)
    if out.tpr_low_fpr is not None:
        tp, fp = count_at_fpr(s, m, LEAK_FPR)
        out.tpr_low, out.fpr_high = wilson_interval(tp, n1)[0], wilson_interval(fp, n0)[1]
        out.p_tpr = float(fisher_exact([[tp, n1 - tp], [fp, n0 - fp]],
                                       alternative="greater").pvalue)
    return out


def holm_family(evidences: Sequence[MembershipEvidence], *, alpha: float = 0.05) -> None:
    """Decide which attacks of one audited model leak, with Holm's correction over every
    test of every attack (sets each evidence's :attr:`MembershipEvidence.holm_leak`).

    Args:
        evidences: the finished attacks' evidence on one model.
        alpha: the family-wise error rate.

    Example:
        >>> a = MembershipEvidence(members=50, nonmembers=50, auc=0.6, p_auc=0.03)
        >>> b = MembershipEvidence(members=50, nonmembers=50, auc=0.7, p_auc=0.001)
        >>> holm_family([a, b]); a.holm_leak, b.holm_leak
        (True, True)
        >>> a.p_auc = 0.04; holm_family([a, b, a.model_copy()]); a.holm_leak
        False
    """
    tests = [(i, p) for i, e in enumerate(evidences) if e.status == "ok"
             for p in e.pvalues()]
    rejected = holm_rejections([p for _, p in tests], alpha=alpha)
    for i, e in enumerate(evidences):
        if e.status == "ok":
            e.holm_leak = any(r for (j, _), r in zip(tests, rejected, strict=True) if j == i)


def decide_membership(target: MembershipEvidence, control: MembershipEvidence | None, *,
                      control_name: str = "the overfitted control",
                      tolerance: Tolerance = DEFAULT_TOLERANCE) -> Decision:
    """The decision rule of docs/audit.md, for one membership attack.

    1. the attack did not finish → inconclusive;
    2. it leaks (:attr:`MembershipEvidence.leaks`: one of its tests, the AUC above 0.5
       or the TPR above the FPR at 1% FPR, survives Holm's correction over the audit's
       attacks) → **leaks**;
    3. its AUC is significantly below 0.5 (inverted scores) → inconclusive;
    4. no control was run → inconclusive;
    5. the control scored other set sizes → inconclusive;
    6. the same attack did not leak on the control → inconclusive;
    7. the AUC's interval is not below the control's → inconclusive;
    8. the AUC's upper bound is not under 0.5 plus the tolerance → inconclusive;
    9. otherwise → **no leakage found**.

    Args:
        target: the attack's evidence on the audited model.
        control: the same attack, same budget, on the positive control (None: not run).
        control_name: how the reason names the control.
        tolerance: the AUC's upper bound must stay under 0.5 plus its ``membership_auc``.

    Returns:
        The verdict and its reason.

    Example:
        >>> strong = MembershipEvidence(auc=0.9, auc_low=0.8, auc_high=0.95)
        >>> weak = MembershipEvidence(auc=0.5, auc_low=0.4, auc_high=0.6)
        >>> [decide_membership(t, c).verdict for t, c in ((strong, None), (weak, strong),
        ...                                                (weak, weak))]
        ['leaks', 'no leakage found', 'inconclusive']
    """
    return decide(target, control, control_name=control_name, tolerance=tolerance)


__all__ = [
    "EPS",
    "LEAK_FPR",
    "MembershipEvidence",
    "auc_interval",
    "count_at_fpr",
    "decide_membership",
    "dp_tpr_bound",
    "holm_family",
    "lira_offline",
    "lira_online",
    "logit_confidence",
    "loss_score",
    "membership_advantage",
    "membership_auc",
    "membership_evidence",
    "min_nonmembers",
    "rmia_score",
    "roc_points",
    "tpr_at_fpr",
]
