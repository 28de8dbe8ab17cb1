"""Pydantic configuration of the PGSL pipeline.

Every step of PGSL can be switched off. Configs forbid unknown fields and use
``Literal`` choices, so a typo fails when the object is built, not an hour
into a run. :meth:`PGSLConfig.off` switches every step off, which turns
:class:`~shieldsplit.SplitShield` into plain split learning that reproduces
the unwrapped model exactly.

Example:
    >>> cfg = PGSLConfig()
    >>> cfg.recovery.mu
    0.55
    >>> PGSLConfig.off().enabled_steps()
    []
    >>> PGSLConfig(recovery={"mu": 0.3}).recovery.mu
    0.3
    >>> try:
    ...     PGSLConfig(recovry={"mu": 0.3})
    ... except ValueError as exc:
    ...     print(type(exc).__name__, str(exc).split("Fix: ")[1])
    ConfigError rename it to 'recovery'.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shieldsplit._core.validate import config_error

# the optimiser settings live with the one training loop (a low layer); re-exported here
from shieldsplit.training import TrainConfig

#: True while a config validates its fields: a nested config then leaves its error to the
#: outermost one, which names the whole path (``recovery.mu``) once.
_VALIDATING: ContextVar[bool] = ContextVar("_VALIDATING", default=False)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **data: Any) -> None:
        """Validate the fields; a bad one is a typed ConfigError (naming it and its fix),
        not pydantic's raw error (:func:`~shieldsplit._core.validate.config_error`)."""
        if _VALIDATING.get():
            super().__init__(**data)
            return
        token = _VALIDATING.set(True)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(type(self), data, exc, fix="check the field names and ranges "
                               "in shieldsplit.defenses.pgsl.config") from None
        finally:
            _VALIDATING.reset(token)


class SaliencyConfig(_Strict):
    """Step (a): the saliency map, computed with Captum on the client.

    Attributes:
        enabled: compute the map (needed by ``perturb`` and ``concat``).
        method: the Captum attribution method.
        concat: concatenate the (down-sampled) map to the client's input tensor
            as one extra channel (paper Sec. IV-B: ``4ch + 1`` channels).
        target: the class ``y`` of eq. 1. ``"predicted"`` (default) uses the client
            probe's prediction in training and inference alike, so the map is built
            the same way in both; ``"label"`` is the paper's eq. 1: the true label when
            one is given (training), the prediction when none is (inference). Chosen on
            the validation split: with ``"label"`` the network learns to read the class
            off the label-guided map and collapses onto the majority class at inference
            (docs/pgsl.md, docs/results/saliency_target_breastmnist.md).
    """

    enabled: bool = True
    method: Literal["saliency", "input_x_gradient"] = "saliency"
    concat: bool = True
    target: Literal["predicted", "label"] = "predicted"


class PerturbConfig(_Strict):
    """Step (b): the intentional, untargeted JSMA-style pixel attack (eq. 1).

    Attributes:
        enabled: perturb the client's images before they enter the network.
        pixel_budget: fraction of each image's pixels that may change (one-
            and few-pixel attacks: the default 2% is 15 pixels of a 28x28 image).
        strength: the step added to a chosen pixel (theta of JSMA).
        clip: the valid pixel range, or None for unbounded (normalised) inputs.
    """

    enabled: bool = True
    pixel_budget: float = Field(0.02, gt=0.0, le=1.0)
    strength: float = Field(1.0, gt=0.0)
    clip: tuple[float, float] | None = (0.0, 1.0)

    @model_validator(mode="after")
    def _check_clip(self) -> PerturbConfig:
        if self.clip is not None and not self.clip[0] < self.clip[1]:
            raise ValueError(f"clip must be (low, high) with low < high, got {self.clip}")
        return self


class UnshuffleConfig(_Strict):
    """Step (c): reversible pixel-unshuffle on the client, sub-pixel up-sampling on the server.

    Attributes:
        enabled: down-sample the (attacked) image into ``factor**2`` sub-images.
        factor: the down-sampling factor (the paper: 2).
        pad: how odd heights/widths are padded up to a multiple of ``factor``.
        upsample_kernel: kernel of the server's sub-pixel up-sampling convolution
            (the paper does not give it). 1 (default) costs a ninth of 3 and measured
            no less accurate; see docs/pgsl.md.
    """

    enabled: bool = True
    factor: int = Field(2, ge=2, le=4)
    pad: Literal["replicate", "zeros"] = "replicate"
    upsample_kernel: Literal[1, 3] = 1


