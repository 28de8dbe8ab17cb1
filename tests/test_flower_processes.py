"""shieldsplit on Flower across real processes (issue 12): a run through a SuperLink and
SuperNodes on 127.0.0.1, and the faults (a crashed client, a malformed reply, a SuperNode
terminated or killed mid-round).

The deployment tests submit the Flower App of examples/flower_app with ``flwr run``, as
docs/federated.md says; the processes are stopped (their process groups killed) however
the test ends. Kept apart from test_flower.py so that the two slow files run on
different test workers.
"""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

flower = pytest.importorskip("shieldsplit.adapters.flower", reason="needs shieldsplit[flower]")
from shieldsplit.adapters.flower_local import LocalFederation, signal_group  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "examples" / "flower_app"


# ------------------------------------------------------------------ real processes
@pytest.fixture
def federation(tmp_path: Path) -> Iterator[LocalFederation]:
    """The commands of docs/federated.md: a SuperLink and two SuperNodes, insecure."""
    with LocalFederation(tmp_path) as fed:
        fed.start_superlink()
        for pid in (0, 1):
            fed.start_supernode(f"supernode{pid}", f"partition-id={pid} num-partitions=2")
        yield fed


def _submit(federation: LocalFederation, run_config: str) -> Path:
    """``flwr run`` the example app on the local federation; where its result will be."""
    return federation.submit(APP, run_config, timeout=120)


def _wait_for_result(out: Path, timeout: float = 240) -> Any:
    """The run's result once its last round has an accuracy (or what there is at timeout)."""
    deadline = time.monotonic() + timeout
    result = None
    while time.monotonic() < deadline:
        if out.exists():
            result = flower.FederatedResult.model_validate_json(out.read_text())
            if result.history and result.history[-1].accuracy is not None:
                break
        time.sleep(0.5)
    return result


def test_flwr_run_trains_across_real_superlink_and_supernode_processes(
        federation: LocalFederation) -> None:
    out = _submit(federation, "num-server-rounds=1")
    result = _wait_for_result(out)
    logs = "".join((federation.root / f"{n}.log").read_text(errors="replace")[-2000:]
                   for n in ("superlink", "supernode0", "supernode1"))
    assert result is not None and result.history, logs
    assert result.engine.startswith("flower deployment engine")
    assert result.history[0].clients == [0, 1] and result.history[0].accuracy is not None
    assert json.loads(out.read_text())["client_rounds"][0]["examples"] > 0


# ------------------------------------------------------------------ faults
def test_a_crashed_client_and_a_malformed_reply_do_not_stop_the_run() -> None:
    """Round 1: client 2 replies with arrays of the wrong shape (rejected, typed error);
    round 2: client 1 crashes mid-round (an error reply: lost). Both rounds complete."""
    from flwr.app import Array, ArrayRecord, Context, Message
    from flwr.clientapp import ClientApp
    from flwr.simulation import run_simulation

    from shieldsplit.data import load_dataset
    from shieldsplit.models import SmallConvNet

    ds = load_dataset("digits", seed=0, limit=90)
    torch.manual_seed(0)
    net = SmallConvNet(num_classes=10, image_size=8, width=4)
    spec = flower.ClientSpec(
        model=net, defense="none", options={"cut": 1, "seed": 0},
        shards=flower.make_shards(ds.x_train, ds.y_train, clients=3, partition="iid", seed=0),
        batch_size=16)
    real = flower.client_app(spec)
    faulty = ClientApp()

    @faulty.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(str(context.node_config["partition-id"]))
        rnd = int(str(msg.content["config"]["server-round"]))
        if (pid, rnd) == (1, 2):
            raise RuntimeError("client 1 killed mid-round")
        reply = real(msg, context)
        if (pid, rnd) == (2, 1):
            reply.content["arrays"] = ArrayRecord({"x": Array(np.zeros(10**5, np.float32))})
        return reply

    @faulty.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return real(msg, context)

    result = flower.FederatedResult(defense="none", clients=3, rounds=2, partition="iid",
                                    partition_sizes=[], local_epochs=1, batch_size=16, seed=0)
    errors: list[BaseException] = []
    server = flower.server_app(spec, rounds=2, result=result, errors=errors)
    run_simulation(server_app=server, client_app=faulty, num_supernodes=3,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 1, "include_dashboard": False}})
    assert errors == []
    first, second = result.history
    assert first.clients == [0, 1] and first.lost == []
    assert len(first.rejected) == 1 and first.rejected[0].startswith("client 2: ")
    assert "Invalid configuration" in first.rejected[0]
    assert second.clients == [0, 2] and second.lost == ["client 1"]
    assert first.accuracy is not None and second.accuracy is not None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL],
                         ids=["terminated", "killed"])
