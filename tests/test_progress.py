"""Progress without a terminal: plain lines, never silence (issue 14 item 3)."""

from __future__ import annotations

import io

import pytest

import shieldsplit._core.progress as progress
from shieldsplit._core.progress import PlainProgress, progress_bar, progress_line


def test_without_a_terminal_progress_writes_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()  # not a tty, like CI or 2> log
    monkeypatch.setattr("sys.stderr", err)
    with progress_bar(range(4), total=4, description="plain epoch 1/2") as items:
        assert sum(items) == 6
    assert err.getvalue().startswith("plain epoch 1/2: done, 4/4 in ")
    with progress_bar(range(4), total=4, description="quiet", enabled=False) as items:
        assert list(items) == [0, 1, 2, 3]
    assert "quiet" not in err.getvalue()


def test_long_work_reports_while_running_and_where_it_stopped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.0)
    with progress_bar(range(10), total=10, description="audit") as items:
        for i in items:
            if i == 3:
                break
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("audit: 1/10 (10%)") and "left" in lines[0]
    assert lines[-1].startswith("audit: 3/10 (30%)") and lines[-1].endswith("(stopped)")


def test_a_consumer_that_takes_exactly_total_items_still_gets_the_done_line() -> None:
    out = io.StringIO()
    bar = PlainProgress(range(3), total=3, description="gan", stream=out, interval=1e9)
    steps = iter(bar)
    for _ in range(3):
        next(steps)
    bar.finish()
    assert out.getvalue().startswith("gan: done, 3/3 in ")


def test_progress_line_estimates_the_time_left() -> None:
    assert progress_line("x", 1, 4, 30.0) == "x: 1/4 (25%), 30.0 s elapsed, about 1 min 30 s left"
    assert progress_line("x", 7, None, 5.0) == "x: 7, 5.0 s elapsed"
