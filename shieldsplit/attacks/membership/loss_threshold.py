"""The loss-threshold membership attack (Yeom et al. 2018): ``loss-threshold``, no
reference models."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from shieldsplit.attacks.membership.base import (
    Labelled,
    MembershipAttack,
    ProbsFn,
    query_probs,
    register_membership_attack,
)
from shieldsplit.functional.membership import loss_score


class LossThreshold(MembershipAttack):
    """Yeom et al. 2018: members have lower loss. The score is ``log p_y`` (minus the
    loss); the ROC metrics sweep every threshold.

    Example:
        >>> import torch
        >>> net = lambda x: torch.tensor([[0.9, 0.1]] * len(x))
        >>> s = LossThreshold().score(net, (torch.zeros(1, 1), torch.tensor([0])),
        ...                           (torch.zeros(1, 1), torch.tensor([1])))
        >>> bool(s.members[0] > s.nonmembers[0])
        True
    """

    name = "loss-threshold"

    def _scores(self, target: ProbsFn, refs: list[ProbsFn], x: Tensor, y: Tensor,
                population: Labelled | None) -> np.ndarray:
        return loss_score(query_probs(target, x), y.numpy())


register_membership_attack(LossThreshold.name, LossThreshold)

__all__ = ["LossThreshold"]
