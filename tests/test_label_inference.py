"""The label-inference attack on federated updates (issue 23): registered in the one attack
registry, configured by its ``Config``, and right on real client updates; its pure steps
(functional/label_counts.py) against plain references.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit.attacks.base import (
    AttackContext,
    LabelInferenceAttack,
    Observation,
    attack_class,
    available_attacks,
    create_attack,
)
from shieldsplit.attacks.label_counts import UpdateLabelCounts
from shieldsplit.attacks.observe import observe_update
from shieldsplit.errors import ConfigError, StateError, UnsupportedModelError
from shieldsplit.functional.label_counts import (
    class_draws,
    composition_grid,
    labels_from_counts,
)
from shieldsplit.models import PGSLNet, SmallConvNet, output_layer_name
from shieldsplit.training import fit_plain


# ------------------------------------------------------------------ registry and config
def test_the_label_attack_is_registered_in_its_family_with_its_declarations() -> None:
    assert "label-inference" in available_attacks("label_inference")
    assert "label-inference" not in available_attacks("reconstruction")
    cls = attack_class("label-inference", "label_inference")
    assert cls is UpdateLabelCounts and issubclass(cls, LabelInferenceAttack)
    d = cls.declaration()
    assert (d.family, d.position, d.observes, d.server) == (
        "label_inference", "federated", "update", "honest")
    assert d.threat_model == "federated"
    assert set(d.assumes) == {"local_hyperparameters", "auxiliary_data"}
    assert d.options == ["grid", "repeats"]
    with pytest.raises(ConfigError):  # not a reconstruction attack
        create_attack("label-inference", family="reconstruction")


def test_the_config_rejects_unknown_options_and_bad_values() -> None:
    assert UpdateLabelCounts.Config.model_config.get("extra") == "forbid"
    with pytest.raises(ConfigError) as info:
        create_attack("label-inference", family="label_inference", gird=33)
    assert info.value.what == "gird"
    for bad in ({"grid": 1}, {"repeats": 0}, {"grid": "33"}, {"grid": 2.5}):
        with pytest.raises(ConfigError):
            create_attack("label-inference", family="label_inference", **bad)
    attack = create_attack("label-inference", family="label_inference", grid=9, repeats=2)
    assert (attack.grid, attack.repeats) == (9, 2)


# ------------------------------------------------------------------ on real updates
def _binary_images(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Class 1 bright in the top half, class 0 at the bottom (8x8)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.rand(len(labels), 1, 8, 8, generator=g)
    x[labels == 1, :, :4] += 0.6
    x[labels == 0, :, 4:] += 0.6
    return x.clamp(0, 1)


def _client_update(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                   epochs: int) -> dict[str, torch.Tensor]:
    """What a FedAvg client that trains ``net`` with the project's loop (Adam) sends:
    weights after minus weights before."""
    client = copy.deepcopy(net)
    fit_plain(client, DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                                 generator=torch.Generator().manual_seed(7)),
              epochs=epochs, seed=7, progress=False)
    before = dict(net.named_parameters())
    return {k: (v - before[k]).detach() for k, v in client.named_parameters()}


@pytest.mark.parametrize("zeros", [8, 24])
def test_the_replay_infers_a_binary_clients_label_counts_from_its_real_update(
        zeros: int) -> None:
    torch.manual_seed(0)
    net = SmallConvNet(num_classes=2, image_size=8, width=4, activation="tanh")
    aux_y = torch.arange(32) % 2
    aux = (_binary_images(aux_y, seed=1), aux_y)
    y = (torch.arange(32) >= zeros).long()
    update = _client_update(net, _binary_images(y, seed=2), y, batch_size=8, epochs=1)
    attack = create_attack("label-inference", family="label_inference", seed=0, grid=5,
                           repeats=1)  # candidates 0, 8, 16, 24, 32 images of class 0
    attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=2, model=net,
                                 auxiliary_images=aux[0], auxiliary_labels=aux[1]))
    obs = Observation(kind="update", batch_size=32, image_shape=(1, 8, 8), update=update,
                      meta={"local_epochs": 1, "local_batch_size": 8})
    found = attack.infer(obs)
    assert found.meta["method"] == "replay" and found.attack == "label-inference"
    assert found.counts.tolist() == [zeros, 32 - zeros]
    assert found.labels is not None and found.labels.tolist() == sorted(y.tolist())


def test_the_count_heuristic_reads_a_ten_class_clients_counts_from_its_update() -> None:
    torch.manual_seed(0)
    net = SmallConvNet(num_classes=10, image_size=8)
    y = torch.tensor([1, 1, 5, 5, 5, 7, 9, 9])
    obs = observe_update(net, torch.rand(8, 1, 8, 8), y, local_epochs=2, local_batch_size=4)
    attack = create_attack("label-inference", family="label_inference")
    attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=10, model=net))
    found = attack.infer(obs)
    assert found.meta["method"] == "count-heuristic"
    assert torch.equal(found.counts, torch.bincount(y, minlength=10))


def test_bad_observations_and_models_raise_typed_errors() -> None:
    net = SmallConvNet(num_classes=2, image_size=8, width=4)
    attack = create_attack("label-inference", family="label_inference")
    obs = observe_update(net, torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]),
                         local_epochs=1, local_batch_size=4)
    with pytest.raises(StateError):  # not prepared
        attack.infer(obs)
    attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=2, model=net,
                                 auxiliary_images=torch.rand(4, 1, 8, 8),
                                 auxiliary_labels=torch.tensor([0, 1, 0, 1])))
    with pytest.raises(ConfigError):  # the replay needs the local hyperparameters
        attack.infer(Observation(kind="update", batch_size=4, image_shape=(1, 8, 8),
                                 update=obs.update))
    with pytest.raises(ConfigError):
        attack.infer(Observation(kind="activations", batch_size=4, image_shape=(1, 8, 8),
                                 activations=torch.zeros(4, 3)))
    assert obs.update is not None
    without = {k: v for k, v in obs.update.items() if not k.startswith("7.")}
    with pytest.raises(UnsupportedModelError):  # the last layer's update is missing
        attack.infer(Observation(kind="update", batch_size=4, image_shape=(1, 8, 8),
                                 update=without, meta=obs.meta))
    frozen = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).requires_grad_(False)
    attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=2, model=frozen))
    with pytest.raises(UnsupportedModelError):
        attack.infer(obs)


def test_output_layer_name_finds_the_output_layer() -> None:
    assert output_layer_name(SmallConvNet(num_classes=3, image_size=8)) == "7"
    pgsl = PGSLNet(num_classes=3, image_size=8, width=8, hidden=8)
    assert isinstance(pgsl.get_submodule(output_layer_name(pgsl)), nn.Linear)
    assert pgsl.get_submodule(output_layer_name(pgsl)).out_features == 3
    head_frozen = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    head_frozen[2].requires_grad_(False)
    assert output_layer_name(head_frozen) == "0"
    with pytest.raises(UnsupportedModelError):
        output_layer_name(nn.Sequential(nn.Conv2d(1, 1, 3)))


# ------------------------------------------------------------------ the pure steps
@given(images=st.integers(1, 300), grid=st.integers(2, 80))
@settings(max_examples=80, deadline=None)
def test_the_composition_grid_spans_every_share_once(images: int, grid: int) -> None:
    counts = composition_grid(images, grid=grid)
    assert counts == sorted(set(counts)) and counts[0] == 0 and counts[-1] == images
    assert len(counts) <= min(grid, images + 1)
    if grid >= images + 1:
        assert counts == list(range(images + 1))
    # every share k/(grid-1) is within half an image of a candidate
    shares = np.linspace(0, images, grid)
    assert np.abs(shares[:, None] - np.array(counts)[None]).min(1).max() <= 0.5 + 1e-9


@given(st.lists(st.integers(0, 6), min_size=1, max_size=6))
@settings(max_examples=60, deadline=None)
def test_labels_from_counts_matches_numpy_repeat(counts: list[int]) -> None:
    got = labels_from_counts(torch.tensor(counts))
    assert got.tolist() == np.repeat(np.arange(len(counts)), counts).tolist()


def test_class_draws_take_every_image_of_a_class_before_any_twice() -> None:
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0])
    picks = class_draws(labels, torch.tensor([9, 2]), generator=torch.Generator().manual_seed(3))
    assert labels[picks].tolist() == [0] * 9 + [1] * 2
    zeros = picks[:9].tolist()
    assert sorted(zeros[:4]) == [0, 3, 5, 6] and sorted(zeros[4:8]) == [0, 3, 5, 6]
    assert len(set(picks[9:].tolist())) == 2
    # a class with no image draws from all of them
    assert len(class_draws(labels, torch.tensor([0, 0, 3]),
                           generator=torch.Generator().manual_seed(0))) == 3
    for bad in (torch.tensor([-1, 2]), torch.tensor([0.5, 1.0])):
        with pytest.raises(ConfigError):
            labels_from_counts(bad)
    with pytest.raises(ConfigError):
        composition_grid(0, grid=3)
    with pytest.raises(ConfigError):
        composition_grid(5, grid=1)
