"""What a federated-learning attacker observes of one client batch.

A shared mechanism below both the defences and the attacks: a defence's federated
surface (:meth:`~shieldsplit.defenses.base.Defense.observe_federated`, DP-SGD's
clipped update) and the gradient attacks that invert it use the same functions.
:mod:`shieldsplit.attacks.observe` re-exports them under their old path.

:func:`observe_gradient` is one FedSGD step: the per-parameter gradient of the
batch's mean cross-entropy loss. :func:`observe_update` is one FedAvg round:
the client runs plain SGD for ``local_epochs`` over its batch in mini-batches
of ``local_batch_size`` and sends ``weights_after - weights_before``.

Both work on a functional copy of the model (``torch.func.functional_call`` on
detached copies of its parameters), so the model passed in is never changed:
no weight moves, no ``.grad`` is written, no running statistic is updated.
The same pure functions (:func:`loss_gradients`, :func:`fedavg_update`) are
what the attacks in :mod:`shieldsplit.attacks.gradient` differentiate through,
so an attack simulates exactly the computation that produced the observation.

Observations carry no label and nothing secret in ``meta``: only the protocol
facts a federated server knows (local epochs, local batch size, learning rate).

Example:
    >>> import torch
    >>> from shieldsplit.models import SmallConvNet
    >>> net = SmallConvNet(num_classes=3, image_size=8)
    >>> x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 2])
    >>> obs = observe_gradient(net, x, y)
    >>> obs.kind, obs.batch_size, sorted(obs.gradients)[:2]
    ('gradient', 2, ['0.bias', '0.weight'])
    >>> upd = observe_update(net, x, y, local_epochs=2, local_batch_size=1, lr=0.1)
    >>> upd.kind, upd.meta["local_epochs"], upd.meta["local_batch_size"]
    ('update', 2, 1)
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, replace_all_batch_norm_modules_

from shieldsplit._core.validate import check_batch, check_int
from shieldsplit.errors import ConfigError, InputShapeError, LabelError
from shieldsplit.wire import Observation

# ------------------------------------------------------------------ pure helpers


def functional_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` that ``torch.func`` transforms can run.

    Batch-norm layers of the copy stop tracking running statistics (their
    output in the model's current mode is unchanged), so the copy can be
    vmapped and differentiated twice without in-place buffer updates.

    Args:
        model: any module.

    Returns:
        The copy (same mode as ``model``).
    """
    clone = copy.deepcopy(model)
    replace_all_batch_norm_modules_(clone)
    return clone


