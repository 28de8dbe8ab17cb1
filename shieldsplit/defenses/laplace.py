"""Laplacian noise on the cut activations (Titcombe et al. 2021).

Every activation the client sends carries fresh ``Laplace(0, scale)`` noise,
during training and at inference alike, so an eavesdropper never observes a
clean activation. This is the ``[8]`` baseline of the PGSL paper's Table I.

Example:
    >>> import torch
    >>> from shieldsplit.models import PGSLNet
    >>> from shieldsplit.defenses.laplace import LaplaceNoise
    >>> net = PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
    >>> defense = LaplaceNoise(net, cut=2, scale=0.5)
    >>> tuple(defense.client(torch.rand(3, 1, 8, 8)).activations.shape)
    (3, 8, 8, 8)
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from shieldsplit.defenses.base import CutDefense, register_defense
from shieldsplit.defenses.knob import Knob


def laplace_noise_like(a: Tensor, scale: float) -> Tensor:
    """Independent ``Laplace(0, scale)`` samples shaped like ``a`` (global torch RNG).

    Inverse-CDF sampling: ``-scale * sign(u) * log(1 - |u|)`` for ``u`` uniform on
    ``(-1, 1)`` (the lower end nudged by machine epsilon so the log stays finite).

    Args:
        a: a tensor whose shape, dtype and device the noise takes.
        scale: the Laplace scale ``b`` (mean absolute deviation; std ``b * sqrt(2)``).

    Returns:
        The noise (no gradient).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> noise = laplace_noise_like(torch.zeros(100_000), 0.5)
        >>> round(float(noise.abs().mean()), 1)
        0.5
    """
    eps = torch.finfo(a.dtype).eps if a.is_floating_point() else 1e-7
    u = torch.empty_like(a).uniform_(eps - 1.0, 1.0)
    return -scale * u.sign() * torch.log1p(-u.abs())


class LaplaceConfig(BaseModel):
    """Options of :class:`LaplaceNoise`.

    Attributes:
        scale: the Laplace scale ``b`` > 0 (mean absolute noise per activation; the
            ``"none"`` defence is the no-noise setting).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    scale: float = Field(default=0.5, gt=0.0, allow_inf_nan=False)


class LaplaceNoise(CutDefense):
    """Split learning with Laplacian noise added to the activations on the wire.

    :meth:`transform` adds ``Laplace(0, scale)`` noise to every cut activation in
    training and in inference (the module's train/eval mode does not matter): the
    server trains on noisy activations and predictions are therefore random too.
    The noise comes from torch's global generator, so it is reproducible under
    ``torch.manual_seed`` (and :meth:`fit` seeds it with its ``seed``).

    Args:
        model: the classifier to defend; it is copied, never modified.
        cut: the number of compute blocks on the client, or a submodule name.
        seed: seeds the defence's own randomness (kept for a uniform signature).
        **options: :class:`LaplaceConfig`'s ``scale``, the Laplace scale ``b`` > 0
            (mean absolute noise per activation).

    Raises:
        ConfigError: if ``scale`` is not a finite number > 0.
        InvalidCutError: if ``cut`` does not exist.
        UnsupportedModelError: if ``model`` is not a traceable classifier.

    Reference:
        Titcombe, Hall, Papadopoulos, Romanini, "Practical defences against model
        inversion attacks for split neural networks", ICLR 2021 workshop on
        distributed and private machine learning, arXiv:2104.05743.

    Example:
        >>> from shieldsplit.models import PGSLNet
        >>> net = PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
        >>> defense = LaplaceNoise(net, cut=2, scale=0.5).eval()
        >>> x = torch.rand(2, 1, 8, 8)
        >>> bool(torch.equal(defense.client(x).activations, defense.head(x)))
        False
    """

    name: ClassVar[str] = "laplace"
    knob: ClassVar[Knob | None] = Knob(
        option="scale", low=0.01, high=10.0, scale="log",
        description="the Laplace noise's scale added to the cut activations")

    Config = LaplaceConfig
    config: LaplaceConfig

    def transform(self, a: Tensor) -> Tensor:
        """``a`` plus fresh ``Laplace(0, scale)`` noise (in training and inference)."""
        return a + laplace_noise_like(a.detach(), self.config.scale)


register_defense(LaplaceNoise.name, LaplaceNoise)

__all__ = ["LaplaceConfig", "LaplaceNoise", "laplace_noise_like"]
