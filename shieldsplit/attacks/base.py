"""The one base class of every attack, its typed inputs and outputs, and the registry.

Every attack subclasses :class:`Attack` and implements one verb,
``reconstruct(observation) -> Reconstruction``, as in breaching. An attack
declares its threat model and what it observes. Attacks that learn something
first (an inversion decoder, a GAN prior) do it in :meth:`Attack.prepare`
from the auxiliary data the threat model grants them.

Example:
    >>> import torch
    >>> class Blank(Attack):
    ...     name = "blank"
    ...     threat_model = "split_black_box"
    ...     observes = "activations"
    ...     def reconstruct(self, observation):
    ...         n = observation.batch_size
    ...         return Reconstruction(images=torch.zeros(n, *observation.image_shape),
    ...                               attack=self.name)
    >>> register_attack("blank", Blank)
    >>> attack = create_attack("blank", seed=0)
    >>> obs = Observation(kind="activations", activations=torch.zeros(2, 4), batch_size=2,
    ...                   image_shape=(1, 8, 8))
    >>> attack.reconstruct(obs).images.shape
    torch.Size([2, 1, 8, 8])
    >>> unregister_attack("blank")
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from shieldsplit._core.registry import Registry
from shieldsplit._core.validate import Configurable, check_seed
from shieldsplit.errors import ConfigError
from shieldsplit.wire import Observation, ObservationKind

ThreatModel = Literal[
    "split_black_box",  # holds the cut activations + auxiliary data; trains an inverse
    "split_white_box",  # also knows the client part's weights; optimises the input
    "federated",  # holds one client's gradient or weight update and the model
    "gan_prior",  # searches a generator's latent space trained on auxiliary data
    "adaptive",  # knows the defence and its configuration
]
#: Attacker positions, the same words as a defence's ``surfaces``.
Position = Literal["split", "federated"]

Budget = Literal["quick", "standard", "thorough"]


@dataclass(frozen=True)
class AttackContext:
    """What the threat model grants the attacker before the attack.

    Attributes:
        model: the attacked model as the attacker knows it (the client part for
            split learning, the whole model for federated learning), or None.
        auxiliary_images: images from the same distribution, disjoint from the
            victim's, in [0, 1], ``(N, C, H, W)``.
        auxiliary_labels: their labels ``(N,)``.
        num_classes: number of classes.
        image_shape: ``(C, H, W)`` of one image.
        defense: the deployed defence (for adaptive attacks), or None.
        budget: how hard to try.
        seed: seeds everything random in the attack.
    """

    image_shape: tuple[int, int, int]
    num_classes: int
    model: nn.Module | None = None
    auxiliary_images: Tensor | None = None
    auxiliary_labels: Tensor | None = None
    defense: nn.Module | None = None
    budget: Budget = "quick"
    seed: int = 0


@dataclass(frozen=True)
class Reconstruction:
    """What an attack rebuilt.

    Attributes:
        images: ``(B, C, H, W)`` reconstructions in [0, 1] (patient data: keep in memory
            unless the user asks to write them).
        attack: the attack's registered name.
        labels: inferred labels ``(B,)``, for attacks that infer them, else None.
        seconds: wall time of the reconstruction.
        meta: attack-specific details (iterations, restarts, final loss).
    """

    images: Tensor
    attack: str
    labels: Tensor | None = None
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


def fingerprint(*tensors: Tensor | nn.Module) -> str:
    """A short hash of tensors' values, or of a module's class and state (cache keys).

    Example:
        >>> fingerprint(torch.zeros(2)) == fingerprint(torch.zeros(2)) != fingerprint(torch.ones(2))
        True
    """
    h = hashlib.sha1()
    for t in tensors:
        if isinstance(t, nn.Module):
            h.update(type(t).__qualname__.encode())
            for name, v in t.state_dict().items():
                h.update(name.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class Attack(Configurable, abc.ABC):
    """Base class of every reconstruction attack.

    Args:
        seed: seeds the attack.
        progress: show progress bars on long work.
        **options: attack-specific options, validated by the subclass.

    Subclasses set the class attributes ``name``, ``threat_model`` and
    ``observes`` and implement :meth:`reconstruct`. What an attack declares is all
    the auditor needs to choose it (no name lists): it runs every registered attack
    whose :attr:`position` the audited model is deployed under and, for an attack with
    :attr:`adapts_to`, only against those defences.

    Attributes:
        name: the registered name.
        threat_model: what the attacker holds.
        observes: what it observes of a victim batch: ``activations`` (the tensor that
            crosses the cut, or the wire message), ``gradient`` (one batch-1 gradient per
            victim) or ``update`` (a FedAvg weight update of a local batch).
        adapts_to: defence names the attack is built against (it knows their
            configuration); empty for a generic attack.
        control_attack: the registered attack that stands for this one on a model
            without the defence it adapts to (its positive control), if any.
        quick_default: run by the ``quick`` budget's default list (False where a
            cheaper attack stands for it at that budget).
    """

    name: ClassVar[str] = ""
    threat_model: ClassVar[ThreatModel]
    observes: ClassVar[ObservationKind]
    adapts_to: ClassVar[tuple[str, ...]] = ()
    control_attack: ClassVar[str | None] = None
    quick_default: ClassVar[bool] = True
    #: the validated options (the ``Config`` of :class:`Configurable`, besides ``seed``
    #: and ``progress``); the constructor also exposes each field as an attribute
    config: BaseModel

    @classmethod
    def position(cls) -> Position:
        """Where the attacker sits: ``"split"`` (a split-learning server that sees the
        cut) or ``"federated"`` (a federated server that sees gradients or updates)."""
        return "split" if cls.observes == "activations" else "federated"

    def __init__(self, *, seed: int = 0, progress: bool = True, **options: Any) -> None:
        self.seed = check_seed(seed)
        self.progress = bool(progress)
        self.context: AttackContext | None = None
        self.config = self.configure(options)
        for option in type(self.config).model_fields:  # read-only views of the config
            setattr(self, option, getattr(self.config, option))

    def prepare(self, context: AttackContext) -> None:
        """Learn what the attack needs before it sees the victim (default: remember the context).

        Args:
            context: what the threat model grants the attacker.
        """
        self.context = context

    @abc.abstractmethod
    def reconstruct(self, observation: Observation) -> Reconstruction:
        """Rebuild the victim's images from what the attacker observed.

        Args:
            observation: the observation; its ``kind`` must be ``self.observes``.

        Returns:
            The reconstruction.
        """

    def generator(self) -> torch.Generator:
        """A fresh generator seeded with the attack's seed (for reproducible inits)."""
        return torch.Generator().manual_seed(self.seed)


