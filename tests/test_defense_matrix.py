"""One matrix over every registered defence: the contract every Defense keeps.

Each defence is built on a tiny PGSLNet and checked for seeding (same seed, same
history and, under the same ``torch.manual_seed``, the same wire and logits),
save/load (a ``weights_only`` checkpoint that restores the same outputs), bad input
(typed errors, weights restored after a failed fit), hook clean-up after fit and
audit, no mutation of the user's model, and the shared interface. The matrix fails
when a defence is registered without a row in :data:`FAST`.

A defence that lets bad input through, or raises an untyped error, fails the matrix.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_audit import fast_attacks  # conftest's folder is on sys.path
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import shieldsplit
from shieldsplit import ClientMessage, available_defenses, create_defense
from shieldsplit.defenses.base import Defense
from shieldsplit.errors import ConfigError, ShieldSplitError
from shieldsplit.models import PGSLNet

pytestmark = pytest.mark.filterwarnings(
    "ignore:DP-SGD:UserWarning",  # the BatchNorm -> GroupNorm swap of the DP copy
)

#: Per defence: tiny options so that the whole matrix stays fast on 2 cores.
FAST: dict[str, dict[str, Any]] = {
    "none": {},
    "pgsl": {},
    "latent-fixed": {"decoder_width": 4, "std": 0.1},
    "latent-learned": {"decoder_width": 4},
    "dpsgd": {"noise_multiplier": 1.0, "max_grad_norm": 1.0},
    "nopeek": {"alpha": 0.1},
    "laplace": {"scale": 0.5},
    "bido": {"lambda_x": 0.05, "lambda_y": 0.5},
    "jsma-input": {"pixel_budget": 0.05, "recover": True, "max_iter": 5},
    "compose": {"parts": [{"name": "nopeek", "options": {"alpha": 0.1}},
                          {"name": "laplace", "options": {"scale": 0.5}}]},
}
NAMES = sorted(FAST)
CLASSES = 3
SEED = 3
N = 48


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return PGSLNet(num_classes=CLASSES, image_size=8, width=8, hidden=8)


def data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(N) % CLASSES
    x = (0.6 * torch.rand(N, 1, 8, 8, generator=g) + 0.2 * y.view(-1, 1, 1, 1)).clamp(0, 1)
    return x, y


def loader(y: Tensor | None = None) -> DataLoader:
    x, y_ok = data()
    return DataLoader(TensorDataset(x, y_ok if y is None else y), batch_size=16)


def build(name: str, model: nn.Module | None = None) -> Defense:
    return create_defense(name, tiny_net() if model is None else model, cut=2, seed=SEED,
                          **FAST[name])


def without_seconds(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value


@functools.cache
def fitted(name: str) -> tuple[Defense, Any]:
    """A defence built and fit once per session (tests must not change it)."""
    torch.manual_seed(100)  # fit must not depend on the global RNG state
    defense = build(name)
    history = defense.fit(loader(), epochs=1, seed=SEED, progress=False)
    return defense.eval(), without_seconds(history.model_dump())


def outputs(defense: Defense, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The wire and the logits under ``torch.manual_seed(k)`` (eval mode, no grad)."""
    defense.eval()
    with torch.no_grad():
        torch.manual_seed(k)
        wire = defense.client(x).activations
        torch.manual_seed(k)
        logits = defense(x)
    return wire, logits


