"""Progress without a terminal: plain lines, never silence (issue 14 item 3)."""

from __future__ import annotations

import io
from typing import Literal

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


def test_the_one_loop_counts_batches_or_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    """fit_epochs: a bar per epoch over its batches, or (an attacker's many short epochs,
    issue 23) one bar over the epochs; the attacks' decoder and DCGAN use the second."""
    import torch
    from torch import nn

    from shieldsplit.attacks.gan import clear_dcgan_cache, train_dcgan
    from shieldsplit.training import fit_epochs, tensor_batches

    lin = nn.Linear(2, 2)
    batches = tensor_batches(torch.rand(6, 2), torch.zeros(6, dtype=torch.long), batch_size=2)

    def run(unit: Literal["batch", "epoch"]) -> list[str]:
        err = io.StringIO()
        monkeypatch.setattr("sys.stderr", err)
        fit_epochs(lin, batches, epochs=3, step=lambda x, y: len(y),
                   end_epoch=lambda e, s: e, score=lambda r: None, seed=0,
                   description="demo", progress_unit=unit)
        return err.getvalue().splitlines()

    per_batch = run("batch")
    assert [line.split(":")[0] for line in per_batch] == ["demo 1/3", "demo 2/3", "demo 3/3"]
    assert all("done, 3/3" in line for line in per_batch)
    per_epoch = run("epoch")
    assert len(per_epoch) == 1 and per_epoch[0].startswith("demo: done, 3/3 in ")
    clear_dcgan_cache()
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    train_dcgan(torch.rand(8, 1, 8, 8), latent_dim=4, width=4, epochs=4, batch_size=4, seed=0,
                progress=True, description="gan")
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gan: done, 4/4 in ")
