"""The defended model of the latent perturbation, without its training.

:class:`LatentModel` holds the encoder, the noise and the predictor, builds the noise
and the client's decoder from the first batch (or ``input_shape``), runs the client
and the forward pass, and rebuilds itself from a state dict (checkpoint hooks).
:class:`~shieldsplit.defenses.latent.LatentPerturb` adds the minimax training and is
the class to use.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from shieldsplit.defenses.latent import LatentPerturb
    >>> lp = LatentPerturb(nn.Flatten(), head=nn.Linear(16, 2), noise="fixed", decoder_width=4)
    >>> isinstance(lp, LatentModel), lp.built
    (True, False)
    >>> tuple(lp.reconstruct(torch.rand(2, 1, 4, 4)).shape), lp.built
    ((2, 1, 4, 4), True)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from shieldsplit._core.device import device_of
from shieldsplit._core.validate import check_batch, check_seed
from shieldsplit.cutting import split_model
from shieldsplit.datacontract import check_model
from shieldsplit.defenses.base import Defense
from shieldsplit.defenses.latent.config import (
    LATENT_KNOBS,
    LatentConfig,
    NoiseKind,
    build_latent_config,
)
from shieldsplit.defenses.latent.decoder import LatentDecoder
from shieldsplit.defenses.latent.noise import LatentNoise
from shieldsplit.errors import InputShapeError, StateError, UnsupportedModelError
from shieldsplit.training import eval_mode
from shieldsplit.wire import ClientMessage

_M = TypeVar("_M", bound="LatentModel")


class LatentModel(Defense):
    """The encoder, the noise, the predictor and the client's decoder of a latent
    perturbation defence; everything but the training.

    Built through :class:`~shieldsplit.defenses.latent.LatentPerturb` (which adds
    :meth:`~shieldsplit.defenses.latent.LatentPerturb.fit`); its docstring lists the
    arguments.

    Example:
        >>> from shieldsplit.defenses.latent import LatentPerturb
        >>> issubclass(LatentPerturb, LatentModel)
        True
    """

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
        self.config = build_latent_config(
            noise=noise, mean=mean, std=std, init_mean=init_mean, init_std=init_std, lam=lam,
            lr=lr, decoder_lr=decoder_lr, noise_lr=noise_lr, decoder_width=decoder_width,
            input_shape=None if input_shape is None else tuple(input_shape),
        )
        # per instance: the registry name and the declared strength
        self.__dict__["name"] = f"latent-{self.config.noise}"
        self.__dict__["knob"] = LATENT_KNOBS[self.config.noise]
        self.seed = check_seed(seed)
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
            self._build(torch.zeros(2, *self.config.input_shape, device=device_of(self)))

    @classmethod
    def from_model(
        cls: type[_M], model: nn.Module, *, cut: int | str = 2, seed: int = 0, **options: Any
    ) -> _M:
        """Split a whole classifier at ``cut`` (the cutting code of SplitShield) and defend it.

        Args:
            model: the classifier (deep-copied, never modified).
            cut: the number of compute blocks in the encoder, or a submodule name.
            seed: seeds the layers the defence adds.
            **options: the keyword options of
                :class:`~shieldsplit.defenses.latent.LatentPerturb`.

        Returns:
            The defence, untrained; the client part up to ``cut`` is the encoder and the
            rest of the model the predictor.

        Raises:
            InvalidCutError: if ``cut`` does not exist (the message lists the valid ones).
            UnsupportedModelError: if ``model`` is not a traceable module.
            ConfigError: for an option out of range.
        """
        # the options and the seed first, as typed errors and before the model is cut
        # (an unknown option would otherwise be Python's TypeError from __init__)
        build_latent_config(**options)
        check_seed(seed)
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
        device = device_of(self)
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


# ------------------------------------------------------------------ helpers
def _guess_classes(module: nn.Module) -> int:
    """``module.num_classes`` or the last Linear's width; 0 if unknown (set at the probe)."""
    out = getattr(module, "num_classes", None)
    if isinstance(out, int) and not isinstance(out, bool):
        return out
    for m in reversed(list(module.modules())):
        if isinstance(m, nn.Linear):
            return int(m.out_features)
    return 0


def _build_before_load(
    module: nn.Module, state_dict: Mapping[str, Any], prefix: str, *_: Any
) -> None:
    """Build the decoder and noise from a state dict's shapes before loading it."""
    if not isinstance(module, LatentModel) or module.built:
        return
    shape = state_dict.get(prefix + "image_shape")
    if not isinstance(shape, Tensor) or shape.numel() != 3 or int(shape.min()) < 1:
        return
    image_shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    module._build(torch.zeros(2, *image_shape, device=device_of(module)))


def _freeze_after_load(module: nn.Module, _incompatible: Any) -> None:
    if isinstance(module, LatentModel):
        module._apply_freeze()


__all__ = ["LatentModel"]
