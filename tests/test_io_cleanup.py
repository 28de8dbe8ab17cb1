"""Atomic writers leave no temporary file (reports can hold patient images) and fail
with a typed error naming the folder.

Covers issue 14 item 7: errors, Ctrl-C and a real SIGTERM mid-write remove the
temporary file; stale temporary files of the same target are swept at the next write;
an unwritable folder raises :class:`OutputPathError`, not an ``OSError`` naming a
temporary file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import shieldsplit._core.io as sio
from shieldsplit.errors import OutputPathError, ShieldSplitError

#: Seconds a child may take to import shieldsplit._core.io and reach the write (loaded machine).
START_TIMEOUT = 60.0


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_an_error_mid_write_removes_the_temp_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sio.os, "fsync", disk_full)
    with pytest.raises(OutputPathError) as info:
        sio.atomic_write_text(tmp_path / "report.html", "<html>")
    message = str(info.value)
    assert str(tmp_path) in message and "No space left" in message and "Fix:" in message
    assert ".tmp" not in message
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_mid_write_removes_the_temp_file(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sio.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sio.atomic_write_bytes(tmp_path / "report.html", b"x" * 1000)
    assert list(tmp_path.iterdir()) == []


def test_stale_temp_files_of_the_same_target_are_swept(tmp_path: Path) -> None:
    stale = tmp_path / ".report.html.k3j4h5g6.tmp"
    fresh = tmp_path / ".report.html.a1b2c3d4.tmp"     # a write under way elsewhere
    other = tmp_path / ".other.html.k3j4h5g6.tmp"      # another target
    unrelated = tmp_path / ".report.html.notours.tmp.bak"
    for p in (stale, fresh, other, unrelated):
        p.write_bytes(b"patient")
    old = time.time() - 3600
    for p in (stale, other, unrelated):
        os.utime(p, (old, old))
    os.utime(fresh, (time.time() + 60, time.time() + 60))
    sio.atomic_write_text(tmp_path / "report.html", "new")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([fresh.name, other.name, unrelated.name, "report.html"])


def test_a_folder_that_cannot_be_created_is_a_typed_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for call in (lambda: sio.atomic_write_text(blocker / "sub" / "a.json", "{}"),
                 lambda: sio.check_output_path(blocker / "sub" / "a.json")):
        with pytest.raises(OutputPathError) as info:
            call()
        message = str(info.value)
        assert str(blocker) in message and "Fix:" in message and ".tmp" not in message
    assert isinstance(info.value, ShieldSplitError)
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs POSIX permissions that bind (not root)")
def test_an_unwritable_folder_is_a_typed_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputPathError, match="ro"):
            sio.atomic_write_text(folder / "a.json", "{}")
        with pytest.raises(OutputPathError):
            sio.check_output_path(folder / "a.json")
    finally:
        folder.chmod(0o700)


def test_check_output_path_writes_nothing(tmp_path: Path) -> None:
    assert sio.check_output_path(tmp_path / "new" / "a.html") == tmp_path / "new" / "a.html"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputPathError, match="a folder"):
        sio.check_output_path(tmp_path)


CHILD = textwrap.dedent(r"""
    import os, sys, time
    from pathlib import Path
    import shieldsplit._core.io as sio

    target, marker = Path(sys.argv[1]), Path(sys.argv[2])

    def slow_fsync(fd):          # the payload is in the temporary file: stall here
        marker.write_text("writing")
        time.sleep(120)

    sio.os.fsync = slow_fsync
    sio.atomic_write_bytes(target, b"patient image " * 100000)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_mid_write_leaves_no_temp_file_and_still_terminates(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(out / "report.html"), str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "child never reached the write"
            time.sleep(0.05)
        assert len(leftovers(out)) == 1  # the temporary file exists mid-write
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGTERM  # the signal still ends the process
    assert list(out.iterdir()) == []