class RecoveryConfig(_Strict):
    """Step (d): proximal-gradient (APG robust PCA) recovery on the server.

    Attributes:
        enabled: run the recovery and train the recovered stream.
        mu: the relaxation parameter (the paper: 0.55, from its Fig. 3 sweep).
        lam: the L1 weight; None means ``1 / sqrt(max(m, n))``.
        max_iter: APG iterations per batch (few: see docs/pgsl.md for the cost).
        tol: relative-change tolerance for early stopping.
        matrix: which matrix the nuclear norm acts on (see docs/pgsl.md).
        start: APG's starting point: ``(D, 0)`` ("data") or ``(0, 0)`` ("zeros").
    """

    enabled: bool = True
    mu: float = Field(0.55, gt=0.0)
    lam: float | None = Field(None, gt=0.0)
    max_iter: int = Field(3, ge=1, le=1000)
    tol: float = Field(1e-3, gt=0.0)
    matrix: Literal["channels_x_pixels", "rows_x_cols"] = "channels_x_pixels"
    start: Literal["data", "zeros"] = "data"


class FusionConfig(_Strict):
    """Step (e): conv-sum feature fusion of the attacked and recovered maps (eqs. 7-8).

    Attributes:
        enabled: build the fused stream from both maps (needs ``recovery``).
        kernel_size: the fusion convolution's kernel.
    """

    enabled: bool = True
    kernel_size: Literal[1, 3] = 1


class DecisionConfig(_Strict):
    """Step (g): adaptive weighted averaging of the stream scores (eqs. 9-11).

    Attributes:
        enabled: fuse the streams' scores; when off, predictions use the fused stream alone.
        weights: initial weights of the recovered, fused and attacked streams.
    """

    enabled: bool = True
    weights: tuple[float, float, float] = (0.5, 0.3, 0.2)

    @model_validator(mode="after")
    def _check_weights(self) -> DecisionConfig:
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {self.weights}")
        return self


class PGSLConfig(_Strict):
    """Configuration of :class:`~shieldsplit.SplitShield`.

    Attributes:
        saliency: step (a).
        perturb: step (b).
        unshuffle: step (c).
        recovery: step (d).
        fusion: step (e); the streams of step (f) follow from (d) and (e).
        decision: step (g).
        train: optimiser settings.
    """

    saliency: SaliencyConfig = SaliencyConfig()
    perturb: PerturbConfig = PerturbConfig()
    unshuffle: UnshuffleConfig = UnshuffleConfig()
    recovery: RecoveryConfig = RecoveryConfig()
    fusion: FusionConfig = FusionConfig()
    decision: DecisionConfig = DecisionConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _check_dependencies(self) -> PGSLConfig:
        if self.perturb.enabled and not self.saliency.enabled:
            raise ValueError("perturb needs saliency: enable saliency or disable perturb")
        if self.fusion.enabled and not self.recovery.enabled:
            raise ValueError("fusion needs recovery: enable recovery or disable fusion")
        return self

    @classmethod
    def off(cls) -> PGSLConfig:
        """Every PGSL step switched off: plain split learning.

        Returns:
            A config under which SplitShield reproduces the unwrapped model.
        """
        return cls(
            saliency=SaliencyConfig(enabled=False),
            perturb=PerturbConfig(enabled=False),
            unshuffle=UnshuffleConfig(enabled=False),
            recovery=RecoveryConfig(enabled=False),
            fusion=FusionConfig(enabled=False),
            decision=DecisionConfig(enabled=False),
        )

    def enabled_steps(self) -> list[str]:
        """Names of the steps that are switched on, in pipeline order.

        Returns:
            A list such as ``["saliency", "perturb", ...]``.
        """
        steps = ("saliency", "perturb", "unshuffle", "recovery", "fusion", "decision")
        return [s for s in steps if getattr(self, s).enabled]

    def streams(self) -> tuple[str, ...]:
        """The server streams this config trains (step f).

        The fused stream always exists (with fusion off it is the plain path);
        the attacked stream exists when fusion makes it differ from the fused one;
        the recovered stream exists when recovery is on.

        Returns:
            Stream names in the order recovered, fused, attacked (eq. 9's order).
        """
        names = []
        if self.recovery.enabled:
            names.append("recovered")
        names.append("fused")
        if self.fusion.enabled:
            names.append("attacked")
        return tuple(names)


__all__ = [
    "DecisionConfig",
    "FusionConfig",
    "PGSLConfig",
    "PerturbConfig",
    "RecoveryConfig",
    "SaliencyConfig",
    "TrainConfig",
    "UnshuffleConfig",
]
