"""fedavg-simulation (Dimitrov et al. 2022) and its maths (shieldsplit.functional.fedavg).

Small, seeded cases on 8x8 digits: the attack must rebuild a FedAvg client's images
better than the mean auxiliary image and better than ``inverting-gradients-fedavg`` on
the same update, read the labels, keep the model untouched and reject bad input.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from shieldsplit.attacks import AttackContext, Reconstruction, attack_class, create_attack
from shieldsplit.attacks.fedavg_simulation import FedAvgSimulation
from shieldsplit.data import load_dataset
from shieldsplit.errors import ConfigError, ShieldSplitError, StateError
from shieldsplit.functional.fedavg import (
    label_counts_from_bias_update,
    match_epochs,
    order_invariant_prior,
    row_space,
    select_spanning,
    subspace_residual,
    update_distance,
)
from shieldsplit.functional.metrics import psnr
from shieldsplit.functional.stats import match_order
from shieldsplit.models import PGSLNet
from shieldsplit.observe import observe_update
from shieldsplit.wire import Observation


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    ds = load_dataset("digits", seed=0, limit=200)
    x, y = ds.x_train, ds.y_train.long()
    return x[:4], y[:4], x[4:], y[4:]


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return PGSLNet(num_classes=10, image_size=8, width=8, hidden=16).eval()


def context(net: nn.Module, aux_x: torch.Tensor, aux_y: torch.Tensor) -> AttackContext:
    return AttackContext(image_shape=(1, 8, 8), num_classes=10, model=net,
                         auxiliary_images=aux_x, auxiliary_labels=aux_y, seed=0)


def mean_psnr(name: str, obs: Observation, ctx: AttackContext, x: torch.Tensor,
              **options: Any) -> tuple[float, Reconstruction]:
    attack = create_attack(name, seed=0, progress=False, **options)
    attack.prepare(ctx)
    rec = attack.reconstruct(obs)
    return float(psnr(match_order(rec.images, x), x).mean()), rec


def test_beats_the_mean_image_and_inverting_gradients_on_the_same_update(digits) -> None:
    """Three local steps (3 epochs of one batch of 4) on a tiny PGSLNet: the simulation
    rebuilds the images; the update-as-one-gradient attack does not."""
    x, y, ax, ay = digits
    net = tiny_net()
    obs = observe_update(net, x, y, local_epochs=3, local_batch_size=4, lr=0.05)
    ctx = context(net, ax, ay)
    ours, rec = mean_psnr("fedavg-simulation", obs, ctx, x)
    theirs, _ = mean_psnr("inverting-gradients-fedavg", obs, ctx, x)
    baseline = float(psnr(ax.mean(0, keepdim=True).expand_as(x), x).mean())
    assert ours > baseline + 2.0, (ours, baseline)
    assert ours > theirs + 2.0, (ours, theirs)
    assert rec.labels is not None and sorted(rec.labels.tolist()) == sorted(y.tolist())
    assert rec.meta["labels_from"] == "bias update"
    assert rec.meta["matched"] == "the simulated update"  # untrained: no feature step
    assert rec.meta["loss"] <= rec.meta["initial_loss"]


def test_shuffled_epochs_of_several_steps_use_the_order_prior(digits) -> None:
    """Two epochs of two shuffled steps each: one candidate batch per epoch, their class
    orders found by simulation, the epochs' images paired and averaged."""
    x, y, ax, ay = digits
    net = tiny_net()
    obs = observe_update(net, x, y, local_epochs=2, local_batch_size=2, lr=0.05, seed=0)
    score, rec = mean_psnr("fedavg-simulation", obs, context(net, ax, ay), x, iterations=30)
    baseline = float(psnr(ax.mean(0, keepdim=True).expand_as(x), x).mean())
    assert score > baseline + 2.0, (score, baseline)
    assert rec.labels is not None and sorted(rec.labels.tolist()) == sorted(y.tolist())


def test_the_feature_step_runs_where_the_row_space_tells_images_apart(digits) -> None:
    """On an MLP the first layer's input is the image: its update's row space holds the
    victims and not the auxiliary images, and the feature step fits candidates to it."""
    x, y, ax, ay = digits
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    obs = observe_update(net, x, y, local_epochs=3, local_batch_size=4, lr=0.1)
    ctx = context(net, ax, ay)
    ours, rec = mean_psnr("fedavg-simulation", obs, ctx, x)
    paper, _ = mean_psnr("fedavg-simulation", obs, ctx, x, feature_weight=0.0)
    assert rec.meta["matched"].startswith("row space of '1'")
    assert rec.meta["probe_residual"] > 0.05
    assert max(rec.meta["feature_residuals"]) < 0.01
    assert ours > paper > float(psnr(ax.mean(0, keepdim=True).expand_as(x), x).mean()) + 5


