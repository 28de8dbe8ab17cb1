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

from shieldsplit.functional.unshuffle import assemble, pad_to_multiple, reshuffle, unshuffle


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
