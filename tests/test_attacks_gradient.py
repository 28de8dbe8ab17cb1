"""Tests of the federated-learning gradient attacks (DLG, iDLG, Inverting Gradients)
and of the observations they read (shieldsplit.attacks.observe)."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch

import shieldsplit.attacks.gradient as gradient_mod
import shieldsplit.attacks.gradient_base as gradient_base
from shieldsplit.attacks import (
    AttackContext,
    Observation,
    attack_class,
    available_attacks,
    create_attack,
)
from shieldsplit.attacks.gradient import DLG, IDLG, InvertingGradients, infer_labels_idlg
from shieldsplit.attacks.observe import observe_gradient, observe_update
from shieldsplit.errors import (
    ConfigError,
    InputShapeError,
    LabelError,
    NonFiniteInputError,
    StateError,
)
from shieldsplit.functional.metrics import psnr
from shieldsplit.models import MODELS, SmallConvNet, create_model, last_linear_name

torch.set_num_threads(1)

K = 4
SIZE = 8
SHAPE = (1, SIZE, SIZE)


@pytest.fixture()
def net() -> SmallConvNet:
    torch.manual_seed(0)
    return SmallConvNet(in_channels=1, num_classes=K, image_size=SIZE, width=6)


@pytest.fixture()
def images() -> torch.Tensor:
    """Smooth, structured 8x8 images in [0, 1] (a blob per image)."""
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    out = []
    for _ in range(4):
        cy, cx = torch.rand(2, generator=g) * (SIZE - 1)
        out.append(torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0))
    return torch.stack(out).unsqueeze(1).float()


def _context(model: torch.nn.Module) -> AttackContext:
    return AttackContext(image_shape=SHAPE, num_classes=K, model=model)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _random_baseline(x: torch.Tensor) -> float:
    g = torch.Generator().manual_seed(123)
    return float(psnr(torch.rand(x.shape, generator=g), x).mean())


# ------------------------------------------------------------------ registry and models


def test_registry_and_model_names() -> None:
    names = available_attacks()
    for name, cls in (("dlg", DLG), ("idlg", IDLG), ("inverting-gradients", InvertingGradients)):
        assert name in names
        assert cls.threat_model == "federated"
        assert isinstance(create_attack(name, progress=False), cls)
    assert "small-convnet" in MODELS
    assert isinstance(create_model("small-convnet", num_classes=3, image_size=8), SmallConvNet)


def test_one_module_per_attack_and_declared_assumptions() -> None:
    """Each gradient attack lives in (and registers from) its own module and declares
    what it is granted besides the model and the observation: iDLG and Inverting
    Gradients infer the labels (no ``labels``) and start from the auxiliary images;
    the FedAvg attack also replays the client's local steps with its hyperparameters."""
    expected = {
        "dlg": ("dlg", []),
        "idlg": ("idlg", ["auxiliary_data"]),
        "inverting-gradients": ("inverting_gradients", ["auxiliary_data"]),
        "inverting-gradients-fedavg": ("inverting_gradients_fedavg",
                                       ["auxiliary_data", "local_hyperparameters"]),
    }
    for name, (module, assumes) in expected.items():
        cls = attack_class(name)
        assert cls.__module__ == f"shieldsplit.attacks.{module}"
        assert cls.declaration().assumes == assumes
        assert getattr(gradient_mod, cls.__name__) is cls  # the old import path still works
    assert attack_class("inverting-gradients-fedavg").threat_words() == (
        "federated server, honest (auxiliary data, the local training hyperparameters)")
    assert attack_class("dlg").threat_words() == "federated server, honest"


def test_last_linear_name_skips_frozen_layers() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.ReLU(),
                              torch.nn.Linear(3, 2))
    assert last_linear_name(net) == "3"
    net[3].weight.requires_grad_(False)
    assert last_linear_name(net) == "3"
    assert last_linear_name(net, trainable=True) == "1"
    assert last_linear_name(torch.nn.Linear(2, 2)) == ""
    assert last_linear_name(torch.nn.Conv2d(1, 1, 3)) is None


def test_small_convnet_rejects_bad_options() -> None:
    with pytest.raises(ConfigError):
        SmallConvNet(image_size=0)
    with pytest.raises(ConfigError):
        SmallConvNet(activation="relu6")


# ------------------------------------------------------------------ observations


