"""The maths of the imprint attack (Fowl et al., "Robbing the Fed", ICLR 2022), as pure functions.

A malicious federated server puts a linear *imprint* layer ``h_i = ReLU(w . x - t_i)``,
``i = 0..k-1``, in front of the model it sends: every row measures the same linear
functional ``m(x) = w . x`` of the image and row ``i`` fires for images with
``m(x) > t_i``. The thresholds ``t_0 < t_1 < ... < t_{k-1}`` are quantiles of ``m`` on
auxiliary data (:func:`bin_thresholds`), so the ``k`` bins ``[t_i, t_{i+1})`` are
equiprobable. When the layer that follows gives every row the same output gradient
``g(x)`` for one image, the batch gradient of row ``i`` is
``dW_i = (1/B) sum_{x: m(x) > t_i} g(x) x`` and of its bias
``db_i = (1/B) sum_{x: m(x) > t_i} g(x)``. Consecutive rows differ only by the images
of bin ``i``, so for a bin that holds one image ``x``::

    (dW_i - dW_{i+1}) / (db_i - db_{i+1}) = x      (exactly; dW_k = db_k = 0)

(:func:`read_bins`). A bin with several images gives their ``g``-weighted mean, not an
image.

How many images come back. Each of ``B`` images falls into one of ``k`` bins of
probabilities ``p_j`` independently; an image is read exactly when no other image
shares its bin, which for an image in bin ``j`` has probability ``(1 - p_j)^(B - 1)``.
The expected fraction of the batch read exactly is therefore
``sum_j p_j (1 - p_j)^(B - 1)`` (:func:`expected_fraction_for_bins`) and, for equiprobable
bins (``p_j = 1/k``, what the quantile calibration aims at),
``((k - 1) / k)^(B - 1)`` (:func:`expected_recovered_fraction`). Equivalently the
expected number of bins holding exactly one image is ``B (1 - 1/k)^(B - 1)`` (derived
here from the construction, as a balls-into-bins count; not copied from the paper). Bins
calibrated on a finite auxiliary set are only approximately equiprobable for the victims;
where bins are small (every ``p_j < 2 / B``, where the summand is concave) unequal bins
recover fewer images than equal ones.

"Almost exactly" is :data:`EXACT_PSNR_DB` = 60 dB: a root-mean-square error of
``1e-3`` on images in ``[0, 1]``, below the ``1 / (255 sqrt 12)`` (58.9 dB) of an 8-bit
image's own quantisation. The mixture a shared bin gives is far below it, unless one
image's share of the bin dwarfs the others' (``docs/results/imprint.md`` counts those).

Example:
    >>> import torch
    >>> x = torch.tensor([[0.1, 0.2], [0.9, 0.4], [0.5, 0.5]], dtype=torch.float64)
    >>> w = torch.tensor([1.0, 1.0], dtype=torch.float64)
    >>> t = torch.tensor([-1.0, 0.5, 1.2], dtype=torch.float64)  # one image per bin
    >>> g = torch.tensor([0.3, -0.7, 0.2], dtype=torch.float64)  # per-image output gradients
    >>> active = ((x @ w)[:, None] > t).double()                  # (B, k)
    >>> dW, db = (active * g[:, None]).T @ x / 3, (active * g[:, None]).sum(0) / 3
    >>> rows, bins = read_bins(dW, db)
    >>> bins.tolist()                      # the bins of x[1], x[0], x[2] (largest |g| first)
    [2, 0, 1]
    >>> torch.allclose(rows, x[[1, 0, 2]])
    True
    >>> round(expected_recovered_fraction(8, 128), 4)
    0.9466
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from shieldsplit.errors import ConfigError, InputShapeError, NonFiniteInputError
from shieldsplit.functional.metrics import psnr
from shieldsplit.functional.stats import pairwise_mse

#: PSNR (dB) at and above which an image counts as recovered almost exactly (see above).
EXACT_PSNR_DB = 60.0


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError.build(what=name, expected=f"an int >= {low}", received=repr(value),
                                fix=f"pass {name}>={low}")
    return value


def _check_vector(name: str, x: Any, *, dim: int = 1) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != dim or x.numel() == 0:
        received = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputShapeError.build(what=name, expected=f"a non-empty {dim}-D tensor",
                                    received=received, fix=f"pass {name} as a {dim}-D tensor")
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteInputError.build(what=name, expected="finite values",
                                        received="NaN or infinity", fix=f"pass a finite {name}")
    return x.detach().double()


def bin_thresholds(measurements: Tensor, bins: int) -> Tensor:
    """Thresholds that cut a measurement's distribution into ``bins`` equiprobable bins.

    ``t_i`` is the empirical ``i / bins`` quantile of ``measurements`` (linear
    interpolation, as ``numpy.quantile``) for ``i >= 1``; ``t_0`` stands for minus
    infinity: the smallest measurement minus the measurements' range, so that every
    image like the calibration data fires row 0. Tied measurements (a discrete
    measurement) give tied thresholds, hence empty bins.

    Args:
        measurements: ``(N,)`` the measurement of ``N >= 2`` auxiliary images.
        bins: ``k >= 2``.

    Returns:
        ``(k,)`` float64 thresholds, non-decreasing.

    Raises:
        InputShapeError: ``measurements`` is not a non-empty 1-D tensor, or holds fewer
            than two values.
        NonFiniteInputError: a measurement is NaN or infinite.
        ConfigError: ``bins`` is not an int >= 2.

    Example:
        >>> bin_thresholds(torch.arange(5.0), 4).tolist()
        [-4.0, 1.0, 2.0, 3.0]
    """
    m = _check_vector("measurements", measurements)
    bins = _check_int("bins", bins, 2)
    if m.numel() < 2:
        raise InputShapeError.build(what="measurements", expected="at least 2 values",
                                    received=m.numel(), fix="calibrate on more images")
    levels = torch.arange(1, bins, dtype=torch.float64) / bins
    inner = torch.quantile(m, levels)
    low = m.min() - (m.max() - m.min())
    return torch.cat([low.reshape(1), inner])


def bin_index(measurements: Tensor, thresholds: Tensor) -> Tensor:
    """The bin of each measurement: the last row ``i`` with ``m > t_i`` fires (-1: none).

    Args:
        measurements: ``(N,)``.
        thresholds: ``(k,)`` non-decreasing (:func:`bin_thresholds`).

    Returns:
        ``(N,)`` int64 bin indices in ``[-1, k - 1]``.

    Example:
        >>> bin_index(torch.tensor([0.5, 2.0, -9.0]), torch.tensor([-1.0, 1.0, 3.0])).tolist()
        [0, 1, -1]
    """
    m = _check_vector("measurements", measurements)
    t = _check_vector("thresholds", thresholds)
    return torch.searchsorted(t.contiguous(), m.contiguous(), right=False) - 1


def read_bins(weight_grad: Tensor, bias_grad: Tensor, *, limit: int | None = None,
              rtol: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Read inputs from an imprint layer's gradient: consecutive rows' differences.

    Row ``i`` of the result is ``(dW_i - dW_{i+1}) / (db_i - db_{i+1})`` (``dW_k = 0``,
    ``db_k = 0``), for the bins whose bias difference is non-zero: above ``rtol`` times
    the largest such difference. Rows come strongest first (largest ``|db_i - db_{i+1}|``).
    The ratio does not change when the gradient is scaled, so a FedAvg update of one
    local step (``-lr`` times the gradient) reads the same.

    Args:
        weight_grad: ``(k, d)`` gradient (or update) of the imprint layer's weight.
        bias_grad: ``(k,)`` gradient (or update) of its bias.
        limit: at most this many rows (the batch size: no more bins can hold an image).
        rtol: relative size below which a bias difference counts as zero (empty bin).

    Returns:
        ``(rows (n, d), bins (n,))``: the read inputs (float64) and their bin indices.

    Raises:
        InputShapeError: shapes that do not match.
        NonFiniteInputError: NaN or infinity in a gradient.
        ConfigError: a bad ``limit`` or ``rtol``.

    Example:
        >>> dW = torch.tensor([[3.0, 3.0], [1.0, 2.0]]); db = torch.tensor([2.0, 1.0])
        >>> rows, bins = read_bins(dW, db)
        >>> rows.tolist(), bins.tolist()
        ([[2.0, 1.0], [1.0, 2.0]], [0, 1])
    """
    w = _check_vector("weight_grad", weight_grad, dim=2)
    b = _check_vector("bias_grad", bias_grad)
    if b.shape[0] != w.shape[0]:
        raise InputShapeError.build(what="bias_grad", expected=f"shape ({w.shape[0]},)",
                                    received=tuple(b.shape), fix="pass the layer's own bias")
    if limit is not None:
        _check_int("limit", limit, 1)
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0 <= rtol < 1:
        raise ConfigError.build(what="rtol", expected="a float in [0, 1)", received=repr(rtol),
                                fix="pass rtol=1e-6")
    dw = w - torch.cat([w[1:], torch.zeros_like(w[:1])])
    db = b - torch.cat([b[1:], torch.zeros_like(b[:1])])
    size = db.abs()
    top = float(size.max())
    if top == 0.0:
        return w.new_zeros(0, w.shape[1]), torch.zeros(0, dtype=torch.long)
    order = torch.argsort(size, descending=True, stable=True)
    order = order[size[order] > rtol * top]
    if limit is not None:
        order = order[:limit]
    return dw[order] / db[order, None], order


