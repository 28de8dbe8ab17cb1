"""Steps (e) and (g): conv-sum feature fusion and adaptive weighted averaging.

Feature fusion (Khowaja et al. 2022, eqs. 7-8):
``f_out = (concat(f_u, f_v) * filt + bias) + f_u``. The convolution is
initialised to zero, so the fused stream starts as the attacked stream and
learns how much of the recovered map to mix in.

Decision fusion (eqs. 9-11): ``S_awa = gamma * S_r + rho * S_f + (1 - gamma - rho) * S_a``
with each stream's initial weight rescaled by that stream's ``S^max``: the
largest, over class labels ``L``, of the stream's mean score for ``L`` on the
samples whose true label is ``L`` (its confidence in the true class). A stream
that guesses, or collapses onto one class, scores low on the classes it gets
wrong, and its weight falls.

Example:
    >>> import torch
    >>> w = adaptive_weights(torch.tensor([0.9, 0.6, 0.5]), torch.tensor([0.5, 0.3, 0.2]))
    >>> [round(v, 4) for v in w.tolist()]
    [0.6164, 0.2466, 0.137]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from shieldsplit.functional.fusion import (
    adaptive_weights,
    class_score_sums,
    max_class_score,
    weighted_average,
)


class ConvSumFusion(nn.Module):
    """Conv-sum fusion of two feature maps of equal shape (eqs. 7-8).

    Args:
        channels: channels of each input map.
        kernel_size: 1 or 3.

    Example:
        >>> fuse = ConvSumFusion(4)
        >>> u, v = torch.rand(2, 4, 3, 3), torch.rand(2, 4, 3, 3)
        >>> torch.equal(fuse(u, v), u)  # zero-initialised convolution
        True
    """

    def __init__(self, channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)  # type: ignore[arg-type]

    def forward(self, u: Tensor, v: Tensor) -> Tensor:
        """Fuse ``v`` into ``u``.

        Args:
            u: the attacked feature map (also the residual).
            v: the recovered feature map.

        Returns:
            ``conv(concat(u, v)) + u``.
        """
        return self.conv(torch.cat([u, v], dim=1)) + u


__all__ = [
    "ConvSumFusion", "adaptive_weights", "class_score_sums", "max_class_score",
    "weighted_average",
]