def test_the_attack_never_changes_the_model(digits) -> None:
    x, y, ax, ay = digits
    net = tiny_net()
    net.train()  # a mode the attack must keep, too
    obs = observe_update(net, x, y, local_epochs=2, local_batch_size=2, lr=0.05)
    before = copy.deepcopy(net.state_dict())
    modes = [m.training for m in net.modules()]
    grads = [p.grad for p in net.parameters()]
    mean_psnr("fedavg-simulation", obs, context(net, ax, ay), x, iterations=3,
              feature_iterations=3, restarts=1)
    after = net.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)
    assert [m.training for m in net.modules()] == modes
    assert all(p.grad is None for p in net.parameters()) and all(g is None for g in grads)
    assert all(not m._forward_hooks for m in net.modules())


def test_config_rejects_unknown_and_bad_options() -> None:
    with pytest.raises(ConfigError) as info:
        create_attack("fedavg-simulation", seed=0, no_such_option=1)
    assert info.value.what == "no_such_option"
    for bad in ({"lr": -1.0}, {"restarts": 0}, {"distance": "l1"}, {"budget": "huge"}):
        with pytest.raises(ConfigError):
            create_attack("fedavg-simulation", seed=0, **bad)
    attack = FedAvgSimulation(seed=0, budget="thorough", iterations=7)
    assert attack.schedule() == (7, 8, 800)


def test_declarations_and_bad_observations(digits) -> None:
    cls = attack_class("fedavg-simulation", "reconstruction")
    assert (cls.observes, cls.position(), cls.server) == ("update", "federated", "honest")
    assert cls.assumes == frozenset({"local_hyperparameters"})
    x, y, ax, ay = digits
    net = tiny_net()
    obs = observe_update(net, x, y, local_epochs=1, local_batch_size=4, lr=0.05)
    assert obs.update is not None
    attack = create_attack("fedavg-simulation", seed=0, progress=False, iterations=2)
    with pytest.raises(StateError):
        attack.reconstruct(obs)
    attack.prepare(context(net, ax, ay))
    wrong = Observation(kind="gradient", batch_size=4, image_shape=(1, 8, 8),
                        gradients=obs.update)
    with pytest.raises(ShieldSplitError):
        attack.reconstruct(wrong)
    broken = Observation(kind="update", batch_size=4, image_shape=(1, 8, 8),
                         update={**obs.update, "0.weight": obs.update["0.weight"] * float("nan")},
                         meta=obs.meta)
    with pytest.raises(ShieldSplitError):
        attack.reconstruct(broken)
    granted = Observation(kind="update", batch_size=4, image_shape=(1, 8, 8),
                          update=obs.update, labels=y, meta=obs.meta)
    assert attack.reconstruct(granted).meta["labels_from"] == "given"


# ------------------------------------------------------------------ the maths


def test_label_counts_from_a_real_bias_update(digits) -> None:
    x, y, ax, _ = digits
    net = tiny_net()
    obs = observe_update(net, x, y, local_epochs=3, local_batch_size=2, lr=0.05)
    assert obs.update is not None
    with torch.no_grad():
        probs = net(ax).softmax(1).mean(0)
    counts = label_counts_from_bias_update(obs.update["26.bias"], lr=0.05, steps=6,
                                           batch_size=4, mean_probs=probs)
    assert counts.tolist() == torch.bincount(y, minlength=10).tolist()


def test_update_distance_is_exact_near_a_match() -> None:
    a = torch.tensor([1.0, 1e-4, 0.0])
    b = torch.tensor([1.0, 0.0, 0.0])
    assert 0 < float(update_distance(a, b)) < 1e-7  # 1 - cos rounds to 0 in float32
    assert float(update_distance(a, a)) == 0.0
    with pytest.raises(ShieldSplitError):
        update_distance(a, b[:2])


def test_order_prior_pairs_shuffled_epochs_within_a_class() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 3, 3, generator=gen)
    labels = torch.tensor([0, 0, 1, 1])
    perm = torch.tensor([1, 0, 3, 2])
    epochs = torch.stack([images, images[perm] + 0.01])
    perms = match_epochs(epochs, labels)
    assert perms[1].tolist() == perm.argsort().tolist()
    penalty, consensus = order_invariant_prior(epochs, perms)
    assert float(penalty) == pytest.approx(0.005**2, rel=1e-3)
    torch.testing.assert_close(consensus, images + 0.005)
    crossed = match_epochs(torch.stack([images, images[[2, 3, 0, 1]]]), labels)
    assert crossed[1].tolist() == [1, 0, 3, 2]  # never pairs images of different labels


def test_row_space_holds_the_victims_and_the_selection_finds_each_once() -> None:
    gen = torch.Generator().manual_seed(0)
    victims = torch.rand(3, 50, generator=gen)
    coefficients = torch.randn(3, 8, generator=gen)  # (victims, outputs)
    update = coefficients.T @ victims  # one outer product per victim
    basis = row_space(update)
    assert basis.shape == (3, 50)
    others = torch.rand(5, 50, generator=gen)
    assert float(subspace_residual(victims, basis).max()) < 1e-6
    assert float(subspace_residual(others, basis).min()) > 0.01
    pool = torch.cat([victims, victims[:1] * 2, others])  # a duplicate of victim 0
    h = pool @ basis.T / pool.norm(dim=1, keepdim=True)
    picked = select_spanning(h, update @ basis.T, 3)
    assert sorted(picked) in ([0, 1, 2], [1, 2, 3])