def expected_fraction_for_bins(probabilities: Tensor, batch_size: int) -> float:
    """Expected fraction of a batch read exactly when its images fall into bins with
    the given probabilities: ``sum_j p_j (1 - p_j)^(B - 1)`` (an image is read exactly
    when it is alone in its bin).

    Args:
        probabilities: ``(k,)`` bin probabilities (non-negative; they are normalised to
            sum to 1).
        batch_size: ``B >= 1``.

    Returns:
        The expected fraction, in ``[0, 1]``.

    Raises:
        InputShapeError, NonFiniteInputError: a bad probability vector.
        ConfigError: negative probabilities, a zero sum or a bad ``batch_size``.

    Example:
        >>> expected_fraction_for_bins(torch.tensor([0.5, 0.5]), 2)
        0.5
        >>> expected_fraction_for_bins(torch.tensor([0.9, 0.1]), 2) < 0.5
        True
    """
    p = _check_vector("probabilities", probabilities)
    batch_size = _check_int("batch_size", batch_size, 1)
    if bool((p < 0).any()) or float(p.sum()) <= 0:
        raise ConfigError.build(what="probabilities", expected="non-negative, not all zero",
                                received=p.tolist()[:4], fix="pass bin frequencies")
    p = p / p.sum()
    return float((p * (1 - p) ** (batch_size - 1)).sum())


