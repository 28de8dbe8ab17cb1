"""Evasion attacks: the adversarial examples of the PGSL paper's Table II.

Khowaja et al. (2022, Table II) attack the images of a trained classifier with
four evasion attacks; this module runs the same four on any ``nn.Module``
classifier that maps an ``(N, C, H, W)`` batch to ``(N, K)`` logits:

* :func:`fgsm`: Fast Gradient Sign Method (Goodfellow, Shlens & Szegedy, ICLR 2015),
  through :class:`captum.robust.FGSM`.
* :func:`bim`: Basic Iterative Method (Kurakin, Goodfellow & Bengio, ICLR workshop
  2017), i.e. :class:`captum.robust.PGD` with an L-infinity ball and no random start.
* :func:`carlini_wagner`: the untargeted L2 attack of Carlini & Wagner (IEEE S&P 2017),
  optimised in tanh space with Adam.
* :func:`jsma`: the targeted Jacobian-based Saliency Map Attack of Papernot et al.
  (IEEE EuroS&P 2016) with the pairwise saliency map over the search domain.

This is a different thing from :mod:`shieldsplit.defenses.pgsl.perturb`, PGSL's own few-pixel
perturbation that the client applies to its data on purpose.

Every attack works on the whole batch at once (images that are done are masked
out), returns an :class:`AdversarialExamples`, runs the model in eval mode and
leaves it exactly as it found it: train/eval modes, ``requires_grad`` flags,
parameters and their ``.grad`` are untouched. The registry
(:func:`create_adversary`) builds an attack by name with validated options.

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    >>> adv = fgsm(model, x, y, eps=0.1)
    >>> adv.images.shape, adv.linf <= 0.1 + 1e-6
    (torch.Size([4, 1, 4, 4]), True)
    >>> attack = create_adversary("jsma", gamma=0.5, seed=1)
    >>> out = attack(model, x, y)
    >>> bool((out.images >= 0).all() and (out.images <= 1).all()), out.l0 <= 0.5
    (True, True)
    >>> available_adversaries()
    ['bim', 'cw', 'fgsm', 'jsma']
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from captum.robust import FGSM, PGD
from torch import Tensor, nn

from shieldsplit._core.registry import Registry
from shieldsplit._core.validate import check_batch, check_int, check_labels, check_number
from shieldsplit.errors import ConfigError, InputShapeError, LabelError, UnsupportedModelError
from shieldsplit.training import eval_mode

logger = logging.getLogger(__name__)

Clip = tuple[float, float]

#: Pairwise saliency scores JSMA keeps in memory at once (elements), images are chunked.
_PAIR_CHUNK = 1 << 22
#: Most features per image JSMA accepts: its pairwise map holds n * n scores per image.
JSMA_MAX_FEATURES = 8192


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class AdversarialExamples:
    """What an evasion attack produced.

    Attributes:
        images: the adversarial batch, same shape as the input, within ``clip``.
        original_labels: the true labels ``(N,)``.
        predicted: the model's labels on ``images`` ``(N,)``.
        success: bool ``(N,)``: ``predicted != original_labels`` for untargeted attacks,
            ``predicted == target`` for targeted ones. An image the model already
            misclassified counts as a success of an untargeted attack, so measure
            success rates on correctly classified images.
        perturbation: ``images - x``.
        attack: the attack's name (``"fgsm"``, ``"bim"``, ``"cw"``, ``"jsma"``).
        target: the target classes ``(N,)`` of a targeted attack, else None.
    """

    images: Tensor
    original_labels: Tensor
    predicted: Tensor
    success: Tensor
    perturbation: Tensor
    attack: str
    target: Tensor | None = None

    @property
    def success_rate(self) -> float:
        """Fraction of images on which the attack succeeded."""
        return float(self.success.float().mean())

    @property
    def l0(self) -> float:
        """Mean over images of the fraction of elements the attack changed."""
        return float((self.perturbation != 0).flatten(1).float().mean(1).mean())

    @property
    def l2(self) -> float:
        """Mean over images of the L2 norm of the perturbation."""
        return float(self.perturbation.flatten(1).norm(dim=1).mean())

    @property
    def linf(self) -> float:
        """Mean over images of the L-infinity norm of the perturbation."""
        return float(self.perturbation.flatten(1).abs().amax(dim=1).mean())


# --------------------------------------------------------------------------- checks


def _check_clip(clip: Any) -> Clip:
    ok = (
        isinstance(clip, tuple | list)
        and len(clip) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in clip)
        and all(math.isfinite(v) for v in clip)
        and clip[0] < clip[1]
    )
    if not ok:
        raise ConfigError.build(
            what="clip", expected="a (low, high) pair of finite numbers with low < high",
            received=repr(clip), fix="pass e.g. clip=(0.0, 1.0) for images in [0, 1]",
        )
    return float(clip[0]), float(clip[1])


def _fgsm_options(*, eps: Any = 0.1, clip: Any = (0.0, 1.0)) -> None:
    check_number("eps", eps, low=0.0, low_open=False, fix="pass a budget such as eps=0.1")
    _check_clip(clip)


def _bim_options(
    *, eps: Any = 0.1, step_size: Any = 0.01, steps: Any = 10, clip: Any = (0.0, 1.0)
) -> None:
    check_number("eps", eps, low=0.0, low_open=False, fix="pass a budget such as eps=0.1")
    check_number("step_size", step_size, low=0.0, low_open=True,
                  fix="pass a positive step such as step_size=0.01")
    check_int("steps", steps, low=1, fix="pass steps=10 (or more)")
    _check_clip(clip)


def _cw_options(
    *, c: Any = 1.0, kappa: Any = 0.0, steps: Any = 100, lr: Any = 0.01,
    binary_search_steps: Any = 0, clip: Any = (0.0, 1.0), seed: Any = 0,
) -> None:
    check_number("c", c, low=0.0, low_open=True, fix="pass a positive constant such as c=1.0")
    check_number("kappa", kappa, low=0.0, low_open=False, fix="pass a confidence kappa >= 0")
    check_int("steps", steps, low=1, fix="pass steps=100 (or more)")
    check_number("lr", lr, low=0.0, low_open=True, fix="pass a positive rate such as lr=0.01")
    check_int("binary_search_steps", binary_search_steps, low=0,
               fix="pass 0 for a fixed c, or e.g. 5 to search c")
    _check_clip(clip)
    check_int("seed", seed, low=0, fix="pass a non-negative integer seed")


def _jsma_options(
    *, target: Any = None, theta: Any = 1.0, gamma: Any = 0.1, clip: Any = (0.0, 1.0),
    seed: Any = 0,
) -> None:
    if isinstance(target, bool) or not (target is None or isinstance(target, int | Tensor)):
        raise LabelError.build(
            what="target", expected="None, a class index or a 1-D tensor of class indices",
            received=type(target).__name__, fix="pass target=None to draw random targets",
        )
    check_number("theta", theta, low=0.0, low_open=True,
                  fix="pass the increase per chosen feature, e.g. theta=1.0")
    check_number("gamma", gamma, low=0.0, low_open=True, high=1.0,
                  fix="pass the fraction of features that may change, e.g. gamma=0.1")
    _check_clip(clip)
    check_int("seed", seed, low=0, fix="pass a non-negative integer seed")


@contextlib.contextmanager
def _attack_mode(model: Any) -> Iterator[nn.Module]:
    """Eval mode, frozen parameters and grad enabled; everything restored on exit."""
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError.build(
            what="model", expected="a torch.nn.Module classifier returning logits",
            received=type(model).__name__, fix="pass the classifier module itself",
        )
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        with eval_mode(model), torch.enable_grad():
            yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _prepare(model: nn.Module, x: Any, y: Any, clip: Clip) -> tuple[Tensor, Tensor, int]:
    """Check the batch, labels and model output; return detached x, long y on x's device, K."""
    check_batch(x, what="x")
    x = x.detach()
    with torch.no_grad():
        logits = model(x)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != len(x) or (
        logits.shape[1] < 2
    ):
        raise UnsupportedModelError.build(
            what="model", expected=f"logits of shape ({len(x)}, K) with K >= 2 classes",
            received=f"{type(logits).__name__} of shape {tuple(getattr(logits, 'shape', ()))}",
            fix="pass a classifier whose forward returns one row of class logits per image",
        )
    num_classes = int(logits.shape[1])
    check_labels(y, len(x), num_classes=num_classes)
    lo, hi = clip
    x_min, x_max = x.min(), x.max()  # compared in x's dtype, as the attacks clamp
    if bool(x_min < lo) or bool(x_max > hi):
        raise ConfigError.build(
            what="clip", expected=f"a range that holds every value of x, here [{lo:g}, {hi:g}]",
            received=f"x in [{float(x_min):g}, {float(x_max):g}]",
            fix="scale the images into clip, or pass the images' valid range as clip",
        )
    return x, y.to(x.device).long(), num_classes


