"""Step (c): reversible down-sampling on the client, sub-pixel up-sampling on the server.

The client splits each (attacked) image of size ``i x j`` into ``factor**2``
sub-images of size ``i/2 x j/2`` (pixel-unshuffle, Sec. IV-B of Khowaja et al.
2022) and concatenates the saliency map, giving ``4ch + 1`` channels. Odd sizes
are padded on the bottom/right to a multiple of ``factor`` (documented in
docs/pgsl.md). The server restores the resolution of the client's activations
with a learned sub-pixel convolution (conv to ``factor**2`` times the
channels, then pixel-shuffle), initialised as nearest-neighbour up-sampling.

Example:
    >>> import torch
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> y = unshuffle(x, factor=2)
    >>> y.shape
    torch.Size([1, 4, 2, 2])
    >>> torch.equal(reshuffle(y, factor=2), x)
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


class SubPixelUpsample(nn.Module):
    """Learned sub-pixel up-sampling of activation maps (server side).

    Args:
        channels: channels of the activations (kept unchanged).
        factor: up-sampling factor.
        kernel_size: the sub-pixel convolution's kernel (1 or 3; odd, so the map
            keeps its size). 3 is ESPCN's choice; 1 (the default) costs a ninth.

    Example:
        >>> up = SubPixelUpsample(3, factor=2)
        >>> a = torch.rand(2, 3, 4, 4)
        >>> torch.equal(up(a), a.repeat_interleave(2, -2).repeat_interleave(2, -1))
        True
    """

    def __init__(self, channels: int, factor: int = 2, kernel_size: int = 1) -> None:
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv2d(channels, channels * factor * factor, kernel_size,
                              padding=kernel_size // 2)
        centre = kernel_size // 2
        with torch.no_grad():  # nearest-neighbour start: every sub-pixel copies its channel
            self.conv.weight.zero_()
            nn.init.zeros_(self.conv.bias)  # type: ignore[arg-type]
            for c in range(channels):
                self.conv.weight[c * factor * factor : (c + 1) * factor * factor, c,
                                 centre, centre] = 1.0

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """Up-sample, then resize to ``size`` if given and different.

        Args:
            x: ``(B, C, h, w)`` activations.
            size: the spatial size the server's layers expect.

        Returns:
            ``(B, C, h*f, w*f)`` activations, or ``(B, C, *size)``.
        """
        y = F.pixel_shuffle(self.conv(x), self.factor)
        if size is not None and (y.shape[-2] != size[0] or y.shape[-1] != size[1]):
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return y

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


__all__ = ["SubPixelUpsample", "assemble", "pad_to_multiple", "reshuffle", "unshuffle"]
