"""Split-learning model inversion: a learned decoder (black-box) and rMLE (white-box).

Both attacks observe the tensor that crosses the cut
(:func:`~shieldsplit.attacks.observe_split.observe_activations`).

- :class:`BlackBoxDecoder` (``"split-black-box"``): the attacker holds auxiliary
  images from the victim's distribution and can run them through the client it
  attacks (the client part of an undefended split, or a deployed
  :class:`~shieldsplit.SplitShield` queried as a black box). It trains an
  inversion decoder ``activations -> image`` on those pairs with an MSE loss
  (He, Zhang, Lee 2019, "inverse network"; Titcombe et al. 2021), then decodes
  the victim's activations.
- :class:`WhiteBoxInversion` (``"split-white-box"``): the attacker knows the client
  part's weights and searches the input ``x`` in ``[0, 1]`` that minimises
  ``mean((head(x) - a)^2) + tv_weight * TV(x)`` with Adam, from several random
  starts in one batch (regularised maximum likelihood, rMLE, He et al. 2019).

The decoder's architecture follows from the activation and image shapes: a
convolutional stem at the activation resolution, transposed convolutions that
double the resolution while it stays within the image size, a resize to the
exact size if needed, two convolutions and a sigmoid. Flat activations first
go through a linear layer to a quarter-resolution feature map. The adaptive
attack (:mod:`shieldsplit.attacks.adaptive`) trains the same decoder through
the same private helper, with an output stage that inverts PGSL's
pixel-unshuffle layout instead.

Training loops show a progress bar (``progress=True``) and stop on Ctrl-C
(``KeyboardInterrupt`` propagates; an interrupted :meth:`prepare` leaves the
attack unprepared).

Example:
    >>> import torch
    >>> import shieldsplit as ss
    >>> from shieldsplit.attacks import AttackContext, create_attack
    >>> from shieldsplit.attacks.observe_split import observe_activations
    >>> net = ss.PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
    >>> head = ss.split_model(net, 2).head
    >>> aux = torch.rand(32, 1, 8, 8)
    >>> attack = create_attack("split-black-box", seed=0, epochs=1, progress=False)
    >>> attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=2, model=head,
    ...                              auxiliary_images=aux))
    >>> rec = attack.reconstruct(observe_activations(head, torch.rand(3, 1, 8, 8)))
    >>> tuple(rec.images.shape), bool(rec.images.min() >= 0), bool(rec.images.max() <= 1)
    ((3, 1, 8, 8), True, True)

References:
    He, Zhang, Lee. "Model inversion attacks against collaborative inference". ACSAC 2019.
    Titcombe, Hall, Papadopoulos, Romanini. "Practical defences against model inversion
    attacks for split neural networks". ICLR DPML workshop 2021.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, ClassVar, Literal

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
    register_attack,
)
from shieldsplit.attacks.observe_split import check_images, observe_activations
from shieldsplit.defenses.base import Defense
from shieldsplit.defenses.pgsl.shield import SplitShield
from shieldsplit.errors import ConfigError, EmptyDataError, InputShapeError, StateError
from shieldsplit.functional.image import total_variation
from shieldsplit.training import eval_mode, fit_epochs, seeded, tensor_batches

#: Decoder training epochs per budget.
DECODER_EPOCHS = {"quick": 10, "standard": 30, "thorough": 80}
#: Optimisation steps per budget for input/latent searches.
SEARCH_ITERATIONS = {"quick": 200, "standard": 800, "thorough": 2500}
#: Random restarts per budget for input/latent searches.
SEARCH_RESTARTS = {"quick": 1, "standard": 2, "thorough": 4}
#: The largest side (px) the quick budget's decoder decodes a large image at (more than
#: ``LARGE_IMAGE_PIXELS`` a channel) before up-sampling it: at 224 px a full-size decoder
#: costs 10 times as much per image.
QUICK_DECODE_SIDE = 64

_CHUNK = 256


# ----------------------------------------------------------------- shared checks


def check_context(context: Any) -> AttackContext:
    """Check what a split attack was given to work with.

    Args:
        context: the candidate :class:`AttackContext`.

    Returns:
        It, checked.

    Raises:
        ConfigError: if it is not an AttackContext or its budget is unknown.
    """
    if not isinstance(context, AttackContext):
        raise ConfigError.build(
            what="context", expected="a shieldsplit.attacks.AttackContext",
            received=type(context).__name__, fix="build one with AttackContext(...)",
        )
    if context.budget not in DECODER_EPOCHS:
        raise ConfigError.build(
            what="context.budget", expected=f"one of {sorted(DECODER_EPOCHS)}",
            received=repr(context.budget), fix="pass budget='quick', 'standard' or 'thorough'",
        )
    return context


def check_auxiliary(context: AttackContext, minimum: int, attack: str) -> Tensor:
    """The context's auxiliary images, checked: enough of them, right shape, in [0, 1].

    Args:
        context: the attack context.
        minimum: the fewest images the attack can learn from.
        attack: the attack's name, for the message.

    Returns:
        The auxiliary images ``(N, C, H, W)`` as float32.

    Raises:
        EmptyDataError: if there are none or fewer than ``minimum``.
        InputShapeError: if they are not ``(N, *context.image_shape)``.
        ConfigError: if a pixel leaves [0, 1].
    """
    x = context.auxiliary_images
    if x is None:
        raise EmptyDataError.build(
            what="context.auxiliary_images",
            expected=f"at least {minimum} auxiliary images for {attack}",
            received="None", fix="pass auxiliary_images from a split disjoint from the victim's",
        )
    check_images(x, "context.auxiliary_images")
    if tuple(x.shape[1:]) != tuple(context.image_shape):
        raise InputShapeError.build(
            what="context.auxiliary_images",
            expected=f"images of shape (N, {', '.join(map(str, context.image_shape))})",
            received=tuple(x.shape), fix="give auxiliary images of the victim's image shape",
        )
    if x.shape[0] < minimum:
        raise EmptyDataError.build(
            what="context.auxiliary_images",
            expected=f"at least {minimum} auxiliary images for {attack}",
            received=f"{x.shape[0]} image(s)",
            fix="give the attacker more auxiliary images from the same distribution",
        )
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ConfigError.build(
            what="context.auxiliary_images", expected="pixel values in [0, 1]",
            received=f"values in [{lo:g}, {hi:g}]", fix="scale the images to [0, 1]",
        )
    return x.float()


def check_activation_observation(
    observation: Any, attack: str, expected_shape: tuple[int, ...] | None = None, *,
    image_shape: tuple[int, ...] | None = None,
) -> Tensor:
    """The activations of an ``"activations"`` observation, checked.

    Args:
        observation: what the attacker observed.
        attack: the attack's name, for the message.
        expected_shape: the per-sample activation shape the attack was prepared for.
        image_shape: the image shape the attack was prepared for (input searches).

    Returns:
        The activations as float32.

    Raises:
        ConfigError: if the observation is of another kind.
        InputShapeError: if it is not an Observation, has no activations, or their
            shape differs from ``expected_shape``.
    """
    if not isinstance(observation, Observation):
        raise InputShapeError.build(
            what="observation", expected="a shieldsplit.attacks.Observation",
            received=type(observation).__name__, fix="build it with observe_activations()",
        )
    if observation.kind != "activations":
        raise ConfigError.build(
            what="observation.kind",
            expected=f"an 'activations' observation (split learning) for {attack}",
            received=repr(observation.kind),
            fix="observe the cut with shieldsplit.attacks.observe_split.observe_activations",
        )
    a = observation.activations
    if not isinstance(a, Tensor) or a.dim() < 2 or a.shape[0] == 0:
        raise InputShapeError.build(
            what="observation.activations", expected="a (B, ...) tensor with B >= 1",
            received=type(a).__name__ if not isinstance(a, Tensor) else tuple(a.shape),
            fix="build the observation with observe_activations()",
        )
    if expected_shape is not None and tuple(a.shape[1:]) != tuple(expected_shape):
        raise InputShapeError.build(
            what="observation.activations",
            expected=f"per-sample shape {tuple(expected_shape)}, as in prepare()",
            received=tuple(a.shape[1:]),
            fix="observe the same client (and cut) the attack was prepared on",
        )
    if image_shape is not None and tuple(observation.image_shape) != tuple(image_shape):
        raise InputShapeError.build(
            what="observation.image_shape", expected=str(tuple(image_shape)),
            received=tuple(observation.image_shape), fix="observe images of the context's shape")
    return a.detach().float()


def require_prepared(value: Any, attack: str) -> Any:
    """Raise StateError when ``prepare`` has not run (``value`` is None)."""
    if value is None:
        raise StateError.build(
            what=attack, expected="prepare(context) to have run", received="an unprepared attack",
            fix="call attack.prepare(AttackContext(...)) before reconstruct()",
        )
    return value


def collect_activations(
    client: nn.Module, images: Tensor, *, labels: Tensor | None = None
) -> Tensor:
    """What ``client`` sends for ``images``, computed in chunks (the client is unchanged).

    Args:
        client: a SplitShield or a client part.
        images: ``(N, C, H, W)``.
        labels: passed to ``SplitShield.client`` when given.

    Returns:
        ``(N, ...)`` activations.
    """
    chunks = []
    for i in range(0, images.shape[0], _CHUNK):
        y = labels[i:i + _CHUNK] if labels is not None else None
        a = observe_activations(client, images[i:i + _CHUNK], labels=y).activations
        if a is not None:  # always set for "activations" observations
            chunks.append(a)
    return torch.cat(chunks).float()


def client_map(model: nn.Module) -> tuple[Callable[[Tensor, Tensor | None], Tensor], bool]:
    """A differentiable ``(x, saliency_channel) -> activations`` map of a client.

    For a SplitShield it is the deployed client without the JSMA perturbation:
    pixel-unshuffle, concatenate the saliency channel (a free input, since the
    map depends on the image through a gradient), then the client part. For any
    other :class:`~shieldsplit.defenses.base.Defense` it is its client network without
    the wire transform (the white-box attacker knows the weights, not the noise).

    Args:
        model: a Defense or a plain client part.

    Returns:
        The map and whether it takes a saliency channel.
    """
    if isinstance(model, SplitShield):
        cfg = model.config
        needs_map = cfg.saliency.enabled and cfg.saliency.concat
        return model.client_features, needs_map
    if isinstance(model, Defense):  # the client network; the wire noise is unknown
        part = model.client_part
        return (lambda x, m: part(x)), False
    return (lambda x, m: model(x)), False


# ----------------------------------------------------------------- the decoder


class _Standardize(nn.Module):
    mean: Tensor
    std: Tensor

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, a: Tensor) -> Tensor:
        return (a - self.mean) / self.std


class FitToSize(nn.Module):
    """Crop (when the map is the padded image) or resize to the image size."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        h, w = self.size
        if x.shape[-2] == h and x.shape[-1] == w:
            return x
        if x.shape[-2] >= h and x.shape[-1] >= w and x.shape[-2] - h < 4 and x.shape[-1] - w < 4:
            return x[..., :h, :w]
        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]


