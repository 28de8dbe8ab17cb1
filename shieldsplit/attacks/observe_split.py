"""What a split-learning eavesdropper sees: the tensor that crosses the cut.

:func:`observe_activations` turns a client (a :class:`~shieldsplit.SplitShield`
or a plain client part from :func:`~shieldsplit.cutting.split_model`) and a
victim batch into the :class:`~shieldsplit.attacks.Observation` that the
split-learning attacks take. The client's weights, buffers and train/eval mode
are left exactly as they were.

Example:
    >>> import torch
    >>> import shieldsplit as ss
    >>> net = ss.PGSLNet(num_classes=3, image_size=8, width=8, hidden=8)
    >>> head = ss.split_model(net, 2).head
    >>> obs = observe_activations(head, torch.rand(2, 1, 8, 8))
    >>> obs.kind, tuple(obs.activations.shape), obs.image_shape
    ('activations', (2, 8, 8, 8), (1, 8, 8))
    >>> shield = ss.SplitShield(net, cut=2, seed=0)
    >>> wire = observe_activations(shield, torch.rand(2, 1, 8, 8))
    >>> tuple(wire.activations.shape), wire.meta["cut"], wire.meta["defense"]
    ((2, 8, 4, 4), 2, 'SplitShield')
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from shieldsplit._core.validate import check_batch
from shieldsplit.attacks.base import Observation
from shieldsplit.defenses.base import Defense
from shieldsplit.errors import UnsupportedModelError
from shieldsplit.training import eval_mode


def check_images(x: Any, what: str = "x") -> Tensor:
    """Check that ``x`` is a non-empty, finite, floating ``(N, C, H, W)`` batch.

    Args:
        x: the candidate batch.
        what: its name in error messages.

    Returns:
        ``x`` unchanged.

    Raises:
        InputShapeError: wrong type, rank, dtype or an empty batch.
        NonFiniteInputError: NaN or infinity.
    """
    check_batch(x, what=what)
    return x


def observe_activations(
    client: nn.Module, x: Tensor, *, labels: Tensor | None = None, cut: int | str | None = None
) -> Observation:
    """Run the client on ``x`` and return what crosses the network.

    Args:
        client: a :class:`~shieldsplit.defenses.base.Defense` such as a
            :class:`~shieldsplit.SplitShield` (its ``client`` runs, so the observation is
            the deployed wire format: for PGSL perturbed, unshuffled, with the saliency
            channel; for a noise defence, noisy) or a plain client part
            ``x -> activations`` (run in eval mode under ``no_grad``).
        x: the victim batch ``(N, C, H, W)``.
        labels: passed to ``SplitShield.client`` (the training-time wire, where the
            labels are sent and may be the saliency target); ignored for a plain head.
        cut: recorded in ``meta["cut"]`` for a plain head (a shield records its own).

    Returns:
        An ``"activations"`` observation; ``meta`` holds ``cut``, ``target_size`` and
        ``defense`` (the shield's class name, or None).

    Raises:
        UnsupportedModelError: if ``client`` is not a module or does not return one tensor.
        InputShapeError, NonFiniteInputError: on a bad batch.
    """
    if not isinstance(client, nn.Module):
        raise UnsupportedModelError.build(
            what="client", expected="a Defense or a client-part nn.Module",
            received=type(client).__name__,
            fix="pass shield or split_model(model, cut).head",
        )
    check_images(x)
    image_shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
    if isinstance(client, Defense):
        with eval_mode(client):
            msg = client.client(x, labels)
        return Observation(
            kind="activations", batch_size=msg.batch_size, image_shape=image_shape,
            activations=msg.activations.detach(), labels=msg.labels,
            meta={"cut": client.cut, "target_size": msg.target_size,
                  "defense": type(client).__name__},
        )
    with eval_mode(client), torch.no_grad():
        a = client(x)
    if not isinstance(a, Tensor):
        raise UnsupportedModelError.build(
            what="client", expected="a module returning one activation tensor",
            received=type(a).__name__, fix="pass the client part of a valid cut",
        )
    return Observation(
        kind="activations", batch_size=int(a.shape[0]), image_shape=image_shape,
        activations=a.detach(), meta={"cut": cut, "target_size": None, "defense": None},
    )


__all__ = ["check_images", "eval_mode", "observe_activations"]
