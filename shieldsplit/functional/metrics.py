"""Leakage metrics: pure functions, per image where that makes sense.

PSNR and SSIM come from torchmetrics (a well-kept implementation); MSE and the
distance correlation (Szekely, Rizzo, Bakirov 2007) are a few lines each and
tested against numpy/scipy references.

Example:
    >>> import torch
    >>> a = torch.zeros(2, 1, 8, 8); b = a + 0.1
    >>> mse(a, b)
    tensor([0.0100, 0.0100])
    >>> psnr(a, b).round()
    tensor([20., 20.])
    >>> label_recovery_rate(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 0]))
    0.6666666666666666
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from shieldsplit.errors import InputShapeError


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise InputShapeError.build(
            what="images", expected="two (B, C, H, W) batches of equal shape",
            received=f"{tuple(a.shape)} and {tuple(b.shape)}",
            fix="compare each reconstruction with its own original",
        )


def mse(reconstructed: Tensor, original: Tensor) -> Tensor:
    """Mean squared error per image.

    Args:
        reconstructed: ``(B, C, H, W)`` in [0, 1].
        original: same shape.

    Returns:
        ``(B,)`` MSE values.
    """
    _check_pair(reconstructed, original)
    return ((reconstructed.float() - original.float()) ** 2).flatten(1).mean(dim=1)


def psnr(reconstructed: Tensor, original: Tensor, *, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image, in dB (torchmetrics).

    Args:
        reconstructed: ``(B, C, H, W)``.
        original: same shape.
        data_range: the value range (1.0 for images in [0, 1]).

    Returns:
        ``(B,)`` PSNR values (inf for identical images).
    """
    _check_pair(reconstructed, original)
    return peak_signal_noise_ratio(
        reconstructed.float().clamp(0, data_range), original.float(), data_range=data_range,
        reduction="none", dim=(1, 2, 3),
    )


def ssim(reconstructed: Tensor, original: Tensor, *, data_range: float = 1.0) -> Tensor:
    """Structural similarity per image (torchmetrics, Gaussian 11x11 window, or smaller
    for small images).

    Args:
        reconstructed: ``(B, C, H, W)``.
        original: same shape.
        data_range: the value range.

    Returns:
        ``(B,)`` SSIM values in [-1, 1].
    """
    _check_pair(reconstructed, original)
    size = min(11, original.shape[-1], original.shape[-2])
    size = size if size % 2 == 1 else size - 1
    out = structural_similarity_index_measure(
        reconstructed.float().clamp(0, data_range), original.float(), data_range=data_range,
        kernel_size=size, sigma=1.5 * size / 11, reduction="none",
    )
    return out if isinstance(out, Tensor) else out[0]


def label_recovery_rate(inferred: Tensor, true: Tensor) -> float:
    """Fraction of labels an attack inferred correctly.

    Args:
        inferred: ``(B,)`` inferred labels.
        true: ``(B,)`` true labels.

    Returns:
        A fraction in [0, 1].
    """
    if inferred.shape != true.shape:
        raise InputShapeError.build(
            what="labels", expected=f"shape {tuple(true.shape)}", received=tuple(inferred.shape),
            fix="pass one inferred label per image",
        )
    return float((inferred.cpu() == true.cpu()).double().mean())


def centred_distances(x: Tensor) -> Tensor:
    """The double-centred Euclidean distance matrix of ``(N, D)`` samples (Szekely et
    al. 2007): ``d_ij - mean_i d_ij - mean_j d_ij + mean d``, the building block of
    distance covariance and correlation (used by NoPeek's loss and its metric).

    Args:
        x: ``(N, D)`` samples.

    Returns:
        ``(N, N)``; every row and every column sums to zero.

    Example:
        >>> a = centred_distances(torch.tensor([[0.0], [1.0], [3.0]]))
        >>> [round(v, 4) for v in a.sum(dim=0).tolist()]
        [0.0, 0.0, 0.0]
    """
    d = torch.cdist(x, x)
    return d - d.mean(dim=0, keepdim=True) - d.mean(dim=1, keepdim=True) + d.mean()


def distance_correlation(x: Tensor, z: Tensor) -> float:
    """Sample distance correlation between inputs and cut activations (Szekely et al. 2007).

    0 means independent, 1 means one determines the other up to a similarity.
    NoPeek (Vepakomma et al. 2019) minimises it.

    Args:
        x: ``(N, ...)`` inputs (flattened per sample).
        z: ``(N, ...)`` activations.

    Returns:
        The distance correlation in [0, 1].

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 5, generator=g)
        >>> round(distance_correlation(x, 2 * x + 1), 4)
        1.0
    """
    if x.shape[0] != z.shape[0] or x.shape[0] < 2:
        raise InputShapeError.build(
            what="x, z", expected="two batches with the same number (>= 2) of samples",
            received=f"{x.shape[0]} and {z.shape[0]}", fix="pass matching batches",
        )
    a = centred_distances(x.flatten(1).double())
    b = centred_distances(z.flatten(1).double())
    dcov = (a * b).mean()
    denom = ((a * a).mean() * (b * b).mean()).sqrt()
    if float(denom) == 0.0:
        return 0.0
    return float((dcov / denom).clamp_min(0).sqrt())


__all__ = [
    "centred_distances", "distance_correlation", "label_recovery_rate", "mse", "psnr", "ssim",
]
