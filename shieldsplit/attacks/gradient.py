"""Gradient-inversion attacks on federated learning: DLG, iDLG and Inverting Gradients.

The attacker holds the global model and what one client sent for one batch:
the gradient of the batch's mean cross-entropy loss (FedSGD, observation
kind ``"gradient"``), or, for Inverting Gradients, the weight update after
several local SGD steps (FedAvg, kind ``"update"``). It optimises candidate
images until the gradient (or simulated update) they produce matches the
observed one.

- :class:`~shieldsplit.attacks.dlg.DLG` (Zhu, Liu, Han 2019, "Deep Leakage from
  Gradients"): squared L2 distance between gradients, L-BFGS on the images *and* soft
  labels.
- :class:`~shieldsplit.attacks.idlg.IDLG` (Zhao, Mopuri, Bilen 2020, "iDLG"): the
  labels are read analytically from the last layer's weight gradient
  (:func:`~shieldsplit.functional.labels.infer_labels_idlg`), then DLG's L2 matching
  with L-BFGS on the images.
- :class:`~shieldsplit.attacks.inverting_gradients.InvertingGradients` (Geiping,
  Bauermeister, Droege, Moeller 2020, "Inverting Gradients - How easy is it to break
  privacy in federated learning?"): ``1 - cosine similarity`` of all parameter
  gradients plus a total-variation prior, Adam on the *sign* of the image gradient with step
  decay (x0.1 at 3/8, 5/8, 7/8 of the iterations), images kept in [0, 1],
  several random restarts, the restart with the lowest matching loss wins. On
  a FedAvg update it simulates the client's local SGD steps differentiably on
  the candidate images and matches the simulated update (their Sec. 5).
  Labels: the observation's, when the threat model grants them, else inferred
  from the last layer. Initial images: the auxiliary mean image of the label plus
  noise, when the attacker holds auxiliary images. At batch 1, on a model with
  a wide enough ``nn.Linear`` with a bias (the PGSL paper's network), the
  layer's input is read exactly from its gradient and the images are fitted to
  it (the feature path, see ``features``): on trained ReLU/BatchNorm networks
  whole-gradient matching converges far too slowly for a CPU budget. At batch > 1
  and on FedAvg updates the layer's weight gradient is a sum of one rank-one term
  per image; its rows are separated into per-image features
  (:func:`~shieldsplit.functional.separation.separate_nonnegative_sources`, in the
  spirit of the Cocktail Party Attack, Kariyappa et al. 2023) and one image is
  fitted to each.
- :class:`~shieldsplit.attacks.inverting_gradients_fedavg.InvertingGradientsFedAvg`
  (``"inverting-gradients-fedavg"``): the same attack registered for FedAvg updates,
  with budgets sized for unrolled local steps.

One module per attack: :mod:`~shieldsplit.attacks.dlg`, :mod:`~shieldsplit.attacks.idlg`,
:mod:`~shieldsplit.attacks.inverting_gradients` and
:mod:`~shieldsplit.attacks.inverting_gradients_fedavg`, on the shared machinery of
:mod:`~shieldsplit.attacks.gradient_base` (options, budgets, validation, labels, the
batched matching objective, batching and cancelling) and
:mod:`~shieldsplit.attacks.gradient_features` (the feature paths); the maths is in
:mod:`shieldsplit.functional.labels` and :mod:`shieldsplit.functional.gradients`. This
module re-exports their public names.

Example:
    >>> import torch
    >>> from shieldsplit.attacks import AttackContext, create_attack
    >>> from shieldsplit.observe import observe_gradient
    >>> from shieldsplit.models import SmallConvNet
    >>> torch.manual_seed(0) and None
    >>> net = SmallConvNet(num_classes=4, image_size=8)
    >>> x, y = torch.rand(1, 1, 8, 8), torch.tensor([2])
    >>> attack = create_attack("inverting-gradients", seed=0, iterations=50, progress=False)
    >>> attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=4, model=net))
    >>> rec = attack.reconstruct(observe_gradient(net, x, y))
    >>> rec.images.shape, rec.labels.tolist()
    (torch.Size([1, 1, 8, 8]), [2])
"""

from __future__ import annotations

from shieldsplit.attacks.dlg import DLG, DLGConfig
from shieldsplit.attacks.gradient_base import GradientAttack, GradientAttackConfig
from shieldsplit.attacks.gradient_features import FeatureAttack
from shieldsplit.attacks.idlg import IDLG, IDLGConfig
from shieldsplit.attacks.inverting_gradients import InvertingGradients, InvertingGradientsConfig
from shieldsplit.attacks.inverting_gradients_fedavg import InvertingGradientsFedAvg
from shieldsplit.functional.gradients import linear_input_from_gradient
from shieldsplit.functional.labels import infer_labels_idlg, label_counts_idlg

__all__ = [
    "DLG",
    "IDLG",
    "DLGConfig",
    "FeatureAttack",
    "GradientAttack",
    "GradientAttackConfig",
    "IDLGConfig",
    "InvertingGradients",
    "InvertingGradientsConfig",
    "InvertingGradientsFedAvg",
    "infer_labels_idlg",
    "label_counts_idlg",
    "linear_input_from_gradient",
]