def test_observe_gradient_matches_autograd_and_leaves_model(net, images) -> None:
    before = _state(net)
    y = torch.tensor([0, 1, 2, 3])
    obs = observe_gradient(net, images, y)
    assert obs.kind == "gradient" and obs.batch_size == 4 and obs.image_shape == SHAPE
    assert obs.labels is None and obs.meta == {}
    assert set(obs.gradients) == {n for n, _ in net.named_parameters()}
    ref = torch.autograd.grad(
        torch.nn.functional.cross_entropy(net(images), y), list(net.parameters())
    )
    for (n, _), g in zip(net.named_parameters(), ref, strict=True):
        torch.testing.assert_close(obs.gradients[n], g)
    assert all(p.grad is None for p in net.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_observe_update_is_local_sgd_and_leaves_model(net, images) -> None:
    before = _state(net)
    y = torch.tensor([0, 1, 2, 3])
    obs = observe_update(net, images, y, local_epochs=2, local_batch_size=2, lr=0.5)
    assert obs.kind == "update"
    assert obs.meta == {"local_epochs": 2, "local_batch_size": 2, "lr": 0.5}
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    # reference: the same SGD with an optimizer on a copy
    import copy

    ref = copy.deepcopy(net)
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    for _ in range(2):
        for s in (slice(0, 2), slice(2, 4)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(ref(images[s]), y[s]).backward()
            opt.step()
    for (n, p0), (_, p1) in zip(net.named_parameters(), ref.named_parameters(), strict=True):
        torch.testing.assert_close(obs.update[n], p1.detach() - p0.detach())


def test_observe_rejects_bad_input(net, images) -> None:
    with pytest.raises(LabelError):
        observe_gradient(net, images, torch.tensor([0, 1, 2, 9]))
    with pytest.raises(LabelError):
        observe_gradient(net, images, torch.tensor([0.0, 1, 2, 3]))
    with pytest.raises(InputShapeError):
        observe_gradient(net, images[0], torch.tensor([0]))
    with pytest.raises(NonFiniteInputError):
        observe_gradient(net, images * float("nan"), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ConfigError):
        observe_update(net, images, torch.tensor([0, 1, 2, 3]), local_epochs=0)
    with pytest.raises(ConfigError):
        observe_update(net, images, torch.tensor([0, 1, 2, 3]), lr=-1.0)
    with pytest.raises(ConfigError):
        observe_update(net, images, torch.tensor([0, 1, 2, 3]), seed="0")


def test_observe_update_seed_reshuffles(net, images) -> None:
    y = torch.tensor([0, 1, 2, 3])
    kw = {"local_epochs": 3, "local_batch_size": 1, "lr": 0.5}
    in_order = observe_update(net, images, y, **kw).update
    shuffled = observe_update(net, images, y, seed=1, **kw).update
    again = observe_update(net, images, y, seed=1, **kw).update
    assert not torch.equal(in_order["7.weight"], shuffled["7.weight"])
    assert torch.equal(shuffled["7.weight"], again["7.weight"])


# ------------------------------------------------------------------ iDLG labels


def test_idlg_labels_hand_built() -> None:
    h = torch.tensor([0.5, 1.0, 0.2, 0.0, 3.0])
    p = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15])
    for label in range(5):
        grad = torch.outer(p - torch.eye(5)[label], h)
        assert infer_labels_idlg(grad).tolist() == [label]
    # batch of 3 with labels {1, 1, 4}: mean over the images' outer products
    h3 = torch.tensor([[1.0, 2.0], [1.5, 1.5], [2.0, 1.0]])
    p3 = torch.full((3, 5), 0.2)
    onehot = torch.eye(5)[torch.tensor([1, 1, 4])]
    grad = ((p3 - onehot).unsqueeze(2) * h3.unsqueeze(1)).mean(0)
    assert infer_labels_idlg(grad, batch_size=3).tolist() == [1, 1, 4]


def test_idlg_labels_exact_on_real_gradients(net, images) -> None:
    for label in range(K):
        for i in range(2):
            obs = observe_gradient(net, images[i : i + 1], torch.tensor([label]))
            assert infer_labels_idlg(obs.gradients["7.weight"]).tolist() == [label]


def test_idlg_label_errors() -> None:
    with pytest.raises(InputShapeError):
        infer_labels_idlg(torch.zeros(3))
    with pytest.raises(NonFiniteInputError):
        infer_labels_idlg(torch.full((3, 2), float("inf")))
    with pytest.raises(ConfigError):
        infer_labels_idlg(torch.zeros(3, 2), batch_size=0)


