"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# The suite runs on 2 shared cores: one intra-op thread per process avoids
# oversubscription, which slowed the suite several-fold under load.
torch.set_num_threads(1)

#: Files that shared/data/README.md lists, relative to the data folder.
SHARED_DATA_FILES = (
    "breastmnist.npz",
    "pneumoniamnist.npz",
    "mnist/t10k-images-idx3-ubyte.gz",
    "mnist/t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """The folder with the verified data files (see shared/data/README.md).

    Found with :func:`shieldsplit.data.default_data_root` (the environment
    variable ``SHIELDSPLIT_DATA_ROOT``, then ``../shared/data``). Tests that use
    this fixture are skipped, with the reason, when the folder or a file is absent.
    """
    from shieldsplit.data import DATA_ROOT_ENV, default_data_root

    root = default_data_root()
    if root is None:
        pytest.skip(
            "shared data folder not found: set "
            f"{DATA_ROOT_ENV}=DIR or put the verified files in ../shared/data "
            "(see shared/data/README.md)"
        )
    missing = [name for name in SHARED_DATA_FILES if not (root / name).is_file()]
    if missing:
        pytest.skip(f"shared data folder {root} lacks {', '.join(missing)}")
    return root
