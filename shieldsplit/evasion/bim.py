"""Basic Iterative Method (Kurakin, Goodfellow & Bengio, ICLR workshop 2017): ``bim`` and
:class:`BIM`, i.e. :class:`captum.robust.PGD` with an L-infinity ball and no random start.

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    >>> bim(model, x, y, eps=0.1, step_size=0.05, steps=5).linf <= 0.1 + 1e-6
    True
"""

from __future__ import annotations

from typing import Any

from captum.robust import PGD as CaptumPGD
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


class BIMConfig(EvasionConfig):
    """Options of :class:`BIM`.

    Attributes:
        eps: the L-infinity budget, >= 0.
        step_size: the size of each signed-gradient step, > 0.
        steps: the number of steps, >= 1.
        clip: the valid pixel range ``(low, high)``.
    """

    eps: float = Field(default=0.1, ge=0.0, allow_inf_nan=False)
    step_size: float = Field(default=0.01, gt=0.0, allow_inf_nan=False)
    steps: int = Field(default=10, ge=1)


class BIM(EvasionAttack):
    """Basic Iterative Method: ``steps`` FGSM steps projected onto the ``eps`` ball and
    ``clip`` (see :func:`bim`).

    Args:
        seed: unused (no random start: the attack is deterministic).
        progress: unused.
        **options: ``eps``, ``step_size``, ``steps`` and ``clip`` (:class:`BIMConfig`).

    Example:
        >>> BIM(steps=3).steps, BIM.declaration().family
        (3, 'evasion')
    """

    name = "bim"
    Config = BIMConfig
    config: BIMConfig

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> AdversarialExamples:
        """See :func:`bim`."""
        cfg = self.config
        lo, hi = cfg.clip
        with attack_mode(model) as net:
            x, y, _ = prepare_batch(net, x, y, (lo, hi))
            attack = CaptumPGD(net, loss_func=per_sample_ce, lower_bound=lo, upper_bound=hi)
            attack.fgsm.zero_thresh = 0.0
            with quiet_captum():
                adv = attack.perturb(
                    x.clone(), radius=cfg.eps, step_size=cfg.step_size, step_num=cfg.steps,
                    target=y, random_start=False, norm="Linf",
                )
            return AdversarialExamples.of(net, self.name, x, adv, y)


def bim(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float = 0.1,
    step_size: float = 0.01,
    steps: int = 10,
    clip: Clip = (0.0, 1.0),
) -> AdversarialExamples:
    """Basic Iterative Method (Kurakin, Goodfellow & Bengio, ICLR workshop 2017).

    ``steps`` FGSM steps of ``step_size``, each followed by a projection onto the
    L-infinity ball of radius ``eps`` around ``x`` and onto ``clip``: this is
    :class:`captum.robust.PGD` with ``norm="Linf"`` and no random start.

    Args:
        model: classifier mapping ``(N, C, H, W)`` images to ``(N, K)`` logits.
        x: images, within ``clip``.
        y: true labels ``(N,)``.
        eps: L-infinity budget, >= 0.
        step_size: size of each signed-gradient step, > 0.
        steps: number of steps, >= 1.
        clip: valid pixel range ``(low, high)``.

    Returns:
        The adversarial examples (untargeted success: prediction != ``y``).

    Raises:
        ConfigError: an option out of range, a bad ``clip`` or ``x`` outside ``clip``.
        InputShapeError: ``x`` is not a non-empty float ``(N, C, H, W)`` tensor.
        NonFiniteInputError: NaN or infinity in ``x``.
        LabelError: labels of the wrong shape, dtype or range.
        UnsupportedModelError: ``model`` is not a module returning ``(N, K)`` logits.
    """
    options: dict[str, Any] = {"eps": eps, "step_size": step_size, "steps": steps,
                               "clip": clip}
    return BIM(**options).perturb(model, x, y)


register_attack(BIM.name, BIM)

__all__ = ["BIM", "BIMConfig", "bim"]
