"""The :class:`ImageDataset` container: validated train/val/test image tensors.

Also :class:`DatasetLoader`, the signature of a function that builds one (what
:func:`shieldsplit.data.register_dataset` takes).

Example:
    >>> import torch
    >>> ds = ImageDataset.from_tensors(torch.rand(40, 1, 4, 4), torch.arange(40) % 2,
    ...                                val=0.25, test=0.25, seed=0)
    >>> ds.in_channels, ds.image_size, ds.num_classes
    (1, (4, 4), 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from shieldsplit._core.validate import check_pair, check_seed, check_unit_range, denormalize
from shieldsplit.data.splits import SPLITS, stratified_split
from shieldsplit.errors import (
    ConfigError,
    EmptyDataError,
    InputShapeError,
    LabelError,
    NonFiniteInputError,
)


@dataclass(frozen=True, eq=False, repr=False)
class ImageDataset:
    """An image classification data set split into train, validation and test tensors.

    The constructor validates its fields, so a custom loader that builds one
    gets a clear error instead of a silent mismatch later.

    Attributes:
        name: the registry name (e.g. ``"digits"``).
        x_train: training images, float32 ``(N, C, H, W)`` in ``[0, 1]``.
        y_train: training labels, int64 ``(N,)`` in ``[0, num_classes)``.
        x_val: validation images, same layout as ``x_train``.
        y_val: validation labels.
        x_test: test images, same layout as ``x_train``.
        y_test: test labels.
        num_classes: number of classes.
        class_names: one name per class, index ``i`` naming label ``i``.
        source: human-readable provenance (origin, file, how it was split).

    Raises:
        InputShapeError: if an image tensor is not float32 ``(N, C, H, W)`` or
            the splits disagree on ``(C, H, W)``.
        NonFiniteInputError: if an image tensor holds NaN or infinity.
        ConfigError: if images leave ``[0, 1]``, ``num_classes`` is not a
            positive int, or ``class_names`` has another length.
        LabelError: if a label tensor is not int64 ``(N,)`` matching its images,
            or holds a label outside ``[0, num_classes)``.
        EmptyDataError: if a split has no image.

    Example:
        >>> import torch
        >>> ds = ImageDataset(
        ...     name="toy",
        ...     x_train=torch.zeros(4, 1, 2, 2), y_train=torch.tensor([0, 1, 0, 1]),
        ...     x_val=torch.zeros(2, 1, 2, 2), y_val=torch.tensor([0, 1]),
        ...     x_test=torch.ones(2, 1, 2, 2), y_test=torch.tensor([1, 0]),
        ...     num_classes=2, class_names=("a", "b"), source="made up")
        >>> ds.in_channels, ds.image_size
        (1, (2, 2))
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError.build(
                what="name",
                expected="a non-empty string",
                received=repr(self.name),
                fix="give the data set a name",
            )
        if (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or self.num_classes < 1
        ):
            raise ConfigError.build(
                what="num_classes",
                expected="an int >= 1",
                received=repr(self.num_classes),
                fix="pass the number of classes",
            )
        names = tuple(self.class_names)
        if len(names) != self.num_classes or not all(isinstance(n, str) for n in names):
            raise ConfigError.build(
                what="class_names",
                expected=f"{self.num_classes} strings (one per class)",
                received=repr(self.class_names),
                fix="pass one name per class, in label order",
            )
        object.__setattr__(self, "class_names", names)
        chw: tuple[int, ...] | None = None
        for split in SPLITS:
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.dtype != torch.float32:
                received = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x)
                raise InputShapeError.build(
                    what=f"x_{split}",
                    expected="a float32 tensor of shape (N, C, H, W)",
                    received=received,
                    fix="convert images with torch.as_tensor(x, dtype=torch.float32) and "
                    "add a channel axis",
                )
            if chw is None:
                chw = tuple(x.shape[1:])
            elif tuple(x.shape[1:]) != chw:
                raise InputShapeError.build(
                    what=f"x_{split}",
                    expected=f"images of shape (N, {', '.join(map(str, chw))}) like x_train",
                    received=tuple(x.shape),
                    fix="give every split the same channels and image size",
                )
            if x.shape[0] == 0:
                raise EmptyDataError.build(
                    what=f"x_{split}",
                    expected="at least one image",
                    received="0 images",
                    fix=f"give the {split} split some data",
                )
            if not bool(torch.isfinite(x).all()):
                raise NonFiniteInputError.build(
                    what=f"x_{split}",
                    expected="finite pixel values",
                    received="NaN or infinity",
                    fix="clean the images before building the data set",
                )
            check_unit_range(x, what=f"x_{split}")
            if (
                not isinstance(y, torch.Tensor)
                or y.dtype != torch.int64
                or y.ndim != 1
                or y.shape[0] != x.shape[0]
            ):
                received = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y)
                raise LabelError.build(
                    what=f"y_{split}",
                    expected=f"an int64 tensor of shape ({x.shape[0]},)",
                    received=received,
                    fix="pass one int64 label per image",
                )
            ylo, yhi = int(y.min()), int(y.max())
            if ylo < 0 or yhi >= self.num_classes:
                raise LabelError.build(
                    what=f"y_{split}",
                    expected=f"labels in [0, {self.num_classes - 1}]",
                    received=f"labels in [{ylo}, {yhi}]",
                    fix="relabel to 0..num_classes-1 or raise num_classes",
                )

    @classmethod
    def from_tensors(
        cls,
        x: Any,
        y: Any,
        *,
        val: float = 0.15,
        test: float = 0.15,
        seed: int = 0,
        num_classes: int | None = None,
        class_names: tuple[str, ...] | None = None,
        normalization: tuple[Any, Any] | None = None,
        name: str = "tensors",
    ) -> ImageDataset:
        """Build a data set from your own images and labels with a seeded stratified split.

        Every class is split in the same proportions (see :func:`stratified_split`), so
        a rare class keeps its share in each split. Labels may be ``(N,)`` or ``(N, 1)``
        of any integer dtype (see docs/data.md).

        Args:
            x: float images ``(N, C, H, W)`` in ``[0, 1]`` (or normalised, with
                ``normalization``).
            y: integer labels ``(N,)`` or ``(N, 1)``.
            val: fraction of each class for the validation split, in ``(0, 1)``.
            test: fraction of each class for the test split, in ``(0, 1)``; ``val + test < 1``.
            seed: seeds the split; the same seed gives the same split.
            num_classes: the number of classes (default: the largest label + 1).
            class_names: one name per class (default ``"0"``, ``"1"``, ...).
            normalization: ``(mean, std)`` the images were normalised with; they are
                de-normalised to ``[0, 1]`` here (wrap the model in
                :class:`shieldsplit.datacontract.Normalized`).
            name: the data set's name.

        Returns:
            The data set.

        Raises:
            InputShapeError, NonFiniteInputError, LabelError, ConfigError: input that
                breaks the contract of docs/data.md, or bad fractions or seed.
            EmptyDataError: a split would hold no image.

        Example:
            >>> import torch
            >>> x, y = torch.rand(40, 1, 4, 4), torch.arange(40) % 2
            >>> ds = ImageDataset.from_tensors(x, y.view(-1, 1).int(), val=0.25, test=0.25,
            ...                                seed=0)
            >>> ds.y_train.shape[0], ds.y_val.shape[0], ds.y_test.shape[0], ds.num_classes
            (20, 10, 10, 2)
        """
        seed = check_seed(seed)
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x))
        if normalization is not None:
            x = denormalize(x, *normalization)
        xs, labels = check_pair(x, y, what="x", label_what="y")
        classes = int(labels.max()) + 1 if num_classes is None else num_classes
        train, val_idx, test_idx = stratified_split(labels.numpy(), val=val, test=test, seed=seed)
        parts: dict[str, torch.Tensor] = {}
        for split, idx in zip(SPLITS, (train, val_idx, test_idx), strict=True):
            index = torch.from_numpy(idx)
            parts[f"x_{split}"], parts[f"y_{split}"] = xs[index], labels[index]
        names = class_names if class_names is not None else tuple(
            str(i) for i in range(classes if isinstance(classes, int) else 0))
        return cls(
            name=name, **parts, num_classes=classes, class_names=names,
            source=(f"{name}: {x.shape[0]} images from tensors; stratified split with "
                    f"val={val:g}, test={test:g}, seed={seed}"),
        )

    @property
    def in_channels(self) -> int:
        """Number of image channels ``C``."""
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """Image height and width ``(H, W)``."""
        return int(self.x_train.shape[2]), int(self.x_train.shape[3])

    def summary(self) -> str:
        """Describe the data set in a few lines: sizes, classes with counts, provenance.

        Returns:
            A multi-line human-readable string.

        Example:
            >>> from shieldsplit.data import load_dataset
            >>> print(load_dataset("digits").summary())
            digits: 1797 images of 1x8x8, 10 classes
              splits: train 1257, val 270, test 270
              classes (train/val/test counts): 0 124/27/27; 1 127/27/28; ...
              source: scikit-learn load_digits() ...
        """
        sizes = {s: int(getattr(self, f"y_{s}").shape[0]) for s in SPLITS}
        counts = {
            s: torch.bincount(getattr(self, f"y_{s}"), minlength=self.num_classes).tolist()
            for s in SPLITS
        }
        c, h, w = self.in_channels, *self.image_size
        per_class = "; ".join(
            f"{i} {name} {'/'.join(str(counts[s][i]) for s in SPLITS)}"
            if name != str(i)
            else f"{i} {'/'.join(str(counts[s][i]) for s in SPLITS)}"
            for i, name in enumerate(self.class_names)
        )
        return "\n".join(
            [
                f"{self.name}: {sum(sizes.values())} images of {c}x{h}x{w}, "
                f"{self.num_classes} classes",
                "  splits: " + ", ".join(f"{s} {sizes[s]}" for s in SPLITS),
                f"  classes (train/val/test counts): {per_class}",
                f"  source: {self.source}",
            ]
        )

    def __repr__(self) -> str:
        sizes = "/".join(str(int(getattr(self, f"y_{s}").shape[0])) for s in SPLITS)
        c, h, w = self.in_channels, *self.image_size
        return (
            f"ImageDataset(name={self.name!r}, images={c}x{h}x{w}, "
            f"train/val/test={sizes}, num_classes={self.num_classes})"
        )


class DatasetLoader(Protocol):
    """A function that builds an :class:`ImageDataset`; called with keywords only."""

    def __call__(self, *, root: Path | None, seed: int) -> ImageDataset: ...


__all__ = ["DatasetLoader", "ImageDataset"]
