"""Gradient-inversion attacks on federated learning: DLG, iDLG and Inverting Gradients.

The attacker holds the global model and what one client sent for one batch:
the gradient of the batch's mean cross-entropy loss (FedSGD, observation
kind ``"gradient"``), or, for Inverting Gradients, the weight update after
several local SGD steps (FedAvg, kind ``"update"``). It optimises candidate
images until the gradient (or simulated update) they produce matches the
observed one.

- :class:`DLG` (Zhu, Liu, Han 2019, "Deep Leakage from Gradients"): squared
  L2 distance between gradients, L-BFGS on the images *and* soft labels.
- :class:`IDLG` (Zhao, Mopuri, Bilen 2020, "iDLG"): the labels are read
  analytically from the last layer's weight gradient
  (:func:`infer_labels_idlg`), then DLG's L2 matching with L-BFGS on the images.
- :class:`InvertingGradients` (Geiping, Bauermeister, Droege, Moeller 2020,
  "Inverting Gradients - How easy is it to break privacy in federated
  learning?"): ``1 - cosine similarity`` of all parameter gradients plus a
  total-variation prior, Adam on the *sign* of the image gradient with step
  decay (x0.1 at 3/8, 5/8, 7/8 of the iterations), images kept in [0, 1],
  several random restarts, the restart with the lowest matching loss wins. On
  a FedAvg update it simulates the client's local SGD steps differentiably on
  the candidate images and matches the simulated update (their Sec. 5).
  Labels: the observation's, when the threat model grants them, else inferred
  from the last layer. Initial images: the auxiliary mean image of the label plus
  noise, when the attacker holds auxiliary images. At batch 1, on a model with
  a wide enough ``nn.Linear`` with a bias (the PGSL paper's network), the
  layer's input is read exactly from its gradient and the images are fitted to
  it (the feature path, see ``features``): on trained ReLU/BatchNorm networks
  whole-gradient matching converges far too slowly for a CPU budget. At batch > 1
  and on FedAvg updates the layer's weight gradient is a sum of one rank-one term
  per image; its rows are separated into per-image features
  (:func:`~shieldsplit.functional.separation.separate_nonnegative_sources`, in the
  spirit of the Cocktail Party Attack, Kariyappa et al. 2023) and one image is
  fitted to each.
- :class:`InvertingGradientsFedAvg` (``"inverting-gradients-fedavg"``): the same
  attack registered for FedAvg updates, with budgets sized for unrolled local steps.

Batching. The independent problems -- restarts, and the images of several
observations passed to :meth:`reconstruct_many` (a batch-1 audit of many
images) -- are optimised together as one tensor ``(N, R, B, C, H, W)``: the
matching loss of each problem is computed with ``torch.func.grad`` over
``functional_call`` and mapped over problems with two nested
``torch.func.vmap`` (observations x restarts), so each restart's loss depends
only on its own slice. Adam works elementwise, so the restarts of
:class:`InvertingGradients` do not interact (batched kernels only round
differently). The weights are passed to the mapped function as a free
``expand`` per problem, so vmap runs each layer as one grouped kernel; on 2
CPU cores this made 8 MNIST images x 4 restarts about 3-5x cheaper per image
than a plain-autograd loop (``benchmarks/attack_batching.py``). Problems are
batched ``max_parallel`` at a time to bound memory on large models.
DLG/iDLG's L-BFGS treats the sum of the independent losses as one problem
(shared line search and curvature history): each problem still has
its own minimiser, but its path depends on the others.

Cancelling. Long attacks show a progress bar (``progress=True``, when stderr
is a terminal) and stop at the next iteration on Ctrl-C: the attack logs
where it stopped and re-raises ``KeyboardInterrupt``; no partial result is
returned (``meta['incomplete']`` is never set) and the model is untouched.

Example:
    >>> import torch
    >>> from shieldsplit.attacks import AttackContext, create_attack
    >>> from shieldsplit.attacks.observe import observe_gradient
    >>> from shieldsplit.models import SmallConvNet
    >>> torch.manual_seed(0) and None
    >>> net = SmallConvNet(num_classes=4, image_size=8)
    >>> x, y = torch.rand(1, 1, 8, 8), torch.tensor([2])
    >>> attack = create_attack("inverting-gradients", seed=0, iterations=50, progress=False)
    >>> attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=4, model=net))
    >>> rec = attack.reconstruct(observe_gradient(net, x, y))
    >>> rec.images.shape, rec.labels.tolist()
    (torch.Size([1, 1, 8, 8]), [2])
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from shieldsplit._core.progress import progress_bar
from shieldsplit.attacks.base import (
    Attack,
    Budget,
    Observation,
    ObservationKind,
    Reconstruction,
    register_attack,
)
from shieldsplit.attacks.observe import (
    fedavg_update,
    frozen_state,
    functional_copy,
    loss_gradients,
    minibatch_schedule,
    trainable_parameters,
)
from shieldsplit.errors import (
    ConfigError,
    InputShapeError,
    LabelError,
    NonFiniteInputError,
    StateError,
    UnsupportedModelError,
)
from shieldsplit.functional.separation import separate_nonnegative_sources

logger = logging.getLogger(__name__)

_BUDGETS = ("quick", "standard", "thorough")


# ------------------------------------------------------------------ label inference


def infer_labels_idlg(
    last_layer_weight_grad: Tensor,
    *,
    batch_size: int = 1,
    mean_probs: Tensor | None = None,
    feature_sum: float | None = None,
) -> Tensor:
    """Labels of a batch read from the gradient of the last linear layer's weight.

    For one image with label ``y``, the weight gradient of the mean CE loss is
    ``(p - onehot(y)) h^T`` (``p`` the softmax output, ``h`` the features that
    enter the layer), so row ``c`` sums to ``(p_c - [c = y]) * sum(h)``. With
    non-negative features (after ReLU or Sigmoid, as iDLG assumes) only the
    true class's row sum is negative: the label is the argmin of the row sums
    (Zhao et al. 2020).

    For ``batch_size > 1`` (a count heuristic in the spirit of Wainakh et al.'s
    LLG): row ``c`` sums to about ``S * (mean_probs[c] - n_c / B)``, with ``S`` the
    mean feature sum and ``n_c`` the number of images of class ``c``. So
    ``n_c ~ B * (mean_probs[c] - rowsum[c] / S)``. Every class with a negative
    row sum is certainly present (non-negative features) and gets at least
    one label; the remaining labels go, one at a time, to the class whose
    estimated count exceeds its allocation the most. ``mean_probs`` defaults
    to uniform (an untrained model) and ``S`` to ``K`` times the mean of the
    positive row sums; an attacker who holds the model should measure both on
    some inputs (:class:`IDLG` and :class:`InvertingGradients` do, on random
    images). The result is exact for one image and a best guess beyond.

    Args:
        last_layer_weight_grad: ``(K, F)`` gradient of the last layer's weight.
        batch_size: number of images ``B`` in the batch.
        mean_probs: ``(K,)`` the model's mean softmax output, if known.
        feature_sum: the mean over images of the features' sum, if known.

    Returns:
        ``(B,)`` int64 labels, sorted (a gradient does not reveal the order).

    Raises:
        InputShapeError: if the gradient is not a 2-D tensor.
        NonFiniteInputError: if it holds NaN or infinity.
        ConfigError: if ``batch_size`` is not a positive int or ``mean_probs`` has
            the wrong shape.

    Example:
        >>> h = torch.tensor([0.5, 1.0, 0.2])           # non-negative features
        >>> p = torch.tensor([0.3, 0.2, 0.4, 0.1])      # softmax output
        >>> grad = torch.outer(p - torch.eye(4)[2], h)  # label 2
        >>> infer_labels_idlg(grad)
        tensor([2])
    """
    g = last_layer_weight_grad
    if not isinstance(g, Tensor) or g.dim() != 2:
        received = tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__
        raise InputShapeError.build(
            what="last_layer_weight_grad", expected="a 2-D tensor (num_classes, features)",
            received=received, fix="pass the gradient of the last nn.Linear's weight",
        )
    if not bool(torch.isfinite(g).all()):
        raise NonFiniteInputError.build(
            what="last_layer_weight_grad", expected="finite values", received="NaN or infinity",
            fix="pass an undefended gradient",
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError.build(
            what="batch_size", expected="a positive int", received=repr(batch_size),
            fix="pass the number of images in the batch",
        )
    rows = g.detach().double().sum(dim=1)
    k = rows.shape[0]
    if batch_size == 1:
        return rows.argmin().reshape(1).to(torch.int64)
    if mean_probs is None:
        probs = torch.full((k,), 1.0 / k, dtype=torch.float64)
    else:
        if not isinstance(mean_probs, Tensor) or mean_probs.shape != (k,):
            raise ConfigError.build(
                what="mean_probs", expected=f"a tensor of shape ({k},)",
                received=getattr(mean_probs, "shape", type(mean_probs).__name__),
                fix="pass the mean softmax output per class, or None",
            )
        probs = mean_probs.detach().double().cpu()
    rows = rows.cpu()
    if feature_sum is None or not feature_sum > 0:
        positive = rows[rows > 0]
        feature_sum = float(k * positive.mean()) if positive.numel() else float(rows.abs().sum())
    scale = max(float(feature_sum), 1e-30)
    estimate = batch_size * (probs - rows / scale)
    counts = torch.zeros(k, dtype=torch.int64)
    present = torch.nonzero(rows < 0).flatten()
    present = present[rows[present].argsort()][:batch_size]  # most negative first
    counts[present] = 1
    while int(counts.sum()) < batch_size:
        counts[int((estimate - counts.double()).argmax())] += 1
    return torch.repeat_interleave(torch.arange(k), counts)


def linear_input_from_gradient(weight_grad: Tensor, bias_grad: Tensor) -> tuple[Tensor, float]:
    """The input of a linear layer, read from its weight and bias gradients for one image.

    For one image the gradient of ``y = W h + b`` is ``grad_W = g h^T`` and
    ``grad_b = g`` (``g`` the gradient at the output), so ``h`` is any row of
    ``grad_W`` divided by the same entry of ``grad_b``. The least-squares
    estimate over all rows is ``h = grad_b^T grad_W / |grad_b|^2`` (Phong et
    al. 2018; Geiping et al. 2020, Prop. D.1). For a batch of several images
    ``grad_W`` is a sum of such outer products and the relative residual
    ``|grad_W - grad_b h^T| / |grad_W|`` (computed on the 8 rows of largest
    ``|grad_b|``) is large: it says whether ``h`` is exact.

    Args:
        weight_grad: ``(K, F)`` gradient of the weight.
        bias_grad: ``(K,)`` gradient of the bias.

    Returns:
        ``h`` ``(F,)`` and the relative residual (``inf`` when ``grad_b`` is zero).

    Raises:
        InputShapeError: if the shapes do not fit.

    Example:
        >>> h = torch.tensor([0.5, 0.0, 2.0])
        >>> g = torch.tensor([0.1, -0.3])
        >>> est, residual = linear_input_from_gradient(torch.outer(g, h), g)
        >>> est, residual < 1e-6
        (tensor([0.5000, 0.0000, 2.0000]), True)
    """
    if (
        not isinstance(weight_grad, Tensor) or not isinstance(bias_grad, Tensor)
        or weight_grad.dim() != 2 or bias_grad.shape != weight_grad.shape[:1]
    ):
        raise InputShapeError.build(
            what="weight_grad, bias_grad", expected="shapes (K, F) and (K,)",
            received=(getattr(weight_grad, "shape", None), getattr(bias_grad, "shape", None)),
            fix="pass the gradients of one nn.Linear's weight and bias",
        )
    gw, gb = weight_grad.detach(), bias_grad.detach().double()
    norm = float(gb @ gb)
    if norm == 0.0:
        return torch.zeros(gw.shape[1], dtype=weight_grad.dtype), math.inf
    h = (gb.to(gw.dtype) @ gw).double() / norm
    # the residual on the rows of largest |grad_b| (cheap; a mixture of images shows there)
    rows = gb.abs().topk(min(8, gb.numel())).indices
    part = gw[rows].double()
    residual = float((part - torch.outer(gb[rows], h)).norm() / part.norm().clamp_min(1e-300))
    return h.to(weight_grad.dtype), residual


# ------------------------------------------------------------------ small helpers


def _last_linear_weight_name(model: nn.Module) -> str:
    name = None
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.weight.requires_grad:
            name = f"{mod_name}.weight" if mod_name else "weight"
    if name is None:
        raise UnsupportedModelError.build(
            what="model", expected="a classifier whose last layer is an nn.Linear",
            received=type(model).__name__,
            fix="grant the labels in Observation.labels or use a model ending in nn.Linear",
        )
    return name


def _total_variation(x: Tensor) -> Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (
        x[..., :, 1:] - x[..., :, :-1]
    ).abs().mean()


def _cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    return 1.0 - (a @ b) / (a.norm() * b.norm() + 1e-12)


def _l2_distance(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).pow(2).sum()


def _flat(tensors: dict[str, Tensor], names: list[str]) -> Tensor:
    return torch.cat([tensors[n].flatten() for n in names])


class GradientAttackConfig(BaseModel):
    """Options every gradient attack shares (see :class:`InvertingGradients`' Args).

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


class InvertingGradientsConfig(GradientAttackConfig):
    """Options of :class:`InvertingGradients` (see its Args)."""

    lr: float = Field(default=0.1, gt=0.0, allow_inf_nan=False)
    tv_weight: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    signed: bool = True
    use_labels: bool = True
    init: Literal["auxiliary", "uniform"] = "auxiliary"
    layers: tuple[Annotated[str, Field(min_length=1)], ...] | None = Field(
        default=None, min_length=1, strict=False)
    features: bool = True
    feature_lr: float = Field(default=0.03, gt=0.0, allow_inf_nan=False)


class DLGConfig(GradientAttackConfig):
    """Options of :class:`DLG` (see its Args)."""

    lr: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)


