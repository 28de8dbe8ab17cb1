"""Split-learning, GAN-prior and adaptive attacks on 8x8 digits (fast, CPU)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import shieldsplit as ss
from shieldsplit.attacks import AttackContext, Observation, available_attacks, create_attack
from shieldsplit.attacks.adaptive import AdaptiveSplitAttack
from shieldsplit.attacks.gan import DCGANPrior, infer_labels
from shieldsplit.attacks.observe_split import observe_activations
from shieldsplit.attacks.split import (
    BlackBoxDecoder,
    WhiteBoxInversion,
    build_decoder,
    heldout_split,
)
from shieldsplit.data import load_dataset, make_loaders
from shieldsplit.defenses.pgsl.unshuffle import unshuffle
from shieldsplit.errors import ConfigError, EmptyDataError, InputShapeError, StateError
from shieldsplit.functional.metrics import mse
from shieldsplit.training import fit_plain

torch.set_num_threads(1)

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def net(digits) -> nn.Module:
    torch.manual_seed(0)  # the same initial weights in every process (the GAN test needs it)
    model = ss.PGSLNet(num_classes=10, image_size=8, width=16, hidden=32)
    fit_plain(model, make_loaders(digits, batch_size=64, seed=0).train, epochs=3, seed=0,
              progress=False)
    return model


@pytest.fixture(scope="module")
def head(net) -> nn.Module:
    return ss.split_model(net, 2).head


@pytest.fixture(scope="module")
def shield(net, digits) -> ss.SplitShield:
    sh = ss.SplitShield(net, cut=2, seed=0)
    sh.fit(make_loaders(digits, batch_size=64, seed=0).train, epochs=1, seed=0, progress=False)
    return sh


def context(model=None, aux=None, defense=None, **kw) -> AttackContext:
    return AttackContext(image_shape=SHAPE, num_classes=10, model=model, auxiliary_images=aux,
                         defense=defense, **kw)


def baseline_mse(aux: Tensor, x: Tensor) -> float:
    return float(mse(aux.mean(0, keepdim=True).expand_as(x), x).mean())


def in_unit_range(images: Tensor, n: int) -> bool:
    return tuple(images.shape) == (n, *SHAPE) and bool(images.min() >= 0) and bool(
        images.max() <= 1)


class UnawareClient(nn.Module):
    """The shield's client part on clean, unperturbed input with an empty saliency channel:
    the activations of the same head without PGSL's perturbation and saliency map."""

    def __init__(self, shield: ss.SplitShield) -> None:
        super().__init__()
        self.shield = shield

    def forward(self, x: Tensor) -> Tensor:
        u = unshuffle(x, 2)
        return self.shield.head(torch.cat([u, torch.zeros_like(u[:, :1])], dim=1))


def test_registry_names():
    names = set(available_attacks())
    assert {"split-black-box", "split-white-box", "gan-prior", "adaptive-split"} <= names
    assert isinstance(create_attack("split-black-box"), BlackBoxDecoder)
    assert isinstance(create_attack("split-white-box"), WhiteBoxInversion)
    assert isinstance(create_attack("gan-prior"), DCGANPrior)
    assert isinstance(create_attack("adaptive-split"), AdaptiveSplitAttack)
    assert BlackBoxDecoder.threat_model == "split_black_box"
    assert WhiteBoxInversion.threat_model == "split_white_box"
    assert DCGANPrior.threat_model == "gan_prior"
    assert AdaptiveSplitAttack.threat_model == "adaptive"


def test_observe_does_not_modify_the_client(head, shield, digits):
    x = digits.x_test[:4]
    plain = copy.deepcopy(head.state_dict())
    head.train()
    obs = observe_activations(head, x, cut=2)
    assert head.training and all(torch.equal(v, plain[k]) for k, v in head.state_dict().items())
    head.eval()
    assert obs.kind == "activations" and obs.batch_size == 4 and obs.meta["cut"] == 2
    before = copy.deepcopy(shield.state_dict())
    wire = observe_activations(shield, x)
    assert all(torch.equal(v, before[k]) for k, v in shield.state_dict().items())
    assert wire.activations is not None and tuple(wire.activations.shape) == (4, 16, 4, 4)
    assert wire.meta["target_size"] == (8, 8) and wire.meta["cut"] == 2


