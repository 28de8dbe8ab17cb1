"""GAN-prior inversion: search a DCGAN generator's latent space to match the observation.

:class:`DCGANPrior` (``"gan-prior"``) trains a small DCGAN (Radford, Metz, Chintala
2015: transposed-conv generator with BatchNorm and ReLU, strided-conv
discriminator with LeakyReLU, Adam 2e-4 with beta1 0.5) on the attacker's
auxiliary images in :meth:`~DCGANPrior.prepare`. :meth:`~DCGANPrior.reconstruct`
then searches latent codes ``z`` (several random starts per image, all in one
batch) so that the generated images explain the observation:

- ``"activations"`` (split learning): minimise ``mean((head(G(z)) - a)^2)`` where
  ``head`` is ``context.model`` (a client part, or a SplitShield whose saliency
  channel is then a free input, as in the white-box attack);
- ``"gradient"`` (one federated step of ``context.model``, the whole model):
  minimise the cosine distance between the gradient of the cross-entropy of
  ``model(G(z))`` and the observed gradient (Geiping et al. 2020's distance). The
  labels are the observation's, or inferred from the last layer's gradient
  (iDLG: the rows with negative sums belong to the batch's classes).

Both stay small and CPU-friendly: the generator has two up-sampling stages and is
sized from the image shape (28x28, 8x8 or any size; any number of channels).

Example:
    >>> import torch
    >>> import shieldsplit as ss
    >>> from shieldsplit.attacks import AttackContext, create_attack
    >>> from shieldsplit.attacks.observe_split import observe_activations
    >>> head = ss.split_model(ss.PGSLNet(num_classes=2, image_size=8, width=8, hidden=8), 2).head
    >>> attack = create_attack("gan-prior", seed=0, epochs=1, iterations=5, progress=False)
    >>> attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=2, model=head,
    ...                              auxiliary_images=torch.rand(64, 1, 8, 8)))
    >>> rec = attack.reconstruct(observe_activations(head, torch.rand(2, 1, 8, 8)))
    >>> tuple(rec.images.shape)
    (2, 1, 8, 8)

References:
    Radford, Metz, Chintala. "Unsupervised representation learning with deep
    convolutional generative adversarial networks". arXiv:1511.06434, 2015.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from shieldsplit._core.progress import progress_bar
from shieldsplit.attacks.base import (
    LARGE_IMAGE_PIXELS,
    Assumption,
    Attack,
    AttackContext,
    Observation,
    ObservationKind,
    Reconstruction,
    ThreatModel,
    fingerprint,
    register_attack,
)
from shieldsplit.attacks.split import (
    SEARCH_ITERATIONS,
    SEARCH_RESTARTS,
    FitToSize,
    check_activation_observation,
    check_auxiliary,
    check_context,
    client_map,
    require_prepared,
)
from shieldsplit.errors import ConfigError, InputShapeError
from shieldsplit.training import eval_mode, fit_epochs, seeded, tensor_batches

#: GAN training epochs per budget.
GAN_EPOCHS = {"quick": 20, "standard": 60, "thorough": 200}


class Generator(nn.Module):
    """DCGAN generator: linear to a quarter-size map, two transposed convs, sigmoid.

    Args:
        latent_dim: size of ``z``.
        image_shape: ``(C, H, W)`` of the output.
        width: channels of the last hidden stage (the first has twice as many).
    """

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int], width: int) -> None:
        super().__init__()
        c, h, w = image_shape
        h0, w0 = max(1, math.ceil(h / 4)), max(1, math.ceil(w / 4))
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 2 * width * h0 * w0), nn.BatchNorm1d(2 * width * h0 * w0),
            nn.ReLU(), nn.Unflatten(1, (2 * width, h0, w0)),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, c, 4, stride=2, padding=1),
            FitToSize((h, w)), nn.Sigmoid(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """DCGAN discriminator: two strided convs with LeakyReLU, then a linear logit.

    Args:
        image_shape: ``(C, H, W)`` of the input.
        width: channels of the first conv (the second has twice as many).
    """

    def __init__(self, image_shape: tuple[int, int, int], width: int) -> None:
        super().__init__()
        c, h, w = image_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2), nn.Flatten(),
        )
        with torch.no_grad():
            n = int(self.features(torch.zeros(2, c, h, w)).shape[1])
        self.logit = nn.Linear(n, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.logit(self.features(x)).squeeze(1)


def infer_labels(gradients: dict[str, Tensor], num_classes: int, batch_size: int) -> Tensor:
    """Labels from the last layer's gradient (iDLG, extended to batches by ranking).

    With cross-entropy, ``dL/dW_k = mean_i (p_ik - y_ik) h_i``; for non-negative
    features ``h`` the row of a class present in the batch has a negative sum.
    The most negative rows are taken (repeating the most negative ones when the
    batch is larger than the number of classes).

    Args:
        gradients: parameter name -> gradient.
        num_classes: number of classes.
        batch_size: labels to return.

    Returns:
        ``(batch_size,)`` int64 labels.

    Raises:
        InputShapeError: if no 2-D gradient has ``num_classes`` rows.
    """
    last = None
    for g in gradients.values():
        if isinstance(g, Tensor) and g.dim() == 2 and g.shape[0] == num_classes:
            last = g
    if last is None:
        raise InputShapeError.build(
            what="observation.gradients",
            expected=f"a final linear layer gradient with {num_classes} rows",
            received=[tuple(g.shape) for g in gradients.values()][-3:],
            fix="pass observation.labels, or observe the whole model's gradient",
        )
    order = last.sum(dim=1).argsort()
    return order[torch.arange(batch_size) % min(batch_size, num_classes)].long()


#: trained generators by (images, options): an audit's control runs the same DCGAN on the
#: same auxiliary images, so it is trained once (:func:`clear_dcgan_cache` empties it)
_DCGAN_CACHE: dict[str, tuple[Generator, list[tuple[float, float]]]] = {}
#: at most this many generators are kept (oldest first out)
DCGAN_CACHE_SIZE = 4


def clear_dcgan_cache() -> None:
    """Forget every cached DCGAN generator."""
    _DCGAN_CACHE.clear()


def train_dcgan(
    images: Tensor,
    *,
    latent_dim: int,
    width: int,
    epochs: int,
    batch_size: int,
    seed: int,
    progress: bool = False,
    description: str = "DCGAN",
) -> tuple[Generator, list[tuple[float, float]]]:
    """Train a DCGAN (Radford et al. 2016) on ``images``; cached by images and options.

    The generator comes back in eval mode with frozen weights; the cached object itself
    is returned, so use it, do not train it.

    Args:
        images: the training images ``(N, C, H, W)`` in [0, 1].
        latent_dim: the latent code's size.
        width: the networks' base width.
        epochs: passes over ``images``.
        batch_size: images per step.
        seed: seeds the initialisation, the shuffling and the latent draws.
        progress: show a progress bar.
        description: the progress bar's label.

    Returns:
        The generator and the ``(discriminator, generator)`` loss of every epoch.

    Example:
        >>> imgs = torch.rand(8, 1, 8, 8)
        >>> gen, losses = train_dcgan(imgs, latent_dim=4, width=4, epochs=1, batch_size=4,
        ...                           seed=0)
        >>> gen is train_dcgan(imgs, latent_dim=4, width=4, epochs=1, batch_size=4,
        ...                    seed=0)[0], len(losses)
        (True, 1)
    """
    key = f"{fingerprint(images)}-{latent_dim}-{width}-{epochs}-{batch_size}-{seed}"
    if key in _DCGAN_CACHE:
        return _DCGAN_CACHE[key]
    shape = (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))
    with seeded(seed):
        gen_net = Generator(latent_dim, shape, width)
        disc = Discriminator(shape, width)
    opt_g = torch.optim.Adam(gen_net.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    # the discriminator's data: every auxiliary image labelled "real" (1)
    batches = tensor_batches(images, images.new_ones(int(images.shape[0])),
                             batch_size=batch_size)
    sums = {"d": 0.0, "g": 0.0, "seen": 0.0}

    def step(real: Tensor, ones: Tensor) -> int:
        m = int(real.shape[0])
        fake = gen_net(torch.randn(m, latent_dim))  # drawn from the loop's seed
        d_loss = (F.binary_cross_entropy_with_logits(disc(real), ones)
                  + F.binary_cross_entropy_with_logits(disc(fake.detach()), 1 - ones))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = F.binary_cross_entropy_with_logits(disc(fake), ones)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        sums["d"] += float(d_loss.detach()) * m
        sums["g"] += float(g_loss.detach()) * m
        sums["seen"] += m
        return m

    def end_epoch(epoch: int, seconds: float) -> tuple[float, float]:
        record = (sums["d"] / sums["seen"], sums["g"] / sums["seen"])
        sums.update(d=0.0, g=0.0, seen=0.0)
        return record

    losses, _ = fit_epochs(
        nn.ModuleList([gen_net, disc]), batches, epochs=epochs, step=step, end_epoch=end_epoch,
        score=lambda r: None, seed=seed, description=description, progress=progress,
        progress_unit="epoch",
    )  # leaves both networks in eval mode
    for p in gen_net.parameters():
        p.requires_grad_(False)
    while len(_DCGAN_CACHE) >= DCGAN_CACHE_SIZE:
        _DCGAN_CACHE.pop(next(iter(_DCGAN_CACHE)))
    _DCGAN_CACHE[key] = (gen_net, losses)
    return gen_net, losses


class DCGANPriorConfig(BaseModel):
    """Options of :class:`DCGANPrior` (see its Args).

    Attributes:
        epochs: DCGAN training epochs; None: the budget's (:data:`GAN_EPOCHS`).
        iterations: latent-search steps; None: the budget's.
        restarts: latent-search restarts; None: the budget's.
        latent_dim: the latent code's size.
        width: the networks' base width.
        batch_size: DCGAN training batch size.
        lr: the latent search's step size.
        latent_weight: weight of the latent code's norm penalty (>= 0).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    epochs: int | None = Field(default=None, ge=1)
    iterations: int | None = Field(default=None, ge=1)
    restarts: int | None = Field(default=None, ge=1)
    latent_dim: int = Field(default=32, ge=1)
    width: int = Field(default=32, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=0.05, gt=0.0, allow_inf_nan=False)
    latent_weight: float = Field(default=1e-3, ge=0.0, allow_inf_nan=False)


