"""functional/classification.py against scikit-learn: the confusion matrix, macro F1 and
the nearest-class-mean rule that the Flower live audit and federated evaluation use."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import f1_score
from sklearn.neighbors import NearestCentroid

from shieldsplit.errors import ConfigError
from shieldsplit.functional.classification import (
    confusion_matrix,
    macro_f1,
    nearest_mean_labels,
)

pairs_st = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60)


@given(pairs_st)
@settings(max_examples=60, deadline=None)
def test_confusion_matrix_and_macro_f1_match_scikit_learn(pairs: list[tuple[int, int]]) -> None:
    true, pred = (np.array(v) for v in zip(*pairs, strict=True))
    confusion = confusion_matrix(torch.as_tensor(true), torch.as_tensor(pred), num_classes=4)
    assert np.array_equal(confusion, sk_confusion_matrix(true, pred, labels=range(4)))
    expected = f1_score(true, pred, average="macro", zero_division=0)
    assert macro_f1(confusion) == pytest.approx(expected, abs=1e-12)


@given(st.integers(0, 2**31 - 1))
@settings(max_examples=30, deadline=None)
def test_nearest_mean_labels_matches_scikit_learns_nearest_centroid(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 1, 2, 3, 5] * 4)  # class 4 absent: never predicted
    aux = torch.rand(len(labels), 1, 3, 3, generator=g) + labels.view(-1, 1, 1, 1) * 0.2
    images = torch.rand(12, 1, 3, 3, generator=g) * 2
    got = nearest_mean_labels(images, aux, labels)
    ref = NearestCentroid().fit(aux.flatten(1).double().numpy(), labels.numpy())
    assert got.tolist() == ref.predict(images.flatten(1).double().numpy()).tolist()


def test_bad_inputs_raise_typed_errors() -> None:
    for bad in ([[1, 2, 3]], [[1, -1], [0, 1]], np.zeros((2, 2, 2))):
        with pytest.raises(ConfigError):
            macro_f1(bad)
    assert macro_f1(np.zeros((3, 3))) == 0.0
    with pytest.raises(ConfigError):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), num_classes=2)
    with pytest.raises(ConfigError):
        confusion_matrix(torch.tensor([0, 2]), torch.tensor([0, 1]), num_classes=2)
    with pytest.raises(ConfigError):
        confusion_matrix(torch.tensor([0]), torch.tensor([0]), num_classes=0)
    with pytest.raises(ConfigError):
        nearest_mean_labels(torch.rand(2, 1, 2, 2), torch.rand(0, 1, 2, 2),
                            torch.zeros(0).long())