# ------------------------------------------------------------------ reconstructions


def test_inverting_gradients_recovers_batch1_images(net, images) -> None:
    before = _state(net)
    x, y = images[:2], torch.tensor([1, 3])
    obs = [observe_gradient(net, x[i : i + 1], y[i : i + 1]) for i in range(2)]
    attack = InvertingGradients(seed=0, iterations=100, restarts=2, progress=False)
    attack.prepare(_context(net))
    recs = attack.reconstruct_many(obs)
    rec = torch.cat([r.images for r in recs])
    assert rec.shape == x.shape and float(rec.min()) >= 0 and float(rec.max()) <= 1
    assert [int(r.labels[0]) for r in recs] == [1, 3]
    assert float(psnr(rec, x).mean()) > _random_baseline(x) + 15
    assert recs[0].meta["restarts"] == 2 and len(recs[0].meta["restart_losses"]) == 2
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_batched_equals_one_at_a_time(net, images) -> None:
    obs = [observe_gradient(net, images[i : i + 1], torch.tensor([i])) for i in range(2)]
    attack = InvertingGradients(seed=0, iterations=20, restarts=1, signed=False, lr=0.05,
                                progress=False)
    attack.prepare(_context(net))
    together = attack.reconstruct_many(obs)
    for i in range(2):
        alone = attack.reconstruct(obs[i])
        torch.testing.assert_close(together[i].images, alone.images, atol=1e-4, rtol=0)
    chunked = InvertingGradients(seed=0, iterations=20, restarts=1, signed=False, lr=0.05,
                                 max_parallel=1, progress=False)
    chunked.prepare(_context(net))
    for a, b in zip(chunked.reconstruct_many(obs), together, strict=True):
        torch.testing.assert_close(a.images, b.images, atol=1e-4, rtol=0)


def test_dlg_and_idlg_recover_an_image(net, images) -> None:
    x = images[:1]
    obs = observe_gradient(net, x, torch.tensor([2]))
    for cls in (DLG, IDLG):
        attack = cls(seed=0, iterations=40, restarts=1, progress=False)
        attack.prepare(_context(net))
        rec = attack.reconstruct(obs)
        assert rec.labels.tolist() == [2]
        assert float(psnr(rec.images, x).mean()) > _random_baseline(x) + 10, cls.name


def test_update_matching_two_local_steps(net, images) -> None:
    x, y = images[:1], torch.tensor([0])
    obs = observe_update(net, x, y, local_epochs=2, local_batch_size=1, lr=0.5)
    attack = InvertingGradients(seed=0, iterations=80, restarts=1, progress=False)
    attack.prepare(_context(net))
    rec = attack.reconstruct(obs)
    assert rec.labels.tolist() == [0]
    assert float(psnr(rec.images, x).mean()) > _random_baseline(x) + 15


def test_same_seed_same_reconstruction(net, images) -> None:
    obs = observe_gradient(net, images[:1], torch.tensor([1]))
    out = []
    for _ in range(2):
        attack = InvertingGradients(seed=3, iterations=20, restarts=2, progress=False)
        attack.prepare(_context(net))
        out.append(attack.reconstruct(obs).images)
    assert torch.equal(out[0], out[1])
    other = InvertingGradients(seed=4, iterations=20, restarts=2, progress=False)
    other.prepare(_context(net))
    assert not torch.equal(out[0], other.reconstruct(obs).images)


def test_given_labels_are_used(net, images) -> None:
    obs = observe_gradient(net, images[:2], torch.tensor([3, 0]))
    attack = InvertingGradients(seed=0, iterations=2, progress=False)
    attack.prepare(_context(net))
    rec = attack.reconstruct(dataclasses.replace(obs, labels=torch.tensor([3, 0])))
    assert rec.labels.tolist() == [3, 0] and rec.meta["labels_from"] == "given"
    assert rec.images.shape == (2, *SHAPE)


# ------------------------------------------------------------------ errors and cancelling


