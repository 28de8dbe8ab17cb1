"""SplitShield across OS processes (issue 12, item 4): the server half in a process of
its own on 127.0.0.1, the client half in the test's process, one frame each way per
batch.

- The run across processes gives exactly the in-process ``SplitShield.fit`` history
  (tolerance 0: same seed, same float operations in the same order, one thread each).
- What the server received is never the images, nor turns into them by pixel-shuffling
  any run of its channels (shieldsplit.defenses.pgsl.unshuffle.reshuffle), checked against every
  training image; the detector catches the unshuffled images themselves.
- Malformed and oversized frames are refused with a WireError reply and the server
  serves the next run (issue 25, item 4): a garbage connection does not stop a server
  that serves one run, a client that sends half a header and stops does not keep a
  second client from training and getting its validation and test accuracy, a stalled
  one is dropped after the frame timeout, and both sides save halves that
  ``SplitShield.load`` and ``shieldsplit audit --weights`` read.

The processes are started by ``server_process`` and stopped when its block ends,
however the test ends. Each process test takes about 10-15 s on one core.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shieldsplit._core.io import safe_torch_load
from shieldsplit.data import load_dataset
from shieldsplit.defenses.pgsl.shield import SplitShield
from shieldsplit.defenses.pgsl.unshuffle import reshuffle, unshuffle
from shieldsplit.errors import WireError
from shieldsplit.models import PGSLNet

sp = pytest.importorskip("shieldsplit.adapters.split_process")


def tiny() -> tuple[PGSLNet, torch.Tensor, torch.Tensor]:
    ds = load_dataset("digits", seed=0, limit=96)
    torch.manual_seed(0)
    net = PGSLNet(num_classes=ds.num_classes, image_size=8, width=4, hidden=8)
    return net, ds.x_train, ds.y_train


# ------------------------------------------------------------------ frames (no process)
@given(shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
       dtype=st.sampled_from([torch.float32, torch.int64]))
@settings(max_examples=40, deadline=None)
def test_a_frame_carries_raw_tensors_and_decodes_to_the_same(shape: list[int],
                                                             dtype: torch.dtype) -> None:
    t = (torch.arange(int(torch.tensor(shape).prod())) - 3).to(dtype).reshape(shape)
    frame = sp.encode_frame(sp.FrameHeader(kind="gradient"), {"grad": t})
    header, got = sp.decode_frame(frame)
    assert header.tensors[0].shape == shape and got["grad"].dtype == dtype
    assert torch.equal(got["grad"], t)
    head_len = struct.unpack(">I", frame[4:8])[0]
    assert len(frame) == 16 + head_len + t.numel() * t.element_size()  # raw bytes, no pickle
    assert frame[16:16 + head_len].startswith(b"{")


def test_malformed_frames_raise_a_wire_error() -> None:
    good = sp.encode_frame(sp.FrameHeader(kind="gradient"), {"grad": torch.ones(2)})
    head_len = struct.unpack(">I", good[4:8])[0]
    header = good[16:16 + head_len]
    cases = {
        "frame": b"XXXX" + good[4:],                                      # not our magic
        "header": good[:16] + header.replace(b"float32", b"float16") + bytes(8),  # dtype
        "payload": good[:8] + struct.pack(">Q", 4) + header + bytes(4),   # 4 bytes for 8
    }
    for what, frame in cases.items():
        with pytest.raises(WireError) as err:
            sp.decode_frame(frame)
        assert err.value.what == what
    nan = sp.encode_frame(sp.FrameHeader(kind="gradient"), {"grad": torch.tensor([1.0, 2.0])})
    with pytest.raises(WireError, match="finite"):
        sp.decode_frame(nan.replace(struct.pack("<f", 2.0), struct.pack("<f", float("nan"))))
    with pytest.raises(WireError, match="at most 4 bytes"):
        sp.decode_frame(good, max_message_bytes=4)
    with pytest.raises(WireError):  # an extra field is refused (extra="forbid")
        sp.parse_header(b'{"kind": "bye", "pickle": "x"}')


# ------------------------------------------------------------------ across processes
def leaked(received: list[torch.Tensor], images: torch.Tensor) -> bool:
    """True if a received tensor equals training images, directly or after
    pixel-shuffling any run of its channels back (the inverse of the client's unshuffle)."""
    c, h, w = images.shape[1:]
    flat = images.reshape(len(images), -1)
    for a in received:
        for f in (1, 2, 4):
            k = c * f * f
            if a.dim() != 4 or a.shape[1] < k:
                continue
            for start in range(a.shape[1] - k + 1):
                back = reshuffle(a[:, start:start + k], f)[:, :, :h, :w]
                if back.shape[1:] != images.shape[1:]:
                    continue
                dist = torch.cdist(back.reshape(len(back), -1), flat).min(dim=1).values
                if bool((dist < 1e-4).any()):
                    return True
    return False


@pytest.fixture(scope="module")
def split_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    torch.set_num_threads(1)
    net, x, y = tiny()
    workdir = tmp_path_factory.mktemp("split")
    run = sp.run_local(net, (x, y), cut=2, epochs=2, seed=0, workdir=workdir, record=True)
    net2, x2, y2 = tiny()
    local = SplitShield(net2, cut=2, seed=0).fit((x2, y2), epochs=2, seed=0, progress=False)  # type: ignore[arg-type]
    return {"run": run, "local": local, "x": x, "y": y, "workdir": workdir}


def test_across_processes_the_losses_equal_the_in_process_fit(split_run: dict) -> None:
    run, local = split_run["run"], split_run["local"]
    assert len(run.history.epochs) == 2
    for remote, here in zip(run.history.epochs, local.epochs, strict=True):
        assert remote.train_loss == here.train_loss          # tolerance 0
        assert remote.train_accuracy == here.train_accuracy
        assert remote.stream_weights == here.stream_weights
    assert run.server.messages == run.batches == 2 * 2 and run.server.rejected == []
    # a frame per batch each way, the size of one batch's activations plus a header
    assert 8 * 4 * 4 * 4 * 4 < run.message_bytes_per_batch < 1.5 * 32 * 4 * 4 * 4 * 4 + 2000


def test_the_server_never_receives_the_images(split_run: dict) -> None:
    run, x, y = split_run["run"], split_run["x"], split_run["y"]
    received = safe_torch_load(Path(split_run["workdir"]) / "received.pt")
    assert set(received) == {"activations", "labels"}
    assert len(received["activations"]) == run.batches
    assert all(a.shape[1:] == (4, 4, 4) for a in received["activations"])
    assert not leaked(received["activations"], x)
    # the labels do cross (label sharing, as in-process): every one of them, each epoch
    assert sorted(torch.cat(received["labels"]).tolist()) == sorted(y.tolist() * 2)
    # the detector finds the images when they are there: raw, or unshuffled as PGSL does
    assert leaked([x[:8]], x)
    assert leaked([torch.cat([unshuffle(x[:8], 2), torch.rand(8, 1, 4, 4)], dim=1)], x)


def test_malformed_and_oversized_frames_are_refused_and_the_server_goes_on(
        tmp_path: Path) -> None:
    torch.set_num_threads(1)
    net, x, y = tiny()
    report = tmp_path / "server.json"
    with sp.server_process(net, cut=2, seed=0, connections=2, report=report,
                           max_message_bytes=64 * 1024) as port:
        # 1: not our framing at all: an error frame, then that connection is closed
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")
            conn = sp.Connection(s, max_message_bytes=1 << 20)
            header, _ = conn.receive()
            assert header.kind == "error" and "WireError" in (header.error or "")
            try:
                closed = s.recv(1) == b""
            except ConnectionResetError:  # closed with our unread bytes in its buffer
                closed = True
            assert closed
        # 2: a payload announced far over the limit: refused unread, connection closed
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            head = b'{"kind": "message"}'
            s.sendall(struct.pack(">4sIQ", b"SSPL", len(head), 10**12) + head)
            header, _ = sp.Connection(s, max_message_bytes=1 << 20).receive()
            assert header.kind == "error" and "announced" in (header.error or "")
        # 3: a valid hello, then an oversized and a malformed message on one connection
        shield = SplitShield(net, cut=2, seed=0)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            conn = sp.Connection(s, max_message_bytes=1 << 20)
            conn.send(sp.FrameHeader(kind="hello", hello=sp.hello_of(shield, 0)))
            assert conn.receive()[0].kind == "welcome"
            big = {"activations": torch.zeros(2000, 4, 4, 4), "labels": torch.zeros(2000).long()}
            conn.send(sp.FrameHeader(kind="message", target_size=(8, 8)), big)
            header, _ = conn.receive()
            assert header.kind == "error" and "at most 65536 bytes" in (header.error or "")
            bad = {"activations": torch.zeros(2, 3, 4, 4), "labels": torch.zeros(2).long()}
            conn.send(sp.FrameHeader(kind="message", target_size=(8, 8)), bad)
            header, _ = conn.receive()
            assert header.kind == "error" and "4 channels" in (header.error or "")
            conn.send(sp.FrameHeader(kind="bye"))
        # 4: the server still trains a whole run
        history, remote = sp.train_client(SplitShield(net, cut=2, seed=0), (x, y), port=port,
                                          epochs=1, seed=0, progress=False)
    assert len(history.epochs) == 1 and remote.frames == 2
    rep = sp.ServerReport.model_validate_json(report.read_text())
    # the two undelimitable connections were dropped and not counted as served runs
    assert (rep.connections, rep.served, rep.dropped, rep.messages) == (4, 2, 2, 2)
    assert len(rep.rejected) == 4 and all(r.startswith("WireError") for r in rep.rejected)


def test_a_client_that_stalls_mid_frame_is_dropped_after_the_frame_timeout() -> None:
    import threading

    net, _, _ = tiny()
    # the next client's hello, made before any connection (the server's clock runs per frame)
    hello = sp.encode_frame(sp.FrameHeader(kind="hello",
                                           hello=sp.hello_of(SplitShield(net, cut=2), 0)))
    ports: list[int] = []
    server = threading.Thread(target=sp.serve, args=(SplitShield(net, cut=2),), kwargs={
        "connections": 1, "frame_timeout": 1.0, "ready": ports.append}, daemon=True)
    server.start()
    while not ports:
        server.join(timeout=0.05)
    with socket.create_connection(("127.0.0.1", ports[0]), timeout=30) as s:
        s.sendall(sp.MAGIC + struct.pack(">I", 40))  # half a prefix, then nothing
        header, _ = sp.Connection(s, max_message_bytes=1 << 20).receive()
        assert header.kind == "error" and "TimeoutError" in (header.error or "")
        assert "within 1.0 s (8/16 bytes" in (header.error or "")
        assert s.recv(1) == b""  # and closed
    with socket.create_connection(("127.0.0.1", ports[0]), timeout=30) as s:
        s.sendall(hello)  # the server still answers, and a run ends it (connections=1)
        conn = sp.Connection(s, max_message_bytes=1 << 20)
        assert conn.receive()[0].kind == "welcome"
        conn.send(sp.FrameHeader(kind="bye"))
    server.join(timeout=30)
    assert not server.is_alive()


def test_the_command_line_serves_a_client_past_a_stalled_and_a_garbage_one(
        tmp_path: Path) -> None:
    """split-serve with the default --connections 1: a connection that sends garbage and
    one that sends half a header and stalls (open until the end) do not end the server nor
    keep split-client from training, evaluating and saving; then the server exits."""
    from typer.testing import CliRunner

    from shieldsplit.cli import app
    from shieldsplit.cli.loading import load_weights

    server = subprocess.Popen(
        [sys.executable, "-m", "shieldsplit", "split-serve", "--image-size", "8",
         "--num-classes", "10", "--port", "0", "--frame-timeout", "120",
         "--report", str(tmp_path / "server.json"), "--save", str(tmp_path / "server.pt")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    stalled = None
    try:
        line = server.stdout.readline() if server.stdout else ""
        assert line.startswith("split server listening on 127.0.0.1:"), line
        port = line.rsplit(":", 1)[1].strip()
        stalled = socket.create_connection(("127.0.0.1", int(port)), timeout=30)
        stalled.sendall(sp.MAGIC + struct.pack(">I", 60))  # half a prefix, then nothing
        with socket.create_connection(("127.0.0.1", int(port)), timeout=30) as garbage:
            garbage.sendall(b"GET / HTTP/1.1\r\n\r\n")
            reply, _ = sp.Connection(garbage, max_message_bytes=1 << 20).receive()
            assert reply.kind == "error"
        done = CliRunner().invoke(app, [
            "split-client", "--data", "digits", "--limit", "60", "--epochs", "1", "--port", port,
            "--quiet", "--frame-timeout", "120", "--json", str(tmp_path / "history.json"),
            "--save", str(tmp_path / "client.pt")])
        assert done.exit_code == 0, done.output
        assert "val accuracy" in done.output and "test accuracy" in done.output
        assert "balanced accuracy" in done.output
        # the stalled connection is still open and unanswered: the client was served
        # beside it, not after its timeout
        stalled.setblocking(False)
        with pytest.raises(BlockingIOError):
            stalled.recv(1)
        stalled.close()  # now the server drops it and, one run served, exits
        assert server.wait(timeout=60) == 0
        output = server.stdout.read() if server.stdout else ""
        assert "served 1 run(s), dropped 2 connection(s)" in output, output
    finally:
        if stalled is not None:
            stalled.close()
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    result = json.loads((tmp_path / "history.json").read_text())
    assert len(result["epochs"]) == 1 and result["epochs"][0]["val_accuracy"] is None
    rep = sp.ServerReport.model_validate_json((tmp_path / "server.json").read_text())
    assert rep.messages == 2 and rep.epochs[0].train_loss == result["epochs"][0]["train_loss"]
    assert (rep.served, rep.dropped) == (1, 2) and rep.predictions == 60 + 60
    # both halves load as SplitShield checkpoints (SplitShield.load, audit --weights),
    # each with its own half trained from the same initial weights
    ds = load_dataset("digits", seed=0, limit=60)
    client = load_weights(PGSLNet(num_classes=10, image_size=8), tmp_path / "client.pt")
    server_side = SplitShield.load(tmp_path / "server.pt", PGSLNet(num_classes=10, image_size=8))
    assert isinstance(client, SplitShield)
    mine, theirs = client.state_dict(), server_side.state_dict()
    assert not torch.equal(mine["head.0.weight"], theirs["head.0.weight"])
    assert not torch.equal(mine["fusion.conv.weight"], theirs["fusion.conv.weight"])
    # joined, the pair computes in one process the test accuracy the client reported
    pair = sp.join_halves(tmp_path / "client.pt", tmp_path / "server.pt",
                          PGSLNet(num_classes=10, image_size=8))
    test = result["evaluation"]["test"]
    assert pair.evaluate((ds.x_test, ds.y_test)) == test["accuracy"]
    assert 0.0 <= test["balanced_accuracy"] <= 1.0 and test["examples"] == 60
    # nobody listening: one line, exit code 2
    done = CliRunner().invoke(app, ["split-client", "--data", "digits", "--limit", "60",
                                    "--port", port])
    assert done.exit_code == 2 and "no split server answered" in done.output
