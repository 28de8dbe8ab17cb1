"""Membership inference attacks: was this image in the model's training set?

One family of the attacks (:class:`~shieldsplit.attacks.base.AttackBase`), with its
own verb, :meth:`MembershipAttack.score`, in the one attack registry
(``available_attacks("membership")``).

Threat model: black-box query access to the trained model's class probabilities (for a
:class:`~shieldsplit.defenses.base.Defense`,
:meth:`~shieldsplit.defenses.base.Defense.predict_proba`,
the deployed fused output), plus auxiliary images from the same distribution that the
attacker trains *reference models* on, with the target's own recipe (its defence
included). Every reference model is trained on a seeded half of the auxiliary data
(pairs of models take complementary halves), so none of them saw an audited image:
the attacks run *offline* (Carlini et al. 2022; Zarifzadeh et al. 2024).

Registered attacks:

- ``loss-threshold``: the target's loss on the example (Yeom et al. 2018); no reference
  models.
- ``rmia``: RMIA with ``reference_models`` (1, 2, 4) and the auxiliary images as the
  population ``z``, offline scaling ``a = 0.3``.
- ``lira``: offline LiRA, a per-example Gaussian over the reference models' scaled
  confidences (a pooled variance below 64 models); needs at least 2 reference models.

Reference models (and the audit's overfitted control) are cached in memory by (recipe,
architecture, training images, seed), so a ``compare`` over defences does not train them
twice (:func:`clear_reference_cache` empties the cache).

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

import abc
import copy
import logging
from collections.abc import Callable
from typing import Any, ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from shieldsplit._core.validate import check_int, check_seed
from shieldsplit.attacks.base import (
    Assumption,
    AttackBase,
    Family,
    Observes,
    ThreatModel,
    attack_class,
    available_attacks,
    fingerprint,
    register_attack,
    unregister_attack,
)
from shieldsplit.datacontract import as_loader
from shieldsplit.defenses.base import Defense, create_defense
from shieldsplit.errors import ConfigError
from shieldsplit.functional.membership import lira_offline, logit_confidence, loss_score, rmia_score
from shieldsplit.training import eval_mode, fit_plain

logger = logging.getLogger(__name__)

#: ``images -> (n, classes)`` class probabilities: what a black-box attacker queries.
ProbsFn = Callable[[Tensor], Tensor]
#: Labelled images ``(x, y)``.
Labelled = tuple[Tensor, Tensor]

#: RMIA's offline scaling ``a`` (ML Privacy Meter's default, 0.3).
RMIA_A = 0.3
#: Images per query batch.
QUERY_BATCH = 256


def probabilities(model: nn.Module) -> ProbsFn:
    """The black-box query of ``model``: its class probabilities in eval mode.

    A :class:`~shieldsplit.defenses.base.Defense` answers with its ``predict_proba`` (the
    deployed output); a plain classifier with the softmax of its logits. The model's
    train/eval mode is restored after each query; its weights are never touched.

    Args:
        model: a classifier returning logits, or a Defense.

    Returns:
        ``images -> (n, classes)`` probabilities (batched by :data:`QUERY_BATCH`).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> probabilities(net)(torch.rand(5, 1, 2, 2)).sum(1).round(decimals=4).tolist()
        [1.0, 1.0, 1.0, 1.0, 1.0]
    """
    if isinstance(model, Defense):
        query: ProbsFn = model.predict_proba
    else:
        @torch.no_grad()
        def query(x: Tensor) -> Tensor:
            with eval_mode(model):
                return F.softmax(model(x), dim=-1)

    def batched(x: Tensor) -> Tensor:
        return torch.cat([query(x[i:i + QUERY_BATCH]) for i in range(0, len(x), QUERY_BATCH)])

    return batched


def memoized(query: ProbsFn) -> ProbsFn:
    """``query`` answering again from memory for the same images (compared by value):
    several attacks of one audit query each model on the same images.

    Example:
        >>> calls = []
        >>> q = memoized(lambda x: calls.append(1) or x)
        >>> _ = q(torch.zeros(2)), q(torch.zeros(2)), q(torch.ones(2))
        >>> len(calls)
        2
    """
    answers: dict[str, Tensor] = {}

    def cached(x: Tensor) -> Tensor:
        key = fingerprint(x)
        if key not in answers:
            answers[key] = query(x)
        return answers[key]

    return cached


# ------------------------------------------------------------------ recipes and references

class Recipe(BaseModel):
    """How the target was trained: what the reference models repeat.

    Attributes:
        defense: the registered defence name, or None for plain training (``fit_plain``).
        options: the defence's constructor options besides ``cut`` and ``seed``.
        cut: the defence's cut (ignored for plain training).
        epochs: training epochs (of each phase, for ``train_protocol``).
        batch_size: training batch size.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    defense: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    cut: int | str = 2
    epochs: int = 5
    batch_size: int = 32

    @classmethod
    def of(cls, model: nn.Module, *, epochs: int, batch_size: int = 32) -> Recipe:
        """The recipe of ``model``: a Defense's name, options and cut, or plain training.

        Args:
            model: the audited model.
            epochs: how many epochs it was trained for.
            batch_size: its training batch size.

        Returns:
            The recipe.
        """
        check_int("epochs", epochs, low=1, fix="pass the epochs the target was trained for")
        check_int("batch_size", batch_size, low=1, fix="pass batch_size=32")
        if isinstance(model, Defense):
            return cls(defense=model.name, options=model.options(), cut=model.cut,
                       epochs=epochs, batch_size=batch_size)
        return cls(epochs=epochs, batch_size=batch_size)

    def key(self) -> str:
        """A stable text key (the cache's)."""
        return self.model_dump_json()


