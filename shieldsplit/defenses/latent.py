"""Learnable latent perturbation: Gaussian noise on the latent and a minimax decoder game.

Jiang et al. (2025) defend a client against gradient inversion by perturbing the
latent of its encoder with Gaussian noise, ``z' = z + eps`` with
``eps ~ N(m, s^2)``, and by training against a decoder that tries to rebuild the
image from ``z'``. Each step the decoder is updated to maximise the Pearson
correlation ``r(x, x_hat)`` (eq. 2, loss ``-r``), then the encoder, the predictor
and (in the learned variant) the noise parameters are updated to minimise
``CE(y, y_hat) + lam * r(x, x_hat)`` (eq. 3). The noise is either *fixed*
(``mean`` and ``std`` set by the defender) or *learned* per latent element through
the reparameterisation ``z' = z + m + s * n`` with ``n ~ N(0, 1)``; Algorithm 1
pre-trains the noise, re-initialises the model weights and trains again with the
noise kept fixed.

The reading notes in ``shared/papers/README.md`` ("Learnable data perturbation")
record what the extraction lost; the choices made where the paper is silent are
listed in :class:`LatentPerturb`.

Example:
    >>> import torch
    >>> import shieldsplit as ss
    >>> from shieldsplit.defenses.latent import LatentPerturb, pearson_correlation
    >>> net = ss.PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
    >>> lp = LatentPerturb.from_model(net, cut=2, noise="fixed", std=0.1, decoder_width=8)
    >>> x = torch.rand(4, 1, 8, 8)
    >>> msg = lp.client(x)                  # the noisy latent that leaves the client
    >>> tuple(msg.activations.shape), tuple(lp(x).shape)
    ((4, 8, 8, 8), (4, 2))
    >>> tuple(lp.decoder(msg.activations).shape)   # built from the latent and image shapes
    (4, 1, 8, 8)
    >>> float(pearson_correlation(x, 2 * x + 1).min()) > 0.999
    True
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from shieldsplit._core.validate import (
    build_config,
    check_batch,
    check_int,
    check_loader,
    check_seed,
)
from shieldsplit.cutting import split_model
from shieldsplit.datacontract import as_loader, check_model
from shieldsplit.defenses.base import Defense, Surface, register_defense
from shieldsplit.defenses.pgsl.config import TrainConfig
from shieldsplit.errors import ConfigError, InputShapeError, StateError, UnsupportedModelError
from shieldsplit.functional.image import pearson_correlation
from shieldsplit.training import (
    History,
    accuracy,
    eval_mode,
    fit_epochs,
    make_optimizer,
    restored_on_error,
)
from shieldsplit.wire import ClientMessage

NoiseKind = Literal["fixed", "learned"]

_FIXES = {
    "noise": "pass noise='fixed' or noise='learned'",
    "mean": "pass a finite mean, e.g. 0.0",
    "std": "pass std > 0, e.g. 0.1",
    "init_mean": "pass a finite init_mean, e.g. 1.0 (the paper's)",
    "init_std": "pass init_std > 0, e.g. 0.1 (the paper's)",
    "lam": "pass lam >= 0 (0 switches the correlation term off)",
    "lr": "pass lr > 0, e.g. 1e-3",
    "decoder_lr": "pass decoder_lr > 0, or None to use lr",
    "noise_lr": "pass noise_lr > 0, or None to use 10 * lr",
    "decoder_width": "pass a positive int, e.g. 64",
    "input_shape": "pass input_shape=(C, H, W) with positive sizes, or None to infer it",
}


# ------------------------------------------------------------------- config
class LatentConfig(BaseModel):
    """The options of :class:`LatentPerturb`, validated when the defence is built.

    Attributes:
        noise: ``"fixed"`` (``mean`` and ``std`` set here) or ``"learned"``
            (per-element ``m`` and ``s``, initialised at ``init_mean``, ``init_std``).
        mean: the fixed noise's mean.
        std: the fixed noise's standard deviation (> 0).
        init_mean: initial ``m`` of the learned noise (the paper: 1).
        init_std: initial ``s`` of the learned noise (the paper: 0.1).
        lam: the weight ``alpha`` of the correlation term of eq. 3 (>= 0).
        lr: Adam's learning rate for the encoder and predictor.
        decoder_lr: Adam's learning rate for the decoder (None: ``lr``).
        noise_lr: Adam's learning rate for the learned noise's ``m`` and ``s``
            (None: ``10 * lr``; unused by the fixed noise).
        decoder_width: channels of the decoder's layers (the paper: 256).
        input_shape: ``(C, H, W)`` of the images, or None to read it off the first batch.

    Example:
        >>> LatentConfig(noise="fixed", std=0.2).std
        0.2
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    noise: NoiseKind = "learned"
    mean: float = 0.0
    std: float = Field(0.1, gt=0.0)
    init_mean: float = 1.0
    init_std: float = Field(0.1, gt=0.0)
    lam: float = Field(1.0, ge=0.0)
    lr: float = Field(1e-3, gt=0.0)
    decoder_lr: float | None = Field(None, gt=0.0)
    noise_lr: float | None = Field(None, gt=0.0)
    decoder_width: int = Field(64, ge=1)
    input_shape: tuple[int, int, int] | None = None

    @field_validator("input_shape")
    @classmethod
    def _positive_shape(cls, v: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if v is not None and min(v) < 1:
            raise ValueError(f"every size must be positive, got {v}")
        return v


def _config(**options: Any) -> LatentConfig:
    """Build a :class:`LatentConfig`, turning pydantic's error into a ConfigError."""
    return build_config(LatentConfig, options, fixes=_FIXES,
                        fix="see the LatentPerturb docstring")


# --------------------------------------------------------------------- maths


# ------------------------------------------------------------------ modules
class LatentNoise(nn.Module):
    """The perturbation ``z' = z + m + s * n``, ``n ~ N(0, 1)`` drawn on every call.

    The noise is drawn in training *and* in eval mode, from the global generator (seed
    it with ``torch.manual_seed`` for reproducible outputs), so that nothing that
    leaves the client is ever noise-free.

    Args:
        latent_shape: the shape of one latent (without the batch dimension).
        kind: ``"fixed"``: ``m = mean`` and ``s = std`` are constants; ``"learned"``:
            ``m`` and ``s = softplus(rho)`` are parameters of ``latent_shape``.
        mean: the fixed mean, or the initial learned mean.
        std: the fixed std, or the initial learned std (> 0).

    Example:
        >>> noise = LatentNoise((2, 3), kind="learned", mean=1.0, std=0.1)
        >>> tuple(noise.mean.shape), round(float(noise.std.detach().mean()), 4)
        ((2, 3), 0.1)
    """

    def __init__(
        self, latent_shape: tuple[int, ...], *, kind: NoiseKind, mean: float, std: float
    ) -> None:
        super().__init__()
        self.kind: NoiseKind = kind
        self.latent_shape = tuple(latent_shape)
        if kind == "learned":
            self.loc = nn.Parameter(torch.full(self.latent_shape, float(mean)))
            # inverse softplus, so that softplus(rho) == std at the start
            self.rho = nn.Parameter(torch.full(self.latent_shape, math.log(math.expm1(std))))
        else:
            self._mean, self._std = float(mean), float(std)

    @property
    def mean(self) -> Tensor:
        """``m``: per element for the learned noise, a scalar tensor for the fixed one."""
        if self.kind == "learned":
            return self.loc
        return torch.tensor(self._mean)

    @property
    def std(self) -> Tensor:
        """``s`` (> 0): per element for the learned noise, a scalar tensor for the fixed one."""
        if self.kind == "learned":
            return F.softplus(self.rho)
        return torch.tensor(self._std)

    def forward(self, z: Tensor) -> Tensor:
        """Perturb a batch of latents ``(N, *latent_shape)``."""
        n = torch.randn_like(z)
        if self.kind == "learned":
            return z + self.loc + F.softplus(self.rho) * n
        return z + self._mean + self._std * n


class LatentDecoder(nn.Module):
    """The client's decoder: rebuilds the image ``(C, H, W)`` from a perturbed latent.

    Adapted from the paper's Table I (convT 256 k3, BN, convT 256 k4, BN, convT C k2/k4
    stride 2) to any latent and image size: a transposed conv (k3, stride 1) to
    ``width`` channels with BatchNorm and ReLU, then as many (k4, stride 2) transposed
    convs as it takes to reach the image size (BatchNorm and ReLU between them, the
    last one to ``C`` channels), a bilinear resize to the exact ``(H, W)`` when the
    doubling overshoots, and a sigmoid (images in ``[0, 1]``; the Pearson loss is
    invariant to affine pixel scales, so normalised images work too). A flat latent
    ``(D,)`` first goes through ``Linear(D, width * ceil(H/4) * ceil(W/4))`` and is
    reshaped to a ``ceil(H/4) x ceil(W/4)`` map.

    Args:
        latent_shape: one latent's shape: ``(C', h, w)`` or ``(D,)``.
        image_shape: ``(C, H, W)`` of the images.
        width: channels of the hidden layers (the paper: 256).

    Raises:
        UnsupportedModelError: for a latent that is neither 1-D nor 3-D per sample.

    Example:
        >>> dec = LatentDecoder((8, 4, 4), (1, 28, 28), width=8)
        >>> tuple(dec(torch.zeros(2, 8, 4, 4)).shape)
        (2, 1, 28, 28)
    """

    def __init__(
        self, latent_shape: tuple[int, ...], image_shape: tuple[int, int, int], *, width: int = 64
    ) -> None:
        super().__init__()
        c_img, height, wide = image_shape
        self.image_size = (int(height), int(wide))
        if len(latent_shape) == 1:
            h, w = max(1, math.ceil(height / 4)), max(1, math.ceil(wide / 4))
            self.stem: nn.Module = nn.Sequential(
                nn.Linear(int(latent_shape[0]), width * h * w), nn.ReLU(),
                nn.Unflatten(1, (width, h, w)),
            )
            c = width
        elif len(latent_shape) == 3:
            self.stem = nn.Identity()
            c, h, w = (int(s) for s in latent_shape)
        else:
            raise UnsupportedModelError.build(
                what="encoder", expected="latents of shape (N, C, h, w) or (N, D)",
                received=f"latents of shape (N, {', '.join(map(str, latent_shape))})",
                fix="cut the model where the activation is a feature map or a flat vector",
            )
        ups = 0
        while h * 2**ups < height or w * 2**ups < wide:
            ups += 1
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        ]
        for _ in range(ups - 1):
            layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
                       nn.BatchNorm2d(width), nn.ReLU()]
        layers.append(
            nn.ConvTranspose2d(width, c_img, 4, stride=2, padding=1) if ups
            else nn.ConvTranspose2d(width, c_img, 3, padding=1)
        )
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """Reconstructions ``(N, C, H, W)`` in ``[0, 1]``."""
        out = self.body(self.stem(z))
        if tuple(out.shape[-2:]) != self.image_size:
            out = F.interpolate(out, size=self.image_size, mode="bilinear", align_corners=False)
        return torch.sigmoid(out)


