"""Tests for shieldsplit.defenses.pgsl.shield.SplitShield.

Key invariant: with every PGSL step off the shield *is* the wrapped model, in
outputs (eval and train mode) and in gradients. With PGSL on: the wire
carries half-resolution activations, only the fused stream's gradient goes
back to the client, every step can be switched off, state round-trips, fit is
reproducible, the user's model is never changed, and bad input raises typed
errors without changing any state.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from model_strategies import CNNSpec, build_cnn, cnn_specs
from pydantic import ValidationError
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import shieldsplit.defenses.pgsl.fitting as fitting_module
from shieldsplit import (
    ClientMessage,
    PGSLConfig,
    PGSLNet,
    ServerGradient,
    SplitShield,
    list_cut_points,
)
from shieldsplit.errors import (
    ConfigError,
    EmptyDataError,
    InputShapeError,
    InvalidCutError,
    LabelError,
    NonFiniteInputError,
    ShieldSplitError,
    StateError,
    UnsupportedModelError,
)

torchvision = pytest.importorskip("torchvision")

OFF = PGSLConfig.off()
IMAGE = 8
CLASSES = 3
SHAPE = (1, IMAGE, IMAGE)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from intra-op threads; on a busy 2-core box they cost a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- helpers





def small_net(image: int = IMAGE, seed: int = 0, **kwargs: Any) -> PGSLNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PGSLNet(num_classes=CLASSES, image_size=image, width=8, hidden=16, **kwargs)


def make_shield(
    model: nn.Module | None = None, config: PGSLConfig | None = None, **kwargs: Any
) -> SplitShield:
    kwargs.setdefault("input_shape", SHAPE)
    kwargs.setdefault("cut", 2)
    return SplitShield(model if model is not None else small_net(), config=config, **kwargs)


def easy_data(n: int = 24, image: int = IMAGE, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class k brightens band k of the image: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % CLASSES
    x = 0.2 * torch.rand(n, 1, image, image, generator=g)
    band = max(1, image // CLASSES)
    for i in range(n):
        k = int(y[i])
        x[i, :, k * band : (k + 1) * band, :] += 0.7
    return x.clamp(0, 1), y


def loader(n: int = 16, batch: int = 8, shuffle: bool = False, seed: int = 0) -> DataLoader:
    return DataLoader(TensorDataset(*easy_data(n, seed=seed)), batch_size=batch, shuffle=shuffle)


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def mapped_parameters(shield: SplitShield) -> dict[str, nn.Parameter]:
    """Shield parameters under the wrapped model's names (off-config shields only)."""
    out = {}
    for name, p in shield.named_parameters():
        for prefix in ("head.", "tails.fused."):
            if name.startswith(prefix):
                out[name.removeprefix(prefix)] = p
                break
        else:
            raise AssertionError(f"unexpected parameter {name} in an off-config shield")
    return out


def mapped_buffers(shield: SplitShield) -> dict[str, torch.Tensor]:
    out = {}
    for name, b in shield.named_buffers():
        for prefix in ("head.", "tails.fused."):
            if name.startswith(prefix):
                out[name.removeprefix(prefix)] = b
    return out


def check_equivalence(
    model: nn.Module,
    cut: int,
    x: torch.Tensor,
    y: torch.Tensor,
    input_shape: tuple[int, int, int] | None = None,
    atol: float = 1e-6,
) -> None:
    """Off-config shield == model: eval and train outputs, gradients, BN statistics."""
    ref = copy.deepcopy(model)
    shield = SplitShield(model, cut=cut, config=OFF, input_shape=input_shape)
    assert shield.streams == ("fused",)
    tol = {"atol": atol, "rtol": 1e-5}

    ref.eval()
    shield.eval()
    with torch.no_grad():
        torch.testing.assert_close(shield(x), ref(x), **tol)

    ref.train()
    shield.train()
    torch.manual_seed(1234)
    out_ref = ref(x)
    torch.manual_seed(1234)
    out_shield = shield(x)
    torch.testing.assert_close(out_shield, out_ref, **tol)
    F.cross_entropy(out_ref, y).backward()
    F.cross_entropy(out_shield, y).backward()

    params = mapped_parameters(shield)
    assert len(params) == len(list(shield.parameters())), "a parameter lives on both sides"
    assert params.keys() == dict(ref.named_parameters()).keys()
    for name, p in ref.named_parameters():
        assert p.grad is not None, name
        assert params[name].grad is not None, name
        torch.testing.assert_close(params[name].grad, p.grad, **tol, msg=name)
    # the train-mode forward updated the BatchNorm statistics identically
    buffers = mapped_buffers(shield)
    for name, b in ref.named_buffers():
        torch.testing.assert_close(buffers[name], b, **tol, msg=name)


