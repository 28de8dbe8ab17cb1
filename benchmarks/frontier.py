"""The privacy-utility frontier of every defence on a MedMNIST data set (issue 4's evidence).

Trains every registered defence (with strength sweeps) on the same split of the
data, audits each with the federated Inverting Gradients attack on a 5-local-epoch
FedAvg update of 8 images and with the split-learning black-box decoder, and writes
``frontier_<data>.json``, ``.html`` (plot + table) and ``.md`` (table, the
matched-accuracy comparison the paper claims, and how it was run) to ``--out``.

Usage:
    python benchmarks/frontier.py --data breastmnist --data-root ../shared/data --out docs/results
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import cast

import torch
from pages import add_page_options, command_line, header, load_line

import shieldsplit as ss
from shieldsplit._core.io import atomic_write_text
from shieldsplit.attacks.base import attack_class
from shieldsplit.compare.frontier import (
    CompareTable,
    DefenseRun,
    match_by_accuracy,
    matched_on,
    not_applicable,
    redecide,
    run_label,
    stuck,
)
from shieldsplit.data import load_dataset
from shieldsplit.experiments.reproduce.reading import (
    balanced_cell,
    chance_sentence,
    control_leaks,
    control_leaks_images,
    matched_claim,
    psnr_range,
    verdict_cell,
    verdict_count_sentence,
)
from shieldsplit.functional.verdict import Evidence
from shieldsplit.settings import Budget

SWEEPS = {
    "latent-fixed": [0.1, 0.5, 1.0, 2.0],
    "latent-learned": [0.1, 1.0, 10.0],
    "dpsgd": [0.5, 1.0, 2.0],
    "nopeek": [0.1, 1.0],
    "laplace": [0.1, 0.5, 1.0],
    "bido": [0.05, 0.5],
}
FEDAVG = "inverting-gradients-fedavg"
#: The latent paper's claim: >= 12.4% higher MSE and >= 12.5% lower attacker accuracy.
MSE_GAIN, ACC_DROP = 0.124, 0.125
BLACK_BOX = "split-black-box"
#: the honest FedAvg attacks (Inverting Gradients on the update, Dimitrov et al.'s
#: simulation of the local steps), the malicious server's imprint block, the split decoder
ATTACKS = (FEDAVG, "fedavg-simulation", "imprint", BLACK_BOX)


def attack_words(table: CompareTable, attack: str) -> str:
    """One attack in words: what it does and its threat model, from its declaration."""
    if attack == FEDAVG:
        what = "Inverting Gradients on the weight update after 5 local epochs of SGD at batch 8"
    elif attack == BLACK_BOX:
        what = "inversion decoder trained on the auxiliary training images' wire activations"
    else:
        cls = attack_class(attack)
        what = (cls.__doc__ or attack).strip().splitlines()[0].rstrip(".")
        what = what[0].lower() + what[1:] if what[:2] != what[:2].upper() else what
    return (f"`{attack}` = {what} ({attack_class(attack).threat_words()}; "
            f"{victims(table, attack)} victims)")


def matched(table: CompareTable, baseline: str, attack: str) -> list[tuple[str, str]]:
    """For each baseline point, the latent-perturbation point nearest in accuracy, with
    both verdicts and the paper's claim decided for that pair (see
    :func:`shieldsplit.experiments.reproduce.reading.matched_claim`): ``(table row, claim)``
    each."""
    latent = [r for r in table.rows if r.defense.startswith("latent")]
    control = [r.leakage[attack] for r in table.rows if r.defense == "none"
               and attack in r.leakage]
    out: list[tuple[str, str]] = []
    for p in match_by_accuracy(latent, [r for r in table.rows if r.defense == baseline],
                               attack):
        b, c = p.baseline.leakage[attack], p.candidate.leakage[attack]
        label, why = matched_claim([p], control, mse_gain=MSE_GAIN, accuracy_drop=ACC_DROP)
        out.append((
            f"| {attack} | {run_label(p.baseline)} ({accuracies(p.baseline)}) "
            f"| {run_label(p.candidate)} ({accuracies(p.candidate)}) "
            f"| {b.mse:.4f} -> {c.mse:.4f} ({p.mse_gain:+.1%}) "
            f"| {balanced_cell([b])} -> {balanced_cell([c])} ({-p.attacker_accuracy_drop:+.1%}) "
            f"| {verdict_cell([b])} / {verdict_cell([c])} "
            f"| {'**' + label + '**' if label == 'does not hold' else label} | {why} |", label))
    return out


def accuracies(r: DefenseRun) -> str:
    """A run's accuracy as the matched table shows it: validation (what pairs it) and test,
    or test alone for a table made before validation accuracy was kept."""
    if r.val_accuracy is None:
        return f"test {r.accuracy:.1%}"
    return f"val {r.val_accuracy:.1%}, test {r.accuracy:.1%}"


def victims(table: CompareTable, attack: str) -> str:
    """The victims ``attack`` rebuilt, as measured (one number, or the range over rows)."""
    n = sorted({r.leakage[attack].images for r in table.rows if attack in r.leakage
                and r.leakage[attack].status == "ok"})
    return "-" if not n else str(n[0]) if len(n) == 1 else f"{n[0]}-{n[-1]}"


def _image_words(e: Evidence | None) -> str:
    if e is None:
        return "no evidence recorded"
    return (f"{e.identified} of {e.images} re-identified, PSNR gain {e.gain_db or 0:+.1f} dB "
            f"[{e.gain_low if e.gain_low is not None else float('nan'):+.1f}, "
            f"{e.gain_high if e.gain_high is not None else float('nan'):+.1f}]")


def reading(table: CompareTable) -> list[str]:
    """Sentences computed from the table: each attack on the undefended run (which kinds
    of evidence it leaked there, so which verdicts it can vouch for), stuck classifiers,
    the membership control, and chance."""
    out = []
    for attack in table.attacks:
        res = [r.leakage[attack] for r in table.rows if attack in r.leakage
               and r.leakage[attack].status != "n/a"]
        none = [r.leakage[attack] for r in table.rows if r.defense == "none"
                and attack in r.leakage and r.leakage[attack].status != "n/a"]
        rng = psnr_range(res)
        shown = ("no result" if not rng else f"PSNR {rng[0]:.1f} dB on its one defence"
                 if len(res) == 1 else f"PSNR {rng[0]:.1f}-{rng[1]:.1f} dB over the defences")
        if not none:
            vouch = ("It does not apply to the undefended run; its control is its stand-in "
                     "there (the attack it adapts from).")
        elif control_leaks_images(none):
            vouch = (f"It leaks images on the undefended run ({_image_words(none[0].evidence)}), "
                     "so it can vouch for a defence's *no leakage found* where the rule's "
                     "other conditions hold (same setting, significantly below, under the "
                     "tolerance).")
        elif control_leaks(none):
            kinds = (none[0].reason or "leaks labels or the class").removeprefix("leaks ")
            vouch = (f"On the undefended run it leaks {kinds}"
                     " but no images, so it vouches for no image verdict: a defence cannot "
                     "earn *no leakage found* from it.")
        else:
            vouch = ("It is not shown to leak undefended, so it vouches for no *no leakage "
                     "found* (such verdicts read *inconclusive*).")
        leaked = [r for r in res if r.verdict == "leaks"]
        if none and not control_leaks(none) and leaked:
            vouch += (f" It leaks on {len(leaked)} defended runs but not on the undefended "
                      "one: a leak stands on its own, but these verdicts do not rank the "
                      "defences (the same victims, one seed).")
        out.append(f"- `{attack}`: {shown}; " + verdict_count_sentence("verdicts", res) + "; "
                   + verdict_count_sentence("on the undefended run", none) + ". " + vouch)
    out += stuck_lines(table)
    out += image_verdict_lines(table)
    out += membership_control_lines(table)
    chance = chance_sentence([r.leakage[a] for r in table.rows for a in table.attacks
                              if a in r.leakage and r.leakage[a].status == "ok"])
    majority = {r.majority_rate for r in table.rows if r.majority_rate is not None}
    if majority:
        chance += (f" Client accuracy is read against the test majority-class rate "
                   f"{max(majority):.1%}.")
    return [*out, "", chance]


def stuck_lines(table: CompareTable) -> list[str]:
    """The runs whose classifier predicts one class, and the membership *no leakage
    found* verdicts that rest on them (a model that learned nothing leaks nothing)."""
    runs = [r for r in table.rows if stuck(r)]
    if not runs:
        return []
    nlf = [r for r in table.rows if r.membership is not None
           and r.membership.verdict == "no leakage found"]
    on_stuck = [r for r in nlf if stuck(r)]
    bal = sorted({f"{r.balanced_accuracy:.1%}" for r in runs
                  if r.balanced_accuracy is not None})
    line = (f"- Stuck classifiers: {len(runs)} of {len(table.rows)} runs predict one class "
            f"for every image ({', '.join(run_label(r) for r in runs)}; balanced accuracy "
            f"{', '.join(bal) or 'not recorded'}, chance {1 / classes(table):.1%}). They have "
            "learned nothing to protect: a *no leakage found* there is not protection, and "
            "their accuracy is the majority rate.")
    if nlf:
        line += (f" {len(on_stuck)} of the {len(nlf)} membership *no leakage found* "
                 "verdicts on this page are on these runs"
                 + (": no membership verdict here shows a defence that learned the task "
                    "and resisted the attacks." if len(on_stuck) == len(nlf) else "."))
    return [line]


def classes(table: CompareTable) -> int:
    """The task's number of classes (from the data set's description)."""
    found = re.search(r"(\d+) classes", table.dataset)
    return int(found.group(1)) if found else 2


def image_verdict_lines(table: CompareTable) -> list[str]:
    """Every image attack's *no leakage found* with its line-up count and its control's
    kind of leak, so that a verdict never stands apart from the evidence beside it."""
    found = [(run_label(r), a, res) for r in table.rows for a, res in r.leakage.items()
             if res.verdict == "no leakage found"]
    if not found:
        return ["- Image attacks' *no leakage found*: none on this page (every image "
                "verdict is *leaks* or *inconclusive*)."]
    parts = []
    for name, attack, res in found:
        e = res.evidence
        seen = (f"{e.identified} of {e.images} re-identified" if e is not None
                and e.identified is not None else "line-up not recorded")
        ctl = res.control.evidence if res.control is not None else None
        kind = ("its control leaked images" if ctl is not None and ctl.image_leak else
                "its control leaked no images (labels or the class only)")
        parts.append(f"{name} with `{attack}` ({seen}; {kind})")
    return [f"- Image attacks' *no leakage found*: {len(found)}: " + "; ".join(parts) + "."]


def membership_control_lines(table: CompareTable) -> list[str]:
    """Whether membership's overfitted control leaked, per group of runs that share one
    control (its AUCs with their intervals), and what that allows the verdicts to say."""
    reports = [(r, r.membership) for r in table.rows
               if r.membership is not None and r.membership.control]
    if not reports:
        return []
    runs = [r for r, _ in reports]
    groups: dict[bool, dict[tuple, list[str]]] = {}
    for r, m in reports:
        ctl = m.control or []
        aucs = tuple((c.attack, round(c.auc, 3), round(c.auc_low, 3), round(c.auc_high, 3))
                     for c in ctl)
        leaked = any(c.evidence.leaks for c in ctl)
        groups.setdefault(leaked, {}).setdefault(aucs, []).append(run_label(r))
    epochs = sorted({m.control_epochs for _, m in reports if m.control_epochs is not None})
    what = (f"a copy trained {', '.join(map(str, epochs))} epochs on the members"
            if epochs else "an overfitted copy")
    parts = []
    for leaked in (True, False):
        if leaked not in groups:
            continue
        count = sum(len(names) for names in groups[leaked].values())
        shared = []
        for aucs, names in sorted(groups[leaked].items(), key=lambda g: -len(g[1])):
            who = (", ".join(names) if len(names) <= 4
                   else f"{len(names)} runs that share one control")
            shared.append(f"{who}: " + ", ".join(f"{a} AUC {v:.3f} [{lo:.3f}, {hi:.3f}]"
                                                 for a, v, lo, hi in aucs))
        parts.append(f"{'leaked' if leaked else 'did not leak'} for {count} of {len(runs)} "
                     f"runs ({'; '.join(shared)})")
    line = f"- Membership's positive control ({what}) " + "; it ".join(parts) + "."
    if False in groups:
        line += (" Where it did not leak, membership verdicts are *inconclusive*, never "
                 "*no leakage found*.")
    if True in groups and any(stuck(r) for r in runs):
        line += (" Where it leaked, a *no leakage found* still says nothing about a run "
                 "whose classifier is stuck (above).")
    return [line]

def added_lines(run: dict) -> list[str]:
    """How the attacks added to an earlier table were run (``--add-attacks``)."""
    out = []
    for added in run.get("added", []):
        load = load_line(added, own=2).removeprefix("Load: ").strip().rstrip(".")
        wall = added.get("wall_minutes")
        took = "time not recorded" if wall is None else f"{wall:.1f} min"
        if wall is None and added.get("load_average") is None:
            load = ("not recorded (merged with --reuse-added from the retrained table that "
                    "an earlier run kept when its merge failed)")
        line = (f"Added attacks {', '.join(f'`{a}`' for a in added['attacks'])}: "
                f"`{added['command']}` on {added['date']}, {took}; "
                f"load: {load}. Every defence was retrained with the table's seed; ")
        if added.get("not_applicable"):
            line += (f"none of them applies to {', '.join(added['not_applicable'])} (no "
                     "federated form), whose added cells read n/a; ")
        if added["same_models"]:
            line += (f"all {added['rows']} retrained runs reproduced the table's test "
                     "accuracy exactly, so the added columns attack the same models.  ")
        else:
            line += (f"{len(added['mismatched'])} of {added['rows']} did not reproduce the "
                     f"table's test accuracy ({', '.join(added['mismatched'])}): their added "
                     "columns attack a retrained model, not the one in the other columns.  ")
        out.append(line)
    return out


def retrained_row(row, fresh_rows):
    """The retrained run of the earlier table's ``row``: the same defence at the same
    strength value or, for a row recorded before its defence declared a knob (strength
    None then, a value now), the same options, or else that defence's only run; None when
    the added attacks ran on no run of that defence (none of them applies to it).

    Example:
        >>> from types import SimpleNamespace as R
        >>> fresh = [R(defense="pgsl", strength_value=0.5, options={"a": 1}),
        ...          R(defense="laplace", strength_value=1.0, options={})]
        >>> retrained_row(R(defense="pgsl", strength_value=None, options={"b": 2}), fresh).options
        {'a': 1}
        >>> retrained_row(R(defense="laplace", strength_value=1.0, options={}), fresh).defense
        'laplace'
        >>> retrained_row(R(defense="bido", strength_value=0.5, options={}), fresh) is None
        True
    """
    same = [r for r in fresh_rows if r.defense == row.defense]
    if not same:
        return None
    for match in (lambda r: r.strength_value == row.strength_value,
                  lambda r: r.options == row.options):
        found = [r for r in same if match(r)]
        if len(found) == 1:
            return found[0]
    if len(same) == 1:
        return same[0]
    raise KeyError(f"no single retrained run of {row.defense} at {row.strength_value} "
                   f"among {[(r.defense, r.strength_value) for r in same]}")


def add_attacks(table: CompareTable, net: torch.nn.Module, ds, args) -> CompareTable:
    """Run ``--add-attacks`` on every defence of an earlier table (retrained with its seed)
    and merge their results into its rows, recording whether the retrained models are the
    table's (equal test accuracy)."""
    kept = Path("out") / f"frontier_{args.data}_added.json"
    if args.reuse_added:  # the retrained table a failed merge kept
        new = CompareTable.model_validate_json(kept.read_text())
    else:
        start = time.time()
        new = ss.compare(net, data=ds, sweeps=SWEEPS, epochs=table.epochs, seed=table.seed,
                         attacks=args.add_attacks, budget=cast(Budget, table.budget),
                         progress=False)
        new.run = {"date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
                   "wall_minutes": (time.time() - start) / 60,
                   "load_average": os.getloadavg()[0]}
        # the hour of training is kept before it is merged: a merge that fails loses nothing
        new.to_json(kept)
    mismatched, untouched = [], []
    for row in table.rows:
        fresh = retrained_row(row, new.rows)
        if fresh is None:  # not deployed where the added attacks sit: not retrained
            untouched.append(run_label(row))
            continue
        if fresh.accuracy != row.accuracy:
            mismatched.append(run_label(row))
        row.leakage.update({a: res for a, res in fresh.leakage.items()
                            if a not in table.attacks})
    table.attacks += [a for a in new.attacks if a not in table.attacks]
    table.run.setdefault("added", []).append({
        "attacks": list(args.add_attacks),
        "command": command_line("benchmarks/frontier.py", args, skip=("reuse_added",)),
        "date": new.run.get("date") or f"{str(new.created)[:16].replace('T', ' ')} UTC",
        "wall_minutes": new.run.get("wall_minutes"), "load_average": new.run.get("load_average"),
        "rows": len(table.rows) - len(untouched), "same_models": not mismatched,
        "mismatched": mismatched, "not_applicable": untouched})
    return mark_not_applicable(table)


