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

from shieldsplit.functional.saliency import jsma_saliency, normalised_heat

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


__all__ = ["METHODS", "class_gradient", "jsma_saliency", "normalised_heat"]