def same_state(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


_HOOK_DICTS = (
    "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
    "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs", "_state_dict_hooks", "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
)


def hooks(module: nn.Module) -> set[tuple[str, str, Any]]:
    """Every module, parameter and global hook reachable from ``module``."""
    found = set()
    for mod_name, m in module.named_modules():
        for attr in _HOOK_DICTS:
            for key in getattr(m, attr, {}) or {}:
                found.add((mod_name, attr, key))
    for p_name, p in module.named_parameters():
        for key in getattr(p, "_backward_hooks", None) or {}:
            found.add((p_name, "tensor._backward_hooks", key))
        for attr in ("grad_sample", "_forward_counter", "_current_grad_sample"):
            if hasattr(p, attr):  # what Opacus leaves behind when it does not clean up
                found.add((p_name, attr, None))
    from torch.nn.modules import module as module_mod

    for attr in dir(module_mod):
        if attr.startswith("_global_") and attr.endswith("hooks"):
            for key in getattr(module_mod, attr) or {}:
                found.add(("<global>", attr, key))
    return found


# ---------------------------------------------------------------------- matrix
def test_every_registered_defence_is_in_the_matrix() -> None:
    assert set(FAST) == set(available_defenses()) == set(shieldsplit.available_defenses())


@pytest.mark.parametrize("name", NAMES)
def test_seeding(name: str) -> None:
    first, history = fitted(name)
    torch.manual_seed(200)  # a different global state than the first run
    second = build(name)
    again = second.fit(loader(), epochs=1, seed=SEED, progress=False)
    assert without_seconds(again.model_dump()) == history
    assert same_state(snapshot(first), snapshot(second))
    x = data()[0][:5]
    for k in (0, 7):
        wire_a, logits_a = outputs(first, x, k)
        wire_b, logits_b = outputs(second, x, k)
        torch.testing.assert_close(wire_a, wire_b, rtol=0, atol=0)
        torch.testing.assert_close(logits_a, logits_b, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name: str, tmp_path: Path) -> None:
    defense, _ = fitted(name)
    path = tmp_path / f"{name}.pt"
    defense.save(path)
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw, dict) and "state_dict" in raw
    model = tiny_net()
    state = snapshot(model)
    loaded = type(defense).load(path, model)
    assert type(loaded) is type(defense) and loaded.name == defense.name == name
    assert same_state(state, snapshot(model))  # the template instance is not modified
    assert same_state(snapshot(defense), snapshot(loaded))
    assert loaded.options() == defense.options() and loaded.cut == defense.cut
    assert loaded.privacy() == defense.privacy()
    x = data()[0][:4]
    for k in (0, 5):
        for a, b in zip(outputs(defense, x, k), outputs(loaded, x, k), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def _bad_images(case: str) -> Tensor:
    x = data()[0][:4]
    if case == "3-D":
        return x[:, 0]
    if case == "int":
        return (x * 255).to(torch.int64)
    x = x.clone()
    x[0, 0, 0, 0] = float("nan")
    return x


@pytest.mark.parametrize("call", ["client", "forward"])
@pytest.mark.parametrize("case", ["3-D", "int", "nan"])
@pytest.mark.parametrize("name", NAMES)
def test_bad_images_raise_a_typed_error(name: str, case: str, call: str) -> None:
    defense = copy.deepcopy(fitted(name)[0])
    fn = defense.client if call == "client" else defense.forward
    try:
        with torch.no_grad():
            fn(_bad_images(case))
    except ShieldSplitError:
        return
    except Exception as exc:  # an untyped error is the finding
        pytest.fail(f"{name}.{call} on {case} images raises "
                    f"{type(exc).__name__}, not a ShieldSplitError: {str(exc)[:120]}")
    pytest.fail(f"{name}.{call} accepts {case} images without an error")


@pytest.mark.parametrize("name", NAMES)
def test_fit_with_bad_labels_raises_and_restores_weights(name: str) -> None:
    defense = copy.deepcopy(fitted(name)[0])
    before = snapshot(defense)
    y = data()[1].clone()
    # only the last label is out of range: training steps happen before the bad batch
    # (DP-SGD's Poisson sampler draws it into a later batch with this seed)
    y[-1] = CLASSES
    problems = []
    try:
        defense.fit(loader(y), epochs=2, seed=SEED, progress=False)
        problems.append("fit accepts out-of-range labels")
    except ShieldSplitError:
        pass
    except Exception as exc:  # an untyped error is the finding
        problems.append(f"fit raises {type(exc).__name__}, not a ShieldSplitError")
    changed = [k for k, v in snapshot(defense).items() if not torch.equal(v, before[k])]
    if changed:
        problems.append(f"the weights changed ({len(changed)} tensors, e.g. {changed[0]})")
    if problems:
        pytest.fail(f"{name} with labels out of range: " + "; ".join(problems))


@pytest.mark.parametrize("name", NAMES)
def test_no_hooks_left_and_no_mutation(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fast_attacks(monkeypatch)
    net = tiny_net().train()
    for m in net.modules():  # BatchNorm frozen by the user inside a model in train mode
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    modes = [m.training for m in net.modules()]
    state = snapshot(net)
    types = [type(m) for m in net.modules()]
    net_hooks = hooks(net)

    def user_model_unchanged() -> None:
        assert same_state(state, snapshot(net)) and [m.training for m in net.modules()] == modes
        assert [type(m) for m in net.modules()] == types and hooks(net) == net_hooks

    defense = build(name, net)
    user_model_unchanged()
    start = hooks(defense)
    defense.fit(loader(), epochs=1, seed=SEED, progress=False)
    assert hooks(defense) <= start
    user_model_unchanged()

    trained = snapshot(defense)
    defense_modes = [m.training for m in defense.modules()]
    x, y = data()
    attack = "split-black-box" if "split" in defense.surfaces else "idlg"
    report = shieldsplit.audit(defense, data=(x, y), budget="quick", seed=0, victims=8,
                               attacks=[attack], progress=False)
    assert [r.status for r in report.results] == ["ok"], [r.error for r in report.results]
    assert hooks(defense) <= start
    assert same_state(trained, snapshot(defense))
    assert [m.training for m in defense.modules()] == defense_modes  # every submodule's mode
    user_model_unchanged()

    defense.save(tmp_path / "d.pt")
    user_model_unchanged()


@pytest.mark.parametrize("name", NAMES)
def test_interface(name: str) -> None:
    defense, _ = fitted(name)
    x = data()[0][:5]
    msg = defense.client(x)
    assert isinstance(msg, ClientMessage) and msg.batch_size == len(x)
    was = defense.training
    proba = defense.predict_proba(x)
    assert defense.training == was
    assert proba.shape == (len(x), CLASSES)
    assert bool((proba >= 0).all())
    torch.testing.assert_close(proba.sum(-1), torch.ones(len(x)), rtol=0, atol=1e-5)
    assert isinstance(defense.privacy(), dict)
    json.dumps(defense.options())
    assert defense.surfaces and defense.surfaces <= {"split", "federated"}
    assert defense.name == name and defense.num_classes == CLASSES
    knob = defense.knob  # the declared strength: its default lies in its declared range
    assert knob is None or (defense.strength == knob.option
                            and knob.contains(knob.value_of(defense.config)))


@pytest.mark.parametrize("name", NAMES)
def test_options_come_from_one_config(name: str) -> None:
    """Each defence's Config is the single source of its options: it forbids unknown
    fields, validates what options() records, and a bad value is a typed error naming
    the option."""
    from shieldsplit.defenses.base import defense_config, defense_options

    config = defense_config(name)
    assert config.model_config.get("extra") == "forbid"
    defense = create_defense(name, tiny_net(), cut=2, seed=0, **FAST[name])
    recorded = defense.options()
    config_keys = set(config.model_fields)
    if name == "pgsl":
        config.model_validate(recorded["config"])
    else:
        assert set(recorded) <= config_keys, (recorded, config_keys)
        config.model_validate({k: v for k, v in recorded.items() if k in config_keys})
    with pytest.raises(ConfigError) as info:
        defense_options(name, {"no_such_option": 1})
    assert info.value.what == "no_such_option"
    numbers = [f for f, i in config.model_fields.items() if i.annotation is float]
    if numbers:
        with pytest.raises(ConfigError) as info:
            create_defense(name, tiny_net(), cut=2, **{numbers[0]: "high"})
        assert info.value.what == numbers[0]


def test_unknown_defence_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        create_defense("no-such", tiny_net())
    assert all(name in str(info.value) for name in available_defenses())


@settings(max_examples=10, deadline=None)
@given(name=st.sampled_from(NAMES), n=st.integers(1, 6))
def test_client_and_logit_shapes_follow_the_batch(name: str, n: int) -> None:
    defense, _ = fitted(name)
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(n))
    wire, logits = outputs(defense, x, 0)
    assert wire.shape[0] == n and logits.shape == (n, CLASSES)
    assert bool(torch.isfinite(logits).all())