# --------------------------------------------------------------------------- equivalence


@settings(max_examples=20, deadline=None)
@given(spec=cnn_specs(), batch=st.integers(2, 9), data_seed=st.integers(0, 2**16))
def test_off_config_equals_model_on_random_cnns(spec: CNNSpec, batch: int, data_seed: int) -> None:
    model = build_cnn(spec)
    g = torch.Generator().manual_seed(data_seed)
    x = torch.randn(batch, spec.in_channels, IMAGE, IMAGE, generator=g)
    y = torch.randint(0, spec.classes, (batch,), generator=g)
    compute = len(spec.blocks) + (2 if spec.hidden else 1)
    for cut in range(1, compute):
        check_equivalence(model, cut, x, y, input_shape=(spec.in_channels, IMAGE, IMAGE))


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torchvision.models.resnet18(weights=None, num_classes=CLASSES)


@pytest.mark.parametrize(("cut", "batch"), [(1, 2), (8, 3), (15, 2)])
def test_off_config_equals_resnet18(resnet: nn.Module, cut: int, batch: int) -> None:
    g = torch.Generator().manual_seed(cut)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    y = torch.randint(0, CLASSES, (batch,), generator=g)
    check_equivalence(resnet, cut, x, y, input_shape=(3, 32, 32), atol=1e-5)