# ------------------------------------------------------------------ history
class LatentEpoch(BaseModel):
    """One epoch of :meth:`LatentPerturb.fit` or :meth:`LatentPerturb.pretrain_noise`.

    Attributes:
        epoch: 1-based epoch number.
        train_loss: mean ``CE + lam * r`` of the encoder step (eq. 3).
        train_cross_entropy: mean cross-entropy.
        train_correlation: mean Pearson ``r(x, decoder(z'))`` after the decoder step:
            how well the decoder rebuilds the training images (lower is more private).
        train_accuracy: accuracy on the training batches (noisy latents).
        val_accuracy: accuracy on the validation loader, if given (noisy latents).
        noise_mean: mean over the latent elements of ``m``.
        noise_std: mean over the latent elements of ``s``.
        seconds: wall time (the only field that varies between equal seeds).
    """

    model_config = ConfigDict(extra="forbid")

    epoch: int
    train_loss: float
    train_cross_entropy: float
    train_correlation: float
    train_accuracy: float
    val_accuracy: float | None
    noise_mean: float
    noise_std: float
    seconds: float


class LatentHistory(History):
    """What :meth:`LatentPerturb.fit` and :meth:`LatentPerturb.pretrain_noise` return.

    Attributes:
        seed: the seed of the run.
        phase: ``"pretrain"`` (Algorithm 1, step 1) or ``"fit"``.
        noise: the noise variant.
        noise_frozen: whether the noise parameters were frozen during the run.
        epochs: one record per epoch.
        best_epoch: the epoch whose weights were kept (``restore_best``), else None.
    """

    phase: Literal["pretrain", "fit"]
    noise: NoiseKind
    noise_frozen: bool
    epochs: list[LatentEpoch]


