"""Classification scores and a nearest-class-mean rule (pure; checked against scikit-learn).

- :func:`confusion_matrix`: counts of (true, predicted) pairs
  (``sklearn.metrics.confusion_matrix`` with every class listed).
- :func:`macro_f1`: macro F1 of a confusion matrix
  (``sklearn.metrics.f1_score(average="macro", zero_division=0)``); confusion matrices of
  several clients add up, so a federated evaluation sums them and scores once.
- :func:`balanced_accuracy`: the mean recall over the classes that occur in the truth
  (``sklearn.metrics.balanced_accuracy_score``), and :func:`majority_share`: the accuracy
  of always predicting the commonest true class, both of a confusion matrix.
- :func:`nearest_mean_labels`: the label of the nearest class-mean image
  (``sklearn.neighbors.NearestCentroid``), the class judge of the Flower live audit.

Example:
    >>> c = confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), num_classes=2)
    >>> c.tolist(), round(macro_f1(c), 4)
    ([[1, 0], [1, 1]], 0.6667)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from shieldsplit._core.validate import check_int
from shieldsplit.errors import ConfigError


def confusion_matrix(true: Tensor, predicted: Tensor, *, num_classes: int) -> np.ndarray:
    """Counts of each (true class, predicted class) pair.

    Args:
        true: ``(n,)`` true labels in ``[0, num_classes)``.
        predicted: ``(n,)`` predicted labels in ``[0, num_classes)``.
        num_classes: the number of classes ``K``.

    Returns:
        ``(K, K)`` int64 counts, rows the true class, columns the predicted one.

    Raises:
        ConfigError: for labels of different lengths or outside ``[0, K)``.

    Example:
        >>> confusion_matrix(torch.tensor([0, 0, 2]), torch.tensor([0, 2, 2]),
        ...                  num_classes=3).tolist()
        [[1, 0, 1], [0, 0, 0], [0, 0, 1]]
    """
    k = check_int("num_classes", num_classes, low=1, fix="pass the number of classes")
    t = torch.as_tensor(true).detach().cpu().long().flatten().numpy()
    p = torch.as_tensor(predicted).detach().cpu().long().flatten().numpy()
    both = np.concatenate([t, p])
    if t.shape != p.shape or (both.size and not 0 <= both.min() <= both.max() < k):
        span = f", values {both.min()} to {both.max()}" if both.size else ""
        raise ConfigError.build(what="labels", expected=f"two equal-length label vectors in "
                                f"[0, {k})", received=f"lengths {t.size} and {p.size}{span}",
                                fix="pass the true and predicted labels of the same images")
    out = np.zeros((k, k), dtype=np.int64)
    np.add.at(out, (t, p), 1)
    return out


def macro_f1(confusion: Any) -> float:
    """Macro F1 from a confusion matrix (rows: true class, columns: predicted).

    Averages the per-class F1 over the classes that occur in the truth or the
    predictions (scikit-learn's ``f1_score(average="macro")``); a class never
    predicted and never true is left out, one with no true positive scores 0.

    Args:
        confusion: a square ``(K, K)`` array of counts.

    Returns:
        The macro F1 in ``[0, 1]`` (0.0 for an empty matrix).

    Raises:
        ConfigError: if ``confusion`` is not a square matrix of non-negative counts.

    Example:
        >>> macro_f1([[5, 0], [0, 5]])
        1.0
        >>> round(macro_f1([[2, 1], [0, 3]]), 4)
        0.8286
    """
    c = _counts(confusion)
    tp = np.diag(c)
    true, pred = c.sum(axis=1), c.sum(axis=0)
    present = (true + pred) > 0
    if not present.any():
        return 0.0
    f1 = np.where(present, 2 * tp / np.maximum(true + pred, 1e-300), 0.0)
    return float(f1[present].mean())


def _counts(confusion: Any) -> np.ndarray:
    c = np.asarray(confusion, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or (c < 0).any():
        raise ConfigError.build(what="confusion", expected="a square matrix of counts",
                                received=f"shape {c.shape}", fix="pass a (K, K) count matrix")
    return c


def balanced_accuracy(confusion: Any) -> float:
    """Balanced accuracy of a confusion matrix: the mean recall over the classes that occur
    in the truth (scikit-learn's ``balanced_accuracy_score``). A model that always predicts
    one class scores ``1 / K`` over ``K`` true classes, whatever the class balance.

    Args:
        confusion: a square ``(K, K)`` array of counts (rows: true class).

    Returns:
        The balanced accuracy in ``[0, 1]`` (0.0 for an empty matrix).

    Raises:
        ConfigError: if ``confusion`` is not a square matrix of non-negative counts.

    Example:
        >>> balanced_accuracy([[8, 0], [2, 0]])  # always class 0: accuracy 0.8
        0.5
    """
    c = _counts(confusion)
    true = c.sum(axis=1)
    present = true > 0
    if not present.any():
        return 0.0
    return float((np.diag(c)[present] / true[present]).mean())


def majority_share(confusion: Any) -> float:
    """The accuracy of always predicting the commonest true class of a confusion matrix.

    Args:
        confusion: a square ``(K, K)`` array of counts (rows: true class).

    Returns:
        The commonest class's share of the examples (0.0 for an empty matrix).

    Raises:
        ConfigError: if ``confusion`` is not a square matrix of non-negative counts.

    Example:
        >>> majority_share([[6, 2], [1, 1]])
        0.8
    """
    true = _counts(confusion).sum(axis=1)
    return float(true.max() / true.sum()) if true.sum() > 0 else 0.0


def nearest_mean_labels(images: Tensor, auxiliary: Tensor, labels: Tensor) -> Tensor:
    """The label of the nearest class-mean image (Euclidean), for each image.

    A federated server holds few labelled images of its own, so a nearest-class-mean rule
    on them reads the class off reconstructions (the offline auditor trains a CNN judge).

    Args:
        images: ``(n, C, H, W)`` images to label.
        auxiliary: ``(m, C, H, W)`` labelled images.
        labels: ``(m,)`` their labels.

    Returns:
        ``(n,)`` predicted labels (among those of ``labels``).

    Raises:
        ConfigError: for no labelled images, or as many labels as images.

    Example:
        >>> aux = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
        >>> nearest_mean_labels(torch.full((1, 1, 2, 2), 0.9), aux, torch.tensor([0, 1]))
        tensor([1])
    """
    if len(auxiliary) == 0 or len(auxiliary) != len(labels):
        raise ConfigError.build(what="auxiliary", expected="labelled images, one label each",
                                received=f"{len(auxiliary)} images, {len(labels)} labels",
                                fix="pass the server's labelled images and their labels")
    classes = torch.unique(labels)
    means = torch.stack([auxiliary[labels == c].mean(0) for c in classes]).flatten(1)
    dist = torch.cdist(images.flatten(1).double(), means.double())
    return classes[dist.argmin(1)]


__all__ = ["balanced_accuracy", "confusion_matrix", "macro_f1", "majority_share",
           "nearest_mean_labels"]
