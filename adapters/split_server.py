"""The server half of SplitShield across processes: :func:`serve` trains the shield's
server part (:class:`~shieldsplit.defenses.pgsl.shield.ServerHalf`) on the frames that
arrive (:mod:`shieldsplit.adapters.split_wire`).

A refused frame is answered with an ``error`` frame and the server keeps serving
(after a frame it cannot delimit it closes that connection and accepts the next one).

Example:
    >>> ServerReport(port=9300).messages
    0
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from shieldsplit._core.io import atomic_torch_save, atomic_write_text
from shieldsplit._core.validate import check_int
from shieldsplit.adapters.split_wire import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Connection,
    FrameHeader,
    hello_of,
)
from shieldsplit.defenses.pgsl.shield import SplitShield
from shieldsplit.errors import ConfigError, ShieldSplitError, StateError, WireError
from shieldsplit.wire import ClientMessage, EpochSummary

logger = logging.getLogger(__name__)


class ServerReport(BaseModel):
    """What a server process did.

    Attributes:
        port: the TCP port it listened on.
        connections: connections served.
        messages: client messages trained on.
        epochs: the epoch summaries it sent.
        rejected: the refused frames' errors, in order.
        bytes_received: bytes read, all connections.
        bytes_sent: bytes written, all connections.
    """

    model_config = ConfigDict(extra="forbid")

    port: int
    connections: int = 0
    messages: int = 0
    epochs: list[EpochSummary] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list)
    bytes_received: int = 0
    bytes_sent: int = 0


def check_message(shield: SplitShield, header: FrameHeader, tensors: Mapping[str, Tensor],
                  *, max_batch: int) -> ClientMessage:
    """A ``message`` frame as the :class:`~shieldsplit.wire.ClientMessage` it stands for,
    checked against what the server's shield takes.

    Args:
        shield: the server's shield.
        header: the frame's header.
        tensors: its tensors.
        max_batch: the largest batch accepted.

    Returns:
        The message (activations, target size, labels).

    Raises:
        WireError: other tensors than float32 activations of the shield's layout and
            int64 labels, one per example, a batch over ``max_batch``, or a target size
            other than the up-sampler needs.

    Example:
        >>> from shieldsplit.models import PGSLNet
        >>> shield = SplitShield(PGSLNet(num_classes=2, image_size=8, width=4, hidden=8))
        >>> header = FrameHeader(kind="message", target_size=(8, 8))
        >>> ok = {"activations": torch.zeros(2, 4, 4, 4), "labels": torch.tensor([0, 1])}
        >>> check_message(shield, header, ok, max_batch=64).batch_size
        2
        >>> check_message(shield, header, {"activations": torch.zeros(2, 3, 4, 4)},
        ...               max_batch=64)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        shieldsplit.errors.WireError: Malformed message: expected float32 activations ...
    """
    dims, channels = shield.wire_layout
    a, y = tensors.get("activations"), tensors.get("labels")
    ok = (set(tensors) == {"activations", "labels"} and a is not None and y is not None
          and a.dtype == torch.float32 and a.dim() == dims and a.shape[1] == channels
          and 0 < a.shape[0] <= max_batch and y.dtype == torch.int64
          and tuple(y.shape) == (a.shape[0],))
    if not ok:
        raise WireError.build(
            what="message", expected=f"float32 activations ({dims}-D, {channels} channels, "
            f"1..{max_batch} examples) and one int64 label per example",
            received={k: (str(t.dtype), tuple(t.shape)) for k, t in tensors.items()},
            fix="send what SplitShield.client_train_forward returns")
    target = header.target_size
    needs = shield.upsample is not None
    if a is None or needs != (target is not None) or (target is not None and not all(
            0 < t <= s * shield.config.unshuffle.factor
            for t, s in zip(target, a.shape[-2:], strict=True))):
        raise WireError.build(
            what="message.target_size",
            expected="a target size up to the up-sampled size" if needs else "none",
            received=target, fix="send ClientMessage.target_size as the client made it")
    return ClientMessage(activations=a, target_size=target, labels=y)


def serve(
    shield: SplitShield,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    connections: int | None = 1,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_batch: int = 4096,
    timeout: float = 600.0,
    report: str | Path | None = None,
    record: str | Path | None = None,
    ready: Callable[[int], object] | None = None,
) -> ServerReport:
    """Run the server half of ``shield`` for clients that connect over TCP.

    Each connection is one training run: a ``hello`` (the client's shield must have the
    same cut, configuration, classes and wire layout), then per batch a ``message``
    answered by a ``gradient`` (:class:`~shieldsplit.defenses.pgsl.shield.ServerHalf` trains the
    server's streams), per epoch an ``end_epoch`` answered by a ``summary``, and a
    ``bye``. A refused frame is answered by an ``error`` frame, logged and listed in the
    report; the connection goes on (after a frame that cannot be delimited, the server
    closes that connection and accepts the next). The server seeds torch's generator
    with the client's seed for the run.

    Args:
        shield: the shield whose server part is trained (in place).
        host: the address to listen on (``127.0.0.1``: this machine only; there is no TLS).
        port: the port; 0 picks a free one (given to ``ready``).
        connections: how many connections to serve before returning; None serves until
            the process is stopped.
        max_message_bytes: the largest payload accepted.
        max_batch: the largest batch accepted.
        timeout: seconds to wait for a client's next frame before dropping it.
        report: write the :class:`ServerReport` here (JSON, atomically) after every
            connection.
        record: write every received activations and labels tensor here (``torch.save``
            of lists, atomically) after every connection: what the server observed, for
            audits and tests; never sent anywhere.
        ready: called with the bound port once the server listens.

    Returns:
        The report.

    Raises:
        ConfigError: bad limits.

    Example:
        A server in a thread here for brevity (a deployment runs it in its own process,
        ``shieldsplit split-serve``), and a client that trains one epoch against it:

        >>> import threading, time
        >>> from shieldsplit.adapters.split_client import train_client
        >>> from shieldsplit.models import PGSLNet
        >>> net = PGSLNet(num_classes=2, image_size=8, width=4, hidden=8)
        >>> ports = []
        >>> server = threading.Thread(target=serve, args=(SplitShield(net, cut=2),),
        ...                           kwargs={"ready": ports.append}, daemon=True)
        >>> server.start()
        >>> while not ports:
        ...     time.sleep(0.01)
        >>> data = (torch.rand(8, 1, 8, 8), torch.tensor([0, 1] * 4))
        >>> history, link = train_client(SplitShield(net, cut=2), data, port=ports[0],
        ...                              epochs=1, progress=False)
        >>> server.join(timeout=30)
        >>> link.frames, sorted(history.epochs[0].train_loss)
        (1, ['attacked', 'fused', 'recovered'])
    """
    max_message_bytes = check_int("max_message_bytes", max_message_bytes, low=1,
                                  fix="pass a positive limit")
    max_batch = check_int("max_batch", max_batch, low=1, fix="pass a positive limit")
    observed: dict[str, list[Tensor]] = {"activations": [], "labels": []}
    with socket.create_server((host, port)) as listener:
        rep = ServerReport(port=int(listener.getsockname()[1]))
        logger.info("split server listening on %s:%d", host, rep.port)
        if ready is not None:
            ready(rep.port)
        while connections is None or rep.connections < connections:
            sock, _ = listener.accept()
            sock.settimeout(timeout)
            conn = Connection(sock, max_message_bytes=max_message_bytes)
            try:
                with torch.random.fork_rng(devices=[]):
                    _serve_connection(shield, conn, rep, observed, max_batch)
            finally:
                conn.close()
                rep.connections += 1
                rep.bytes_received += conn.bytes_received
                rep.bytes_sent += conn.bytes_sent
                if report is not None:
                    atomic_write_text(report, rep.model_dump_json(indent=2))
                if record is not None:
                    atomic_torch_save(observed, record)
    return rep


def _serve_connection(shield: SplitShield, conn: Connection, rep: ServerReport,
                      observed: dict[str, list[Tensor]], max_batch: int) -> None:
    try:
        _frames(shield, conn, rep, observed, max_batch)
    finally:
        shield.eval()


def _frames(shield: SplitShield, conn: Connection, rep: ServerReport,
            observed: dict[str, list[Tensor]], max_batch: int) -> None:
    half = None
    while True:
        try:
            header, tensors = conn.receive()
            if header.kind == "bye":
                return
            if header.kind == "hello":
                mine = hello_of(shield, header.hello.seed if header.hello else 0)
                if header.hello != mine:
                    raise ConfigError.build(
                        what="hello", expected=f"a client of the same shield ({mine})",
                        received=header.hello, fix="build both halves from the same model, "
                        "cut, config and seed")
                torch.manual_seed(mine.seed)
                shield.train()
                half = shield.server_half()
                conn.send(FrameHeader(kind="welcome"))
            elif half is None:
                raise StateError.build(what="frame", expected="a hello first",
                                       received=header.kind, fix="start with a hello")
            elif header.kind == "message":
                msg = check_message(shield, header, tensors, max_batch=max_batch)
                observed["activations"].append(msg.activations.clone())
                if msg.labels is not None:
                    observed["labels"].append(msg.labels.clone())
                reply = half.step(msg)
                rep.messages += 1
                conn.send(FrameHeader(kind="gradient"), {"grad": reply.grad})
            elif header.kind == "end_epoch":
                summary = half.end_epoch()
                rep.epochs.append(summary)
                conn.send(FrameHeader(kind="summary", summary=summary))
            else:
                raise WireError.build(what="header.kind",
                                      expected="hello, message, end_epoch or bye",
                                      received=header.kind, fix="send a client's frame")
        except ShieldSplitError as exc:
            rep.rejected.append(f"{type(exc).__name__}: {exc}")
            logger.warning("split server refused a frame: %s", exc)
            with contextlib.suppress(OSError):
                conn.send(FrameHeader(kind="error", error=f"{type(exc).__name__}: {exc}"[:4000]))
            if isinstance(exc, WireError) and exc.what == "frame":
                return
        except OSError as exc:  # ConnectionError, TimeoutError
            logger.warning("split server lost its client: %s", exc)
            return


__all__ = ["ServerReport", "check_message", "serve"]
