"""Time and scores of ``shieldsplit.audit(budget="quick")`` on the PGSL paper's network
or a torchvision ResNet-18.

Bars (issue 3 and issue 10): the paper's network, 64 BreastMNIST images, under 3 minutes on
2 cores; ResNet-18 (3-channel 28 px input, cut "layer1"), 64 images, under 5 minutes.

Usage:
    python benchmarks/audit_quick.py [--model pgsl|resnet18] [--trained] [--threads 2]
        [--profile out/audit_quick.prof] [--page docs/results/audit_quick_breastmnist.md]

``--trained`` loads the victim that ``benchmarks/attack_strength.py`` trained and cached
(``out/attack_strength/victim_breastmnist_seed0.pt``, ``victim_resnet_seed0_val20.pt``:
the ResNet-18 kept at its best validation epoch of 20); without it the network
is untrained. ``--profile`` writes cProfile statistics (open with ``pstats``). ``--page``
writes the results page (command, date, machine and load, the report, the bar's verdict).
Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

import shieldsplit as ss
from shieldsplit.data import default_data_root, load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", choices=("pgsl", "resnet18"), default="pgsl")
    parser.add_argument("--trained", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--page", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset("breastmnist", root=default_data_root(), seed=args.seed)
    x, y = ds.x_train, ds.y_train
    torch.manual_seed(args.seed)
    if args.model == "pgsl":
        net: nn.Module = ss.PGSLNet(num_classes=2, image_size=28)
        cut: int | str = 2
        cached = Path(f"out/attack_strength/victim_breastmnist_seed{args.seed}.pt")
    else:
        from torchvision.models import resnet18

        net = resnet18(num_classes=2)
        x = x.expand(-1, 3, -1, -1).contiguous()
        cut = "layer1"
        cached = Path(f"out/attack_strength/victim_resnet_seed{args.seed}_val20.pt")
    if args.trained:
        net.load_state_dict(torch.load(cached, weights_only=True))
    profiler = cProfile.Profile() if args.profile else None
    cpu_start = time.process_time()
    start = time.time()
    if profiler is not None:
        profiler.enable()
    report = ss.audit(net, data=(x, y), cut=cut, budget="quick", seed=args.seed,
                      progress=False)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    seconds = time.time() - start
    cpu = time.process_time() - cpu_start
    load = os.getloadavg()
    print(report.summary())
    print(f"model {args.model} ({'trained' if args.trained else 'untrained'}), "
          f"{args.threads} threads: total seconds {seconds:.1f} (CPU {cpu:.1f} s)")
    if args.page is not None:
        write_page(args, report, seconds, load, start, cpu)


#: Wall-time bars per model (seconds on 2 cores).
BARS = {"pgsl": 180.0, "resnet18": 300.0}


def write_page(args: argparse.Namespace, report: ss.AuditReport, seconds: float,
               load: tuple[float, float, float], start: float, cpu: float) -> None:
    """The results page: every number and sentence from this run."""
    from shieldsplit._core.io import atomic_write_text
    from shieldsplit._core.provenance import load_note, other_work_ran
    from shieldsplit.experiments.demo import machine_info

    m = machine_info()
    bar = BARS[args.model]
    verdict = "reached" if seconds <= bar else "**not reached**"
    busy = other_work_ran(load[0], own=args.threads)  # the audit's threads count too
    trained = ("trained (the victim of benchmarks/attack_strength.py)" if args.trained
               else "untrained")
    by_position = "; ".join(f"{v.label}: {v.verdict}" for v in report.verdicts)
    lines = [
        f"# A quick audit of the {'paper network' if args.model == 'pgsl' else 'ResNet-18'}: "
        "time, scores and verdicts",
        "",
        f"Command: `python benchmarks/audit_quick.py "
        f"{' '.join(shlex.quote(a) for a in sys.argv[1:])}`  ",
        f"Date: {datetime.fromtimestamp(start, timezone.utc):%Y-%m-%d %H:%M} UTC; machine: "
        f"{m['cpus']} cores, {args.threads} torch threads, GPU {m['gpu']}, torch "
        f"{m['torch']}; {load_note(load[0], own=args.threads)}.  ",
        f"Data: BreastMNIST training split, {report.victims} victims, {report.auxiliary} "
        f"auxiliary images (seed {args.seed}).  ",
        f"Model: {report.model}, {trained}, "
        f"cut {report.cut}, budget quick, clean accuracy on the victims "
        f"{report.clean_accuracy:.1%} (majority class {report.majority_rate:.1%}).",
        "",
        "```",
        report.summary(),
        "```",
        "",
        f"Wall time {seconds:.0f} s against the bar of {bar:.0f} s: {verdict}. "
        f"The process used {cpu:.0f} s of CPU time over its {args.threads} threads "
        f"({cpu / max(seconds, 1e-9):.2f} cores busy on average"
        + (", so other work held the rest of the machine)." if busy else ").")
        + f" Verdicts per attacker position: {by_position}.",
    ]
    atomic_write_text(args.page, "\n".join(lines) + "\n")
    # the record docs quote from (benchmarks/quotes.py): timing, load and the verdicts
    record = {"command": lines[2].removeprefix("Command: `").split("`")[0],
              "date": f"{datetime.fromtimestamp(start, timezone.utc):%Y-%m-%d %H:%M} UTC",
              "seconds": seconds, "cpu_seconds": cpu, "bar_seconds": bar,
              "load_average": load[0], "threads": args.threads, "seed": args.seed,
              "machine": m, "verdicts": {v.position: v.verdict for v in report.verdicts},
              "report": json.loads(report.model_dump_json())}
    atomic_write_text(args.page.with_suffix(".json"), json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
