"""Time of a training step of every registered defence divided by a plain step.

Every defence in ``shieldsplit.available_defenses()`` wraps the same ``PGSLNet``
(same initial weights, same cut) and trains with its own ``fit`` on the same
batch, side by side with plain training of the unwrapped network
(``shieldsplit.training.fit_plain``, the paper's Adam), in interleaved rounds.

What is timed: each round runs, per variant, ``fit(loader, epochs=1)`` over a
loader that yields ``--steps`` copies of one batch (the first ``--batch-size``
training images). The data set records the moment the training loop asks for
each batch, so the interval between two consecutive requests is one whole
training step as the defence's own ``fit`` runs it (forward, backward,
optimiser and scheduler steps, the defence's extra passes, the loop's
bookkeeping). The first interval of every fit is dropped (lazy set-up: optimiser
creation, a latent decoder built at the first batch, Opacus's first step) and
so is the last step (it ends with the epoch's bookkeeping); the table gives the
median over all remaining intervals of all timed rounds, after one untimed
warm-up fit per variant. The whole fit's wall time divided by its steps
(per-fit set-up included: state snapshot, ``make_private``, ...) is reported
beside it, and so is inference: the median of ``--repeats`` ``predict_proba``
calls on the batch (after one warm-up call) against ``softmax(model(x))`` of the
plainly trained network.

Usage:
    python benchmarks/defense_overhead.py [--data digits] [--batch-size 64] [--repeats 5]
        [--steps 6] [--threads 1] [--out docs/results]
    python benchmarks/defense_overhead.py --data breastmnist --data-root ../shared/data

Writes ``defense_overhead.json`` and ``defense_overhead.md`` (atomically) to ``--out``
and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from spread import check_spread
from torch.utils.data import DataLoader, Dataset

import shieldsplit as ss
from shieldsplit._core.io import atomic_write_text
from shieldsplit.data import default_data_root, load_dataset
from shieldsplit.experiments.demo import machine_info
from shieldsplit.training import fit_plain

PLAIN = "plain"

#: What a timed step of each defence contains besides the wrapped network's own
#: forward, backward and Adam step (read off each defence's ``fit``).
STEP_NOTES = {
    PLAIN: "unwrapped PGSLNet, fit_plain (cross-entropy, Adam with per-step decay)",
    "none": "the same network split at the cut, CutDefense.fit (batch checks only)",
    "pgsl": "SplitShield.train_step: saliency pass (Captum, client probe), JSMA perturbation, "
            "unshuffle, three server streams, APG recovery, fusion; two optimisers",
    "latent-fixed": "decoder step (maximise r) then encoder+predictor step (CE + lam*r); "
                    "fixed Gaussian noise on the latent",
    "latent-learned": "as latent-fixed with m, s trainable (the pre-training step of "
                      "Algorithm 1; its protocol runs pretrain_noise then fit, twice the steps)",
    "dpsgd": "Opacus: per-example gradients, clipping, Gaussian noise (private Adam); "
             "BatchNorm -> GroupNorm; Poisson-sampled batches of expected size --batch-size",
    "nopeek": "cross-entropy + alpha * distance correlation of the batch at the cut",
    "laplace": "Laplace noise added to the cut activations",
    "bido": "cross-entropy + two biased HSIC terms (Gaussian kernels) at the cut",
    "jsma-input": "saliency pass (Captum) and JSMA perturbation of the images, then the plain "
                  "network",
}


class StampedBatches(Dataset):
    """``copies`` copies of one batch; stamps the time of every batch request.

    ``DataLoader`` (and Opacus's ``DPDataLoader`` built from it) fetch a whole batch
    with one ``__getitems__`` call, so :attr:`stamps` holds one entry per step.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, copies: int) -> None:
        self.x = x.repeat(copies, *([1] * (x.dim() - 1)))
        self.y = y.repeat(copies)
        self.stamps: list[float] = []

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        self.stamps.append(time.perf_counter())
        return [(self.x[i], self.y[i]) for i in indices]


