"""Khowaja et al. 2022 re-measured: Table I, Table II and Fig. 3 (``reproduce("pgsl")``).

* **Table I** (reconstruction MSE): DLG, iDLG, DCGAN (the auditor's ``gan-prior``)
  and MIA (the black-box decoder, ``split-black-box``) against the undefended
  split, against a client that trains on JSMA-attacked images (``jsma-input``),
  against Titcombe et al.'s Laplacian noise on the cut (``laplace``) and against
  PGSL. A split-learning server never receives the client's weight gradients, so
  the gradient attacks (DLG, iDLG) cannot observe SplitShield itself; their PGSL
  row uses PGSL's two image steps, the JSMA perturbation and then the
  proximal-gradient recovery (``jsma-input`` with ``recover=True``), which is how
  we read the paper's "gradients from the proximal gradient method". DCGAN and
  MIA attack SplitShield's real wire.
* **Table II** (accuracy): a network trained and tested on images attacked by
  JSMA, C&W, BIM and FGSM (against an undefended network trained on clean
  images); one trained and tested on images rebuilt by DLG, iDLG and DCGAN; and
  SplitShield's three streams and its decision fusion.
* **Fig. 3**: MSE between recovered and original images over ``mu``.

The paper's numbers are for MIAS (330 mammograms) and MNIST. BreastMNIST and
PneumoniaMNIST stand in for MIAS (the MIAS column is shown beside them), MNIST
is compared with the MNIST column. The paper's MSE scale is not stated (its MIAS
values, 1 to 8, are not MSEs of images in [0, 1]); ours are on [0, 1] images.
"""

from __future__ import annotations

import functools
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from shieldsplit._core.progress import progress_bar
from shieldsplit.attacks import create_attack
from shieldsplit.attacks.base import AttackContext
from shieldsplit.attacks.observe import observe_gradient
from shieldsplit.attacks.observe_split import observe_activations
from shieldsplit.audit.auditor import AttackResult
from shieldsplit.compare.frontier import DefenseRun, redecide_run, run_defense, stuck
from shieldsplit.cutting import split_model
from shieldsplit.data import make_loaders
from shieldsplit.defenses.pgsl.perturb import jsma_perturb
from shieldsplit.defenses.pgsl.recovery import recover
from shieldsplit.defenses.pgsl.saliency import class_gradient, jsma_saliency, normalised_heat
from shieldsplit.evasion.adversarial import create_adversary
from shieldsplit.experiments.demo import DemoOptions, run_demo
from shieldsplit.experiments.reproduce.core import (
    RunContext,
    differences_section,
    mean_sd,
    register_experiment,
)
from shieldsplit.experiments.reproduce.reading import (
    LEVEL,
    ClaimLabel,
    balanced_cell,
    chance_sentence,
    claim,
    control_leaks_images,
    image_control_reason,
    image_leak_sentence,
    psnr_range,
    seed_part,
    stuck_reason,
    sweep_sentence,
    verdict_cell,
    verdict_count_sentence,
)
from shieldsplit.functional.stats import majority_rate
from shieldsplit.training import accuracy, fit_plain

T1_ATTACKS = ("dlg", "idlg", "gan-prior", "split-black-box")
ATTACK_TITLE = {"dlg": "DLG", "idlg": "iDLG", "gan-prior": "DCGAN", "split-black-box": "MIA"}
#: Table I settings: (row label, defence, options).
T1_SETTINGS: list[tuple[str, str, dict[str, Any]]] = [
    ("undefended split", "none", {}),
    ("JSMA +", "jsma-input", {}),
    ("[8] (Laplace noise) +", "laplace", {"scale": 0.5}),
    ("Ours (PGSL, SplitShield)", "pgsl", {}),
    ("Ours (PGSL image steps)", "jsma-input", {"recover": True}),
]
#: Settings run with every headline seed.
T1_HEADLINE = ("undefended split", "Ours (PGSL, SplitShield)", "Ours (PGSL image steps)")
#: Paper Table I, (MIAS, MNIST) by (attack, paper row).
PAPER_T1: dict[tuple[str, str], tuple[float, float]] = {
    ("dlg", "none"): (3.14, 0.12), ("idlg", "none"): (2.63, 0.048),
    ("gan-prior", "none"): (2.96, 0.056), ("split-black-box", "none"): (2.925, 0.08),
    ("dlg", "jsma"): (4.362, 0.24), ("idlg", "jsma"): (3.924, 0.22),
    ("gan-prior", "jsma"): (5.947, 0.29),
    ("dlg", "laplace"): (2.543, 0.097), ("idlg", "laplace"): (1.349, 0.04),
    ("gan-prior", "laplace"): (7.86, 2.34),
    ("dlg", "ours"): (1.854, 0.046), ("idlg", "ours"): (1.126, 0.026),
    ("gan-prior", "ours"): (2.372, 0.078),
}
_PAPER_ROW = {"undefended split": "none", "JSMA +": "jsma", "[8] (Laplace noise) +": "laplace",
              "Ours (PGSL, SplitShield)": "ours", "Ours (PGSL image steps)": "ours"}
#: Paper Table II, (MIAS, MNIST) accuracy in %.
PAPER_T2: dict[str, tuple[float, float]] = {
    "jsma": (46.3, 65.4), "cw": (51.2, 58.6), "bim": (56.8, 81.2), "fgsm": (61.9, 83.8),
    "dlg": (65.7, 88.3), "idlg": (69.2, 95.4), "gan-prior": (62.2, 84.8),
    "recovered": (78.5, 99.2), "fused": (67.3, 86.6), "attacked": (46.3, 65.4),
    "decision": (83.2, 99.8),
}
ADVERSARIES = ("jsma", "cw", "bim", "fgsm")
REBUILDERS = ("dlg", "idlg", "gan-prior")
MUS = [round(0.05 + 0.1 * i, 2) for i in range(10)]


