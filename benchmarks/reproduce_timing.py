"""Wall time of ``shieldsplit reproduce --budget quick`` against its 15-minute bar.

Runs ``shieldsplit reproduce pgsl`` and ``shieldsplit reproduce latent`` at the quick
budget one after the other (never side by side: two processes of two torch threads each
contend for 2 cores), each with ``--fresh`` into a temporary folder, and times each
command's whole process. The page counts each command's cells from its cell file and
words the verdict and the load from the run.

Usage:
    python benchmarks/reproduce_timing.py --data breastmnist --data-root ../shared/data \\
        --out docs/results

Writes ``reproduce_quick_timing.md`` and ``reproduce_quick_timing.json`` under ``--out``;
``--render`` writes the page again from the JSON without measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pages import add_page_options, command_line, publish, seed_line, seed_of

from shieldsplit._core.provenance import load_note, machine_info

#: The bar of issue 5: ``--budget quick`` finishes in under 15 minutes on 2 cores.
BAR_S = 15 * 60.0
PAPERS = ("pgsl", "latent")


def measure(paper: str, *, data: str, data_root: Path, seed: int) -> dict[str, Any]:
    """Time one fresh quick reproduction in a process of its own."""
    with tempfile.TemporaryDirectory(prefix="reproduce_timing_") as out:
        args = ["reproduce", paper, "--data", data, "--data-root", str(data_root),
                "--budget", "quick", "--seed", str(seed), "--out", out, "--fresh", "--quiet"]
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "shieldsplit.cli", *args],
                              capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        load_after = os.getloadavg()[0]
        if done.returncode != 0:
            raise SystemExit(f"reproduce {paper} failed ({done.returncode}):\n{done.stderr}")
        cells = json.loads((Path(out) / f"reproduce_{paper}_{data}_quick.cells.json")
                           .read_text())["cells"]
    shown = " ".join("<out>" if a == out else a for a in args)
    return {"paper": paper, "command": f"shieldsplit {shown}", "cells": len(cells),
            "seconds": seconds, "load_before": load_before, "load_after": load_after}


def markdown(record: dict[str, Any]) -> str:
    """The page: every interpreting sentence computed from ``record``."""
    rows = record["rows"]
    threads = int(record["machine"]["torch_threads"])
    over = [r["paper"] for r in rows if r["seconds"] > BAR_S]
    verdict = ("Both are under the 15-minute bar." if not over else
               f"**Over the 15-minute bar: {', '.join(over)}.**")
    lines = [
        "# `shieldsplit reproduce --budget quick`: wall time", "",
        "Issue 5 asks that `quick` finishes in under 15 minutes on 2 cores.", "",
        f"Command: `{record['command']}`  ",
        f"Date: {record['date']}; machine: {record['machine']['cpus']} cores, GPU "
        f"{record['machine']['gpu']}, torch {record['machine']['torch']}, {threads} torch "
        "threads per reproduction.  ",
        "Load: 1-minute load average before → after each command: " + "; ".join(
            f"{r['paper']} {r['load_before']:.1f} → {r['load_after']:.1f}" for r in rows)
        + " (worded below).  ",
        seed_line(seed_of(record)),
        f"Data: {record['data']}. Fresh cells (`--fresh`) in a temporary folder, the two "
        "commands one after the other.", "",
        "| command | cells | wall time | load average before → after |",
        "| --- | --- | --- | --- |",
        *[f"| `{r['command']}` | {r['cells']} | {int(r['seconds'] // 60)} min "
          f"{r['seconds'] % 60:.0f} s | {r['load_before']:.1f} → {r['load_after']:.1f} |"
          for r in rows],
        "",
        f"{verdict} At the end of each: "
        + "; ".join(f"{r['paper']}: {load_note(r['load_after'], own=threads)}" for r in rows)
        + ".", "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="breastmnist")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seed", type=int, default=0)
    add_page_options(parser)
    args = parser.parse_args()
    publish(args, "reproduce_quick_timing", measure=lambda: run(args), markdown=markdown)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both quick reproductions, one after the other: the record of the page."""
    rows = [measure(p, data=args.data, data_root=args.data_root, seed=args.seed)
            for p in PAPERS]
    return {
        "command": command_line("benchmarks/reproduce_timing.py", args),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),  # torch_threads: the default each reproduction gets
        "data": f"{args.data} from {args.data_root}", "seed": args.seed, "rows": rows,
    }


if __name__ == "__main__":
    main()
