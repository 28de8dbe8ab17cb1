"""DP-SGD defence (Opacus): validation, BatchNorm swap, accounting, determinism, clean-up."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit.defenses.base import Defense, available_defenses, create_defense
from shieldsplit.defenses.dpsgd import DPSGD, DPHistory, make_dp_compatible
from shieldsplit.errors import (
    ConfigError,
    EmptyDataError,
    LabelError,
    NonFiniteInputError,
    UnsupportedModelError,
)
from shieldsplit.models import PGSLNet, SmallConvNet


def _pgsl() -> nn.Module:
    torch.manual_seed(0)
    return PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)


def _small() -> nn.Module:
    torch.manual_seed(0)
    return SmallConvNet(num_classes=2, image_size=8, width=4)


def _loader(n: int = 24, batch_size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.rand(n, 1, 8, 8, generator=g),
                         torch.randint(0, 2, (n,), generator=g))
    return DataLoader(data, batch_size=batch_size)


def _quiet(model: nn.Module, **options: object) -> DPSGD:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return DPSGD(model, cut=2, **options)  # type: ignore[arg-type]


def _hooks(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules()
            if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
            or m._backward_pre_hooks]


def test_registered() -> None:
    assert "dpsgd" in available_defenses()
    assert DPSGD.knob.option == "noise_multiplier"


def test_batchnorm_swap_warns_and_leaves_model_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    net = _pgsl().eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    types = [type(m) for m in net.modules()]
    with caplog.at_level("WARNING", logger="shieldsplit.defenses.dpsgd"), \
            pytest.warns(UserWarning, match=r"BatchNorm2d -> GroupNorm in: 2, 5"):
        dp = DPSGD(net, cut=2)
    assert "BatchNorm2d -> GroupNorm" in caplog.text
    assert [type(m) for m in net.modules()] == types
    assert not net.training
    assert net.state_dict().keys() == state.keys()
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in dp.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in dp.modules())


def test_no_warning_without_batchnorm() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        DPSGD(_small(), cut=2)


@pytest.mark.parametrize(
    ("option", "value"),
    [("delta", 1.0), ("delta", 0), ("delta", 2.0), ("delta", -1e-5), ("max_grad_norm", 0),
     ("max_grad_norm", -1.0), ("noise_multiplier", -1), ("noise_multiplier", float("nan")),
     ("lr", 0.0), ("poisson_sampling", "yes")],
)
def test_bad_options_raise_config_error(option: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        DPSGD(_small(), cut=2, **{option: value})  # type: ignore[arg-type]
    assert info.value.what == option
    assert option in str(info.value) or "Fix" in str(info.value)


def test_zero_noise_is_allowed_and_gives_no_guarantee() -> None:
    dp = DPSGD(_small(), cut=2, noise_multiplier=0.0)
    history = dp.fit(_loader(16), epochs=1, progress=False)
    assert history.epsilon == math.inf


class _RunningScale(nn.Module):
    """A trainable layer with a buffer: Opacus rejects it and has no fixer for it."""

    running: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.register_buffer("running", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.running


def test_unfixable_layer_raises_unsupported_model_error() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), _RunningScale(), nn.Flatten(), nn.Linear(144, 2))
    with pytest.raises(UnsupportedModelError, match=r"1 \(_RunningScale\)") as info:
        DPSGD(net, cut=1)
    assert "GroupNorm" in str(info.value)


def test_unfixable_layer_really_breaks_opacus() -> None:
    """The layer the test above rejects is one make_private itself refuses."""
    from opacus import PrivacyEngine

    net = nn.Sequential(nn.Flatten(), _RunningScale())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        engine = PrivacyEngine(accountant="rdp")
    with pytest.raises(NotImplementedError):
        engine.make_private(module=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                            data_loader=_loader(8), noise_multiplier=1.0, max_grad_norm=1.0)


def test_not_a_module() -> None:
    with pytest.raises(UnsupportedModelError):
        make_dp_compatible("model")  # type: ignore[arg-type]


def test_fit_accounts_privacy_and_cleans_up() -> None:
    dp = _quiet(_pgsl())
    assert dp.privacy() == {"epsilon": 0.0, "delta": 1e-5}
    history = dp.fit(_loader(), epochs=1, progress=False)
    assert isinstance(history, DPHistory)
    assert len(history.epochs) == 1
    assert 0 < history.epsilon < math.inf
    assert history.sample_rate == pytest.approx(1 / 3)
    assert history.steps == 3
    assert dp.privacy() == {"epsilon": history.epsilon, "delta": 1e-5}
    # the defence is a plain module again: no hooks, no Opacus attributes
    assert _hooks(dp) == []
    assert not any(hasattr(m, "activations") for m in dp.modules())
    for p in dp.parameters():
        assert not hasattr(p, "grad_sample") and not hasattr(p, "summed_grad")
        assert p.grad is None
    assert type(dp) is DPSGD and not dp.training
    # a second fit composes with the first
    second = dp.fit(_loader(), epochs=1, progress=False, seed=1)
    assert second.epsilon > history.epsilon


def test_more_noise_gives_smaller_epsilon() -> None:
    eps = [DPSGD(_small(), cut=2, noise_multiplier=s).fit(_loader(), epochs=1, progress=False)
           .epsilon for s in (0.8, 2.0)]
    assert eps[0] > eps[1] > 0


def test_same_seed_same_history_and_weights() -> None:
    def run(seed: int) -> tuple[dict, dict]:
        dp = _quiet(_pgsl())
        history = dp.fit(_loader(), epochs=2, progress=False, seed=seed)
        return history.model_dump(exclude={"epochs": {"__all__": {"seconds"}}}), dp.state_dict()

    (h1, w1), (h2, w2), (_, w3) = run(0), run(0), run(1)
    assert h1 == h2
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k
    assert any(not torch.equal(w1[k], w3[k]) for k in w1)


def test_poisson_empty_batches_are_handled() -> None:
    # sample rate 1/8 with 8 examples: empty batches are frequent (about a third)
    dp = DPSGD(_small(), cut=2)
    history = dp.fit(_loader(8, batch_size=1), epochs=2, progress=False)
    assert history.steps == 16
    assert all(math.isfinite(e.train_loss) for e in history.epochs)
    assert all(torch.isfinite(p).all() for p in dp.parameters())


def test_without_poisson_sampling() -> None:
    dp = DPSGD(_small(), cut=2, poisson_sampling=False)
    history = dp.fit(_loader(), epochs=1, progress=False)
    assert history.steps == 3 and 0 < history.epsilon < math.inf


def test_save_load_round_trip(tmp_path: Path) -> None:
    dp = _quiet(_pgsl(), noise_multiplier=1.5, max_grad_norm=0.5, delta=1e-6)
    dp.fit(_loader(), epochs=1, progress=False)
    path = tmp_path / "dp.pt"
    dp.save(path)
    with pytest.warns(UserWarning, match="GroupNorm"):
        back = Defense.load(path, _pgsl())
    assert isinstance(back, DPSGD)
    assert back.options() == dp.options()
    assert back.privacy() == dp.privacy()
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(back.eval()(x), dp.eval()(x))


def _params(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _bad_last_batch(kind: str) -> DataLoader:
    """24 examples in batches of 8 whose last batch (only) is bad."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(24, 1, 8, 8, generator=g), torch.randint(0, 2, (24,), generator=g)
    if kind == "label":
        y[-1] = 5  # out of range for 2 classes: torch would raise IndexError
    elif kind == "negative":
        y[-1] = -1
    else:
        x[-1, 0, 0, 0] = float("nan")
    return DataLoader(TensorDataset(x, y), batch_size=8)


