"""Progress for long work: a live bar on a terminal, plain lines in logs and CI.

On a terminal (stderr is a tty) a rich progress bar is drawn. Otherwise (CI, a
log file, ``2> log``) plain lines go to stderr: one when a piece of work
finishes (an epoch, an attack, ...), with its time, and one at least every
:data:`PLAIN_INTERVAL_S` seconds while it runs, with how far it is and the time
left, so a long job is never silent. ``enabled=False`` shows nothing.

Example:
    >>> with progress_bar(range(3), total=3, description="demo", enabled=False) as items:
    ...     sum(items)
    3
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")

#: Seconds between two plain progress lines of one running piece of work.
PLAIN_INTERVAL_S = 30.0


def _duration(seconds: float) -> str:
    """``75.2`` -> ``'1 min 15 s'``.

    Example:
        >>> _duration(4.26), _duration(75.2)
        ('4.3 s', '1 min 15 s')
    """
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s"


def progress_line(description: str, done: int, total: int | None, elapsed: float, *,
                  finished: bool = False) -> str:
    """One plain progress line.

    Args:
        description: what runs.
        done: items finished.
        total: items in all, if known.
        elapsed: seconds since the start.
        finished: the work is complete.

    Returns:
        The line (without newline).

    Example:
        >>> progress_line("plain epoch 1/10", 5, 20, 10.0)
        'plain epoch 1/10: 5/20 (25%), 10.0 s elapsed, about 30.0 s left'
        >>> progress_line("audit", 4, 4, 75.0, finished=True)
        'audit: done, 4/4 in 1 min 15 s'
    """
    count = f"{done}/{total}" if total is not None else f"{done}"
    if finished:
        return f"{description}: done, {count} in {_duration(elapsed)}"
    line = f"{description}: {count}"
    if total:
        line += f" ({done / total:.0%})"
    line += f", {_duration(elapsed)} elapsed"
    if total and done:
        line += f", about {_duration(elapsed / done * (total - done))} left"
    return line


class PlainProgress(Iterable[T]):
    """Iterate ``items``, writing plain progress lines (see the module docstring).

    A line at least every ``interval`` seconds while the work runs, and one by
    :meth:`finish` (which :func:`progress_bar` calls when its block ends) saying the work
    is done, or where it stopped.

    Args:
        items: what to iterate.
        total: number of items, if known.
        description: label of every line.
        stream: where the lines go (default: ``sys.stderr`` at the time of writing).
        clock: seconds, monotonic (for tests).
        interval: seconds between lines while running (default :data:`PLAIN_INTERVAL_S`).

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> ticks = iter(range(100))
        >>> bar = PlainProgress("abc", total=3, description="x", stream=out,
        ...                     clock=lambda: float(next(ticks)), interval=1.5)
        >>> list(bar)
        ['a', 'b', 'c']
        >>> bar.finish()
        >>> print(out.getvalue(), end="")
        x: 2/3 (67%), 2.0 s elapsed, about 1.0 s left
        x: done, 3/3 in 4.0 s
    """

    def __init__(self, items: Iterable[T], *, total: int | None, description: str,
                 stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 interval: float | None = None) -> None:
        self.items, self.total, self.description = items, total, description
        self.stream, self.clock = stream, clock
        self.interval = PLAIN_INTERVAL_S if interval is None else interval
        self.done = 0  # items whose work finished (the consumer asked for the next)
        self.taken = 0  # items handed out
        self.exhausted = False
        self.start = self.last = clock()

    def _write(self, line: str) -> None:
        out = self.stream if self.stream is not None else sys.stderr
        out.write(line + "\n")
        out.flush()

    def __iter__(self) -> Iterator[T]:
        for item in self.items:
            self.taken += 1
            yield item
            self.done += 1
            now = self.clock()
            if now - self.last >= self.interval and (self.total is None
                                                     or self.done < self.total):
                self._write(progress_line(self.description, self.done, self.total,
                                          now - self.start))
                self.last = now
        self.exhausted = True

    def finish(self) -> None:
        """Write the closing line: done, or where the work stopped."""
        elapsed = self.clock() - self.start
        if self.exhausted or (self.total is not None and self.taken >= self.total):
            self._write(progress_line(self.description, self.taken, self.total, elapsed,
                                      finished=True))
        else:
            self._write(progress_line(self.description, self.done, self.total, elapsed)
                        + " (stopped)")


@contextlib.contextmanager
def progress_bar(
    items: Iterable[T], *, total: int | None, description: str, enabled: bool = True
) -> Iterator[Iterable[T]]:
    """Wrap ``items`` in a live progress bar, or plain progress lines without a terminal.

    Args:
        items: what to iterate.
        total: number of items, if known.
        description: label shown beside the bar (and in each plain line).
        enabled: when False, ``items`` is returned unchanged and nothing is shown.
            When stderr is not a terminal (logs, CI), plain lines are written instead
            of a bar (see :class:`PlainProgress`).

    Yields:
        An iterable over ``items`` that advances the bar.
    """
    if not enabled:
        yield items
        return
    if not sys.stderr.isatty():
        plain = PlainProgress(items, total=total, description=description)
        try:
            yield plain
        finally:
            plain.finish()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        yield bar.track(items, total=total, description=description)


__all__ = ["PLAIN_INTERVAL_S", "PlainProgress", "progress_bar", "progress_line"]
