"""Typed messages that cross the client/server boundary, and what an attacker observes.

Only these objects travel between the two parties: a :class:`ClientMessage`
from client to server, and a :class:`ServerGradient` back. Keeping them typed
makes it explicit what an eavesdropper (or a curious server) observes, which
is exactly what the auditor's split-learning attacks are given.

Example:
    >>> import torch
    >>> msg = ClientMessage(activations=torch.zeros(2, 4, 3, 3), target_size=(6, 6))
    >>> msg.batch_size, msg.nbytes
    (2, 288)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from torch import Tensor

ObservationKind = Literal["activations", "gradient", "update"]


@dataclass(frozen=True)
class Observation:
    """What the attacker observes of one victim batch.

    Attributes:
        kind: ``"activations"`` (split learning), ``"gradient"`` (one step of
            federated learning) or ``"update"`` (weights after minus before, after
            several local steps).
        batch_size: number of images in the victim batch.
        image_shape: ``(C, H, W)`` of one image.
        activations: the tensor that crossed the cut, for ``"activations"``.
        gradients: parameter name -> gradient, for ``"gradient"``.
        update: parameter name -> weight change, for ``"update"``.
        labels: the labels, when the threat model grants them (else None).
        meta: protocol facts the attacker knows (learning rate, local steps,
            local batch size, epochs, the cut, the wire's target size).
    """

    kind: ObservationKind
    batch_size: int
    image_shape: tuple[int, int, int]
    activations: Tensor | None = None
    gradients: dict[str, Tensor] | None = None
    update: dict[str, Tensor] | None = None
    labels: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)



@dataclass(frozen=True)
class ClientMessage:
    """What the client sends to the server.

    Attributes:
        activations: the client part's output at the cut.
        target_size: the spatial size the server's layers expect after
            up-sampling (None when no up-sampling happens).
        labels: the batch labels, sent only during training (vanilla split
            learning with label sharing), else None.
    """

    activations: Tensor
    target_size: tuple[int, int] | None = None
    labels: Tensor | None = None

    @property
    def batch_size(self) -> int:
        """Number of samples in the message."""
        return int(self.activations.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of activation payload on the wire."""
        return int(self.activations.numel() * self.activations.element_size())


@dataclass(frozen=True)
class ServerGradient:
    """What the server sends back during training: the fused stream's gradient.

    Attributes:
        grad: ``d loss_fused / d activations``, shaped like the activations.
    """

    grad: Tensor


@dataclass(frozen=True)
class StreamScores:
    """Class probabilities of each server stream (step f).

    Attributes:
        fused: the fused stream (always present).
        recovered: the recovered stream, or None when recovery is off.
        attacked: the attacked stream, or None when fusion is off.
    """

    fused: Tensor
    recovered: Tensor | None = None
    attacked: Tensor | None = None

    def as_dict(self) -> dict[str, Tensor]:
        """The present streams by name, in the order recovered, fused, attacked."""
        out = {"recovered": self.recovered, "fused": self.fused, "attacked": self.attacked}
        return {k: v for k, v in out.items() if v is not None}


class EpochSummary(BaseModel):
    """What the server reports at the end of a training epoch (its own tallies: the
    client never sees the server's logits).

    Attributes:
        examples: training examples the server trained on in the epoch.
        train_loss: mean cross-entropy per stream.
        train_accuracy: accuracy per stream.
        stream_weights: the decision weights after the epoch's calibration.
    """

    model_config = ConfigDict(extra="forbid")

    examples: int
    train_loss: dict[str, float]
    train_accuracy: dict[str, float]
    stream_weights: dict[str, float]


__all__ = [
    "ClientMessage", "EpochSummary", "Observation", "ObservationKind", "ServerGradient",
    "StreamScores",
]
