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
from typing import Any, ClassVar, Literal, get_args, overload

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from shieldsplit._core.registry import Registry
from shieldsplit._core.validate import Configurable, check_seed
from shieldsplit.errors import ConfigError
from shieldsplit.settings import Budget
from shieldsplit.wire import Observation, ObservationKind

ThreatModel = Literal[
    "split_black_box",  # holds the cut activations + auxiliary data; trains an inverse
    "split_white_box",  # also knows the client part's weights; optimises the input
    "federated",  # holds one client's gradient or weight update and the model
    "gan_prior",  # searches a generator's latent space trained on auxiliary data
    "adaptive",  # knows the defence and its configuration
    "malicious_federated",  # a federated server that modifies the model it sends
    "malicious_split",  # a split server that steers the client's training
    "black_box_query",  # queries the deployed model's class scores
    "white_box_model",  # holds the deployed model and its gradients (evasion)
]
#: Attacker positions: the same words as a defence's ``surfaces``, ``"query"`` for an
#: outsider with black-box access to the deployed model's scores, and ``"model"`` for
#: one who holds the deployed model itself (white box: evasion).
Position = Literal["split", "federated", "query", "model"]
#: The attack families, one verb each.
Family = Literal["reconstruction", "membership", "evasion", "label_inference"]
#: What an attack observes: a reconstruction's :data:`ObservationKind`, or the deployed
#: model's class scores (membership), or the model itself (evasion).
Observes = Literal["activations", "gradient", "update", "scores", "model"]
#: Whether the server only watches the protocol or changes what it sends.
Server = Literal["honest", "malicious"]
#: What else an attacker may be granted, beyond what it observes.
Assumption = Literal[
    "auxiliary_data",  # images from the victims' distribution, disjoint from theirs
    "client_weights",  # the client part's weights (split white box)
    "batchnorm_statistics",  # the client's BatchNorm running statistics
    "local_hyperparameters",  # the client's local epochs, batch size and learning rate
    "labels",  # the victims' labels
    "defense_config",  # the deployed defence and its configuration
]
#: Each assumption in words, as the report names it.
#: Pixels a channel (height x width) above which an image is *large* for the ``quick``
#: budget (64x64; MedMNIST up-sampled to 224 px has 50176): see ``Attack.quick_max_pixels``.
LARGE_IMAGE_PIXELS = 64 * 64

ASSUMPTION_WORDS: dict[str, str] = {
    "auxiliary_data": "auxiliary data", "client_weights": "the client's weights",
    "batchnorm_statistics": "BatchNorm statistics", "labels": "the victims' labels",
    "local_hyperparameters": "the local training hyperparameters",
    "defense_config": "the defence and its configuration",
}



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


