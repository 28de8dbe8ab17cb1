"""The targeted Jacobian-based Saliency Map Attack of Papernot et al. (IEEE EuroS&P 2016),
with the pairwise saliency map over the search domain: ``jsma`` and :class:`JSMA`.

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    >>> out = jsma(model, x, y, gamma=0.5, seed=1)
    >>> bool((out.images >= 0).all() and (out.images <= 1).all()), out.l0 <= 0.5
    (True, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import ConfigDict, Field
from torch import Tensor, nn

from shieldsplit.attacks.base import register_attack
from shieldsplit.errors import ConfigError, InputShapeError, LabelError
from shieldsplit.evasion.base import (
    AdversarialExamples,
    Clip,
    EvasionAttack,
    EvasionConfig,
    attack_mode,
    prepare_batch,
)

#: Pairwise saliency scores JSMA keeps in memory at once (elements), images are chunked.
PAIR_CHUNK = 1 << 22
#: Most features per image JSMA accepts: its pairwise map holds n * n scores per image.
JSMA_MAX_FEATURES = 8192


class JSMAConfig(EvasionConfig):
    """Options of :class:`JSMA`.

    Attributes:
        target: the target class: an int for all images, a ``(N,)`` tensor, or None to
            draw one per image (seeded by the attack's seed) from the classes other than
            its label.
        theta: increase of a chosen feature, > 0.
        gamma: largest fraction of features that may change, in (0, 1].
        clip: the valid pixel range ``(low, high)``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    target: int | Tensor | None = None
    theta: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    gamma: float = Field(default=0.1, gt=0.0, le=1.0, allow_inf_nan=False)


def _check_target_type(target: Any) -> None:
    if isinstance(target, bool) or not (target is None or isinstance(target, int | Tensor)):
        raise LabelError.build(
            what="target", expected="None, a class index or a 1-D tensor of class indices",
            received=type(target).__name__, fix="pass target=None to draw random targets",
        )


def targets(target: int | Tensor | None, y: Tensor, num_classes: int, seed: int) -> Tensor:
    """JSMA's target class per image: ``target`` checked, or drawn (seeded) uniformly
    from the classes other than each label when None.

    Args:
        target: an int, a ``()`` or ``(N,)`` integer tensor, or None.
        y: the true labels ``(N,)``.
        num_classes: the model's classes.
        seed: seeds the draw.

    Returns:
        ``(N,)`` long targets on ``y``'s device.

    Raises:
        LabelError: a target of the wrong shape, dtype or range, or equal to the label.

    Example:
        >>> y = torch.tensor([0, 1, 2])
        >>> bool((targets(None, y, 3, seed=0) != y).all())
        True
    """
    n = len(y)
    if target is None:
        gen = torch.Generator().manual_seed(seed)
        shift = torch.randint(1, num_classes, (n,), generator=gen).to(y.device)
        return (y + shift) % num_classes  # uniform over the other classes
    if isinstance(target, int):
        t = torch.full((n,), target, dtype=torch.long, device=y.device)
    else:
        bad_dtype = target.is_floating_point() or target.is_complex() or (
            target.dtype == torch.bool
        )
        if bad_dtype or target.dim() > 1 or (target.dim() == 1 and len(target) != n):
            raise LabelError.build(
                what="target", expected=f"an int or an integer tensor of shape () or ({n},)",
                received=f"{target.dtype} tensor of shape {tuple(target.shape)}",
                fix="pass one integer class per image, or target=None",
            )
        t = target.to(y.device).long().expand(n)
    if int(t.min()) < 0 or int(t.max()) >= num_classes:
        raise LabelError.build(
            what="target", expected=f"classes in [0, {num_classes - 1}]",
            received=f"classes in [{int(t.min())}, {int(t.max())}]",
            fix="pass target classes the model can predict",
        )
    same = int((t == y).sum())
    if same:
        raise LabelError.build(
            what="target", expected="a target different from each image's true label",
            received=f"{same} image(s) whose target equals the label",
            fix="pass target=None to draw a different class per image",
        )
    return t


def best_pairs(alpha: Tensor, beta: Tensor, domain: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pairwise saliency (Papernot et al. 2016, Algorithm 3) for increasing features.

    Over pairs ``p != q`` of the search domain, with ``a = alpha_p + alpha_q`` and
    ``b = beta_p + beta_q``, pick the pair maximising ``a * |b|`` among those with
    ``a > 0`` and ``b < 0``. Returns ``(p, q, found)`` per image.

    Example:
        >>> alpha, beta = torch.tensor([[1.0, 2.0, -5.0]]), torch.tensor([[-1.0, -1.0, 0.0]])
        >>> [t.tolist() for t in best_pairs(alpha, beta, torch.ones(1, 3, dtype=torch.bool))]
        [[0], [1], [True]]
    """
    m, n = alpha.shape
    a = alpha[:, :, None] + alpha[:, None, :]
    b = beta[:, :, None] + beta[:, None, :]
    eye = torch.eye(n, dtype=torch.bool, device=alpha.device)
    valid = domain[:, :, None] & domain[:, None, :] & ~eye & (a > 0) & (b < 0)
    score = torch.where(valid, a * -b, torch.full_like(a, -1.0)).view(m, -1)
    best = score.argmax(dim=1)
    return best // n, best % n, valid.view(m, -1).any(dim=1)


class JSMA(EvasionAttack):
    """The targeted Jacobian-based Saliency Map Attack (see :func:`jsma`).

    Args:
        seed: seeds the draw of targets when ``target`` is None.
        progress: unused.
        **options: ``target``, ``theta``, ``gamma`` and ``clip`` (:class:`JSMAConfig`).

    Raises:
        LabelError: a ``target`` that is not None, an int or a tensor.
        ConfigError: another option out of range.

    Example:
        >>> from shieldsplit.errors import LabelError
        >>> try:
        ...     JSMA(target="2")
        ... except LabelError as err:
        ...     print(err.what)
        target
    """

    name = "jsma"
    Config = JSMAConfig
    config: JSMAConfig

    @classmethod
    def configure(cls, options: Mapping[str, Any]) -> Any:
        """Validate the options; a ``target`` of the wrong type is a :class:`LabelError`."""
        _check_target_type(options.get("target"))
        return super().configure(options)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> AdversarialExamples:
        """See :func:`jsma`."""
        cfg = self.config
        lo, hi = cfg.clip
        with attack_mode(model) as net:
            x, y, num_classes = prepare_batch(net, x, y, (lo, hi))
            t = targets(cfg.target, y, num_classes, self.seed)
            n_feat = x[0].numel()
            if n_feat > JSMA_MAX_FEATURES:
                raise InputShapeError.build(
                    what="x", expected=f"at most {JSMA_MAX_FEATURES} elements per image "
                    "(the pairwise saliency map holds n * n scores)",
                    received=f"{n_feat} elements (shape {tuple(x.shape[1:])})",
                    fix="down-sample the images, or attack them with fgsm, bim or "
                    "carlini_wagner",
                )
            max_iter = int(n_feat * cfg.gamma) // 2
            if max_iter < 1:
                raise ConfigError.build(
                    what="gamma", expected=f"at least {2 / n_feat:.4g} for {n_feat} features "
                    "(one pair of features per iteration)", received=cfg.gamma,
                    fix="raise gamma",
                )
            adv = x.detach().clone().flatten(1)
            domain = adv < hi
            active = torch.ones(len(x), dtype=torch.bool, device=x.device)
            chunk = max(1, PAIR_CHUNK // (n_feat * n_feat))
            for _ in range(max_iter):
                xin = adv.view_as(x).clone().requires_grad_(True)
                logits = net(xin)
                (g_target,) = torch.autograd.grad(
                    logits.gather(1, t[:, None]).sum(), xin, retain_graph=True
                )
                (g_all,) = torch.autograd.grad(logits.sum(), xin)
                active &= (logits.argmax(dim=1) != t) & (domain.sum(dim=1) >= 2)
                idx = active.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                alpha = g_target.flatten(1)
                beta = g_all.flatten(1) - alpha
                for part in idx.split(chunk):
                    p, q, found = best_pairs(alpha[part], beta[part], domain[part])
                    active[part[~found]] = False
                    rows, p, q = part[found], p[found], q[found]
                    for col in (p, q):
                        adv[rows, col] = (adv[rows, col] + cfg.theta).clamp(max=hi)
                        domain[rows, col] = adv[rows, col] < hi
            return AdversarialExamples.of(net, self.name, x, adv.view_as(x), y, target=t)


def jsma(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    target: int | Tensor | None = None,
    theta: float = 1.0,
    gamma: float = 0.1,
    clip: Clip = (0.0, 1.0),
    seed: int = 0,
) -> AdversarialExamples:
    """Targeted Jacobian-based Saliency Map Attack (Papernot et al., IEEE EuroS&P 2016).

    The search domain is every input element below ``clip``'s top. Each iteration
    takes the forward derivative of the logits, ``alpha = dZ_t/dx`` and
    ``beta = sum_{j != t} dZ_j/dx``, picks the pair of domain features with the
    highest pairwise saliency ``(alpha_p + alpha_q) * |beta_p + beta_q|`` among pairs
    with ``alpha_p + alpha_q > 0`` and ``beta_p + beta_q < 0``, and raises both by
    ``theta`` (clipped); a feature that reaches the top leaves the domain. An image
    stops when the model predicts its target, after ``floor(gamma * n / 2)``
    iterations (so at most a ``gamma`` fraction of its ``n`` features change), when
    fewer than two features are left, or when no pair satisfies the sign conditions.

    Args:
        model: classifier mapping ``(N, C, H, W)`` images to ``(N, K)`` logits.
        x: images, within ``clip``.
        y: true labels ``(N,)``.
        target: the target class: an int for all images, a ``(N,)`` tensor, or None
            to draw one per image uniformly from the classes other than its label.
        theta: increase of a chosen feature, > 0.
        gamma: largest fraction of features that may change, in (0, 1].
        clip: valid pixel range ``(low, high)``.
        seed: seeds the :class:`torch.Generator` that draws targets when ``target`` is None.

    Returns:
        The adversarial examples (targeted success: prediction == target), with ``target``.

    Raises:
        ConfigError: an option out of range, ``gamma`` too small to change one pair of
            features, a bad ``clip`` or ``x`` outside ``clip``.
        InputShapeError: ``x`` is not a non-empty float ``(N, C, H, W)`` tensor, or has
            more than :data:`JSMA_MAX_FEATURES` elements per image.
        NonFiniteInputError: NaN or infinity in ``x``.
        LabelError: labels or targets of the wrong shape, dtype or range, or a target
            equal to the label.
        UnsupportedModelError: ``model`` is not a module returning ``(N, K)`` logits.
    """
    options: dict[str, Any] = {"target": target, "theta": theta, "gamma": gamma, "clip": clip}
    return JSMA(seed=seed, **options).perturb(model, x, y)


register_attack(JSMA.name, JSMA)

__all__ = ["JSMA", "JSMA_MAX_FEATURES", "JSMAConfig", "best_pairs", "jsma", "targets"]
