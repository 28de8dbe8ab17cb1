"""Cost of a quick audit of a trained ResNet-18 at 28 px and at 224 px (issue 22, item 7).

Targets: ``shieldsplit.audit(budget="quick")`` of a trained torchvision ResNet-18, cut at
``layer1``, in at most 5 minutes on 2 cores at 28 px and at most 15 minutes at 224 px,
with the split position and the malicious federated server's position decided.

The victim is the ResNet-18 of ``benchmarks/attack_strength.py`` (BreastMNIST, the grey
channel replicated three times, kept at its best validation epoch of 20; cached as
``out/attack_strength/victim_resnet_seed<seed>_val20.pt``, trained when absent). At
224 px the BreastMNIST images are the 28 px ones UP-SAMPLED (bilinear): MedMNIST's 28 px
images, not a 224 px data set, and the network keeps its 28 px weights (torchvision's
ResNet-18 pools adaptively, so it takes any size); its accuracy on the up-sampled victims
is recorded beside the cost, which does not depend on the weights.

Each size is audited once with the library's defaults (``budget="quick"``, every default
attack, the calibration control), timed in wall and CPU seconds, with the load average
read before and after: the machine is shared, and the page says when other work
inflated a time (a target missed by wall time but met by CPU time over the audit's
threads is missed because of load only).

Usage:
    python benchmarks/audit_cost_resnet.py [--sizes 28 224] [--threads 2] [--seed 0]
        [--cut layer1] [--out docs/results] [--render]

Writes ``audit_cost_resnet.json`` and ``.md`` under ``--out``; every sentence that
interprets a number is computed from the JSON (``--render`` rewrites the page from it).
Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timezone
from typing import Any

import attack_strength
import torch
import torch.nn.functional as F
from pages import add_page_options, command_line, header, publish

import shieldsplit as ss
from shieldsplit.audit.auditor import default_attacks
from shieldsplit.audit.budgets import (
    FEDERATED_VICTIMS,
    LARGE_IMAGE_PIXELS,
    REFERENCE_EPOCHS,
    VICTIMS,
    reference_pixels,
)
from shieldsplit.data import default_data_root, load_dataset
from shieldsplit.experiments.demo import machine_info

#: wall-time targets per image size (seconds on 2 cores)
TARGETS = {28: 300.0, 224: 900.0}


def images_at(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BreastMNIST's training split, 3 channels, up-sampled (bilinear) to ``size``."""
    ds = load_dataset("breastmnist", root=default_data_root(), seed=seed)
    x = ds.x_train.expand(-1, 3, -1, -1)
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp(0, 1).contiguous(), ds.y_train.long()


