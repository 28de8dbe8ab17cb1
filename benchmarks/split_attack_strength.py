"""Strength of the split-learning inversion attacks on the PGSL paper's network (cut=2).

For each data set (MNIST, BreastMNIST):

1. The train split is halved, stratified, with the seed: the victim model (PGSLNet,
   the paper's network, width 64) is trained plainly (``fit_plain``) on one half;
   the other half is the attacker's auxiliary data (the victim never saw it).
2. A reference classifier (a small CNN, see ``reference_net``) is trained on the clean
   auxiliary images. It labels the reconstructions: attacker accuracy is its
   accuracy on the reconstructions of the test split against the true labels.
3. The black-box decoder (``split-black-box``) attacks the undefended cut=2: it
   queries the client part with the auxiliary images, learns to invert, and decodes
   the test images' activations. Bar: the auditor's verdict is *leaks* (the decision
   rule of ``docs/audit.md``: reconstructions beat both no-attack baselines and pick
   their victims out of a line-up, or the reference classifier's balanced accuracy on
   them is above chance).
4. ``SplitShield(victim, cut=2)`` with the default PGSL config is trained with
   ``shield.fit`` (starting from the victim's weights; its client's first conv is
   new). The black-box decoder then queries the deployed shield's client as a black
   box, and the adaptive attack (``adaptive-split``) inverts the shield's wire with
   knowledge of its configuration. Both decode the shield's wire for the test split;
   their verdicts take the undefended black-box decoder as positive control (the
   adaptive attack is that decoder, trained through the shield's known steps).

Usage:
    python benchmarks/split_attack_strength.py [--datasets mnist breastmnist] [--seed 0]
        [--out docs/results] [--limit N] [--render]

Writes ``attack_strength_split.md`` and ``.json`` under ``--out``; every sentence that
interprets a number is computed from the JSON (``--render`` rewrites the page from it).
``--limit`` subsamples every split (a smoke run; not for reporting).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from pages import add_page_options, command_line, header, publish
from sklearn.model_selection import train_test_split
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import shieldsplit as ss
from shieldsplit.attacks import AttackContext, create_attack
from shieldsplit.attacks import adaptive as _adaptive  # noqa: F401  (registers the attack)
from shieldsplit.attacks import split as _split  # noqa: F401  (registers the attacks)
from shieldsplit.attacks.observe_split import observe_activations
from shieldsplit.data import default_data_root, load_dataset
from shieldsplit.experiments.demo import machine_info
from shieldsplit.functional.metrics import mse, psnr, ssim
from shieldsplit.functional.stats import (
    balanced_accuracy,
    lineup_identified,
    majority_rate,
    no_attack_baselines,
)
from shieldsplit.functional.verdict import Evidence, decide, evidence
from shieldsplit.training import accuracy, fit_plain

CONTROL = "the undefended cut (split-black-box)"
#: Where every decoder of this page observes (the auditor's words for it).
SETTING = "split learning, activations at cut 2"


@dataclass(frozen=True)
class Plan:
    """Epochs per data set, chosen to keep the whole run near 15 minutes on 2 cores."""

    victim_epochs: int
    shield_epochs: int
    reference_epochs: int
    decoder_epochs: int


PLANS = {
    "mnist": Plan(victim_epochs=2, shield_epochs=1, reference_epochs=5, decoder_epochs=5),
    "breastmnist": Plan(victim_epochs=15, shield_epochs=5, reference_epochs=20,
                        decoder_epochs=30),
}


def reference_net(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """The attacker's reference classifier: conv32-pool-conv64-pool-fc128-fc."""
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(128, num_classes),
    )


def loader(x: Tensor, y: Tensor, *, shuffle: bool, seed: int, batch: int = 64) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=shuffle, generator=gen)


def predict(reference: nn.Module, images: Tensor) -> Tensor:
    """The reference classifier's labels for ``images``."""
    reference.eval()
    with torch.no_grad():
        return torch.cat([reference(images[i:i + 512]).argmax(-1)
                          for i in range(0, len(images), 512)])


def scores(rec: Tensor, x: Tensor, y: Tensor, pred: Tensor) -> dict[str, float]:
    """Every metric of one set of guesses or reconstructions (mean over the victims),
    ``pred`` the reference classifier's labels for them."""
    return {
        "mse": float(mse(rec, x).mean()),
        "psnr_db": float(psnr(rec, x).mean()),
        "ssim": float(ssim(rec, x).mean()),
        "attacker_accuracy": float((pred == y).double().mean()),
        "balanced_accuracy": balanced_accuracy(pred, y),
    }


