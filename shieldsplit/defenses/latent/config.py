"""The options and the training record of :class:`~shieldsplit.defenses.latent.LatentPerturb`.

Example:
    >>> build_latent_config(noise="fixed", std=0.2).std
    0.2
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shieldsplit._core.validate import build_config
from shieldsplit.defenses.knob import Knob
from shieldsplit.training import History

NoiseKind = Literal["fixed", "learned"]

#: the declared strength of each noise kind: the fixed noise's std, the learned noise's
#: correlation weight (eq. 3's alpha)
LATENT_KNOBS: dict[str, Knob] = {
    "fixed": Knob(option="std", low=0.05, high=10.0, scale="log",
                  description="the standard deviation of the fixed noise at the cut"),
    "learned": Knob(option="lam", low=0.01, high=100.0, scale="log",
                    description="the weight of the correlation term that trains the noise"),
}

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


def build_latent_config(**options: Any) -> LatentConfig:
    """Build a :class:`LatentConfig`, turning pydantic's error into a ConfigError.

    Args:
        **options: the fields of :class:`LatentConfig`.

    Returns:
        The validated options.

    Raises:
        ConfigError: an option out of range or unknown (naming it and its fix).

    Example:
        >>> build_latent_config(std=-1.0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        shieldsplit.errors.ConfigError: Invalid configuration: ...
    """
    return build_config(LatentConfig, options, fixes=_FIXES,
                        fix="see the LatentPerturb docstring")


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


__all__ = ["LATENT_KNOBS", "LatentConfig", "LatentEpoch", "LatentHistory", "NoiseKind",
           "build_latent_config"]
