"""``DataLoader`` objects over an :class:`~shieldsplit.data.ImageDataset`'s splits.

Example:
    >>> from shieldsplit.data import load_dataset
    >>> xb, yb = next(iter(make_loaders(load_dataset("digits"), batch_size=8).train))
    >>> xb.shape, yb.shape
    (torch.Size([8, 1, 8, 8]), torch.Size([8]))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit._core.validate import check_seed
from shieldsplit.data.dataset import ImageDataset
from shieldsplit.errors import ConfigError


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
        >>> from shieldsplit.data import load_dataset
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


__all__ = ["DataLoaders", "make_loaders"]
