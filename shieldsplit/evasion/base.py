"""The evasion family: :class:`EvasionAttack`, its result and the checks every attack shares.

An evasion attacker holds the deployed classifier and its gradients (threat model
``white_box_model``) and perturbs images so that the model misclassifies them. Every
evasion attack is an :class:`EvasionAttack` with one verb,
``perturb(model, x, y) -> AdversarialExamples`` (calling the attack does the same), and a
pydantic ``Config`` for its options; it registers itself in the one attack registry
(:func:`~shieldsplit.attacks.base.register_attack`) under family ``"evasion"``.

Every attack works on the whole batch at once, runs the model in eval mode and leaves it
exactly as it found it (:func:`attack_mode`: train/eval modes, ``requires_grad`` flags,
parameters and their ``.grad`` untouched).

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Noop(EvasionAttack):
    ...     name = "noop"
    ...     def perturb(self, model, x, y):
    ...         with attack_mode(model) as net:
    ...             x, y, _ = prepare_batch(net, x, y, self.config.clip)
    ...             return AdversarialExamples.of(net, self.name, x, x.clone(), y)
    >>> register_adversary("noop", Noop)
    >>> out = create_adversary("noop")(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)),
    ...                                torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0]))
    >>> out.l2, out.attack
    (0.0, 'noop')
    >>> unregister_adversary("noop")
"""

from __future__ import annotations

import abc
import contextlib
import inspect
import logging
import math
import typing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, cast

import torch
import torch.nn.functional as F
from pydantic import BaseModel, BeforeValidator, ConfigDict, create_model
from pydantic_core import PydanticCustomError
from torch import Tensor, nn

from shieldsplit._core.validate import check_batch, check_labels
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
from shieldsplit.errors import ConfigError, UnsupportedModelError
from shieldsplit.training import eval_mode

logger = logging.getLogger(__name__)

#: A valid pixel range ``(low, high)``.
Clip = tuple[float, float]


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class AdversarialExamples:
    """What an evasion attack produced.

    Attributes:
        images: the adversarial batch, same shape as the input, within ``clip``.
        original_labels: the true labels ``(N,)``.
        predicted: the model's labels on ``images`` ``(N,)``.
        success: bool ``(N,)``: ``predicted != original_labels`` for untargeted attacks,
            ``predicted == target`` for targeted ones. An image the model already
            misclassified counts as a success of an untargeted attack, so measure
            success rates on correctly classified images.
        perturbation: ``images - x``.
        attack: the attack's name (``"fgsm"``, ``"bim"``, ``"cw"``, ``"jsma"``).
        target: the target classes ``(N,)`` of a targeted attack, else None.

    Example:
        >>> z = torch.zeros(2, 1, 2, 2)
        >>> out = AdversarialExamples(images=z, original_labels=torch.tensor([0, 1]),
        ...     predicted=torch.tensor([1, 1]), success=torch.tensor([True, False]),
        ...     perturbation=z, attack="hand")
        >>> out.success_rate, out.l0
        (0.5, 0.0)
    """

    images: Tensor
    original_labels: Tensor
    predicted: Tensor
    success: Tensor
    perturbation: Tensor
    attack: str
    target: Tensor | None = None

    @classmethod
    def of(cls, model: nn.Module, attack: str, x: Tensor, adv: Tensor, y: Tensor,
           target: Tensor | None = None) -> AdversarialExamples:
        """The result of an attack that turned ``x`` into ``adv``: the model's predictions
        on ``adv`` and their success, logged.

        Args:
            model: the attacked classifier (in the attack's mode).
            attack: the attack's name.
            x: the clean images.
            adv: the adversarial images.
            y: the true labels.
            target: the target classes of a targeted attack, else None.

        Returns:
            The adversarial examples.
        """
        adv = adv.detach()
        with torch.no_grad():
            predicted = model(adv).argmax(dim=1)
        success = predicted == target if target is not None else predicted != y
        out = cls(images=adv, original_labels=y, predicted=predicted, success=success,
                  perturbation=adv - x, attack=attack, target=target)
        logger.info("%s: success %.3f, l0 %.4f, l2 %.4f, linf %.4f on %d image(s)",
                    attack, out.success_rate, out.l0, out.l2, out.linf, len(x))
        return out

    @property
    def success_rate(self) -> float:
        """Fraction of images on which the attack succeeded."""
        return float(self.success.float().mean())

    @property
    def l0(self) -> float:
        """Mean over images of the fraction of elements the attack changed."""
        return float((self.perturbation != 0).flatten(1).float().mean(1).mean())

    @property
    def l2(self) -> float:
        """Mean over images of the L2 norm of the perturbation."""
        return float(self.perturbation.flatten(1).norm(dim=1).mean())

    @property
    def linf(self) -> float:
        """Mean over images of the L-infinity norm of the perturbation."""
        return float(self.perturbation.flatten(1).abs().amax(dim=1).mean())


