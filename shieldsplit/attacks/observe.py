"""What a federated-learning attacker observes of one client batch (the old path).

The functions live in :mod:`shieldsplit.observe`, below both the defences (whose
federated surface builds these observations) and the attacks (which invert them);
this module re-exports them so ``shieldsplit.attacks.observe`` keeps working.

Example:
    >>> import torch
    >>> from shieldsplit.models import SmallConvNet
    >>> net = SmallConvNet(num_classes=3, image_size=8)
    >>> observe_gradient(net, torch.rand(2, 1, 8, 8), torch.tensor([0, 2])).kind
    'gradient'
"""

from __future__ import annotations

from shieldsplit.observe import (
    fedavg_update,
    frozen_state,
    functional_copy,
    functional_victim,
    loss_gradients,
    minibatch_schedule,
    observe_gradient,
    observe_update,
    trainable_parameters,
)

__all__ = [
    "fedavg_update",
    "frozen_state",
    "functional_copy",
    "functional_victim",
    "loss_gradients",
    "minibatch_schedule",
    "observe_gradient",
    "observe_update",
    "trainable_parameters",
]
