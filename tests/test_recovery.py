"""Tests for shieldsplit.defenses.pgsl.recovery (PGSL proximal-gradient recovery, relaxed
RPCA by APG)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shieldsplit.defenses.pgsl.recovery import (
    ProximalRecovery,
    RPCAResult,
    recover,
    rpca_apg,
    rpca_objective,
    singular_value_threshold,
    soft_threshold,
)
from shieldsplit.errors import ConfigError, InputShapeError, NonFiniteInputError

FAST = settings(max_examples=40, deadline=None)


def _np_svt(m: np.ndarray, tau: float) -> np.ndarray:
    """Reference SVT built from np.linalg.svd, batched over the leading axis."""
    u, s, vh = np.linalg.svd(m, full_matrices=False)
    return (u * np.maximum(s - tau, 0.0)[..., None, :]) @ vh


def _nuclear(x: np.ndarray) -> float:
    return float(np.linalg.svd(x, compute_uv=False).sum())


def _low_rank_plus_sparse(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-2 20x30 matrix and a sparse corruption of ~5% entries of magnitude 5."""
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    low = torch.randn(20, 2, generator=g, dtype=f64) @ torch.randn(2, 30, generator=g, dtype=f64)
    mask = torch.rand(20, 30, generator=g, dtype=f64) < 0.05
    signs = torch.sign(torch.randn(20, 30, generator=g, dtype=f64))
    sparse = torch.where(mask, 5.0 * signs, torch.zeros((), dtype=torch.float64))
    return low, sparse


# --------------------------------------------------------------------------- soft threshold


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    tau=st.floats(0.0, 3.0),
)
def test_soft_threshold_matches_numpy(seed: int, shape: list[int], tau: float) -> None:
    x = np.random.default_rng(seed).normal(scale=2.0, size=shape)
    expected = np.sign(x) * np.maximum(np.abs(x) - tau, 0.0)
    out = soft_threshold(torch.from_numpy(x), tau)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-12)


def test_soft_threshold_tensor_tau_broadcasts() -> None:
    x = torch.tensor([[3.0, -3.0], [0.5, -0.5]])
    tau = torch.tensor([[1.0], [0.25]])
    expected = torch.tensor([[2.0, -2.0], [0.25, -0.25]])
    assert torch.equal(soft_threshold(x, tau), expected)


@pytest.mark.parametrize("tau", [-0.1, math.nan, math.inf, torch.tensor([1.0, -1.0])])
def test_soft_threshold_rejects_bad_tau(tau: float | torch.Tensor) -> None:
    with pytest.raises(ConfigError):
        soft_threshold(torch.ones(2), tau)


# --------------------------------------------------------------------------- SVT


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 3),
    m=st.integers(1, 12),
    n=st.integers(1, 12),
    tau=st.floats(0.0, 6.0),
    method=st.sampled_from(["gram", "svd"]),
)
def test_svt_matches_numpy_reference(
    seed: int, b: int, m: int, n: int, tau: float, method: str
) -> None:
    x = np.random.default_rng(seed).normal(size=(b, m, n))
    expected = _np_svt(x, tau)
    out = singular_value_threshold(torch.from_numpy(x), tau, method=method)  # type: ignore[arg-type]
    assert out.shape == (b, m, n)
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-8 * (1 + np.abs(x).max()))


@pytest.mark.parametrize("shape", [(5, 7, 9), (5, 9, 7), (3, 16, 16), (2, 32, 150)])
@pytest.mark.parametrize("tau", [0.0, 0.7, 3.0])
def test_svt_gram_and_svd_agree_in_float32(shape: tuple[int, ...], tau: float) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    gram = singular_value_threshold(x, tau, method="gram")
    svd = singular_value_threshold(x, tau, method="svd")
    assert gram.dtype == svd.dtype == torch.float32
    rel = (gram - svd).norm() / svd.norm().clamp_min(1e-12)
    assert rel < 1e-4


