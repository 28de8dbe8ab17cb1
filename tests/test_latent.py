"""Tests for shieldsplit.defenses.latent.LatentPerturb (learnable latent perturbation).

Key invariants: Pearson r matches scipy per sample and never returns NaN; bad options
and bad models raise typed errors naming the parameter; with (almost) no noise the
defence is the wrapped model; the learned noise is per element, moves during fit and
stays frozen after pretrain_noise; the decoder rebuilds the image shape from any
latent; fits are reproducible per seed; the user's model is never changed; save/load
round-trips through the registry; a bad batch leaves every weight as it was.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit.defenses.base import Defense, available_defenses, create_defense
from shieldsplit.defenses.latent import (
    LatentDecoder,
    LatentHistory,
    LatentPerturb,
    pearson_correlation,
)
from shieldsplit.errors import (
    ConfigError,
    InputShapeError,
    LabelError,
    NonFiniteInputError,
    StateError,
    UnsupportedModelError,
)
from shieldsplit.models import PGSLNet


def _net(size: int = 8, seed: int = 0) -> PGSLNet:
    torch.manual_seed(seed)
    return PGSLNet(num_classes=2, image_size=size, width=8, hidden=8)


def _loader(n: int = 32, size: int = 8, batch: int = 8, seed: int = 0) -> DataLoader:
    """Two classes told apart by brightness: dark (0) and bright (1) images."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.25 * torch.rand(n, 1, size, size, generator=g) + 0.1 + 0.5 * y.view(-1, 1, 1, 1)
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def _lp(noise: str = "learned", size: int = 8, **options: object) -> LatentPerturb:
    options.setdefault("decoder_width", 8)
    return LatentPerturb.from_model(_net(size), cut=2, seed=0, noise=noise, **options)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ pearson
def test_pearson_matches_scipy_per_sample() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(5, 1, 6, 6, generator=g, dtype=torch.float64)
    x_hat = 0.5 * x + torch.rand(5, 1, 6, 6, generator=g, dtype=torch.float64)
    r = pearson_correlation(x, x_hat)
    assert r.shape == (5,)
    for i in range(5):
        a, b = x[i].flatten().numpy(), x_hat[i].flatten().numpy()
        assert r[i].item() == pytest.approx(stats.pearsonr(a, b)[0], abs=1e-10)
        assert r[i].item() == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-10)


def test_pearson_constant_image_is_zero_with_finite_gradient() -> None:
    x = torch.full((2, 1, 4, 4), 0.3)
    x_hat = torch.rand(2, 1, 4, 4, requires_grad=True)
    r = pearson_correlation(x, x_hat)
    r.sum().backward()
    torch.testing.assert_close(r.detach(), torch.zeros(2), rtol=0, atol=1e-6)
    assert x_hat.grad is not None and bool(torch.isfinite(x_hat.grad).all())
    with pytest.raises(InputShapeError):
        pearson_correlation(x, torch.rand(2, 1, 4, 5))


# ------------------------------------------------------------ bad options
@pytest.mark.parametrize("std", [0.0, -0.1])
def test_non_positive_std_raises(std: float) -> None:
    with pytest.raises(ConfigError) as info:
        _lp("fixed", std=std)
    assert info.value.what == "std"


def test_negative_lam_raises() -> None:
    with pytest.raises(ConfigError) as info:
        _lp(lam=-0.5)
    assert info.value.what == "lam"


def test_unknown_noise_kind_raises() -> None:
    with pytest.raises(ConfigError) as info:
        _lp("gaussian")
    assert info.value.what == "noise"
    assert "learned" in str(info.value)


def test_mismatched_head_raises_naming_head() -> None:
    encoder = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    head = nn.Sequential(nn.Flatten(), nn.Linear(7, 2))
    with pytest.raises(UnsupportedModelError) as info:
        LatentPerturb(encoder, head=head, input_shape=(1, 8, 8))
    assert info.value.what == "head"
    lazy = LatentPerturb(encoder, head=head)  # no input shape: checked at the first batch
    with pytest.raises(UnsupportedModelError) as info:
        lazy(torch.rand(2, 1, 8, 8))
    assert info.value.what == "head"


