"""RMIA (Zarifzadeh et al. 2024), offline: ``rmia``, with at least one reference model
and the auxiliary images as the population ``z``, offline scaling ``a = 0.3``."""

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
from shieldsplit.errors import ConfigError
from shieldsplit.functional.membership import loss_score, rmia_score

#: RMIA's offline scaling ``a`` (ML Privacy Meter's default, 0.3).
RMIA_A = 0.3


class RMIA(MembershipAttack):
    """Zarifzadeh et al. 2024, offline (every reference model is OUT for the audited
    images), ``a = 0.3``, ``gamma = 1``, population ``z``: the auxiliary images.

    Example:
        >>> RMIA().reference_models, sorted(RMIA.assumes)
        (1, ['auxiliary_data', 'labels'])
    """

    name = "rmia"
    assumes = frozenset({"labels", "auxiliary_data"})
    needs_references = 1

    def _scores(self, target: ProbsFn, refs: list[ProbsFn], x: Tensor, y: Tensor,
                population: Labelled | None) -> np.ndarray:
        if population is None:
            raise ConfigError.build(what="population", expected="labelled population images",
                                    received=None, fix="pass the auxiliary data as population")
        zx, zy = population

        def true_prob(query: ProbsFn, images: Tensor, labels: Tensor) -> np.ndarray:
            return np.exp(loss_score(query_probs(query, images), labels.numpy()))

        return rmia_score(true_prob(target, x, y), np.stack([true_prob(r, x, y) for r in refs]),
                          true_prob(target, zx, zy),
                          np.stack([true_prob(r, zx, zy) for r in refs]), a=RMIA_A)


register_membership_attack(RMIA.name, RMIA)

__all__ = ["RMIA", "RMIA_A"]