def _predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


def _result(
    model: nn.Module, name: str, x: Tensor, adv: Tensor, y: Tensor, target: Tensor | None = None
) -> AdversarialExamples:
    adv = adv.detach()
    predicted = _predict(model, adv)
    success = predicted == target if target is not None else predicted != y
    out = AdversarialExamples(
        images=adv, original_labels=y, predicted=predicted, success=success,
        perturbation=adv - x, attack=name, target=target,
    )
    logger.info(
        "%s: success %.3f, l0 %.4f, l2 %.4f, linf %.4f on %d image(s)",
        name, out.success_rate, out.l0, out.l2, out.linf, len(x),
    )
    return out


@contextlib.contextmanager
def _quiet_captum() -> Iterator[None]:
    """Silence Captum's notice that it switched on the inputs' requires_grad (intended)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*did not already require gradients")
        yield


def _per_sample_ce(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


# --------------------------------------------------------------------------- FGSM / BIM


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
    _fgsm_options(eps=eps, clip=clip)
    lo, hi = _check_clip(clip)
    with _attack_mode(model) as net:
        x, y, _ = _prepare(net, x, y, (lo, hi))
        attack = FGSM(net, loss_func=_per_sample_ce, lower_bound=lo, upper_bound=hi)
        attack.zero_thresh = 0.0
        with _quiet_captum():
            adv = attack.perturb(x.clone(), epsilon=float(eps), target=y)
        return _result(net, "fgsm", x, adv, y)


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
    _bim_options(eps=eps, step_size=step_size, steps=steps, clip=clip)
    lo, hi = _check_clip(clip)
    with _attack_mode(model) as net:
        x, y, _ = _prepare(net, x, y, (lo, hi))
        attack = PGD(net, loss_func=_per_sample_ce, lower_bound=lo, upper_bound=hi)
        attack.fgsm.zero_thresh = 0.0
        with _quiet_captum():
            adv = attack.perturb(
                x.clone(), radius=float(eps), step_size=float(step_size), step_num=steps,
                target=y, random_start=False, norm="Linf",
            )
        return _result(net, "bim", x, adv, y)


# --------------------------------------------------------------------------- C&W


def _margin(logits: Tensor, labels: Tensor) -> Tensor:
    """``Z_y - max_{j != y} Z_j`` per image."""
    real = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return real - others.amax(dim=1)


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
    _cw_options(c=c, kappa=kappa, steps=steps, lr=lr,
                binary_search_steps=binary_search_steps, clip=clip, seed=seed)
    lo, hi = _check_clip(clip)
    with _attack_mode(model) as net:
        x, y, _ = _prepare(net, x, y, (lo, hi))
        n = len(x)
        scale = hi - lo
        w_start = torch.atanh(((x - lo) / scale * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        best_dist = torch.full((n,), float("inf"), device=x.device, dtype=x.dtype)
        best = x.clone()
        const = torch.full((n,), float(c), device=x.device, dtype=x.dtype)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, 1e10)
        for run in range(1 + binary_search_steps):
            w = w_start.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=lr)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            for _ in range(steps):
                adv = lo + scale * (torch.tanh(w) + 1) / 2
                dist = (adv - x).pow(2).flatten(1).sum(dim=1)
                logits = net(adv)
                margin = _margin(logits, y)
                loss = (dist + const * margin.clamp(min=-kappa)).sum()
                (grad,) = torch.autograd.grad(loss, w)
                with torch.no_grad():
                    hit = (logits.argmax(dim=1) != y) & (-margin >= kappa)
                    better = hit & (dist < best_dist)
                    best_dist = torch.where(better, dist, best_dist)
                    best[better] = adv[better]
                    found |= hit
                w.grad = grad
                optimizer.step()
            if run < binary_search_steps:
                upper = torch.where(found, torch.minimum(upper, const), upper)
                lower = torch.where(found, lower, torch.maximum(lower, const))
                const = torch.where(
                    upper < 1e9, (lower + upper) / 2, torch.where(found, const, const * 10)
                )
            logger.debug("cw run %d: %d/%d adversarial", run, int(found.sum()), n)
        return _result(net, "cw", x, best, y)


# --------------------------------------------------------------------------- JSMA


def _jsma_targets(
    target: int | Tensor | None, y: Tensor, num_classes: int, seed: int
) -> Tensor:
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


def _best_pairs(alpha: Tensor, beta: Tensor, domain: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pairwise saliency (Papernot et al. 2016, Algorithm 3) for increasing features.

    Over pairs ``p != q`` of the search domain, with ``a = alpha_p + alpha_q`` and
    ``b = beta_p + beta_q``, pick the pair maximising ``a * |b|`` among those with
    ``a > 0`` and ``b < 0``. Returns ``(p, q, found)`` per image.
    """
    m, n = alpha.shape
    a = alpha[:, :, None] + alpha[:, None, :]
    b = beta[:, :, None] + beta[:, None, :]
    eye = torch.eye(n, dtype=torch.bool, device=alpha.device)
    valid = domain[:, :, None] & domain[:, None, :] & ~eye & (a > 0) & (b < 0)
    score = torch.where(valid, a * -b, torch.full_like(a, -1.0)).view(m, -1)
    best = score.argmax(dim=1)
    return best // n, best % n, valid.view(m, -1).any(dim=1)


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
    _jsma_options(target=target, theta=theta, gamma=gamma, clip=clip, seed=seed)
    lo, hi = _check_clip(clip)
    with _attack_mode(model) as net:
        x, y, num_classes = _prepare(net, x, y, (lo, hi))
        t = _jsma_targets(target, y, num_classes, seed)
        n_feat = x[0].numel()
        if n_feat > JSMA_MAX_FEATURES:
            raise InputShapeError.build(
                what="x", expected=f"at most {JSMA_MAX_FEATURES} elements per image "
                "(the pairwise saliency map holds n * n scores)",
                received=f"{n_feat} elements (shape {tuple(x.shape[1:])})",
                fix="down-sample the images, or attack them with fgsm, bim or carlini_wagner",
            )
        max_iter = int(n_feat * gamma) // 2
        if max_iter < 1:
            raise ConfigError.build(
                what="gamma", expected=f"at least {2 / n_feat:.4g} for {n_feat} features "
                "(one pair of features per iteration)", received=gamma,
                fix="raise gamma",
            )
        adv = x.detach().clone().flatten(1)
        domain = adv < hi
        active = torch.ones(len(x), dtype=torch.bool, device=x.device)
        chunk = max(1, _PAIR_CHUNK // (n_feat * n_feat))
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
                p, q, found = _best_pairs(alpha[part], beta[part], domain[part])
                active[part[~found]] = False
                rows, p, q = part[found], p[found], q[found]
                for col in (p, q):
                    adv[rows, col] = (adv[rows, col] + theta).clamp(max=hi)
                    domain[rows, col] = adv[rows, col] < hi
        return _result(net, "jsma", x, adv.view_as(x), y, target=t)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Adversary:
    """A registered attack bound to its options; call it as ``adversary(model, x, y)``.

    Attributes:
        name: the registered name.
        fn: the attack function.
        options: the keyword options passed to ``fn``.
    """

    name: str
    fn: Callable[..., AdversarialExamples]
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> AdversarialExamples:
        """Run the attack.

        Args:
            model: the classifier.
            x: images ``(N, C, H, W)``.
            y: true labels ``(N,)``.

        Returns:
            The adversarial examples.
        """
        return self.fn(model, x, y, **self.options)


_REGISTRY: Registry[Callable[..., AdversarialExamples]] = Registry(
    "adversary", unregister_hint="unregister_adversary() the old one",
    lookup_hint="pick a registered attack or register yours with register_adversary",
)
_CHECKS: dict[str, Callable[..., None]] = {}


def _option_names(fn: Callable[..., Any]) -> list[str]:
    params = inspect.signature(fn).parameters.values()
    return sorted(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def register_adversary(name: str, fn: Callable[..., AdversarialExamples]) -> None:
    """Register an attack function under ``name``.

    Args:
        name: the public name (``"fgsm"``).
        fn: ``fn(model, x, y, *, **options) -> AdversarialExamples``; its keyword-only
            parameters are the options :func:`create_adversary` accepts.

    Raises:
        ConfigError: ``name`` is not a non-empty string, ``fn`` is not callable, or the
            name is taken by another function.
    """
    _REGISTRY.key(name)
    if not callable(fn):
        raise ConfigError.build(
            what="fn", expected="a callable fn(model, x, y, **options)",
            received=type(fn).__name__, fix="pass the attack function",
        )
    _REGISTRY.register(name, fn)


def unregister_adversary(name: str) -> None:
    """Remove ``name`` from the registry (no error if absent).

    Args:
        name: a registered name.
    """
    _REGISTRY.unregister(name)
    _CHECKS.pop(name, None)


def available_adversaries() -> list[str]:
    """Registered attack names, sorted.

    Returns:
        The names :func:`create_adversary` accepts.
    """
    return _REGISTRY.names()


def create_adversary(name: str, **options: Any) -> Adversary:
    """Build a registered attack with its options, checked now rather than at call time.

    Args:
        name: a name from :func:`available_adversaries`.
        **options: the attack's keyword options (``eps``, ``steps``, ``gamma``, ...).

    Returns:
        An :class:`Adversary`: call it as ``adversary(model, x, y)``.

    Raises:
        ConfigError: an unknown name (the message lists the valid ones), an option the
            attack does not take (the message lists the valid ones) or an option value
            out of range (built-in attacks).
        LabelError: a bad JSMA ``target`` type.
    """
    fn = _REGISTRY.get(name)
    valid = _option_names(fn)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError.build(
            what=f"options of {name!r}", expected=f"options among {valid}", received=unknown,
            fix="drop or rename the unknown option(s)",
        )
    if name in _CHECKS:
        _CHECKS[name](**options)
    return Adversary(name=name, fn=fn, options=dict(options))


for _name, _fn, _check in (
    ("fgsm", fgsm, _fgsm_options),
    ("bim", bim, _bim_options),
    ("cw", carlini_wagner, _cw_options),
    ("jsma", jsma, _jsma_options),
):
    register_adversary(_name, _fn)
    _CHECKS[_name] = _check


__all__ = [
    "JSMA_MAX_FEATURES",
    "AdversarialExamples",
    "Adversary",
    "available_adversaries",
    "bim",
    "carlini_wagner",
    "create_adversary",
    "fgsm",
    "jsma",
    "register_adversary",
    "unregister_adversary",
]