def test_pretrain_on_fixed_noise_raises_config_error() -> None:
    lp = _lp("fixed")
    with pytest.raises(ConfigError) as info:
        lp.pretrain_noise(_loader(8), epochs=1, progress=False)
    assert info.value.what == "noise"
    assert "fixed" in str(info.value)


# ------------------------------------------------------------------ maths
def test_tiny_fixed_noise_reproduces_the_unwrapped_model() -> None:
    net = _net().eval()
    lp = LatentPerturb.from_model(net, cut=2, noise="fixed", mean=0.0, std=1e-9,
                                  decoder_width=8).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(lp(x), net(x), rtol=1e-5, atol=1e-5)


def test_noise_is_drawn_in_eval_mode_too() -> None:
    lp = _lp("fixed", std=0.5).eval()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert not torch.equal(lp.client(x).activations, lp.client(x).activations)
        torch.manual_seed(3)
        first = lp(x)
        torch.manual_seed(3)
        torch.testing.assert_close(lp(x), first, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("size", "cut"), [(28, 2), (8, 2), (8, 8)],  # cut=8: a flat (Linear) latent
)
def test_decoder_output_matches_the_input_shape(size: int, cut: int) -> None:
    lp = LatentPerturb.from_model(_net(size), cut=cut, decoder_width=4)
    x = torch.rand(3, 1, size, size)
    z = lp.client(x).activations
    assert z.dim() == (2 if cut == 8 else 4)
    assert lp.decoder is not None
    assert lp.decoder(z).shape == x.shape
    assert lp.reconstruct(x).shape == x.shape


def test_decoder_handles_odd_sizes_and_rejects_3d_latents() -> None:
    dec = LatentDecoder((4, 3, 3), (3, 13, 11), width=4)
    with torch.no_grad():
        out = dec(torch.rand(2, 4, 3, 3))
    assert out.shape == (2, 3, 13, 11)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    with pytest.raises(UnsupportedModelError):
        LatentDecoder((4, 3), (1, 8, 8))


# ---------------------------------------------------------------- learning
def test_learned_noise_is_per_element_and_moves_during_fit() -> None:
    lp = _lp("learned", input_shape=(1, 8, 8))
    assert lp.noise is not None
    assert lp.noise.mean.shape == (8, 8, 8) and lp.noise.std.shape == (8, 8, 8)
    torch.testing.assert_close(lp.noise.mean.detach(), torch.ones(8, 8, 8))
    torch.testing.assert_close(lp.noise.std.detach(), torch.full((8, 8, 8), 0.1))
    before = _state(lp.noise)
    history = lp.fit(_loader(16), epochs=1, progress=False)
    assert isinstance(history, LatentHistory) and not history.noise_frozen
    assert not torch.equal(before["loc"], lp.noise.loc.detach())
    assert not torch.equal(before["rho"], lp.noise.rho.detach())



def test_noise_lr_sets_how_far_the_learned_noise_moves() -> None:
    moved = {}
    for noise_lr in (1e-6, 5e-2):
        lp = _lp("learned", input_shape=(1, 8, 8), noise_lr=noise_lr)
        assert lp.options()["noise_lr"] == noise_lr and lp.noise is not None
        lp.fit(_loader(16), epochs=1, seed=0, progress=False)
        moved[noise_lr] = float((lp.noise.loc.detach() - 1.0).abs().mean())
    assert moved[5e-2] > 100 * moved[1e-6]
    assert moved[5e-2] > 1e-2  # Adam moves each element by about lr per step
    # the default is 10 * lr, recorded as None (so save/load keeps following lr)
    default = _lp("learned", lr=2e-3)
    assert default.options()["noise_lr"] is None and default.noise_lr == pytest.approx(2e-2)