class AttackDeclaration(BaseModel):
    """What an attack declares (:meth:`AttackBase.declaration`), as one record.

    Attributes:
        name: the registered name.
        family: which verb it implements.
        position: where the attacker sits.
        threat_model: what the attacker holds.
        observes: what it observes of a victim.
        server: honest or malicious.
        assumes: what else it is granted.
        adapts_to: the defences it is built against.
        options: the names of its ``Config`` fields.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    family: Family
    position: Position
    threat_model: str
    observes: str
    server: Server
    assumes: list[str]
    adapts_to: list[str]
    options: list[str]


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


class AttackBase(Configurable, abc.ABC):
    """The one base of every attack, whatever its family.

    Four families share it, one verb each: reconstruction (:class:`Attack`,
    ``reconstruct``), membership inference
    (:class:`~shieldsplit.attacks.membership.MembershipAttack`, ``score``), evasion
    (:class:`EvasionAttack`, ``perturb``) and label inference
    (:class:`LabelInferenceAttack`, ``infer``). They share one registry
    (:func:`register_attack`, :func:`create_attack`, :func:`available_attacks` with a
    ``family`` filter), one configuration mechanism (a pydantic ``Config`` with
    ``extra="forbid"``, validated in the constructor and exposed read-only as attributes)
    and one declaration of the threat model (:meth:`declaration`), which is all that the
    auditor, ``compare``, the Flower live audit and ``shieldsplit options`` read.

    Args:
        seed: seeds the attack.
        progress: show progress bars on long work.
        **options: the fields of the attack's ``Config``.

    Attributes:
        name: the registered name.
        family: which verb the attack implements.
        threat_model: what the attacker holds.
        observes: what it observes of a victim.
        server: ``"honest"`` (follows the protocol, only watches) or ``"malicious"``
            (changes what it sends to the client, e.g. the model).
        assumes: what else the attacker is granted (see :data:`Assumption`).
        adapts_to: defence names the attack is built against (it knows their
            configuration); empty for a generic attack.
    """

    name: ClassVar[str] = ""
    family: ClassVar[Family]
    threat_model: ClassVar[ThreatModel]
    observes: ClassVar[Observes]
    server: ClassVar[Server] = "honest"
    assumes: ClassVar[frozenset[Assumption]] = frozenset()
    adapts_to: ClassVar[tuple[str, ...]] = ()
    #: the validated options (the ``Config`` of :class:`Configurable`, besides ``seed``
    #: and ``progress``); the constructor also exposes each field as an attribute
    config: BaseModel

    def __init__(self, *, seed: int = 0, progress: bool = True, **options: Any) -> None:
        self.seed = check_seed(seed)
        self.progress = bool(progress)
        self.config = self.configure(options)
        for option in type(self.config).model_fields:  # read-only views of the config
            setattr(self, option, getattr(self.config, option))

    @classmethod
    def position(cls) -> Position:
        """Where the attacker sits: ``"split"`` (a split-learning server that sees the
        cut), ``"federated"`` (a federated server that sees gradients or updates),
        ``"query"`` (an outsider that queries the deployed model) or ``"model"`` (one who
        holds the deployed model)."""
        if cls.observes == "activations":
            return "split"
        if cls.observes == "model":
            return "model"
        return "federated" if cls.observes in ("gradient", "update") else "query"

    @classmethod
    def declaration(cls) -> AttackDeclaration:
        """What the attack declares, as one typed record (what orchestrators read).

        Example:
            >>> from shieldsplit.attacks import attack_class
            >>> d = attack_class("inverting-gradients").declaration()
            >>> d.family, d.position, d.server
            ('reconstruction', 'federated', 'honest')
        """
        return AttackDeclaration(
            name=cls.name, family=cls.family, position=cls.position(),
            threat_model=cls.threat_model, observes=cls.observes, server=cls.server,
            assumes=sorted(cls.assumes), adapts_to=list(cls.adapts_to),
            options=sorted(cls.Config.model_fields))

    @classmethod
    def threat_words(cls) -> str:
        """The threat model in words, as verdicts name it: ``"federated server, honest"``.

        Example:
            >>> from shieldsplit.attacks import attack_class
            >>> attack_class("split-black-box").threat_words()
            'split-learning server, honest (auxiliary data)'
        """
        where = {"split": "split-learning server", "federated": "federated server",
                 "query": "outsider querying the model",
                 "model": "holder of the deployed model"}[cls.position()]
        words = f"{where}, {cls.server}"
        if cls.server == "malicious":
            words += (" (steers the client's training)" if cls.position() == "split"
                      else " (modifies the model it sends)")
        if cls.assumes:
            words += f" ({', '.join(ASSUMPTION_WORDS[a] for a in sorted(cls.assumes))})"
        return words

    def generator(self) -> torch.Generator:
        """A fresh generator seeded with the attack's seed (for reproducible inits)."""
        return torch.Generator().manual_seed(self.seed)


