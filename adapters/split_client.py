"""The client half of SplitShield across processes: :class:`RemoteServer` is the server
half in another process as :meth:`SplitShield.fit
<shieldsplit.defenses.pgsl.shield.SplitShield.fit>` talks to it, and
:func:`train_client` trains the client against it.

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

from torch import Tensor

from shieldsplit._core.validate import check_seed
from shieldsplit.adapters.split_wire import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Connection,
    FrameHeader,
    hello_of,
)
from shieldsplit.defenses.pgsl.shield import FitHistory, SplitShield
from shieldsplit.errors import WireError
from shieldsplit.wire import ClientMessage, EpochSummary, ServerGradient


class RemoteServer:
    """The server half in another process, as :meth:`SplitShield.fit` talks to it
    (``shield.fit(data, server=RemoteServer(...))``).

    Args:
        shield: the client's shield (its hello is checked by the server).
        host: the server's address.
        port: the server's port.
        seed: the run's seed (must be the ``seed`` given to ``fit``).
        max_message_bytes: the largest reply accepted.
        timeout: seconds to wait for the server.

    Attributes:
        frames: message frames sent (one per batch).
        message_bytes: bytes of every ``message`` frame sent, all counted.
        gradient_bytes: bytes of every ``gradient`` frame received.

    Raises:
        ConfigError: the server refused the hello.
        ConnectionError: nothing listens at ``host:port``.
    """

    def __init__(self, shield: SplitShield, *, host: str = "127.0.0.1", port: int,
                 seed: int = 0, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 timeout: float = 600.0) -> None:
        self.shield = shield
        sock = socket.create_connection((host, port), timeout=timeout)
        self.conn = Connection(sock, max_message_bytes=max_message_bytes)
        self.frames = 0
        self.message_bytes = 0
        self.gradient_bytes = 0
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
    timeout: float = 600.0,
) -> tuple[FitHistory, RemoteServer]:
    """Train ``shield``'s client half against a server process
    (:func:`~shieldsplit.adapters.split_server.serve`).

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
        timeout: seconds to wait for the server.

    Returns:
        The history (the losses and accuracies are the server's tallies) and the
        closed connection's counters (frames and bytes).

    Example:
        See :func:`shieldsplit.adapters.split_server.serve`, whose example trains one
        epoch with this function.
    """
    with RemoteServer(shield, host=host, port=port, seed=seed,
                      max_message_bytes=max_message_bytes, timeout=timeout) as remote:
        history = shield.fit(data, epochs=epochs, seed=seed, progress=progress, server=remote)
    return history, remote


__all__ = ["RemoteServer", "train_client"]