# ------------------------------------------------------------------ defence
class LatentPerturb(Defense):
    """A classifier whose client perturbs its latent with (learned) Gaussian noise.

    The client runs the encoder and adds the noise (:class:`LatentNoise`); the
    perturbed latent ``z'`` is what crosses the network in split learning and what the
    predictor classifies. A decoder (:class:`LatentDecoder`, built automatically from
    the encoder's output shape and the image shape) stays on the client and plays the
    attacker in the minimax game of :meth:`fit`. In federated learning the shared model
    is the encoder, the noise and the predictor (:meth:`federated_model`), not the
    decoder.

    Choices where the paper is silent (see ``shared/papers/README.md``):

    - ``mean`` defaults to 0: a constant shift of the latent is a bias that the
      predictor and any attacker absorb, so the fixed variant's protection comes from
      ``std`` (the paper's 0.1); the paper's list of means did not survive.
    - ``lam`` (``alpha`` of eq. 3) defaults to 1, which weighs the correlation (in
      ``[-1, 1]``) like the cross-entropy of a few-class problem. As in eq. 3 the
      encoder minimises ``r`` itself, not ``|r|``; the decoder's own step can always
      flip the sign, so the game settles near ``r = 0``.
    - The noise is drawn on every forward, in eval mode too, so that an eavesdropper
      never sees a noise-free latent; predictions are therefore random (seed them with
      ``torch.manual_seed``).
    - The image shape is read off the first batch (of :meth:`fit`,
      :meth:`pretrain_noise`, :meth:`client` or ``forward``) unless ``input_shape`` is
      given; the decoder and the learned noise are built then, with ``seed``.
    - Both optimisers are the library's Adam with its per-step decay
      (:func:`~shieldsplit.training.make_optimizer`); the learned noise's ``m`` and
      ``s`` form a parameter group of their own at ``noise_lr`` (default ``10 * lr``),
      since at the encoder's rate they barely move in a few dozen steps.
    - Built directly from an encoder and a head, :attr:`cut` is ``"encoder"``;
      :meth:`~shieldsplit.defenses.base.Defense.load` needs a defence built with
      :meth:`from_model` (or the registry), which records the real cut.

    The registry has two names: ``"latent-fixed"`` and ``"latent-learned"``. The class's
    :attr:`name` is ``"latent"``; an instance reports its registry name (so that
    :meth:`~shieldsplit.defenses.base.Defense.save` and ``load`` rebuild the right variant)
    and its :attr:`strength`: ``"std"`` for the fixed noise, ``"lam"`` for the learned
    one (whose scale is learned, so a sweep varies the weight of the privacy term).

    Args:
        encoder: the client network ``x -> z`` (deep-copied, never modified).
        head: the predictor ``z' -> logits`` (the server part in split learning;
            deep-copied, never modified).
        noise: ``"fixed"`` or ``"learned"``.
        mean: the fixed noise's mean (default 0, see above).
        std: the fixed noise's standard deviation (> 0; the paper: 0.1).
        init_mean: initial per-element mean of the learned noise (the paper: 1).
        init_std: initial per-element std of the learned noise (the paper: 0.1).
        lam: the weight of the correlation term (>= 0; 0 leaves only the noise).
        lr: Adam's learning rate for the encoder and predictor.
        decoder_lr: Adam's learning rate for the decoder (None: ``lr``).
        noise_lr: Adam's learning rate for the learned noise's ``m`` and ``s``, a
            separate parameter group of the encoder/predictor optimiser (None:
            ``10 * lr``: at the encoder's rate the noise barely moves in a few dozen
            steps; unused by the fixed noise).
        decoder_width: channels of the decoder's hidden layers (the paper: 256; the
            default 64 keeps it cheap on a CPU).
        input_shape: ``(C, H, W)`` of the images; None reads it off the first batch.
        seed: seeds the layers the defence adds (decoder, re-initialisation).

    Raises:
        ConfigError: for an option out of range or an unknown noise kind (naming it).
        UnsupportedModelError: if ``encoder`` or ``head`` is not a module, or the head
            cannot take the encoder's output (checked now when ``input_shape`` is
            given, else at the first batch).

    Reference:
        Jiang et al., "Defending Against Gradient Inversion Attacks for Biomedical
        Images via Learnable Data Perturbation", 2025.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> enc = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        >>> head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
        >>> lp = LatentPerturb(enc, head=head, noise="learned", input_shape=(1, 8, 8),
        ...                    decoder_width=8, seed=0)
        >>> tuple(lp.noise.mean.shape), lp.name, lp.strength
        ((4, 8, 8), 'latent-learned', 'lam')
        >>> tuple(lp(torch.rand(3, 1, 8, 8)).shape)
        (3, 2)
    """

    name: ClassVar[str] = "latent"
    surfaces: ClassVar[frozenset[Surface]] = frozenset({"split", "federated"})
    strength: ClassVar[str | None] = "std"
    Config = LatentConfig
    config: LatentConfig

    noise_frozen: Tensor
    image_shape: Tensor

    def __init__(
        self,
        encoder: nn.Module,
        *,
        head: nn.Module,
        noise: NoiseKind = "learned",
        mean: float = 0.0,
        std: float = 0.1,
        init_mean: float = 1.0,
        init_std: float = 0.1,
        lam: float = 1.0,
        lr: float = 1e-3,
        decoder_lr: float | None = None,
        noise_lr: float | None = None,
        decoder_width: int = 64,
        input_shape: tuple[int, int, int] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for what, module in (("encoder", encoder), ("head", head)):
            check_model(module, what=what)
        self.config = _config(
            noise=noise, mean=mean, std=std, init_mean=init_mean, init_std=init_std, lam=lam,
            lr=lr, decoder_lr=decoder_lr, noise_lr=noise_lr, decoder_width=decoder_width,
            input_shape=None if input_shape is None else tuple(input_shape),
        )
        # per instance: the registry name and the option that sets the strength
        self.__dict__["name"] = f"latent-{self.config.noise}"
        self.__dict__["strength"] = "std" if self.config.noise == "fixed" else "lam"
        self.seed = seed
        self.cut: int | str = "encoder"
        self.encoder = copy.deepcopy(encoder)
        self.predictor = copy.deepcopy(head)
        # the undefended twin: encoder then head, cut after the encoder
        self.record_template(nn.Sequential(encoder, head), cut="0")
        self.num_classes = _guess_classes(self.predictor)
        self.noise: LatentNoise | None = None
        self.decoder: LatentDecoder | None = None
        self.register_buffer("noise_frozen", torch.zeros((), dtype=torch.bool))
        self.register_buffer("image_shape", torch.zeros(3, dtype=torch.long))
        self.register_load_state_dict_pre_hook(_build_before_load)
        self.register_load_state_dict_post_hook(_freeze_after_load)
        if self.config.input_shape is not None:
            self._build(torch.zeros(2, *self.config.input_shape, device=_device_of(self)))

    @classmethod
    def from_model(
        cls, model: nn.Module, *, cut: int | str = 2, seed: int = 0, **options: Any
    ) -> LatentPerturb:
        """Split a whole classifier at ``cut`` (the cutting code of SplitShield) and defend it.

        Args:
            model: the classifier (deep-copied, never modified).
            cut: the number of compute blocks in the encoder, or a submodule name.
            seed: seeds the layers the defence adds.
            **options: the keyword options of :class:`LatentPerturb`.

        Returns:
            The defence, untrained; the client part up to ``cut`` is the encoder and the
            rest of the model the predictor.

        Raises:
            InvalidCutError: if ``cut`` does not exist (the message lists the valid ones).
            UnsupportedModelError: if ``model`` is not a traceable module.
            ConfigError: for an option out of range.
        """
        parts = split_model(copy.deepcopy(check_model(model)), cut)
        defense = cls(parts.head, head=parts.tail, seed=seed, **options)
        defense.cut = parts.cut
        defense.record_template(model, cut=parts.cut)
        if defense.num_classes <= 0:
            defense.num_classes = _guess_classes(model)
        return defense

    # ---------------------------------------------------------------- building
    @property
    def built(self) -> bool:
        """Whether the decoder and noise exist (they are built at the first batch)."""
        return self.decoder is not None and self.noise is not None

    def _build(self, x: Tensor) -> None:
        """Probe the encoder and head on ``x``, then build the noise and the decoder."""
        image_shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
        probe = x[:2].detach()
        with torch.no_grad(), eval_mode(self.encoder), eval_mode(self.predictor):
            try:
                z = self.encoder(probe)
            except Exception as exc:  # any failure means the encoder rejects the images
                raise UnsupportedModelError.build(
                    what="input_shape", expected="images the encoder accepts",
                    received=f"images of shape {image_shape} ({type(exc).__name__}: {exc})",
                    fix="pass images (or input_shape) of the size the encoder was built for",
                ) from exc
            if not isinstance(z, Tensor) or z.dim() not in (2, 4):
                raise UnsupportedModelError.build(
                    what="encoder", expected="a latent tensor (N, C, h, w) or (N, D)",
                    received=f"{type(z).__name__} of shape {tuple(getattr(z, 'shape', ()))}",
                    fix="cut where the activation is a feature map or a flat vector",
                )
            try:
                logits = self.predictor(z)
            except Exception as exc:  # shape mismatch between the two networks
                raise UnsupportedModelError.build(
                    what="head", expected=f"a predictor that takes latents of shape "
                    f"{tuple(z.shape[1:])}",
                    received=f"{type(exc).__name__}: {exc}",
                    fix="pass the head that follows this encoder (or use from_model)",
                ) from exc
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            raise UnsupportedModelError.build(
                what="head", expected="a predictor returning (N, classes) logits",
                received=f"{type(logits).__name__} of shape "
                f"{tuple(getattr(logits, 'shape', ()))}",
                fix="end the head with the classifier's output layer",
            )
        self.num_classes = int(logits.shape[1])
        self._build_modules(tuple(int(s) for s in z.shape[1:]), image_shape, x.device)

    def _build_modules(
        self, latent_shape: tuple[int, ...], image_shape: tuple[int, int, int],
        device: torch.device,
    ) -> None:
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            decoder = LatentDecoder(latent_shape, image_shape, width=cfg.decoder_width)
        learned = cfg.noise == "learned"
        noise = LatentNoise(
            latent_shape, kind=cfg.noise, mean=cfg.init_mean if learned else cfg.mean,
            std=cfg.init_std if learned else cfg.std,
        )
        self.decoder = decoder.to(device)
        self.noise = noise.to(device)
        self.image_shape.copy_(torch.tensor(image_shape))
        self._apply_freeze()

    def _unbuild(self) -> None:
        del self.decoder, self.noise
        self.decoder = None
        self.noise = None
        self.image_shape.zero_()

    def _ensure_built(self, x: Tensor) -> None:
        if not self.built:
            self._build(x)

    def _modules_built(self) -> tuple[LatentNoise, LatentDecoder]:
        if self.noise is None or self.decoder is None:
            raise StateError.build(
                what="LatentPerturb", expected="a defence that has seen the image shape",
                received="no batch yet and no input_shape",
                fix="pass input_shape=(C, H, W), or call fit or the model on a batch first",
            )
        return self.noise, self.decoder

    def _apply_freeze(self) -> None:
        if self.noise is not None:
            trainable = not bool(self.noise_frozen)
            for p in self.noise.parameters():
                p.requires_grad_(trainable)

    @property
    def noise_lr(self) -> float:
        """The learning rate of the learned noise's parameters (``noise_lr`` or ``10 * lr``)."""
        cfg = self.config
        return cfg.noise_lr if cfg.noise_lr is not None else 10.0 * cfg.lr

    @property
    def frozen(self) -> bool:
        """Whether the noise parameters are frozen (after :meth:`pretrain_noise`)."""
        return bool(self.noise_frozen)

    # ------------------------------------------------------------------ parts
    @property
    def client_part(self) -> nn.Module:
        """The encoder ``x -> z`` before the noise (what a white-box attacker knows)."""
        return self.encoder

    def federated_model(self) -> nn.Module:
        """The shared model of federated learning: encoder, noise, predictor (no decoder).

        Returns:
            A module sharing this defence's parameters.

        Raises:
            StateError: before the first batch when ``input_shape`` was not given.
        """
        noise, _ = self._modules_built()
        return nn.Sequential(self.encoder, noise, self.predictor)

    def options(self) -> dict[str, Any]:
        """The constructor options besides ``cut`` and ``seed`` (JSON-able).

        ``input_shape`` is recorded once known, so that :meth:`load` rebuilds the
        decoder and the learned noise before reading their weights.
        """
        data = self.config.model_dump()
        if data["input_shape"] is None and self.built:
            data["input_shape"] = [int(s) for s in self.image_shape.tolist()]
        elif data["input_shape"] is not None:
            data["input_shape"] = list(data["input_shape"])
        return data

    def _prepare(self, x: Any, y: Any = None) -> tuple[Tensor, Tensor | None]:
        """Check a batch, build the defence at the first one, move it to the device."""
        check_batch(x, y, num_classes=self.num_classes)
        device = _device_of(self)
        x = x.to(device)
        self._ensure_built(x)
        expected = tuple(int(s) for s in self.image_shape.tolist())
        if tuple(x.shape[1:]) != expected:
            raise InputShapeError.build(
                what="x", expected=f"images of shape (N, {', '.join(map(str, expected))})",
                received=tuple(x.shape), fix="resize the images to the size the defence was "
                "built for",
            )
        if y is not None:
            y = y.to(device)
        return x, y

    # ---------------------------------------------------------------- forward
    def client(self, x: Tensor, y: Tensor | None = None) -> ClientMessage:
        """Encoder then noise: the perturbed latent ``z'`` that leaves the client.

        Args:
            x: images ``(N, C, H, W)``.
            y: labels, or None.

        Returns:
            The message with ``activations = z'`` (fresh noise on every call).

        Raises:
            InputShapeError, NonFiniteInputError, LabelError: on a bad batch.
        """
        x, y = self._prepare(x, y)
        noise, _ = self._modules_built()
        return ClientMessage(activations=noise(self.encoder(x)), labels=y)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the defended model: the predictor on the perturbed latent."""
        return self.predictor(self.client(x).activations)

    def reconstruct(self, x: Tensor) -> Tensor:
        """The client decoder's reconstruction of ``x`` from its perturbed latent.

        Args:
            x: images ``(N, C, H, W)``.

        Returns:
            ``(N, C, H, W)`` reconstructions in ``[0, 1]``.
        """
        z = self.client(x).activations
        _, decoder = self._modules_built()
        return decoder(z)

    # --------------------------------------------------------------- training
    def fit(
        self,
        train_loader: Iterable[tuple[Tensor, Tensor]],
        *,
        epochs: int = 5,
        val_loader: Iterable[tuple[Tensor, Tensor]] | None = None,
        seed: int = 0,
        progress: bool = True,
        restore_best: bool = False,
    ) -> LatentHistory:
        """Minimax training (eqs. 2-3), in place.

        Each step: (1) the decoder is updated to maximise the mean Pearson correlation
        between the images and its reconstructions from the detached perturbed latents
        (loss ``-r``); (2) the encoder, the predictor and, for the learned noise that is
        not frozen, ``m`` and ``s`` are updated to minimise ``CE + lam * r`` through the
        updated decoder.

        Args:
            train_loader: labelled images in any form of docs/data.md.
            epochs: passes over the data.
            val_loader: optional; its accuracy (noisy latents) is recorded.
            seed: seeds the noise, dropout and the loader's shuffling (when it uses the
                global generator); the same seed on the same data gives the same history.
            progress: show a progress bar.
            restore_best: with a ``val_loader``, end with the weights of the epoch of best
                validation accuracy (selection on validation data only).

        Returns:
            The per-epoch history.

        Raises:
            ConfigError: if ``epochs < 1``.
            EmptyDataError: if a loader yields no batch.
            InputShapeError, NonFiniteInputError, LabelError, UnsupportedModelError: on a
                bad batch; the weights are restored to what they were before the call.
        """
        return self._guarded(train_loader, epochs, val_loader, seed, progress, restore_best,
                             "fit")

    def train_protocol(
        self,
        train_loader: Iterable[tuple[Tensor, Tensor]],
        *,
        epochs: int = 5,
        val_loader: Iterable[tuple[Tensor, Tensor]] | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> LatentHistory:
        """The paper's whole protocol: for learned noise Algorithm 1 (:meth:`pretrain_noise`
        for ``epochs``, then :meth:`fit` from re-initialised weights with the noise
        frozen); for fixed noise just :meth:`fit`.

        Args:
            train_loader: labelled images in any form of docs/data.md.
            epochs: epochs of each phase.
            val_loader: optional validation loader (for :meth:`fit`).
            seed: seeds both phases.
            progress: show progress bars.

        Returns:
            The history of the final :meth:`fit`.
        """
        if self.config.noise == "learned" and not self.frozen:
            self.pretrain_noise(train_loader, epochs=epochs, seed=seed, progress=progress)
        return self.fit(train_loader, epochs=epochs, val_loader=val_loader, seed=seed,
                        progress=progress)

    def pretrain_noise(
        self,
        train_loader: Iterable[tuple[Tensor, Tensor]],
        *,
        epochs: int = 5,
        seed: int = 0,
        progress: bool = True,
    ) -> LatentHistory:
        """Algorithm 1, steps 1-2: learn the noise, then re-initialise the model weights.

        Runs the minimax training of :meth:`fit` with the noise parameters trainable,
        then re-initialises the encoder, predictor and decoder at random (seeded with
        ``seed``) and freezes ``m`` and ``s`` (recorded in the state dict, so
        save/load keeps them frozen). Step 3 is a later :meth:`fit`.

        Args:
            train_loader: labelled images in any form of docs/data.md.
            epochs: passes over the data.
            seed: seeds the run and the re-initialisation.
            progress: show a progress bar.

        Returns:
            The history of the pre-training.

        Raises:
            ConfigError: for the fixed noise, which has nothing to learn.
            StateError: if the noise is already pre-trained and frozen.
            EmptyDataError, InputShapeError, NonFiniteInputError, LabelError: as
                :meth:`fit` (nothing changes then).
        """
        if self.config.noise != "learned":
            raise ConfigError.build(
                what="noise", expected="noise='learned' to pre-train the noise",
                received="noise='fixed'",
                fix="the fixed noise has no parameters to learn: call fit directly, or "
                "build LatentPerturb(..., noise='learned')",
            )
        if self.frozen:
            raise StateError.build(
                what="pretrain_noise", expected="noise parameters that are not frozen yet",
                received="noise already pre-trained and frozen",
                fix="call fit to train the model with the learned noise",
            )
        history = self._guarded(train_loader, epochs, None, seed, progress, False, "pretrain")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for part in (self.encoder, self.predictor, self.decoder):
                if part is not None:
                    _reinitialise(part)
        self.noise_frozen.fill_(True)
        self._apply_freeze()
        return history

    def _guarded(
        self,
        train_loader: Iterable[tuple[Tensor, Tensor]],
        epochs: int,
        val_loader: Iterable[tuple[Tensor, Tensor]] | None,
        seed: int,
        progress: bool,
        restore_best: bool,
        phase: Literal["pretrain", "fit"],
    ) -> LatentHistory:
        epochs = check_int("epochs", epochs, low=1, fix="pass epochs=1 or more")
        seed = check_seed(seed)
        check_loader(train_loader, "train_loader")
        # the data contract of docs/data.md; no probe here: the first batch builds the
        # decoder and noise (inside the guard below), and _prepare checks its shape
        train_loader = as_loader(train_loader, seed=seed, num_classes=self.num_classes)
        if val_loader is not None:
            check_loader(val_loader, "val_loader")
            val_loader = as_loader(val_loader, seed=seed, shuffle=False,
                                   num_classes=self.num_classes, what="val_loader")
        was_built = self.built

        def unbuild() -> None:  # a first batch that failed leaves the defence lazy again
            if not was_built and self.built:
                self._unbuild()

        with restored_on_error(self, undo=unbuild):
            return self._run(train_loader, epochs, val_loader, seed, progress, restore_best,
                             phase)

    def _optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer, list[Any]]:
        noise, decoder = self._modules_built()
        cfg = self.config
        main = [p for p in (*self.encoder.parameters(), *self.predictor.parameters())
                if p.requires_grad]
        groups: list[dict[str, Any]] = [{"params": main}]
        if cfg.noise == "learned" and not self.frozen:
            # a group of its own: at the encoder's rate m and s barely move
            groups.append({"params": [p for p in noise.parameters() if p.requires_grad],
                           "lr": self.noise_lr})
        train = TrainConfig(lr=cfg.lr)
        main_opt = torch.optim.Adam(groups, lr=train.lr, weight_decay=train.weight_decay)
        decay = train.lr_decay  # the Keras-style decay of make_optimizer, on every group
        main_sched = torch.optim.lr_scheduler.LambdaLR(
            main_opt, lambda step: 1.0 / (1.0 + decay * step))
        dec_opt, dec_sched = make_optimizer(decoder.parameters(),
                                            TrainConfig(lr=cfg.decoder_lr or cfg.lr))
        return main_opt, dec_opt, [main_sched, dec_sched]

    def _run(
        self,
        train_loader: Iterable[tuple[Tensor, Tensor]],
        epochs: int,
        val_loader: Iterable[tuple[Tensor, Tensor]] | None,
        seed: int,
        progress: bool,
        restore_best: bool,
        phase: Literal["pretrain", "fit"],
    ) -> LatentHistory:
        lam = self.config.lam
        optimizers: list[tuple[torch.optim.Optimizer, torch.optim.Optimizer, list[Any]]] = []
        sums = {"loss": 0.0, "ce": 0.0, "r": 0.0, "correct": 0.0, "seen": 0.0}

        def step(x_raw: Tensor, y_raw: Tensor) -> int:
            x, y = self._prepare(x_raw, y_raw)
            if y is None:  # _prepare returns the labels it was given
                raise StateError.build(what="y", expected="labels", received=None,
                                       fix="report this bug")
            if not optimizers:  # the first batch built the decoder and the noise
                optimizers.append(self._optimizers())
            main_opt, dec_opt, scheds = optimizers[0]
            noise, decoder = self._modules_built()
            self.train()
            z = noise(self.encoder(x))
            # (1) the decoder maximises r(x, decoder(z')) on the detached latent
            dec_opt.zero_grad(set_to_none=True)
            (-pearson_correlation(x, decoder(z.detach())).mean()).backward()
            dec_opt.step()
            # (2) encoder, predictor (and noise) minimise CE + lam * r
            main_opt.zero_grad(set_to_none=True)
            logits = self.predictor(z)
            ce = F.cross_entropy(logits, y)
            r = pearson_correlation(x, decoder(z)).mean()
            loss = ce + lam * r
            loss.backward()
            main_opt.step()
            for sched in scheds:
                sched.step()
            n = int(y.shape[0])
            sums["seen"] += n
            sums["loss"] += float(loss.detach()) * n
            sums["ce"] += float(ce.detach()) * n
            sums["r"] += float(r.detach()) * n
            sums["correct"] += int((logits.detach().argmax(-1) == y).sum())
            return n

        def end_epoch(epoch: int, seconds: float) -> LatentEpoch:
            noise, _ = self._modules_built()
            n = sums["seen"]
            record = LatentEpoch(
                epoch=epoch, train_loss=sums["loss"] / n, train_cross_entropy=sums["ce"] / n,
                train_correlation=sums["r"] / n, train_accuracy=sums["correct"] / n,
                val_accuracy=accuracy(self, val_loader) if val_loader is not None else None,
                noise_mean=float(noise.mean.detach().float().mean()),
                noise_std=float(noise.std.detach().float().mean()),
                seconds=seconds,
            )
            sums.update(loss=0.0, ce=0.0, r=0.0, correct=0.0, seen=0.0)
            return record

        records, kept = fit_epochs(
            self, train_loader, epochs=epochs, step=step, end_epoch=end_epoch,
            score=lambda r: r.val_accuracy, seed=seed, description=f"latent {phase}",
            progress=progress, restore_best=restore_best,
        )
        return LatentHistory(seed=seed, phase=phase, noise=self.config.noise,
                             noise_frozen=self.frozen, epochs=records, best_epoch=kept)


# ------------------------------------------------------------------ helpers
def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _guess_classes(module: nn.Module) -> int:
    """``module.num_classes`` or the last Linear's width; 0 if unknown (set at the probe)."""
    out = getattr(module, "num_classes", None)
    if isinstance(out, int) and not isinstance(out, bool):
        return out
    for m in reversed(list(module.modules())):
        if isinstance(m, nn.Linear):
            return int(m.out_features)
    return 0


