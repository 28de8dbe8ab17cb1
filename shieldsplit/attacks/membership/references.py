"""Reference models and the black-box query: how the membership attacks see a model.

The attacker trains *reference models* on auxiliary images from the same distribution,
with the target's own recipe (:class:`Recipe`, its defence included). Every reference
model is trained on a seeded half of the auxiliary data (pairs of models take
complementary halves), so none of them saw an audited image: the attacks run *offline*
(Carlini et al. 2022; Zarifzadeh et al. 2024).

Reference models (and the audit's overfitted control) are cached in memory by (recipe,
architecture, training images, seed), so a ``compare`` over defences does not train them
twice (:func:`clear_reference_cache` empties the cache).

Example:
    >>> Recipe(epochs=2).defense is None
    True
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from shieldsplit._core.validate import check_int, check_seed
from shieldsplit.attacks.base import fingerprint
from shieldsplit.attacks.membership.base import Labelled, ProbsFn
from shieldsplit.datacontract import as_loader
from shieldsplit.defenses.base import Defense, create_defense
from shieldsplit.errors import ConfigError
from shieldsplit.training import eval_mode, fit_plain

logger = logging.getLogger(__name__)

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


__all__ = [
    "QUERY_BATCH", "Recipe", "clear_reference_cache", "fresh_copy", "memoized",
    "probabilities", "reference_models", "template_of", "train_cached", "train_recipe",
]
