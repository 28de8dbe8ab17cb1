"""FSHA (Pasquini et al., CCS 2021) against the PGSL paper's network at cut 2, by hijacked steps.

For each data set (the 8x8 scikit-learn digits and, where the shared data folder has it,
BreastMNIST):

1. The training split is halved, stratified, with the seed: one half is the client's
   private training data, the other the malicious server's auxiliary data.
2. The client part is ``split_model(PGSLNet(...), 2).head`` at its seeded initialisation
   (the server hijacks the protocol from the first step of training).
3. ``create_attack("fsha")`` prepares on the auxiliary half (pre-trains its encoder
   ``f~`` and decoder ``f~^-1``), then ``attack.hijack`` runs the malicious protocol on a
   copy of the client part and the private half; the run is continued by calling
   ``hijack`` again on the client it returned, so one run gives every step count of
   ``--steps``. After each, the server decodes the hijacked client's activations of the
   victims (a seeded sample of the private half: images the client trains on).
4. Scores against the victims: mean PSNR, its gain over the mean auxiliary image (the
   no-attack guess), and the line-up test (``lineup_identified``: a reconstruction
   nearer to its victim than to every auxiliary image) with a 95% Wilson interval
   against chance ``1 / (auxiliary + 1)``.
5. One more row (``--noise-dataset``, at the largest step count): the client adds
   Gaussian noise to every activation it sends (std ``--noise`` times the root mean
   square of its clean activations at the start, in training and at inference alike),
   the output-noise analogue of DP-SGD's noise, which the paper reports does not stop
   FSHA. It is not DP-SGD (no clipping, no accounting, no epsilon).

Usage:
    python benchmarks/fsha.py [--datasets digits breastmnist] [--data-root ../shared/data]
        [--steps 100 300 1000] [--seed 0] [--out docs/results] [--render]

Writes ``fsha.md`` and ``fsha.json`` under ``--out``; every sentence that interprets a
number is computed from the JSON (``--render`` rewrites the page from it).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pages import add_page_options, command_line, header, publish
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

import shieldsplit as ss
from shieldsplit.attacks import AttackContext, create_attack
from shieldsplit.attacks.observe_split import observe_activations
from shieldsplit.data import default_data_root, load_dataset
from shieldsplit.experiments.demo import machine_info
from shieldsplit.functional.metrics import psnr, ssim
from shieldsplit.functional.stats import lineup_identified, no_attack_baselines, wilson_interval

#: PGSLNet's width and the attack's batch per data set (kept small for one core).
SETTINGS: dict[str, dict[str, int]] = {
    "digits": {"net_width": 32, "batch_size": 64, "victims": 200},
    "breastmnist": {"net_width": 16, "batch_size": 32, "victims": 200},
}


class NoisyOutputs(nn.Module):
    """A client part that adds ``N(0, std^2)`` to every activation it sends (train and eval)."""

    def __init__(self, head: nn.Module, std: float) -> None:
        super().__init__()
        self.head, self.std = head, std

    def forward(self, x: Tensor) -> Tensor:
        a = self.head(x)
        return a + self.std * torch.randn_like(a)


def score(rec: Tensor, victims: Tensor, aux: Tensor, mean_psnr: Tensor) -> dict[str, Any]:
    """PSNR, its gain over the mean image, SSIM and the line-up of one set of reconstructions."""
    p = psnr(rec, victims).clamp(max=100)
    found = lineup_identified(rec, victims, aux)
    k, n = int(found.sum()), len(found)
    low, high = wilson_interval(k, n)
    return {"psnr_db": float(p.mean()), "gain_db": float((p - mean_psnr).mean()),
            "ssim": float(ssim(rec, victims).mean()), "identified": k, "victims": n,
            "identified_low": low, "identified_high": high}


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every step count of ``--steps`` (one continued hijack), and the noisy row if asked."""
    root = None if name == "digits" else (args.data_root or default_data_root())
    ds = load_dataset(name, root=root, seed=args.seed)
    setting = SETTINGS[name]
    own, other = train_test_split(np.arange(len(ds.y_train)), test_size=0.5,
                                  stratify=ds.y_train.numpy(), random_state=args.seed)
    private, aux = ds.x_train[np.sort(own)], ds.x_train[np.sort(other)]
    g = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(len(private), generator=g)[:setting["victims"]]
    victims = private[pick]
    baselines = no_attack_baselines(victims, aux)
    mean_psnr = psnr(baselines["auxiliary mean"], victims)
    nearest_psnr = float(psnr(baselines["nearest auxiliary"], victims).mean())
    image_shape = (int(ds.x_train.shape[1]), int(ds.x_train.shape[2]), int(ds.x_train.shape[3]))
    torch.manual_seed(args.seed)
    net = ss.PGSLNet(in_channels=image_shape[0], num_classes=ds.num_classes,
                     image_size=image_shape[1], width=setting["net_width"])
    head = ss.split_model(net, 2).head.eval()  # its BatchNorm statistics stay as built
    options: dict[str, Any] = {"batch_size": setting["batch_size"]}

    def attack_run(client: nn.Module, steps: list[int]) -> tuple[list[dict[str, Any]], float]:
        attack = create_attack("fsha", seed=args.seed, progress=False, **options)
        start = time.perf_counter()
        attack.prepare(AttackContext(image_shape=image_shape, num_classes=ds.num_classes,
                                     model=client, auxiliary_images=aux, budget="standard",
                                     seed=args.seed))
        prepare_s = time.perf_counter() - start
        rows, done, hijacked = [], 0, client
        for total in steps:
            start = time.perf_counter()
            hijacked = attack.hijack(hijacked, private, steps=total - done)
            seconds = time.perf_counter() - start
            torch.manual_seed(args.seed)  # the noisy client's noise at inference
            rec = attack.reconstruct(observe_activations(hijacked, victims))
            row = score(rec.images, victims, aux, mean_psnr)
            row.update(steps=rec.meta["client_steps"],
                       seconds_per_step=seconds / (total - done),
                       client_loss=rec.meta["client_loss"], critic_loss=rec.meta["critic_loss"])
            rows.append(row)
            done = total
            print(f"{name} {row}", flush=True)
        return rows, prepare_s

    steps = sorted(args.steps)
    with torch.no_grad():
        act_shape = list(head(victims[:2]).shape[1:])
    rows, prepare_s = attack_run(head, steps)
    out: dict[str, Any] = {
        "data": ds.source, "image_shape": list(image_shape), "private": len(private),
        "auxiliary": len(aux), "victims": len(victims), **setting,
        "activation_shape": act_shape,
        "mean_image_psnr_db": float(mean_psnr.mean()), "nearest_auxiliary_psnr_db": nearest_psnr,
        "lineup_chance": 1 / (len(aux) + 1), "prepare_seconds": prepare_s, "rows": rows,
    }
    if name == args.noise_dataset and args.noise > 0:
        with torch.no_grad():
            rms = float(head(private).pow(2).mean().sqrt())
        noisy, _ = attack_run(NoisyOutputs(head, args.noise * rms), steps[-1:])
        out["noise"] = {"relative_std": args.noise, "std": args.noise * rms, **noisy[0]}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    start = time.perf_counter()
    results = {}
    for name in args.datasets:
        if name != "digits" and (args.data_root or default_data_root()) is None:
            print(f"skipping {name}: no shared data folder")
            continue
        results[name] = run_dataset(name, args)
    return {
        "command": command_line("benchmarks/fsha.py", args),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()), "seed": args.seed,
        "attack_defaults": {k: v for k, v in create_attack("fsha").config.model_dump().items()},
        "results": results, "total_seconds": time.perf_counter() - start,
    }


