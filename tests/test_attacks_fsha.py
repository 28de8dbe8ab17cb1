"""FSHA (feature-space hijacking, Pasquini et al. CCS 2021): the malicious split server.

A tiny conv net cut after its second block, the 8x8 scikit-learn digits, seeded: after the
simulated hijack the server's decoder rebuilds the client's images clearly better than the
mean auxiliary image does, while the user's model is left untouched.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import shieldsplit as ss
from shieldsplit.attacks import AttackContext, attack_class, available_attacks, create_attack
from shieldsplit.attacks.fsha import (
    CLIENT_STEPS,
    FeatureSpaceHijacking,
    PairedBatches,
    build_encoder,
)
from shieldsplit.attacks.observe_split import observe_activations
from shieldsplit.data import load_dataset
from shieldsplit.errors import ConfigError, InputShapeError, StateError
from shieldsplit.functional.metrics import psnr
from shieldsplit.functional.stats import lineup_identified

SHAPE = (1, 8, 8)
#: small and fast: the networks of the test are a few thousand weights each
FAST: dict[str, Any] = {"client_steps": 300, "pretrain_epochs": 5, "batch_size": 32, "width": 16,
        "discriminator_width": 16, "client_lr": 3e-3}


def tiny_net() -> nn.Module:
    """Three conv blocks and a linear layer; cut 2 sends an (8, 8, 8) map."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 8 * 8, 10),
    )


@pytest.fixture(scope="module")
def digits() -> tuple[Tensor, Tensor, Tensor]:
    x = load_dataset("digits", seed=0).x_train
    return x[:600], x[:200], x[600:]  # private (the client's), victims among them, auxiliary


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return tiny_net()


def context(head: nn.Module | None, aux: Tensor | None) -> AttackContext:
    return AttackContext(image_shape=SHAPE, num_classes=10, model=head, auxiliary_images=aux,
                         seed=0)


@pytest.fixture(scope="module")
def hijacked_run(model: nn.Module, digits: tuple[Tensor, Tensor, Tensor]) -> dict:
    private, victims, aux = digits
    before = copy.deepcopy(model.state_dict())
    head = ss.split_model(model, 2).head
    head_before = copy.deepcopy(head.state_dict())
    attack = create_attack("fsha", seed=0, progress=False, **FAST)
    attack.prepare(context(head, aux))
    hijacked = attack.hijack(head, private)
    rec = attack.reconstruct(observe_activations(hijacked, victims))
    return {"attack": attack, "head": head, "hijacked": hijacked, "rec": rec,
            "before": before, "head_before": head_before}


def test_after_the_hijack_reconstructions_beat_the_mean_image(
        hijacked_run: dict, digits: tuple[Tensor, Tensor, Tensor]) -> None:
    _, victims, aux = digits
    images = hijacked_run["rec"].images
    assert images.shape == victims.shape
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    mean_image = aux.mean(0, keepdim=True).expand_as(victims)
    gain = float(psnr(images, victims).mean() - psnr(mean_image, victims).mean())
    assert gain > 2.0, gain  # dB over the mean-image baseline
    # and the reconstructions pick their victims out of a line-up far above chance
    assert float(lineup_identified(images, victims, aux).double().mean()) > 0.2
    assert hijacked_run["rec"].meta["client_steps"] == FAST["client_steps"]


def test_the_honest_client_is_not_in_the_hijacked_feature_space(
        hijacked_run: dict, digits: tuple[Tensor, Tensor, Tensor]) -> None:
    """The decoder inverts the hijacked client only: on the honest client's activations it
    does worse (what FSHA owes to the hijack, not to the decoder alone)."""
    _, victims, _ = digits
    attack = hijacked_run["attack"]
    honest = attack.reconstruct(observe_activations(hijacked_run["head"], victims)).images
    hijacked = hijacked_run["rec"].images
    assert float(psnr(hijacked, victims).mean()) > float(psnr(honest, victims).mean()) + 1.0


def test_the_users_model_and_client_part_are_unchanged(hijacked_run: dict,
                                                        model: nn.Module) -> None:
    for key, value in model.state_dict().items():
        assert torch.equal(value, hijacked_run["before"][key]), key
    for key, value in hijacked_run["head"].state_dict().items():
        assert torch.equal(value, hijacked_run["head_before"][key]), key
    hijacked = hijacked_run["hijacked"]
    assert hijacked is not hijacked_run["head"]
    changed = [k for k, v in hijacked.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, hijacked_run["head_before"][k])]
    assert changed  # the copy was trained
    assert not hijacked.training and not any(p.requires_grad for p in hijacked.parameters())


