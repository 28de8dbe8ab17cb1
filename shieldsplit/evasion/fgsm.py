"""Fast Gradient Sign Method (Goodfellow, Shlens & Szegedy, ICLR 2015): ``fgsm`` and
:class:`FGSM`, through :class:`captum.robust.FGSM`.

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    >>> adv = fgsm(model, x, y, eps=0.1)
    >>> adv.images.shape, adv.linf <= 0.1 + 1e-6
    (torch.Size([4, 1, 4, 4]), True)
"""

from __future__ import annotations

from typing import Any

from captum.robust import FGSM as CaptumFGSM
from pydantic import Field
from torch import Tensor, nn

from shieldsplit.attacks.base import register_attack
from shieldsplit.evasion.base import (
    AdversarialExamples,
    Clip,
    EvasionAttack,
    EvasionConfig,
    attack_mode,
    per_sample_ce,
    prepare_batch,
    quiet_captum,
)


class FGSMConfig(EvasionConfig):
    """Options of :class:`FGSM`.

    Attributes:
        eps: the L-infinity budget, >= 0.
        clip: the valid pixel range ``(low, high)``.
    """

    eps: float = Field(default=0.1, ge=0.0, allow_inf_nan=False)


class FGSM(EvasionAttack):
    """Fast Gradient Sign Method: one step ``x + eps * sign(grad_x CE(model(x), y))``,
    clipped to ``clip`` (see :func:`fgsm`).

    Args:
        seed: unused (the attack is deterministic).
        progress: unused.
        **options: ``eps`` and ``clip`` (:class:`FGSMConfig`).

    Example:
        >>> import torch
        >>> from shieldsplit.attacks import create_attack
        >>> attack = create_attack("fgsm", family="evasion", eps=0.05)
        >>> x = torch.rand(2, 1, 2, 2)
        >>> out = attack(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), x, torch.tensor([0, 1]))
        >>> out.linf <= 0.05 + 1e-6
        True
    """

    name = "fgsm"
    Config = FGSMConfig
    config: FGSMConfig

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> AdversarialExamples:
        """See :func:`fgsm`."""
        lo, hi = self.config.clip
        with attack_mode(model) as net:
            x, y, _ = prepare_batch(net, x, y, (lo, hi))
            attack = CaptumFGSM(net, loss_func=per_sample_ce, lower_bound=lo, upper_bound=hi)
            attack.zero_thresh = 0.0
            with quiet_captum():
                adv = attack.perturb(x.clone(), epsilon=self.config.eps, target=y)
            return AdversarialExamples.of(net, self.name, x, adv, y)


def fgsm(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float = 0.1, clip: Clip = (0.0, 1.0)
) -> AdversarialExamples:
    """Fast Gradient Sign Method (Goodfellow, Shlens & Szegedy, ICLR 2015).

    One step ``x + eps * sign(grad_x CE(model(x), y))``, clipped to ``clip``, computed
    by :class:`captum.robust.FGSM` with the per-image cross-entropy of the logits.
    Captum's threshold that treats tiny gradients as zero is set to 0, so the sign of
    a correct, confident image's (very small) gradient is still used.

    Args:
        model: classifier mapping ``(N, C, H, W)`` images to ``(N, K)`` logits.
        x: images, within ``clip``.
        y: true labels ``(N,)``.
        eps: L-infinity budget, >= 0.
        clip: valid pixel range ``(low, high)``.

    Returns:
        The adversarial examples (untargeted success: prediction != ``y``).

    Raises:
        ConfigError: ``eps < 0``, a bad ``clip`` or ``x`` outside ``clip``.
        InputShapeError: ``x`` is not a non-empty float ``(N, C, H, W)`` tensor.
        NonFiniteInputError: NaN or infinity in ``x``.
        LabelError: labels of the wrong shape, dtype or range.
        UnsupportedModelError: ``model`` is not a module returning ``(N, K)`` logits.
    """
    options: dict[str, Any] = {"eps": eps, "clip": clip}
    return FGSM(**options).perturb(model, x, y)


register_attack(FGSM.name, FGSM)

__all__ = ["FGSM", "FGSMConfig", "fgsm"]
