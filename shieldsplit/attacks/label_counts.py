"""Label inference on a federated update: how many images of each class a client trained on.

The honest-but-curious federated server holds the model it sent and the weight update a
client sent back (``observes = "update"``), and reads the class counts of the client's
local data off the update of the classifier's last linear layer
(:func:`~shieldsplit.models.output_layer_name`):

- a **binary** classifier, with auxiliary images: :func:`replay_label_counts` replays the
  client's local training of that layer for candidate compositions and keeps the nearest
  (it needs the local epochs and batch size, ``observation.meta``);
- otherwise: the count heuristic of
  :func:`~shieldsplit.attacks.gradient.infer_labels_idlg` on minus the weight update (an
  update is minus the learning rate times the summed gradients).

Registered as ``"label-inference"`` (``available_attacks("label_inference")``); the Flower
live audit (:class:`~shieldsplit.adapters.flower.AuditingStrategy`) runs it on every
update it receives.

Example:
    >>> from shieldsplit.attacks.base import AttackContext, create_attack
    >>> from shieldsplit.attacks.observe import observe_update
    >>> from shieldsplit.models import SmallConvNet
    >>> torch.manual_seed(0) and None
    >>> net = SmallConvNet(num_classes=10, image_size=8)
    >>> x, y = torch.rand(8, 1, 8, 8), torch.tensor([1, 1, 5, 5, 5, 7, 9, 9])
    >>> attack = create_attack("label-inference", family="label_inference")
    >>> attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=10, model=net))
    >>> found = attack.infer(observe_update(net, x, y, local_epochs=2, local_batch_size=4))
    >>> found.counts.tolist(), found.meta["method"]
    ([0, 2, 0, 0, 0, 3, 0, 1, 0, 2], 'count-heuristic')
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import ClassVar, cast

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit._core.validate import check_int
from shieldsplit.attacks.base import (
    Assumption,
    LabelInference,
    LabelInferenceAttack,
    Observation,
    register_attack,
)
from shieldsplit.attacks.gradient import infer_labels_idlg
from shieldsplit.errors import ConfigError, StateError, UnsupportedModelError
from shieldsplit.functional.label_counts import class_draws, composition_grid, labels_from_counts
from shieldsplit.models import output_layer_name


def _layer_keys(name: str) -> tuple[str, str]:
    prefix = f"{name}." if name else ""
    return f"{prefix}weight", f"{prefix}bias"


def _last_layer_inputs(model: nn.Module, last: str, x: Tensor) -> Tensor:
    """The flattened features that enter layer ``last`` of a copy of ``model`` (eval mode)
    on ``x``."""
    replica = copy.deepcopy(model).eval()
    captured: list[Tensor] = []
    hook = replica.get_submodule(last).register_forward_hook(
        lambda _m, inputs, _out: captured.append(inputs[0].detach()))
    try:
        with torch.no_grad():
            replica(x)
    finally:
        hook.remove()
    return captured[0].flatten(1)


def replay_label_counts(model: nn.Module, update: Mapping[str, Tensor], *, images: int,
                        auxiliary: tuple[Tensor, Tensor], local_epochs: int,
                        local_batch_size: int, grid: int = 33, repeats: int = 3,
                        seed: int = 0) -> Tensor:
    """A binary client's label counts, read off its update by replaying its local training.

    The honest-but-curious server knows the protocol (the project's training loop:
    Adam, ``local_epochs`` of batches of ``local_batch_size``) and holds the weights it
    sent. For each candidate count of class 0 (:func:`~shieldsplit.functional.label_counts.
    composition_grid`) it replays the client's training of the **last linear layer**
    (Adam is per parameter: that layer's steps depend on the rest of the network only
    through the features it receives, taken here at the sent weights, frozen) on
    ``images`` feature vectors of auxiliary images with that label composition
    (:func:`~shieldsplit.functional.label_counts.class_draws`), and keeps the composition
    whose update of that layer (weight and bias) is nearest (L2) to the received one.
    Adam's normalised steps destroy the gradient magnitudes the count heuristic of
    :func:`~shieldsplit.attacks.gradient.infer_labels_idlg` relies on; the replay does
    not need them. Cost: one forward pass of the auxiliary images, then ``grid x
    repeats`` trainings of one linear layer.

    Args:
        model: the federated model at the weights the server sent (not modified).
        update: parameter name -> received minus sent (must hold the last linear
            layer's ``weight`` and ``bias``).
        images: the client's training examples (its ``num-examples``).
        auxiliary: the server's labelled images (both classes).
        local_epochs: the clients' local epochs.
        local_batch_size: their batch size.
        grid: candidate compositions (at least 2; at most ``images + 1`` are distinct).
        repeats: seeded draws (image order and shuffling) averaged per candidate.
        seed: seeds the draws and the replayed shuffling.

    Returns:
        ``(images,)`` inferred labels, sorted.

    Raises:
        ConfigError: for a model that is not binary or has no last linear layer in
            ``update``, or a bad count.
        UnsupportedModelError: for a model without a trainable ``nn.Linear``.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> y = torch.tensor([0] * 30 + [1] * 10)                # the client: 30 and 10
        >>> x = (torch.rand(40, 1, 2, 2) + y.view(-1, 1, 1, 1)) / 2
        >>> trained = copy.deepcopy(net)
        >>> from shieldsplit.training import fit_plain
        >>> loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True,
        ...                     generator=torch.Generator().manual_seed(0))
        >>> _ = fit_plain(trained, loader, epochs=2, progress=False)
        >>> update = {k: v - dict(net.named_parameters())[k]
        ...           for k, v in trained.named_parameters()}
        >>> replay_label_counts(net, update, images=40, auxiliary=(x, y), local_epochs=2,
        ...                     local_batch_size=8).bincount().tolist()
        [29, 11]
    """
    from shieldsplit.training import fit_plain

    candidates = composition_grid(images, grid=grid)
    repeats = check_int("repeats", repeats, low=1, fix="pass repeats=3")
    last = output_layer_name(model)
    layer = cast(nn.Linear, model.get_submodule(last))
    keys = _layer_keys(last)
    if layer.out_features != 2 or any(k not in update for k in keys):
        raise ConfigError.build(what="model", expected="a binary classifier whose last "
                                "nn.Linear (weight and bias) is in the update",
                                received=f"{layer.out_features} classes, keys "
                                f"{sorted(update)[-2:]}",
                                fix="use infer_labels_idlg for more classes")
    ax, ay = auxiliary
    features = _last_layer_inputs(model, last, ax)
    seen = torch.cat([update[k].detach().flatten() for k in keys])
    gen = torch.Generator().manual_seed(seed)
    best: tuple[float, int] | None = None
    for zeros in candidates:
        counts = torch.tensor([zeros, images - zeros])
        labels = labels_from_counts(counts)
        moved = torch.zeros_like(seen)
        for rep in range(repeats):  # the mean replayed update over seeded draws
            picks = class_draws(ay, counts, generator=gen)
            head = copy.deepcopy(layer).train()
            start = torch.cat([head.weight.detach().flatten(), head.bias.detach().flatten()])
            loader = DataLoader(TensorDataset(features[picks], labels),
                                batch_size=local_batch_size, shuffle=True,
                                generator=torch.Generator().manual_seed(seed + rep))
            fit_plain(head, loader, epochs=local_epochs, seed=seed + rep, progress=False)
            end = torch.cat([head.weight.detach().flatten(), head.bias.detach().flatten()])
            moved += (end - start) / repeats
        dist = float(torch.linalg.vector_norm(moved - seen))
        if best is None or dist < best[0]:
            best = (dist, zeros)
    zeros = best[1] if best is not None else 0
    return labels_from_counts(torch.tensor([zeros, images - zeros]))


class LabelCountsConfig(BaseModel):
    """Options of :class:`UpdateLabelCounts`.

    Attributes:
        grid: candidate compositions the binary replay tries (at least 2).
        repeats: seeded draws averaged per candidate (at least 1).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    grid: int = Field(default=33, ge=2)
    repeats: int = Field(default=3, ge=1)


