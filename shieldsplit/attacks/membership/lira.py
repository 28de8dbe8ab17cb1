"""Offline LiRA (Carlini et al. 2022): ``lira``, a per-example Gaussian over the reference
models' scaled confidences (a pooled variance below 64 models); needs at least 2 reference
models."""

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
from shieldsplit.functional.membership import lira_offline, logit_confidence


class LiRA(MembershipAttack):
    """Carlini et al. 2022, offline: a Gaussian per example over the OUT reference models'
    scaled confidences, the pooled variance below 64 models.

    Example:
        >>> LiRA(reference_models=4).reference_models
        4
    """

    name = "lira"
    assumes = frozenset({"labels", "auxiliary_data"})
    needs_references = 2

    def _scores(self, target: ProbsFn, refs: list[ProbsFn], x: Tensor, y: Tensor,
                population: Labelled | None) -> np.ndarray:
        labels = y.numpy()
        ref = np.stack([logit_confidence(query_probs(r, x), labels) for r in refs])
        return lira_offline(logit_confidence(query_probs(target, x), labels), ref,
                            global_std=len(refs) < 64)


register_membership_attack(LiRA.name, LiRA)

__all__ = ["LiRA"]
