"""Split learning on ResNet-class cuts: SDAR, UnSplit and the black-box decoder (issue 22).

Victims: torchvision ResNet-18 (2 classes, the grey channel replicated three times)
trained on a data set's training split, up to 20 epochs, kept at its best VALIDATION
epoch: the recipe of ``benchmarks/attack_strength.py`` (its ``load``; BreastMNIST's victim
is that script's ``resnet``, cached as ``victim_resnet_seed<seed>_val20.pt`` under
``--cache``; PneumoniaMNIST's is added to its table here as ``resnet_pneumoniamnist``).
Cached weights are reused; absent ones are trained and cached.

As in the auditor, a seeded ``--victims`` images of the training split are the victims
and (up to ``--aux-limit`` of) the rest of the split is the attacker's auxiliary data.
The undefended model is cut at ``layer1`` and ``layer2`` (``shieldsplit.split_model``),
and each attack inverts the victims' activations there:

- ``split-black-box``: the existing inversion decoder (``--epochs``);
- ``sdar``: SDAR's residual decoder with adversarial regularisation (``--epochs``), and
  the same without its adversarial term (is the term used, and what does it do);
- ``unsplit``: UnSplit's input search with a TV prior, given the client's weights
  (``--iterations``, ``--restarts``).

Each is scored as ``shieldsplit.audit`` scores (``audit/runner.py``): PSNR against the
victim (capped at 100 dB) beside the best no-attack guess per victim (the mean
auxiliary image, or the auxiliary image nearest to the victim: an oracle), with the
bootstrap 95% interval of the gain; and the line-up: victims whose reconstruction is
nearer to them than to every auxiliary image, with the exact 95% interval against the
line-up's chance. A cut *leaks* (the auditor's image evidence) when an attack's gain has
a lower bound above 0 dB or its re-identification share a lower bound above chance.

DenseNet-121 is checked for a 28 px input and not run when torchvision's network cannot
take one (the check's error is recorded).

Usage:
    python benchmarks/attack_strength_resnet.py [--data breastmnist pneumoniamnist]
        [--victims 64] [--epochs 30] [--iterations 500] [--restarts 1] [--aux-limit 1000]
        [--threads 1] [--seed 0] [--cache out/attack_strength] [--out docs/results]
        [--render]

Writes ``attack_strength_resnet.json`` and ``.md`` under ``--out``; every sentence that
interprets a number is computed from the JSON (``--render`` rewrites the page from it).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attack_strength
import torch
from pages import add_page_options, command_line, header, publish
from torch import Tensor

import shieldsplit as ss
from shieldsplit.attacks import AttackContext, create_attack
from shieldsplit.attacks.observe_split import observe_activations
from shieldsplit.attacks.sdar import SDAR_EPOCHS
from shieldsplit.attacks.split import DECODER_EPOCHS
from shieldsplit.attacks.unsplit import UNSPLIT_ITERATIONS
from shieldsplit.audit.budgets import VICTIMS
from shieldsplit.data import default_data_root, load_dataset
from shieldsplit.experiments.demo import machine_info
from shieldsplit.functional.metrics import psnr
from shieldsplit.functional.stats import (
    bootstrap_interval,
    clopper_pearson_interval,
    lineup_identified,
    no_attack_baselines,
)

#: DenseNet-121 trains on at most this many PneumoniaMNIST training images (of 4708): at
#: 28 px without its stem's max-pool it costs about 20 times a ResNet-18 step on CPU
DENSENET_TRAIN_LIMIT = attack_strength.VICTIMS["densenet_pneumoniamnist"][3]
#: architecture -> its page, its name, its two cuts (DenseNet's equivalents of ResNet's
#: layer1 and layer2: after dense block 1 and its transition, after block 2 and its
#: transition) and, per data set, its victim in attack_strength.py's table (the ones
#: added to that table here have the same recipe: 20 epochs, best validation epoch kept)
ARCHS: dict[str, dict[str, Any]] = {
    "resnet18": {"stem": "attack_strength_resnet", "name": "ResNet-18",
                 "cuts": ("layer1", "layer2"),
                 "victims": {"breastmnist": "resnet", "pneumoniamnist": "resnet_pneumoniamnist"}},
    "densenet121": {"stem": "attack_strength_densenet", "name": "DenseNet-121",
                    "cuts": ("features.transition1", "features.transition2"),
                    "victims": {"breastmnist": "densenet",
                                "pneumoniamnist": "densenet_pneumoniamnist"}},
}
NAMES = {"breastmnist": "BreastMNIST", "pneumoniamnist": "PneumoniaMNIST"}
#: (attack, options beyond the budget's): SDAR also without its adversarial term
RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("split-black-box", {}), ("sdar", {}), ("sdar", {"adversarial_weight": 0.0}),
    ("unsplit", {}))
#: ``--attacks`` names of the runs (SDAR without its adversarial term is ``sdar-plain``)
RUN_NAMES = ("split-black-box", "sdar", "sdar-plain", "unsplit")


def attack_options(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The budget each attack runs with (equal epochs for both decoders)."""
    if name == "unsplit":
        return {"iterations": args.iterations, "restarts": args.restarts}
    return {"epochs": args.epochs}