# --------------------------------------------------------------------------- options


def _as_clip(value: Any) -> Clip:
    ok = (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
        and value[0] < value[1]
    )
    if not ok:
        raise PydanticCustomError(
            "clip_range", "a (low, high) pair of finite numbers with low < high, e.g. "
            "clip=(0.0, 1.0) for images in [0, 1]")
    return float(value[0]), float(value[1])


#: A ``Config`` field holding a valid pixel range ``(low, high)`` (a tuple or a list).
ClipField = Annotated[tuple[float, float], BeforeValidator(_as_clip)]


class EvasionConfig(BaseModel):
    """Options every evasion attack takes (each attack's ``Config`` extends it).

    Attributes:
        clip: the images' valid pixel range ``(low, high)``; adversarial images stay in it.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    clip: ClipField = (0.0, 1.0)


# --------------------------------------------------------------------------- checks


@contextlib.contextmanager
def attack_mode(model: Any) -> Iterator[nn.Module]:
    """Eval mode (:func:`shieldsplit.training.eval_mode`), frozen parameters and grad
    enabled; everything restored on exit.

    Args:
        model: the classifier.

    Yields:
        The model.

    Raises:
        UnsupportedModelError: ``model`` is not an ``nn.Module``.

    Example:
        >>> net = nn.Linear(2, 2).train()
        >>> with attack_mode(net):
        ...     net.training, net.weight.requires_grad
        (False, False)
        >>> net.training, net.weight.requires_grad
        (True, True)
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError.build(
            what="model", expected="a torch.nn.Module classifier returning logits",
            received=type(model).__name__, fix="pass the classifier module itself",
        )
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        with eval_mode(model), torch.enable_grad():
            yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def prepare_batch(model: nn.Module, x: Any, y: Any, clip: Clip) -> tuple[Tensor, Tensor, int]:
    """Check the batch, labels and model output.

    Args:
        model: the classifier (inside :func:`attack_mode`).
        x: images ``(N, C, H, W)`` within ``clip``.
        y: true labels ``(N,)``.
        clip: the valid pixel range.

    Returns:
        Detached ``x``, ``y`` as long on ``x``'s device, and the number of classes.

    Raises:
        InputShapeError: ``x`` is not a non-empty float ``(N, C, H, W)`` tensor.
        NonFiniteInputError: NaN or infinity in ``x``.
        LabelError: labels of the wrong shape, dtype or range.
        UnsupportedModelError: the model does not return ``(N, K)`` logits, ``K >= 2``.
        ConfigError: ``x`` outside ``clip``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> prepare_batch(net, torch.rand(2, 1, 2, 2), torch.tensor([0, 2]), (0.0, 1.0))[2]
        3
    """
    check_batch(x, what="x")
    x = x.detach()
    with torch.no_grad():
        logits = model(x)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != len(x) or (
        logits.shape[1] < 2
    ):
        raise UnsupportedModelError.build(
            what="model", expected=f"logits of shape ({len(x)}, K) with K >= 2 classes",
            received=f"{type(logits).__name__} of shape {tuple(getattr(logits, 'shape', ()))}",
            fix="pass a classifier whose forward returns one row of class logits per image",
        )
    num_classes = int(logits.shape[1])
    check_labels(y, len(x), num_classes=num_classes)
    lo, hi = clip
    x_min, x_max = x.min(), x.max()  # compared in x's dtype, as the attacks clamp
    if bool(x_min < lo) or bool(x_max > hi):
        raise ConfigError.build(
            what="clip", expected=f"a range that holds every value of x, here [{lo:g}, {hi:g}]",
            received=f"x in [{float(x_min):g}, {float(x_max):g}]",
            fix="scale the images into clip, or pass the images' valid range as clip",
        )
    return x, y.to(x.device).long(), num_classes


