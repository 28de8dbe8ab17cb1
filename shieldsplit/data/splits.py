"""Seeded splits and array conversion shared by the data set code.

:func:`stratified_split` draws a stratified train/val/test split by largest
remainder (what :meth:`~shieldsplit.data.ImageDataset.from_tensors` uses);
:func:`stratified_indices` is the two-step scikit-learn split of the built-in
loaders; :func:`images_to_tensor` and :func:`labels_to_tensor` turn the adapters'
numpy arrays into the tensors of an :class:`~shieldsplit.data.ImageDataset`.

Example:
    >>> import numpy as np
    >>> images_to_tensor(np.full((2, 4, 4), 255, dtype=np.uint8), 255.0).shape
    torch.Size([2, 1, 4, 4])
"""

from __future__ import annotations

import numpy as np
import torch

from shieldsplit._core.validate import check_number, check_seed
from shieldsplit.errors import ConfigError, EmptyDataError, InputShapeError

#: The splits of every data set, in order.
SPLITS = ("train", "val", "test")


def stratified_split(
    y: np.ndarray, *, val: float, test: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded stratified train/val/test indices: each class split in the same proportions.

    The validation and test sizes are ``round(N * val)`` and ``round(N * test)``,
    shared out over the classes by largest remainder, so each class's share in each
    split is within one image of its share in the whole; the rest is training data.
    Indices come back sorted (data set order).

    Args:
        y: integer labels ``(N,)``.
        val: validation fraction in ``(0, 1)``.
        test: test fraction in ``(0, 1)``, with ``val + test < 1``.
        seed: seeds the draw; the same seed gives the same indices.

    Returns:
        Disjoint ``(train, val, test)`` index arrays covering ``range(N)``.

    Raises:
        ConfigError: fractions out of range or a bad seed.
        EmptyDataError: a split would hold no image (too few images for the fractions).

    Example:
        >>> tr, va, te = stratified_split(np.array([0] * 8 + [1] * 4), val=0.25, test=0.25,
        ...                               seed=0)
        >>> np.bincount(np.array([0] * 8 + [1] * 4)[va]).tolist(), len(tr)
        ([2, 1], 6)
    """
    val = check_number("val", val, low=0.0, low_open=True, high=1.0, high_open=True,
                       fix="pass a fraction such as val=0.15")
    test = check_number("test", test, low=0.0, low_open=True, high=1.0, high_open=True,
                        fix="pass a fraction such as test=0.15")
    if val + test >= 1.0:
        raise ConfigError.build(
            what="val + test", expected="a sum below 1 (the rest is the training split)",
            received=f"{val:g} + {test:g}", fix="lower val or test",
        )
    rng = np.random.default_rng(check_seed(seed))
    labels = np.asarray(y).reshape(-1)
    classes, counts = np.unique(labels, return_counts=True)
    n_val = _largest_remainder(counts, val)
    n_test = np.minimum(_largest_remainder(counts, test), counts - n_val)
    out: list[list[np.ndarray]] = [[], [], []]
    for c, nv, nt in zip(classes, n_val, n_test, strict=True):
        idx = rng.permutation(np.flatnonzero(labels == c))
        out[1].append(idx[:nv])
        out[2].append(idx[nv:nv + nt])
        out[0].append(idx[nv + nt:])
    splits = tuple(np.sort(np.concatenate(part)).astype(np.int64) for part in out)
    for split, idx in zip(SPLITS, splits, strict=True):
        if len(idx) == 0:
            raise EmptyDataError.build(
                what=split, expected="at least one image in each split",
                received=f"0 of {len(labels)} images in {split}",
                fix="pass more images or larger val/test fractions",
            )
    return splits[0], splits[1], splits[2]


def _largest_remainder(counts: np.ndarray, fraction: float) -> np.ndarray:
    """Share ``round(sum(counts) * fraction)`` over the classes by largest remainder."""
    raw = counts * fraction
    base = np.floor(raw).astype(np.int64)
    short = round(float(counts.sum()) * fraction) - int(base.sum())
    order = np.argsort(-(raw - base), kind="stable")
    base[order[:max(short, 0)]] += 1
    return np.minimum(base, counts)


def images_to_tensor(x: np.ndarray, max_value: float) -> torch.Tensor:
    """Turn ``(N, H, W)`` or ``(N, H, W, C)`` / ``(N, C, H, W)`` arrays into float32 NCHW."""
    arr = np.asarray(x)
    if arr.ndim == 3:
        arr = arr[:, None, :, :]
    elif arr.ndim == 4 and arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)
    elif arr.ndim != 4:
        raise InputShapeError.build(
            what="images",
            expected="an array of shape (N, H, W), (N, H, W, C) or (N, C, H, W)",
            received=arr.shape,
            fix="check the adapter that produced the images",
        )
    scaled = np.ascontiguousarray(arr, dtype=np.float32) / np.float32(max_value)
    return torch.from_numpy(np.clip(scaled, 0.0, 1.0, out=scaled))


def labels_to_tensor(y: np.ndarray) -> torch.Tensor:
    """Turn labels of any integer dtype and shape into int64 ``(N,)``."""
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64).reshape(-1))


def stratified_indices(
    y: np.ndarray,
    *,
    train_size: float | int,
    rest_size: float | int,
    val_size: float | int,
    test_size: float | int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two stratified ``train_test_split`` calls: train vs rest, then val vs test."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    train, rest = train_test_split(
        idx, train_size=train_size, test_size=rest_size, stratify=y, random_state=seed
    )
    val, test = train_test_split(
        rest, train_size=val_size, test_size=test_size, stratify=y[rest], random_state=seed
    )
    return train, val, test


__all__ = ["SPLITS", "images_to_tensor", "labels_to_tensor", "stratified_indices",
           "stratified_split"]