def expected_recovered_fraction(batch_size: int, bins: int) -> float:
    """Expected fraction of a batch of ``B`` images read exactly with ``k`` equiprobable
    bins: ``((k - 1) / k)^(B - 1)``.

    Args:
        batch_size: ``B >= 1``.
        bins: ``k >= 1``.

    Returns:
        The expected fraction, in ``[0, 1]``.

    Raises:
        ConfigError: a size that is not a positive int.

    Example:
        >>> expected_recovered_fraction(1, 4), expected_recovered_fraction(3, 2)
        (1.0, 0.25)
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    bins = _check_int("bins", bins, 1)
    return ((bins - 1) / bins) ** (batch_size - 1)


def nearest_psnr(reconstructed: Tensor, victims: Tensor) -> Tensor:
    """Each victim's PSNR against its nearest reconstruction (by MSE).

    Not the one-to-one pairing of :func:`~shieldsplit.functional.stats.match_order`:
    minimising the *total* MSE can hand an exact reconstruction to a look-alike victim
    and its own victim a nearer mixture (squared distances do not obey the triangle
    inequality); an image read exactly is recovered whatever else the attack returned.

    Args:
        reconstructed: ``(n, C, H, W)`` in ``[0, 1]`` (``n >= 1``).
        victims: ``(B, C, H, W)`` the true images.

    Returns:
        ``(B,)`` PSNR in dB (inf for an identical image).

    Raises:
        InputShapeError: images of different shapes, or no reconstruction.

    Example:
        >>> v = torch.zeros(2, 1, 2, 2)
        >>> nearest_psnr(torch.stack([v[0] + 0.1, v[1] + 0.01]), v).round().tolist()
        [40.0, 40.0]
    """
    if len(reconstructed) == 0:
        raise InputShapeError.build(what="reconstructed", expected="at least one image",
                                    received="none", fix="pass the attack's images")
    nearest = pairwise_mse(victims, reconstructed).argmin(dim=1)
    return psnr(reconstructed[nearest], victims)


def recovered_mask(reconstructed: Tensor, victims: Tensor, *,
                   min_psnr: float = EXACT_PSNR_DB) -> Tensor:
    """Which victims an attack recovered almost exactly: a victim counts when its
    nearest reconstruction (:func:`nearest_psnr`) is at least ``min_psnr`` dB from it.

    Args:
        reconstructed: ``(n, C, H, W)`` in ``[0, 1]``.
        victims: ``(B, C, H, W)`` the true images.
        min_psnr: the threshold in dB (:data:`EXACT_PSNR_DB`).

    Returns:
        ``(B,)`` bool.

    Raises:
        InputShapeError: images of different shapes, or no reconstruction.

    Example:
        >>> v = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        >>> rec = torch.stack([v[2], v[0] + 1e-5, v[1] + 1e-2])   # 100 dB, 40 dB
        >>> recovered_mask(rec, v).tolist()
        [True, False, True]
    """
    return nearest_psnr(reconstructed, victims) >= float(min_psnr)


__all__ = [
    "EXACT_PSNR_DB",
    "bin_index",
    "bin_thresholds",
    "expected_fraction_for_bins",
    "expected_recovered_fraction",
    "nearest_psnr",
    "read_bins",
    "recovered_mask",
]