def test_the_hijack_is_seeded(digits: tuple[Tensor, Tensor, Tensor], model: nn.Module) -> None:
    private, victims, aux = digits
    head = ss.split_model(model, 1).head
    out = []
    for _ in range(2):
        attack = create_attack("fsha", seed=5, progress=False, client_steps=3,
                               pretrain_epochs=1, batch_size=16, width=4,
                               discriminator_width=4)
        attack.prepare(context(head, aux[:64]))
        hijacked = attack.hijack(head, private[:32])
        out.append(attack.reconstruct(observe_activations(hijacked, victims[:4])).images)
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)


def test_a_second_call_on_the_hijacked_client_continues_the_protocol(
        model: nn.Module, digits: tuple[Tensor, Tensor, Tensor]) -> None:
    private, victims, aux = digits
    head = ss.split_model(model, 2).head
    attack = create_attack("fsha", seed=0, progress=False, client_steps=2, pretrain_epochs=1,
                           batch_size=16, width=4, discriminator_width=4)
    attack.prepare(context(head, aux[:64]))
    first = attack.hijack(head, private)
    second = attack.hijack(first, private, steps=3)
    assert second is not first
    assert attack.reconstruct(observe_activations(second, victims[:2])).meta[
        "client_steps"] == 5
    attack.hijack(head, private, steps=1)  # another client: a new hijack
    assert attack.reconstruct(observe_activations(second, victims[:2])).meta[
        "client_steps"] == 1


def test_declarations() -> None:
    assert "fsha" in available_attacks("reconstruction")
    cls = attack_class("fsha", "reconstruction")
    assert cls is FeatureSpaceHijacking
    d = cls.declaration()
    assert (d.threat_model, d.observes, d.server, d.position) == (
        "malicious_split", "activations", "malicious", "split")
    assert d.assumes == ["auxiliary_data"]
    assert cls.quick_default is False  # slow: left out of the quick audit
    assert CLIENT_STEPS["quick"] < CLIENT_STEPS["standard"] < CLIENT_STEPS["thorough"]


def test_unknown_and_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError) as info:
        create_attack("fsha", no_such_option=1)
    assert info.value.what == "no_such_option"
    with pytest.raises(ConfigError) as info:
        create_attack("fsha", gradient_penalty=-1.0)
    assert info.value.what == "gradient_penalty"
    with pytest.raises(ConfigError):
        create_attack("fsha", client_steps=0)


def test_missing_auxiliary_data_names_the_attack_and_what_to_pass(model: nn.Module) -> None:
    head = ss.split_model(model, 2).head
    with pytest.raises(ConfigError) as info:
        create_attack("fsha", progress=False).prepare(context(head, None))
    message = str(info.value)
    assert "fsha" in message and "auxiliary data" in message
    assert "auxiliary_images=" in message


def test_order_of_calls_and_shapes_are_typed_errors(
        model: nn.Module, digits: tuple[Tensor, Tensor, Tensor]) -> None:
    private, victims, aux = digits
    head = ss.split_model(model, 2).head
    attack = create_attack("fsha", seed=0, progress=False, client_steps=2, pretrain_epochs=1,
                           batch_size=16, width=4, discriminator_width=4)
    with pytest.raises(StateError):
        attack.hijack(head, private)
    attack.prepare(context(head, aux[:64]))
    with pytest.raises(StateError):  # the honest wire: not what FSHA decodes
        attack.reconstruct(observe_activations(head, victims[:2]))
    with pytest.raises(InputShapeError):  # a client of another cut
        attack.hijack(ss.split_model(model, 3).head, private)
    with pytest.raises(InputShapeError):
        attack.hijack(head, torch.rand(8, 1, 6, 6))
    with pytest.raises(ConfigError):
        attack.hijack(head, private, steps=0)


def test_encoder_and_batches_shapes() -> None:
    flat = build_encoder(SHAPE, (12,), width=4, non_negative=True)
    with torch.no_grad():
        out = flat(torch.rand(3, *SHAPE))
    assert out.shape == (3, 12) and float(out.min()) >= 0.0
    pairs = PairedBatches(torch.rand(5, *SHAPE), torch.rand(9, *SHAPE), steps=4, batch_size=4)
    seen = [(len(a), len(b)) for a, b in pairs]
    assert seen == [(4, 4)] * 4
