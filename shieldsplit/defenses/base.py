"""One interface for every defence, so ``audit`` and ``compare`` treat them alike.

A :class:`Defense` is an ``nn.Module`` classifier that was cut in two: a client
part whose output crosses the network (:meth:`Defense.client` returns that
:class:`~shieldsplit.ClientMessage`, noise and all) and a server part. Each
defence declares the attack surfaces it is deployed under (``"split"``: an
eavesdropper on the wire; ``"federated"``: a server that sees weight updates of
the whole model) and trains itself with :meth:`Defense.fit`.

Defences are built by name through a registry, the way attacks are::

    defense = create_defense("laplace", model, cut=2, seed=0, scale=0.5)

:class:`CutDefense` is the common case: the model split at a cut and trained
end to end, with an optional transform of the wire (Laplacian noise) and an
optional regulariser on the cut activations (NoPeek, BiDO). ``"none"``
(:class:`NoDefense`) is the undefended reference that ``compare`` measures the
others against.

Example:
    >>> import torch
    >>> import shieldsplit as ss
    >>> from shieldsplit.defenses.base import available_defenses, create_defense
    >>> _ = torch.manual_seed(0)
    >>> net = ss.PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
    >>> plain = create_defense("none", net, cut=2, seed=0)
    >>> msg = plain.client(torch.rand(3, 1, 8, 8))
    >>> tuple(msg.activations.shape), plain.surfaces == frozenset({"split", "federated"})
    ((3, 8, 8, 8), True)
    >>> torch.testing.assert_close(plain.eval()(torch.ones(1, 1, 8, 8)),
    ...                            net.eval()(torch.ones(1, 1, 8, 8)), rtol=1e-3, atol=1e-3)
    >>> "none" in available_defenses()
    True
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import Tensor, nn

from shieldsplit._core.io import atomic_torch_save, load_checkpoint, restore_checkpoint
from shieldsplit._core.registry import Registry
from shieldsplit._core.validate import (
    Configurable,
    NoOptions,
    build_config,
    check_batch,
    check_loader,
    check_seed,
)
from shieldsplit.cutting import split_model
from shieldsplit.datacontract import as_loader, check_model
from shieldsplit.defenses.knob import Knob, declared_knob
from shieldsplit.errors import ConfigError, UnsupportedModelError
from shieldsplit.training import PlainHistory, eval_mode, fit_plain, restored_on_error
from shieldsplit.wire import ClientMessage

if TYPE_CHECKING:
    from shieldsplit.wire import Observation

Surface = Literal["split", "federated"]
CHECKPOINT_FORMAT = "shieldsplit.defenses.base/1"


class Defense(Configurable, nn.Module, abc.ABC):
    """Base of every defended classifier.

    Subclasses set :attr:`name` and :attr:`surfaces`, hold ``cut``,
    ``num_classes`` and ``client_part``, and implement :meth:`client`,
    :meth:`forward` and :meth:`fit`.

    Attributes:
        name: the registry name.
        surfaces: the threat models the defence is deployed under.
        strength: the option that sets the defence's strength (what ``compare``
            sweeps), or None: the option of :attr:`knob`.
        knob: the declared strength (:class:`~shieldsplit.defenses.knob.Knob`: the
            option, its range, scale and stronger direction) that ``harden``
            searches, or None for a defence with no strength.
        Config: the pydantic model (``extra="forbid"``) of the defence's own keyword
            options besides ``cut`` and ``seed``: the single source of their names,
            types, ranges and defaults. :meth:`configure` validates options with it,
            :meth:`options` (what :meth:`save` records) dumps it, and the CLI's
            ``--option NAME.FIELD=VALUE`` and ``shieldsplit options`` read it.
        config: the validated options of this instance.
    """

    name: ClassVar[str] = ""
    surfaces: ClassVar[frozenset[Surface]] = frozenset({"split", "federated"})
    knob: ClassVar[Knob | None] = None
    #: None: the constructor takes :attr:`Config`'s fields as keywords; else the one
    #: keyword that takes the whole config (SplitShield's ``config=``)
    config_option: ClassVar[str | None] = None
    config: BaseModel

    cut: int | str
    num_classes: int

    @property
    def strength(self) -> str | None:
        """The option that sets the defence's strength: :attr:`knob`'s, or None."""
        return None if self.knob is None else self.knob.option

    @property
    def client_part(self) -> nn.Module:
        """The client's network ``x -> activations`` before any wire transform (what a
        white-box attacker knows)."""
        module = self._modules.get("head")
        if not isinstance(module, nn.Module):
            raise NotImplementedError(f"{type(self).__name__} must define client_part")
        return module

    @abc.abstractmethod
    def client(self, x: Tensor, y: Tensor | None = None) -> ClientMessage:
        """What the client sends for ``x`` (labels ``y`` travel only during training).

        Args:
            x: images ``(N, C, H, W)``.
            y: labels, or None.

        Returns:
            The message an eavesdropper on the wire observes.
        """

    @abc.abstractmethod
    def fit(
        self,
        train_loader: Iterable[tuple[Tensor, Tensor]],
        *,
        epochs: int = 5,
        val_loader: Iterable[tuple[Tensor, Tensor]] | None = None,
        seed: int = 0,
        progress: bool = True,
        restore_best: bool = False,
    ) -> BaseModel:
        """Train the defended model in place; returns its typed history.

        ``train_loader`` and ``val_loader`` take labelled images in any form of
        docs/data.md.
        """

    def train_protocol(
        self,
        train_loader: Iterable[tuple[Tensor, Tensor]],
        *,
        epochs: int = 5,
        val_loader: Iterable[tuple[Tensor, Tensor]] | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> BaseModel:
        """The defence's whole training protocol (what ``compare`` runs): :meth:`fit`
        here; a defence with extra phases (latent perturbation's noise pre-training,
        Algorithm 1) overrides it.

        Args:
            train_loader: labelled images in any form of docs/data.md.
            epochs: training epochs (of each phase).
            val_loader: optional validation loader.
            seed: seeds everything random.
            progress: show progress bars.

        Returns:
            The history of the last phase.
        """
        return self.fit(train_loader, epochs=epochs, val_loader=val_loader, seed=seed,
                        progress=progress)

    def federated_model(self) -> nn.Module:
        """The module whose gradients and weight updates a federated server sees."""
        return self

    def sent_model(self, send: Callable[[nn.Module], nn.Module] | None = None) -> nn.Module:
        """An eval-mode copy of the model a federated server sends this client: the
        protocol's (:meth:`federated_model`), or what ``send`` makes of it (a malicious
        server's :meth:`~shieldsplit.attacks.base.Attack.modify`). The defence is not
        changed.

        Args:
            send: the server's change to the model it sends, or None (an honest server).

        Returns:
            The model the client trains on.
        """
        model = copy.deepcopy(self.federated_model()).eval()
        return model if send is None else send(model).eval()

    def observe_federated(
        self, x: Tensor, y: Tensor, *, kind: Literal["gradient", "update"],
        seed: int | None = None, send: Callable[[nn.Module], nn.Module] | None = None,
        **local: Any,
    ) -> Observation:
        """What a federated server receives when this client trains on ``(x, y)``.

        The default is the exact gradient (or FedAvg update) of :meth:`federated_model`
        in eval mode; a defence that changes what is sent (DP-SGD clips and noises it)
        overrides this, so the auditor attacks what the deployed client emits.

        Args:
            x: the client batch.
            y: its labels.
            kind: ``"gradient"`` (one step) or ``"update"`` (local SGD, see
                :func:`~shieldsplit.observe.observe_update`).
            seed: the local shuffling seed of an update.
            send: a malicious server's change to the model it sends (see
                :meth:`sent_model`); None for an honest server.
            **local: ``local_epochs``, ``local_batch_size``, ``lr`` of an update.

        Returns:
            The observation.
        """
        from shieldsplit.observe import observe_gradient, observe_update

        model = self.sent_model(send)
        if kind == "gradient":
            return observe_gradient(model, x, y)
        return observe_update(model, x, y, seed=seed, **local)

    @torch.no_grad()
    def predict_proba(self, x: Tensor) -> Tensor:
        """Class probabilities in eval mode (the module's mode is restored).

        Args:
            x: images ``(N, C, H, W)`` in ``[0, 1]`` (docs/data.md).

        Returns:
            ``(N, classes)`` probabilities.

        Raises:
            InputShapeError, NonFiniteInputError, ConfigError: images that break the data
                contract of docs/data.md.
        """
        check_batch(x, in_channels=getattr(self, "in_channels", None), unit_range=True)
        with eval_mode(self):
            return F.softmax(self(x), dim=-1)

    def undefended_twin(self) -> Defense:
        """The audit's positive control: the same architecture at the same cut, undefended.

        The twin starts from the weights this defence started from (the model it was
        given), untrained by it; the auditor trains it on the audit's data.

        Returns:
            A new, untrained :class:`NoDefense`.

        Raises:
            NotImplementedError: if the defence did not record the model it wraps (a
                custom defence: pass your trained undefended model as ``audit(control=)``).
        """
        template = self.template()
        if template is None:
            raise NotImplementedError(f"{type(self).__name__} does not record the model it wraps")
        cut = self.__dict__.get("_template_cut", self.cut)
        return create_defense("none", copy.deepcopy(template), cut=cut,
                              seed=int(getattr(self, "seed", 0)))

    def template(self) -> nn.Module | None:
        """The undefended model this defence wraps, as it was given (None if not recorded).

        Returns:
            The recorded copy (do not modify it), or None.
        """
        template = self.__dict__.get("_template")
        return template if isinstance(template, nn.Module) else None

    def record_template(self, model: nn.Module, cut: int | str | None = None) -> None:
        """Keep a copy of the undefended model this defence wraps (for :meth:`undefended_twin`).

        Args:
            model: the user's model as given (copied; not a submodule, so not saved).
            cut: its cut, if it differs from the defence's own.
        """
        self.__dict__["_template"] = copy.deepcopy(model).eval()
        if cut is not None:
            self.__dict__["_template_cut"] = cut

    def client_only_state(self) -> frozenset[str]:
        """State-dict keys that never leave the client in federated learning (none here).

        A federated client sends every other floating-point entry of its state dict to
        be averaged; these stay in the client's own state across rounds (DP-SGD's
        privacy accountant, say).

        Returns:
            The keys.
        """
        return frozenset()

    def privacy(self) -> dict[str, float]:
        """Formal guarantees, e.g. ``{"epsilon": ..., "delta": ...}`` for DP-SGD (else empty)."""
        return {}

    def options(self) -> dict[str, Any]:
        """The JSON-able constructor options besides ``cut`` and ``seed`` (what
        :meth:`save` records so that :meth:`load` can rebuild the defence): :attr:`config`
        dumped, or empty where a subclass sets none."""
        config = getattr(self, "config", None)
        return {} if config is None else dict(config.model_dump(mode="json"))

    def save(self, path: str | Path) -> None:
        """Write the defence (name, cut, seed, options, weights) to ``path`` atomically.

        Args:
            path: destination file.
        """
        atomic_torch_save(
            {"format": CHECKPOINT_FORMAT, "name": self.name, "cut": self.cut,
             "seed": int(getattr(self, "seed", 0)), "options": self.options(),
             "state_dict": self.state_dict()},
            path,
        )

    @classmethod
    def load(cls, path: str | Path, model: nn.Module) -> Defense:
        """Rebuild a saved defence around an instance of the same architecture.

        Args:
            path: a file written by :meth:`save` (read with ``weights_only=True``).
            model: an instance of the defended architecture (not modified).

        Returns:
            The restored defence.

        Raises:
            DataFileError: if the file is missing or not a defence checkpoint.
            UnsupportedModelError: ``model`` is not the saved architecture.
        """
        ck = load_checkpoint(path, fmt=CHECKPOINT_FORMAT, saver="Defense.save")
        return restore_checkpoint(
            lambda: create_defense(str(ck["name"]), model, cut=ck["cut"], seed=int(ck["seed"]),
                                   **dict(ck["options"])),
            ck["state_dict"], path=path, kind="defence checkpoint", model=model,
        )


# ----------------------------------------------------------------- registry
DefenseFactory = Callable[..., Defense]


def _populate() -> None:
    # ``import shieldsplit`` is lazy: on the registry's first lookup, import every module
    # of the defences package (each registers what it defines: a new defence is one file
    # plus its registration), then the installed plugins (entry points
    # "shieldsplit.defenses", see shieldsplit._core.plugins)
    from shieldsplit._core.plugins import import_package_modules, load_entry_points

    import_package_modules(__name__.rsplit(".", 1)[0])
    load_entry_points("shieldsplit.defenses", register_defense)


_REGISTRY: Registry[DefenseFactory] = Registry(
    "defense", unregister_hint="unregister_defense() the old one",
    lookup_hint="pick a registered defence or register yours with register_defense",
    populate=_populate,
)


def register_defense(name: str, factory: DefenseFactory) -> None:
    """Make a defence buildable by name.

    Args:
        name: the registry name.
        factory: ``factory(model, *, cut, seed, **options) -> Defense`` (a class or a
            ``from_model`` classmethod).

    Raises:
        ConfigError: if the name is empty or taken by another factory.
    """
    _REGISTRY.register(name, factory)


def unregister_defense(name: str) -> None:
    """Remove a defence from the registry (a no-op for an unknown name)."""
    _REGISTRY.unregister(name)


def available_defenses(*, surface: Surface | None = None) -> list[str]:
    """Registered defence names, sorted.

    Args:
        surface: only the defences that declare this attack surface in their
            :attr:`~Defense.surfaces` (``"federated"``: those with a federated form);
            None for all. Read from the declarations, so a defence registered later (a
            plugin) is listed with no other edit.

    Example:
        >>> "pgsl" in available_defenses(), "pgsl" in available_defenses(surface="federated")
        (True, False)
    """
    names = _REGISTRY.names()
    if surface is None:
        return names
    return [n for n in names if surface in _declared_surfaces(_REGISTRY.get(n))]


def defense_surfaces(name: str) -> frozenset[Surface]:
    """The attack surfaces a registered defence declares (its :attr:`~Defense.surfaces`),
    read from its factory without building it.

    Args:
        name: a name from :func:`available_defenses`.

    Returns:
        The surfaces; a factory that declares none (a plain function) gets
        :class:`Defense`'s default, both.

    Example:
        >>> sorted(defense_surfaces("pgsl")), sorted(defense_surfaces("laplace"))
        (['split'], ['federated', 'split'])
    """
    return _declared_surfaces(_REGISTRY.get(name))


def _declared_surfaces(factory: DefenseFactory) -> frozenset[Surface]:
    declared = getattr(factory, "surfaces", None)
    if declared is None:  # a bound ``from_model`` classmethod: its class declares them
        declared = getattr(getattr(factory, "__self__", None), "surfaces", None)
    return frozenset(declared) if declared is not None else Defense.surfaces


def defense_class(name: str) -> type[Defense] | None:
    """The :class:`Defense` subclass a registered defence's factory builds (the factory
    itself, or the class of a bound ``from_model``), read without building it; None for a
    plain function factory.

    Example:
        >>> defense_class("laplace").__name__, defense_class("pgsl").__name__
        ('LaplaceNoise', 'SplitShield')
    """
    factory = _REGISTRY.get(name)
    owner = factory if isinstance(factory, type) else getattr(factory, "__self__", None)
    return owner if isinstance(owner, type) and issubclass(owner, Defense) else None


def defense_knob(name: str) -> Knob | None:
    """The strength a registered defence declares (its :class:`~shieldsplit.defenses.knob.Knob`),
    read from its factory without building it, or None.

    Args:
        name: a name from :func:`available_defenses`.

    Raises:
        ConfigError: for an unknown name.

    Example:
        >>> defense_knob("laplace").option, defense_knob("none") is None
        ('scale', True)
    """
    return declared_knob(_REGISTRY.get(name))


def require_knob(name: str) -> Knob:
    """:func:`defense_knob`, or a typed error for a defence that declares no strength.

    Raises:
        ConfigError: the defence declares no knob.

    Example:
        >>> require_knob("nopeek").option
        'alpha'
    """
    knob = defense_knob(name)
    if knob is None:
        searchable = [n for n in available_defenses() if defense_knob(n) is not None]
        raise ConfigError.build(
            what="defenses",
            expected=f"a defence with a declared strength (a `knob`): one of {searchable}",
            received=f"{name!r}, which has no declared strength",
            fix="drop it from the search, or declare `knob = Knob(option=..., low=..., "
                "high=...)` on its class (shieldsplit.defenses.knob)",
        )
    return knob


def defense_config(name: str) -> type[BaseModel]:
    """The pydantic model of a registered defence's own options (its ``Config``).

    Args:
        name: a name from :func:`available_defenses`.

    Returns:
        The config class (:class:`NoOptions` for a factory that declares none).

    Example:
        >>> sorted(defense_config("laplace").model_fields)
        ['scale']
    """
    config = getattr(_REGISTRY.get(name), "Config", None)
    return config if isinstance(config, type) and issubclass(config, BaseModel) else NoOptions


def defense_options(name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword options of :func:`create_defense` for the given fields of the
    defence's ``Config``, validated first (the CLI's ``--option NAME.FIELD=VALUE``).

    Only the given fields are passed, so the others keep their defaults. A factory
    whose options travel as one config object (``config_option``: SplitShield's
    ``config=``) gets them under that keyword.

    Args:
        name: a registered defence.
        fields: ``field -> value`` (nested mappings for nested configs).

    Returns:
        The keyword options.

    Raises:
        ConfigError: an unknown field, or a value of the wrong type or out of range.

    Example:
        >>> defense_options("laplace", {"scale": 0.2})
        {'scale': 0.2}
        >>> defense_options("pgsl", {"recovery": {"mu": 0.3}})
        {'config': {'recovery': {'mu': 0.3}}}
    """
    config_cls = defense_config(name)
    build_config(config_cls, fields, fix=f"see `shieldsplit options` for {name!r}")
    keyword = getattr(_REGISTRY.get(name), "config_option", None)
    return {keyword: dict(fields)} if isinstance(keyword, str) else dict(fields)


