"""Time of a SplitShield training step divided by a plain step of the same network.

Measured side by side in one run: the plain step, the full PGSL step and PGSL
with single steps switched off are timed in interleaved rounds, and the
script prints the ratio of medians. It also times the recovery alone and an
Opacus DP-SGD step on the same network for comparison.

Usage:
    python benchmarks/pgsl_overhead.py [--rounds 7] [--batch 64] [--size 28] [--json out.json]

Prints the machine (cores, threads), the date, and every figure it measured. When
the rounds of a variant disagree by more than the stated spread
(``benchmarks/spread.py``), it prints, and the page says, that the figures are
unreliable.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone

import torch
import torch.nn.functional as F
from spread import check_spread

import shieldsplit as ss
from shieldsplit.experiments.demo import machine_info
from shieldsplit.training import make_optimizer


def plain_step(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], None]:
    opt, _ = make_optimizer(model.parameters(), ss.config.TrainConfig())

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def shield_step(shield: ss.SplitShield) -> Callable[[torch.Tensor, torch.Tensor], None]:
    client_opt, server_opt, _ = shield.optimizers()
    shield.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        shield.train_step(x, y, client_opt, server_opt)

    return step


def dpsgd_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator

    model = ModuleValidator.fix(copy.deepcopy(model))  # BatchNorm -> GroupNorm
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=len(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, opt, _ = PrivacyEngine().make_private(
            module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.0,
            max_grad_norm=1.0, poisson_sampling=False,
        )

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--json", default=None)
    parser.add_argument("--md", default=None, help="write a Markdown page here")
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, args.size, args.size)
    y = torch.randint(0, 2, (args.batch,))
    net = ss.PGSLNet(num_classes=2, image_size=args.size)
    cfg = ss.PGSLConfig()
    other = 4 - cfg.unshuffle.upsample_kernel  # the up-sampler kernel the default does not use
    variants: dict[str, Callable[[torch.Tensor, torch.Tensor], None]] = {
        "plain": plain_step(copy.deepcopy(net)),
        "pgsl": shield_step(ss.SplitShield(net, cut=2, config=cfg)),
        f"pgsl_upsample_kernel{other}": shield_step(ss.SplitShield(net, cut=2, config=ss.PGSLConfig(
            unshuffle={"upsample_kernel": other}))),
        "pgsl_no_recovery": shield_step(ss.SplitShield(net, cut=2, config=cfg.model_copy(
            update={"recovery": ss.config.RecoveryConfig(enabled=False),
                    "fusion": ss.config.FusionConfig(enabled=False)}))),
        "pgsl_no_saliency": shield_step(ss.SplitShield(net, cut=2, config=cfg.model_copy(
            update={"saliency": ss.config.SaliencyConfig(enabled=False),
                    "perturb": ss.config.PerturbConfig(enabled=False)}))),
        "split_off": shield_step(ss.SplitShield(net, cut=2, config=ss.PGSLConfig.off())),
        "opacus_dpsgd": dpsgd_step(net, x, y),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():  # warm-up
        fn(x, y)
    for _ in range(args.rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn(x, y)
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    check = check_spread(times)

    # recovery alone, as the server runs it: on the activations it receives (the client
    # works at half resolution, so 64 x 196 matrices per image), before up-sampling
    shield = ss.SplitShield(net, cut=2, config=cfg)
    received = shield.client(x).activations
    recovery = shield.recovery
    if recovery is None:
        raise SystemExit("the default PGSLConfig has recovery switched off: nothing to time")
    rec_times = []
    with torch.no_grad():
        recovery(received)
        for _ in range(args.rounds):
            start = time.perf_counter()
            recovery(received)
            rec_times.append(time.perf_counter() - start)
    rec = statistics.median(rec_times)

    result = {
        "command": "python benchmarks/pgsl_overhead.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items() if v is not None),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "recovery_input_shape": list(received.shape),
        "setup": f"PGSLNet (7 conv 3x3/64 + 2 FC), cut=2, {args.size}x{args.size}x1, "
        f"batch {args.batch}, {args.rounds} interleaved rounds, medians",
        "median_seconds": med,
        "ratio_to_plain": {k: v / med["plain"] for k, v in med.items()},
        "recovery_seconds_per_batch": rec,
        "recovery_images_per_second": args.batch / rec,
        "recovery_share_of_pgsl_step": rec / med["pgsl"],
        "round_spread": check.spreads,
        "spread_limit": check.limit,
        "reliable": check.reliable,
        "warning": check.warning(),
    }
    print(f"date {result['date']}  machine {result['machine']}")
    print(result["setup"])
    for k in variants:
        print(f"  {k:18s} {med[k]:7.3f} s/step   {med[k] / med['plain']:5.2f}x plain")
    print(f"  recovery alone     {rec:7.3f} s/batch  {args.batch / rec:8.1f} images/s  "
          f"{rec / med['pgsl']:.1%} of a PGSL step")
    if not check.reliable:
        print(check.warning())
    from shieldsplit._core.io import atomic_write_text

    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    if args.md:
        atomic_write_text(args.md, markdown(result, med, rec, args.batch))


#: What each timed variant runs.
ROWS = {
    "plain": "plain training step (Adam with the paper's decay)",
    "pgsl": "**SplitShield, default config (all PGSL steps)**",
    "pgsl_upsample_kernel1": "SplitShield, sub-pixel up-sampler with a 1x1 kernel",
    "pgsl_upsample_kernel3": "SplitShield, sub-pixel up-sampler with a 3x3 kernel",
    "pgsl_no_recovery": "SplitShield without recovery and fusion (one stream)",
    "pgsl_no_saliency": "SplitShield without saliency and perturbation",
    "split_off": "SplitShield with every step off (plain split learning)",
    "opacus_dpsgd": "Opacus DP-SGD (noise 1.0, clip 1.0; BatchNorm replaced by GroupNorm)",
}


def markdown(result: dict, med: dict[str, float], rec: float, batch: int) -> str:
    """The page: command, machine, the table and the issue's targets."""
    m = result["machine"]
    ratio = med["pgsl"] / med["plain"]
    share = rec / med["pgsl"]

    def verdict(ok: bool) -> str:
        return "**reached**" if ok else "**not reached**"

    lines = [
        "# Cost of a SplitShield training step",
        "",
        f"Command: `{result['command']}`  ",
        f"Date: {result['date']}; machine: {m['cpus']} cores ({m['torch_threads']} torch "
        f"threads), no GPU, torch {m['torch']}, Python {m['python']}, {m['platform']}.  ",
        f"Setup: {result['setup']}; random images; every variant is timed in "
        "interleaved rounds in one run, after one warm-up step each. Spread of rounds: "
        f"(max - min) / median; above {result['spread_limit']:.0%} the figures are "
        "declared unreliable.",
    ]
    if not result["reliable"]:
        lines += ["", f"**{result['warning']}**"]
    lines += [
        "",
        "| variant | s/step | ratio to plain | spread of rounds |",
        "| --- | --- | --- | --- |",
    ]
    for k, v in med.items():
        lines.append(f"| {ROWS.get(k, k)} | {v:.3f} | {v / med['plain']:.2f} "
                     f"| {result['round_spread'][k]:.0%} |")
    lines += [
        "",
        f"Recovery alone, as the server runs it (APG on the received activations, "
        f"{' x '.join(map(str, result['recovery_input_shape']))}): {rec:.3f} s per batch, "
        f"**{batch / rec:.0f} images/s**, **{share:.1%}** of a PGSL step.",
        "",
        "## Against the targets of issue 2",
        "",
        f"- At most 3x a plain step: {verdict(ratio <= 3)} ({ratio:.2f}x). "
        f"Aim of 2.5x: {verdict(ratio <= 2.5)}.",
        f"- Recovery at most 25% of the step: {verdict(share <= 0.25)} ({share:.1%}).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
