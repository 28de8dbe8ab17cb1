"""PGSL Fig. 3 on real data: MSE of recovered vs original images over mu.

Trains the paper's network plainly on the BreastMNIST training split, attacks
the test images with the JSMA-style perturbation of PGSL step (b) (saliency of
that network through Captum), recovers them with the proximal-gradient robust
PCA of step (d) for each mu, and reports MSE(recovered, original) beside
MSE(perturbed, original). Nothing is tuned on the test split: the network is
trained on the training split only and mu is the swept variable.

Usage:
    python benchmarks/mu_sweep.py --data-root ../shared/data [--epochs 5] [--max-iter 100]
        [--out docs/results]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import shieldsplit as ss
from shieldsplit._core.io import atomic_write_text
from shieldsplit.data import load_dataset, make_loaders
from shieldsplit.experiments.demo import machine_info
from shieldsplit.experiments.reproduce.pgsl import map_subtraction_sentence, mu_sweep
from shieldsplit.training import accuracy, fit_plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="breastmnist")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--pixel-budget", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/results")
    args = parser.parse_args()
    started = time.perf_counter()
    ds = load_dataset(args.data, root=args.data_root, seed=args.seed)
    loaders = make_loaders(ds, batch_size=64, seed=args.seed)
    torch.manual_seed(args.seed)
    net = ss.PGSLNet(num_classes=ds.num_classes, image_size=ds.image_size[0])
    fit_plain(net, loaders.train, epochs=args.epochs, seed=args.seed, progress=False)
    net.eval()
    clean_acc = accuracy(net, loaders.test)

    x, y = ds.x_test, ds.y_test
    sweep = mu_sweep(net, x, y, pixel_budget=args.pixel_budget, max_iter=args.max_iter)
    attacked_acc, mse_attacked = sweep["attacked_accuracy"], sweep["mse_attacked"]
    rows = [{**r, "mse_attacked": mse_attacked} for r in sweep["rows"]]
    mus = [r["mu"] for r in rows]
    best = min(rows, key=lambda r: r["mse_recovered"])
    result = {
        "command": "python benchmarks/mu_sweep.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "data": f"{ds.name} test split ({len(x)} images), network trained on the train split",
        "seed": args.seed,
        "clean_test_accuracy": clean_acc,
        "attacked_test_accuracy": attacked_acc,
        "rows": rows,
        "best_mu": best["mu"],
        "recovery_lowers_mse": best["mse_recovered"] < mse_attacked,
        "seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    atomic_write_text(out / f"mu_sweep_{ds.name}.json", json.dumps(result, indent=2))
    lines = [
        f"# PGSL Fig. 3 on {ds.name}: MSE over mu",
        "",
        f"Command: `{result['command']}`  ",
        f"Date: {result['date']}; machine: {result['machine']['cpus']} cores, no GPU, "
        f"torch {result['machine']['torch']}; seed {args.seed}; {result['seconds']:.0f} s.  ",
        f"Data: {result['data']}. JSMA budget {args.pixel_budget:.0%} of the pixels, strength 1.0. "
        f"Recovery: APG robust PCA on each 28x28 image, {args.max_iter} iterations, "
        "lam = 1/sqrt(28).  ",
        f"Network accuracy on clean test images {clean_acc:.1%}, on attacked ones "
        f"{attacked_acc:.1%}.",
        "",
        "| mu | MSE recovered vs original | MSE attacked vs original | accuracy on recovered |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['mu']:.2f} | {r['mse_recovered']:.5f} | {r['mse_attacked']:.5f} | "
                     f"{r['accuracy_on_recovered']:.1%} |")
    below = sum(r["mse_recovered"] < mse_attacked for r in rows)
    verdict = (
        f"Recovery lowers the MSE below the attacked images' at {below} of the {len(rows)} "
        f"values of mu; the lowest is at mu = {best['mu']:.2f} "
        f"({best['mse_recovered']:.5f} vs {mse_attacked:.5f})."
        if result["recovery_lowers_mse"]
        else f"Recovery does **not** lower the MSE below the attacked images' at any mu: "
        f"the best is mu = {best['mu']:.2f} with {best['mse_recovered']:.5f} against "
        f"{mse_attacked:.5f} for the attacked images."
    )
    verdict += " " + map_subtraction_sentence(sweep, best["mse_recovered"])
    trend = "rises" if rows[-1]["mse_recovered"] > rows[0]["mse_recovered"] else "falls"
    paper = (
        "The paper (Fig. 3, on MIAS and MNIST; its values did not survive the text "
        "extraction) finds the lowest MSE at mu = 0.55 and picks that value. Here the MSE "
        f"{trend} with mu over the whole range, so the lowest is at an end of the sweep "
        f"(mu = {best['mu']:.2f}). A likely reason: with lam = 1/sqrt(28) and the image itself "
        "as the starting point, a larger mu shrinks more of the image's own singular values "
        "and moves more real content into the sparse part, while the 2% attacked pixels are "
        "removed already at small mu. The shield keeps the paper's mu = 0.55 by default "
        "(it acts on activations, where the scale differs; see docs/pgsl.md)."
    )
    lines += ["", verdict, "", paper, "", f"![MSE over mu](mu_sweep_{ds.name}.png)", ""]
    atomic_write_text(out / f"mu_sweep_{ds.name}.md", "\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(mus, [r["mse_recovered"] for r in rows], "o-", label="recovered vs original")
    ax.plot(mus, [mse_attacked] * len(mus), "--", label="attacked vs original")
    ax.set_xlabel("mu")
    ax.set_ylabel("MSE")
    ax.set_title(f"PGSL Fig. 3 on {ds.name} test images")
    ax.legend()
    fig.tight_layout()
    tmp = out / f".mu_sweep_{ds.name}.png.tmp"
    fig.savefig(tmp, format="png", dpi=120)
    tmp.replace(out / f"mu_sweep_{ds.name}.png")
    print("\n".join(lines))
    print(np.array([r["mse_recovered"] for r in rows]))


if __name__ == "__main__":
    main()