def merge_options(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``extra``, nested mappings merged key by key (a strength
    value into a defence's other options, SplitShield's ``config=`` included).

    Example:
        >>> merge_options({"config": {"recovery": {"mu": 0.3}}},
        ...               {"config": {"perturb": {"pixel_budget": 0.1}}})
        {'config': {'recovery': {'mu': 0.3}, 'perturb': {'pixel_budget': 0.1}}}
    """
    out = dict(base)
    for key, value in extra.items():
        old = out.get(key)
        if isinstance(old, BaseModel):
            old = old.model_dump()
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = merge_options(old, value)
        else:
            out[key] = value
    return out


def create_defense(name: str, model: nn.Module, **options: Any) -> Defense:
    """Build a registered defence around ``model`` (which is copied, never modified).

    Args:
        name: a name from :func:`available_defenses`.
        model: the classifier to defend.
        **options: ``cut``, ``seed`` and the defence's own keyword options.

    Returns:
        The defence, untrained.

    Raises:
        ConfigError: for an unknown name (the message lists the valid ones) or an
            option the defence does not take.
    """
    factory = _REGISTRY.get(name)
    try:
        return factory(model, **options)
    except TypeError as exc:
        raise ConfigError.build(
            what=f"options of {name!r}", expected="the defence's keyword options",
            received=sorted(options), fix=f"check the signature ({exc})",
        ) from exc


# ------------------------------------------------------------ cut defences
class CutDefense(Defense):
    """A classifier split at ``cut`` and trained end to end (the model is deep-copied).

    Subclasses override :meth:`transform` (what happens to the activations on the
    wire) and :meth:`regularizer` (a loss term on the cut activations).

    Args:
        model: the classifier to defend; it is copied, never modified.
        cut: the number of compute blocks on the client, or a submodule name.
        seed: seeds the defence's own randomness (noise, layers it adds).
        **options: the fields of the subclass's :attr:`~Defense.Config`.

    Raises:
        ConfigError: an option the subclass's ``Config`` rejects (checked first).
        InvalidCutError: if ``cut`` does not exist (the message lists the valid ones).
        UnsupportedModelError: if ``model`` is not a traceable module.
    """

    def __init__(
        self, model: nn.Module, *, cut: int | str = 2, seed: int = 0, **options: Any
    ) -> None:
        config = self.configure(options)
        seed = check_seed(seed)  # before any work: fit and audit would refuse it later
        super().__init__()
        self.config = config
        network = self.adapt_model(check_model(model))
        self.record_template(network)  # the twin and reference models share its architecture
        parts = split_model(network, cut)
        self.cut = parts.cut
        self.seed = seed
        self.head = parts.head
        self.tail = parts.tail
        self.num_classes = self._probe_classes(model)
        first = next((m for m in parts.head.modules() if isinstance(m, nn.Conv2d)), None)
        self.in_channels: int | None = first.in_channels if first is not None else None

    def adapt_model(self, model: nn.Module) -> nn.Module:
        """The network this defence trains, a new copy of the user's model (never the
        model itself) made before it is split: a plain deep copy here; DP-SGD's copy swaps
        BatchNorm for GroupNorm. Its undefended twin has the same architecture.

        Args:
            model: the user's model (not modified).

        Returns:
            The network to split at ``cut``.
        """
        return copy.deepcopy(model)

    @staticmethod
    def _probe_classes(model: nn.Module) -> int:
        out = getattr(model, "num_classes", None)
        if isinstance(out, int):
            return out
        for m in reversed(list(model.modules())):
            if isinstance(m, nn.Linear):
                return int(m.out_features)
        raise UnsupportedModelError.build(
            what="model", expected="a classifier ending in nn.Linear or with .num_classes",
            received=type(model).__name__, fix="set model.num_classes",
        )

    def contract(self, data: Any, *, seed: int = 0, shuffle: bool = True,
                 what: str = "train_loader") -> Iterable[tuple[Tensor, Tensor]]:
        """Any form of docs/data.md as checked batches; this defence is probed on the first.

        Args:
            data: a DataLoader, a map-style Dataset, an ``(x, y)`` pair or an ImageDataset.
            seed: seeds the shuffling of the forms that are not loaders.
            shuffle: shuffle those (False for validation data).
            what: the name of the data in messages.

        Returns:
            A DataLoader (a given one keeps its sampler; its batches are checked).
        """
        return as_loader(data, seed=seed, shuffle=shuffle, model=self,
                         num_classes=self.num_classes, in_channels=self.in_channels, what=what)

    def transform(self, a: Tensor) -> Tensor:
        """The wire transform of the cut activations (identity here)."""
        return a

    def regularizer(self, x: Tensor, a: Tensor, y: Tensor) -> Tensor | None:
        """A loss term on the cut activations ``a`` of images ``x`` (None here)."""
        return None

    def client(self, x: Tensor, y: Tensor | None = None) -> ClientMessage:
        """Client part, then :meth:`transform`: what crosses the network.

        Raises:
            InputShapeError, NonFiniteInputError, LabelError: on a bad batch.
        """
        check_batch(x, y, num_classes=self.num_classes, in_channels=self.in_channels)
        return ClientMessage(activations=self.transform(self.head(x)), labels=y)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the defended model.

        Raises:
            InputShapeError, NonFiniteInputError: on a bad batch.
        """
        return self.tail(self.client(x).activations)

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-entropy plus :meth:`regularizer` (the objective :meth:`fit` minimises).

        Args:
            model: this defence (the signature of :data:`shieldsplit.training.LossFn`).
            x: images.
            y: labels.

        Returns:
            The loss and the logits.
        """
        check_batch(x, y, num_classes=self.num_classes, in_channels=self.in_channels)
        a = self.head(x)
        logits = self.tail(self.transform(a))
        loss = F.cross_entropy(logits, y)
        extra = self.regularizer(x, a, y)
        return (loss if extra is None else loss + extra), logits

    def fit(
        self,
        train_loader: Iterable[tuple[Tensor, Tensor]],
        *,
        epochs: int = 5,
        val_loader: Iterable[tuple[Tensor, Tensor]] | None = None,
        seed: int = 0,
        progress: bool = True,
        restore_best: bool = False,
    ) -> PlainHistory:
        """Train client and server end to end on :meth:`training_loss`.

        Args:
            train_loader: labelled images in any form of docs/data.md.
            epochs: passes over the data.
            val_loader: optional validation loader.
            seed: seeds dropout, noise and shuffling.
            progress: show a progress bar.
            restore_best: keep the weights of the best validation epoch.

        Returns:
            The per-epoch history.

        Raises:
            EmptyDataError: an empty loader.
            InputShapeError, NonFiniteInputError, LabelError: on a bad batch; the weights
                are restored to what they were before the call.
        """
        seed = check_seed(seed)
        check_loader(train_loader, "train_loader")
        train_loader = self.contract(train_loader, seed=seed)
        if val_loader is not None:
            val_loader = self.contract(val_loader, seed=seed, shuffle=False, what="val_loader")
        with restored_on_error(self):
            return fit_plain(self, train_loader, epochs=epochs, val_loader=val_loader,
                             seed=seed, progress=progress, restore_best=restore_best,
                             loss_fn=self.training_loss)


class NoDefense(CutDefense):
    """The undefended model, split at ``cut``: the reference every defence is compared to.

    Args:
        model: the classifier; it is copied, never modified.
        cut: where the split-learning attacks observe it.
        seed: unused randomness seed (kept for a uniform signature).
    """

    name: ClassVar[str] = "none"


register_defense(NoDefense.name, NoDefense)

__all__ = [
    "CutDefense",
    "Defense",
    "NoDefense",
    "NoOptions",
    "Surface",
    "available_defenses",
    "create_defense",
    "defense_class",
    "defense_config",
    "defense_knob",
    "defense_options",
    "defense_surfaces",
    "merge_options",
    "register_defense",
    "require_knob",
    "unregister_defense",
]
