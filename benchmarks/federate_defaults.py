"""Choose ``shieldsplit federate``'s defaults (model, local epochs, rounds) on the
validation split, on digits and on BreastMNIST.

For every candidate of :data:`CANDIDATES`, the undefended federated model is trained with
``federate``'s other defaults (4 clients, IID, batch 32, cut 2, seed 0, no audit) through
:func:`shieldsplit.adapters.flower.simulate`, and the final global model is scored on the
data set's **validation** split (``ds.x_val``): accuracy, balanced accuracy, macro F1 and
the majority class's rate. The rule: the highest balanced accuracy averaged over the two
data sets among the candidates whose validation macro F1 beats the majority class's on
both (ties: the faster). The test split is never read. Writes
``docs/results/federate_defaults.json``.

The learning rate is not a candidate: ``federate`` trains every defence with its own
optimiser (Adam at lr 0.001 for all but DP-SGD's private Adam, whose ``lr`` is also
0.001), and no ``--lr`` option exists to set it.

Usage:
    python benchmarks/federate_defaults.py [--data-root ../shared/data] [--out docs/results]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from shieldsplit._core.io import atomic_write_text
from shieldsplit.adapters import flower as ssfl
from shieldsplit.cli.loading import build_model
from shieldsplit.data import default_data_root, load_dataset
from shieldsplit.experiments.demo import machine_info

#: (model, local epochs, rounds); the first is ``federate``'s defaults before issue 25
CANDIDATES: list[tuple[str, int, int]] = [
    ("small-convnet", 1, 5), ("small-convnet", 3, 5), ("small-convnet-tanh", 1, 5),
    ("small-convnet-tanh", 2, 5), ("small-convnet-tanh", 3, 5), ("small-convnet-tanh", 3, 10),
]
DATASETS = ("digits", "breastmnist")


def score(ds: Any, model: str, local_epochs: int, rounds: int, seed: int,
          defense: str = "none", lr: float | None = None) -> dict[str, Any]:
    """Train one candidate federated (``federate``'s other defaults) and score it on the
    validation split."""
    torch.manual_seed(seed)  # as federate: the model's initial weights from the seed
    net = build_model(model, in_channels=ds.in_channels, num_classes=ds.num_classes,
                      image_size=ds.image_size[0])
    t0 = time.perf_counter()
    result = ssfl.simulate(net, data=ds, defense=defense, clients=4, rounds=rounds,
                           partition="iid", local_epochs=local_epochs, batch_size=32, cut=2,
                           seed=seed, progress=False, validation=(ds.x_val, ds.y_val),
                           defense_options=None if lr is None else {"lr": lr})
    share = result.validation_majority or 0.0
    return {"model": model, "local_epochs": local_epochs, "rounds": rounds,
            "defense": defense, "lr": lr, "complete": result.complete,
            "val_accuracy": result.validation_accuracy,
            "val_balanced_accuracy": result.validation_balanced_accuracy,
            "val_macro_f1": result.validation_macro_f1, "val_majority": share,
            # always predicting the majority class: F1 2p/(1+p) on it, 0 elsewhere
            "val_majority_macro_f1": (2 * share / (1 + share)) / int(ds.num_classes),
            "val_examples": result.validation_examples,
            "seconds": time.perf_counter() - t0}


def beats(row: dict[str, Any]) -> bool:
    """Whether the validation macro F1 beats always predicting the majority class."""
    return (row["val_macro_f1"] or 0.0) > row["val_majority_macro_f1"] + 1e-9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dpsgd-lr", action="store_true",
                        help="only the second stage: DP-SGD's learning rate at the chosen "
                        "setting (reads and extends the JSON)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = args.data_root or default_data_root()
    data = {name: load_dataset(name, root=None if name == "digits" else root, seed=args.seed)
            for name in DATASETS}
    if args.one:  # one DP-SGD run at the chosen setting, as a JSON line on stdout
        name, lr = args.one.split(",")
        chosen = json.loads((args.out / "federate_defaults.json").read_text())["chosen"]
        row = score(data[name], chosen["model"], chosen["local_epochs"], chosen["rounds"],
                    args.seed, defense="dpsgd", lr=float(lr))
        print(json.dumps({"data": name, **row}))
        return
    if args.dpsgd_lr:
        dpsgd_lr(data, args)
        return
    tried: list[dict[str, Any]] = []
    path = args.out / "federate_defaults.json"
    record: dict[str, Any] = {
        "rule": "highest validation balanced accuracy averaged over digits and BreastMNIST "
                "among the candidates whose validation macro F1 beats the majority class's "
                "on both (ties: the faster)",
        "fixed": "4 clients, iid, batch 32, cut 2, seed 0, defence none, no audit; "
                 "optimiser: each defence's own (Adam, lr 0.001)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "tried": tried, "data": {
            n: ds.source for n, ds in data.items()}}
    for model, epochs, rounds in CANDIDATES:
        for name, ds in data.items():
            tried.append({"data": name, **score(ds, model, epochs, rounds, args.seed)})
            print(tried[-1], flush=True)
            atomic_write_text(path, json.dumps(record, indent=2))
    by_setting: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for row in tried:
        by_setting.setdefault((row["model"], row["local_epochs"], row["rounds"]), []).append(row)
    ok = {k: v for k, v in by_setting.items() if all(beats(r) for r in v)}
    pool = ok or by_setting
    best = max(pool, key=lambda k: (
        round(sum(r["val_balanced_accuracy"] or 0.0 for r in pool[k]) / len(pool[k]), 3),
        -sum(r["seconds"] for r in pool[k])))
    record["chosen"] = {"model": best[0], "local_epochs": best[1], "rounds": best[2]}
    # the README's command (DP-SGD) at the chosen setting, on both data sets: a check
    record["dpsgd_at_chosen"] = [
        {"data": name, **score(ds, *best, args.seed, defense="dpsgd")}
        for name, ds in data.items()]
    print(record["chosen"], record["dpsgd_at_chosen"], flush=True)
    atomic_write_text(path, json.dumps(record, indent=2))


#: DP-SGD's learning rates tried at the chosen setting (0.001 is its default, tried in
#: the first stage as ``dpsgd_at_chosen``)
DPSGD_LRS = (0.003, 0.01, 0.03)


def dpsgd_lr(data: dict[str, Any], args: argparse.Namespace) -> None:
    """The second stage: DP-SGD (the README's command) at the chosen setting stayed at the
    majority class on BreastMNIST at its default learning rate (0.001); its private Adam's
    learning rate is chosen on validation like the rest (same rule, over both data sets)."""
    path = args.out / "federate_defaults.json"
    record = json.loads(path.read_text())
    stage = record.setdefault("dpsgd_lr", {"tried": [dict(r, lr=0.001)
                                                     for r in record["dpsgd_at_chosen"]]})
    tried = stage["tried"]
    for lr in DPSGD_LRS:
        for name in data:
            if any(r["data"] == name and r["lr"] == lr for r in tried):
                continue  # resumed: this one is recorded already
            # each run in a process of its own: one process's second Ray simulation once
            # scored arrays of the first (a loaded machine); a fresh process cannot
            done = subprocess.run(
                [sys.executable, __file__, "--one", f"{name},{lr}", "--seed", str(args.seed),
                 "--out", str(args.out),
                 *(["--data-root", str(args.data_root)] if args.data_root else [])],
                capture_output=True, text=True, check=True)
            tried.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(tried[-1], flush=True)
            atomic_write_text(path, json.dumps(record, indent=2))
    by_lr: dict[float, list[dict[str, Any]]] = {}
    for row in tried:
        by_lr.setdefault(row["lr"], []).append(row)
    ok = {k: v for k, v in by_lr.items() if all(beats(r) for r in v)}
    pool = ok or by_lr
    best = max(pool, key=lambda k: round(
        sum(r["val_balanced_accuracy"] or 0.0 for r in pool[k]) / len(pool[k]), 3))
    stage.update(rule="DP-SGD at the chosen setting: the learning rate with the highest "
                      "validation balanced accuracy averaged over the two data sets among "
                      "those whose macro F1 beats the majority class's on both",
                 chosen=best)
    print(record["dpsgd_lr"]["chosen"], flush=True)
    atomic_write_text(path, json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
