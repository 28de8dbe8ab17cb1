"""Bytes on the wire and time per batch of split learning across two processes.

SplitShield (default PGSL config) and a plain split (same network, same cut, every PGSL
step off: ``PGSLConfig.off()``) each train one epoch twice per repeat: in one process
(``SplitShield.fit``) and across two processes on 127.0.0.1
(``shieldsplit.adapters.split_process.run_local``: a server process, the client here).
The variants run interleaved, ``--repeats`` times; the page gives medians. Time per batch
is the client's epoch wall time divided by its batches (the server process's start-up is
not in it). Bytes per batch are whole frames (prefix, JSON header, raw tensors), client to
server and back; the payload column is the activations and labels alone.

Usage:
    python benchmarks/split_wire.py --data breastmnist --data-root ../shared/data \\
        --limit 192 --batch-size 32 --repeats 3 --out docs/results

Writes ``split_wire.md`` and ``split_wire.json`` under ``--out``; every sentence that
interprets a number is computed here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from pages import add_page_options, command_line, publish
from spread import SpreadCheck, check_spread
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit._core.provenance import load_note
from shieldsplit.adapters import split_process as sp
from shieldsplit.data import default_data_root, load_dataset
from shieldsplit.defenses.pgsl.config import PGSLConfig
from shieldsplit.defenses.pgsl.shield import SplitShield
from shieldsplit.experiments.demo import machine_info
from shieldsplit.models import PGSLNet

VARIANTS = {"pgsl": "SplitShield (default PGSL config)",
            "plain": "plain split (same cut, every PGSL step off)"}


def config_of(name: str) -> PGSLConfig:
    return PGSLConfig() if name == "pgsl" else PGSLConfig.off()


def measure(name: str, net: PGSLNet, loader: DataLoader, seed: int) -> dict[str, Any]:
    """One in-process epoch and one epoch across processes of a variant."""
    cfg = config_of(name)
    local = SplitShield(net, cut=2, config=cfg, seed=seed).fit(loader, epochs=1, seed=seed,
                                                              progress=False)
    batches = len(loader)
    with tempfile.TemporaryDirectory() as tmp:
        run = sp.run_local(net, loader, cut=2, config=cfg, epochs=1, seed=seed, workdir=tmp)
    same = run.history.epochs[0].train_loss == local.epochs[0].train_loss
    shield = SplitShield(net, cut=2, config=cfg, seed=seed)
    x, y = next(iter(loader))
    payload = shield.client(x, y).nbytes + y.numel() * 8
    return {
        "in_process_s_per_batch": local.epochs[0].seconds / batches,
        "across_s_per_batch": run.history.epochs[0].seconds / batches,
        "message_bytes_per_batch": run.message_bytes_per_batch,
        "gradient_bytes_per_batch": run.gradient_bytes_per_batch,
        "payload_bytes_first_batch": payload,
        "batches": run.batches,
        "server_start_and_total_s": run.seconds,
        "same_losses": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="breastmnist")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    add_page_options(parser)
    args = parser.parse_args()
    publish(args, "split_wire", measure=lambda: run(args), markdown=markdown)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every variant, ``--repeats`` times interleaved: the record of the page."""
    torch.set_num_threads(1)
    ds = load_dataset(args.data, root=None if args.data == "digits" else
                      (args.data_root or default_data_root()), seed=args.seed, limit=args.limit)
    torch.manual_seed(args.seed)
    net = PGSLNet(num_classes=ds.num_classes, image_size=ds.image_size[0])
    # a generator of its own: the loader's per-epoch base seed is not drawn from torch's
    # global generator, whose draws the in-process server's dropout shares
    loader = DataLoader(TensorDataset(ds.x_train, ds.y_train), batch_size=args.batch_size,
                        shuffle=False, generator=torch.Generator().manual_seed(args.seed))
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in VARIANTS}
    for r in range(args.repeats):
        for name in VARIANTS:
            rows[name].append(measure(name, net, loader, args.seed))
            print(f"repeat {r + 1} {name}: {rows[name][-1]}", file=sys.stderr)
    med = {name: {k: statistics.median(float(m[k]) for m in ms)
                  for k in ms[0] if k != "same_losses"} for name, ms in rows.items()}
    times = {f"{n} {where}": [m[f"{where}_s_per_batch"] for m in rows[n]]
             for n in VARIANTS for where in ("in_process", "across")}
    check = check_spread(times)
    return {
        "command": command_line("benchmarks/split_wire.py", args),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()), "data": ds.source,
        "image_shape": list(ds.x_train.shape[1:]), "batch_size": args.batch_size,
        "batches_per_epoch": len(loader), "repeats": rows, "median": med,
        "round_spread": check.spreads, "spread_limit": check.limit,
        "reliable": check.reliable,
        "same_losses_everywhere": all(m["same_losses"] for ms in rows.values() for m in ms),
    }


