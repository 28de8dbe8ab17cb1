"""Image data sets as tensors: a small registry, deterministic splits and loaders.

Every data set comes back as an :class:`ImageDataset`: images float32
``(N, C, H, W)`` scaled to ``[0, 1]`` and labels int64 ``(N,)`` for a train,
a validation and a test split, plus class names and a provenance string.

Built-in names (see :func:`available_datasets`):

- ``"digits"`` (the default): scikit-learn's 8x8 digits, bundled with
  scikit-learn, no data folder needed; stratified 70/15/15 split
  (1257/270/270) drawn with ``seed``.
- ``"breastmnist"`` and ``"pneumoniamnist"``: MedMNIST v2 28x28 files with
  their official train/val/test splits; need ``root`` (the folder holding
  ``breastmnist.npz`` / ``pneumoniamnist.npz``) and the optional ``medmnist``
  package.
- ``"mnist"``: the 10,000-image MNIST test set (``root/mnist/t10k-*.gz``),
  split stratified into 7000/1000/2000 with ``seed``.

Files are checked against their official MD5 before use; see
:mod:`shieldsplit.adapters`.

The modules: ``dataset`` (:class:`ImageDataset`), ``splits`` (seeded stratified
splits, array conversion), ``builtin`` (the built-in loaders), ``registry``
(:func:`register_dataset`, :func:`load_dataset`), ``loaders`` (:func:`make_loaders`)
and ``root`` (:func:`default_data_root`).

Example:
    >>> from shieldsplit.data import load_dataset, make_loaders
    >>> ds = load_dataset("digits", seed=0)
    >>> ds.x_train.shape, ds.x_train.dtype, ds.y_train.dtype
    (torch.Size([1257, 1, 8, 8]), torch.float32, torch.int64)
    >>> loaders = make_loaders(ds, batch_size=32, seed=0)
    >>> xb, yb = next(iter(loaders.train))
    >>> xb.shape, yb.shape
    (torch.Size([32, 1, 8, 8]), torch.Size([32]))
"""

from __future__ import annotations

from shieldsplit.data.dataset import DatasetLoader, ImageDataset
from shieldsplit.data.loaders import DataLoaders, make_loaders
from shieldsplit.data.registry import (
    DEFAULT_DATASET,
    available_datasets,
    load_dataset,
    register_dataset,
    unregister_dataset,
)
from shieldsplit.data.root import DATA_ROOT_ENV, default_data_root
from shieldsplit.data.splits import stratified_split

__all__ = [
    "DATA_ROOT_ENV",
    "DEFAULT_DATASET",
    "DataLoaders",
    "DatasetLoader",
    "ImageDataset",
    "available_datasets",
    "default_data_root",
    "load_dataset",
    "make_loaders",
    "register_dataset",
    "stratified_split",
    "unregister_dataset",
]
