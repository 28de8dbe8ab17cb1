"""Every federated defence on BreastMNIST through Flower, beside the same defence trained
centrally, with each client's epsilon and the live audit's verdicts per round.

For every defence: :func:`shieldsplit.adapters.flower.simulate` (``--clients`` clients,
``--partition`` label skew, ``--rounds`` rounds of one local epoch, the live audit at
``--audit``), then the *central* reference: the same defence around the same initial
weights, trained with its own ``fit`` on all the clients' training shards pooled, for
``rounds x local epochs`` epochs, evaluated on the same held-out examples. (This is not
``shieldsplit compare``, which also audits every defence offline and takes far longer.)
Every interpretive sentence of the page is computed from the run.

The setting (activation, batch size, local epochs) is chosen on the **validation split**
only: ``--select-on-val`` trains the undefended federated model (no audit) for every
candidate of :data:`CANDIDATES`, scores the final global model on ``ds.x_val`` and writes
``federated_<data>_selection.json``; the page run reads it, uses the chosen setting (unless
given on the command line) and states what was tried.

Usage:
    python benchmarks/federated_breastmnist.py --select-on-val
    python benchmarks/federated_breastmnist.py [--clients 4] [--partition dirichlet:0.5]
        [--rounds 10] [--defenses none,dpsgd,...] [--limit 0] [--out docs/results]
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import shlex
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit._core.io import atomic_write_text
from shieldsplit._core.provenance import load_note
from shieldsplit.adapters import flower as ssfl
from shieldsplit.cli.federate import DEFAULT_LR, local_options
from shieldsplit.data import default_data_root, load_dataset
from shieldsplit.experiments.demo import machine_info
from shieldsplit.models import NARROW_WIDTH, SmallConvNet

#: SmallConvNet's default channels per convolution (the other defences' model)
SMALL_WIDTH: int = inspect.signature(SmallConvNet).parameters["width"].default

DEFENSES = "none,dpsgd,latent-fixed,latent-learned,nopeek,laplace,bido"
#: the settings --select-on-val tries: (activation, batch size, local epochs)
CANDIDATES: list[tuple[str, int, int]] = [
    ("sigmoid", 32, 1), ("sigmoid", 8, 2), ("tanh", 32, 1), ("tanh", 32, 3), ("tanh", 16, 2),
    ("tanh", 16, 3), ("tanh", 8, 2),
]


def client_data(ds: Any, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split less the server's auxiliary share, as ``simulate(audit=...)``
    sets it aside (10%, at least 16 images, seeded): what the clients partition."""
    perm = torch.randperm(len(ds.x_train), generator=torch.Generator().manual_seed(seed))
    rest = perm[max(16, int(0.1 * len(ds.x_train))):]
    return ds.x_train[rest], ds.y_train[rest]


def simulate_retrying(net: torch.nn.Module, attempts: int = 3, **kwargs: Any
                      ) -> ssfl.FederatedResult:
    """:func:`ssfl.simulate`, run again (same seed, same result) if the engine stopped early
    (Ray's start-up can time out on a loaded machine); the last attempt is returned."""
    result = ssfl.simulate(net, **kwargs)
    for _ in range(attempts - 1):
        if result.complete:
            break
        print(f"the simulation stopped ({result.error}); running it again", flush=True)
        time.sleep(10)
        result = ssfl.simulate(net, **kwargs)
    return result


def previous_line(row: dict[str, Any]) -> str:
    """A row re-run at other settings, beside the run it replaced (``row["previous"]``:
    its ``label`` and final-round ``federated_accuracy``, ``majority_rate``,
    ``balanced_accuracy`` and ``macro_f1``), each worded from the numbers.

    Example:
        >>> row = {"defense": "dpsgd", "federated_accuracy": 0.7, "majority_rate": 0.7,
        ...        "balanced_accuracy": 0.5, "macro_f1": 0.4, "previous": {
        ...            "label": "12 channels", "federated_accuracy": 0.6, "majority_rate": 0.7,
        ...            "balanced_accuracy": 0.55, "macro_f1": 0.5}}
        >>> print(previous_line(row))  # doctest: +NORMALIZE_WHITESPACE
        dpsgd: this run's federated accuracy 0.700 is not above the majority rate 0.700
        (balanced accuracy 0.500, macro F1 0.400); the run it replaced (12 channels) ended at
        0.600, below 0.700 (balanced accuracy 0.550, macro F1 0.500).
    """
    def where(acc: float, share: float) -> str:
        return "above" if acc > share + 1e-9 else ("below" if acc < share - 1e-9 else "at")

    p, acc, share = row["previous"], row["federated_accuracy"], row["majority_rate"]
    now = "above" if acc > share + 1e-9 else "not above"
    return (f"{row['defense']}: this run's federated accuracy {acc:.3f} is {now} the majority "
            f"rate {share:.3f} (balanced accuracy {row['balanced_accuracy']:.3f}, macro F1 "
            f"{row['macro_f1']:.3f}); the run it replaced ({p['label']}) ended at "
            f"{p['federated_accuracy']:.3f}, {where(p['federated_accuracy'], p['majority_rate'])}"
            f" {p['majority_rate']:.3f} (balanced accuracy {p['balanced_accuracy']:.3f}, macro "
            f"F1 {p['macro_f1']:.3f}).")


