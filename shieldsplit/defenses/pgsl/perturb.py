"""Step (b): the intentional, untargeted JSMA-style pixel perturbation.

PGSL attacks its own data on the client before anything leaves it
(Khowaja et al. 2022, Sec. IV-A): the ``k`` elements with the highest
inverted-condition saliency (eq. 1) are raised by ``strength`` and clipped to
the valid range, giving ``x_hat = x + Map'``. ``k`` is the pixel budget times
the number of elements per image (at least one, at most the number of
elements that satisfy the condition). Only the chosen elements are clipped, so
elements outside ``clip`` elsewhere (normalised images) are left as they are.

Example:
    >>> import torch
    >>> x = torch.zeros(1, 1, 2, 2)
    >>> scores = torch.tensor([[[[0.0, 3.0], [1.0, 2.0]]]])
    >>> jsma_perturb(x, scores, pixel_budget=0.5, strength=1.0, clip=(0.0, 1.0)).adversarial
    tensor([[[[0., 1.],
              [0., 1.]]]])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from shieldsplit.errors import ConfigError, InputShapeError


@dataclass(frozen=True)
class Perturbation:
    """Result of :func:`jsma_perturb`.

    Attributes:
        adversarial: the attacked batch ``x_hat``.
        delta: ``x_hat - x`` (the paper's ``Map'``).
        mask: boolean mask of the elements that changed (a chosen element already at
            the top of ``clip`` does not change).
    """

    adversarial: Tensor
    delta: Tensor
    mask: Tensor


def budget_count(numel: int, pixel_budget: float) -> int:
    """Number of elements a budget allows per image.

    Args:
        numel: elements per image.
        pixel_budget: fraction in (0, 1].

    Returns:
        ``max(1, round(numel * pixel_budget))``.

    Raises:
        ConfigError: if the budget is outside (0, 1].

    Example:
        >>> budget_count(784, 0.02)
        16
    """
    if not 0.0 < pixel_budget <= 1.0:
        raise ConfigError.build(
            what="pixel_budget", expected="a fraction in (0, 1]", received=pixel_budget,
            fix="pass e.g. pixel_budget=0.02",
        )
    return budget_kernel(numel, pixel_budget)


def budget_kernel(numel: int, pixel_budget: float) -> int:
    """The kernel of :func:`budget_count`, unchecked: ``max(1, round(numel * pixel_budget))``.

    It compiles with :func:`torch.jit.script` (whose ``round`` also rounds half to even).

    Args:
        numel: elements per image.
        pixel_budget: fraction in (0, 1].

    Returns:
        Elements per image the pixel attack raises.

    Example:
        >>> budget_kernel(64, 0.02)
        1
    """
    return max(1, int(round(numel * pixel_budget)))  # noqa: RUF046 (TorchScript: a float)


def raise_top(
    x: Tensor, scores: Tensor, k: int, strength: float, clip: tuple[float, float] | None
) -> Tensor:
    """The kernel of :func:`jsma_perturb`, unchecked: raise each image's ``k``
    top-scoring elements (score > 0) by ``strength``, then clip them to ``clip``.

    It compiles with :func:`torch.jit.script` (used by :meth:`SplitShield.export`).

    Args:
        x: images ``(B, ...)``.
        scores: non-negative scores shaped like ``x``.
        k: elements per image to raise, ``1 <= k <= x[0].numel()``.
        strength: amount added.
        clip: ``(low, high)`` for the raised elements, or None.

    Returns:
        The perturbed batch.

    Example:
        >>> raise_top(torch.zeros(1, 3), torch.tensor([[0.0, 2.0, 1.0]]), 1, 0.5, None)
        tensor([[0.0000, 0.5000, 0.0000]])
    """
    flat = scores.reshape(scores.shape[0], -1)
    top = flat.topk(k, dim=1)
    chosen = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, top.indices, top.values > 0)
    chosen = chosen.reshape(x.shape)
    raised = x + strength
    if clip is not None:
        raised = raised.clamp(clip[0], clip[1])
    return torch.where(chosen, raised, x)  # only the chosen elements move


def jsma_perturb(
    x: Tensor,
    scores: Tensor,
    *,
    pixel_budget: float,
    strength: float,
    clip: tuple[float, float] | None,
) -> Perturbation:
    """Raise the top-scoring elements of each image by ``strength``.

    Args:
        x: images ``(B, ...)``.
        scores: non-negative saliency ``Map'`` shaped like ``x`` (0 = not eligible).
        pixel_budget: fraction of elements per image that may change.
        strength: amount added to a chosen element.
        clip: valid value range, or None.

    Returns:
        The perturbed batch, the perturbation and its mask.

    Raises:
        InputShapeError: if ``scores`` and ``x`` differ in shape.
        ConfigError: if the budget is outside (0, 1].
    """
    if scores.shape != x.shape:
        raise InputShapeError.build(
            what="scores", expected=f"shape {tuple(x.shape)}", received=tuple(scores.shape),
            fix="pass one saliency value per input element",
        )
    k = budget_count(scores[0].numel() if scores.shape[0] else 0, pixel_budget)
    adversarial = raise_top(x, scores, k, strength, clip)
    mask = adversarial != x
    return Perturbation(adversarial=adversarial, delta=adversarial - x, mask=mask)


__all__ = ["Perturbation", "budget_count", "budget_kernel", "jsma_perturb", "raise_top"]