@contextlib.contextmanager
def quiet_captum() -> Iterator[None]:
    """Silence Captum's notice that it switched on the inputs' requires_grad (intended)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*did not already require gradients")
        yield


def per_sample_ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-image cross-entropy (the loss Captum's FGSM and PGD ascend).

    Example:
        >>> [round(v, 4) for v in per_sample_ce(torch.zeros(2, 4), torch.tensor([0, 3])).tolist()]
        [1.3863, 1.3863]
    """
    return F.cross_entropy(logits, labels, reduction="none")


# --------------------------------------------------------------------------- family base


class EvasionAttack(AttackBase):
    """Base of every evasion attack: one verb, :meth:`perturb` (also ``attack(model, x, y)``).

    Args:
        seed: seeds the attack (random targets, random starts).
        progress: show progress bars on long work.
        **options: the fields of the attack's ``Config`` (an :class:`EvasionConfig`).

    Subclasses set ``name`` and ``Config`` and implement :meth:`perturb`.
    """

    family: ClassVar[Family] = "evasion"
    threat_model: ClassVar[ThreatModel] = "white_box_model"
    observes: ClassVar[Observes] = "model"
    assumes: ClassVar[frozenset[Assumption]] = frozenset({"labels"})
    Config = EvasionConfig

    @property
    def options(self) -> dict[str, Any]:
        """The options given explicitly (the ``Config`` fields set at construction)."""
        return {k: getattr(self.config, k) for k in sorted(self.config.model_fields_set)}

    @abc.abstractmethod
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> AdversarialExamples:
        """Perturb ``x`` so that ``model`` misclassifies it.

        Args:
            model: classifier mapping ``(N, C, H, W)`` images to ``(N, K)`` logits.
            x: images, within the ``clip`` option.
            y: true labels ``(N,)``.

        Returns:
            The adversarial examples.
        """

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> AdversarialExamples:
        """:meth:`perturb` (the call style ``adversary(model, x, y)``)."""
        return self.perturb(model, x, y)


# --------------------------------------------------------------------------- registry


_FROM_FUNCTIONS: dict[tuple[str, Callable[..., Any]], type[EvasionAttack]] = {}


def attack_from_function(name: str, fn: Callable[..., AdversarialExamples]
                         ) -> type[EvasionAttack]:
    """An :class:`EvasionAttack` subclass that calls ``fn``; its ``Config`` is built from
    ``fn``'s keyword-only parameters (their annotations and defaults) besides ``seed``,
    which the attack passes from its own seed when ``fn`` takes it.

    Args:
        name: the attack's name.
        fn: ``fn(model, x, y, *, **options) -> AdversarialExamples``.

    Returns:
        The generated class (the same one for the same name and function).

    Example:
        >>> def shift(model, x, y, *, by: float = 0.0):
        ...     return AdversarialExamples.of(model, "shift", x, x + by, y)
        >>> sorted(attack_from_function("shift", shift).Config.model_fields)
        ['by']
    """
    if (name, fn) in _FROM_FUNCTIONS:
        return _FROM_FUNCTIONS[(name, fn)]
    params = inspect.signature(fn).parameters.values()
    keyword = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: accept any value
        hints = {}
    fields: dict[str, Any] = {
        p.name: (hints.get(p.name, Any), ... if p.default is p.empty else p.default)
        for p in keyword if p.name not in ("seed", "progress")}
    config = create_model(
        f"{fn.__name__}Config", __config__=ConfigDict(
            extra="forbid", frozen=True, arbitrary_types_allowed=True), **fields)
    takes_seed = any(p.name == "seed" for p in keyword)

    def perturb(self: EvasionAttack, model: nn.Module, x: Tensor, y: Tensor
                ) -> AdversarialExamples:
        seed = {"seed": self.seed} if takes_seed else {}
        return fn(model, x, y, **dict(self.config), **seed)

    cls = cast(type[EvasionAttack], type(f"{fn.__name__}_attack", (EvasionAttack,), {
        "name": name, "Config": config, "perturb": perturb, "__doc__": fn.__doc__,
        "__module__": getattr(fn, "__module__", __name__)}))
    return cls