def make_net(ds: Any, activation: str, seed: int, *, defense: str = "none",
             dpsgd_width: int = NARROW_WIDTH) -> torch.nn.Module:
    """The benchmark's SmallConvNet, seeded: SmallConvNet's own width, and
    ``dpsgd_width`` channels per convolution for DP-SGD (``federate``'s own model)."""
    width = dpsgd_width if defense == "dpsgd" else SMALL_WIDTH
    torch.manual_seed(seed)
    return SmallConvNet(in_channels=ds.in_channels, num_classes=ds.num_classes,
                        image_size=ds.image_size[0], activation=activation, width=width)


def select_on_val(ds: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Train the undefended federated model for every candidate on the clients' shards of
    the audited run; score it on validation."""
    tried = []
    data = client_data(ds, args.seed)
    for activation, batch_size, local_epochs in CANDIDATES:
        t0 = time.perf_counter()
        result = simulate_retrying(make_net(ds, activation, args.seed), data=data,
                                   defense="none",
                               clients=args.clients, rounds=args.rounds,
                               partition=args.partition, batch_size=batch_size,
                               local_epochs=local_epochs, cut=1, audit=None, seed=args.seed,
                               progress=False, validation=(ds.x_val, ds.y_val))
        y = ds.y_val
        share = float(torch.bincount(y).max()) / len(y)
        tried.append({"activation": activation, "batch_size": batch_size,
                      "local_epochs": local_epochs,
                      "val_accuracy": result.validation_accuracy,
                      "val_macro_f1": result.validation_macro_f1,
                      "val_majority_macro_f1": (2 * share / (1 + share)) / int(ds.num_classes),
                      "val_examples": result.validation_examples,
                      "seconds": time.perf_counter() - t0})
        print(tried[-1], flush=True)
    # the best validation macro F1; ties go to the cheaper setting (fewer seconds)
    best = max(tried, key=lambda r: (round(r["val_macro_f1"] or 0.0, 3), -r["seconds"]))
    return {"rule": "highest validation macro F1 of the undefended federated model "
                    "(ties: the faster setting)",
            "clients": args.clients, "partition": args.partition, "rounds": args.rounds,
            "seed": args.seed, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tried": tried, "chosen": {k: best[k] for k in
                                       ("activation", "batch_size", "local_epochs")}}


def central(net: torch.nn.Module, name: str, options: dict[str, Any],
            shards: dict[int, ssfl.Shard], *, epochs: int, batch_size: int,
            seed: int) -> tuple[float, float]:
    """Accuracy and macro F1 of the defence trained on the pooled training shards."""
    x = torch.cat([shards[p][0][0] for p in sorted(shards)])
    y = torch.cat([shards[p][0][1] for p in sorted(shards)])
    ex = torch.cat([shards[p][1][0] for p in sorted(shards)])
    ey = torch.cat([shards[p][1][1] for p in sorted(shards)])
    defense = ssfl.build_defense(net, name, options)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    defense.fit(loader, epochs=epochs, seed=seed, progress=False)
    with torch.no_grad():
        pred = defense.eval()(ex).argmax(-1)
    k = int(defense.num_classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (ey.numpy(), pred.numpy()), 1)
    return float((pred == ey).double().mean()), ssfl.macro_f1(confusion)


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


def selection_lines(selection: dict[str, Any] | None, args: argparse.Namespace
                    ) -> list[str]:
    """The page's account of how the setting was chosen (computed from the selection)."""
    if selection is None:
        return ["No selection on the validation split was run (no "
                f"federated_{args.data}_selection.json): the setting is the script's default.",
                ""]
    out = [f"Setting chosen on the validation split ({selection['tried'][0]['val_examples']} "
           f"images; `--select-on-val`, {selection['date']}): the undefended federated model, "
           f"{selection['clients']} clients, {selection['partition']}, {selection['rounds']} "
           "rounds, on the same client shards as below (the server's auxiliary share set "
           f"aside), no audit; rule: {selection['rule']}.", "",
           "| activation | batch | local epochs | val accuracy | val macro F1 | "
           "beats the majority class's macro F1 | seconds |", "| --- | --- | --- | --- | --- "
           "| --- | --- |"]
    for t in selection["tried"]:
        beats = "yes" if (t["val_macro_f1"] or 0.0) > t["val_majority_macro_f1"] + 1e-9 \
            else "no"
        out.append(f"| {t['activation']} | {t['batch_size']} | {t['local_epochs']} | "
                   f"{t['val_accuracy']:.3f} | {t['val_macro_f1']:.3f} | {beats} "
                   f"({t['val_majority_macro_f1']:.3f}) | {t['seconds']:.0f} |")
    c = selection["chosen"]
    used = (args.activation, args.batch_size, args.local_epochs)
    same = used == (c["activation"], c["batch_size"], c["local_epochs"])
    out += ["", f"Chosen: {c['activation']}, batch {c['batch_size']}, {c['local_epochs']} "
            "local epoch(s)" + ("; this run uses it." if same else
                                f"; this run overrides it with {used}."), ""]
    return out


def audit_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Whether each attack's control leaked (so that the audit could decide), computed."""
    out = []
    for attack in (ssfl.LABEL_ATTACK, ssfl.UPDATE_ATTACK):
        control = [row for r in rows if r["defense"] == "none"
                   for row in r["result"]["leakage"] if row["attack"] == attack]
        if not control:
            continue
        leaked = sum(row["verdict"] == "leaks" for row in control)
        decided = sum(row["verdict"] != "inconclusive" for r in rows
                      for row in r["result"]["leakage"] if row["attack"] == attack)
        total = sum(row["attack"] == attack for r in rows for row in r["result"]["leakage"])
        skipped = sum(row["status"] == "n/a" for r in rows for row in r["result"]["leakage"]
                      if row["attack"] == attack)
        out.append(f"{attack}: the undefended client's update (the control) leaked in "
                   f"{leaked} of {len(control)} client-rounds; {decided} of {total} "
                   "client-rounds over all defences got a decided verdict (*leaks* or *no "
                   "leakage found*), the others are *inconclusive*"
                   + (f" ({skipped} of them not attacked)." if skipped else "."))
    return [*out, ""] if out else []


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
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: the setting chosen on the validation split")
    parser.add_argument("--local-epochs", type=int, default=None)
    parser.add_argument("--activation", default=None, choices=["sigmoid", "tanh"])
    parser.add_argument("--audit-max-images", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dpsgd-lr", type=float, default=DEFAULT_LR["dpsgd"],
                        help="DP-SGD's local learning rate (default: federate's, chosen on "
                        "the validation split by benchmarks/federate_defaults.py)")
    parser.add_argument("--dpsgd-width", type=int, default=NARROW_WIDTH,
                        help="DP-SGD's channels per convolution (default: those of "
                        "federate's DP-SGD model, narrow-convnet-tanh, chosen on the "
                        "validation split by benchmarks/federate_defaults.py)")
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--page-only", action="store_true",
                        help="with --resume: rewrite the page from the JSON, run nothing")
    parser.add_argument("--resume", action="store_true",
                        help="keep the defences the page's JSON already holds")
    parser.add_argument("--no-defense-ig", dest="defense_ig", action="store_false",
                        help="run Inverting Gradients on the undefended updates only (its "
                        "target and control on a defence cost two attacks per update)")
    parser.add_argument("--select-on-val", action="store_true",
                        help="choose the setting on the validation split and stop")
    parser.add_argument("--add-central-f1", action="store_true",
                        help="re-run only the central references of the page's JSON (seeded: "
                        "their accuracy must match) to add their macro F1, and rewrite it")
    args = parser.parse_args()
    if args.page_only:  # the page is worded with the options of the run that made it
        kept = json.loads((args.out / f"federated_{args.data}.json").read_text())
        root_option = ["--data-root", str(args.data_root)] if args.data_root else []
        args = parser.parse_args([*shlex.split(kept["command"])[2:], "--out", str(args.out),
                                  "--resume", "--page-only", *root_option])
    torch.set_num_threads(1)
    root = None if args.data == "digits" else (args.data_root or default_data_root())
    ds = load_dataset(args.data, root=root, seed=args.seed, limit=args.limit or None)
    selection_path = args.out / f"federated_{args.data}_selection.json"
    if args.select_on_val:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(selection_path, json.dumps(select_on_val(ds, args), indent=2))
        print(selection_path.read_text())
        return
    selection = json.loads(selection_path.read_text()) if selection_path.exists() else None
    chosen = selection["chosen"] if selection else {
        "activation": "sigmoid", "batch_size": 32, "local_epochs": 1}
    args.activation = args.activation or chosen["activation"]
    args.batch_size = args.batch_size or chosen["batch_size"]
    args.local_epochs = args.local_epochs or chosen["local_epochs"]
    if args.add_central_f1:
        add_central_f1(ds, args, selection)
        return
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    page_json = args.out / f"federated_{args.data}.json"
    if args.resume and page_json.exists():  # the defences an interrupted run finished
        before = json.loads(page_json.read_text())
        rows = [dict(r, resumed=r.get("resumed", False) or not args.page_only)
                for r in before["rows"] if r["defense"] in args.defenses.split(",")]
        started -= before["seconds"]
        if args.page_only:  # the run's own command, date, machine, load and time stay
            write_page(rows, args, ds=ds, selection=selection, started=started, kept=before)
            return
    for name in args.defenses.split(","):
        if any(r["defense"] == name for r in rows) or args.page_only:
            continue
        net = make_net(ds, args.activation, args.seed,
                       defense=name, dpsgd_width=args.dpsgd_width)
        # Inverting Gradients runs on the undefended clients' updates first; where it never
        # leaked there (its own control), on a defence it could only say inconclusive, so
        # it is not run for the defences (audit_max_images=0 turns it off)
        max_images = args.audit_max_images if ig_control_leaked(rows) else 0
        if name != "none" and not args.defense_ig:
            max_images = 0
        lr = args.dpsgd_lr if name == "dpsgd" else None
        t0 = time.perf_counter()
        result = simulate_retrying(net, data=ds, defense=name, clients=args.clients,
                                   rounds=args.rounds, partition=args.partition,
                                   batch_size=args.batch_size,
                                   local_epochs=args.local_epochs, cut=1, audit=args.audit,
                                   seed=args.seed, progress=False,
                                   audit_max_images=max_images,
                                   defense_options=local_options(name, lr),
                                   validation=(ds.x_val, ds.y_val))
        options = {**central_options(ds, name, args.seed), **(local_options(name, lr) or {})}
        # the same shards as the simulation: the server's share first, then the partition
        shards = ssfl.make_shards(*client_data(ds, args.seed), clients=args.clients,
                                  partition=args.partition, seed=args.seed)
        cen, cen_f1 = central(net, name, options, shards,
                              epochs=args.rounds * args.local_epochs,
                              batch_size=args.batch_size, seed=args.seed)
        done = [h for h in result.history if h.accuracy is not None]
        if not done:
            print(f"{name}: no round finished ({result.error}); left out", flush=True)
            continue
        last = done[-1]
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
                     "central_accuracy": cen, "central_macro_f1": cen_f1,
                     "federated_accuracy": last.accuracy,
                     "balanced_accuracy": last.balanced_accuracy,
                     "majority_rate": last.majority_rate,
                     "predicted_classes": last.predicted_classes,
                     "macro_f1": last.macro_f1, "examples": last.examples,
                     "val_accuracy": result.validation_accuracy,
                     "val_macro_f1": result.validation_macro_f1,
                     "verdicts": verdicts, "lr": (local_options(name, lr) or {}).get("lr"),
                     "seconds": time.perf_counter() - t0})
        print(name, last.accuracy, cen, verdicts, flush=True)
        # the page after every defence: an interrupted run keeps what finished
        write_page(rows, args, ds=ds, selection=selection, started=started)
    if rows:  # once more: a resumed run with nothing left to do rewrites the page too
        write_page(rows, args, ds=ds, selection=selection, started=started)


