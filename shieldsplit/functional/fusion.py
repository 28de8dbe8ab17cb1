"""PGSL's adaptive decision fusion (Khowaja et al. 2022, eqs. 9-11) as pure functions:
per-class score sums, the true-class maximum, the weights and the weighted average."""

from __future__ import annotations

import torch
from torch import Tensor


def class_score_sums(probs: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per class ``L``: the sum of ``p(L | x)`` over the samples labelled ``L``, and their count.

    Sums add up over batches, so ``S^max`` of a whole epoch needs no stored scores.

    Args:
        probs: ``(N, K)`` class probabilities of one stream.
        labels: ``(N,)`` true labels in ``[0, K)``.
        num_classes: ``K``.

    Returns:
        ``(sums, counts)``, each of shape ``(K,)`` (float).

    Example:
        >>> p = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
        >>> sums, counts = class_score_sums(p, torch.tensor([0, 0, 1]), 2)
        >>> sums.tolist(), counts.tolist()
        ([1.5, 0.699999988079071], [2.0, 1.0])
    """
    true = probs.gather(1, labels.long().view(-1, 1)).squeeze(1)
    sums = torch.zeros(num_classes, dtype=probs.dtype, device=probs.device)
    counts = torch.zeros(num_classes, dtype=probs.dtype, device=probs.device)
    sums.index_add_(0, labels.long(), true)
    counts.index_add_(0, labels.long(), torch.ones_like(true))
    return sums, counts


def max_class_score(sums: Tensor, counts: Tensor) -> Tensor:
    """``S^max = max_L S(L)``, with ``S(L)`` the mean true-class score of class ``L``.

    Classes with no sample do not count.

    Args:
        sums: ``(K,)`` from :func:`class_score_sums` (summed over batches).
        counts: ``(K,)`` the matching sample counts.

    Returns:
        A scalar tensor (0 when no class has a sample).

    Example:
        >>> max_class_score(torch.tensor([1.5, 0.7, 0.0]), torch.tensor([2.0, 1.0, 0.0]))
        tensor(0.7500)
    """
    present = counts > 0
    if not bool(present.any()):
        return torch.zeros((), dtype=sums.dtype, device=sums.device)
    return (sums[present] / counts[present]).max()


def adaptive_weights(s_max: Tensor, initial: Tensor) -> Tensor:
    """Eqs. 10-11: initial weights rescaled by each stream's ``S^max`` and normalised.

    Args:
        s_max: ``S^max`` per stream.
        initial: initial weight per stream (the paper: 0.5, 0.3, 0.2 for
            recovered, fused, attacked).

    Returns:
        Weights that sum to 1.
    """
    raw = initial * s_max
    total = raw.sum()
    if float(total) <= 0:  # no stream has any confidence yet: keep the initial weights
        return initial / initial.sum()
    return raw / total


def weighted_average(scores: Tensor, weights: Tensor) -> Tensor:
    """Eq. 9: the weighted average of stream scores.

    Args:
        scores: ``(S, N, K)`` per-stream scores.
        weights: ``(S,)`` weights.

    Returns:
        ``(N, K)`` fused scores.

    Example:
        >>> s = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
        >>> weighted_average(s, torch.tensor([0.75, 0.25]))
        tensor([[0.7500, 0.2500]])
    """
    return torch.einsum("s,snk->nk", weights.to(scores.dtype), scores)


__all__ = ["adaptive_weights", "class_score_sums", "max_class_score", "weighted_average"]
