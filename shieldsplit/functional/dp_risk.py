"""What DP-SGD's noise bounds, in attack terms: riskcal's trade-off curves (issue 24).

DP-SGD with Poisson sampling rate ``q``, ``steps`` steps and noise multiplier ``sigma``
is ``f``-DP for the trade-off curve of the composed subsampled Gaussian mechanism. riskcal
(Kulynych, Gomez et al., NeurIPS 2024) computes that curve from its privacy loss
distribution, and so the highest true-positive rate any membership test against one
training example can reach at a given false-positive rate (:func:`risk_of_noise`), and the
least noise that keeps it below a target (:func:`noise_for_risk`). The same number bounds
reconstruction: an attack whose baseline success (guessing from the prior alone) is ``p``
succeeds with probability at most the TPR at FPR ``p`` (Kulynych et al., NeurIPS 2025).

:func:`tpr_of_epsilon` is the bound a single ``(epsilon, delta)`` pair gives (what
Opacus's accountant reports): always at least riskcal's for the same training, often much
more, because one pair is one point of the privacy profile. :func:`compare_noise` puts an
empirically searched noise multiplier (the least noise at which the measured attacks fall
to the target) beside riskcal's for the same target.

riskcal is an optional dependency (``pip install 'shieldsplit[harden]'``); without it the
functions that need it raise :class:`RiskcalMissingError` (no fallback: the caller
decides).

Example:
    >>> round(tpr_of_epsilon(1.0, delta=1e-5, at_fpr=0.01), 4)
    0.0272
    >>> risk = risk_of_noise(2.0, at_fpr=0.01, sample_rate=1.0, steps=1)
    >>> round(risk, 3)  # one full-batch step: the Gaussian curve with mu = 1/2
    0.034
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from shieldsplit.errors import ConfigError

#: the PLD discretisation interval: riskcal's default is 1e-4 (about 10x slower); 1e-3
#: moves a TPR by about 1e-4 and stays pessimistic (an upper bound)
GRID_STEP = 1e-3
#: the least noise multiplier :func:`noise_for_risk` searches down to
MIN_NOISE = 1e-3
#: below this noise multiplier riskcal's privacy loss distribution grows with 1/sigma
#: (0.01 takes minutes, 1e-3 far longer): :func:`risk_of_noise` first asks riskcal here
SATURATION_NOISE = 0.1
#: a TPR bound at least this high is reported as 1 (the bound says nothing)
SATURATED = 1.0 - 1e-9


class RiskcalMissingError(ConfigError):
    """riskcal, which computes DP-SGD's trade-off curve, is not installed."""

    label = "Missing optional dependency"


def _check(what: str, value: Any, low: float, high: float, *, closed_high: bool = False,
           fix: str = "") -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low < value and (value <= high if closed_high else value < high):
        return float(value)
    bracket = "]" if closed_high else ")"
    raise ConfigError.build(what=what, expected=f"a number in ({low}, {high}{bracket}",
                            received=repr(value), fix=fix or f"pass {what} in that range")


def _check_steps(steps: Any) -> int:
    if isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1:
        return steps
    raise ConfigError.build(what="steps", expected="an integer >= 1 (DP-SGD's optimiser steps)",
                            received=repr(steps), fix="pass epochs * steps per epoch")


def _beta_for_dpsgd() -> Any:
    try:
        from riskcal.calibration.dpsgd import get_beta_for_dpsgd
    except ImportError as exc:
        raise RiskcalMissingError.build(
            what="riskcal", expected="riskcal installed (DP-SGD's trade-off curve)",
            received=f"{type(exc).__name__}: {exc}", fix="pip install 'shieldsplit[harden]'",
        ) from exc
    return get_beta_for_dpsgd


