"""The latent's Gaussian perturbation ``z' = z + m + s * n`` (fixed or learned).

Example:
    >>> import torch
    >>> noise = LatentNoise((3,), kind="fixed", mean=0.0, std=1e-9)
    >>> bool(torch.allclose(noise(torch.ones(2, 3)), torch.ones(2, 3)))
    True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shieldsplit.defenses.latent.config import NoiseKind


class LatentNoise(nn.Module):
    """The perturbation ``z' = z + m + s * n``, ``n ~ N(0, 1)`` drawn on every call.

    The noise is drawn in training *and* in eval mode, from the global generator (seed
    it with ``torch.manual_seed`` for reproducible outputs), so that nothing that
    leaves the client is ever noise-free.

    Args:
        latent_shape: the shape of one latent (without the batch dimension).
        kind: ``"fixed"``: ``m = mean`` and ``s = std`` are constants; ``"learned"``:
            ``m`` and ``s = softplus(rho)`` are parameters of ``latent_shape``.
        mean: the fixed mean, or the initial learned mean.
        std: the fixed std, or the initial learned std (> 0).

    Example:
        >>> noise = LatentNoise((2, 3), kind="learned", mean=1.0, std=0.1)
        >>> tuple(noise.mean.shape), round(float(noise.std.detach().mean()), 4)
        ((2, 3), 0.1)
    """

    def __init__(
        self, latent_shape: tuple[int, ...], *, kind: NoiseKind, mean: float, std: float
    ) -> None:
        super().__init__()
        self.kind: NoiseKind = kind
        self.latent_shape = tuple(latent_shape)
        if kind == "learned":
            self.loc = nn.Parameter(torch.full(self.latent_shape, float(mean)))
            # inverse softplus, so that softplus(rho) == std at the start
            self.rho = nn.Parameter(torch.full(self.latent_shape, math.log(math.expm1(std))))
        else:
            self._mean, self._std = float(mean), float(std)

    @property
    def mean(self) -> Tensor:
        """``m``: per element for the learned noise, a scalar tensor for the fixed one."""
        if self.kind == "learned":
            return self.loc
        return torch.tensor(self._mean)

    @property
    def std(self) -> Tensor:
        """``s`` (> 0): per element for the learned noise, a scalar tensor for the fixed one."""
        if self.kind == "learned":
            return F.softplus(self.rho)
        return torch.tensor(self._std)

    def forward(self, z: Tensor) -> Tensor:
        """Perturb a batch of latents ``(N, *latent_shape)``."""
        n = torch.randn_like(z)
        if self.kind == "learned":
            return z + self.loc + F.softplus(self.rho) * n
        return z + self._mean + self._std * n


__all__ = ["LatentNoise"]