class Attack(AttackBase):
    """Base class of every reconstruction attack: one verb, :meth:`reconstruct`.

    Args:
        seed: seeds the attack.
        progress: show progress bars on long work.
        **options: attack-specific options, validated by the subclass's ``Config``.

    Subclasses set the class attributes ``name``, ``threat_model`` and
    ``observes`` and implement :meth:`reconstruct`. What an attack declares is all
    the auditor needs to choose it (no name lists): it runs every registered attack
    whose :attr:`position` the audited model is deployed under and, for an attack with
    :attr:`adapts_to`, only against those defences.

    Attributes:
        observes: what it observes of a victim batch: ``activations`` (the tensor that
            crosses the cut, or the wire message), ``gradient`` (one batch-1 gradient per
            victim) or ``update`` (a FedAvg weight update of a local batch).
        control_attack: the registered attack that stands for this one on a model
            without the defence it adapts to (its positive control), if any.
        quick_default: run by the ``quick`` budget's default list (False where a
            cheaper attack stands for it at that budget).
        quick_max_pixels: the largest image (pixels a channel) the ``quick`` budget's
            default list runs it on; None: any size. The optimisation and GAN attacks
            declare :data:`LARGE_IMAGE_PIXELS`: at 224 px their quick run would take hours.
    """

    family: ClassVar[Family] = "reconstruction"
    observes: ClassVar[ObservationKind]
    control_attack: ClassVar[str | None] = None
    quick_default: ClassVar[bool] = True
    quick_max_pixels: ClassVar[int | None] = None

    def __init__(self, *, seed: int = 0, progress: bool = True, **options: Any) -> None:
        super().__init__(seed=seed, progress=progress, **options)
        self.context: AttackContext | None = None

    def modify(self, model: nn.Module, images: Tensor | None = None) -> nn.Module:
        """The model the client observes with, under this attacker's server.

        An honest server follows the protocol (the default returns ``model`` itself). A
        malicious attack (``server = "malicious"``) returns a changed copy: a federated
        server sends a modified model, whose gradient or update is then observed; a split
        server steers the client's training on its private ``images`` (the client's own
        copy reads them, the server never does), whose activations are then observed.
        The user's model is never changed.

        Args:
            model: the model (federated) or the client part (split) the protocol has.
            images: the client's private training images, for a server that steers the
                client's training; None otherwise.

        Returns:
            What the client observes with.
        """
        return model

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


@dataclass(frozen=True)
class LabelInference:
    """What a label-inference attack inferred of a victim batch.

    Attributes:
        counts: ``(classes,)`` how many images of each class the batch held.
        attack: the attack's registered name.
        labels: ``(B,)`` per-image labels, for attacks that infer them, else None.
        meta: attack-specific details.
    """

    counts: Tensor
    attack: str
    labels: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class LabelInferenceAttack(AttackBase):
    """Base of every label-inference attack: one verb, :meth:`infer`.

    The attacker (a federated server) reads which classes a client's batch held from its
    gradient or weight update. :meth:`prepare` receives the same :class:`AttackContext`
    as a reconstruction attack.
    """

    family: ClassVar[Family] = "label_inference"
    observes: ClassVar[ObservationKind]

    def __init__(self, *, seed: int = 0, progress: bool = True, **options: Any) -> None:
        super().__init__(seed=seed, progress=progress, **options)
        self.context: AttackContext | None = None

    def prepare(self, context: AttackContext) -> None:
        """Remember what the threat model grants (default).

        Args:
            context: what the threat model grants the attacker.
        """
        self.context = context

    @abc.abstractmethod
    def infer(self, observation: Observation) -> LabelInference:
        """Infer the victim batch's labels from what the attacker observed.

        Args:
            observation: the observation; its ``kind`` must be ``self.observes``.

        Returns:
            The inferred label counts (and labels, where the attack orders them).
        """


def _populate() -> None:
    # the built-in attacks (every module of the attack packages registers what it
    # defines: a new attack is one file), then the installed plugins
    from shieldsplit._core.plugins import import_package_modules, load_entry_points

    for package in BUILTIN_PACKAGES:
        import_package_modules(package)
    load_entry_points("shieldsplit.attacks", register_attack)


#: The packages whose modules hold the built-in attacks (walked on first lookup).
BUILTIN_PACKAGES = ("shieldsplit.attacks", "shieldsplit.evasion")