def tpr_of_epsilon(epsilon: float, *, delta: float, at_fpr: float) -> float:
    """The highest TPR at FPR ``at_fpr`` that ``(epsilon, delta)``-DP allows (no riskcal).

    ``(epsilon, delta)``-DP bounds every test's error rates by
    ``TPR <= min(1, e^eps * FPR + delta, 1 - e^-eps * (1 - delta - FPR))``
    (Kairouz, Oh, Viswanath 2015).

    Args:
        epsilon: the epsilon (>= 0).
        delta: the delta, in ``[0, 1)``.
        at_fpr: the false-positive rate, in ``(0, 1)``.

    Returns:
        The TPR bound.

    Raises:
        ConfigError: a value out of range.

    Example:
        >>> tpr_of_epsilon(0.0, delta=0.0, at_fpr=0.05)  # 0-DP: no test beats chance
        0.05
    """
    if not (isinstance(epsilon, (int, float)) and epsilon >= 0 and not math.isnan(epsilon)):
        raise ConfigError.build(what="epsilon", expected="a number >= 0", received=repr(epsilon),
                                fix="pass the accountant's epsilon")
    if delta != 0:
        delta = _check("delta", delta, 0.0, 1.0)
    fpr = _check("at_fpr", at_fpr, 0.0, 1.0)
    if math.isinf(epsilon):
        return 1.0
    return float(min(1.0, math.exp(epsilon) * fpr + delta,
                     1.0 - math.exp(-epsilon) * (1.0 - delta - fpr)))


def risk_of_noise(noise_multiplier: float, *, at_fpr: float, sample_rate: float, steps: int,
                  grid_step: float = GRID_STEP) -> float:
    """The highest TPR at FPR ``at_fpr`` that riskcal allows any membership test against
    one example of DP-SGD (Poisson sampling, the adversary sees every update).

    Args:
        noise_multiplier: the noise std over the clipping norm (> 0).
        at_fpr: the false-positive rate, in ``(0, 1)`` (for reconstruction: the attack's
            baseline success from the prior alone).
        sample_rate: the Poisson sampling rate (expected batch size over data size), in
            ``(0, 1]``.
        steps: the number of optimiser steps.
        grid_step: the PLD discretisation interval (smaller: slower, slightly tighter).

    Less noise never lowers the bound (adding more Gaussian noise is post-processing), so
    below :data:`SATURATION_NOISE` the bound is first asked there: where it is already 1
    (to :data:`SATURATED`), the answer is 1 without riskcal's far slower curve for the
    smaller noise (1 is always a valid upper bound).

    Returns:
        The TPR bound, in ``[at_fpr, 1]``.

    Raises:
        RiskcalMissingError: riskcal is not installed.
        ConfigError: a value out of range.

    Example:
        >>> risk_of_noise(1e-4, at_fpr=0.002, sample_rate=0.1, steps=100)  # vacuous, fast
        1.0
        >>> from scipy.stats import norm  # one full-batch step is the Gaussian curve
        >>> exact = norm.cdf(norm.ppf(0.01) + 1 / 0.5)
        >>> bool(abs(risk_of_noise(0.5, at_fpr=0.01, sample_rate=1.0, steps=1) - exact) < 1e-3)
        True
    """
    sigma = _check("noise_multiplier", noise_multiplier, 0.0, math.inf)
    fpr = _check("at_fpr", at_fpr, 0.0, 1.0)
    q = _check("sample_rate", sample_rate, 0.0, 1.0, closed_high=True)
    steps = _check_steps(steps)
    grid = _check("grid_step", grid_step, 0.0, 0.1)
    if sigma < SATURATION_NOISE and _tpr(SATURATION_NOISE, q, steps, fpr, grid) >= SATURATED:
        return 1.0
    tpr = _tpr(sigma, q, steps, fpr, grid)
    return 1.0 if tpr >= SATURATED else tpr


@functools.lru_cache(maxsize=4096)
def _tpr(sigma: float, q: float, steps: int, fpr: float, grid: float) -> float:
    # deterministic in its arguments: a search repeated for the same training is free
    beta = float(_beta_for_dpsgd()(sigma, q, steps, alpha=fpr, grid_step=grid))
    return min(1.0, max(fpr, 1.0 - beta))


