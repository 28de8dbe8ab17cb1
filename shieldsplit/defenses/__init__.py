"""The defences beside PGSL: latent perturbation and the published baselines.

Importing this package registers each of them with
:func:`shieldsplit.defense.register_defense`: ``latent-fixed``, ``latent-learned``,
``dpsgd``, ``nopeek``, ``laplace``, ``bido`` and ``jsma-input``.
"""

from .bido import BiDO
from .dpsgd import DPSGD
from .jsma_input import JsmaInput
from .laplace import LaplaceNoise
from .latent import LatentPerturb
from .nopeek import NoPeek

__all__ = ["DPSGD", "BiDO", "JsmaInput", "LaplaceNoise", "LatentPerturb", "NoPeek"]
