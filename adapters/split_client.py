"""The client half of SplitShield across processes: :class:`RemoteServer` is the server
half in another process as :meth:`SplitShield.fit
<shieldsplit.defenses.pgsl.shield.SplitShield.fit>` talks to it, and
:func:`train_client` trains the client against it, then evaluates the pair
(:meth:`RemoteServer.evaluate`: the server scores the activations, the labels of the
evaluation data stay with the client).

:func:`shieldsplit.adapters.split_server.serve`'s example trains one epoch with
:func:`train_client`.

Example:
    A client needs a server listening; nothing listens on a port just freed:

    >>> import socket
    >>> from shieldsplit.models import PGSLNet
    >>> with socket.socket() as s:
    ...     _ = s.bind(("127.0.0.1", 0))
    ...     port = s.getsockname()[1]
    >>> net = PGSLNet(num_classes=2, image_size=8, width=4, hidden=8)
    >>> RemoteServer(SplitShield(net, cut=2), port=port)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ConnectionRefusedError: ...
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from shieldsplit._core.device import device_of
from shieldsplit._core.validate import check_seed
from shieldsplit.adapters.split_wire import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_MAX_MESSAGE_BYTES,
    Connection,
    FrameHeader,
    hello_of,
)
from shieldsplit.defenses.pgsl.shield import FitHistory, SplitShield
from shieldsplit.errors import EmptyDataError, WireError
from shieldsplit.functional.stats import balanced_accuracy
from shieldsplit.training import eval_mode
from shieldsplit.wire import ClientMessage, EpochSummary, ServerGradient


class Evaluation(BaseModel):
    """The pair's accuracy on one labelled split, measured by the client
    (:meth:`RemoteServer.evaluate`).

    Attributes:
        examples: images evaluated.
        accuracy: accuracy of every stream and of the decision fusion (``"decision"``),
            as :meth:`SplitShield.evaluate` gives it in one process.
        balanced_accuracy: the decision fusion's balanced accuracy (mean per-class
            recall).

    Example:
        >>> Evaluation(examples=4, accuracy={"decision": 0.5}, balanced_accuracy=0.5).examples
        4
    """

    model_config = ConfigDict(extra="forbid")

    examples: int
    accuracy: dict[str, float]
    balanced_accuracy: float


class RemoteServer:
    """The server half in another process, as :meth:`SplitShield.fit` talks to it
    (``shield.fit(data, server=RemoteServer(...))``).

    Args:
        shield: the client's shield (its hello is checked by the server).
        host: the server's address.
        port: the server's port.
        seed: the run's seed (must be the ``seed`` given to ``fit``).
        max_message_bytes: the largest reply accepted.
        frame_timeout: seconds to wait for each whole reply (and to connect).

    Attributes:
        frames: message frames sent (one per batch).
        message_bytes: bytes of every ``message`` frame sent, all counted.
        gradient_bytes: bytes of every ``gradient`` frame received.
        evaluations: what :func:`train_client` evaluated, by split name.

    Raises:
        ConfigError: the server refused the hello.
        ConnectionError: nothing listens at ``host:port``.
    """

    def __init__(self, shield: SplitShield, *, host: str = "127.0.0.1", port: int,
                 seed: int = 0, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 frame_timeout: float = DEFAULT_FRAME_TIMEOUT) -> None:
        self.shield = shield
        sock = socket.create_connection((host, port), timeout=frame_timeout)
        self.conn = Connection(sock, max_message_bytes=max_message_bytes,
                               frame_timeout=frame_timeout)
        self.frames = 0
        self.message_bytes = 0
        self.gradient_bytes = 0
        self.evaluations: dict[str, Evaluation] = {}
        try:
            self._request(FrameHeader(kind="hello", hello=hello_of(shield, check_seed(seed))),
                          None, "welcome")
        except BaseException:
            self.conn.close()
            raise

    def _request(self, header: FrameHeader, tensors: Mapping[str, Tensor] | None,
                 want: str) -> tuple[FrameHeader, dict[str, Tensor], int, int]:
        sent = self.conn.send(header, tensors)
        before = self.conn.bytes_received
        reply, got = self.conn.receive()
        if reply.kind == "error" or reply.kind != want:
            raise WireError.build(what="reply", expected=f"a {want} frame",
                                  received=reply.error or reply.kind,
                                  fix="check the server's log")
        return reply, got, sent, self.conn.bytes_received - before

    def step(self, msg: ClientMessage) -> ServerGradient:
        """Send one batch's message; return the server's gradient.

        Args:
            msg: what :meth:`SplitShield.client_train_forward` made (with labels).

        Returns:
            The fused stream's gradient.

        Raises:
            WireError: the server refused the message or replied with something else
                than a gradient of the activations' shape.
        """
        tensors = {"activations": msg.activations.detach().float()}
        if msg.labels is not None:
            tensors["labels"] = msg.labels.detach().long()
        _, got, sent, received = self._request(
            FrameHeader(kind="message", target_size=msg.target_size), tensors, "gradient")
        grad = got.get("grad")
        if grad is None or set(got) != {"grad"} or grad.shape != msg.activations.shape:
            raise WireError.build(
                what="reply", expected=f"a gradient of shape {tuple(msg.activations.shape)}",
                received={k: tuple(t.shape) for k, t in got.items()},
                fix="check that the server runs the same shield")
        self.frames += 1
        self.message_bytes += sent
        self.gradient_bytes += received
        return ServerGradient(grad.to(msg.activations.device))

    def end_epoch(self) -> EpochSummary:
        """Close the epoch on the server.

        Returns:
            The server's tallies for the epoch.
        """
        reply, _, _, _ = self._request(FrameHeader(kind="end_epoch"), None, "summary")
        if reply.summary is None:
            raise WireError.build(what="reply", expected="a summary", received="none",
                                  fix="check the server's log")
        return reply.summary

    def predict(self, x: Tensor) -> Tensor:
        """Every stream's and the decision fusion's class probabilities for ``x``: the
        client's steps run here in eval mode, the server scores the activations (no
        labels are sent).

        Args:
            x: an image batch.

        Returns:
            ``(N, streams + 1, classes)``: the streams in ``shield.streams`` order, then
            the decision fusion.

        Raises:
            WireError: the server refused or replied with other scores.
        """
        shield = self.shield
        with eval_mode(shield):
            msg = shield.client(x)
        _, got, _, _ = self._request(FrameHeader(kind="predict", target_size=msg.target_size),
                                     {"activations": msg.activations.detach().float()},
                                     "scores")
        scores = got.get("scores")
        want = (msg.batch_size, len(shield.streams) + 1, shield.num_classes)
        if scores is None or set(got) != {"scores"} or tuple(scores.shape) != want:
            raise WireError.build(what="reply", expected=f"scores of shape {want}",
                                  received={k: tuple(t.shape) for k, t in got.items()},
                                  fix="check that the server runs the same shield")
        return scores.to(device_of(shield))

    def evaluate(self, data: Any) -> Evaluation:
        """The pair's accuracy on labelled images (any form of docs/data.md), batch by
        batch through :meth:`predict`; the labels never leave this process.

        Args:
            data: labelled images.

        Returns:
            The accuracies.

        Raises:
            EmptyDataError: no image.
        """
        shield = self.shield
        names = [*shield.streams, "decision"]
        preds, labels = [], []
        for x, y in shield.contract(data, seed=0, shuffle=False, what="data"):
            shield.check_inputs(x, y)
            preds.append(self.predict(x).argmax(-1).cpu())
            labels.append(y.cpu())
        if not preds:
            raise EmptyDataError.build(what="data", expected="at least one batch",
                                       received="no batch", fix="check the data set")
        p, y = torch.cat(preds), torch.cat(labels)
        n = int(y.shape[0])
        return Evaluation(examples=n,
                          accuracy={k: int((p[:, i] == y).sum()) / n
                                    for i, k in enumerate(names)},
                          balanced_accuracy=balanced_accuracy(p[:, -1], y))

    def close(self) -> None:
        """Say bye and close the connection."""
        with contextlib.suppress(OSError):
            self.conn.send(FrameHeader(kind="bye"))
        self.conn.close()

    def __enter__(self) -> RemoteServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def train_client(
    shield: SplitShield,
    data: Any,
    *,
    host: str = "127.0.0.1",
    port: int,
    epochs: int = 5,
    seed: int = 0,
    progress: bool = True,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
    evaluate: Mapping[str, Any] | None = None,
) -> tuple[FitHistory, RemoteServer]:
    """Train ``shield``'s client half against a server process
    (:func:`~shieldsplit.adapters.split_server.serve`), then evaluate the pair.

    Args:
        shield: the client's shield (built like the server's: same model, cut, config
            and seed). Its client part is trained; its own server part is not used.
        data: labelled images in any form of docs/data.md (a DataLoader keeps its
            batch size and sampler).
        host: the server's address.
        port: the server's port.
        epochs: passes over the data.
        seed: the run's seed (as for :meth:`SplitShield.fit`).
        progress: show a progress bar.
        max_message_bytes: the largest reply accepted.
        frame_timeout: seconds to wait for each reply of the server.
        evaluate: labelled splits by name (``{"val": ..., "test": ...}``), evaluated
            after training on the same connection (:meth:`RemoteServer.evaluate`):
            the server's weights as they are then, other clients' updates included.

    Returns:
        The history (the losses and accuracies are the server's tallies) and the
        closed connection's counters (frames and bytes) and ``evaluations``.

    Example:
        See :func:`shieldsplit.adapters.split_server.serve`, whose example trains one
        epoch with this function.
    """
    with RemoteServer(shield, host=host, port=port, seed=seed,
                      max_message_bytes=max_message_bytes,
                      frame_timeout=frame_timeout) as remote:
        history = shield.fit(data, epochs=epochs, seed=seed, progress=progress, server=remote)
        for name, split in (evaluate or {}).items():
            remote.evaluations[name] = remote.evaluate(split)
    return history, remote


__all__ = ["Evaluation", "RemoteServer", "train_client"]
