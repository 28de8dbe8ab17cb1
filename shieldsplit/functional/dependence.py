"""Differentiable dependence measures between inputs and cut activations.

Training-time losses for the dependence-minimising defences: the sample
distance correlation (Szekely, Rizzo, Bakirov 2007) that NoPeek minimises, and
the biased HSIC estimator with Gaussian kernels (Gretton et al. 2005) that BiDO
trades off. Pure functions of two batches, each flattened per sample; unlike
:func:`shieldsplit.functional.metrics.distance_correlation` (a float for reports) they
return tensors that gradients flow through. Both reuse the double-centred
distance matrices of :mod:`shieldsplit.functional.metrics`, so the estimator exists once.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(32, 4, generator=g)
    >>> round(float(distance_correlation_loss(x, 3 * x - 1)), 4)
    1.0
    >>> bool(hsic(x, x) > hsic(x, torch.randn(32, 4, generator=g)))
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from shieldsplit.errors import ConfigError, InputShapeError
from shieldsplit.functional.metrics import centred_distances

#: Floor under the square roots, so that gradients stay finite at zero dependence.
_EPS = 1e-12


def _paired(x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten two batches per sample in a common floating dtype (checked to match)."""
    if x.dim() < 1 or z.dim() < 1 or x.shape[0] != z.shape[0] or x.shape[0] < 2:
        raise InputShapeError.build(
            what="x, z", expected="two batches with the same number (>= 2) of samples",
            received=f"{tuple(x.shape)} and {tuple(z.shape)}",
            fix="pass one row of z per row of x, at least two rows",
        )
    dtype = torch.promote_types(torch.promote_types(x.dtype, z.dtype), torch.float32)
    return x.reshape(x.shape[0], -1).to(dtype), z.reshape(z.shape[0], -1).to(dtype)


def distance_correlation_loss(x: Tensor, z: Tensor, *, squared: bool = False) -> Tensor:
    """Sample distance correlation of two batches, differentiable (Szekely et al. 2007).

    ``dCor^2 = dCov^2(x, z) / sqrt(dVar^2(x) dVar^2(z))``, with every term the mean of
    products of double-centred Euclidean distance matrices. The value is 0 for a
    constant batch and lies in [0, 1]. The square root (``squared=False``) is taken of
    ``max(dCor^2, 1e-12)``, so its gradient stays finite near independence; the value
    is therefore never below 1e-6.

    Args:
        x: ``(N, ...)`` inputs (flattened per sample).
        z: ``(N, ...)`` activations (flattened per sample).
        squared: return ``dCor^2`` instead of ``dCor``.

    Returns:
        A scalar tensor (float32, or float64 if either input is float64).

    Raises:
        InputShapeError: if the batches differ in size or have fewer than 2 samples.

    Reference:
        Szekely, Rizzo, Bakirov, "Measuring and testing dependence by correlation of
        distances", Annals of Statistics 35(6), 2007.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 5, generator=g, requires_grad=True)
        >>> loss = distance_correlation_loss(x, torch.randn(64, 3, generator=g))
        >>> loss.backward(); bool(torch.isfinite(x.grad).all()), loss.item() < 0.5
        (True, True)
    """
    xf, zf = _paired(x, z)
    a = centred_distances(xf)
    b = centred_distances(zf)
    dcov2 = (a * b).mean()
    dvar2 = (a * a).mean() * (b * b).mean()
    dcor2 = (dcov2 / dvar2.clamp_min(_EPS).sqrt()).clamp(0.0, 1.0)
    return dcor2 if squared else dcor2.clamp_min(_EPS).sqrt()


