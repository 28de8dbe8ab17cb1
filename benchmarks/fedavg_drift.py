"""Why the FedAvg-update attack rebuilds images on a wide network and not a narrow one.

Inverting Gradients on a FedAvg update (``inverting-gradients-fedavg``) separates the
update of the network's first ``nn.Linear`` into one feature direction per image and
fits an image to each. That separation assumes every image's features stay put during
the client's local steps, so that the update is a sum of one rank-one term per image,
as a single gradient is. This benchmark measures, for PGSLNet at several widths trained
the same way on BreastMNIST:

- **drift**: the cosine between an image's input to that layer at the global weights
  and after the client's local training (the auditor's protocol: 5 local epochs, batch
  8, SGD lr 1e-3, on the 8 victims);
- **rank gap**: the layer's 9th singular value over its 8th, for the single batch-8
  gradient (exactly rank 8: one term per image) and for the update;
- **attack**: ``inverting-gradients-fedavg``'s mean PSNR on the 8 victims against the
  mean auxiliary image (the no-attack baseline), the auditor's quick budget.

Usage:
    python benchmarks/fedavg_drift.py --data-root ../shared/data --configs 16:64 64:128

Writes ``fedavg_drift.md`` and ``fedavg_drift.json`` under ``--out``; every sentence
that interprets a number is computed here.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from pages import add_page_options, command_line, publish
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit._core.provenance import load_note, machine_info
from shieldsplit.attacks import create_attack
from shieldsplit.attacks.base import AttackContext
from shieldsplit.attacks.observe import (
    frozen_state,
    observe_gradient,
    observe_update,
    trainable_parameters,
)
from shieldsplit.audit.auditor import FEDAVG  # the auditor's FedAvg protocol
from shieldsplit.data import default_data_root, load_dataset
from shieldsplit.functional.metrics import psnr
from shieldsplit.functional.stats import balanced_accuracy, match_order
from shieldsplit.models import PGSLNet
from shieldsplit.training import fit_plain

VICTIMS = 8


def first_linear(net: nn.Module) -> str:
    """The name of the network's first ``nn.Linear`` (the layer the attack separates)."""
    return next(n for n, m in net.named_modules() if isinstance(m, nn.Linear))


def layer_input(net: nn.Module, layer: str, x: Tensor,
                params: dict[str, Tensor] | None = None) -> Tensor:
    """The input of ``layer`` for images ``x`` (at ``params`` when given)."""
    seen: dict[str, Tensor] = {}
    module = dict(net.named_modules())[layer]
    hook = module.register_forward_hook(lambda m, i, o: seen.update(h=i[0].detach()))
    try:
        with torch.no_grad():
            if params is None:
                net(x)
            else:
                functional_call(net, params, (x,))
    finally:
        hook.remove()
    return seen["h"].double()


def rank_gap(weight_change: Tensor, rank: int) -> float:
    """``sigma[rank] / sigma[rank - 1]`` of ``weight_change``: near 0 when it has rank
    ``rank`` (one term per image), near 1 when more directions carry as much."""
    sv = torch.linalg.svdvals(weight_change.double())
    return float(sv[rank] / sv[rank - 1]) if len(sv) > rank else 0.0


def measure(ds: Any, width: int, hidden: int, epochs: int, seed: int) -> dict[str, Any]:
    """Train one victim and measure drift, rank and the attack on 8 test images."""
    torch.manual_seed(seed)
    net = PGSLNet(num_classes=ds.num_classes, image_size=28, width=width, hidden=hidden)
    loader = DataLoader(TensorDataset(ds.x_train, ds.y_train.long()), batch_size=32,
                        shuffle=True, generator=torch.Generator().manual_seed(seed))
    start = time.perf_counter()
    fit_plain(net, loader, epochs=epochs, seed=seed, progress=False)
    train_s = time.perf_counter() - start
    net.eval()
    with torch.no_grad():
        pred = net(ds.x_test).argmax(1)
    order = torch.randperm(len(ds.x_test), generator=torch.Generator().manual_seed(seed))
    x, y = ds.x_test[order[:VICTIMS]], ds.y_test[order[:VICTIMS]].long()
    layer = first_linear(net)
    update = observe_update(net, x, y, **FEDAVG)
    gradient = observe_gradient(net, x, y)
    delta, grads = update.update, gradient.gradients
    if delta is None or grads is None:
        raise RuntimeError("observe_update / observe_gradient returned no tensors")
    params, frozen = trainable_parameters(net), frozen_state(net)
    after = {n: params[n] + delta[n].to(params[n]) for n in params}
    h0 = layer_input(net, layer, x)
    h5 = layer_input(net, layer, x, {**after, **frozen})
    drift = torch.nn.functional.cosine_similarity(h0, h5, dim=1)
    attack = create_attack("inverting-gradients-fedavg", seed=seed, progress=False)
    attack.prepare(AttackContext(image_shape=tuple(x.shape[1:]), num_classes=ds.num_classes,
                                 model=net, auxiliary_images=ds.x_train,
                                 auxiliary_labels=ds.y_train.long(), budget="quick",
                                 seed=seed))
    start = time.perf_counter()
    rec = attack.reconstruct(update)
    attack_s = time.perf_counter() - start
    matched = match_order(rec.images, x)
    mean_image = ds.x_train.mean(0, keepdim=True).expand_as(x)
    return {
        "width": width, "hidden": hidden, "epochs": epochs, "layer": layer,
        "features": int(h0.shape[1]), "train_seconds": train_s,
        "test_accuracy": float((pred == ds.y_test).double().mean()),
        "test_balanced_accuracy": balanced_accuracy(pred, ds.y_test.long()),
        "drift_cos": [round(float(c), 4) for c in drift],
        "rank_gap_gradient": rank_gap(grads[f"{layer}.weight"], VICTIMS),
        "rank_gap_update": rank_gap(delta[f"{layer}.weight"], VICTIMS),
        "psnr": float(psnr(matched, x).mean()),
        "mean_image_psnr": float(psnr(mean_image, x).mean()),
        "matched": str(rec.meta.get("matched")), "attack_seconds": attack_s,
    }


