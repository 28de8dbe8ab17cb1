"""PGSL's pixel unshuffle (step c) as pure functions: pad, unshuffle, reshuffle and the
client's assembly of the unshuffled image with its saliency map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pad_to_multiple(x: Tensor, factor: int, mode: str = "replicate") -> Tensor:
    """Pad height and width (bottom/right) up to a multiple of ``factor``.

    Args:
        x: a ``(B, C, H, W)`` batch.
        factor: the multiple.
        mode: ``"replicate"`` repeats the edge pixels, ``"zeros"`` adds zeros
            (a plain ``str``, so the function compiles with :func:`torch.jit.script`).

    Returns:
        ``x`` itself when no padding is needed, else a padded copy.
    """
    ph, pw = (-x.shape[-2]) % factor, (-x.shape[-1]) % factor
    if ph == 0 and pw == 0:
        return x
    if mode == "zeros":
        return F.pad(x, (0, pw, 0, ph))
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def unshuffle(x: Tensor, factor: int = 2, pad: str = "replicate") -> Tensor:
    """Pixel-unshuffle ``(B, C, H, W) -> (B, C*f*f, ceil(H/f), ceil(W/f))``.

    Args:
        x: image batch.
        factor: down-sampling factor.
        pad: padding mode for sizes that are not multiples of ``factor``.

    Returns:
        The down-sampled tensor (lossless: :func:`reshuffle` inverts it up to padding).
    """
    return F.pixel_unshuffle(pad_to_multiple(x, factor, pad), factor)


def assemble(images: Tensor, saliency: Tensor | None, factor: int, pad: str,
             concat: bool) -> Tensor:
    """PGSL step (c), the client's input tensor: unshuffle, then the saliency channel.

    Args:
        images: ``(B, C, H, W)`` (attacked) images.
        saliency: the one-channel map ``(B, 1, H, W)``, or None for zeros.
        factor: the unshuffle factor; 0 leaves the images as they are.
        pad: padding mode for sizes that are not multiples of ``factor``.
        concat: append the map (average-pooled to the unshuffled size) as a channel.

    Returns:
        ``(B, C*f*f + 1, H/f, W/f)`` with both steps, fewer channels without.

    Example:
        >>> assemble(torch.rand(2, 1, 4, 4), None, 2, "replicate", True).shape
        torch.Size([2, 5, 2, 2])
    """
    t = unshuffle(images, factor, pad) if factor > 0 else images
    if concat:
        m = saliency if saliency is not None else torch.zeros_like(images[:, :1])
        if factor > 0:
            m = F.avg_pool2d(pad_to_multiple(m, factor, pad), factor)
        t = torch.cat([t, m], dim=1)
    return t


def reshuffle(x: Tensor, factor: int = 2) -> Tensor:
    """Inverse of :func:`unshuffle` (pixel-shuffle).

    Args:
        x: ``(B, C*f*f, h, w)`` tensor.
        factor: the factor used to unshuffle.

    Returns:
        ``(B, C, h*f, w*f)`` tensor.
    """
    return F.pixel_shuffle(x, factor)


__all__ = ["assemble", "pad_to_multiple", "reshuffle", "unshuffle"]
