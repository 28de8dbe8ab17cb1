"""Time per audited model of ``membership_audit`` with 1, 2 and 4 reference models.

One run, side by side: a PGSLNet is trained plainly on the members, then for each
reference-model count (1, 2, 4) the reference-model cache is emptied and
``membership_audit`` runs twice:

- **cold**: the first model of a ``compare`` (its reference models and the overfitted
  control's reference models are trained);
- **warm**: a second model with the same recipe and the same data (what every further
  defence of a ``compare`` sharing the recipe pays; the control's reference models are
  shared by every defence, since the control is always trained plainly).

The counts run in interleaved rounds (``--rounds``); the page gives the median seconds,
split into reference-model training and the rest (the control's training, the queries,
the scores and the bootstrap), and the AUC of each attack so that cost sits beside
what it buys. Sentences interpreting the numbers are computed from this run.

Usage:
    python benchmarks/membership_cost.py [--data breastmnist --data-root ../shared/data]
        [--epochs 10] [--width 16] [--hidden 32] [--rounds 1] [--seed 0] [--out docs/results]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from shieldsplit._core.io import atomic_write_text
from shieldsplit.attacks.membership import clear_reference_cache
from shieldsplit.audit.membership import membership_audit, without_shared
from shieldsplit.data import load_dataset
from shieldsplit.experiments.demo import machine_info
from shieldsplit.models import PGSLNet
from shieldsplit.training import fit_plain

COUNTS = (1, 2, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--control-epochs", type=int, default=30)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ds = load_dataset(args.data, root=args.data_root, seed=args.seed)
    # the held-out splits may repeat training images (BreastMNIST does): drop those
    held_all = (torch.cat([ds.x_val, ds.x_test]), torch.cat([ds.y_val, ds.y_test]))
    held_x, held_y = without_shared(held_all, ds.x_train)
    dropped = len(held_all[0]) - len(held_x)
    n = min(len(ds.x_train) // 2, len(held_x))
    members = (ds.x_train[:n], ds.y_train[:n])
    nonmembers = (held_x[:n], held_y[:n])
    auxiliary = (ds.x_train[n:], ds.y_train[n:])
    size = ds.x_train.shape[-1]

    def target(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        net = PGSLNet(in_channels=ds.x_train.shape[1], num_classes=ds.num_classes,
                      image_size=size, width=args.width, hidden=args.hidden)
        fit_plain(net, torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(*members), batch_size=args.batch_size,
            shuffle=True), epochs=args.epochs, seed=seed, progress=False)
        return net

    start = time.perf_counter()
    first, second = target(args.seed), target(args.seed + 1)
    train_seconds = (time.perf_counter() - start) / 2

    runs: dict[int, dict[str, list[float]]] = {
        k: {"cold": [], "cold_ref": [], "cold_cpu": [], "warm": [], "warm_ref": []}
        for k in COUNTS}
    aucs: dict[int, dict[str, float]] = {}
    for _ in range(args.rounds):
        for k in COUNTS:
            clear_reference_cache()
            attacks = ["loss-threshold", "rmia"] + (["lira"] if k >= 2 else [])
            common: dict[str, Any] = {
                "members": members, "nonmembers": nonmembers, "auxiliary": auxiliary,
                "epochs": args.epochs, "batch_size": args.batch_size, "attacks": attacks,
                "reference_count": k, "control_epochs": args.control_epochs,
                "seed": args.seed}
            cpu = time.process_time()
            cold = membership_audit(first, **common)
            runs[k]["cold_cpu"].append(time.process_time() - cpu)
            warm = membership_audit(second, **common)
            runs[k]["cold"].append(cold.seconds)
            runs[k]["cold_ref"].append(cold.reference_seconds)
            runs[k]["warm"].append(warm.seconds)
            runs[k]["warm_ref"].append(warm.reference_seconds)
            aucs[k] = {r.attack: r.auc for r in cold.results}
            aucs[k]["verdict"] = cold.verdict  # type: ignore[assignment]

    med = {k: {key: statistics.median(v) for key, v in r.items()} for k, r in runs.items()}
    machine = machine_info()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result = {"command": command, "date": date, "machine": machine, "members": n,
              "auxiliary": len(auxiliary[0]), "dropped_duplicates": dropped,
              "target_train_seconds": train_seconds,
              "seconds": {str(k): v for k, v in med.items()},
              "auc": {str(k): v for k, v in aucs.items()}}

    per_ref = (med[4]["cold_ref"] - med[1]["cold_ref"]) / 3
    md = [
        "# Cost of the membership audit per audited model",
        "",
        f"Command: `{command}`  ",
        f"Date: {date}; machine: {machine['cpus']} cores, torch threads "
        f"{machine['torch_threads']}, GPU: {machine['gpu']}, torch {machine['torch']}, "
        f"Python {machine['python']}.  ",
        f"Data: {args.data}, {n} members (training images the target saw), {n} non-members "
        f"(validation + test images; {dropped} dropped as copies of a training image), "
        f"{len(auxiliary[0])} auxiliary images (the rest of the "
        f"training split; each reference model trains on half). Target: PGSLNet width "
        f"{args.width}, hidden {args.hidden}, {args.epochs} epochs of plain training "
        f"({train_seconds:.1f} s). Overfitted control: {args.control_epochs} epochs on the "
        f"members. Median of {args.rounds} round(s).",
        "",
        "| reference models | attacks | cold s | of which reference training | cold CPU s "
        "(this process) | warm s (same recipe, cache hit) | AUC per attack | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for k in COUNTS:
        a = aucs[k]
        names = [x for x in a if x != "verdict"]
        md.append(f"| {k} | {', '.join(names)} | {med[k]['cold']:.1f} | "
                  f"{med[k]['cold_ref']:.1f} | {med[k]['cold_cpu']:.1f} | {med[k]['warm']:.1f} | "
                  + ", ".join(f"{x} {a[x]:.3f}" for x in names) + f" | {a['verdict']} |")
    md += [
        "",
        f"Each reference model adds about {per_ref:.1f} s here (the slope from 1 to 4, "
        "target and control recipes together). A cached audit of a second model with the "
        f"same recipe took {med[2]['warm']:.1f} s at 2 reference models against "
        f"{med[2]['cold']:.1f} s cold ({med[2]['warm'] / max(med[2]['cold'], 1e-9):.0%}).",
    ]
    walls = [med[k]["cold"] for k in COUNTS]
    cpus = [med[k]["cold_cpu"] for k in COUNTS]
    if walls != sorted(walls):
        md.append("Wall times here do not grow with the reference count, so other load on the "
                  "shared cores moved them; the CPU seconds of this process "
                  + ("do grow (" if cpus == sorted(cpus) else "do not either (")
                  + ", ".join(f"{c:.1f}" for c in cpus) + ").")
    md += [
        "",
        "Cold: reference models (target recipe and control recipe) and the overfitted "
        "control are trained; warm: all of them come from the cache. The whole audit of "
        "the target is queries, scores and bootstrap intervals besides that.",
        "",
        "Raw numbers: `membership_cost.json`.",
    ]
    text = "\n".join(md) + "\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "membership_cost.json", json.dumps(result, indent=2))
        atomic_write_text(args.out / "membership_cost.md", text)


if __name__ == "__main__":
    main()
