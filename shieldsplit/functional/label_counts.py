"""The pure steps of inferring a batch's label counts (no state, no I/O).

A label-inference attack on a federated update
(:class:`~shieldsplit.attacks.label_counts.UpdateLabelCounts`) tries candidate label
compositions of the client's batch (:func:`composition_grid`), draws auxiliary images
of each composition (:func:`class_draws`) and answers the labels of the best one
(:func:`labels_from_counts`): a gradient or an update reveals how many images of each
class the batch held, never their order.

Example:
    >>> composition_grid(4, grid=3)
    [0, 2, 4]
    >>> labels_from_counts(torch.tensor([2, 0, 1])).tolist()
    [0, 0, 2]
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldsplit._core.validate import check_int
from shieldsplit.errors import ConfigError


def composition_grid(images: int, *, grid: int) -> list[int]:
    """The distinct counts of class 0 on a grid of shares ``k / (grid - 1)`` of a binary batch.

    Args:
        images: the batch's images ``n``.
        grid: the shares tried (at least 2; at most ``n + 1`` counts are distinct).

    Returns:
        The counts ``round(k n / (grid - 1))``, sorted and distinct, from 0 to ``n``.

    Raises:
        ConfigError: for fewer than one image or a grid below 2.

    Example:
        >>> composition_grid(40, grid=5)
        [0, 10, 20, 30, 40]
        >>> composition_grid(2, grid=33)
        [0, 1, 2]
    """
    images = check_int("images", images, low=1, fix="pass the batch's number of images")
    grid = check_int("grid", grid, low=2, fix="pass grid=33")
    return sorted({round(step * images / (grid - 1)) for step in range(grid)})


def labels_from_counts(counts: Tensor) -> Tensor:
    """Sorted labels with ``counts[c]`` images of class ``c``.

    Args:
        counts: ``(K,)`` non-negative integer counts.

    Returns:
        ``(sum(counts),)`` int64 labels, sorted.

    Raises:
        ConfigError: for a count that is negative or not an integer.

    Example:
        >>> labels_from_counts(torch.tensor([1, 3])).tolist()
        [0, 1, 1, 1]
    """
    c = torch.as_tensor(counts)
    if c.dim() != 1 or c.is_floating_point() or c.is_complex() or bool((c < 0).any()):
        raise ConfigError.build(what="counts", expected="a 1-D tensor of non-negative integers",
                                received=f"{c.dtype}, shape {tuple(c.shape)}",
                                fix="pass one count per class")
    return torch.repeat_interleave(torch.arange(len(c)), c.long().cpu())


def class_draws(labels: Tensor, counts: Tensor, *, generator: torch.Generator) -> Tensor:
    """Indices of ``counts[c]`` labelled images of each class ``c``, in class order.

    Each class's images are taken in a seeded random order, every one of them once before
    any twice; a class with no image draws from all of them.

    Args:
        labels: ``(m,)`` the labels of the images drawn from.
        counts: ``(K,)`` non-negative integer counts.
        generator: seeds the order (advanced by the draw).

    Returns:
        ``(sum(counts),)`` int64 indices into ``labels``: first those of class 0, then 1, ...

    Raises:
        ConfigError: for no labelled image, or a bad count.

    Example:
        >>> labels = torch.tensor([0, 1, 1, 0, 1])
        >>> picks = class_draws(labels, torch.tensor([3, 2]),
        ...                     generator=torch.Generator().manual_seed(0))
        >>> labels[picks].tolist()
        [0, 0, 0, 1, 1]
    """
    wanted = labels_from_counts(counts)
    y = torch.as_tensor(labels).flatten().cpu()
    if len(y) == 0:
        raise ConfigError.build(what="labels", expected="at least one labelled image",
                                received="none", fix="pass the auxiliary labels")
    picks = []
    for c in range(len(counts)):
        count = int((wanted == c).sum())
        pool = torch.nonzero(y == c).flatten()
        pool = pool if len(pool) else torch.arange(len(y))
        order = pool[torch.randperm(len(pool), generator=generator)]
        picks.append(order.repeat(count // len(order) + 1)[:count])
    return torch.cat(picks) if picks else torch.zeros(0, dtype=torch.long)


__all__ = ["class_draws", "composition_grid", "labels_from_counts"]
