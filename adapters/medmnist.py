"""MedMNIST v2 28x28 files, loaded through the ``medmnist`` package's own classes.

The optional dependency ``medmnist`` is imported only when a loader runs
(``pip install "shieldsplit[medmnist]"``). Nothing is downloaded: the
``<flag>.npz`` file must already be in ``root``. Before ``medmnist`` opens it,
the file is checked to exist and to have the official MD5; a problem raises
:class:`~shieldsplit.errors.DataFileError` saying what to do.

Any 2D single-label MedMNIST flag is accepted (``breastmnist``,
``pneumoniamnist``, ``bloodmnist``, ...); the MD5 of BreastMNIST and
PneumoniaMNIST is pinned here, the others use ``medmnist.INFO``.

Example:
    >>> import tempfile
    >>> from shieldsplit.adapters.medmnist import load_medmnist
    >>> from shieldsplit.errors import DataFileError
    >>> try:
    ...     load_medmnist("breastmnist", tempfile.mkdtemp())
    ... except DataFileError as err:
    ...     print("breastmnist.npz" in str(err))
    True
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

import numpy as np

from shieldsplit.adapters import verified_file
from shieldsplit.errors import ConfigError

logger = logging.getLogger(__name__)

#: Official MD5 of the 28x28 files (``medmnist.INFO[flag]["MD5"]``, medmnist 2.2.3 to 3.0.2).
OFFICIAL_MD5: dict[str, str] = {
    "breastmnist": "750601b1f35ba3300ea97c75c52ff8f6",
    "pneumoniamnist": "28209eda62fecd6e6a2d98b1501bb15f",
}

#: Split names in the order :func:`load_medmnist` returns them.
SPLITS: tuple[str, ...] = ("train", "val", "test")

MEDMNIST_MAX_VALUE = 255.0
_ZENODO = "https://zenodo.org/records/10519652"


def _import_medmnist() -> ModuleType:
    try:
        import medmnist
    except ImportError as exc:
        raise ConfigError.build(
            what="medmnist",
            expected="the optional package medmnist (>=3.0) to be installed",
            received=f"{type(exc).__name__}: {exc}",
            fix='run pip install "shieldsplit[medmnist]"',
        ) from exc
    return medmnist


def _check_flag(medmnist: ModuleType, flag: object) -> str:
    info = medmnist.INFO
    valid = sorted(
        k
        for k, v in info.items()
        if not k.endswith("3d") and not str(v.get("task", "")).startswith("multi-label")
    )
    key = flag.strip().lower() if isinstance(flag, str) else flag
    if key not in valid:
        raise ConfigError.build(
            what="flag",
            expected=f"a 2D single-label MedMNIST flag, one of {valid}",
            received=repr(flag),
            fix="pass one of the listed flags, e.g. 'breastmnist'",
        )
    return str(key)


def medmnist_file(flag: str, root: str | Path) -> Path:
    """Return the verified path of ``root/<flag>.npz``.

    Args:
        flag: a MedMNIST flag such as ``"breastmnist"``.
        root: the folder that holds the ``.npz`` file.

    Returns:
        The path of the file, which exists and has the official MD5.

    Raises:
        ConfigError: if medmnist is not installed or ``flag`` is not a 2D
            single-label MedMNIST flag.
        DataFileError: if the file is missing or its MD5 is not the official one.
    """
    medmnist = _import_medmnist()
    key = _check_flag(medmnist, flag)
    md5 = OFFICIAL_MD5.get(key) or str(medmnist.INFO[key]["MD5"])
    return verified_file(
        root,
        f"{key}.npz",
        md5=md5,
        how_to_get=(f"the official MedMNIST v2 28x28 {key}.npz (from {_ZENODO})"),
    )


def medmnist_class_names(flag: str) -> tuple[str, ...]:
    """Return the class names of a MedMNIST flag, ordered by label.

    Args:
        flag: a MedMNIST flag such as ``"breastmnist"``.

    Returns:
        The names from ``medmnist.INFO[flag]["label"]``, index ``i`` naming label ``i``.

    Raises:
        ConfigError: if medmnist is not installed or the flag is unknown.

    Example:
        >>> medmnist_class_names("pneumoniamnist")
        ('normal', 'pneumonia')
    """
    medmnist = _import_medmnist()
    key = _check_flag(medmnist, flag)
    labels: dict[str, str] = medmnist.INFO[key]["label"]
    return tuple(labels[k] for k in sorted(labels, key=int))


def load_medmnist(flag: str, root: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load the official train/val/test splits of a MedMNIST 28x28 file.

    The file is verified (existence, MD5) first, then read with the package's
    own class, e.g. ``medmnist.BreastMNIST(split=..., root=str(root), download=False)``.

    Args:
        flag: a MedMNIST flag such as ``"breastmnist"`` or ``"pneumoniamnist"``.
        root: the folder that holds ``<flag>.npz``.

    Returns:
        A dict mapping ``"train"``, ``"val"`` and ``"test"`` to ``(images,
        labels)``: images uint8 ``(N, 28, 28)`` (or ``(N, 28, 28, 3)`` for RGB
        sets) and labels int64 ``(N,)``.

    Raises:
        ConfigError: if medmnist is not installed or ``flag`` is not a 2D
            single-label MedMNIST flag.
        DataFileError: if the file is missing (naming the file, the folder
            searched and where to put it) or its MD5 is not the official one.
    """
    path = medmnist_file(flag, root)
    medmnist = _import_medmnist()
    key = path.name[: -len(".npz")]
    cls = getattr(medmnist, medmnist.INFO[key]["python_class"])
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in SPLITS:
        ds = cls(split=split, root=str(path.parent), download=False)
        images = np.ascontiguousarray(ds.imgs)
        labels = np.asarray(ds.labels).reshape(len(images), -1)
        if labels.shape[1] != 1:
            raise ConfigError.build(
                what="flag",
                expected="single-label data (labels of shape (N, 1))",
                received=f"labels of shape {np.asarray(ds.labels).shape}",
                fix="use a single-label MedMNIST flag",
            )
        out[split] = (images, labels[:, 0].astype(np.int64))
    logger.debug("loaded %s from %s: %s", key, path, {s: len(v[1]) for s, v in out.items()})
    return out


__all__ = [
    "MEDMNIST_MAX_VALUE",
    "OFFICIAL_MD5",
    "SPLITS",
    "load_medmnist",
    "medmnist_class_names",
    "medmnist_file",
]
