"""Every defence: ``base`` (:class:`~shieldsplit.defenses.base.Defense`, the registry),
``pgsl`` (SplitShield and its steps), latent perturbation and the published baselines.

Each module registers its defences with
:func:`shieldsplit.defenses.base.register_defense` when imported;
:func:`~shieldsplit.defenses.base.available_defenses` imports them all. The names below
load on first use, so importing one defence module does not import the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shieldsplit.defenses.bido import BiDO
    from shieldsplit.defenses.compose import Compose
    from shieldsplit.defenses.dpsgd import DPSGD
    from shieldsplit.defenses.jsma_input import JsmaInput
    from shieldsplit.defenses.laplace import LaplaceNoise
    from shieldsplit.defenses.latent import LatentPerturb
    from shieldsplit.defenses.nopeek import NoPeek

_LAZY = {"BiDO": "bido", "Compose": "compose", "DPSGD": "dpsgd", "JsmaInput": "jsma_input",
         "LaplaceNoise": "laplace", "LatentPerturb": "latent", "NoPeek": "nopeek"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = ["DPSGD", "BiDO", "Compose", "JsmaInput", "LaplaceNoise", "LatentPerturb", "NoPeek"]
