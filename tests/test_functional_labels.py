"""Label inference from a last-layer gradient (shieldsplit.functional.labels) against
numpy: the true labels of synthetic gradients, and an independent numpy transcription of
the count heuristic, with hypothesis over classes, features and batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shieldsplit.errors import ConfigError, InputShapeError, NonFiniteInputError
from shieldsplit.functional.labels import infer_labels_idlg, label_counts_idlg


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _numpy_counts(grad: np.ndarray, b: int, probs: np.ndarray | None,
                  feature_sum: float | None) -> np.ndarray:
    """The count heuristic, written again in numpy from its docstring."""
    rows = grad.astype(np.float64).sum(axis=1)
    k = len(rows)
    counts = np.zeros(k, dtype=np.int64)
    if b == 1:
        counts[np.argmin(rows)] = 1
        return counts
    p = np.full(k, 1.0 / k) if probs is None else probs.astype(np.float64)
    if feature_sum is None or not feature_sum > 0:
        pos = rows[rows > 0]
        feature_sum = k * pos.mean() if pos.size else np.abs(rows).sum()
    estimate = b * (p - rows / max(feature_sum, 1e-30))
    negative = np.flatnonzero(rows < 0)
    negative = negative[np.argsort(rows[negative], kind="stable")][:b]
    counts[negative] = 1
    while counts.sum() < b:
        counts[np.argmax(estimate - counts)] += 1
    return counts


@settings(max_examples=40, deadline=None)
@given(k=st.integers(2, 12), f=st.integers(1, 16), seed=st.integers(0, 10_000))
def test_sign_rule_reads_the_label_of_one_image(k: int, f: int, seed: int) -> None:
    """One image, non-negative features: the most negative row sum is the true label."""
    rng = np.random.default_rng(seed)
    h = rng.random(f) + 1e-3
    p = _softmax(rng.normal(size=k))
    y = int(rng.integers(k))
    grad = np.outer(p - np.eye(k)[y], h)
    assert int(np.argmin(grad.sum(1))) == y  # the reference itself
    counts = label_counts_idlg(torch.from_numpy(grad))
    assert counts.tolist() == np.eye(k, dtype=np.int64)[y].tolist()
    assert infer_labels_idlg(torch.from_numpy(grad).float()).tolist() == [y]


@settings(max_examples=40, deadline=None)
@given(k=st.integers(2, 8), f=st.integers(1, 12), b=st.integers(2, 10),
       seed=st.integers(0, 10_000))
def test_counts_are_exact_with_the_true_probabilities_and_feature_sum(
        k: int, f: int, b: int, seed: int) -> None:
    """A batch whose images share the softmax output and the feature sum: the heuristic's
    estimate is exact, so the counts are the batch's (numpy's bincount)."""
    rng = np.random.default_rng(seed)
    p = _softmax(rng.normal(size=k))
    s = 1.0 + 4 * rng.random()
    y = rng.integers(k, size=b)
    hs = rng.random((b, f)) + 1e-3
    hs = s * hs / hs.sum(1, keepdims=True)
    grad = sum(np.outer(p - np.eye(k)[yi], hi) for yi, hi in zip(y, hs, strict=True)) / b
    counts = label_counts_idlg(torch.from_numpy(grad), batch_size=b,
                               mean_probs=torch.from_numpy(p), feature_sum=s)
    np.testing.assert_array_equal(counts.numpy(), np.bincount(y, minlength=k))
    labels = infer_labels_idlg(torch.from_numpy(grad), batch_size=b,
                               mean_probs=torch.from_numpy(p), feature_sum=s)
    np.testing.assert_array_equal(labels.numpy(), np.sort(y))


@settings(max_examples=60, deadline=None)
@given(k=st.integers(2, 10), f=st.integers(1, 10), b=st.integers(1, 12),
       seed=st.integers(0, 10_000), known=st.booleans())
def test_counts_match_a_numpy_transcription(k: int, f: int, b: int, seed: int,
                                            known: bool) -> None:
    """Any gradient (signs mixed, defaults or given statistics): the same counts as numpy."""
    rng = np.random.default_rng(seed)
    grad = rng.normal(size=(k, f))
    probs = _softmax(rng.normal(size=k)) if known else None
    fsum = float(rng.random() * 3) if known else None
    ours = label_counts_idlg(
        torch.from_numpy(grad), batch_size=b,
        mean_probs=None if probs is None else torch.from_numpy(probs), feature_sum=fsum)
    ref = _numpy_counts(grad, b, probs, fsum)
    np.testing.assert_array_equal(ours.numpy(), ref)
    assert int(ours.sum()) == b and ours.dtype == torch.int64
    labels = infer_labels_idlg(
        torch.from_numpy(grad), batch_size=b,
        mean_probs=None if probs is None else torch.from_numpy(probs), feature_sum=fsum)
    np.testing.assert_array_equal(labels.numpy(), np.repeat(np.arange(k), ref))


def test_a_negative_update_block_reads_like_a_gradient() -> None:
    """Minus a FedAvg update is a positive multiple of summed gradients: same counts."""
    h = torch.tensor([0.2, 1.0, 0.4])
    p = torch.tensor([0.1, 0.6, 0.3])
    grad = torch.outer(p - torch.eye(3)[0], h) + torch.outer(p - torch.eye(3)[2], h)
    update = -0.05 * grad
    assert label_counts_idlg(-update, batch_size=2, mean_probs=p, feature_sum=1.6).tolist() \
        == [1, 0, 1]


def test_typed_errors() -> None:
    with pytest.raises(InputShapeError):
        label_counts_idlg(torch.zeros(3))
    with pytest.raises(InputShapeError):
        label_counts_idlg([[0.0, 1.0]])  # type: ignore[arg-type]
    with pytest.raises(NonFiniteInputError):
        label_counts_idlg(torch.full((3, 2), float("nan")))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError):
            label_counts_idlg(torch.zeros(3, 2), batch_size=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"shape \(3,\)"):
        label_counts_idlg(torch.zeros(3, 2), batch_size=2, mean_probs=torch.ones(4) / 4)
