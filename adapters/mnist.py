"""The MNIST test set from its original IDX files (``t10k-*-idx?-ubyte.gz``).

Only the 10,000-image test set is read: ``t10k-images-idx3-ubyte.gz`` and
``t10k-labels-idx1-ubyte.gz``, gzip-compressed IDX files as distributed by
Y. LeCun, C. Cortes and C. J. C. Burges. Both files are checked against the
official MD5 checksums (the ones torchvision's ``MNIST`` class uses) before
they are parsed.

The IDX format: a big-endian 32-bit magic number whose bytes are
``0, 0, type code, number of dimensions`` (2051 = unsigned bytes, 3 dims for
images; 2049 = unsigned bytes, 1 dim for labels), then one big-endian 32-bit
size per dimension, then the data in C order.

Example:
    >>> import struct
    >>> from shieldsplit.adapters.mnist import parse_idx
    >>> blob = struct.pack(">IIII", 2051, 2, 2, 3) + bytes(range(12))
    >>> parse_idx(blob, expected_magic=2051, source="demo").shape
    (2, 2, 3)
"""

from __future__ import annotations

import gzip
import logging
import struct
import zlib
from pathlib import Path

import numpy as np

from shieldsplit.adapters import verified_file
from shieldsplit.errors import DataFileError, ShieldSplitError

logger = logging.getLogger(__name__)

IMAGES_FILE = "t10k-images-idx3-ubyte.gz"
LABELS_FILE = "t10k-labels-idx1-ubyte.gz"
IMAGES_MD5 = "9fb629c4189551a2d022fa330f9573f3"
LABELS_MD5 = "ec29112dd5afa0611ce80d1b7f02629c"
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
MNIST_SUBDIR = "mnist"
MNIST_MAX_VALUE = 255.0
MNIST_SOURCE = "MNIST test set (LeCun, Cortes, Burges; original IDX files t10k-*, CC BY-SA 3.0)"
_HOW_TO_GET = (
    "the official MNIST file {name} (e.g. from https://ossci-datasets.s3.amazonaws.com/mnist/)"
)

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def _idx_error(source: str, expected: str, received: object) -> ShieldSplitError:
    return DataFileError.build(
        what=source,
        expected=expected,
        received=received,
        fix=f"re-download the official {source} and replace the damaged file",
    )


def parse_idx(data: bytes, *, expected_magic: int, source: str) -> np.ndarray:
    """Parse an uncompressed IDX blob into a numpy array.

    Args:
        data: the raw IDX bytes (already gunzipped).
        expected_magic: the magic number the file must start with (2051 for
            MNIST images, 2049 for labels).
        source: the file name, used in error messages.

    Returns:
        An array with the shape given by the header, in native byte order.

    Raises:
        DataFileError: if the header is truncated, the magic number differs,
            the type code is unknown, or the payload length does not match the
            dimensions.
    """
    if len(data) < 4:
        raise _idx_error(source, "an IDX header of at least 4 bytes", f"{len(data)} bytes")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        raise _idx_error(source, f"IDX magic number {expected_magic}", magic)
    type_code = (magic >> 8) & 0xFF
    ndim = magic & 0xFF
    if type_code not in _IDX_DTYPES:
        raise _idx_error(
            source, f"an IDX type code in {sorted(_IDX_DTYPES)}", f"type code {type_code:#04x}"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise _idx_error(
            source, f"an IDX header of {header_len} bytes for {ndim} dims", f"{len(data)} bytes"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected_len = header_len + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected_len:
        raise _idx_error(
            source,
            f"{expected_len} bytes for dims {tuple(dims)} of {dtype}",
            f"{len(data)} bytes",
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def _read_gz(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise _idx_error(
            path.name, f"a valid gzip file at {path}", f"{type(exc).__name__}: {exc}"
        ) from exc


def resolve_mnist_dir(root: str | Path) -> Path:
    """Return the folder holding the MNIST files: ``root/mnist`` or ``root`` itself.

    Args:
        root: the folder that contains ``mnist/``, or the ``mnist/`` folder itself.

    Returns:
        ``root/mnist`` if it holds either MNIST test file, else ``root`` if it
        does, else ``root/mnist`` (where the files are expected).
    """
    root = Path(root).expanduser()
    for candidate in (root / MNIST_SUBDIR, root):
        if (candidate / IMAGES_FILE).exists() or (candidate / LABELS_FILE).exists():
            return candidate
    return root / MNIST_SUBDIR


def load_mnist_test(root: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Load the 10,000-image MNIST test set after verifying both files' MD5.

    Args:
        root: the folder that contains ``mnist/t10k-images-idx3-ubyte.gz`` and
            ``mnist/t10k-labels-idx1-ubyte.gz``, or that ``mnist/`` folder itself.

    Returns:
        ``(images, labels)``: images ``(10000, 28, 28)`` uint8 and labels
        ``(10000,)`` int64 (digits 0..9).

    Raises:
        DataFileError: if a file is missing (naming the file, the folders
            searched and where to put it), its MD5 differs from the official one,
            or its content is not a valid IDX file.
    """
    root = Path(root).expanduser()
    folder = resolve_mnist_dir(root)
    searched = (root / MNIST_SUBDIR, root)
    images_path = verified_file(
        folder,
        IMAGES_FILE,
        md5=IMAGES_MD5,
        how_to_get=_HOW_TO_GET.format(name=IMAGES_FILE),
        searched=searched,
    )
    labels_path = verified_file(
        folder,
        LABELS_FILE,
        md5=LABELS_MD5,
        how_to_get=_HOW_TO_GET.format(name=LABELS_FILE),
        searched=searched,
    )
    images = parse_idx(_read_gz(images_path), expected_magic=IMAGES_MAGIC, source=IMAGES_FILE)
    labels = parse_idx(_read_gz(labels_path), expected_magic=LABELS_MAGIC, source=LABELS_FILE)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise _idx_error(
            f"{IMAGES_FILE} / {LABELS_FILE}",
            "images (N, H, W) and labels (N,) with the same N",
            f"images {images.shape}, labels {labels.shape}",
        )
    logger.debug("loaded MNIST test set from %s: %s", folder, images.shape)
    return images.astype(np.uint8, copy=False), labels.astype(np.int64)


__all__ = [
    "IMAGES_FILE",
    "IMAGES_MD5",
    "LABELS_FILE",
    "LABELS_MD5",
    "MNIST_MAX_VALUE",
    "MNIST_SOURCE",
    "load_mnist_test",
    "parse_idx",
    "resolve_mnist_dir",
]
