"""shieldsplit's Inverting Gradients in the setting of issue 10's breaching reference.

Issue 10's reference point was a setting in which an earlier session ran breaching's
Inverting Gradients: an *untrained* 3-conv ReLU network, MNIST, 1000 iterations, labels
given. That session's figures were never recorded by a run of ours, so this page no longer
quotes them; ``benchmarks/breaching_side_by_side.py`` (``breaching_side_by_side.md``) runs
breaching and shieldsplit in one run on the same trained networks, images and gradients.
This benchmark runs shieldsplit's ``inverting-gradients`` in that earlier setting:
an untrained network of three 3x3 convolutions (32, 64, 64 channels, ReLU) and one
``nn.Linear`` classifier, MNIST test images drawn with the seed, 1000 iterations,
labels given (``use_labels=True``), batch 1 and batch 8.

Usage:
    python benchmarks/breaching_reference.py --data-root ../shared/data --images 8

Writes ``breaching_reference.md`` and ``.json`` under ``--out``; every sentence that
interprets a number is computed here.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from datetime import datetime, timezone
from typing import Any

import torch
from pages import add_page_options, command_line, publish, seed_line, seed_of
from torch import nn

from shieldsplit._core.provenance import load_note, machine_info
from shieldsplit.attacks import create_attack
from shieldsplit.attacks.base import AttackContext
from shieldsplit.attacks.observe import observe_gradient
from shieldsplit.data import default_data_root, load_dataset
from shieldsplit.functional.metrics import psnr
from shieldsplit.functional.stats import match_order


def three_conv(num_classes: int) -> nn.Module:
    """An untrained 3-conv ReLU network with a linear classifier (28 px, 1 channel)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 28 * 28, num_classes),
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Batch 1 and batch 8 on the same images: the record of the page."""
    torch.set_num_threads(1)
    ds = load_dataset("mnist", root=args.data_root or default_data_root(), seed=args.seed)
    order = torch.randperm(len(ds.x_test), generator=torch.Generator().manual_seed(args.seed))
    x, y = ds.x_test[order[:args.images]], ds.y_test[order[:args.images]].long()
    torch.manual_seed(args.seed)
    net = three_conv(ds.num_classes).eval()
    rows = []
    for batch in (1, 8):
        attack = create_attack("inverting-gradients", seed=args.seed, progress=False,
                               iterations=args.iterations, use_labels=True)
        attack.prepare(AttackContext(image_shape=(1, 28, 28), num_classes=ds.num_classes,
                                     model=net, auxiliary_images=ds.x_train,
                                     auxiliary_labels=ds.y_train.long(), budget="quick",
                                     seed=args.seed))
        # labels given, as in breaching's run: the observation carries them
        obs = [dataclasses.replace(observe_gradient(net, x[i:i + batch], y[i:i + batch]),
                                   labels=y[i:i + batch])
               for i in range(0, args.images, batch)]
        start = time.perf_counter()
        recs = attack.reconstruct_many(obs)
        seconds = time.perf_counter() - start
        images = torch.cat([match_order(r.images, x[i * batch:(i + 1) * batch])
                            for i, r in enumerate(recs)])
        p = psnr(images, x)
        rows.append({"batch": batch, "psnr": float(p.mean()),
                     "psnr_per_image": [round(float(v), 2) for v in p],
                     "matched": sorted({str(r.meta.get("matched")) for r in recs}),
                     "seconds": seconds})
        print(rows[-1], flush=True)
    mean_image = ds.x_train.mean(0, keepdim=True).expand_as(x)
    return {
        "command": command_line("benchmarks/breaching_reference.py", args),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "load_average": os.getloadavg()[0],
        "data": ds.source, "images": args.images, "iterations": args.iterations,
        "mean_image_psnr": float(psnr(mean_image, x).mean()), "rows": rows,
    }


def markdown(record: dict[str, Any]) -> str:
    """The page: every interpreting sentence computed from ``record``."""
    lines = [
        "# shieldsplit's Inverting Gradients in breaching's reference setting", "",
        f"Command: `{record['command']}`  ", f"Date: {record['date']}  ",
        f"Machine: {record['machine']['cpus']} cores, 1 torch thread, GPU "
        f"{record['machine']['gpu']}, torch {record['machine']['torch']}; "
        f"{load_note(record['load_average'], own=1)}.  ",
        f"Data: {record['data']}; {record['images']} test images drawn with the seed.  ",
        "Setting (breaching's, issue 10): an untrained network of three 3x3 convolutions "
        "(32, 64, 64 channels, ReLU) and a linear classifier, "
        f"{record['iterations']} iterations, labels given.  ",
        seed_line(seed_of(record)), "",
        "breaching is **not run here**. An earlier session reported breaching's figures in "
        "this setting, but no run of ours recorded them, so this page does not quote them"
        + (" (this record, written before the side-by-side, still carries them as "
           "`breaching_db`: unmeasured, not a comparison)"
           if any("breaching_db" in r for r in record["rows"]) else "")
        + ". breaching's numbers measured beside shieldsplit's, in one run, on the same "
        "trained networks, images and gradients, with the same iteration count, are on "
        "`breaching_side_by_side.md` (`benchmarks/breaching_side_by_side.py`).", "",
        "| batch | shieldsplit IG (mean PSNR) | lowest image | path | seconds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in record["rows"]:
        lines.append(f"| {r['batch']} | {r['psnr']:.1f} dB | {min(r['psnr_per_image']):.1f} dB"
                     f" | {', '.join(r['matched'])} | {r['seconds']:.0f} |")
    lines += ["", f"The mean image scores {record['mean_image_psnr']:.1f} dB on these images."]
    lines += ["", "How: at batch 1 the linear layer's input is read exactly from its weight "
              "and bias gradients and the image is fitted to it; at batch 8 the layer's "
              "weight gradient is separated into one feature direction per image (ICA "
              "and a non-negative refinement) and one image is fitted to each "
              "(`docs/audit.md`).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    add_page_options(parser)
    args = parser.parse_args()
    publish(args, "breaching_reference", measure=lambda: measure(args), markdown=markdown)


if __name__ == "__main__":
    main()