def test_black_box_beats_mean_image(head, digits):
    aux, x = digits.x_val, digits.x_test
    attack = create_attack("split-black-box", seed=0, epochs=10, progress=False)
    attack.prepare(context(head, aux))
    rec = attack.reconstruct(observe_activations(head, x))
    assert in_unit_range(rec.images, x.shape[0])
    assert rec.attack == "split-black-box"
    assert float(mse(rec.images, x).mean()) < 0.3 * baseline_mse(aux, x)
    # convergence diagnostics: MSE on the held-out 10% of the auxiliary images
    held = rec.meta["heldout_images"]
    assert held == len(aux) // 10 and held > 0
    assert rec.meta["train_loss"] == getattr(attack, "train_losses", [None])[-1]
    assert 0 < rec.meta["heldout_loss"] < 0.5 * baseline_mse(aux, x)
    train, out = heldout_split(len(aux), 0.1, seed=0)
    assert len(out) == held and sorted(torch.cat([train, out]).tolist()) == list(range(len(aux)))
    tiny = create_attack("split-black-box", seed=0, epochs=1, progress=False)
    tiny.prepare(context(head, aux[:16]))  # 16 images: 1 held out, 15 to train on
    assert tiny.reconstruct(observe_activations(head, x[:2])).meta["heldout_images"] == 1


def test_decoder_shapes_follow_activations():
    for act, image in [((16, 4, 4), (1, 8, 8)), ((64, 14, 14), (3, 28, 28)),
                       ((40,), (1, 8, 8)), ((8, 7, 7), (1, 28, 28))]:
        dec = build_decoder(act, image).eval()
        assert tuple(dec(torch.randn(2, *act)).shape) == (2, *image)
    dec = build_decoder((16, 4, 4), (1, 7, 7), unshuffle_factor=2).eval()
    assert tuple(dec(torch.randn(2, 16, 4, 4)).shape) == (2, 1, 7, 7)


def test_white_box_lowers_activation_loss(head, digits):
    x = digits.x_test[:6]
    attack = create_attack("split-white-box", seed=0, iterations=60, restarts=2, progress=False)
    attack.prepare(context(head))
    rec = attack.reconstruct(observe_activations(head, x))
    assert in_unit_range(rec.images, 6)
    assert rec.meta["final_loss"] < 0.5 * rec.meta["initial_loss"]
    assert rec.meta["restarts"] == 2


def test_white_box_through_a_shield(shield, digits):
    x = digits.x_test[:3]
    attack = create_attack("split-white-box", seed=0, iterations=20, progress=False)
    attack.prepare(context(shield))
    rec = attack.reconstruct(observe_activations(shield, x))
    assert in_unit_range(rec.images, 3)
    assert rec.meta["final_loss"] < rec.meta["initial_loss"]


def test_gan_prior_trains_and_reconstructs(head, net, digits):
    aux, x = digits.x_val, digits.x_test[:4]
    attack = create_attack("gan-prior", seed=0, epochs=10, iterations=40, progress=False)
    attack.prepare(context(head, aux))
    assert len(attack.gan_losses) == 10
    assert in_unit_range(attack.sample(3), 3)
    rec = attack.reconstruct(observe_activations(head, x))
    assert in_unit_range(rec.images, 4)
    assert rec.meta["final_loss"] < rec.meta["initial_loss"]

    # gradient observations against the whole model (labels inferred, iDLG-style)
    model = copy.deepcopy(net).eval()
    y = digits.y_test[:2]
    grads = torch.autograd.grad(F.cross_entropy(model(digits.x_test[:2]), y),
                                list(model.parameters()))
    named = {n: g for (n, _), g in zip(model.named_parameters(), grads, strict=True)}
    grad_attack = create_attack("gan-prior", seed=0, epochs=2, iterations=3, progress=False)
    grad_attack.prepare(context(net, aux))
    obs = Observation(kind="gradient", batch_size=2, image_shape=SHAPE, gradients=named)
    rec = grad_attack.reconstruct(obs)
    assert in_unit_range(rec.images, 2) and rec.labels is not None
    assert sorted(rec.labels.tolist()) == sorted(infer_labels(named, 10, 2).tolist())
    assert set(rec.labels.tolist()) == set(y.tolist())  # one step: the last layer tells


def test_adaptive_attack_against_split_shield(shield, digits):
    """Adaptive vs a decoder trained on the same head's undefended activations.

    Finding on 8x8 digits: the adaptive decoder beats the mean image by far, and is about
    as good as (not clearly better than) a decoder that ignores the perturbation and the
    saliency channel, because the unshuffle is lossless and the default JSMA budget of 2%
    changes one pixel of 64. Both invert the wire.
    """
    aux, x = digits.x_val, digits.x_test
    wire = observe_activations(shield, x)
    adaptive = create_attack("adaptive-split", seed=0, epochs=20, progress=False)
    adaptive.prepare(context(aux=aux, defense=shield))
    rec = adaptive.reconstruct(wire)
    assert in_unit_range(rec.images, x.shape[0])
    assert rec.meta["unshuffle_factor"] == 2
    assert rec.meta["heldout_loss"] > 0 and rec.meta["heldout_images"] > 0
    unaware = create_attack("split-black-box", seed=0, epochs=20, progress=False)
    unaware.prepare(context(UnawareClient(shield), aux))
    adaptive_mse = float(mse(rec.images, x).mean())
    unaware_mse = float(mse(unaware.reconstruct(wire).images, x).mean())
    assert adaptive_mse < 0.3 * baseline_mse(aux, x)
    assert adaptive_mse < 1.1 * unaware_mse


