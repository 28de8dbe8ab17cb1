"""The imprint attack of a malicious federated server (Fowl et al., ICLR 2022), measured.

For each data set (scikit-learn's 8x8 digits; BreastMNIST 28x28 when its file is under
the data root) a small ConvNet (``SmallConvNet``, tanh) is trained on the training split, which
is also the server's auxiliary data (the bins' calibration). Victim batches are drawn,
without replacement, from the validation and test splits. The server sends
``ImprintAttack.modify(net)``; the client returns its gradient (or FedAvg update, or what
a defence makes of it); the attack reads the images.

* **Batch sizes**: the fraction of each batch recovered almost exactly (PSNR of a victim
  against its nearest reconstruction at least ``EXACT_PSNR_DB`` = 60 dB) beside the
  analytic expectation ``((k - 1) / k)^(B - 1)`` for ``k`` equiprobable bins, and the
  fraction of images that were in fact alone in their bin (the bins' truth, from the
  block's measurement of the victims).
* **FedAvg updates**: one local step, and the auditor's FedAvg protocol, at two gains.
* **Defences**: every registered defence with a federated form, wrapped untrained around
  the modified trained network (the imprint needs no training), observed through the
  defence's own ``observe_federated``.
* **DP-SGD**: a sweep of noise multipliers (per-example clipping at 1.0), through
  ``DPSGD.observe_federated``; the mean PSNR of the reconstructions paired one-to-one
  with the victims (the auditor's pairing) against the auxiliary-mean baseline.

Usage:
    python benchmarks/imprint.py --seed 0 --out docs/results

Writes ``imprint.json`` and ``imprint.md`` under ``--out``; every sentence that
interprets a number is computed from the JSON (``--render`` rewrites the page alone).
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pages import add_page_options, command_line, header, publish
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit._core.provenance import machine_info
from shieldsplit.attacks.base import AttackContext
from shieldsplit.attacks.imprint import ImprintAttack
from shieldsplit.audit.budgets import FEDAVG
from shieldsplit.data import default_data_root, load_dataset
from shieldsplit.defenses.base import available_defenses, create_defense, defense_config
from shieldsplit.defenses.dpsgd import DPSGD, DPSGDConfig
from shieldsplit.errors import ShieldSplitError
from shieldsplit.functional.imprint import (
    EXACT_PSNR_DB,
    bin_index,
    expected_recovered_fraction,
    nearest_psnr,
)
from shieldsplit.functional.metrics import psnr
from shieldsplit.functional.stats import (
    bootstrap_interval,
    majority_rate,
    match_order,
    pairwise_mse,
)
from shieldsplit.models import SmallConvNet
from shieldsplit.observe import observe_gradient, observe_update
from shieldsplit.training import fit_plain

CUT = 1  # the user's cut for the split-based defences (after the first conv block)


def train_net(ds: Any, *, epochs: int, seed: int) -> tuple[nn.Module, float]:
    """A SmallConvNet (tanh) trained on the training split (Adam, batch 32); its test
    accuracy."""
    torch.manual_seed(seed)
    net = SmallConvNet(in_channels=ds.in_channels, num_classes=ds.num_classes,
                       image_size=int(ds.x_train.shape[-1]), width=12,
                       activation="tanh")
    loader = DataLoader(TensorDataset(ds.x_train, ds.y_train.long()), batch_size=32,
                        shuffle=True, generator=torch.Generator().manual_seed(seed))
    fit_plain(net, loader, epochs=epochs, seed=seed, progress=False)
    net.eval()
    with torch.no_grad():
        accuracy = float((net(ds.x_test).argmax(1) == ds.y_test).double().mean())
    return net, accuracy


def bins_of(attack: ImprintAttack, x: Tensor) -> Tensor:
    """The bin of each image of ``x`` (the truth, from the block's measurement; -1: none)."""
    cal = attack.calibration
    if cal is None:
        raise RuntimeError("the attack is not prepared")
    return bin_index(x.flatten(1).double() @ cal["direction"].double(),
                     cal["thresholds"].double())


def lone_mask(attack: ImprintAttack, x: Tensor) -> Tensor:
    """Which images of ``x`` are alone in their bin."""
    bins = bins_of(attack, x)
    counts = torch.bincount(bins + 1, minlength=attack.bins + 1)
    return (counts[bins + 1] == 1) & (bins >= 0)


def pool_expectation(bins: Tensor, batch: int) -> float:
    """The expected fraction alone in its bin of ``batch`` images drawn without replacement
    from a pool whose images fall in ``bins`` (-1: below every bin, never read):
    ``sum_j (n_j / N) C(N - n_j, B - 1) / C(N - 1, B - 1)``."""
    n = len(bins)
    counts = torch.bincount(bins[bins >= 0]).tolist()
    total = math.comb(n - 1, batch - 1)
    return sum(c / n * math.comb(n - c, batch - 1) / total for c in counts if c > 0)


def draws(pool: int, batch: int, trials: int, seed: int) -> list[Tensor]:
    """``trials`` victim index sets of ``batch`` images from a pool, without replacement."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(pool, generator=g)[:batch] for _ in range(trials)]


def summary(fractions: list[float], seed: int) -> dict[str, Any]:
    """Mean of per-batch fractions with a bootstrap interval over batches."""
    low, high = bootstrap_interval(np.asarray(fractions), seed=seed)
    return {"mean": float(np.mean(fractions)), "low": float(low), "high": float(high),
            "per_batch": [round(f, 4) for f in fractions]}


def score(attack: ImprintAttack, obs: Any, x: Tensor) -> tuple[float, list[float]]:
    """(fraction recovered almost exactly, one-to-one PSNRs) of one observation."""
    images = attack.reconstruct(obs).images
    exact = float((nearest_psnr(images, x) >= EXACT_PSNR_DB).double().mean())
    return exact, psnr(match_order(images, x), x).tolist()


def median(values: list[list[float]]) -> float:
    """The median over every victim of several batches (inf: an image read bit-exactly)."""
    return float(np.median([v for batch in values for v in batch]))


def measure_data(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of one data set."""
    start = time.perf_counter()
    ds = load_dataset(name, root=args.data_root or default_data_root(), seed=args.seed)
    net, accuracy = train_net(ds, epochs=args.epochs, seed=args.seed)
    aux = ds.x_train
    pool_x = torch.cat([ds.x_val, ds.x_test])
    pool_y = torch.cat([ds.y_val, ds.y_test]).long()
    shape = (int(aux.shape[1]), int(aux.shape[2]), int(aux.shape[3]))
    context = AttackContext(image_shape=shape, num_classes=ds.num_classes, model=net,
                            auxiliary_images=aux, seed=args.seed)
    attack = ImprintAttack(seed=args.seed, bins=args.bins)
    attack.prepare(context)
    sent = attack.modify(net)
    duplicates = int((pairwise_mse(pool_x, aux).min(dim=1).values
                      <= 10 ** (-EXACT_PSNR_DB / 10)).sum())
    baseline_image = aux.mean(0, keepdim=True)

    batches = []
    for b in args.batch_sizes:
        exact, lone, missed, shared, low_psnr = [], [], [], [], []
        for idx in draws(len(pool_x), b, args.trials, args.seed + b):
            x, y = pool_x[idx], pool_y[idx]
            images = attack.reconstruct(observe_gradient(sent, x, y)).images
            p = nearest_psnr(images, x)
            hit, alone = p >= EXACT_PSNR_DB, lone_mask(attack, x)
            exact.append(float(hit.double().mean()))
            lone.append(float(alone.double().mean()))
            missed.append(int((alone & ~hit).sum()))
            shared.append(int((hit & ~alone).sum()))
            if bool(hit.any()):
                low_psnr.append(float(p[hit].min()))
        batches.append({
            "batch_size": b, "recovered": summary(exact, args.seed),
            "alone": summary(lone, args.seed), "images": b * args.trials,
            "alone_not_recovered": sum(missed), "recovered_sharing_a_bin": sum(shared),
            "analytic": expected_recovered_fraction(b, args.bins),
            "pool_bins": pool_expectation(bins_of(attack, pool_x), b),
            "lowest_recovered_psnr": min(low_psnr) if low_psnr else None,
        })
        print(name, batches[-1]["batch_size"], batches[-1]["recovered"]["mean"], flush=True)

    b = args.defense_batch
    sets = draws(len(pool_x), b, args.defense_trials, args.seed + 7919)
    baseline = median([psnr(baseline_image.expand(b, *shape), pool_x[i]).tolist()
                       for i in sets])
    updates = []
    protocols = {"one local step": {"local_epochs": 1, "local_batch_size": b,
                                    "lr": float(FEDAVG["lr"])},
                 "auditor's FedAvg": dict(FEDAVG)}
    for gain in args.gains:
        gained = ImprintAttack(seed=args.seed, bins=args.bins, gain=gain)
        gained.prepare(context)
        model = gained.modify(net)
        for label, local in protocols.items():
            got = [score(gained, observe_update(model, pool_x[i], pool_y[i], **local),
                         pool_x[i])[0] for i in sets]
            updates.append({"gain": gain, "protocol": label, "local": local,
                            "recovered": summary(got, args.seed)})

    defenses = []
    for dname in available_defenses(surface="federated"):
        row: dict[str, Any] = {"defense": dname}
        options: dict[str, Any] = {}
        if "input_shape" in defense_config(dname).model_fields:
            options["input_shape"] = shape
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                defense = create_defense(dname, sent, cut=attack.modified_cut(CUT),
                                         seed=args.seed, **options)
                scores = [score(attack, defense.observe_federated(
                    pool_x[i], pool_y[i], kind="gradient", seed=args.seed), pool_x[i])
                    for i in sets]
        except ShieldSplitError as err:
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            defenses.append(row)
            continue
        row["recovered"] = summary([s[0] for s in scores], args.seed)
        row["median_psnr"] = median([s[1] for s in scores])
        defenses.append(row)

    dp = []
    for sigma in args.noise:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            private = DPSGD(sent, cut=attack.modified_cut(CUT), seed=args.seed,
                            noise_multiplier=float(sigma), max_grad_norm=args.max_grad_norm)
            scores = [score(attack, private.observe_federated(
                pool_x[i], pool_y[i], kind="gradient", seed=args.seed + t), pool_x[i])
                for t, i in enumerate(sets)]
        dp.append({"noise_multiplier": float(sigma),
                   "recovered": summary([s[0] for s in scores], args.seed),
                   "median_psnr": median([s[1] for s in scores])})
    return {
        "data": name, "seconds": time.perf_counter() - start, "source": ds.source,
        "image_shape": list(shape),
        "auxiliary": len(aux), "pool": len(pool_x), "test_accuracy": accuracy,
        "majority_rate": majority_rate(ds.y_test),
        "pool_duplicates_in_auxiliary": duplicates, "batches": batches,
        "defense_batch": b, "defense_trials": args.defense_trials,
        "baseline_psnr": baseline, "updates": updates, "defenses": defenses, "dp": dp,
        "dp_no_exact_from": first_zero(dp), "dp_at_baseline_from": first_baseline(dp, baseline),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The record of the page."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    root = args.data_root or default_data_root()
    names = [n for n in args.data if n == "digits"
             or (root is not None and (Path(root) / f"{n}.npz").exists())]
    rows = [measure_data(n, args) for n in names]
    return {
        "command": command_line("benchmarks/imprint.py", args, skip=("data_root",)),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "load_average": os.getloadavg()[0], "seed": args.seed,
        "bins": args.bins, "threshold_db": EXACT_PSNR_DB, "epochs": args.epochs,
        "trials": args.trials, "max_grad_norm": args.max_grad_norm,
        "dpsgd_default_noise": DPSGDConfig().noise_multiplier,
        "skipped": [n for n in args.data if n not in names],
        "seconds": time.perf_counter() - start, "rows": rows,
    }


# ------------------------------------------------------------------ the page


def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def interval(s: dict[str, Any]) -> str:
    return f"{pct(s['mean'])} ({pct(s['low'])}-{pct(s['high'])})"


def first_zero(dp: list[dict[str, Any]]) -> float | None:
    """The smallest noise multiplier from which on no image is recovered in any batch."""
    found = None
    for row in reversed(dp):
        if max(row["recovered"]["per_batch"]) > 0:
            break
        found = row["noise_multiplier"]
    return found


def first_baseline(dp: list[dict[str, Any]], baseline: float) -> float | None:
    """The smallest noise multiplier from which on the median PSNR is at or below the
    baseline's."""
    found = None
    for row in reversed(dp):
        if row["median_psnr"] > baseline:
            break
        found = row["noise_multiplier"]
    return found


def db(v: float) -> str:
    return "inf (bit-exact)" if math.isinf(v) else f"{v:.1f} dB"


def batch_sentence(b: dict[str, Any], k: int, thr: float) -> str:
    """One computed sentence per batch size."""
    rec, lone = b["recovered"], b["alone"]
    inside = rec["low"] <= b["analytic"] <= rec["high"]
    pool_inside = lone["low"] <= b["pool_bins"] <= lone["high"]
    missed, shared, n = b["alone_not_recovered"], b["recovered_sharing_a_bin"], b["images"]
    return (
        f"- Batch {b['batch_size']}, {k} bins: {pct(rec['mean'])} recovered against "
        f"{pct(b['analytic'])} expected for equiprobable bins (the analytic value is "
        + ("inside" if inside else "outside") + " the interval). "
        f"{pct(lone['mean'])} of the images were alone in their bin; the bins as they fall "
        f"on the victim pool predict {pct(b['pool_bins'])} for draws without replacement, "
        + ("inside" if pool_inside else "outside") + " that fraction's interval "
        f"({pct(lone['low'])}-{pct(lone['high'])})"
        + ("; every image alone in its bin was read at or above the threshold" if missed == 0
           else f"; {missed} of the {n} images {'was' if missed == 1 else 'were'} alone in "
           f"their bin but read below {thr:g} dB")
        + (f"; {shared} {'image was' if shared == 1 else 'images were'} recovered though "
           "sharing a bin (the other images' share of the bin was negligible)" if shared else "")
        + ".")


def data_section(r: dict[str, Any], record: dict[str, Any]) -> list[str]:
    k, thr = record["bins"], record["threshold_db"]
    lines = [
        f"## {r['data']} ({'x'.join(map(str, r['image_shape']))})", "",
        f"Data: {r['source']}. SmallConvNet (width 12, tanh) trained {record['epochs']} epochs "
        f"on the {r['auxiliary']} training images (test accuracy {pct(r['test_accuracy'])}, "
        f"majority class {pct(r['majority_rate'])}); "
        f"the same {r['auxiliary']} images are the server's auxiliary data. Victims: "
        f"{record['trials']} batches per size drawn from the {r['pool']} validation and test "
        f"images ({r['pool_duplicates_in_auxiliary']} of which have a copy within {thr:g} dB "
        f"in the auxiliary data). {r['seconds']:.0f} s.", "",
        f"| batch size | recovered at >= {thr:g} dB: mean (95% CI over batches) | alone in "
        "their bin | analytic ((k-1)/k)^(B-1) | predicted by the pool's bins | lowest PSNR "
        "of a recovered image |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for b in r["batches"]:
        low = b["lowest_recovered_psnr"]
        lines.append(f"| {b['batch_size']} | {interval(b['recovered'])} | "
                     f"{interval(b['alone'])} | {pct(b['analytic'])} | {pct(b['pool_bins'])} | "
                     f"{'-' if low is None else db(low)} |")
    lines += ["", *(batch_sentence(b, k, thr) for b in r["batches"])]
    lines += ["", f"FedAvg updates (batch {r['defense_batch']}, {r['defense_trials']} batches). "
              "The read does not depend on the update's scale, but a float32 update holds the "
              "gradient only to the precision of the weights (a small gain makes the imprint "
              "gradients large beside its weights), and over several steps the bins move with "
              "the weights (a small gain moves them more):", "",
              f"| gain | protocol | recovered at >= {thr:g} dB |", "| --- | --- | --- |"]
    for u in r["updates"]:
        loc = u["local"]
        lines.append(f"| {u['gain']:g} | {u['protocol']} ({loc['local_epochs']} epoch(s), "
                     f"batch {loc['local_batch_size']}, lr {loc['lr']:g}) | "
                     f"{interval(u['recovered'])} |")
    lines.append("")
    plain = next((d for d in r["defenses"] if d["defense"] == "none" and "recovered" in d),
                 None)
    against = ("" if plain is None else f", against {pct(plain['recovered']['mean'])} from "
               "the gradient of the same batches")
    for protocol in dict.fromkeys(u["protocol"] for u in r["updates"]):
        rows = [u for u in r["updates"] if u["protocol"] == protocol]
        best = max(rows, key=lambda u: u["recovered"]["mean"])
        lines.append(f"- {protocol}: the best gain of the run is {best['gain']:g} "
                     f"({pct(best['recovered']['mean'])} recovered{against}).")
    lines += ["", f"Defences with a federated form (untrained wrappers around the modified "
              f"network, batch {r['defense_batch']}, {r['defense_trials']} batches; the "
              f"auxiliary-mean image's median PSNR, the no-attack baseline, is "
              f"{r['baseline_psnr']:.1f} dB):", "",
              f"| defence | recovered at >= {thr:g} dB | median PSNR, one-to-one pairing |",
              "| --- | --- | --- |"]
    for d in r["defenses"]:
        if "error" in d:
            lines.append(f"| {d['defense']} | not run: {d['error']} | - |")
        else:
            lines.append(f"| {d['defense']} | {interval(d['recovered'])} | "
                         f"{db(d['median_psnr'])} |")
    lines.append("")
    ran = [d for d in r["defenses"] if "error" not in d]
    none_read = [d["defense"] for d in ran if max(d["recovered"]["per_batch"]) == 0]
    read = [d["defense"] for d in ran if max(d["recovered"]["per_batch"]) > 0]
    above = [d["defense"] for d in ran if d["median_psnr"] > r["baseline_psnr"]]
    lines.append(f"- Images recovered almost exactly through: {', '.join(read) or 'none'}; "
                 f"no image at {thr:g} dB in any batch through: {', '.join(none_read) or 'none'}"
                 f". Median PSNR above the no-attack baseline: {', '.join(above) or 'none'}.")
    lines += ["", f"DP-SGD (per-example clipping at {record['max_grad_norm']:g}, noise "
              f"multiplier swept; batch {r['defense_batch']}, {r['defense_trials']} batches):",
              "", f"| noise multiplier | recovered at >= {thr:g} dB | median PSNR, one-to-one "
              "pairing |", "| --- | --- | --- |"]
    for row in r["dp"]:
        lines.append(f"| {row['noise_multiplier']:g} | {interval(row['recovered'])} | "
                     f"{db(row['median_psnr'])} |")
    zero, base = r["dp_no_exact_from"], r["dp_at_baseline_from"]
    clip = next((row for row in r["dp"] if row["noise_multiplier"] == 0), None)
    lines += [""]
    if clip is not None:
        same = plain is not None and abs(clip["recovered"]["mean"]
                                          - plain["recovered"]["mean"]) < 0.01
        lines.append(f"- Clipping alone (noise multiplier 0): {pct(clip['recovered']['mean'])} "
                     "recovered" + ("" if plain is None else
                                    f", {pct(plain['recovered']['mean'])} without DP-SGD")
                     + (": clipping scales an example's whole gradient, which cancels in the "
                        "read's ratio" if same else "") + ".")
    lines.append(
        f"- No image is recovered at {thr:g} dB in any batch "
        + ("at no noise multiplier of the sweep" if zero is None
           else f"from noise multiplier {zero:g} on")
        + f"; the median PSNR is at or below the no-attack baseline ({r['baseline_psnr']:.1f} "
        "dB) " + ("at no noise multiplier of the sweep" if base is None
                  else f"from noise multiplier {base:g} on") + ".")
    default = record["dpsgd_default_noise"]
    if zero is not None and zero > 0:
        lines.append(f"- The DP-SGD defence's default noise multiplier, {default:g}, is "
                     f"{default / zero:,.0f} times the smallest of the sweep from which no image "
                     f"is read exactly" + ("" if base is None or base <= 0 else
                                           f", and {default / base:,.0f} times the smallest "
                                           "from which the median PSNR is at the baseline")
                     + ".")
    return [*lines, ""]


def markdown(record: dict[str, Any]) -> str:
    """The page: every interpreting sentence computed from ``record``."""
    lines = ["# The imprint attack of a malicious federated server", "",
             *header(record, seed=record["seed"]),
             f"Data: {', '.join(r['source'] for r in record['rows'])}"
             + (f" ({', '.join(record['skipped'])} skipped: no file under the data root)"
                if record["skipped"] else "") + ".  ",
             f"Run time: {record['seconds']:.0f} s.", "",
             f"The server inserts an imprint block of {record['bins']} bins (a random unit "
             "direction's quantiles on the auxiliary data) in front of the model it sends "
             "and reads each image alone in its bin from the difference of consecutive bins' "
             "gradients (`shieldsplit.attacks.imprint`). An image counts as recovered almost "
             f"exactly when its nearest reconstruction is at least {record['threshold_db']:g} "
             "dB from it (RMSE 1e-3, finer than 8-bit quantisation's 58.9 dB).", ""]
    for r in record["rows"]:
        lines += data_section(r, record)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["digits", "breastmnist"])
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--bins", type=int, default=128)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--trials", type=int, default=25)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--defense-batch", type=int, default=32)
    parser.add_argument("--defense-trials", type=int, default=5)
    parser.add_argument("--gains", type=float, nargs="+", default=[1e-3, 1e-5])
    parser.add_argument("--noise", type=float, nargs="+",
                        default=[0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0])
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    add_page_options(parser)
    args = parser.parse_args()
    publish(args, "imprint", measure=lambda: run(args), markdown=markdown)


if __name__ == "__main__":
    main()