def register_adversary(name: str, attack: type[EvasionAttack] | Callable[..., Any]) -> None:
    """Register an evasion attack under ``name``.

    Args:
        name: the public name (``"fgsm"``).
        attack: an :class:`EvasionAttack` subclass, or a function
            ``fn(model, x, y, *, **options) -> AdversarialExamples`` whose keyword-only
            parameters are the options :func:`create_adversary` accepts
            (:func:`attack_from_function` wraps it).

    Raises:
        ConfigError: ``name`` is not a non-empty string, ``attack`` is neither, or the
            name is taken by another attack.
    """
    if isinstance(attack, type) and issubclass(attack, EvasionAttack):
        register_attack(name, attack)
        return
    if isinstance(attack, type) or not callable(attack):
        raise ConfigError.build(
            what="attack", expected="an EvasionAttack subclass or a function "
            "fn(model, x, y, *, **options)", received=type(attack).__name__,
            fix="subclass shieldsplit.evasion.base.EvasionAttack, or pass the attack function",
        )
    cls = attack_from_function(name, attack)
    register_attack(name, cls)
    _FROM_FUNCTIONS[(name, attack)] = cls


def unregister_adversary(name: str) -> None:
    """Remove the evasion attack ``name`` (no error if absent, nor for another family's).

    Args:
        name: a registered name.
    """
    if name in available_adversaries():
        unregister_attack(name)
    for key in [k for k in _FROM_FUNCTIONS if k[0] == name]:
        del _FROM_FUNCTIONS[key]


def available_adversaries() -> list[str]:
    """Registered evasion attack names, sorted (``available_attacks("evasion")``).

    Example:
        >>> available_adversaries()
        ['bim', 'cw', 'fgsm', 'jsma']
    """
    return available_attacks("evasion")


def adversary_class(name: str) -> type[EvasionAttack]:
    """The evasion attack class registered under ``name``.

    Raises:
        ConfigError: an unknown name (the message lists the evasion attacks), or an
            attack of another family.

    Example:
        >>> adversary_class("cw").declaration().threat_model
        'white_box_model'
    """
    names = available_adversaries()
    if name not in names:
        raise ConfigError.build(
            what="adversary", expected=f"one of {names}", received=repr(name),
            fix="pick a registered evasion attack or register yours with register_adversary")
    return cast(type[EvasionAttack], attack_class(name, "evasion"))


def create_adversary(name: str, **options: Any) -> EvasionAttack:
    """Build a registered evasion attack with its options, checked now rather than at
    call time.

    Args:
        name: a name from :func:`available_adversaries`.
        **options: ``seed`` and the attack's options (``eps``, ``steps``, ``gamma``, ...).

    Returns:
        The attack: ``attack.perturb(model, x, y)``, or call it as ``attack(model, x, y)``.

    Raises:
        ConfigError: an unknown name (the message lists the valid ones), an option the
            attack does not take (the message lists the valid ones) or an option value
            out of range.
        LabelError: a bad JSMA ``target`` type.

    Example:
        >>> create_adversary("bim", eps=0.05).options
        {'eps': 0.05}
    """
    return adversary_class(name)(**options)


__all__ = [
    "AdversarialExamples",
    "Clip",
    "ClipField",
    "EvasionAttack",
    "EvasionConfig",
    "adversary_class",
    "attack_from_function",
    "attack_mode",
    "available_adversaries",
    "create_adversary",
    "per_sample_ce",
    "prepare_batch",
    "quiet_captum",
    "register_adversary",
    "unregister_adversary",
]