def noise_for_risk(target_tpr: float, at_fpr: float, *, sample_rate: float, steps: int,
                   grid_step: float = GRID_STEP, rtol: float = 1e-3,
                   max_noise: float = 100.0) -> float:
    """The least noise multiplier (to ``rtol``, rounded up) at which riskcal bounds
    every membership test against DP-SGD to ``TPR <= target_tpr`` at FPR ``at_fpr``.

    Args:
        target_tpr: the highest TPR allowed, in ``(at_fpr, 1)``.
        at_fpr: the false-positive rate, in ``(0, 1)``.
        sample_rate: the Poisson sampling rate, in ``(0, 1]``.
        steps: the number of optimiser steps.
        grid_step: the PLD discretisation interval.
        rtol: the relative precision of the answer.
        max_noise: the largest noise multiplier searched.

    Returns:
        ``sigma`` with ``risk_of_noise(sigma) <= target_tpr`` and
        ``risk_of_noise(sigma / (1 + rtol)) > target_tpr``.

    Raises:
        RiskcalMissingError: riskcal is not installed.
        ConfigError: a value out of range, or a target that ``max_noise`` cannot reach.

    Example:
        >>> sigma = noise_for_risk(0.1, 0.01, sample_rate=1.0, steps=1)
        >>> round(sigma, 2)  # the Gaussian curve: 1 / (norm.ppf(0.1) - norm.ppf(0.01))
        0.96
    """
    fpr = _check("at_fpr", at_fpr, 0.0, 1.0)
    target = _check("target_tpr", target_tpr, fpr, 1.0,
                    fix="pass a TPR above the FPR (at the FPR no test beats chance)")
    _check("rtol", rtol, 0.0, 1.0)

    def risk(sigma: float) -> float:
        return risk_of_noise(sigma, at_fpr=fpr, sample_rate=sample_rate, steps=steps,
                             grid_step=grid_step)

    top = _check("max_noise", max_noise, 0.0, math.inf)
    if risk(top) > target:
        raise ConfigError.build(
            what="target_tpr", expected=f"a TPR that noise_multiplier <= {top} reaches",
            received=f"{target} (riskcal: {risk(top):.4g} at {top})",
            fix="raise max_noise, or allow a higher TPR, fewer steps or a lower sample rate")
    # bracket from 1 by doubling or halving (risk falls as noise grows), then bisect
    low = high = min(1.0, top)
    if risk(high) <= target:
        while risk(low) <= target:
            high, low = low, low / 2
            if low < MIN_NOISE:
                return high
    else:
        while risk(high) > target:
            low, high = high, min(2 * high, top)
    while high / low > 1 + rtol:
        mid = math.sqrt(low * high)
        low, high = (low, mid) if risk(mid) <= target else (mid, high)
    return high


