"""The client's decoder, the attacker of the minimax game: latent -> image.

Example:
    >>> import torch
    >>> tuple(LatentDecoder((16,), (1, 8, 8), width=4)(torch.zeros(2, 16)).shape)
    (2, 1, 8, 8)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shieldsplit.errors import UnsupportedModelError


class LatentDecoder(nn.Module):
    """The client's decoder: rebuilds the image ``(C, H, W)`` from a perturbed latent.

    Adapted from the paper's Table I (convT 256 k3, BN, convT 256 k4, BN, convT C k2/k4
    stride 2) to any latent and image size: a transposed conv (k3, stride 1) to
    ``width`` channels with BatchNorm and ReLU, then as many (k4, stride 2) transposed
    convs as it takes to reach the image size (BatchNorm and ReLU between them, the
    last one to ``C`` channels), a bilinear resize to the exact ``(H, W)`` when the
    doubling overshoots, and a sigmoid (images in ``[0, 1]``; the Pearson loss is
    invariant to affine pixel scales, so normalised images work too). A flat latent
    ``(D,)`` first goes through ``Linear(D, width * ceil(H/4) * ceil(W/4))`` and is
    reshaped to a ``ceil(H/4) x ceil(W/4)`` map.

    Args:
        latent_shape: one latent's shape: ``(C', h, w)`` or ``(D,)``.
        image_shape: ``(C, H, W)`` of the images.
        width: channels of the hidden layers (the paper: 256).

    Raises:
        UnsupportedModelError: for a latent that is neither 1-D nor 3-D per sample.

    Example:
        >>> dec = LatentDecoder((8, 4, 4), (1, 28, 28), width=8)
        >>> tuple(dec(torch.zeros(2, 8, 4, 4)).shape)
        (2, 1, 28, 28)
    """

    def __init__(
        self, latent_shape: tuple[int, ...], image_shape: tuple[int, int, int], *, width: int = 64
    ) -> None:
        super().__init__()
        c_img, height, wide = image_shape
        self.image_size = (int(height), int(wide))
        if len(latent_shape) == 1:
            h, w = max(1, math.ceil(height / 4)), max(1, math.ceil(wide / 4))
            self.stem: nn.Module = nn.Sequential(
                nn.Linear(int(latent_shape[0]), width * h * w), nn.ReLU(),
                nn.Unflatten(1, (width, h, w)),
            )
            c = width
        elif len(latent_shape) == 3:
            self.stem = nn.Identity()
            c, h, w = (int(s) for s in latent_shape)
        else:
            raise UnsupportedModelError.build(
                what="encoder", expected="latents of shape (N, C, h, w) or (N, D)",
                received=f"latents of shape (N, {', '.join(map(str, latent_shape))})",
                fix="cut the model where the activation is a feature map or a flat vector",
            )
        ups = 0
        while h * 2**ups < height or w * 2**ups < wide:
            ups += 1
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        ]
        for _ in range(ups - 1):
            layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
                       nn.BatchNorm2d(width), nn.ReLU()]
        layers.append(
            nn.ConvTranspose2d(width, c_img, 4, stride=2, padding=1) if ups
            else nn.ConvTranspose2d(width, c_img, 3, padding=1)
        )
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """Reconstructions ``(N, C, H, W)`` in ``[0, 1]``."""
        out = self.body(self.stem(z))
        if tuple(out.shape[-2:]) != self.image_size:
            out = F.interpolate(out, size=self.image_size, mode="bilinear", align_corners=False)
        return torch.sigmoid(out)


__all__ = ["LatentDecoder"]
