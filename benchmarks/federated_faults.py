"""Faults of the federated and split deployments, each run with real processes on
127.0.0.1: what happened, what the report said, and whether anything was lost.

One row per fault:

- *killed node*: a Flower run (SuperLink and two SuperNodes, the example app of
  ``examples/flower_app`` submitted with ``flwr run``, 1 round, ``min-clients=1``); SuperNode 1
  is SIGKILLed (its process group) once it pulled its training message.
- *restarted node*: a 3-round DP-SGD Flower run; SuperNode 1 is stopped (SIGTERM) after
  round 1 and started again with the same partition and privacy folder.
- *Ctrl-C*: ``shieldsplit federate`` (Flower simulation, 2 clients, 50 rounds) gets SIGINT
  once a round finished.
- *stalled split client*: ``shieldsplit split-serve`` (``--connections 1``); a connection
  sends half a frame header and stops while a second client, ``shieldsplit split-client``
  in its own process, trains, evaluates and saves; then a stalled connection against a
  short ``--frame-timeout``.
- *malformed frames*: bytes that are not a frame, a payload announced far over the limit,
  a header that is not the protocol's, then ``split-client`` on the same server.

Usage:
    python benchmarks/federated_faults.py --seed 0 --out docs/results

Writes ``federated_faults.md`` and ``federated_faults.json`` under ``--out``; every
sentence that interprets a number is computed from the JSON (``--render`` rewrites the page
from it).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pages import add_page_options, command_line, header, publish

from shieldsplit._core.provenance import other_work_ran
from shieldsplit.adapters import split_process as sp
from shieldsplit.adapters.flower import FederatedResult
from shieldsplit.adapters.flower_local import LocalFederation, signal_group
from shieldsplit.experiments.demo import machine_info

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "examples" / "flower_app"
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
Record = dict[str, Any]


def wait_for(ready: Callable[[], Any], what: str, timeout: float) -> Any:
    """Poll ``ready`` until it returns something true; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (got := ready()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.2)
    return got


# ------------------------------------------------------------------ Flower
def submit(fed: LocalFederation, run_config: str) -> Path:
    """``flwr run`` the example app on ``fed``; where its JSON report will be."""
    return fed.submit(APP, run_config, timeout=180)


def report(out: Path) -> FederatedResult | None:
    return FederatedResult.model_validate_json(out.read_text()) if out.exists() else None


def final(out: Path, timeout: float) -> FederatedResult:
    """The report once the run finished (complete or with an error)."""
    return wait_for(lambda: (r := report(out)) is not None and (
        r.complete or r.error is not None) and r, "final report", timeout)


def killed_node(root: Path, seed: int) -> Record:
    with LocalFederation(root) as fed:
        fed.start_superlink()
        for pid in (0, 1):
            fed.start_supernode(f"supernode{pid}", f"partition-id={pid} num-partitions=2")
        start = time.monotonic()
        out = submit(fed, f"num-server-rounds=1 min-clients=1 round-timeout=45 seed={seed}")
        wait_for(lambda: "Received successfully" in fed.log("supernode1"),
                 "training message at SuperNode 1", 180)
        signal_group(fed.procs[2], signal.SIGKILL)
        killed_at = time.monotonic() - start
        result = final(out, 300)
    first = result.history[0] if result.history else None
    return {"fault": "killed node", "signal": "SIGKILL", "round_timeout_s": 45,
            "killed_after_s": killed_at, "seconds": time.monotonic() - start,
            "complete": result.complete, "error": result.error,
            "rounds_requested": result.rounds, "rounds_recorded": len(result.history),
            "clients": first.clients if first else [], "lost": first.lost if first else [],
            "accuracy": first.accuracy if first else None}


