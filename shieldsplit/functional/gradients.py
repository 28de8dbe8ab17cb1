"""Gradient maths as pure functions: the distances gradient-matching attacks minimise, and
a linear layer's input read exactly from its gradient.

:func:`squared_distance` is DLG's matching loss (Zhu et al. 2019) and
:func:`cosine_distance` that of Inverting Gradients (Geiping et al. 2020), both between
flattened gradients; both work under ``torch.func.vmap`` and ``grad``.
:func:`linear_input_from_gradient` is the analytic step that R-GAP and Inverting
Gradients' Prop. D.1 build on.

Example:
    >>> import torch
    >>> a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    >>> float(squared_distance(a, b)), float(cosine_distance(a, b)), float(cosine_distance(a, a))
    (5.0, 1.0, 0.0)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from shieldsplit.errors import InputShapeError

#: added to the product of the norms in :func:`cosine_distance` (a zero vector gives 1)
COSINE_EPS = 1e-12


def _check_pair(a: Tensor, b: Tensor) -> None:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.dim() != 1 or (
        a.shape != b.shape
    ):
        raise InputShapeError.build(
            what="a, b", expected="two 1-D tensors of the same length",
            received=(getattr(a, "shape", type(a).__name__),
                      getattr(b, "shape", type(b).__name__)),
            fix="flatten and concatenate the gradients first",
        )


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """One minus the cosine similarity of two vectors: ``1 - a.b / (|a| |b| + eps)``.

    The matching loss of Inverting Gradients (Geiping et al. 2020): blind to the
    gradients' scale, so a client's learning rate or batch size does not matter.
    ``eps`` is :data:`COSINE_EPS`.

    Args:
        a: ``(D,)`` one flattened gradient.
        b: ``(D,)`` the other.

    Returns:
        A scalar in ``[0, 2]``.

    Raises:
        InputShapeError: unless ``a`` and ``b`` are 1-D of the same length.

    Example:
        >>> import torch
        >>> float(cosine_distance(torch.tensor([1.0, 1.0]), torch.tensor([-2.0, -2.0])))
        2.0
    """
    _check_pair(a, b)
    return 1.0 - (a @ b) / (a.norm() * b.norm() + COSINE_EPS)


def squared_distance(a: Tensor, b: Tensor) -> Tensor:
    """The squared Euclidean distance of two vectors, ``sum((a - b)^2)``.

    The matching loss of DLG and iDLG (Zhu et al. 2019; Zhao et al. 2020).

    Args:
        a: ``(D,)`` one flattened gradient.
        b: ``(D,)`` the other.

    Returns:
        A non-negative scalar.

    Raises:
        InputShapeError: unless ``a`` and ``b`` are 1-D of the same length.

    Example:
        >>> import torch
        >>> float(squared_distance(torch.tensor([1.0, 2.0]), torch.tensor([4.0, 6.0])))
        25.0
    """
    _check_pair(a, b)
    return (a - b).pow(2).sum()


def linear_input_from_gradient(weight_grad: Tensor, bias_grad: Tensor) -> tuple[Tensor, float]:
    """The input of a linear layer, read from its weight and bias gradients for one image.

    For one image the gradient of ``y = W h + b`` is ``grad_W = g h^T`` and
    ``grad_b = g`` (``g`` the gradient at the output), so ``h`` is any row of
    ``grad_W`` divided by the same entry of ``grad_b``. The least-squares
    estimate over all rows is ``h = grad_b^T grad_W / |grad_b|^2`` (Phong et
    al. 2018; Geiping et al. 2020, Prop. D.1). For a batch of several images
    ``grad_W`` is a sum of such outer products and the relative residual
    ``|grad_W - grad_b h^T| / |grad_W|`` (computed on the 8 rows of largest
    ``|grad_b|``) is large: it says whether ``h`` is exact.

    Args:
        weight_grad: ``(K, F)`` gradient of the weight.
        bias_grad: ``(K,)`` gradient of the bias.

    Returns:
        ``h`` ``(F,)`` and the relative residual (``inf`` when ``grad_b`` is zero).

    Raises:
        InputShapeError: if the shapes do not fit.

    Example:
        >>> import torch
        >>> h = torch.tensor([0.5, 0.0, 2.0])
        >>> g = torch.tensor([0.1, -0.3])
        >>> est, residual = linear_input_from_gradient(torch.outer(g, h), g)
        >>> est, residual < 1e-6
        (tensor([0.5000, 0.0000, 2.0000]), True)
    """
    if (
        not isinstance(weight_grad, Tensor) or not isinstance(bias_grad, Tensor)
        or weight_grad.dim() != 2 or bias_grad.shape != weight_grad.shape[:1]
    ):
        raise InputShapeError.build(
            what="weight_grad, bias_grad", expected="shapes (K, F) and (K,)",
            received=(getattr(weight_grad, "shape", None), getattr(bias_grad, "shape", None)),
            fix="pass the gradients of one nn.Linear's weight and bias",
        )
    gw, gb = weight_grad.detach(), bias_grad.detach().double()
    norm = float(gb @ gb)
    if norm == 0.0:
        return torch.zeros(gw.shape[1], dtype=weight_grad.dtype), math.inf
    h = (gb.to(gw.dtype) @ gw).double() / norm
    # the residual on the rows of largest |grad_b| (cheap; a mixture of images shows there)
    rows = gb.abs().topk(min(8, gb.numel())).indices
    part = gw[rows].double()
    residual = float((part - torch.outer(gb[rows], h)).norm() / part.norm().clamp_min(1e-300))
    return h.to(weight_grad.dtype), residual


__all__ = ["COSINE_EPS", "cosine_distance", "linear_input_from_gradient", "squared_distance"]
