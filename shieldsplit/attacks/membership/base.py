"""The membership family: :class:`MembershipAttack`, its options and scores, and the
registry wrappers (``available_attacks("membership")`` of the one attack registry).

Threat model: black-box query access to the trained model's class probabilities, plus
auxiliary images from the same distribution for the reference models
(:mod:`shieldsplit.attacks.membership.references`). Each attack is one module
(:mod:`.loss_threshold`, :mod:`.rmia`, :mod:`.lira`) that registers itself.

Example:
    >>> class Constant(MembershipAttack):
    ...     name = "constant"
    ...     def _scores(self, target, refs, x, y, population):
    ...         return np.zeros(len(x))
    >>> register_membership_attack("constant", Constant)
    >>> out = create_membership_attack("constant").score(
    ...     lambda x: torch.full((len(x), 2), 0.5), (torch.zeros(2, 1, 2, 2), torch.tensor([0, 1])),
    ...     (torch.zeros(1, 1, 2, 2), torch.tensor([1])))
    >>> out.members.tolist(), out.nonmembers.tolist()
    ([0.0, 0.0], [0.0])
    >>> unregister_membership_attack("constant")
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar, cast

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from shieldsplit.attacks.base import (
    Assumption,
    AttackBase,
    Family,
    Observes,
    ThreatModel,
    attack_class,
    available_attacks,
    register_attack,
    unregister_attack,
)
from shieldsplit.errors import ConfigError

#: ``images -> (n, classes)`` class probabilities: what a black-box attacker queries.
ProbsFn = Callable[[Tensor], Tensor]
#: Labelled images ``(x, y)``.
Labelled = tuple[Tensor, Tensor]


def query_probs(query: ProbsFn, x: Tensor) -> np.ndarray:
    """``query``'s class probabilities of ``x`` as a float64 numpy array (what the scores of
    :mod:`shieldsplit.functional.membership` take).

    Example:
        >>> query_probs(lambda x: torch.full((len(x), 2), 0.5), torch.zeros(3, 1)).shape
        (3, 2)
    """
    return query(x).detach().cpu().double().numpy()


class MembershipScores(BaseModel):
    """What a membership attack returns: one score per image, higher meaning "member".

    Attributes:
        attack: the attack's name.
        reference_models: how many reference models it used.
        members: ``(n,)`` scores of the members.
        nonmembers: ``(m,)`` scores of the non-members.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    attack: str
    reference_models: int
    members: np.ndarray
    nonmembers: np.ndarray


class MembershipOptions(BaseModel):
    """Options of a membership attack (its ``Config``).

    Attributes:
        reference_models: how many reference models it queries (at least the attack's
            ``needs_references``; None: exactly that many).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    reference_models: int | None = Field(default=None, ge=0)


class MembershipAttack(AttackBase):
    """Base of every membership attack: one verb, :meth:`score`.

    Args:
        seed: seeds the attack.
        progress: show progress bars on long work.
        **options: the fields of :attr:`Config` (:class:`MembershipOptions`).

    Attributes:
        name: the registry name.
        needs_references: the least number of reference models it needs (0: none).
    """

    family: ClassVar[Family] = "membership"
    threat_model: ClassVar[ThreatModel] = "black_box_query"
    observes: ClassVar[Observes] = "scores"
    assumes: ClassVar[frozenset[Assumption]] = frozenset({"labels"})
    needs_references: ClassVar[int] = 0
    Config = MembershipOptions
    config: MembershipOptions
    reference_models: int

    def __init__(self, *, seed: int = 0, progress: bool = True, **options: Any) -> None:
        super().__init__(seed=seed, progress=progress, **options)
        given = self.config.reference_models
        # None resolves to the attack's least number, in the config as in the attribute
        self.config = self.config.model_copy(
            update={"reference_models": self.needs_references if given is None else given})
        self.reference_models = int(self.config.reference_models or 0)
        if self.reference_models < self.needs_references:
            raise ConfigError.build(
                what="reference_models", expected=f"at least {self.needs_references} for "
                f"{self.name}", received=repr(given),
                fix=f"pass reference_models={max(self.needs_references, 1)} or more")

    def score(self, target: ProbsFn, members: Labelled, nonmembers: Labelled, *,
              references: list[ProbsFn] | None = None, population: Labelled | None = None,
              ) -> MembershipScores:
        """Score every member and non-member by querying ``target`` (and the references).

        Args:
            target: the black-box query of the audited model.
            members: labelled images it trained on.
            nonmembers: labelled images it did not.
            references: the queries of reference models (at least ``reference_models``).
            population: labelled population images ``z`` (RMIA's; the auxiliary data).

        Returns:
            The scores.

        Raises:
            ConfigError: too few reference models, or RMIA without a population.
        """
        refs = list(references or [])[: self.reference_models]
        if len(refs) < self.reference_models:
            raise ConfigError.build(
                what="references", expected=f"{self.reference_models} reference models",
                received=len(refs), fix="train them with reference_models()")
        x = torch.cat([members[0], nonmembers[0]])
        y = torch.cat([members[1], nonmembers[1]])
        s = self._scores(target, refs, x, y, population)
        n = len(members[0])
        return MembershipScores(attack=self.name, reference_models=len(refs),
                                members=s[:n], nonmembers=s[n:])

    @abc.abstractmethod
    def _scores(self, target: ProbsFn, refs: list[ProbsFn], x: Tensor, y: Tensor,
                population: Labelled | None) -> np.ndarray:
        """``(n,)`` scores of the labelled images ``(x, y)``."""


def register_membership_attack(name: str, cls: type[MembershipAttack]) -> None:
    """:func:`~shieldsplit.attacks.base.register_attack` for a membership attack.

    Raises:
        ConfigError: not a membership attack, an empty name, or one taken by another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, MembershipAttack)):
        raise ConfigError.build(what="cls", expected="a MembershipAttack subclass",
                                received=cls, fix="subclass MembershipAttack")
    register_attack(name, cls)


def unregister_membership_attack(name: str) -> None:
    """Remove a membership attack (a no-op for an unknown name)."""
    unregister_attack(name)


def available_membership_attacks() -> list[str]:
    """Registered membership attack names, sorted (``available_attacks("membership")``).

    Example:
        >>> available_membership_attacks()
        ['lira', 'loss-threshold', 'rmia']
    """
    return available_attacks("membership")


def membership_attack_class(name: str) -> type[MembershipAttack]:
    """The membership attack class registered under ``name``.

    Raises:
        ConfigError: an unknown name, or an attack of another family.
    """
    return cast(type[MembershipAttack], attack_class(name, "membership"))


def create_membership_attack(name: str, **options: Any) -> MembershipAttack:
    """Build a registered membership attack.

    Args:
        name: one of :func:`available_membership_attacks`.
        **options: ``reference_models`` (and ``seed``).

    Returns:
        The attack.

    Raises:
        ConfigError: an unknown name, or too few reference models for it.
    """
    return membership_attack_class(name)(**options)


__all__ = [
    "Labelled", "MembershipAttack", "MembershipOptions", "MembershipScores", "ProbsFn",
    "available_membership_attacks", "create_membership_attack", "membership_attack_class",
    "query_probs", "register_membership_attack", "unregister_membership_attack",
]
