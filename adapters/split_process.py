"""SplitShield across OS processes: the client half in one, the server half in another.

The client (images, labels, saliency, shuffling, the PGSL client steps) runs
:meth:`SplitShield.fit <shieldsplit.defenses.pgsl.shield.SplitShield.fit>` with a
:class:`RemoteServer`; the server process runs :func:`serve`, which trains the same
shield's server half (:class:`~shieldsplit.defenses.pgsl.shield.ServerHalf`) on what arrives. Per
batch exactly one :class:`~shieldsplit.wire.ClientMessage` (activations, labels,
target size) goes one way and one :class:`~shieldsplit.wire.ServerGradient` comes back;
at the end of an epoch the server sends its tallies (:class:`~shieldsplit.wire.EpochSummary`).

The transport is a TCP connection with length-prefixed frames (docs/federated.md says
why not Flower's deployment engine nor ``torch.distributed``). A frame is::

    b"SSPL" | header length (u32, big-endian) | payload length (u64) | header | payload

The header is JSON validated by :class:`FrameHeader` (pydantic, ``extra="forbid"``); the
payload is the raw little-endian bytes of the tensors the header lists (name, dtype,
shape). Nothing is pickled. The receiver checks the header's size, the payload's size
against its limit and against the listed tensors, the dtypes, shapes and finiteness, and
refuses anything else with a :class:`~shieldsplit.errors.WireError`; the server replies
with an ``error`` frame and keeps serving (after a frame it cannot delimit it closes that
connection and accepts the next one).

Example:
    >>> import torch
    >>> frame = encode_frame(FrameHeader(kind="gradient"), {"grad": torch.ones(2, 3)})
    >>> header, tensors = decode_frame(frame)
    >>> header.kind, tuple(tensors["grad"].shape), len(frame)
    ('gradient', (2, 3), 152)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing as mp
import socket
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from shieldsplit._core.io import atomic_torch_save, atomic_write_text
from shieldsplit._core.validate import check_int, check_seed
from shieldsplit.defenses.pgsl.config import PGSLConfig
from shieldsplit.defenses.pgsl.shield import FitHistory, SplitShield
from shieldsplit.errors import ConfigError, ShieldSplitError, StateError, WireError
from shieldsplit.wire import ClientMessage, EpochSummary, ServerGradient

logger = logging.getLogger(__name__)

PROTOCOL: Final = "shieldsplit.split/1"
MAGIC = b"SSPL"
_PREFIX = struct.Struct(">4sIQ")
#: The largest header a receiver reads (JSON; a few hundred bytes in practice).
MAX_HEADER_BYTES = 64 * 1024
#: The default limit on a frame's payload (the activations and labels of one batch).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "int64": torch.int64}
_CHUNK = 1 << 20
#: An oversized payload up to this many times the limit is read and dropped (the
#: connection goes on); a larger one closes the connection.
_SKIP_LIMIT = 16

Kind = Literal["hello", "welcome", "message", "gradient", "end_epoch", "summary", "error",
               "bye"]


class TensorSpec(BaseModel):
    """One tensor of a frame's payload, in payload order.

    Attributes:
        name: what it is (``activations``, ``labels``, ``grad``).
        dtype: ``float32`` or ``int64`` (little-endian).
        shape: its shape (at most 8 dimensions).
    """

    model_config = ConfigDict(extra="forbid")

    name: Literal["activations", "labels", "grad"]
    dtype: Literal["float32", "int64"]
    shape: list[int] = Field(max_length=8)

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor in the payload."""
        return math.prod(self.shape) * _DTYPES[self.dtype].itemsize


class Hello(BaseModel):
    """What a client says first: which shield and which run.

    Attributes:
        cut: the shield's cut.
        config: the shield's PGSL configuration (JSON).
        num_classes: classes of the wrapped model.
        wire_layout: ``(dims, channels)`` of the activations it will send.
        seed: the run's seed (the server seeds its random generator with it).
    """

    model_config = ConfigDict(extra="forbid")

    cut: int | str
    config: dict[str, Any]
    num_classes: int
    wire_layout: tuple[int, int]
    seed: int


