"""Strength of the split-learning inversion attacks on the PGSL paper's network (cut=2).

For each data set (MNIST, BreastMNIST):

1. The train split is halved, stratified, with the seed: the victim model (PGSLNet,
   the paper's network, width 64) is trained plainly (``fit_plain``) on one half;
   the other half is the attacker's auxiliary data (the victim never saw it).
2. A reference classifier (a small CNN, see ``reference_net``) is trained on the clean
   auxiliary images. It labels the reconstructions: attacker accuracy is its
   accuracy on the reconstructions of the test split against the true labels.
3. The black-box decoder (``split-black-box``) attacks the undefended cut=2: it
   queries the client part with the auxiliary images, learns to invert, and decodes
   the test images' activations. Bar: attacker accuracy >= 90% of the victim's clean
   accuracy.
4. ``SplitShield(victim, cut=2)`` with the default PGSL config is trained with
   ``shield.fit`` (starting from the victim's weights; its client's first conv is
   new). The black-box decoder then queries the deployed shield's client as a black
   box, and the adaptive attack (``adaptive-split``) inverts the shield's wire with
   knowledge of its configuration. Both decode the shield's wire for the test split.

Usage:
    python benchmarks/split_attack_strength.py [--datasets mnist breastmnist] [--seed 0]
        [--out docs/results/attack_strength_split] [--limit N]

Writes ``<out>.md`` and ``<out>.json``; prints the table. ``--limit`` subsamples every
split (a smoke run; not for reporting).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import shieldsplit as ss
from shieldsplit.attacks import AttackContext, create_attack
from shieldsplit.attacks import adaptive as _adaptive  # noqa: F401  (registers the attack)
from shieldsplit.attacks import split as _split  # noqa: F401  (registers the attacks)
from shieldsplit.attacks.observe_split import observe_activations
from shieldsplit.data import default_data_root, load_dataset
from shieldsplit.experiments.demo import machine_info
from shieldsplit.functional.metrics import mse, psnr, ssim
from shieldsplit.training import accuracy, fit_plain

BAR = 0.90


@dataclass(frozen=True)
class Plan:
    """Epochs per data set, chosen to keep the whole run near 15 minutes on 2 cores."""

    victim_epochs: int
    shield_epochs: int
    reference_epochs: int
    decoder_epochs: int


PLANS = {
    "mnist": Plan(victim_epochs=2, shield_epochs=1, reference_epochs=5, decoder_epochs=5),
    "breastmnist": Plan(victim_epochs=15, shield_epochs=5, reference_epochs=20,
                        decoder_epochs=30),
}


def reference_net(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """The attacker's reference classifier: conv32-pool-conv64-pool-fc128-fc."""
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(128, num_classes),
    )


def loader(x: Tensor, y: Tensor, *, shuffle: bool, seed: int, batch: int = 64) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=shuffle, generator=gen)


def scores(rec: Tensor, x: Tensor, y: Tensor, reference: nn.Module) -> dict[str, float]:
    return {
        "mse": float(mse(rec, x).mean()),
        "psnr_db": float(psnr(rec, x).mean()),
        "ssim": float(ssim(rec, x).mean()),
        "attacker_accuracy": accuracy(reference, loader(rec, y, shuffle=False, seed=0, batch=256)),
    }


def run_attack(
    name: str, *, client: nn.Module, defense: nn.Module | None, aux: Tensor, aux_y: Tensor,
    x: Tensor, y: Tensor, num_classes: int, epochs: int, seed: int, reference: nn.Module,
) -> dict[str, Any]:
    start = time.perf_counter()
    attack = create_attack(name, seed=seed, epochs=epochs)
    context = AttackContext(
        image_shape=(int(x.shape[1]), int(x.shape[2]), int(x.shape[3])),
        num_classes=num_classes, model=client, defense=defense, auxiliary_images=aux,
        auxiliary_labels=aux_y, budget="standard", seed=seed,
    )
    attack.prepare(context)
    chunks = [attack.reconstruct(observe_activations(client, x[i:i + 500])).images
              for i in range(0, x.shape[0], 500)]
    rec = torch.cat(chunks)
    out = scores(rec, x, y, reference)
    out["decoder_epochs"] = epochs
    out["seconds"] = time.perf_counter() - start
    return out


