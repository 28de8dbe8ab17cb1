"""shieldsplit: defend PyTorch medical image classifiers and audit what leaks.

Example:
    >>> import shieldsplit as ss
    >>> ss.__version__
    '0.1.0'
"""

from __future__ import annotations

from .auditor import AuditReport, audit
from .compare import CompareTable, compare
from .config import PGSLConfig
from .cutting import list_cut_points, split_model
from .defense import Defense, available_defenses, create_defense
from .defenses import DPSGD, BiDO, JsmaInput, LaplaceNoise, LatentPerturb, NoPeek
from .errors import ShieldSplitError
from .models import PGSLNet, create_model
from .shield import FitHistory, SplitShield
from .wire import ClientMessage, ServerGradient, StreamScores

__version__ = "0.1.0"

__all__ = [
    "DPSGD",
    "AuditReport",
    "BiDO",
    "ClientMessage",
    "CompareTable",
    "Defense",
    "FitHistory",
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
    "list_cut_points",
    "split_model",
]