def _interval(row: dict[str, Any]) -> str:
    return (f"{row['identified']}/{row['victims']} "
            f"[{row['identified_low']:.0%}, {row['identified_high']:.0%}]")


def _leaks(row: dict[str, Any], chance: float) -> bool:
    """Beats the mean image on average and re-identifies above chance (the interval's low
    end above it)."""
    return row["gain_db"] > 0 and row["identified_low"] > chance


def step_sentence(rows: list[dict[str, Any]]) -> str:
    """What the step counts show, read only where intervals separate them.

    The line-up share has an exact 95% interval per run: a step count *changes* it only
    where the intervals do not overlap. The PSNR gain of each step count is one run with
    no interval, so its trend is reported as inconclusive, with the numbers.
    """
    words = []
    for a, b in itertools.pairwise(rows):
        if b["identified_low"] > a["identified_high"]:
            change = "rises beyond its 95% interval"
        elif b["identified_high"] < a["identified_low"]:
            change = "falls beyond its 95% interval"
        else:
            change = "cannot be told apart (the 95% intervals overlap)"
        words.append(f"from {a['steps']} to {b['steps']} steps the line-up share {change} "
                     f"({a['identified']} against {b['identified']} of {b['victims']})")
    gains = ", ".join(f"{row['steps']}: {row['gain_db']:+.2f} dB" for row in rows)
    return ("; ".join(words) + ". The gains (" + gains + ") are single runs with no "
            "interval, so whether the gain grows with the step count is inconclusive.")


