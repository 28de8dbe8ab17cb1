"""Atomic file writing and safe checkpoint loading.

A file is written to a temporary name in the same folder
(``.<name>.XXXXXXXX.tmp``), flushed, then renamed over the target, so a crash
never leaves a half-written file behind. The temporary file is removed on every
error, on Ctrl-C (SIGINT) and on SIGTERM (the signal is then re-delivered, so
the process still ends as it would have); a temporary file of the same target
left by an earlier process that was killed outright (SIGKILL, power loss) is
removed at the next write. Reports can hold patient images: nothing of them
may linger under a hidden name.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_text(d / "a.txt", "hello")
    >>> (d / "a.txt").read_text()
    'hello'
    >>> sorted(p.name for p in d.iterdir())
    ['a.txt']
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from shieldsplit.errors import DataFileError, OutputPathError, UnsupportedModelError

if TYPE_CHECKING:
    from torch import nn

_Module = TypeVar("_Module", bound="nn.Module")

logger = logging.getLogger(__name__)

#: When this process (approximately: this module) started; temporary files of ours
#: last modified before it cannot belong to a write still under way in this process.
_STARTED = time.time()
#: The signals whose default action would end the process without cleaning up.
_CLEANUP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


class _Signalled(BaseException):
    """Raised inside a write when a cleanup signal arrives."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def temp_pattern(target: str | Path) -> re.Pattern[str]:
    """The names of the temporary files :func:`atomic_write_bytes` uses for ``target``.

    Args:
        target: the destination file.

    Returns:
        A pattern matching ``.<name>.XXXXXXXX.tmp`` (``XXXXXXXX`` as ``mkstemp`` makes it).

    Example:
        >>> bool(temp_pattern("r.html").fullmatch(".r.html.ab_12xyz.tmp"))
        True
        >>> bool(temp_pattern("r.html").fullmatch(".r.html.x.y.tmp"))
        False
    """
    return re.compile(re.escape(f".{Path(target).name}.") + r"[A-Za-z0-9_]{8}\.tmp")


def sweep_stale_temp_files(target: str | Path, *, older_than: float | None = None) -> list[Path]:
    """Remove leftover temporary files of ``target`` from killed earlier writes.

    Only files in ``target``'s folder named as :func:`temp_pattern` says, and last
    modified before ``older_than`` (default: when this process started), are removed:
    a write in progress in another process keeps touching its file.

    Args:
        target: the destination file.
        older_than: a POSIX time; default when this process started.

    Returns:
        The files removed.

    Example:
        >>> import tempfile, pathlib, os
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> stale = d / ".r.html.abcd1234.tmp"; _ = stale.write_text("old")
        >>> os.utime(stale, (0, 0))
        >>> [p.name for p in sweep_stale_temp_files(d / "r.html")]
        ['.r.html.abcd1234.tmp']
    """
    target = Path(target)
    cutoff = _STARTED if older_than is None else older_than
    pattern = temp_pattern(target)
    removed: list[Path] = []
    try:
        candidates = list(target.parent.iterdir())
    except OSError:
        return removed
    for path in candidates:
        if not pattern.fullmatch(path.name):
            continue
        with contextlib.suppress(OSError):
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
                logger.info("removed a stale temporary file of an interrupted write: %s", path)
    return removed


def _folder_error(folder: Path, target: Path, problem: str) -> OutputPathError:
    fix = (f"make {folder} writable" if folder.is_dir() else f"create the folder {folder}")
    return OutputPathError.build(
        what=str(target), expected=f"a folder that exists or can be created and is writable "
        f"for {target.name}", received=f"{folder} ({problem})",
        fix=f"{fix}, or write {target.name} somewhere else",
    )


