"""Import third-party modules without letting them reconfigure the root logger.

Opacus calls ``logging.basicConfig`` when imported, which would install a
handler on the user's root logger (and make ``basicConfig`` a no-op for them).

Example:
    >>> import logging
    >>> before = list(logging.root.handlers)
    >>> with keep_root_logger():
    ...     logging.basicConfig(level=logging.DEBUG)
    >>> logging.root.handlers == before
    True
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def keep_root_logger() -> Iterator[None]:
    """Restore the root logger's handlers and level after the block."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


__all__ = ["keep_root_logger"]
