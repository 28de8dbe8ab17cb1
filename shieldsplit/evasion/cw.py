"""The untargeted L2 attack of Carlini & Wagner (IEEE S&P 2017): ``carlini_wagner`` and
:class:`CarliniWagner`, optimised in tanh space with Adam.

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    >>> out = carlini_wagner(model, x, y, steps=20, lr=0.05)
    >>> bool(torch.equal(out.images[~out.success], x[~out.success]))
    True
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from shieldsplit.attacks.base import register_attack
from shieldsplit.evasion.base import (
    AdversarialExamples,
    Clip,
    EvasionAttack,
    EvasionConfig,
    attack_mode,
    prepare_batch,
)

logger = logging.getLogger(__name__)


def margin(logits: Tensor, labels: Tensor) -> Tensor:
    """``Z_y - max_{j != y} Z_j`` per image.

    Example:
        >>> margin(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([0])).tolist()
        [1.0]
    """
    real = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return real - others.amax(dim=1)


class CarliniWagnerConfig(EvasionConfig):
    """Options of :class:`CarliniWagner`.

    Attributes:
        c: weight of the classification term (initial value when searching), > 0.
        kappa: confidence margin, >= 0.
        steps: Adam steps per run, >= 1.
        lr: Adam learning rate, > 0.
        binary_search_steps: extra runs that search ``c``; 0 keeps ``c`` fixed.
        clip: the valid pixel range ``(low, high)``.
    """

    c: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    kappa: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    steps: int = Field(default=100, ge=1)
    lr: float = Field(default=0.01, gt=0.0, allow_inf_nan=False)
    binary_search_steps: int = Field(default=0, ge=0)


class CarliniWagner(EvasionAttack):
    """Carlini & Wagner's untargeted L2 attack (see :func:`carlini_wagner`).

    Args:
        seed: accepted for a uniform signature; the algorithm is deterministic.
        progress: unused.
        **options: ``c``, ``kappa``, ``steps``, ``lr``, ``binary_search_steps`` and
            ``clip`` (:class:`CarliniWagnerConfig`).

    Example:
        >>> from shieldsplit.errors import ConfigError
        >>> try:
        ...     CarliniWagner(c=0.0)
        ... except ConfigError as err:
        ...     print(err.what)
        c
    """

    name = "cw"
    Config = CarliniWagnerConfig
    config: CarliniWagnerConfig

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> AdversarialExamples:
        """See :func:`carlini_wagner`."""
        cfg = self.config
        lo, hi = cfg.clip
        with attack_mode(model) as net:
            x, y, _ = prepare_batch(net, x, y, (lo, hi))
            n = len(x)
            scale = hi - lo
            w_start = torch.atanh(((x - lo) / scale * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
            best_dist = torch.full((n,), float("inf"), device=x.device, dtype=x.dtype)
            best = x.clone()
            const = torch.full((n,), cfg.c, device=x.device, dtype=x.dtype)
            lower = torch.zeros_like(const)
            upper = torch.full_like(const, 1e10)
            for run in range(1 + cfg.binary_search_steps):
                w = w_start.clone().requires_grad_(True)
                optimizer = torch.optim.Adam([w], lr=cfg.lr)
                found = torch.zeros(n, dtype=torch.bool, device=x.device)
                for _ in range(cfg.steps):
                    adv = lo + scale * (torch.tanh(w) + 1) / 2
                    dist = (adv - x).pow(2).flatten(1).sum(dim=1)
                    logits = net(adv)
                    gap = margin(logits, y)
                    loss = (dist + const * gap.clamp(min=-cfg.kappa)).sum()
                    (grad,) = torch.autograd.grad(loss, w)
                    with torch.no_grad():
                        hit = (logits.argmax(dim=1) != y) & (-gap >= cfg.kappa)
                        better = hit & (dist < best_dist)
                        best_dist = torch.where(better, dist, best_dist)
                        best[better] = adv[better]
                        found |= hit
                    w.grad = grad
                    optimizer.step()
                if run < cfg.binary_search_steps:
                    upper = torch.where(found, torch.minimum(upper, const), upper)
                    lower = torch.where(found, lower, torch.maximum(lower, const))
                    const = torch.where(
                        upper < 1e9, (lower + upper) / 2, torch.where(found, const, const * 10)
                    )
                logger.debug("cw run %d: %d/%d adversarial", run, int(found.sum()), n)
            return AdversarialExamples.of(net, self.name, x, best, y)


def carlini_wagner(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 100,
    lr: float = 0.01,
    binary_search_steps: int = 0,
    clip: Clip = (0.0, 1.0),
    seed: int = 0,
) -> AdversarialExamples:
    """Untargeted L2 attack of Carlini & Wagner (IEEE S&P 2017).

    The adversarial image is ``low + (high - low) * (tanh(w) + 1) / 2`` (always within
    ``clip``); ``w`` starts at the image and Adam minimises, per image,
    ``||x' - x||_2^2 + c * max(Z_y(x') - max_{j != y} Z_j(x'), -kappa)`` on the logits
    ``Z``. Of every iterate that is adversarial (prediction != ``y`` by a logit margin
    of at least ``kappa``) the one closest to ``x`` in L2 is kept; an image with none
    is returned unchanged (a failure).

    With ``binary_search_steps = k > 0`` the attack runs ``1 + k`` times and adapts
    ``c`` per image between runs as in the paper: halve the bracket after a success,
    otherwise raise ``c`` (times 10 until a success brackets it).

    Args:
        model: classifier mapping ``(N, C, H, W)`` images to ``(N, K)`` logits.
        x: images, within ``clip``.
        y: true labels ``(N,)``.
        c: weight of the classification term (initial value when searching), > 0.
        kappa: confidence margin, >= 0.
        steps: Adam steps per run, >= 1.
        lr: Adam learning rate, > 0.
        binary_search_steps: extra runs that search ``c``; 0 keeps ``c`` fixed.
        clip: valid pixel range ``(low, high)``.
        seed: accepted for a uniform signature; the algorithm is deterministic.

    Returns:
        The adversarial examples (untargeted success: prediction != ``y``).

    Raises:
        ConfigError: an option out of range, a bad ``clip`` or ``x`` outside ``clip``.
        InputShapeError: ``x`` is not a non-empty float ``(N, C, H, W)`` tensor.
        NonFiniteInputError: NaN or infinity in ``x``.
        LabelError: labels of the wrong shape, dtype or range.
        UnsupportedModelError: ``model`` is not a module returning ``(N, K)`` logits.
    """
    options: dict[str, Any] = {"c": c, "kappa": kappa, "steps": steps, "lr": lr,
                               "binary_search_steps": binary_search_steps, "clip": clip}
    return CarliniWagner(seed=seed, **options).perturb(model, x, y)


register_attack(CarliniWagner.name, CarliniWagner)

__all__ = ["CarliniWagner", "CarliniWagnerConfig", "carlini_wagner", "margin"]