def restarted_node(root: Path, seed: int) -> Record:
    with LocalFederation(root) as fed:
        fed.start_superlink()
        nodes = {pid: f"partition-id={pid} num-partitions=2 privacy-dir='{root / f'site{pid}'}'"
                 for pid in (0, 1)}
        for pid in (0, 1):
            fed.start_supernode(f"supernode{pid}", nodes[pid])
        start = time.monotonic()
        out = submit(fed, f"defense='dpsgd' num-server-rounds=3 round-timeout=120 seed={seed}")
        wait_for(lambda: (r := report(out)) is not None and r.history
                 and r.history[0].accuracy is not None, "round 1", 300)
        signal_group(fed.procs[2], signal.SIGTERM)
        fed.procs[2].wait(timeout=30)
        fed.start_supernode("supernode1-restarted", nodes[1])
        result = final(out, 400)
    mine = sorted((r for r in result.client_rounds if r.client == 1), key=lambda r: r.round)
    ledger = next((root / "site1").iterdir())
    return {"fault": "restarted node", "signal": "SIGTERM, then started again",
            "seconds": time.monotonic() - start, "complete": result.complete,
            "error": result.error, "rounds_requested": result.rounds,
            "rounds_recorded": len(result.history),
            "clients_per_round": [h.clients for h in result.history],
            "lost_per_round": [h.lost for h in result.history],
            "client1_rounds": [r.round for r in mine],
            "client1_epsilons": [r.epsilon for r in mine],
            "client1_accountant_rounds": [r.accountant_rounds for r in mine],
            "ledger_epsilons": json.loads(ledger.read_text())["epsilons"],
            "accounting_gaps": result.accounting_gaps()}


def ctrl_c(root: Path, seed: int) -> Record:
    out = root / "federate.json"
    err = root / "federate.stderr"
    with err.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shieldsplit", "federate", "--data", "digits", "--limit",
             "60", "--clients", "2", "--rounds", "50", "--seed", str(seed), "--json", str(out)],
            cwd=root, env=ENV, stdout=subprocess.DEVNULL, stderr=fh,
            # a Ctrl-C handler even when this script was started with SIGINT ignored (a
            # background job of a shell), which a child would inherit
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    start = time.monotonic()
    try:
        wait_for(lambda: "federated rounds: 1/" in err.read_text(errors="replace"),
                 "a finished round", 300)
        proc.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        with contextlib.suppress(TimeoutError):  # docs/federated.md: Flower's server thread
            wait_for(lambda: proc.poll() is not None, "exit after one Ctrl-C", 60)
        second = proc.poll() is None  # ...waits for the round: a second Ctrl-C ends it
        json_before_second = out.exists()
        if second:
            proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
        exit_s = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    result = report(out)
    return {"fault": "Ctrl-C", "signal": "SIGINT to `shieldsplit federate`",
            "seconds": time.monotonic() - start, "exit_code": code, "exit_after_s": exit_s,
            "second_sigint": second, "json_before_second_sigint": json_before_second,
            "json_written": result is not None,
            "complete": result.complete if result else None,
            "error": result.error if result else None,
            "rounds_requested": result.rounds if result else None,
            "rounds_recorded": len(result.history) if result else 0,
            "rounds_with_accuracy": sum(h.accuracy is not None for h in result.history)
            if result else 0}