@pytest.mark.parametrize("noise_lr", [0.0, -1.0, float("nan")])
def test_bad_noise_lr_raises_naming_it(noise_lr: float) -> None:
    with pytest.raises(ConfigError) as info:
        _lp(noise_lr=noise_lr)
    assert info.value.what == "noise_lr"


def test_pretrain_freezes_noise_and_reinitialises_weights() -> None:
    lp = _lp("learned")
    history = lp.pretrain_noise(_loader(16), epochs=1, progress=False)
    assert history.phase == "pretrain"
    assert lp.frozen and lp.noise is not None
    assert lp.noise.mean.shape == (8, 8, 8)
    assert not torch.equal(lp.noise.loc.detach(), torch.ones(8, 8, 8))  # it learned
    # re-initialised: BatchNorm statistics are back to their start
    bns = [m for m in lp.encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
                       for m in bns)
    trained = _state(lp.encoder)
    assert lp.decoder is not None
    noise = _state(lp.noise)
    after = lp.fit(_loader(16), epochs=1, progress=False)
    assert after.noise_frozen
    assert _same_state(noise, _state(lp.noise))  # frozen: unchanged by fit
    assert not _same_state(trained, _state(lp.encoder))  # the rest trains
    with pytest.raises(StateError):
        lp.pretrain_noise(_loader(8), epochs=1, progress=False)


def test_same_seed_same_history_and_logits() -> None:
    runs = []
    for _ in range(2):
        lp = _lp("learned")
        history = lp.fit(_loader(16), epochs=2, seed=4, progress=False)
        torch.manual_seed(9)
        with torch.no_grad():
            logits = lp(torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2)))
        runs.append((history.model_dump(exclude={"epochs": {"__all__": {"seconds"}}}), logits))
    assert runs[0][0] == runs[1][0]
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=0, atol=0)


def test_fit_beats_chance_on_an_easy_task() -> None:
    lp = LatentPerturb.from_model(_net(12), cut=2, noise="fixed", std=0.1, lr=3e-3,
                                  decoder_width=4, lam=0.5)
    loader = _loader(48, size=12, batch=12)
    history = lp.fit(loader, epochs=3, val_loader=loader, progress=False)
    assert history.epochs[-1].train_accuracy > 0.75
    assert history.epochs[-1].val_accuracy is not None
    assert -1.0 <= history.epochs[-1].train_correlation <= 1.0


# ------------------------------------------------------------ not mutated
def test_user_model_and_encoder_are_not_mutated() -> None:
    net = _net()
    before = _state(net)
    lp = LatentPerturb.from_model(net, cut=2, decoder_width=4)
    lp.fit(_loader(8), epochs=1, progress=False)
    assert _same_state(before, _state(net))
    encoder = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
    saved = _state(encoder), _state(head)
    direct = LatentPerturb(encoder, head=head, decoder_width=4)
    direct.fit(_loader(8), epochs=1, progress=False)
    assert _same_state(saved[0], _state(encoder)) and _same_state(saved[1], _state(head))
    assert direct.client_part is direct.encoder and direct.encoder is not encoder


# ----------------------------------------------------------------- registry
def test_registry_names_and_save_load_round_trip(tmp_path: Path) -> None:
    assert {"latent-fixed", "latent-learned"} <= set(available_defenses())
    net = _net()
    lp = create_defense("latent-learned", net, cut=2, seed=1, decoder_width=4, lam=0.5)
    assert isinstance(lp, LatentPerturb)
    assert lp.name == "latent-learned" and lp.strength == "lam"
    assert create_defense("latent-fixed", net, decoder_width=4).strength == "std"
    lp.pretrain_noise(_loader(8), epochs=1, progress=False)
    path = tmp_path / "latent.pt"
    lp.save(path)
    loaded = Defense.load(path, net)
    assert isinstance(loaded, LatentPerturb)
    assert loaded.options() == lp.options() and loaded.frozen
    assert loaded.noise is not None and not any(p.requires_grad
                                                for p in loaded.noise.parameters())
    assert _same_state(_state(lp), _state(loaded))
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        torch.manual_seed(0)
        expected = lp.eval()(x)
        torch.manual_seed(0)
        torch.testing.assert_close(loaded.eval()(x), expected)
    with pytest.raises(ConfigError):
        create_defense("latent-fixed", net, noise="learned")


