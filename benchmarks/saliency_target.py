"""PGSL's saliency target in training: the true label (paper eq. 1) or the probe's prediction.

Trains SplitShield twice per seed from the same initial weights, once with
``saliency.target="label"`` (the map of a training image is taken against its true
label; at inference, with no label, against the probe's prediction) and once with
``"predicted"`` (the prediction in training too), and compares the decision
fusion's accuracy and balanced accuracy on the **validation** split (the test split
is not read: this page chooses a default). The verdict sentence is computed: the
two settings are told apart only when the seed means differ by more than both
settings' seed spreads.

Usage:
    python benchmarks/saliency_target.py --data breastmnist --data-root ../shared/data \
        --epochs 15 --seeds 0 1 2 --out docs/results
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from shieldsplit import PGSLConfig, PGSLNet, SplitShield
from shieldsplit._core.io import atomic_write_text
from shieldsplit._core.provenance import load_note
from shieldsplit.data import load_dataset, make_loaders
from shieldsplit.functional.stats import balanced_accuracy, majority_rate

TARGETS = ("label", "predicted")


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, dict[str, float]]:
    """Validation scores of both targets for one seed (same data split, same weights)."""
    ds = load_dataset(args.data, root=args.data_root, seed=seed, limit=args.limit)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        initial = PGSLNet(in_channels=ds.in_channels, num_classes=ds.num_classes,
                          image_size=ds.image_size[0], width=args.width, hidden=args.hidden)
    out: dict[str, dict[str, float]] = {}
    for target in TARGETS:
        loaders = make_loaders(ds, batch_size=args.batch_size, seed=seed)
        shield = SplitShield(copy.deepcopy(initial), cut=2, seed=seed,
                             config=PGSLConfig(saliency={"target": target}))
        start = time.perf_counter()
        shield.fit(loaders.train, epochs=args.epochs, val_loader=loaders.val, seed=seed,
                   progress=False, restore_best=True)
        proba = shield.predict_proba(ds.x_val)
        pred = proba.argmax(-1)
        out[target] = {
            "accuracy": float((pred == ds.y_val).float().mean()),
            "balanced_accuracy": balanced_accuracy(pred, ds.y_val),
            "seconds": time.perf_counter() - start,
        }
        print(f"seed {seed} target {target}: {out[target]}", flush=True)
    out["majority"] = {"rate": majority_rate(ds.y_val)}
    return out


def verdict(runs: list[dict[str, dict[str, float]]], key: str) -> str:
    """One computed sentence: which target is better on ``key``, or inconclusive."""
    vals = {t: [r[t][key] for r in runs] for t in TARGETS}
    mean = {t: statistics.fmean(v) for t, v in vals.items()}
    spread = {t: (max(v) - min(v)) for t, v in vals.items()}
    gap = mean["label"] - mean["predicted"]
    if len(runs) < 2 or abs(gap) <= max(spread.values()):
        return (f"{key}: label {mean['label']:.3f}, predicted {mean['predicted']:.3f}; the gap "
                f"{gap:+.3f} is within the seeds' spread ({max(spread.values()):.3f}): "
                "*inconclusive*, the two targets are not told apart")
    better = "label" if gap > 0 else "predicted"
    return (f"{key}: label {mean['label']:.3f}, predicted {mean['predicted']:.3f}; "
            f"**{better}** is better by {abs(gap):.3f}, more than the seeds' spread "
            f"({max(spread.values()):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="breastmnist")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="docs/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = [run_seed(args, s) for s in args.seeds]
    out = Path(args.out)
    name = f"saliency_target_{args.data}"
    atomic_write_text(out / f"{name}.json", json.dumps({"args": vars(args), "runs": runs},
                                                      indent=2))
    rows = "\n".join(
        f"| {s} | {t} | {r[t]['accuracy']:.3f} | {r[t]['balanced_accuracy']:.3f} | "
        f"{r['majority']['rate']:.3f} | {r[t]['seconds']:.0f} |"
        for s, r in zip(args.seeds, runs, strict=True) for t in TARGETS
    )
    cmd = (f"python benchmarks/saliency_target.py --data {args.data} --data-root <data> "
           f"--epochs {args.epochs} --seeds {' '.join(map(str, args.seeds))} --width {args.width} "
           f"--hidden {args.hidden} --threads {args.threads}"
           + (f" --limit {args.limit}" if args.limit else ""))
    header = "  \n".join([
        f"Command: `{cmd}`",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: "
        f"{os.cpu_count()} cores, {args.threads} torch thread(s), "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}; "
        f"{load_note(os.getloadavg()[0], own=args.threads)}.",
        f"Data: {args.data}, validation split only (the test split is not read); PGSLNet "
        f"width {args.width}, hidden {args.hidden}, cut 2, {args.epochs} epochs, the best "
        "validation epoch kept.",
    ])
    page = f"""# PGSL saliency target in training: true label or prediction (validation split)

{header}

| seed | target in training | val accuracy | val balanced accuracy | majority rate | s |
| --- | --- | --- | --- | --- | --- |
{rows}

- {verdict(runs, "balanced_accuracy")}
- {verdict(runs, "accuracy")}

At inference both settings take the map against the probe's prediction (no label
is known). Seconds include other agents' load and are not a timing result.
"""
    atomic_write_text(out / f"{name}.md", page)
    print(page)


if __name__ == "__main__":
    main()