class FrameHeader(BaseModel):
    """A frame's header.

    Attributes:
        protocol: :data:`PROTOCOL`.
        kind: the frame's role.
        tensors: the payload's tensors, in order.
        target_size: a ``message``'s up-sampling target (``ClientMessage.target_size``).
        hello: a ``hello``'s content.
        summary: a ``summary``'s content.
        error: an ``error``'s text.
    """

    model_config = ConfigDict(extra="forbid")

    protocol: Literal["shieldsplit.split/1"] = PROTOCOL
    kind: Kind
    tensors: list[TensorSpec] = Field(default_factory=list, max_length=4)
    target_size: tuple[int, int] | None = None
    hello: Hello | None = None
    summary: EpochSummary | None = None
    error: str | None = Field(default=None, max_length=4000)


# ----------------------------------------------------------------- framing
def encode_frame(header: FrameHeader, tensors: Mapping[str, Tensor] | None = None) -> bytes:
    """One frame: prefix, header and the tensors' raw bytes (no pickle).

    Args:
        header: the header; its ``tensors`` list is filled from ``tensors``.
        tensors: name to tensor (float32 or int64), in payload order.

    Returns:
        The frame's bytes.

    Raises:
        WireError: a tensor of another dtype.

    Example:
        >>> len(encode_frame(FrameHeader(kind="bye")))
        76
    """
    specs, chunks = [], []
    for name, t in (tensors or {}).items():
        dtype = next((k for k, v in _DTYPES.items() if v == t.dtype), None)
        if dtype is None:
            raise WireError.build(what="tensors", expected=f"dtypes {sorted(_DTYPES)}",
                                  received=f"{name}: {t.dtype}", fix="convert the tensor")
        specs.append(TensorSpec(name=name, dtype=dtype, shape=list(t.shape)))
        array = t.detach().cpu().contiguous().numpy()
        chunks.append(array.astype(_np_dtype(dtype), copy=False).tobytes())
    head = header.model_copy(update={"tensors": specs}).model_dump_json(exclude_none=True)
    raw = head.encode()
    payload = b"".join(chunks)
    return _PREFIX.pack(MAGIC, len(raw), len(payload)) + raw + payload


def _np_dtype(name: str) -> str:
    return {"float32": "<f4", "int64": "<i8"}[name]


def parse_prefix(prefix: bytes, *, max_message_bytes: int) -> tuple[int, int, bool]:
    """Read a frame's 16-byte prefix.

    Args:
        prefix: the first 16 bytes of a frame.
        max_message_bytes: the largest payload accepted.

    Returns:
        ``(header length, payload length, oversized)``; an oversized payload can still
        be skipped (its length is known).

    Raises:
        WireError: (``what="frame"``) a prefix that does not delimit a frame: the
            connection cannot be read further.

    Example:
        >>> parse_prefix(encode_frame(FrameHeader(kind="bye"))[:16], max_message_bytes=10)
        (60, 0, False)
    """
    if len(prefix) != _PREFIX.size:
        raise WireError.build(what="frame", expected=f"a {_PREFIX.size}-byte prefix",
                              received=f"{len(prefix)} bytes", fix="send whole frames")
    magic, head_len, payload_len = _PREFIX.unpack(prefix)
    if magic != MAGIC or not 0 < head_len <= MAX_HEADER_BYTES:
        raise WireError.build(
            what="frame", expected=f"magic {MAGIC!r} and a header of 1..{MAX_HEADER_BYTES} bytes",
            received=f"magic {magic!r}, header of {head_len} bytes",
            fix=f"speak {PROTOCOL} (shieldsplit.adapters.split_process)")
    return head_len, payload_len, payload_len > max_message_bytes


def parse_header(raw: bytes) -> FrameHeader:
    """Validate a frame's JSON header.

    Args:
        raw: the header bytes.

    Returns:
        The header.

    Raises:
        WireError: (``what="header"``) not UTF-8 JSON of a :class:`FrameHeader`.

    Example:
        >>> parse_header(b'{"kind": "bye"}').kind
        'bye'
    """
    try:
        return FrameHeader.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise WireError.build(
            what="header", expected=f"a {PROTOCOL} frame header",
            received=f"{first['msg']} at {'.'.join(map(str, first['loc'])) or 'top'}",
            fix="send the headers of shieldsplit.adapters.split_process") from exc