def markdown(record: dict[str, Any]) -> str:
    """The page: every interpreting sentence computed from ``record``."""
    rows = record["rows"]
    lines = [
        "# The FedAvg-update attack and the client's local drift", "",
        f"Command: `{record['command']}`  ", f"Date: {record['date']}  ",
        f"Machine: {record['machine']['cpus']} cores, 1 torch thread, GPU "
        f"{record['machine']['gpu']}, torch {record['machine']['torch']}; "
        f"{load_note(record['load_average'], own=1)}.  ",
        f"Data: {record['data']}; PGSLNet trained {rows[0]['epochs']} epochs (Adam, batch "
        f"32, seed {record['seed']}), {VICTIMS} test images drawn with seed "
        f"{record['seed']}; local training as the auditor's FedAvg protocol "
        f"({FEDAVG['local_epochs']} epochs, batch {FEDAVG['local_batch_size']}, SGD lr "
        f"{FEDAVG['lr']}).", "",
        "| width / hidden | features into the first Linear | test accuracy (balanced) | "
        "feature cosine before / after local training: mean (min) | 9th / 8th singular "
        "value: gradient / update | IG on the update | mean image | difference |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        d = r["drift_cos"]
        lines.append(
            f"| {r['width']} / {r['hidden']} | {r['features']:,} | {r['test_accuracy']:.1%} "
            f"({r['test_balanced_accuracy']:.1%}) | {sum(d) / len(d):.2f} ({min(d):.2f}) | "
            f"{r['rank_gap_gradient']:.3f} / {r['rank_gap_update']:.3f} | "
            f"{r['psnr']:.1f} dB | {r['mean_image_psnr']:.1f} dB | "
            f"{r['psnr'] - r['mean_image_psnr']:+.1f} dB |")
    lines.append("")
    for r in rows:
        d = r["drift_cos"]
        mean_d = sum(d) / len(d)
        stable = mean_d >= 0.9
        gain = r["psnr"] - r["mean_image_psnr"]
        lines.append(
            f"- Width {r['width']} / hidden {r['hidden']}: the features "
            + ("stay put during local training" if stable else "move during local training")
            + f" (mean cosine {mean_d:.2f}); the update's 9th singular value is "
            f"{r['rank_gap_update']:.2f} of its 8th against {r['rank_gap_gradient']:.2f} "
            "for one gradient; the attack's mean PSNR is "
            + ("above" if gain > 0 else "below")
            + f" the mean-image baseline ({gain:+.1f} dB; one batch of {VICTIMS} images, no "
            "interval: indicative, not a verdict).")
    lines += ["", "A FedAvg update is one rank-one term per image only while the images' "
              "features stay put; where they move, the separation finds mixtures of "
              "trajectories. That an image whose loss is already small adds almost nothing to "
              "the update (as in a single gradient) is the likely reason, but this page "
              "does not measure the images' losses: it is an explanation, not a result. "
              "The auditor reports such an attack "
              "as *inconclusive*, never as protection.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="breastmnist")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--configs", nargs="+", default=["16:64", "64:128"],
                        help="width:hidden of each PGSLNet")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    add_page_options(parser)
    args = parser.parse_args()
    publish(args, "fedavg_drift", measure=lambda: run(args), markdown=markdown)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One victim per ``--configs`` entry: the record of the page."""
    torch.set_num_threads(1)
    ds = load_dataset(args.data, root=args.data_root or default_data_root(), seed=args.seed)
    rows = []
    for c in args.configs:
        width, hidden = (int(v) for v in c.split(":"))
        rows.append(measure(ds, width, hidden, args.epochs, args.seed))
        print(json.dumps(rows[-1]), flush=True)
    return {
        "command": command_line("benchmarks/fedavg_drift.py", args),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "load_average": os.getloadavg()[0],
        "data": ds.source, "seed": args.seed, "rows": rows,
    }


if __name__ == "__main__":
    main()