class TiedGain(nn.Module):
    """One parameter used on both sides of cut 1 (weight tying across the cut)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, CLASSES)
        self.gain = nn.Parameter(torch.tensor(1.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c1(x) * self.gain)
        return self.fc((self.c2(h) * self.gain).mean((2, 3)))


def test_off_config_equals_model_with_a_parameter_tied_across_the_cut() -> None:
    torch.manual_seed(0)
    model = TiedGain()
    x, y = torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 2, 0])
    for point in list_cut_points(model):  # rejecting cut 1 would be a fix too
        check_equivalence(model, point.index, x, y, input_shape=(1, 6, 6))
        shield = SplitShield(model, cut=point.index, config=OFF, input_shape=(1, 6, 6))
        names = [n for n, _ in shield.named_parameters()]
        assert len(mapped_parameters(shield)) == len(names), "a parameter lives on both sides"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pgsl_shield_runs_on_cuda() -> None:
    shield = make_shield().cuda()
    x, y = easy_data(4)
    probs = shield.predict_proba(x.cuda())
    assert probs.device.type == "cuda"
    shield.fit([(x, y)], epochs=1, progress=False)


def test_off_config_equals_pgslnet_at_every_cut() -> None:
    net = small_net(dropout=0.5)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, *SHAPE, generator=g)
    y = torch.randint(0, CLASSES, (4,), generator=g)
    for cut in range(1, 9):
        check_equivalence(net, cut, x, y, input_shape=SHAPE)


def test_unwrap_off_config_returns_the_trained_model() -> None:
    net = small_net()
    shield = make_shield(net, OFF)
    shield.fit(loader(), epochs=1, progress=False)
    plain = shield.unwrap()
    assert type(plain) is type(net)
    assert plain.training == shield.training
    shield.eval()
    plain.eval()
    net.eval()
    x = easy_data(6, seed=3)[0]
    with torch.no_grad():
        torch.testing.assert_close(plain(x), shield(x))
        torch.testing.assert_close(plain(x).softmax(-1), shield.predict_proba(x))
        # training changed the weights: unwrap carries them, not the original ones
        assert not torch.allclose(plain(x), net(x))
    # the unwrapped model is independent of the shield
    with torch.no_grad():
        next(plain.parameters()).add_(1.0)
        assert not torch.allclose(plain(x), shield(x))


def test_off_config_fit_equals_plain_adam_training() -> None:
    """Split training with every step off == training the model itself (same seed, data)."""
    net = small_net(dropout=0.5)
    cfg = OFF.model_copy(update={"train": OFF.train.model_copy(update={"lr_decay": 0.05})})
    shield = make_shield(net, cfg)
    x, y = easy_data(24)
    shield.fit(
        DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True),
        epochs=2,
        seed=3,
        progress=False,
    )

    ref = copy.deepcopy(net).train()
    t = cfg.train
    opt = torch.optim.Adam(ref.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    step = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        data = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
        for _ in range(2):
            for xb, yb in data:
                for group in opt.param_groups:  # Keras-style decay: lr / (1 + decay * t)
                    group["lr"] = t.lr / (1.0 + t.lr_decay * step)
                opt.zero_grad()
                F.cross_entropy(ref(xb), yb).backward()
                opt.step()
                step += 1
    got = shield.unwrap().state_dict()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(got[k], v, atol=1e-5, rtol=1e-4, msg=k)
    assert any(not torch.equal(v, net.state_dict()[k]) for k, v in ref.state_dict().items())


# --------------------------------------------------------------------------- full PGSL


@pytest.fixture(scope="module")
def pgsl_shield() -> SplitShield:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = PGSLNet(image_size=IMAGE, num_classes=CLASSES)
    return SplitShield(net, cut=2, seed=0)


def test_full_pgsl_wire_and_predictions(pgsl_shield: SplitShield) -> None:
    shield = pgsl_shield
    assert shield.streams == ("recovered", "fused", "attacked")
    x = torch.rand(5, *SHAPE, generator=torch.Generator().manual_seed(0))
    msg = shield.client(x)
    assert isinstance(msg, ClientMessage)
    assert tuple(msg.activations.shape) == (5, 64, IMAGE // 2, IMAGE // 2)
    assert not msg.activations.requires_grad
    assert msg.activations.grad_fn is None
    assert msg.target_size == (IMAGE, IMAGE)
    logits = shield.server(msg)
    assert tuple(logits.shape) == (5, CLASSES)
    streams = shield.predict_streams(x)
    probs = streams.as_dict()
    assert list(probs) == ["recovered", "fused", "attacked"]
    for p in probs.values():
        assert tuple(p.shape) == (5, CLASSES)
        assert (p >= 0).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(5))
    proba = shield.predict_proba(x)
    torch.testing.assert_close(proba.sum(-1), torch.ones(5))
    # eq. 9 with the shield's weights (numpy reference)
    w = shield.stream_weights.numpy()
    ref = sum(w[i] * probs[s].numpy() for i, s in enumerate(shield.streams))
    np.testing.assert_allclose(proba.numpy(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shield.stream_weights.sum(), torch.tensor(1.0))


def test_odd_image_size_is_padded() -> None:
    net = small_net(image=9)
    shield = make_shield(net, input_shape=(1, 9, 9))
    x, y = easy_data(6, image=9)
    msg = shield.client(x, y)
    assert tuple(msg.activations.shape[-2:]) == (5, 5)  # ceil(9 / 2)
    assert msg.target_size == (9, 9)
    assert tuple(shield.server(msg).shape) == (6, CLASSES)
    shield.fit(DataLoader(TensorDataset(x, y), batch_size=3), epochs=1, progress=False)
    torch.testing.assert_close(shield.predict_proba(x).sum(-1), torch.ones(6))


def test_only_the_fused_gradient_reaches_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    shield = make_shield(small_net(dropout=0.5), cut=2)
    shield.train()
    client_opt, server_opt, _ = shield.optimizers()
    x, y = easy_data(6)
    before = shield.state_dict(keep_vars=False)
    before = {k: v.clone() for k, v in before.items()}
    pre_step = copy.deepcopy(shield)

    seen: dict[str, Any] = {}
    real_server_streams = shield.server_streams

    def spy_server_streams(msg: ClientMessage) -> dict[str, torch.Tensor]:
        seen["activations"] = msg.activations.detach().clone()
        seen["target_size"] = msg.target_size
        seen["rng"] = torch.get_rng_state()
        return real_server_streams(msg)

    replies: list[torch.Tensor] = []

    class SpyGradient(ServerGradient):
        def __init__(self, grad: torch.Tensor) -> None:
            super().__init__(grad)
            replies.append(grad.detach().clone())

    monkeypatch.setattr(shield, "server_streams", spy_server_streams)
    monkeypatch.setattr(fitting_module, "ServerGradient", SpyGradient)
    torch.manual_seed(7)
    shield.train_step(x, y, client_opt, server_opt)
    assert len(replies) == 1
    reply = replies[0]

    # Reference: the fused stream's loss alone, on a leaf copy of what crossed the wire,
    # with the pre-step weights and the same dropout masks.
    leaf = seen["activations"].clone().requires_grad_(True)
    torch.set_rng_state(seen["rng"])
    out = pre_step.server_steps()(leaf, seen["target_size"])
    assert set(out) == {"recovered", "fused", "attacked"}
    (fused_grad,) = torch.autograd.grad(F.cross_entropy(out["fused"], y), leaf, retain_graph=True)
    assert fused_grad.abs().sum() > 0
    torch.testing.assert_close(reply, fused_grad, atol=1e-7, rtol=1e-5)
    # and the other streams' losses have no path back to the client
    for name in ("recovered", "attacked"):
        assert (
            not out[name].requires_grad
            or torch.autograd.grad(
                F.cross_entropy(out[name], y), leaf, retain_graph=True, allow_unused=True
            )[0]
            is None
        )

    # The client back-propagated exactly that reply: its head gradients are the VJP.
    ref_msg = pre_step.client_message(x, y, track=True)
    head_params = list(pre_step.head.parameters())
    expected = torch.autograd.grad(ref_msg.activations, head_params, grad_outputs=reply)
    for (name, p), g in zip(shield.head.named_parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-4, msg=name)

    after = shield.state_dict()
    for prefix in ("head.", "probe.", "tails.fused.", "tails.recovered.", "tails.attacked."):
        changed = [
            k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])
        ]
        assert changed, f"no {prefix} tensor changed in the step"


# --------------------------------------------------------------------------- config switches

SWITCHES = {
    "default": {},
    "perturb-off": {"perturb": {"enabled": False}},
    "saliency-and-perturb-off": {"saliency": {"enabled": False}, "perturb": {"enabled": False}},
    "unshuffle-off": {"unshuffle": {"enabled": False}},
    "concat-off": {"saliency": {"concat": False}},
    "unshuffle-and-concat-off": {"unshuffle": {"enabled": False}, "saliency": {"concat": False}},
    "fusion-off": {"fusion": {"enabled": False}},
    "decision-off": {"decision": {"enabled": False}},
    "recovery-and-fusion-off": {"recovery": {"enabled": False}, "fusion": {"enabled": False}},
    "input-x-gradient": {"saliency": {"method": "input_x_gradient"}},
    "factor-3": {"unshuffle": {"factor": 3, "pad": "zeros"}},
    "fusion-kernel-3-rows": {"fusion": {"kernel_size": 3}, "recovery": {"matrix": "rows_x_cols"}},
}


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_each_step_can_be_switched_off(switch: str) -> None:
    cfg = PGSLConfig(**SWITCHES[switch])
    shield = make_shield(config=cfg, seed=1)
    expected_streams = (
        (("recovered",) if cfg.recovery.enabled else ())
        + ("fused",)
        + (("attacked",) if cfg.fusion.enabled else ())
    )
    assert cfg.streams() == expected_streams
    assert shield.streams == expected_streams
    assert set(shield.tails) == set(expected_streams)
    assert (shield.probe is None) == (not cfg.saliency.enabled)
    assert (shield.upsample is None) == (not cfg.unshuffle.enabled)
    assert (shield.recovery is None) == (not cfg.recovery.enabled)
    assert (shield.fusion is None) == (not cfg.fusion.enabled)

    f = cfg.unshuffle.factor
    channels = f * f if cfg.unshuffle.enabled else 1
    channels += int(cfg.saliency.enabled and cfg.saliency.concat)
    assert shield.head.get_submodule("0").in_channels == channels

    history = shield.fit(loader(), epochs=1, progress=False)
    assert set(history.epochs[0].train_loss) == set(expected_streams)
    assert all(math.isfinite(v) for v in history.epochs[0].train_loss.values())

    x = easy_data(5, seed=9)[0]
    msg = shield.client(x)
    side = math.ceil(IMAGE / f) if cfg.unshuffle.enabled else IMAGE
    assert tuple(msg.activations.shape[-2:]) == (side, side)
    probs = shield.predict_streams(x).as_dict()
    assert tuple(probs) == expected_streams
    proba = shield.predict_proba(x)
    assert tuple(proba.shape) == (5, CLASSES)
    torch.testing.assert_close(proba.sum(-1), torch.ones(5))
    if cfg.decision.enabled:
        w = shield.stream_weights
        torch.testing.assert_close(w.sum(), torch.tensor(1.0))
        assert history.epochs[0].stream_weights == pytest.approx(
            dict(zip(expected_streams, w.tolist(), strict=True))
        )
        ref = sum(w[i] * probs[s] for i, s in enumerate(expected_streams))
        torch.testing.assert_close(proba, ref)
    else:
        torch.testing.assert_close(proba, probs["fused"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"saliency": {"enabled": False}},  # perturb on (default) needs saliency
        {"saliency": {"enabled": False}, "perturb": {"enabled": True}},
        {"recovery": {"enabled": False}},  # fusion on (default) needs recovery
        {"recovery": {"enabled": False}, "fusion": {"enabled": True}},
        {"recovry": {"mu": 0.3}},  # unknown top-level field
        {"recovery": {"mu": 0.3, "nu": 1}},  # unknown nested field
        {"perturb": {"clip": (1.0, 0.0)}},
        {"unshuffle": {"factor": 1}},
        {"fusion": {"kernel_size": 2}},
        {"decision": {"weights": (-1.0, 1.0, 1.0)}},
    ],
    ids=repr,
)
def test_invalid_configs_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:  # typed, naming the fix (issue 26 item 5)
        PGSLConfig(**kwargs)
    assert "Fix: " in str(info.value)


def test_config_is_frozen_and_off_is_plain() -> None:
    cfg = PGSLConfig()
    with pytest.raises(ValidationError):
        cfg.recovery.mu = 0.1  # type: ignore[misc]
    assert OFF.enabled_steps() == []
    assert OFF.streams() == ("fused",)
    assert PGSLConfig().streams() == ("recovered", "fused", "attacked")
    assert PGSLConfig(fusion={"enabled": False}).streams() == ("recovered", "fused")


# --------------------------------------------------------------------------- state


@pytest.fixture(scope="module")
def trained() -> tuple[SplitShield, PGSLNet]:
    net = small_net(seed=1)
    shield = make_shield(net, seed=3)
    shield.fit(loader(24), epochs=1, progress=False)
    return shield, net


def test_state_dict_round_trip(trained: tuple[SplitShield, PGSLNet]) -> None:
    shield, _ = trained
    fresh = make_shield(small_net(seed=5), seed=11)
    x = easy_data(6, seed=4)[0]
    assert not torch.allclose(fresh.predict_proba(x), shield.predict_proba(x))
    fresh.load_state_dict(shield.state_dict())
    assert_state_equal(state(fresh), state(shield))
    torch.testing.assert_close(fresh.predict_proba(x), shield.predict_proba(x), atol=0, rtol=0)
    for k, v in shield.predict_streams(x).as_dict().items():
        torch.testing.assert_close(fresh.predict_streams(x).as_dict()[k], v, atol=0, rtol=0)


def test_save_load_round_trip(trained: tuple[SplitShield, PGSLNet], tmp_path: Path) -> None:
    shield, _ = trained
    path = tmp_path / "shield.pt"
    shield.save(path)
    raw = torch.load(path, weights_only=True)
    assert raw["cut"] == shield.cut
    other = small_net(seed=99)  # same architecture, other weights
    other_before = state(other)
    loaded = SplitShield.load(path, other)
    assert_state_equal(state(other), other_before)  # the passed instance is not modified
    assert loaded.cut == shield.cut
    assert loaded.config == shield.config
    assert loaded.streams == shield.streams
    assert_state_equal(state(loaded), state(shield))
    x = easy_data(6, seed=4)[0]
    torch.testing.assert_close(loaded.predict_proba(x), shield.predict_proba(x), atol=0, rtol=0)


def test_load_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"format": "something else"}, path)
    with pytest.raises(ShieldSplitError, match="expected"):
        SplitShield.load(path, small_net())


def test_save_load_round_trip_with_a_named_cut(tmp_path: Path) -> None:
    net = small_net()
    try:
        shield = make_shield(net, OFF, cut="3")
    except InvalidCutError:
        return  # rejecting a name that ends mid-block would be a fix too
    path = tmp_path / "named.pt"
    shield.save(path)
    loaded = SplitShield.load(path, net)
    x = easy_data(4)[0]
    torch.testing.assert_close(loaded.predict_proba(x), shield.predict_proba(x))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"unshuffle": {"enabled": False}}, {"saliency": {"concat": False}}],
    ids=["default", "concat-only", "unshuffle-only"],
)
def test_unwrap_with_an_adapted_first_layer_raises(kwargs: dict[str, Any]) -> None:
    shield = make_shield(config=PGSLConfig(**kwargs))
    before = state(shield)
    with pytest.raises(StateError) as info:
        shield.unwrap()
    assert "expected" in str(info.value) and "received" in str(info.value)
    assert_state_equal(state(shield), before)


# --------------------------------------------------------------------------- determinism


def _fit_once(seed: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    shield = make_shield(small_net(dropout=0.5), seed=0)
    train = DataLoader(TensorDataset(*easy_data(24)), batch_size=8, shuffle=True)
    val = DataLoader(TensorDataset(*easy_data(9, seed=1)), batch_size=4)
    history = shield.fit(train, epochs=2, val_loader=val, seed=seed, progress=False)
    assert len(history.epochs) == 2
    assert history.seed == seed
    return history.without_timing(), state(shield)


def test_fit_is_reproducible() -> None:
    h1, w1 = _fit_once(seed=5)
    h2, w2 = _fit_once(seed=5)
    assert h1 == h2
    assert_state_equal(w1, w2)
    h3, w3 = _fit_once(seed=6)
    assert h3 != h1
    assert any(not torch.equal(w1[k], w3[k]) for k in w1)


# --------------------------------------------------------------------------- model untouched


@pytest.mark.parametrize("config", [PGSLConfig(), OFF], ids=["pgsl", "off"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_the_users_model_is_never_changed(config: PGSLConfig, mode: str) -> None:
    net = small_net(dropout=0.5)
    net.train(mode == "train")
    before = state(net)
    flags = {n: m.training for n, m in net.named_modules()}
    ptrs = {p.data_ptr() for p in net.parameters()}
    shield = make_shield(net, config)
    assert not ptrs & {t.data_ptr() for t in shield.state_dict().values()}
    shield.fit(loader(), epochs=1, progress=False)
    x = easy_data(4, seed=2)[0]
    shield.predict_proba(x)
    shield.predict_streams(x)
    shield.evaluate(loader())
    shield(x)
    if config == OFF:
        shield.unwrap()
    assert_state_equal(state(net), before)
    assert {n: m.training for n, m in net.named_modules()} == flags
    assert all(p.grad is None for p in net.parameters())


# --------------------------------------------------------------------------- bad input


def assert_typed(err: BaseException, kind: type[ShieldSplitError]) -> None:
    assert isinstance(err, kind)
    assert isinstance(err, ShieldSplitError)
    assert isinstance(err, ValueError)
    text = str(err)
    assert "expected" in text and "received" in text, text


@pytest.fixture(scope="module")
def guarded() -> SplitShield:
    shield = make_shield(seed=2)
    shield.fit(loader(), epochs=1, progress=False)
    return shield


def _good() -> tuple[torch.Tensor, torch.Tensor]:
    return easy_data(4, seed=8)


def _with(value: float) -> torch.Tensor:
    x = _good()[0].clone()
    x[1, 0, 2, 3] = value
    return x


BAD_IMAGES = {
    "3-d": (lambda: _good()[0][:, 0], InputShapeError),
    "5-d": (lambda: _good()[0][None], InputShapeError),
    "wrong-channels": (lambda: _good()[0].repeat(1, 3, 1, 1), InputShapeError),
    "nan": (lambda: _with(float("nan")), NonFiniteInputError),
    "inf": (lambda: _with(float("inf")), NonFiniteInputError),
    "-inf": (lambda: _with(float("-inf")), NonFiniteInputError),
    "uint8": (lambda: (_good()[0] * 255).to(torch.uint8), InputShapeError),
    "int64": (lambda: (_good()[0] * 255).long(), InputShapeError),
    "empty-batch": (lambda: _good()[0][:0], InputShapeError),
    "numpy": (lambda: _good()[0].numpy(), InputShapeError),
}


ENTRY_POINTS = {
    "predict_proba": lambda s, x, y: s.predict_proba(x),
    "predict_streams": lambda s, x, y: s.predict_streams(x),
    "client": lambda s, x, y: s.client(x, y),
    "forward": lambda s, x, y: s(x),
    "train_step": lambda s, x, y: s.train_step(x, y, *s.optimizers()[:2]),
    "evaluate": lambda s, x, y: s.evaluate([(x, y)]),
    "fit": lambda s, x, y: s.fit([(x, y)], epochs=1, progress=False),
}


#: Entry points that take labelled data read it through the data contract
#: (docs/data.md), which accepts numpy images and (N, 1) or list labels; the tensor-level
#: calls (client, train_step, predict_*) still refuse them.
CONTRACT_ACCEPTS = {("numpy", "fit"), ("numpy", "evaluate"), ("2-d", "fit"),
                    ("2-d", "evaluate"), ("list", "fit"), ("list", "evaluate")}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("bad", list(BAD_IMAGES))
def test_bad_images_raise_typed_errors(guarded: SplitShield, bad: str, entry: str) -> None:
    make, kind = BAD_IMAGES[bad]
    x, y = make(), _good()[1]
    before = state(guarded)
    training = guarded.training
    if (bad, entry) in CONTRACT_ACCEPTS:  # data as users hold it (docs/data.md)
        ENTRY_POINTS[entry](guarded, x, y)
        return
    with pytest.raises(ShieldSplitError) as info:
        ENTRY_POINTS[entry](guarded, x, y)
    assert_typed(info.value, kind)
    assert_state_equal(state(guarded), before)
    if entry != "fit":
        assert guarded.training == training


BAD_LABELS = {
    "negative": lambda y: y - 1 - y.max(),
    "too-large": lambda y: y + CLASSES,
    "equal-to-classes": lambda y: torch.full_like(y, CLASSES),
    "float": lambda y: y.float(),
    "too-short": lambda y: y[:-1],
    "too-long": lambda y: torch.cat([y, y[:1]]),
    "2-d": lambda y: y[:, None],
    "list": lambda y: y.tolist(),
}


@pytest.mark.parametrize("entry", ["client", "train_step", "evaluate", "fit"])
@pytest.mark.parametrize("bad", list(BAD_LABELS))
def test_bad_labels_raise_label_error(guarded: SplitShield, bad: str, entry: str) -> None:
    x, y = _good()
    before = state(guarded)
    if (bad, entry) in CONTRACT_ACCEPTS:  # labels as users hold them (docs/data.md)
        ENTRY_POINTS[entry](guarded, x, BAD_LABELS[bad](y))
        return
    with pytest.raises(ShieldSplitError) as info:
        ENTRY_POINTS[entry](guarded, x, BAD_LABELS[bad](y))
    assert_typed(info.value, LabelError)
    assert_state_equal(state(guarded), before)


def test_odd_size_is_not_an_error() -> None:
    """A 9x9 batch into a shield whose classifier is size-agnostic up to the cut."""
    shield = make_shield(
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, CLASSES),
        ),
        cut=1,
        input_shape=None,
    )
    x = torch.rand(3, 1, 9, 9)
    assert tuple(shield.client(x).activations.shape[-2:]) == (5, 5)
    torch.testing.assert_close(shield.predict_proba(x).sum(-1), torch.ones(3))


def test_empty_loader_raises(guarded: SplitShield) -> None:
    empty = DataLoader(TensorDataset(torch.empty(0, *SHAPE), torch.empty(0, dtype=torch.long)))
    before = state(guarded)
    for call in (
        lambda: guarded.fit(empty, epochs=1, progress=False),
        lambda: guarded.fit(loader(), epochs=1, val_loader=empty, progress=False),
        lambda: guarded.fit(iter([]), epochs=1, progress=False),  # no len(): found while iterating
        lambda: guarded.evaluate(empty),
        lambda: guarded.fit(None, epochs=1, progress=False),  # type: ignore[arg-type]
    ):
        with pytest.raises(ShieldSplitError) as info:
            call()
        assert_typed(info.value, EmptyDataError)
        assert_state_equal(state(guarded), before)


@pytest.mark.parametrize("epochs", [0, -1, 1.5, "2", None])
def test_bad_epochs(guarded: SplitShield, epochs: Any) -> None:
    before = state(guarded)
    with pytest.raises(ShieldSplitError) as info:
        guarded.fit(loader(), epochs=epochs, progress=False)
    assert_typed(info.value, ConfigError)
    assert_state_equal(state(guarded), before)


MID_EPOCH = {"nan": NonFiniteInputError, "wrong-channels": InputShapeError, "labels": LabelError}


@pytest.mark.parametrize("bad", list(MID_EPOCH))
def test_bad_batch_mid_epoch_restores_weights(guarded: SplitShield, bad: str) -> None:
    x, y = easy_data(12, seed=4)
    if bad == "nan":
        x[9, 0, 0, 0] = float("nan")  # in the third batch of 4
        data = DataLoader(TensorDataset(x, y), batch_size=4)
    elif bad == "labels":
        y = y.clone()
        y[10] = CLASSES
        data = DataLoader(TensorDataset(x, y), batch_size=4)
    else:
        data = [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:].repeat(1, 2, 1, 1), y[8:])]
    before = state(guarded)
    # sanity: the good batches alone do change the weights
    probe = copy.deepcopy(guarded)
    probe.fit([(x[:4], y[:4]), (x[4:8], y[4:8])], epochs=1, progress=False)
    assert any(not torch.equal(before[k], v) for k, v in state(probe).items())

    with pytest.raises(ShieldSplitError) as info:
        guarded.fit(data, epochs=2, progress=False)
    assert_typed(info.value, MID_EPOCH[bad])
    assert_state_equal(state(guarded), before)


def test_failed_fit_keeps_the_eval_mode() -> None:
    shield = make_shield(seed=4)
    shield.eval()
    x, y = easy_data(4)
    with pytest.raises(InputShapeError):
        shield.fit([(x, y), (x.repeat(1, 2, 1, 1), y)], epochs=1, progress=False)
    assert not shield.training


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=str)
def test_other_float_dtypes_work_or_raise_typed_errors(
    guarded: SplitShield, dtype: torch.dtype
) -> None:
    x = _good()[0].to(dtype)
    before = state(guarded)
    try:
        probs = guarded.predict_proba(x)
    except ShieldSplitError as err:
        assert_typed(err, InputShapeError)
    else:
        torch.testing.assert_close(probs.sum(-1).float(), torch.ones(len(x)), atol=1e-3, rtol=0)
    assert_state_equal(state(guarded), before)


def test_decision_weights_of_the_present_streams_must_not_all_be_zero() -> None:
    cfg_kwargs = {
        "recovery": {"enabled": False},
        "fusion": {"enabled": False},
        "decision": {"weights": (1.0, 0.0, 0.0)},
    }
    try:
        shield = make_shield(config=PGSLConfig(**cfg_kwargs))
    except (ValidationError, ShieldSplitError):
        return  # rejecting the config is a fix too
    assert torch.isfinite(shield.stream_weights).all()
    assert torch.isfinite(shield.predict_proba(_good()[0])).all()


class ThreeD(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, CLASSES, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x))).flatten(2)  # (N, classes, H*W)


class Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Linear(4, CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.a(x)).mean((2, 3))
        return self.b(h), h


@pytest.mark.parametrize(
    "make",
    [
        ThreeD,
        Pair,
        lambda: nn.Sequential(nn.ReLU()),
        lambda: nn.Sequential(nn.Flatten(), nn.Softmax(-1)),
        lambda: "a model",
        lambda: lambda x: x,
        lambda: None,
    ],
    ids=["3-d-output", "tuple-output", "relu-only", "no-compute", "string", "function", "none"],
)
@pytest.mark.parametrize("config", [PGSLConfig(), OFF], ids=["pgsl", "off"])
def test_unsupported_models(make: Any, config: PGSLConfig) -> None:
    model = make()
    before = state(model) if isinstance(model, nn.Module) else None
    with pytest.raises(ShieldSplitError) as info:
        SplitShield(model, cut=1, config=config)
    assert_typed(info.value, UnsupportedModelError)
    if before is not None:
        assert_state_equal(state(model), before)


def test_options_record_the_config_and_rebuild_the_shield() -> None:
    from shieldsplit.defenses.base import create_defense

    cfg = PGSLConfig(recovery={"mu": 0.3}, perturb={"pixel_budget": 0.01})
    shield = SplitShield(PGSLNet(width=4, hidden=8), cut=2, config=cfg)
    opts = shield.options()
    json.dumps(opts)
    rebuilt = create_defense("pgsl", PGSLNet(width=4, hidden=8), cut=2, **opts)
    assert isinstance(rebuilt, SplitShield) and rebuilt.config == cfg


@pytest.mark.parametrize("bad", [{"recovry": {"mu": 0.3}}, {"recovery": {"mu": -1}}, 3])
def test_bad_config_is_a_typed_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="config"):
        SplitShield(PGSLNet(width=4, hidden=8), cut=2, config=bad)  # type: ignore[arg-type]