def test_same_seed_same_result(head, shield, digits):
    aux, x = digits.x_val[:64], digits.x_test[:5]
    obs = observe_activations(head, x)
    runs = []
    for _ in range(2):
        bb = create_attack("split-black-box", seed=3, epochs=2, progress=False)
        bb.prepare(context(head, aux))
        wb = create_attack("split-white-box", seed=3, iterations=5, progress=False)
        wb.prepare(context(head))
        gan = create_attack("gan-prior", seed=3, epochs=2, iterations=3, progress=False)
        gan.prepare(context(head, aux))
        runs.append([a.reconstruct(obs).images for a in (bb, wb, gan)])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)
    other = create_attack("split-black-box", seed=4, epochs=2, progress=False)
    other.prepare(context(head, aux))
    assert not torch.equal(other.reconstruct(obs).images, runs[0][0])


def test_typed_errors(head, shield, digits):
    aux, few = digits.x_val, digits.x_val[:5]
    obs = observe_activations(head, digits.x_test[:2])
    for name, kw in [("split-black-box", {"model": head}), ("gan-prior", {"model": head}),
                     ("adaptive-split", {"defense": shield})]:
        with pytest.raises(EmptyDataError, match="at least"):
            create_attack(name, epochs=1, progress=False).prepare(context(aux=few, **kw))
        with pytest.raises(EmptyDataError):
            create_attack(name, epochs=1, progress=False).prepare(context(**kw))
    for name in ("split-black-box", "split-white-box", "gan-prior", "adaptive-split"):
        with pytest.raises(StateError, match="prepare"):
            create_attack(name).reconstruct(obs)
    bb = create_attack("split-black-box", epochs=1, progress=False)
    bb.prepare(context(head, aux))
    gradient_obs = Observation(kind="gradient", batch_size=2, image_shape=SHAPE, gradients={})
    with pytest.raises(ConfigError, match="activations"):
        bb.reconstruct(gradient_obs)
    with pytest.raises(InputShapeError):  # the shield's wire is not the plain head's shape
        bb.reconstruct(observe_activations(shield, digits.x_test[:2]))
    gan = create_attack("gan-prior", epochs=1, iterations=1, progress=False)
    gan.prepare(context(head, aux))
    with pytest.raises(ConfigError, match="activations"):
        gan.reconstruct(Observation(kind="update", batch_size=2, image_shape=SHAPE, update={}))
    for defense in (None, head):
        with pytest.raises(ConfigError, match="SplitShield"):
            create_attack("adaptive-split", epochs=1).prepare(context(head, aux, defense))
    with pytest.raises(ConfigError):
        create_attack("split-white-box").prepare(context())
    with pytest.raises(ConfigError):
        create_attack("split-black-box", epochs=0)
    with pytest.raises(InputShapeError):
        create_attack("split-black-box", epochs=1).prepare(context(head, aux[:, :, :4]))
    with pytest.raises(InputShapeError):
        observe_activations(head, torch.rand(8, 8))


def test_ctrl_c_leaves_the_attack_unprepared(head, digits, monkeypatch):
    import contextlib

    import shieldsplit.training as training_module  # the decoder trains in the one loop

    @contextlib.contextmanager
    def interrupting(items, **_):
        def gen():
            yield from list(items)[:1]
            raise KeyboardInterrupt

        yield gen()

    monkeypatch.setattr(training_module, "progress_bar", interrupting)
    attack = create_attack("split-black-box", epochs=3, progress=False)
    with pytest.raises(KeyboardInterrupt):
        attack.prepare(context(head, digits.x_val))
    with pytest.raises(StateError):
        attack.reconstruct(observe_activations(head, digits.x_test[:2]))


def test_a_capped_decoder_decodes_small_then_resizes_to_the_image() -> None:
    """``max_side`` (the quick budget on large images) stops the transposed convolutions
    at that side and resizes the decoded image, not the hidden maps."""
    full = build_decoder((4, 7, 7), (3, 224, 224), width=4)
    capped = build_decoder((4, 7, 7), (3, 224, 224), width=4, max_side=64)
    ups = [sum(isinstance(m, nn.ConvTranspose2d) for m in d) for d in (full, capped)]
    assert ups == [5, 3]
    assert tuple(capped(torch.rand(2, 4, 7, 7)).shape) == (2, 3, 224, 224)
    assert type(list(capped)[-2]).__name__ == "FitToSize"
    assert type(list(full)[-2]).__name__ == "Conv2d"
