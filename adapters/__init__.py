"""Integrations with third-party packages and data distributions.

This directory is installed as the package ``shieldsplit.adapters``. Each
module holds one small loader that turns an external source into plain numpy
arrays; :mod:`shieldsplit.data` wraps them into tensors and splits:

- :mod:`shieldsplit.adapters.digits`: scikit-learn's bundled 8x8 digits.
- :mod:`shieldsplit.adapters.medmnist`: MedMNIST v2 ``.npz`` files, read through
  the optional ``medmnist`` package (``pip install "shieldsplit[medmnist]"``).
- :mod:`shieldsplit.adapters.mnist`: the original MNIST IDX test-set files.

Loaders that read files verify them first with :func:`verified_file`: a missing
file or a file whose MD5 differs from the official checksum raises
:class:`~shieldsplit.errors.DataFileError` that says what to do. The checksum
of a file is computed once per process for a given (path, mtime, size).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from shieldsplit.adapters import file_md5
    >>> path = Path(tempfile.mkdtemp()) / "hello.txt"
    >>> _ = path.write_bytes(b"hello")
    >>> file_md5(path)
    '5d41402abc4b2a76b9719d911017c592'
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

from shieldsplit.errors import DataFileError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_md5_cache: dict[tuple[str, int, int], str] = {}
_md5_lock = threading.Lock()


def file_md5(path: str | Path) -> str:
    """Return the hex MD5 of a file, cached per (path, mtime, size) in this process.

    A file that is rewritten gets a new mtime (or size) and is hashed again,
    so the cache never hides a changed file behind a stale checksum.

    Args:
        path: the file to hash.

    Returns:
        The lowercase hexadecimal MD5 digest.

    Raises:
        DataFileError: if the file cannot be read.
    """
    resolved = Path(path).expanduser().resolve()
    try:
        st = os.stat(resolved)
    except OSError as exc:
        raise DataFileError.build(
            what=str(resolved),
            expected=f"a readable file at {resolved}",
            received=f"{type(exc).__name__}: {exc}",
            fix="check that the file exists and that you may read it",
        ) from exc
    key = (str(resolved), st.st_mtime_ns, st.st_size)
    with _md5_lock:
        cached = _md5_cache.get(key)
    if cached is not None:
        return cached
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with open(resolved, "rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
    except OSError as exc:
        raise DataFileError.build(
            what=str(resolved),
            expected=f"a readable file at {resolved}",
            received=f"{type(exc).__name__}: {exc}",
            fix="check that the file exists and that you may read it",
        ) from exc
    value = digest.hexdigest()
    with _md5_lock:
        _md5_cache[key] = value
    logger.debug("md5 %s = %s", resolved, value)
    return value


def verified_file(
    folder: str | Path,
    filename: str,
    *,
    md5: str,
    how_to_get: str,
    searched: tuple[Path, ...] | None = None,
) -> Path:
    """Return ``folder / filename`` after checking that it exists and has the expected MD5.

    Args:
        folder: the folder that should hold the file.
        filename: the file's name inside ``folder``.
        md5: the official MD5 (hex) of the file.
        how_to_get: a phrase naming the official file, used in the fix, e.g.
            ``"the official MedMNIST v2 28x28 breastmnist.npz"``.
        searched: the folders that were searched, for the message (defaults to
            ``(folder,)``).

    Returns:
        The path of the verified file.

    Raises:
        DataFileError: if ``folder`` is a file (the message names its folder), if the
            file is missing (the message names the file, the
            folders searched and where to put it) or if its MD5 differs (the
            message names the file, the expected and the received MD5).
    """
    folder = Path(folder).expanduser()
    path = folder / filename
    if folder.is_file():
        raise DataFileError.build(
            what="root",
            expected=f"the folder that holds {filename} (root is a folder, not a file)",
            received=f"the file {folder}",
            fix=f"pass its folder instead: root={str(folder.parent)!r}"
            + (f" (it holds {folder.name})" if folder.name == filename else
               f", with {how_to_get} in it as {filename}"),
        )
    if not path.is_file():
        where = ", ".join(str(p) for p in (searched or (folder,)))
        raise DataFileError.build(
            what=filename,
            expected=f"the file {filename} in {folder}",
            received=f"no such file (searched: {where})",
            fix=(
                f"copy {how_to_get} (MD5 {md5}) to {path}, "
                "or point --data-root / root= at the folder that holds it"
            ),
        )
    actual = file_md5(path)
    if actual != md5.lower():
        raise DataFileError.build(
            what=filename,
            expected=f"{path} with MD5 {md5}",
            received=f"MD5 {actual}",
            fix=(
                f"the file is corrupted or is not the official release; "
                f"re-download {how_to_get} and replace {path}"
            ),
        )
    return path


__all__ = ["file_md5", "verified_file"]
