"""The maths of attacks on FedAvg weight updates, as pure functions (no state, no I/O).

What a simulation attack on a FedAvg update (Dimitrov, Balunovic, Konstantinov, Vechev,
"Data Leakage in Federated Averaging", TMLR 2022) needs besides the simulation itself:

- :func:`update_distance`: how far a simulated update is from the observed one;
- :func:`label_counts_from_bias_update`: how many images of each class the client held,
  read from the update of the last layer's bias (every local step moves it by the
  batch's mean ``softmax - onehot``);
- :func:`match_epochs` and :func:`order_invariant_prior`: the epoch order-invariant
  prior. The client visits the same images in every local epoch, in an order the server
  does not know, so the images rebuilt for each epoch must be the same set: each epoch's
  images are paired with the others' (Hungarian algorithm, within a class) and pulled to
  their mean;
- :func:`row_space`, :func:`subspace_residual` and :func:`select_spanning`: the update of
  a linear layer ``W`` is a sum of one outer product ``g h^T`` per image and local step,
  so every image's input ``h`` to that layer at the sent weights lies in the row space of
  the update. How far a candidate image's input is from that space, and which few
  candidates together explain most of the update, are what
  :class:`~shieldsplit.attacks.fedavg_simulation.FedAvgSimulation` uses to find the
  images before it simulates.

Example:
    >>> import torch
    >>> h = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])   # two images' features
    >>> update = torch.outer(torch.tensor([0.5, -1.0]), h[0]) + torch.outer(
    ...     torch.tensor([2.0, 1.0]), h[1])
    >>> basis = row_space(update)
    >>> subspace_residual(torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]]), basis)
    tensor([0., 1.])
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from shieldsplit.errors import ConfigError, InputShapeError

Distance = Literal["cosine", "l2"]


def update_distance(simulated: Tensor, observed: Tensor, *, kind: Distance = "cosine") -> Tensor:
    """How far a simulated update is from the observed one (differentiable).

    Args:
        simulated: the flattened simulated update ``(P,)``.
        observed: the flattened observed update ``(P,)``.
        kind: ``"cosine"``: one minus the cosine similarity (in ``[0, 2]``, blind to the
            scale, as Inverting Gradients); ``"l2"``: the squared distance relative to the
            observed update's squared norm (0 for an exact match, 1 for a zero update).

    Returns:
        A scalar tensor.

    Raises:
        InputShapeError: if the shapes differ.
        ConfigError: on an unknown ``kind``.

    Example:
        >>> a = torch.tensor([1.0, 0.0])
        >>> float(update_distance(2 * a, a)), float(update_distance(2 * a, a, kind="l2"))
        (0.0, 1.0)
    """
    if simulated.shape != observed.shape:
        raise InputShapeError.build(
            what="simulated", expected=f"the observed update's shape {tuple(observed.shape)}",
            received=tuple(simulated.shape), fix="flatten both updates over the same names")
    if kind == "cosine":  # 1 - cos as half the squared distance of the unit vectors: exact
        # near a match, where 1 - cos in float32 rounds to 0 below about 1e-7
        a = simulated / simulated.norm().clamp_min(1e-30)
        b = observed / observed.norm().clamp_min(1e-30)
        return 0.5 * (a - b).pow(2).sum()
    if kind == "l2":
        return (simulated - observed).pow(2).sum() / observed.pow(2).sum().clamp_min(1e-30)
    raise ConfigError.build(what="kind", expected="'cosine' or 'l2'", received=repr(kind),
                            fix="pass kind='cosine'")


def label_counts_from_bias_update(
    bias_update: Tensor, *, lr: float, steps: int, batch_size: int, mean_probs: Tensor
) -> Tensor:
    """How many images of each class a FedAvg client held, from its last bias's update.

    Each local SGD step moves the bias of the last layer by ``-lr`` times the step's mean
    of ``softmax - onehot(label)``. Summed over ``steps`` steps that visit every one of
    the ``B`` images equally often (in batches of equal size), the update is
    ``-lr * steps / B * (B * p - n)``, with ``p`` the mean softmax output over the visits
    and ``n`` the class counts (the bias-based count of Geng et al. 2021, "Towards
    General Deep Leakage in Federated Learning"). So
    ``n = B * p + bias_update * B / (lr * steps)``, rounded to non-negative integers that
    sum to ``B`` (largest remainders). Exact when ``p`` is; ``p`` moves during local
    training, so an attacker estimates it from the model's mean output on images it holds.

    Args:
        bias_update: ``(K,)`` weights after minus before of the last layer's bias.
        lr: the client's SGD learning rate.
        steps: local SGD steps.
        batch_size: the client's number of images ``B``.
        mean_probs: ``(K,)`` estimate of the mean softmax output.

    Returns:
        ``(K,)`` int64 counts summing to ``batch_size``.

    Raises:
        InputShapeError: if the shapes do not fit.
        ConfigError: if a number is out of range.

    Example:
        >>> p = torch.tensor([0.5, 0.5])
        >>> n = torch.tensor([3.0, 1.0])
        >>> update = -0.1 * 2 / 4 * (4 * p - n)          # 2 steps of lr 0.1, B = 4
        >>> label_counts_from_bias_update(update, lr=0.1, steps=2, batch_size=4,
        ...                               mean_probs=p).tolist()
        [3, 1]
    """
    if bias_update.dim() != 1 or mean_probs.shape != bias_update.shape:
        raise InputShapeError.build(
            what="bias_update, mean_probs", expected="two tensors of shape (K,)",
            received=(tuple(bias_update.shape), tuple(mean_probs.shape)),
            fix="pass the last layer's bias update and the mean softmax output")
    if not (lr > 0 and steps >= 1 and batch_size >= 1):
        raise ConfigError.build(what="lr, steps, batch_size", expected="lr > 0, ints >= 1",
                                received=(lr, steps, batch_size), fix="pass the protocol's")
    estimate = (batch_size * mean_probs.double() + bias_update.detach().double().cpu()
                * batch_size / (lr * steps)).clamp_min(0)
    if float(estimate.sum()) > 0:
        estimate = estimate * batch_size / estimate.sum()
    counts = estimate.floor().to(torch.int64)
    order = (estimate - counts).argsort(descending=True)
    for i in range(batch_size - int(counts.sum())):
        counts[order[i % len(order)]] += 1
    return counts


def assign_labels(log_probs: Tensor, labels: Tensor) -> Tensor:
    """Pair candidate images with labels: the order of the candidates that maximises the
    summed log-probability of the labels (Hungarian algorithm).

    Args:
        log_probs: ``(B, K)`` each candidate's log-softmax output.
        labels: ``(B,)`` the labels to hand out, one per candidate.

    Returns:
        ``(B,)`` int64: candidate ``order[i]`` gets ``labels[i]``.

    Raises:
        InputShapeError: if the shapes do not fit.

    Example:
        >>> logp = torch.tensor([[0.0, -5.0], [-5.0, 0.0]]).log_softmax(1)
        >>> assign_labels(logp, torch.tensor([1, 0])).tolist()
        [1, 0]
    """
    if log_probs.dim() != 2 or labels.shape != log_probs.shape[:1]:
        raise InputShapeError.build(
            what="log_probs, labels", expected="(B, K) and (B,)",
            received=(tuple(log_probs.shape), tuple(labels.shape)),
            fix="pass one label per candidate")
    cost = -log_probs.detach().double().cpu()[:, labels.cpu()]  # candidate x slot
    rows, cols = linear_sum_assignment(cost.numpy())
    return torch.as_tensor(rows[np.argsort(cols)], dtype=torch.int64)


def match_epochs(images: Tensor, labels: Tensor | None = None, *, rounds: int = 2) -> Tensor:
    """Pair the images rebuilt for each local epoch with the other epochs' (unknown order).

    Each epoch's images are assigned to the slots of the current consensus (epoch 0's
    images at first, then the mean of the epochs in their assigned order) by the Hungarian
    algorithm on the squared distance, only between images of the same label; the
    consensus is recomputed and the assignment repeated ``rounds`` times.

    Args:
        images: ``(E, B, ...)`` the candidate images of each epoch (detached or not).
        labels: ``(B,)`` the label of each slot (the same in every epoch), ``(E, B)`` each
            epoch's, or None.
        rounds: consensus refinements.

    Returns:
        ``(E, B)`` int64: ``images[e, perms[e]]`` is epoch ``e`` in the consensus order.

    Raises:
        InputShapeError: if the shapes do not fit.

    Example:
        >>> x = torch.tensor([[[0.0], [1.0]], [[1.0], [0.0]]])   # epoch 1 swapped
        >>> match_epochs(x).tolist()
        [[0, 1], [1, 0]]
    """
    if images.dim() < 2 or (labels is not None and labels.shape not in (
            images.shape[1:2], images.shape[:2])):
        raise InputShapeError.build(
            what="images, labels", expected="(E, B, ...) images and (B,) labels",
            received=(tuple(images.shape), None if labels is None else tuple(labels.shape)),
            fix="stack one batch per epoch")
    e, b = images.shape[:2]
    flat = images.detach().reshape(e, b, -1).double().cpu()
    perms = torch.arange(b).repeat(e, 1)
    per = None if labels is None else labels.cpu().expand(e, b)
    consensus = flat[0]  # the first round pairs every epoch with epoch 0
    for _ in range(max(1, rounds)):
        for i in range(e):
            cost = torch.cdist(consensus, flat[i]).pow(2)
            if per is not None:  # only images of the same label pair up
                cost[per[0][:, None] != per[i][None, :]] = 1e30
            rows, cols = linear_sum_assignment(cost.numpy())
            perms[i] = torch.as_tensor(cols[np.argsort(rows)], dtype=torch.int64)
        consensus = torch.stack([flat[i, perms[i]] for i in range(e)]).mean(dim=0)
    return perms


def order_invariant_prior(images: Tensor, perms: Tensor) -> tuple[Tensor, Tensor]:
    """The epoch order-invariant prior: the mean squared distance of every epoch's images
    (in the order of :func:`match_epochs`) to their consensus, and the consensus.

    Args:
        images: ``(E, B, ...)`` the candidate images of each epoch.
        perms: ``(E, B)`` from :func:`match_epochs`.

    Returns:
        ``(penalty, consensus)``: a scalar (0 when every epoch holds the same images) and
        ``(B, ...)`` the mean image of each slot over the epochs.

    Example:
        >>> x = torch.tensor([[[0.0], [1.0]], [[1.0], [0.2]]])
        >>> penalty, consensus = order_invariant_prior(x, match_epochs(x))
        >>> round(float(penalty), 4), consensus.flatten().tolist()
        (0.005, [0.10000000149011612, 1.0])
    """
    aligned = torch.stack([images[i, perms[i].to(images.device)]
                           for i in range(images.shape[0])])
    consensus = aligned.mean(dim=0)
    return (aligned - consensus).pow(2).mean(), consensus


def row_space(matrix: Tensor, *, tolerance: float = 1e-4) -> Tensor:
    """An orthonormal basis of the row space of ``matrix`` (its right singular vectors
    whose singular value exceeds ``tolerance`` times the largest).

    Args:
        matrix: ``(K, F)``, e.g. a linear layer's weight update.
        tolerance: relative singular-value threshold (the numerical rank).

    Returns:
        ``(r, F)`` rows of unit length, ``r`` the numerical rank (0 for a zero matrix).

    Raises:
        InputShapeError: if ``matrix`` is not 2-D.

    Example:
        >>> row_space(torch.tensor([[1.0, 0.0], [2.0, 0.0]])).abs().tolist()
        [[1.0, 0.0]]
    """
    if matrix.dim() != 2:
        raise InputShapeError.build(what="matrix", expected="a 2-D tensor",
                                    received=tuple(matrix.shape), fix="pass a weight's update")
    _, values, vh = torch.linalg.svd(matrix.detach().double(), full_matrices=False)
    if values.numel() == 0 or float(values[0]) == 0.0:
        return matrix.new_zeros(0, matrix.shape[1])
    rank = int((values > tolerance * values[0]).sum())
    return vh[:rank].to(matrix.dtype)


def subspace_residual(features: Tensor, basis: Tensor) -> Tensor:
    """The share of each row's squared norm outside the span of ``basis`` (differentiable).

    Args:
        features: ``(N, F)``.
        basis: ``(r, F)`` orthonormal rows (:func:`row_space`).

    Returns:
        ``(N,)`` in ``[0, 1]``: 0 for a row in the span, 1 for one orthogonal to it.

    Example:
        >>> subspace_residual(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]]))
        tensor([0.5000])
    """
    inside = (features @ basis.T) @ basis
    return (features - inside).pow(2).sum(dim=1) / features.pow(2).sum(dim=1).clamp_min(1e-30)


def select_spanning(coordinates: Tensor, update: Tensor, count: int) -> list[int]:
    """Greedily pick ``count`` candidates whose directions together explain most of an update.

    Each step takes the candidate whose direction, less its part already spanned by those
    picked, carries the most of ``update``'s energy (``|update @ u|^2``); a candidate
    close to one already picked adds little, so the picks are distinct, and one whose
    direction lies mostly outside the update's row space (a short ``coordinates`` row)
    adds little too.

    Args:
        coordinates: ``(N, r)`` each candidate's unit feature direction written in an
            orthonormal basis of the update's row space (length ``sqrt(1 - residual)``).
        update: ``(K, r)`` the update in the same basis.
        count: how many to pick (at most ``N``).

    Returns:
        The indices picked, in the order picked.

    Raises:
        InputShapeError: if the shapes do not fit.

    Example:
        >>> coords = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> update = torch.tensor([[3.0, 1.0]])
        >>> select_spanning(coords, update, 2)
        [0, 2]
    """
    if coordinates.dim() != 2 or update.dim() != 2 or coordinates.shape[1] != update.shape[1]:
        raise InputShapeError.build(
            what="coordinates, update", expected="(N, r) and (K, r)",
            received=(tuple(coordinates.shape), tuple(update.shape)),
            fix="write both in the same basis of the row space")
    a, m = coordinates.detach().double(), update.detach().double()
    picked: list[int] = []
    spanned = a.new_zeros(0, a.shape[1])
    for _ in range(min(count, a.shape[0])):
        rest = a - (a @ spanned.T) @ spanned
        gain = (rest @ m.T).pow(2).sum(dim=1)
        if picked:
            gain[picked] = -1.0
        best = int(gain.argmax())
        picked.append(best)
        norm = rest[best].norm()
        if float(norm) > 1e-12:
            spanned = torch.cat([spanned, (rest[best] / norm)[None]])
    return picked


__all__ = [
    "Distance",
    "assign_labels",
    "label_counts_from_bias_update",
    "match_epochs",
    "order_invariant_prior",
    "row_space",
    "select_spanning",
    "subspace_residual",
    "update_distance",
]