def timed_fit(fit: Callable[[DataLoader], Any], data: StampedBatches,
              loader: DataLoader) -> tuple[list[float], float, int]:
    """Run one fit; return its step intervals (first dropped), wall time and steps."""
    data.stamps.clear()
    start = time.perf_counter()
    fit(loader)
    wall = time.perf_counter() - start
    stamps = list(data.stamps)
    steps = len(stamps)
    intervals = [b - a for a, b in itertools.pairwise(stamps)][1:]
    return intervals, wall, steps


def plain_proba(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def proba(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return F.softmax(model.eval()(x), dim=-1)

    return proba


def median_call(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per variant")
    parser.add_argument("--steps", type=int, default=6, help="batches per timed fit (>= 3)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cut", type=int, default=2)
    parser.add_argument("--width", type=int, default=64, help="PGSLNet conv width (paper: 64)")
    parser.add_argument("--hidden", type=int, default=128, help="PGSLNet FC width")
    parser.add_argument("--defenses", default=None,
                        help="comma-separated subset (default: every registered defence)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    if args.steps < 3 or args.repeats < 1 or args.batch_size < 2 or args.threads < 1:
        parser.error("need --steps >= 3, --repeats >= 1, --batch-size >= 2, --threads >= 1")
    torch.set_num_threads(args.threads)
    logging.getLogger("shieldsplit").setLevel(logging.ERROR)  # DP-SGD's GroupNorm notice
    warnings.filterwarnings("ignore", category=UserWarning)

    root = args.data_root or (default_data_root() if args.data != "digits" else None)
    ds = load_dataset(args.data, root=root, seed=args.seed)
    x = ds.x_train[: args.batch_size].clone()
    y = ds.y_train[: args.batch_size].clone()
    torch.manual_seed(args.seed)
    net = ss.PGSLNet(in_channels=ds.in_channels, num_classes=ds.num_classes,
                     image_size=ds.image_size[0], width=args.width, hidden=args.hidden)
    data = StampedBatches(x, y, args.steps)
    loader = DataLoader(data, batch_size=len(x), shuffle=False)

    names = (args.defenses.split(",") if args.defenses else ss.available_defenses())
    names = [n.strip() for n in names if n.strip()]
    plain_model = copy.deepcopy(net)
    fits: dict[str, Callable[[DataLoader], Any]] = {
        PLAIN: lambda dl: fit_plain(plain_model, dl, epochs=1, seed=args.seed, progress=False),
    }
    probas: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        PLAIN: plain_proba(plain_model)}
    options: dict[str, dict[str, Any]] = {PLAIN: {}}
    errors: dict[str, str] = {}
    for name in names:
        try:
            defense = ss.create_defense(name, net, cut=args.cut, seed=args.seed)
        except Exception as exc:  # report, measure the others
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        fits[name] = (lambda d: lambda dl: d.fit(dl, epochs=1, seed=args.seed,
                                                 progress=False))(defense)
        probas[name] = defense.predict_proba
        options[name] = defense.options()

    # warm-up: one untimed fit per variant (drops a variant that cannot train)
    for name in list(fits):
        try:
            timed_fit(fits[name], data, loader)
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            del fits[name]
    if PLAIN not in fits:
        raise SystemExit(f"plain training failed: {errors[PLAIN]}")

    intervals: dict[str, list[float]] = {k: [] for k in fits}
    walls: dict[str, list[float]] = {k: [] for k in fits}
    steps_seen: dict[str, list[int]] = {k: [] for k in fits}
    for _ in range(args.repeats):  # interleaved rounds: load drift hits every variant
        for name, fit in fits.items():
            iv, wall, steps = timed_fit(fit, data, loader)
            intervals[name] += iv
            walls[name].append(wall / max(steps, 1))
            steps_seen[name].append(steps)

    infer: dict[str, float] = {}
    for name in fits:
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(args.seed)
                infer[name] = median_call(lambda f=probas[name]: f(x), args.repeats)
        except Exception as exc:
            errors.setdefault(name, f"predict_proba: {type(exc).__name__}: {exc}")

    check = check_spread({k: v for k, v in walls.items() if v})  # per-round s/step
    if not check.reliable:
        print(check.warning())
    step = {k: statistics.median(v) for k, v in intervals.items() if v}
    fit_wall = {k: statistics.median(v) for k, v in walls.items()}
    base, base_wall, base_inf = step[PLAIN], fit_wall[PLAIN], infer.get(PLAIN)
    rows = []
    for name in [PLAIN, *names]:
        if name not in fits:
            rows.append({"variant": name, "error": errors.get(name, "not built")})
            continue
        inf = infer.get(name)
        rows.append({
            "variant": name,
            "options": options[name],
            "timed": STEP_NOTES.get(name, "the defence's own fit"),
            "step_seconds": step.get(name),
            "step_ratio_to_plain": step[name] / base if name in step else None,
            "step_samples": len(intervals[name]),
            "fit_seconds_per_step": fit_wall[name],
            "fit_ratio_to_plain": fit_wall[name] / base_wall,
            "steps_per_fit": steps_seen[name],
            "predict_proba_seconds": inf,
            "predict_proba_ratio_to_plain": inf / base_inf if inf and base_inf else None,
            "error": errors.get(name),
        })

    machine = machine_info()
    command = "python benchmarks/defense_overhead.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None)
    setup = (f"PGSLNet (7 conv 3x3/{args.width} + FC {args.hidden}), cut={args.cut}, "
             f"{args.data} {ds.image_size[0]}x{ds.image_size[1]}x{ds.in_channels}, "
             f"batch {args.batch_size} (the first training images), {args.steps} steps per "
             f"fit, 1 warm-up fit + {args.repeats} interleaved timed fits per variant")
    now = datetime.now(timezone.utc)
    result = {
        "command": command,
        "date": now.isoformat(timespec="seconds"),
        "machine": machine,
        "torch": torch.__version__,
        "threads": args.threads,
        "setup": setup,
        "timed": __doc__.split("What is timed: ", 1)[1].split("\n\nUsage:", 1)[0]
        .replace("\n", " ").replace("``", "`"),
        "rows": rows,
        "spreads": {k: round(v, 3) for k, v in check.spreads.items()},
        "reliable": check.reliable,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "defense_overhead.json", json.dumps(result, indent=2))

    gpu = machine.get("gpu", "none")
    md = [
        "# Cost of each defence's training step",
        "",
        f"Command: `{command}`  ",
        f"Date: {now:%Y-%m-%d %H:%M} UTC; machine: {machine['cpus']} cores, torch threads "
        f"{args.threads}, {'no GPU' if gpu == 'none' else gpu} (run on CPU), "
        f"torch {torch.__version__}, Python {machine['python']}.  ",
        f"Setup: {setup}.",
        "",
        "What is timed: " + result["timed"],
        "",
        *([f"**{check.warning()}**", ""] if not check.reliable else
          [f"Rounds agree: every variant's spread (max - min) / median of its per-round "
           f"s/step is at most {check.limit:.0%} (largest "
           f"{max(check.spreads.values()):.0%}).", ""]),
        "| defence | s/step (median step in fit) | ratio to plain | fit s/step (incl. set-up) "
        "| ratio | predict_proba s/batch | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "step_seconds" not in r:
            md.append(f"| {r['variant']} | failed: {r['error']} | | | | | |")
            continue
        md.append(
            f"| {r['variant']} | {fmt(r['step_seconds'], '.4f')} "
            f"| {fmt(r['step_ratio_to_plain'], '.2f')} | {r['fit_seconds_per_step']:.4f} "
            f"| {r['fit_ratio_to_plain']:.2f} | {fmt(r['predict_proba_seconds'], '.4f')} "
            f"| {fmt(r['predict_proba_ratio_to_plain'], '.2f')} |")
    md += ["", "What a step of each variant contains:", ""]
    md += [f"- `{r['variant']}`: {r['timed']}" + (f" (error: {r['error']})" if r.get("error")
                                                    else "")
           for r in rows if "timed" in r]
    md += ["", "Each defence is built with its registry defaults "
           "(`shieldsplit.create_defense(name, net, cut=..., seed=...)`); the options are in "
           "`defense_overhead.json`."]
    atomic_write_text(args.out / "defense_overhead.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