class RiskComparison(BaseModel):
    """An empirically searched DP-SGD noise beside riskcal's for the same target.

    Attributes:
        target_tpr: the TPR the attacks had to fall to.
        at_fpr: at this FPR.
        sample_rate: the Poisson sampling rate of the training.
        steps: its optimiser steps.
        empirical_noise: the least noise at which the measured attacks met the target.
        riskcal_noise: the least noise at which riskcal proves it for every attack.
        riskcal_tpr_at_empirical: riskcal's TPR bound at the empirical noise.
        tighter: which asks for less noise (``"empirical"``, ``"riskcal"``, ``"equal"``).
        ratio: ``riskcal_noise / empirical_noise``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_tpr: float
    at_fpr: float
    sample_rate: float
    steps: int
    empirical_noise: float
    riskcal_noise: float
    riskcal_tpr_at_empirical: float
    tighter: Literal["empirical", "riskcal", "equal"]
    ratio: float

    def sentence(self) -> str:
        """The comparison in words, with why the two can differ.

        Example:
            >>> RiskComparison(target_tpr=0.1, at_fpr=0.01, sample_rate=1.0, steps=1,
            ...                empirical_noise=0.5, riskcal_noise=0.98,
            ...                riskcal_tpr_at_empirical=0.37, tighter="empirical",
            ...                ratio=1.96).sentence().split(";")[0]
            'the empirical search needs 1.96x less noise than riskcal (0.5 vs 0.98)'
        """
        if self.tighter == "equal":
            head = ("the empirical search and riskcal need the same noise "
                    f"({self.riskcal_noise:.3g})")
        elif self.tighter == "empirical":
            head = (f"the empirical search needs {self.ratio:.3g}x less noise than riskcal "
                    f"({self.empirical_noise:.3g} vs {self.riskcal_noise:.3g})")
        else:
            head = (f"riskcal needs {1 / self.ratio:.3g}x less noise than the empirical search "
                    f"({self.riskcal_noise:.3g} vs {self.empirical_noise:.3g})")
        return (f"{head}; at the empirical noise riskcal allows TPR "
                f"{self.riskcal_tpr_at_empirical:.3g} at FPR {self.at_fpr:.3g}. riskcal "
                "bounds the best test against one example over any neighbouring datasets "
                "with every update seen, so measured attacks on one dataset can only do "
                "worse (less noise meets the target, but proves nothing); riskcal asking for "
                "less means the measured attacks exploit what DP-SGD does not cover (the "
                "activations on the wire, or a different sampling than Poisson) or the "
                "search's noise grid is coarse")


def compare_noise(empirical_noise: float, *, target_tpr: float, at_fpr: float,
                  sample_rate: float, steps: int, grid_step: float = GRID_STEP,
                  rtol: float = 1e-3) -> RiskComparison:
    """Put an empirically searched DP-SGD noise multiplier beside riskcal's for the
    same target (TPR at FPR) and training (sample rate, steps).

    Args:
        empirical_noise: the least noise at which the measured attacks met the target.
        target_tpr: the target TPR.
        at_fpr: at this FPR.
        sample_rate: the Poisson sampling rate of the training.
        steps: its optimiser steps.
        grid_step: the PLD discretisation interval.
        rtol: relative tolerance of riskcal's noise (and of "equal").

    Returns:
        The comparison.

    Raises:
        RiskcalMissingError: riskcal is not installed.
        ConfigError: a value out of range.

    Example:
        >>> c = compare_noise(0.5, target_tpr=0.1, at_fpr=0.01, sample_rate=1.0, steps=1)
        >>> c.tighter, round(c.riskcal_noise, 2)
        ('empirical', 0.96)
    """
    empirical = _check("empirical_noise", empirical_noise, 0.0, math.inf)
    needed = noise_for_risk(target_tpr, at_fpr, sample_rate=sample_rate, steps=steps,
                            grid_step=grid_step, rtol=rtol)
    ratio = needed / empirical
    tighter: Literal["empirical", "riskcal", "equal"] = (
        "equal" if abs(math.log(ratio)) <= math.log1p(2 * rtol)
        else "empirical" if ratio > 1 else "riskcal")
    return RiskComparison(
        target_tpr=target_tpr, at_fpr=at_fpr, sample_rate=sample_rate, steps=steps,
        empirical_noise=empirical, riskcal_noise=needed, tighter=tighter, ratio=ratio,
        riskcal_tpr_at_empirical=risk_of_noise(empirical, at_fpr=at_fpr,
                                               sample_rate=sample_rate, steps=steps,
                                               grid_step=grid_step))


__all__ = ["GRID_STEP", "MIN_NOISE", "SATURATED", "SATURATION_NOISE", "RiskComparison",
           "RiskcalMissingError", "compare_noise", "noise_for_risk", "risk_of_noise",
           "tpr_of_epsilon"]
