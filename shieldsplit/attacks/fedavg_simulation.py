"""Dimitrov et al.'s attack on FedAvg updates: simulate the client's local training.

An honest federated server holds the model it sent and one client's weight update
after several local SGD steps, and knows the protocol (local epochs, local batch size,
learning rate: the ``local_hyperparameters`` assumption). Dimitrov, Balunovic,
Konstantinov and Vechev ("Data Leakage in Federated Averaging", TMLR 2022) rebuild the
client's images by optimising candidate images so that the client's local training,
simulated differentiably on them from the sent weights, produces the observed update,
instead of treating the update as one gradient. Their priors: total variation, and the
epoch order-invariant prior: the client revisits the same images in every local epoch,
in an order the server does not know, so one candidate batch is kept per epoch and the
epochs' candidates, paired by the Hungarian algorithm, are pulled to their mean (which
is the reconstruction). Which classes share a step of a shuffled epoch is hidden too:
the attack tries random orders per epoch and keeps those whose simulated update matches
best at the initial images. When an epoch is a single local step (the batch fits one
local batch, as in the auditor's protocol) the order does not matter and one candidate
batch serves every epoch. Labels:
the observation's when the threat model grants them, else counted from the update of
the last layer's bias (:func:`~shieldsplit.functional.fedavg.label_counts_from_bias_update`).

:class:`FedAvgSimulation` adds one step before the simulation (``feature_weight > 0``),
which is not in the paper. On a trained network with eval-mode BatchNorm the client's
update can be a chaotic function of its images: on the frontier's PGSLNet (width 16,
BreastMNIST, 5 local steps of lr 1e-3) the update of the true images perturbed by 0.03
per pixel has a cosine of 0.83 with the observed one, and half of the true images with
the mean image in the other half matches it no better than random auxiliary batches
(``docs/results/fedavg_simulation.md``). Matching the update alone then only refines
images already within reach of the truth: from the auxiliary class means the paper's
attack lands 2.6 dB *below* the mean image there. What stays smooth is the first
``nn.Linear`` layer: its update is a sum of one outer product per image and step, so
each image's input to it *at the sent weights* lies in the row space of the update
(:func:`~shieldsplit.functional.fedavg.row_space`). The attack first fits a pool of
candidates (``restarts`` per image, started between the auxiliary mean and auxiliary
images) to that space (:func:`~shieldsplit.functional.fedavg.subspace_residual`),
picks the batch that together explains most of the update
(:func:`~shieldsplit.functional.fedavg.select_spanning`), pairs it with the labels
(:func:`~shieldsplit.functional.fedavg.assign_labels`), and then runs the simulation
from there, the residual staying in its objective; the simulation returns the lowest
objective it reached, not its last step. On the same page this rebuilds the frontier's
images 3.8 dB above the mean image. The step runs only where the row space tells images
apart (:attr:`FedAvgSimulation.feature_gate`: on an untrained network every image's
features lie almost in it). ``feature_weight=0`` is the paper's attack alone.

Example:
    >>> import torch
    >>> from shieldsplit.attacks import AttackContext
    >>> from shieldsplit.observe import observe_update
    >>> from shieldsplit.models import PGSLNet
    >>> torch.manual_seed(0) and None
    >>> net = PGSLNet(num_classes=3, image_size=8, width=4, hidden=8).eval()
    >>> x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 2])
    >>> obs = observe_update(net, x, y, local_epochs=2, local_batch_size=2, lr=0.01)
    >>> attack = FedAvgSimulation(seed=0, iterations=5, restarts=2, progress=False)
    >>> attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=3, model=net))
    >>> rec = attack.reconstruct(obs)
    >>> rec.images.shape, sorted(rec.labels.tolist()), rec.meta["labels_from"]
    (torch.Size([2, 1, 8, 8]), [0, 2], 'bias update')
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from shieldsplit._core.progress import progress_bar
from shieldsplit.attacks.base import (
    Attack,
    AttackContext,
    Budget,
    Observation,
    ObservationKind,
    Reconstruction,
    register_attack,
)
from shieldsplit.attacks.gradient import infer_labels_idlg
from shieldsplit.errors import (
    ConfigError,
    InputShapeError,
    LabelError,
    NonFiniteInputError,
    StateError,
)
from shieldsplit.functional.fedavg import (
    assign_labels,
    label_counts_from_bias_update,
    match_epochs,
    order_invariant_prior,
    row_space,
    select_spanning,
    subspace_residual,
    update_distance,
)
from shieldsplit.functional.image import total_variation
from shieldsplit.functional.stats import interleave_classes
from shieldsplit.observe import (
    fedavg_update,
    frozen_state,
    functional_copy,
    minibatch_schedule,
    trainable_parameters,
)


class FedAvgSimulationConfig(BaseModel):
    """Options of :class:`FedAvgSimulation` (see its Args)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    budget: Budget | None = None
    iterations: int | None = Field(default=None, ge=1)
    restarts: int | None = Field(default=None, ge=1)
    feature_iterations: int | None = Field(default=None, ge=0)
    lr: float = Field(default=0.05, gt=0.0, allow_inf_nan=False)
    feature_lr: float = Field(default=0.01, gt=0.0, allow_inf_nan=False)
    tv_weight: float = Field(default=0.1, ge=0.0, allow_inf_nan=False)
    order_weight: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    feature_weight: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    distance: Literal["cosine", "l2"] = "cosine"
    use_labels: bool = True
    init: Literal["auxiliary", "uniform"] = "auxiliary"


