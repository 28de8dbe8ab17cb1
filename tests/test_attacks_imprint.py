"""The imprint attack of a malicious federated server (Fowl et al. 2022) and its pure maths."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from shieldsplit.attacks import AttackContext, Observation, attack_class, create_attack
from shieldsplit.attacks.imprint import IMPRINT_BIAS, IMPRINT_WEIGHT, ImprintAttack
from shieldsplit.errors import ConfigError, StateError, UnsupportedModelError
from shieldsplit.functional.imprint import (
    EXACT_PSNR_DB,
    bin_index,
    bin_thresholds,
    expected_fraction_for_bins,
    expected_recovered_fraction,
    nearest_psnr,
    read_bins,
    recovered_mask,
)
from shieldsplit.functional.metrics import psnr
from shieldsplit.functional.stats import match_order
from shieldsplit.models import SmallConvNet
from shieldsplit.observe import observe_gradient, observe_update

SHAPE = (1, 8, 8)
BINS = 64
BATCH = 8


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SmallConvNet(num_classes=3, image_size=8, width=4)


@pytest.fixture(scope="module")
def aux() -> torch.Tensor:
    return torch.rand(4096, *SHAPE, generator=torch.Generator().manual_seed(1))


def prepared(aux: torch.Tensor, net: nn.Module, **options: object) -> ImprintAttack:
    attack = ImprintAttack(seed=0, bins=BINS, **options)  # type: ignore[arg-type]
    attack.prepare(AttackContext(image_shape=SHAPE, num_classes=3, model=net,
                                 auxiliary_images=aux))
    return attack


def victims(seed: int, n: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.rand(n, *SHAPE, generator=g), torch.randint(0, 3, (n,), generator=g)


def alone(attack: ImprintAttack, x: torch.Tensor) -> torch.Tensor:
    """Which images are alone in their bin (the truth, from the block's measurement)."""
    cal = attack.calibration
    assert cal is not None
    bins = bin_index(x.flatten(1).double() @ cal["direction"].double(),
                     cal["thresholds"].double())
    counts = torch.bincount(bins + 1, minlength=attack.bins + 1)
    return counts[bins + 1] == 1


# ------------------------------------------------------------------ pure functions


def test_bin_thresholds_match_numpy_quantiles() -> None:
    m = torch.randn(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = bin_thresholds(m, 16).numpy()
    ref = np.quantile(m.numpy(), np.arange(1, 16) / 16)
    np.testing.assert_allclose(t[1:], ref, rtol=0, atol=1e-12)
    assert t[0] == pytest.approx(float(m.min() - (m.max() - m.min())))
    # the bins are equiprobable on the calibration data
    counts = np.bincount(bin_index(m, torch.as_tensor(t)).numpy(), minlength=16)
    assert counts.min() >= 1000 // 16 - 1 and counts.max() <= 1000 // 16 + 1


def test_bin_index_matches_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.sort(torch.randn(10, generator=g, dtype=torch.float64)).values
    m = torch.randn(500, generator=g, dtype=torch.float64)
    ref = np.searchsorted(t.numpy(), m.numpy(), side="left") - 1
    np.testing.assert_array_equal(bin_index(m, t).numpy(), ref)
    # the bin is the last row that fires: m > t_i
    for mi, b in zip(m.tolist(), bin_index(m, t).tolist(), strict=True):
        fired = [i for i, ti in enumerate(t.tolist()) if mi > ti]
        assert b == (fired[-1] if fired else -1)


def read_bins_reference(dw: np.ndarray, db: np.ndarray, limit: int | None,
                        rtol: float) -> tuple[np.ndarray, np.ndarray]:
    k = len(db)
    diff_w = np.array([dw[i] - (dw[i + 1] if i + 1 < k else 0) for i in range(k)])
    diff_b = np.array([db[i] - (db[i + 1] if i + 1 < k else 0) for i in range(k)])
    order = [i for i in sorted(range(k), key=lambda i: -abs(diff_b[i]))
             if abs(diff_b[i]) > rtol * np.abs(diff_b).max()]
    order = order[:limit] if limit is not None else order
    return diff_w[order] / diff_b[order, None], np.array(order)


@pytest.mark.parametrize(("limit", "rtol"), [(None, 1e-6), (3, 1e-6), (None, 0.5)])
def test_read_bins_matches_numpy(limit: int | None, rtol: float) -> None:
    g = torch.Generator().manual_seed(0)
    dw = torch.randn(12, 5, generator=g, dtype=torch.float64)
    db = torch.randn(12, generator=g, dtype=torch.float64)
    rows, bins = read_bins(dw, db, limit=limit, rtol=rtol)
    ref_rows, ref_bins = read_bins_reference(dw.numpy(), db.numpy(), limit, rtol)
    np.testing.assert_array_equal(bins.numpy(), ref_bins)
    np.testing.assert_allclose(rows.numpy(), ref_rows, rtol=1e-12)


def test_read_bins_reads_lone_images_exactly_and_mixes_shared_bins() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 10, generator=g, dtype=torch.float64)
    w = torch.randn(10, generator=g, dtype=torch.float64)
    m = x @ w
    t = torch.cat([m.min().reshape(1) - 1, torch.sort(m).values[[1, 3, 4]] - 1e-9])
    # bins: {0}, {1, 2}, {3}, {4, 5} by rank of m
    grads = torch.randn(6, generator=g, dtype=torch.float64)
    active = (m[:, None] > t).double() * grads[:, None]
    rows, bins = read_bins(active.T @ x / 6, active.sum(0) / 6)
    rank = torch.argsort(m)
    lone = {0: rank[0], 2: rank[3]}
    for b, i in lone.items():
        torch.testing.assert_close(rows[bins.tolist().index(b)], x[i], rtol=1e-10, atol=1e-10)
    shared = rows[bins.tolist().index(1)]
    assert min(float((shared - x[rank[1]]).abs().max()),
               float((shared - x[rank[2]]).abs().max())) > 1e-3


def test_expected_fraction_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    for batch, bins in ((8, 64), (32, 128), (5, 4)):
        draws = rng.integers(0, bins, size=(20000, batch))
        counts = np.stack([np.bincount(d, minlength=bins)[d] for d in draws])
        simulated = float((counts == 1).mean())
        assert expected_recovered_fraction(batch, bins) == pytest.approx(simulated, abs=0.01)
        uniform = torch.full((bins,), 1.0 / bins)
        assert expected_fraction_for_bins(uniform, batch) == pytest.approx(
            expected_recovered_fraction(batch, bins), rel=1e-9)
    p = np.array([0.5, 0.3, 0.1, 0.1])
    draws = rng.choice(4, p=p, size=(20000, 3))
    counts = np.stack([np.bincount(d, minlength=4)[d] for d in draws])
    assert expected_fraction_for_bins(torch.as_tensor(p), 3) == pytest.approx(
        float((counts == 1).mean()), abs=0.01)
    assert expected_recovered_fraction(1, 2) == 1.0
    assert expected_recovered_fraction(2, 2) == 0.5
    with pytest.raises(ConfigError):
        expected_recovered_fraction(0, 2)


def test_nearest_psnr_matches_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    v, r = torch.rand(5, 1, 3, 3, generator=g), torch.rand(7, 1, 3, 3, generator=g)
    mse = ((v.numpy()[:, None] - r.numpy()[None]) ** 2).reshape(5, 7, -1).mean(-1)
    ref = 10 * np.log10(1.0 / mse.min(axis=1))
    np.testing.assert_allclose(nearest_psnr(r, v).numpy(), ref, rtol=1e-4)
    assert recovered_mask(torch.cat([r, v[2:3]]), v).tolist() == [False, False, True, False,
                                                                   False]


# ------------------------------------------------------------------ the attack


def test_declaration_and_registry() -> None:
    cls = attack_class("imprint")
    assert cls is ImprintAttack
    d = cls.declaration()
    assert (d.threat_model, d.server, d.position, d.observes) == (
        "malicious_federated", "malicious", "federated", "gradient")
    assert d.assumes == ["auxiliary_data"]
    assert "modifies the model it sends" in cls.threat_words()
    assert isinstance(create_attack("imprint", seed=0, bins=16), ImprintAttack)
    with pytest.raises(ConfigError):
        create_attack("imprint", bins=1)


def test_reads_most_of_a_batch_exactly(aux: torch.Tensor) -> None:
    net = tiny_net()
    attack = prepared(aux, net)
    x, y = victims(0)
    rec = attack.reconstruct(observe_gradient(attack.modify(net), x, y))
    assert rec.images.shape == (BATCH, *SHAPE)
    assert float(rec.images.min()) >= 0 and float(rec.images.max()) <= 1
    p = nearest_psnr(rec.images, x)
    lone = alone(attack, x)
    assert int(lone.sum()) >= BATCH // 2
    # every image alone in its bin is read exactly (float32 error only)
    assert bool((p[lone] > EXACT_PSNR_DB).all()), p[lone]
    assert float(p[lone].min()) > 80
    assert rec.meta["bins_read"] <= BATCH


def test_measured_fraction_is_close_to_the_analytic_expectation(aux: torch.Tensor) -> None:
    net = tiny_net()
    attack = prepared(aux, net)
    sent = attack.modify(net)
    got = []
    for seed in range(30):
        x, y = victims(seed)
        got.append(float(recovered_mask(attack.reconstruct(observe_gradient(sent, x, y))
                                        .images, x).float().mean()))
    expected = expected_recovered_fraction(BATCH, BINS)  # 0.896
    assert abs(float(np.mean(got)) - expected) < 0.06, (np.mean(got), expected)


def test_modify_returns_a_new_model_and_leaves_the_users_alone(aux: torch.Tensor) -> None:
    net = tiny_net().train()
    before = copy.deepcopy(net.state_dict())
    attack = prepared(aux, net)
    sent = attack.modify(net)
    assert sent is not net and sent.training
    assert not {id(p) for p in sent.parameters()} & {id(p) for p in net.parameters()}
    with torch.no_grad():
        for p in sent.parameters():
            p.add_(1.0)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    names = dict(sent.named_parameters())
    assert names[IMPRINT_WEIGHT].shape == (BINS, 64) and names[IMPRINT_BIAS].shape == (BINS,)
    x, _ = victims(0)
    assert sent(x).shape == net(x).shape


def test_no_auxiliary_data_is_a_typed_error_naming_attack_and_fix() -> None:
    attack = ImprintAttack(seed=0)
    with pytest.raises(ConfigError) as info:
        attack.prepare(AttackContext(image_shape=SHAPE, num_classes=3, model=tiny_net()))
    message = str(info.value)
    assert info.value.what == "auxiliary_data"
    assert "'imprint'" in message and "auxiliary_images" in message
    with pytest.raises(StateError):
        attack.modify(tiny_net())


def test_a_model_without_image_input_is_a_typed_error(aux: torch.Tensor) -> None:
    flat = nn.Sequential(nn.Linear(64, 3))  # takes (N, 64) vectors, not (N, 1, 8, 8)
    with pytest.raises(UnsupportedModelError) as info:
        prepared(aux, flat)
    assert "'imprint'" in str(info.value) and "image tensor" in str(info.value)
    assert "inverting-gradients" in str(info.value)
    attack = prepared(aux, tiny_net())
    with pytest.raises(UnsupportedModelError):
        attack.modify(flat)
    with pytest.raises(UnsupportedModelError):
        ImprintAttack(seed=0).prepare(AttackContext(
            image_shape=(64,), num_classes=3, auxiliary_images=aux.flatten(1)))  # type: ignore[arg-type]


def test_an_observation_of_the_unmodified_model_is_refused(aux: torch.Tensor) -> None:
    net = tiny_net()
    attack = prepared(aux, net)
    x, y = victims(0)
    with pytest.raises(ConfigError, match="modify"):
        attack.reconstruct(observe_gradient(net, x, y))
    with pytest.raises(ConfigError):
        attack.reconstruct(Observation(kind="activations", batch_size=1, image_shape=SHAPE,
                                       activations=torch.zeros(1, 4)))
    with pytest.raises(StateError):
        ImprintAttack(seed=0).reconstruct(observe_gradient(net, x, y))


def test_one_step_update_reads_like_the_gradient(aux: torch.Tensor) -> None:
    net = tiny_net()
    attack = prepared(aux, net, gain=1e-5)
    sent = attack.modify(net)
    x, y = victims(0)
    upd = observe_update(sent, x, y, local_epochs=1, local_batch_size=BATCH, lr=0.1)
    rec = attack.reconstruct(upd)
    assert rec.meta["local_steps"] == 1
    lone = alone(attack, x)
    assert bool((nearest_psnr(rec.images, x)[lone] > EXACT_PSNR_DB).all())


def test_dpsgd_noise_stops_it_and_clipping_alone_does_not(aux: torch.Tensor) -> None:
    from shieldsplit.defenses.dpsgd import DPSGD

    net = tiny_net()
    attack = prepared(aux, net)
    sent = attack.modify(net)
    x, y = victims(0)
    baseline = float(psnr(aux.mean(0, keepdim=True).expand_as(x), x).mean())
    fractions, mean_psnr = {}, {}
    for sigma in (0.0, 1.0):
        dp = DPSGD(sent, cut=attack.modified_cut(1), noise_multiplier=sigma, max_grad_norm=1.0)
        rec = attack.reconstruct(dp.observe_federated(x, y, kind="gradient", seed=0))
        fractions[sigma] = float(recovered_mask(rec.images, x).float().mean())
        mean_psnr[sigma] = float(psnr(match_order(rec.images, x), x).mean())
    # per-example clipping scales each example's whole gradient: the ratio survives it
    assert fractions[0.0] >= 0.5 and mean_psnr[0.0] > baseline + 20
    # the noise of noise multiplier 1 leaves nothing above the no-attack baseline
    assert fractions[1.0] == 0.0
    assert mean_psnr[1.0] <= baseline + 1.0, (mean_psnr, baseline)
    assert math.isfinite(mean_psnr[1.0])