def _squared_distances(x: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances of the rows of ``x`` (no square root, so
    smooth everywhere; tiny negative rounding errors are clipped)."""
    sq = (x * x).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    return d2.clamp_min(0.0)


def median_bandwidth(x: Tensor) -> float:
    """The median heuristic: the median pairwise Euclidean distance of the rows.

    Args:
        x: ``(N, ...)`` samples (flattened per sample), ``N >= 2``.

    Returns:
        The median of the ``N (N - 1) / 2`` distances (the mean of the middle two for an
        even count), or 1.0 if it is 0 (e.g. mostly
        repeated samples).

    Example:
        >>> median_bandwidth(torch.tensor([[0.0], [1.0], [3.0]]))
        2.0
    """
    flat = x.detach().reshape(x.shape[0], -1).double()
    n = flat.shape[0]
    rows, cols = torch.triu_indices(n, n, offset=1)
    dist = _squared_distances(flat)[rows, cols].sqrt()
    if dist.numel() == 0:
        return 1.0
    med = float(torch.quantile(dist, 0.5))  # the mean of the middle two, as numpy
    return med if med > 0.0 else 1.0


def gaussian_gram(x: Tensor, sigma: float) -> Tensor:
    """The Gaussian (RBF) kernel matrix ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))``.

    Args:
        x: ``(N, ...)`` samples (flattened per sample).
        sigma: the kernel bandwidth, > 0.

    Returns:
        The ``(N, N)`` Gram matrix, differentiable in ``x``.

    Raises:
        ConfigError: if ``sigma`` is not positive.

    Example:
        >>> k = gaussian_gram(torch.tensor([[0.0], [1.0]]), sigma=1.0)
        >>> k.diagonal().tolist(), round(float(k[0, 1]), 4)
        ([1.0, 1.0], 0.6065)
    """
    if not sigma > 0.0:
        raise ConfigError.build(
            what="sigma", expected="a kernel bandwidth > 0", received=sigma,
            fix="pass a positive sigma, or None for the median heuristic",
        )
    flat = x.reshape(x.shape[0], -1)
    return torch.exp(-_squared_distances(flat) / (2.0 * sigma * sigma))


def hsic(
    x: Tensor, z: Tensor, *, sigma_x: float | None = None, sigma_z: float | None = None
) -> Tensor:
    """The biased HSIC estimator with Gaussian kernels (Gretton et al. 2005).

    ``HSIC = trace(K H L H) / (N - 1)^2`` with ``K``, ``L`` the Gaussian Gram matrices
    of ``x`` and ``z`` and ``H = I - 11^T / N`` the centring matrix. It is >= 0 and
    is 0 in the population iff ``x`` and ``z`` are independent. Bandwidths left as
    None are set by :func:`median_bandwidth` (computed without gradient).

    Args:
        x: ``(N, ...)`` samples (flattened per sample).
        z: ``(N, ...)`` samples (flattened per sample).
        sigma_x: Gaussian bandwidth for ``x``, or None for the median heuristic.
        sigma_z: Gaussian bandwidth for ``z``, or None for the median heuristic.

    Returns:
        A scalar tensor, differentiable in both inputs.

    Raises:
        InputShapeError: if the batches differ in size or have fewer than 2 samples.
        ConfigError: if a given bandwidth is not positive.

    Reference:
        Gretton, Bousquet, Smola, Schoelkopf, "Measuring statistical dependence with
        Hilbert-Schmidt norms", ALT 2005.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(48, 3, generator=g)
        >>> dep, ind = hsic(x, x ** 2), hsic(x, torch.randn(48, 3, generator=g))
        >>> bool(dep > 2 * ind)
        True
    """
    xf, zf = _paired(x, z)
    k = gaussian_gram(xf, median_bandwidth(xf) if sigma_x is None else sigma_x)
    m = gaussian_gram(zf, median_bandwidth(zf) if sigma_z is None else sigma_z)
    n = xf.shape[0]
    # H K H, then trace(HKH L) = sum((HKH) * L) since L is symmetric.
    kc = k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()
    return (kc * m).sum() / float((n - 1) ** 2)


__all__ = ["distance_correlation_loss", "gaussian_gram", "hsic", "median_bandwidth"]
