"""Saliency maths (PGSL step a): JSMA's saliency from class gradients and the normalised
heat map, as pure functions."""

from __future__ import annotations

import torch
from torch import Tensor


def jsma_saliency(grad_target: Tensor, grad_others: Tensor | None = None) -> Tensor:
    """The inverted-condition JSMA saliency map ``Map'`` of eq. 1 (untargeted).

    A pixel is selected when raising it lowers the true class
    (``d f_y / d x_i < 0``) and raises the others (``sum d f_y' / d x_i > 0``);
    its score is ``-(d f_y / d x_i) * (sum d f_y' / d x_i)``.

    Args:
        grad_target: ``d f_y / d x`` per element.
        grad_others: ``sum_{y' != y} d f_y' / d x``; defaults to ``-grad_target``,
            which is exact for softmax outputs.

    Returns:
        Non-negative scores shaped like the inputs (0 where the condition fails).
    """
    others = -grad_target if grad_others is None else grad_others
    selected = (grad_target < 0) & (others > 0)
    return torch.where(selected, -grad_target * others, torch.zeros_like(grad_target))


def normalised_heat(scores: Tensor) -> Tensor:
    """The one-channel map PGSL sends along: scores summed over channels, each image
    scaled so its largest value is 1 (an all-zero map stays zero).

    Args:
        scores: ``(B, C, H, W)`` non-negative saliency scores.

    Returns:
        ``(B, 1, H, W)`` in ``[0, 1]``.

    Example:
        >>> normalised_heat(torch.tensor([[[[1.0, 3.0]], [[1.0, 1.0]]]]))
        tensor([[[[0.5000, 1.0000]]]])
    """
    heat = scores.sum(dim=1, keepdim=True)
    peak = heat.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return heat / peak


__all__ = ["jsma_saliency", "normalised_heat"]
