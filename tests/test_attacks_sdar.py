"""SDAR and UnSplit on a tiny conv net cut after two blocks, on 8x8 digits (fast, CPU).

Measured margins (seed 0, 64 test digits, 270 auxiliary images, 10 epochs; the
assertions leave room below them): the mean auxiliary image scores 11.4 dB; the existing
split-black-box decoder 18.3 dB; SDAR's residual decoder 20.9 dB (+2.6 dB over it; 20.9
dB too with the adversarial term off: on digits the term changes the images, not the
PSNR); UnSplit 38.8 dB after 200 steps, against 22.1 dB for split-white-box's search.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import shieldsplit as ss
from shieldsplit.attacks import (
    AttackContext,
    Observation,
    Reconstruction,
    attack_class,
    create_attack,
)
from shieldsplit.attacks.observe_split import observe_activations
from shieldsplit.attacks.sdar import SDAR, build_residual_decoder
from shieldsplit.attacks.unsplit import UnSplit
from shieldsplit.data import load_dataset, make_loaders
from shieldsplit.errors import ConfigError, EmptyDataError, InputShapeError, StateError
from shieldsplit.functional.metrics import psnr
from shieldsplit.training import fit_plain

torch.set_num_threads(1)

SHAPE = (1, 8, 8)
EPOCHS = 10


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def head(digits) -> nn.Module:
    """A trained two-block conv net's client part: ``(1, 8, 8) -> (16, 4, 4)``."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.Flatten(), nn.Linear(16 * 4 * 4, 10))
    fit_plain(net, make_loaders(digits, batch_size=64, seed=0).train, epochs=3, seed=0,
              progress=False)
    return ss.split_model(net, "5").head.eval()


def context(model=None, aux=None, **kw) -> AttackContext:
    return AttackContext(image_shape=SHAPE, num_classes=10, model=model, auxiliary_images=aux,
                         **kw)


def mean_psnr(images: Tensor, x: Tensor) -> float:
    return float(psnr(images, x).mean())


def run(name: str, head: nn.Module, aux: Tensor | None, x: Tensor, **options) -> Tensor:
    attack = create_attack(name, seed=0, progress=False, **options)
    attack.prepare(context(head, aux))
    return attack.reconstruct(observe_activations(head, x)).images


@pytest.fixture(scope="module")
def victims(digits) -> tuple[Tensor, Tensor, float]:
    aux, x = digits.x_val, digits.x_test[:64]
    return aux, x, mean_psnr(aux.mean(0, keepdim=True).expand_as(x), x)


def test_registered_with_their_threat_models() -> None:
    sdar, unsplit = attack_class("sdar", "reconstruction"), attack_class("unsplit")
    assert sdar is SDAR and unsplit is UnSplit
    assert (sdar.threat_model, sdar.observes, sdar.server) == (
        "split_black_box", "activations", "honest")
    assert sdar.assumes == {"auxiliary_data"}
    assert unsplit.threat_model == "split_white_box" and unsplit.assumes == {"client_weights"}
    assert sdar.position() == unsplit.position() == "split"
    # the quick audit keeps its cheaper stand-ins (split-black-box, split-white-box)
    assert not sdar.quick_default and not unsplit.quick_default


def test_sdar_beats_the_mean_image_and_the_black_box_decoder(head, victims) -> None:
    aux, x, mean_image = victims
    sdar = mean_psnr(run("sdar", head, aux, x, epochs=EPOCHS), x)
    black_box = mean_psnr(run("split-black-box", head, aux, x, epochs=EPOCHS), x)
    assert sdar > mean_image + 6.0  # measured 20.9 against 11.4 dB
    assert sdar > black_box + 1.0  # measured +2.6 dB at equal epochs


def test_sdar_uses_its_adversarial_term(head, victims) -> None:
    aux, x, _ = victims
    obs = observe_activations(head, x)
    results: dict[float, Reconstruction] = {}
    for weight in (0.0, 0.05, 0.05):
        attack = create_attack("sdar", seed=0, epochs=2, adversarial_weight=weight,
                               progress=False)
        attack.prepare(context(head, aux))
        rec = attack.reconstruct(obs)
        if weight in results:  # the same seed, the same decoder
            assert torch.equal(rec.images, results[weight].images)
        results[weight] = rec
    off, on = results[0.0], results[0.05]
    assert off.meta["adversarial_loss"] is None and off.meta["discriminator_loss"] is None
    assert on.meta["adversarial_loss"] > 0 and on.meta["discriminator_loss"] > 0
    # same initial decoder and batches: only the adversarial term differs
    assert float((on.images - off.images).abs().max()) > 1e-3


