"""The defences beside PGSL: latent perturbation and the published baselines.

Importing this package registers each of them with
:func:`shieldsplit.defense.register_defense`: ``latent-fixed``, ``latent-learned``,
``dpsgd``, ``nopeek``, ``laplace``, ``bido`` and ``jsma-input``.
"""

from shieldsplit.defenses.bido import BiDO
from shieldsplit.defenses.dpsgd import DPSGD
from shieldsplit.defenses.jsma_input import JsmaInput
from shieldsplit.defenses.laplace import LaplaceNoise
from shieldsplit.defenses.latent import LatentPerturb
from shieldsplit.defenses.nopeek import NoPeek

__all__ = ["DPSGD", "BiDO", "JsmaInput", "LaplaceNoise", "LatentPerturb", "NoPeek"]