def build_decoder(
    act_shape: tuple[int, ...],
    image_shape: tuple[int, int, int],
    *,
    width: int = 32,
    unshuffle_factor: int | None = None,
    mean: Tensor | None = None,
    std: Tensor | None = None,
    max_side: int | None = None,
) -> nn.Module:
    """An inversion decoder from activations of ``act_shape`` to images of ``image_shape``.

    Args:
        act_shape: per-sample activation shape: ``(C, h, w)`` or ``(D,)`` (others are
            flattened).
        image_shape: ``(C, H, W)``.
        width: channels of the hidden layers.
        unshuffle_factor: when given, the decoder predicts ``f**2`` sub-pixel feature
            maps at the activation resolution and pixel-shuffles them (the inverse of
            PGSL's unshuffle layout) instead of up-sampling with transposed convolutions.
        mean: per-channel (or per-feature) activation mean for input standardisation.
        std: matching standard deviation.
        max_side: up-sample by transposed convolutions only up to this side, decode
            there and resize (bilinear) to the image's size; None: decode at full size.

    Returns:
        A module ``(B, *act_shape) -> (B, *image_shape)`` with values in (0, 1).
    """
    c, h_img, w_img = image_shape
    spatial = len(act_shape) == 3
    layers: list[nn.Module] = []
    if mean is not None and std is not None:
        layers.append(_Standardize(mean, std))
    if spatial:
        c_a, h, w = act_shape
        layers += _block(c_a, width)
    else:
        d = int(math.prod(act_shape))
        h, w = max(1, math.ceil(h_img / 4)), max(1, math.ceil(w_img / 4))
        layers += [nn.Flatten(), nn.Linear(d, width * h * w), nn.ReLU(),
                   nn.Unflatten(1, (width, h, w)), nn.BatchNorm2d(width)]
    if unshuffle_factor is not None and spatial:
        f = unshuffle_factor
        layers += _block(width, width)
        layers += [nn.Conv2d(width, width * f * f, 3, padding=1), nn.PixelShuffle(f),
                   FitToSize((h_img, w_img)), nn.BatchNorm2d(width), nn.ReLU()]
        layers += _block(width, width)
        layers += [nn.Conv2d(width, c, 3, padding=1), nn.Sigmoid()]
        return nn.Sequential(*layers)
    top_h, top_w = min(h_img, max_side or h_img), min(w_img, max_side or w_img)
    while h * 2 <= top_h and w * 2 <= top_w:
        layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
                   nn.BatchNorm2d(width), nn.ReLU()]
        h, w = h * 2, w * 2
    fit = [FitToSize((h_img, w_img))] if (h, w) != (h_img, w_img) else []
    late = max_side is not None and max(h, w) <= max_side  # resize the decoded image
    layers += [*([] if late else fit), *_block(width, width), nn.Conv2d(width, c, 3, padding=1),
               *(fit if late else []), nn.Sigmoid()]
    return nn.Sequential(*layers)