def parse_tensors(header: FrameHeader, payload: bytes) -> dict[str, Tensor]:
    """The payload's tensors, checked against the header.

    Args:
        header: the frame's validated header.
        payload: the frame's payload.

    Returns:
        Name to tensor (new memory; float tensors are checked finite).

    Raises:
        WireError: (``what="payload"``) sizes that do not add up, a repeated name, or
            non-finite floats.

    Example:
        >>> h = parse_header(b'{"kind": "gradient", "tensors": '
        ...                  b'[{"name": "grad", "dtype": "float32", "shape": [2]}]}')
        >>> parse_tensors(h, bytes(8))["grad"]
        tensor([0., 0.])
        >>> parse_tensors(h, bytes(7))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        shieldsplit.errors.WireError: Malformed message: expected a payload of 8 bytes ...
    """
    specs = header.tensors
    need = sum(s.nbytes for s in specs)
    names = [s.name for s in specs]
    if len(payload) != need or len(set(names)) != len(names) or any(
            d < 0 for s in specs for d in s.shape):
        raise WireError.build(
            what="payload", expected=f"a payload of {need} bytes for tensors {names} "
            "(distinct names, non-negative sizes)",
            received=f"{len(payload)} bytes", fix="send the tensors the header lists")
    out: dict[str, Tensor] = {}
    offset = 0
    for s in specs:
        chunk = bytearray(payload[offset:offset + s.nbytes])
        offset += s.nbytes
        t = torch.frombuffer(chunk, dtype=_DTYPES[s.dtype]) if chunk else torch.empty(
            0, dtype=_DTYPES[s.dtype])
        t = t.reshape(s.shape)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise WireError.build(what="payload", expected=f"finite values in {s.name}",
                                  received="NaN or infinity", fix="send finite tensors")
        out[s.name] = t
    return out


def decode_frame(frame: bytes, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
                 ) -> tuple[FrameHeader, dict[str, Tensor]]:
    """A whole frame from bytes (what :func:`read_frame` does on a socket).

    Args:
        frame: the bytes of exactly one frame.
        max_message_bytes: the largest payload accepted.

    Returns:
        The header and the tensors.

    Raises:
        WireError: a frame that breaks the protocol or the limit.
    """
    head_len, payload_len, oversized = parse_prefix(frame[:_PREFIX.size],
                                                    max_message_bytes=max_message_bytes)
    if len(frame) != _PREFIX.size + head_len + payload_len:
        raise WireError.build(what="frame", expected=f"{_PREFIX.size + head_len + payload_len}"
                              " bytes", received=f"{len(frame)} bytes", fix="send whole frames")
    header = parse_header(frame[_PREFIX.size:_PREFIX.size + head_len])
    if oversized:
        raise _oversized(payload_len, max_message_bytes)
    return header, parse_tensors(header, frame[_PREFIX.size + head_len:])


def _oversized(payload_len: int, limit: int) -> WireError:
    return WireError.build(what="payload", expected=f"at most {limit} bytes of payload",
                           received=f"{payload_len} bytes",
                           fix="send smaller batches, or raise max_message_bytes on both sides")


class Connection:
    """A framed TCP connection; counts the bytes it moves.

    Args:
        sock: a connected socket.
        max_message_bytes: the largest payload this side accepts.
    """

    def __init__(self, sock: socket.socket, *, max_message_bytes: int) -> None:
        self.sock = sock
        self.max_message_bytes = max_message_bytes
        self.bytes_sent = 0
        self.bytes_received = 0

    def send(self, header: FrameHeader, tensors: Mapping[str, Tensor] | None = None) -> int:
        """Send one frame; returns its size in bytes."""
        frame = encode_frame(header, tensors)
        self.sock.sendall(frame)
        self.bytes_sent += len(frame)
        return len(frame)

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(min(n - len(buf), _CHUNK))
            if not chunk:
                raise ConnectionError(f"peer closed the connection ({len(buf)}/{n} bytes)")
            buf += chunk
        self.bytes_received += n
        return bytes(buf)

    def _skip(self, n: int) -> None:
        while n > 0:
            n -= len(self._read(min(n, _CHUNK)))

    def receive(self) -> tuple[FrameHeader, dict[str, Tensor]]:
        """Read one frame.

        Returns:
            Its header and tensors.

        Raises:
            WireError: a frame that breaks the protocol or the size limit. With
                ``what="frame"`` the stream is not read further (a bad prefix, or a
                payload over 16 times the limit); otherwise the frame was read whole (an
                oversized payload is skipped without being kept) and the next frame can
                follow.
            ConnectionError: the peer closed the connection.
        """
        head_len, payload_len, oversized = parse_prefix(
            self._read(_PREFIX.size), max_message_bytes=self.max_message_bytes)
        raw = self._read(head_len)
        if oversized:
            if payload_len > _SKIP_LIMIT * self.max_message_bytes:  # not worth reading
                raise WireError.build(
                    what="frame", expected=f"a payload of at most {self.max_message_bytes} "
                    "bytes", received=f"{payload_len} bytes announced",
                    fix="send smaller batches; this connection is closed")
            self._skip(payload_len)
            raise _oversized(payload_len, self.max_message_bytes)
        payload = self._read(payload_len)
        header = parse_header(raw)
        return header, parse_tensors(header, payload)

    def close(self) -> None:
        """Close the socket."""
        with contextlib.suppress(OSError):
            self.sock.close()