class IDLGConfig(DLGConfig):
    """Options of :class:`IDLG` (see its Args)."""

    init: Literal["auxiliary", "uniform"] = "auxiliary"
    features: bool = True


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


# ------------------------------------------------------------------ the attacks


class _GradientAttack(Attack):
    """Shared machinery: validation, label handling, the batched matching objective."""

    threat_model = "federated"
    observes: ClassVar[ObservationKind] = "gradient"
    #: observation kinds the attack accepts
    accepts: ClassVar[tuple[ObservationKind, ...]] = ("gradient",)
    #: ``budget -> (iterations, restarts)``
    budgets: ClassVar[dict[str, tuple[int, int]]] = {}
    #: at the ``quick`` budget, a model with more trainable parameters than this whose
    #: first ``nn.Linear`` is narrower than the image is attacked through that layer's
    #: features (see ``InvertingGradients``' ``features``) instead of by matching every
    #: parameter's gradient: a matching iteration differentiates every parameter twice
    #: (torchvision's ResNet-18, 11M parameters: 0.3 s per image per iteration on one CPU
    #: thread, so 16 minutes for 32 victims at 100 iterations), a feature iteration is
    #: one forward and backward pass (0.005 s per image in a batch of 32)
    quick_parameters: ClassVar[int] = 2_000_000

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
                fix=f"fill Observation.{field} (see shieldsplit.attacks.observe)",
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
                    fix="build it with shieldsplit.attacks.observe",
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
        last = _last_linear_weight_name(model).rsplit(".", 1)[0]
        module = model.get_submodule(last) if last != "weight" else model
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
        name = _last_linear_weight_name(model)
        g = self._observed(obs)[name]
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
            loss = match + tv_weight * _total_variation(x) if tv_weight else match
            return loss, match

        return objective

    @staticmethod
    def _map(fn: Callable[..., Any], per_restart: tuple[bool, ...]) -> Callable[..., Any]:
        """vmap ``fn`` over observations (every argument) and restarts (flagged ones)."""
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
                :class:`InvertingGradients`).

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