@pytest.mark.parametrize("method", ["gram", "svd"])
@pytest.mark.parametrize(("m", "n"), [(6, 10), (10, 6), (7, 7)])
def test_svt_is_the_prox_of_the_nuclear_norm(method: str, m: int, n: int) -> None:
    rng = np.random.default_rng(m * 100 + n)
    tau = 1.3
    x = rng.normal(size=(m, n))
    star = singular_value_threshold(torch.from_numpy(x), tau, method=method).numpy()  # type: ignore[arg-type]

    def objective(z: np.ndarray) -> float:
        return tau * _nuclear(z) + 0.5 * float(np.sum((z - x) ** 2))

    best = objective(star)
    for scale in (1e-1, 1e-2, 1e-3):
        for _ in range(20):
            assert objective(star + scale * rng.normal(size=(m, n))) >= best - 1e-12


def test_svt_zero_matrix_and_rank_deficient_input() -> None:
    zeros = torch.zeros(2, 4, 6)
    for method in ("gram", "svd"):
        assert torch.equal(singular_value_threshold(zeros, 0.5, method=method), zeros)
        # tau = 0 is the identity, also for a rank-1 matrix (zero singular values guarded).
        rank1 = torch.outer(torch.arange(1.0, 5.0), torch.arange(1.0, 7.0))
        out = singular_value_threshold(rank1, 0.0, method=method)
        torch.testing.assert_close(out, rank1, rtol=1e-5, atol=1e-5)


