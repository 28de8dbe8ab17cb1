"""PGSL (Khowaja et al., IEEE TNSE 2022): :class:`SplitShield` and its steps.

``saliency`` (a), ``perturb`` (b), ``unshuffle`` (c), ``recovery`` (d), ``fusion`` (e,
eqs. 9-11), ``config`` (one pydantic model per step). ``SplitShield`` is built in
layers: ``surgery`` (what PGSL changes in the wrapped model), ``halves`` (the client's
steps and the server's streams: the one inference path), ``pair`` (the client/server
pair), ``fitting`` (training), ``shield`` (checkpoints and export); ``exported`` is
the TorchScript deployment form of ``halves``. The names below load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shieldsplit.defenses.pgsl.config import PGSLConfig
    from shieldsplit.defenses.pgsl.shield import FitHistory, SplitShield

_LAZY = {"PGSLConfig": "config", "FitHistory": "shield", "SplitShield": "shield"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = ["FitHistory", "PGSLConfig", "SplitShield"]