class DCGANPrior(Attack):
    """Latent search of a DCGAN trained on the auxiliary data.

    Args:
        seed: seeds the GAN's training and the latent starts.
        epochs: GAN epochs; None takes the budget's default (:data:`GAN_EPOCHS`).
        iterations: latent-search steps; None takes the budget's default.
        restarts: latent starts per image; None takes the budget's default.
        latent_dim: size of ``z``.
        width: channels of the generator's and discriminator's hidden stages.
        batch_size: GAN training batch size.
        lr: learning rate of the latent search (Adam).
        latent_weight: weight of ``mean(z^2)``, which keeps ``z`` near the prior.
        progress: show progress bars.

    ``observes`` is ``"activations"``; ``"gradient"`` observations are accepted too.
    """

    name: ClassVar[str] = "gan-prior"
    quick_max_pixels: ClassVar[int | None] = LARGE_IMAGE_PIXELS
    threat_model: ClassVar[ThreatModel] = "gan_prior"
    assumes: ClassVar[frozenset[Assumption]] = frozenset({"auxiliary_data", "client_weights"})
    observes: ClassVar[ObservationKind] = "activations"
    #: The fewest auxiliary images the GAN trains on.
    min_auxiliary = 32

    Config = DCGANPriorConfig
    config: DCGANPriorConfig
    epochs: int | None
    iterations: int | None
    restarts: int | None
    latent_dim: int
    width: int
    batch_size: int
    lr: float
    latent_weight: float

    def __init__(self, *, seed: int = 0, progress: bool = True, **options: Any) -> None:
        super().__init__(seed=seed, progress=progress, **options)
        self.generator_net: Generator | None = None
        self.gan_losses: list[tuple[float, float]] = []

    def prepare(self, context: AttackContext) -> None:
        """Train the DCGAN on the auxiliary images.

        Args:
            context: needs ``auxiliary_images`` (at least :attr:`min_auxiliary`) and
                ``model`` (the client part, a SplitShield, or the whole model for
                gradient observations).

        Raises:
            EmptyDataError: too few auxiliary images.
            ConfigError: no model in the context, or a bad budget.
            InputShapeError: auxiliary images of the wrong shape.
        """
        context = check_context(context)
        images = check_auxiliary(context, self.min_auxiliary, self.name)
        if not isinstance(context.model, nn.Module):
            raise ConfigError.build(
                what="context.model",
                expected="the model whose output the latent search matches (client part for "
                "activations, whole model for gradients)",
                received=type(context.model).__name__, fix="pass AttackContext(model=...)",
            )
        epochs = self.epochs or GAN_EPOCHS[context.budget]
        gen_net, losses = train_dcgan(
            images, latent_dim=self.latent_dim, width=self.width, epochs=epochs,
            batch_size=self.batch_size, seed=self.seed, progress=self.progress,
            description=f"{self.name}: DCGAN",
        )
        self.context = context
        self.generator_net = gen_net
        self.gan_losses = losses

    def sample(self, n: int) -> Tensor:
        """``n`` images from the trained generator (seeded with the attack's seed).

        Raises:
            StateError: before :meth:`prepare`.
        """
        gen_net = require_prepared(self.generator_net, self.name)
        with torch.no_grad():
            return gen_net(torch.randn(n, self.latent_dim, generator=self.generator()))

    def reconstruct(self, observation: Observation) -> Reconstruction:
        """Search latent codes whose images explain the observation.

        Returns:
            Images in [0, 1]; ``labels`` (inferred or given) for gradient observations;
            ``meta`` has ``initial_loss``, ``final_loss``, ``iterations``, ``restarts``.

        Raises:
            StateError: before :meth:`prepare`.
            ConfigError: for an ``"update"`` observation.
            InputShapeError: a malformed observation.
        """
        gen_net = require_prepared(self.generator_net, self.name)
        context = self.context
        if context is None:  # set together with the generator
            raise ConfigError.build(what="context", expected="a context", received=None,
                                    fix="call prepare()")
        if isinstance(observation, Observation) and observation.kind == "gradient":
            return self._match_gradient(gen_net, context, observation)
        a = check_activation_observation(observation, self.name)
        return self._match_activations(gen_net, context, a)

    # ------------------------------------------------------------------ internals
    def _steps(self, context: AttackContext) -> tuple[int, int]:
        return (self.iterations or SEARCH_ITERATIONS[context.budget],
                self.restarts or SEARCH_RESTARTS[context.budget])

    def _match_activations(
        self, gen_net: Generator, context: AttackContext, a: Tensor
    ) -> Reconstruction:
        start = time.perf_counter()
        iterations, restarts = self._steps(context)
        model = context.model
        if model is None:
            raise ConfigError.build(what="context.model", expected="a module", received=None,
                                    fix="pass AttackContext(model=...)")
        fn, needs_map = client_map(model)
        b = int(a.shape[0])
        c, h, w = context.image_shape
        z = torch.randn(restarts * b, self.latent_dim, generator=self.generator())
        z.requires_grad_(True)
        params = [z]
        m = None
        if needs_map:
            m = torch.zeros(restarts * b, 1, h, w).requires_grad_(True)
            params.append(m)
        target = a.repeat(restarts, *([1] * (a.dim() - 1)))
        opt = torch.optim.Adam(params, lr=self.lr)

        def match() -> Tensor:
            sal = torch.sigmoid(m) if m is not None else None
            return ((fn(gen_net(z), sal) - target) ** 2).flatten(1).mean(1)

        with eval_mode(model):
            with torch.no_grad():
                initial = match().view(restarts, b)
            with progress_bar(range(iterations), total=iterations,
                              description=f"{self.name}: latent search",
                              enabled=self.progress) as bar:
                for _ in bar:
                    loss = (match() + self.latent_weight * (z**2).mean(1)).sum()
                    grads = torch.autograd.grad(loss, params)
                    for p, g in zip(params, grads, strict=True):
                        p.grad = g
                    opt.step()
            with torch.no_grad():
                final = match().view(restarts, b)
                best = final.argmin(dim=0)
                cols = torch.arange(b)
                images = gen_net(z.detach()).view(restarts, b, c, h, w)[best, cols]
        return Reconstruction(
            images=images.clamp(0, 1), attack=self.name, seconds=time.perf_counter() - start,
            meta={"initial_loss": float(initial[best, cols].mean()),
                  "final_loss": float(final[best, cols].mean()),
                  "iterations": iterations, "restarts": restarts, "matched": "activations"},
        )

    def _match_gradient(
        self, gen_net: Generator, context: AttackContext, observation: Observation
    ) -> Reconstruction:
        start = time.perf_counter()
        grads_obs = observation.gradients
        if not isinstance(grads_obs, dict) or not grads_obs:
            raise InputShapeError.build(
                what="observation.gradients", expected="a non-empty dict name -> gradient",
                received=type(grads_obs).__name__, fix="observe one federated gradient step",
            )
        if context.model is None:
            raise ConfigError.build(what="context.model", expected="the whole model",
                                    received=None, fix="pass AttackContext(model=model)")
        model = copy.deepcopy(context.model).eval()
        named = dict(model.named_parameters())
        names = [k for k in grads_obs if k in named]
        if not names:
            raise InputShapeError.build(
                what="observation.gradients",
                expected="gradients named like context.model's parameters",
                received=sorted(grads_obs)[:5], fix="observe the gradient of context.model",
            )
        params = [named[k] for k in names]
        targets = [grads_obs[k].detach().float() for k in names]
        b = observation.batch_size
        labels = observation.labels
        if labels is None:
            labels = infer_labels(grads_obs, context.num_classes, b)
        labels = labels.long()
        iterations, restarts = self._steps(context)
        gen = self.generator()
        best_images, best_loss, first_loss = None, math.inf, math.inf
        t_norm = torch.stack([(t**2).sum() for t in targets]).sum().sqrt()

        def distance(z: Tensor, create_graph: bool) -> Tensor:
            loss = F.cross_entropy(model(gen_net(z)), labels)
            g = torch.autograd.grad(loss, params, create_graph=create_graph)
            dot = torch.stack([(gi * ti).sum() for gi, ti in zip(g, targets, strict=True)]).sum()
            g_norm = torch.stack([(gi**2).sum() for gi in g]).sum().sqrt()
            return 1 - dot / (g_norm * t_norm).clamp_min(1e-12)

        with progress_bar(range(restarts * iterations), total=restarts * iterations,
                          description=f"{self.name}: gradient matching",
                          enabled=self.progress) as bar:
            steps = iter(bar)
            for _ in range(restarts):
                z = torch.randn(b, self.latent_dim, generator=gen).requires_grad_(True)
                opt = torch.optim.Adam([z], lr=self.lr)
                initial = float(distance(z, False))
                for _ in range(iterations):
                    next(steps, None)
                    loss = distance(z, True) + self.latent_weight * (z**2).mean()
                    (z.grad,) = torch.autograd.grad(loss, [z])
                    opt.step()
                final = float(distance(z, False))
                if final < best_loss:
                    best_loss, first_loss = final, initial
                    with torch.no_grad():
                        best_images = gen_net(z.detach())
        if best_images is None:  # restarts >= 1 guarantees one
            raise ConfigError.build(what="restarts", expected=">= 1", received=restarts,
                                    fix="pass restarts=1")
        return Reconstruction(
            images=best_images.clamp(0, 1), attack=self.name, labels=labels,
            seconds=time.perf_counter() - start,
            meta={"initial_loss": first_loss, "final_loss": best_loss, "iterations": iterations,
                  "restarts": restarts, "matched": "gradient",
                  "labels_inferred": observation.labels is None},
        )


register_attack(DCGANPrior.name, DCGANPrior)

__all__ = [
    "DCGAN_CACHE_SIZE", "GAN_EPOCHS", "DCGANPrior", "DCGANPriorConfig", "Discriminator",
    "Generator",
    "clear_dcgan_cache", "infer_labels", "train_dcgan",
]