@pytest.mark.parametrize(("kind", "error"), [("label", LabelError), ("negative", LabelError),
                                             ("nan", NonFiniteInputError)])
def test_failed_fit_rolls_back_weights_and_accounting(kind: str, error: type) -> None:
    # fixed batches (no Poisson sampling), so the bad batch is the third, after two
    # noisy steps have already changed the weights
    dp = DPSGD(_small(), cut=2, poisson_sampling=False)
    dp.fit(_loader(), epochs=1, progress=False)
    before, privacy = _params(dp), dp.privacy()
    assert 0 < privacy["epsilon"] < math.inf and int(dp.fits) == 1
    seen: list[int] = []
    original = dp._private_loss

    def spy(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        seen.append(int(y.numel()))
        return original(model, x, y)

    dp._private_loss = spy  # type: ignore[method-assign]
    with pytest.raises(error) as info:
        dp.fit(_bad_last_batch(kind), epochs=1, progress=False)
    assert info.value.what in ("x", "y")
    assert seen == [8, 8, 8]  # two steps were taken before the bad batch
    after = _params(dp)
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(after[k], before[k]), k
    assert dp.privacy() == privacy and int(dp.fits) == 1
    assert _hooks(dp) == [] and all(p.grad is None for p in dp.parameters())
    assert not dp._empty_batches_ok
    # the defence still trains, and as if the failed fit never happened
    twin = DPSGD(_small(), cut=2, poisson_sampling=False)
    twin.fit(_loader(), epochs=1, progress=False)
    dp._private_loss = original  # type: ignore[method-assign]
    dp.fit(_loader(), epochs=1, progress=False, seed=3)
    twin.fit(_loader(), epochs=1, progress=False, seed=3)
    assert all(torch.equal(v, twin.state_dict()[k]) for k, v in dp.state_dict().items())


def test_failed_first_fit_reports_no_privacy_spent() -> None:
    dp = DPSGD(_small(), cut=2, poisson_sampling=False)
    before = _params(dp)
    with pytest.raises(LabelError):
        dp.fit(_bad_last_batch("label"), epochs=1, progress=False)
    assert dp.privacy()["epsilon"] == 0.0
    assert all(torch.equal(v, before[k]) for k, v in dp.state_dict().items())


def _record_noise(monkeypatch: pytest.MonkeyPatch) -> list[Tensor]:
    import opacus.optimizers.optimizer as opacus_optimizer

    drawn: list[Tensor] = []
    generate = opacus_optimizer._generate_noise

    def record(*args: Any, **kwargs: Any) -> Tensor:
        noise = generate(*args, **kwargs)
        drawn.append(noise.detach().clone())
        return noise

    monkeypatch.setattr(opacus_optimizer, "_generate_noise", record)
    return drawn


def test_fit_count_is_saved_so_loaded_defence_draws_fresh_noise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn = _record_noise(monkeypatch)
    dp = DPSGD(_small(), cut=2)
    assert "fits" in dp.state_dict() and int(dp.fits) == 0
    dp.fit(_loader(), epochs=1, progress=False, seed=0)
    first = list(drawn)
    assert first and int(dp.fits) == 1
    path = tmp_path / "dp.pt"
    dp.save(path)
    back = Defense.load(path, _small())
    assert isinstance(back, DPSGD) and int(back.fits) == 1
    drawn.clear()
    back.fit(_loader(), epochs=1, progress=False, seed=0)
    resumed = list(drawn)
    assert len(resumed) == len(first)
    assert not any(torch.equal(a, b) for a, b in zip(first, resumed, strict=True))
    assert int(back.fits) == 2
    # the loaded defence continues exactly as the saved one would have
    drawn.clear()
    dp.fit(_loader(), epochs=1, progress=False, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(drawn, resumed, strict=True))
    assert all(torch.equal(v, dp.state_dict()[k]) for k, v in back.state_dict().items())


def test_create_defense_by_name() -> None:
    dp = create_defense("dpsgd", _small(), cut=1, seed=3, noise_multiplier=0.5)
    assert isinstance(dp, DPSGD) and dp.seed == 3 and dp.cut == 1


def test_train_loader_must_be_a_dataloader() -> None:
    dp = DPSGD(_small(), cut=2)
    batches = [(torch.rand(4, 1, 8, 8), torch.randint(0, 2, (4,)))]
    with pytest.raises(ConfigError, match="DataLoader") as info:
        dp.fit(batches, epochs=1, progress=False)
    assert info.value.what == "train_loader"
    with pytest.raises(EmptyDataError):
        dp.fit(DataLoader(TensorDataset(torch.rand(0, 1, 8, 8), torch.zeros(0))),
               epochs=1, progress=False)
    with pytest.raises(ConfigError) as info:
        dp.fit(_loader(), epochs=0, progress=False)
    assert info.value.what == "epochs"


def test_epsilon_matches_opacus_accountant() -> None:
    from opacus.accountants import RDPAccountant

    dp = DPSGD(_small(), cut=2, noise_multiplier=1.1)
    history = dp.fit(_loader(), epochs=2, progress=False)
    reference = RDPAccountant()
    reference.history = [(1.1, 1 / 3, 6)]
    assert history.epsilon == pytest.approx(reference.get_epsilon(delta=1e-5))


def test_poisson_sampler_hits_empty_batches() -> None:
    """The setting of test_poisson_empty_batches_are_handled does draw empty batches."""
    seen: list[int] = []
    dp = DPSGD(_small(), cut=2)
    original = dp._private_loss

    def spy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[Tensor, Tensor]:
        seen.append(int(y.numel()))
        return original(model, x, y)

    dp._private_loss = spy  # type: ignore[method-assign]
    dp.fit(_loader(8, batch_size=1), epochs=2, progress=False)
    assert 0 in seen and len(seen) == 16


def test_large_delta_warns() -> None:
    dp = DPSGD(_small(), cut=2, delta=0.1)
    with pytest.warns(UserWarning, match="not below 1/n"):
        dp.fit(_loader(), epochs=1, progress=False)


def test_restore_best_with_validation() -> None:
    dp = DPSGD(_small(), cut=2)
    history = dp.fit(_loader(), epochs=2, val_loader=_loader(8), progress=False,
                     restore_best=True)
    assert history.best_epoch in (1, 2)
    assert all(e.val_accuracy is not None for e in history.epochs)
    assert _hooks(dp) == [] and 0 < dp.privacy()["epsilon"] < math.inf


# ------------------------------------------------------------------ observe_federated


def _batch(n: int = 6, seed: int = 2) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 2, (n,), generator=g)


