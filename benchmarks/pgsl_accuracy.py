"""SplitShield vs plain training of the PGSL paper's network: test accuracy side by side.

Runs ``shieldsplit.experiments.demo.run_demo`` (the same job as ``shieldsplit demo``) for
each seed and writes a Markdown table and the JSON reports. Both models use
the same data split, initial weights, optimiser and epochs; with
``--restore-best`` each keeps the weights of its best validation epoch
(selection on the validation split, never on the test split).

Each seed's report is kept in ``--cache`` as soon as it finishes, so an
interrupted run resumes, and seeds run in separate processes can be joined
afterwards by one call that lists them all. ``--pgsl`` takes a JSON
``PGSLConfig`` (for example ``'{"perturb": {"pixel_budget": 0.005}}'``) and
``--name`` names the pages of such a variant. The models are not audited here:
this page is about accuracy only.

Usage:
    python benchmarks/pgsl_accuracy.py --data breastmnist --data-root ../shared/data \
        --epochs 30 --restore-best --seeds 0 1 2 --out docs/results
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from pathlib import Path

import torch

from shieldsplit._core.io import atomic_write_text
from shieldsplit.defenses.pgsl.config import PGSLConfig
from shieldsplit.experiments.demo import DemoOptions, DemoReport, run_demo


def cached_run(options: DemoOptions, cache: Path) -> DemoReport:
    """Run one seed, or load its report when the same options already ran."""
    key = hashlib.sha256(options.model_dump_json().encode()).hexdigest()[:16]
    path = cache / f"{options.data}_seed{options.seed}_{key}.json"
    if path.exists():
        print(f"seed {options.seed}: cached in {path}", file=sys.stderr)
        return DemoReport.model_validate_json(path.read_text())
    report = run_demo(options)
    atomic_write_text(path, report.model_dump_json(indent=2))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="breastmnist")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--restore-best", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("--cache", default="out/pgsl_accuracy_cache")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--pgsl", default="{}", help="PGSLConfig as JSON")
    parser.add_argument("--name", default="", help="suffix of the page names")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = PGSLConfig.model_validate_json(args.pgsl)
    reports = [
        cached_run(DemoOptions(data=args.data, data_root=args.data_root, epochs=args.epochs,
                               seed=seed, restore_best=args.restore_best, progress=False,
                               audit=False, pgsl=config), Path(args.cache))
        for seed in args.seeds
    ]
    out = Path(args.out)
    name = f"pgsl_accuracy_{args.data}" + (f"_{args.name}" if args.name else "")
    atomic_write_text(out / f"{name}.json",
                      json.dumps([r.model_dump(mode="json") for r in reports], indent=2))
    keys = ["plain", "attacked", "fused", "recovered", "decision"]

    def acc(r: DemoReport, k: str) -> float:
        return r.plain_test_accuracy if k == "plain" else r.shield_test_accuracy[k]

    def val(r: DemoReport) -> str:
        """Validation accuracy of the kept epoch (the selection criterion), plain / PGSL."""
        if r.plain_history.best_epoch is None or r.shield_history.best_epoch is None:
            return "-"
        p = r.plain_history.epochs[r.plain_history.best_epoch - 1].val_accuracy
        s = r.shield_history.epochs[r.shield_history.best_epoch - 1].val_accuracy
        return f"{p:.1%} / {s['decision']:.1%}" if p is not None and s else "-"

    first = reports[0]
    lines = [
        f"# SplitShield vs plain training on {args.data}: test accuracy",
        "",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"Date: {first.date}; machine: {first.machine['cpus']} cores, no GPU, "
        f"torch {first.machine['torch']}.  ",
        f"Data: {first.dataset}; "
        + ("official" if args.data in ("breastmnist", "pneumoniamnist") else "seeded")
        + " train/val/test split; test accuracy on the test split.  ",
        "Network: the PGSL paper's 7-conv/2-FC network, cut=2, "
        + ("default PGSLConfig (all steps on)" if config == PGSLConfig()
           else f"PGSLConfig changed from the default by `{args.pgsl}`")
        + f", Adam lr 1e-3 with decay 3e-4, batch 64, {args.epochs} epochs"
        + (", weights of the best validation epoch kept for each model" if args.restore_best
           else "") + ".",
        "",
        "| seed | plain | attacked stream | fused stream | recovered stream | decision fusion "
        "| plain - decision | best epoch plain / PGSL | val. accuracy there plain / PGSL "
        "| seconds plain / PGSL |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in reports:
        lines.append(
            f"| {r.options.seed} | " + " | ".join(f"{acc(r, k):.1%}" for k in keys)
            + f" | {100 * (acc(r, 'plain') - acc(r, 'decision')):+.1f} pts"
            + f" | {r.plain_history.best_epoch} / {r.shield_history.best_epoch} | {val(r)}"
            + f" | {r.seconds['plain']:.0f} / {r.seconds['splitshield']:.0f} |"
        )
    if len(reports) > 1:
        def ms(k: str) -> str:
            vals = [acc(r, k) for r in reports]
            return f"{statistics.mean(vals):.1%} ± {statistics.stdev(vals):.1%}"
        gaps = [100 * (acc(r, "plain") - acc(r, "decision")) for r in reports]
        lines.append("| mean ± sd | " + " | ".join(ms(k) for k in keys)
                     + f" | {statistics.mean(gaps):+.1f} pts | | | |")
    gap = statistics.mean(100 * (acc(r, "plain") - acc(r, "decision")) for r in reports)
    lines += [
        "",
        f"Target (issue 2): fused-decision accuracy within 3 points of plain training, or better. "
        f"Measured gap: {gap:+.1f} points (positive = PGSL below plain): "
        + ("**reached**." if gap <= 3.0 else "**not reached**."),
        "",
    ]
    atomic_write_text(out / f"{name}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