def run_attack(
    name: str, *, client: nn.Module, defense: nn.Module | None, aux: Tensor, aux_y: Tensor,
    x: Tensor, y: Tensor, num_classes: int, epochs: int, seed: int, reference: nn.Module,
    baseline_psnr: Tensor,
) -> dict[str, Any]:
    """One decoder on the test split: its scores and the auditor's evidence."""
    start = time.perf_counter()
    attack = create_attack(name, seed=seed, epochs=epochs)
    context = AttackContext(
        image_shape=(int(x.shape[1]), int(x.shape[2]), int(x.shape[3])),
        num_classes=num_classes, model=client, defense=defense, auxiliary_images=aux,
        auxiliary_labels=aux_y, budget="standard", seed=seed,
    )
    attack.prepare(context)
    chunks = [attack.reconstruct(observe_activations(client, x[i:i + 500])).images
              for i in range(0, x.shape[0], 500)]
    rec = torch.cat(chunks).detach().float().clamp(0, 1)
    pred = predict(reference, rec)
    out: dict[str, Any] = scores(rec, x, y, pred)
    ev = evidence(rec_psnr=psnr(rec, x).clamp(max=100), baseline_psnr=baseline_psnr,
                  identified=lineup_identified(rec, x, aux), lineup_size=len(aux) + 1,
                  predicted=pred, true=y, seed=seed, setting=SETTING)
    out["evidence"] = ev.model_dump()
    out["decoder_epochs"] = epochs
    out["seconds"] = time.perf_counter() - start
    return out


def run_dataset(name: str, seed: int, limit: int | None) -> dict[str, Any]:
    plan = PLANS[name]
    t0 = time.perf_counter()
    ds = load_dataset(name, root=default_data_root(), seed=seed, limit=limit)
    idx = np.arange(ds.y_train.shape[0])
    victim_idx, aux_idx = train_test_split(
        idx, test_size=0.5, stratify=ds.y_train.numpy(), random_state=seed
    )
    xv, yv = ds.x_train[victim_idx], ds.y_train[victim_idx]
    aux, aux_y = ds.x_train[aux_idx], ds.y_train[aux_idx]
    xt, yt = ds.x_test, ds.y_test
    c, size = ds.in_channels, ds.image_size[0]
    timings: dict[str, float] = {}

    start = time.perf_counter()
    torch.manual_seed(seed)
    victim = ss.PGSLNet(in_channels=c, num_classes=ds.num_classes, image_size=size)
    fit_plain(victim, loader(xv, yv, shuffle=True, seed=seed), epochs=plan.victim_epochs,
              seed=seed)
    clean = accuracy(victim, loader(xt, yt, shuffle=False, seed=0, batch=256))
    timings["victim_training"] = time.perf_counter() - start

    start = time.perf_counter()
    torch.manual_seed(seed)
    reference = reference_net(c, ds.num_classes, size)
    fit_plain(reference, loader(aux, aux_y, shuffle=True, seed=seed),
              epochs=plan.reference_epochs, seed=seed)
    reference_clean = accuracy(reference, loader(xt, yt, shuffle=False, seed=0, batch=256))
    reference_balanced = balanced_accuracy(predict(reference, xt), yt)
    timings["reference_training"] = time.perf_counter() - start

    guesses = no_attack_baselines(xt, aux)
    baseline_psnr = torch.stack([psnr(g, xt).clamp(max=100) for g in guesses.values()]).amax(0)
    common: dict[str, Any] = dict(aux=aux, aux_y=aux_y, x=xt, y=yt, num_classes=ds.num_classes,
                  epochs=plan.decoder_epochs, seed=seed, reference=reference,
                  baseline_psnr=baseline_psnr)
    rows = []
    head = ss.split_model(victim, 2).head
    row = run_attack("split-black-box", client=head, defense=None, **common)
    rows.append({"target": "undefended cut=2", "attack": "split-black-box",
                 "clean_accuracy": clean, **row})

    start = time.perf_counter()
    shield = ss.SplitShield(victim, cut=2, seed=seed)
    shield.fit(loader(xv, yv, shuffle=True, seed=seed), epochs=plan.shield_epochs, seed=seed)
    shield_eval = shield.evaluate(loader(xt, yt, shuffle=False, seed=0, batch=256))
    timings["shield_training"] = time.perf_counter() - start
    for attack in ("split-black-box", "adaptive-split"):
        row = run_attack(attack, client=shield, defense=shield, **common)
        rows.append({"target": "SplitShield cut=2 (default PGSL)", "attack": attack,
                     "clean_accuracy": shield_eval["decision"], **row})
    decide_rows(rows)
    return {
        "dataset": name,
        "source": ds.source,
        "sizes": {"victim_train": len(victim_idx), "auxiliary": len(aux_idx),
                  "victim_test": int(yt.shape[0])},
        "plan": plan.__dict__,
        "victim_clean_accuracy": clean,
        "shield_accuracy": shield_eval,
        "reference_clean_accuracy": reference_clean,
        "reference_clean_balanced_accuracy": reference_balanced,
        "majority_rate": majority_rate(yt), "chance": 1.0 / len(torch.unique(yt)),
        "baselines": {k: scores(g, xt, yt, predict(reference, g))
                      for k, g in guesses.items()},
        "rows": rows,
        "timings_s": timings,
        "seconds": time.perf_counter() - t0,
    }