def trainable_parameters(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies of the parameters that require grad, by ``named_parameters`` name.

    Args:
        model: the model.

    Returns:
        ``name -> tensor`` (detached clones).
    """
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def frozen_state(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies of the buffers and of the parameters that do not require grad.

    Args:
        model: the model.

    Returns:
        ``name -> tensor`` (detached clones).
    """
    state = {n: b.detach().clone() for n, b in model.named_buffers()}
    state.update(
        {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    )
    return state


def _loss(
    model: nn.Module, params: dict[str, Tensor], frozen: dict[str, Tensor], x: Tensor, y: Tensor
) -> Tensor:
    logits = functional_call(model, {**params, **frozen}, (x,))
    return F.cross_entropy(logits, y)


def loss_gradients(
    model: nn.Module, params: dict[str, Tensor], frozen: dict[str, Tensor], x: Tensor, y: Tensor
) -> dict[str, Tensor]:
    """Gradient of the batch's mean cross-entropy loss with respect to ``params``.

    Pure (``torch.func``): differentiable in ``x`` and usable under ``vmap``.

    Args:
        model: the module whose forward is used (see :func:`functional_copy`).
        params: ``name -> tensor`` to differentiate with respect to.
        frozen: buffers and non-trainable parameters.
        x: ``(B, C, H, W)`` images.
        y: ``(B,)`` int64 labels, or ``(B, K)`` class probabilities (soft labels).

    Returns:
        ``name -> gradient``.
    """
    return grad(lambda p: _loss(model, p, frozen, x, y))(params)


def minibatch_schedule(
    batch_size: int, *, local_epochs: int, local_batch_size: int, shuffle: bool, seed: int
) -> list[Tensor]:
    """The index tensors of the mini-batches a FedAvg client visits, in order.

    Args:
        batch_size: the client's number of images.
        local_epochs: passes over the images.
        local_batch_size: images per SGD step (the last step of an epoch may be smaller).
        shuffle: reshuffle each epoch (with ``seed``) instead of keeping the order.
        seed: seeds the shuffling.

    Returns:
        One int64 index tensor per SGD step.
    """
    gen = torch.Generator().manual_seed(seed)
    steps: list[Tensor] = []
    for _ in range(local_epochs):
        order = torch.randperm(batch_size, generator=gen) if shuffle else torch.arange(batch_size)
        steps += list(order.split(local_batch_size))
    return steps


def fedavg_update(
    model: nn.Module,
    params: dict[str, Tensor],
    frozen: dict[str, Tensor],
    x: Tensor,
    y: Tensor,
    *,
    schedule: list[Tensor],
    lr: float,
) -> dict[str, Tensor]:
    """Weights after minus before of plain SGD on the mean CE loss along ``schedule``.

    Pure (``torch.func``): differentiable in ``x`` and usable under ``vmap``.

    Args:
        model: the module whose forward is used.
        params: the starting weights.
        frozen: buffers and non-trainable parameters.
        x: ``(B, C, H, W)`` images.
        y: ``(B,)`` labels or ``(B, K)`` soft labels.
        schedule: index tensors of the mini-batches, one per SGD step.
        lr: the SGD learning rate.

    Returns:
        ``name -> weight change``.
    """
    current = dict(params)
    for idx in schedule:
        g = loss_gradients(model, current, frozen, x[idx], y[idx])
        current = {n: current[n] - lr * g[n] for n in current}
    return {n: current[n] - params[n] for n in params}


# ------------------------------------------------------------------ validation


def _check_inputs(model: Any, x: Any, y: Any) -> None:
    if not isinstance(model, nn.Module):
        raise ConfigError.build(
            what="model", expected="a torch.nn.Module", received=type(model).__name__,
            fix="pass the federated model",
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError.build(
            what="model", expected="a model with trainable parameters",
            received="no parameter that requires grad", fix="pass the model being trained",
        )
    check_batch(x)
    if (
        not isinstance(y, Tensor)
        or y.dtype != torch.int64
        or y.dim() != 1
        or y.shape[0] != x.shape[0]
    ):
        received = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
        raise LabelError.build(
            what="y", expected=f"an int64 tensor of shape ({x.shape[0]},)", received=received,
            fix="pass one int64 label per image",
        )


def _check_label_range(y: Tensor, num_classes: int) -> None:
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise LabelError.build(
            what="y", expected=f"labels in [0, {num_classes - 1}]",
            received=f"labels in [{int(y.min())}, {int(y.max())}]",
            fix="pass labels the model's output layer covers",
        )


def _positive_int(name: str, value: Any) -> int:
    return check_int(name, value, low=1, fix=f"pass {name}>=1")


def functional_victim(model: nn.Module, x: Tensor,
                      y: Tensor) -> tuple[nn.Module, dict, dict, Tensor]:
    """Check a victim batch against ``model`` and set up a functional copy to train.

    The shared first step of every simulated client update (:func:`observe_gradient`,
    :func:`observe_update`, and DP-SGD's observation of its own clipped update).

    Args:
        model: the client's classifier (not modified).
        x: victim images.
        y: their labels.

    Returns:
        ``(functional copy, trainable parameters, frozen state, x on the model's device
        and dtype)``.

    Raises:
        InputShapeError: if the model cannot take ``x``.
        ConfigError: if the model does not return ``(B, classes)`` logits.
        LabelError: if a label is out of the model's range.
    """
    _check_inputs(model, x, y)
    clone = functional_copy(model)
    params, frozen = trainable_parameters(model), frozen_state(model)
    device = next(iter(params.values())).device
    x = x.detach().to(device=device, dtype=next(iter(params.values())).dtype)
    with torch.no_grad():
        try:
            logits = functional_call(clone, {**params, **frozen}, (x,))
        except RuntimeError as err:
            raise InputShapeError.build(
                what="x", expected="images the model accepts", received=tuple(x.shape),
                fix=f"pass images of the model's input shape ({err})",
            ) from err
    if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        raise ConfigError.build(
            what="model", expected="a classifier returning (B, num_classes) logits",
            received=f"output of shape {tuple(logits.shape)}", fix="pass a classifier",
        )
    _check_label_range(y, int(logits.shape[1]))
    return clone, params, frozen, x


# ------------------------------------------------------------------ public API


def observe_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Observation:
    """The gradient a FedSGD client sends for one batch.

    Args:
        model: the global model (not modified).
        x: ``(B, C, H, W)`` images.
        y: ``(B,)`` int64 labels.

    Returns:
        An :class:`Observation` of kind ``"gradient"`` whose ``gradients`` map
        each trainable parameter's ``named_parameters`` name to the gradient of
        the batch's mean cross-entropy loss. No labels, empty ``meta``.

    Raises:
        ConfigError: if ``model`` is not a classifier with trainable parameters.
        InputShapeError: if ``x`` is not a batch the model accepts.
        NonFiniteInputError: if ``x`` holds NaN or infinity.
        LabelError: if ``y`` has the wrong dtype, shape or range.
    """
    clone, params, frozen, x = functional_victim(model, x, y)
    y = y.to(x.device)
    grads = loss_gradients(clone, params, frozen, x, y)
    return Observation(
        kind="gradient",
        batch_size=int(x.shape[0]),
        image_shape=(int(x.shape[1]), int(x.shape[2]), int(x.shape[3])),
        gradients={n: g.detach() for n, g in grads.items()},
    )


def observe_update(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    local_epochs: int = 5,
    local_batch_size: int = 8,
    lr: float = 0.1,
    seed: int | None = None,
) -> Observation:
    """The weight update a FedAvg client sends after local SGD on one batch.

    The client runs plain SGD (no momentum, no weight decay) on the mean
    cross-entropy loss for ``local_epochs`` passes over its ``B`` images in
    mini-batches of ``local_batch_size``, in the given order (or reshuffled
    each epoch when ``seed`` is an int), and sends ``weights_after - weights_before``.

    Args:
        model: the global model (not modified).
        x: ``(B, C, H, W)`` images.
        y: ``(B,)`` int64 labels.
        local_epochs: passes over the batch (Jiang et al. 2025 attack: 5).
        local_batch_size: images per SGD step (Jiang et al. 2025: 8).
        lr: SGD learning rate.
        seed: None keeps the images in order every epoch; an int reshuffles them
            each epoch with a generator seeded by it. The attacker cannot know
            the permutation, so :class:`~shieldsplit.attacks.gradient.InvertingGradients`
            simulates in-order mini-batches; shuffling only changes the update
            when ``local_batch_size < B``.

    Returns:
        An :class:`Observation` of kind ``"update"``; ``meta`` holds
        ``local_epochs``, ``local_batch_size`` and ``lr`` (what the server knows).

    Raises:
        ConfigError: on a bad model or option.
        InputShapeError: if ``x`` is not a batch the model accepts.
        NonFiniteInputError: if ``x`` holds NaN or infinity.
        LabelError: if ``y`` has the wrong dtype, shape or range.
    """
    local_epochs = _positive_int("local_epochs", local_epochs)
    local_batch_size = _positive_int("local_batch_size", local_batch_size)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (
        math.isfinite(lr) and lr > 0
    ):
        raise ConfigError.build(
            what="lr", expected="a finite float > 0", received=repr(lr), fix="pass lr=0.1"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError.build(
            what="seed", expected="None or an int", received=repr(seed),
            fix="pass seed=None (in order) or seed=0 (reshuffle each epoch)",
        )
    clone, params, frozen, x = functional_victim(model, x, y)
    y = y.to(x.device)
    schedule = minibatch_schedule(
        int(x.shape[0]), local_epochs=local_epochs, local_batch_size=local_batch_size,
        shuffle=seed is not None, seed=0 if seed is None else seed,
    )
    delta = fedavg_update(clone, params, frozen, x, y, schedule=schedule, lr=float(lr))
    return Observation(
        kind="update",
        batch_size=int(x.shape[0]),
        image_shape=(int(x.shape[1]), int(x.shape[2]), int(x.shape[3])),
        update={n: d.detach() for n, d in delta.items()},
        meta={"local_epochs": local_epochs, "local_batch_size": local_batch_size,
              "lr": float(lr)},
    )


__all__ = [
    "fedavg_update",
    "frozen_state",
    "functional_copy",
    "functional_victim",
    "loss_gradients",
    "minibatch_schedule",
    "observe_gradient",
    "observe_update",
    "trainable_parameters",
]
