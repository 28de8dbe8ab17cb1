"""The wire protocol of SplitShield across processes: length-prefixed frames over TCP.

A frame is::

    b"SSPL" | header length (u32, big-endian) | payload length (u64) | header | payload

The header is JSON validated by :class:`FrameHeader` (pydantic, ``extra="forbid"``); the
payload is the raw little-endian bytes of the tensors the header lists (name, dtype,
shape). Nothing is pickled. The receiver checks the header's size, the payload's size
against its limit and against the listed tensors, the dtypes, shapes and finiteness, and
refuses anything else with a :class:`~shieldsplit.errors.WireError`.
:class:`Connection` moves frames over a socket; :func:`hello_of` is what identifies a
shield's run. The server and the client are in
:mod:`shieldsplit.adapters.split_server` and :mod:`shieldsplit.adapters.split_client`;
:mod:`shieldsplit.adapters.split_process` runs them.

Example:
    >>> import torch
    >>> frame = encode_frame(FrameHeader(kind="gradient"), {"grad": torch.ones(2, 3)})
    >>> header, tensors = decode_frame(frame)
    >>> header.kind, tuple(tensors["grad"].shape), len(frame)
    ('gradient', (2, 3), 152)
"""

from __future__ import annotations

import contextlib
import math
import socket
import struct
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor

from shieldsplit.errors import WireError
from shieldsplit.wire import EpochSummary

if TYPE_CHECKING:
    from shieldsplit.defenses.pgsl.shield import SplitShield

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

Kind = Literal["hello", "welcome", "message", "gradient", "end_epoch", "summary", "predict",
               "scores", "error", "bye"]
#: The default limit, in seconds, on receiving one frame (header and payload): a peer that
#: sends part of a frame and stops is dropped after this long.
DEFAULT_FRAME_TIMEOUT = 30.0


class TensorSpec(BaseModel):
    """One tensor of a frame's payload, in payload order.

    Attributes:
        name: what it is (``activations``, ``labels``, ``grad``, ``scores``).
        dtype: ``float32`` or ``int64`` (little-endian).
        shape: its shape (at most 8 dimensions).
    """

    model_config = ConfigDict(extra="forbid")

    name: Literal["activations", "labels", "grad", "scores"]
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
    """A whole frame from bytes (what :meth:`Connection.receive` does on a socket).

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
        frame_timeout: seconds one :meth:`receive` may take in all, from its call to the
            frame's last byte (None: no limit); past it :meth:`receive` raises
            ``TimeoutError``, so a peer that sends half a frame and stops, or trickles
            bytes, is given up after this long.
    """

    def __init__(self, sock: socket.socket, *, max_message_bytes: int,
                 frame_timeout: float | None = None) -> None:
        self.sock = sock
        self.max_message_bytes = max_message_bytes
        self.frame_timeout = frame_timeout
        self.bytes_sent = 0
        self.bytes_received = 0
        self._deadline: float | None = None

    def send(self, header: FrameHeader, tensors: Mapping[str, Tensor] | None = None) -> int:
        """Send one frame; returns its size in bytes."""
        frame = encode_frame(header, tensors)
        if self.frame_timeout is not None:
            self.sock.settimeout(self.frame_timeout)
        self.sock.sendall(frame)
        self.bytes_sent += len(frame)
        return len(frame)

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            if self._deadline is not None:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no whole frame within {self.frame_timeout} s "
                                       f"({len(buf)}/{n} bytes of a part)")
                self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(min(n - len(buf), _CHUNK))
            except TimeoutError as exc:
                raise TimeoutError(f"no whole frame within {self.frame_timeout} s "
                                   f"({len(buf)}/{n} bytes of a part)") from exc
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
            TimeoutError: no whole frame within ``frame_timeout`` seconds.
        """
        self._deadline = (None if self.frame_timeout is None
                          else time.monotonic() + self.frame_timeout)
        try:
            return self._receive()
        finally:
            self._deadline = None

    def _receive(self) -> tuple[FrameHeader, dict[str, Tensor]]:
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


def hello_of(shield: SplitShield, seed: int) -> Hello:
    """What identifies a shield's run on the wire.

    Args:
        shield: the shield.
        seed: the run's seed.

    Returns:
        The :class:`Hello` a client sends and a server compares with its own.

    Example:
        >>> from shieldsplit.defenses.pgsl.shield import SplitShield
        >>> from shieldsplit.models import PGSLNet
        >>> net = PGSLNet(num_classes=2, image_size=8, width=4, hidden=8)
        >>> hello_of(SplitShield(net, cut=2), 0).wire_layout
        (4, 4)
    """
    dims, channels = shield.wire_layout
    return Hello(cut=shield.cut, config=shield.config.model_dump(mode="json"),
                 num_classes=shield.num_classes, wire_layout=(dims, channels), seed=seed)


__all__ = [
    "DEFAULT_FRAME_TIMEOUT", "DEFAULT_MAX_MESSAGE_BYTES", "MAGIC", "MAX_HEADER_BYTES",
    "PROTOCOL", "Connection",
    "FrameHeader", "Hello", "Kind", "TensorSpec", "decode_frame", "encode_frame", "hello_of",
    "parse_header", "parse_prefix", "parse_tensors",
]
