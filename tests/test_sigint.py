"""A real Ctrl-C (SIGINT) sent to a running ``shieldsplit`` process keeps finished work.

Each test starts the command line in a subprocess, waits until some work has finished
(polling files, never a fixed sleep), sends SIGINT with ``proc.send_signal`` and checks
what the process left behind:

- ``shieldsplit reproduce``: exit code 130, a message saying the finished cells are kept
  and a re-run resumes, a valid cell file with the finished cells, no page; a re-run
  computes only the missing cells and writes the page.
- ``shieldsplit audit``: exit code 130 within seconds, and a JSON (and HTML) report with
  the finished attack ``ok``, the interrupted one ``cancelled`` and ``complete=False``.

The child scripts install Python's default SIGINT handler themselves: a process started
with SIGINT ignored (a background job of a non-interactive shell, some CI runners) would
otherwise ignore the signal. Every wait has a timeout; a child still running at the end
of a test is killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shieldsplit.audit.auditor import AuditReport
from shieldsplit.experiments.reproduce.cells import FORMAT

pytestmark = pytest.mark.skipif(sys.platform == "win32",
                                reason="POSIX signals: SIGINT cannot be sent this way on Windows")

REPO = Path(__file__).resolve().parents[1]
#: Seconds a child may take to import torch and shieldsplit and reach the watched point
#: (the machine may be loaded); a hang fails the test after this, it never blocks it.
START_TIMEOUT = 60.0
#: Seconds a child may take to exit once signalled (or to finish a re-run).
EXIT_TIMEOUT = 30.0
FAKE = "test-fake"
CELLS = 6

REPRODUCE_SCRIPT = r"""
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
import functools, time
from pathlib import Path
import torch
torch.set_num_threads(1)
import shieldsplit.experiments.reproduce as repro
from shieldsplit.cli import app
from shieldsplit.data import load_dataset

OUT, LOG, CELLS = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])

def digits_instead(name, *, root=None, seed=0, limit=None):
    return load_dataset("digits", seed=seed, limit=limit)

def cell(ctx, i):
    with LOG.open("a") as fh:  # every computation, logged when it starts
        fh.write(f"cell {i}\n")
    time.sleep(0.6)
    return {"i": i, "mean": float(ctx.data.x_train[: i + 1].mean())}

def experiment(ctx):
    values = [ctx.store.run(f"cell {i}", functools.partial(cell, ctx, i)) for i in range(CELLS)]
    return ["## Fake table", "", *(f"| {v['i']} | {v['mean']:.4f} |" for v in values), ""]

repro.load_dataset = digits_instead
repro.register_experiment("test-fake", experiment)
app(["reproduce", "test-fake", "--data", "breastmnist", "--out", OUT, "--quiet"],
    prog_name="shieldsplit", standalone_mode=True)
"""

AUDIT_SCRIPT = r"""
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
import time
from pathlib import Path
import torch
torch.set_num_threads(1)
from shieldsplit.audit import auditor
from shieldsplit.attacks import Attack, register_attack, unregister_attack
from shieldsplit.cli import app

JSON_OUT, HTML_OUT, MARKER = sys.argv[1], sys.argv[2], Path(sys.argv[3])

class SlowWhiteBox(Attack):
    # Stands in for the white-box attack (second in the audit's order): it never finishes.
    name = "split-white-box"
    threat_model = "split_white_box"
    observes = "activations"

    def __init__(self, *, seed=0, progress=True, **options):
        super().__init__(seed=seed)

    def reconstruct(self, observation):
        MARKER.write_text("started")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            torch.ones(8, 8) @ torch.ones(8, 8)
            time.sleep(0.02)
        raise RuntimeError("no SIGINT arrived")

unregister_attack("split-white-box")
register_attack("split-white-box", SlowWhiteBox)
real_create = auditor._attacks.create_attack

def fast_create(name, **options):  # the first attack, at a tiny budget
    if name == "split-black-box":
        options["epochs"] = 1
    return real_create(name, **options)

auditor._attacks.create_attack = fast_create
auditor.REFERENCE_EPOCHS["quick"] = 1
app(["audit", "--model", "pgsl-net", "--data", "digits", "--cut", "2", "--json", JSON_OUT,
     "--out", HTML_OUT, "--quiet"], prog_name="shieldsplit", standalone_mode=True)