def _activation_stats(acts: Tensor) -> tuple[Tensor, Tensor]:
    if acts.dim() == 4:
        mean = acts.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
        std = acts.std(dim=(0, 2, 3)).view(1, -1, 1, 1)
    else:
        mean, std = acts.mean(dim=0, keepdim=True), acts.std(dim=0, keepdim=True)
    return mean, std.clamp_min(1e-6)


def train_inversion_decoder(
    acts: Tensor,
    images: Tensor,
    *,
    seed: int,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    width: int = 32,
    unshuffle_factor: int | None = None,
    progress: bool = True,
    description: str = "inversion decoder",
    max_side: int | None = None,
) -> tuple[nn.Module, list[float]]:
    """Train an inversion decoder on ``(activations, image)`` pairs with MSE.

    The one decoder routine of the black-box and the adaptive attack, run by the
    project's one training loop (:func:`~shieldsplit.training.fit_epochs`): Adam with
    a cosine learning-rate schedule over shuffled pairs
    (:func:`~shieldsplit.training.tensor_batches`). Initialisation and shuffling
    follow ``seed`` (:func:`~shieldsplit.training.seeded`), so the same seed gives
    the same decoder.

    Args:
        acts: ``(N, ...)`` activations.
        images: ``(N, C, H, W)`` images in [0, 1].
        seed: seeds initialisation and shuffling.
        epochs: passes over the pairs.
        batch_size: pairs per step.
        lr: Adam's initial learning rate.
        width: hidden channels (see :func:`build_decoder`).
        unshuffle_factor: see :func:`build_decoder`.
        progress: show a progress bar over the epochs.
        description: the bar's label.
        max_side: see :func:`build_decoder`.

    Returns:
        The decoder in eval mode and the mean training MSE of every epoch.

    Example:
        >>> acts, imgs = torch.rand(8, 4, 2, 2), torch.rand(8, 1, 4, 4)
        >>> dec, losses = train_inversion_decoder(acts, imgs, seed=0, epochs=2, batch_size=4,
        ...                                       width=4, progress=False)
        >>> len(losses), dec.training, tuple(decode(dec, acts).shape)
        (2, False, (8, 1, 4, 4))
    """
    image_shape = (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))
    flat = acts if acts.dim() == 4 else acts.flatten(1)
    mean, std = _activation_stats(flat)
    act_shape = tuple(int(s) for s in flat.shape[1:])
    batches = tensor_batches(flat, images, batch_size=batch_size)
    with seeded(seed):
        decoder = build_decoder(act_shape, image_shape, width=width, max_side=max_side,
                                unshuffle_factor=unshuffle_factor, mean=mean, std=std)
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * len(batches)))
    sums = {"loss": 0.0, "seen": 0.0}

    def step(a: Tensor, x: Tensor) -> int:
        loss = F.mse_loss(decoder(a), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        n = int(x.shape[0])
        sums["loss"] += float(loss.detach()) * n
        sums["seen"] += n
        return n

    def end_epoch(epoch: int, seconds: float) -> float:
        mean_loss = sums["loss"] / sums["seen"]
        sums.update(loss=0.0, seen=0.0)
        return mean_loss

    losses, _ = fit_epochs(
        decoder, batches, epochs=epochs, step=step, end_epoch=end_epoch, score=lambda r: None,
        seed=seed, description=description, progress=progress, progress_unit="epoch",
    )
    return decoder, losses


def heldout_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded indices of ``n`` images split into a training part and a held-out part.

    The held-out part has ``floor(fraction * n)`` images (none for small ``n``).

    Args:
        n: number of images.
        fraction: share to hold out, in [0, 1).
        seed: seeds the permutation.

    Returns:
        ``(train, heldout)`` int64 index tensors that partition ``range(n)``.

    Example:
        >>> train, held = heldout_split(20, 0.1, seed=0)
        >>> len(train), len(held), sorted(train.tolist() + held.tolist()) == list(range(20))
        (18, 2, True)
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = math.floor(fraction * n)
    return perm[k:], perm[:k]


@torch.no_grad()
def decode(decoder: nn.Module, acts: Tensor) -> Tensor:
    """Run a trained decoder in chunks (eval mode, no gradient)."""
    flat = acts if acts.dim() == 4 else acts.flatten(1)
    out = [decoder(flat[i:i + _CHUNK]) for i in range(0, flat.shape[0], _CHUNK)]
    return torch.cat(out).clamp(0, 1)


# ----------------------------------------------------------------- the attacks


class BlackBoxDecoderConfig(BaseModel):
    """Options of :class:`BlackBoxDecoder` (see its Args).

    Attributes:
        epochs: decoder training epochs; None: the budget's.
        batch_size: decoder training batch size.
        lr: the decoder's Adam step size.
        width: the decoder's base width.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    epochs: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=2e-3, gt=0.0, allow_inf_nan=False)
    width: int = Field(default=32, ge=1)


class WhiteBoxInversionConfig(BaseModel):
    """Options of :class:`WhiteBoxInversion` (see its Args).

    Attributes:
        iterations: optimisation steps; None: the budget's.
        restarts: random restarts; None: the budget's.
        lr: Adam's step size.
        tv_weight: weight of the total-variation prior (>= 0).
        parametrization: ``"sigmoid"`` (pixels through a sigmoid) or ``"clamp"``.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    iterations: int | None = Field(default=None, ge=1)
    restarts: int | None = Field(default=None, ge=1)
    lr: float = Field(default=0.05, gt=0.0, allow_inf_nan=False)
    tv_weight: float = Field(default=0.05, ge=0.0, allow_inf_nan=False)
    parametrization: Literal["sigmoid", "clamp"] = "sigmoid"


class BlackBoxDecoder(Attack):
    """Black-box split-learning inversion: learn ``activations -> image`` from auxiliary data.

    Args:
        seed: seeds the decoder's initialisation and shuffling.
        epochs: training epochs; None takes the budget's default
            (:data:`DECODER_EPOCHS`: 10 quick, 30 standard, 80 thorough).
        batch_size: pairs per step.
        lr: Adam's initial learning rate.
        width: hidden channels of the decoder.
        progress: show a progress bar while training.

    The client it queries is ``context.model`` (the client part of an undefended
    split, or a :class:`~shieldsplit.SplitShield` treated as a black box), or
    ``context.defense`` when ``context.model`` is None.
    """

    name: ClassVar[str] = "split-black-box"
    threat_model: ClassVar[ThreatModel] = "split_black_box"
    assumes: ClassVar[frozenset[Assumption]] = frozenset({"auxiliary_data"})
    observes: ClassVar[ObservationKind] = "activations"
    #: The fewest auxiliary images the decoder trains on.
    min_auxiliary = 16
    #: Share of the auxiliary images held out of training to score the decoder
    #: (``meta['heldout_loss']``: its MSE on images it never saw).
    heldout_fraction: ClassVar[float] = 0.1

    Config = BlackBoxDecoderConfig
    config: BlackBoxDecoderConfig
    epochs: int | None
    batch_size: int
    lr: float
    width: int

    def __init__(self, *, seed: int = 0, progress: bool = True, **options: Any) -> None:
        super().__init__(seed=seed, progress=progress, **options)
        self.decoder: nn.Module | None = None
        self.act_shape: tuple[int, ...] | None = None
        self.train_losses: list[float] = []
        self.heldout_loss: float | None = None

    @property
    def heldout_images(self) -> int:
        """How many auxiliary images :meth:`prepare` kept out of training to score the decoder."""
        if self.context is None or self.context.auxiliary_images is None:
            return 0
        n = int(self.context.auxiliary_images.shape[0])
        return n - heldout_split(n, self.heldout_fraction, self.seed)[0].numel()

    def _client(self, context: AttackContext) -> nn.Module:
        client = context.model if context.model is not None else context.defense
        if not isinstance(client, nn.Module):
            raise ConfigError.build(
                what="context.model",
                expected="the client part (split_model(model, cut).head) or a SplitShield",
                received=type(client).__name__,
                fix="pass AttackContext(model=...) with the client the attacker queries",
            )
        return client

    def _pairs(self, context: AttackContext, images: Tensor) -> Tensor:
        return collect_activations(self._client(context), images)

    def _unshuffle_factor(self, context: AttackContext) -> int | None:
        return None

    def prepare(self, context: AttackContext) -> None:
        """Compute the activations of the auxiliary images and train the decoder.

        Args:
            context: needs ``auxiliary_images`` (at least :attr:`min_auxiliary`) and
                the client (``model`` or ``defense``).

        Raises:
            EmptyDataError: too few auxiliary images.
            ConfigError: no client in the context, or a bad budget.
            InputShapeError: auxiliary images of the wrong shape.
        """
        context = check_context(context)
        images = check_auxiliary(context, self.min_auxiliary, self.name)
        acts = self._pairs(context, images)
        epochs = self.epochs or DECODER_EPOCHS[context.budget]
        train, held = heldout_split(int(images.shape[0]), self.heldout_fraction, self.seed)
        decoder, losses = train_inversion_decoder(
            acts[train], images[train], seed=self.seed, epochs=epochs,
            batch_size=self.batch_size or 64, lr=self.lr, width=self.width or 32,
            unshuffle_factor=self._unshuffle_factor(context), progress=self.progress,
            description=f"{self.name}: decoder", max_side=QUICK_DECODE_SIDE if (
                context.budget == "quick" and images[0, 0].numel() > LARGE_IMAGE_PIXELS) else None)
        self.context = context
        self.decoder = decoder
        self.act_shape = tuple(int(s) for s in acts.shape[1:])
        self.train_losses = losses
        self.heldout_loss = (
            float(F.mse_loss(decode(decoder, acts[held]), images[held])) if held.numel() else None
        )

    def reconstruct(self, observation: Observation) -> Reconstruction:
        """Decode the observed activations.

        Args:
            observation: an ``"activations"`` observation of the client prepared on.

        Returns:
            Images in [0, 1]; ``meta`` has the epochs, the final training MSE
            (``train_loss``, also ``final_train_mse``) and ``heldout_loss``: the
            decoder's MSE on the auxiliary images held out of training
            (:attr:`heldout_fraction`; None when there are too few to hold out).

        Raises:
            StateError: before :meth:`prepare`.
            ConfigError: for another observation kind.
            InputShapeError: activations of another shape than in prepare.
        """
        decoder = require_prepared(self.decoder, self.name)
        start = time.perf_counter()
        a = check_activation_observation(observation, self.name, self.act_shape)
        images = decode(decoder, a)
        return Reconstruction(
            images=images, attack=self.name, seconds=time.perf_counter() - start,
            meta={"epochs": len(self.train_losses),
                  "final_train_mse": self.train_losses[-1] if self.train_losses else None,
                  "train_loss": self.train_losses[-1] if self.train_losses else None,
                  "heldout_loss": self.heldout_loss,
                  "heldout_images": self.heldout_images},
        )


class WhiteBoxInversion(Attack):
    """White-box split-learning inversion (rMLE): optimise the input to match the activations.

    Minimises ``mean((head(x) - a)^2) + tv_weight * TV(x)`` over ``x`` in [0, 1] with
    Adam. All restarts of all images run as one batch; per image the restart with
    the lowest activation loss wins.

    Args:
        seed: seeds the random starts.
        iterations: Adam steps; None takes the budget's default (:data:`SEARCH_ITERATIONS`).
        restarts: random starts per image; None takes the budget's default.
        lr: Adam's learning rate.
        tv_weight: weight of the total-variation prior.
        parametrization: ``"sigmoid"`` (``x = sigmoid(z)``) or ``"clamp"`` (``x`` clamped
            to [0, 1] after every step).
        progress: show a progress bar.

    ``context.model`` is the client part (or a SplitShield: then the input passes the
    shield's unshuffle and the saliency channel is optimised as a free input; the
    few-pixel JSMA perturbation is not modelled).
    """

    name: ClassVar[str] = "split-white-box"
    quick_max_pixels: ClassVar[int | None] = LARGE_IMAGE_PIXELS
    threat_model: ClassVar[ThreatModel] = "split_white_box"
    assumes: ClassVar[frozenset[Assumption]] = frozenset({"auxiliary_data", "client_weights"})
    observes: ClassVar[ObservationKind] = "activations"

    Config = WhiteBoxInversionConfig
    config: WhiteBoxInversionConfig
    iterations: int | None
    restarts: int | None
    lr: float
    tv_weight: float
    parametrization: str

    def prepare(self, context: AttackContext) -> None:
        """Remember the client part whose weights the attacker knows.

        Raises:
            ConfigError: if ``context.model`` is not a module.
        """
        context = check_context(context)
        if not isinstance(context.model, nn.Module):
            raise ConfigError.build(
                what="context.model", expected="the client part whose weights the attacker knows",
                received=type(context.model).__name__,
                fix="pass AttackContext(model=split_model(model, cut).head)",
            )
        self.context = context

    def reconstruct(self, observation: Observation) -> Reconstruction:
        """Search inputs whose activations match the observation.

        Returns:
            Images in [0, 1]; ``meta`` has ``initial_loss`` and ``final_loss`` (mean
            activation MSE of the chosen restarts at the start and the end),
            ``iterations`` and ``restarts``.

        Raises:
            StateError: before :meth:`prepare`.
            ConfigError: for another observation kind.
            InputShapeError: when the image shape disagrees with the context.
        """
        context = require_prepared(self.context, self.name)
        a = check_activation_observation(observation, self.name, image_shape=context.image_shape)
        start = time.perf_counter()
        iterations = self.iterations or SEARCH_ITERATIONS[context.budget]
        restarts = self.restarts or SEARCH_RESTARTS[context.budget]
        model = context.model
        fn, needs_map = client_map(model)
        b = int(a.shape[0])
        c, h, w = context.image_shape
        gen = self.generator()
        sigmoid = self.parametrization == "sigmoid"
        init = torch.randn(restarts * b, c, h, w, generator=gen)
        z = (init * 0.5 if sigmoid else (0.5 + 0.1 * init).clamp(0, 1)).requires_grad_(True)
        params = [z]
        m = None
        if needs_map:
            m = torch.zeros(restarts * b, 1, h, w).requires_grad_(True)
            params.append(m)
        target = a.repeat(restarts, *([1] * (a.dim() - 1)))
        opt = torch.optim.Adam(params, lr=self.lr)

        def image() -> Tensor:
            return torch.sigmoid(z) if sigmoid else z

        def act_loss() -> Tensor:
            sal = torch.sigmoid(m) if m is not None else None
            return ((fn(image(), sal) - target) ** 2).flatten(1).mean(1)

        with eval_mode(model):
            with torch.no_grad():
                initial = act_loss().view(restarts, b)
            with progress_bar(range(iterations), total=iterations,
                              description=f"{self.name}: rMLE", enabled=self.progress) as bar:
                for _ in bar:
                    x = image()
                    loss = (act_loss() + self.tv_weight * total_variation(x)).sum()
                    grads = torch.autograd.grad(loss, params)
                    for p, g in zip(params, grads, strict=True):
                        p.grad = g
                    opt.step()
                    if not sigmoid:
                        with torch.no_grad():
                            z.clamp_(0, 1)
            with torch.no_grad():
                final = act_loss().view(restarts, b)
                best = final.argmin(dim=0)
                images = image().detach().view(restarts, b, c, h, w)[best, torch.arange(b)]
        cols = torch.arange(b)
        return Reconstruction(
            images=images.clamp(0, 1), attack=self.name, seconds=time.perf_counter() - start,
            meta={
                "initial_loss": float(initial[best, cols].mean()),
                "final_loss": float(final[best, cols].mean()),
                "iterations": iterations,
                "restarts": restarts,
                "tv_weight": self.tv_weight,
            },
        )


register_attack(BlackBoxDecoder.name, BlackBoxDecoder)
register_attack(WhiteBoxInversion.name, WhiteBoxInversion)

__all__ = ["DECODER_EPOCHS", "QUICK_DECODE_SIDE", "SEARCH_ITERATIONS", "SEARCH_RESTARTS",
           "BlackBoxDecoder", "BlackBoxDecoderConfig", "WhiteBoxInversion",
           "WhiteBoxInversionConfig", "build_decoder", "check_activation_observation",
           "check_auxiliary", "collect_activations", "decode", "heldout_split",
           "total_variation", "train_inversion_decoder"]
