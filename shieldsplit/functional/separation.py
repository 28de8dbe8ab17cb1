"""Pure source separation: the per-image features hidden in a batch's linear-layer gradient.

The weight gradient of ``y = W h + b`` over a batch of ``B`` images is a sum of rank-one
terms ``sum_i g_i h_i^T`` (``g_i`` the gradient at the layer's output for image ``i``):
its rows are mixtures of the ``B`` inputs ``h_i``. Separating them is a blind source
separation problem (the Cocktail Party Attack, Kariyappa et al., ICML 2023, runs ICA on
it). The features of ReLU networks are non-negative and sparse, which pins the
separation down better than independence alone.

- :func:`fast_ica`: FastICA (Hyvarinen & Oja 2000; parallel, log-cosh contrast) on the
  rows of a matrix: the unmixing matrix of the whitened data (tested against
  scikit-learn's ``FastICA``).
- :func:`refine_nonnegative`: semi-non-negative matrix factorisation ``X ~ A S`` with
  ``S >= 0`` (``A`` free), alternating least squares from an initial ``S``.
- :func:`separate_nonnegative_sources`: the two together: rank by singular values,
  ICA, each source's sign chosen by its skewness (sparse non-negative sources are
  right-skewed), then the non-negative refinement, re-seeded from the samples where
  one source dominates. Sources come back up to scale.

Example:
    >>> import torch
    >>> gen = torch.Generator().manual_seed(0)
    >>> sources = torch.rand(3, 2000, generator=gen).pow(4)       # sparse, non-negative
    >>> mixing = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    >>> found = separate_nonnegative_sources(mixing @ sources.double(), max_sources=3)
    >>> cos = torch.nn.functional.normalize(found, dim=1) @ torch.nn.functional.normalize(
    ...     sources.double(), dim=1).T
    >>> bool((cos.max(dim=1).values > 0.99).all())
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from shieldsplit.errors import ConfigError, InputShapeError, NonFiniteInputError


def _check_matrix(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 2 or x.numel() == 0:
        received = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputShapeError.build(
            what=name, expected="a non-empty 2-D tensor (mixtures, samples)",
            received=received, fix="pass one mixture per row",
        )
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteInputError.build(
            what=name, expected="finite values", received="NaN or infinity",
            fix="pass a finite matrix",
        )
    return x.detach().double()


def _check_count(name: str, value: object, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ConfigError.build(
            what=name, expected=f"an int in [1, {limit}]", received=repr(value),
            fix=f"pass {name} between 1 and the number of mixtures ({limit})",
        )
    return value


def _symmetric_decorrelation(w: Tensor) -> Tensor:
    """``(W W^T)^(-1/2) W``: the nearest matrix with orthonormal rows."""
    vals, vecs = torch.linalg.eigh(w @ w.T)
    return vecs @ torch.diag(vals.clamp_min(1e-300).rsqrt()) @ vecs.T @ w


def fast_ica(
    mixtures: Tensor, *, components: int, seed: int = 0, max_iter: int = 1000,
    tol: float = 1e-7,
) -> Tensor:
    """FastICA: the unmixing matrix of the rows of ``mixtures`` (parallel, log-cosh).

    The rows are centred over the samples (columns), whitened to ``components``
    unit-variance directions by an SVD, and rotated by the fixed-point iteration of
    Hyvarinen & Oja (2000) with symmetric decorrelation and ``G(u) = log cosh u``,
    as scikit-learn's ``FastICA(algorithm="parallel", fun="logcosh",
    whiten="unit-variance")``.

    Args:
        mixtures: ``(M, T)``: ``M`` mixtures of ``T`` samples each.
        components: number of sources to find, ``<= min(M, T)``.
        seed: seeds the initial rotation.
        max_iter: fixed-point iterations at most.
        tol: stop when every row of the rotation moved by less than this.

    Returns:
        ``(components, M)`` float64 unmixing matrix ``U``: the sources are
        ``U @ (mixtures - mixtures.mean(1, keepdim=True))``, each of unit variance, in
        no particular order or sign.

    Raises:
        InputShapeError: if ``mixtures`` is not a non-empty 2-D tensor.
        NonFiniteInputError: if it holds NaN or infinity.
        ConfigError: if ``components`` is out of range.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> s = torch.stack([torch.rand(500, generator=gen), torch.randn(500, generator=gen)])
        >>> u = fast_ica(torch.tensor([[1.0, 2.0], [1.0, -1.0]]) @ s, components=2)
        >>> u.shape
        torch.Size([2, 2])
    """
    x = _check_matrix("mixtures", mixtures)
    m, t = x.shape
    k = _check_count("components", components, min(m, t))
    xc = x - x.mean(dim=1, keepdim=True)
    u, s, _ = torch.linalg.svd(xc, full_matrices=False)
    whiten = (u[:, :k] / s[:k].clamp_min(1e-300)).T * math.sqrt(t)
    z = whiten @ xc
    gen = torch.Generator().manual_seed(seed)
    w = _symmetric_decorrelation(torch.randn(k, k, generator=gen, dtype=torch.float64))
    for _ in range(max_iter):
        gz = torch.tanh(w @ z)
        new = _symmetric_decorrelation(
            gz @ z.T / t - (1 - gz.pow(2)).mean(dim=1, keepdim=True) * w
        )
        moved = float(((new * w).sum(dim=1).abs() - 1).abs().max())
        w = new
        if moved < tol:
            break
    return w @ whiten


def refine_nonnegative(mixtures: Tensor, sources: Tensor, *, iterations: int = 100) -> Tensor:
    """Semi-NMF ``mixtures ~ A @ S`` with ``S >= 0`` by alternating least squares.

    Starting from ``sources`` (clamped at 0), alternately solve for the free mixing
    matrix ``A`` and for ``S``, clamping ``S`` at zero. Sparse non-negative sources
    with exact zeros (ReLU features) are identifiable this way where ICA alone blurs
    them.

    Args:
        mixtures: ``(M, T)``.
        sources: ``(K, T)`` initial sources (e.g. from :func:`fast_ica`).
        iterations: alternations.

    Returns:
        ``(K, T)`` float64 non-negative sources (up to scale).

    Raises:
        InputShapeError: on a non-2-D input or mismatched sample counts.
        NonFiniteInputError: on NaN or infinity.
        ConfigError: if ``iterations`` is not a positive int.

    Example:
        >>> s = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 3.0, 0.0, 1.0]])
        >>> a = torch.tensor([[1.0, 1.0], [2.0, -1.0], [0.5, 0.0]])
        >>> found = refine_nonnegative(a @ s, s - 0.2)  # a rough start, clamped at 0
        >>> fit = torch.linalg.lstsq(found.T, (a @ s).double().T).solution.T @ found
        >>> bool((found >= 0).all()), bool(torch.allclose(fit, (a @ s).double(), atol=1e-6))
        (True, True)
    """
    x = _check_matrix("mixtures", mixtures)
    s = _check_matrix("sources", sources)
    if s.shape[1] != x.shape[1]:
        raise InputShapeError.build(
            what="sources", expected=f"(K, {x.shape[1]})", received=tuple(s.shape),
            fix="pass sources over the same samples as the mixtures",
        )
    _check_count("iterations", iterations, 10**9)
    s = s.clamp_min(0)
    eye = torch.eye(s.shape[0], dtype=torch.float64)
    for _ in range(iterations):
        gram = s @ s.T
        ridge = 1e-12 * float(gram.diagonal().mean().clamp_min(1e-300))
        a = torch.linalg.solve(gram + ridge * eye, s @ x.T).T
        gram_a = a.T @ a
        ridge = 1e-12 * float(gram_a.diagonal().mean().clamp_min(1e-300))
        s = torch.linalg.solve(gram_a + ridge * eye, a.T @ x).clamp_min(0)
    return s


def _pure_columns(x: Tensor, s: Tensor) -> Tensor:
    """Re-estimate the sources from the columns where one source dominates (SPA)."""
    k = s.shape[0]
    a = torch.linalg.lstsq(s.T, x.T).solution.T  # x ~ a s
    y = torch.linalg.lstsq(a, x).solution  # (k, T) current unmixed columns
    total = y.sum(dim=0)
    ok = total > total.quantile(0.5)
    cols = torch.nonzero(ok).flatten()
    r = y[:, cols] / total[cols]
    chosen = []
    for _ in range(k):
        j = int(r.norm(dim=0).argmax())
        chosen.append(int(cols[j]))
        v = r[:, j] / r[:, j].norm().clamp_min(1e-300)
        r = r - torch.outer(v, v @ r)
    mixing = x[:, chosen]
    return torch.linalg.lstsq(mixing, x).solution.clamp_min(0)


def separate_nonnegative_sources(
    mixtures: Tensor, *, max_sources: int, seed: int = 0, rank_tol: float = 1e-4,
    iterations: int = 100, pure: bool = True,
) -> Tensor:
    """The non-negative sparse sources whose linear mixtures are the rows of ``mixtures``.

    The number of sources is the number of singular values above ``rank_tol`` times
    the largest (at most ``max_sources``); :func:`fast_ica` finds them, each is
    flipped to be right-skewed (sparse non-negative signals are), and
    :func:`refine_nonnegative` enforces non-negativity.

    Args:
        mixtures: ``(M, T)``, e.g. the rows of a batch's weight gradient.
        max_sources: the most sources to look for (the batch size).
        seed: seeds ICA's initial rotation.
        rank_tol: relative singular-value threshold of the rank.
        iterations: non-negative refinement steps (each of two passes).
        pure: after the first refinement, re-estimate the mixing from the samples
            where one source dominates (the successive projection algorithm of
            separable NMF, Gillis & Vavasis 2014) and refine again: ReLU features
            have many samples where only one image is non-zero.

    Returns:
        ``(K, T)`` float64 sources, ``K <= max_sources``, each of unit L2 norm (a
        source is found up to scale), in no particular order.

    Raises:
        InputShapeError: if ``mixtures`` is not a non-empty 2-D tensor.
        NonFiniteInputError: if it holds NaN or infinity.
        ConfigError: if ``max_sources`` is not a positive int.

    Example:
        >>> separate_nonnegative_sources(torch.zeros(4, 10), max_sources=2).shape
        torch.Size([0, 10])
    """
    x = _check_matrix("mixtures", mixtures)
    _check_count("max_sources", max_sources, 10**9)
    sv = torch.linalg.svdvals(x)
    if float(sv[0]) == 0.0:
        return x.new_zeros(0, x.shape[1])
    k = min(int((sv > rank_tol * sv[0]).sum()), max_sources, x.shape[1])
    unmix = fast_ica(x, components=k, seed=seed)
    s = unmix @ x  # the unmixing applies to the uncentred mixtures too (it is linear)
    centred = s - s.mean(dim=1, keepdim=True)
    s = s * torch.where(centred.pow(3).mean(dim=1, keepdim=True) < 0, -1.0, 1.0)
    s = refine_nonnegative(x, s, iterations=iterations)
    if pure:
        s = refine_nonnegative(x, _pure_columns(x, s), iterations=iterations)
    keep = s.norm(dim=1) > 0
    return torch.nn.functional.normalize(s[keep], dim=1)


__all__ = ["fast_ica", "refine_nonnegative", "separate_nonnegative_sources"]