def _reinitialise(module: nn.Module) -> None:
    """Reset every submodule that can reset itself (weights and BatchNorm statistics)."""
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()


def _build_before_load(
    module: nn.Module, state_dict: Mapping[str, Any], prefix: str, *_: Any
) -> None:
    """Build the decoder and noise from a state dict's shapes before loading it."""
    if not isinstance(module, LatentPerturb) or module.built:
        return
    shape = state_dict.get(prefix + "image_shape")
    if not isinstance(shape, Tensor) or shape.numel() != 3 or int(shape.min()) < 1:
        return
    image_shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    module._build(torch.zeros(2, *image_shape, device=_device_of(module)))


def _freeze_after_load(module: nn.Module, _incompatible: Any) -> None:
    if isinstance(module, LatentPerturb):
        module._apply_freeze()


def _factory(kind: NoiseKind) -> Any:
    def build(model: nn.Module, *, cut: int | str = 2, seed: int = 0,
              **options: Any) -> LatentPerturb:
        given = options.pop("noise", kind)
        if given != kind:
            raise ConfigError.build(
                what="noise", expected=f"noise={kind!r} for 'latent-{kind}'",
                received=repr(given), fix=f"drop noise= or use 'latent-{given}'",
            )
        return LatentPerturb.from_model(model, cut=cut, seed=seed, noise=kind, **options)

    build.Config = LatentConfig  # type: ignore[attr-defined]
    build.__name__ = build.__qualname__ = f"latent_{kind}"
    build.__doc__ = f"Build a LatentPerturb with {kind} noise (the 'latent-{kind}' factory)."
    return build


register_defense("latent-fixed", _factory("fixed"))
register_defense("latent-learned", _factory("learned"))

__all__ = [
    "LatentConfig",
    "LatentDecoder",
    "LatentEpoch",
    "LatentHistory",
    "LatentNoise",
    "LatentPerturb",
    "NoiseKind",
    "pearson_correlation",
]