def audit_at(size: int, net: torch.nn.Module, args: argparse.Namespace) -> dict[str, Any]:
    """One timed quick audit at ``size`` px."""
    x, y = images_at(size, args.seed)
    before = list(os.getloadavg())
    start, cpu = time.perf_counter(), time.process_time()
    report = ss.audit(net, data=(x, y), cut=args.cut, budget="quick", seed=args.seed,
                      progress=False)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    after = list(os.getloadavg())
    everything = default_attacks(net, "quick")
    run = default_attacks(net, "quick", image_shape=tuple(x.shape[1:]))
    print(report.summary())
    print(f"{size} px: {seconds:.0f} s wall, {cpu_seconds:.0f} s CPU", flush=True)
    return {
        "size": size, "upsampled": size != 28, "images": len(x),
        "seconds": seconds, "cpu_seconds": cpu_seconds, "target_seconds": TARGETS.get(size),
        "load_before": before, "load_after": after,
        "victims": report.victims, "auxiliary": report.auxiliary,
        "clean_accuracy": report.clean_accuracy, "majority_rate": report.majority_rate,
        "reference_accuracy": report.reference_accuracy,
        "reference_pixels": reference_pixels(tuple(x.shape[1:])),
        "attacks_run": run, "attacks_left_out": [a for a in everything if a not in run],
        "attacks": [{"attack": r.attack, "position": r.position, "server": r.server,
                     "status": r.status, "verdict": r.verdict, "seconds": r.seconds,
                     "images": r.images, "control": None if r.control is None
                     else r.control.status} for r in report.results],
        "verdicts": [{"position": v.position, "server": v.server, "verdict": v.verdict,
                      "sentence": v.sentence} for v in report.verdicts],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure: the victim, then one timed audit per size."""
    torch.set_num_threads(args.threads)
    victim = attack_strength.load("resnet", args.seed)
    net = victim["net"].eval()
    start = time.time()
    sizes = [audit_at(size, net, args) for size in args.sizes]
    return {
        "command": command_line("benchmarks/audit_cost_resnet.py", args),
        "date": f"{datetime.fromtimestamp(start, timezone.utc):%Y-%m-%d %H:%M} UTC",
        "machine": machine_info(), "load_average": list(os.getloadavg()), "seed": args.seed,
        "threads": args.threads, "cut": args.cut,
        "victim": {k: victim[k] for k in ("accuracy", "majority_rate", "best_epoch", "epochs",
                                          "train_images", "params")},
        "budget": {"victims": VICTIMS["quick"], "federated_victims": FEDERATED_VICTIMS["quick"],
                   "reference_epochs": REFERENCE_EPOCHS["quick"],
                   "large_image_pixels": LARGE_IMAGE_PIXELS},
        "sizes": sizes,
    }


# --------------------------------------------------------------------------- the page
def verdict_words(s: dict[str, Any]) -> str:
    """The position verdicts of one audit, in words."""
    return "; ".join(f"{v['position']}" + (f" ({v['server']} server)" if v["server"] !=
                                           "honest" else "") + f": {v['verdict']}"
                     for v in s["verdicts"] if v["position"] != "membership")


def target_sentence(s: dict[str, Any], threads: int) -> str:
    """Whether the audit met its target, and, if not, whether load alone explains it."""
    target, wall, cpu = s["target_seconds"], s["seconds"], s["cpu_seconds"]
    own = cpu / threads  # the wall time had its threads had the cores to themselves
    load = max(s["load_before"][0], s["load_after"][0])
    busy = f"{cpu / wall:.2f} of its {threads} threads' cores busy on average"
    if target is None:
        return f"no target at {s['size']} px ({busy})."
    if wall <= target:
        return (f"**target met**: {wall / 60:.1f} min against {target / 60:.0f} min "
                f"({busy}; load average {load:.1f}).")
    if own <= target:
        return (f"**target missed by wall time only because of load**: {wall / 60:.1f} min "
                f"against {target / 60:.0f} min, but its {cpu / 60:.1f} CPU min over "
                f"{threads} threads is {own / 60:.1f} min of wall time on {threads} free "
                f"cores, within the target ({busy}; load average up to {load:.1f}).")
    return (f"**target missed**: {wall / 60:.1f} min against {target / 60:.0f} min, and its "
            f"{cpu / 60:.1f} CPU min over {threads} threads ({own / 60:.1f} min on {threads} "
            f"free cores) misses it too ({busy}; load average up to {load:.1f}).")


def decided(s: dict[str, Any]) -> str:
    """Whether the split and the malicious federated positions were decided."""
    want = {("split", "honest"): "the split position",
            ("federated", "malicious"): "the malicious federated server's position"}
    got = {(v["position"], v["server"]): v["verdict"] for v in s["verdicts"]}
    parts = []
    for key, words in want.items():
        v = got.get(key)
        parts.append(f"{words} " + ("was not judged" if v is None else
                                    f"**{'decided' if v != 'inconclusive' else 'undecided'}**"
                                    f" ({v})"))
    return "; ".join(parts) + "."


def size_section(s: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """One image size: its audit's times, attacks and verdicts."""
    b = record["budget"]
    data = ("BreastMNIST's 28 px images UP-SAMPLED (bilinear) to 224 px, not a 224 px data "
            "set" if s["upsampled"] else "BreastMNIST at its own 28 px")
    lines = [
        f"## {s['size']} px", "",
        f"Data: {data}; {s['victims']} victims, {s['auxiliary']} auxiliary images. "
        f"Clean accuracy on the victims {s['clean_accuracy']:.1%} (majority class "
        f"{s['majority_rate']:.1%})" + (" (the 28 px weights on up-sampled images)"
                                        if s["upsampled"] else "") + ".  ",
        f"Wall time {s['seconds']:.0f} s, CPU time {s['cpu_seconds']:.0f} s; load average "
        f"{s['load_before'][0]:.1f} before and {s['load_after'][0]:.1f} after: "
        + target_sentence(s, record["threads"]), "",
        f"Positions: {decided(s)} Verdicts: {verdict_words(s)}.", "",
        "| attack | position | server | seconds | its control | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for a in s["attacks"]:
        lines.append(f"| `{a['attack']}` | {a['position']} | {a['server']} | "
                     f"{a['seconds']:.0f} | {a['control'] or 'not run'} | "
                     f"{a['verdict'] or a['status']} |")
    rest = s["seconds"] - sum(a["seconds"] for a in s["attacks"])
    controls = sum(a["control"] is not None for a in s["attacks"])
    lines += ["", f"The rest ({rest:.0f} s): the reference classifier ({b['reference_epochs']} "
              f"epochs on the auxiliary images" + (
                  f", which it sees average-pooled to {s['reference_pixels']} px"
                  if s["reference_pixels"] < s["size"] else "")
              + f"), the no-attack baselines, the split and {controls} control run(s) (the "
              "calibration runs only for an attack that did not show a leak).", ""]
    if s["attacks_left_out"]:
        lines += [f"At {s['size']} px ({s['size'] ** 2} pixels a channel, above the quick "
                  f"budget's {b['large_image_pixels']}) the quick budget leaves out "
                  + ", ".join(f"`{a}`" for a in s["attacks_left_out"])
                  + " (each declares the largest image its quick run fits); name them in "
                  "`attacks=` to run them at this size.", ""]
    return lines


def markdown(record: dict[str, Any]) -> str:
    """The page, every sentence from the record."""
    v = record["victim"]
    lines = [
        "# The cost of a quick audit of a trained ResNet-18 at 28 px and 224 px", "",
        *header(record, seed=record["seed"], own=record["threads"]),
        f"Model: torchvision ResNet-18 ({v['params']} parameters) trained on BreastMNIST's "
        f"{v['train_images']} training images at 28 px, kept at its best validation epoch "
        f"{v['best_epoch']} of {v['epochs']} (test accuracy {v['accuracy']:.1%}, majority "
        f"rate {v['majority_rate']:.1%}); cut `{record['cut']}`; `ss.audit(budget=\"quick\")` "
        "with its defaults.", "",
        "Targets: at most 5 min at 28 px and at most 15 min at 224 px on 2 cores, with the "
        "split position and the malicious federated server's position decided. The "
        "machine's 2 cores are shared with other work: each audit's load average is "
        "stated, and a target missed by wall time is checked against the audit's CPU time "
        "over its threads.", "",
    ]
    for s in record["sizes"]:
        lines += size_section(s, record)
    summary = "; ".join(
        f"{s['size']} px {s['seconds'] / 60:.1f} min (target "
        f"{s['target_seconds'] / 60:.0f} min, "
        + ("met" if s["seconds"] <= s["target_seconds"] else
           "met on CPU time" if s["cpu_seconds"] / record["threads"] <= s["target_seconds"]
           else "missed") + ")" for s in record["sizes"] if s["target_seconds"])
    lines += [f"Summary: {summary}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 224])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cut", default="layer1")
    add_page_options(parser)
    args = parser.parse_args()
    publish(args, "audit_cost_resnet", measure=lambda: run(args), markdown=markdown)


if __name__ == "__main__":
    main()