def test_typed_errors(net, images) -> None:
    obs = observe_gradient(net, images[:1], torch.tensor([0]))
    with pytest.raises(StateError):
        InvertingGradients(progress=False).reconstruct(obs)
    attack = InvertingGradients(iterations=2, progress=False)
    attack.prepare(AttackContext(image_shape=SHAPE, num_classes=K, model=None))
    with pytest.raises(StateError):
        attack.reconstruct(obs)
    attack.prepare(_context(net))
    act = Observation(kind="activations", batch_size=1, image_shape=SHAPE,
                      activations=torch.zeros(1, 3))
    with pytest.raises(ConfigError):
        attack.reconstruct(act)
    renamed = dict(obs.gradients)
    renamed["fc.weight"] = renamed.pop("7.weight")
    with pytest.raises(ConfigError):
        attack.reconstruct(dataclasses.replace(obs, gradients=renamed))
    wrong_shape = dict(obs.gradients)
    wrong_shape["7.weight"] = torch.zeros(2, 2)
    with pytest.raises(InputShapeError):
        attack.reconstruct(dataclasses.replace(obs, gradients=wrong_shape))
    two = observe_gradient(net, images[:2], torch.tensor([0, 1]))
    with pytest.raises(ConfigError):
        attack.reconstruct_many([obs, two])  # different batch sizes
    with pytest.raises(ConfigError):
        attack.reconstruct_many([])
    upd = observe_update(net, images[:1], torch.tensor([0]), local_epochs=1, local_batch_size=1)
    dlg = DLG(iterations=2, progress=False)
    dlg.prepare(_context(net))
    with pytest.raises(ConfigError):
        dlg.reconstruct(upd)  # DLG observes gradients only
    for bad in ({"iterations": 0}, {"restarts": -1}, {"budget": "huge"}, {"lr": 0.0},
                {"tv_weight": -1.0}, {"seed": -1}, {"max_parallel": 0}):
        with pytest.raises(ConfigError):
            InvertingGradients(**bad)
    with pytest.raises(ConfigError):
        DLG(lr=float("nan"))


def test_budget_picks_schedule(net) -> None:
    attack = InvertingGradients(progress=False)
    attack.prepare(AttackContext(image_shape=SHAPE, num_classes=K, model=net, budget="standard"))
    assert attack.schedule() == InvertingGradients.budgets["standard"]
    assert InvertingGradients(budget="quick", restarts=3).schedule() == (
        InvertingGradients.budgets["quick"][0], 3)


@pytest.mark.parametrize("cls", [InvertingGradients, DLG, IDLG])
def test_ctrl_c_propagates(net, images, monkeypatch, caplog, cls) -> None:
    @contextlib.contextmanager
    def interrupting(items, **_):
        def gen():
            for i, item in enumerate(items):
                if i == 2:
                    raise KeyboardInterrupt
                yield item

        yield gen()

    monkeypatch.setattr(gradient_base, "progress_bar", interrupting)  # every attack's loop
    before = _state(net)
    attack = cls(iterations=30, progress=False)
    attack.prepare(_context(net))
    with pytest.raises(KeyboardInterrupt):
        attack.reconstruct(observe_gradient(net, images[:1], torch.tensor([0])))
    per_tick = 1 if cls is InvertingGradients else DLG.chunk  # L-BFGS: a chunk a tick
    # the bar stopped before its third tick: the second (iteration 1 * per_tick) ran last
    assert f"{cls.name} interrupted at iteration {per_tick};" in caplog.text
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


# ------------------------------------------------------------------ trained networks


def test_linear_input_from_gradient_matches_numpy() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    h = rng.random(30)
    g = rng.normal(size=5)
    est, residual = gradient_mod.linear_input_from_gradient(
        torch.tensor(np.outer(g, h)), torch.tensor(g)
    )
    np.testing.assert_allclose(est.numpy(), np.linalg.lstsq(g[:, None], np.outer(g, h),
                                                            rcond=None)[0][0], rtol=1e-10)
    assert residual < 1e-10
    # two images: the weight gradient is a sum of two outer products, the residual says so
    h2, g2 = rng.random(30), rng.normal(size=5)
    _, mixed = gradient_mod.linear_input_from_gradient(
        torch.tensor(np.outer(g, h) + np.outer(g2, h2)), torch.tensor(g + g2)
    )
    assert mixed > 0.01
    _, none = gradient_mod.linear_input_from_gradient(torch.zeros(5, 3), torch.zeros(5))
    assert none == float("inf")
    with pytest.raises(InputShapeError):
        gradient_mod.linear_input_from_gradient(torch.zeros(5, 3), torch.zeros(4))