# ------------------------------------------------------------------ split learning
@contextlib.contextmanager
def split_server(root: Path, seed: int, *options: str
                 ) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``shieldsplit split-serve`` on a free port; killed however the block ends."""
    server = subprocess.Popen(
        [sys.executable, "-m", "shieldsplit", "split-serve", "--image-size", "8",
         "--num-classes", "10", "--port", "0", "--seed", str(seed),
         "--report", str(root / "server.json"), *options], cwd=root, env=ENV,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        line = server.stdout.readline() if server.stdout else ""
        if not line.startswith("split server listening on"):
            raise RuntimeError(line)
        yield server, int(line.rsplit(":", 1)[1])
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def split_client(root: Path, port: int, seed: int, *options: str
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shieldsplit", "split-client", "--data", "digits", "--limit",
         "60", "--epochs", "1", "--port", str(port), "--seed", str(seed), "--quiet",
         "--frame-timeout", "120",
         "--json", str(root / "client.json"), *options],
        cwd=root, env=ENV, capture_output=True, text=True, timeout=300)


def client_outcome(root: Path, done: subprocess.CompletedProcess[str]) -> Record:
    got = json.loads((root / "client.json").read_text()) if done.returncode == 0 else {}
    evaluation = got.get("evaluation", {})
    return {"client_exit_code": done.returncode,
            "client_epochs": len(got.get("epochs", [])),
            "client_val_accuracy": evaluation.get("val", {}).get("accuracy", {}).get("decision"),
            "client_test_accuracy": evaluation.get("test", {}).get("accuracy", {}).get(
                "decision"),
            "client_test_balanced_accuracy": evaluation.get("test", {}).get(
                "balanced_accuracy"),
            "client_output_tail": (done.stdout + done.stderr)[-600:]}


def stalled_split_client(root: Path, seed: int) -> Record:
    from shieldsplit.defenses.pgsl.shield import SplitShield
    from shieldsplit.models import PGSLNet

    start = time.monotonic()
    with split_server(root, seed, "--frame-timeout", "120", "--save",
                      str(root / "server.pt")) as (server, port):
        stalled = socket.create_connection(("127.0.0.1", port), timeout=30)
        stalled.sendall(sp.MAGIC + struct.pack(">I", 60))  # half a prefix, then nothing
        done = split_client(root, port, seed, "--save", str(root / "client.pt"))
        outcome = client_outcome(root, done)
        stalled.setblocking(False)
        try:
            answered = stalled.recv(1) != b""
            still_open = not answered
        except BlockingIOError:
            answered, still_open = False, True
        stalled.close()
        code = server.wait(timeout=120)
        server_out = server.stdout.read() if server.stdout else ""
    rep = sp.ServerReport.model_validate_json((root / "server.json").read_text())
    loads = {}
    for side in ("client", "server"):
        try:
            SplitShield.load(root / f"{side}.pt", PGSLNet(num_classes=10, image_size=8))
            loads[side] = True
        except Exception:  # recorded: the row says the half did not load
            loads[side] = False
    # a stalled connection alone, against a short frame timeout: dropped with a reason
    with split_server(root, seed, "--frame-timeout", "2", "--connections", "1") as (
            server, port):
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(sp.MAGIC + struct.pack(">I", 60))
            t0 = time.monotonic()
            reply, _ = sp.Connection(s, max_message_bytes=1 << 20).receive()
            dropped_after = time.monotonic() - t0
        hello = sp.hello_of(SplitShield(PGSLNet(num_classes=10, image_size=8), cut=2,
                                        seed=seed), seed)  # built before the clock runs
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            conn = sp.Connection(s, max_message_bytes=1 << 20)  # a run: hello, then bye
            conn.send(sp.FrameHeader(kind="hello", hello=hello))
            welcomed = conn.receive()[0].kind == "welcome"
            conn.send(sp.FrameHeader(kind="bye"))
        short_code = server.wait(timeout=120)
    short_rep = sp.ServerReport.model_validate_json((root / "server.json").read_text())
    return {"fault": "stalled split client", "seconds": time.monotonic() - start,
            "frame_timeout_s": 120, "stalled_still_open_after_client": still_open,
            "stalled_answered_before_client_ended": answered,
            **outcome, "server_exit_code": code,
            "server_said": [ln for ln in server_out.splitlines() if ln.startswith("served")],
            "served": rep.served, "dropped": rep.dropped, "messages": rep.messages,
            "rejected": rep.rejected, "halves_load": loads,
            "short_timeout_s": 2, "short_reply": reply.error, "short_dropped_after_s":
            dropped_after, "short_next_welcomed": welcomed,
            "short_server_exit_code": short_code, "short_served": short_rep.served,
            "short_dropped": short_rep.dropped}


def malformed_frames(root: Path, seed: int) -> Record:
    start = time.monotonic()
    replies: dict[str, str | None] = {}
    with split_server(root, seed, "--frame-timeout", "30") as (server, port):
        head = b'{"kind": "message"}'
        sends = {
            "not a frame (HTTP request)": b"GET / HTTP/1.1\r\n\r\n",
            "payload announced at 10^12 bytes": struct.pack(">4sIQ", b"SSPL", len(head), 10**12)
            + head,
            "header not of the protocol (a pickle field)": struct.pack(
                ">4sIQ", b"SSPL", 31, 0) + b'{"kind": "bye", "pickle": "x"} ',
        }
        for name, data in sends.items():
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(data)
                reply, _ = sp.Connection(s, max_message_bytes=1 << 20).receive()
                replies[name] = reply.error if reply.kind == "error" else reply.kind
        done = split_client(root, port, seed)
        code = server.wait(timeout=120)
    rep = sp.ServerReport.model_validate_json((root / "server.json").read_text())
    return {"fault": "malformed frames", "seconds": time.monotonic() - start,
            "replies": replies, **client_outcome(root, done), "server_exit_code": code,
            "served": rep.served, "dropped": rep.dropped, "connections": rep.connections,
            "messages": rep.messages, "rejected": rep.rejected}


FAULTS: dict[str, Callable[[Path, int], Record]] = {
    "killed node": killed_node, "restarted node": restarted_node, "Ctrl-C": ctrl_c,
    "stalled split client": stalled_split_client, "malformed frames": malformed_frames}


def run(args: argparse.Namespace) -> Record:
    rows = []
    load = list(os.getloadavg())  # at the start: the faults' own processes come and go
    for name in args.faults:
        with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
            print(f"running: {name}", file=sys.stderr)
            try:
                rows.append(FAULTS[name](Path(tmp), args.seed))
            except Exception as exc:  # recorded: the page says the fault run failed
                rows.append({"fault": name, "failed": f"{type(exc).__name__}: {exc}"[:2000]})
            print(json.dumps(rows[-1])[:2000], file=sys.stderr)
    every = args.faults == list(FAULTS)
    return {"command": command_line("benchmarks/federated_faults.py", args,
                                    skip=("faults",) if every else ()),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(), "load_average": load,
            "load_average_end": list(os.getloadavg()), "seed": args.seed, "rows": rows}


# ------------------------------------------------------------------ the page
def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def wording(row: Record) -> tuple[str, str, str]:
    """(what happened, what the report said, nothing lost?) for one row."""
    f = row["fault"]
    if "failed" in row:
        return ("the fault run itself failed: " + row["failed"][:300], "-", "**not measured**")
    if f == "killed node":
        happened = (f"SuperNode 1 SIGKILLed {row['killed_after_s']:.0f} s into the run, "
                    f"mid-round; the round ran with clients {row['clients']} and ended "
                    f"({row['seconds']:.0f} s in all, round timeout "
                    f"{row['round_timeout_s']} s)")
        said = (f"complete={row['complete']}, lost={row['lost']}, accuracy "
                + (f"{row['accuracy']:.3f}" if row["accuracy"] is not None else "none")
                + (f", error={row['error']!r}" if row["error"] else ""))
        ok = (row["rounds_recorded"] == row["rounds_requested"] and row["accuracy"] is not None
              and len(row["lost"]) == 1)
        return happened, said, _yes(ok) + (
            " (the survivor's round kept, the lost node named)" if ok else
            f" ({row['rounds_recorded']} of {row['rounds_requested']} rounds recorded, "
            f"{len(row['lost'])} node(s) named lost)")
    if f == "restarted node":
        eps = row["client1_epsilons"]
        rising = all(a is not None and b is not None and a < b
                     for a, b in itertools.pairwise(eps))
        same = row["ledger_epsilons"] == eps
        happened = (f"SuperNode 1 stopped after round 1 and started again; client 1 trained "
                    f"in rounds {row['client1_rounds']} of {row['rounds_requested']}; "
                    f"clients per round {row['clients_per_round']}")
        said = (f"complete={row['complete']}, client 1's epsilon per round "
                f"{', '.join(f'{e:.3f}' for e in eps if e is not None)}, accountant rounds "
                f"{row['client1_accountant_rounds']}, accounting gaps "
                f"{row['accounting_gaps'] or 'none'}, lost per round {row['lost_per_round']}"
                + (f", error={row['error']!r}" if row["error"] else ""))
        honest = row["complete"] == all(1 in c for c in row["clients_per_round"])
        ok = rising and same and not row["accounting_gaps"] and honest
        return happened, said, (_yes(ok) + " (the epsilon curve "
                                + ("rises round on round" if rising else "does not rise")
                                + ("; the ledger on disk holds the same values"
                                   if same else "; the ledger differs from the report")
                                + ("; complete says whether client 1 missed a round"
                                   if honest else "; complete misstates a missed round") + ")")
    if f == "Ctrl-C":
        happened = ("SIGINT once a round had finished"
                    + ("; still running 60 s later, so a second SIGINT (docs/federated.md: "
                       "Flower's server thread waits for the interrupted round)"
                       if row["second_sigint"] else "")
                    + f"; the process exited with code {row['exit_code']} "
                    f"{row['exit_after_s']:.1f} s after the first")
        said = (f"JSON written: {row['json_written']}"
                + (f" (before the second SIGINT: {row['json_before_second_sigint']})"
                   if row.get("second_sigint") else "")
                + f"; complete={row['complete']}, "
                f"error={row['error']!r}, {row['rounds_recorded']} of "
                f"{row['rounds_requested']} rounds recorded, "
                f"{row['rounds_with_accuracy']} with an accuracy")
        ok = (row["json_written"] and row["complete"] is False and row["rounds_recorded"] >= 1
              and row["rounds_with_accuracy"] == row["rounds_recorded"])
        return happened, said, _yes(ok) + (
            " (every finished round in the report, marked incomplete)" if ok else
            " (the report does not show an interrupted run with its finished rounds)")
    if f == "stalled split client":
        happened = (f"a connection sent half a frame header and stopped; split-client in "
                    f"another process trained {row['client_epochs']} epoch(s), exit code "
                    f"{row['client_exit_code']}, while it was "
                    + ("still open and unanswered" if row["stalled_still_open_after_client"]
                       else "already closed")
                    + f" (frame timeout {row['frame_timeout_s']} s); the server then exited "
                    f"with code {row['server_exit_code']}. With a "
                    f"{row['short_timeout_s']} s frame timeout a stalled connection was "
                    f"dropped after {row['short_dropped_after_s']:.1f} s, and the next "
                    "connection's hello was "
                    + ("welcomed" if row["short_next_welcomed"] else "**not welcomed**"))
        acc = row["client_test_accuracy"]
        said = (f"client: validation accuracy {row['client_val_accuracy']:.3f}, test "
                f"accuracy {acc:.3f}, balanced {row['client_test_balanced_accuracy']:.3f}; "
                if acc is not None else "client: no evaluation; ") + (
                f"server: served {row['served']}, dropped {row['dropped']}, "
                f"{row['messages']} batches; the short-timeout server replied "
                f"{row['short_reply']!r}")
        ok = (row["client_exit_code"] == 0 and row["stalled_still_open_after_client"]
              and row["served"] == 1 and all(row["halves_load"].values())
              and row["short_next_welcomed"] and row["short_served"] == 1)
        return happened, said, _yes(ok) + (
            " (the second client's run whole" if ok else " (not all of: the second "
            "client's run whole, the stalled one open beside it, the next hello welcomed")\
            + f"; saved halves that load with SplitShield.load: {row['halves_load']})"
    if f == "malformed frames":
        replies = "; ".join(f"{k}: {(v or '')[:90]!r}" for k, v in row["replies"].items())
        happened = (f"{len(row['replies'])} bad connections, then split-client (exit code "
                    f"{row['client_exit_code']}, {row['client_epochs']} epoch(s)) on the "
                    f"same server, which exited with code {row['server_exit_code']}")
        said = (f"replies: {replies}; server: {row['connections']} connections, served "
                f"{row['served']}, dropped {row['dropped']}, {len(row['rejected'])} refused")
        ok = (row["client_exit_code"] == 0 and row["served"] == 1
              and row["dropped"] == len(row["replies"])
              and all(v and v.split(":")[0].endswith("Error") for v in row["replies"].values()))
        return happened, said, _yes(ok) + (
            " (each bad connection refused with a typed error, the server went on to serve "
            "the run)" if ok else " (not every bad connection was refused with a typed "
            "error and dropped, or the run after them was not served)")
    return "-", "-", "-"


def markdown(record: Record) -> str:
    top = header(record, seed=record["seed"], own=2)
    start = record["load_average"][0]
    end = record.get("load_average_end", [None])[0]
    top[3] = (f"Load: 1-minute load average {start:.1f} when the run started"
              + (f", {end:.1f} at its end" if end is not None else "")
              + (" (other work shared the cores" if other_work_ran(max(start, end or 0), own=2)
                 else " (no other work") + "; the faults' own processes come and go).  ")
    lines = ["# Faults of the federated and split deployments, measured", "",
             *top, "",
             "Each fault was run once with real processes on 127.0.0.1 (Flower's SuperLink "
             "and SuperNodes, `shieldsplit federate`, `shieldsplit split-serve` and "
             "`split-client`); the report columns quote the JSON reports those processes "
             "wrote (`FederatedResult`, `ServerReport`, the client's `--json`). The Flower "
             "runs use `examples/flower_app` on the digits data; the split runs PGSLNet "
             "(8x8 digits, 60 images per split), cut 2, one epoch.", "",
             "| fault | what happened | what the report said | nothing lost? |",
             "| --- | --- | --- | --- |"]
    for row in record["rows"]:
        happened, said, ok = wording(row)
        cells = [c.replace("|", "\\|").replace("\n", " ") for c in (happened, said, ok)]
        lines.append(f"| {row['fault']} | " + " | ".join(cells) + " |")
    bad = [r["fault"] for r in record["rows"] if not wording(r)[2].startswith("yes")]
    lines += ["", ("Every fault ended with nothing lost by the measures in the last column."
                   if not bad else f"**Not shown to lose nothing: {', '.join(bad)}.**"),
              "", "Timings are wall seconds of one run on a shared machine (see the load "
              "above): they say how long each fault took here, not how long it takes.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", nargs="+", choices=list(FAULTS), default=list(FAULTS))
    parser.add_argument("--seed", type=int, default=0)
    add_page_options(parser)
    args = parser.parse_args()
    publish(args, "federated_faults", measure=lambda: run(args), markdown=markdown)


if __name__ == "__main__":
    main()
