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

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit._core.registry import Registry
from shieldsplit._core.validate import (
    check_number,
    check_pair,
    check_seed,
    check_unit_range,
    denormalize,
)
from shieldsplit.errors import (
    ConfigError,
    EmptyDataError,
    InputShapeError,
    LabelError,
    NonFiniteInputError,
    ShieldSplitError,
)

logger = logging.getLogger(__name__)

#: The data set used when none is named.
DEFAULT_DATASET = "digits"

#: Environment variable that points at the folder holding the data files.
DATA_ROOT_ENV = "SHIELDSPLIT_DATA_ROOT"

_SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- dataset


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
        for split in _SPLITS:
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
        for split, idx in zip(_SPLITS, (train, val_idx, test_idx), strict=True):
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
            >>> print(load_dataset("digits").summary())
            digits: 1797 images of 1x8x8, 10 classes
              splits: train 1257, val 270, test 270
              classes (train/val/test counts): 0 124/27/27; 1 127/27/28; ...
              source: scikit-learn load_digits() ...
        """
        sizes = {s: int(getattr(self, f"y_{s}").shape[0]) for s in _SPLITS}
        counts = {
            s: torch.bincount(getattr(self, f"y_{s}"), minlength=self.num_classes).tolist()
            for s in _SPLITS
        }
        c, h, w = self.in_channels, *self.image_size
        per_class = "; ".join(
            f"{i} {name} {'/'.join(str(counts[s][i]) for s in _SPLITS)}"
            if name != str(i)
            else f"{i} {'/'.join(str(counts[s][i]) for s in _SPLITS)}"
            for i, name in enumerate(self.class_names)
        )
        return "\n".join(
            [
                f"{self.name}: {sum(sizes.values())} images of {c}x{h}x{w}, "
                f"{self.num_classes} classes",
                "  splits: " + ", ".join(f"{s} {sizes[s]}" for s in _SPLITS),
                f"  classes (train/val/test counts): {per_class}",
                f"  source: {self.source}",
            ]
        )

    def __repr__(self) -> str:
        sizes = "/".join(str(int(getattr(self, f"y_{s}").shape[0])) for s in _SPLITS)
        c, h, w = self.in_channels, *self.image_size
        return (
            f"ImageDataset(name={self.name!r}, images={c}x{h}x{w}, "
            f"train/val/test={sizes}, num_classes={self.num_classes})"
        )


# ------------------------------------------------------------------------- helpers


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
    for split, idx in zip(_SPLITS, splits, strict=True):
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


def _images_to_tensor(x: np.ndarray, max_value: float) -> torch.Tensor:
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


def _labels_to_tensor(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64).reshape(-1))


def _stratified_indices(
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


def _subset(ds: ImageDataset, limit: int, seed: int) -> ImageDataset:
    """Keep at most ``limit`` examples per split: a seeded random subset, original order."""
    rng = np.random.default_rng(seed)
    changes: dict[str, Any] = {}
    for split in _SPLITS:
        x = getattr(ds, f"x_{split}")
        y = getattr(ds, f"y_{split}")
        n = int(y.shape[0])
        if n > limit:
            keep = torch.from_numpy(np.sort(rng.choice(n, size=limit, replace=False)))
            changes[f"x_{split}"] = x[keep].contiguous()
            changes[f"y_{split}"] = y[keep].contiguous()
    if not changes:
        return ds
    return dataclasses.replace(
        ds, **changes, source=f"{ds.source}; at most {limit} per split (seed={seed})"
    )


# ------------------------------------------------------------------- built-in loaders


class DatasetLoader(Protocol):
    """A function that builds an :class:`ImageDataset`; called with keywords only."""

    def __call__(self, *, root: Path | None, seed: int) -> ImageDataset: ...


def _load_digits(*, root: Path | None, seed: int) -> ImageDataset:
    from shieldsplit.adapters.digits import DIGITS_MAX_VALUE, DIGITS_SOURCE, load_digits_arrays

    x, y = load_digits_arrays()
    train, val, test = _stratified_indices(
        y, train_size=0.70, rest_size=0.30, val_size=0.5, test_size=0.5, seed=seed
    )
    return _split_ten_classes(
        "digits", _images_to_tensor(x, DIGITS_MAX_VALUE), _labels_to_tensor(y),
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


def _medmnist_loader(flag: str, title: str) -> DatasetLoader:
    def load(*, root: Path | None, seed: int) -> ImageDataset:
        from shieldsplit.adapters.medmnist import (
            MEDMNIST_MAX_VALUE,
            load_medmnist,
            medmnist_class_names,
            medmnist_file,
        )

        if root is None:  # pragma: no cover - load_dataset checks this first
            raise _missing_root_error(flag)
        splits = load_medmnist(flag, root)
        names = medmnist_class_names(flag)
        tensors: dict[str, torch.Tensor] = {}
        for split, (x, y) in splits.items():
            tensors[f"x_{split}"] = _images_to_tensor(x, MEDMNIST_MAX_VALUE)
            tensors[f"y_{split}"] = _labels_to_tensor(y)
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


def _load_mnist(*, root: Path | None, seed: int) -> ImageDataset:
    from shieldsplit.adapters.mnist import (
        MNIST_MAX_VALUE,
        MNIST_SOURCE,
        load_mnist_test,
        resolve_mnist_dir,
    )

    if root is None:  # pragma: no cover - load_dataset checks this first
        raise _missing_root_error("mnist")
    x, y = load_mnist_test(root)
    train, val, test = _stratified_indices(
        y, train_size=7000, rest_size=3000, val_size=1000, test_size=2000, seed=seed
    )
    return _split_ten_classes(
        "mnist", _images_to_tensor(x, MNIST_MAX_VALUE), _labels_to_tensor(y), (train, val, test),
        (
            f"{MNIST_SOURCE} from {resolve_mnist_dir(root)}; stratified 7000/1000/2000 "
            f"split with seed={seed}"
        ),
    )


# ------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class _Entry:
    loader: Callable[..., ImageDataset]
    needs_root: bool


_REGISTRY: Registry[_Entry] = Registry(
    "data set", normalize=lambda name: name.strip().lower(),
    unregister_hint="pass overwrite=True (or unregister_dataset() the old one)",
    lookup_hint="pass one of the listed names, or register_dataset() your own",
)


def register_dataset(
    name: str,
    loader_fn: DatasetLoader | Callable[..., ImageDataset],
    *,
    needs_root: bool = False,
    overwrite: bool = False,
) -> None:
    """Make a data set loadable by name through :func:`load_dataset`.

    Args:
        name: the name to register; matched case-insensitively.
        loader_fn: called as ``loader_fn(root=Path | None, seed=int)``; must
            return an :class:`ImageDataset` and be deterministic for a seed.
            :func:`load_dataset` applies ``limit`` afterwards.
        needs_root: whether the loader needs a data folder; if so,
            :func:`load_dataset` refuses ``root=None`` with a clear error.
        overwrite: replace an existing registration of ``name``.

    Raises:
        ConfigError: if ``name`` is empty, ``loader_fn`` is not callable, or
            ``name`` is taken and ``overwrite`` is false.

    Example:
        >>> def tiny(*, root, seed):
        ...     return load_dataset("digits", seed=seed, limit=8)
        >>> register_dataset("tiny-digits", tiny)
        >>> load_dataset("tiny-digits").x_train.shape[0]
        8
        >>> unregister_dataset("tiny-digits")
    """
    _REGISTRY.key(name)
    if not callable(loader_fn):
        raise ConfigError.build(
            what="loader_fn",
            expected="a callable loader_fn(*, root, seed) -> ImageDataset",
            received=type(loader_fn).__name__,
            fix="pass a function",
        )
    _REGISTRY.register(name, _Entry(loader=loader_fn, needs_root=bool(needs_root)),
                       overwrite=overwrite)


def unregister_dataset(name: str) -> None:
    """Remove a name from the registry (built-in names included).

    Args:
        name: a registered name (case-insensitive).

    Raises:
        ConfigError: if ``name`` is not registered (the message lists the names).
    """
    _REGISTRY.unregister(name, missing_ok=False)


def available_datasets() -> list[str]:
    """Return the registered data set names, sorted.

    Returns:
        The names accepted by :func:`load_dataset`.

    Example:
        >>> [n for n in available_datasets() if n in ("digits", "mnist")]
        ['digits', 'mnist']
    """
    return _REGISTRY.names()


def _missing_root_error(name: str) -> ShieldSplitError:
    found = default_data_root()
    hint = f" (found one at {found}: root=default_data_root())" if found is not None else ""
    return ConfigError.build(
        what="root",
        expected=f"a data folder for {name!r} (the folder that holds its files)",
        received="root=None",
        fix=f"pass --data-root DIR on the command line or root=DIR in Python{hint}",
    )


def load_dataset(
    name: str = DEFAULT_DATASET,
    *,
    root: str | Path | None = None,
    seed: int = 0,
    limit: int | None = None,
) -> ImageDataset:
    """Load a registered data set as train/val/test tensors.

    Args:
        name: one of :func:`available_datasets` (case-insensitive); default
            ``"digits"``.
        root: the folder that holds the data files (``breastmnist.npz``,
            ``pneumoniamnist.npz``, ``mnist/``). Not needed for ``"digits"``.
            :func:`default_data_root` finds the usual place.
        seed: seeds the splits that are drawn here (``digits``, ``mnist``) and
            the ``limit`` subset; same seed, same data set.
        limit: keep at most this many examples per split (a seeded random
            subset, kept in original order), for quick runs.

    Returns:
        The :class:`ImageDataset`.

    Raises:
        ConfigError: if ``name`` is unknown (the message lists the valid
            names), ``root`` is needed but None, ``seed`` or ``limit`` is out of
            range, or an optional package (``medmnist``) is missing.
        DataFileError: if a data file is missing or its MD5 is not the official one.

    Example:
        >>> ds = load_dataset("digits", seed=1, limit=100)
        >>> ds.num_classes, ds.in_channels, ds.image_size, ds.y_train.shape[0]
        (10, 1, (8, 8), 100)
        >>> load_dataset("cifar")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        shieldsplit.errors.ConfigError: Invalid configuration: expected one of [...'digits'...
    """
    entry = _REGISTRY.get(name)
    key = _REGISTRY.key(name)
    seed = check_seed(seed)
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1
    ):
        raise ConfigError.build(
            what="limit",
            expected="None or an int >= 1",
            received=repr(limit),
            fix="pass limit=None for all data or a positive cap per split",
        )
    root_path: Path | None
    if root is None:
        if entry.needs_root:
            raise _missing_root_error(key)
        root_path = None
    elif isinstance(root, (str, os.PathLike)):
        root_path = Path(root).expanduser()
    else:
        raise ConfigError.build(
            what="root",
            expected="a folder path (str or pathlib.Path) or None",
            received=type(root).__name__,
            fix="pass root as a path string",
        )
    ds = entry.loader(root=root_path, seed=seed)
    if not isinstance(ds, ImageDataset):
        raise ConfigError.build(
            what="loader_fn",
            expected=f"the loader of {key!r} to return an ImageDataset",
            received=type(ds).__name__,
            fix="make the registered loader return shieldsplit.data.ImageDataset",
        )
    if limit is not None:
        ds = _subset(ds, int(limit), seed)
    logger.debug("loaded %r", ds)
    return ds


# ------------------------------------------------------------------------- loaders


@dataclass(frozen=True)
class DataLoaders:
    """Train, validation and test loaders over one :class:`ImageDataset`.

    Attributes:
        train: shuffles with a ``torch.Generator`` seeded by the ``seed`` passed
            to :func:`make_loaders` (reproducible epoch after epoch).
        val: in data set order.
        test: in data set order.
    """

    train: DataLoader
    val: DataLoader
    test: DataLoader


def make_loaders(ds: ImageDataset, *, batch_size: int = 64, seed: int = 0) -> DataLoaders:
    """Wrap an :class:`ImageDataset`'s splits in ``DataLoader`` objects.

    Args:
        ds: the data set.
        batch_size: examples per batch (the last batch may be smaller).
        seed: seeds the train loader's shuffling.

    Returns:
        :class:`DataLoaders` over ``TensorDataset`` objects yielding ``(x, y)``.

    Raises:
        ConfigError: if ``ds`` is not an :class:`ImageDataset`, ``batch_size`` is
            not an int >= 1, or ``seed`` is out of range.

    Example:
        >>> loaders = make_loaders(load_dataset("digits"), batch_size=100)
        >>> len(loaders.train), len(loaders.val), len(loaders.test)
        (13, 3, 3)
    """
    if not isinstance(ds, ImageDataset):
        raise ConfigError.build(
            what="ds",
            expected="a shieldsplit.data.ImageDataset",
            received=type(ds).__name__,
            fix="build one with load_dataset()",
        )
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ConfigError.build(
            what="batch_size",
            expected="an int >= 1",
            received=repr(batch_size),
            fix="pass batch_size=64 or another positive int",
        )
    seed = check_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    bs = int(batch_size)
    return DataLoaders(
        train=DataLoader(
            TensorDataset(ds.x_train, ds.y_train), batch_size=bs, shuffle=True, generator=generator
        ),
        val=DataLoader(TensorDataset(ds.x_val, ds.y_val), batch_size=bs, shuffle=False),
        test=DataLoader(TensorDataset(ds.x_test, ds.y_test), batch_size=bs, shuffle=False),
    )


# ---------------------------------------------------------------------- data root


def default_data_root() -> Path | None:
    """Find the folder that holds the shared data files.

    Candidates, first existing folder wins: the environment variable
    ``SHIELDSPLIT_DATA_ROOT``; ``../shared/data`` relative to the current
    working directory; ``<repo>/../shared/data`` relative to this source file.

    Returns:
        The resolved folder, or None if no candidate exists.

    Example:
        >>> root = default_data_root()
        >>> root is None or root.is_dir()
        True
    """
    candidates: list[Path] = []
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        env_path = Path(env).expanduser()
        if env_path.is_dir():
            return env_path.resolve()
        logger.warning("%s=%s is not a folder; ignoring it", DATA_ROOT_ENV, env)
    with contextlib.suppress(OSError):  # the working directory may have been removed
        candidates.append(Path.cwd() / ".." / "shared" / "data")
    candidates.append(Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    return None


register_dataset("digits", _load_digits)
register_dataset("breastmnist", _medmnist_loader("breastmnist", "BreastMNIST"), needs_root=True)
register_dataset(
    "pneumoniamnist", _medmnist_loader("pneumoniamnist", "PneumoniaMNIST"), needs_root=True
)
register_dataset("mnist", _load_mnist, needs_root=True)


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