def _machine(record: dict[str, Any]) -> str:
    m = record["machine"]
    return (f"{m['platform']}, Python {m['python']}, torch {m['torch']}, "
            f"{record['cpu_count']} cores ({m['torch_threads']} torch thread per process)")


def markdown(record: dict[str, Any]) -> str:
    """The page: every interpreting sentence computed from ``record``."""
    warning = SpreadCheck(spreads=record["round_spread"],
                          limit=record["spread_limit"]).warning()
    med = record["median"]
    p, q = med["pgsl"], med["plain"]
    lines = [
        "# Split learning across processes: bytes on the wire and time per batch", "",
        f"Command: `{record['command']}`  ", f"Date: {record['date']}  ",
        f"Machine: {_machine(record)}; "
        f"{load_note(record['load_average'][0], own=2)} (client and server)  ",
        f"Data: {record['data']}; images {record['image_shape']}, batch "
        f"{record['batch_size']}, {record['batches_per_epoch']} batches per epoch, the same "
        "batches for every variant.  ",
        "Setup: PGSLNet (7 conv 3x3/64 + 2 FC), cut=2; the server in a process of its own on "
        "127.0.0.1 (TCP, `shieldsplit.adapters.split_process`), the client in the benchmark's "
        f"process; {len(record['repeats']['pgsl'])} interleaved repeats, medians.", "",
        "| | client → server per batch (bytes) | server → client per batch (bytes) | "
        "payload: activations + labels (bytes) | in one process (s/batch) | "
        "across processes (s/batch) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, label in VARIANTS.items():
        m = med[name]
        lines.append(
            f"| {label} | {m['message_bytes_per_batch']:,.0f} | "
            f"{m['gradient_bytes_per_batch']:,.0f} | {m['payload_bytes_first_batch']:,.0f} | "
            f"{m['in_process_s_per_batch']:.3f} | {m['across_s_per_batch']:.3f} |")
    ratio_bytes = p["message_bytes_per_batch"] / q["message_bytes_per_batch"]
    over_p = p["across_s_per_batch"] / p["in_process_s_per_batch"]
    over_q = q["across_s_per_batch"] / q["in_process_s_per_batch"]
    why = (": its client runs on the pixel-unshuffled images (half the resolution, 4C+1 "
           "channels), so its activations at the same cut are smaller"
           if ratio_bytes < 1 and p["payload_bytes_first_batch"] < q["payload_bytes_first_batch"]
           else "")
    lines += [
        "",
        f"SplitShield sends {ratio_bytes:.2f} times the bytes of the plain split per batch"
        f"{why}.",
        f"Across processes a batch takes {over_p:.2f} times its in-process time for "
        f"SplitShield and {over_q:.2f} times for the plain split"
        + (" (the wire, the frames' encoding and checks, and two processes sharing the "
           "cores)." if record["reliable"] and min(over_p, over_q) > 1 else
           ": the repeats' spread is too large to tell these ratios from 1 "
           "(inconclusive)." if not record["reliable"] else "."),
        ("Every run across processes gave exactly the in-process losses (same seed)."
         if record["same_losses_everywhere"] else
         "**Some run across processes did not give the in-process losses.**"),
    ]
    if warning:
        lines += ["", f"**{warning}**"]
    spreads = ", ".join(f"{k} {v:.0%}" for k, v in record["round_spread"].items())
    lines += ["", f"Spread of the repeats ((max - min) / median): {spreads}; above "
              f"{record['spread_limit']:.0%} the times are declared unreliable.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