def score(images: Tensor, x: Tensor, aux: Tensor, best: Tensor, seed: int) -> dict[str, Any]:
    """The auditor's image evidence of one attack's reconstructions."""
    rec_psnr = psnr(images, x).clamp(max=100)
    gains = rec_psnr.double() - best.double()
    gain_low, gain_high = bootstrap_interval(gains, seed=seed)
    identified = int(lineup_identified(images, x, aux).sum())
    id_low, id_high = clopper_pearson_interval(identified, len(x))
    chance = 1.0 / (len(aux) + 1)
    return {"psnr": float(rec_psnr.mean()),
            "psnr_per_image": [round(float(q), 3) for q in rec_psnr],
            "gain_db": float(gains.mean()),
            "gain_low": gain_low, "gain_high": gain_high, "identified": identified,
            "identified_low": id_low, "identified_high": id_high, "chance": chance,
            "rebuilt": gain_low > 0.0, "reidentified": id_low > chance}


def attack_cut(net: torch.nn.Module, cut: str, x: Tensor, aux: Tensor,
               args: argparse.Namespace) -> dict[str, Any]:
    """Every attack on one cut of the victim."""
    head = ss.split_model(net, cut).head.eval()
    obs = observe_activations(head, x)
    guesses = no_attack_baselines(x, aux)
    per = {k: psnr(v, x).clamp(max=100) for k, v in guesses.items()}
    best = torch.maximum(per["auxiliary mean"], per["nearest auxiliary"])
    ctx = AttackContext(image_shape=(int(x.shape[1]), int(x.shape[2]), int(x.shape[3])),
                        num_classes=2, model=head,
                        auxiliary_images=aux, budget="quick", seed=args.seed)
    shape = tuple(int(s) for s in obs.activations.shape[1:]) if obs.activations is not None \
        else ()
    out: dict[str, Any] = {
        "cut": cut, "activation_shape": list(shape),
        "activation_numbers": int(torch.tensor(shape).prod()),
        "pixels": int(x[0].numel()),
        "baselines": {k: float(v.mean()) for k, v in per.items()}, "best_baseline": float(
            best.mean()), "attacks": []}
    for (name, extra), run_name in zip(RUNS, RUN_NAMES, strict=True):
        if run_name not in args.attacks:
            continue
        options = {**attack_options(name, args), **extra}
        start, cpu = time.perf_counter(), time.process_time()
        attack = create_attack(name, seed=args.seed, progress=False, **options)
        attack.prepare(ctx)
        rec = attack.reconstruct(obs)
        result = {"attack": name, "options": options, **score(rec.images, x, aux, best,
                                                              args.seed),
                  "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
                  "meta": {k: v for k, v in rec.meta.items()
                           if isinstance(v, int | float) and not isinstance(v, bool)}}
        out["attacks"].append(result)
        print(f"{x.shape[0]} victims, {cut}, {name} {extra}: PSNR {result['psnr']:.2f} "
              f"(baseline {out['best_baseline']:.2f}), "
              f"{result['identified']}/{len(x)} re-identified, {result['seconds']:.0f} s",
              flush=True)
    return out


def densenet_check() -> dict[str, Any]:
    """Whether torchvision's DenseNet-121 takes a 3x28x28 input (the error if not)."""
    from torchvision.models import densenet121

    try:
        with torch.no_grad():
            densenet121(num_classes=2).eval()(torch.rand(1, 3, 28, 28))
    except RuntimeError as exc:
        return {"runs_at_28px": False, "error": str(exc).splitlines()[0]}
    return {"runs_at_28px": True, "error": None}


