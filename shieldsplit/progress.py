"""Progress bars for long work (rich), silent when disabled.

Example:
    >>> with progress_bar(range(3), total=3, description="demo", enabled=False) as items:
    ...     sum(items)
    3
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


@contextlib.contextmanager
def progress_bar(
    items: Iterable[T], *, total: int | None, description: str, enabled: bool = True
) -> Iterator[Iterable[T]]:
    """Wrap ``items`` in a live progress bar.

    Args:
        items: what to iterate.
        total: number of items, if known.
        description: label shown beside the bar.
        enabled: when False, or when stderr is not a terminal (logs, CI), ``items``
            is returned unchanged.

    Yields:
        An iterable over ``items`` that advances the bar.
    """
    if not enabled or not sys.stderr.isatty():
        yield items
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        yield bar.track(items, total=total, description=description)


__all__ = ["progress_bar"]