def decide_rows(rows: list[dict[str, Any]]) -> None:
    """The auditor's rule on every row, from its stored evidence (completed with the
    bounds its counts give), the undefended decoder being the positive control."""
    control = Evidence.model_validate(rows[0]["evidence"]).completed()
    for i, row in enumerate(rows):
        ev = Evidence.model_validate(row["evidence"]).completed()
        decision = decide(ev, None if i == 0 else control, control_name=CONTROL)
        row["evidence"] = ev.model_dump()
        row["verdict"], row["reason"] = decision.verdict, decision.reason


def markdown(report: dict[str, Any]) -> str:
    """The page: every interpreting sentence computed from ``report`` (its verdicts
    decided again under the current rule)."""
    for ds in report["datasets"]:
        decide_rows(ds["rows"])
    lines = [
        "# Split-learning attack strength (PGSLNet, cut=2)",
        "",
        *header({**report, "date": f"{report['date']} UTC"}, seed=report["seed"], own=1),
        f"Total: {report['seconds']:.0f} s.  ",
        "",
        "- Victim: PGSLNet (7 conv x 64 channels, FC 128), trained with `fit_plain` on a "
        "stratified half of the train split (seeded). Attacker's auxiliary data: the other "
        "half of the train split, which the victim never used. Victim images: the test split.",
        "- Reference classifier: a small CNN (conv32-pool-conv64-pool-FC128, dropout 0.25) "
        "trained with `fit_plain` on the clean auxiliary images. Attacker accuracy is its "
        "**balanced** accuracy on the reconstructions of the test split (95% bootstrap "
        "interval), beside its own balanced accuracy on the clean test images (a reference, "
        "not a ceiling: reconstructions can score above it within the intervals).",
        "- Decoder: `split-black-box` and `adaptive-split` (conv decoder derived from the "
        "activation shape, MSE, Adam 2e-3 with cosine decay, batch 64, width 32).",
        "- SplitShield: default `PGSLConfig()`, wrapping the trained victim (the client's "
        "first conv is re-initialised for the 4C+1 input), trained with `shield.fit`; its "
        "clean accuracy is the decision-fusion accuracy on the test split.",
        "- Verdicts: the auditor's decision rule (`shieldsplit.functional.decide`, "
        "`docs/audit.md`), decided again from the stored evidence whenever the page is "
        "written, on every test image: *leaks* when the reconstructions pick their victims "
        "out of a line-up of the auxiliary images significantly above chance "
        "(re-identification), or beat the better no-attack guess per image (PSNR gain, lower "
        "bound above 0 dB), or when their balanced accuracy's lower bound is above chance. "
        f"Against SplitShield, *no leakage found* needs the positive control, {CONTROL}, to "
        "have leaked images in the same setting, the shield significantly below it and "
        "every upper bound under the default tolerance.",
        "- Bar: the undefended cut's verdict is *leaks*, with images.",
        "",
        "| data set | target | attack | MSE | PSNR (dB) | SSIM | balanced attacker acc "
        "[95%] | reference on clean (balanced) | line-up | verdict | decoder epochs | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for ds in report["datasets"]:
        ref = ds["reference_clean_balanced_accuracy"]
        for name, b in ds["baselines"].items():
            lines.append(
                f"| {ds['dataset']} | (no attack) | {name} image | {b['mse']:.4f} | "
                f"{b['psnr_db']:.2f} | {b['ssim']:.3f} | {b['balanced_accuracy']:.1%} | "
                f"{ref:.1%} | - | - | - | - |")
        for r in ds["rows"]:
            ev = r["evidence"]
            lines.append(
                f"| {ds['dataset']} | {r['target']} | {r['attack']} | {r['mse']:.4f} | "
                f"{r['psnr_db']:.2f} | {r['ssim']:.3f} | {ev['balanced_accuracy']:.1%} "
                f"[{ev['balanced_low']:.1%}, {ev['balanced_high']:.1%}] | {ref:.1%} | "
                f"{ev['identified']} of {ev['images']} | {r['verdict']} | "
                f"{r['decoder_epochs']} | {r['seconds']:.0f} |")
    lines += [
        "",
        "The `(no attack)` rows are what an attacker gets without observing anything: the "
        "mean auxiliary image for every victim, and (an oracle) the auxiliary image nearest "
        "to each victim. Plain attacker accuracy is in the JSON but decides nothing: "
        + "; ".join(
            f"on {ds['dataset']} the majority class is {ds['majority_rate']:.1%} of the test "
            f"images, so a constant guess scores that (the mean image scores "
            f"{ds['baselines']['auxiliary mean']['attacker_accuracy']:.1%})"
            for ds in report["datasets"]) + ".",
        "",
        "## Findings",
        "",
    ]
    for ds in report["datasets"]:
        und, *shield_rows = ds["rows"]
        uev = und["evidence"]
        bar = ("reached" if Evidence.model_validate(uev).image_leak else "**NOT reached**")
        lines.append(
            f"- {ds['dataset']}: the bar is {bar}: on the undefended cut split-black-box "
            f"{und['reason']} ({und['psnr_db']:.1f} dB, {uev['gain_db']:+.1f} dB over the "
            f"better no-attack guess per image; {uev['identified']} of {uev['images']} "
            f"victims picked out of the line-up; balanced attacker accuracy "
            f"{uev['balanced_accuracy']:.1%} against the reference's "
            f"{ds['reference_clean_balanced_accuracy']:.1%} on clean images).")
        for r in shield_rows:
            ev = r["evidence"]
            lines.append(
                f"  - Against SplitShield, {r['attack']}: **{r['verdict']}** ({r['reason']}); "
                f"{r['psnr_db']:.1f} dB ({r['psnr_db'] - und['psnr_db']:+.1f} dB against "
                f"the undefended cut), {ev['identified']} of {ev['images']} picked out, "
                f"balanced attacker accuracy {ev['balanced_accuracy']:.1%}.")
        decision = ds["shield_accuracy"].get("decision")
        if decision is not None:
            side = ("below" if decision < ds["majority_rate"] else "at" if
                    decision == ds["majority_rate"] else "above")
            lines.append(
                f"  - SplitShield's decision-fusion accuracy is {decision:.1%}, {side} the "
                f"test majority-class rate {ds['majority_rate']:.1%} (the undefended "
                f"victim: {ds['victim_clean_accuracy']:.1%})"
                + ("; a defended model that a constant guess beats protects nothing"
                   if side != "above" else "") + ".")
    lines += ["", "## Context per data set", ""]
    for ds in report["datasets"]:
        p = ds["plan"]
        sh = ", ".join(f"{k} {v:.3f}" for k, v in ds["shield_accuracy"].items())
        t = ", ".join(f"{k} {v:.0f} s" for k, v in ds["timings_s"].items())
        lines += [
            f"**{ds['dataset']}** ({ds['source']})",
            "",
            f"- Sizes: victim train {ds['sizes']['victim_train']}, auxiliary "
            f"{ds['sizes']['auxiliary']}, test {ds['sizes']['victim_test']}.",
            f"- Epochs: victim {p['victim_epochs']}, SplitShield {p['shield_epochs']}, "
            f"reference {p['reference_epochs']}, decoder {p['decoder_epochs']}.",
            f"- Victim clean accuracy {ds['victim_clean_accuracy']:.3f}; SplitShield "
            f"accuracy per stream: {sh}; majority-class rate {ds['majority_rate']:.3f}.",
            f"- Reference classifier on the clean test images: accuracy "
            f"{ds['reference_clean_accuracy']:.3f}, balanced "
            f"{ds['reference_clean_balanced_accuracy']:.3f} (a reference for attacker "
            "accuracy, not a ceiling).",
            f"- Time: {t}; data set total {ds['seconds']:.0f} s.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "breastmnist"],
                        choices=sorted(PLANS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    add_page_options(parser)
    args = parser.parse_args()
    publish(args, "attack_strength_split", measure=lambda: run(args), markdown=markdown)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every data set: the record of the page."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    report: dict[str, Any] = {
        "command": command_line("benchmarks/split_attack_strength.py", args),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "seed": args.seed,
        "machine": machine_info(),
        "datasets": [run_dataset(name, args.seed, args.limit) for name in args.datasets],
    }
    report["seconds"] = time.perf_counter() - start
    report["load_average"] = os.getloadavg()[0]
    return report


if __name__ == "__main__":
    main()
