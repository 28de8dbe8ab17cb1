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
with an ``error`` frame and keeps serving (after a frame it cannot delimit, or none whole
within the frame timeout, it closes that connection alone: every client has a thread of
its own, so one that stalls does not hold the others).

The modules: :mod:`~shieldsplit.adapters.split_wire` (frames, :class:`Connection`, the
hello), :mod:`~shieldsplit.adapters.split_server` (:func:`serve`),
:mod:`~shieldsplit.adapters.split_client` (:class:`RemoteServer`, :func:`train_client`)
and this one (:func:`server_process`, :func:`run_local`: both halves on one machine),
which re-exports them all.

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
import multiprocessing as mp
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from shieldsplit._core.validate import check_int, check_seed
from shieldsplit.adapters.split_client import Evaluation, RemoteServer, train_client
from shieldsplit.adapters.split_server import MAX_CLIENTS, ServerReport, check_message, serve
from shieldsplit.adapters.split_wire import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_MAX_MESSAGE_BYTES,
    MAGIC,
    MAX_HEADER_BYTES,
    PROTOCOL,
    Connection,
    FrameHeader,
    Hello,
    Kind,
    TensorSpec,
    decode_frame,
    encode_frame,
    hello_of,
    parse_header,
    parse_prefix,
    parse_tensors,
)
from shieldsplit.defenses.pgsl.config import PGSLConfig
from shieldsplit.defenses.pgsl.shield import FitHistory, SplitShield
from shieldsplit.errors import StateError


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
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
    report: str | Path | None = None,
    record: str | Path | None = None,
    save: str | Path | None = None,
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
        connections: runs to serve before the process ends (None: until stopped;
            dropped connections do not count, see :func:`serve`).
        max_message_bytes: the server's payload limit.
        frame_timeout: seconds a client has for each whole frame before it is dropped.
        report: where the server writes its :class:`ServerReport`.
        record: where it writes what it received (see :func:`serve`).
        save: where it saves its shield after every served run (see :func:`serve`).
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
                     "frame_timeout": frame_timeout, "report": report, "record": record,
                     "save": save}
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


def join_halves(client: str | Path, server: str | Path, model: nn.Module) -> SplitShield:
    """The pair trained across processes, in one shield: the client half of the client's
    ``--save`` file and the server half of the server's (both :meth:`SplitShield.save`
    files of the same shield; each side trains only its own half). For an audit or an
    evaluation by someone entitled to both halves.

    Args:
        client: the client's file.
        server: the server's file.
        model: an instance of the wrapped architecture (as for :meth:`SplitShield.load`).

    Returns:
        A shield with the client's client half and the server's server half.

    Raises:
        StateError: the files are not of the same shield (cut or configuration).
        DataFileError: a file is missing or not a SplitShield checkpoint.

    Example:
        >>> import tempfile
        >>> from shieldsplit.models import PGSLNet
        >>> net = PGSLNet(num_classes=2, image_size=8, width=4, hidden=8)
        >>> folder = Path(tempfile.mkdtemp())
        >>> a, b = SplitShield(net, cut=2, seed=1), SplitShield(net, cut=2, seed=2)
        >>> a.save(folder / "client.pt"); b.save(folder / "server.pt")
        >>> both = join_halves(folder / "client.pt", folder / "server.pt", net)
        >>> got, ca, sb = both.state_dict(), a.state_dict(), b.state_dict()
        >>> torch.equal(got["head.0.weight"], ca["head.0.weight"])
        True
        >>> torch.equal(got["fusion.conv.weight"], sb["fusion.conv.weight"])
        True
    """
    mine = SplitShield.load(client, model)
    theirs = SplitShield.load(server, model)
    if mine.cut != theirs.cut or mine.config != theirs.config:
        raise StateError.build(
            what="halves", expected="two saves of the same shield (cut and configuration)",
            received=f"cut {mine.cut} / {theirs.cut}", fix="pass the files of one run")
    client_ids = {id(p) for p in mine.client_parameters()}
    owners = {name.split(".")[0] for name, p in mine.named_parameters() if id(p) in client_ids}
    state = {k: v for k, v in theirs.state_dict().items() if k.split(".")[0] not in owners}
    mine.load_state_dict(state, strict=False)
    return mine


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
    "DEFAULT_FRAME_TIMEOUT", "DEFAULT_MAX_MESSAGE_BYTES", "MAGIC", "MAX_CLIENTS",
    "MAX_HEADER_BYTES", "PROTOCOL", "Connection", "Evaluation", "FrameHeader", "Hello", "Kind",
    "RemoteServer", "ServerReport", "SplitRun", "TensorSpec",
    "check_message", "decode_frame", "encode_frame", "hello_of", "join_halves", "parse_header",
    "parse_prefix", "parse_tensors", "run_local", "serve", "server_process", "train_client",
]