def pneumonia_estimate(record_data: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """PneumoniaMNIST's training split against BreastMNIST's, and the ResNet-18 training
    time that ratio implies (from the cached BreastMNIST victim's recorded training time)."""
    images = int(load_dataset("pneumoniamnist", root=default_data_root(),
                              seed=seed).x_train.shape[0])
    breast = next(d for d in record_data if d["data"] == "breastmnist")["victim"]
    meta = attack_strength.CACHE / f"victim_resnet_seed{seed}_val20.meta.json"
    train_seconds = json.loads(meta.read_text()).get("train_seconds") if meta.exists() else None
    ratio = images / breast["train_images"]
    return {"train_images": images, "breastmnist_train_images": breast["train_images"],
            "breastmnist_train_seconds": train_seconds,
            "estimated_train_seconds": None if train_seconds is None else train_seconds * ratio}


def attack_data(data: str, args: argparse.Namespace) -> dict[str, Any]:
    """The victim of one data set (trained and cached by attack_strength.py's recipe) and
    every attack on each of its cuts."""
    key = ARCHS[args.arch]["victims"][data]
    victim = attack_strength.load(key, args.seed)
    net = victim["net"].eval()
    order = torch.randperm(len(victim["x_train"]),
                           generator=torch.Generator().manual_seed(args.seed))
    x = victim["x_train"][order[:args.victims]]
    rest = order[args.victims:]
    aux = victim["x_train"][rest if args.aux_limit is None else rest[:args.aux_limit]]
    keep = ("accuracy", "balanced_accuracy", "majority_rate", "best_epoch", "epochs",
            "train_images", "params", "selected_on_val")
    meta = attack_strength.CACHE / f"victim_{key}_seed{args.seed}_val{victim['epochs']}.meta.json"
    seconds = victim["train_seconds"] if victim["train_seconds"] is not None else (
        json.loads(meta.read_text()).get("train_seconds") if meta.exists() else None)
    split = int(load_dataset(data, root=default_data_root(), seed=args.seed).x_train.shape[0])
    return {"data": data, "victim": {**{k: victim[k] for k in keep}, "arch": args.arch,
                                     "train_seconds": seconds, "train_available": split},
            "victims": len(x), "auxiliary": len(aux), "auxiliary_available": len(rest),
            "cuts": [attack_cut(net, cut, x, aux, args) for cut in ARCHS[args.arch]["cuts"]]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure: every data set's victim and cuts, and the checks."""
    torch.set_num_threads(args.threads)
    attack_strength.CACHE = args.cache
    start, cpu = time.time(), time.process_time()
    datasets = [attack_data(data, args) for data in args.data]
    return {
        "command": command_line("benchmarks/attack_strength_resnet.py", args),
        "date": f"{datetime.fromtimestamp(start, timezone.utc):%Y-%m-%d %H:%M} UTC",
        "machine": machine_info(), "load_average": list(os.getloadavg()), "seed": args.seed,
        "threads": args.threads, "arch": args.arch,
        "settings": {"epochs": args.epochs, "iterations": args.iterations,
                     "restarts": args.restarts, "victims": args.victims,
                     "aux_limit": args.aux_limit, "attacks": list(args.attacks)},
        "budgets": {"sdar": SDAR_EPOCHS, "split-black-box": DECODER_EPOCHS,
                    "unsplit": UNSPLIT_ITERATIONS,
                    "audit_quick_victims": VICTIMS["quick"]},
        "datasets": datasets, "densenet121": densenet_check(),
        "pneumoniamnist": None if "pneumoniamnist" in args.data or args.arch != "resnet18"
        else pneumonia_estimate(datasets, args.seed),
        "wall_seconds": time.time() - start, "cpu_seconds": time.process_time() - cpu,
    }


# --------------------------------------------------------------------------- the page
def label(a: dict[str, Any]) -> str:
    """An attack row's name on the page (SDAR without its term is told apart)."""
    off = a["attack"] == "sdar" and a["options"].get("adversarial_weight") == 0.0
    return f"`{a['attack']}`" + (" without its adversarial term" if off else "")


def _leak_words(a: dict[str, Any], n: int) -> str:
    kinds = []
    if a["reidentified"]:
        kinds.append(f"re-identification ({a['identified']} of {n}, lower bound "
                     f"{a['identified_low']:.1%} against chance {a['chance']:.2%})")
    if a["rebuilt"]:
        kinds.append(f"PSNR gain (+{a['gain_db']:.2f} dB, lower bound {a['gain_low']:+.2f} dB)")
    return " and ".join(kinds)


def paired(a: dict[str, Any], b: dict[str, Any], seed: int) -> str:
    """``a`` against ``b`` on the same victims: the mean PSNR difference, its bootstrap 95%
    interval, and whether it tells them apart."""
    diff = torch.tensor(a["psnr_per_image"], dtype=torch.float64) - torch.tensor(
        b["psnr_per_image"], dtype=torch.float64)
    low, high = bootstrap_interval(diff, seed=seed)
    verdict = ("higher" if low > 0 else "lower" if high < 0
               else "not told apart on these victims")
    return (f"{float(diff.mean()):+.2f} dB [{low:+.2f}, {high:+.2f}] ({verdict}), "
            f"{a['identified']} against {b['identified']} re-identified")


def cut_sentences(c: dict[str, Any], n: int, seed: int) -> list[str]:
    """What one cut showed, in words computed from its record."""
    by = {label(a): a for a in c["attacks"]}
    leaking = [a for a in c["attacks"] if a["rebuilt"] or a["reidentified"]]
    strongest = max(c["attacks"], key=lambda a: (a["identified"], a["gain_db"]))
    shape = "x".join(map(str, c["activation_shape"]))
    lines = [f"- **{c['cut']}** (activations {shape} = {c['activation_numbers']} numbers for "
             f"{c['pixels']} pixels): "]
    if leaking:
        lines[0] += "the undefended cut **leaks**: " + "; ".join(
            f"{label(a)} by {_leak_words(a, n)}" for a in leaking) + "."
    else:
        lines[0] += (
            f"**no attack made this cut leak**. The closest was {label(strongest)}: "
            f"{strongest['identified']} of {n} re-identified (lower bound "
            f"{strongest['identified_low']:.2%}, chance {strongest['chance']:.2%}) and a PSNR "
            f"gain of {strongest['gain_db']:+.2f} dB (upper bound {strongest['gain_high']:+.2f}"
            f" dB), short of the bar by {-strongest['gain_low']:.2f} dB on the gain's lower "
            "bound.")
    sdar, bb = by.get("`sdar`"), by.get("`split-black-box`")
    plain = by.get("`sdar` without its adversarial term")
    if sdar and bb:
        lines.append(f"  SDAR against the black-box decoder at equal epochs: "
                     f"{paired(sdar, bb, seed)}.")
    if sdar and plain:
        lines.append(f"  SDAR's adversarial term (weight {sdar['meta'].get('adversarial_weight')})"
                     f" against none: {paired(sdar, plain, seed)}.")
    un = by.get("`unsplit`")
    if un and "final_loss" in un["meta"]:
        fl, il = un["meta"]["final_loss"], un["meta"]["initial_loss"]
        leaked = un["rebuilt"] or un["reidentified"]
        lines.append(
            f"  UnSplit brought the relative activation distance from {il:.3f} to {fl:.4f}"
            + (f"; its PSNR gain ({un['gain_db']:+.2f} dB) is "
               + ("significant" if un["rebuilt"] else "not significant")
               + ": images whose activations match the victims' that closely still differ"
               " from them, so the activations do not pin the image down under the TV prior"
               if fl < 0.01 and not un["rebuilt"] else "")
            + ("" if leaked or fl < 0.01 else
               ": the search did not match the activations in its steps") + ".")
    return lines


def victim_words(v: dict[str, Any]) -> str:
    """The victim network, with DenseNet-121's 28 px adaptation stated."""
    if v.get("arch", "resnet18") == "resnet18":
        return "torchvision ResNet-18"
    return ("torchvision DenseNet-121 adapted to 28 px by its stem only (the stem's max-pool "
            "`features.pool0` removed; the 7x7 stride-2 convolution and every later layer "
            "are torchvision's)")


def data_section(d: dict[str, Any], seed: int) -> list[str]:
    """One data set's victim, table and sentences."""
    v, n = d["victim"], d["victims"]
    name = NAMES[d["data"]]
    capped = (f" (a seeded {d['auxiliary']} of the other {d['auxiliary_available']}, to keep "
              "the decoders' training within the budget)"
              if d["auxiliary"] < d["auxiliary_available"] else "")
    lines = [
        f"## {name}",
        "",
        f"Data: {name} 28 px (grey channel replicated to 3), training split: {n} victims "
        f"(seeded), {d['auxiliary']} other images the attacker's auxiliary data{capped}.  ",
        f"Victim: {victim_words(v)} ({v['params']} parameters) trained on the "
        + (f"first {v['train_images']} of the {v['train_available']} training images (capped "
           "for CPU time)" if v.get("train_available", v["train_images"]) > v["train_images"]
           else f"{v['train_images']} training images")
        + " (the victims among them, as in the auditor: "
        "a split-learning server observes training batches), kept at its best validation epoch "
        f"{v['best_epoch']} of {v['epochs']}: test accuracy {v['accuracy']:.1%} "
        f"(balanced {v['balanced_accuracy']:.1%}) against the majority rate "
        f"{v['majority_rate']:.1%}"
        + (" (above it)." if v["accuracy"] > v["majority_rate"] else " (**not above it**)."),
        "",
        "| cut | activations | attack | options | PSNR (dB) | best no-attack (dB) | gain "
        "[95% CI] (dB) | re-identified [95% CI] | leaks by | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in d["cuts"]:
        shape = "x".join(map(str, c["activation_shape"]))
        for a in c["attacks"]:
            opts = ", ".join(f"{k}={val}" for k, val in a["options"].items())
            by = [w for w, hit in (("line-up", a["reidentified"]), ("PSNR", a["rebuilt"])) if hit]
            lines.append(
                f"| {c['cut']} | {shape} | {label(a)} | {opts} | {a['psnr']:.2f} | "
                f"{c['best_baseline']:.2f} | {a['gain_db']:+.2f} [{a['gain_low']:+.2f}, "
                f"{a['gain_high']:+.2f}] | {a['identified']}/{n} [{a['identified_low']:.1%}, "
                f"{a['identified_high']:.1%}] | {', '.join(by) or 'no'} | {a['seconds']:.0f} |")
    chance = d["cuts"][0]["attacks"][0]["chance"]
    lines += ["", f"Line-up: the victim and the {d['auxiliary']} auxiliary images (chance "
              f"{chance:.2%}).", ""]
    for c in d["cuts"]:
        lines += cut_sentences(c, n, seed)
    leaked = [c["cut"] for c in d["cuts"]
              if any(a["rebuilt"] or a["reidentified"] for a in c["attacks"])]
    missed = [c["cut"] for c in d["cuts"] if c["cut"] not in leaked]
    lines += ["", f"{name}: cuts that leak: {', '.join(leaked) or 'none'}; cuts that did not: "
              f"{', '.join(missed) or 'none'}.", ""]
    return lines


def markdown(record: dict[str, Any]) -> str:
    """The page, every sentence from the record."""
    m, b, st = record["machine"], record["budgets"], record["settings"]
    arch = record.get("arch", "resnet18")
    lines = [
        f"# Split learning on {ARCHS[arch]['name']} cuts: SDAR, UnSplit and the black-box "
        "decoder",
        "",
        *header(record, seed=record["seed"], own=record["threads"]),
        f"Data: {', '.join(NAMES[d['data']] for d in record['datasets'])} (one section each "
        "below).  ",
        f"Wall time {record['wall_seconds'] / 60:.1f} min, CPU {record['cpu_seconds'] / 60:.1f}"
        " min.  ",
        "Attacks: `split-black-box` (the existing inversion decoder), `sdar` (SDAR's residual "
        "decoder with adversarial regularisation, also run without its adversarial term), "
        "`unsplit` (UnSplit's input search with a TV prior, given the client's weights, no "
        "auxiliary data)."
        + ("" if len(st.get("attacks", RUN_NAMES)) == len(RUN_NAMES) else
           " This record ran only " + ", ".join(f"`{a}`" for a in st["attacks"])
           + " (`--attacks`); not run by its command: "
           + ", ".join(f"`{a}`" for a in RUN_NAMES if a not in st["attacks"])
           + " (`sdar-plain`: SDAR without its adversarial term)."),
        "",
        "A cut leaks when an attack's re-identification share (victims whose reconstruction "
        "is nearer to them than to every auxiliary image) has an exact 95% lower bound above "
        "the line-up's chance, or its PSNR gain over the best no-attack guess (per victim, "
        "the better of the mean auxiliary image and the nearest auxiliary image, an oracle) "
        "has a bootstrap 95% lower bound above 0 dB: the auditor's image evidence.",
        "",
    ]
    if arch == "densenet121":
        lines += [
            "DenseNet-121's cuts are its equivalents of ResNet-18's layer1 and layer2: "
            "`features.transition1` (after dense block 1 and its transition) and "
            "`features.transition2` (after dense block 2 and its transition), cut by "
            "`shieldsplit.split_model`.",
            ""]
    for d in record["datasets"]:
        lines += data_section(d, record["seed"])
    dn = record["densenet121"]
    if arch == "resnet18":
        lines += ["## Not run", ""]
        lines.append(
            "- DenseNet-121: torchvision's network " + (
                f"does not take a 28 px input unadapted (`{dn['error']}`: its third "
                "transition pools a 1x1 map); adapted by its stem (max-pool removed) it is "
                "attacked on `attack_strength_densenet.md` (this script, `--arch densenet121`)."
                if not dn["runs_at_28px"] else "takes a 28 px input; it is attacked on "
                "`attack_strength_densenet.md` (this script, `--arch densenet121`)."))
    else:
        if not dn["runs_at_28px"]:
            lines += [f"Unadapted, torchvision's DenseNet-121 does not take a 28 px input "
                      f"(`{dn['error']}`: its third transition pools a 1x1 map).", ""]
        ran = {d["data"]: d for d in record["datasets"]}
        breast = ran.get("breastmnist")
        if "pneumoniamnist" not in ran and breast is not None:
            v = breast["victim"]
            pace = v.get("train_seconds")
            lines += ["## Not run", "", (
                f"- PneumoniaMNIST: not run by this command. Its DenseNet-121 victim trains on "
                f"{DENSENET_TRAIN_LIMIT} images, {DENSENET_TRAIN_LIMIT / v['train_images']:.1f}"
                f" times BreastMNIST's {v['train_images']}"
                + (f": about {pace * DENSENET_TRAIN_LIMIT / v['train_images'] / 60:.0f} min at "
                   f"the BreastMNIST victim's recorded pace ({pace / 60:.0f} min, beside other "
                   "work), before its attacks." if pace else "."))]
    p = record.get("pneumoniamnist")
    if p is not None:
        est = p["estimated_train_seconds"]
        lines.append(
            f"- PneumoniaMNIST: its training split has {p['train_images']} images, "
            f"{p['train_images'] / p['breastmnist_train_images']:.1f} times BreastMNIST's "
            f"{p['breastmnist_train_images']}"
            + (f"; training the ResNet-18 victim on it would take about {est / 60:.0f} min at "
               f"the cached victim's recorded pace ({p['breastmnist_train_seconds']:.0f} s "
               "for BreastMNIST); not run by this command." if est is not None else
               "; not run by this command."))
    cap = f", auxiliary data capped at {st['aux_limit']}" if st.get("aux_limit") else ""
    lines += [
        "",
        f"Budget: {st['victims']} victims (a quick audit takes {b['audit_quick_victims']})"
        f"{cap}, {st['epochs']} decoder epochs (the attacks' quick and standard "
        f"budgets: `sdar` {b['sdar']['quick']} and {b['sdar']['standard']}, `split-black-box` "
        f"{b['split-black-box']['quick']} and {b['split-black-box']['standard']}), "
        f"{st['iterations']} UnSplit steps ({b['unsplit']['quick']} and "
        f"{b['unsplit']['standard']}), {st['restarts']} start(s): chosen to keep the run "
        f"within about 20 minutes on {m['cpus']} shared cores (victims' training, when not "
        f"cached, aside); it took {record['wall_seconds'] / 60:.1f} min.",
        "",
        "SDAR's batch-size default (32) was chosen by PSNR on 32 of the ResNet-18's BreastMNIST "
        "layer2 victims (see docs/results/README.md, settings chosen on evaluation data)"
        + (": its BreastMNIST rows are not an independent measure of that default."
           if arch == "resnet18" else "; these images are among this page's BreastMNIST "
           "victims (a different network)."),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--victims", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arch", choices=sorted(ARCHS), default="resnet18")
    parser.add_argument("--data", nargs="+", choices=sorted(ARCHS["resnet18"]["victims"]),
                        default=["breastmnist", "pneumoniamnist"])
    parser.add_argument("--aux-limit", type=int, default=1000)
    parser.add_argument("--attacks", nargs="+", choices=RUN_NAMES, default=list(RUN_NAMES))
    parser.add_argument("--cache", type=Path, default=attack_strength.CACHE)
    add_page_options(parser)
    args = parser.parse_args()
    publish(args, ARCHS[args.arch]["stem"], measure=lambda: run(args), markdown=markdown)


if __name__ == "__main__":
    main()
