"""The source separation behind the batch > 1 gradient attacks, against scikit-learn's
FastICA on synthetic mixtures (shieldsplit.functional.separation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import FastICA

from shieldsplit.errors import ConfigError, InputShapeError, NonFiniteInputError
from shieldsplit.functional.separation import (
    fast_ica,
    refine_nonnegative,
    separate_nonnegative_sources,
)

torch.set_num_threads(1)


def _abs_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|correlation| of each row of a with each row of b."""
    a = (a - a.mean(1, keepdims=True)) / a.std(1, keepdims=True)
    b = (b - b.mean(1, keepdims=True)) / b.std(1, keepdims=True)
    return np.abs(a @ b.T) / a.shape[1]


def _matched(corr: np.ndarray) -> np.ndarray:
    rows, cols = linear_sum_assignment(-corr)
    return corr[rows, cols]


def test_fast_ica_finds_the_sources_sklearn_finds() -> None:
    rng = np.random.default_rng(0)
    sources = np.stack([rng.laplace(size=3000), rng.uniform(-1, 1, 3000),
                        np.sign(np.sin(np.arange(3000) / 7.0))])
    mixtures = rng.normal(size=(5, 3)) @ sources
    unmix = fast_ica(torch.from_numpy(mixtures), components=3, seed=0).numpy()
    ours = unmix @ (mixtures - mixtures.mean(1, keepdims=True))
    reference = FastICA(n_components=3, whiten="unit-variance", random_state=0,
                        max_iter=1000, tol=1e-7).fit_transform(mixtures.T).T
    assert _matched(_abs_corr(ours, sources)).min() > 0.99
    assert _matched(_abs_corr(ours, reference)).min() > 0.999
    assert np.allclose(ours.var(axis=1), 1.0, atol=1e-6)  # unit variance, as sklearn's


def test_nonnegative_separation_of_sparse_relu_sources() -> None:
    """ReLU features (about half exact zeros), mixed by a gradient's signed coefficients:
    the non-negative refinement recovers them where ICA alone leaves them blurred."""
    gen = torch.Generator().manual_seed(1)
    sources = torch.randn(6, 4000, generator=gen).clamp_min(0).double()
    mixtures = torch.randn(16, 6, generator=gen, dtype=torch.float64) @ sources
    unit = torch.nn.functional.normalize
    found = separate_nonnegative_sources(mixtures, max_sources=8)
    assert found.shape == (6, 4000)  # the rank, not max_sources
    cos = (unit(found, dim=1) @ unit(sources, dim=1).T).numpy()
    assert _matched(cos).min() > 0.999
    assert bool((found >= 0).all())
    unmix = fast_ica(mixtures, components=6, seed=0)
    plain = (unmix @ mixtures).numpy()
    assert _matched(_abs_corr(plain, sources.numpy())).min() < _matched(cos).min()


def test_separation_input_errors() -> None:
    with pytest.raises(InputShapeError):
        fast_ica(torch.zeros(5), components=1)
    with pytest.raises(NonFiniteInputError):
        fast_ica(torch.tensor([[1.0, float("nan")]]), components=1)
    with pytest.raises(ConfigError):
        fast_ica(torch.rand(3, 10), components=4)
    with pytest.raises(InputShapeError):
        refine_nonnegative(torch.rand(3, 10), torch.rand(2, 9))
    with pytest.raises(ConfigError):
        separate_nonnegative_sources(torch.rand(3, 10), max_sources=0)
    assert separate_nonnegative_sources(torch.zeros(3, 10), max_sources=2).shape == (0, 10)
