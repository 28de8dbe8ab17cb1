"""``compose``: one cut defence made of the steps of several registered cut defences.

A :class:`~shieldsplit.defenses.base.CutDefense` changes two things: the activations on
the wire (:meth:`~shieldsplit.defenses.base.CutDefense.transform`: Laplacian noise) and
the loss on the cut activations (:meth:`~shieldsplit.defenses.base.CutDefense.regularizer`:
NoPeek's distance correlation, BiDO's HSIC). :class:`Compose` builds each named part
through the registry and applies every part's transform in the order given and sums every
part's regulariser, so any pair (NoPeek with Laplace noise, BiDO with Laplace noise) is one
configuration, never a class written per pair.

Only a cut defence that keeps the plain split training is a part: one whose class leaves
every method of :data:`PROTOCOL` as :class:`~shieldsplit.defenses.base.CutDefense` defines
it (read from the class, no list of names). DP-SGD (its own optimiser and accountant),
JSMA-input (it perturbs the images), SplitShield, latent perturbation and a composition
itself are refused with a typed error.

The strength of a composition is the last part's declared knob: :func:`compose_knob`
reads it and :func:`compose_options` sets it (the class itself declares none, since its
strength depends on its parts).

Example:
    >>> import torch
    >>> from shieldsplit.defenses.base import create_defense
    >>> from shieldsplit.models import PGSLNet
    >>> net = PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
    >>> both = create_defense("compose", net, cut=2, seed=0, parts=[
    ...     {"name": "nopeek", "options": {"alpha": 1.0}},
    ...     {"name": "laplace", "options": {"scale": 0.5}}])
    >>> [type(step).__name__ for step in both.steps]
    ['NoPeek', 'LaplaceNoise']
    >>> both.options()["parts"][1]
    {'name': 'laplace', 'options': {'scale': 0.5}}
    >>> compose_knob(both.config.parts).option, composable_defenses()
    ('scale', ['bido', 'laplace', 'nopeek'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from torch import Tensor, nn

from shieldsplit._core.validate import build_config
from shieldsplit.defenses.base import (
    CutDefense,
    available_defenses,
    create_defense,
    defense_class,
    defense_config,
    defense_options,
    merge_options,
    register_defense,
    require_knob,
)
from shieldsplit.defenses.knob import Knob
from shieldsplit.errors import ConfigError

#: The methods of :class:`~shieldsplit.defenses.base.CutDefense` that make up how a cut
#: defence is built, trained, deployed and observed. A part must leave all of them as
#: CutDefense defines them: it may change only ``transform``, ``regularizer`` (and its
#: ``Config`` and ``__init__``).
PROTOCOL = ("adapt_model", "contract", "client", "forward", "training_loss", "fit",
            "train_protocol", "federated_model", "sent_model", "observe_federated",
            "client_only_state", "privacy")


def _refusal(name: str) -> str | None:
    """Why the registered defence ``name`` cannot be a part, or None if it can."""
    cls = defense_class(name)
    if cls is None or not issubclass(cls, CutDefense):
        return "is not a cut defence class (the model split at a cut and trained end to end)"
    if issubclass(cls, Compose):
        return "is a composition itself (list its parts instead)"
    changed = [m for m in PROTOCOL if getattr(cls, m) is not getattr(CutDefense, m)]
    if changed:
        return f"changes the split training or deployment ({', '.join(changed)})"
    if all(getattr(cls, m) is getattr(CutDefense, m) for m in ("transform", "regularizer")):
        return "changes neither the wire (transform) nor the loss (regularizer)"
    return None


def composable_defenses() -> list[str]:
    """The registered defences that can be parts of a :class:`Compose`, sorted: cut
    defences that change the wire or the loss and nothing else (read from their classes,
    so a plugin's cut defence is listed with no other edit).

    Example:
        >>> composable_defenses()
        ['bido', 'laplace', 'nopeek']
    """
    return [n for n in available_defenses() if _refusal(n) is None]


def check_composable(name: str) -> None:
    """Raise unless the registered defence ``name`` can be a part of a :class:`Compose`.

    Raises:
        ConfigError: an unknown name, or a defence that changes the training protocol,
            is not a cut defence, is a composition, or changes nothing.

    Example:
        >>> check_composable("laplace")
        >>> try:
        ...     check_composable("dpsgd")
        ... except ConfigError as exc:
        ...     print(exc.what)
        parts
    """
    reason = _refusal(name)
    if reason is not None:
        raise ConfigError.build(
            what="parts",
            expected=f"cut defences that change only the wire or the loss: one of "
                     f"{composable_defenses()}",
            received=f"{name!r}, which {reason}",
            fix=f"drop {name!r} from the parts (deploy it on its own)",
        )


class Part(BaseModel):
    """One part of a :class:`Compose`: a registered cut defence and its options.

    Attributes:
        name: a name from :func:`composable_defenses`.
        options: fields of that defence's ``Config``; validated by it and completed with
            its defaults (so a saved composition does not depend on later defaults).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _composable(cls, name: str) -> str:
        check_composable(name)
        return name

    @field_validator("options")
    @classmethod
    def _part_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if name is None:  # the name was refused: that error is the one reported
            return options
        try:
            config = build_config(defense_config(name), options,
                                  fix=f"see `shieldsplit options` for {name!r}")
        except ConfigError as exc:
            exc.what = f"{name}.{exc.what}"  # say which part the option belongs to
            raise
        return dict(config.model_dump(mode="json"))


def default_parts() -> list[Part]:
    """NoPeek then Laplace noise at their defaults: what ``create_defense("compose")``
    builds with no ``parts``."""
    return [Part(name="nopeek"), Part(name="laplace")]


class ComposeConfig(BaseModel):
    """Options of :class:`Compose`.

    Attributes:
        parts: two or more distinct :class:`Part` (dicts with ``name`` and ``options``
            are accepted); transforms apply in this order.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    parts: list[Part] = Field(default_factory=default_parts)

    @field_validator("parts")
    @classmethod
    def _two_distinct(cls, parts: list[Part]) -> list[Part]:
        names = [p.name for p in parts]
        if len(parts) < 2:
            raise ConfigError.build(
                what="parts", expected="at least 2 cut defences", received=names,
                fix="deploy a single defence on its own, or add another part")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError.build(
                what="parts", expected="each defence at most once", received=names,
                fix=f"keep one part for each of {repeated} (one set of options each)")
        return parts


class Compose(CutDefense):
    """A cut defence whose wire transform and loss are those of several cut defences.

    Each part is built through the registry around the same model, cut and seed; its
    copy of the network is dropped and the composition's own client and server parts
    are trained. :meth:`transform` applies the parts' transforms in order;
    :meth:`regularizer` sums the parts' regularisers, each on the cut activations before
    any transform (as a single cut defence gets them). The composition is deployed
    under the attack surfaces every part declares.

    Args:
        model: the classifier to defend; it is copied, never modified.
        cut: the number of compute blocks on the client, or a submodule name.
        seed: the seed of the composition and of every part.
        **options: :class:`ComposeConfig`'s ``parts``.

    Raises:
        ConfigError: fewer than 2 parts, a repeated part, a part that is not a plain cut
            defence (:func:`check_composable`) or a bad option of a part.
        InvalidCutError: if ``cut`` does not exist.
        UnsupportedModelError: if ``model`` is not a traceable classifier.

    Example:
        >>> import torch
        >>> from shieldsplit.models import PGSLNet
        >>> net = PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
        >>> both = Compose(net, cut=2, parts=[{"name": "nopeek"}, {"name": "laplace"}])
        >>> x = torch.rand(6, 1, 8, 8)
        >>> a = both.head(x)
        >>> bool(torch.equal(both.client(x).activations, a))  # Laplace noise on the wire
        False
        >>> reg = both.regularizer(x, a, torch.zeros(6, dtype=torch.long))
        >>> reg.item() > 0  # NoPeek's distance correlation
        True
    """

    name: ClassVar[str] = "compose"
    knob: ClassVar[Knob | None] = None  # the last part's: see compose_knob
    Config = ComposeConfig
    config: ComposeConfig

    def __init__(
        self, model: nn.Module, *, cut: int | str = 2, seed: int = 0, **options: Any
    ) -> None:
        super().__init__(model, cut=cut, seed=seed, **options)
        steps: list[CutDefense] = []
        for part in self.config.parts:
            step = create_defense(part.name, model, cut=self.cut, seed=self.seed,
                                  **defense_options(part.name, part.options))
            if not isinstance(step, CutDefense):  # a from_model factory of a cut class
                raise ConfigError.build(
                    what="parts", expected="a factory that builds a CutDefense",
                    received=f"{part.name!r} built a {type(step).__name__}",
                    fix=f"drop {part.name!r} from the parts")
            del step.head, step.tail  # the composition's own network is the one trained
            steps.append(step)
        # submodules: whatever state a part adds is trained, saved and moved with it
        self.parts = nn.ModuleList(steps)
        vars(self)["surfaces"] = frozenset.intersection(*(s.surfaces for s in steps))

    @property
    def steps(self) -> tuple[CutDefense, ...]:
        """The parts, built, in order (their networks dropped: only their
        ``transform`` and ``regularizer`` are used)."""
        return tuple(s for s in self.parts if isinstance(s, CutDefense))

    def transform(self, a: Tensor) -> Tensor:
        """Every part's transform of the cut activations, in the order of the parts."""
        for step in self.steps:
            a = step.transform(a)
        return a

    def regularizer(self, x: Tensor, a: Tensor, y: Tensor) -> Tensor | None:
        """The sum of the parts' regularisers on ``a`` (None if no part has one).

        Args:
            x: images ``(N, C, H, W)``.
            a: the client's cut activations for ``x`` (before any transform).
            y: labels.

        Returns:
            The summed term, differentiable in the client part's weights.
        """
        total: Tensor | None = None
        for step in self.steps:
            term = step.regularizer(x, a, y)
            if term is not None:
                total = term if total is None else total + term
        return total


PartsLike = Sequence[Part | Mapping[str, Any]]


def compose_knob(parts: PartsLike) -> Knob:
    """The strength of a composition: the knob its last part declares.

    Args:
        parts: the parts (``Part`` or ``{"name", "options"}`` dicts), validated as
            :class:`ComposeConfig` does.

    Returns:
        The last part's knob (its option names a field of that part's ``Config``).

    Raises:
        ConfigError: bad parts, or a last part with no declared strength.

    Example:
        >>> compose_knob([{"name": "laplace"}, {"name": "nopeek"}]).option
        'alpha'
    """
    config = build_config(ComposeConfig, {"parts": list(parts)})
    return require_knob(config.parts[-1].name)


def compose_options(parts: PartsLike, value: float) -> dict[str, Any]:
    """The options of ``create_defense("compose", ...)`` with the last part's knob set
    to ``value`` (the other parts and the last part's other options unchanged).

    Args:
        parts: the parts (``Part`` or ``{"name", "options"}`` dicts).
        value: the last part's strength, in its knob's units (:func:`compose_knob`).

    Returns:
        ``{"parts": [{"name": ..., "options": {...}}, ...]}``, validated and JSON-able.

    Raises:
        ConfigError: bad parts, no declared strength, or a value its Config refuses.

    Example:
        >>> options = compose_options([{"name": "nopeek", "options": {"alpha": 2.0}},
        ...                            {"name": "laplace"}], 0.25)
        >>> [part["options"] for part in options["parts"]]
        [{'alpha': 2.0}, {'scale': 0.25}]
    """
    config = build_config(ComposeConfig, {"parts": list(parts)})
    last = config.parts[-1]
    options = merge_options(last.options, require_knob(last.name).fields(value))
    parts_out = [*config.parts[:-1], {"name": last.name, "options": options}]
    return dict(build_config(ComposeConfig, {"parts": parts_out}).model_dump(mode="json"))


register_defense(Compose.name, Compose)

__all__ = ["PROTOCOL", "Compose", "ComposeConfig", "Part", "check_composable",
           "composable_defenses", "compose_knob", "compose_options", "default_parts"]