def _fmt3(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def central_options(ds: Any, name: str, seed: int) -> dict[str, Any]:
    """The defence options of the central reference (those of the simulation)."""
    options: dict[str, Any] = {"cut": 1, "seed": seed}
    if name.startswith("latent"):
        options["input_shape"] = tuple(int(v) for v in ds.x_train.shape[1:])
    return options


def add_central_f1(ds: Any, args: argparse.Namespace, selection: dict[str, Any] | None
                   ) -> None:
    """Re-run the central references of a finished page (for their macro F1); the page
    keeps the run's own date, time and load, and says it was completed so."""
    path = args.out / f"federated_{args.data}.json"
    record = json.loads(path.read_text())
    shards = ssfl.make_shards(*client_data(ds, args.seed), clients=args.clients,
                              partition=args.partition, seed=args.seed)
    for r in record["rows"]:
        acc, f1 = central(make_net(ds, args.activation, args.seed,
                                   defense=r["defense"], dpsgd_width=args.dpsgd_width),
                          r["defense"],
                          central_options(ds, r["defense"], args.seed), shards,
                          epochs=args.rounds * args.local_epochs,
                          batch_size=args.batch_size, seed=args.seed)
        r["central_macro_f1"] = f1
        r["central_rerun_accuracy"] = acc
        print(r["defense"], acc, r["central_accuracy"], f1, flush=True)
    record["central_f1_added"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_page(record["rows"], args, ds=ds, selection=selection, started=0.0, kept=record)


#: The final-round and validation metrics two runs must share to read as one model.
SAME_METRICS = ("federated_accuracy", "balanced_accuracy", "macro_f1", "val_accuracy",
                "val_macro_f1")


def same_as_undefended(rows: list[dict[str, Any]]) -> list[str]:
    """Defences whose federated model scores exactly as the undefended one on every
    held-out and validation metric, with how far their per-round losses are apart, and
    why their label verdicts can still differ (the undefended update is its own control).
    """
    base = next((r for r in rows if r["defense"] == "none"), None)
    if base is None:
        return []

    def counts(row: dict[str, Any]) -> str:
        found = row["verdicts"].get(ssfl.LABEL_ATTACK, {})
        return ", ".join(f"{n} {v}" for v, n in sorted(found.items())) or "no verdict"

    out = []
    for r in rows:
        if r is base or any(r.get(k) != base.get(k) for k in SAME_METRICS):
            continue
        losses = [abs(a["loss"] - b["loss"]) for a, b in zip(
            r["result"]["history"], base["result"]["history"], strict=False)
            if a.get("loss") is not None and b.get("loss") is not None]
        gap = (f"its per-round held-out loss differs from the undefended run's by at most "
               f"{max(losses):.1e} over {len(losses)} rounds" if losses else
               "the run records no per-round loss to compare")
        out += ["", f"{r['defense']}: its federated model scores exactly as the undefended "
                f"one on every held-out and validation metric (accuracy "
                f"{r['federated_accuracy']:.3f}, macro F1 {r['macro_f1']:.3f}; validation "
                f"{_fmt3(r.get('val_accuracy'))} / {_fmt3(r.get('val_macro_f1'))}), and "
                f"{gap}: at this strength it barely changed training, too little to change "
                f"a prediction on {r['examples']} held-out examples. Its label verdicts can "
                "still differ from the undefended row's: the undefended client's update is "
                "its own positive control (adapters/flower/audit.py), so its label verdicts "
                f"are *leaks* or *inconclusive* only (here {counts(base)}), while a "
                "defence's can be *no leakage found* in a round where the control leaked "
                f"and the defence did not (here {counts(r)})."]
    return out


def ig_control_leaked(rows: list[dict[str, Any]]) -> bool:
    """Whether Inverting Gradients leaked on an undefended client's update (True before
    the undefended model has run)."""
    control = [row for r in rows if r["defense"] == "none"
               for row in r["result"]["leakage"] if row["attack"] == ssfl.UPDATE_ATTACK]
    return not control or any(row["verdict"] == "leaks" for row in control)


def write_page(rows: list[dict[str, Any]], args: argparse.Namespace, *, ds: Any,
               selection: dict[str, Any] | None, started: float,
               kept: dict[str, Any] | None = None) -> None:
    """The results page and its JSON, from the defences finished so far (``kept``: the
    record of a finished run, whose command, date, machine and time are kept)."""
    asked = args.defenses.split(",")
    record: dict[str, Any] = kept or {
        "command": "python benchmarks/federated_breastmnist.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if k not in ("out", "data_root", "select_on_val", "resume", "add_central_f1",
                         "defense_ig", "page_only"))
        + ("" if args.defense_ig else " --no-defense-ig"),
        "resumed": [r["defense"] for r in rows if r.get("resumed")],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "load_average": list(os.getloadavg()),
        "data": ds.source, "seconds": time.perf_counter() - started, "rows": rows,
        "selection": selection,
    }
    lines = [
        f"# Federated defences on {args.data} through Flower", "",
        f"Command: `{record['command']}`  ", f"Date: {record['date']}  ",
        f"Machine: {record['machine']['cpus']} CPU cores, no GPU (torch "
        f"{record['machine']['torch']}); "
        f"{load_note(record['load_average'][0], own=min(args.clients, os.cpu_count() or 1))}"
        " (Ray runs one client per core); the run took "
        f"{record['seconds'] / 60:.1f} min.  ",
        f"Data: {ds.source}. {args.clients} clients, partition {args.partition}, "
        f"{args.rounds} rounds of {args.local_epochs} local epoch(s) (batch "
        f"{args.batch_size}), SmallConvNet ({args.activation}; {SMALL_WIDTH} channels, DP-SGD "
        f"{args.dpsgd_width}, as `federate`'s own) cut at block 1, seed "
        f"{args.seed}; 10% of the training split is the server's auxiliary data for the live "
        "audit; accuracy is measured on the clients' held-out 20% (never used to choose "
        "the setting).", "",
    ]
    if record.get("resumed"):
        lines += [f"Resumed (`--resume`): {', '.join(record['resumed'])} ran first and "
                  "was kept, the other defences ran in the resumed part; the time above is "
                  "both parts'.", ""]
    lines += [f"{r['defense']}: {r['note']}" for r in rows if r.get("note")]
    lines += [""] if any(r.get("note") for r in rows) else []
    lines += [previous_line(r) for r in rows if r.get("previous")]
    lines += [""] if any(r.get("previous") for r in rows) else []
    lines += selection_lines(selection, args)
    if len(rows) < len(asked):
        lines += [f"Partial: {len(rows)} of the {len(asked)} defences asked for have finished "
                  f"({', '.join(r['defense'] for r in rows)}); the others are not on this "
                  "page.", ""]
    if args.clients != 4 or args.partition != "dirichlet:0.5" or args.rounds != 10:
        lines += ["The issue asks for 4 clients, Dirichlet 0.5 and 10 rounds; this run used "
                  f"{args.clients} clients, {args.partition} and {args.rounds} rounds to fit "
                  "the CPU time available: it does not meet that setting.", ""]
    lines += ["The clients' held-out examples only report: no setting was chosen on them "
              "(the setting was chosen on the validation split, above); every number below "
              "is the final round's global model on them, beside the majority class's rate "
              "(always predicting the commonest held-out class).", ""]
    lines += ["| defence | federated accuracy | majority class | balanced accuracy | macro F1 "
              "| central accuracy | central macro F1 | federated vs central | final epsilon "
              "per client | live audit verdicts (all rounds) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        eps = ssfl.FederatedResult.model_validate(r["result"]).epsilons()
        eps_text = ", ".join(f"{c}: {v[-1]:.2f}" for c, v in eps.items()) or "-"
        verdict_text = "; ".join(f"{a}: " + ", ".join(f"{n} {v}" for v, n in sorted(c.items()))
                                 for a, c in sorted(r["verdicts"].items())) or "-"
        fed = r["federated_accuracy"] or 0.0
        lines.append(f"| {r['defense']} | {fed:.3f} | {_fmt3(r.get('majority_rate'))} | "
                     f"{_fmt3(r.get('balanced_accuracy'))} | {r['macro_f1'] or 0.0:.3f} | "
                     f"{r['central_accuracy']:.3f} | "
                     f"{_fmt3(r.get('central_macro_f1'))} | "
                     f"{compare_sentence(fed, r['central_accuracy'], r['examples'])} | "
                     f"{eps_text} | {verdict_text} |")
    stuck = [r["defense"] for r in rows
             if (r["macro_f1"] or 0.0) <= r["majority_macro_f1"] + 1e-9
             or r.get("predicted_classes") == 1]
    if stuck:
        lines += ["", f"{', '.join(stuck)}: the federated model's macro F1 is no better than "
                  "always predicting the majority class "
                  f"({rows[0]['majority_macro_f1']:.3f}; majority share "
                  f"{rows[0]['majority_share']:.3f}): at this number of rounds it has not "
                  "learned to separate the classes, so its accuracy says nothing about the "
                  "defence."]
    below = [r["defense"] for r in rows if r["defense"] not in stuck
             and r.get("majority_rate") is not None
             and (r["federated_accuracy"] or 0.0) <= r["majority_rate"] + 1e-9]
    if below:
        lines += ["", f"{', '.join(below)}: accuracy no better than the majority class's, "
                  "though balanced accuracy and macro F1 are above the majority class's "
                  "(both classes predicted): on so few held-out examples read those two."]
    lines += same_as_undefended(rows)
    cen_stuck = [r["defense"] for r in rows if r.get("central_macro_f1") is not None
                 and r["central_macro_f1"] <= r["majority_macro_f1"] + 1e-9]
    if cen_stuck:
        lines += ["", f"{', '.join(cen_stuck)}: the central reference's macro F1 is no better "
                  "than always predicting the majority class."]
    if record.get("central_f1_added"):
        same = all(abs(r["central_rerun_accuracy"] - r["central_accuracy"]) < 1e-12
                   for r in rows)
        lines += ["", "The central macro F1 column was added after the run by re-running the "
                  f"seeded central references (`--add-central-f1`, {record['central_f1_added']})"
                  + ("; their accuracies equal the run's." if same else
                     "; their accuracies differ from the run's (the run's are shown): the "
                     "column comes from a re-run that is not identical.")]
    dp = [r for r in rows if r["defense"] == "dpsgd"]
    if dp:
        delta = dp[0]["result"]["delta"]
        lines += ["", f"DP-SGD's epsilons are at delta {delta:g}, each client's own, composed "
                  "over all its rounds by its accountant. Its private Adam's learning rate: "
                  f"{dp[0].get('lr') or 0.001:g}"
                  + (" (`federate`'s default, chosen on the validation split: "
                     "docs/results/federate_defaults.json)."
                     if dp[0].get("lr") == DEFAULT_LR["dpsgd"] else
                     " (DP-SGD's own default; `federate` now uses "
                     f"{DEFAULT_LR['dpsgd']:g}, chosen on the validation split).")]
    lines += ["", "The live audit attacks the updates Flower delivered: label inference on "
              "the last layer (on a binary task by replaying the clients' local training on "
              "the server's auxiliary images for 33 candidate label compositions, "
              "`replay_label_counts`), and Inverting Gradients on every update: it rebuilds "
              f"at most {args.audit_max_images} images, and a client holding more is "
              f"attacked on a seeded subsample of {args.audit_max_images} of its images as "
              "the victims (the update still averages all of them; each row says so); its "
              "control is the same attack on an undefended client's update "
              "(docs/federated.md). The per-round rows are in the JSON beside this page.",
              ""]
    attacked = [row for r in rows if r["defense"] == "none"
                for row in r["result"]["leakage"]
                if row["attack"] == ssfl.UPDATE_ATTACK and row["status"] == "ok"]
    if attacked and ig_control_leaked(rows) and not args.defense_ig:
        leaked = sum(row["verdict"] == "leaks" for row in attacked)
        skipped = 2 * sum(row["attack"] == ssfl.UPDATE_ATTACK for r in rows
                          if r["defense"] != "none" for row in r["result"]["leakage"])
        lines += [f"Inverting Gradients leaked on {leaked} of the {len(attacked)} undefended "
                  "client-rounds, but this run did not attack the defences' updates with it "
                  f"(`--no-defense-ig`: a target and a control attack per update, "
                  f"{skipped}"
                  " in all, did not fit the CPU time available): their rows say *not "
                  "attacked*, and the defences' verdicts are label inference's only.", ""]
    if attacked and not ig_control_leaked(rows):
        gain = [row["psnr"] - row["baseline_psnr"] for row in attacked]
        lines += [f"Inverting Gradients never leaked on the undefended clients' updates "
                  f"({len(attacked)} attacked; PSNR {min(gain):+.1f} to {max(gain):+.1f} dB "
                  "against the best no-attack guess), so on a defence it could only say "
                  "*inconclusive*: it was not run for the defences (their rows say *not "
                  "attacked*).", ""]
    lines += audit_lines(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"federated_{args.data}"
    atomic_write_text(args.out / f"{stem}.json", json.dumps(record, indent=2))
    atomic_write_text(args.out / f"{stem}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
