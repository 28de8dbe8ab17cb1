"""SDAR: a residual inversion decoder with adversarial regularisation (split black box).

:class:`SDAR` (``"sdar"``) inverts the tensor that crosses a split-learning cut with a
decoder that fits the cut, trained on the attacker's auxiliary images as SDAR does
(Zhu et al., NDSS 2025):

- the decoder reads the cut's ``(C, h, w)`` activations (standardised by a
  non-affine BatchNorm whose running statistics are the auxiliary activations'),
  runs residual blocks at that resolution, then up-samples by learned stages
  (nearest-neighbour x2, a 3x3 convolution, residual blocks; the width halves per
  stage, down to 16 channels) while the map stays within the image, resizes to the
  exact image size where the stages do not land on it (:class:`FitToSize`),
  refines at full resolution and ends in a sigmoid. Flat activations first pass a
  linear layer to a quarter-resolution map;
- it is trained on ``(client(aux), aux)`` pairs with an L2 (or L1, or both)
  reconstruction loss plus SDAR's **decoder adversarial regularisation**: a small
  discriminator (spectral-normalised strided convolutions) learns to tell decoded
  auxiliary images from real ones, and the decoder is also trained to fool it (the
  non-saturating GAN loss, weight ``adversarial_weight``). The term pulls decoded
  images toward the image distribution rather than toward the blurry average that an
  L2 loss alone settles on.

SDAR's server attacks a client it cannot query and so trains a *simulator* of the
client on the auxiliary data (with a second, feature-space discriminator). Under this
package's split-black-box threat model the attacker can query the client (an
undefended client part, or a deployed :class:`~shieldsplit.SplitShield` treated as a
black box), so the real client's activations replace the simulator's and that half of
SDAR is not needed; what remains is SDAR's decoder and its adversarial
regularisation. Training runs in the project's one loop
(:func:`~shieldsplit.training.fit_epochs`), with two optimisers in its step.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from shieldsplit.attacks import AttackContext, create_attack
    >>> from shieldsplit.attacks.observe_split import observe_activations
    >>> torch.manual_seed(0) and None
    >>> head = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU())
    >>> attack = create_attack("sdar", seed=0, epochs=1, width=8, progress=False)
    >>> attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=2, model=head,
    ...                              auxiliary_images=torch.rand(32, 1, 8, 8)))
    >>> rec = attack.reconstruct(observe_activations(head, torch.rand(3, 1, 8, 8)))
    >>> tuple(rec.images.shape), bool(rec.images.min() >= 0), bool(rec.images.max() <= 1)
    ((3, 1, 8, 8), True, True)

References:
    Zhu, Tang, Xiao, Li. "Passive Inference Attacks on Split Learning via Adversarial
    Regularization". NDSS 2025 (arXiv:2310.10483).
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from shieldsplit.attacks.base import (
    Assumption,
    Attack,
    AttackContext,
    Observation,
    ObservationKind,
    Reconstruction,
    ThreatModel,
    register_attack,
)
from shieldsplit.attacks.split import (
    FitToSize,
    check_activation_observation,
    check_auxiliary,
    check_context,
    collect_activations,
    decode,
    heldout_split,
    require_prepared,
)
from shieldsplit.errors import ConfigError
from shieldsplit.training import fit_epochs, seeded, tensor_batches

#: Decoder training epochs per budget.
SDAR_EPOCHS = {"quick": 15, "standard": 40, "thorough": 100}
#: The narrowest up-sampling stage of the decoder.
MIN_WIDTH = 16


# ----------------------------------------------------------------- the networks


class ResidualBlock(nn.Module):
    """``relu(x + bn(conv(relu(bn(conv(x))))))``: a 3x3 residual block of constant width.

    Args:
        width: channels in and out.

    Example:
        >>> tuple(ResidualBlock(4)(torch.rand(2, 4, 3, 3)).shape)
        (2, 4, 3, 3)
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def build_residual_decoder(
    act_shape: tuple[int, ...],
    image_shape: tuple[int, int, int],
    *,
    width: int = 64,
    blocks: int = 1,
) -> nn.Sequential:
    """SDAR's decoder for activations of ``act_shape`` and images of ``image_shape``.

    Args:
        act_shape: per-sample activation shape, ``(C, h, w)`` or ``(D,)`` (others are
            flattened).
        image_shape: ``(C, H, W)``.
        width: channels at the activation resolution; each up-sampling stage halves
            them, down to :data:`MIN_WIDTH`.
        blocks: residual blocks per stage (>= 0).

    Returns:
        A module ``(B, *act_shape) -> (B, *image_shape)`` with values in (0, 1).

    Example:
        >>> dec = build_residual_decoder((128, 4, 4), (3, 28, 28), width=32).eval()
        >>> tuple(dec(torch.randn(2, 128, 4, 4)).shape)
        (2, 3, 28, 28)
        >>> tuple(build_residual_decoder((40,), (1, 8, 8), width=8).eval()(
        ...     torch.randn(2, 40)).shape)
        (2, 1, 8, 8)
    """
    c, h_img, w_img = image_shape
    layers: list[nn.Module] = []
    if len(act_shape) == 3:
        c_a, h, w = act_shape
        layers += [nn.BatchNorm2d(c_a, affine=False, momentum=None)]
        layers += _conv_bn_relu(c_a, width)
    else:
        d = int(math.prod(act_shape))
        h, w = max(1, math.ceil(h_img / 4)), max(1, math.ceil(w_img / 4))
        layers += [nn.Flatten(), nn.BatchNorm1d(d, affine=False, momentum=None),
                   nn.Linear(d, width * h * w), nn.Unflatten(1, (width, h, w)),
                   nn.BatchNorm2d(width), nn.ReLU()]
    layers += [ResidualBlock(width) for _ in range(blocks)]
    while h * 2 <= h_img and w * 2 <= w_img:
        narrower = max(MIN_WIDTH, width // 2) if width > MIN_WIDTH else width
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), *_conv_bn_relu(width, narrower)]
        width, h, w = narrower, h * 2, w * 2
        layers += [ResidualBlock(width) for _ in range(blocks)]
    if (h, w) != (h_img, w_img):
        layers += [FitToSize((h_img, w_img)), *_conv_bn_relu(width, width)]
    layers += [nn.Conv2d(width, c, 3, padding=1), nn.Sigmoid()]
    return nn.Sequential(*layers)


