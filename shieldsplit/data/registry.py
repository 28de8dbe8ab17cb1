"""The data set registry: :func:`register_dataset` and :func:`load_dataset` by name.

The built-in names (``"digits"``, ``"breastmnist"``, ``"pneumoniamnist"``,
``"mnist"``; :mod:`shieldsplit.data.builtin`) are registered when this module is
imported.

Example:
    >>> load_dataset("digits", limit=10).y_train.shape
    torch.Size([10])
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shieldsplit._core.registry import Registry
from shieldsplit._core.validate import check_seed
from shieldsplit.data.builtin import load_digits, load_mnist, medmnist_loader
from shieldsplit.data.dataset import DatasetLoader, ImageDataset
from shieldsplit.data.root import missing_root_error
from shieldsplit.data.splits import SPLITS
from shieldsplit.errors import ConfigError

logger = logging.getLogger(__name__)

#: The data set used when none is named.
DEFAULT_DATASET = "digits"


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
            raise missing_root_error(key)
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


def _subset(ds: ImageDataset, limit: int, seed: int) -> ImageDataset:
    """Keep at most ``limit`` examples per split: a seeded random subset, original order."""
    rng = np.random.default_rng(seed)
    changes: dict[str, Any] = {}
    for split in SPLITS:
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


register_dataset("digits", load_digits)
register_dataset("breastmnist", medmnist_loader("breastmnist", "BreastMNIST"), needs_root=True)
register_dataset(
    "pneumoniamnist", medmnist_loader("pneumoniamnist", "PneumoniaMNIST"), needs_root=True
)
register_dataset("mnist", load_mnist, needs_root=True)


__all__ = ["DEFAULT_DATASET", "available_datasets", "load_dataset", "register_dataset",
           "unregister_dataset"]
