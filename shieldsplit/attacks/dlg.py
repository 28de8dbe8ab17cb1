"""Deep Leakage from Gradients (Zhu, Liu, Han 2019): :class:`DLG`.

Squared L2 distance between gradients
(:func:`~shieldsplit.functional.gradients.squared_distance`), L-BFGS on the images
*and* soft labels, from uniform noise.

Example:
    >>> import torch
    >>> from shieldsplit.attacks import AttackContext, create_attack
    >>> from shieldsplit.observe import observe_gradient
    >>> from shieldsplit.models import SmallConvNet
    >>> torch.manual_seed(0) and None
    >>> net = SmallConvNet(num_classes=4, image_size=8)
    >>> x, y = torch.rand(1, 1, 8, 8), torch.tensor([2])
    >>> attack = create_attack("dlg", seed=0, iterations=20, progress=False)
    >>> attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=4, model=net))
    >>> rec = attack.reconstruct(observe_gradient(net, x, y))
    >>> rec.images.shape, rec.meta["labels_from"], rec.meta["loss"] < rec.meta["initial_loss"]
    (torch.Size([1, 1, 8, 8]), 'learn', True)
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.func import grad_and_value

from shieldsplit.attacks.base import Assumption, Observation, register_attack
from shieldsplit.attacks.gradient_base import GradientAttack, GradientAttackConfig
from shieldsplit.errors import StateError
from shieldsplit.functional.gradients import squared_distance


class DLGConfig(GradientAttackConfig):
    """Options of :class:`DLG` (see its Args)."""

    lr: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)


class DLG(GradientAttack):
    """Deep Leakage from Gradients (Zhu et al. 2019): L2 gradient matching with L-BFGS.

    Optimises the images and soft labels (softmax of free logits) jointly.
    Pixels are unconstrained while optimising and clamped to [0, 1] at the end.

    Args:
        seed: seeds the random initial images and label logits.
        budget: ``"quick"`` (100 L-BFGS iterations, 1 restart), ``"standard"``
            (300, 2) or ``"thorough"`` (1000, 4); None uses the context's.
        iterations: overrides the budget's L-BFGS iterations.
        restarts: overrides the budget's restarts.
        lr: L-BFGS step size (1, with a strong-Wolfe line search).
        max_parallel: as for
            :class:`~shieldsplit.attacks.inverting_gradients.InvertingGradients`.
        progress: show a progress bar.

    Raises:
        ConfigError: on an invalid option.
    """

    name = "dlg"
    #: nothing beyond the model and the gradient: it learns the labels, starts from noise
    assumes: ClassVar[frozenset[Assumption]] = frozenset()
    budgets: ClassVar[dict[str, tuple[int, int]]] = {
        "quick": (100, 1), "standard": (300, 2), "thorough": (1000, 4),
    }
    #: iterations per L-BFGS ``step`` call (one progress tick)
    chunk: ClassVar[int] = 10
    learn_labels: ClassVar[bool] = True
    #: at the quick budget Inverting Gradients at batch 1 stands for DLG (see IDLG)
    quick_default: ClassVar[bool] = False

    Config = DLGConfig
    config: DLGConfig
    lr: float

    def _label_source(self) -> str:
        return "learn" if self.learn_labels else "infer"

    def _optimise(
        self,
        model: nn.Module,
        params: dict[str, Tensor],
        frozen: dict[str, Tensor],
        observations: list[Observation],
        labels: Tensor,
        targets: Tensor,
        iterations: int,
        restarts: int,
    ) -> tuple[Tensor, Tensor, dict[str, Any]]:
        obs = observations[0]
        if self.context is None:
            raise StateError.build(
                what="attack", expected="a prepared attack", received="no context",
                fix="call attack.prepare(context) before reconstruct()",
            )
        n, b = labels.shape
        k = self.context.num_classes
        p0 = next(iter(params.values()))
        objective = self._objective(model, frozen, obs, squared_distance, 0.0)
        pp = {k: v.expand(n, restarts, *v.shape) for k, v in params.items()}
        x = self._initial(labels, restarts, p0).requires_grad_(True)
        gen = self.generator()
        gen.manual_seed(self.seed + 1)
        logits = torch.randn(1, restarts, b, k, generator=gen).expand(n, -1, -1, -1).clone()
        logits = logits.to(p0).requires_grad_(True)

        if self.learn_labels:

            def soft(p: dict, xx: Tensor, ll: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
                return objective(p, xx, ll.softmax(dim=-1), target)

            flags = (True, True, True, False)
            step = self._map(grad_and_value(soft, argnums=(1, 2), has_aux=True), flags)
            variables = [x, logits]
        else:
            flags = (True, True, False, False)
            step = self._map(grad_and_value(objective, argnums=1, has_aux=True), flags)
            variables = [x]

        def closure() -> Tensor:
            if self.learn_labels:
                (gx, gl), (loss, _) = step(pp, x.detach(), logits.detach(), targets)
                logits.grad = gl
            else:
                gx, (loss, _) = step(pp, x.detach(), labels, targets)
            x.grad = gx
            return loss.sum().detach()

        with torch.no_grad():
            if self.learn_labels:
                initial = self._map(soft, flags)(pp, x.detach(), logits.detach(), targets)[1]
            else:
                initial = self._map(objective, flags)(pp, x.detach(), labels, targets)[1]

        opt = torch.optim.LBFGS(
            variables, lr=self.lr, max_iter=self.chunk, history_size=100,
            line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15,
        )
        rounds = max(1, math.ceil(iterations / self.chunk))
        self._iterate(rounds, lambda _: opt.step(closure), description=self.name,
                      per_tick=self.chunk)
        with torch.no_grad():
            if self.learn_labels:
                final = self._map(soft, flags)(pp, x.detach(), logits.detach(), targets)[1]
            else:
                final = self._map(objective, flags)(pp, x.detach(), labels, targets)[1]
        final = torch.nan_to_num(final, nan=float("inf"))
        extra: dict[str, Any] = {"initial_losses": initial.detach().tolist()}
        if self.learn_labels:
            best = final.argmin(dim=1)
            extra["labels"] = logits.detach()[torch.arange(n), best].argmax(dim=-1)
        return torch.nan_to_num(x.detach(), nan=0.5), final.detach(), extra



register_attack("dlg", DLG)

__all__ = ["DLG", "DLGConfig"]