def test_unsplit_beats_the_mean_image_and_split_white_box(head, victims) -> None:
    _, x, mean_image = victims
    attack = create_attack("unsplit", seed=0, iterations=200, progress=False)
    attack.prepare(context(head))  # no auxiliary data needed
    rec = attack.reconstruct(observe_activations(head, x))
    assert rec.meta["final_loss"] < 0.1 * rec.meta["initial_loss"]
    unsplit = mean_psnr(rec.images, x)
    white_box = mean_psnr(run("split-white-box", head, None, x, iterations=200), x)
    assert unsplit > mean_image + 10.0  # measured 38.8 against 11.4 dB
    assert unsplit > white_box + 3.0  # measured +16.7 dB at equal steps


def test_same_seed_same_images_and_the_client_untouched(head, victims) -> None:
    aux, x, _ = victims
    before = copy.deepcopy(head.state_dict())
    for name, options in (("sdar", {"epochs": 1}), ("unsplit", {"iterations": 5})):
        images = [run(name, head, aux, x[:4], **options) for _ in range(2)]
        assert torch.equal(images[0], images[1])
        assert tuple(images[0].shape) == (4, *SHAPE)
        assert float(images[0].min()) >= 0 and float(images[0].max()) <= 1
    assert not head.training
    for key, value in head.state_dict().items():
        assert torch.equal(value, before[key])


def test_configs_reject_unknown_and_bad_options() -> None:
    for name in ("sdar", "unsplit"):
        with pytest.raises(ConfigError) as info:
            create_attack(name, no_such_option=1)
        assert info.value.what == "no_such_option"
        with pytest.raises(ConfigError):
            create_attack(name, lr=0.0)
    for bad in ({"adversarial_weight": -0.1}, {"loss": "l3"}, {"epochs": 0},
                {"batch_size": 1}):
        with pytest.raises(ConfigError):
            create_attack("sdar", **bad)
    for bad in ({"parametrization": "tanh"}, {"tv_weight": -1.0}, {"restarts": 0}):
        with pytest.raises(ConfigError):
            create_attack("unsplit", **bad)


def test_a_missing_capability_is_a_config_error_naming_attack_and_capability(head) -> None:
    with pytest.raises(ConfigError) as info:
        create_attack("sdar", epochs=1, progress=False).prepare(context(head))
    assert "sdar" in str(info.value) and "auxiliary_data" in str(info.value)
    with pytest.raises(ConfigError) as info:
        create_attack("unsplit").prepare(context(aux=torch.rand(32, *SHAPE)))
    assert "unsplit" in str(info.value) and "client_weights" in str(info.value)


def test_typed_errors(head, victims) -> None:
    aux, x, _ = victims
    obs = observe_activations(head, x[:2])
    for name in ("sdar", "unsplit"):
        with pytest.raises(StateError, match="prepare"):
            create_attack(name).reconstruct(obs)
    with pytest.raises(EmptyDataError, match="at least"):
        create_attack("sdar", epochs=1, progress=False).prepare(context(head, aux[:5]))
    with pytest.raises(InputShapeError):
        create_attack("sdar", epochs=1, progress=False).prepare(context(head, aux[:, :, :4]))
    sdar = create_attack("sdar", epochs=1, progress=False)
    sdar.prepare(context(head, aux))
    unsplit = create_attack("unsplit", iterations=1, progress=False)
    unsplit.prepare(context(head))
    gradient = Observation(kind="gradient", batch_size=2, image_shape=SHAPE, gradients={})
    for attack in (sdar, unsplit):
        with pytest.raises(ConfigError, match="activations"):
            attack.reconstruct(gradient)
    with pytest.raises(InputShapeError):  # another cut's activations
        sdar.reconstruct(Observation(kind="activations", activations=torch.rand(2, 8, 4, 4),
                                     batch_size=2, image_shape=SHAPE))


def test_the_decoder_fits_resnet_and_densenet_cuts() -> None:
    for act, image in [((64, 7, 7), (3, 28, 28)), ((128, 4, 4), (3, 28, 28)),
                       ((512, 3, 3), (3, 28, 28)), ((16, 4, 4), (1, 8, 8)),
                       ((8, 8, 8), (1, 8, 8)), ((40,), (1, 7, 7))]:
        decoder = build_residual_decoder(act, image, width=16).eval()
        assert tuple(decoder(torch.randn(2, *act)).shape) == (2, *image)


def test_both_attack_a_split_shield() -> None:
    """A deployed SplitShield: SDAR queries it as a black box; UnSplit inverts its client
    network with the saliency channel as a free input."""
    torch.manual_seed(0)
    net = ss.PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
    shield = ss.SplitShield(net, cut=2, seed=0)
    x, aux = torch.rand(3, *SHAPE), torch.rand(32, *SHAPE)
    wire = observe_activations(shield, x)
    ctx = AttackContext(image_shape=SHAPE, num_classes=2, model=shield, auxiliary_images=aux)
    options: dict[str, dict[str, Any]] = {"sdar": {"epochs": 1, "width": 8},
                                          "unsplit": {"iterations": 5}}
    for name in ("sdar", "unsplit"):
        attack = create_attack(name, seed=0, progress=False, **options[name])
        attack.prepare(ctx)
        assert tuple(attack.reconstruct(wire).images.shape) == (3, *SHAPE)
