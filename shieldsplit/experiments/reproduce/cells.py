"""A resumable store of finished experiment cells.

Every cell of a reproduction (one trained defence, one attacked data set, one
point of a sweep) is written to a JSON file the moment it finishes, atomically.
A crash or Ctrl-C therefore loses at most the cell that was running, and a
re-run with the same settings reads the finished cells instead of redoing them.

The file records the settings that give its cells their meaning (the
*fingerprint*: data, budget, seed, library version); a store opened with other
settings refuses to mix its cells in.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "cells.json"
    >>> store = CellStore(path, fingerprint={"data": "digits"})
    >>> store.run("square-3", lambda: {"value": 9})
    {'value': 9}
    >>> CellStore(path, fingerprint={"data": "digits"}).run("square-3", lambda: 1 / 0)
    {'value': 9}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shieldsplit._core.io import atomic_write_text
from shieldsplit.errors import ConfigError, DataFileError

logger = logging.getLogger(__name__)

FORMAT = "shieldsplit.experiments.reproduce.cells/1"
#: The same format under the module's earlier name (files written before it moved).
LEGACY_FORMATS = ("shieldsplit.reproduce.cells/1",)


class CellStore:
    """Finished cells of one reproduction, persisted after each cell.

    Args:
        path: the JSON file (created on the first finished cell).
        fingerprint: the settings the cells depend on.
        fresh: discard the cells already in ``path``.
        read_only: read the finished cells and compute nothing (a page rendered again
            from its cells): a missing file or cell raises instead of being computed,
            nothing is ever written, and the fingerprint may differ only in ``versions``
            (the code versions the cells were made with; :attr:`version_changes` lists
            them, for the page to state).
        versions: the fingerprint's keys that name code versions rather than settings.

    Raises:
        ConfigError: if ``path`` holds cells made with another fingerprint, or (read-only)
            if it is missing or a cell is asked for that it does not hold.
        DataFileError: if ``path`` is not a cell file.
    """

    def __init__(self, path: str | Path, *, fingerprint: Mapping[str, Any],
                 fresh: bool = False, read_only: bool = False,
                 versions: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        self.fingerprint = json.loads(json.dumps(dict(fingerprint), default=str))
        self.cells: dict[str, Any] = {}
        #: one record per run that computed cells: ``{"finished", "seconds", "computed"}``
        #: (later runs add ``machine`` and ``load_average``)
        self.runs: list[dict[str, Any]] = []
        self.reused = 0
        self.read_only = read_only
        #: read-only: fingerprint key -> (the cells' value, the current one), for the code
        #: versions that changed since the cells were made
        self.version_changes: dict[str, tuple[Any, Any]] = {}
        if read_only and (fresh or not self.path.exists()):
            raise ConfigError.build(
                what="cell file", expected="finished cells to render the page from",
                received=f"{self.path} {'with --fresh' if fresh else 'missing'}",
                fix="run without --render to compute the cells")
        if self.path.exists() and not fresh:
            try:
                saved = json.loads(self.path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DataFileError.build(
                    what="cell file", expected=f"a {FORMAT} JSON file", received=str(self.path),
                    fix=f"delete it or re-run with --fresh ({exc})",
                ) from exc
            if not isinstance(saved, dict) or saved.get("format") not in (FORMAT, *LEGACY_FORMATS):
                raise DataFileError.build(
                    what="cell file", expected=f"a {FORMAT} JSON file", received=str(self.path),
                    fix="delete it or re-run with --fresh",
                )
            saved_fp = saved.get("fingerprint") or {}
            if read_only and isinstance(saved_fp, dict):
                keys = set(saved_fp) | set(self.fingerprint)
                changed = {k for k in keys if saved_fp.get(k) != self.fingerprint.get(k)}
                if changed <= set(versions):
                    self.version_changes = {k: (saved_fp.get(k), self.fingerprint.get(k))
                                            for k in sorted(changed)}
                    self.fingerprint = saved_fp
            if saved.get("fingerprint") != self.fingerprint:
                raise ConfigError.build(
                    what="cell file", expected=f"cells made with {self.fingerprint}",
                    received=f"{self.path} made with {saved.get('fingerprint')}",
                    fix="re-run with --fresh to discard them, or write to another --out",
                )
            self.cells = dict(saved.get("cells", {}))
            self.runs = list(saved.get("runs", []))
            logger.info("resuming: %d finished cells in %s", len(self.cells), self.path)

    def __contains__(self, key: str) -> bool:
        return key in self.cells

    def __len__(self) -> int:
        return len(self.cells)

    def run(self, key: str, compute: Callable[[], Any], *, count: bool = True) -> Any:
        """The cell's value: read back if finished, else computed and saved at once.

        Args:
            key: the cell's unique name.
            compute: makes the cell's JSON-serialisable value.
            count: count a read-back as a reused cell (False when another cell reads
                it as its input, such as the undefended control).

        Returns:
            The value (as stored: JSON types).
        """
        if key in self.cells:
            self.reused += int(count)
            return self.cells[key]
        if self.read_only:
            raise ConfigError.build(
                what="cell", expected=f"{key!r} among the finished cells of {self.path}",
                received="no such cell (read-only: nothing is computed)",
                fix="run without --render to compute it")
        value = json.loads(json.dumps(compute(), default=str))
        self.cells[key] = value
        self.save()
        return value

    def record_run(self, *, finished: str, seconds: float, computed: int,
                   **where: Any) -> None:
        """Remember a run's wall time (saved), so the page can state the total compute time.

        Args:
            finished: when the run ended (ISO time).
            seconds: its wall time.
            computed: how many cells it computed (a run that computed none is not kept).
            **where: more to record with it (``machine``, ``load_average``).
        """
        if computed and not self.read_only:
            self.runs.append({"finished": finished, "seconds": round(seconds, 1),
                              "computed": computed, **where})
            self.save()

    @property
    def total_seconds(self) -> float:
        """Wall time of every recorded run that computed cells."""
        return float(sum(r.get("seconds", 0.0) for r in self.runs))

    def save(self) -> None:
        """Write every finished cell (and the run records) to :attr:`path` atomically
        (never for a read-only store)."""
        if self.read_only:
            return
        atomic_write_text(self.path, json.dumps(
            {"format": FORMAT, "fingerprint": self.fingerprint, "runs": self.runs,
             "cells": self.cells}, indent=1))


__all__ = ["CellStore"]
