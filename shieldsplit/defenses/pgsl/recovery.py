"""Proximal-gradient recovery: relaxed robust PCA solved by accelerated proximal gradient.

This is step (d) of Proximal Gradient Split Learning (PGSL; Khowaja et al. 2022,
"Get your Foes Fooled", eqs. 2-6). An observed, possibly attacked, matrix ``D``
is split into a low-rank part ``L`` (the recovered content) and a sparse part
``S`` (which absorbs a few-pixel attack) by solving the relaxed robust-PCA
problem of Lin, Ganesh, Wright, Wu, Chen and Ma (2009, "Fast convex
optimization algorithms for exact recovery of a corrupted low-rank matrix"):

.. math::

    \\min_{L,S}\\; \\mu\\,(\\|L\\|_* + \\lambda\\|S\\|_1) + \\tfrac12\\|D - L - S\\|_F^2

with accelerated proximal gradient (APG, Nesterov momentum). The smooth part
``1/2 ||D - L - S||_F^2`` has Lipschitz constant 2 in ``(L, S)``, so the step
size is 1/2. The proximal operators are singular-value soft-thresholding for
the nuclear norm and elementwise soft-thresholding for the L1 norm.

Every function works on a batch of matrices of shape ``(..., m, n)``: the
leading dimensions are batch dimensions and each matrix is solved on its own.
Recovery is a non-differentiable pre-processing step, so :func:`rpca_apg` and
:func:`recover` run under :func:`torch.no_grad` and return detached tensors.

Example:
    >>> import torch
    >>> from shieldsplit.defenses.pgsl.recovery import recover
    >>> x = torch.rand(2, 8, 6, 6)
    >>> recover(x).shape
    torch.Size([2, 8, 6, 6])
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal, TypeGuard

import torch
from torch import Tensor, nn

from shieldsplit._core.validate import check_int, check_number
from shieldsplit.errors import ConfigError, InputShapeError, NonFiniteInputError
from shieldsplit.functional.rpca import (
    apg_kernel,
    recover_kernel,
    soft_threshold_kernel,
    svt_gram_kernel,
    svt_svd_kernel,
)

__all__ = [
    "ProximalRecovery",
    "RPCAResult",
    "recover",
    "rpca_apg",
    "rpca_objective",
    "singular_value_threshold",
    "soft_threshold",
]

logger = logging.getLogger(__name__)

SVTMethod = Literal["gram", "svd"]
MatrixMode = Literal["channels_x_pixels", "rows_x_cols"]

_SVT_METHODS: tuple[str, ...] = ("gram", "svd")
_MATRIX_MODES: tuple[str, ...] = ("channels_x_pixels", "rows_x_cols")


# --------------------------------------------------------------------------- validation


def _is_real_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_positive(name: str, value: object, fix: str) -> float:
    return check_number(name, value, low=0.0, low_open=True, fix=fix)


def _check_tau(tau: float | Tensor) -> None:
    if isinstance(tau, Tensor):
        if tau.is_complex() or not torch.isfinite(tau).all() or bool((tau < 0).any()):
            raise ConfigError.build(
                what="tau",
                expected="finite thresholds >= 0",
                received=f"a tensor of shape {tuple(tau.shape)} with negative or non-finite values",
                fix="pass tau >= 0",
            )
        return
    if not _is_real_number(tau) or not math.isfinite(float(tau)) or float(tau) < 0:
        raise ConfigError.build(
            what="tau",
            expected="a finite number >= 0 or a tensor of them",
            received=repr(tau),
            fix="pass tau >= 0",
        )


def _check_matrix_batch(d: object, name: str) -> Tensor:
    if not isinstance(d, Tensor) or not d.is_floating_point():
        received = f"a tensor of dtype {d.dtype}" if isinstance(d, Tensor) else type(d).__name__
        raise InputShapeError.build(
            what=name,
            expected="a floating-point torch.Tensor",
            received=received,
            fix=f"convert {name} with torch.as_tensor(...).float()",
        )
    if d.ndim < 2 or d.shape[-1] == 0 or d.shape[-2] == 0:
        raise InputShapeError.build(
            what=name,
            expected="a batch of non-empty matrices of shape (..., m, n) with m, n >= 1",
            received=f"shape {tuple(d.shape)}",
            fix=f"reshape {name} so that its last two dimensions are the matrix",
        )
    if not bool(torch.isfinite(d).all()):
        raise NonFiniteInputError.build(
            what=name,
            expected="only finite values",
            received=f"{int((~torch.isfinite(d)).sum())} NaN or infinite entries",
            fix=f"clean {name} (for example torch.nan_to_num) before recovery",
        )
    return d


# --------------------------------------------------------------------------- proximal operators


def soft_threshold(x: Tensor, tau: float | Tensor) -> Tensor:
    """Elementwise soft-thresholding, the proximal operator of ``tau * ||.||_1``.

    Computes ``sign(x) * max(|x| - tau, 0)``, the minimiser over ``z`` of
    ``tau * ||z||_1 + 1/2 * ||z - x||_2^2`` (the sparse update of Khowaja et al.
    2022, PGSL, eqs. 2-6; Lin et al. 2009).

    Args:
        x: input tensor of any shape.
        tau: threshold ``>= 0``; a float or a tensor that broadcasts against ``x``.

    Returns:
        A tensor of the broadcast shape of ``x`` and ``tau``, dtype of ``x``.

    Raises:
        ConfigError: if ``tau`` is negative or not finite.

    Example:
        >>> import torch
        >>> soft_threshold(torch.tensor([-3.0, 0.5, 2.0]), 1.0)
        tensor([-2.,  0.,  1.])
    """
    _check_tau(tau)
    return soft_threshold_kernel(x, tau)


def _check_tau_broadcast(tau: float | Tensor, batch_shape: torch.Size) -> None:
    """A tensor threshold must give one value per matrix of the batch."""
    if not isinstance(tau, Tensor):
        return
    try:
        torch.broadcast_shapes(tau.shape, batch_shape)
    except RuntimeError as exc:
        raise ConfigError.build(
            what="tau",
            expected=f"a float or a tensor broadcastable to the batch shape {tuple(batch_shape)}",
            received=f"shape {tuple(tau.shape)}",
            fix="pass one threshold per matrix (shape equal to the leading dimensions)",
        ) from exc


def singular_value_threshold(
    m: Tensor, tau: float | Tensor, *, method: SVTMethod = "gram"
) -> Tensor:
    """Singular-value soft-thresholding, the proximal operator of ``tau * ||.||_*``.

    For ``M = U diag(sigma) V^T`` returns ``U diag(max(sigma - tau, 0)) V^T``, the
    minimiser over ``X`` of ``tau * ||X||_* + 1/2 * ||X - M||_F^2`` (the low-rank
    update of Khowaja et al. 2022, PGSL, eqs. 2-6; Lin et al. 2009). Works on a
    batch of matrices ``(..., m, n)``.

    ``method="svd"`` uses :func:`torch.linalg.svd`. ``method="gram"`` (the default,
    much faster for wide or tall matrices) forms the ``k x k`` Gram matrix of the
    smaller side ``k = min(m, n)`` (``M M^T`` if ``m <= n`` else ``M^T M``),
    eigendecomposes it with :func:`torch.linalg.eigh` (``Gram = U diag(sigma^2) U^T``)
    and returns ``U diag(max(1 - tau / sigma, 0)) U^T M`` (or ``M U diag(.) U^T``),
    which is exactly the SVT since ``U^T M = diag(sigma) V^T``. Singular values
    ``sigma <= tau`` (including ``sigma = 0``) get factor 0. The Gram matrix and
    its eigendecomposition are computed in float64 for inputs of lower precision,
    and the result is returned in the input dtype. Squaring through the Gram
    matrix costs accuracy only for singular values far below the largest one,
    which matter only when ``tau`` is tiny.

    Args:
        m: batch of matrices, shape ``(..., m, n)``, floating point.
        tau: threshold ``>= 0``: a float, or a tensor broadcastable to the batch
            shape ``m.shape[:-2]`` (one threshold per matrix).
        method: ``"gram"`` (eigh of the Gram matrix) or ``"svd"``.

    Returns:
        The thresholded matrices, same shape and dtype as ``m``.

    Raises:
        InputShapeError: if ``m`` is not a floating tensor with ``ndim >= 2``.
        ConfigError: if ``tau`` is negative, not finite or of a bad shape, or
            ``method`` is unknown.

    Example:
        >>> import torch
        >>> m = torch.diag(torch.tensor([3.0, 1.0, 0.5]))
        >>> out = singular_value_threshold(m, 0.75)
        >>> torch.linalg.svdvals(out).round(decimals=3)
        tensor([2.2500, 0.2500, 0.0000])
    """
    _check_matrix_batch_shape(m)
    _check_tau(tau)
    if method not in _SVT_METHODS:
        raise ConfigError.build(
            what="method",
            expected=f"one of {list(_SVT_METHODS)}",
            received=repr(method),
            fix='pass method="gram" or method="svd"',
        )
    _check_tau_broadcast(tau, m.shape[:-2])
    if method == "svd":
        return svt_svd_kernel(m, tau)
    return svt_gram_kernel(m, tau)


def _check_matrix_batch_shape(m: object) -> None:
    if not isinstance(m, Tensor) or not m.is_floating_point() or m.ndim < 2:
        received = (
            f"a tensor of dtype {m.dtype} and shape {tuple(m.shape)}"
            if isinstance(m, Tensor)
            else type(m).__name__
        )
        raise InputShapeError.build(
            what="m",
            expected="a floating-point tensor of shape (..., m, n)",
            received=received,
            fix="pass a batch of matrices whose last two dimensions are the matrix",
        )


# --------------------------------------------------------------------------- APG solver


@dataclass(frozen=True)
class RPCAResult:
    """Output of :func:`rpca_apg`.

    Attributes:
        low_rank: the low-rank part ``L``, same shape and dtype as ``D``.
        sparse: the sparse part ``S``, same shape and dtype as ``D``.
        iterations: number of APG iterations run.
        converged: whether the relative change fell below ``tol`` (at the final
            ``mu`` when continuation is used).
        residual: relative change ``||X_{k+1} - X_k||_F / max(||X_k||_F, eps)`` of
            ``X = (L, S)`` over the whole batch at the last iteration.
    """

    low_rank: Tensor
    sparse: Tensor
    iterations: int
    converged: bool
    residual: float


def rpca_objective(
    d: Tensor, low_rank: Tensor, sparse: Tensor, *, mu: float, lam: float | None = None
) -> Tensor:
    """Relaxed robust-PCA objective, one value per matrix of the batch.

    ``mu * (||L||_* + lam * ||S||_1) + 1/2 * ||D - L - S||_F^2`` (Khowaja et al.
    2022, PGSL, eqs. 2-6; Lin et al. 2009).

    Args:
        d: observed matrices, shape ``(..., m, n)``.
        low_rank: ``L``, same shape as ``d``.
        sparse: ``S``, same shape as ``d``.
        mu: relaxation parameter ``> 0``.
        lam: sparsity weight ``> 0``; ``None`` means ``1 / sqrt(max(m, n))``.

    Returns:
        A tensor of shape ``d.shape[:-2]`` with the objective of each matrix.

    Raises:
        InputShapeError: if the tensors are not matching floating batches of matrices.
        ConfigError: if ``mu`` or ``lam`` is not a finite positive number.

    Example:
        >>> import torch
        >>> d = torch.eye(3)
        >>> rpca_objective(d, d, torch.zeros(3, 3), mu=0.5, lam=1.0).item()
        1.5
    """
    _check_matrix_batch_shape(d)
    if (
        not isinstance(low_rank, Tensor)
        or not isinstance(sparse, Tensor)
        or (low_rank.shape != d.shape or sparse.shape != d.shape)
    ):
        raise InputShapeError.build(
            what="low_rank/sparse",
            expected=f"tensors of the shape of d, {tuple(d.shape)}",
            received=f"{getattr(low_rank, 'shape', low_rank)} and "
            f"{getattr(sparse, 'shape', sparse)}",
            fix="pass L and S with the same shape as D",
        )
    mu = _check_positive("mu", mu, "pass mu > 0, for example the paper's 0.55")
    lam = _default_lam(d, lam)
    nuclear = torch.linalg.matrix_norm(low_rank, ord="nuc")
    l1 = sparse.abs().sum(dim=(-2, -1))
    fit = 0.5 * (d - low_rank - sparse).pow(2).sum(dim=(-2, -1))
    return mu * (nuclear + lam * l1) + fit


def _default_lam(d: Tensor, lam: float | None) -> float:
    if lam is None:
        return 1.0 / math.sqrt(max(d.shape[-2], d.shape[-1]))
    return _check_positive("lam", lam, "pass lam > 0 or lam=None for 1/sqrt(max(m, n))")


def _check_solver_settings(
    mu: object, lam: object, max_iter: object, tol: object
) -> tuple[float, float | None, int, float]:
    """Validate the settings shared by :func:`rpca_apg`, :func:`recover` and the module."""
    mu_checked = _check_positive("mu", mu, "pass mu > 0, for example the paper's 0.55")
    lam_checked = None
    if lam is not None:
        lam_checked = _check_positive("lam", lam, "pass lam > 0 or lam=None for 1/sqrt(max(m, n))")
    max_iter = check_int("max_iter", max_iter, low=1,
                         fix="pass max_iter=10 (the default) or another positive integer")
    tol_checked = check_number("tol", tol, low=0.0, low_open=False, fix="pass tol=1e-4")
    return mu_checked, lam_checked, max_iter, tol_checked


def _check_matrix_mode(matrix: object) -> None:
    if matrix not in _MATRIX_MODES:
        raise ConfigError.build(
            what="matrix",
            expected=f"one of {list(_MATRIX_MODES)}",
            received=repr(matrix),
            fix='pass matrix="channels_x_pixels" or matrix="rows_x_cols"',
        )


@torch.no_grad()
def rpca_apg(
    d: Tensor,
    *,
    mu: float = 0.55,
    lam: float | None = None,
    max_iter: int = 10,
    tol: float = 1e-4,
    svt_method: SVTMethod = "gram",
    init: tuple[Tensor, Tensor] | None = None,
    mu_final: float | None = None,
    eta: float = 0.9,
) -> RPCAResult:
    """Split a batch of matrices into low-rank plus sparse parts with APG.

    Solves, independently for each matrix ``D`` of shape ``(m, n)`` in the batch,
    the relaxed robust-PCA problem of Khowaja et al. 2022 (PGSL, eqs. 2-6), as
    in Lin, Ganesh, Wright, Wu, Chen and Ma 2009:

    ``min_{L,S} mu * (||L||_* + lam * ||S||_1) + 1/2 * ||D - L - S||_F^2``

    by accelerated proximal gradient with step 1/2 (the Lipschitz constant of the
    smooth part is 2) and Nesterov momentum::

        t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2
        Y = X_k + ((t_{k-1} - 1) / t_k) (X_k - X_{k-1})     for X = L and X = S
        G = Y_L + Y_S - D
        L_{k+1} = SVT_{mu/2}(Y_L - G/2)
        S_{k+1} = soft_{lam*mu/2}(Y_S - G/2)

    ``mu`` is fixed (the paper's relaxation parameter, 0.55) unless ``mu_final``
    is given: then ``mu`` is the starting value and it is decreased geometrically,
    ``mu_{k+1} = max(eta * mu_k, mu_final)`` (the continuation of Lin et al.), which
    reaches a small ``mu_final`` much faster than starting there.

    Iteration stops after ``max_iter`` iterations or once the relative change
    ``||X_{k+1} - X_k||_F / max(||X_k||_F, eps)`` of ``X = (L, S)``, measured over
    the whole batch, is below ``tol`` (with continuation only once ``mu`` has
    reached ``mu_final``). Because the stopping test is batch-wide, a matrix can
    get a different number of iterations in a batch than alone; pass ``tol=0`` to
    always run ``max_iter`` iterations and make every matrix's result independent
    of the rest of the batch.

    From the default zero start, the first step splits ``D`` about evenly
    (``L ~ S ~ D / 2``) and only slowly moves away from that, so with a handful of
    iterations the low-rank part has about half the norm of ``D``. When only a
    few iterations are affordable, ``init=(d, torch.zeros_like(d))`` starts much
    closer to the solution.

    This is a non-differentiable pre-processing step: it runs under
    :func:`torch.no_grad` and the returned tensors carry no autograd history.

    Args:
        d: observed matrices, shape ``(..., m, n)``, floating point, finite.
        mu: relaxation parameter ``> 0`` (the starting value under continuation).
        lam: sparsity weight ``> 0``; ``None`` means ``1 / sqrt(max(m, n))``.
        max_iter: maximum number of APG iterations, ``>= 1``.
        tol: stopping threshold ``>= 0`` on the relative change.
        svt_method: ``"gram"`` or ``"svd"``, see :func:`singular_value_threshold`.
        init: optional warm start ``(L0, S0)``, each of the shape of ``d``.
        mu_final: optional target of the ``mu`` continuation, ``0 < mu_final <= mu``.
        eta: continuation factor, ``0 < eta < 1`` (used only with ``mu_final``).

    Returns:
        An :class:`RPCAResult` with the low-rank and sparse parts (dtype and device
        of ``d``), the number of iterations, whether it converged, and the last
        relative change.

    Raises:
        InputShapeError: if ``d`` is not a floating tensor of shape ``(..., m, n)``
            with ``m, n >= 1``, or ``init`` does not match it.
        NonFiniteInputError: if ``d`` or ``init`` contains NaN or infinity.
        ConfigError: if ``mu``, ``lam``, ``max_iter``, ``tol``, ``svt_method``,
            ``mu_final`` or ``eta`` is out of range.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> d = torch.randn(4, 8, 30, generator=g)
        >>> res = rpca_apg(d, max_iter=20)
        >>> res.low_rank.shape, res.sparse.shape, res.iterations <= 20
        (torch.Size([4, 8, 30]), torch.Size([4, 8, 30]), True)
    """
    d = _check_matrix_batch(d, "d")
    mu, lam_or_none, max_iter, tol = _check_solver_settings(mu, lam, max_iter, tol)
    lam = _default_lam(d, lam_or_none)
    if svt_method not in _SVT_METHODS:
        raise ConfigError.build(
            what="svt_method",
            expected=f"one of {list(_SVT_METHODS)}",
            received=repr(svt_method),
            fix='pass svt_method="gram" or svt_method="svd"',
        )
    target = mu
    if mu_final is not None:
        target = _check_positive("mu_final", mu_final, "pass 0 < mu_final <= mu")
        if target > mu:
            raise ConfigError.build(
                what="mu_final",
                expected=f"a value <= mu ({mu})",
                received=repr(mu_final),
                fix="pass mu_final <= mu, or omit it for a fixed mu",
            )
        if not _is_real_number(eta) or not 0 < float(eta) < 1:
            raise ConfigError.build(
                what="eta",
                expected="a number strictly between 0 and 1",
                received=repr(eta),
                fix="pass eta=0.9 (Lin et al. 2009)",
            )

    d = d.detach()
    if init is None:
        low = torch.zeros_like(d)
        sparse = torch.zeros_like(d)
    else:
        low, sparse = _check_init(init, d)

    low, sparse, iterations, converged, residual = apg_kernel(
        d, low, sparse, mu, lam, max_iter, tol, target, float(eta), svt_method == "svd"
    )

    logger.debug(
        "rpca_apg: %d iterations, converged=%s, residual=%.3e, batch shape %s",
        iterations,
        converged,
        residual,
        tuple(d.shape),
    )
    return RPCAResult(
        low_rank=low, sparse=sparse, iterations=iterations, converged=converged, residual=residual
    )


def _check_init(init: object, d: Tensor) -> tuple[Tensor, Tensor]:
    if (
        not isinstance(init, tuple)
        or len(init) != 2
        or not all(isinstance(part, Tensor) and part.shape == d.shape for part in init)
    ):
        raise InputShapeError.build(
            what="init",
            expected=f"a tuple (L0, S0) of two tensors of shape {tuple(d.shape)}",
            received=repr(type(init).__name__)
            if not isinstance(init, tuple)
            else [tuple(getattr(p, "shape", ())) for p in init],
            fix="pass init=(low_rank, sparse) from a previous result on the same shape",
        )
    low, sparse = (part.detach().to(device=d.device, dtype=d.dtype) for part in init)
    if not bool(torch.isfinite(low).all() and torch.isfinite(sparse).all()):
        raise NonFiniteInputError.build(
            what="init",
            expected="only finite values",
            received="NaN or infinite entries in (L0, S0)",
            fix="warm-start from a finite result or pass init=None",
        )
    return low, sparse


# --------------------------------------------------------------------------- public entry


@torch.no_grad()
def recover(
    x: Tensor,
    *,
    mu: float = 0.55,
    lam: float | None = None,
    max_iter: int = 10,
    tol: float = 1e-4,
    matrix: MatrixMode = "channels_x_pixels",
    start: Literal["data", "zeros"] = "data",
) -> Tensor:
    """Recover the low-rank content of an image or activation batch (PGSL step d).

    Runs :func:`rpca_apg` (Khowaja et al. 2022, PGSL, eqs. 2-6; Lin et al. 2009)
    on matrices built from ``x`` and returns the low-rank part in the shape of ``x``.

    * ``matrix="channels_x_pixels"``: each sample becomes one ``(C, H*W)`` matrix.
      The nuclear norm then acts across channels: conv feature maps are strongly
      correlated across channels, while a few-pixel attack is spatially sparse.
    * ``matrix="rows_x_cols"``: each ``(H, W)`` channel plane is its own matrix
      (what the paper's Fig. 3 ``mu`` sweep does on raw images).

    Non-differentiable: runs under :func:`torch.no_grad` and returns a detached tensor.

    Args:
        x: batch of shape ``(B, C, H, W)``, floating point, finite.
        mu: relaxation parameter ``> 0`` (paper: 0.55).
        lam: sparsity weight ``> 0``; ``None`` means ``1 / sqrt(max(m, n))`` of the
            matrices built.
        max_iter: maximum number of APG iterations, ``>= 1``.
        tol: stopping threshold ``>= 0`` on the relative change.
        matrix: ``"channels_x_pixels"`` or ``"rows_x_cols"``.
        start: ``"data"`` warm-starts APG at ``(L, S) = (D, 0)``; ``"zeros"`` is the
            textbook start at ``(0, 0)``, whose first steps split ``D`` about evenly, so
            after a few iterations ``L`` is roughly ``D / 2``.

    Returns:
        The recovered (low-rank) batch, same shape, dtype and device as ``x``.

    Raises:
        InputShapeError: if ``x`` is not a floating 4-D tensor with non-empty
            channel and spatial dimensions.
        NonFiniteInputError: if ``x`` contains NaN or infinity.
        ConfigError: if ``mu``, ``lam``, ``max_iter``, ``tol`` or ``matrix`` is
            out of range.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 3, 8, 8)
        >>> recover(x, matrix="rows_x_cols", max_iter=5).shape
        torch.Size([2, 3, 8, 8])
    """
    if not isinstance(x, Tensor) or x.ndim != 4:
        received = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise InputShapeError.build(
            what="x",
            expected="a 4-D batch of shape (B, C, H, W)",
            received=received,
            fix="add the missing batch or channel dimension, e.g. x.unsqueeze(0)",
        )
    _check_matrix_mode(matrix)
    if x.shape[1] == 0:
        raise InputShapeError.build(
            what="x",
            expected="at least one channel",
            received=f"shape {tuple(x.shape)}",
            fix="pass a batch with C >= 1",
        )
    _check_matrix_batch(x, "x")
    mu, lam, max_iter, tol = _check_solver_settings(mu, lam, max_iter, tol)
    return recover_kernel(x, mu, lam, max_iter, tol, matrix == "channels_x_pixels",
                          start == "data")


class ProximalRecovery(nn.Module):
    """``nn.Module`` wrapper around :func:`recover` (PGSL's proximal-gradient stream).

    Has no parameters; ``forward`` returns a detached tensor (Khowaja et al. 2022,
    PGSL, eqs. 2-6; Lin et al. 2009).

    Args:
        mu: relaxation parameter ``> 0`` (paper: 0.55).
        lam: sparsity weight ``> 0``; ``None`` means ``1 / sqrt(max(m, n))``.
        max_iter: maximum number of APG iterations, ``>= 1``.
        tol: stopping threshold ``>= 0`` on the relative change.
        matrix: ``"channels_x_pixels"`` or ``"rows_x_cols"``, see :func:`recover`.

    Raises:
        ConfigError: if a setting is out of range (checked at construction).

    Example:
        >>> import torch
        >>> module = ProximalRecovery(mu=0.55, max_iter=5)
        >>> module.extra_repr().split(", ")[:3]
        ['mu=0.55', 'lam=None', 'max_iter=5']
        >>> module(torch.rand(2, 4, 5, 5)).shape
        torch.Size([2, 4, 5, 5])
    """

    def __init__(
        self,
        mu: float = 0.55,
        lam: float | None = None,
        max_iter: int = 10,
        tol: float = 1e-4,
        matrix: MatrixMode = "channels_x_pixels",
        start: Literal["data", "zeros"] = "data",
    ) -> None:
        super().__init__()
        mu, lam, max_iter, tol = _check_solver_settings(mu, lam, max_iter, tol)
        _check_matrix_mode(matrix)
        self.mu = mu
        self.lam = lam
        self.max_iter = max_iter
        self.tol = tol
        self.matrix: MatrixMode = matrix
        self.start: Literal["data", "zeros"] = start

    def forward(self, x: Tensor) -> Tensor:
        """Return the recovered (low-rank) part of ``x``, shape ``(B, C, H, W)``, detached.

        Args:
            x: batch of shape ``(B, C, H, W)``.

        Returns:
            The output of :func:`recover` with this module's settings.

        Raises:
            InputShapeError: if ``x`` is not a floating 4-D tensor.
            NonFiniteInputError: if ``x`` contains NaN or infinity.
        """
        if torch.jit.is_scripting():  # compiled (SplitShield.export): settings checked at init
            return recover_kernel(x.detach(), self.mu, self.lam, self.max_iter, self.tol,
                                  self.matrix == "channels_x_pixels", self.start == "data")
        return recover(
            x,
            mu=self.mu,
            lam=self.lam,
            max_iter=self.max_iter,
            tol=self.tol,
            matrix=self.matrix,
            start=self.start,
        )

    def extra_repr(self) -> str:
        """Settings shown in ``repr(module)``."""
        return (
            f"mu={self.mu}, lam={self.lam}, max_iter={self.max_iter}, tol={self.tol}, "
            f"matrix={self.matrix!r}, start={self.start!r}"
        )
