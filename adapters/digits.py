"""scikit-learn's bundled hand-written digits (8x8 images, values 0..16).

The data ships inside scikit-learn (``sklearn.datasets.load_digits``), so it
needs no download and no data folder. It is a copy of the test set of the UCI
ML "Optical Recognition of Handwritten Digits" data: 1,797 images, 10 classes.

Example:
    >>> from shieldsplit.adapters.digits import load_digits_arrays
    >>> x, y = load_digits_arrays()
    >>> x.shape, x.dtype, y.dtype
    ((1797, 8, 8), dtype('float64'), dtype('int64'))
    >>> float(x.min()), float(x.max()), sorted(set(y.tolist())) == list(range(10))
    (0.0, 16.0, True)
"""

from __future__ import annotations

import numpy as np

#: Largest pixel value of the digits images (they range over 0..16).
DIGITS_MAX_VALUE = 16.0

#: Human-readable provenance of the data.
DIGITS_SOURCE = (
    "scikit-learn load_digits() (UCI ML Optical Recognition of Handwritten Digits, "
    "1,797 images of 8x8 pixels with values 0..16)"
)


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Load scikit-learn's 8x8 digits as numpy arrays.

    Returns:
        ``(images, labels)``: images of shape ``(1797, 8, 8)`` (float64, values
        0..16) and labels of shape ``(1797,)`` (int64, digits 0..9).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.ascontiguousarray(bunch.images, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    return images, labels


__all__ = ["DIGITS_MAX_VALUE", "DIGITS_SOURCE", "load_digits_arrays"]