def build_discriminator(image_shape: tuple[int, int, int], *, width: int = 32) -> nn.Module:
    """SDAR's image discriminator: spectral-normalised strided convolutions to one logit.

    Args:
        image_shape: ``(C, H, W)`` of the images it judges.
        width: channels of its first convolution (the second has twice as many).

    Returns:
        A module ``(B, C, H, W) -> (B,)`` of real-vs-decoded logits.

    Example:
        >>> tuple(build_discriminator((1, 8, 8), width=4)(torch.rand(3, 1, 8, 8)).shape)
        (3,)
    """
    sn = nn.utils.parametrizations.spectral_norm
    c = image_shape[0]
    return nn.Sequential(
        sn(nn.Conv2d(c, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
        sn(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
        sn(nn.Conv2d(2 * width, 2 * width, 3, padding=1)), nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), sn(nn.Linear(2 * width, 1)), nn.Flatten(0),
    )


def reconstruction_loss(kind: str, decoded: Tensor, images: Tensor) -> Tensor:
    """The decoder's pixel loss: ``"l2"`` (MSE), ``"l1"`` or ``"l1+l2"`` (their sum).

    Example:
        >>> float(reconstruction_loss("l1+l2", torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)))
        2.0
    """
    loss = decoded.new_zeros(())
    if "l2" in kind:
        loss = loss + F.mse_loss(decoded, images)
    if "l1" in kind:
        loss = loss + F.l1_loss(decoded, images)
    return loss


# ----------------------------------------------------------------- training


def train_sdar_decoder(
    acts: Tensor,
    images: Tensor,
    *,
    seed: int,
    epochs: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    width: int = 64,
    blocks: int = 1,
    loss: str = "l2",
    adversarial_weight: float = 0.01,
    discriminator_width: int = 32,
    progress: bool = True,
    description: str = "sdar decoder",
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train SDAR's decoder on ``(activations, image)`` pairs.

    Each step first updates the discriminator (real auxiliary images against the
    decoder's detached output, binary cross-entropy), then the decoder on
    ``reconstruction + adversarial_weight * BCE(D(decoded), real)``. Both use Adam (the
    discriminator's with DCGAN's betas 0.5, 0.999; the decoder's with a cosine schedule). With
    ``adversarial_weight=0`` the discriminator is neither built nor trained and the
    decoder sees the same initial weights and batches (the same seed): only the
    adversarial term differs.

    Args:
        acts: ``(N, ...)`` activations.
        images: ``(N, C, H, W)`` images in [0, 1].
        seed: seeds initialisation and shuffling.
        epochs: passes over the pairs.
        batch_size: pairs per step.
        lr: both optimisers' learning rate.
        width: see :func:`build_residual_decoder`.
        blocks: see :func:`build_residual_decoder`.
        loss: the pixel loss (see :func:`reconstruction_loss`).
        adversarial_weight: weight of the decoder's adversarial term (>= 0).
        discriminator_width: see :func:`build_discriminator`.
        progress: show a progress bar over the epochs.
        description: the bar's label.

    Returns:
        The decoder (eval mode) and one record per epoch: ``reconstruction`` (mean pixel
        loss), ``adversarial`` (the decoder's mean adversarial loss) and
        ``discriminator`` (the discriminator's mean loss; both 0.0 without the term).

    Example:
        >>> acts, imgs = torch.rand(8, 4, 2, 2), torch.rand(8, 1, 4, 4)
        >>> dec, records = train_sdar_decoder(acts, imgs, seed=0, epochs=2, batch_size=4,
        ...                                   width=8, progress=False)
        >>> len(records), sorted(records[0]), dec.training
        (2, ['adversarial', 'discriminator', 'reconstruction'], False)
    """
    image_shape = (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))
    flat = acts if acts.dim() == 4 else acts.flatten(1)
    act_shape = tuple(int(s) for s in flat.shape[1:])
    batches = tensor_batches(flat, images, batch_size=batch_size)
    adversarial = adversarial_weight > 0
    with seeded(seed):
        decoder = build_residual_decoder(act_shape, image_shape, width=width, blocks=blocks)
        disc = build_discriminator(image_shape, width=discriminator_width) if adversarial \
            else None
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * len(batches)))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999)) if disc else None
    sums = {"reconstruction": 0.0, "adversarial": 0.0, "discriminator": 0.0, "seen": 0.0}
    bce = F.binary_cross_entropy_with_logits

    def step(a: Tensor, x: Tensor) -> int:
        decoded = decoder(a)
        rec = reconstruction_loss(loss, decoded, x)
        total = rec
        n = int(x.shape[0])
        if disc is not None and opt_d is not None:
            real, fake = disc(x), disc(decoded.detach())
            d_loss = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            judged = disc(decoded)
            g_adv = bce(judged, torch.ones_like(judged))
            total = rec + adversarial_weight * g_adv
            sums["adversarial"] += float(g_adv.detach()) * n
            sums["discriminator"] += float(d_loss.detach()) * n
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        sched.step()
        sums["reconstruction"] += float(rec.detach()) * n
        sums["seen"] += n
        return n

    def end_epoch(epoch: int, seconds: float) -> dict[str, float]:
        seen = sums.pop("seen")
        record = {k: v / seen for k, v in sums.items()}
        sums.update({k: 0.0 for k in record}, seen=0.0)
        return record

    trained = nn.ModuleList([decoder] + ([disc] if disc is not None else []))
    records, _ = fit_epochs(
        trained, batches, epochs=epochs, step=step, end_epoch=end_epoch, score=lambda r: None,
        seed=seed, description=description, progress=progress, progress_unit="epoch",
    )  # leaves both networks in eval mode
    return decoder, records


# ----------------------------------------------------------------- the attack


class SDARConfig(BaseModel):
    """Options of :class:`SDAR` (see its Args).

    Attributes:
        epochs: decoder training epochs; None: the budget's (:data:`SDAR_EPOCHS`).
        batch_size: pairs per step.
        lr: Adam's learning rate (decoder and discriminator).
        width: decoder channels at the activation resolution.
        blocks: residual blocks per decoder stage.
        loss: the pixel loss, ``"l2"``, ``"l1"`` or ``"l1+l2"``.
        adversarial_weight: weight of the decoder's adversarial term; 0 turns it off.
        discriminator_width: channels of the discriminator's first convolution.

    Example:
        >>> SDARConfig(adversarial_weight=0.0).batch_size
        32
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    epochs: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=32, ge=2)
    lr: float = Field(default=3e-3, gt=0.0, allow_inf_nan=False)
    width: int = Field(default=64, ge=1)
    blocks: int = Field(default=1, ge=0)
    loss: Literal["l2", "l1", "l1+l2"] = "l2"
    adversarial_weight: float = Field(default=0.01, ge=0.0, allow_inf_nan=False)
    discriminator_width: int = Field(default=32, ge=1)


class SDAR(Attack):
    """SDAR's split-learning inversion: a residual decoder with adversarial regularisation.

    Args:
        seed: seeds the decoder's and discriminator's initialisation and the shuffling.
        epochs: training epochs; None takes the budget's (:data:`SDAR_EPOCHS`: 15 quick,
            40 standard, 100 thorough).
        batch_size: pairs per step.
        lr: Adam's learning rate.
        width: decoder channels at the activation resolution (halved per up-sampling
            stage, down to 16).
        blocks: residual blocks per stage.
        loss: the pixel loss: ``"l2"`` (default), ``"l1"`` or ``"l1+l2"``.
        adversarial_weight: weight of the adversarial regulariser (0: plain decoder).
        discriminator_width: the discriminator's first width.
        progress: show a progress bar while training.

    The client it queries is ``context.model`` (the client part, or a
    :class:`~shieldsplit.SplitShield` as a black box), or ``context.defense`` when
    ``context.model`` is None. :meth:`prepare` holds 10% of the auxiliary images out of
    training and reports the decoder's MSE on them (``meta['heldout_loss']``).

    Example:
        >>> attack = SDAR(seed=0, epochs=5, adversarial_weight=0.05, progress=False)
        >>> attack.declaration().threat_model, sorted(attack.assumes)
        ('split_black_box', ['auxiliary_data'])
    """

    name: ClassVar[str] = "sdar"
    threat_model: ClassVar[ThreatModel] = "split_black_box"
    assumes: ClassVar[frozenset[Assumption]] = frozenset({"auxiliary_data"})
    observes: ClassVar[ObservationKind] = "activations"
    #: The quick budget's split-black-box decoder stands for it (cheaper).
    quick_default: ClassVar[bool] = False
    #: The fewest auxiliary images it trains on.
    min_auxiliary: ClassVar[int] = 16
    #: Share of the auxiliary images held out of training to score the decoder.
    heldout_fraction: ClassVar[float] = 0.1

    Config = SDARConfig
    config: SDARConfig
    epochs: int | None
    batch_size: int
    lr: float
    width: int
    blocks: int
    loss: str
    adversarial_weight: float
    discriminator_width: int

    def __init__(self, *, seed: int = 0, progress: bool = True, **options: Any) -> None:
        super().__init__(seed=seed, progress=progress, **options)
        self.decoder: nn.Module | None = None
        self.act_shape: tuple[int, ...] | None = None
        self.records: list[dict[str, float]] = []
        self.heldout_loss: float | None = None
        self.heldout_count = 0

    def prepare(self, context: AttackContext) -> None:
        """Query the client with the auxiliary images and train the decoder on the pairs.

        Args:
            context: needs ``auxiliary_images`` (at least :attr:`min_auxiliary`) and the
                client (``model`` or ``defense``).

        Raises:
            ConfigError: no auxiliary images or no client (the message names the
                attack and the capability it assumes), or a bad budget.
            EmptyDataError: too few auxiliary images.
            InputShapeError: auxiliary images of the wrong shape.
        """
        context = check_context(context)
        if context.auxiliary_images is None:
            raise ConfigError.build(
                what=f"{self.name}: context.auxiliary_images",
                expected="auxiliary images from the victims' distribution (the "
                "'auxiliary_data' capability that sdar assumes)",
                received="None", fix="grant the attacker auxiliary data, or run an attack "
                "that does not assume it")
        client = context.model if context.model is not None else context.defense
        if not isinstance(client, nn.Module):
            raise ConfigError.build(
                what=f"{self.name}: context.model",
                expected="the client the attacker queries (split_model(model, cut).head or "
                "a SplitShield)", received=type(client).__name__,
                fix="pass AttackContext(model=...) with the client part")
        images = check_auxiliary(context, self.min_auxiliary, self.name)
        acts = collect_activations(client, images)
        train, held = heldout_split(int(images.shape[0]), self.heldout_fraction, self.seed)
        decoder, records = train_sdar_decoder(
            acts[train], images[train], seed=self.seed,
            epochs=self.epochs or SDAR_EPOCHS[context.budget], batch_size=self.batch_size,
            lr=self.lr, width=self.width, blocks=self.blocks, loss=self.loss,
            adversarial_weight=self.adversarial_weight,
            discriminator_width=self.discriminator_width, progress=self.progress,
            description=f"{self.name}: decoder",
        )
        self.context, self.decoder, self.records = context, decoder, records
        self.act_shape = tuple(int(s) for s in acts.shape[1:])
        self.heldout_count = int(held.numel())
        self.heldout_loss = (float(F.mse_loss(decode(decoder, acts[held]), images[held]))
                             if held.numel() else None)

    def reconstruct(self, observation: Observation) -> Reconstruction:
        """Decode the observed activations.

        Args:
            observation: an ``"activations"`` observation of the client prepared on.

        Returns:
            Images in [0, 1]; ``meta`` has ``epochs``, ``train_loss`` (the last epoch's
            pixel loss), ``adversarial_loss`` and ``discriminator_loss`` (the last
            epoch's; None without the term), ``adversarial_weight``, ``heldout_loss``
            (MSE on the held-out auxiliary images) and ``heldout_images``.

        Raises:
            StateError: before :meth:`prepare`.
            ConfigError: for another observation kind.
            InputShapeError: activations of another shape than in prepare.
        """
        decoder = require_prepared(self.decoder, self.name)
        start = time.perf_counter()
        a = check_activation_observation(observation, self.name, self.act_shape)
        images = decode(decoder, a)
        last = self.records[-1]
        adversarial = self.adversarial_weight > 0
        return Reconstruction(
            images=images, attack=self.name, seconds=time.perf_counter() - start,
            meta={"epochs": len(self.records), "train_loss": last["reconstruction"],
                  "adversarial_loss": last["adversarial"] if adversarial else None,
                  "discriminator_loss": last["discriminator"] if adversarial else None,
                  "adversarial_weight": self.adversarial_weight,
                  "heldout_loss": self.heldout_loss, "heldout_images": self.heldout_count},
        )


register_attack(SDAR.name, SDAR)

__all__ = [
    "MIN_WIDTH",
    "SDAR",
    "SDAR_EPOCHS",
    "ResidualBlock",
    "SDARConfig",
    "build_discriminator",
    "build_residual_decoder",
    "reconstruction_loss",
    "train_sdar_decoder",
]
