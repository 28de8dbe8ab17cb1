"""Time per round of a Flower simulation against the same local training in a plain loop.

Both sides run the same work: every round each client rebuilds the defence, loads the
global weights (:func:`shieldsplit.adapters.flower.load_shared`), trains ``--local-epochs``
on its shard with the defence's ``fit`` and the same seed, the weights are averaged by
examples, and every client evaluates the new model on its held-out shard. The plain loop
does it in this process; the Flower side is :func:`~shieldsplit.adapters.flower.simulate`
(ClientApp/ServerApp on the Ray backend, one worker). Measured side by side in one run.
Round 1 of the simulation includes the Ray worker's start (imports); the page gives it
apart and the median of the later rounds. Ray's own start-up before round 1 is the
simulation's total minus the sum of its rounds.

Split learning across processes (issue 12 item 4) is measured per batch, against the same
step in one process, by ``benchmarks/split_wire.py`` (``docs/results/split_wire.md``).

Usage:
    python benchmarks/federated_overhead.py [--data digits] [--clients 2] [--rounds 3]
        [--defense none] [--limit 300] [--out docs/results]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from pages import add_page_options, command_line, publish
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit._core.provenance import load_note
from shieldsplit.adapters import flower as ssfl
from shieldsplit.data import default_data_root, load_dataset
from shieldsplit.experiments.demo import machine_info
from shieldsplit.models import SmallConvNet


def _machine(record: dict[str, Any]) -> str:
    m = record["machine"]
    return f"{m['platform']}, Python {m['python']}, torch {m['torch']}, GPU {m['gpu']}"


def plain_rounds(spec: ssfl.ClientSpec, rounds: int) -> list[float]:
    """The simulation's work in a plain loop; seconds per round."""
    global_state = ssfl.shared_state(spec.build())
    seconds = []
    for rnd in range(1, rounds + 1):
        start = time.perf_counter()
        states, weights = [], []
        for pid in sorted(spec.shards):
            (x, y), _ = spec.shard(pid)
            defense = spec.build()
            ssfl.load_shared(defense, ssfl.to_record(global_state))
            seed = spec.round_seed(rnd, pid)
            loader = DataLoader(TensorDataset(x, y), batch_size=spec.batch_size, shuffle=True,
                                generator=torch.Generator().manual_seed(seed))
            defense.fit(loader, epochs=spec.local_epochs, seed=seed, progress=False)
            states.append(ssfl.shared_state(defense))
            weights.append(len(x))
        total = float(sum(weights))
        global_state = {k: sum(s[k] * (w / total) for s, w in zip(states, weights, strict=True))
                        for k in global_state}
        for pid in sorted(spec.shards):
            _, (x, y) = spec.shard(pid)
            defense = spec.build()
            ssfl.load_shared(defense, ssfl.to_record(global_state))
            with torch.no_grad():
                defense.eval()(x).argmax(-1)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--defense", default="none")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    add_page_options(parser)
    args = parser.parse_args()
    publish(args, "federated_overhead", measure=lambda: run(args), markdown=markdown)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The plain loop, then the Flower simulation: the record of the page."""
    torch.set_num_threads(1)
    ds = load_dataset(args.data, root=None if args.data == "digits" else
                      (args.data_root or default_data_root()), seed=args.seed, limit=args.limit)
    torch.manual_seed(args.seed)
    net = SmallConvNet(in_channels=ds.in_channels, num_classes=ds.num_classes,
                       image_size=ds.image_size[0])
    options: dict[str, Any] = {"cut": 1, "seed": args.seed}
    spec = ssfl.ClientSpec(
        model=net, defense=args.defense, options=options,
        shards=ssfl.make_shards(ds.x_train, ds.y_train, clients=args.clients,
                                partition="iid", seed=args.seed),
        batch_size=args.batch_size, seed=args.seed)
    plain = plain_rounds(spec, args.rounds)
    start = time.perf_counter()
    result = ssfl.simulate(net, data=(ds.x_train, ds.y_train), defense=args.defense,
                           clients=args.clients, rounds=args.rounds, partition="iid",
                           batch_size=args.batch_size, cut=1, seed=args.seed, progress=False)
    total = time.perf_counter() - start
    flwr = [h.seconds for h in result.history]
    ratio = later_median(flwr) / later_median(plain)
    startup = total - sum(flwr)
    return {
        "command": command_line("benchmarks/federated_overhead.py", args),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()), "flwr": result.flwr_version,
        "data": ds.source, "clients": args.clients, "rounds": args.rounds,
        "defense": args.defense, "plain_round_s": plain, "flower_round_s": flwr,
        "flower_total_s": total, "ray_startup_s": startup, "ratio_later_rounds": ratio,
        "batch_size": args.batch_size,
    }


def later_median(rounds: list[float]) -> float:
    """The median of rounds 2 onwards (round 1 also starts Ray), or round 1 alone."""
    return statistics.median(rounds[1:] or rounds)


def markdown(record: dict[str, Any]) -> str:
    """The page: every interpreting sentence computed from ``record``."""
    plain, flwr, ratio = record["plain_round_s"], record["flower_round_s"], \
        record["ratio_later_rounds"]
    later_plain, later_flwr = later_median(plain), later_median(flwr)
    # records written before batch_size was kept name it only in their command
    batch = record.get("batch_size") or record["command"].split("--batch-size ")[1].split()[0]
    verdict = ("a Flower round costs about as much as the plain loop's" if ratio < 1.25 else
               f"a Flower round costs {ratio:.1f} times the plain loop's")
    return "\n".join([
        "# Federated overhead: a Flower simulation round against a plain loop", "",
        f"Command: `{record['command']}`  ", f"Date: {record['date']}  ",
        f"Machine: {_machine(record)} ({record['cpu_count']} cores; "
        f"{load_note(record['load_average'][0], own=min(record['clients'], record['cpu_count']))}"
        ": Ray runs one client per core)  ",
        f"Data: {record['data']}; {record['clients']} clients (IID), defence "
        f"`{record['defense']}`, SmallConvNet, batch {batch}, 1 local epoch; flwr "
        f"{record['flwr']}.",
        "", "| round | plain loop (s) | Flower simulation (s) |", "| --- | --- | --- |",
        *[f"| {i + 1} | {p:.2f} | {f:.2f} |" for i, (p, f) in enumerate(zip(plain, flwr,
                                                                            strict=True))],
        "", f"Ray's start-up before round 1: {record['ray_startup_s']:.1f} s; the whole "
        f"simulation: {record['flower_total_s']:.1f} s.", "",
        f"Median of rounds 2 to {record['rounds']}: plain {later_plain:.2f} s, Flower "
        f"{later_flwr:.2f} s: {verdict} (ratio {ratio:.2f}). Round 1 of the simulation also "
        "starts the Ray worker and imports torch and shieldsplit in it.", "",
        "Split learning across processes (client and server of SplitShield in two processes) "
        "is measured per batch, against the same step in one process, in split_wire.md "
        "(benchmarks/split_wire.py).", ""])


if __name__ == "__main__":
    main()