_REGISTRY: Registry[type[Attack]] = Registry(
    "attack", unregister_hint="unregister_attack() the old one",
    lookup_hint="pick a registered attack or register yours with register_attack",
)


def register_attack(name: str, cls: type[Attack]) -> None:
    """Register ``cls`` under ``name``.

    Args:
        name: the public name (``"inverting-gradients"``).
        cls: an :class:`Attack` subclass.

    Raises:
        ConfigError: if ``cls`` is not an Attack subclass or the name is taken by another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, Attack)):
        raise ConfigError.build(
            what="cls", expected="a subclass of shieldsplit.attacks.Attack", received=cls,
            fix="subclass Attack and implement reconstruct()",
        )
    _REGISTRY.register(name, cls)


def unregister_attack(name: str) -> None:
    """Remove ``name`` from the registry (no error if absent).

    Args:
        name: a registered name.
    """
    _REGISTRY.unregister(name)


def available_attacks() -> list[str]:
    """Registered attack names, sorted.

    Returns:
        The names :func:`create_attack` accepts.
    """
    return _REGISTRY.names()


def attack_class(name: str) -> type[Attack]:
    """The registered class of ``name`` (to read its declarations without building it).

    Args:
        name: a registered name.

    Returns:
        The :class:`Attack` subclass.

    Raises:
        ConfigError: if the name is unknown; the message lists the valid names.
    """
    return _REGISTRY.get(name)


def create_attack(name: str, **options: Any) -> Attack:
    """Build a registered attack.

    Args:
        name: a registered name.
        **options: passed to the attack's constructor (``seed`` and attack options).

    Returns:
        A new attack instance.

    Raises:
        ConfigError: if the name is unknown; the message lists the valid names.
    """
    return _REGISTRY.get(name)(**options)


__all__ = [
    "Attack",
    "AttackContext",
    "Budget",
    "Observation",
    "ObservationKind",
    "Position",
    "Reconstruction",
    "ThreatModel",
    "attack_class",
    "available_attacks",
    "create_attack",
    "fingerprint",
    "register_attack",
    "unregister_attack",
]
