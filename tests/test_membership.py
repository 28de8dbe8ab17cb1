"""Membership inference: the pure scores and metrics against numpy/scipy/scikit-learn
references and hand-computed cases; the attacks, the sets and the audit on tiny models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu, norm
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit.attacks.membership import (
    MembershipAttack,
    Recipe,
    available_membership_attacks,
    clear_reference_cache,
    create_membership_attack,
    probabilities,
    reference_models,
    register_membership_attack,
    unregister_membership_attack,
)
from shieldsplit.audit.membership import (
    MembershipReport,
    check_disjoint,
    membership_audit,
    membership_sets,
)
from shieldsplit.defenses.base import Defense, create_defense
from shieldsplit.errors import ConfigError, InputShapeError, LabelError, MembershipSetError
from shieldsplit.functional import wilson_interval
from shieldsplit.functional.membership import (
    MembershipEvidence,
    auc_interval,
    count_at_fpr,
    decide_membership,
    dp_tpr_bound,
    holm_family,
    lira_offline,
    lira_online,
    logit_confidence,
    loss_score,
    membership_advantage,
    membership_auc,
    membership_evidence,
    min_nonmembers,
    rmia_score,
    roc_points,
    tpr_at_fpr,
)
from shieldsplit.training import fit_plain

# ------------------------------------------------------------------ metrics

scores_st = st.lists(st.integers(-20, 20), min_size=4, max_size=40)


@settings(max_examples=40, deadline=None)
@given(scores_st, st.integers(0, 2**31 - 1))
def test_auc_and_roc_match_sklearn(raw: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = np.asarray(raw, float)
    m = rng.permutation(np.r_[np.ones(len(s) // 2), np.zeros(len(s) - len(s) // 2)]).astype(int)
    assert membership_auc(s, m) == pytest.approx(roc_auc_score(m, s))
    fpr, tpr = roc_points(s, m)
    ref_fpr, ref_tpr, _ = roc_curve(m, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    # the advantage is the best threshold's TPR - FPR, brute force over every cut
    best = max(((s >= t) & (m == 1)).sum() / m.sum() - ((s >= t) & (m == 0)).sum() / (m == 0).sum()
               for t in np.r_[s, np.inf])
    assert membership_advantage(s, m) == pytest.approx(max(best, 0.0))


def test_advantage_is_twice_balanced_accuracy_minus_one() -> None:
    s, m = np.array([5.0, 4, 3, 2, 1, 0]), np.array([1, 0, 1, 1, 0, 0])
    # threshold 2: TPR 1, FPR 1/3 -> balanced accuracy (1 + 2/3) / 2
    assert membership_advantage(s, m) == pytest.approx(2 * (1 + 2 / 3) / 2 - 1)


def test_auc_interval_covers_and_matches_rank_auc() -> None:
    rng = np.random.default_rng(0)
    s = np.r_[rng.normal(1.0, 1, 200), rng.normal(0.0, 1, 200)]
    m = np.r_[np.ones(200), np.zeros(200)].astype(int)
    lo, hi = auc_interval(s, m, seed=1)
    auc = roc_auc_score(m, s)
    assert lo < auc < hi
    assert lo > 0.65 and hi < 0.85          # true AUC is Phi(1/sqrt 2) = 0.760
    assert auc_interval(s, m, seed=1) == (lo, hi)
    # no signal: the interval contains 0.5
    lo0, hi0 = auc_interval(rng.normal(size=400), m, seed=1)
    assert lo0 < 0.5 < hi0


def test_auc_interval_with_ties_equals_sklearn_on_identity_resample() -> None:
    s, m = np.array([1.0, 1.0, 0.0, 1.0]), np.array([1, 0, 0, 1])
    lo, hi = auc_interval(s, m, resamples=1, level=0.5)
    # one resample is random, but a tie-handling rank AUC never leaves [0, 1]
    assert 0.0 <= lo <= hi <= 1.0
    assert membership_auc(s, m) == pytest.approx(roc_auc_score(m, s)) == pytest.approx(0.75)


def test_min_nonmembers() -> None:
    assert (min_nonmembers(0.001), min_nonmembers(0.01), min_nonmembers(0.05)) == (1000, 100, 20)
    for bad in (0.0, 1.0, -0.1, float("nan"), "1%"):
        with pytest.raises(ConfigError):
            min_nonmembers(bad)  # type: ignore[arg-type]


def test_tpr_at_fpr_hand_computed_and_unresolvable() -> None:
    non = np.arange(100.0)                 # 100 non-members: 1% is resolvable, 0.1% is not
    mem = np.array([150.0, 99.5, 98.5, 10.0])
    s, m = np.r_[mem, non], np.r_[np.ones(4), np.zeros(100)].astype(int)
    # FPR <= 1% allows the threshold just above 98 (one false positive: 99): 150, 99.5, 98.5
    assert tpr_at_fpr(s, m, 0.01) == pytest.approx(3 / 4)
    assert count_at_fpr(s, m, 0.01) == (3, 1)
    assert tpr_at_fpr(s, m, 0.001) is None
    assert tpr_at_fpr(s, m, 0.02) == pytest.approx(3 / 4)
    # numpy reference: the best TPR among ROC points with FPR <= f
    fpr, tpr, _ = roc_curve(m, s)
    assert tpr_at_fpr(s, m, 0.05) == pytest.approx(tpr[fpr <= 0.05].max())


@pytest.mark.parametrize("scores, labels", [
    ([0.1, 0.2], [1, 1]),                  # one class only
    ([0.1, 0.2], [1, 0, 1]),               # lengths differ
    ([0.1, float("nan")], [1, 0]),         # not finite
    ([0.1, 0.2], [2, 0]),                  # not 0/1
])
def test_metrics_refuse_bad_input(scores: list[float], labels: list[int]) -> None:
    with pytest.raises(InputShapeError):
        membership_auc(scores, labels)


# ------------------------------------------------------------------ scores

def test_loss_and_logit_scores() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])
    y = np.array([0, 2])
    np.testing.assert_allclose(loss_score(p, y), [math.log(0.7), math.log(0.5)])
    np.testing.assert_allclose(logit_confidence(p, y), [math.log(0.7 / 0.3), 0.0])
    # a models axis broadcasts
    np.testing.assert_allclose(logit_confidence(np.stack([p, p]), y)[1],
                               logit_confidence(p, y))
    with pytest.raises(InputShapeError):
        loss_score(p, np.array([0, 3]))
    with pytest.raises(InputShapeError):
        loss_score(p, np.array([0.0, 1.0]))


def test_lira_online_matches_scipy_per_example() -> None:
    rng = np.random.default_rng(0)
    r_in, r_out, c = rng.normal(2, 1, (8, 5)), rng.normal(0, 1, (8, 5)), rng.normal(1, 1, 5)
    ref = [norm.logpdf(c[i], r_in[:, i].mean(), r_in[:, i].std(ddof=1))
           - norm.logpdf(c[i], r_out[:, i].mean(), r_out[:, i].std(ddof=1)) for i in range(5)]
    np.testing.assert_allclose(lira_online(c, r_in, r_out), ref)
    # a pooled deviation: the same for every example
    pooled = np.sqrt(r_out.var(axis=0, ddof=1).mean())
    np.testing.assert_allclose(lira_offline(c, r_out, global_std=True),
                               norm.logcdf(c, r_out.mean(0), pooled))
    np.testing.assert_allclose(lira_offline(c, r_out),
                               norm.logcdf(c, r_out.mean(0), r_out.std(0, ddof=1)))
    with pytest.raises(InputShapeError):
        lira_online(c, r_in[:, :3], r_out)


def test_rmia_matches_brute_force_pairwise_ratios() -> None:
    rng = np.random.default_rng(0)
    tx, tz = rng.uniform(0.05, 1, 7), rng.uniform(0.05, 1, 11)
    rx, rz = rng.uniform(0.05, 1, (3, 7)), rng.uniform(0.05, 1, (3, 11))
    for a, gamma in ((0.3, 1.0), (None, 1.0), (1.0, 2.0), (0.0, 1.5)):
        def px(ref: np.ndarray, a: float | None = a) -> np.ndarray:
            mean = ref.mean(0)
            return mean if a is None else ((1 + a) * mean + (1 - a)) / 2
        lr = (tx / px(rx))[:, None] / (tz / px(rz))[None, :]
        expected = (lr > gamma).mean(axis=1)
        np.testing.assert_allclose(rmia_score(tx, rx, tz, rz, a=a, gamma=gamma), expected)
    with pytest.raises(ConfigError):
        rmia_score(tx, rx, tz, rz, gamma=0.5)
    with pytest.raises(ConfigError):
        rmia_score(tx, rx, tz, rz, a=1.5)
    with pytest.raises(InputShapeError):
        rmia_score(tx, rx[:2], tz, rz)


def test_rmia_offline_a1_equals_online_mean() -> None:
    tx, rx, tz, rz = [0.9, 0.3], [[0.6, 0.5]], [0.5, 0.7, 0.2], [[0.5, 0.5, 0.5]]
    np.testing.assert_allclose(rmia_score(tx, rx, tz, rz, a=1.0),
                               rmia_score(tx, rx, tz, rz, a=None))


# ------------------------------------------------------------------ DP bound

def test_dp_bound_hand_computed_and_symmetric() -> None:
    f = np.array([0.0, 0.001, 0.01, 0.5, 1.0])
    e = math.e
    expected = np.minimum.reduce([np.ones(5), e * f + 1e-5, 1 - (1 - 1e-5 - f) / e])
    np.testing.assert_allclose(dp_tpr_bound(f, epsilon=1.0, delta=1e-5), np.clip(expected, 0, 1))
    # epsilon 0, delta 0: no test beats chance
    np.testing.assert_allclose(dp_tpr_bound(f, epsilon=0.0), f)
    # symmetry: the bound on TPR at FPR f, read for the complementary test, bounds 1 - f
    g = np.linspace(0, 1, 21)
    b = dp_tpr_bound(g, epsilon=2.0, delta=0.01)
    np.testing.assert_allclose(1 - dp_tpr_bound(1 - b, 2.0, 0.01)[b < 1], (g)[b < 1], atol=1e-9)
    with pytest.raises(ConfigError):
        dp_tpr_bound([1.5], epsilon=1.0)
    with pytest.raises(ConfigError):
        dp_tpr_bound([0.1], epsilon=-1.0)


# ------------------------------------------------------------------ evidence and the rule

def _ev(**kw: object) -> MembershipEvidence:
    return MembershipEvidence(members=100, nonmembers=100, **kw)  # type: ignore[arg-type]


LEAKY = _ev(auc=0.8, auc_low=0.7, auc_high=0.9)
NULL = _ev(auc=0.5, auc_low=0.42, auc_high=0.58)


def test_evidence_auc_leak_and_tpr_leak_from_counts() -> None:
    rng = np.random.default_rng(0)
    m = np.r_[np.ones(300), np.zeros(300)].astype(int)
    # a few members far above every non-member: AUC barely moves, TPR at 1% FPR does
    s = np.r_[np.full(30, 10.0), rng.normal(size=270), rng.normal(size=300)]
    ev = membership_evidence(s, m, seed=0)
    tp, fp = count_at_fpr(s, m, 0.01)
    assert ev.tpr_low == pytest.approx(wilson_interval(tp, 300)[0])
    assert ev.fpr_high == pytest.approx(wilson_interval(fp, 300)[1])
    assert ev.tpr_leak
    # the tail leak is found once the attack's tests are decided as a family (Holm)
    holm_family([ev])
    assert ev.leaks and ev.p_tpr is not None and ev.p_tpr < 0.025
    assert ev.p_auc == pytest.approx(mannwhitneyu(s[:300], s[300:], alternative="greater").pvalue)
    assert ev.auc == pytest.approx(roc_auc_score(m, s))
    null = membership_evidence(rng.normal(size=600), m, seed=0)
    assert not null.leaks and not null.inverted
    assert null.auc_low is not None and null.auc_low < 0.5 < (null.auc_high or 0)
    few = membership_evidence(s[:60:2].tolist() + s[300:360:2].tolist(),
                              [1] * 30 + [0] * 30)
    assert few.tpr_low_fpr is None and few.tpr_low is None and not few.tpr_leak


def test_rule_not_finished() -> None:
    d = decide_membership(_ev(status="failed"), LEAKY)
    assert d.verdict == "inconclusive" and "did not finish" in d.reason


def test_rule_leaks_by_auc_and_by_tpr() -> None:
    assert decide_membership(LEAKY, None).verdict == "leaks"
    # the TPR test decides once the family is decided (Holm): p-values, not intervals
    by_tpr = _ev(auc=0.52, auc_low=0.45, auc_high=0.6, tpr_low_fpr=0.2, tpr_low=0.12,
                 fpr_high=0.05, p_auc=0.3, p_tpr=0.001)
    holm_family([by_tpr])
    d = decide_membership(by_tpr, None)
    assert d.verdict == "leaks" and "1% FPR" in d.reason and "Holm" in d.reason
    not_enough = by_tpr.model_copy(update={"p_tpr": 0.04, "holm_leak": None})
    holm_family([not_enough])
    assert decide_membership(not_enough, None).verdict == "inconclusive"


def test_rule_inverted_is_inconclusive_even_with_a_leaky_control() -> None:
    d = decide_membership(_ev(auc=0.3, auc_low=0.2, auc_high=0.4), LEAKY)
    assert d.verdict == "inconclusive" and "inverted" in d.reason


def test_rule_no_control() -> None:
    d = decide_membership(NULL, None)
    assert d.verdict == "inconclusive" and "no positive control" in d.reason


def test_rule_control_did_not_leak() -> None:
    d = decide_membership(NULL, NULL)
    assert d.verdict == "inconclusive" and "not shown" in d.reason


def test_rule_no_leakage_found() -> None:
    d = decide_membership(NULL, LEAKY, control_name="the copy")
    assert d.verdict == "no leakage found" and "the copy" in d.reason


# ------------------------------------------------------------------ sets, attacks, audit

@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    perm = torch.randperm(len(d.target), generator=torch.Generator().manual_seed(0))
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)[perm]
    return x, torch.tensor(d.target)[perm]


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 64, 10))


def trained(data: tuple[torch.Tensor, torch.Tensor], epochs: int, batch_size: int = 32,
            ) -> nn.Module:
    net = tiny_net()
    fit_plain(net, DataLoader(TensorDataset(*data), batch_size=batch_size, shuffle=True),
              epochs=epochs, seed=0, progress=False)
    return net


def test_sets_are_balanced_disjoint_and_seeded(digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    a = membership_sets((x[:150], y[:150]), (x[150:250], y[150:250]), seed=3)
    b = membership_sets((x[:150], y[:150]), (x[150:250], y[150:250]), seed=3)
    c = membership_sets((x[:150], y[:150]), (x[150:250], y[150:250]), seed=4)
    assert len(a.members[0]) == len(a.nonmembers[0]) == 100
    assert torch.equal(a.members[0], b.members[0]) and not torch.equal(a.members[0],
                                                                       c.members[0])
    check_disjoint(a.members[0], a.nonmembers[0], what="sets")
    assert len(membership_sets((x[:150], y[:150]), (x[150:250], y[150:250]),
                               size=40).members[0]) == 40


def test_sets_refuse_overlap_size_fpr_and_labels(digits: tuple[torch.Tensor, torch.Tensor],
                                                 ) -> None:
    x, y = digits
    with pytest.raises(MembershipSetError, match="3 shared image"):
        membership_sets((x[:50], y[:50]), (x[47:97], y[47:97]))
    with pytest.raises(MembershipSetError, match="at most 50"):
        membership_sets((x[:50], y[:50]), (x[50:100], y[50:100]), size=60)
    with pytest.raises(MembershipSetError, match="at least 1000 non-members") as err:
        membership_sets((x[:200], y[:200]), (x[200:400], y[200:400]), fprs=(0.01, 0.001))
    assert err.value.what == "nonmembers"
    membership_sets((x[:200], y[:200]), (x[200:400], y[200:400]), fprs=(0.01,))
    two_class = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(LabelError):
        membership_sets((x[:20], y[:20]), (x[20:40], y[20:40]), model=two_class)


def test_registry_and_attack_input(digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    assert available_membership_attacks() == ["lira", "loss-threshold", "rmia"]
    with pytest.raises(ConfigError):
        create_membership_attack("lira", reference_models=1)
    with pytest.raises(ConfigError, match="one of"):
        create_membership_attack("shadow")
    x, y = digits
    net = tiny_net()
    q = probabilities(net)
    rmia = create_membership_attack("rmia", reference_models=2)
    with pytest.raises(ConfigError, match="2 reference models"):
        rmia.score(q, (x[:4], y[:4]), (x[4:8], y[4:8]), references=[q], population=(x, y))
    with pytest.raises(ConfigError, match="population"):
        rmia.score(q, (x[:4], y[:4]), (x[4:8], y[4:8]), references=[q, q])

    class Constant(MembershipAttack):
        name = "constant"

        def _scores(self, target, refs, xs, ys, population):  # type: ignore[no-untyped-def]
            return np.zeros(len(xs))

    register_membership_attack("constant", Constant)
    try:
        out = create_membership_attack("constant").score(q, (x[:3], y[:3]), (x[3:5], y[3:5]))
        assert out.members.shape == (3,) and out.nonmembers.shape == (2,)
    finally:
        unregister_membership_attack("constant")
    assert "constant" not in available_membership_attacks()


def test_reference_models_are_cached_by_seed_and_recipe(
        digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    aux = (x[:80], y[:80])
    clear_reference_cache()
    recipe = Recipe(epochs=1, batch_size=32)
    first = reference_models(tiny_net(), recipe, aux, count=2, seed=0)
    # a trained model of the same architecture shares them; another seed or recipe does not
    again = reference_models(trained(aux, 1), recipe, aux, count=2, seed=0)
    assert all(a is b for a, b in zip(first, again, strict=True))
    assert reference_models(tiny_net(), recipe, aux, count=1, seed=1)[0] is not first[0]
    other = reference_models(tiny_net(), Recipe(epochs=2, batch_size=32), aux, count=1, seed=0)
    assert other[0] is not first[0]
    # the two models of a pair train on complementary halves: different weights
    w0, w1 = (next(m.parameters()) for m in first)
    assert not torch.equal(w0, w1)


def test_efficacy_overfitted_leaks_and_unseen_does_not(
        digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    # digits generalise well: 100 members, 60 epochs of batch 16 make the model memorise
    mem, non, aux = (x[:100], y[:100]), (x[200:300], y[200:300]), (x[400:700], y[400:700])
    options = {"members": mem, "nonmembers": non, "auxiliary": aux, "epochs": 60,
               "batch_size": 16, "reference_count": 1, "control_epochs": 60, "seed": 0}
    overfit = trained(mem, 60, 16)
    before = {k: v.clone() for k, v in overfit.state_dict().items()}
    overfit.train()
    leaky = membership_audit(overfit, **options)  # type: ignore[arg-type]
    # the model is only queried: same weights, same mode
    assert overfit.training
    assert all(torch.equal(before[k], v) for k, v in overfit.state_dict().items())
    assert leaky.verdict == "leaks"
    assert min(r.auc_low for r in leaky.results) > 0.5
    assert max(r.auc_low for r in leaky.results) > 0.6
    assert leaky.control is not None and all(c.evidence.leaks for c in leaky.control)

    unseen = membership_audit(trained((x[700:800], y[700:800]), 60, 16), **options)  # type: ignore[arg-type]
    for r in unseen.results:
        assert r.auc_low < 0.5 < r.auc_high, r
    # RMIA leaked strongly on the overfitted control (AUC 0.71): "no leakage found" is
    # shown there; the loss threshold leaked only weakly on it (0.64, lower bound 0.56),
    # so the unseen model is not significantly below it: inconclusive, not "safe"
    by = {r.attack: r for r in unseen.results}
    assert by["rmia"].verdict == "no leakage found", by["rmia"].reason
    assert by["loss-threshold"].verdict == "inconclusive"
    assert "not significantly below" in (by["loss-threshold"].reason or "")
    assert unseen.verdict == "inconclusive"
    # 100 non-members resolve 1% but not 0.1% FPR, and the report says so
    assert unseen.results[0].tpr["0.1%"] is None and unseen.results[0].tpr["1%"] is not None
    assert unseen.notes == ["TPR at 0.1% FPR is not resolvable: 100 non-members, 1000 needed"]
    assert "not resolvable" in unseen.summary()
    fpr, tpr = unseen.results[1].roc_fpr, unseen.results[1].roc_tpr
    assert fpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0 and fpr == sorted(fpr)
    assert MembershipReport.model_validate_json(unseen.model_dump_json()) == unseen


def test_audit_of_a_defense_trains_references_with_its_recipe(
        digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    defense = create_defense("none", tiny_net(), cut=1, seed=0)
    defense.fit(DataLoader(TensorDataset(x[:100], y[:100]), batch_size=32), epochs=1,
                seed=0, progress=False)
    clear_reference_cache()
    report = membership_audit(defense, members=(x[:100], y[:100]),
                              nonmembers=(x[100:200], y[100:200]),
                              auxiliary=(x[200:300], y[200:300]), epochs=1, attacks=["rmia"],
                              reference_count=1, control=None, seed=0)
    assert report.recipe.defense == "none" and report.recipe.cut == 1
    assert report.control is None and report.verdict in ("leaks", "inconclusive")
    assert report.epsilon is None and report.dp_tpr_bound is None
    from shieldsplit.attacks.membership import references

    refs = list(references._CACHE.values())
    assert len(refs) == 1 and isinstance(refs[0], Defense)


def test_audit_refuses_bad_input(digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    net = tiny_net()
    ok = {"members": (x[:50], y[:50]), "nonmembers": (x[50:100], y[50:100]),
          "auxiliary": (x[100:200], y[100:200]), "epochs": 1}
    with pytest.raises(MembershipSetError, match="auxiliary"):
        membership_audit(net, **{**ok, "auxiliary": (x[90:200], y[90:200])})  # type: ignore[arg-type]
    with pytest.raises(MembershipSetError, match="at least 100"):
        membership_audit(net, **ok, fprs=(0.01,))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        membership_audit(net, **ok, budget="huge")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        membership_audit(net, **ok, attacks=["shadow"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        membership_audit(net, **ok, control="twin")  # type: ignore[arg-type]


def test_lira_through_the_audit_and_the_dp_bound_of_dpsgd(
        digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    defense = create_defense("dpsgd", tiny_net(), cut=1, seed=0, noise_multiplier=1.0)
    defense.fit((x[:100], y[:100]), epochs=1, seed=0, progress=False)
    eps, delta = defense.privacy()["epsilon"], defense.privacy()["delta"]
    report = membership_audit(defense, members=(x[:100], y[:100]),
                              nonmembers=(x[100:200], y[100:200]),
                              auxiliary=(x[200:300], y[200:300]), epochs=1,
                              attacks=["lira"], reference_count=2, control=None, seed=0)
    assert [r.attack for r in report.results] == ["lira"]
    assert report.results[0].reference_models == 2
    assert report.epsilon == pytest.approx(eps) and eps > 0
    assert report.dp_tpr_bound is not None
    assert report.dp_tpr_bound["1%"] == pytest.approx(float(dp_tpr_bound([0.01], eps, delta)[0]))


def test_roc_table_reads_the_step_curve_and_the_dp_bound() -> None:
    from shieldsplit.plots import RocCurve, roc_html, roc_points_table

    curve = RocCurve(label="a", fpr=[0.0, 0.001, 0.05, 1.0], tpr=[0.02, 0.10, 0.40, 1.0],
                     epsilon=1.0, delta=0.0)
    page = roc_points_table([curve], points=5)  # FPR grid 1e-4, 1e-3, 1e-2, 1e-1, 1
    cells = [row.split("</td><td>") for row in page.split("<tr>")[2:]]
    tprs = [c[1] for c in cells]
    assert tprs == ["2.0%", "10.0%", "10.0%", "40.0%", "100.0%"]  # the step, not a line
    bounds = [float(c[2].split("%")[0]) / 100 for c in cells]
    np.testing.assert_allclose(bounds, dp_tpr_bound(np.logspace(-4, 0, 5), 1.0, 0.0),
                               atol=5e-4)
    assert roc_html([curve], use_matplotlib=False).endswith(roc_points_table([curve]))
    assert "<img" in roc_html([curve])  # matplotlib is a test dependency


def test_membership_tests_are_corrected_for_the_family() -> None:
    from shieldsplit.functional.membership import MembershipEvidence, decide_membership
    from shieldsplit.functional.stats import holm_rejections
    from shieldsplit.functional.verdict import Tolerance

    # Holm against a hand-written step-down on a known example
    ps = [0.01, 0.04, 0.03, 0.005]
    assert holm_rejections(ps) == [True, False, False, True]
    assert holm_rejections([0.2]) == [False] and holm_rejections([]) == []
    # one test at p = 0.03 leaks alone, not among four attacks' eight tests
    alone = MembershipEvidence(members=64, nonmembers=64, auc=0.6, auc_low=0.51,
                               auc_high=0.69, p_auc=0.03)
    holm_family([alone])
    assert alone.leaks
    crowd = [alone.model_copy(update={"holm_leak": None}) for _ in range(4)]
    holm_family(crowd)
    assert not any(e.leaks for e in crowd)
    # no leakage found: bounded under the tolerance, below a leaking control
    quiet = MembershipEvidence(members=64, nonmembers=64, auc=0.55, auc_low=0.45,
                               auc_high=0.64, p_auc=0.2)
    control = MembershipEvidence(members=64, nonmembers=64, auc=0.95, auc_low=0.9,
                                 auc_high=0.99, p_auc=1e-9)
    holm_family([quiet]), holm_family([control])
    assert decide_membership(quiet, control).verdict == "no leakage found"
    tight = decide_membership(quiet, control, tolerance=Tolerance(membership_auc=0.1))
    assert tight.verdict == "inconclusive" and "AUC up to 0.640" in tight.reason
    other = control.model_copy(update={"members": 32})
    assert "members" in decide_membership(quiet, other).reason
    weak = control.model_copy(update={"auc": 0.6, "auc_low": 0.52, "auc_high": 0.7})
    assert "not significantly below" in decide_membership(quiet, weak).reason
