"""SplitShield.export(): the defended inference path in one module, equal to predict_proba,
compiled by TorchScript, saved and loaded back."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit import PGSLConfig, PGSLNet, SplitShield
from shieldsplit.errors import ConfigError

CONFIGS = {
    "default": {},
    "input_x_gradient, 3x3 fusion": {"saliency": {"method": "input_x_gradient"},
                                     "fusion": {"kernel_size": 3}},
    "no recovery, no fusion": {"recovery": {"enabled": False}, "fusion": {"enabled": False}},
    "no fusion": {"fusion": {"enabled": False}},
    "no unshuffle, no concat": {"unshuffle": {"enabled": False},
                                "saliency": {"concat": False}},
    "no perturbation": {"perturb": {"enabled": False}},
    "fused stream only": {"decision": {"enabled": False}},
    "every step off": "off",
}


def trained_shield(config: dict | str, seed: int = 0, image: int = 9) -> SplitShield:
    """A shield trained two epochs on random data (odd size: padding and resizing run)."""
    cfg = PGSLConfig.off() if config == "off" else PGSLConfig(**config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = PGSLNet(num_classes=3, image_size=image, width=4, hidden=8)
        x = torch.rand(24, 1, image, image)
        y = torch.arange(24) % 3
    shield = SplitShield(net, cut=2, config=cfg, input_shape=(1, image, image), seed=seed)
    shield.fit(DataLoader(TensorDataset(x, y), batch_size=8), epochs=2, seed=seed,
               progress=False)
    return shield


def script(module: torch.nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated
        return torch.jit.script(module)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_export_matches_predict_proba_eager_scripted_and_reloaded(name: str) -> None:
    shield = trained_shield(CONFIGS[name])
    before = {k: v.clone() for k, v in shield.state_dict().items()}
    x = torch.rand(5, 1, 9, 9, generator=torch.Generator().manual_seed(1))
    expected = shield.predict_proba(x)
    exported = shield.export()
    torch.testing.assert_close(exported(x), expected, atol=1e-6, rtol=1e-5)
    scripted = script(exported)
    torch.testing.assert_close(scripted(x), expected, atol=1e-6, rtol=1e-5)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript I/O is deprecated
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
    torch.testing.assert_close(loaded(x), expected, atol=1e-6, rtol=1e-5)
    # the shield is untouched: same weights, and its own prediction has not moved
    for k, v in shield.state_dict().items():
        torch.testing.assert_close(v, before[k])
    torch.testing.assert_close(shield.predict_proba(x), expected)


def test_export_differs_from_a_shield_without_the_defence() -> None:
    """The export is not the plain fused path: switching the pixel attack off changes it."""
    shield = trained_shield({})
    x = torch.rand(6, 1, 9, 9, generator=torch.Generator().manual_seed(2))
    full = shield.export()(x)
    exported = shield.export()
    exported.client.perturbs = False  # same weights, no pixel attack
    assert not torch.allclose(exported(x), full, atol=1e-6)


def test_export_refuses_no_grad_and_wrong_shapes_with_clear_messages() -> None:
    exported = trained_shield({}).export()
    with torch.no_grad(), pytest.raises(RuntimeError, match="autograd on"):
        exported(torch.rand(2, 1, 9, 9))
    with pytest.raises(RuntimeError, match="shape"):
        exported(torch.rand(2, 1, 8, 8))


def test_export_needs_an_input_shape() -> None:
    shield = SplitShield(PGSLNet(num_classes=2, image_size=8, width=4, hidden=8), cut=2)
    if shield.input_shape is None:
        with pytest.raises(ConfigError, match="input_shape"):
            shield.export()
    exported = shield.export(input_shape=(1, 8, 8))
    assert exported(torch.rand(1, 1, 8, 8)).shape == (1, 2)
