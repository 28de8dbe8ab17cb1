"""Robust PCA by accelerated proximal gradient: the tensor kernels, without validation.

The maths of PGSL's recovery step (Khowaja et al. 2022, eqs. 2-6), solved as in
Lin, Ganesh, Wright, Wu, Chen and Ma (2009):
``min_{L,S} mu * (||L||_* + lam * ||S||_1) + 1/2 * ||D - L - S||_F^2``.

These functions check nothing and raise nothing of their own: the validated
public entry points are in :mod:`shieldsplit.defenses.pgsl.recovery`, which calls them. They
compile with :func:`torch.jit.script` (typed arguments, no keyword-only options),
so :meth:`shieldsplit.SplitShield.export` can carry the recovery into a scripted
module.

Example:
    >>> import torch
    >>> soft_threshold_kernel(torch.tensor([-3.0, 0.5, 2.0]), 1.0)
    tensor([-2.,  0.,  1.])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: The smallest positive normal float64 (``torch.finfo(torch.float64).tiny``).
FLOAT64_TINY = 2.2250738585072014e-308
#: Floor of the relative-change denominator.
EPS = 1e-12


def _per_matrix(tau: float | Tensor, like: Tensor) -> Tensor:
    """A threshold (one float, or one per matrix) that broadcasts against ``(..., k)``."""
    if isinstance(tau, Tensor):
        return tau.to(device=like.device, dtype=like.dtype).unsqueeze(-1)
    return torch.tensor(tau, dtype=like.dtype, device=like.device)


def soft_threshold_kernel(x: Tensor, tau: float | Tensor) -> Tensor:
    """``sign(x) * max(|x| - tau, 0)``: the prox of ``tau * ||.||_1``.

    Args:
        x: any tensor.
        tau: a threshold that broadcasts against ``x``.

    Returns:
        The thresholded tensor (dtype of ``x``).
    """
    if isinstance(tau, Tensor):
        return torch.sign(x) * torch.clamp(x.abs() - tau.to(device=x.device, dtype=x.dtype), min=0)
    return torch.sign(x) * torch.clamp(x.abs() - float(tau), min=0)


def svt_svd_kernel(m: Tensor, tau: float | Tensor) -> Tensor:
    """Singular-value soft-thresholding of a batch ``(..., m, n)`` through the SVD.

    Args:
        m: floating batch of matrices.
        tau: a float, or one threshold per matrix (shape ``m.shape[:-2]``).

    Returns:
        ``U diag(max(sigma - tau, 0)) V^T``, dtype of ``m``.
    """
    work = m if m.dtype == torch.float32 or m.dtype == torch.float64 else m.float()
    u, s, vh = torch.linalg.svd(work, full_matrices=False)
    t = _per_matrix(tau, s)
    return ((u * torch.clamp(s - t, min=0).unsqueeze(-2)) @ vh).to(m.dtype)


def svt_gram_kernel(m: Tensor, tau: float | Tensor) -> Tensor:
    """Singular-value soft-thresholding through the eigendecomposition of the Gram matrix.

    ``U diag(max(1 - tau / sigma, 0)) U^T M`` (or ``M U diag(.) U^T`` for tall
    matrices) with ``Gram = U diag(sigma^2) U^T`` of the smaller side, computed in
    float64; exact, since ``U^T M = diag(sigma) V^T``.

    Args:
        m: floating batch of matrices ``(..., m, n)``.
        tau: a float, or one threshold per matrix (shape ``m.shape[:-2]``).

    Returns:
        The thresholded matrices, dtype of ``m``.
    """
    rows, cols = m.shape[-2], m.shape[-1]
    wide = rows <= cols
    m64 = m.to(torch.float64)
    gram = m64 @ m64.mT if wide else m64.mT @ m64
    eigvals, eigvecs = torch.linalg.eigh(gram)
    sigma = torch.sqrt(torch.clamp(eigvals, min=0))
    t = _per_matrix(tau, sigma)
    # sigma <= tau (sigma = 0 included) gives factor 0; the clamp keeps the division finite.
    tiny = 2.2250738585072014e-308  # FLOAT64_TINY (a scripted function reads no global)
    factor = torch.clamp(1 - t / torch.clamp(sigma, min=tiny), min=0)
    proj = (eigvecs * factor.unsqueeze(-2)) @ eigvecs.mT  # U diag(factor) U^T, k x k
    if m.dtype == torch.float64:
        return proj @ m if wide else m @ proj
    work = m if m.dtype == torch.float32 else m.float()
    proj32 = proj.to(work.dtype)
    out = proj32 @ work if wide else work @ proj32
    return out.to(m.dtype)


def apg_kernel(
    d: Tensor,
    low: Tensor,
    sparse: Tensor,
    mu: float,
    lam: float,
    max_iter: int,
    tol: float,
    mu_final: float,
    eta: float,
    use_svd: bool,
) -> tuple[Tensor, Tensor, int, bool, float]:
    """Accelerated proximal gradient for relaxed robust PCA, from ``(low, sparse)``.

    Step 1/2 (the smooth part has Lipschitz constant 2), Nesterov momentum,
    ``mu`` decreased geometrically to ``mu_final`` (``mu_final == mu``: fixed).
    Stops after ``max_iter`` iterations, or once ``mu`` is at ``mu_final`` and the
    batch-wide relative change of ``(L, S)`` is below ``tol``.

    Args:
        d: observed matrices ``(..., m, n)``.
        low: starting low-rank part, shape of ``d``.
        sparse: starting sparse part, shape of ``d``.
        mu: relaxation parameter (the starting value under continuation).
        lam: sparsity weight.
        max_iter: at most this many iterations.
        tol: stopping threshold on the relative change.
        mu_final: the continuation's target (``mu`` for none).
        eta: the continuation factor.
        use_svd: threshold singular values through the SVD instead of the Gram matrix.

    Returns:
        ``(low_rank, sparse, iterations, converged, last relative change)``.
    """
    low_prev, sparse_prev = low, sparse
    t_prev = 1.0
    t = 1.0
    mu_k = mu
    residual = math.inf
    converged = False
    iterations = 0
    for k in range(1, max_iter + 1):
        beta = (t_prev - 1.0) / t
        y_low = low + beta * (low - low_prev) if beta != 0.0 else low
        y_sparse = sparse + beta * (sparse - sparse_prev) if beta != 0.0 else sparse
        half_grad = 0.5 * (y_low + y_sparse - d)
        if use_svd:
            low_next = svt_svd_kernel(y_low - half_grad, mu_k / 2)
        else:
            low_next = svt_gram_kernel(y_low - half_grad, mu_k / 2)
        sparse_next = soft_threshold_kernel(y_sparse - half_grad, lam * mu_k / 2)
        moved = (low_next - low).pow(2).sum() + (sparse_next - sparse).pow(2).sum()
        change = float(torch.sqrt(moved))
        size = float(torch.sqrt(low.pow(2).sum() + sparse.pow(2).sum()))
        residual = change / max(size, 1e-12)  # EPS
        low_prev, sparse_prev, low, sparse = low, sparse, low_next, sparse_next
        t_prev, t = t, (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        iterations = k
        at_target = mu_k == mu_final
        mu_k = max(eta * mu_k, mu_final)
        if at_target and residual < tol:
            converged = True
            break
    return low, sparse, iterations, converged, residual


def recover_kernel(
    x: Tensor,
    mu: float,
    lam: float | None,
    max_iter: int,
    tol: float,
    channels_x_pixels: bool,
    start_from_data: bool,
) -> Tensor:
    """The low-rank part of a ``(B, C, H, W)`` batch (PGSL step d), without checks.

    Args:
        x: the batch.
        mu: relaxation parameter.
        lam: sparsity weight, or None for ``1 / sqrt(max(m, n))``.
        max_iter: APG iterations at most.
        tol: stopping threshold.
        channels_x_pixels: one ``(C, H*W)`` matrix per sample, else one ``(H, W)``
            matrix per channel plane.
        start_from_data: start at ``(L, S) = (D, 0)``, else at ``(0, 0)``.

    Returns:
        The recovered batch, shape of ``x``, detached.
    """
    b, c, h, w = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    d = (x.reshape(b, c, h * w) if channels_x_pixels else x).detach()
    weight = 1.0 / math.sqrt(max(d.shape[-2], d.shape[-1])) if lam is None else lam
    low0 = d if start_from_data else torch.zeros_like(d)
    low, _, _, _, _ = apg_kernel(d, low0, torch.zeros_like(d), mu, weight, max_iter, tol, mu,
                                 0.9, False)
    return low.reshape(b, c, h, w)


__all__ = [
    "EPS",
    "FLOAT64_TINY",
    "apg_kernel",
    "recover_kernel",
    "soft_threshold_kernel",
    "svt_gram_kernel",
    "svt_svd_kernel",
]
