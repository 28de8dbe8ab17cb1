"""DP-SGD's bound in attack terms (``shieldsplit.functional.dp_risk``, issue 24 item 4),
against references computed without riskcal: the Gaussian trade-off curve (full-batch
DP-SGD is the Gaussian mechanism composed ``steps`` times, ``mu = sqrt(steps) / sigma``,
by scipy) and the ``(epsilon, delta)`` that Opacus's accountants report for the same
training, which can never allow less than the exact curve does."""

from __future__ import annotations

import math
import sys

import pytest
from scipy.stats import norm

from shieldsplit.errors import ConfigError
from shieldsplit.functional.dp_risk import (
    RiskcalMissingError,
    compare_noise,
    noise_for_risk,
    risk_of_noise,
    tpr_of_epsilon,
)


@pytest.fixture
def riskcal() -> None:
    pytest.importorskip("riskcal")


def gaussian_tpr(sigma: float, steps: int, fpr: float) -> float:
    return float(norm.cdf(norm.ppf(fpr) + math.sqrt(steps) / sigma))


@pytest.mark.parametrize(("sigma", "steps"), [(0.5, 1), (1.0, 4), (3.0, 9)])
def test_full_batch_risk_is_the_gaussian_curve(riskcal: None, sigma: float, steps: int) -> None:
    for fpr in (0.001, 0.01, 0.1):
        got = risk_of_noise(sigma, at_fpr=fpr, sample_rate=1.0, steps=steps)
        assert got == pytest.approx(gaussian_tpr(sigma, steps, fpr), abs=5e-4), (fpr, got)


def test_noise_for_risk_is_the_least_noise_of_the_gaussian_curve(riskcal: None) -> None:
    tpr, fpr, steps = 0.2, 0.01, 4
    exact = math.sqrt(steps) / (norm.ppf(tpr) - norm.ppf(fpr))
    sigma = noise_for_risk(tpr, fpr, sample_rate=1.0, steps=steps, rtol=1e-3)
    assert sigma == pytest.approx(exact, rel=3e-3)
    assert risk_of_noise(sigma, at_fpr=fpr, sample_rate=1.0, steps=steps) <= tpr
    assert risk_of_noise(sigma / 1.002, at_fpr=fpr, sample_rate=1.0, steps=steps) > tpr


def test_opacus_epsilon_never_allows_less_than_riskcal(riskcal: None) -> None:
    from opacus.accountants import PRVAccountant, RDPAccountant

    sigma, q, steps, delta = 1.0, 0.05, 50, 1e-5
    epsilons = []
    for accountant in (RDPAccountant(), PRVAccountant()):
        accountant.history = [(sigma, q, steps)]
        epsilons.append(accountant.get_epsilon(delta))
    assert epsilons[1] <= epsilons[0]  # PRV is the tighter accountant
    gaps = []
    for fpr in (0.001, 0.01, 0.1):
        exact = risk_of_noise(sigma, at_fpr=fpr, sample_rate=q, steps=steps)
        assert fpr < exact < 1.0
        for eps in epsilons:  # a valid (eps, delta) pair bounds the curve from above
            assert tpr_of_epsilon(eps, delta=delta, at_fpr=fpr) >= exact - 1e-4, (fpr, eps)
        gaps.append(tpr_of_epsilon(epsilons[1], delta=delta, at_fpr=fpr) - exact)
    assert max(gaps) > 0.02  # one (eps, delta) pair is a loose description of the curve
    # subsampling spends less: the same noise over one full batch allows more
    assert risk_of_noise(sigma, at_fpr=0.01, sample_rate=q, steps=1) < risk_of_noise(
        sigma, at_fpr=0.01, sample_rate=1.0, steps=1)


def test_tpr_of_epsilon_closed_forms() -> None:
    assert tpr_of_epsilon(0.0, delta=0.01, at_fpr=0.2) == pytest.approx(0.21)
    assert tpr_of_epsilon(math.inf, delta=0.0, at_fpr=0.01) == 1.0
    # large FPR: the second bound binds, 1 - e^-eps (1 - delta - fpr)
    assert tpr_of_epsilon(1.0, delta=0.0, at_fpr=0.5) == pytest.approx(1 - 0.5 / math.e)
    with pytest.raises(ConfigError) as info:
        tpr_of_epsilon(-1.0, delta=0.0, at_fpr=0.1)
    assert info.value.what == "epsilon"


def test_compare_noise_says_which_needs_less(riskcal: None) -> None:
    needed = noise_for_risk(0.2, 0.01, sample_rate=1.0, steps=1)
    less = compare_noise(needed / 2, target_tpr=0.2, at_fpr=0.01, sample_rate=1.0, steps=1)
    assert less.tighter == "empirical" and less.ratio == pytest.approx(2.0, rel=1e-6)
    assert less.riskcal_tpr_at_empirical > 0.2 and "2x less noise" in less.sentence()
    more = compare_noise(needed * 3, target_tpr=0.2, at_fpr=0.01, sample_rate=1.0, steps=1)
    assert more.tighter == "riskcal" and more.riskcal_tpr_at_empirical < 0.2
    same = compare_noise(needed, target_tpr=0.2, at_fpr=0.01, sample_rate=1.0, steps=1)
    assert same.tighter == "equal"


@pytest.mark.parametrize(("call", "what"), [
    (lambda: noise_for_risk(0.01, 0.01, sample_rate=1.0, steps=1), "target_tpr"),
    (lambda: noise_for_risk(0.5, 0.01, sample_rate=1.0, steps=1, max_noise=0.2), "target_tpr"),
    (lambda: risk_of_noise(1.0, at_fpr=0.01, sample_rate=0.0, steps=1), "sample_rate"),
    (lambda: risk_of_noise(1.0, at_fpr=0.01, sample_rate=0.1, steps=0), "steps"),
    (lambda: risk_of_noise(0.0, at_fpr=0.01, sample_rate=0.1, steps=1), "noise_multiplier"),
    (lambda: risk_of_noise(1.0, at_fpr=1.0, sample_rate=0.1, steps=1), "at_fpr"),
])
def test_bad_values_are_typed_errors(riskcal: None, call: object, what: str) -> None:
    with pytest.raises(ConfigError) as info:
        call()  # type: ignore[operator]
    assert info.value.what == what


def test_without_riskcal_the_error_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "riskcal.calibration.dpsgd", None)
    with pytest.raises(RiskcalMissingError, match=r"shieldsplit\[harden\]") as info:
        risk_of_noise(1.0, at_fpr=0.01, sample_rate=0.1, steps=1)
    assert isinstance(info.value, ConfigError) and info.value.what == "riskcal"