"""


class Child:
    """A running child script; its stdout and stderr go to files (no pipe can fill up)."""

    def __init__(self, script: str, args: list[str], folder: Path, tag: str) -> None:
        self.stdout = folder / f"{tag}.stdout"
        self.stderr = folder / f"{tag}.stderr"
        env = {**os.environ, "COLUMNS": "400", "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(
                   p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=folder,
                                         stdout=out, stderr=err, env=env)

    def output(self) -> tuple[str, str]:
        return self.stdout.read_text(), self.stderr.read_text()

    def describe(self) -> str:
        out, err = self.output()
        return f"exit {self.proc.returncode}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def wait_until(self, ready: Callable[[], bool], what: str,
                   timeout: float = START_TIMEOUT) -> None:
        """Poll ``ready`` until true; fail if the child exits first or time runs out."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                pytest.fail(f"the child exited before {what}: {self.describe()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}: "
                            f"{self.describe()}")
            time.sleep(0.05)

    def finish(self, timeout: float = EXIT_TIMEOUT) -> int:
        """Wait for the exit code; kill the child and fail if it takes longer."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        pytest.fail(f"the child did not exit within {timeout:.0f} s: {self.describe()}")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    children: list[Child] = []

    def start(script: str, *args: str, tag: str) -> Child:
        child = Child(script, list(args), tmp_path, tag)
        children.append(child)
        return child

    yield start
    for child in children:  # never leave a child running, whatever failed
        child.kill()


def _flat(text: str) -> str:
    return " ".join(text.split())


def _cells(path: Path) -> dict[str, object]:
    saved = json.loads(path.read_text())  # must be valid JSON at every moment
    assert saved["format"] == FORMAT
    return dict(saved["cells"])


def _finished_cells(path: Path) -> int:
    try:
        return len(_cells(path)) if path.exists() else 0
    except (OSError, ValueError):
        return 0  # the assertion on the final file reports a broken file


def _log(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_sigint_during_reproduce_keeps_finished_cells_and_rerun_resumes(
        spawn: Callable[..., Child], tmp_path: Path) -> None:
    out = tmp_path / "results"
    stem = f"reproduce_{FAKE}_breastmnist_quick"
    cells_file, page = out / f"{stem}.cells.json", out / f"{stem}.md"
    first_log, second_log = tmp_path / "run1.log", tmp_path / "run2.log"

    run = spawn(REPRODUCE_SCRIPT, str(out), str(first_log), str(CELLS), tag="run1")
    run.wait_until(lambda: _finished_cells(cells_file) >= 1, "the first finished cell")
    run.proc.send_signal(signal.SIGINT)
    code = run.finish()
    stdout, stderr = run.output()
    assert code == 130, run.describe()

    kept = _cells(cells_file)
    assert 1 <= len(kept) < CELLS, kept  # interrupted mid-run, the finished cells kept
    computed = _log(first_log)
    assert computed == [f"cell {i}" for i in range(len(computed))]  # in order, once each
    assert set(kept) <= set(computed)
    assert len(computed) <= len(kept) + 1  # at most the running cell is lost
    err = _flat(stderr)
    assert f"finished cells are kept in {out}" in err, run.describe()
    assert "run the same command again to resume" in err, run.describe()
    assert f"interrupted: {len(kept)} finished cells kept in {cells_file}" in err
    assert "Traceback" not in stderr, run.describe()
    assert not page.exists() and "## Fake table" not in stdout
    assert not list(out.glob(".*.tmp"))  # no half-written file left behind

    rerun = spawn(REPRODUCE_SCRIPT, str(out), str(second_log), str(CELLS), tag="run2")
    code = rerun.finish(START_TIMEOUT)
    stdout, _ = rerun.output()
    assert code == 0, rerun.describe()
    missing = [f"cell {i}" for i in range(CELLS) if f"cell {i}" not in kept]
    assert _log(second_log) == missing  # only the missing cells, each once
    assert set(_cells(cells_file)) == {f"cell {i}" for i in range(CELLS)}
    text = page.read_text()
    assert "## Fake table" in text and f"| {CELLS - 1} |" in text
    assert f"{len(kept)} cells read back" in text
    assert f"{len(missing)} cells computed, {len(kept)} read back" in _flat(stdout)


def test_sigint_during_audit_returns_partial_report_with_attack_cancelled(
        spawn: Callable[..., Child], tmp_path: Path) -> None:
    json_out, html_out, marker = tmp_path / "audit.json", tmp_path / "audit.html", tmp_path / "m"

    run = spawn(AUDIT_SCRIPT, str(json_out), str(html_out), str(marker), tag="audit")
    run.wait_until(marker.exists, "the second (slow) attack to start")
    assert not json_out.exists()
    run.proc.send_signal(signal.SIGINT)
    signalled = time.monotonic()
    code = run.finish(EXIT_TIMEOUT)
    seconds = time.monotonic() - signalled
    stdout, stderr = run.output()
    assert code == 130, run.describe()
    assert seconds < 10, f"took {seconds:.1f} s to stop after SIGINT"
    assert "Traceback" not in stderr and "Aborted" not in stderr, run.describe()
    # typer itself turns an uncaught KeyboardInterrupt into a silent exit 130: the partial
    # report on disk is what shows that the auditor, not typer, handled the Ctrl-C.
    assert json_out.is_file() and html_out.is_file(), run.describe()

    report = AuditReport.model_validate_json(json_out.read_text())
    assert report.complete is False
    assert [(r.attack, r.status) for r in report.results] == [
        ("split-black-box", "ok"), ("split-white-box", "cancelled")]
    done, cancelled = report.results
    assert done.images == report.victims > 0 and done.psnr is not None and done.mse is not None
    assert cancelled.images == 0 and cancelled.psnr is None and cancelled.error is None
    assert report.ranking == ["split-black-box"]
    assert "INCOMPLETE: cancelled" in stdout and "split-black-box" in stdout
    assert "audit cancelled during split-white-box" in stderr
    assert "INCOMPLETE (cancelled)" in html_out.read_text()