class _FeatureAttack(_GradientAttack):
    """The feature paths shared by :class:`InvertingGradients` and :class:`IDLG`.

    At batch 1 the input of the first wide ``nn.Linear`` with a bias is read exactly
    from its gradient (:func:`linear_input_from_gradient`) and images are fitted to it;
    at batch > 1 and on FedAvg updates the per-image features are separated from the
    layer's gradient first (see :meth:`reconstruct_many`). Subclasses choose the
    optimiser (:meth:`_feature_descent`) and declare the ``init`` and ``features``
    options (see :class:`InvertingGradients`' Args).
    """

    #: half-width of the uniform noise added to the auxiliary mean image
    init_noise: ClassVar[float] = 0.1
    #: largest relative residual of ``grad_W - grad_b h^T`` for which the features ``h``
    #: read from a gradient count as exact (one undefended image)
    feature_tolerance: ClassVar[float] = 1e-3
    #: problems (images x restarts) optimised together on the feature path
    feature_parallel: ClassVar[int] = 64
    #: ``budget -> (iterations, restarts)`` of the feature paths; None: :attr:`budgets`
    feature_budgets: ClassVar[dict[str, tuple[int, int]] | None] = None

    init: str
    features: bool

    def feature_schedule(self) -> tuple[int, int]:
        """The ``(iterations, restarts)`` of the feature paths (see ``features``):
        :attr:`feature_budgets` when the class sets them, else :meth:`schedule`;
        explicit ``iterations``/``restarts`` options win.

        Returns:
            ``(iterations, restarts)``.
        """
        budgets = self.budgets if self.feature_budgets is None else self.feature_budgets
        its, rs = budgets[self._effective_budget()]
        return (self.iterations or its, self.restarts or rs)

    def _initial(self, labels: Tensor, restarts: int, like: Tensor) -> Tensor:
        return self._start(labels, restarts, like)

    def _feature_descent(
        self, flat: Tensor, closure: Callable[[], Tensor], iterations: int
    ) -> tuple[int, Callable[[], None], int]:
        """The optimiser of the feature paths, as ``(ticks, tick, iterations per tick)``.

        ``closure()`` puts the matching loss's gradient in ``flat.grad`` and returns the
        summed loss; ``tick()`` runs ``iterations per tick`` steps on ``flat`` (shape
        ``(problems, C, H, W)``); the images are clamped to [0, 1] after the last.
        """
        raise NotImplementedError  # pragma: no cover

    def _start(
        self, labels: Tensor, restarts: int, like: Tensor, *, by_label: bool = True
    ) -> Tensor:
        """Initial images ``(N, R, B, C, H, W)``: see the ``init`` option
        (``by_label=False``: the mean of all auxiliary images, labels unknown)."""
        n, b = labels.shape
        context = self.context
        aux = None if context is None else context.auxiliary_images
        if self.init == "uniform" or aux is None or context is None or len(aux) == 0:
            return self._init_images(n, restarts, b, like)
        aux = aux.detach().float().cpu()
        mean = aux.mean(dim=0)
        ay = context.auxiliary_labels
        if by_label and ay is not None and len(ay) == len(aux):
            ay = ay.detach().long().cpu()
            centres = torch.stack([
                aux[ay == c].mean(dim=0) if bool((ay == c).any()) else mean
                for c in range(context.num_classes)
            ])
            base = centres[labels.cpu().clamp(0, context.num_classes - 1)]  # (N, B, C, H, W)
        else:
            base = mean.expand(n, b, *mean.shape)
        gen = self.generator()
        noise = torch.rand(1, restarts, b, *mean.shape, generator=gen)
        x = base.unsqueeze(1) + self.init_noise * (2 * noise - 1)
        return x.clamp(0, 1).to(like)

    def _feature_layer(self, model: nn.Module, params: dict[str, Tensor]) -> str | None:
        """The first nn.Linear with a trainable weight and bias and at least as many
        inputs as an image has values (fewer cannot pin the image down), else None.
        Under the quick budget's size rule (:meth:`oversized`) a narrower layer is
        taken too: inverting its features is cheap where matching every parameter's
        gradient is not, although they may not determine the image."""
        pixels = math.prod(self.context.image_shape) if self.context is not None else 0
        for mod_name, module in model.named_modules():
            if (
                isinstance(module, nn.Linear) and module.bias is not None
                and f"{mod_name}.weight" in params and f"{mod_name}.bias" in params
            ):
                wide = module.in_features >= pixels
                return mod_name if wide or self.oversized() else None
        return None

    def _observed_features(self, obs: Observation, layer: str) -> Tensor | None:
        """The input of ``layer`` read from a batch-1 gradient, or None if not exact.

        A zero gradient at ``layer`` (every unit after it inactive for this image)
        gives an empty tensor: nothing below that layer reached the gradient.
        """
        g = self._observed(obs)
        weight, bias = g[f"{layer}.weight"], g[f"{layer}.bias"]
        if not bool(weight.any()) and not bool(bias.any()):
            return weight.new_zeros(0)
        h, residual = linear_input_from_gradient(weight, bias)
        if residual > self.feature_tolerance:
            logger.info(
                "%s: the gradient of %r is not one image's (relative residual %.2g); "
                "matching the gradient instead", self.name, layer, residual,
            )
            return None
        return h

    def _feature_affine(self, model: nn.Module, layer: str) -> tuple[Tensor, Tensor] | None:
        """``(scale, shift)`` per input of ``layer`` when that input is an eval-mode
        BatchNorm's output (flattened): ``h = scale * r + shift`` with ``r`` the
        BatchNorm's input (after a ReLU: non-negative and sparse). None otherwise.

        Checked, not assumed: the BatchNorm is the last one registered before
        ``layer`` and its output, flattened, must equal ``layer``'s input on an
        auxiliary (or random) image.
        """
        norm_name = None
        for name, module in model.named_modules():
            if name == layer:
                break
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                norm_name = name
        if norm_name is None or self.context is None:
            return None
        norm = model.get_submodule(norm_name)
        if not isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            return None
        if norm.training or norm.running_mean is None or norm.running_var is None:
            return None
        seen: dict[str, Tensor] = {}
        hooks = [
            norm.register_forward_hook(lambda m, i, o: seen.__setitem__("norm", o)),
            model.get_submodule(layer).register_forward_hook(
                lambda m, i, o: seen.__setitem__("layer", i[0])
            ),
        ]
        p0 = next(model.parameters())
        probe = torch.rand(1, *self.context.image_shape, generator=self.generator())
        try:
            with torch.no_grad():
                model(probe.to(p0))
        finally:
            for hook in hooks:
                hook.remove()
        if "norm" not in seen or "layer" not in seen or seen["norm"].numel() != seen[
            "layer"
        ].numel() or not torch.allclose(seen["norm"].flatten(), seen["layer"].flatten()):
            return None
        with torch.no_grad():
            weight = norm.weight if norm.weight is not None else torch.ones_like(
                norm.running_var
            )
            bias = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_var)
            scale = weight.double() / (norm.running_var.double() + norm.eps).sqrt()
            shift = bias.double() - norm.running_mean.double() * scale
        per = seen["norm"][0].numel() // scale.numel()
        scale, shift = scale.repeat_interleave(per), shift.repeat_interleave(per)
        if bool((scale.abs() < 1e-8).any()):
            return None
        return scale, shift

    def _separated_features(
        self, obs: Observation, layer: str, affine: tuple[Tensor, Tensor] | None
    ) -> Tensor:
        """Per-image feature directions (in the BatchNorm's input domain when ``affine``)
        separated from a batch's gradient or update of ``layer``: ``(K, F)``, ``K <= B``."""
        g = self._observed(obs)
        weight, bias = g[f"{layer}.weight"].double(), g[f"{layer}.bias"].double()
        rows = bias != 0
        mixtures = weight[rows]
        if affine is not None:
            scale, shift = (t.to(mixtures) for t in affine)
            mixtures = (mixtures - bias[rows, None] * shift) / scale
        if mixtures.shape[0] == 0 or not bool(mixtures.any()):
            return mixtures.new_zeros(0, weight.shape[1])
        return separate_nonnegative_sources(
            mixtures, max_sources=min(obs.batch_size, mixtures.shape[0]), seed=self.seed
        )

    def reconstruct_many(self, observations: Sequence[Observation]) -> list[Reconstruction]:
        """Rebuild several independent observations at once (see the base class).

        Batch-1 gradients of a model with an ``nn.Linear`` layer with a bias take
        the feature path (``features=True``): the layer's input is read exactly
        from its gradient (:func:`linear_input_from_gradient`) and the images are
        optimised to reproduce it. Larger batches and FedAvg updates take the
        separated-feature path: the layer's weight gradient (or update) is a sum of
        one rank-one term per image, its rows are separated into per-image
        feature directions (:func:`~shieldsplit.functional.separation.separate_nonnegative_sources`,
        ICA then a non-negative refinement, in the input domain of a BatchNorm that
        feeds the layer), and one image is fitted to each direction (cosine loss).
        ``meta['matched']`` says which path ran and ``loss``/``initial_loss`` are
        that path's matching loss.
        """
        model = self._model()
        params = trainable_parameters(model)
        self._validate(observations, params)
        first = observations[0]
        layer = self._feature_layer(model, params) if self.features else None
        if layer is None:
            return super().reconstruct_many(observations)
        if first.kind != "gradient" or first.batch_size != 1:
            return [self._reconstruct_separated(o, layer) for o in observations]
        found = [self._observed_features(o, layer) for o in observations]
        easy = [i for i, h in enumerate(found) if h is not None and h.numel()]
        hard = [i for i, h in enumerate(found) if h is None]
        dead = [i for i, h in enumerate(found) if h is not None and not h.numel()]
        out: dict[int, Reconstruction] = {}
        if hard:  # e.g. a defended gradient, or an image whose features all died
            recs = super().reconstruct_many([observations[i] for i in hard])
            out.update(zip(hard, recs, strict=True))
        _, restarts = self.feature_schedule()
        per_chunk = max(1, (self.max_parallel or self.feature_parallel) // restarts)
        for j in range(0, len(easy), per_chunk):
            idx = easy[j : j + per_chunk]
            feats = torch.stack([found[i] for i in idx])  # type: ignore[misc]
            recs = self._reconstruct_features([observations[i] for i in idx], layer, feats)
            out.update(zip(idx, recs, strict=True))
        if dead:  # nothing to match: the initial guess (the label's auxiliary mean) stays
            recs = self._reconstruct_features(
                [observations[i] for i in dead], layer, None
            )
            out.update(zip(dead, recs, strict=True))
        return [out[i] for i in range(len(observations))]

    def _reconstruct_separated(self, obs: Observation, layer: str) -> Reconstruction:
        """One batch (gradient or update): separate its per-image features, fit an image
        to each; images whose feature was not found keep the auxiliary mean image."""
        start = time.perf_counter()
        model = self._model()
        clone = functional_copy(model)
        params, frozen = trainable_parameters(model), frozen_state(model)
        p0 = next(iter(params.values()))
        affine = self._feature_affine(model, layer)
        sources = self._separated_features(obs, layer, affine)
        k, b = sources.shape[0], obs.batch_size
        iterations, restarts = self.feature_schedule()
        none = torch.zeros(b, 1, dtype=torch.int64)
        init = self._start(none, 1, p0, by_label=False)[:, 0]  # (B, 1, C, H, W)
        images = init[:, 0].clone()
        final = initial = None
        if k:
            x = self._start(none[:k], restarts, p0, by_label=False)
            fitted, final, initial = self._fit_features(
                clone, {**params, **frozen}, layer, x, sources.to(p0), iterations,
                direction=affine if affine is not None else True,
            )
            images[:k] = fitted
            final, initial = final.min(dim=1).values, initial.min(dim=1).values
        with torch.no_grad():
            labels = functional_call(clone, {**params, **frozen}, (images,)).argmax(dim=1)
        return Reconstruction(
            images=images.clamp(0, 1).cpu(), attack=self.name, labels=labels.cpu(),
            seconds=time.perf_counter() - start,
            meta={
                "iterations": iterations if k else 0, "restarts": restarts,
                "budget": self._effective_budget(),
                "loss": None if final is None else float(final.mean()),
                "initial_loss": None if initial is None else float(initial.mean()),
                "source_losses": [] if final is None else final.tolist(),
                "batched_with": 1, "labels_from": "model", "sources": k,
                "matched": f"separated features of {layer!r} ({k} of {b})",
            },
        )

    def _fit_features(
        self,
        clone: nn.Module,
        weights: dict[str, Tensor],
        layer: str,
        x: Tensor,
        targets: Tensor,
        iterations: int,
        *,
        direction: tuple[Tensor, Tensor] | bool = False,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Fit images ``x`` ``(N, R, 1, C, H, W)`` so that ``layer``'s input matches
        ``targets`` ``(N, F)``: relative squared distance, or (``direction``) one minus
        the cosine, after undoing the BatchNorm affine when one is given. Returns the
        best restart's images ``(N, C, H, W)``, the final and the initial losses ``(N, R)``."""
        n, restarts = x.shape[:2]
        captured: list[Tensor] = []
        handle = clone.get_submodule(layer).register_forward_hook(
            lambda m, i, o: captured.append(i[0])
        )
        affine = direction if isinstance(direction, tuple) else None
        scale, shift = (
            (affine[0].to(targets), affine[1].to(targets)) if affine is not None else (None, None)
        )

        def loss(xx: Tensor, target: Tensor) -> Tensor:
            captured.clear()
            functional_call(clone, weights, (xx,))
            h = captured[-1].flatten()
            if direction is False:
                return (h - target).pow(2).sum() / target.pow(2).sum().clamp_min(1e-12)
            if scale is not None and shift is not None:  # compare h - shift with scale * r
                h, target = h - shift, target * scale
            return 1 - (h @ target) / (h.norm() * target.norm()).clamp_min(1e-12)

        value = vmap(loss, in_dims=(0, 0), randomness="different")
        step = vmap(grad_and_value(loss), in_dims=(0, 0), randomness="different")
        flat = x.reshape(n * restarts, *x.shape[2:]).clone().requires_grad_(True)
        flat_targets = targets.repeat_interleave(restarts, dim=0)

        def closure() -> Tensor:
            gx, values = step(flat.detach(), flat_targets)
            flat.grad = gx
            return values.sum().detach()

        ticks, tick, per_tick = self._feature_descent(flat, closure, iterations)
        try:
            with torch.no_grad():
                initial = value(flat.detach(), flat_targets).reshape(n, restarts)
            with _Interrupted(self.name) as guard, progress_bar(
                range(ticks), total=ticks, description=f"{self.name} (features)",
                enabled=self.progress,
            ) as its:
                for it in its:
                    guard.iteration = it * per_tick
                    tick()
            with torch.no_grad():
                flat.clamp_(0, 1)
                final = value(flat.detach(), flat_targets).reshape(n, restarts)
        finally:
            handle.remove()
        images = flat.detach().reshape(n, restarts, *x.shape[3:])
        best = final.argmin(dim=1)
        return images[torch.arange(n), best].clamp(0, 1), final, initial

    def _reconstruct_features(
        self, observations: list[Observation], layer: str, feats: Tensor | None
    ) -> list[Reconstruction]:
        start = time.perf_counter()
        model = self._model()
        clone = functional_copy(model)
        params, frozen = trainable_parameters(model), frozen_state(model)
        p0 = next(iter(params.values()))
        use_given = self._label_source() == "given"
        labels = torch.stack([
            self._labels(o, clone, params, frozen, use_given=use_given) for o in observations
        ])
        iterations, restarts = self.feature_schedule()
        n = len(observations)
        x = self._start(labels, restarts, p0)
        if feats is None:
            images = x[:, 0].clamp(0, 1).cpu()
            return [
                Reconstruction(
                    images=images[i], attack=self.name, labels=labels[i].cpu(),
                    meta={"iterations": 0, "restarts": 1, "budget": self._effective_budget(),
                          "loss": None, "initial_loss": None, "batched_with": n,
                          "matched": f"nothing: zero gradient at {layer!r}"},
                )
                for i in range(n)
            ]
        chosen, final, initial = self._fit_features(
            clone, {**params, **frozen}, layer, x, feats.to(p0), iterations
        )
        chosen = chosen.unsqueeze(1).cpu()  # (N, B=1, C, H, W)
        best = final.argmin(dim=1)
        seconds = (time.perf_counter() - start) / n
        return [
            Reconstruction(
                images=chosen[i], attack=self.name, labels=labels[i].cpu(), seconds=seconds,
                meta={
                    "iterations": iterations, "restarts": restarts,
                    "budget": self._effective_budget(), "loss": float(final[i, best[i]]),
                    "restart_losses": final[i].tolist(),
                    "initial_loss": float(initial[i].min()),
                    "initial_losses": initial[i].tolist(), "batched_with": n,
                    "labels_from": "given" if use_given and observations[i].labels is not None
                    else "infer",
                    "matched": f"features of {layer!r}",
                },
            )
            for i in range(n)
        ]


class InvertingGradients(_FeatureAttack):
    """Inverting Gradients (Geiping et al. 2020) on a gradient or a multi-step FedAvg update.

    Args:
        seed: seeds the initial images.
        budget: ``"quick"``, ``"standard"`` or ``"thorough"`` (see :attr:`budgets`:
            ``(iterations, restarts)``); None uses the context's budget. The
            budgets were tuned on MNIST/BreastMNIST train-split images (never on
            the reported test images).
        iterations: overrides the budget's iterations.
        restarts: overrides the budget's restarts.
        lr: Adam's step size (on the signed gradient, so roughly the pixel
            step), decayed x0.1 at 3/8, 5/8 and 7/8 of the iterations.
        tv_weight: weight of the total-variation prior (Geiping et al.'s image prior).
        signed: step on the sign of the image gradient (Geiping et al.).
        use_labels: use ``Observation.labels`` when granted (else infer them).
        init: ``"auxiliary"``: start from the mean of the auxiliary images of
            the (given or inferred) label, or of all of them when the label has
            none, plus uniform noise of half-width :attr:`init_noise` (a fresh
            draw per restart); ``"uniform"``: uniform noise in [0, 1] (Geiping
            et al.). ``"auxiliary"`` falls back to ``"uniform"`` when the
            context holds no auxiliary images.
        features: at batch 1, when the model has an ``nn.Linear`` with a bias
            and at least as many inputs as the image has values, read that
            layer's input exactly from its gradients
            (:func:`linear_input_from_gradient`) and optimise the images to
            reproduce it instead of matching the whole gradient: one backward
            pass per iteration instead of a double backward through every
            layer, and far better conditioned on trained ReLU/BatchNorm
            networks (the paper's network trained on BreastMNIST, 2
            train-split tuning images, 1 loaded CPU thread: gradient matching
            14.2 dB after 20 iterations in 9.6 s, the feature path 22.7 dB
            after 100 iterations in 19 s). Observations whose
            gradient is not one clean image's (a defence's noise) fall back to
            gradient matching.
        feature_lr: Adam's step size on the feature path (same decay).
        layers: match only the parameters whose name starts with one of these
            prefixes (e.g. the classifier head); None matches all. On a
            gradient the others are not even differentiated, which makes each
            iteration cheaper; on an update the simulation still moves them.
        max_parallel: at most this many problems (observations x restarts) in
            one batched optimisation; None: as many as keep about 5e7 gradient
            entries in flight (all of them for a small ConvNet).
        progress: show a progress bar.

    Raises:
        ConfigError: on an invalid option.
    """

    name = "inverting-gradients"
    accepts: ClassVar[tuple[ObservationKind, ...]] = ("gradient", "update")
    budgets: ClassVar[dict[str, tuple[int, int]]] = {
        "quick": (100, 1), "standard": (1000, 4), "thorough": (3000, 8),
    }
    Config = InvertingGradientsConfig
    config: InvertingGradientsConfig
    lr: float
    tv_weight: float
    signed: bool
    use_labels: bool
    init: str
    layers: tuple[str, ...] | None
    features: bool
    feature_lr: float

    def _label_source(self) -> str:
        return "given" if self.use_labels else "infer"

    def _matched_names(self, params: dict[str, Tensor]) -> list[str]:
        if self.layers is None:
            return list(params)
        names = [n for n in params if n.startswith(self.layers)]
        if not names:
            raise ConfigError.build(
                what="layers", expected="prefixes of the model's parameter names",
                received=repr(list(self.layers)),
                fix=f"pick prefixes of {list(params)[:4]}... or pass layers=None",
            )
        return names

    def _feature_descent(
        self, flat: Tensor, closure: Callable[[], Tensor], iterations: int
    ) -> tuple[int, Callable[[], None], int]:
        """Adam on the (signed, by default) gradient, x0.1 at 3/8, 5/8, 7/8, in [0, 1]."""
        opt = torch.optim.Adam([flat], lr=self.feature_lr)
        milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)

        def tick() -> None:
            closure()
            if self.signed and flat.grad is not None:
                flat.grad = flat.grad.sign()
            opt.step()
            sched.step()
            with torch.no_grad():
                flat.clamp_(0, 1)

        return iterations, tick, 1

    def _optimise(self, model, params, frozen, observations, labels, targets, iterations,
                  restarts):
        obs = observations[0]
        n = labels.shape[0]
        names = self._matched_names(params)
        if obs.kind == "gradient" and len(names) < len(params):
            # differentiate only the matched parameters: the rest act as constants
            frozen = {**frozen, **{k: v for k, v in params.items() if k not in names}}
            params = {k: params[k] for k in names}
        objective = self._objective(model, frozen, obs, _cosine_distance, self.tv_weight, names)
        flags = (True, True, False, False)
        value = self._map(objective, flags)
        pp = {k: v.expand(n, restarts, *v.shape) for k, v in params.items()}
        p0 = next(iter(params.values()))
        x = self._initial(labels, restarts, p0).requires_grad_(True)
        with torch.no_grad():
            initial = value(pp, x.detach(), labels, targets)[1].detach()
        step = self._map(grad_and_value(objective, argnums=1, has_aux=True), flags)
        opt = torch.optim.Adam([x], lr=self.lr)
        milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
        with _Interrupted(self.name) as guard, progress_bar(
            range(iterations), total=iterations, description=self.name, enabled=self.progress,
        ) as its:
            for it in its:
                guard.iteration = it
                gx, _ = step(pp, x.detach(), labels, targets)
                x.grad = gx.sign() if self.signed else gx
                opt.step()
                sched.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
        with torch.no_grad():
            final = value(pp, x.detach(), labels, targets)
        extra = {"initial_losses": initial.tolist(), "matched": ["gradients"] * n}
        return x.detach(), final[1].detach(), extra


class InvertingGradientsFedAvg(InvertingGradients):
    """Inverting Gradients on a FedAvg weight update (Geiping et al. 2020, Sec. 5).

    The same attack as :class:`InvertingGradients`, registered on its own for the
    ``"update"`` observation (several local SGD steps, simulated differentiably on
    the candidate images) with budgets sized for it: each iteration unrolls all
    the client's local steps, so an iteration costs about ``local_epochs x
    ceil(B / local_batch_size)`` gradient iterations. On a model with a wide first
    ``nn.Linear`` the update's block of that layer is separated into per-image
    features instead (the features drift little over a few local steps at a small
    learning rate), at the single-gradient budgets (:attr:`feature_budgets`). Same
    options.
    """

    name = "inverting-gradients-fedavg"
    observes: ClassVar[ObservationKind] = "update"
    # it also accepts batch-1 gradients (a caller may attack single images with it)
    budgets: ClassVar[dict[str, tuple[int, int]]] = {
        "quick": (60, 1), "standard": (300, 2), "thorough": (1000, 4),
    }
    #: the feature paths cost one backward pass per iteration, unrolled steps or not
    feature_budgets: ClassVar[dict[str, tuple[int, int]] | None] = (
        InvertingGradients.budgets
    )


class DLG(_GradientAttack):
    """Deep Leakage from Gradients (Zhu et al. 2019): L2 gradient matching with L-BFGS.

    Optimises the images and soft labels (softmax of free logits) jointly.
    Pixels are unconstrained while optimising and clamped to [0, 1] at the end.

    Args:
        seed: seeds the random initial images and label logits.
        budget: ``"quick"`` (100 L-BFGS iterations, 1 restart), ``"standard"``
            (300, 2) or ``"thorough"`` (1000, 4); None uses the context's.
        iterations: overrides the budget's L-BFGS iterations.
        restarts: overrides the budget's restarts.
        lr: L-BFGS step size (1, with a strong-Wolfe line search).
        max_parallel: as for :class:`InvertingGradients`.
        progress: show a progress bar.

    Raises:
        ConfigError: on an invalid option.
    """

    name = "dlg"
    budgets: ClassVar[dict[str, tuple[int, int]]] = {
        "quick": (100, 1), "standard": (300, 2), "thorough": (1000, 4),
    }
    #: iterations per L-BFGS ``step`` call (one progress tick)
    chunk: ClassVar[int] = 10
    learn_labels: ClassVar[bool] = True
    #: at the quick budget Inverting Gradients at batch 1 stands for DLG (see IDLG)
    quick_default: ClassVar[bool] = False

    Config = DLGConfig
    config: DLGConfig
    lr: float

    def _label_source(self) -> str:
        return "learn" if self.learn_labels else "infer"

    def _optimise(self, model, params, frozen, observations, labels, targets, iterations,
                  restarts):
        obs = observations[0]
        if self.context is None:
            raise StateError.build(
                what="attack", expected="a prepared attack", received="no context",
                fix="call attack.prepare(context) before reconstruct()",
            )
        n, b = labels.shape
        k = self.context.num_classes
        p0 = next(iter(params.values()))
        objective = self._objective(model, frozen, obs, _l2_distance, 0.0)
        pp = {k: v.expand(n, restarts, *v.shape) for k, v in params.items()}
        x = self._initial(labels, restarts, p0).requires_grad_(True)
        gen = self.generator()
        gen.manual_seed(self.seed + 1)
        logits = torch.randn(1, restarts, b, k, generator=gen).expand(n, -1, -1, -1).clone()
        logits = logits.to(p0).requires_grad_(True)

        if self.learn_labels:

            def soft(p: dict, xx: Tensor, ll: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
                return objective(p, xx, ll.softmax(dim=-1), target)

            flags = (True, True, True, False)
            step = self._map(grad_and_value(soft, argnums=(1, 2), has_aux=True), flags)
            variables = [x, logits]
        else:
            flags = (True, True, False, False)
            step = self._map(grad_and_value(objective, argnums=1, has_aux=True), flags)
            variables = [x]

        def closure() -> Tensor:
            if self.learn_labels:
                (gx, gl), (loss, _) = step(pp, x.detach(), logits.detach(), targets)
                logits.grad = gl
            else:
                gx, (loss, _) = step(pp, x.detach(), labels, targets)
            x.grad = gx
            return loss.sum().detach()

        with torch.no_grad():
            if self.learn_labels:
                initial = self._map(soft, flags)(pp, x.detach(), logits.detach(), targets)[1]
            else:
                initial = self._map(objective, flags)(pp, x.detach(), labels, targets)[1]

        opt = torch.optim.LBFGS(
            variables, lr=self.lr, max_iter=self.chunk, history_size=100,
            line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15,
        )
        rounds = max(1, math.ceil(iterations / self.chunk))
        with _Interrupted(self.name) as guard, progress_bar(
            range(rounds), total=rounds, description=self.name, enabled=self.progress
        ) as its:
            for it in its:
                guard.iteration = it * self.chunk
                opt.step(closure)
        with torch.no_grad():
            if self.learn_labels:
                final = self._map(soft, flags)(pp, x.detach(), logits.detach(), targets)[1]
            else:
                final = self._map(objective, flags)(pp, x.detach(), labels, targets)[1]
        final = torch.nan_to_num(final, nan=float("inf"))
        extra: dict[str, Any] = {"initial_losses": initial.detach().tolist()}
        if self.learn_labels:
            best = final.argmin(dim=1)
            extra["labels"] = logits.detach()[torch.arange(n), best].argmax(dim=-1)
        return torch.nan_to_num(x.detach(), nan=0.5), final.detach(), extra


class IDLG(DLG, _FeatureAttack):
    """Improved DLG (Zhao et al. 2020): labels from the last layer, then L2 matching
    with L-BFGS.

    The labels come from :func:`infer_labels_idlg` on the observed gradient of
    the last linear layer's weight (the observation's own labels are ignored:
    inferring them is the point of iDLG). Then, as in the paper, L-BFGS minimises
    a squared L2 distance; what it matches depends on ``features``:

    - ``features=True`` (default): at batch 1, when the model has an ``nn.Linear``
      with a bias and at least as many inputs as the image has values, the analytic
      step of iDLG is carried one layer further: that layer's input is read exactly
      from its weight and bias gradients (:func:`linear_input_from_gradient`, the
      observation of Phong et al. 2017 that R-GAP, Zhu & Blaschko 2021, builds on),
      and L-BFGS fits the images to it (relative squared distance). On trained
      ReLU/BatchNorm networks whole-gradient L2 matching from noise does not converge
      at a CPU budget (the paper's network trained on BreastMNIST: 9.6 dB, below the
      mean image); this least-squares problem does, in the same 100 iterations.
      Gradients that are not one clean image's (a defence's noise) fall back to
      gradient matching; batches take :class:`InvertingGradients`' separated-feature
      path.
    - ``features=False``: the paper's iDLG, L2 distance between whole gradients.

    Args:
        seed: seeds the initial images.
        budget: as :class:`DLG` (``"quick"``: 100 L-BFGS iterations, 1 restart).
        iterations: overrides the budget's L-BFGS iterations.
        restarts: overrides the budget's restarts.
        lr: L-BFGS step size (1, with a strong-Wolfe line search).
        init: ``"auxiliary"`` (default): start from the auxiliary mean image of the
            inferred label plus uniform noise of half-width ``init_noise``, when the
            attacker holds auxiliary images; ``"uniform"``: noise in [0, 1] (the paper).
        features: see above.
        max_parallel: as for :class:`InvertingGradients`.
        progress: show a progress bar.

    Raises:
        ConfigError: on an invalid option.

    Example:
        >>> import torch
        >>> from shieldsplit.attacks import AttackContext
        >>> from shieldsplit.attacks.observe import observe_gradient
        >>> from shieldsplit.functional.metrics import psnr
        >>> torch.manual_seed(0) and None
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 32),
        ...                           torch.nn.Sigmoid(), torch.nn.Linear(32, 3))
        >>> x = torch.rand(1, 1, 4, 4)
        >>> attack = IDLG(seed=0, progress=False)
        >>> attack.prepare(AttackContext(image_shape=(1, 4, 4), num_classes=3, model=net))
        >>> rec = attack.reconstruct(observe_gradient(net, x, torch.tensor([1])))
        >>> rec.labels.tolist(), rec.meta["matched"], bool(psnr(rec.images, x) > 40)
        ([1], "features of '1'", True)
    """

    name = "idlg"
    accepts: ClassVar[tuple[ObservationKind, ...]] = ("gradient",)
    learn_labels = False
    #: the audit's quick budget runs Inverting Gradients, which reads the same analytic
    #: labels; run iDLG by name, or at the standard budget
    quick_default = False

    Config = IDLGConfig
    config: IDLGConfig

    def _feature_descent(
        self, flat: Tensor, closure: Callable[[], Tensor], iterations: int
    ) -> tuple[int, Callable[[], None], int]:
        """L-BFGS (strong-Wolfe line search), ``chunk`` iterations per tick."""
        opt = torch.optim.LBFGS(
            [flat], lr=self.lr, max_iter=self.chunk, history_size=100,
            line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15,
        )
        return max(1, math.ceil(iterations / self.chunk)), lambda: opt.step(closure), self.chunk


register_attack("dlg", DLG)
register_attack("idlg", IDLG)
register_attack("inverting-gradients", InvertingGradients)
register_attack("inverting-gradients-fedavg", InvertingGradientsFedAvg)

__all__ = [
    "DLG",
    "IDLG",
    "DLGConfig",
    "GradientAttackConfig",
    "IDLGConfig",
    "InvertingGradients",
    "InvertingGradientsConfig",
    "InvertingGradientsFedAvg",
    "infer_labels_idlg",
    "linear_input_from_gradient",
]
