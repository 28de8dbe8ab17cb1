"""shieldsplit: defend PyTorch medical image classifiers and audit what leaks.

Importing the package is cheap: torch, Opacus, Captum, matplotlib and the
rest load on first use of a name that needs them (``ss.audit``,
``ss.SplitShield``...), and the root logger is left alone.

Example:
    >>> import shieldsplit as ss
    >>> ss.__version__
    '0.1.0'
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below load lazily at run time (see __getattr__)
    from shieldsplit.audit.auditor import AuditReport, audit
    from shieldsplit.compare.frontier import CompareTable, compare
    from shieldsplit.cutting import list_cut_points, split_model
    from shieldsplit.defenses import DPSGD, BiDO, JsmaInput, LaplaceNoise, LatentPerturb, NoPeek
    from shieldsplit.defenses.base import Defense, available_defenses, create_defense
    from shieldsplit.defenses.pgsl.config import PGSLConfig
    from shieldsplit.defenses.pgsl.shield import FitHistory, SplitShield
    from shieldsplit.errors import ShieldSplitError
    from shieldsplit.harden import HardenResult, harden
    from shieldsplit.models import PGSLNet, create_model
    from shieldsplit.wire import ClientMessage, ServerGradient, StreamScores

from shieldsplit._core.version import __version__

#: Public name -> the submodule that defines it (imported on first access).
_LAZY: dict[str, str] = {
    "AuditReport": "audit", "audit": "audit",
    "CompareTable": "compare", "compare": "compare",
    "HardenResult": "harden", "harden": "harden",
    "PGSLConfig": "defenses.pgsl",
    "list_cut_points": "cutting", "split_model": "cutting",
    "Defense": "defenses.base", "available_defenses": "defenses.base",
    "create_defense": "defenses.base",
    "DPSGD": "defenses", "BiDO": "defenses", "JsmaInput": "defenses",
    "LaplaceNoise": "defenses", "LatentPerturb": "defenses", "NoPeek": "defenses",
    "ShieldSplitError": "errors",
    "PGSLNet": "models", "create_model": "models",
    "FitHistory": "defenses.pgsl", "SplitShield": "defenses.pgsl",
    "ClientMessage": "wire", "ServerGradient": "wire", "StreamScores": "wire",
}


class _Package(types.ModuleType):
    """The package module: a submodule that shares a public name (``compare``) never
    shadows that name when it is imported."""

    def __setattr__(self, name: str, value: Any) -> None:
        if (name in _LAZY and isinstance(value, types.ModuleType)
                and value.__name__ == f"{__name__}.{_LAZY[name]}"):
            value = getattr(value, name)  # the import system binds submodules here
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shieldsplit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "DPSGD",
    "AuditReport",
    "BiDO",
    "ClientMessage",
    "CompareTable",
    "Defense",
    "FitHistory",
    "HardenResult",
    "JsmaInput",
    "LaplaceNoise",
    "LatentPerturb",
    "NoPeek",
    "PGSLConfig",
    "PGSLNet",
    "ServerGradient",
    "ShieldSplitError",
    "SplitShield",
    "StreamScores",
    "__version__",
    "audit",
    "available_defenses",
    "compare",
    "create_defense",
    "create_model",
    "harden",
    "list_cut_points",
    "split_model",
]