class _TinyReLUNet(torch.nn.Sequential):
    """A small ReLU/BatchNorm CNN for 8x8 digits (a Linear with 8*8*8 >= 64 inputs)."""

    def __init__(self) -> None:
        super().__init__(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.BatchNorm2d(8),
            torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.BatchNorm2d(8),
            torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 32), torch.nn.ReLU(),
            torch.nn.Linear(32, 10),
        )


@pytest.fixture(scope="module")
def trained_digits() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, float]:
    """A tiny ReLU/BN CNN trained for a few epochs on sklearn digits (eval mode)."""
    from shieldsplit.data import load_dataset

    ds = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    net = _TinyReLUNet()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = ds.x_train, ds.y_train.long()
    for _ in range(6):
        for idx in torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(ds.x_test).argmax(1) == ds.y_test).double().mean())
    return net, ds.x_train, ds.y_train.long(), acc


def test_quick_budget_rebuilds_batch1_images_of_a_trained_net(trained_digits) -> None:
    net, x_all, y_all, acc = trained_digits
    assert acc > 0.85  # the victim is really trained
    before = _state(net)
    x, y = x_all[:4], y_all[:4]
    aux_x, aux_y = x_all[100:], y_all[100:]
    obs = [observe_gradient(net, x[i : i + 1], y[i : i + 1]) for i in range(4)]
    attack = InvertingGradients(seed=0, budget="quick", progress=False)
    attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=10, model=net,
                                 auxiliary_images=aux_x, auxiliary_labels=aux_y))
    recs = attack.reconstruct_many(obs)
    rec = torch.cat([r.images for r in recs])
    assert [int(r.labels[0]) for r in recs if r.labels is not None] == y.tolist()  # 100%
    mean_image = aux_x.mean(0, keepdim=True).expand_as(x)
    assert float(psnr(rec, x).mean()) > float(psnr(mean_image, x).mean()) + 20
    for r in recs:
        assert r.meta["matched"] == "features of '7'"
        assert r.meta["loss"] < 0.1 * r.meta["initial_loss"]  # it converged
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("kind", ["gradient", "update"])
def test_batch4_separated_features_beat_the_mean_image(trained_digits, kind) -> None:
    """Batch 4 on a trained ReLU/BN net: the per-image features are separated from the
    first Linear's gradient (or FedAvg update) and each image is fitted to its own."""
    from shieldsplit.functional import match_order

    net, x_all, y_all, _ = trained_digits
    before = _state(net)
    x, y = x_all[4:8], y_all[4:8]
    aux_x, aux_y = x_all[100:], y_all[100:]
    obs = (observe_gradient(net, x, y) if kind == "gradient"
           else observe_update(net, x, y, local_epochs=5, local_batch_size=4, lr=1e-3))
    attack = InvertingGradients(seed=0, budget="quick", progress=False)
    attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=10, model=net,
                                 auxiliary_images=aux_x, auxiliary_labels=aux_y))
    rec = attack.reconstruct(obs)
    assert rec.meta["matched"].startswith("separated features of '7'")
    assert rec.meta["sources"] >= 3
    images = match_order(rec.images, x)
    mean_image = aux_x.mean(0, keepdim=True).expand_as(x)
    assert float(psnr(images, x).mean()) > float(psnr(mean_image, x).mean()) + 3
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_gradient_path_reports_initial_loss(net, images) -> None:
    obs = observe_gradient(net, images[:1], torch.tensor([1]))
    attack = InvertingGradients(seed=0, iterations=30, restarts=2, progress=False)
    attack.prepare(_context(net))
    rec = attack.reconstruct(obs)
    assert rec.meta["matched"] == "gradients"  # 24 features cannot pin 64 pixels down
    assert rec.meta["initial_loss"] == min(rec.meta["initial_losses"])
    assert rec.meta["loss"] < rec.meta["initial_loss"]
    idlg = IDLG(seed=0, iterations=20, progress=False)
    idlg.prepare(_context(net))
    out = idlg.reconstruct(obs)
    assert out.meta["loss"] < out.meta["initial_loss"]


