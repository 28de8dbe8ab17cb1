"""Cross-check shieldsplit's membership attacks against IBM's Adversarial Robustness Toolbox.

One target (a PGSLNet at a smaller width, trained plainly by shieldsplit on the members)
and ONE pair of member/non-member sets (``shieldsplit.audit.membership.membership_sets``,
seeded) are attacked by

- shieldsplit: ``membership_audit(reference_count=4)`` with loss-threshold, RMIA and
  offline LiRA (reference models trained on halves of the auxiliary images);
- ART 1.20 (an independent implementation), with the same target wrapped in
  ``art.estimators.classification.PyTorchClassifier``:
  ``MembershipInferenceBlackBoxRuleBased`` (member iff correctly classified) and the
  shadow-model attack ``MembershipInferenceBlackBox`` (attack model ``nn`` and ``rf``)
  fitted on the predictions of 2 shadow models that ART's own estimator trains
  (``clone_for_refitting`` + ``fit``: ART's ``ShadowModels`` procedure, with the target's
  epochs and batch size) on complementary halves of the same auxiliary images.

Side by side: AUC with its 95% bootstrap interval, TPR at 1% FPR, balanced advantage
(scikit-learn's ``roc_auc_score`` / ``roc_curve`` on each attack's scores), and the rank
correlation of every attack's scores with shieldsplit's loss-threshold scores on the
same images. Every interpreting sentence is computed from this run.

ART is a benchmark dependency only (``pip install adversarial-robustness-toolbox``); the
script exits with that message when it is missing.

Usage:
    nice -n 5 env OMP_NUM_THREADS=1 python benchmarks/membership_crosscheck.py \\
        --data breastmnist --data-root ../shared/data --out docs/results
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pages import load_line, seed_line
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from shieldsplit._core.io import atomic_write_text
from shieldsplit.attacks.membership import create_membership_attack, probabilities
from shieldsplit.audit.membership import membership_audit, membership_sets, without_shared
from shieldsplit.data import load_dataset
from shieldsplit.datacontract import as_loader
from shieldsplit.experiments.demo import machine_info
from shieldsplit.functional.membership import (
    auc_interval,
    membership_advantage,
    tpr_at_fpr,
)
from shieldsplit.models import PGSLNet
from shieldsplit.training import fit_plain


def art_scores(net: torch.nn.Module, sets: Any, aux: tuple[torch.Tensor, torch.Tensor], *,
               epochs: int, batch_size: int, classes: int, seed: int) -> dict[str, np.ndarray]:
    """ART's attacks on the target: one score per member then per non-member."""
    from art.attacks.inference.membership_inference import (
        MembershipInferenceBlackBox,
        MembershipInferenceBlackBoxRuleBased,
    )
    from art.estimators.classification import PyTorchClassifier

    def wrap(model: torch.nn.Module) -> Any:
        return PyTorchClassifier(
            model=model, loss=torch.nn.CrossEntropyLoss(),
            optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
            input_shape=tuple(aux[0].shape[1:]), nb_classes=classes, clip_values=(0.0, 1.0))

    target = wrap(net.eval())
    x = torch.cat([sets.members[0], sets.nonmembers[0]]).numpy()
    y = torch.cat([sets.members[1], sets.nonmembers[1]]).numpy()
    out: dict[str, np.ndarray] = {}
    rule = MembershipInferenceBlackBoxRuleBased(target)
    out["ART rule-based"] = rule.infer(x, y).astype(float).ravel()

    # ART's ShadowModels procedure, with the target's epochs and batch size
    rng = np.random.default_rng(seed)
    ax, ay = aux[0].numpy(), aux[1].numpy()
    perm = rng.permutation(len(ax))
    halves = (perm[: len(ax) // 2], perm[len(ax) // 2:])
    mem: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    non: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    torch.manual_seed(seed)
    for inside, outside in (halves, halves[::-1]):
        shadow = wrap(PGSLNet(in_channels=ax.shape[1], num_classes=classes,
                              image_size=ax.shape[-1], width=net[0].out_channels,
                              hidden=_hidden(net))).clone_for_refitting()
        shadow.fit(ax[inside], np.eye(classes)[ay[inside]], batch_size=batch_size,
                   nb_epochs=epochs, verbose=False)
        mem.append((ax[inside], ay[inside], shadow.predict(ax[inside])))
        non.append((ax[outside], ay[outside], shadow.predict(ax[outside])))
    mx, my, mp = (np.concatenate(p) for p in zip(*mem, strict=True))
    nx, ny, npred = (np.concatenate(p) for p in zip(*non, strict=True))
    for kind in ("nn", "rf"):
        attack = MembershipInferenceBlackBox(target, attack_model_type=kind)
        attack.fit(mx, np.eye(classes)[my], nx, np.eye(classes)[ny], mp, npred)
        out[f"ART shadow-model ({kind})"] = attack.infer(
            x, np.eye(classes)[y], probabilities=True).reshape(len(x), -1)[:, -1].astype(float)
    return out


def _hidden(net: torch.nn.Module) -> int:
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    return int(linears[0].out_features)


def row(name: str, scores: np.ndarray, labels: np.ndarray, reference: np.ndarray,
        seed: int) -> dict[str, Any]:
    low, high = auc_interval(scores, labels, seed=seed)
    rho = spearmanr(scores, reference).statistic if np.ptp(scores) > 0 else float("nan")
    return {"attack": name, "auc": float(roc_auc_score(labels, scores)), "auc_low": low,
            "auc_high": high, "tpr_1pct": tpr_at_fpr(scores, labels, 0.01),
            "advantage": membership_advantage(scores, labels), "spearman_vs_loss": float(rho)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", default="breastmnist")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--members", type=int, default=233)
    parser.add_argument("--auxiliary", type=int, default=313)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    try:
        import art
    except ImportError:
        sys.exit("benchmarks/membership_crosscheck.py needs the Adversarial Robustness "
                 "Toolbox (a benchmark dependency only): pip install "
                 "adversarial-robustness-toolbox")
    torch.set_num_threads(1)
    start = time.perf_counter()
    ds = load_dataset(args.data, root=args.data_root, seed=0)
    held_all = (torch.cat([ds.x_val, ds.x_test]), torch.cat([ds.y_val, ds.y_test]))
    held = without_shared(held_all, ds.x_train)
    perm = torch.from_numpy(np.random.default_rng(12345).permutation(len(ds.x_train)))
    mi, ai = perm[:args.members], perm[args.members:args.members + args.auxiliary]
    members, aux = (ds.x_train[mi], ds.y_train[mi]), (ds.x_train[ai], ds.y_train[ai])
    torch.manual_seed(args.seed)
    net = PGSLNet(in_channels=ds.x_train.shape[1], num_classes=ds.num_classes,
                  image_size=ds.x_train.shape[-1], width=args.width, hidden=args.hidden)
    fit_plain(net, as_loader(members, batch_size=args.batch_size, seed=args.seed),
              epochs=args.epochs, seed=args.seed, progress=False)
    net.eval()
    # the SAME sets for both: membership_audit draws them with this call and seed
    sets = membership_sets(members, held, seed=args.seed, model=net)
    report = membership_audit(net, members=members, nonmembers=held, auxiliary=aux,
                              epochs=args.epochs, batch_size=args.batch_size,
                              budget="standard", reference_count=4, control=None,
                              seed=args.seed)
    n = report.members
    labels = np.r_[np.ones(n), np.zeros(n)].astype(int)
    loss = create_membership_attack("loss-threshold").score(
        probabilities(net), sets.members, sets.nonmembers)
    reference = np.r_[loss.members, loss.nonmembers]
    rows = []
    for r in report.results:
        rows.append({"attack": f"shieldsplit {r.attack}" + (
            f" ({r.reference_models} reference models)" if r.reference_models else ""),
            "auc": r.auc, "auc_low": r.auc_low, "auc_high": r.auc_high,
            "tpr_1pct": r.tpr.get("1%"), "advantage": r.advantage, "spearman_vs_loss": None})
    rows[0]["spearman_vs_loss"] = 1.0
    for name, s in art_scores(net, sets, aux, epochs=args.epochs, batch_size=args.batch_size,
                              classes=ds.num_classes, seed=args.seed).items():
        rows.append(row(name, s, labels, reference, args.seed))
    with torch.no_grad():
        acc_in = float((net(sets.members[0]).argmax(-1) == sets.members[1]).double().mean())
        acc_out = float((net(sets.nonmembers[0]).argmax(-1) == sets.nonmembers[1])
                        .double().mean())
    seconds = time.perf_counter() - start
    m = machine_info()
    command = ("nice -n 5 env OMP_NUM_THREADS=1 python "
               + " ".join(shlex.quote(a) for a in sys.argv))
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result = {"command": command, "date": date, "machine": m, "art": art.__version__,
              "members": n, "nonmembers": n, "auxiliary": len(aux[0]),
              "train_accuracy": acc_in, "heldout_accuracy": acc_out, "rows": rows,
              "seconds": seconds, "load_average": os.getloadavg()[0]}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"membership_crosscheck_{args.data}.json",
                      json.dumps(result, indent=1))
    atomic_write_text(args.out / f"membership_crosscheck_{args.data}.md",
                      render(args, result))
    print(render(args, result))


def _pct(v: float | None) -> str:
    return "n/r" if v is None else f"{v:.1%}"


def render(args: argparse.Namespace, r: dict[str, Any]) -> str:
    m = r["machine"]
    rows = r["rows"]
    lines = [f"# Membership inference cross-check: shieldsplit against ART ({args.data})", "",
             f"Command: `{r['command']}`  ",
             f"Date: {r['date']}; machine: {m.get('cpus', '?')} cores, torch threads 1, GPU: "
             f"{m.get('gpu', 'none')}, torch {m.get('torch', '?')}, ART {r['art']}; "
             f"{r['seconds']:.0f} s in all.  ",
             load_line(r, own=1), seed_line(args.seed),
             f"Data: {args.data}; {r['members']} members and {r['nonmembers']} non-members "
             f"(the same seeded sets for every attack: members from the training split, "
             f"non-members from validation + test less copies of training images), "
             f"{r['auxiliary']} auxiliary images (other training images) for shieldsplit's "
             f"reference models and ART's shadow models alike. Target: PGSLNet width "
             f"{args.width}, hidden {args.hidden}, trained plainly for {args.epochs} epochs, "
             f"batch {args.batch_size}, seed {args.seed}: accuracy {r['train_accuracy']:.1%} "
             f"on the members, {r['heldout_accuracy']:.1%} on the non-members.", "",
             "| attack | AUC [95% bootstrap CI] | TPR at 1% FPR | balanced advantage | "
             "Spearman vs shieldsplit loss-threshold scores |", "| --- | --- | --- | --- | --- |"]
    for x in rows:
        rho = x["spearman_vs_loss"]
        lines.append(f"| {x['attack']} | {x['auc']:.3f} [{x['auc_low']:.3f}, "
                     f"{x['auc_high']:.3f}] | {_pct(x['tpr_1pct'])} | {x['advantage']:.3f} | "
                     + ("-" if rho is None or rho != rho else f"{rho:.2f}") + " |")
    lines += ["", "## What the numbers say (computed from this run)", ""]
    ours = [x for x in rows if x["attack"].startswith("shieldsplit")]
    theirs = [x for x in rows if x["attack"].startswith("ART")]
    best_o = max(ours, key=lambda x: x["auc"])
    best_t = max(theirs, key=lambda x: x["auc"])
    overlap = best_o["auc_low"] <= best_t["auc_high"] and best_t["auc_low"] <= best_o["auc_high"]
    lines.append(
        f"- Strongest shieldsplit attack: {best_o['attack']}, AUC {best_o['auc']:.3f}; "
        f"strongest ART attack: {best_t['attack']}, AUC {best_t['auc']:.3f} (difference "
        f"{best_o['auc'] - best_t['auc']:+.3f}). Their 95% intervals "
        + ("overlap: this run cannot separate the two implementations (inconclusive as to "
           "which is stronger; consistent with agreement)." if overlap else
           "do not overlap: " + ("shieldsplit's" if best_o["auc"] > best_t["auc"] else "ART's")
           + " strongest attack is measurably stronger on this target."))
    chance = [x["attack"] for x in rows if x["auc_low"] <= 0.5]
    lines.append("- Attacks whose AUC interval includes chance (0.5): "
                 + (", ".join(chance) if chance else "none") + ".")
    rule = next((x for x in theirs if "rule" in x["attack"]), None)
    if rule is not None:
        gap = r["train_accuracy"] - r["heldout_accuracy"]
        lines.append(
            f"- ART's rule-based attack has balanced advantage {rule['advantage']:.3f}; the "
            f"accuracy gap it exploits is {gap:.3f} (members minus non-members): "
            + ("equal within 0.01 (the advantage counts a negative gap as 0), as the rule "
               "implies." if abs(rule["advantage"] - max(gap, 0.0)) < 0.01
               else "they differ by more than 0.01; look."))
    shadow = [x for x in theirs if x["spearman_vs_loss"] is not None
              and x["spearman_vs_loss"] == x["spearman_vs_loss"] and "shadow" in x["attack"]]
    if shadow:
        top = max(shadow, key=lambda x: x["spearman_vs_loss"])
        lines.append(f"- Rank correlation of {top['attack']}'s scores with shieldsplit's "
                     f"loss-threshold scores on the same images: {top['spearman_vs_loss']:.2f}"
                     + (" (the two rank the images alike)." if top["spearman_vs_loss"] >= 0.7
                        else " (below 0.7: the attacks read different signals)."))
    lines += ["", "Raw numbers: `membership_crosscheck_" + args.data + ".json`. ART runs "
              "offline from the same auxiliary images; its shadow models are trained by "
              "ART's own estimator (not shieldsplit's training code)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