def run_dataset(name: str, seed: int, limit: int | None) -> dict[str, Any]:
    plan = PLANS[name]
    t0 = time.perf_counter()
    ds = load_dataset(name, root=default_data_root(), seed=seed, limit=limit)
    idx = np.arange(ds.y_train.shape[0])
    victim_idx, aux_idx = train_test_split(
        idx, test_size=0.5, stratify=ds.y_train.numpy(), random_state=seed
    )
    xv, yv = ds.x_train[victim_idx], ds.y_train[victim_idx]
    aux, aux_y = ds.x_train[aux_idx], ds.y_train[aux_idx]
    xt, yt = ds.x_test, ds.y_test
    c, size = ds.in_channels, ds.image_size[0]
    timings: dict[str, float] = {}

    start = time.perf_counter()
    torch.manual_seed(seed)
    victim = ss.PGSLNet(in_channels=c, num_classes=ds.num_classes, image_size=size)
    fit_plain(victim, loader(xv, yv, shuffle=True, seed=seed), epochs=plan.victim_epochs,
              seed=seed)
    clean = accuracy(victim, loader(xt, yt, shuffle=False, seed=0, batch=256))
    timings["victim_training"] = time.perf_counter() - start

    start = time.perf_counter()
    torch.manual_seed(seed)
    reference = reference_net(c, ds.num_classes, size)
    fit_plain(reference, loader(aux, aux_y, shuffle=True, seed=seed),
              epochs=plan.reference_epochs, seed=seed)
    reference_clean = accuracy(reference, loader(xt, yt, shuffle=False, seed=0, batch=256))
    timings["reference_training"] = time.perf_counter() - start

    common = dict(aux=aux, aux_y=aux_y, x=xt, y=yt, num_classes=ds.num_classes,
                  epochs=plan.decoder_epochs, seed=seed, reference=reference)
    rows = []
    head = ss.split_model(victim, 2).head
    row = run_attack("split-black-box", client=head, defense=None, **common)
    rows.append({"target": "undefended cut=2", "attack": "split-black-box",
                 "clean_accuracy": clean, **row})

    start = time.perf_counter()
    shield = ss.SplitShield(victim, cut=2, seed=seed)
    shield.fit(loader(xv, yv, shuffle=True, seed=seed), epochs=plan.shield_epochs, seed=seed)
    shield_eval = shield.evaluate(loader(xt, yt, shuffle=False, seed=0, batch=256))
    timings["shield_training"] = time.perf_counter() - start
    for attack in ("split-black-box", "adaptive-split"):
        row = run_attack(attack, client=shield, defense=shield, **common)
        rows.append({"target": "SplitShield cut=2 (default PGSL)", "attack": attack,
                     "clean_accuracy": shield_eval["decision"], **row})
    for row in rows:
        row["ratio"] = row["attacker_accuracy"] / row["clean_accuracy"]
        row["meets_bar"] = row["ratio"] >= BAR
    mean_image = aux.mean(0, keepdim=True).expand_as(xt)
    return {
        "dataset": name,
        "source": ds.source,
        "sizes": {"victim_train": len(victim_idx), "auxiliary": len(aux_idx),
                  "victim_test": int(yt.shape[0])},
        "plan": plan.__dict__,
        "victim_clean_accuracy": clean,
        "shield_accuracy": shield_eval,
        "reference_clean_accuracy": reference_clean,
        "mean_image_baseline": scores(mean_image, xt, yt, reference),
        "rows": rows,
        "timings_s": timings,
        "seconds": time.perf_counter() - t0,
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Split-learning attack strength (PGSLNet, cut=2)",
        "",
        f"- Command: `{report['command']}`",
        f"- Date (UTC): {report['date']}; seed {report['seed']}; total {report['seconds']:.0f} s",
        f"- Machine: {m['cpus']} CPU cores, torch threads {m['torch_threads']}, GPU "
        f"{m['gpu']}; {m['platform']}; Python {m['python']}; torch {m['torch']}",
        "- Victim: PGSLNet (7 conv x 64 channels, FC 128), trained with `fit_plain` on a "
        "stratified half of the train split (seeded). Attacker's auxiliary data: the other "
        "half of the train split, which the victim never used. Victim images: the test split.",
        "- Reference classifier: a small CNN (conv32-pool-conv64-pool-FC128, dropout 0.25) "
        "trained with `fit_plain` on the clean auxiliary images. Attacker accuracy = its "
        "accuracy on the reconstructions of the test split against the true labels.",
        "- Decoder: `split-black-box` and `adaptive-split` (conv decoder derived from the "
        "activation shape, MSE, Adam 2e-3 with cosine decay, batch 64, width 32).",
        "- SplitShield: default `PGSLConfig()`, wrapping the trained victim (the client's "
        "first conv is re-initialised for the 4C+1 input), trained with `shield.fit`; its "
        "clean accuracy is the decision-fusion accuracy on the test split.",
        f"- Bar: attacker accuracy >= {BAR:.0%} of the clean accuracy (undefended row).",
        "",
        "| data set | target | attack | MSE | PSNR (dB) | SSIM | attacker acc | clean acc "
        "| ratio | >= 0.90 | decoder epochs | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for ds in report["datasets"]:
        b, clean = ds["mean_image_baseline"], ds["victim_clean_accuracy"]
        lines.append(
            f"| {ds['dataset']} | undefended cut=2 | none: mean auxiliary image | "
            f"{b['mse']:.4f} | {b['psnr_db']:.2f} | {b['ssim']:.3f} | "
            f"{b['attacker_accuracy']:.3f} | {clean:.3f} | {b['attacker_accuracy'] / clean:.3f} | "
            f"{'yes' if b['attacker_accuracy'] / clean >= BAR else 'NO'} | - | - |"
        )
        for r in ds["rows"]:
            lines.append(
                f"| {ds['dataset']} | {r['target']} | {r['attack']} | {r['mse']:.4f} | "
                f"{r['psnr_db']:.2f} | {r['ssim']:.3f} | {r['attacker_accuracy']:.3f} | "
                f"{r['clean_accuracy']:.3f} | {r['ratio']:.3f} | "
                f"{'yes' if r['meets_bar'] else 'NO'} | {r['decoder_epochs']} | "
                f"{r['seconds']:.0f} |"
            )
    lines += [
        "",
        "The `none: mean auxiliary image` rows send every victim the mean auxiliary image "
        "(no attack). Where that row also clears the bar, the accuracy ratio is no evidence "
        "of leakage (class imbalance: 114 of BreastMNIST's 156 test images are 'normal, "
        "benign', and the reference classifier gives the mean image that majority class); "
        "compare MSE, PSNR and SSIM with that row instead.",
        "",
        "## Findings",
        "",
    ]
    for ds in report["datasets"]:
        und, *shield_rows = ds["rows"]
        verdict = "reached" if und["meets_bar"] else "NOT reached"
        effect = "; ".join(
            f"{r['attack']} MSE {r['mse']:.4f}, attacker acc {r['attacker_accuracy']:.3f}"
            for r in shield_rows
        )
        lines.append(
            f"- {ds['dataset']}: the bar is {verdict} on the undefended cut (attacker acc "
            f"{und['attacker_accuracy']:.3f} = {und['ratio']:.1%} of the clean "
            f"{und['clean_accuracy']:.3f}; MSE {und['mse']:.4f} vs "
            f"{ds['mean_image_baseline']['mse']:.4f} for the mean image). "
            f"Against SplitShield: {effect}."
        )
    lines += ["", "## Context per data set", ""]
    for ds in report["datasets"]:
        b = ds["mean_image_baseline"]
        p = ds["plan"]
        sh = ", ".join(f"{k} {v:.3f}" for k, v in ds["shield_accuracy"].items())
        t = ", ".join(f"{k} {v:.0f} s" for k, v in ds["timings_s"].items())
        lines += [
            f"**{ds['dataset']}** ({ds['source']})",
            "",
            f"- Sizes: victim train {ds['sizes']['victim_train']}, auxiliary "
            f"{ds['sizes']['auxiliary']}, test {ds['sizes']['victim_test']}.",
            f"- Epochs: victim {p['victim_epochs']}, SplitShield {p['shield_epochs']}, "
            f"reference {p['reference_epochs']}, decoder {p['decoder_epochs']}.",
            f"- Victim clean accuracy {ds['victim_clean_accuracy']:.3f}; SplitShield "
            f"accuracy per stream: {sh}.",
            f"- Reference classifier on the clean test images: "
            f"{ds['reference_clean_accuracy']:.3f} (the ceiling of attacker accuracy).",
            f"- Mean-auxiliary-image baseline (no attack): MSE {b['mse']:.4f}, PSNR "
            f"{b['psnr_db']:.2f} dB, SSIM {b['ssim']:.3f}, attacker acc "
            f"{b['attacker_accuracy']:.3f}.",
            f"- Time: {t}; data set total {ds['seconds']:.0f} s.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "breastmnist"],
                        choices=sorted(PLANS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", default="docs/results/attack_strength_split")
    parser.add_argument("--render", default=None,
                        help="re-write <out>.md from an existing JSON report, without running")
    args = parser.parse_args()
    out = Path(args.out)
    if args.render:
        text = markdown(json.loads(Path(args.render).read_text()))
        out.with_suffix(".md").write_text(text + "\n")
        print(text)
        return
    torch.set_num_threads(1)
    start = time.perf_counter()
    command = "python benchmarks/split_attack_strength.py" + (
        f" --datasets {' '.join(args.datasets)}" if args.datasets != ["mnist", "breastmnist"]
        else "") + (f" --seed {args.seed}" if args.seed else "") + (
        f" --limit {args.limit}" if args.limit else "")
    report: dict[str, Any] = {
        "command": command,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "seed": args.seed,
        "machine": machine_info(),
        "datasets": [],
    }
    for name in args.datasets:
        report["datasets"].append(run_dataset(name, args.seed, args.limit))
    report["seconds"] = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
