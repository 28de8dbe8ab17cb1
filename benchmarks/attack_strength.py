"""Strength of the federated gradient attacks on an untrained SmallConvNet.

Measures, on MNIST and BreastMNIST *test* images (the "standard" budget was
tuned on train-split images only):

- Inverting Gradients, batch 1, labels inferred by iDLG (bar: mean PSNR >= 25 dB);
- Inverting Gradients, batch 8 (labels granted, as in Geiping et al.);
- Inverting Gradients on a FedAvg update: 5 local epochs, local batch 8,
  batch 8, SGD lr 0.1 (labels granted; the setting of Jiang et al. 2025);
- iDLG label recovery at batch 1 (bar: 100%).

Batch-8 reconstructions come out in no particular order; each is paired with
an original by a minimum-MSE assignment (Hungarian, scipy) before scoring.

Usage:
    python benchmarks/attack_strength.py [--images 16] [--label-images 100]
        [--update-batches 1] [--budget standard] [--seed 0] [--jobs 2]
        [--out docs/results/attack_strength_gradient]

Writes ``OUT.json`` and ``OUT.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment

from shieldsplit.attacks import AttackContext
from shieldsplit.attacks.gradient import InvertingGradients, infer_labels_idlg
from shieldsplit.attacks.observe import observe_gradient, observe_update
from shieldsplit.data import default_data_root, load_dataset
from shieldsplit.demo import machine_info
from shieldsplit.metrics import label_recovery_rate, mse, psnr, ssim
from shieldsplit.models import SmallConvNet

BARS = {"ig_batch1": ("mean PSNR >= 25 dB", 25.0), "idlg_labels_batch1": ("100%", 1.0)}


def _summary(rec: torch.Tensor, orig: torch.Tensor) -> dict[str, Any]:
    p, s, m = psnr(rec, orig), ssim(rec, orig), mse(rec, orig)
    return {
        "n": int(orig.shape[0]),
        "psnr_mean": float(p.mean()), "psnr_median": float(p.median()),
        "ssim_mean": float(s.mean()), "ssim_median": float(s.median()),
        "mse_mean": float(m.mean()), "mse_median": float(m.median()),
        "psnr_per_image": [round(float(v), 2) for v in p],
    }


def _by_label_multiplicity(res: dict[str, Any], labels: torch.Tensor, batch: int) -> None:
    """Add the mean PSNR of images whose label is unique / repeated within their batch."""
    unique: list[float] = []
    repeated: list[float] = []
    for j in range(0, labels.shape[0], batch):
        chunk = labels[j : j + batch]
        for k in range(chunk.shape[0]):
            target = unique if int((chunk == chunk[k]).sum()) == 1 else repeated
            target.append(res["psnr_per_image"][j + k])
    res["psnr_mean_unique_label"] = statistics.fmean(unique) if unique else None
    res["psnr_mean_repeated_label"] = statistics.fmean(repeated) if repeated else None
    res["n_unique_label"], res["n_repeated_label"] = len(unique), len(repeated)


def _match(rec: torch.Tensor, orig: torch.Tensor) -> torch.Tensor:
    """Reorder a batch's reconstructions to their minimum-MSE originals."""
    cost = ((rec.unsqueeze(1) - orig.unsqueeze(0)) ** 2).flatten(2).mean(2)
    rows, cols = linear_sum_assignment(cost.numpy())
    out = torch.empty_like(rec)
    out[torch.as_tensor(cols)] = rec[torch.as_tensor(rows)]
    return out


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    ds = load_dataset(name, root=default_data_root())
    gen = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(ds.x_test.shape[0], generator=gen)
    c, h, _ = ds.x_test.shape[1:]
    torch.manual_seed(args.seed)
    net = SmallConvNet(in_channels=c, num_classes=ds.num_classes, image_size=h)
    ctx = AttackContext(image_shape=(c, h, h), num_classes=ds.num_classes, model=net,
                        budget=args.budget, seed=args.seed)
    out: dict[str, Any] = {"data": name, "test_images": int(ds.x_test.shape[0]),
                           "num_classes": ds.num_classes}

    # iDLG labels, batch 1
    idx = order[: args.label_images]
    start = time.perf_counter()
    inferred = torch.cat([
        infer_labels_idlg(
            (observe_gradient(net, ds.x_test[i : i + 1], ds.y_test[i : i + 1]).gradients or {})[
                "7.weight"
            ]
        )
        for i in idx.tolist()
    ])
    out["idlg_labels_batch1"] = {
        "n": len(idx), "rate": label_recovery_rate(inferred, ds.y_test[idx]),
        "seconds": time.perf_counter() - start,
    }

    # IG batch 1 (labels inferred inside the attack)
    idx = order[: args.images]
    x, y = ds.x_test[idx], ds.y_test[idx]
    obs = [observe_gradient(net, x[i : i + 1], y[i : i + 1]) for i in range(len(x))]
    attack = InvertingGradients(seed=args.seed, progress=False)
    attack.prepare(ctx)
    start = time.perf_counter()
    recs = attack.reconstruct_many(obs)
    res = _summary(torch.cat([r.images for r in recs]), x)
    res["seconds"] = time.perf_counter() - start
    found = [r.labels for r in recs if r.labels is not None]
    res["label_rate"] = label_recovery_rate(torch.cat(found), y)
    res["iterations"], res["restarts"] = attack.schedule()
    out["ig_batch1"] = res

    # IG batch 8 on the gradient (labels granted)
    batches = [(x[j : j + 8], y[j : j + 8]) for j in range(0, len(x) - 7, 8)]
    obs8 = [dataclasses.replace(observe_gradient(net, xb, yb), labels=yb) for xb, yb in batches]
    start = time.perf_counter()
    recs8 = attack.reconstruct_many(obs8)
    matched = torch.cat([_match(r.images, xb) for r, (xb, _) in zip(recs8, batches, strict=True)])
    res = _summary(matched, torch.cat([xb for xb, _ in batches]))
    res["seconds"] = time.perf_counter() - start
    res["batches"] = len(batches)
    _by_label_multiplicity(res, torch.cat([yb for _, yb in batches]), 8)
    out["ig_batch8_gradient"] = res

    # IG batch 8 on a 5-local-epoch FedAvg update (labels granted)
    ub = batches[: args.update_batches]
    obsu = [
        dataclasses.replace(
            observe_update(net, xb, yb, local_epochs=5, local_batch_size=8, lr=args.fedavg_lr),
            labels=yb,
        )
        for xb, yb in ub
    ]
    start = time.perf_counter()
    recsu = attack.reconstruct_many(obsu)
    matched = torch.cat([_match(r.images, xb) for r, (xb, _) in zip(recsu, ub, strict=True)])
    res = _summary(matched, torch.cat([xb for xb, _ in ub]))
    res["seconds"] = time.perf_counter() - start
    res["batches"] = len(ub)
    res["fedavg"] = dict(obsu[0].meta)
    _by_label_multiplicity(res, torch.cat([yb for _, yb in ub]), 8)
    out["ig_batch8_update"] = res
    return out


