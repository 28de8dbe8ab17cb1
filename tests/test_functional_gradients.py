"""Gradient maths (shieldsplit.functional.gradients) against scipy and numpy: the matching
distances (also mapped with torch.func.vmap, as the attacks call them) and a linear
layer's input read from its gradient, with hypothesis over sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import distance

from shieldsplit.errors import InputShapeError
from shieldsplit.functional.gradients import (
    cosine_distance,
    linear_input_from_gradient,
    squared_distance,
)


def _pair(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two ``(n, d)`` batches of vectors of norm in [1, 10] (where ``eps`` is negligible)."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, n, d)) + 1e-3
    scale = 1 + 9 * rng.random((2, n, 1))
    return (scale[0] * a / np.linalg.norm(a, axis=1, keepdims=True),
            scale[1] * b / np.linalg.norm(b, axis=1, keepdims=True))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5), d=st.integers(1, 40), seed=st.integers(0, 10_000))
def test_distances_match_scipy(n: int, d: int, seed: int) -> None:
    a, b = _pair(n, d, seed)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    cos = [distance.cosine(x, y) for x, y in zip(a, b, strict=True)]
    sq = [distance.sqeuclidean(x, y) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose([float(cosine_distance(x, y)) for x, y in zip(ta, tb, strict=True)],
                               cos, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose([float(squared_distance(x, y)) for x, y in zip(ta, tb, strict=True)],
                               sq, rtol=1e-12)
    # as the attacks use them: mapped over problems, and differentiated
    np.testing.assert_allclose(torch.func.vmap(cosine_distance)(ta, tb).numpy(), cos,
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(torch.func.vmap(squared_distance)(ta, tb).numpy(), sq, rtol=1e-12)
    grad = torch.func.vmap(torch.func.grad(squared_distance))(ta, tb)
    np.testing.assert_allclose(grad.numpy(), 2 * (a - b), rtol=1e-12)


def test_cosine_distance_edges() -> None:
    x = torch.tensor([1.0, 2.0, -1.0])
    assert float(cosine_distance(x, 3 * x)) == pytest.approx(0.0, abs=1e-7)
    assert float(cosine_distance(x, -x)) == pytest.approx(2.0)
    assert float(cosine_distance(torch.zeros(3), x)) == 1.0  # eps: no NaN


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 12), f=st.integers(1, 20), seed=st.integers(0, 10_000))
def test_linear_input_is_numpys_least_squares(k: int, f: int, seed: int) -> None:
    """``h`` minimises ``|grad_W - grad_b h^T|``: numpy's lstsq on any (mixed) gradient,
    and exactly the input (residual ~ 0) on one image's."""
    rng = np.random.default_rng(seed)
    gw, gb = rng.normal(size=(k, f)), rng.normal(size=k)
    est, _ = linear_input_from_gradient(torch.from_numpy(gw), torch.from_numpy(gb))
    ref = np.linalg.lstsq(gb[:, None], gw, rcond=None)[0][0]
    np.testing.assert_allclose(est.numpy(), ref, rtol=1e-9, atol=1e-12)
    h = rng.random(f)
    exact, residual = linear_input_from_gradient(torch.from_numpy(np.outer(gb, h)),
                                                 torch.from_numpy(gb))
    np.testing.assert_allclose(exact.numpy(), h, rtol=1e-9, atol=1e-12)
    assert residual < 1e-9


def test_typed_errors() -> None:
    with pytest.raises(InputShapeError):
        cosine_distance(torch.zeros(3), torch.zeros(4))
    with pytest.raises(InputShapeError):
        squared_distance(torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(InputShapeError):
        linear_input_from_gradient(torch.zeros(5, 3), torch.zeros(4))
