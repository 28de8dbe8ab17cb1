"""The machinery every gradient-inversion attack shares: :class:`GradientAttack`.

The attacker holds the global model and what one client sent for one batch: the
gradient of the batch's mean cross-entropy loss (FedSGD, observation kind
``"gradient"``), or the weight update after several local SGD steps (FedAvg, kind
``"update"``). A gradient attack optimises candidate images until the gradient (or
the simulated update) they produce matches the observed one. This module holds what
the attacks share: their options (:class:`GradientAttackConfig`) and budgets, the
validation of observations, the labels (granted, inferred from the last layer with
:func:`~shieldsplit.functional.labels.infer_labels_idlg`, or learnt), and the batched
matching objective. The attacks are one module each: :mod:`~shieldsplit.attacks.dlg`,
:mod:`~shieldsplit.attacks.idlg`, :mod:`~shieldsplit.attacks.inverting_gradients` and
:mod:`~shieldsplit.attacks.inverting_gradients_fedavg`; the feature paths of the last
three are :class:`~shieldsplit.attacks.gradient_features.FeatureAttack`.

A subclass sets ``name``, :attr:`GradientAttack.budgets` and its ``Config``, and
implements ``_optimise`` (the optimiser over the images); it may override
``_label_source``, ``_matched_names`` and ``_initial``.

Batching. The independent problems -- restarts, and the images of several
observations passed to :meth:`~GradientAttack.reconstruct_many` (a batch-1 audit of
many images) -- are optimised together as one tensor ``(N, R, B, C, H, W)``: the
matching loss of each problem is computed with ``torch.func.grad`` over
``functional_call`` and mapped over problems with two nested ``torch.func.vmap``
(observations x restarts), so each restart's loss depends only on its own slice. Adam
works elementwise, so the restarts of Inverting Gradients do not interact (batched
kernels only round differently). The weights are passed to the mapped function as a
free ``expand`` per problem, so vmap runs each layer as one grouped kernel; on 2 CPU
cores this made 8 MNIST images x 4 restarts about 3-5x cheaper per image than a
plain-autograd loop (``benchmarks/attack_batching.py``). On a model with more
trainable parameters than :attr:`GradientAttack.vmap_parameters` the grouped kernels
lose: the problems are then mapped by a loop of the same un-vmapped function
(``_map``). Problems are batched ``max_parallel`` at a time to bound memory on large
models. DLG/iDLG's L-BFGS treats
the sum of the independent losses as one problem (shared line search and curvature
history): each problem still has its own minimiser, but its path depends on the
others.

Cancelling. Long attacks show a progress bar (``progress=True``, when stderr is a
terminal) and stop at the next iteration on Ctrl-C (:meth:`GradientAttack._iterate`):
the attack logs where it stopped and re-raises ``KeyboardInterrupt``; no partial
result is returned (``meta['incomplete']`` is never set) and the model is untouched.

Example:
    >>> import torch
    >>> from shieldsplit.attacks import AttackContext, create_attack
    >>> from shieldsplit.observe import observe_gradient
    >>> from shieldsplit.models import SmallConvNet
    >>> torch.manual_seed(0) and None
    >>> net = SmallConvNet(num_classes=4, image_size=8)
    >>> attack = create_attack("dlg", seed=0, iterations=10, progress=False)
    >>> isinstance(attack, GradientAttack), attack.schedule()
    (True, (10, 1))
    >>> attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=4, model=net))
    >>> obs = [observe_gradient(net, torch.rand(1, 1, 8, 8), torch.tensor([c])) for c in (1, 3)]
    >>> [r.images.shape for r in attack.reconstruct_many(obs)]
    [torch.Size([1, 1, 8, 8]), torch.Size([1, 1, 8, 8])]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.func import functional_call, vmap

from shieldsplit._core.progress import progress_bar
from shieldsplit.attacks.base import (
    Attack,
    Budget,
    Observation,
    ObservationKind,
    Reconstruction,
)
from shieldsplit.errors import (
    ConfigError,
    InputShapeError,
    LabelError,
    NonFiniteInputError,
    StateError,
    UnsupportedModelError,
)
from shieldsplit.functional.image import total_variation
from shieldsplit.functional.labels import infer_labels_idlg
from shieldsplit.models import last_linear_name
from shieldsplit.observe import (
    fedavg_update,
    frozen_state,
    functional_copy,
    loss_gradients,
    minibatch_schedule,
    trainable_parameters,
)

logger = logging.getLogger(__name__)


def _flat(tensors: dict[str, Tensor], names: list[str]) -> Tensor:
    return torch.cat([tensors[n].flatten() for n in names])


def _stack(items: list[Any]) -> Any:
    """Stack a list of equally structured outputs (tensors, tuples, lists, dicts)."""
    first = items[0]
    if isinstance(first, Tensor):
        return torch.stack(items)
    if isinstance(first, dict):
        return {k: _stack([it[k] for it in items]) for k in first}
    return type(first)(_stack(list(parts)) for parts in zip(*items, strict=True))


def _index(tree: Any, index: tuple[int, ...]) -> Any:
    """``tree`` with every tensor indexed by ``index``."""
    if isinstance(tree, Tensor):
        return tree[index]
    if isinstance(tree, dict):
        return {k: _index(v, index) for k, v in tree.items()}
    return type(tree)(_index(v, index) for v in tree)


def _looped(fn: Callable[..., Any], per_restart: tuple[bool, ...]) -> Callable[..., Any]:
    """The loop equivalent of ``GradientAttack._map``'s two nested vmaps: every argument
    has a leading observation dimension, the flagged ones a restart dimension after it."""

    def mapped(*args: Any) -> Any:
        def leading(tree: Any, dim: int) -> int:
            while not isinstance(tree, Tensor):
                tree = next(iter(tree.values())) if isinstance(tree, dict) else tree[0]
            return int(tree.shape[dim])

        n = leading(args[0], 0)
        r = next(leading(a, 1) for a, flag in zip(args, per_restart, strict=True) if flag)
        return _stack([
            _stack([
                fn(*(_index(a, (i, j) if flag else (i,))
                     for a, flag in zip(args, per_restart, strict=True)))
                for j in range(r)
            ])
            for i in range(n)
        ])

    return mapped


class GradientAttackConfig(BaseModel):
    """Options every gradient attack shares (see
    :class:`~shieldsplit.attacks.inverting_gradients.InvertingGradients`' Args).

    Attributes:
        budget: ``"quick"``, ``"standard"`` or ``"thorough"``; None: the context's.
        iterations: overrides the budget's iterations.
        restarts: overrides the budget's restarts.
        max_parallel: at most this many problems (observations x restarts) in one
            batched optimisation; None: the attack's own limit.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    budget: Budget | None = None
    iterations: int | None = Field(default=None, ge=1)
    restarts: int | None = Field(default=None, ge=1)
    max_parallel: int | None = Field(default=None, ge=1)



class _Interrupted:
    """Log where a Ctrl-C stopped an attack, then let KeyboardInterrupt propagate."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.iteration = 0

    def __enter__(self) -> _Interrupted:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is KeyboardInterrupt:
            logger.warning(
                "%s interrupted at iteration %d; no reconstruction returned", self.name,
                self.iteration,
            )



class GradientAttack(Attack):
    """Base of the gradient-inversion attacks: validation, labels, the batched matching
    objective and the budgets (see the module notes).

    Subclasses set ``name``, :attr:`budgets` and ``Config`` (a subclass of
    :class:`GradientAttackConfig`) and implement ``_optimise(model, params, frozen,
    observations, labels, targets, iterations, restarts) -> (images, losses, extra)``:
    images ``(N, R, B, C, H, W)``, matching losses ``(N, R)`` and per-observation
    ``meta`` entries (``extra["labels"]``, when the attack learnt them, replaces the
    labels). They may override ``_label_source`` (``"given"``, ``"infer"`` or
    ``"learn"``), ``_matched_names`` and ``_initial``, and build their loss with
    ``_objective`` and ``_map`` and their loop with ``_iterate``.
    """

    threat_model = "federated"
    observes: ClassVar[ObservationKind] = "gradient"
    #: observation kinds the attack accepts
    accepts: ClassVar[tuple[ObservationKind, ...]] = ("gradient",)
    #: ``budget -> (iterations, restarts)``
    budgets: ClassVar[dict[str, tuple[int, int]]] = {}
    #: a model with more trainable parameters than this whose first ``nn.Linear`` is
    #: narrower than the image is attacked through that layer's features (see
    #: ``InvertingGradients``' ``features``; above the quick budget a batch-1 gradient's
    #: feature image then seeds gradient matching, ``FeatureAttack._refine``) instead of
    #: by matching every parameter's gradient: a matching iteration differentiates every
    #: parameter twice
    #: (torchvision's ResNet-18, 11M parameters: 0.3 s per image per iteration on one CPU
    #: thread, so 16 minutes for 32 victims at 100 iterations), a feature iteration is
    #: one forward and backward pass (0.005 s per image in a batch of 32)
    quick_parameters: ClassVar[int] = 2_000_000
    #: above this many trainable parameters the problems are mapped by a loop instead of
    #: ``vmap`` (see ``_map``): with weights that large each problem's kernels are big
    #: enough already, and vmap's grouped kernels cost more than they save. Measured on
    #: one loaded CPU thread, batch 8 x 4 restarts of Inverting Gradients' matching step,
    #: seconds per step vmapped / looped: torchvision ResNet-18 (11.2M) 3.9 / 1.7,
    #: the PGSL paper's network (6.6M) 2.6 / 1.9, SmallConvNet (8.7k) 0.015 / 0.031
    vmap_parameters: ClassVar[int] = 2_000_000

    Config = GradientAttackConfig
    config: GradientAttackConfig
    budget: Budget | None
    iterations: int | None
    restarts: int | None
    max_parallel: int | None

    # -- options ---------------------------------------------------------------------------

    def _effective_budget(self) -> str:
        if self.budget is not None:
            return self.budget
        return self.context.budget if self.context is not None else "quick"

    def schedule(self) -> tuple[int, int]:
        """The ``(iterations, restarts)`` this attack will run.

        Explicit ``iterations``/``restarts`` options win; otherwise the ``budget``
        option, else the context's budget, picks them from :attr:`budgets`.

        Returns:
            ``(iterations, restarts)``.
        """
        its, rs = self.budgets[self._effective_budget()]
        return (self.iterations or its, self.restarts or rs)

    def _parameter_count(self) -> int:
        model = None if self.context is None else self.context.model
        if model is None:
            return 0
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    def oversized(self) -> bool:
        """Whether the quick budget's size rule applies (see :attr:`quick_parameters`):
        the budget is ``quick`` and the attacked model has more trainable parameters.

        Returns:
            True when a narrow classifier layer's features stand in for its gradient.
        """
        return (self._effective_budget() == "quick"
                and self._parameter_count() > self.quick_parameters)

    # -- validation ------------------------------------------------------------------------

    def _model(self) -> nn.Module:
        if self.context is None or self.context.model is None:
            raise StateError.build(
                what="attack", expected="prepare(AttackContext(model=...)) before reconstruct()",
                received="no model" if self.context is not None else "an unprepared attack",
                fix="call attack.prepare(context) with the attacked model first",
            )
        return self.context.model

    def _observed(self, obs: Observation) -> dict[str, Tensor]:
        tensors = obs.gradients if obs.kind == "gradient" else obs.update
        if tensors is None:
            field = "gradients" if obs.kind == "gradient" else "update"
            raise ConfigError.build(
                what=f"observation.{field}", expected="a dict name -> tensor", received=None,
                fix=f"fill Observation.{field} (see shieldsplit.observe)",
            )
        return tensors

    def _validate(self, observations: Sequence[Observation], params: dict[str, Tensor]) -> None:
        if isinstance(observations, Observation) or len(observations) == 0:
            raise ConfigError.build(
                what="observations", expected="a non-empty sequence of Observation",
                received=type(observations).__name__, fix="pass [observation, ...]",
            )
        first = observations[0]
        for obs in observations:
            if not isinstance(obs, Observation):
                raise ConfigError.build(
                    what="observation", expected="an Observation", received=type(obs).__name__,
                    fix="build it with shieldsplit.observe",
                )
            if obs.kind not in self.accepts:
                raise ConfigError.build(
                    what="observation.kind", expected=f"one of {list(self.accepts)}",
                    received=repr(obs.kind),
                    fix=f"use an attack that observes {obs.kind!r}, or observe_gradient()",
                )
            same = (obs.kind, obs.batch_size, tuple(obs.image_shape))
            if same != (first.kind, first.batch_size, tuple(first.image_shape)) or (
                obs.kind == "update" and obs.meta != first.meta
            ):
                raise ConfigError.build(
                    what="observations",
                    expected="the same kind, batch size, image shape and protocol meta",
                    received=f"{same} vs {(first.kind, first.batch_size, first.image_shape)}",
                    fix="reconstruct differing observations in separate calls",
                )
            if obs.batch_size < 1:
                raise ConfigError.build(
                    what="observation.batch_size", expected="an int >= 1",
                    received=obs.batch_size, fix="set the number of images",
                )
            if self.context is None:
                raise StateError.build(
                    what="attack", expected="a prepared attack", received="no context",
                    fix="call attack.prepare(context) before reconstruct()",
                )
            if tuple(obs.image_shape) != tuple(self.context.image_shape):
                raise InputShapeError.build(
                    what="observation.image_shape",
                    expected=f"the context's {tuple(self.context.image_shape)}",
                    received=tuple(obs.image_shape), fix="prepare with the right image_shape",
                )
            tensors = self._observed(obs)
            if set(tensors) != set(params):
                missing = sorted(set(params) - set(tensors))[:3]
                extra = sorted(set(tensors) - set(params))[:3]
                raise ConfigError.build(
                    what="observation names",
                    expected="exactly the model's trainable parameter names",
                    received=f"missing {missing}, unexpected {extra}",
                    fix="observe with the same model architecture the attack was prepared with",
                )
            for n, p in params.items():
                t = tensors[n]
                if not isinstance(t, Tensor) or t.shape != p.shape:
                    raise InputShapeError.build(
                        what=f"observation[{n!r}]", expected=f"shape {tuple(p.shape)}",
                        received=getattr(t, "shape", type(t).__name__),
                        fix="observe with the model the attack was prepared with",
                    )
                if not bool(torch.isfinite(t).all()):
                    raise NonFiniteInputError.build(
                        what=f"observation[{n!r}]", expected="finite values",
                        received="NaN or infinity", fix="pass a finite observation",
                    )
            if obs.kind == "update":
                for key in ("local_epochs", "local_batch_size", "lr"):
                    if key not in obs.meta:
                        raise ConfigError.build(
                            what="observation.meta", expected=f"a {key!r} entry",
                            received=sorted(obs.meta),
                            fix="build update observations with observe_update()",
                        )

    # -- labels ----------------------------------------------------------------------------

    @staticmethod
    def _last_linear(model: nn.Module) -> str:
        """The name of the last ``nn.Linear`` with a trainable weight (whose gradient
        reveals the labels), ``""`` for the model itself."""
        name = last_linear_name(model, trainable=True)
        if name is None:
            raise UnsupportedModelError.build(
                what="model", expected="a classifier whose last layer is an nn.Linear",
                received=type(model).__name__,
                fix="grant the labels in Observation.labels or use a model ending in nn.Linear",
            )
        return name

    def _label_stats(
        self, model: nn.Module, params: dict[str, Tensor], frozen: dict[str, Tensor]
    ) -> tuple[Tensor, float]:
        """Mean softmax output and mean feature sum of the last layer on random images."""
        if self.context is None:
            raise StateError.build(
                what="attack", expected="a prepared attack", received="no context",
                fix="call attack.prepare(context) before reconstruct()",
            )
        gen = self.generator()
        x = torch.rand(64, *self.context.image_shape, generator=gen)
        p0 = next(iter(params.values()))
        x = x.to(device=p0.device, dtype=p0.dtype)
        module = model.get_submodule(self._last_linear(model))
        feats: list[Tensor] = []
        handle = module.register_forward_hook(lambda m, i, o: feats.append(i[0].detach()))
        try:
            with torch.no_grad():
                logits = functional_call(model, {**params, **frozen}, (x,))
        finally:
            handle.remove()
        return logits.softmax(dim=1).mean(dim=0).cpu(), float(feats[0].flatten(1).sum(1).mean())

    def _labels(
        self,
        obs: Observation,
        model: nn.Module,
        params: dict[str, Tensor],
        frozen: dict[str, Tensor],
        *,
        use_given: bool,
    ) -> Tensor:
        if self.context is None:
            raise StateError.build(
                what="attack", expected="a prepared attack", received="no context",
                fix="call attack.prepare(context) before reconstruct()",
            )
        k = self.context.num_classes
        if use_given and obs.labels is not None:
            y = obs.labels
            if (
                not isinstance(y, Tensor)
                or y.dtype != torch.int64
                or y.shape != (obs.batch_size,)
                or int(y.min()) < 0
                or int(y.max()) >= k
            ):
                raise LabelError.build(
                    what="observation.labels",
                    expected=f"int64 ({obs.batch_size},) in [0, {k - 1}]",
                    received=getattr(y, "shape", type(y).__name__),
                    fix="pass one label per image, or None to infer them",
                )
            return y.cpu()
        last = self._last_linear(model)
        g = self._observed(obs)[f"{last}.weight" if last else "weight"]
        if obs.kind == "update":  # the update is minus lr times a sum of gradients
            g = -g
        if obs.batch_size == 1:
            return infer_labels_idlg(g)
        probs, fsum = self._label_stats(model, params, frozen)
        return infer_labels_idlg(
            g, batch_size=obs.batch_size, mean_probs=probs, feature_sum=fsum
        )

    # -- the batched objective -------------------------------------------------------------

    def _objective(
        self,
        model: nn.Module,
        frozen: dict[str, Tensor],
        obs: Observation,
        distance: Callable[[Tensor, Tensor], Tensor],
        tv_weight: float,
        names: list[str] | None = None,
    ) -> Callable[..., tuple[Tensor, Tensor]]:
        """``objective(params, x, y, target) -> (loss, matching loss)`` of one problem.

        ``params`` is an argument (not a closure) so that the caller can vmap
        over a free ``expand`` of it: with a batched weight, vmap turns every
        layer into one grouped/batched kernel, which is what makes the batched
        path faster per image than a loop (see benchmarks/attack_batching.py).
        ``names`` (default: all of ``params``) are the entries matched against
        ``target``; the simulated update still moves every parameter.
        """
        if obs.kind == "update":
            schedule = minibatch_schedule(
                obs.batch_size, local_epochs=int(obs.meta["local_epochs"]),
                local_batch_size=int(obs.meta["local_batch_size"]), shuffle=False, seed=0,
            )
            lr = float(obs.meta["lr"])

            def simulate(p: dict[str, Tensor], x: Tensor, y: Tensor) -> dict[str, Tensor]:
                return fedavg_update(model, p, frozen, x, y, schedule=schedule, lr=lr)
        else:

            def simulate(p: dict[str, Tensor], x: Tensor, y: Tensor) -> dict[str, Tensor]:
                return loss_gradients(model, p, frozen, x, y)

        def objective(
            p: dict[str, Tensor], x: Tensor, y: Tensor, target: Tensor
        ) -> tuple[Tensor, Tensor]:
            match = distance(_flat(simulate(p, x, y), names or list(p)), target)
            loss = match + tv_weight * total_variation(x).mean() if tv_weight else match
            return loss, match

        return objective

    def _iterate(
        self, ticks: int, tick: Callable[[int], Any], *, description: str, per_tick: int = 1
    ) -> None:
        """Call ``tick(i)`` for ``i`` in ``range(ticks)`` under a progress bar; on Ctrl-C,
        log the iteration (``i * per_tick``) it stopped at and re-raise."""
        with _Interrupted(self.name) as guard, progress_bar(
            range(ticks), total=ticks, description=description, enabled=self.progress,
        ) as its:
            for it in its:
                guard.iteration = it * per_tick
                tick(it)

    def _map(self, fn: Callable[..., Any], per_restart: tuple[bool, ...]) -> Callable[..., Any]:
        """Map ``fn`` over observations (every argument) and restarts (flagged ones):
        two nested ``vmap``, or a loop on a model above :attr:`vmap_parameters`."""
        if self._parameter_count() > self.vmap_parameters:
            return _looped(fn, per_restart)
        # randomness="different": a defence that draws noise in its forward pass (latent
        # perturbation, Laplacian cut noise) gets an independent draw per problem, as the
        # attacker cannot know the client's draw.
        inner = vmap(fn, in_dims=tuple(0 if flag else None for flag in per_restart),
                     randomness="different")
        return vmap(inner, in_dims=tuple(0 for _ in per_restart), randomness="different")

    # -- public ----------------------------------------------------------------------------

    def reconstruct(self, observation: Observation) -> Reconstruction:
        """Rebuild the images of one observed batch.

        Args:
            observation: a ``"gradient"`` observation (also ``"update"`` for
                Inverting Gradients).

        Returns:
            The reconstruction: images ``(B, C, H, W)`` in [0, 1] (in no
            particular order for ``B > 1``), the labels used, and ``meta`` with
            ``iterations``, ``restarts``, ``loss`` (best restart's matching loss),
            ``restart_losses``, ``initial_loss`` (the lowest matching loss over
            the restarts at their initial images: a loss that barely fell from
            it means the attack did not converge), ``initial_losses`` and ``budget``.

        Raises:
            StateError: if :meth:`prepare` was not called with a model.
            ConfigError: on a wrong observation kind or parameter names.
            InputShapeError: on mismatched shapes.
        """
        return self.reconstruct_many([observation])[0]

    def reconstruct_many(self, observations: Sequence[Observation]) -> list[Reconstruction]:
        """Rebuild several independent observations at once, optimised as one batch.

        All observations must share kind, batch size, image shape and protocol
        meta. Each runs the same algorithm from the same initial images as it
        would alone (every observation starts from the seed's images); batched
        kernels round differently, and the sign step of Inverting Gradients can
        amplify that, so results agree in quality rather than bit for bit
        (exactly, up to rounding, with ``signed=False``). Observations are
        optimised ``max_parallel // restarts`` at a time. For DLG/iDLG see the
        module notes on L-BFGS.

        Args:
            observations: the observations (e.g. many batch-1 gradients of an audit).

        Returns:
            One :class:`Reconstruction` per observation; each ``seconds`` is the
            batched wall time divided by the number of observations, and
            ``meta['batched_with']`` says how many were batched.
        """
        model = self._model()
        params_all = trainable_parameters(model)
        self._validate(observations, params_all)
        _, restarts = self.schedule()
        size = sum(p.numel() for p in params_all.values()) * observations[0].batch_size
        limit = self.max_parallel or max(1, 50_000_000 // max(1, size))
        per_chunk = max(1, limit // restarts)
        out: list[Reconstruction] = []
        for i in range(0, len(observations), per_chunk):
            out += self._reconstruct_chunk(list(observations[i : i + per_chunk]))
        return out

    def _reconstruct_chunk(self, observations: list[Observation]) -> list[Reconstruction]:
        start = time.perf_counter()
        model = self._model()
        clone = functional_copy(model)
        params, frozen = trainable_parameters(model), frozen_state(model)
        p0 = next(iter(params.values()))
        source = self._label_source()
        if source == "learn":
            labels = torch.zeros(len(observations), observations[0].batch_size, dtype=torch.int64)
        else:
            labels = torch.stack([
                self._labels(o, clone, params, frozen, use_given=source == "given")
                for o in observations
            ])
        labels = labels.to(p0.device)
        names = self._matched_names(params)
        targets = torch.stack([_flat(self._observed(o), names) for o in observations]).to(p0)
        iterations, restarts = self.schedule()
        images, losses, extra = self._optimise(
            clone, params, frozen, observations, labels, targets, iterations, restarts
        )
        best = losses.argmin(dim=1)
        n = len(observations)
        chosen = images[torch.arange(n), best].clamp(0, 1).detach().cpu()
        seconds = (time.perf_counter() - start) / n
        out = []
        for i in range(n):
            meta: dict[str, Any] = {
                "iterations": iterations, "restarts": restarts,
                "budget": self._effective_budget(), "loss": float(losses[i, best[i]]),
                "restart_losses": losses[i].tolist(), "batched_with": n,
                "labels_from": "given" if source == "given" and observations[i].labels
                is not None else source,
            }
            meta.update({k: v[i] for k, v in extra.items()})
            if "initial_losses" in meta:  # the matching loss before the first step
                meta["initial_loss"] = float(min(meta["initial_losses"]))
            out.append(Reconstruction(
                images=chosen[i], attack=self.name, labels=extra.get("labels", labels)[i].cpu(),
                seconds=seconds, meta={k: v for k, v in meta.items() if k != "labels"},
            ))
        return out

    def _matched_names(self, params: dict[str, Tensor]) -> list[str]:
        """Names of the parameters whose gradient (or update) the attack matches."""
        return list(params)

    def _label_source(self) -> str:
        """``"given"`` (use Observation.labels when granted, else infer), ``"infer"`` or
        ``"learn"`` (optimised with the images)."""
        return "given"

    def _initial(self, labels: Tensor, restarts: int, like: Tensor) -> Tensor:
        """Initial images ``(N, R, B, C, H, W)`` of the gradient-matching path for
        ``labels`` ``(N, B)``: uniform noise in [0, 1] (DLG); subclasses may use a prior."""
        n, b = labels.shape
        return self._init_images(n, restarts, b, like)

    def _init_images(self, n: int, r: int, b: int, like: Tensor) -> Tensor:
        if self.context is None:
            raise StateError.build(
                what="attack", expected="a prepared attack", received="no context",
                fix="call attack.prepare(context) before reconstruct()",
            )
        gen = self.generator()
        x = torch.rand(1, r, b, *self.context.image_shape, generator=gen)
        return x.expand(n, -1, -1, -1, -1, -1).clone().to(like)

    def _optimise(
        self,
        model: nn.Module,
        params: dict[str, Tensor],
        frozen: dict[str, Tensor],
        observations: list[Observation],
        labels: Tensor,
        targets: Tensor,
        iterations: int,
        restarts: int,
    ) -> tuple[Tensor, Tensor, dict[str, Any]]:
        raise NotImplementedError  # pragma: no cover


__all__ = ["GradientAttack", "GradientAttackConfig"]