def fresh_copy(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every resettable layer re-initialised (seeded).

    Args:
        model: the architecture (not modified).
        seed: seeds the initialisation.

    Returns:
        The untrained copy.
    """
    out = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in out.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
            stats = getattr(m, "reset_running_stats", None)
            if callable(stats):
                stats()
    return out


def template_of(model: nn.Module) -> nn.Module:
    """The undefended architecture of the target (a Defense's recorded template)."""
    if isinstance(model, Defense):
        template = model.template()
        if template is None:
            raise ConfigError.build(
                what="model", expected="a defence that records the model it wraps",
                received=type(model).__name__,
                fix="pass template= (the untrained classifier the defence wraps)")
        return template
    return model


def train_recipe(template: nn.Module, recipe: Recipe, data: Labelled, *, seed: int) -> nn.Module:
    """Train a fresh copy of ``template`` on ``data`` with ``recipe`` (the target's way).

    Args:
        template: the undefended architecture (copied and re-initialised, not modified).
        recipe: plain training or a registered defence's ``train_protocol``.
        data: labelled images.
        seed: seeds initialisation, shuffling and the defence.

    Returns:
        The trained model (a Defense for a defence recipe), in eval mode.
    """
    net = fresh_copy(template, seed)
    loader = as_loader(data, batch_size=recipe.batch_size, seed=seed)
    if recipe.defense is None:
        fit_plain(net, loader, epochs=recipe.epochs, seed=seed, progress=False)
        return net.eval()
    defense = create_defense(recipe.defense, net, cut=recipe.cut, seed=seed, **recipe.options)
    defense.train_protocol(loader, epochs=recipe.epochs, seed=seed, progress=False)
    return defense.eval()


_CACHE: dict[tuple[str, str, str, int], nn.Module] = {}


def clear_reference_cache() -> None:
    """Forget every cached reference model (and overfitted control)."""
    _CACHE.clear()


def train_cached(template: nn.Module, recipe: Recipe, data: Labelled, *, seed: int,
                 ) -> nn.Module:
    """:func:`train_recipe`, cached in memory by (recipe, architecture, data, seed).

    The template counts by its architecture (its re-initialised state), so a trained
    model and its untrained copy share cached models.

    Args:
        template: the undefended architecture.
        recipe: the recipe.
        data: labelled images.
        seed: the training seed.

    Returns:
        The trained model (the cached object itself: query it, do not train it).
    """
    key = (recipe.key(), fingerprint(fresh_copy(template, 0)), fingerprint(*data), seed)
    if key not in _CACHE:
        logger.info("training a %s model on %d images", recipe.defense or "plain",
                    len(data[0]))
        _CACHE[key] = train_recipe(template, recipe, data, seed=seed)
    return _CACHE[key]


def reference_models(template: nn.Module, recipe: Recipe, auxiliary: Labelled, *, count: int,
                     seed: int) -> list[nn.Module]:
    """``count`` reference models trained with ``recipe`` on seeded halves of ``auxiliary``.

    Models ``2j`` and ``2j + 1`` train on complementary halves of the ``j``-th seeded
    permutation (Carlini et al.'s pairing), so every auxiliary image is IN for half of an
    even number of models. Cached by :func:`train_cached`.

    Args:
        template: the undefended architecture.
        recipe: the target's recipe.
        auxiliary: the attacker's labelled images (disjoint from the audited ones).
        count: how many models, ``>= 1``.
        seed: seeds the halves and the training.

    Returns:
        The trained reference models.
    """
    check_int("reference models", count, low=1, fix="pass 1, 2 or 4 reference models")
    seed = check_seed(seed)
    ax, ay = auxiliary
    out = []
    for i in range(count):
        perm = torch.from_numpy(np.random.default_rng([seed, i // 2]).permutation(len(ax)))
        half = perm[: len(ax) // 2] if i % 2 == 0 else perm[len(ax) // 2:]
        out.append(train_cached(template, recipe, (ax[half], ay[half]),
                                seed=(seed + 7919 * (i + 1)) % 2**32))
    return out


# ------------------------------------------------------------------ attacks

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


def _probs(query: ProbsFn, x: Tensor) -> np.ndarray:
    return query(x).detach().cpu().double().numpy()


class LossThreshold(MembershipAttack):
    """Yeom et al. 2018: members have lower loss. The score is ``log p_y`` (minus the
    loss); the ROC metrics sweep every threshold."""

    name = "loss-threshold"

    def _scores(self, target: ProbsFn, refs: list[ProbsFn], x: Tensor, y: Tensor,
                population: Labelled | None) -> np.ndarray:
        return loss_score(_probs(target, x), y.numpy())


class RMIA(MembershipAttack):
    """Zarifzadeh et al. 2024, offline (every reference model is OUT for the audited
    images), ``a = 0.3``, ``gamma = 1``, population ``z``: the auxiliary images."""

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
            return np.exp(loss_score(_probs(query, images), labels.numpy()))

        return rmia_score(true_prob(target, x, y), np.stack([true_prob(r, x, y) for r in refs]),
                          true_prob(target, zx, zy),
                          np.stack([true_prob(r, zx, zy) for r in refs]), a=RMIA_A)


class LiRA(MembershipAttack):
    """Carlini et al. 2022, offline: a Gaussian per example over the OUT reference models'
    scaled confidences, the pooled variance below 64 models."""

    name = "lira"
    assumes = frozenset({"labels", "auxiliary_data"})
    needs_references = 2

    def _scores(self, target: ProbsFn, refs: list[ProbsFn], x: Tensor, y: Tensor,
                population: Labelled | None) -> np.ndarray:
        labels = y.numpy()
        ref = np.stack([logit_confidence(_probs(r, x), labels) for r in refs])
        return lira_offline(logit_confidence(_probs(target, x), labels), ref,
                            global_std=len(refs) < 64)


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


for _cls in (LossThreshold, RMIA, LiRA):
    register_membership_attack(_cls.name, _cls)


__all__ = [
    "RMIA", "LiRA", "LossThreshold", "MembershipAttack", "MembershipOptions",
    "MembershipScores", "ProbsFn",
    "Recipe", "available_membership_attacks", "clear_reference_cache",
    "create_membership_attack", "fingerprint", "fresh_copy", "membership_attack_class",
    "memoized",
    "probabilities", "reference_models", "register_membership_attack", "template_of",
    "train_cached", "train_recipe", "unregister_membership_attack",
]