def _flat(tensors: dict[str, Tensor], names: list[str]) -> Tensor:
    return torch.cat([tensors[n].flatten() for n in names])


def _decay(opt: torch.optim.Optimizer, iterations: int) -> Any:
    """Step decay x0.1 at 3/8, 5/8 and 7/8 of the iterations (as Inverting Gradients)."""
    milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)


class FedAvgSimulation(Attack):
    """Dimitrov et al. 2022: rebuild a FedAvg client's images by simulating its local steps.

    Reference:
        Dimitrov, Balunovic, Konstantinov, Vechev, "Data Leakage in Federated
        Averaging", Transactions on Machine Learning Research, 2022.

    Args:
        seed: seeds the initial images.
        budget: ``"quick"`` (40 simulation iterations, 4 candidates per image, 200
            feature iterations), ``"standard"`` (150, 6, 400) or ``"thorough"``
            (500, 8, 800); None: the context's.
        iterations: Adam steps on the simulated-update objective (each unrolls every
            local step of the client, differentiated twice).
        restarts: candidates per image in the feature step; without it, independent
            restarts of the simulation (the lowest objective wins).
        feature_iterations: Adam steps of the feature step (one forward and backward
            pass of the pool each); 0 skips it.
        lr: Adam's step size on the pixels in the simulation (decayed x0.1 at 3/8,
            5/8, 7/8).
        feature_lr: the same for the feature step.
        tv_weight: weight of the total-variation prior. In the simulation this and the
            two weights below are relative to the matching loss at the initial images
            (an untrained network's update can match to 1e-6 from the start, a trained
            one's to 1); in the feature step it is relative to the residual.
        order_weight: weight of the epoch order-invariant prior (used when an epoch
            has more than one local step).
        feature_weight: weight of the row-space residual of the first ``nn.Linear``'s
            input (see the module notes); 0 runs the paper's attack alone.
        distance: ``"cosine"`` (one minus the cosine similarity of the whole updates)
            or ``"l2"`` (relative squared distance).
        use_labels: use ``Observation.labels`` when the threat model grants them.
        init: ``"auxiliary"``: start from auxiliary images (the feature step) or the
            auxiliary mean image of each label plus noise (the simulation), when the
            attacker holds auxiliary images; ``"uniform"``: noise in [0, 1].
        progress: show progress bars.

    Raises:
        ConfigError: on an invalid option.

    Example:
        >>> FedAvgSimulation(seed=0, budget="standard").schedule()
        (150, 6, 400)
    """

    name = "fedavg-simulation"
    threat_model = "federated"
    observes: ClassVar[ObservationKind] = "update"
    server = "honest"
    assumes = frozenset({"local_hyperparameters"})
    #: several times the cost of ``inverting-gradients-fedavg``: run by name, or at the
    #: standard and thorough budgets
    quick_default: ClassVar[bool] = False
    #: ``budget -> (iterations, restarts, feature iterations)``
    budgets: ClassVar[dict[str, tuple[int, int, int]]] = {
        "quick": (40, 4, 200), "standard": (150, 6, 400), "thorough": (500, 8, 800),
    }
    #: half-width of the uniform noise added to the initial images
    init_noise: ClassVar[float] = 0.05
    #: the feature step's candidates start this far from the auxiliary mean image towards
    #: an auxiliary image (1: the auxiliary image itself): near the mean, every candidate
    #: falls into the same victim's basin; at the auxiliary images, many stay in none
    pool_blend: ClassVar[float] = 0.5
    #: the feature step runs only where the probe images' median row-space residual is at
    #: least this: on an untrained network every image's features lie almost in the row
    #: space (median 0.0003 on an 8x8 PGSLNet), on the frontier's trained one they do not
    #: (0.95), and only there does the space tell the victims apart
    feature_gate: ClassVar[float] = 0.05
    #: random orders tried per epoch when an epoch has several steps (see ``_arrange``)
    arrangements: ClassVar[int] = 16
    #: images of the auxiliary data (or random images) the mean softmax output is taken on
    probe_images: ClassVar[int] = 256

    Config = FedAvgSimulationConfig
    config: FedAvgSimulationConfig
    budget: Budget | None
    iterations: int | None
    restarts: int | None
    feature_iterations: int | None
    lr: float
    feature_lr: float
    tv_weight: float
    order_weight: float
    feature_weight: float
    distance: Literal["cosine", "l2"]
    use_labels: bool
    init: str

    # -- options ---------------------------------------------------------------------------

    def schedule(self) -> tuple[int, int, int]:
        """The ``(iterations, restarts, feature iterations)`` this attack will run:
        explicit options win, else the ``budget`` option's, else the context's budget's.

        Returns:
            ``(iterations, restarts, feature_iterations)``.
        """
        budget = self.budget or (self.context.budget if self.context is not None else "quick")
        its, rs, fits = self.budgets[budget]
        return (self.iterations or its, self.restarts or rs,
                fits if self.feature_iterations is None else self.feature_iterations)

    # -- checks ----------------------------------------------------------------------------

    def _context(self) -> AttackContext:
        if self.context is None:
            raise StateError.build(
                what="attack", expected="a prepared attack", received="no context",
                fix="call attack.prepare(context) before reconstruct()")
        return self.context

    def _model(self) -> nn.Module:
        if self.context is None or self.context.model is None:
            raise StateError.build(
                what="attack", expected="prepare(AttackContext(model=...)) before reconstruct()",
                received="no model" if self.context is not None else "an unprepared attack",
                fix="call attack.prepare(context) with the model the server sent")
        return self.context.model

    def _validate(self, obs: Any, params: dict[str, Tensor]) -> dict[str, Tensor]:
        if not isinstance(obs, Observation) or obs.kind != "update":
            raise ConfigError.build(
                what="observation", expected="an Observation of kind 'update'",
                received=getattr(obs, "kind", type(obs).__name__),
                fix="observe a FedAvg update with shieldsplit.observe.observe_update")
        if self.context is None or tuple(obs.image_shape) != tuple(self.context.image_shape):
            raise InputShapeError.build(
                what="observation.image_shape", expected="the context's image shape",
                received=tuple(obs.image_shape), fix="prepare with the right image_shape")
        if obs.batch_size < 1 or obs.update is None or set(obs.update) != set(params):
            raise ConfigError.build(
                what="observation.update", expected="one tensor per trainable parameter",
                received=None if obs.update is None else sorted(obs.update)[:3],
                fix="observe with the model the attack was prepared with")
        for key in ("local_epochs", "local_batch_size", "lr"):
            if key not in obs.meta:
                raise ConfigError.build(
                    what="observation.meta", expected=f"a {key!r} entry",
                    received=sorted(obs.meta), fix="build it with observe_update()")
        for n, p in params.items():
            t = obs.update[n]
            if not isinstance(t, Tensor) or t.shape != p.shape:
                raise InputShapeError.build(
                    what=f"observation.update[{n!r}]", expected=f"shape {tuple(p.shape)}",
                    received=getattr(t, "shape", type(t).__name__),
                    fix="observe with the model the attack was prepared with")
            if not bool(torch.isfinite(t).all()):
                raise NonFiniteInputError.build(
                    what=f"observation.update[{n!r}]", expected="finite values",
                    received="NaN or infinity", fix="pass a finite update")
        p0 = next(iter(params.values()))
        return {n: obs.update[n].detach().to(p0) for n in params}

    # -- labels ----------------------------------------------------------------------------

    def _probe(self, like: Tensor) -> Tensor:
        """Images to measure the model's mean output on: auxiliary ones, else random."""
        context = self._context()
        aux = context.auxiliary_images
        if aux is not None and len(aux):
            return aux[: self.probe_images].detach().to(like)
        gen = self.generator()
        return torch.rand(self.probe_images, *context.image_shape, generator=gen).to(like)

    def _labels(self, obs: Observation, model: nn.Module, params: dict[str, Tensor],
                frozen: dict[str, Tensor], update: dict[str, Tensor],
                steps: int) -> tuple[Tensor, str]:
        k = self._context().num_classes
        if self.use_labels and obs.labels is not None:
            y = obs.labels
            if (not isinstance(y, Tensor) or y.dtype != torch.int64
                    or y.shape != (obs.batch_size,) or int(y.min()) < 0 or int(y.max()) >= k):
                raise LabelError.build(
                    what="observation.labels", expected=f"int64 ({obs.batch_size},) in "
                    f"[0, {k - 1}]", received=getattr(y, "shape", type(y).__name__),
                    fix="pass one label per image, or None to infer them")
            return y.cpu(), "given"
        last = None
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and f"{name}.weight" in update:
                last = name
        if last is None:
            raise ConfigError.build(
                what="model", expected="a classifier ending in a trainable nn.Linear",
                received=type(model).__name__,
                fix="grant the labels in Observation.labels")
        with torch.no_grad():
            probe = self._probe(next(iter(params.values())))
            probs = functional_call(model, {**params, **frozen}, (probe,)).softmax(1).mean(0)
        lr = float(obs.meta["lr"])
        if f"{last}.bias" in update:
            counts = label_counts_from_bias_update(
                update[f"{last}.bias"], lr=lr, steps=steps, batch_size=obs.batch_size,
                mean_probs=probs.cpu())
            return torch.repeat_interleave(torch.arange(k), counts), "bias update"
        return infer_labels_idlg(-update[f"{last}.weight"], batch_size=obs.batch_size,
                                 mean_probs=probs.cpu()), "weight update"

    # -- initial images --------------------------------------------------------------------

    def _auxiliary(self) -> tuple[Tensor, Tensor | None] | None:
        context = self.context
        aux = None if context is None else context.auxiliary_images
        if self.init == "uniform" or context is None or aux is None or len(aux) == 0:
            return None
        ay = context.auxiliary_labels
        if ay is None or len(ay) != len(aux):
            return aux.detach().float().cpu(), None
        return aux.detach().float().cpu(), ay.detach().long().cpu()

    def _start(self, labels: Tensor, restarts: int, like: Tensor) -> Tensor:
        """``(R, B, C, H, W)``: each label's auxiliary mean image plus noise, or noise."""
        context = self._context()
        b, shape = len(labels), context.image_shape
        gen = self.generator()
        noise = torch.rand(restarts, b, *shape, generator=gen)
        found = self._auxiliary()
        if found is None:
            return noise.to(like)
        aux, ay = found
        mean = aux.mean(0)
        centres = torch.stack([
            aux[ay == c].mean(0) if ay is not None and bool((ay == c).any()) else mean
            for c in range(context.num_classes)])
        base = centres[labels.cpu()]
        return (base + self.init_noise * (2 * noise - 1)).clamp(0, 1).to(like)

    def _pool(self, size: int, like: Tensor) -> Tensor:
        """``(size, C, H, W)``: distinct auxiliary images moved towards their mean (see
        :attr:`pool_blend`) plus noise, or noise."""
        gen = self.generator()
        noise = torch.rand(size, *self._context().image_shape, generator=gen)
        found = self._auxiliary()
        if found is None:
            return noise.to(like)
        aux = found[0]
        mean = aux.mean(0, keepdim=True)
        picks = torch.randperm(len(aux), generator=gen).repeat(math.ceil(size / len(aux)))
        base = mean + self.pool_blend * (aux[picks[:size]] - mean)
        return (base + self.init_noise * (2 * noise - 1)).clamp(0, 1).to(like)

    # -- the feature step (not in the paper) -----------------------------------------------

    @staticmethod
    def feature_layer(model: nn.Module, update: dict[str, Tensor]) -> str | None:
        """The first ``nn.Linear`` with a bias whose weight update leaves some of its
        input space out (numerical rank below its input size), else None.

        Args:
            model: the attacked model.
            update: the observed update.

        Returns:
            The layer's module name, or None.
        """
        for name, module in model.named_modules():
            if (isinstance(module, nn.Linear) and module.bias is not None
                    and f"{name}.weight" in update and f"{name}.bias" in update):
                rank = row_space(update[f"{name}.weight"]).shape[0]
                return name if 0 < rank < module.in_features else None
        return None

    def _features(self, model: nn.Module, layer: str) -> tuple[dict[str, Tensor], Any]:
        seen: dict[str, Tensor] = {}
        hook = model.get_submodule(layer).register_forward_hook(
            lambda m, i, o: seen.__setitem__("h", i[0]))
        return seen, hook

    def _probe_residual(self, model: nn.Module, weights: dict[str, Tensor], layer: str,
                        basis: Tensor) -> float:
        """The median row-space residual of the probe images (auxiliary or random): how
        well the row space tells the victims' features from other images'."""
        seen, hook = self._features(model, layer)
        try:
            with torch.no_grad():
                functional_call(model, weights, (self._probe(next(iter(weights.values()))),))
                return float(subspace_residual(seen["h"].flatten(1), basis).median())
        finally:
            hook.remove()

    def _feature_step(self, model: nn.Module, weights: dict[str, Tensor], layer: str,
                      basis: Tensor, update: Tensor, labels: Tensor, restarts: int,
                      iterations: int) -> tuple[Tensor, Tensor, Tensor]:
        """Fit ``restarts x B`` candidates to the row space; pick ``B`` and pair them with
        ``labels``. Returns the images ``(B, C, H, W)`` in the order of ``labels``, their
        residuals and the pool's initial mean residual."""
        b = len(labels)
        p0 = next(iter(weights.values()))
        x = self._pool(restarts * b, p0).requires_grad_(True)
        seen, hook = self._features(model, layer)
        opt = torch.optim.Adam([x], lr=self.feature_lr)
        sched = _decay(opt, iterations)
        try:
            def residual(images: Tensor) -> Tensor:
                functional_call(model, weights, (images,))
                return subspace_residual(seen["h"].flatten(1), basis)

            with torch.no_grad():
                initial = residual(x.detach()).mean()
            with progress_bar(range(iterations), total=iterations,
                              description=f"{self.name} (features)",
                              enabled=self.progress) as its:
                for _ in its:
                    opt.zero_grad()
                    loss = residual(x).sum()
                    if self.tv_weight:
                        loss = loss + self.tv_weight * total_variation(x).sum()
                    loss.backward()
                    opt.step()
                    sched.step()
                    with torch.no_grad():
                        x.clamp_(0, 1)
            with torch.no_grad():
                functional_call(model, weights, (x.detach(),))
                h = seen["h"].flatten(1)
                res = subspace_residual(h, basis)
                coords = (h @ basis.T) / h.norm(dim=1, keepdim=True).clamp_min(1e-30)
                picks = torch.tensor(select_spanning(coords, update @ basis.T, b))
                chosen = x.detach()[picks]
                logp = functional_call(model, weights, (chosen,)).log_softmax(1)
        finally:
            hook.remove()
        order = assign_labels(logp.cpu(), labels)
        return chosen[order], res[picks][order], initial

    # -- the simulation (the paper) --------------------------------------------------------

    def _plan(self, obs: Observation) -> tuple[bool, list[Tensor]]:
        """Whether one candidate batch per epoch is kept (an epoch of several steps, whose
        order a shuffling client hides), and the simulated steps' indices into the
        concatenated candidates."""
        b = obs.batch_size
        epochs, local = int(obs.meta["local_epochs"]), int(obs.meta["local_batch_size"])
        per_epoch = math.ceil(b / local) > 1 and epochs > 1
        one = minibatch_schedule(b, local_epochs=1 if per_epoch else epochs,
                                 local_batch_size=local, shuffle=False, seed=0)
        return per_epoch, [idx + e * b for e in range(epochs if per_epoch else 1)
                           for idx in one]

    def _arrange(self, model: nn.Module, params: dict[str, Tensor],
                 frozen: dict[str, Tensor], obs: Observation, target: Tensor,
                 schedule: list[Tensor], start: Tensor, labels: Tensor) -> Tensor:
        """``(E, B)`` the order of the candidates (and so of the labels) in each epoch whose
        simulated update, at the initial images, matches best: which classes share a step
        is what a shuffling client hides, and on a small network it shapes the update more
        than the images do. Coordinate descent over the epochs among
        :attr:`arrangements` random orders."""
        b, epochs = obs.batch_size, int(obs.meta["local_epochs"])
        gen = self.generator()
        lr, names = float(obs.meta["lr"]), list(params)
        options = [torch.arange(b)] + [torch.randperm(b, generator=gen)
                                       for _ in range(self.arrangements)]
        orders = torch.arange(b).repeat(epochs, 1)
        y = labels.to(target.device)

        def distance(o: Tensor) -> float:
            flat = o.flatten().to(target.device)
            with torch.no_grad():
                sim = fedavg_update(model, params, frozen, start[flat], y[flat],
                                    schedule=schedule, lr=lr)
                return float(update_distance(_flat(sim, names), target, kind=self.distance))

        for _ in range(2):
            for e in range(epochs):
                scores = []
                for option in options:
                    trial = orders.clone()
                    trial[e] = option
                    scores.append(distance(trial))
                orders[e] = options[int(torch.tensor(scores).argmin())]
        return orders

    def _simulate(self, model: nn.Module, params: dict[str, Tensor],
                  frozen: dict[str, Tensor], obs: Observation, update: dict[str, Tensor],
                  labels: Tensor, start: Tensor, layer: str | None, basis: Tensor | None,
                  iterations: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Adam on ``(R, E', B, C, H, W)`` candidates (one batch per epoch when an epoch has
        several steps, see :meth:`_arrange`). Returns the images ``(R, B, C, H, W)`` of the
        lowest objective each restart reached (where the update is a chaotic function of
        the images, a step can raise it), their labels ``(B,)``, that objective and the
        initial one per restart."""
        per_epoch, schedule = self._plan(obs)
        lr, names = float(obs.meta["lr"]), list(params)
        target = _flat(update, names)
        orders = (self._arrange(model, params, frozen, obs, target, schedule, start[0], labels)
                  if per_epoch else torch.arange(obs.batch_size)[None])
        epoch_labels = labels.cpu()[orders]  # (E', B)
        y = epoch_labels.flatten().to(target.device)
        use_features = layer is not None and basis is not None and self.feature_weight > 0
        seen, hook = self._features(model, layer) if use_features and layer else ({}, None)

        def objective(p: dict[str, Tensor], xs: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
            flat = xs.reshape(-1, *xs.shape[2:])
            simulated = fedavg_update(model, p, frozen, flat, y, schedule=schedule, lr=lr)
            match = update_distance(_flat(simulated, names), target, kind=self.distance)
            loss = match + scale * self.tv_weight * total_variation(flat).mean()
            if use_features and basis is not None:
                functional_call(model, {**p, **frozen}, (flat,))
                loss = loss + scale * self.feature_weight * subspace_residual(
                    seen["h"].flatten(1), basis).mean()
            return loss, match

        def prior(xs: Tensor) -> tuple[Tensor, Tensor]:
            """The order-invariant prior of every restart, and the consensus images."""
            out = [order_invariant_prior(xs[r], match_epochs(xs[r].detach(), epoch_labels))
                   for r in range(xs.shape[0])]
            return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])

        restarts = start.shape[0]
        x = start[:, orders.to(start.device)].clone().requires_grad_(True)  # (R, E', B, ...)
        pp = {n: v.expand(restarts, *v.shape) for n, v in params.items()}
        value = vmap(objective, in_dims=(0, 0, 0), randomness="different")
        step = vmap(grad_and_value(objective, argnums=1, has_aux=True), in_dims=(0, 0, 0),
                    randomness="different")
        # the priors' weights are relative to the matching loss at the initial images (an
        # untrained network's update can match to 1e-6 from the start, a trained one's 1)
        with torch.no_grad():
            scale = value(pp, x.detach(), torch.zeros(restarts).to(x))[1].clamp_min(1e-12)
        weight = scale * self.order_weight if per_epoch else None

        def total(xs: Tensor) -> Tensor:
            with torch.no_grad():
                loss = value(pp, xs, scale)[0]
                return loss + weight * prior(xs)[0] if weight is not None else loss

        opt = torch.optim.Adam([x], lr=self.lr)
        sched = _decay(opt, iterations)
        try:
            initial = total(x.detach())
            best, best_x = initial.clone(), x.detach().clone()
            with progress_bar(range(iterations), total=iterations, description=self.name,
                              enabled=self.progress) as its:
                for _ in its:
                    gx, (loss, _) = step(pp, x.detach(), scale)
                    if weight is not None:
                        xd = x.detach().requires_grad_(True)
                        penalty = prior(xd)[0]
                        gx = gx + torch.autograd.grad((weight * penalty).sum(), xd)[0]
                        loss = loss + weight * penalty.detach()
                    better = loss.detach() < best  # the objective at x, before this step
                    best = torch.where(better, loss.detach(), best)
                    best_x[better] = x.detach()[better]
                    x.grad = gx
                    opt.step()
                    sched.step()
                    with torch.no_grad():
                        x.clamp_(0, 1)
            final = total(x.detach())
            better = final < best
            best = torch.where(better, final, best)
            best_x[better] = x.detach()[better]
        finally:
            if hook is not None:
                hook.remove()
        images = prior(best_x)[1] if per_epoch else best_x[:, 0]
        return images, epoch_labels[0], best, initial

    # -- public ----------------------------------------------------------------------------

    def reconstruct(self, observation: Observation) -> Reconstruction:
        """Rebuild the images of one observed FedAvg update.

        Args:
            observation: an ``"update"`` observation (:func:`~shieldsplit.observe.observe_update`).

        Returns:
            The reconstruction: images ``(B, C, H, W)`` in [0, 1] (in no particular
            order: an update does not reveal it), the labels used, and ``meta`` with
            ``iterations``, ``restarts``, ``feature_iterations``, ``budget``, ``loss``
            (the best restart's final objective), ``initial_loss``, ``labels_from``
            (``given``, ``bias update`` or ``weight update``), ``matched`` (what the
            attack fitted) and, after the feature step, ``feature_residuals``.

        Raises:
            StateError: if :meth:`prepare` was not called with a model.
            ConfigError: on a wrong observation kind, parameter names or protocol meta.
            InputShapeError: on mismatched shapes.
            NonFiniteInputError: on NaN or infinity in the update.
        """
        start_time = time.perf_counter()
        model = self._model()
        params = trainable_parameters(model)
        update = self._validate(observation, params)
        clone, frozen = functional_copy(model), frozen_state(model)
        b = observation.batch_size
        epochs = int(observation.meta["local_epochs"])
        local = int(observation.meta["local_batch_size"])
        steps = epochs * math.ceil(b / local)
        labels, labels_from = self._labels(observation, clone, params, frozen, update, steps)
        if math.ceil(b / local) > 1:  # a guess at each shuffled step's classes: mixed
            labels = labels[interleave_classes(labels)]
        iterations, restarts, feature_its = self.schedule()
        layer = self.feature_layer(clone, update) if self.feature_weight > 0 else None
        basis = None if layer is None else row_space(update[f"{layer}.weight"])
        p0 = next(iter(params.values()))
        meta: dict[str, Any] = {}
        if layer is not None and basis is not None:
            meta["probe_residual"] = self._probe_residual(clone, {**params, **frozen}, layer,
                                                          basis)
            if meta["probe_residual"] < self.feature_gate:  # the space holds any image
                layer = basis = None
        if layer is not None and basis is not None and feature_its > 0:
            chosen, residuals, pool_initial = self._feature_step(
                clone, {**params, **frozen}, layer, basis, update[f"{layer}.weight"],
                labels.to(p0.device), restarts, feature_its)
            start, sim_restarts = chosen[None], 1
            meta.update(feature_residuals=residuals.tolist(),
                        feature_initial_residual=float(pool_initial))
            matched = f"row space of {layer!r}'s update, then the simulated update"
        else:
            start, sim_restarts = self._start(labels, restarts, p0), restarts
            matched = "the simulated update"
        images, rebuilt, final, initial = self._simulate(
            clone, params, frozen, observation, update, labels, start, layer, basis,
            iterations)
        best = int(final.argmin())
        meta.update(iterations=iterations, restarts=sim_restarts, feature_iterations=(
            feature_its if "feature_residuals" in meta else 0),
            budget=self.budget or (self.context.budget if self.context else "quick"),
            loss=float(final[best]), initial_loss=float(initial[best]),
            restart_losses=final.tolist(), labels_from=labels_from, matched=matched)
        return Reconstruction(
            images=images[best].clamp(0, 1).detach().cpu(), attack=self.name,
            labels=rebuilt.cpu(), seconds=time.perf_counter() - start_time, meta=meta)


register_attack("fedavg-simulation", FedAvgSimulation)

__all__ = ["FedAvgSimulation", "FedAvgSimulationConfig"]