def mark_not_applicable(table: CompareTable) -> CompareTable:
    """Each added attack's cell on the rows it was not run on (their defence is not
    deployed where it sits: ``not_applicable`` in the record) reads n/a, as ``compare``'s
    own cells do, not "missing"."""
    for added in table.run.get("added", []):
        for row in table.rows:
            if run_label(row) in added.get("not_applicable", []):
                row.leakage.update({a: not_applicable(a, row.defense)
                                    for a in added["attacks"] if a not in row.leakage})
    return table


def page(table: CompareTable) -> str:
    """The Markdown page, worded from the table alone (so ``--render`` rewrites it)."""
    run = table.run
    data = run.get("data", "?")
    seed = table.seed
    stars = ", ".join(f"`{a}`" for a in table.attacks)
    md = [
        f"# Privacy-utility frontier on {data}",
        "",
        *header({**run, "machine": table.machine}, seed=seed, own=2),
        f"Wall time: {run.get('wall_minutes', float('nan')):.1f} min.  ",
        *added_lines(run),
        f"Data: {table.dataset} (`../shared/data`, MD5-checked; the validation split pairs "
        "runs at matched accuracy, the test split only reports).  ",
        f"Model: PGSLNet (the PGSL paper's 7-conv network at width {run.get('width', '?')}, "
        f"hidden {run.get('hidden', '?')}), cut {table.cut}, {table.epochs} epochs per "
        "defence, the same initial weights for every defence; the epochs and learning rate "
        "are fixed for every defence, not selected on the validation split (a defence whose "
        "classifier is stuck (see below) may have needed others).  ",
        f"Attacks (budget {table.budget}): {stars}. "
        + "; ".join(attack_words(table, a) for a in table.attacks)
        + "; an attack that declares it adapts to a defence (`adaptive-split` for PGSL) runs "
        "on that defence, its control being its stand-in on the undefended run.  ",
        f"Rule: each verdict is decided from the stored evidence by the current rule "
        f"(`docs/audit.md`), the undefended run as positive control; {table.tolerance.words()}.",
        "",
        "```",
        table.summary(),
        "```",
        "",
        f"Plot: `frontier_{data}.html` (accuracy against MSE and attacker accuracy, "
        "sweeps as curves).",
        "",
        "## What the numbers say (computed from this run)",
        "",
        *reading(table),
        "",
        "## Latent perturbation against DP-SGD and BiDO at matched accuracy",
        "",
        "For each baseline point, the latent-perturbation point (fixed or learned) nearest in "
        f"{matched_on(table.rows)}. The paper claims at least 12.4% higher MSE and 12.5% "
        "lower attacker accuracy than the baselines at about 90% client accuracy. Attacker "
        "accuracy is balanced accuracy. A claim about images is *inconclusive* when the attack "
        "does not leak images on the undefended run, when a classifier of the pair is stuck "
        "at one class, or when the two points are not separated by 95% t-intervals across "
        "seeds: this page has one seed, so no pair can be decided on it (the latent "
        "reproduction pages run 3).",
        "",
        "| attack | baseline (accuracy) | latent (accuracy) | MSE baseline -> latent | "
        "balanced attacker acc baseline -> latent | verdicts baseline / latent | claim "
        "| why |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    claims = []
    for attack in (FEDAVG, BLACK_BOX):
        for base in ("dpsgd", "bido"):
            claims += matched(table, base, attack)
    counts = Counter(label for _, label in claims)
    md += [*(row for row, _ in claims), "", f"Of {len(claims)} matched pairs, the claim "
           + ", ".join(f"{c}: {counts[c]}" for c in ("holds", "does not hold", "inconclusive"))
           + "."]
    return "\n".join(md) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="breastmnist")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--limit", type=int, default=None, help="cap each split's size")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attacks", nargs="+", default=list(ATTACKS),
                    help="reconstruction attacks (adaptive ones are added per defence)")
    ap.add_argument("--reuse-added", action="store_true", default=None,
                    help="with --add-attacks: merge the retrained table kept under out/ by a "
                         "run whose merge failed, instead of training again")
    ap.add_argument("--add-attacks", nargs="+", default=None,
                    help="retrain every defence of the existing table with its seed and add "
                         "these attacks' columns to it")
    add_page_options(ap)
    args = ap.parse_args()
    stem = args.out / f"frontier_{args.data}"
    if args.render:
        table = CompareTable.model_validate_json(stem.with_suffix(".json").read_text())
        redecide(mark_not_applicable(table))  # records merged before cells said n/a
    elif args.add_attacks:
        table = CompareTable.model_validate_json(stem.with_suffix(".json").read_text())
        torch.set_num_threads(args.threads)
        ds = load_dataset(args.data, root=args.data_root, seed=args.seed, limit=args.limit)
        torch.manual_seed(args.seed)
        net = ss.PGSLNet(in_channels=ds.in_channels, num_classes=ds.num_classes,
                         image_size=ds.image_size[0], width=args.width, hidden=args.hidden)
        redecide(add_attacks(table, net, ds, args))
    else:
        torch.set_num_threads(args.threads)
        ds = load_dataset(args.data, root=args.data_root, seed=args.seed, limit=args.limit)
        torch.manual_seed(args.seed)
        net = ss.PGSLNet(in_channels=ds.in_channels, num_classes=ds.num_classes,
                         image_size=ds.image_size[0], width=args.width, hidden=args.hidden)
        start = time.time()
        table = ss.compare(net, data=ds, sweeps=SWEEPS, epochs=args.epochs, seed=args.seed,
                           attacks=args.attacks, budget="quick", progress=False)
        table.run = {"command": command_line("benchmarks/frontier.py", args),
                     "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
                     "wall_minutes": (time.time() - start) / 60,
                     "load_average": os.getloadavg()[0], "data": args.data,
                     "width": args.width, "hidden": args.hidden, "threads": args.threads}
    table.to_json(stem.with_suffix(".json"))
    table.save_html(stem.with_suffix(".html"))
    text = page(table)
    atomic_write_text(stem.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
