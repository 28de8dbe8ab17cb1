"""Per-image cost of batched gradient inversion divided by a one-image-at-a-time loop.

Both paths run Inverting Gradients with the same iterations, restarts, seed
and images on the same untrained SmallConvNet, side by side in one run:

- naive (attack API): ``for obs in observations: attack.reconstruct(obs)``
  (one image per optimisation, same vmap code with a batch of one);
- naive (plain autograd): the same Inverting Gradients steps written the usual
  way, ``torch.autograd.grad(..., create_graph=True)`` on one image at a time
  (no torch.func), so the baseline is not slowed by vmap overhead;
- batched: ``attack.reconstruct_many(observations)`` (all images, and all
  restarts, in one tensor through nested ``torch.func.vmap``).

The paths are timed in interleaved rounds; the script prints the ratio of the
median per-image times against the faster naive loop (target: at most 0.5),
the machine, the date and the command, and the PSNR of every path (signed
Adam amplifies float rounding, so paths agree in quality, not bit for bit).

Usage:
    python benchmarks/attack_batching.py [--images 8] [--iterations 100] [--restarts 4]
        [--rounds 3] [--threads 1] [--data mnist] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone

import torch
from spread import check_spread

from shieldsplit.attacks import AttackContext
from shieldsplit.attacks.gradient import InvertingGradients
from shieldsplit.attacks.observe import observe_gradient
from shieldsplit.data import default_data_root, load_dataset
from shieldsplit.experiments.demo import machine_info
from shieldsplit.functional.metrics import psnr
from shieldsplit.models import SmallConvNet


def plain_inverting_gradients(
    net: torch.nn.Module, obs, label: torch.Tensor, *, iterations: int, restarts: int,
    lr: float, seed: int,
) -> torch.Tensor:
    """Inverting Gradients on one image with plain autograd (the naive baseline)."""
    params = [p for p in net.parameters() if p.requires_grad]
    target = [obs.gradients[n] for n, p in net.named_parameters() if p.requires_grad]
    tnorm = torch.stack([t.pow(2).sum() for t in target]).sum().sqrt()
    gen = torch.Generator().manual_seed(seed)
    best, best_loss = None, float("inf")
    for _ in range(restarts):
        x = torch.rand(1, *obs.image_shape, generator=gen).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(
            opt, [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)], gamma=0.1
        )

        def match(x: torch.Tensor) -> torch.Tensor:
            loss = torch.nn.functional.cross_entropy(net(x), label)
            g = torch.autograd.grad(loss, params, create_graph=True)
            dot = sum((a * b).sum() for a, b in zip(g, target, strict=True))
            gnorm = torch.stack([a.pow(2).sum() for a in g]).sum().sqrt()
            return 1 - dot / (gnorm * tnorm + 1e-12)

        for _ in range(iterations):
            (gx,) = torch.autograd.grad(match(x), x)
            x.grad = gx.sign()
            opt.step()
            sched.step()
            with torch.no_grad():
                x.clamp_(0, 1)
        loss = float(match(x).detach())
        if loss < best_loss:
            best, best_loss = x.detach().clone(), loss
    assert best is not None
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default="mnist", help="mnist | breastmnist | digits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    root = default_data_root() if args.data != "digits" else None
    ds = load_dataset(args.data, root=root)
    x, y = ds.x_train[: args.images], ds.y_train[: args.images]
    c, h, w = x.shape[1:]
    torch.manual_seed(args.seed)
    net = SmallConvNet(in_channels=c, num_classes=ds.num_classes, image_size=h)
    observations = [observe_gradient(net, x[i : i + 1], y[i : i + 1]) for i in range(len(x))]
    attack = InvertingGradients(
        seed=args.seed, iterations=args.iterations, restarts=args.restarts, progress=False
    )
    attack.prepare(AttackContext(image_shape=(c, h, w), num_classes=ds.num_classes, model=net))

    naive_times, plain_times, batched_times = [], [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        plain = [
            plain_inverting_gradients(
                net, o, y[i : i + 1], iterations=args.iterations, restarts=args.restarts,
                lr=attack.lr, seed=args.seed,
            )
            for i, o in enumerate(observations)
        ]
        plain_times.append((time.perf_counter() - start) / len(observations))
        start = time.perf_counter()
        naive = [attack.reconstruct(o) for o in observations]
        naive_times.append((time.perf_counter() - start) / len(observations))
        start = time.perf_counter()
        batched = attack.reconstruct_many(observations)
        batched_times.append((time.perf_counter() - start) / len(observations))
    naive_img = torch.cat([r.images for r in naive])
    batched_img = torch.cat([r.images for r in batched])
    plain_img = torch.cat(plain)
    naive_median = min(statistics.median(naive_times), statistics.median(plain_times))
    ratio = statistics.median(batched_times) / naive_median
    result = {
        "ratio_batched_over_naive": round(ratio, 4),
        "ratio_vs_attack_api_loop": round(
            statistics.median(batched_times) / statistics.median(naive_times), 4
        ),
        "ratio_vs_plain_autograd_loop": round(
            statistics.median(batched_times) / statistics.median(plain_times), 4
        ),
        "target": 0.5,
        "naive_seconds_per_image": [round(t, 4) for t in naive_times],
        "plain_autograd_seconds_per_image": [round(t, 4) for t in plain_times],
        "batched_seconds_per_image": [round(t, 4) for t in batched_times],
        "images": len(observations),
        "image_shape": [c, h, w],
        "data": f"{args.data} train split, first {len(observations)} images",
        "iterations": args.iterations,
        "restarts": args.restarts,
        "rounds": args.rounds,
        "psnr_naive_mean": round(float(psnr(naive_img, x).mean()), 2),
        "psnr_plain_mean": round(float(psnr(plain_img, x).mean()), 2),
        "psnr_batched_mean": round(float(psnr(batched_img, x).mean()), 2),
        "max_abs_diff_naive_vs_batched": float((naive_img - batched_img).abs().max()),
        "machine": machine_info(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
    }
    print(f"command: {result['command']}")
    print(f"date: {result['date']}")
    m = result["machine"]
    print(f"machine: {m['cpus']} CPUs, {m['torch_threads']} torch thread(s), GPU {m['gpu']}, "
          f"torch {m['torch']}, {m['platform']}")
    print(f"workload: Inverting Gradients, {len(observations)} {args.data} images "
          f"{c}x{h}x{w}, {args.iterations} iterations, {args.restarts} restart(s), "
          f"{args.rounds} interleaved rounds")
    print(f"naive (plain autograd loop) s/image per round: "
          f"{result['plain_autograd_seconds_per_image']}")
    print(f"naive (attack API loop)     s/image per round: {result['naive_seconds_per_image']}")
    print(f"batched                     s/image per round: "
          f"{result['batched_seconds_per_image']}")
    print(f"ratio vs plain autograd loop {result['ratio_vs_plain_autograd_loop']:.3f}, "
          f"vs attack API loop {result['ratio_vs_attack_api_loop']:.3f}")
    print(f"PSNR plain {result['psnr_plain_mean']} dB, naive {result['psnr_naive_mean']} dB, "
          f"batched {result['psnr_batched_mean']} dB, "
          f"max |naive - batched| = {result['max_abs_diff_naive_vs_batched']:.2e}")
    verdict = "meets" if ratio <= 0.5 else "MISSES"
    print(f"ratio (batched / faster naive per-image time, medians): {ratio:.3f} "
          f"({verdict} target <= 0.5)")
    check = check_spread({"plain autograd loop": plain_times, "attack API loop": naive_times,
                          "batched": batched_times})
    result["spreads"] = {k: round(v, 3) for k, v in check.spreads.items()}
    result["reliable"] = check.reliable
    if not check.reliable:
        print(check.warning())
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
