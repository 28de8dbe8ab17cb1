"""Time and scores of ``shieldsplit.audit(budget="quick")`` on the PGSL paper's network
or a torchvision ResNet-18.

Bars (issue 3 and issue 10): the paper's network, 64 BreastMNIST images, under 3 minutes on
2 cores; ResNet-18 (3-channel 28 px input, cut "layer1"), 64 images, under 5 minutes.

Usage:
    python benchmarks/audit_quick.py [--model pgsl|resnet18] [--trained] [--threads 2]
        [--profile out/audit_quick.prof]

``--trained`` loads the victim that ``benchmarks/attack_strength.py`` trained and cached
(``out/attack_strength/victim_{breastmnist,resnet}_seed0.pt``); without it the network
is untrained. ``--profile`` writes cProfile statistics (open with ``pstats``). Needs
../shared/data.
"""

from __future__ import annotations

import argparse
import cProfile
import time
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
        cached = Path(f"out/attack_strength/victim_resnet_seed{args.seed}.pt")
    if args.trained:
        net.load_state_dict(torch.load(cached))
    profiler = cProfile.Profile() if args.profile else None
    start = time.time()
    if profiler is not None:
        profiler.enable()
    report = ss.audit(net, data=(x, y), cut=cut, budget="quick", seed=args.seed,
                      progress=False)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    print(report.summary())
    print(f"model {args.model} ({'trained' if args.trained else 'untrained'}), "
          f"{args.threads} threads: total seconds {time.time() - start:.1f}")


if __name__ == "__main__":
    main()
