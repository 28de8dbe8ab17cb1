"""The feature paths of the gradient attacks: :class:`FeatureAttack`.

On a model with an ``nn.Linear`` that has a bias and at least as many inputs as an
image has values (the PGSL paper's network), the layer's input is read from its
gradient and the images are fitted to it, instead of matching the whole gradient: on
trained ReLU/BatchNorm networks whole-gradient matching converges far too slowly for a
CPU budget. At batch 1 the input is exact
(:func:`~shieldsplit.functional.gradients.linear_input_from_gradient`). At batch > 1
and on FedAvg updates the layer's weight gradient is a sum of one rank-one term per
image; its rows are separated into per-image features
(:func:`~shieldsplit.functional.separation.separate_nonnegative_sources`, in the spirit
of the Cocktail Party Attack, Kariyappa et al. 2023) and one image is fitted to each.
:class:`~shieldsplit.attacks.inverting_gradients.InvertingGradients` (Adam) and
:class:`~shieldsplit.attacks.idlg.IDLG` (L-BFGS) subclass it.

Example:
    >>> import torch
    >>> from shieldsplit.attacks import AttackContext, create_attack
    >>> from shieldsplit.observe import observe_gradient
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8),
    ...                           torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> attack = create_attack("inverting-gradients", seed=0, iterations=5, progress=False)
    >>> isinstance(attack, FeatureAttack)
    True
    >>> attack.prepare(AttackContext(image_shape=(1, 4, 4), num_classes=3, model=net))
    >>> obs = observe_gradient(net, torch.rand(1, 1, 4, 4), torch.tensor([2]))
    >>> attack.reconstruct(obs).meta["matched"]
    "features of '1'"
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from shieldsplit.attacks.base import Observation, Reconstruction
from shieldsplit.attacks.gradient_base import GradientAttack
from shieldsplit.errors import StateError
from shieldsplit.functional.gradients import (
    cosine_distance,
    linear_input_from_gradient,
    squared_distance,
)
from shieldsplit.functional.image import total_variation
from shieldsplit.functional.separation import separate_nonnegative_sources
from shieldsplit.observe import frozen_state, functional_copy, trainable_parameters

logger = logging.getLogger(__name__)


class FeatureAttack(GradientAttack):
    """The feature paths shared by
    :class:`~shieldsplit.attacks.inverting_gradients.InvertingGradients` and
    :class:`~shieldsplit.attacks.idlg.IDLG`.

    At batch 1 the input of the first wide ``nn.Linear`` with a bias is read exactly
    from its gradient (:func:`linear_input_from_gradient`) and images are fitted to it;
    at batch > 1 and on FedAvg updates the per-image features are separated from the
    layer's gradient first (see :meth:`reconstruct_many`). Subclasses choose the
    optimiser (:meth:`_feature_descent`) and declare the ``init`` and ``features``
    options (see ``InvertingGradients``' Args).
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
    #: ``budget -> iterations`` of the gradient matching that refines the feature path
    #: (:meth:`_refine`, one restart); None, or a budget not listed: :attr:`budgets`
    refine_budgets: ClassVar[dict[str, int] | None] = None

    init: str
    features: bool
    #: images ``(1, 1, B, C, H, W)`` that start gradient matching instead of
    #: :meth:`_start`'s, while :meth:`_refine` runs (one restart)
    _seed_images: Tensor | None = None
    #: weight of a total-variation prior on the feature path through a NARROW layer
    #: (fewer features than image values, so the features leave part of the image free;
    #: the prior fills it smoothly). Chosen on BreastMNIST validation images, quick
    #: budget, trained ResNet-18, 8 images at batch 1: TV 0 13.80 dB, 0.2 16.20, 1 18.47,
    #: 2 19.01, 5 19.24, 20 19.11 (the mean auxiliary image: 17.36); DenseNet-121 13.43,
    #: 17.61 (1), 18.18 (2), 18.49 (5); ResNet-18 at batch 8: 16.68, 17.46 (1), 17.40 (5)
    narrow_tv_weight: ClassVar[float] = 5.0

    def refining(self) -> bool:
        """Whether gradient matching is now refining the feature path's images
        (:meth:`_refine`): subclasses may step differently then.

        Returns:
            True inside :meth:`_refine`.
        """
        return self._seed_images is not None

    def schedule(self) -> tuple[int, int]:
        """The ``(iterations, restarts)`` of gradient matching (see the base class); while
        it refines the feature path's images (:meth:`_refine`), one restart of
        :attr:`refine_budgets`' iterations (an explicit ``iterations`` option wins).

        Returns:
            ``(iterations, restarts)``.
        """
        iterations, restarts = super().schedule()
        if self._seed_images is None:
            return iterations, restarts
        if self.refine_budgets is not None and self.iterations is None:
            iterations = self.refine_budgets.get(self._effective_budget(), iterations)
        return iterations, 1

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
        if self._seed_images is not None:
            return self._seed_images.to(like)
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

    def _prior(self, count: int, like: Tensor) -> Tensor:
        """``count`` copies ``(count, C, H, W)`` of the guess that knows nothing of an
        image: the mean auxiliary image (grey 0.5 with ``init="uniform"`` or no
        auxiliary images). No noise: it is a reconstruction, not a starting point."""
        context = self.context
        aux = None if context is None else context.auxiliary_images
        if context is None:
            raise StateError.build(
                what="attack", expected="a prepared attack", received="no context",
                fix="call attack.prepare(context) before reconstruct()",
            )
        if self.init == "uniform" or aux is None or len(aux) == 0:
            mean = torch.full(context.image_shape, 0.5)
        else:
            mean = aux.detach().float().cpu().mean(dim=0)
        return mean.expand(count, *mean.shape).clone().to(like)

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

    def _first_linear(self, model: nn.Module, params: dict[str, Tensor]) -> tuple[str, bool] | None:
        """``(name, narrow)`` of the first nn.Linear with a trainable weight and bias
        (``narrow``: fewer inputs than an image has values), else None."""
        pixels = math.prod(self.context.image_shape) if self.context is not None else 0
        for mod_name, module in model.named_modules():
            if (
                isinstance(module, nn.Linear) and module.bias is not None
                and f"{mod_name}.weight" in params and f"{mod_name}.bias" in params
            ):
                return mod_name, module.in_features < pixels
        return None

    def _feature_layer(self, model: nn.Module, params: dict[str, Tensor]) -> str | None:
        """The first nn.Linear with a trainable weight and bias and at least as many
        inputs as an image has values (fewer cannot pin the image down), else None.
        On a model above :attr:`quick_parameters` a narrower layer is taken too: inverting
        its features is cheap where matching every parameter's gradient is not, although
        they may not determine the image. At the quick budget (:meth:`oversized`) that is
        the whole attack; at the others gradient matching refines it (:meth:`_refines`)."""
        found = self._first_linear(model, params)
        if found is None:
            return None
        name, narrow = found
        return name if not narrow or self._parameter_count() > self.quick_parameters else None

    def path(self, *, kind: str = "gradient", batch_size: int = 1) -> str:
        """The path :meth:`reconstruct_many` plans on the prepared model at this budget
        for observations of ``kind`` (``"gradient"`` or ``"update"``) and ``batch_size``
        (observations a defence has altered may still fall back to gradient matching).

        Args:
            kind: the observation kind.
            batch_size: the observed batch's size.

        Returns:
            ``"features"``, ``"features, then gradients"`` (the feature path's images
            seed gradient matching, :meth:`_refine`) or ``"gradients"``.
        """
        model = self._model()
        params = trainable_parameters(model)
        if not self.features or self._feature_layer(model, params) is None:
            return "gradients"
        refined = self._refines(model, params, kind, batch_size)
        return "features, then gradients" if refined else "features"

    def _feature_tv(self, model: nn.Module, params: dict[str, Tensor]) -> float:
        """The feature path's TV weight: :attr:`narrow_tv_weight` through a narrow layer,
        else 0 (a wide layer's features determine the image)."""
        found = self._first_linear(model, params)
        return self.narrow_tv_weight if found is not None and found[1] else 0.0

    def _refines(self, model: nn.Module, params: dict[str, Tensor], kind: str,
                 batch_size: int) -> bool:
        """Whether the feature path's images seed a gradient matching that may replace
        them (:meth:`_refine`): for a batch-1 gradient, through a narrow layer of a model
        above :attr:`quick_parameters`, above the quick budget, where the features alone
        cannot pin the image down and the budget pays for the matching. Not at batch > 1
        nor on updates: there, on BreastMNIST validation images against a trained
        ResNet-18 (batch 8, 300 iterations), it did not beat the separated features
        (17.42 dB) at any prior weight tried (0.2: 16.03, 0.5: 17.07, 2: 17.38 dB), at
        about 40 times their cost."""
        found = self._first_linear(model, params)
        return (found is not None and found[1] and not self.oversized()
                and self._parameter_count() > self.quick_parameters
                and kind == "gradient" and batch_size == 1)

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
        Through a narrow layer above the quick budget (:meth:`_refines`) each feature
        path's images then seed gradient matching (:meth:`_refine`).
        ``meta['matched']`` says which path ran and ``loss``/``initial_loss`` are
        that path's matching loss.
        """
        model = self._model()
        params = trainable_parameters(model)
        self._validate(observations, params)
        layer = self._feature_layer(model, params) if self.features else None
        if layer is None:
            return super().reconstruct_many(observations)
        recs = self._feature_reconstructions(observations, layer)
        if not self._refines(model, params, observations[0].kind, observations[0].batch_size):
            return recs
        return [
            self._refine(o, r) if r.meta["matched"].startswith(("features", "separated"))
            else r for o, r in zip(observations, recs, strict=True)
        ]

    def _feature_reconstructions(
        self, observations: Sequence[Observation], layer: str
    ) -> list[Reconstruction]:
        """The feature paths of :meth:`reconstruct_many` (see there) through ``layer``."""
        first = observations[0]
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

    def _refine(self, obs: Observation, rec: Reconstruction) -> Reconstruction:
        """Gradient matching (one restart, :attr:`refine_budgets`' iterations) of a batch-1 gradient
        started from the feature path's image ``rec``; the refined image replaces it only
        when it matches the observed gradient better than ``rec``'s image does, so a
        budget above quick never ends further from the observation than the feature
        path alone. ``meta['feature_loss']`` keeps the feature path's own loss."""
        start = time.perf_counter()
        self._seed_images = rec.images[None, None].clone()  # (N=1, R=1, B=1, C, H, W)
        try:
            refined = super().reconstruct_many([obs])[0]
        finally:
            self._seed_images = None
        seconds = rec.seconds + time.perf_counter() - start
        seeded, final = refined.meta["initial_loss"], refined.meta["loss"]
        summary = {"feature_loss": rec.meta.get("loss"), "seed_loss": seeded,
                   "refined_loss": final}
        if final < seeded:
            meta = {**refined.meta, **summary,
                    "matched": f"{rec.meta['matched']}, then gradients"}
            return Reconstruction(images=refined.images, attack=self.name,
                                  labels=refined.labels, seconds=seconds, meta=meta)
        meta = {**rec.meta, **summary,
                "matched": f"{rec.meta['matched']} (gradient matching did not improve it)"}
        return Reconstruction(images=rec.images, attack=self.name, labels=rec.labels,
                              seconds=seconds, meta=meta)

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
        images = self._prior(b, p0)
        final = initial = None
        if k:
            x = self._start(none[:k], restarts, p0, by_label=False)
            fitted, final, initial = self._fit_features(
                clone, {**params, **frozen}, layer, x, sources.to(p0), iterations,
                direction=affine if affine is not None else True,
                tv_weight=self._feature_tv(model, params),
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
        tv_weight: float = 0.0,
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
                out = squared_distance(h, target) / target.pow(2).sum().clamp_min(1e-12)
            else:
                if scale is not None and shift is not None:  # compare h - shift, scale * r
                    h, target = h - shift, target * scale
                out = cosine_distance(h, target)
            return out + tv_weight * total_variation(xx).mean() if tv_weight else out

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
            self._iterate(ticks, lambda _: tick(), description=f"{self.name} (features)",
                          per_tick=per_tick)
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
            clone, {**params, **frozen}, layer, x, feats.to(p0), iterations,
            tv_weight=self._feature_tv(model, params),
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



__all__ = ["FeatureAttack"]
