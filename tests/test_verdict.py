"""The auditor's statistics and decision rule, against scipy/scikit-learn/numpy references.

Every branch of :func:`shieldsplit.functional.decide` has its own test.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest
from scipy.stats import bootstrap as scipy_bootstrap
from sklearn.metrics import balanced_accuracy_score

from shieldsplit.errors import ConfigError, InputShapeError
from shieldsplit.functional import (
    Decision,
    Evidence,
    Tolerance,
    align_labels,
    balanced_accuracy,
    balanced_accuracy_interval,
    bootstrap_interval,
    decide,
    evidence,
    interleave_classes,
    lineup_identified,
    majority_rate,
    match_order,
    no_attack_baselines,
    pairwise_mse,
    position_verdict,
    wilson_interval,
)
from shieldsplit.functional.stats import clopper_pearson_interval, victims_to_bound

# ------------------------------------------------------------------ statistics


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), frac=st.floats(0, 1))
def test_wilson_matches_scipy(n: int, frac: float) -> None:
    k = round(frac * n)
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-9)
    assert hi == pytest.approx(ref.high, abs=1e-9)


def test_wilson_separates_half_from_three_quarters_only_with_enough_victims() -> None:
    # the reason the federated victim counts were raised: at 64 the intervals separate
    assert wilson_interval(32, 64)[1] < wilson_interval(48, 64)[0]
    assert wilson_interval(8, 16)[1] > wilson_interval(12, 16)[0]


def test_wilson_rejects_bad_counts() -> None:
    with pytest.raises(ConfigError):
        wilson_interval(5, 3)
    with pytest.raises(ConfigError):
        wilson_interval(1, 3, level=1.5)


def test_bootstrap_agrees_with_scipy_percentile_bootstrap() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=200)
    ours = bootstrap_interval(x, seed=1, resamples=4000)
    ref = scipy_bootstrap((x,), np.mean, method="percentile", n_resamples=4000,
                          random_state=1).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.08)
    assert ours[1] == pytest.approx(ref.high, abs=0.08)
    assert bootstrap_interval(x, seed=1) == bootstrap_interval(x, seed=1)
    assert bootstrap_interval(x, seed=1) != bootstrap_interval(x, seed=2)


def test_bootstrap_edge_cases() -> None:
    assert all(np.isnan(v) for v in bootstrap_interval(np.array([])))
    assert bootstrap_interval(np.array([4.0])) == (4.0, 4.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60))
def test_balanced_accuracy_matches_sklearn(pairs: list[tuple[int, int]]) -> None:
    pred = torch.tensor([p for p, _ in pairs])
    true = torch.tensor([t for _, t in pairs])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = balanced_accuracy_score(true.numpy(), pred.numpy())
    assert balanced_accuracy(pred, true) == pytest.approx(ref)


def test_balanced_accuracy_sees_the_majority_guess_as_chance() -> None:
    # 73% majority, as BreastMNIST: plain accuracy says 73%, balanced says chance
    true = torch.tensor([0] * 73 + [1] * 27)
    guess = torch.zeros(100, dtype=torch.long)
    assert float((guess == true).double().mean()) == pytest.approx(0.73)
    assert balanced_accuracy(guess, true) == pytest.approx(0.5)
    assert majority_rate(true) == pytest.approx(0.73)
    lo, hi = balanced_accuracy_interval(guess, true, seed=0)
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)


def test_balanced_accuracy_interval_matches_a_sklearn_bootstrap() -> None:
    g = torch.Generator().manual_seed(4)
    true = torch.randint(0, 3, (80,), generator=g)
    pred = torch.where(torch.rand(80, generator=g) < 0.7, true, torch.randint(0, 3, (80,),
                                                                              generator=g))
    pairs = np.stack([pred.numpy(), true.numpy()], axis=1)
    ref = bootstrap_interval(pairs, lambda a: balanced_accuracy_score(a[:, 1], a[:, 0]),
                             seed=0)
    assert balanced_accuracy_interval(pred, true, seed=0) == pytest.approx(ref, abs=1e-12)


def test_balanced_accuracy_rejects_mismatched_shapes() -> None:
    with pytest.raises(InputShapeError):
        balanced_accuracy(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long))


def test_pairwise_mse_matches_a_loop() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(5, 1, 4, 4, generator=g), torch.rand(7, 1, 4, 4, generator=g)
    ref = torch.tensor([[float(((x - y) ** 2).mean()) for y in b] for x in a])
    assert torch.allclose(pairwise_mse(a, b, chunk=3), ref, atol=1e-6)


def test_match_order_is_the_brute_force_optimum() -> None:
    g = torch.Generator().manual_seed(1)
    orig = torch.rand(5, 1, 3, 3, generator=g)
    rec = (orig + 0.3 * torch.rand(5, 1, 3, 3, generator=g))[torch.tensor([3, 0, 4, 1, 2])]
    best = min(itertools.permutations(range(5)),
               key=lambda p: float(((rec[list(p)] - orig) ** 2).sum()))
    assert torch.equal(match_order(rec, orig), rec[list(best)])


def test_align_labels_counts_the_multiset_overlap() -> None:
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        inferred, true = torch.randint(0, 3, (8,), generator=g), torch.randint(0, 3, (8,),
                                                                               generator=g)
        aligned = align_labels(inferred, true)
        overlap = sum(min(int((inferred == c).sum()), int((true == c).sum())) for c in range(3))
        assert int((aligned == true).sum()) == overlap
        assert sorted(aligned.tolist()) == sorted(inferred.tolist())


def test_interleave_classes_balances_every_prefix() -> None:
    g = torch.Generator().manual_seed(5)
    labels = (torch.rand(100, generator=g) < 0.27).long()  # imbalanced, as BreastMNIST
    order = interleave_classes(labels)
    assert sorted(order.tolist()) == list(range(100))
    first = labels[order[:8]]
    assert int(first.sum()) == 4  # both classes present in the first 8
    assert interleave_classes(labels).tolist() == order.tolist()


def test_baselines_and_lineup_against_loops() -> None:
    g = torch.Generator().manual_seed(2)
    victims, aux = torch.rand(4, 1, 5, 5, generator=g), torch.rand(30, 1, 5, 5, generator=g)
    base = no_attack_baselines(victims, aux)
    assert torch.allclose(base["auxiliary mean"][0], aux.mean(0))
    for i, v in enumerate(victims):
        j = min(range(len(aux)), key=lambda j: float(((aux[j] - v) ** 2).mean()))
        assert torch.equal(base["nearest auxiliary"][i], aux[j])
    # a faithful reconstruction is picked out; the nearest auxiliary image never is
    assert lineup_identified(victims + 0.01, victims, aux).all()
    assert not lineup_identified(base["nearest auxiliary"], victims, aux).any()


# ------------------------------------------------------------------ evidence and decisions

N = 64
WHERE = "split learning, activations at cut 2"


def _ev(*, gain: float, identified: int, correct: float = 0.5, flip: bool = False,
        labels: float | None = None, n: int = N, lineup: int = 200,
        setting: str | None = WHERE) -> Evidence:
    true = torch.arange(n) % 2
    predicted = true.clone()
    wrong = round((1 - correct) * n)
    predicted[:wrong] = 1 - true[:wrong]
    if flip:
        predicted = 1 - true
    inferred = None
    if labels is not None:
        inferred = true.clone()
        k = round((1 - labels) * n)
        inferred[:k] = 1 - true[:k]
    return evidence(
        rec_psnr=torch.full((n,), 15.0 + gain) + 0.1 * torch.randn(n, generator=torch.Generator()
                                                                    .manual_seed(0)),
        baseline_psnr=torch.full((n,), 15.0),
        identified=torch.arange(n) < identified, lineup_size=lineup,
        predicted=predicted, true=true, inferred_labels=inferred, seed=0, setting=setting,
    )


LEAKY = _ev(gain=10.0, identified=N, correct=0.95)
SILENT = _ev(gain=-3.0, identified=0, correct=0.5)


def test_clopper_pearson_matches_scipy() -> None:
    for k, n in ((0, 1), (0, 64), (1, 64), (60, 64), (64, 64), (3, 17)):
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        lo, hi = clopper_pearson_interval(k, n)
        assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)
    with pytest.raises(ConfigError):
        clopper_pearson_interval(2, 1)


def test_victims_to_bound_is_the_fewest_that_bound_zero_hits() -> None:
    for tol in (0.05, 0.1, 0.3):
        n = victims_to_bound(tol)
        assert clopper_pearson_interval(0, n)[1] < tol <= clopper_pearson_interval(0, n - 1)[1]


def test_evidence_kinds() -> None:
    assert LEAKY.image_leak and LEAKY.class_leak and LEAKY.leaks
    assert LEAKY.reidentified and LEAKY.rebuilt
    assert not SILENT.leaks and not SILENT.flipped
    class_only = _ev(gain=-3.0, identified=0, correct=0.95)
    assert class_only.class_leak and not class_only.image_leak and class_only.leaks
    labels_only = _ev(gain=-3.0, identified=0, correct=0.5, labels=1.0)
    assert labels_only.label_leak and labels_only.leaks
    # either kind of image evidence is a leak on its own
    rebuilt = _ev(gain=3.0, identified=0)
    assert rebuilt.rebuilt and not rebuilt.reidentified and rebuilt.image_leak


def test_reidentification_is_a_leak_whatever_the_psnr() -> None:
    # the frontier's pgsl row: 60 of 64 picked out of a line-up of 483, PSNR below baseline
    ev = _ev(gain=-1.5, identified=60, lineup=483)
    assert ev.reidentified and not ev.rebuilt and ev.leaks
    d = decide(ev, LEAKY)
    assert d.verdict == "leaks" and "re-identification" in d.reason and "60 of 64" in d.reason
    assert "PSNR gain" in d.reason  # both numbers quoted


def test_one_hit_in_a_large_lineup_is_not_significant() -> None:
    # Wilson's lower bound of 1/64 (0.28%) clears chance 1/483 (0.21%); the exact one does not
    assert wilson_interval(1, 64)[0] > 1 / 483
    ev = _ev(gain=-3.0, identified=1, lineup=483)
    assert not ev.reidentified and ev.identified_low is not None
    assert ev.identified_low < 1 / 483


def test_evidence_rejects_mismatched_lengths() -> None:
    with pytest.raises(InputShapeError):
        evidence(rec_psnr=torch.zeros(3), baseline_psnr=torch.zeros(2),
                 identified=torch.zeros(3, dtype=torch.bool), lineup_size=10,
                 predicted=torch.zeros(3, dtype=torch.long), true=torch.zeros(3, dtype=torch.long))


def test_branch_attack_did_not_finish() -> None:
    d = decide(Evidence(status="failed"), LEAKY)
    assert d.verdict == "inconclusive" and "did not finish" in d.reason


def test_branch_leaks_needs_no_control() -> None:
    assert decide(LEAKY, None).verdict == "leaks"
    assert "re-identification" in decide(LEAKY, None).reason


def test_branch_flipped_is_never_protection() -> None:
    flipped = _ev(gain=-3.0, identified=0, flip=True)
    assert flipped.flipped
    d = decide(flipped, LEAKY)
    assert d.verdict == "inconclusive" and "flip" in d.reason


def test_branch_no_control() -> None:
    d = decide(SILENT, None)
    assert d.verdict == "inconclusive" and "no positive control" in d.reason


def test_branch_control_in_another_setting_does_not_vouch() -> None:
    at_cut_1 = _ev(gain=10.0, identified=N, correct=0.95,
                   setting="split learning, activations at cut 1")
    d = decide(SILENT, at_cut_1)
    assert d.verdict == "inconclusive" and "another setting" in d.reason
    unrecorded = _ev(gain=10.0, identified=N, correct=0.95, setting=None)
    assert decide(SILENT, unrecorded).verdict == "inconclusive"


def test_branch_attack_failed_on_the_control() -> None:
    d = decide(SILENT, SILENT, control_name="the undefended twin")
    assert d.verdict == "inconclusive" and "the undefended twin" in d.reason
    assert decide(SILENT, Evidence(status="failed", setting=WHERE)).verdict == "inconclusive"


def test_branch_control_that_leaks_only_labels_does_not_vouch_for_images() -> None:
    labels_only = _ev(gain=-3.0, identified=0, correct=0.5, labels=1.0)
    d = decide(SILENT, labels_only)
    assert d.verdict == "inconclusive" and "only the class or labels" in d.reason


def test_branch_not_significantly_below_the_control() -> None:
    # the control barely re-identifies (4/64); the target's 0/64 interval overlaps it
    weak_control = _ev(gain=-3.0, identified=4, lineup=2000)
    assert weak_control.reidentified
    d = decide(SILENT, weak_control)
    assert d.verdict == "inconclusive" and "not significantly below" in d.reason


def test_branch_too_few_victims_for_the_tolerance() -> None:
    # 0 of 8 re-identified cannot show a rate below 10% (the example: nor 30%)
    few = _ev(gain=-3.0, identified=0, n=8)
    control = _ev(gain=10.0, identified=8, n=8, correct=1.0)
    d = decide(few, control)
    assert d.verdict == "inconclusive"
    assert "re-identification up to" in d.reason and "0 of 8" in d.reason
    assert "needs at least 36 victims" in d.reason
    d30 = decide(few, control, tolerance=Tolerance(reidentification=0.3))
    assert d30.verdict == "inconclusive" and "needs at least 11 victims" in d30.reason


def test_branch_upper_bound_above_the_gain_tolerance() -> None:
    # no significant gain (lower bound below 0), but the upper bound reaches +0.8 dB
    wide = SILENT.model_copy(update={"gain_db": -0.5, "gain_low": -1.5, "gain_high": 0.8})
    assert not wide.leaks
    assert decide(wide, LEAKY).verdict == "no leakage found"  # default tolerance 1 dB
    d = decide(wide, LEAKY, tolerance=Tolerance(psnr_gain_db=0.5))
    assert d.verdict == "inconclusive" and "PSNR gain up to +0.8 dB" in d.reason


def test_branch_upper_bound_above_the_label_tolerance() -> None:
    # labels at the majority rate on 16 victims: the upper bound is far above majority + 15%
    few = _ev(gain=-3.0, identified=0, labels=0.5, n=16)
    control = _ev(gain=10.0, identified=16, n=16, correct=1.0, labels=1.0)
    d = decide(few, control)
    assert d.verdict == "inconclusive" and "label recovery up to" in d.reason


def test_branch_no_leakage_found_quotes_every_number_and_the_tolerance() -> None:
    d = decide(SILENT, LEAKY, control_name="the undefended twin")
    assert d.verdict == "no leakage found"
    assert "0 of 64 victims picked out" in d.reason and "PSNR gain" in d.reason
    assert "tolerance: re-identification 10%" in d.reason and "the undefended twin" in d.reason


@settings(max_examples=80, deadline=None)
@given(k=st.integers(0, 64), lineup=st.integers(2, 2000), gain=st.floats(-5, 5),
       ctl_k=st.integers(0, 64))
def test_significant_reidentification_is_never_no_leakage(k: int, lineup: int, gain: float,
                                                          ctl_k: int) -> None:
    target = _ev(gain=gain, identified=k, lineup=lineup)
    control = _ev(gain=10.0, identified=ctl_k, lineup=lineup, correct=0.95)
    d = decide(target, control)
    if target.identified_low is not None and target.identified_low > 1 / lineup:
        assert d.verdict == "leaks"
    assert d.verdict != "no leakage found" or not target.reidentified


def test_constant_prediction_is_not_a_flip() -> None:
    true = torch.arange(N) % 4
    ev = evidence(rec_psnr=torch.zeros(N), baseline_psnr=torch.zeros(N),
                  identified=torch.zeros(N, dtype=torch.bool), lineup_size=50,
                  predicted=torch.full((N,), 7), true=true, seed=0)
    assert ev.balanced_accuracy == 0.0 and not ev.flipped


def test_one_victim_decides_only_by_the_lineup() -> None:
    # one victim: no gain or class interval, so neither can show a leak; but one victim
    # picked out of a line-up of 200 has p = 0.005 by chance: that is re-identification
    one = evidence(rec_psnr=torch.tensor([40.0]), baseline_psnr=torch.tensor([15.0]),
                   identified=torch.tensor([True]), lineup_size=200,
                   predicted=torch.tensor([1]), true=torch.tensor([1]), seed=0, setting=WHERE)
    assert not one.class_leak and not one.rebuilt and one.reidentified
    missed = one.model_copy(update={"identified": 0, "identified_low": 0.0,
                                    "identified_high": 0.975})
    assert not missed.leaks and decide(SILENT, missed).verdict == "inconclusive"


def test_position_verdict() -> None:
    def d(v: str) -> Decision:
        return Decision(verdict=v, reason="")  # type: ignore[arg-type]

    assert position_verdict([d("no leakage found"), d("leaks")]) == "leaks"
    assert position_verdict([d("no leakage found"), d("no leakage found")]) == "no leakage found"
    assert position_verdict([d("no leakage found"), d("inconclusive")]) == "inconclusive"
    assert position_verdict([]) == "inconclusive"


def test_lineup_chance_of_reconstructions_paired_among_a_batch() -> None:
    # an update's 8 reconstructions are each paired with the nearest of 8 victims first:
    # one that carries nothing lands on some victim with chance 8 / (936 + 8), and one hit
    # in 8 is then not significant (it would be against 1 / 937)
    kw = dict(rec_psnr=torch.zeros(8), baseline_psnr=torch.zeros(8),
              identified=torch.arange(8) < 1, lineup_size=937,
              predicted=torch.arange(8) % 2, true=torch.arange(8) % 2, seed=0)
    plain, paired = evidence(**kw), evidence(**kw, matched_among=8)  # type: ignore[arg-type]
    assert plain.lineup_chance == pytest.approx(1 / 937)
    assert paired.lineup_chance == pytest.approx(8 / 944)
    assert plain.reidentified and not paired.reidentified
    p_value = binomtest(1, 8, 8 / 944, alternative="greater").pvalue
    assert p_value > 0.025  # the exact test agrees: not significant at the bound's level


def test_an_old_update_record_gets_the_batch_line_up_chance() -> None:
    old = Evidence(images=8, identified=1, identified_low=0.003, lineup_chance=1 / 937)
    new = old.completed(matched_among=8)
    assert new.matched_among == 8 and new.lineup_chance == pytest.approx(8 / 944)
    assert old.completed().reidentified and not new.reidentified
    assert new.completed(matched_among=8).lineup_chance == new.lineup_chance  # idempotent


def test_the_audit_budgets_can_bound_what_they_claim() -> None:
    # a budget whose victims cannot bring a zero re-identification count under the default
    # tolerance could never say "no leakage found": the split and batch-1 gradient counts
    # of every budget, and the update's from the standard budget on, must be able to
    from shieldsplit.audit.auditor import FEDAVG, FEDAVG_BATCHES, FEDERATED_VICTIMS, VICTIMS

    need = victims_to_bound(Tolerance().reidentification)
    for budget in ("quick", "standard", "thorough"):
        assert VICTIMS[budget] >= need and FEDERATED_VICTIMS[budget] >= need, budget
    for budget in ("standard", "thorough"):
        assert FEDAVG_BATCHES[budget] * int(FEDAVG["local_batch_size"]) >= need, budget