def _paper(ctx: RunContext, value: tuple[float, float] | None) -> str:
    if value is None:
        return "not reported"
    return f"{value[1] if ctx.options.data == 'mnist' else value[0]:g}"


def _column(ctx: RunContext) -> str:
    return "MNIST" if ctx.options.data == "mnist" else "MIAS"




# ------------------------------------------------------------------ Table I
def _t1_key(label: str, seed: int) -> str:
    return f"table1 {label} seed={seed}"


def table1(ctx: RunContext) -> tuple[list[str], list[str]]:
    """Table I cells (one audited defence per setting and seed), its Markdown and the
    page's notes computed from it."""
    p = ctx.preset
    todo = [(label, name, opts, ctx.options.seed) for label, name, opts in T1_SETTINGS]
    todo += [(label, name, opts, s) for s in ctx.seeds if s != ctx.options.seed
             for label, name, opts in T1_SETTINGS if label in T1_HEADLINE]
    runs: dict[str, DefenseRun] = {}
    with progress_bar(todo, total=len(todo), description="table I",
                      enabled=ctx.options.progress) as bar:
        for label, name, opts, seed in bar:
            value = ctx.store.run(_t1_key(label, seed), functools.partial(
                _defense_cell, ctx, name, opts, seed))
            # verdicts are never read as stored: decided again under the current rule
            runs[_t1_key(label, seed)] = redecide_run(DefenseRun.model_validate(value))
    lines = [
        "## Table I: reconstruction MSE (higher = less leakage)",
        "",
        f"Ours: mean MSE of the rebuilt victims on [0, 1] images (DLG/iDLG rebuild one image "
        f"per gradient; DCGAN and MIA rebuild {p.victims} victims from the wire); "
        f"mean ± sd over seeds {ctx.seeds} for the headline rows, one seed for the others. "
        "Paper: the "
        f"{_column(ctx)} column of its Table I (its MSE scale is not stated). `n/a`: the "
        "attack cannot observe that deployment (a split-learning server sees no weight "
        "gradients). Verdict: the auditor's, per seed, with the same seed's undefended "
        "split as positive control (see `docs/audit.md`), decided again from the stored "
        "evidence under the auditor's current rule.",
        "",
        f"| attack | setting | ours MSE | ours PSNR (dB) | balanced attacker accuracy "
        f"| verdict | client accuracy | paper MSE ({_column(ctx)}) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    scored: list[AttackResult] = []
    for attack in T1_ATTACKS:
        for label, _, _ in T1_SETTINGS:
            rs = _setting_runs(ctx, runs, label)
            res = [r.leakage[attack] for r in rs]
            if all(a.status == "n/a" for a in res):
                ours = psnr = "n/a"
            else:
                ok = [a for a in res if a.status == "ok"]
                scored += ok
                ours = mean_sd([float(a.mse or 0) for a in ok], ".4f")
                psnr = mean_sd([float(a.psnr or 0) for a in ok], ".2f")
            paper = _paper(ctx, PAPER_T1.get((attack, _PAPER_ROW[label])))
            lines.append(f"| {ATTACK_TITLE[attack]} | {label} | {ours} | {psnr} | "
                         f"{balanced_cell(res)} | {verdict_cell(res)} | "
                         f"{mean_sd([r.accuracy for r in rs], '.1%')} | {paper} |")
    return [
        *lines,
        "",
        chance_sentence(scored),
        "",
        *_orderings(ctx, runs),
        "",
        paper_pgsl_sentence(_column(ctx), {
            ATTACK_TITLE[a]: PAPER_T1[(a, "ours")][1 if _column(ctx) == "MNIST" else 0]
            - PAPER_T1[(a, "none")][1 if _column(ctx) == "MNIST" else 0]
            for a in ("dlg", "idlg", "gan-prior")}),
        "",
    ], [budget_note(ctx.preset.audit, {
        ATTACK_TITLE[a]: [r.leakage[a] for label, _, _ in T1_SETTINGS
                          for r in _setting_runs(ctx, runs, label)] for a in ("dlg", "idlg")},
        {ATTACK_TITLE[a]: [r.leakage[a] for r in _setting_runs(ctx, runs, "undefended split")]
         for a in ("dlg", "idlg")})]


def budget_note(budget: str, results: dict[str, list[AttackResult]],
                undefended: dict[str, list[AttackResult]]) -> str:
    """The page's note on the gradient attacks' strength, from their PSNR and verdicts.

    Args:
        budget: the audit budget.
        results: attack title -> its results over every setting and seed.
        undefended: attack title -> its results on the undefended split (one per seed).

    Returns:
        One bullet's text.

    Example:
        >>> from shieldsplit.audit.auditor import AttackResult
        >>> r = AttackResult(attack="dlg", threat_model="t", observes="gradient", images=8,
        ...                  seconds=1.0, psnr=5.04, verdict="inconclusive")
        >>> note = budget_note("quick", {"DLG": [r, r.model_copy(update={"psnr": 9.2})]},
        ...                    {"DLG": [r]})
        >>> "PSNR 5.0-9.2 dB" in note, "*inconclusive*" in note
        (True, True)
    """
    ranges = {n: psnr_range(rs) for n, rs in results.items()}
    psnr = ", ".join(f"{n} PSNR {lo:.1f}-{hi:.1f} dB" for n, r in ranges.items() if r
                     for lo, hi in [r])
    leak = all(control_leaks_images(rs) for rs in undefended.values())
    return (
        f"**Attack budget.** Every attack runs at the auditor's `{budget}` budget on a CPU. "
        f"Over every setting and seed the gradient attacks reach {psnr or 'no finished run'}; "
        "on the undefended split, "
        + "; ".join(verdict_count_sentence(n, rs) for n, rs in undefended.items()) + "; "
        + "; ".join(image_leak_sentence(n, rs) for n, rs in undefended.items()) + ". "
        + ("Both leak images on every undefended seed, so their ordering rows are decided "
           f"wherever the {LEVEL:.0%} t-intervals across seeds separate." if leak else
           "Where an attack does not leak images (re-identification or rebuilt images) on "
           "every undefended seed, its MSE differences between settings are not evidence, "
           "and its ordering rows read *inconclusive*.")
        + " The paper does not give its attack budgets.")


def _setting_runs(ctx: RunContext, runs: dict[str, DefenseRun], label: str) -> list[DefenseRun]:
    """The runs of one Table I setting: every headline seed, or the first seed only."""
    seeds = ctx.seeds if label in T1_HEADLINE else [ctx.options.seed]
    return [runs[_t1_key(label, s)] for s in seeds]


def _defense_cell(ctx: RunContext, name: str, opts: dict[str, Any], seed: int) -> Any:
    p = ctx.preset
    control: Any = "auto"
    if name != "none":  # the undefended split of the same seed is every row's control
        value = ctx.store.run(_t1_key("undefended split", seed), functools.partial(
            _defense_cell, ctx, "none", {}, seed), count=False)
        control = list(DefenseRun.model_validate(value).leakage.values())
    return run_defense(ctx.network(seed), ctx.data, name, options=opts, attacks=T1_ATTACKS,
                       epochs=p.epochs, budget=p.audit, victims=p.victims, seed=seed,
                       progress=ctx.options.progress, control=control).model_dump(mode="json")


def _mse_values(ctx: RunContext, runs: dict[str, DefenseRun], label: str,
                attack: str) -> list[float]:
    return [float(a.mse) for r in _setting_runs(ctx, runs, label)
            for a in [r.leakage[attack]] if a.status == "ok" and a.mse is not None]


def paper_pgsl_sentence(column: str, pgsl_minus_none: dict[str, float]) -> str:
    """How the paper's own PGSL rows sit against its undefended rows, computed from its
    Table I column (the MIAS and MNIST columns differ).

    Args:
        column: the paper's column compared (``MIAS`` or ``MNIST``).
        pgsl_minus_none: attack -> the paper's PGSL MSE minus its undefended MSE.

    Returns:
        One paragraph.

    Example:
        >>> paper_pgsl_sentence("MNIST", {"DLG": -0.07, "DCGAN": 0.02}).split(":")[0]
        "Reading the paper's table (MNIST column)"
        >>> "below its undefended MSE for DLG; above it for DCGAN" in paper_pgsl_sentence(
        ...     "MNIST", {"DLG": -0.07, "DCGAN": 0.02})
        True
    """
    lower = [a for a, d in pgsl_minus_none.items() if d < 0]
    higher = [a for a, d in pgsl_minus_none.items() if d > 0]
    parts = []
    if lower:
        parts.append(f"below its undefended MSE for {', '.join(lower)}")
    if higher:
        parts.append(f"above it for {', '.join(higher)}")
    text = (f"Reading the paper's table ({column} column): its PGSL MSE is "
            + "; ".join(parts) + ".")
    if lower:
        text += (" Where it is lower, PGSL's recovery brings the images back towards the "
                 "originals in the paper, so a lower MSE there means better recovery, not "
                 "more protection.")
    return (text + " We report the same quantity (MSE between the attacker's reconstruction "
            "and the original image) for every row.")


def _setting_stuck(ctx: RunContext, runs: dict[str, DefenseRun], label: str) -> str:
    """Why a Table I setting's client classifier learned nothing ("" when it learned)."""
    classes = ctx.data.num_classes
    for r in _setting_runs(ctx, runs, label):
        if stuck(r, classes):
            return f"its client classifier is stuck (one class, {r.accuracy:.1%})"
        if r.accuracy < 1 / classes:
            return (f"its client classifier scores below chance ({r.accuracy:.1%} < "
                    f"{1 / classes:.1%})")
    return ""


def _orderings(ctx: RunContext, runs: dict[str, DefenseRun]) -> list[str]:
    """Does each of the paper's orderings (setting MSE above or below undefended) hold here?"""
    col = 1 if ctx.options.data == "mnist" else 0
    rows = ordering_rows(
        {attack: [r.leakage[attack] for r in _setting_runs(ctx, runs, "undefended split")]
         for attack in ("dlg", "idlg", "gan-prior")},
        {(attack, label): _mse_values(ctx, runs, label, attack)
         for attack in ("dlg", "idlg", "gan-prior") for label, _, _ in T1_SETTINGS},
        {(attack, label): PAPER_T1[(attack, _PAPER_ROW[label])][col]
         > PAPER_T1[(attack, "none")][col]
         for attack in ("dlg", "idlg", "gan-prior") for label, _, _ in T1_SETTINGS[1:]
         if (attack, _PAPER_ROW[label]) in PAPER_T1},
        stuck={label: why for label, _, _ in T1_SETTINGS
               for why in [_setting_stuck(ctx, runs, label)] if why},
    )
    counts = Counter(r[4] for r in rows)
    lines = [
        "Does the paper's ordering hold? For each attack and setting, whether its MSE is "
        "above the undefended split's, in the paper and here. *inconclusive* where the "
        "attack does not leak *images* (re-identification or rebuilt images) on every "
        "undefended seed (an attack not shown to rebuild images cannot order defences by "
        f"MSE; a label or class leak does not count), where the two rows' {LEVEL:.0%} "
        "Student-t intervals of the mean across seeds overlap, where a row has one seed "
        "(no interval: it never decides), or where a setting's classifier is stuck "
        "(excluded).",
        "",
        "| attack | setting | paper: above undefended? | ours: above undefended? | ordering "
        "| why |",
        "| --- | --- | --- | --- | --- | --- |",
        *(f"| {ATTACK_TITLE[a]} | {label} | {'yes' if p_up else 'no'} | "
          f"{'yes' if o_up else 'no'} | {'**' + c + '**' if c == 'does not hold' else c} "
          f"| {why} |" for a, label, p_up, o_up, c, why in rows),
        "",
        f"Of {len(rows)} orderings: " + ", ".join(
            f"{counts[c]} {c}" for c in ("holds", "does not hold", "inconclusive")) + ".",
        "",
        "Image evidence of the controls: " + "; ".join(
            image_leak_sentence(ATTACK_TITLE[a], [
                r.leakage[a] for r in _setting_runs(ctx, runs, "undefended split")])
            for a in ("dlg", "idlg", "gan-prior")) + ".",
    ]
    return lines


def ordering_rows(control: dict[str, list[AttackResult]], mse: dict[tuple[str, str], list[float]],
                  paper_up: dict[tuple[str, str], bool], *, stuck: dict[str, str] | None = None,
                  ) -> list[tuple[str, str, bool, bool, ClaimLabel, str]]:
    """The ordering table's rows, decided from the numbers.

    Args:
        control: attack -> its results on the undefended split (one per seed).
        mse: ``(attack, setting)`` -> MSE per seed (the undefended setting included, as
            ``"undefended split"``).
        paper_up: ``(attack, setting)`` -> whether the paper's MSE is above its undefended one.
        stuck: setting -> why its classifier learned nothing (such settings, or an
            undefended split listed here, are excluded: *inconclusive*).

    Returns:
        ``(attack, setting, paper above, ours above, holds|does not hold|inconclusive, why)``
        per setting with numbers on both sides.

    Example:
        >>> from shieldsplit.audit.auditor import AttackResult
        >>> noise = AttackResult(attack="dlg", threat_model="t", observes="gradient", images=8,
        ...                      seconds=1.0, verdict="inconclusive")
        >>> rows = ordering_rows({"dlg": [noise]},
        ...                      {("dlg", "undefended split"): [0.1, 0.11], ("dlg", "x"): [0.2]},
        ...                      {("dlg", "x"): True})
        >>> rows[0][4:]
        ('inconclusive', 'the attack does not leak on the undefended run')
    """
    stuck = stuck or {}
    out: list[tuple[str, str, bool, bool, ClaimLabel, str]] = []
    for (attack, label), p_up in paper_up.items():
        base, ours = mse.get((attack, "undefended split"), []), mse.get((attack, label), [])
        if not base or not ours:
            continue
        o_up = statistics.mean(ours) > statistics.mean(base)
        why_stuck = stuck.get(label) or stuck.get("undefended split")
        if why_stuck:
            out.append((attack, label, p_up, o_up, "inconclusive",
                        f"excluded: {why_stuck}"))
            continue
        results = control.get(attack, [])
        verdict, why = claim([seed_part("MSE", o_up == p_up, base, ours)],
                             control_leaks=control_leaks_images(results),
                             control_why=image_control_reason(results))
        out.append((attack, label, p_up, o_up, verdict, why))
    return out


# ------------------------------------------------------------------ Table II
class _Reference:
    """The undefended network trained on clean images (built once, only if needed)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._net: nn.Module | None = None

    def __call__(self) -> nn.Module:
        if self._net is None:
            ctx, seed = self.ctx, self.ctx.options.seed
            net = ctx.network(seed)
            loaders = make_loaders(ctx.data, batch_size=64, seed=seed)
            fit_plain(net, loaders.train, epochs=ctx.preset.epochs, seed=seed,
                      progress=ctx.options.progress)
            self._net = net.eval()
        return self._net


def _train_and_test(ctx: RunContext, x_train: Tensor, y_train: Tensor, x_test: Tensor,
                    y_test: Tensor, seed: int) -> float:
    """Train a fresh network on ``(x_train, y_train)``; its accuracy on ``(x_test, y_test)``."""
    net = ctx.network(seed)
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train, y_train),
                                         batch_size=64, shuffle=True, generator=g)
    fit_plain(net, loader, epochs=ctx.preset.epochs, seed=seed, progress=False)
    return accuracy(net.eval(), [(x_test, y_test)])


def _attack_in_chunks(adversary: Any, model: nn.Module, x: Tensor, y: Tensor,
                      size: int = 64) -> tuple[Tensor, dict[str, float]]:
    """Adversarial images of ``x`` in chunks (JSMA's pairwise map is quadratic in pixels),
    and the attack's success on the images ``model`` classified correctly."""
    chunks = [adversary(model, x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]
    images = torch.cat([c.images for c in chunks])
    success = torch.cat([c.success for c in chunks])
    delta = (images - x).flatten(1)
    with torch.no_grad():
        correct = model(x).argmax(-1) == y
    return images, {
        "success_rate": float(success[correct].float().mean()) if bool(correct.any()) else 0.0,
        "l0": float((delta != 0).float().mean()),
        "l2": float(delta.norm(dim=1).mean()),
        "linf": float(delta.abs().amax(dim=1).mean()),
    }


def _adversarial_cell(ctx: RunContext, ref: _Reference, name: str) -> dict[str, Any]:
    d, seed = ctx.data, ctx.options.seed
    adversary = create_adversary(name, seed=seed) if name in ("cw", "jsma") \
        else create_adversary(name)
    train, _ = _attack_in_chunks(adversary, ref(), d.x_train, d.y_train)
    test, stats = _attack_in_chunks(adversary, ref(), d.x_test, d.y_test)
    return {"accuracy": _train_and_test(ctx, train, d.y_train, test, d.y_test, seed), **stats}


def rebuild(model: nn.Module, attack: str, x: Tensor, y: Tensor, *, auxiliary: Tensor,
            auxiliary_labels: Tensor, num_classes: int, cut: int, budget: Any, seed: int,
            progress: bool) -> Tensor:
    """Images ``attack`` rebuilds from what ``model`` leaks about ``x`` (one per image).

    Gradient attacks observe the per-image gradient of the whole model (eval mode);
    the DCGAN prior observes the activations at ``cut`` and is trained on ``auxiliary``.

    Args:
        model: the trained, undefended classifier.
        attack: a registered attack name (``dlg``, ``idlg``, ``gan-prior``, ...).
        x: the images to rebuild, in [0, 1].
        y: their labels (used to compute the observed gradients).
        auxiliary: the attacker's own images (disjoint from ``x``).
        auxiliary_labels: their labels.
        num_classes: the classifier's classes.
        cut: where a split-learning attack observes the model.
        budget: the attack budget.
        seed: seeds the attack.
        progress: show the attack's progress bar.

    Returns:
        The reconstructions, shaped like ``x``, in [0, 1] (kept in memory only).
    """
    image_shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
    att = create_attack(attack, seed=seed, progress=progress)
    if att.observes == "activations":
        head = split_model(model, cut).head.eval()
        att.prepare(AttackContext(image_shape=image_shape, num_classes=num_classes, model=head,
                                  auxiliary_images=auxiliary, auxiliary_labels=auxiliary_labels,
                                  budget=budget, seed=seed))
        return att.reconstruct(observe_activations(head, x)).images.detach().clamp(0, 1)
    fl = model.eval()
    att.prepare(AttackContext(image_shape=image_shape, num_classes=num_classes, model=fl,
                              auxiliary_images=auxiliary, auxiliary_labels=auxiliary_labels,
                              budget=budget, seed=seed))
    obs = [observe_gradient(fl, x[i:i + 1], y[i:i + 1]) for i in range(len(x))]
    many = getattr(att, "reconstruct_many", None)
    recs = many(obs) if many is not None else [att.reconstruct(o) for o in obs]
    return torch.cat([r.images for r in recs]).detach().clamp(0, 1)


def _rebuild_cell(ctx: RunContext, ref: _Reference, name: str) -> dict[str, Any]:
    d, seed, n = ctx.data, ctx.options.seed, ctx.preset.rebuild
    aux_x, aux_y = d.x_val, d.y_val  # the attacker's own images: disjoint from both
    out = {}
    for split, (x, y) in {"train": (d.x_train[:n], d.y_train[:n]),
                          "test": (d.x_test[:n], d.y_test[:n])}.items():
        out[split] = (rebuild(ref(), name, x, y, auxiliary=aux_x, auxiliary_labels=aux_y,
                              num_classes=d.num_classes, cut=2, budget=ctx.preset.audit, seed=seed,
                              progress=ctx.options.progress), y)
        out[f"{split}_original"] = (x, y)
    mse_test = float(((out["test"][0] - out["test_original"][0]) ** 2).mean())
    return {
        "accuracy": _train_and_test(ctx, *out["train"], *out["test"], seed),
        "images": n, "mse_test": mse_test,
    }


def _streams_cell(ctx: RunContext, seed: int) -> dict[str, Any]:
    o, p = ctx.options, ctx.preset
    report = run_demo(DemoOptions(data=o.data, data_root=o.data_root, epochs=p.epochs, seed=seed,
                                  limit=p.limit, width=p.width, hidden=p.hidden, audit=False,
                                  progress=o.progress))
    return {"plain": report.plain_test_accuracy, **report.shield_test_accuracy}


def table2(ctx: RunContext, ref: _Reference) -> tuple[list[str], list[str]]:
    """Table II cells, Markdown and the page's notes computed from them."""
    col = _column(ctx)
    run = ctx.store.run
    adv = {n: run(f"table2 adversarial {n}", functools.partial(_adversarial_cell, ctx, ref, n))
           for n in ADVERSARIES}
    reb = {n: run(f"table2 rebuilt {n}", functools.partial(_rebuild_cell, ctx, ref, n))
           for n in REBUILDERS}
    streams = [run(f"table2 streams seed={s}", functools.partial(_streams_cell, ctx, s))
               for s in ctx.seeds]
    lines = [
        "## Table II: accuracy",
        "",
        "Attacked images: a fresh network trained on the training images attacked against an "
        "undefended network (trained on clean images), tested on the attacked test images. "
        "FGSM (eps 0.1) and BIM (eps 0.1, 10 steps) from `captum.robust`; C&W (L2) and JSMA "
        "from `shieldsplit.evasion.adversarial`. Rebuilt images: the same, on "
        f"{ctx.preset.rebuild} training and {ctx.preset.rebuild} test images rebuilt by each "
        "attack from the undefended network (the attacker's auxiliary data is the validation "
        "split). PGSL streams: SplitShield's test accuracy per stream, mean ± sd over seeds "
        f"{ctx.seeds}.",
        "",
        f"| row | ours accuracy | paper accuracy ({col}) | notes |",
        "| --- | --- | --- | --- |",
    ]
    names = {"jsma": "JSMA", "cw": "C&W", "bim": "BIM", "fgsm": "FGSM"}
    classes, y_test = ctx.data.num_classes, ctx.data.y_test.tolist()
    # each network is scored on the exact images it was tested on: the whole test split
    # for the attacked images, its first ``images`` for the rebuilt ones
    stuck = {names[n]: why for n in ADVERSARIES
             for why in [stuck_reason(adv[n]["accuracy"], y_test, classes)] if why}
    stuck |= {ATTACK_TITLE[n]: why for n in REBUILDERS
              for why in [stuck_reason(reb[n]["accuracy"], y_test[:reb[n]["images"]],
                                       classes)] if why}

    def flag(title: str) -> str:
        return f"**stuck**: {stuck[title]}; " if title in stuck else ""

    for n in ADVERSARIES:
        a = adv[n]
        lines.append(f"| {names[n]}-attacked images | {a['accuracy']:.1%} | "
                     f"{_paper(ctx, PAPER_T2[n])}% | {flag(names[n])}success on correctly "
                     f"classified test images {a['success_rate']:.0%}, L2 {a['l2']:.2f}, "
                     f"changed {a['l0']:.1%} |")
    for n in REBUILDERS:
        r = reb[n]
        lines.append(f"| images rebuilt by {ATTACK_TITLE[n]} | {r['accuracy']:.1%} | "
                     f"{_paper(ctx, PAPER_T2[n])}% | {flag(ATTACK_TITLE[n])}{r['images']} "
                     f"images per split, test MSE {r['mse_test']:.4f} |")
    for key, title in (("attacked", "PGSL attacked stream"), ("fused", "PGSL fused stream"),
                       ("recovered", "PGSL recovered (proximal-gradient) stream"),
                       ("decision", "PGSL with decision fusion"),
                       ("plain", "plain training, no defence (not in the paper)")):
        lines.append(f"| {title} | {mean_sd([s[key] for s in streams], '.1%')} | "
                     f"{_paper(ctx, PAPER_T2.get(key)) + '%' if key in PAPER_T2 else '-'} | |")
    plain = statistics.mean(s["plain"] for s in streams)
    attacked = statistics.mean(s["attacked"] for s in streams)
    return [*lines, ""], table2_notes(
        {names[n]: adv[n]["accuracy"] for n in ADVERSARIES},
        {ATTACK_TITLE[n]: reb[n]["accuracy"] for n in REBUILDERS},
        plain=plain, attacked_stream=attacked, majority=majority_rate(ctx.data.y_test),
        rebuilt=ctx.preset.rebuild, paper_jsma=_paper(ctx, PAPER_T2["attacked"]),
        stuck=stuck)


def table2_notes(adversarial: dict[str, float], rebuilt_accuracy: dict[str, float], *,
                 plain: float, attacked_stream: float, majority: float, rebuilt: int,
                 paper_jsma: str, stuck: dict[str, str] | None = None) -> list[str]:
    """Table II's notes, each computed from its accuracies.

    Args:
        adversarial: attack -> accuracy of the network trained and tested on its images.
        rebuilt_accuracy: attack -> accuracy of the network trained on its reconstructions.
        plain: plain training's clean test accuracy.
        attacked_stream: PGSL's attacked stream's accuracy.
        majority: the whole test split's majority-class rate.
        rebuilt: images rebuilt per split.
        paper_jsma: the paper's accuracy of its attacked stream.
        stuck: row (attack) -> why its network learned nothing
            (:func:`~shieldsplit.experiments.reproduce.reading.stuck_reason`, on the
            exact images it was tested on): reported, and left out of every comparison.

    Returns:
        Three bullets' text.

    Example:
        >>> notes = table2_notes({"FGSM": 0.9, "BIM": 0.731}, {"DLG": 0.646}, plain=0.7,
        ...                      attacked_stream=0.78, majority=0.731, rebuilt=48,
        ...                      paper_jsma="46.3", stuck={"BIM": "stuck at 73.1%",
        ...                      "DLG": "scores exactly the majority rate (31/48)"})
        >>> "FGSM (90.0%)" in notes[0], "BIM (73.1%)" in notes[0], "1 of 1 networks" in notes[1]
        (True, False, True)
        >>> "+8.0 points" in notes[2]
        True
    """
    stuck = stuck or {}
    # a stuck row learned nothing: it is not evidence of a feature
    above = [f"{n} ({a:.1%})" for n, a in adversarial.items() if a > plain and n not in stuck]
    first = (f"**Table II, attacked images.** Trained and tested on images attacked against a "
             f"fixed undefended network, the network scores above plain training's clean "
             f"accuracy ({plain:.1%}) on {', '.join(above)}: it can learn the attack's "
             "class-dependent perturbation as a feature. The paper's lower numbers suggest a "
             "different protocol (for example training on clean and testing on attacked "
             "images), which it does not describe." if above else
             f"**Table II, attacked images.** No attacked-image row that learned scores above "
             f"plain training's clean accuracy ({plain:.1%}); the paper does not describe its "
             "protocol (trained and tested on attacked images, as ours, or not).")
    adv_stuck = [n for n in adversarial if n in stuck]
    if adv_stuck:
        first += (f" {len(adv_stuck)} of {len(adversarial)} attacked-image networks are stuck "
                  "(" + "; ".join(f"{n}: {stuck[n]}" for n in adv_stuck) + ") and left out.")
    reb_stuck = [n for n in rebuilt_accuracy if n in stuck]
    second = (f"**Table II, rebuilt images.** Trained on {rebuilt} reconstructions per split "
              f"and tested on the first {rebuilt} test images (the whole test split's "
              f"majority rate, {majority:.1%}, is not theirs), {len(reb_stuck)} of "
              f"{len(rebuilt_accuracy)} networks are stuck")
    second += (": " + "; ".join(f"{n} {stuck[n]}" for n in reb_stuck) + ". They learned "
               "nothing from the reconstructions, so their rows are reported as stuck and "
               "left out of every comparison with the paper" if reb_stuck else "")
    second += "; the paper does not say how many images it rebuilt."
    third = (f"**Table II, PGSL streams.** Our JSMA step changes 2% of the pixels; our attacked "
             f"stream scores {attacked_stream:.1%}, {100 * (attacked_stream - plain):+.1f} "
             f"points from plain training ({plain:.1%}), where the paper's falls to "
             f"{paper_jsma}%.")
    return [first, second, third]


# ------------------------------------------------------------------ Fig. 3
def mu_sweep(net: nn.Module, x: Tensor, y: Tensor, *, mus: Sequence[float] = MUS,
             pixel_budget: float = 0.02, max_iter: int = 100) -> dict[str, Any]:
    """PGSL Fig. 3: attack ``x`` with the JSMA step, recover it at each ``mu``, score MSE.

    Args:
        net: the trained, undefended network whose saliency guides the attack.
        x: images in [0, 1].
        y: their labels (the saliency target).
        mus: the relaxation parameters to sweep.
        pixel_budget: the JSMA step's fraction of pixels.
        max_iter: APG iterations of each recovery.

    Returns:
        ``{"mse_attacked", "attacked_accuracy", "mse_map_subtracted",
        "accuracy_on_map_subtracted", "rows": [{"mu", "mse_recovered",
        "accuracy_on_recovered"}]}`` (``map_subtracted``: the paper's ``x ~ x_hat - Map``).
    """
    net = net.eval()
    grad = class_gradient(lambda t: net(t).softmax(-1), x, y)
    scores = jsma_saliency(grad)
    attacked = jsma_perturb(x, scores, pixel_budget=pixel_budget, strength=1.0,
                            clip=(0.0, 1.0)).adversarial
    # The paper's own approximation (Sec. IV-C): x ~ x_hat - Map, with Map the map
    # PGSL sends along (the normalised saliency channel), clipped to the pixel range.
    subtracted = (attacked - normalised_heat(scores)).clamp(0.0, 1.0)
    rows = []
    for mu in mus:
        rec = recover(attacked, mu=mu, max_iter=max_iter, tol=1e-6, matrix="rows_x_cols")
        rows.append({"mu": mu, "mse_recovered": float(((rec - x) ** 2).mean()),
                     "accuracy_on_recovered": accuracy(net, [(rec, y)])})
    return {"mse_attacked": float(((attacked - x) ** 2).mean()),
            "attacked_accuracy": accuracy(net, [(attacked, y)]),
            "mse_map_subtracted": float(((subtracted - x) ** 2).mean()),
            "accuracy_on_map_subtracted": accuracy(net, [(subtracted, y)]), "rows": rows}


def map_subtraction_sentence(sweep: dict[str, Any], best_recovered: float) -> str:
    """The computed reading of the paper's ``x ~ x_hat - Map`` beside robust PCA.

    Args:
        sweep: :func:`mu_sweep`'s result.
        best_recovered: the lowest MSE of the robust-PCA recovery over ``mu``.

    Returns:
        One sentence (empty for a result made before the map row existed).

    Example:
        >>> s = map_subtraction_sentence({"mse_attacked": 0.02, "mse_map_subtracted": 0.03}, 0.01)
        >>> s.endswith("worse than the attacked images (0.02000) and worse than robust PCA "
        ...            "at its best mu (0.01000).")
        True
    """
    sub = sweep.get("mse_map_subtracted")
    if sub is None:
        return ""
    attacked = sweep["mse_attacked"]
    vs_attacked = "better than" if sub < attacked else "worse than"
    vs_rpca = "better than" if sub < best_recovered else "worse than"
    return (f"The paper's own approximation x ~ x_hat - Map (the saliency channel subtracted) "
            f"gives MSE {sub:.5f}: {vs_attacked} the attacked images ({attacked:.5f}) and "
            f"{vs_rpca} robust PCA at its best mu ({best_recovered:.5f}).")


def recovered_accuracy_sentence(sweep: dict[str, Any], classes: int) -> str:
    """What the sweep's accuracies on recovered images say, computed; below chance is
    flagged as unexplained (the cells hold accuracies only, not predictions).

    Args:
        sweep: :func:`mu_sweep`'s result.
        classes: the task's classes (chance is ``1 / classes``).

    Returns:
        One paragraph.

    Example:
        >>> sweep = {"attacked_accuracy": 0.59, "rows": [
        ...     {"mu": 0.05, "accuracy_on_recovered": 0.45},
        ...     {"mu": 0.15, "accuracy_on_recovered": 0.62}]}
        >>> text = recovered_accuracy_sentence(sweep, 2)
        >>> "below chance (50.0%) at 1 of 2 values of mu" in text, "Unexplained" in text
        (True, True)
        >>> fine = {"attacked_accuracy": 0.59,
        ...         "rows": [{"mu": 0.05, "accuracy_on_recovered": 0.7}]}
        >>> "Unexplained" in recovered_accuracy_sentence(fine, 2)
        False
    """
    accs = [float(r["accuracy_on_recovered"]) for r in sweep["rows"]]
    if not accs:
        return ""
    chance, attacked = 1 / classes, float(sweep["attacked_accuracy"])
    below = sum(a < chance for a in accs)
    worse = sum(a < attacked for a in accs)
    text = (f"The undefended network scores {min(accs):.1%}-{max(accs):.1%} on the recovered "
            f"images, below its {attacked:.1%} on the attacked images at {worse} of "
            f"{len(accs)} values of mu")
    sub = sweep.get("accuracy_on_map_subtracted")
    if sub is not None:
        text += f", and {float(sub):.1%} on the map-subtracted images"
    text += "."
    if below:
        text += (f" It is below chance ({chance:.1%}) at {below} of {len(accs)} values of mu: "
                 "on the recovered images the network picks the wrong class more often than "
                 "a guess would. "
                 "Unexplained: the cells record these accuracies only (no predictions per "
                 "class, nor the network's accuracy on the clean test images), so the cause "
                 "cannot be read from them; `benchmarks/mu_sweep.py` measures the same "
                 "quantity with its own network (see its page).")
    return text


def fig3(ctx: RunContext, ref: _Reference) -> tuple[list[str], list[str]]:
    """Fig. 3 cell, Markdown, plot and the page's note computed from it."""
    sweep = ctx.store.run("fig3 mu sweep", lambda: mu_sweep(ref(), ctx.data.x_test,
                                                            ctx.data.y_test))
    best = min(sweep["rows"], key=lambda r: r["mse_recovered"])
    map_reading = map_subtraction_sentence(sweep, best["mse_recovered"])
    reading = sweep_sentence([r["mu"] for r in sweep["rows"]],
                             [r["mse_recovered"] for r in sweep["rows"]], sweep["mse_attacked"])
    lines = [
        "## Fig. 3: MSE of recovered against original images over mu",
        "",
        "The test images attacked with PGSL's JSMA step (2% of the pixels, saliency of the "
        "undefended network), recovered by proximal-gradient robust PCA (100 APG iterations) "
        f"on each image plane. MSE of the attacked images: {sweep['mse_attacked']:.5f}. The "
        "paper finds its lowest MSE at mu = 0.55 (its values did not survive the "
        f"extraction); ours is at mu = {best['mu']:.2f}. {reading} {map_reading}",
        "",
        "| mu | MSE recovered vs original | accuracy on recovered |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {r['mu']:.2f} | {r['mse_recovered']:.5f} | {r['accuracy_on_recovered']:.1%} |"
              for r in sweep["rows"]]
    accuracy_reading = recovered_accuracy_sentence(sweep, ctx.data.num_classes)
    lines += ["", accuracy_reading]
    _plot_mu(ctx, sweep)
    note = (f"**Fig. 3.** Recovery with lam = 1/sqrt(28), APG started at the image: {reading} "
            f"The paper's minimum is at mu = 0.55, ours at {best['mu']:.2f}. See `docs/pgsl.md` "
            f"for why SplitShield keeps 0.55 on activations. {accuracy_reading}").strip()
    return [*lines, "", f"![Fig. 3: MSE over mu]({ctx.stem}_fig3.png)", ""], [note]


def _plot_mu(ctx: RunContext, sweep: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot([r["mu"] for r in sweep["rows"]], [r["mse_recovered"] for r in sweep["rows"]],
            marker="o", label="recovered vs original")
    ax.axhline(sweep["mse_attacked"], color="grey", ls="--", label="attacked vs original")
    ax.axvline(0.55, color="red", ls=":", label="paper's choice (0.55)")
    ax.set_xlabel("mu")
    ax.set_ylabel("MSE")
    ax.legend(fontsize=8)
    ctx.save_plot("fig3", fig)


#: Why our numbers differ from the paper's (the most likely reasons, stated on the page).
DATA_DIFFERENCE = {
    "mnist": "**Data.** The paper's MNIST column is compared with MNIST, but ours is the "
    "10,000-image MNIST test set split into train/val/test and capped per split (the "
    "preset's limit), not the 60,000 training images.",
    "other": "**Data.** The paper used MIAS (330 mammograms, 3 classes) and MNIST; the MIAS "
    "column is compared with BreastMNIST or PneumoniaMNIST (ultrasound / X-ray, 2 classes, "
    "28x28), which are different images, classes and sizes.",
}
DIFFERENCES = [
    "**MSE scale.** The paper does not state its scale; its MIAS values (1 to 8) cannot be "
    "MSEs of images in [0, 1]. Only the *ordering* of its rows is comparable with ours, "
    "which is what the ordering table checks.",
    "**DLG and iDLG against PGSL.** A split-learning server receives no weight gradient of "
    "the client, so they cannot observe SplitShield; their PGSL row uses PGSL's two image "
    "steps (JSMA, then proximal-gradient recovery) before a plainly trained network, our "
    "reading of the paper's 'gradients from the proximal gradient method'.",
]


def run(ctx: RunContext) -> list[str]:
    """All cells of the PGSL paper, then its page (Markdown lines) and plots."""
    ref = _Reference(ctx)
    t1, t1_notes = table1(ctx)
    t2, t2_notes = table2(ctx, ref)
    f3, f3_notes = fig3(ctx, ref)
    body = t1 + t2 + f3
    data = DATA_DIFFERENCE["mnist" if ctx.options.data == "mnist" else "other"]
    p = ctx.preset
    network = (f"**Network and training.** The paper's network at width {p.width} / hidden "
               f"{p.hidden} (the paper: 64 / 128), {p.epochs} epochs; the paper does not state "
               "its epochs.")
    return [*body, *differences_section([data, network, DIFFERENCES[0], *t1_notes,
                                         *DIFFERENCES[1:], *t2_notes, *f3_notes])]


register_experiment("pgsl", run)

__all__ = ["budget_note", "mu_sweep", "ordering_rows", "paper_pgsl_sentence", "rebuild",
           "recovered_accuracy_sentence", "table2_notes"]
