"""The published split-learning baselines (NoPeek, Laplacian noise, BiDO) and the
dependence measures they rest on, checked against direct numpy references."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit.defenses.base import CutDefense, Defense, available_defenses, create_defense
from shieldsplit.defenses.bido import LABEL_SIGMA, BiDO
from shieldsplit.defenses.laplace import LaplaceNoise, laplace_noise_like
from shieldsplit.defenses.nopeek import NoPeek
from shieldsplit.errors import ConfigError, InputShapeError
from shieldsplit.functional.dependence import (
    distance_correlation_loss,
    gaussian_gram,
    hsic,
    median_bandwidth,
)
from shieldsplit.functional.metrics import distance_correlation
from shieldsplit.models import PGSLNet

MakeDefense = Callable[[nn.Module], CutDefense]


# ------------------------------------------------------------ numpy references
def _np_dcor(x: np.ndarray, z: np.ndarray) -> float:
    def centred(v: np.ndarray) -> np.ndarray:
        v = v.reshape(len(v), -1)
        d = np.sqrt(((v[:, None, :] - v[None, :, :]) ** 2).sum(-1))
        return d - d.mean(0, keepdims=True) - d.mean(1, keepdims=True) + d.mean()

    a, b = centred(x), centred(z)
    dcov2 = (a * b).mean()
    dvar2 = (a * a).mean() * (b * b).mean()
    return float(np.sqrt(max(dcov2, 0.0) / np.sqrt(dvar2)))


def _np_gram(v: np.ndarray, sigma: float) -> np.ndarray:
    v = v.reshape(len(v), -1)
    d2 = ((v[:, None, :] - v[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * sigma**2))


def _np_median_sigma(v: np.ndarray) -> float:
    v = v.reshape(len(v), -1)
    d = np.sqrt(((v[:, None, :] - v[None, :, :]) ** 2).sum(-1))
    med = float(np.median(d[np.triu_indices(len(v), k=1)]))
    return med if med > 0 else 1.0


def _np_hsic(x: np.ndarray, z: np.ndarray, sx: float, sz: float) -> float:
    n = len(x)
    k, m = _np_gram(x, sx), _np_gram(z, sz)
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ m @ h) / (n - 1) ** 2)


def _net() -> PGSLNet:
    torch.manual_seed(0)
    return PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)


def _batch(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 2


# ----------------------------------------------------------- distance correlation
def test_dcor_of_itself_and_affine_map_is_one() -> None:
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(1))
    assert float(distance_correlation_loss(x, x)) == pytest.approx(1.0, abs=1e-4)
    assert float(distance_correlation_loss(x, -2.5 * x + 3.0)) == pytest.approx(1.0, abs=1e-4)
    assert float(distance_correlation_loss(x, x, squared=True)) == pytest.approx(1.0, abs=1e-4)


def test_dcor_of_independent_samples_is_small() -> None:
    g = torch.Generator().manual_seed(2)
    x, z = torch.randn(400, 3, generator=g), torch.randn(400, 3, generator=g)
    assert float(distance_correlation_loss(x, z)) < 0.2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dcor_matches_numpy_and_the_metric(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(30, 1, 4, 4, generator=g, dtype=torch.float64)
    z = torch.tanh(x.flatten(1)[:, :5] * 3) + 0.3 * torch.randn(30, 5, generator=g,
                                                                dtype=torch.float64)
    ours = float(distance_correlation_loss(x, z))
    assert ours == pytest.approx(_np_dcor(x.numpy(), z.numpy()), abs=1e-6)
    assert ours == pytest.approx(distance_correlation(x, z), abs=1e-6)
    sq = float(distance_correlation_loss(x, z, squared=True))
    assert sq == pytest.approx(ours**2, abs=1e-6)
    # float32 inputs agree with the float64 metric to float precision.
    assert float(distance_correlation_loss(x.float(), z.float())) == pytest.approx(
        distance_correlation(x, z), abs=1e-4)


def test_dcor_gradient_is_finite_even_for_constant_and_repeated_samples() -> None:
    x = torch.rand(10, 4, generator=torch.Generator().manual_seed(3))
    x[1] = x[0]
    x.requires_grad_(True)
    const = torch.ones(10, 2, requires_grad=True)
    loss = distance_correlation_loss(x, const) + distance_correlation_loss(x, x * 2)
    loss.backward()
    assert distance_correlation_loss(x, const).item() == pytest.approx(0.0, abs=1e-5)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert const.grad is not None and torch.isfinite(const.grad).all()


def test_dependence_rejects_mismatched_batches() -> None:
    with pytest.raises(InputShapeError):
        distance_correlation_loss(torch.rand(4, 2), torch.rand(5, 2))
    with pytest.raises(InputShapeError):
        hsic(torch.rand(1, 2), torch.rand(1, 2))


# ------------------------------------------------------------------------- HSIC
def test_gaussian_gram_matches_numpy_and_rejects_bad_sigma() -> None:
    x = torch.randn(7, 2, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    np.testing.assert_allclose(gaussian_gram(x, 1.7).numpy(), _np_gram(x.numpy(), 1.7),
                               atol=1e-10)
    with pytest.raises(ConfigError) as err:
        gaussian_gram(x, 0.0)
    assert err.value.what == "sigma"


def test_median_bandwidth_matches_numpy() -> None:
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert median_bandwidth(x) == pytest.approx(_np_median_sigma(x.numpy()), rel=1e-9)
    assert median_bandwidth(torch.zeros(4, 3)) == 1.0


@pytest.mark.parametrize("sigmas", [(None, None), (0.8, 2.0)])
def test_hsic_matches_numpy(sigmas: tuple[float | None, float | None]) -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(25, 1, 3, 3, generator=g, dtype=torch.float64)
    z = x.flatten(1)[:, :4] ** 2 + 0.5 * torch.randn(25, 4, generator=g, dtype=torch.float64)
    sx = sigmas[0] if sigmas[0] is not None else _np_median_sigma(x.numpy())
    sz = sigmas[1] if sigmas[1] is not None else _np_median_sigma(z.numpy())
    ours = float(hsic(x, z, sigma_x=sigmas[0], sigma_z=sigmas[1]))
    assert ours == pytest.approx(_np_hsic(x.numpy(), z.numpy(), sx, sz), rel=1e-8)


def test_hsic_is_larger_for_dependent_samples_and_differentiable() -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(60, 3, generator=g, requires_grad=True)
    dependent = hsic(x, torch.sin(2 * x))
    independent = hsic(x, torch.randn(60, 3, generator=g))
    assert dependent.item() > 3 * independent.item() >= 0.0
    dependent.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ------------------------------------------------------------- option validation
@pytest.mark.parametrize(
    ("cls", "option", "bad"),
    [
        (NoPeek, "alpha", -0.1),
        (NoPeek, "alpha", float("nan")),
        (LaplaceNoise, "scale", 0.0),
        (LaplaceNoise, "scale", -1.0),
        (BiDO, "lambda_x", -0.01),
        (BiDO, "lambda_y", -1.0),
        (BiDO, "lambda_y", float("inf")),
    ],
)
def test_bad_option_raises_config_error_naming_it(
    cls: Callable[..., CutDefense], option: str, bad: float
) -> None:
    with pytest.raises(ConfigError) as err:
        cls(_net(), cut=2, **{option: bad})
    assert err.value.what == option


def test_baselines_are_registered_with_their_strength() -> None:
    assert {"nopeek", "laplace", "bido"} <= set(available_defenses())
    assert (NoPeek.knob.option, LaplaceNoise.knob.option, BiDO.knob.option) == (
        "alpha", "scale", "lambda_x")
    defense = create_defense("bido", _net(), cut=2, seed=0, lambda_x=0.2, lambda_y=0.0)
    assert isinstance(defense, BiDO) and defense.options() == {"lambda_x": 0.2, "lambda_y": 0.0}


# --------------------------------------------------------------------- Laplace
def test_laplace_wire_is_noisy_with_the_requested_scale() -> None:
    defense = LaplaceNoise(_net(), cut=2, scale=0.3).eval()
    x, _ = _batch(4)
    torch.manual_seed(0)
    with torch.no_grad():
        clean = defense.head(x)
        wire = defense.client(x).activations
    assert wire.shape == clean.shape and not torch.equal(wire, clean)
    torch.manual_seed(1)
    noise = laplace_noise_like(torch.zeros(200_000), 0.3)
    assert float(noise.abs().mean()) == pytest.approx(0.3, rel=0.1)
    assert float(noise.mean()) == pytest.approx(0.0, abs=0.01)
    assert float((wire - clean).abs().mean()) == pytest.approx(0.3, rel=0.1)


def test_laplace_noise_is_reproducible_under_manual_seed_and_in_eval_mode() -> None:
    defense = LaplaceNoise(_net(), cut=2, scale=0.5).eval()
    x, _ = _batch(3)
    with torch.no_grad():
        torch.manual_seed(3)
        first = defense(x)
        torch.manual_seed(3)
        second = defense(x)
        third = defense(x)
    assert torch.equal(first, second) and not torch.equal(second, third)


# ---------------------------------------------------------- regularised splits
@pytest.mark.parametrize(
    "defense",
    [
        lambda net: NoPeek(net, cut=2, alpha=0.0),
        lambda net: BiDO(net, cut=2, lambda_x=0.0, lambda_y=0.0),
        lambda net: LaplaceNoise(net, cut=2, scale=0.5),
    ],
    ids=["nopeek", "bido", "laplace"],
)
def test_zero_strength_is_exactly_cross_entropy(defense: MakeDefense) -> None:
    net = _net().eval()
    d = defense(net).eval()
    x, y = _batch()
    if isinstance(d, LaplaceNoise):
        assert d.regularizer(x, d.head(x), y) is None
        return
    loss, logits = d.training_loss(d, x, y)
    with torch.no_grad():
        expected = F.cross_entropy(net(x), y)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(logits.detach(), net(x).detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "defense",
    [lambda net: NoPeek(net, cut=2, alpha=1.0),
     lambda net: BiDO(net, cut=2, lambda_x=1.0, lambda_y=0.0),
     lambda net: BiDO(net, cut=2, lambda_x=0.0, lambda_y=1.0)],
    ids=["nopeek", "bido-x", "bido-y"],
)
def test_regulariser_gradient_reaches_the_client(defense: MakeDefense) -> None:
    d = defense(_net())
    x, y = _batch()
    reg = d.regularizer(x, d.head(x), y)
    assert reg is not None
    reg.backward()
    grads = [p.grad for p in d.head.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    assert all(p.grad is None for p in d.tail.parameters())


def test_bido_regulariser_equals_the_hsic_formula() -> None:
    d = BiDO(_net(), cut=2, lambda_x=0.3, lambda_y=0.7)
    x, y = _batch()
    a = d.head(x).detach()
    onehot = F.one_hot(y, 2).float()
    expected = 0.3 * hsic(x, a) - 0.7 * hsic(onehot, a, sigma_x=LABEL_SIGMA)
    reg = d.regularizer(x, a, y)
    assert reg is not None
    torch.testing.assert_close(reg, expected)


def _synthetic_loader(seed: int = 0, batch_size: int = 16) -> tuple[DataLoader, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(48) % 2
    x = torch.rand(48, 1, 8, 8, generator=g) * 0.5
    x[:, :, :4, :] += 0.5 * y[:, None, None, None].float()  # the label lights the top half
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False), x


def test_nopeek_lowers_the_distance_correlation_of_the_cut() -> None:
    # Small batches and a large alpha: every one of seeds 0-5 drops by > 0.1 in eval mode.
    loader, x = _synthetic_loader(batch_size=8)
    dcor = {}
    for alpha in (0.0, 10.0):
        scores = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            net = PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
            d = NoPeek(net, cut=2, alpha=alpha)
            d.fit(loader, epochs=6, seed=seed, progress=False)
            with torch.no_grad():
                scores.append(distance_correlation(x, d.eval().client(x).activations))
        dcor[alpha] = float(np.mean(scores))
    assert dcor[10.0] < dcor[0.0] - 0.05, dcor


# ----------------------------------------------------------- save, load, purity
@pytest.mark.parametrize(
    "make",
    [lambda net: NoPeek(net, cut=2, alpha=0.4),
     lambda net: BiDO(net, cut=2, lambda_x=0.1, lambda_y=0.2),
     lambda net: LaplaceNoise(net, cut=2, scale=0.25)],
    ids=["nopeek", "bido", "laplace"],
)
def test_fit_save_load_round_trip_leaves_the_model_alone(
    make: MakeDefense, tmp_path: Path
) -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loader, x = _synthetic_loader(1)
    d = make(net)
    d.fit(loader, epochs=1, seed=0, progress=False)
    after = net.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)

    path = tmp_path / "defense.pt"
    d.save(path)
    loaded = Defense.load(path, _net())
    assert type(loaded) is type(d) and loaded.options() == d.options()
    assert loaded.cut == d.cut
    with torch.no_grad():
        torch.manual_seed(5)
        out = d.eval()(x)
        torch.manual_seed(5)
        again = loaded.eval()(x)
    torch.testing.assert_close(out, again, rtol=0, atol=0)
