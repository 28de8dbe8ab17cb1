"""Every federated defence on BreastMNIST through Flower, beside the same defence trained
centrally, with each client's epsilon and the live audit's verdicts per round.

For every defence: :func:`shieldsplit.adapters.flower.simulate` (``--clients`` clients,
``--partition`` label skew, ``--rounds`` rounds of one local epoch, the live audit at
``--audit``), then the *central* reference: the same defence around the same initial
weights, trained with its own ``fit`` on all the clients' training shards pooled, for
``rounds x local epochs`` epochs, evaluated on the same held-out examples. (This is not
``shieldsplit compare``, which also audits every defence offline and takes far longer.)
Every interpretive sentence of the page is computed from the run.

Usage:
    python benchmarks/federated_breastmnist.py [--clients 4] [--partition dirichlet:0.5]
        [--rounds 10] [--defenses none,dpsgd,...] [--limit 0] [--out docs/results]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit._core.io import atomic_write_text
from shieldsplit.adapters import flower as ssfl
from shieldsplit.data import default_data_root, load_dataset
from shieldsplit.experiments.demo import machine_info
from shieldsplit.models import SmallConvNet

DEFENSES = "none,dpsgd,latent-fixed,latent-learned,nopeek,laplace,bido"


def central(net: torch.nn.Module, name: str, options: dict[str, Any],
            shards: dict[int, ssfl.Shard], *, epochs: int, batch_size: int,
            seed: int) -> float:
    """Accuracy of the defence trained on the pooled training shards."""
    x = torch.cat([shards[p][0][0] for p in sorted(shards)])
    y = torch.cat([shards[p][0][1] for p in sorted(shards)])
    ex = torch.cat([shards[p][1][0] for p in sorted(shards)])
    ey = torch.cat([shards[p][1][1] for p in sorted(shards)])
    defense = ssfl.build_defense(net, name, options)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    defense.fit(loader, epochs=epochs, seed=seed, progress=False)
    with torch.no_grad():
        return float((defense.eval()(ex).argmax(-1) == ey).double().mean())


def compare_sentence(fed: float, cen: float, n: int) -> str:
    """Whether the federated and central accuracies differ beyond two standard errors."""
    p = (fed + cen) / 2
    se = math.sqrt(max(p * (1 - p), 1e-12) * 2 / n)
    diff = fed - cen
    if abs(diff) <= 2 * se:
        return (f"inconclusive: the gap ({diff * 100:+.1f} points) is within two standard "
                f"errors ({2 * se * 100:.1f} points on {n} examples)")
    side = "below" if diff < 0 else "above"
    return f"federated is {abs(diff) * 100:.1f} points {side} central (beyond two standard errors)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="breastmnist")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--partition", default="dirichlet:0.5")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--defenses", default=DEFENSES)
    parser.add_argument("--audit", default="quick")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = None if args.data == "digits" else (args.data_root or default_data_root())
    ds = load_dataset(args.data, root=root, seed=args.seed, limit=args.limit or None)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name in args.defenses.split(","):
        torch.manual_seed(args.seed)
        net = SmallConvNet(in_channels=ds.in_channels, num_classes=ds.num_classes,
                           image_size=ds.image_size[0])
        t0 = time.perf_counter()
        result = ssfl.simulate(net, data=ds, defense=name, clients=args.clients,
                               rounds=args.rounds, partition=args.partition,
                               batch_size=args.batch_size, cut=1, audit=args.audit,
                               seed=args.seed, progress=False)
        options: dict[str, Any] = {"cut": 1, "seed": args.seed}
        if name.startswith("latent"):
            options["input_shape"] = tuple(int(v) for v in ds.x_train.shape[1:])
        # the same shards as the simulation: the server's share first, then the partition
        perm = torch.randperm(len(ds.x_train), generator=torch.Generator().manual_seed(args.seed))
        k = max(16, int(0.1 * len(ds.x_train)))
        rest = perm[k:]
        shards = ssfl.make_shards(ds.x_train[rest], ds.y_train[rest], clients=args.clients,
                                  partition=args.partition, seed=args.seed)
        cen = central(net, name, options, shards, epochs=args.rounds,
                      batch_size=args.batch_size, seed=args.seed)
        last = result.history[-1]
        verdicts: dict[str, dict[str, int]] = {}
        for row in result.leakage:
            verdicts.setdefault(row.attack, {}).setdefault(row.verdict, 0)
            verdicts[row.attack][row.verdict] += 1
        ey = torch.cat([shards[p][1][1] for p in sorted(shards)])
        share = float(torch.bincount(ey).max()) / len(ey)
        rows.append({"defense": name, "result": json.loads(result.model_dump_json()),
                     "majority_share": share,
                     # always predicting the majority class: F1 2p/(1+p) on it, 0 elsewhere
                     "majority_macro_f1": (2 * share / (1 + share)) / int(ds.num_classes),
                     "central_accuracy": cen, "federated_accuracy": last.accuracy,
                     "macro_f1": last.macro_f1, "examples": last.examples,
                     "verdicts": verdicts, "seconds": time.perf_counter() - t0})
        print(name, last.accuracy, cen, verdicts, flush=True)
    record = {
        "command": "python benchmarks/federated_breastmnist.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if k not in ("out", "data_root")),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "load_average": list(os.getloadavg()),
        "data": ds.source, "seconds": time.perf_counter() - started, "rows": rows,
    }
    lines = [
        f"# Federated defences on {args.data} through Flower", "",
        f"Command: `{record['command']}`  ", f"Date: {record['date']}  ",
        f"Machine: {record['machine']['cpus']} CPU cores, no GPU (torch "
        f"{record['machine']['torch']}); load average at the end "
        f"{record['load_average'][0]:.1f} (other jobs shared the cores); the run took "
        f"{record['seconds'] / 60:.1f} min.  ",
        f"Data: {ds.source}. {args.clients} clients, partition {args.partition}, "
        f"{args.rounds} rounds of 1 local epoch (batch {args.batch_size}), SmallConvNet cut "
        f"at block 1, seed {args.seed}; 10% of the training split is the server's auxiliary "
        "data for the live audit; accuracy is measured on the clients' held-out 20%.", "",
    ]
    if args.clients != 4 or args.partition != "dirichlet:0.5" or args.rounds != 10:
        lines += ["The issue asks for 4 clients, Dirichlet 0.5 and 10 rounds; this run used "
                  f"{args.clients} clients, {args.partition} and {args.rounds} rounds to fit "
                  "the CPU time available: it does not meet that setting.", ""]
    lines += ["| defence | federated accuracy | macro F1 | central accuracy | federated vs "
              "central | final epsilon per client | live audit verdicts (all rounds) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        eps = ssfl.FederatedResult.model_validate(r["result"]).epsilons()
        eps_text = ", ".join(f"{c}: {v[-1]:.2f}" for c, v in eps.items()) or "-"
        verdict_text = "; ".join(f"{a}: " + ", ".join(f"{n} {v}" for v, n in sorted(c.items()))
                                 for a, c in sorted(r["verdicts"].items())) or "-"
        fed = r["federated_accuracy"] or 0.0
        lines.append(f"| {r['defense']} | {fed:.3f} | {r['macro_f1'] or 0.0:.3f} | "
                     f"{r['central_accuracy']:.3f} | "
                     f"{compare_sentence(fed, r['central_accuracy'], r['examples'])} | "
                     f"{eps_text} | {verdict_text} |")
    stuck = [r["defense"] for r in rows
             if (r["macro_f1"] or 0.0) <= r["majority_macro_f1"] + 1e-9]
    if stuck:
        lines += ["", f"{', '.join(stuck)}: the federated model's macro F1 is no better than "
                  "always predicting the majority class "
                  f"({rows[0]['majority_macro_f1']:.3f}; majority share "
                  f"{rows[0]['majority_share']:.3f}): at this number of rounds it has not "
                  "learned to separate the classes, so its accuracy says nothing about the "
                  "defence."]
    dp = [r for r in rows if r["defense"] == "dpsgd"]
    if dp:
        delta = dp[0]["result"]["delta"]
        lines += ["", f"DP-SGD's epsilons are at delta {delta:g}, each client's own, composed "
                  "over all its rounds by its accountant."]
    lines += ["", "The live audit attacks the updates Flower delivered (label inference on "
              "the last layer, Inverting Gradients on updates of at most 64 images; larger "
              "updates are reported *inconclusive, not attacked*); its control is the same "
              "attack on an undefended client's update (docs/federated.md). The per-round "
              "rows are in the JSON beside this page.", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"federated_{args.data}"
    atomic_write_text(args.out / f"{stem}.json", json.dumps(record, indent=2))
    atomic_write_text(args.out / f"{stem}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