def test_load_state_dict_builds_a_lazy_defence() -> None:
    trained = _lp("learned")
    trained(torch.rand(2, 1, 8, 8))  # builds at the first batch
    fresh = _lp("learned")
    assert not fresh.built
    fresh.load_state_dict(trained.state_dict())
    assert fresh.built and _same_state(_state(trained), _state(fresh))


def test_federated_model_excludes_the_decoder() -> None:
    lp = _lp("fixed", input_shape=(1, 8, 8))
    shared = {id(p) for p in lp.federated_model().parameters()}
    assert lp.decoder is not None
    assert not shared & {id(p) for p in lp.decoder.parameters()}
    assert {id(p) for p in lp.encoder.parameters()} <= shared
    with pytest.raises(StateError):
        _lp("fixed").federated_model()


# ------------------------------------------------------------- bad batches
@pytest.mark.parametrize(
    ("x", "y", "error"),
    [
        (torch.full((4, 1, 8, 8), float("nan")), torch.zeros(4, dtype=torch.long),
         NonFiniteInputError),
        (torch.rand(4, 8, 8), torch.zeros(4, dtype=torch.long), InputShapeError),
        (torch.rand(4, 1, 8, 8), torch.full((4,), 5, dtype=torch.long), LabelError),
        (torch.rand(4, 1, 6, 6), torch.zeros(4, dtype=torch.long), InputShapeError),
    ],
)
def test_bad_batch_raises_and_restores_weights(
    x: torch.Tensor, y: torch.Tensor, error: type[Exception]
) -> None:
    lp = _lp("learned")
    lp.fit(_loader(8), epochs=1, progress=False)
    before = _state(lp)
    good = next(iter(_loader(8)))
    with pytest.raises(error):
        lp.fit([good, (x, y)], epochs=1, progress=False)
    assert _same_state(before, _state(lp))


def test_bad_first_batch_leaves_a_lazy_defence_unbuilt() -> None:
    lp = _lp("learned")
    with pytest.raises(LabelError):
        lp.fit([(torch.rand(4, 1, 8, 8), torch.full((4,), 7, dtype=torch.long))],
               epochs=1, progress=False)
    assert not lp.built
    copy.deepcopy(lp).fit(_loader(8), epochs=1, progress=False)


def test_train_protocol_runs_algorithm_1_for_learned_noise() -> None:
    """compare() trains through train_protocol: pre-train the noise, freeze it, then fit."""
    from torch.utils.data import DataLoader, TensorDataset

    import shieldsplit as ss

    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0.5).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    net = ss.PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
    learned = ss.create_defense("latent-learned", net, cut=2, seed=0)
    learned.train_protocol(loader, epochs=1, seed=0, progress=False)
    assert learned.frozen
    fixed = ss.create_defense("latent-fixed", net, cut=2, seed=0)
    fixed.train_protocol(loader, epochs=1, seed=0, progress=False)  # no pre-training
    assert fixed.built


def test_efficacy_minimax_lowers_the_decoders_correlation() -> None:
    """Eq. 3's correlation term works: with lam = 1 the decoder's Pearson r on the
    training images ends far below the same run with lam = 0 (measured: about 0.1
    against 0.45 on this task), at the same accuracy. Stated margin: 0.2."""
    ends = {}
    for lam in (0.0, 1.0):
        history = _lp("learned", lam=lam).fit(_loader(n=64, seed=1), epochs=6, seed=1,
                                              progress=False)
        ends[lam] = (history.epochs[-1].train_correlation, history.epochs[-1].train_accuracy)
    assert ends[1.0][0] < ends[0.0][0] - 0.2, ends
    assert ends[1.0][1] >= ends[0.0][1] - 0.05, ends
