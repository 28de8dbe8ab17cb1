"""The pure maths of ``shieldsplit.functional`` against independent references (numpy,
scipy, torch's own pixel (un)shuffle, scikit-image), with hypothesis over shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import pearsonr

from shieldsplit.functional.fusion import (
    adaptive_weights,
    class_score_sums,
    max_class_score,
    weighted_average,
)
from shieldsplit.functional.image import pearson_correlation, total_variation
from shieldsplit.functional.metrics import mse, psnr
from shieldsplit.functional.saliency import normalised_heat
from shieldsplit.functional.unshuffle import reshuffle, unshuffle

shapes = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6))


def _rand(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000))
def test_total_variation_matches_numpy(shape: tuple[int, int, int, int], seed: int) -> None:
    x = _rand(shape, seed)
    a = x.numpy()
    dh = np.abs(np.diff(a, axis=2)).reshape(len(a), -1).mean(1) if a.shape[2] > 1 else 0
    dw = np.abs(np.diff(a, axis=3)).reshape(len(a), -1).mean(1) if a.shape[3] > 1 else 0
    np.testing.assert_allclose(total_variation(x).numpy(), np.zeros(len(a)) + dh + dw,
                               rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000))
def test_pearson_matches_scipy(shape: tuple[int, int, int, int], seed: int) -> None:
    x, y = _rand(shape, seed), _rand(shape, seed + 1)
    if x[0].numel() < 3:
        return
    ours = pearson_correlation(x, 0.5 * x + y).numpy()
    ref = [pearsonr(a.ravel(), (0.5 * a + b).ravel()).statistic
           for a, b in zip(x.numpy(), y.numpy(), strict=True)]
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000))
def test_mse_and_psnr_match_numpy(shape: tuple[int, int, int, int], seed: int) -> None:
    x, y = _rand(shape, seed).float(), _rand(shape, seed + 1).float()
    ref = ((x.numpy() - y.numpy()) ** 2).reshape(len(x), -1).mean(1)
    np.testing.assert_allclose(mse(x, y).numpy(), ref, rtol=1e-5)
    np.testing.assert_allclose(psnr(x, y).numpy(), 10 * np.log10(1.0 / ref), rtol=1e-4)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 3), c=st.integers(1, 3), half=st.integers(1, 5),
       factor=st.sampled_from([1, 2, 3]), seed=st.integers(0, 10_000))
def test_unshuffle_is_torch_pixel_unshuffle_and_reshuffle_inverts_it(
        b: int, c: int, half: int, factor: int, seed: int) -> None:
    x = _rand((b, c, half * factor, half * factor), seed)
    u = unshuffle(x, factor)
    torch.testing.assert_close(u, F.pixel_unshuffle(x, factor))
    torch.testing.assert_close(reshuffle(u, factor), x)


def test_heat_map_matches_numpy() -> None:
    s = _rand((3, 2, 4, 5), 0)
    s[1] = 0  # an all-zero map stays zero
    heat = s.numpy().sum(1, keepdims=True)
    peak = np.maximum(heat.reshape(3, -1).max(1), 1e-12).reshape(3, 1, 1, 1)
    np.testing.assert_allclose(normalised_heat(s).numpy(), heat / peak, rtol=1e-12)


def test_fusion_weights_match_a_numpy_transcription_of_eqs_9_to_11() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(3, 20, 4, generator=g, dtype=torch.float64), -1)
    labels = torch.randint(0, 4, (20,), generator=g)
    initial = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    s_max = []
    for p in probs.numpy():  # eq. 10: the largest per-class mean true-class score
        means = [p[labels.numpy() == k, k].mean() for k in range(4) if (labels == k).any()]
        s_max.append(max(means))
    ours_s = torch.stack([max_class_score(*class_score_sums(p, labels, 4)) for p in probs])
    np.testing.assert_allclose(ours_s.numpy(), s_max, rtol=1e-12)
    w = initial.numpy() * np.array(s_max)
    np.testing.assert_allclose(adaptive_weights(ours_s, initial).numpy(), w / w.sum(),
                               rtol=1e-12)
    fused = weighted_average(probs, torch.as_tensor(w / w.sum()))
    np.testing.assert_allclose(fused.numpy(), np.tensordot(w / w.sum(), probs.numpy(), 1),
                               rtol=1e-12)


@pytest.mark.parametrize("bad", [(2, 3), (3, 2)])
def test_pearson_rejects_mismatched_shapes(bad: tuple[int, int]) -> None:
    from shieldsplit.errors import InputShapeError

    with pytest.raises(InputShapeError):
        pearson_correlation(torch.rand(2, 2), torch.rand(*bad))