def _fmt(r: dict[str, Any]) -> str:
    return (f"{r['n']} | {r['psnr_mean']:.2f} | {r['psnr_median']:.2f} | {r['ssim_mean']:.3f} | "
            f"{r['ssim_median']:.3f} | {r['mse_mean']:.2e} | {r['mse_median']:.2e} | "
            f"{r['seconds']:.0f}")


def to_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# Gradient-inversion attack strength (federated learning)",
        "",
        f"- Command: `{result['command']}`",
        f"- Date (UTC): {result['date']}",
        f"- Machine: {m['cpus']} CPU cores (shared with other jobs), 1 torch thread per data "
        f"set, GPU: {m['gpu']}; torch {m['torch']}; {m['platform']}",
        f"- Seed: {result['seed']} (test-image selection, model init, attack init)",
        "- Victim: untrained `SmallConvNet` (DLG's LeNet: 3 conv 5x5 + Sigmoid, 1 linear; "
        "PyTorch default init)",
        f"- Attack: `InvertingGradients(budget=\"{result['budget']}\")` = "
        f"{result['schedule'][0]} iterations x {result['schedule'][1]} restarts, signed Adam "
        "lr 0.1 with step decay, cosine matching, tv_weight 0; the budget was tuned on "
        "train-split images, not on the test images reported here",
        "- Data: test split of `load_dataset(name, root=default_data_root())`; images drawn "
        "with `torch.randperm(seed)`; MNIST's test split is 2000 images of the official "
        "MNIST test set, BreastMNIST's is the official 156-image test split",
        "- Batch 8: reconstructions paired with originals by minimum-MSE assignment; labels "
        "granted (Geiping et al.'s setting). Batch 1: labels inferred by iDLG inside the attack",
        "- Seconds: wall time of the whole batched call (all images together)",
        "",
        "| data | setting | n images | PSNR mean | PSNR median | SSIM mean | SSIM median | "
        "MSE mean | MSE median | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d in result["datasets"]:
        fed = d["ig_batch8_update"]["fedavg"]
        for key, label in (
            ("ig_batch1", "IG, batch 1, gradient"),
            ("ig_batch8_gradient", "IG, batch 8, gradient"),
            ("ig_batch8_update", f"IG, batch 8, FedAvg update ({fed['local_epochs']} local "
             f"epochs, local batch {fed['local_batch_size']}, lr {fed['lr']})"),
        ):
            lines.append(f"| {d['data']} | {label} | {_fmt(d[key])} |")
    lines += ["", "## Bars", "",
              "| data | bar | ours | verdict |", "| --- | --- | --- | --- |"]
    for d in result["datasets"]:
        p = d["ig_batch1"]["psnr_mean"]
        lines.append(f"| {d['data']} | IG batch 1 mean PSNR >= 25 dB | {p:.2f} dB | "
                     f"{'reached' if p >= 25 else 'NOT reached'} |")
        r = d["idlg_labels_batch1"]
        verdict = "reached" if r["rate"] == 1.0 else "NOT reached"
        lines.append(f"| {d['data']} | iDLG labels batch 1 = 100% ({r['n']} images) | "
                     f"{100 * r['rate']:.1f}% | {verdict} |")
    lines += ["", "Labels inferred inside the batch-1 IG run: " + ", ".join(
        f"{d['data']} {100 * d['ig_batch1']['label_rate']:.0f}%" for d in result["datasets"]), ""]
    lines += [
        "## Batch 8: images whose label repeats in the batch",
        "",
        "| data | setting | unique-label images: n, mean PSNR | repeated-label images: n, "
        "mean PSNR |",
        "| --- | --- | --- | --- |",
    ]
    for d in result["datasets"]:
        for key in ("ig_batch8_gradient", "ig_batch8_update"):
            r = d[key]
            u = "-" if r["psnr_mean_unique_label"] is None else f"{r['psnr_mean_unique_label']:.2f}"
            q = "-" if r["psnr_mean_repeated_label"] is None else (
                f"{r['psnr_mean_repeated_label']:.2f}")
            lines.append(f"| {d['data']} | {key} | {r['n_unique_label']}, {u} | "
                         f"{r['n_repeated_label']}, {q} |")
    lines += [
        "",
        "At batch 8 the attack recovers images whose label is unique in the batch almost "
        "exactly, but images that share a label with another come out as a blend: on the "
        "untrained Sigmoid network the gradient barely depends on how same-label images "
        "differ, only on (roughly) their sum. On a train-split MNIST batch (tuning data) the "
        "repeated-label reconstructions were 20-24 dB from the mean of their same-label "
        "images but only 13-17 dB from either image. BreastMNIST has 2 classes, so nearly "
        "every image in a batch of 8 shares its label, which is why batch 8 fails there.",
        "",
        "Per-image PSNR (dB):",
        "",
    ]
    for d in result["datasets"]:
        for key in ("ig_batch1", "ig_batch8_gradient", "ig_batch8_update"):
            lines.append(f"- {d['data']} {key}: {d[key]['psnr_per_image']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "breastmnist"])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--label-images", type=int, default=100)
    parser.add_argument("--update-batches", type=int, default=1)
    parser.add_argument("--fedavg-lr", type=float, default=0.1)
    parser.add_argument("--budget", default="standard")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default="docs/results/attack_strength_gradient")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        datasets = list(pool.map(run_dataset, args.datasets, [args] * len(args.datasets)))
    result = {
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "seed": args.seed,
        "budget": args.budget,
        "schedule": list(InvertingGradients(budget=args.budget).schedule()),
        "total_seconds": time.perf_counter() - start,
        "datasets": datasets,
        "median_psnr_check": {
            d["data"]: statistics.median(d["ig_batch1"]["psnr_per_image"]) for d in datasets
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    md = to_markdown(result)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