# ----------------------------------------------------------------- server
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


def hello_of(shield: SplitShield, seed: int) -> Hello:
    """What identifies a shield's run on the wire.

    Args:
        shield: the shield.
        seed: the run's seed.

    Returns:
        The :class:`Hello` a client sends and a server compares with its own.

    Example:
        >>> from shieldsplit.models import PGSLNet
        >>> net = PGSLNet(num_classes=2, image_size=8, width=4, hidden=8)
        >>> hello_of(SplitShield(net, cut=2), 0).wire_layout
        (4, 4)
    """
    dims, channels = shield.wire_layout
    return Hello(cut=shield.cut, config=shield.config.model_dump(mode="json"),
                 num_classes=shield.num_classes, wire_layout=(dims, channels), seed=seed)


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

        >>> import threading
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


# ----------------------------------------------------------------- client
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
    """Train ``shield``'s client half against a server process (:func:`serve`).

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
        See :func:`serve`, whose example trains one epoch with this function.
    """
    with RemoteServer(shield, host=host, port=port, seed=seed,
                      max_message_bytes=max_message_bytes, timeout=timeout) as remote:
        history = shield.fit(data, epochs=epochs, seed=seed, progress=progress, server=remote)
    return history, remote


# ----------------------------------------------------------------- on one machine
class SplitRun(BaseModel):
    """What :func:`run_local` returns.

    Attributes:
        history: the client's history (the server's per-epoch tallies).
        server: the server process's report.
        batches: message frames sent (one per batch).
        message_bytes_per_batch: mean bytes of a client message frame.
        gradient_bytes_per_batch: mean bytes of a gradient frame.
        seconds: wall time of the training, both processes running.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    history: FitHistory
    server: ServerReport
    batches: int
    message_bytes_per_batch: float
    gradient_bytes_per_batch: float
    seconds: float


def _server_main(queue: Any, model: nn.Module, options: dict[str, Any],
                 serve_options: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    shield = SplitShield(model, **options)
    serve(shield, ready=queue.put, **serve_options)


@contextlib.contextmanager
def server_process(
    model: nn.Module,
    *,
    cut: int | str = 2,
    config: PGSLConfig | Mapping[str, Any] | None = None,
    input_shape: tuple[int, int, int] | None = None,
    seed: int = 0,
    connections: int | None = 1,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    report: str | Path | None = None,
    record: str | Path | None = None,
    start_timeout: float = 120.0,
) -> Iterator[int]:
    """A server process (:func:`serve`) on 127.0.0.1, stopped on exit however the block
    ends; yields its port.

    The child is started with ``multiprocessing``'s *spawn* method and builds its
    shield from a copy of ``model`` (sent over the local pipe by multiprocessing: a
    local mechanism, never a network peer). In a deployment the server builds the model
    from its own files (``shieldsplit split-serve``).

    Args:
        model: the classifier (same weights as the client's).
        cut: the shield's cut.
        config: the shield's PGSL configuration.
        input_shape: as for :class:`SplitShield`.
        seed: the shield's seed (its added layers' initial weights).
        connections: connections to serve before the process ends (None: until stopped).
        max_message_bytes: the server's payload limit.
        report: where the server writes its :class:`ServerReport`.
        record: where it writes what it received (see :func:`serve`).
        start_timeout: seconds to wait for the server to listen.

    Yields:
        The server's port.

    Raises:
        StateError: the server did not start in time.

    Example:
        Starting a process takes seconds, so this one is not run here
        (tests/test_split_process.py runs it):

        >>> with server_process(net, cut=2) as port:  # doctest: +SKIP
        ...     history, link = train_client(SplitShield(net, cut=2), data, port=port)
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    options = {"cut": cut, "config": config, "input_shape": input_shape, "seed": seed}
    serve_options = {"connections": connections, "max_message_bytes": max_message_bytes,
                     "report": report, "record": record}
    proc = ctx.Process(target=_server_main, args=(queue, model, options, serve_options),
                       daemon=True)
    proc.start()
    try:
        deadline = time.monotonic() + start_timeout
        port = None
        while port is None:
            with contextlib.suppress(Exception):
                port = int(queue.get(timeout=0.5))
            if port is None and (not proc.is_alive() or time.monotonic() > deadline):
                raise StateError.build(
                    what="server", expected=f"a server listening within {start_timeout} s",
                    received=f"exit code {proc.exitcode}" if not proc.is_alive() else "no port",
                    fix="read the server's log")
        yield port
        proc.join(timeout=30)
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=10)
        queue.close()