def _plain_model(d: DPSGD) -> nn.Module:
    import copy

    return copy.deepcopy(d.federated_model()).eval()


def _flat(tensors: dict[str, Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors.values()])


LOCAL: dict[str, Any] = {"local_epochs": 2, "local_batch_size": 4, "lr": 0.05}


def test_observe_without_noise_or_clipping_is_the_exact_observation() -> None:
    from shieldsplit.attacks.observe import observe_gradient, observe_update

    d = _quiet(_pgsl(), noise_multiplier=0.0, max_grad_norm=1e6)
    x, y = _batch()
    obs = d.observe_federated(x, y, kind="gradient")
    ref = observe_gradient(_plain_model(d), x, y)
    assert obs.kind == "gradient" and obs.batch_size == 6 and obs.image_shape == (1, 8, 8)
    assert obs.gradients is not None and ref.gradients is not None
    assert obs.gradients.keys() == ref.gradients.keys()
    torch.testing.assert_close(obs.gradients, ref.gradients)
    assert obs.meta == {"dp": {"noise_multiplier": 0.0, "max_grad_norm": 1e6}}
    for seed in (None, 5):  # in order, then reshuffled (6 images in steps of 4 and 2)
        upd = d.observe_federated(x, y, kind="update", seed=seed, **LOCAL)
        ref_upd = observe_update(_plain_model(d), x, y, seed=seed, **LOCAL)
        assert upd.kind == "update" and upd.update is not None and ref_upd.update is not None
        torch.testing.assert_close(upd.update, ref_upd.update)
        assert {k: v for k, v in upd.meta.items() if k != "dp"} == ref_upd.meta
        assert upd.meta["dp"] == {"noise_multiplier": 0.0, "max_grad_norm": 1e6}