def markdown(record: dict[str, Any]) -> str:
    """The page: every interpreting sentence computed from ``record``."""
    results = record["results"]
    data = "; ".join(f"{r['data']} ({r['private']} private, {r['auxiliary']} auxiliary, "
                     f"{r['victims']} victims, images {r['image_shape']})"
                     for r in results.values())
    d = record["attack_defaults"]
    lines = [
        "# FSHA: a malicious split server hijacks the client's feature space", "",
        *header(record, seed=record["seed"]),
        f"Data: {data}.  ",
        "Setup: PGSLNet at cut 2 from its seeded initialisation (the server hijacks "
        "training from the first step); the training split halved, stratified: the "
        "client's private half, the server's auxiliary half; victims are a seeded sample "
        "of the private half. `fsha` defaults (client Adam lr "
        f"{d['client_lr']:g}, critic lr {d['discriminator_lr']:g}, gradient penalty "
        f"{d['gradient_penalty']:g}, encoder/decoder width {d['width']}, critic width "
        f"{d['discriminator_width']}), `budget=\"standard\"` autoencoder pre-training; one "
        "hijack continued through the step counts. The line-up interval is a 95% Wilson "
        f"interval. Wall time {record['total_seconds'] / 60:.1f} min.", "",
        "| data | PGSLNet width, batch | hijacked client steps | PSNR (dB) | mean image "
        "(dB) | gain (dB) | SSIM | line-up identified | chance | s/step |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        for row in r["rows"]:
            lines.append(
                f"| {name} | {r['net_width']}, {r['batch_size']} | {row['steps']} | "
                f"{row['psnr_db']:.2f} | {r['mean_image_psnr_db']:.2f} | "
                f"{row['gain_db']:+.2f} | {row['ssim']:.3f} | {_interval(row)} | "
                f"{r['lineup_chance']:.2%} | {row['seconds_per_step']:.3f} |")
        if "noise" in r:
            n = r["noise"]
            lines.append(
                f"| {name}, output noise {n['relative_std']:g} x RMS | {r['net_width']}, "
                f"{r['batch_size']} | {n['steps']} | {n['psnr_db']:.2f} | "
                f"{r['mean_image_psnr_db']:.2f} | {n['gain_db']:+.2f} | {n['ssim']:.3f} | "
                f"{_interval(n)} | {r['lineup_chance']:.2%} | {n['seconds_per_step']:.3f} |")
    lines.append("")
    for name, r in results.items():
        rows, chance = r["rows"], r["lineup_chance"]
        last = rows[-1]
        verdict = ("beats the mean image and re-identifies its victims above chance"
                   if _leaks(last, chance) else
                   "does not both beat the mean image and re-identify above chance")
        lines.append(
            f"- {name}: after {last['steps']} hijacked client steps the server's decoder "
            f"{verdict} (gain {last['gain_db']:+.2f} dB; {last['identified']} of "
            f"{last['victims']} victims picked out of a line-up of {r['auxiliary'] + 1}). "
            f"The nearest auxiliary image, an oracle that knows the victim, scores "
            f"{r['nearest_auxiliary_psnr_db']:.2f} dB; the reconstructions "
            + ("beat it." if last["psnr_db"] > r["nearest_auxiliary_psnr_db"]
               else "stay below it."))
        if len(rows) > 1:
            lines.append(f"- {name}: " + step_sentence(rows))
        if "noise" in r:
            n = r["noise"]
            clean, noisy = _leaks(last, chance), _leaks(n, chance)
            effect = {
                (True, True): "still beats the mean image and re-identifies above chance",
                (True, False): "no longer both beats the mean image and re-identifies above "
                "chance",
                (False, False): "does not leak by this test, as without noise",
                (False, True): "beats the mean image and re-identifies above chance, which "
                "it did not without noise",
            }[(clean, noisy)]
            lines.append(
                f"- {name}: with Gaussian noise of {n['relative_std']:g} times the clean "
                f"activations' RMS on every activation the client sends, the attack "
                + effect
                + f" (gain {n['gain_db']:+.2f} dB against {last['gain_db']:+.2f} dB without "
                f"noise; {n['identified']} of {n['victims']} identified)."
                + (" Its gain is above the noiseless run's: with one seed this shows that "
                   "noise of this size does not stop the hijack, not that noise helps it."
                   if n["gain_db"] > last["gain_db"] else "")
                + " This is output noise, not DP-SGD (no clipping, no privacy accounting).")
    lines += ["", "The quick audit budget leaves `fsha` out (`quick_default = False`): "
              f"{_slowest(results)}.", ""]
    return "\n".join(lines)


def _slowest(results: dict[str, Any]) -> str:
    parts = [f"{r['rows'][-1]['seconds_per_step']:.2f} s per hijacked step on {name}"
             for name, r in results.items()]
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "breastmnist"],
                        choices=sorted(SETTINGS))
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--noise-dataset", default="digits")
    parser.add_argument("--seed", type=int, default=0)
    add_page_options(parser)
    args = parser.parse_args()
    publish(args, "fsha", measure=lambda: run(args), markdown=markdown)


if __name__ == "__main__":
    main()
