"""The server half of SplitShield across processes: :func:`serve` trains the shield's
server part (:class:`~shieldsplit.defenses.pgsl.shield.ServerHalf`) on the frames that
arrive (:mod:`shieldsplit.adapters.split_wire`).

Every connection has a thread of its own, so a client that stalls (half a header, then
nothing) holds only its own connection, which is dropped after the frame timeout; a
second client is welcomed meanwhile. A refused frame is answered with an ``error``
frame and the connection goes on; after a frame that cannot be delimited, a timeout or
an unexpected failure, only that connection is closed. The shield is shared: one lock
orders the frames of all clients (see :func:`serve`).

Example:
    >>> ServerReport(port=9300).messages
    0
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from shieldsplit._core.io import atomic_torch_save, atomic_write_text
from shieldsplit._core.validate import check_int
from shieldsplit.adapters.split_wire import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_MAX_MESSAGE_BYTES,
    Connection,
    FrameHeader,
    hello_of,
)
from shieldsplit.defenses.pgsl.shield import ServerHalf, SplitShield
from shieldsplit.errors import ConfigError, ShieldSplitError, StateError, WireError
from shieldsplit.training import eval_mode
from shieldsplit.wire import ClientMessage, EpochSummary

logger = logging.getLogger(__name__)


class ServerReport(BaseModel):
    """What a server process did.

    Attributes:
        port: the TCP port it listened on.
        connections: connections that ended (served and dropped).
        served: runs served: a welcomed hello, then the client's ``bye``.
        dropped: connections closed by the server or lost (a frame it cannot delimit, no
            whole frame within the frame timeout, a peer gone mid-run, no hello, too
            many clients at once).
        messages: client messages trained on.
        predictions: examples scored for clients' evaluations (``predict`` frames).
        epochs: the epoch summaries it sent, all clients, in the order sent.
        rejected: the refused frames' and dropped connections' errors, in order.
        bytes_received: bytes read, all connections.
        bytes_sent: bytes written, all connections.
    """

    model_config = ConfigDict(extra="forbid")

    port: int
    connections: int = 0
    served: int = 0
    dropped: int = 0
    messages: int = 0
    predictions: int = 0
    epochs: list[EpochSummary] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list)
    bytes_received: int = 0
    bytes_sent: int = 0


def check_message(shield: SplitShield, header: FrameHeader, tensors: Mapping[str, Tensor],
                  *, max_batch: int, labels: bool = True) -> ClientMessage:
    """A ``message`` (or ``predict``) frame as the :class:`~shieldsplit.wire.ClientMessage`
    it stands for, checked against what the server's shield takes.

    Args:
        shield: the server's shield.
        header: the frame's header.
        tensors: its tensors.
        max_batch: the largest batch accepted.
        labels: whether the frame carries labels (a training ``message``) or must not
            (a ``predict``: the labels of evaluation data stay with the client).

    Returns:
        The message (activations, target size, labels or None).

    Raises:
        WireError: other tensors than float32 activations of the shield's layout (and,
            with ``labels``, int64 labels, one per example), a batch over ``max_batch``,
            or a target size other than the up-sampler needs.

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
    names = {"activations", "labels"} if labels else {"activations"}
    ok = (set(tensors) == names and a is not None
          and a.dtype == torch.float32 and a.dim() == dims and a.shape[1] == channels
          and 0 < a.shape[0] <= max_batch and (not labels or (
              y is not None and y.dtype == torch.int64 and tuple(y.shape) == (a.shape[0],))))
    if not ok:
        raise WireError.build(
            what="message", expected=f"float32 activations ({dims}-D, {channels} channels, "
            f"1..{max_batch} examples)" + (" and one int64 label per example" if labels
                                            else " and no labels"),
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
    return ClientMessage(activations=a, target_size=target, labels=y if labels else None)


#: The most connections served at once; one more is answered with an ``error`` frame and
#: closed (each connection holds a thread and up to one frame in memory).
MAX_CLIENTS = 32
_POLL = 0.2  # seconds between checks of the stop condition while no client connects


class _Run:
    """One connection's run: its :class:`ServerHalf` and its random generator's state."""

    def __init__(self) -> None:
        self.half: ServerHalf | None = None
        self.rng: Tensor | None = None


class _Server:
    """What every connection's thread shares: the shield, the report, the lock."""

    def __init__(self, shield: SplitShield, rep: ServerReport, *, max_message_bytes: int,
                 max_batch: int, frame_timeout: float, report: str | Path | None,
                 record: str | Path | None, save: str | Path | None) -> None:
        self.shield, self.rep = shield, rep
        self.max_message_bytes, self.max_batch = max_message_bytes, max_batch
        self.frame_timeout = frame_timeout
        self.report, self.record, self.save = report, record, save
        self.observed: dict[str, list[Tensor]] = {"activations": [], "labels": []}
        self.lock = threading.Lock()
        self.live: set[socket.socket] = set()

    def connection(self, sock: socket.socket) -> None:
        conn = Connection(sock, max_message_bytes=self.max_message_bytes,
                          frame_timeout=self.frame_timeout)
        served = False
        try:
            served = self.frames(conn, _Run())
        except Exception as exc:  # one client's failure never stops the server
            logger.exception("split server dropped a client after an unexpected error")
            with self.lock:
                self.rep.rejected.append(f"{type(exc).__name__}: {exc}"[:4000])
        finally:
            conn.close()
            with self.lock:
                self.live.discard(sock)
                self.rep.connections += 1
                self.rep.served += served
                self.rep.dropped += not served
                self.rep.bytes_received += conn.bytes_received
                self.rep.bytes_sent += conn.bytes_sent
                self.write(saved=served)

    def write(self, *, saved: bool) -> None:
        """The report, the record and (after a served run) the shield, atomically;
        called holding the lock."""
        if self.report is not None:
            atomic_write_text(self.report, self.rep.model_dump_json(indent=2))
        if self.record is not None:
            atomic_torch_save(self.observed, self.record)
        if saved and self.save is not None:
            self.shield.save(self.save)

    def frames(self, conn: Connection, run: _Run) -> bool:
        """Answer one connection's frames; True when its run ended with a ``bye``."""
        while True:
            try:
                header, tensors = conn.receive()
                if header.kind == "bye":
                    return run.half is not None
                reply, out = self.answer(header, tensors, run)
                conn.send(reply, out)
            except ShieldSplitError as exc:
                with self.lock:
                    self.rep.rejected.append(f"{type(exc).__name__}: {exc}")
                logger.warning("split server refused a frame: %s", exc)
                with contextlib.suppress(OSError):
                    conn.send(FrameHeader(kind="error",
                                          error=f"{type(exc).__name__}: {exc}"[:4000]))
                if isinstance(exc, WireError) and exc.what == "frame":
                    return False
            except OSError as exc:  # ConnectionError, TimeoutError
                logger.warning("split server dropped a client: %s", exc)
                with self.lock:
                    self.rep.rejected.append(f"{type(exc).__name__}: {exc}"[:4000])
                if isinstance(exc, TimeoutError):  # say why, if it still listens
                    with contextlib.suppress(OSError):
                        conn.send(FrameHeader(kind="error", error=f"TimeoutError: {exc}"))
                return False

    def answer(self, header: FrameHeader, tensors: dict[str, Tensor], run: _Run
               ) -> tuple[FrameHeader, dict[str, Tensor] | None]:
        """One frame's reply, computed holding the lock with the run's own generator."""
        with self.lock, torch.random.fork_rng(devices=[]):
            if run.rng is not None:
                torch.set_rng_state(run.rng)
            try:
                return self._answer(header, tensors, run)
            finally:
                if run.half is not None:
                    run.rng = torch.get_rng_state()

    def _answer(self, header: FrameHeader, tensors: dict[str, Tensor], run: _Run
                ) -> tuple[FrameHeader, dict[str, Tensor] | None]:
        shield = self.shield
        if header.kind == "hello":
            mine = hello_of(shield, header.hello.seed if header.hello else 0)
            if header.hello != mine:
                raise ConfigError.build(
                    what="hello", expected=f"a client of the same shield ({mine})",
                    received=header.hello, fix="build both halves from the same model, "
                    "cut, config and seed")
            torch.manual_seed(mine.seed)
            run.half = shield.server_half()
            return FrameHeader(kind="welcome"), None
        if run.half is None:
            raise StateError.build(what="frame", expected="a hello first",
                                   received=header.kind, fix="start with a hello")
        if header.kind == "message":
            msg = check_message(shield, header, tensors, max_batch=self.max_batch)
            self.observed["activations"].append(msg.activations.clone())
            if msg.labels is not None:
                self.observed["labels"].append(msg.labels.clone())
            shield.train()
            reply = run.half.step(msg)
            self.rep.messages += 1
            return FrameHeader(kind="gradient"), {"grad": reply.grad}
        if header.kind == "end_epoch":
            summary = run.half.end_epoch()
            self.rep.epochs.append(summary)
            return FrameHeader(kind="summary", summary=summary), None
        if header.kind == "predict":
            msg = check_message(shield, header, tensors, max_batch=self.max_batch,
                                labels=False)
            self.observed["activations"].append(msg.activations.clone())
            with eval_mode(shield), torch.no_grad():
                probs = {k: v.softmax(-1) for k, v in shield.server_streams(msg).items()}
                decision = shield.decide(probs)
            self.rep.predictions += msg.batch_size
            scores = torch.stack([probs[s] for s in shield.streams] + [decision], dim=1)
            return FrameHeader(kind="scores"), {"scores": scores.float().contiguous()}
        raise WireError.build(what="header.kind",
                              expected="hello, message, end_epoch, predict or bye",
                              received=header.kind, fix="send a client's frame")


def serve(
    shield: SplitShield,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    connections: int | None = 1,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_batch: int = 4096,
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
    report: str | Path | None = None,
    record: str | Path | None = None,
    save: str | Path | None = None,
    ready: Callable[[int], object] | None = None,
) -> ServerReport:
    """Run the server half of ``shield`` for clients that connect over TCP.

    Each connection is one training run: a ``hello`` (the client's shield must have the
    same cut, configuration, classes and wire layout), then per batch a ``message``
    answered by a ``gradient`` (:class:`~shieldsplit.defenses.pgsl.shield.ServerHalf`
    trains the server's streams), per epoch an ``end_epoch`` answered by a ``summary``,
    optionally ``predict`` frames (activations without labels) answered by ``scores``
    (every stream's and the decision fusion's class probabilities, for the client's
    evaluation), and a ``bye``. A refused frame is answered by an ``error`` frame,
    logged and listed in the report; the connection goes on. After a frame that cannot
    be delimited, no whole frame within ``frame_timeout`` seconds, or an unexpected
    failure, that connection alone is closed: the server goes on.

    Clients are served at once, each in a thread. They train one shield: one lock
    orders every frame's work, so the server's weights see the clients' batches in the
    order their frames arrive, each applied whole (no two steps interleave). Each run
    has its own optimiser (:class:`ServerHalf`), epoch tallies and random generator,
    seeded with the run's seed, so a run's draws do not depend on other clients; its
    losses equal the in-process ``fit`` when it is the only client.

    Args:
        shield: the shield whose server part is trained (in place).
        host: the address to listen on (``127.0.0.1``: this machine only; there is no TLS).
        port: the port; 0 picks a free one (given to ``ready``).
        connections: runs to serve (a welcomed hello ended by a ``bye``) before returning
            (connections still open then are served to their end); None serves until
            the process is stopped. Dropped connections do not count.
        max_message_bytes: the largest payload accepted.
        max_batch: the largest batch accepted.
        frame_timeout: seconds a client has to deliver each whole frame (header and
            payload, counted from the server's wait for it) before it is dropped.
        report: write the :class:`ServerReport` here (JSON, atomically) after every
            connection.
        record: write every received activations and labels tensor here (``torch.save``
            of lists, atomically) after every connection: what the server observed, for
            audits and tests; never sent anywhere.
        save: write the shield here (:meth:`SplitShield.save`, atomically) after every
            served run: its server half is the trained one (its client half keeps the
            initial weights; the client saves its own).
        ready: called with the bound port once the server listens.

    Returns:
        The report.

    Raises:
        ConfigError: bad limits.

    Example:
        A server in a thread here for brevity (a deployment runs it in its own process,
        ``shieldsplit split-serve``), and a client that trains one epoch against it:

        >>> import time
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
        ...                              epochs=1, progress=False, evaluate={"val": data})
        >>> server.join(timeout=30)
        >>> link.frames, sorted(history.epochs[0].train_loss), link.evaluations["val"].examples
        (1, ['attacked', 'fused', 'recovered'], 8)
    """
    max_message_bytes = check_int("max_message_bytes", max_message_bytes, low=1,
                                  fix="pass a positive limit")
    max_batch = check_int("max_batch", max_batch, low=1, fix="pass a positive limit")
    if not (isinstance(frame_timeout, int | float) and 0 < frame_timeout < float("inf")):
        raise ConfigError.build(what="frame_timeout", expected="a positive number of seconds",
                                received=frame_timeout, fix="pass frame_timeout=30")
    if connections is not None:
        connections = check_int("connections", connections, low=1,
                                fix="pass 1 or more, or None to serve until stopped")
    with socket.create_server((host, port)) as listener:
        listener.settimeout(_POLL)
        rep = ServerReport(port=int(listener.getsockname()[1]))
        state = _Server(shield, rep, max_message_bytes=max_message_bytes, max_batch=max_batch,
                        frame_timeout=float(frame_timeout), report=report, record=record,
                        save=save)
        logger.info("split server listening on %s:%d", host, rep.port)
        if ready is not None:
            ready(rep.port)
        threads: list[threading.Thread] = []
        try:
            while connections is None or rep.served < connections:
                try:
                    sock, _ = listener.accept()
                except TimeoutError:
                    continue
                threads = [t for t in threads if t.is_alive()]
                if len(threads) >= MAX_CLIENTS:
                    _turn_away(sock, state)
                    continue
                sock.settimeout(frame_timeout)
                with state.lock:
                    state.live.add(sock)
                thread = threading.Thread(target=state.connection, args=(sock,), daemon=True,
                                          name=f"split-client-{rep.connections}")
                threads.append(thread)
                thread.start()
        except BaseException:  # Ctrl-C: close every open connection, then stop
            with state.lock:
                for sock in state.live:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
            raise
        finally:
            for thread in threads:
                thread.join()
            shield.eval()
    return rep


def _turn_away(sock: socket.socket, state: _Server) -> None:
    conn = Connection(sock, max_message_bytes=state.max_message_bytes,
                      frame_timeout=state.frame_timeout)
    with contextlib.suppress(OSError):
        conn.send(FrameHeader(kind="error", error=f"StateError: the server serves "
                              f"{MAX_CLIENTS} clients at once; try again later"))
    conn.close()
    with state.lock:
        state.rep.connections += 1
        state.rep.dropped += 1
        state.rep.rejected.append("StateError: too many clients at once")
        state.write(saved=False)


__all__ = ["MAX_CLIENTS", "ServerReport", "check_message", "serve"]