def test_a_supernode_stopped_mid_round_is_named_and_the_others_finish_the_round(
        federation: LocalFederation, sig: signal.Signals) -> None:
    """A SuperNode is terminated or killed (SIGKILL, its process group) after it pulled
    its training message (its ClientApp is starting or training): the round completes
    with the other client and names the lost one (by node id: it never replied, so its
    partition is unknown to the server).

    Either way the SuperLink answers for the lost node with an error reply, long before
    the round's timeout of 300 s (the result is awaited for at most 240 s): at once after
    SIGTERM, and after SIGKILL once the node missed its heartbeats (Flower 1.42: "Node
    Unavailable", about 70 s on this machine), as docs/federated.md says."""
    out = _submit(federation, "num-server-rounds=1 min-clients=1 round-timeout=300")
    deadline = time.monotonic() + 120
    while "Received successfully" not in federation.log("supernode1"):
        assert time.monotonic() < deadline, federation.log("supernode1")[-2000:]
        time.sleep(0.2)
    signal_group(federation.procs[2], sig)  # supernode1, mid-round
    result = _wait_for_result(out)
    assert result is not None and result.history
    first = result.history[0]
    assert first.clients == [0] and first.accuracy is not None
    assert len(first.lost) == 1 and first.lost[0].startswith("node "), first.lost
    # an error reply came for it (not the timeout's silence), and for SIGKILL it is
    # the SuperLink's missed-heartbeat reply
    assert len(first.errors) == 1 and first.errors[0].startswith(first.lost[0]), first.errors
    if sig == signal.SIGKILL:
        assert "heartbeat" in first.errors[0], first.errors


def test_a_client_that_never_replies_is_named_as_lost() -> None:
    """What the SuperLink cannot report (a SuperNode killed without a goodbye sends no
    reply at all before the round's timeout) is still named, from the messages sent."""
    from types import SimpleNamespace

    strategy = flower.RecordingStrategy(
        inner=None, result=flower.FederatedResult(
            defense="none", clients=2, rounds=1, partition="iid", partition_sizes=[],
            local_epochs=1, batch_size=16, seed=0))

    def message(**metadata: object) -> Any:  # the metadata Flower's messages carry
        return SimpleNamespace(metadata=SimpleNamespace(**metadata))

    # ids as Flower's grid sets them on sending
    strategy.outgoing[1] = [message(message_id=f"m{node}", dst_node_id=node) for node in (7, 9)]
    reply = message(reply_to_message_id="m7")
    assert strategy.silent(1, [reply]) == ["node 9"]
    assert strategy.silent(1, []) == ["node 7", "node 9"]
    assert strategy.silent(2, []) == []
    strategy.nodes[9] = 1  # a client that replied in an earlier round is named by partition
    assert strategy.silent(1, [reply]) == ["client 1"]


def test_a_restarted_supernode_continues_its_epsilon_from_its_ledger(tmp_path: Path) -> None:
    """Issue 25: client 1's SuperNode is stopped after round 1 of a 3-round DP-SGD run and
    started again with the same partition and privacy folder; the epsilon it reports
    afterwards continues its curve (its privacy ledger outlived the process), the report
    flags no discontinuity, and the run's status is honest about any round it missed."""
    with LocalFederation(tmp_path) as fed:
        fed.start_superlink()
        nodes = {pid: f"partition-id={pid} num-partitions=2 privacy-dir='{tmp_path / f'site{pid}'}'"
                 for pid in (0, 1)}
        for pid in (0, 1):
            fed.start_supernode(f"supernode{pid}", nodes[pid])
        out = _submit(fed, "defense='dpsgd' num-server-rounds=3 round-timeout=120")
        deadline = time.monotonic() + 240
        while True:  # round 1 finished (its report is written after every round)
            assert time.monotonic() < deadline, fed.log("superlink")[-2000:]
            result = (flower.FederatedResult.model_validate_json(out.read_text())
                      if out.exists() else None)
            if result is not None and result.history and result.history[0].accuracy is not None:
                break
            time.sleep(0.2)
        signal_group(fed.procs[2], signal.SIGTERM)  # supernode1 stops...
        fed.procs[2].wait(timeout=30)
        fed.start_supernode("supernode1-restarted", nodes[1])  # ...and starts again
        deadline = time.monotonic() + 300
        while result.error is None and not result.complete:  # the final report
            assert time.monotonic() < deadline, fed.log("supernode1-restarted")[-2000:]
            time.sleep(0.5)
            result = flower.FederatedResult.model_validate_json(out.read_text())
    mine = sorted((r for r in result.client_rounds if r.client == 1), key=lambda r: r.round)
    assert mine[0].round == 1 and mine[-1].round == 3, result.client_rounds
    eps = [r.epsilon or 0.0 for r in mine]
    assert all(a < b for a, b in itertools.pairwise(eps)), eps  # the curve goes on
    assert [r.accountant_rounds for r in mine] == list(range(1, len(mine) + 1))
    assert result.accounting_gaps() == []
    ledger = next((tmp_path / "site1").iterdir())
    assert json.loads(ledger.read_text())["epsilons"] == pytest.approx(eps)
    missed = [h for h in result.history if 1 not in h.clients]
    assert result.complete == (not missed), result.error
    assert all(h.lost for h in missed)  # a round without client 1 names it lost
    assert result.partition_sizes[1] == mine[0].examples > 0