def test_fedavg_attack_is_registered_for_updates(net, images) -> None:
    attack = create_attack("inverting-gradients-fedavg", seed=0, progress=False)
    assert isinstance(attack, gradient_mod.InvertingGradientsFedAvg)
    assert attack.observes == "update" and attack.threat_model == "federated"
    assert attack.schedule() == gradient_mod.InvertingGradientsFedAvg.budgets["quick"]
    attack.prepare(_context(net))
    # it still takes a batch-1 gradient: the auditor's calibration of a plain model
    calibration = attack.reconstruct(observe_gradient(net, images[:1], torch.tensor([0])))
    assert calibration.images.shape == images[:1].shape
    x, y = images[:1], torch.tensor([0])
    obs = observe_update(net, x, y, local_epochs=2, local_batch_size=1, lr=0.5)
    rec = create_attack("inverting-gradients-fedavg", seed=0, iterations=80, progress=False)
    rec.prepare(_context(net))
    out = rec.reconstruct(obs)
    assert float(psnr(out.images, x).mean()) > _random_baseline(x) + 15
    assert out.meta["loss"] < out.meta["initial_loss"]


def test_auxiliary_init_starts_at_the_class_mean(net) -> None:
    aux = torch.rand(20, *SHAPE, generator=torch.Generator().manual_seed(0))
    aux_y = torch.arange(20) % K
    attack = InvertingGradients(seed=0, progress=False)
    attack.prepare(AttackContext(image_shape=SHAPE, num_classes=K, model=net,
                                 auxiliary_images=aux, auxiliary_labels=aux_y))
    start = attack._start(torch.tensor([[2]]), 3, torch.zeros(1))
    centre = aux[aux_y == 2].mean(0)
    assert start.shape == (1, 3, 1, *SHAPE)
    assert float((start - centre.clamp(0, 1)).abs().max()) <= attack.init_noise + 1e-6
    assert not torch.equal(start[0, 0], start[0, 1])  # a fresh draw per restart
    with pytest.raises(ConfigError):
        InvertingGradients(init="zeros")
    with pytest.raises(ConfigError):
        InvertingGradients(layers="0.")


def test_quick_budget_inverts_narrow_features_of_a_large_model(net, images, monkeypatch) -> None:
    """The size rule: at the quick budget a model above ``quick_parameters`` whose
    classifier is narrower than the image is attacked through that layer's exact
    features (one backward pass per iteration); below it, or at another budget, the
    whole gradient is matched."""
    obs = observe_gradient(net, images[:1], torch.tensor([1]))
    size = sum(p.numel() for p in net.parameters())
    matched = {}
    for limit, budget in ((size - 1, "quick"), (size, "quick"), (size - 1, "standard")):
        monkeypatch.setattr(InvertingGradients, "quick_parameters", limit)
        attack = InvertingGradients(seed=0, budget=budget, iterations=5, progress=False)
        attack.prepare(_context(net))
        assert attack.oversized() == (limit < size and budget == "quick")
        matched[(limit, budget)] = attack.reconstruct(obs).meta["matched"]
    layer = next(n for n, m in net.named_modules() if isinstance(m, torch.nn.Linear))
    assert matched[(size - 1, "quick")] == f"features of {layer!r}"
    assert matched[(size, "quick")] == "gradients"
    # above quick the feature path seeds gradient matching (see the next test)
    assert matched[(size - 1, "standard")].startswith(f"features of {layer!r}")


def _psnr_best(rec: torch.Tensor, x: torch.Tensor) -> float:
    """Mean PSNR of each victim against its nearest reconstruction (batch order is free)."""
    mse = ((rec.flatten(1)[:, None] - x.flatten(1)[None]) ** 2).mean(2).min(0).values
    return float((-10 * torch.log10(mse.clamp_min(1e-10))).mean())


def test_above_quick_feature_images_seed_gradient_matching(net, images, monkeypatch) -> None:
    """Through a narrow layer of a model above ``quick_parameters``, a budget above quick
    starts gradient matching from the feature path's image of a batch-1 gradient and
    keeps whichever matches the observation better: it rebuilds far more than the
    features alone (switching the refinement off must fail this test) and never ends on
    a worse matching loss. Batches and updates keep their separated features."""
    monkeypatch.setattr(InvertingGradients, "quick_parameters",
                        sum(p.numel() for p in net.parameters()) - 1)
    x, y = images[:1], torch.tensor([1])
    scores, metas = {}, {}
    for refine in (True, False):
        # the tiny net's own step (the defaults were chosen on a trained ResNet-18)
        attack = InvertingGradients(seed=0, budget="standard", iterations=200, refine_lr=0.1,
                                    refine_tv_weight=0.0, progress=False)
        if not refine:
            monkeypatch.setattr(attack, "_refines", lambda *args: False)
        attack.prepare(_context(net))
        assert attack.path() == ("features, then gradients" if refine else "features")
        rec = attack.reconstruct(observe_gradient(net, x, y))
        scores[refine], metas[refine] = _psnr_best(rec.images, x), rec.meta
    assert metas[True]["matched"].endswith(", then gradients")
    assert metas[True]["loss"] == metas[True]["refined_loss"] < metas[True]["seed_loss"]
    assert "seed_loss" not in metas[False]
    assert scores[True] > scores[False] + 10.0, scores
    attack = InvertingGradients(seed=0, budget="standard", iterations=5, progress=False)
    attack.prepare(_context(net))
    y4 = torch.arange(K)
    for obs in (observe_gradient(net, images, y4),
                observe_update(net, images, y4, local_epochs=1, local_batch_size=2, lr=0.01)):
        assert attack.path(kind=obs.kind, batch_size=4) == "features"
        assert attack.reconstruct(obs).meta["matched"].startswith("separated features")


