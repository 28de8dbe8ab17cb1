"""Membership inference attacks: was this image in the model's training set?

One family of the attacks (:class:`~shieldsplit.attacks.base.AttackBase`), with its
own verb, :meth:`MembershipAttack.score`, in the one attack registry
(``available_attacks("membership")``). The family base, options, scores and registry
wrappers are in :mod:`.base`; the black-box query and the reference models in
:mod:`.references`; each attack in its own module:

- ``loss-threshold`` (:mod:`.loss_threshold`): the target's loss on the example (Yeom
  et al. 2018); no reference models.
- ``rmia`` (:mod:`.rmia`): RMIA with ``reference_models`` (1, 2, 4) and the auxiliary
  images as the population ``z``, offline scaling ``a = 0.3``.
- ``lira`` (:mod:`.lira`): offline LiRA, a per-example Gaussian over the reference
  models' scaled confidences (a pooled variance below 64 models); needs at least 2
  reference models.

Threat model: black-box query access to the trained model's class probabilities (for a
:class:`~shieldsplit.defenses.base.Defense`,
:meth:`~shieldsplit.defenses.base.Defense.predict_proba`, the deployed fused output),
plus auxiliary images from the same distribution that the attacker trains reference
models on, with the target's own recipe (its defence included), offline (Carlini et al.
2022; Zarifzadeh et al. 2024).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> x, y = torch.rand(8, 1, 2, 2), torch.tensor([0, 1] * 4)
    >>> attack = create_membership_attack("loss-threshold")
    >>> scores = attack.score(probabilities(net), (x[:4], y[:4]), (x[4:], y[4:]))
    >>> scores.members.shape, scores.nonmembers.shape
    ((4,), (4,))
"""

from __future__ import annotations

from shieldsplit.attacks.base import fingerprint
from shieldsplit.attacks.membership.base import (
    Labelled,
    MembershipAttack,
    MembershipOptions,
    MembershipScores,
    ProbsFn,
    available_membership_attacks,
    create_membership_attack,
    membership_attack_class,
    query_probs,
    register_membership_attack,
    unregister_membership_attack,
)
from shieldsplit.attacks.membership.lira import LiRA
from shieldsplit.attacks.membership.loss_threshold import LossThreshold
from shieldsplit.attacks.membership.references import (
    QUERY_BATCH,
    Recipe,
    clear_reference_cache,
    fresh_copy,
    memoized,
    probabilities,
    reference_models,
    template_of,
    train_cached,
    train_recipe,
)
from shieldsplit.attacks.membership.rmia import RMIA, RMIA_A

__all__ = [
    "QUERY_BATCH", "RMIA", "RMIA_A", "Labelled", "LiRA", "LossThreshold", "MembershipAttack",
    "MembershipOptions", "MembershipScores", "ProbsFn", "Recipe",
    "available_membership_attacks", "clear_reference_cache", "create_membership_attack",
    "fingerprint", "fresh_copy", "membership_attack_class", "memoized", "probabilities",
    "query_probs", "reference_models", "register_membership_attack", "template_of",
    "train_cached", "train_recipe", "unregister_membership_attack",
]