def run_local(
    model: nn.Module,
    data: Any,
    *,
    cut: int | str = 2,
    config: PGSLConfig | Mapping[str, Any] | None = None,
    input_shape: tuple[int, int, int] | None = None,
    epochs: int = 1,
    seed: int = 0,
    progress: bool = False,
    workdir: str | Path,
    record: bool = False,
) -> SplitRun:
    """SplitShield across two processes on this machine: a server process on
    127.0.0.1 and the client in this one (a demonstration and a test of a deployment).

    With the same ``model``, ``cut``, ``config`` and ``seed`` the history equals
    ``SplitShield(model, ...).fit(data, epochs=..., seed=seed)`` in one process, when only
    one side draws from torch's global generator (docs/federated.md). The server starts
    with ``multiprocessing``'s *spawn* method, which imports the calling script again in
    the child: in a script, call this under ``if __name__ == "__main__":``.

    Args:
        model: the classifier (not modified).
        data: labelled images in any form of docs/data.md.
        cut: the shield's cut.
        config: the PGSL configuration.
        input_shape: as for :class:`SplitShield`.
        epochs: passes over the data.
        seed: the shield's and the run's seed.
        progress: show a progress bar.
        workdir: a folder for the server's report (``server.json``) and, with
            ``record``, what it received (``received.pt``).
        record: keep what the server received.

    Returns:
        The run's history, the server's report and the bytes per batch.

    Example:
        Starting a process takes seconds, so this one is not run here
        (tests/test_split_process.py runs it):

        >>> run = run_local(net, (x, y), cut=2, epochs=1, workdir="split")  # doctest: +SKIP
    """
    epochs = check_int("epochs", epochs, low=1, fix="pass epochs=1 or more")
    seed = check_seed(seed)
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    report_path = folder / "server.json"
    record_path = folder / "received.pt" if record else None
    shield = SplitShield(model, cut=cut, config=config, input_shape=input_shape, seed=seed)
    start = time.perf_counter()
    with server_process(model, cut=cut, config=config, input_shape=input_shape, seed=seed,
                        report=report_path, record=record_path) as port:
        history, remote = train_client(shield, data, port=port, epochs=epochs, seed=seed,
                                       progress=progress)
    seconds = time.perf_counter() - start
    if not report_path.exists():
        raise StateError.build(what="server", expected="a report from the server process",
                               received="none", fix="read the server's log")
    server = ServerReport.model_validate(json.loads(report_path.read_text()))
    frames = max(remote.frames, 1)
    return SplitRun(history=history, server=server, batches=remote.frames,
                    message_bytes_per_batch=remote.message_bytes / frames,
                    gradient_bytes_per_batch=remote.gradient_bytes / frames, seconds=seconds)


__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES", "MAGIC", "MAX_HEADER_BYTES", "PROTOCOL", "Connection",
    "FrameHeader", "Hello", "RemoteServer", "ServerReport", "SplitRun", "TensorSpec",
    "check_message", "decode_frame", "encode_frame", "hello_of", "parse_header",
    "parse_prefix", "parse_tensors", "run_local", "serve", "server_process", "train_client",
]
