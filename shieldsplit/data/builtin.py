"""The built-in data sets' loaders: scikit-learn's digits, MedMNIST v2 and MNIST.

Each turns an adapter's arrays (:mod:`shieldsplit.adapters`) into an
:class:`~shieldsplit.data.ImageDataset`; :mod:`shieldsplit.data.registry`
registers them as ``"digits"``, ``"breastmnist"``, ``"pneumoniamnist"`` and
``"mnist"``.

Example:
    >>> load_digits(root=None, seed=0).y_test.shape
    torch.Size([270])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from shieldsplit.data.dataset import DatasetLoader, ImageDataset
from shieldsplit.data.root import missing_root_error
from shieldsplit.data.splits import images_to_tensor, labels_to_tensor, stratified_indices


def load_digits(*, root: Path | None, seed: int) -> ImageDataset:
    """scikit-learn's 8x8 digits with a stratified 70/15/15 split (``root`` unused)."""
    from shieldsplit.adapters.digits import DIGITS_MAX_VALUE, DIGITS_SOURCE, load_digits_arrays

    x, y = load_digits_arrays()
    train, val, test = stratified_indices(
        y, train_size=0.70, rest_size=0.30, val_size=0.5, test_size=0.5, seed=seed
    )
    return _split_ten_classes(
        "digits", images_to_tensor(x, DIGITS_MAX_VALUE), labels_to_tensor(y),
        (train, val, test), f"{DIGITS_SOURCE}; stratified 70/15/15 split with seed={seed}",
    )


def _split_ten_classes(
    name: str, xt: torch.Tensor, yt: torch.Tensor, splits: tuple[Any, Any, Any], source: str
) -> ImageDataset:
    """An ImageDataset of digit classes 0-9 from index arrays for train, val and test."""
    train, val, test = splits
    return ImageDataset(
        name=name,
        x_train=xt[train],
        y_train=yt[train],
        x_val=xt[val],
        y_val=yt[val],
        x_test=xt[test],
        y_test=yt[test],
        num_classes=10,
        class_names=tuple(str(i) for i in range(10)),
        source=source,
    )


def medmnist_loader(flag: str, title: str) -> DatasetLoader:
    """The loader of a MedMNIST v2 file (``flag``) with its official splits."""

    def load(*, root: Path | None, seed: int) -> ImageDataset:
        from shieldsplit.adapters.medmnist import (
            MEDMNIST_MAX_VALUE,
            load_medmnist,
            medmnist_class_names,
            medmnist_file,
        )

        if root is None:  # pragma: no cover - load_dataset checks this first
            raise missing_root_error(flag)
        splits = load_medmnist(flag, root)
        names = medmnist_class_names(flag)
        tensors: dict[str, torch.Tensor] = {}
        for split, (x, y) in splits.items():
            tensors[f"x_{split}"] = images_to_tensor(x, MEDMNIST_MAX_VALUE)
            tensors[f"y_{split}"] = labels_to_tensor(y)
        return ImageDataset(
            name=flag,
            **tensors,
            num_classes=len(names),
            class_names=names,
            source=(
                f"MedMNIST v2 {title} 28x28 ({medmnist_file(flag, root)}), official "
                "train/val/test splits; cite MedMNIST v2 (Yang et al., Sci. Data 2023), "
                "CC BY 4.0"
            ),
        )

    return load


def load_mnist(*, root: Path | None, seed: int) -> ImageDataset:
    """The MNIST test set under ``root`` with a stratified 7000/1000/2000 split."""
    from shieldsplit.adapters.mnist import (
        MNIST_MAX_VALUE,
        MNIST_SOURCE,
        load_mnist_test,
        resolve_mnist_dir,
    )

    if root is None:  # pragma: no cover - load_dataset checks this first
        raise missing_root_error("mnist")
    x, y = load_mnist_test(root)
    train, val, test = stratified_indices(
        y, train_size=7000, rest_size=3000, val_size=1000, test_size=2000, seed=seed
    )
    return _split_ten_classes(
        "mnist", images_to_tensor(x, MNIST_MAX_VALUE), labels_to_tensor(y), (train, val, test),
        (
            f"{MNIST_SOURCE} from {resolve_mnist_dir(root)}; stratified 7000/1000/2000 "
            f"split with seed={seed}"
        ),
    )


__all__ = ["load_digits", "load_mnist", "medmnist_loader"]
