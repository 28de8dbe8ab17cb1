"""Image statistics as pure functions: total variation and per-sample Pearson correlation."""

from __future__ import annotations

from torch import Tensor

from shieldsplit.errors import InputShapeError


def total_variation(x: Tensor) -> Tensor:
    """Anisotropic total variation per image (mean absolute neighbour difference).

    Args:
        x: ``(B, C, H, W)``.

    Returns:
        ``(B,)``.
    """
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1) if x.shape[2] > 1 else 0
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1) if x.shape[3] > 1 else 0
    return x.new_zeros(x.shape[0]) + dh + dw



def pearson_correlation(x: Tensor, x_hat: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-sample Pearson correlation between images and their reconstructions (eq. 1).

    ``r = sum((x - mean x)(x_hat - mean x_hat)) / sqrt(sum((x - mean x)^2) *
    sum((x_hat - mean x_hat)^2))`` over all pixels and channels of each sample. The
    product of the sums of squares is clamped at ``eps`` so that a constant image gives
    ``r = 0`` (not NaN) and a finite gradient.

    Args:
        x: ``(N, ...)`` images.
        x_hat: ``(N, ...)`` reconstructions, the same shape as ``x``.
        eps: floor of the denominator's square.

    Returns:
        ``(N,)`` correlations in ``[-1, 1]``.

    Raises:
        InputShapeError: if the shapes differ or there is no sample.

    Example:
        >>> import torch
        >>> x = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
        >>> pearson_correlation(x, torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]]))
        tensor([-1.,  0.])
    """
    if x.shape != x_hat.shape or x.dim() < 1 or x.shape[0] == 0:
        raise InputShapeError.build(
            what="x_hat", expected=f"a non-empty batch shaped like x {tuple(x.shape)}",
            received=tuple(x_hat.shape), fix="pass reconstructions of the same shape",
        )
    a = x.reshape(x.shape[0], -1)
    b = x_hat.reshape(x_hat.shape[0], -1)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    num = (a * b).sum(dim=1)
    den = ((a * a).sum(dim=1) * (b * b).sum(dim=1)).clamp_min(eps).sqrt()
    return num / den

__all__ = ["pearson_correlation", "total_variation"]