_REGISTRY: Registry[type[AttackBase]] = Registry(
    "attack", unregister_hint="unregister_attack() the old one",
    lookup_hint="pick a registered attack or register yours with register_attack",
    populate=_populate,
)


def register_attack(name: str, cls: type[AttackBase]) -> None:
    """Register ``cls`` under ``name``: any family (reconstruction, membership, evasion,
    label inference) goes into the one registry.

    Args:
        name: the public name (``"inverting-gradients"``).
        cls: an :class:`AttackBase` subclass (usually of a family base such as
            :class:`Attack`).

    Raises:
        ConfigError: if ``cls`` is not an attack class or the name is taken by another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, AttackBase)
            and getattr(cls, "family", None) in get_args(Family)):
        raise ConfigError.build(
            what="cls", expected="a subclass of an attack family base (shieldsplit.attacks."
            "Attack, MembershipAttack, EvasionAttack or LabelInferenceAttack)", received=cls,
            fix="subclass a family base and implement its verb (e.g. Attack.reconstruct)",
        )
    _REGISTRY.register(name, cls)


def unregister_attack(name: str) -> None:
    """Remove ``name`` from the registry (no error if absent).

    Args:
        name: a registered name.
    """
    _REGISTRY.unregister(name)


def available_attacks(family: Family | None = None) -> list[str]:
    """Registered attack names, sorted: of one family, or of all.

    Args:
        family: ``"reconstruction"``, ``"membership"``, ``"evasion"`` or
            ``"label_inference"``; None for every family.

    Returns:
        The names :func:`create_attack` accepts.

    Raises:
        ConfigError: an unknown family.

    Example:
        >>> available_attacks("membership")
        ['lira', 'loss-threshold', 'rmia']
    """
    if family is not None and family not in get_args(Family):
        raise ConfigError.build(what="family", expected=f"one of {list(get_args(Family))}",
                                received=repr(family), fix="pass a family name or None")
    return [n for n in _REGISTRY.names() if family is None or _REGISTRY.get(n).family == family]


@overload
def attack_class(name: str, family: Literal["reconstruction"]) -> type[Attack]: ...


@overload
def attack_class(name: str, family: Family | None = None) -> type[AttackBase]: ...


def attack_class(name: str, family: Family | None = None) -> type[AttackBase]:
    """The registered class of ``name`` (to read its declarations without building it).

    Args:
        name: a registered name.
        family: if given, the family the attack must belong to.

    Returns:
        The attack class.

    Raises:
        ConfigError: if the name is unknown or of another family; the message lists the
            valid names.
    """
    cls = _REGISTRY.get(name)
    if family is not None and cls.family != family:
        raise ConfigError.build(
            what=f"{family.replace('_', ' ')} attack",
            expected=f"one of {available_attacks(family)}",
            received=f"{name!r} (a {cls.family.replace('_', ' ')} attack)",
            fix=f"pick a {family.replace('_', ' ')} attack",
        )
    return cls


def create_attack(name: str, *, family: Family | None = None, **options: Any) -> Any:
    """Build a registered attack.

    Args:
        name: a registered name.
        family: if given, the family the attack must belong to.
        **options: passed to the attack's constructor (``seed`` and attack options).

    Returns:
        A new attack instance.

    Raises:
        ConfigError: if the name is unknown (the message lists the valid names), of
            another family, or an option is invalid.
    """
    return attack_class(name, family)(**options)


__all__ = [
    "ASSUMPTION_WORDS",
    "BUILTIN_PACKAGES",
    "LARGE_IMAGE_PIXELS",
    "Assumption",
    "Attack",
    "AttackBase",
    "AttackContext",
    "AttackDeclaration",
    "Budget",
    "Family",
    "LabelInference",
    "LabelInferenceAttack",
    "Observation",
    "ObservationKind",
    "Observes",
    "Position",
    "Reconstruction",
    "Server",
    "ThreatModel",
    "attack_class",
    "available_attacks",
    "create_attack",
    "fingerprint",
    "register_attack",
    "unregister_attack",
]
