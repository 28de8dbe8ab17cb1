"""Where the data files live: :func:`default_data_root` and the error for a missing root.

Example:
    >>> root = default_data_root()
    >>> root is None or root.is_dir()
    True
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from shieldsplit.errors import ConfigError, ShieldSplitError

logger = logging.getLogger(__name__)

#: Environment variable that points at the folder holding the data files.
DATA_ROOT_ENV = "SHIELDSPLIT_DATA_ROOT"


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
    candidates.append(Path(__file__).resolve().parents[2] / ".." / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    return None


def missing_root_error(name: str) -> ShieldSplitError:
    """The error for a data set that needs a data folder and got ``root=None``."""
    found = default_data_root()
    hint = f" (found one at {found}: root=default_data_root())" if found is not None else ""
    return ConfigError.build(
        what="root",
        expected=f"a data folder for {name!r} (the folder that holds its files)",
        received="root=None",
        fix=f"pass --data-root DIR on the command line or root=DIR in Python{hint}",
    )


__all__ = ["DATA_ROOT_ENV", "default_data_root", "missing_root_error"]