def test_refinement_that_does_not_match_better_keeps_the_feature_images(
    net, images, monkeypatch
) -> None:
    """A refinement whose images match the gradient worse than its seed (here its final
    loss is made worse) is discarded: the feature path's images are returned, and said so."""
    monkeypatch.setattr(InvertingGradients, "quick_parameters",
                        sum(p.numel() for p in net.parameters()) - 1)
    optimise = InvertingGradients._optimise

    def worse(self, *args, **kwargs):
        images, losses, extra = optimise(self, *args, **kwargs)
        return torch.zeros_like(images), losses + 1.0, extra

    monkeypatch.setattr(InvertingGradients, "_optimise", worse)
    obs = observe_gradient(net, images[:1], torch.tensor([1]))
    recs = {}
    for refine in (True, False):
        attack = InvertingGradients(seed=0, budget="standard", iterations=20, progress=False)
        if not refine:
            monkeypatch.setattr(attack, "_refines", lambda *args: False)
        attack.prepare(_context(net))
        recs[refine] = attack.reconstruct(obs)
    meta = recs[True].meta
    assert meta["matched"].endswith("(gradient matching did not improve it)")
    assert meta["refined_loss"] >= meta["seed_loss"]
    assert torch.equal(recs[True].images, recs[False].images)  # the feature path's own


def test_looped_map_equals_vmap(net, images, monkeypatch) -> None:
    """Above ``vmap_parameters`` the problems are mapped by a loop; it computes what the
    nested vmaps compute (unsigned steps: equal up to rounding). Every restart's loss is
    compared; the images only at one restart, since on this untrained net the restarts'
    losses nearly tie (about 2e-6 apart by 1e-7) and rounding may pick the other one."""
    obs = [observe_gradient(net, images[i : i + 1], torch.tensor([i])) for i in range(2)]
    for restarts in (1, 2):
        out = {}
        for looped in (False, True):
            monkeypatch.setattr(InvertingGradients, "vmap_parameters", 0 if looped else 10**9)
            attack = InvertingGradients(seed=0, features=False, signed=False, lr=0.01,
                                        iterations=5, restarts=restarts, progress=False)
            attack.prepare(_context(net))
            out[looped] = attack.reconstruct_many(obs)
        for a, b in zip(out[False], out[True], strict=True):
            assert a.meta["restart_losses"] == pytest.approx(b.meta["restart_losses"],
                                                             abs=1e-6)
            if restarts == 1:
                assert torch.allclose(a.images, b.images, atol=1e-5)


def test_idlg_feature_path_reads_a_wide_layer_and_beats_the_paper_form() -> None:
    """iDLG's analytic feature step (features=True) rebuilds the image through a conv
    layer; the paper's whole-gradient form stays available and reports which ran."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 3),
    )
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    obs = observe_gradient(net, x, torch.tensor([2]))
    ctx = AttackContext(image_shape=(1, 8, 8), num_classes=3, model=net)
    results = {}
    for features in (True, False):
        attack = IDLG(seed=0, features=features, iterations=60, progress=False)
        attack.prepare(ctx)
        rec = attack.reconstruct(obs)
        assert rec.labels.tolist() == [2]
        results[features] = (float(psnr(rec.images, x).mean()), rec.meta.get("matched"))
    assert results[True][1] == "features of '3'" and results[False][1] != results[True][1]
    assert results[True][0] > 35.0
    assert results[True][0] > results[False][0] + 5.0
    with pytest.raises(ConfigError, match="init"):
        IDLG(init="zeros")
