"""Learnable latent perturbation: Gaussian noise on the latent and a minimax decoder game.

Jiang et al. (2025) defend a client against gradient inversion by perturbing the
latent of its encoder with Gaussian noise, ``z' = z + eps`` with
``eps ~ N(m, s^2)``, and by training against a decoder that tries to rebuild the
image from ``z'``. Each step the decoder is updated to maximise the Pearson
correlation ``r(x, x_hat)`` (eq. 2, loss ``-r``), then the encoder, the predictor
and (in the learned variant) the noise parameters are updated to minimise
``CE(y, y_hat) + lam * r(x, x_hat)`` (eq. 3). The noise is either *fixed*
(``mean`` and ``std`` set by the defender) or *learned* per latent element through
the reparameterisation ``z' = z + m + s * n`` with ``n ~ N(0, 1)``; Algorithm 1
pre-trains the noise, re-initialises the model weights and trains again with the
noise kept fixed.

The reading notes in ``shared/papers/README.md`` ("Learnable data perturbation")
record what the extraction lost; the choices made where the paper is silent are
listed in :class:`LatentPerturb`.

The modules: ``config`` (:class:`LatentConfig`, the training record), ``noise``
(:class:`LatentNoise`), ``decoder`` (:class:`LatentDecoder`), ``model``
(:class:`~shieldsplit.defenses.latent.model.LatentModel`: building, forward and the
checkpoint hooks) and ``defense`` (:class:`LatentPerturb`: the minimax training and
the registry names).

Example:
    >>> import torch
    >>> import shieldsplit as ss
    >>> from shieldsplit.defenses.latent import LatentPerturb, pearson_correlation
    >>> net = ss.PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
    >>> lp = LatentPerturb.from_model(net, cut=2, noise="fixed", std=0.1, decoder_width=8)
    >>> x = torch.rand(4, 1, 8, 8)
    >>> msg = lp.client(x)                  # the noisy latent that leaves the client
    >>> tuple(msg.activations.shape), tuple(lp(x).shape)
    ((4, 8, 8, 8), (4, 2))
    >>> tuple(lp.decoder(msg.activations).shape)   # built from the latent and image shapes
    (4, 1, 8, 8)
    >>> float(pearson_correlation(x, 2 * x + 1).min()) > 0.999
    True
"""

from __future__ import annotations

from shieldsplit.defenses.latent.config import (
    LatentConfig,
    LatentEpoch,
    LatentHistory,
    NoiseKind,
)
from shieldsplit.defenses.latent.decoder import LatentDecoder
from shieldsplit.defenses.latent.defense import LatentPerturb
from shieldsplit.defenses.latent.noise import LatentNoise
from shieldsplit.functional.image import pearson_correlation

__all__ = [
    "LatentConfig",
    "LatentDecoder",
    "LatentEpoch",
    "LatentHistory",
    "LatentNoise",
    "LatentPerturb",
    "NoiseKind",
    "pearson_correlation",
]
