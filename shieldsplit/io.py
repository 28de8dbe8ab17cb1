"""Atomic file writing and safe checkpoint loading.

A file is written to a temporary name in the same folder, flushed, then
renamed over the target, so a crash never leaves a half-written file behind.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_text(d / "a.txt", "hello")
    >>> (d / "a.txt").read_text()
    'hello'
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import DataFileError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: destination; its folder is created if needed.
        data: the bytes to write.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would surprise readers of reports
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Args:
        path: destination.
        text: the text to write.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically.

    Args:
        obj: tensors, dicts, lists and primitives (what ``weights_only`` loading accepts).
        path: destination.
    """
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


__all__ = ["atomic_torch_save", "atomic_write_bytes", "atomic_write_text", "safe_torch_load"]