def test_observe_clips_every_example() -> None:
    from shieldsplit.attacks.observe import observe_gradient

    d = _quiet(_pgsl(), noise_multiplier=0.0, max_grad_norm=1e-3)
    x, y = _batch()
    obs = d.observe_federated(x, y, kind="gradient")
    assert obs.gradients is not None
    assert float(_flat(obs.gradients).norm()) <= 1e-3 * (1 + 1e-5)
    # one image: its gradient is scaled to exactly the bound
    single = d.observe_federated(x[:1], y[:1], kind="gradient")
    exact = observe_gradient(_plain_model(d), x[:1], y[:1])
    assert single.gradients is not None and exact.gradients is not None
    assert float(_flat(exact.gradients).norm()) > 1e-2
    assert float(_flat(single.gradients).norm()) == pytest.approx(1e-3, rel=1e-4)
    cos = torch.nn.functional.cosine_similarity(_flat(single.gradients),
                                                _flat(exact.gradients), dim=0)
    assert float(cos) == pytest.approx(1.0, abs=1e-5)


def test_observe_noise_is_seeded() -> None:
    d = _quiet(_pgsl(), noise_multiplier=1.0, max_grad_norm=1.0, seed=3)
    x, y = _batch()
    for kind, local in (("gradient", {}), ("update", LOCAL)):
        key = "gradients" if kind == "gradient" else "update"
        a = getattr(d.observe_federated(x, y, kind=kind, seed=1, **local), key)  # type: ignore[arg-type]
        b = getattr(d.observe_federated(x, y, kind=kind, seed=1, **local), key)  # type: ignore[arg-type]
        c = getattr(d.observe_federated(x, y, kind=kind, seed=2, **local), key)  # type: ignore[arg-type]
        default = getattr(d.observe_federated(x, y, kind=kind, **local), key)  # type: ignore[arg-type]
        again = getattr(d.observe_federated(x, y, kind=kind, **local), key)  # type: ignore[arg-type]
        assert all(torch.equal(a[n], b[n]) for n in a)
        assert not torch.equal(_flat(a), _flat(c))
        assert all(torch.equal(default[n], again[n]) for n in default)
        assert not torch.equal(_flat(default), _flat(a))