def check_output_path(path: str | Path) -> Path:
    """Check, without writing it, that ``path`` can be written by :func:`atomic_write_bytes`.

    The nearest existing folder on the way is probed with a temporary file (removed at
    once), so read-only file systems and permission problems are found too.

    Args:
        path: the destination file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputPathError: if the path is a folder, or its folder cannot be created or
            written (the message names the folder and the fix).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> check_output_path(d / "new" / "r.html").name
        'r.html'
        >>> check_output_path(d)
        Traceback (most recent call last):
        ...
        shieldsplit.errors.OutputPathError: Cannot write output: ...
    """
    target = Path(path)
    if target.is_dir():
        raise OutputPathError.build(
            what=str(target), expected="a file name", received=f"{target} (a folder)",
            fix=f"name a file inside it, e.g. {target / 'report.html'}",
        )
    existing = target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise _folder_error(target.parent, target, f"{existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise _folder_error(existing, target, exc.strerror or type(exc).__name__) from exc
    os.close(fd)
    Path(probe).unlink(missing_ok=True)
    return target


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into an exception inside the block (main thread, default
    handlers only); the caller cleans up, then the signal is delivered again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: object) -> None:
        raise _Signalled(signum)

    for sig in _CLEANUP_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, leaving no temporary file behind.

    Args:
        path: destination; its folder is created if needed.
        data: the bytes to write.

    Raises:
        OutputPathError: if the folder cannot be created or written, or the write fails
            (disk full...): the message names the folder and the fix, and no temporary
            file is left.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _folder_error(target.parent, target,
                            exc.strerror or type(exc).__name__) from exc
    if target.is_dir():
        check_output_path(target)  # raises the "is a folder" error
    sweep_stale_temp_files(target)
    signalled: int | None = None
    with _signals_raise():
        try:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                       suffix=".tmp")
        except OSError as exc:
            raise _folder_error(target.parent, target,
                                exc.strerror or type(exc).__name__) from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would surprise readers of reports
            os.replace(tmp, target)
        except _Signalled as sig:
            Path(tmp).unlink(missing_ok=True)
            signalled = sig.signum
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise OutputPathError.build(
                what=str(target), expected=f"{target.name} written in {target.parent}",
                received=f"{target.parent} ({exc.strerror or type(exc).__name__})",
                fix=f"free space in or fix the permissions of {target.parent}",
            ) from exc
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    if signalled is not None:  # handlers are restored: the signal now acts as it would have
        signal.raise_signal(signalled)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Args:
        path: destination.
        text: the text to write.

    Raises:
        OutputPathError: see :func:`atomic_write_bytes`.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically.

    Args:
        obj: tensors, dicts, lists and primitives (what ``weights_only`` loading accepts).
        path: destination.
    """
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def safe_torch_load(path: str | Path) -> Any:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code runs).

    Args:
        path: the checkpoint file.

    Returns:
        The loaded object.

    Raises:
        DataFileError: if the file is missing or cannot be read as a checkpoint.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise DataFileError.build(
            what="checkpoint", expected="an existing checkpoint file", received=str(p),
            fix="check the path",
        )
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataFileError.build(
            what="checkpoint",
            expected="a file written by torch.save holding only tensors and primitives",
            received=f"{p} ({type(exc).__name__}: {exc})",
            fix="re-save the weights with torch.save(model.state_dict(), path)",
        ) from exc


def load_checkpoint(path: str | Path, *, fmt: str, saver: str) -> dict[str, Any]:
    """:func:`safe_torch_load` a checkpoint dict and check its ``format`` entry.

    Args:
        path: the checkpoint file.
        fmt: the format string the file must carry.
        saver: what writes such files (named in the error's fix).

    Returns:
        The checkpoint.

    Raises:
        DataFileError: if the file is missing, unreadable or of another format.
    """
    ck = safe_torch_load(path)
    if not isinstance(ck, dict) or ck.get("format") != fmt:
        raise DataFileError.build(
            what="path", expected=f"a checkpoint with format {fmt!r}",
            received=str(path), fix=f"save it with {saver}",
        )
    return ck


def restore_checkpoint(
    build: Callable[[], _Module], state: Mapping[str, Any], *, path: str | Path, kind: str,
    model: Any,
) -> _Module:
    """Rebuild a saved object around the user's ``model`` and load its weights, turning
    torch's error on another architecture (other classes, other layers) into a typed one.

    Args:
        build: makes the object around ``model`` (a constructor's own typed errors pass).
        state: the saved ``state_dict``.
        path: the checkpoint file (named in the message).
        kind: what the file is, e.g. ``"SplitShield checkpoint"``.
        model: the instance the user passed (named in the message).

    Returns:
        The object, its weights loaded.

    Raises:
        UnsupportedModelError: the saved weights do not fit an object built around ``model``.

    Example:
        >>> import torch
        >>> restore_checkpoint(lambda: torch.nn.Linear(2, 3), {"weight": torch.zeros(2, 2)},
        ...                    path="w.pt", kind="checkpoint", model=None)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        shieldsplit.errors.UnsupportedModelError: ... Fix: pass an instance built as the saved...
    """
    restored = build()
    try:
        restored.load_state_dict(dict(state))
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise UnsupportedModelError.build(
            what="model",
            expected=f"an instance of the architecture saved in the {kind} {path}",
            received=f"a {type(model).__name__} whose weights do not fit the checkpoint "
            f"({detail})",
            fix="pass an instance built as the saved one (same class, num_classes, image size "
            "and layers), e.g. the model you wrapped before calling save",
        ) from exc
    return restored


__all__ = [
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_path",
    "load_checkpoint", "restore_checkpoint", "safe_torch_load",
    "sweep_stale_temp_files",
    "temp_pattern",
]