def test_svt_per_matrix_tensor_tau() -> None:
    x = torch.randn(3, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    taus = torch.tensor([0.0, 1.0, 2.5], dtype=torch.float64)
    for method in ("gram", "svd"):
        out = singular_value_threshold(x, taus, method=method)
        for i in range(3):
            expected = _np_svt(x[i].numpy(), float(taus[i]))
            np.testing.assert_allclose(out[i].numpy(), expected, atol=1e-9)


def test_svt_rejects_bad_input() -> None:
    with pytest.raises(InputShapeError):
        singular_value_threshold(torch.ones(4), 1.0)
    with pytest.raises(InputShapeError):
        singular_value_threshold(torch.ones(3, 3, dtype=torch.int64), 1.0)
    with pytest.raises(ConfigError):
        singular_value_threshold(torch.ones(3, 3), -1.0)
    with pytest.raises(ConfigError):
        singular_value_threshold(torch.ones(3, 3), 1.0, method="qr")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        singular_value_threshold(torch.ones(2, 3, 3), torch.ones(5))


# --------------------------------------------------------------------------- rpca_apg


def test_rpca_objective_decreases() -> None:
    g = torch.Generator().manual_seed(3)
    d = torch.randn(4, 12, 18, generator=g, dtype=torch.float64)
    d[:, :3, :4] += 6.0
    mu = 0.55
    zeros = torch.zeros_like(d)
    first = rpca_apg(d, mu=mu, max_iter=1, tol=0)
    last = rpca_apg(d, mu=mu, max_iter=50, tol=0)
    f_first = rpca_objective(d, first.low_rank, first.sparse, mu=mu)
    f_last = rpca_objective(d, last.low_rank, last.sparse, mu=mu)
    f_all_low = rpca_objective(d, d, zeros, mu=mu)
    f_zero = rpca_objective(d, zeros, zeros, mu=mu)
    assert f_last.shape == (4,)
    assert torch.all(f_last < f_first)
    assert torch.all(f_last < f_all_low)
    assert torch.all(f_last < f_zero)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rpca_recovers_low_rank_plus_sparse(seed: int) -> None:
    low, sparse = _low_rank_plus_sparse(seed)
    d = low + sparse
    # Continuation (Lin et al. 2009): start at ~||D||_2, shrink mu geometrically to 1e-3.
    mu0 = 0.99 * float(torch.linalg.matrix_norm(d, ord=2))
    res = rpca_apg(d, mu=mu0, mu_final=1e-3, eta=0.9, max_iter=300, tol=0)
    err_observed = float((d - low).norm() / low.norm())
    err_recovered = float((res.low_rank - low).norm() / low.norm())
    assert err_observed > 0.5
    assert err_recovered * 5 <= err_observed
    # The sparse part finds the corrupted entries.
    err_sparse = float((res.sparse - sparse).norm() / sparse.norm())
    assert err_sparse < 0.2


def test_rpca_batch_independence() -> None:
    g = torch.Generator().manual_seed(4)
    d = torch.randn(5, 9, 14, generator=g)
    batched = rpca_apg(d, max_iter=15, tol=0)
    for i in range(d.shape[0]):
        alone = rpca_apg(d[i], max_iter=15, tol=0)
        torch.testing.assert_close(batched.low_rank[i], alone.low_rank, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batched.sparse[i], alone.sparse, rtol=1e-5, atol=1e-5)


def test_rpca_multiple_batch_dims_and_methods_agree() -> None:
    d = torch.randn(2, 3, 8, 20, generator=torch.Generator().manual_seed(5))
    gram = rpca_apg(d, max_iter=10, tol=0, svt_method="gram")
    svd = rpca_apg(d, max_iter=10, tol=0, svt_method="svd")
    assert gram.low_rank.shape == d.shape
    torch.testing.assert_close(gram.low_rank, svd.low_rank, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gram.sparse, svd.sparse, rtol=1e-4, atol=1e-4)


def test_rpca_result_fields_convergence_and_warm_start() -> None:
    d = torch.randn(3, 10, 12, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    res = rpca_apg(d, max_iter=500, tol=1e-3)
    assert isinstance(res, RPCAResult)
    assert res.converged
    assert res.iterations < 500
    assert res.residual < 1e-3
    with pytest.raises(AttributeError):
        res.iterations = 3  # type: ignore[misc]
    warm = rpca_apg(d, max_iter=500, tol=1e-3, init=(res.low_rank, res.sparse))
    assert warm.converged
    assert warm.iterations < res.iterations
    capped = rpca_apg(d, max_iter=2, tol=0)
    assert capped.iterations == 2
    assert not capped.converged


def test_rpca_is_detached_and_keeps_dtype() -> None:
    d = torch.randn(2, 6, 7, requires_grad=True)
    res = rpca_apg(d, max_iter=3)
    assert res.low_rank.dtype == torch.float32
    assert not res.low_rank.requires_grad
    assert not res.sparse.requires_grad


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"mu": 0.0}, ConfigError),
        ({"mu": -1.0}, ConfigError),
        ({"mu": math.nan}, ConfigError),
        ({"lam": 0.0}, ConfigError),
        ({"max_iter": 0}, ConfigError),
        ({"max_iter": 2.5}, ConfigError),
        ({"tol": -1.0}, ConfigError),
        ({"svt_method": "eig"}, ConfigError),
        ({"mu_final": 1.0}, ConfigError),  # larger than mu = 0.55
        ({"mu_final": 0.1, "eta": 1.0}, ConfigError),
        ({"init": (torch.zeros(3, 3), torch.zeros(3, 3))}, InputShapeError),
    ],
)
def test_rpca_rejects_bad_settings(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        rpca_apg(torch.ones(2, 4, 5), **kwargs)  # type: ignore[arg-type]


def test_rpca_rejects_bad_input() -> None:
    with pytest.raises(InputShapeError):
        rpca_apg(torch.ones(5))
    with pytest.raises(InputShapeError):
        rpca_apg(torch.ones(3, 0))
    with pytest.raises(InputShapeError):
        rpca_apg(torch.ones(3, 3, dtype=torch.int32))
    bad = torch.ones(2, 3, 3)
    bad[1, 0, 0] = math.inf
    with pytest.raises(NonFiniteInputError) as info:
        rpca_apg(bad)
    assert isinstance(info.value, ValueError)
    assert info.value.what == "d"


# --------------------------------------------------------------------------- recover / module


@pytest.mark.parametrize("matrix", ["channels_x_pixels", "rows_x_cols"])
def test_recover_shape_round_trip(matrix: str) -> None:
    x = torch.rand(3, 4, 5, 6, generator=torch.Generator().manual_seed(7))
    out = recover(x, matrix=matrix, max_iter=5, tol=0)  # type: ignore[arg-type]
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    d = x.reshape(3, 4, 30) if matrix == "channels_x_pixels" else x
    expected = rpca_apg(d, max_iter=5, tol=0, init=(d, torch.zeros_like(d))).low_rank
    torch.testing.assert_close(out, expected.reshape(x.shape), rtol=0, atol=0)
    zero_start = recover(x, matrix=matrix, max_iter=5, tol=0, start="zeros")  # type: ignore[arg-type]
    expected = rpca_apg(d, max_iter=5, tol=0).low_rank
    torch.testing.assert_close(zero_start, expected.reshape(x.shape), rtol=0, atol=0)


def test_recover_errors() -> None:
    with pytest.raises(InputShapeError):
        recover(torch.rand(4, 5, 6))
    nan = torch.rand(1, 2, 3, 3)
    nan[0, 1, 2, 2] = math.nan
    with pytest.raises(NonFiniteInputError):
        recover(nan)
    for mu in (0.0, -0.5):
        with pytest.raises(ConfigError):
            recover(torch.rand(1, 2, 3, 3), mu=mu)
    with pytest.raises(ConfigError):
        recover(torch.rand(1, 2, 3, 3), matrix="pixels")  # type: ignore[arg-type]


def test_recover_is_deterministic() -> None:
    x = torch.randn(4, 8, 7, 7, generator=torch.Generator().manual_seed(8))
    assert torch.equal(recover(x), recover(x))
    assert torch.equal(recover(x, matrix="rows_x_cols"), recover(x, matrix="rows_x_cols"))


def test_proximal_recovery_module() -> None:
    module = ProximalRecovery(mu=0.3, max_iter=4, matrix="rows_x_cols")
    assert list(module.parameters()) == []
    assert "mu=0.3" in repr(module)
    assert "matrix='rows_x_cols'" in repr(module)
    x = torch.rand(2, 3, 6, 6, requires_grad=True)
    out = module(x)
    assert not out.requires_grad
    torch.testing.assert_close(
        out, recover(x, mu=0.3, max_iter=4, matrix="rows_x_cols"), rtol=0, atol=0
    )
    with pytest.raises(ConfigError):
        ProximalRecovery(mu=-1.0)
    with pytest.raises(ConfigError):
        ProximalRecovery(matrix="columns")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- efficacy


def _attacked_activations(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Client activations (8 channels on 4x4 pixels) of rank one across channels x
    pixels, and the same under a few-pixel attack: a tenth of the entries raised by 2 to 6."""
    g = torch.Generator().manual_seed(seed)
    loadings = torch.rand(n, 8, 1, generator=g) + 0.5
    profile = torch.rand(n, 1, 16, generator=g) + 0.5
    clean = (loadings * profile).reshape(n, 8, 4, 4)
    hit = torch.rand(n, 8, 4, 4, generator=g) < 0.1
    return clean, clean + hit * (2.0 + 4.0 * torch.rand(n, 8, 4, 4, generator=g))


@pytest.mark.parametrize(("recovery", "bound"), [({}, 0.9), ({"max_iter": 50, "tol": 1e-6}, 0.05)],
                         ids=["default", "converged"])
def test_efficacy_recovery_strips_a_sparse_attack(recovery: dict[str, float], bound: float) -> None:
    """(d) The shield's proximal-gradient recovery (eqs. 2-6: the nuclear-norm and L1
    proximal steps) brings attacked activations closer to the clean ones: its default
    three iterations part of the way, fifty nearly all of it."""
    from shieldsplit import PGSLConfig, PGSLNet, SplitShield

    shield = SplitShield(PGSLNet(num_classes=3, image_size=8, width=8, hidden=16), cut=2,
                         config=PGSLConfig(recovery=recovery), input_shape=(1, 8, 8))
    clean, attacked = _attacked_activations(32, seed=0)
    recovered = shield.server_steps().recover(attacked)
    before = float((attacked - clean).pow(2).mean())
    after = float((recovered - clean).pow(2).mean())
    assert after < bound * before, (after, before)
