"""Step (a): saliency maps through Captum.

PGSL's pixel attack (Khowaja et al. 2022, eq. 1) ranks pixels by how the
softmax probability of the true class ``f_y`` and of the other classes
``sum_{y' != y} f_y'`` change with each pixel. For a softmax output the two
derivatives are exact negatives of each other (the probabilities sum to 1),
so one backward pass of ``f_y`` gives both; :func:`jsma_saliency` uses that
identity, and the tests check it against two separate Captum calls.

Example:
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0) and None
    >>> clf = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x = torch.rand(2, 1, 4, 4)
    >>> g = class_gradient(lambda t: clf(t).softmax(-1), x, torch.tensor([0, 2]))
    >>> g.shape
    torch.Size([2, 1, 4, 4])
    >>> bool((jsma_saliency(g) >= 0).all())
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from captum.attr import InputXGradient, Saliency
from torch import Tensor

#: Captum attribution methods by config name.
METHODS: dict[str, type] = {"saliency": Saliency, "input_x_gradient": InputXGradient}


def class_gradient(
    forward_func: Callable[[Tensor], Tensor],
    x: Tensor,
    target: Tensor,
    *,
    method: Literal["saliency", "input_x_gradient"] = "saliency",
) -> Tensor:
    """Signed attribution of ``forward_func(x)[target]`` to each input element.

    Args:
        forward_func: maps a batch to per-class scores (softmax probabilities for eq. 1).
        x: input batch; it is not modified.
        target: one class index per sample.
        method: ``"saliency"`` (the plain gradient, Simonyan et al. 2014) or
            ``"input_x_gradient"``.

    Returns:
        A tensor shaped like ``x``, detached.
    """
    attributor = METHODS[method](forward_func)
    inputs = x.detach().clone().requires_grad_(True)
    kwargs = {"abs": False} if method == "saliency" else {}
    with torch.enable_grad():
        attr = attributor.attribute(inputs, target=target, **kwargs)
    return attr.detach()


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


__all__ = ["METHODS", "class_gradient", "jsma_saliency", "normalised_heat"]
