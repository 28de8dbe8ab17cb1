"""Evasion attacks: the adversarial examples of the PGSL paper's Table II (the old import
path; each attack now lives in its own module).

Khowaja et al. (2022, Table II) attack the images of a trained classifier with
four evasion attacks; these run the same four on any ``nn.Module`` classifier that maps
an ``(N, C, H, W)`` batch to ``(N, K)`` logits, each a function and a registered
:class:`~shieldsplit.evasion.base.EvasionAttack`:

* :func:`fgsm` / :class:`FGSM` (:mod:`shieldsplit.evasion.fgsm`): Fast Gradient Sign
  Method (Goodfellow, Shlens & Szegedy, ICLR 2015), through :class:`captum.robust.FGSM`.
* :func:`bim` / :class:`BIM` (:mod:`shieldsplit.evasion.bim`): Basic Iterative Method
  (Kurakin, Goodfellow & Bengio, ICLR workshop 2017), i.e. :class:`captum.robust.PGD`
  with an L-infinity ball and no random start.
* :func:`carlini_wagner` / :class:`CarliniWagner` (:mod:`shieldsplit.evasion.cw`): the
  untargeted L2 attack of Carlini & Wagner (IEEE S&P 2017), optimised in tanh space
  with Adam.
* :func:`jsma` / :class:`JSMA` (:mod:`shieldsplit.evasion.jsma`): the targeted
  Jacobian-based Saliency Map Attack of Papernot et al. (IEEE EuroS&P 2016) with the
  pairwise saliency map over the search domain.

This is a different thing from :mod:`shieldsplit.defenses.pgsl.perturb`, PGSL's own
few-pixel perturbation that the client applies to its data on purpose.

Every attack works on the whole batch at once (images that are done are masked
out), returns an :class:`AdversarialExamples`, runs the model in eval mode and
leaves it exactly as it found it: train/eval modes, ``requires_grad`` flags,
parameters and their ``.grad`` are untouched. :func:`create_adversary` builds an
attack by name with options validated by its ``Config``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    >>> adv = fgsm(model, x, y, eps=0.1)
    >>> adv.images.shape, adv.linf <= 0.1 + 1e-6
    (torch.Size([4, 1, 4, 4]), True)
    >>> attack = create_adversary("jsma", gamma=0.5, seed=1)
    >>> out = attack(model, x, y)
    >>> bool((out.images >= 0).all() and (out.images <= 1).all()), out.l0 <= 0.5
    (True, True)
    >>> available_adversaries()
    ['bim', 'cw', 'fgsm', 'jsma']
"""

from __future__ import annotations

from shieldsplit.evasion.base import (
    AdversarialExamples,
    Clip,
    EvasionAttack,
    adversary_class,
    available_adversaries,
    create_adversary,
    register_adversary,
    unregister_adversary,
)
from shieldsplit.evasion.bim import BIM, bim
from shieldsplit.evasion.cw import CarliniWagner, carlini_wagner
from shieldsplit.evasion.fgsm import FGSM, fgsm
from shieldsplit.evasion.jsma import JSMA, JSMA_MAX_FEATURES, jsma

#: The old name of a registered attack bound to its options: an :class:`EvasionAttack`
#: (call it as ``adversary(model, x, y)``; its ``options`` are those given).
Adversary = EvasionAttack

__all__ = [
    "BIM",
    "FGSM",
    "JSMA",
    "JSMA_MAX_FEATURES",
    "AdversarialExamples",
    "Adversary",
    "CarliniWagner",
    "Clip",
    "EvasionAttack",
    "adversary_class",
    "available_adversaries",
    "bim",
    "carlini_wagner",
    "create_adversary",
    "fgsm",
    "jsma",
    "register_adversary",
    "unregister_adversary",
]