class UpdateLabelCounts(LabelInferenceAttack):
    """The class counts of a federated client's local data, read off its weight update.

    A binary classifier's counts are replayed (:func:`replay_label_counts`: the client's
    local training of the last linear layer, on auxiliary images, for each candidate
    composition); with more classes, or without auxiliary images, the count heuristic of
    :func:`~shieldsplit.attacks.gradient.infer_labels_idlg` reads them off the weight
    update. Either way the result is the batch's label multiset (sorted labels): an update
    does not reveal which image carried which label.

    Args:
        seed: seeds the replay's draws and shuffling.
        progress: unused (the attack is quick).
        grid: candidate compositions the binary replay tries.
        repeats: seeded draws averaged per candidate.

    Example:
        >>> from shieldsplit.attacks.base import AttackContext
        >>> from shieldsplit.training import fit_plain
        >>> torch.manual_seed(0) and None
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> y = torch.tensor([0] * 12 + [1] * 4)
        >>> x = (torch.rand(16, 1, 2, 2) + y.view(-1, 1, 1, 1)) / 2
        >>> client = copy.deepcopy(net)
        >>> _ = fit_plain(client, DataLoader(TensorDataset(x, y), batch_size=4),
        ...               epochs=1, progress=False)
        >>> update = {k: v - dict(net.named_parameters())[k]
        ...           for k, v in client.named_parameters()}
        >>> attack = UpdateLabelCounts(grid=5, repeats=1)  # shares 0, 1/4, ..., 1 of class 0
        >>> attack.prepare(AttackContext(image_shape=(1, 2, 2), num_classes=2, model=net,
        ...                              auxiliary_images=x, auxiliary_labels=y))
        >>> found = attack.infer(Observation(kind="update", batch_size=16, image_shape=(1, 2, 2),
        ...                     update=update, meta={"local_epochs": 1, "local_batch_size": 4}))
        >>> found.counts.tolist(), found.meta["method"]
        ([12, 4], 'replay')
    """

    name = "label-inference"
    threat_model = "federated"
    observes = "update"
    assumes: ClassVar[frozenset[Assumption]] = frozenset(
        {"local_hyperparameters", "auxiliary_data"})
    Config = LabelCountsConfig

    grid: int
    repeats: int

    def infer(self, observation: Observation) -> LabelInference:
        """Infer the client batch's label counts from its update.

        Args:
            observation: an ``"update"`` observation of ``batch_size`` images; the binary
                replay also reads ``meta["local_epochs"]`` and ``meta["local_batch_size"]``.

        Returns:
            The counts ``(classes,)`` and the sorted labels; ``meta["method"]`` says
            ``"replay"`` or ``"count-heuristic"``.

        Raises:
            StateError: before :meth:`prepare` gave a model.
            ConfigError: for an observation of another kind, or a replay without the local
                hyperparameters.
            UnsupportedModelError: for a model without a trainable last ``nn.Linear``, or
                an update without its weight.
        """
        context = self.context
        if context is None or context.model is None:
            raise StateError.build(what="attack", expected="a prepared attack with a model",
                                   received="no model",
                                   fix="call attack.prepare(AttackContext(model=...)) first")
        update = observation.update
        if observation.kind != "update" or update is None:
            raise ConfigError.build(what="observation", expected="an 'update' observation",
                                    received=observation.kind,
                                    fix="observe the client's update (observe_update)")
        model = context.model
        last = output_layer_name(model)
        weight, bias = _layer_keys(last)
        if weight not in update:
            raise UnsupportedModelError.build(
                what="update", expected=f"an entry for the last linear layer's {weight!r}",
                received=sorted(update)[-2:], fix="send the update of every trainable layer")
        classes = int(cast(nn.Linear, model.get_submodule(last)).out_features)
        ax, ay = context.auxiliary_images, context.auxiliary_labels
        if classes == 2 and bias in update and ax is not None and ay is not None:
            for key in ("local_epochs", "local_batch_size"):
                if key not in observation.meta:
                    raise ConfigError.build(
                        what="observation.meta", expected=f"a {key!r} entry",
                        received=sorted(observation.meta),
                        fix="give the clients' local epochs and batch size in meta")
            labels = replay_label_counts(
                model, update, images=observation.batch_size, auxiliary=(ax, ay),
                local_epochs=int(observation.meta["local_epochs"]),
                local_batch_size=int(observation.meta["local_batch_size"]),
                grid=self.grid, repeats=self.repeats, seed=self.seed)
            method = "replay"
        else:
            # the heuristic's defaults (uniform probabilities, the feature sum from the
            # positive row sums) are scale-free: an update of several local steps at an
            # unknown learning rate is a scaled sum of gradients
            labels = infer_labels_idlg(-update[weight], batch_size=observation.batch_size)
            method = "count-heuristic"
        return LabelInference(counts=torch.bincount(labels.cpu(), minlength=classes),
                              attack=self.name, labels=labels, meta={"method": method})


register_attack(UpdateLabelCounts.name, UpdateLabelCounts)

__all__ = ["LabelCountsConfig", "UpdateLabelCounts", "replay_label_counts"]