def test_observe_noise_std() -> None:
    torch.manual_seed(0)
    net = PGSLNet(num_classes=2, image_size=8, width=32, hidden=64)
    noisy = _quiet(net, noise_multiplier=2.0, max_grad_norm=0.5)
    clean = _quiet(net, noise_multiplier=0.0, max_grad_norm=0.5)
    x, y = _batch(4)
    a = noisy.observe_federated(x, y, kind="gradient", seed=7).gradients
    b = clean.observe_federated(x, y, kind="gradient", seed=7).gradients
    assert a is not None and b is not None
    diff = _flat(a) - _flat(b)
    assert diff.numel() > 10_000
    assert float(diff.std()) == pytest.approx(2.0 * 0.5 / 4, rel=0.1)
    assert abs(float(diff.mean())) < 0.1 * 2.0 * 0.5 / 4


def test_observe_leaves_defence_unchanged() -> None:
    d = _quiet(_pgsl(), noise_multiplier=1.0)
    d.train()
    state = {k: v.clone() for k, v in d.state_dict().items()}
    x, y = _batch()
    d.observe_federated(x, y, kind="gradient")
    d.observe_federated(x, y, kind="update", seed=0, **LOCAL)
    assert d.training
    assert all(torch.equal(v, state[k]) for k, v in d.state_dict().items())
    assert all(p.grad is None for p in d.parameters())
    d.eval()
    d.observe_federated(x, y, kind="gradient")
    assert not d.training


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [({"kind": "weights"}, "kind"), ({"kind": "update", "local_epochs": 0}, "local_epochs"),
     ({"kind": "update", "local_batch_size": 1.5}, "local_batch_size"),
     ({"kind": "update", "lr": float("nan")}, "lr"), ({"kind": "update", "lr": True}, "lr"),
     ({"kind": "update", "momentum": 0.9}, "local"), ({"kind": "gradient", "seed": 1.0}, "seed")],
)
def test_observe_rejects_bad_options(kwargs: dict, what: str) -> None:
    d = _quiet(_small())
    x, y = _batch(2)
    with pytest.raises(ConfigError) as err:
        d.observe_federated(x, y, **kwargs)
    assert err.value.what == what


def test_audit_inverting_gradients_on_dpsgd() -> None:
    import shieldsplit

    d = _quiet(_pgsl(), noise_multiplier=1.0, max_grad_norm=1.0)
    x, y = _batch(24, seed=4)
    report = shieldsplit.audit(d, data=(x, y), budget="quick", seed=0, victims=8,
                               attacks=["inverting-gradients"], progress=False)
    assert [r.status for r in report.results] == ["ok"], [r.error for r in report.results]
