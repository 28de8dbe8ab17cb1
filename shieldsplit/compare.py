"""``shieldsplit.compare``: train every defence on the same split, audit each the same way.

For each defence (and each point of a strength sweep) :func:`compare` builds it
around a fresh copy of the user's model, trains it with its own protocol
(:meth:`~shieldsplit.defense.Defense.train_protocol`: DP-SGD through Opacus,
latent perturbation with its noise pre-training, PGSL with its three streams, ...)
on the same training split, scores accuracy and macro F1 on the same test split,
and runs the same attacks of :func:`shieldsplit.audit` on the same victim images.
The result is the privacy-utility frontier: a table and an accuracy-vs-leakage
plot in which a swept defence is a curve (as in Fig. 4 of Jiang et al. 2025).

An attack that does not apply to a defence (the federated attacks on PGSL, a split
learning protocol that never sends weight updates) is reported as ``n/a``, not
skipped silently.

The undefended run (``"none"``, added first when it is not asked for) is every other
defence's positive control: each defence's verdicts say *no leakage found* only where the
same attack, on the same victims, leaked on it (see ``docs/audit.md``). Accuracy is
reported with balanced accuracy and the test split's majority-class rate, since medical
labels are imbalanced.

Example:
    >>> import shieldsplit as ss
    >>> from shieldsplit.data import load_dataset
    >>> ds = load_dataset("digits", seed=0, limit=120)
    >>> net = ss.PGSLNet(num_classes=10, image_size=8, width=8, hidden=16)
    >>> table = ss.compare(net, data=ds, defenses=["none", "laplace"], epochs=1, seed=0,
    ...                    attacks=["split-black-box"], victims=8, progress=False)
    >>> [(r.defense, r.leakage["split-black-box"].status) for r in table.rows]
    [('none', 'ok'), ('laplace', 'ok')]
"""

from __future__ import annotations

import copy
import html
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import balanced_accuracy_score, f1_score
from torch import nn

from shieldsplit.attacks.base import Budget
from shieldsplit.auditor import (
    AttackResult,
    AuditReport,
    PositionVerdict,
    audit,
    defense_attacks,
    library_versions,
)
from shieldsplit.data import ImageDataset, make_loaders
from shieldsplit.datacontract import as_dataset
from shieldsplit.defense import available_defenses, create_defense
from shieldsplit.errors import ConfigError
from shieldsplit.functional.stats import majority_rate
from shieldsplit.io import atomic_write_text
from shieldsplit.membership import MembershipReport, fpr_label, heldout_of
from shieldsplit.plots import RocCurve, png_base64, roc_html
from shieldsplit.progress import progress_bar
from shieldsplit.validate import build_config

logger = logging.getLogger(__name__)

#: The two threat models of issue 4's frontier: the federated Inverting Gradients attack
#: on a 5-local-epoch update of batch 8, and the split-learning black-box decoder.
DEFAULT_ATTACKS = ("inverting-gradients-fedavg", "split-black-box")


class RunSpec(BaseModel):
    """How every defence of a comparison is trained and audited: the one source of the
    options :func:`compare` and :func:`run_defense` share (and of what a result records).

    Attributes:
        attacks: audit attack names; those whose threat model does not apply to a
            defence are reported as ``n/a``.
        cut: the cut of every defence.
        epochs: training epochs of every defence (and of the audit's undefended twin).
        batch_size: training batch size.
        budget: the audit budget.
        victims: victim images per audit (None: the budget's).
        seed: seeds the model copies, training, the victim split and the attacks.
        membership: also run membership inference (see :func:`compare`).
        progress: show progress bars.

    Example:
        >>> RunSpec(epochs=2, attacks=("split-black-box",)).budget
        'quick'
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    cut: int | str = 2
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=64, ge=1)
    budget: Budget = "quick"
    victims: int | None = Field(default=None, ge=1)
    seed: int = Field(default=0, ge=0)
    membership: bool = True
    progress: bool = True



class DefenseRun(BaseModel):
    """One trained defence (one point of the frontier).

    Attributes:
        defense: the registry name.
        options: the options it was built with (besides cut and seed).
        strength: the name of its strength option, or None.
        strength_value: that option's value, or None.
        accuracy: test accuracy.
        balanced_accuracy: test balanced accuracy (mean per-class recall).
        majority_rate: the test split's majority-class rate (what a constant guess scores).
        f1: macro F1 on the test split.
        epsilon: DP-SGD's epsilon (at ``delta``), else None.
        delta: DP-SGD's delta, else None.
        train_seconds: wall time of its training protocol.
        leakage: attack name -> the audit's result (``status="n/a"`` where it does not apply).
        distance_correlation: between victim images and what crosses its cut.
        victims: victim images of its audit (0 when no attack applied).
        verdicts: its audit's verdicts per attacker position.
        control: what its audit's positive control was.
        membership: its membership audit (victims as members, the held-out validation
            and test images as non-members; None when not run).
    """

    model_config = ConfigDict(extra="forbid")

    defense: str
    options: dict[str, Any]
    strength: str | None
    strength_value: float | None
    accuracy: float
    balanced_accuracy: float | None = None
    majority_rate: float | None = None
    f1: float
    epsilon: float | None = None
    delta: float | None = None
    train_seconds: float
    leakage: dict[str, AttackResult]
    distance_correlation: float | None = None
    victims: int = 0
    verdicts: list[PositionVerdict] = Field(default_factory=list)
    control: str | None = None
    membership: MembershipReport | None = None

    def membership_cell(self, fpr: float = 0.01) -> str:
        """``AUC / TPR at fpr / verdict`` of the strongest membership attack (by AUC),
        with the TPR bound that a DP epsilon implies beside it.

        Args:
            fpr: the FPR of the TPR column (0.01 or 0.001).

        Returns:
            Text such as ``AUC 0.71 TPR 12.0%@1% LEAKS (bound 2.7%)``; ``-`` when not run.
        """
        m = self.membership
        if m is None:
            return "-"
        best, key = m.best(), fpr_label(fpr)
        tpr = best.tpr.get(key)
        bound = (m.dp_tpr_bound or {}).get(key)
        return (f"AUC {best.auc:.2f} TPR {'n/r' if tpr is None else f'{tpr:.1%}'}@{key} "
                f"{_SHORT.get(m.verdict, m.verdict)}"
                + ("" if bound is None else f" (bound {bound:.1%})"))


_SHORT = {"leaks": "LEAKS", "no leakage found": "none found", "inconclusive": "inconcl."}


def _verdict_cell(res: AttackResult) -> str:
    """``PSNR balanced-accuracy verdict`` of one attack, in 30 characters."""
    short = _SHORT
    bal = f"{res.balanced_accuracy:4.0%}" if res.balanced_accuracy is not None else "   -"
    flip = "!" if res.flipped else " "
    return f"{res.psnr or 0:5.1f} {bal}{flip} {short.get(res.verdict or '', res.status):>10s}"


class CompareTable(BaseModel):
    """The privacy-utility frontier: every defence, its utility and its leakage.

    Attributes:
        created: UTC time of the run.
        dataset: the data set's summary line.
        model: the architecture.
        cut: the cut used by every defence.
        budget: the attack budget.
        seed: the seed of everything.
        epochs: training epochs of every defence.
        attacks: the attacks run on each defence.
        victims: victim images per audit.
        rows: one run per defence and strength value.
        complete: False if the run was cancelled with Ctrl-C.
        machine: where it ran.
        versions: library versions.
    """

    model_config = ConfigDict(extra="forbid")

    created: str
    dataset: str
    model: str
    cut: int | str
    budget: str
    seed: int
    epochs: int
    attacks: list[str]
    victims: int
    rows: list[DefenseRun] = Field(default_factory=list)
    complete: bool = True
    machine: dict[str, str] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)

    def summary(self) -> str:
        """One screen of text: a row per defence, accuracy then each attack's PSNR, balanced
        attacker accuracy and verdict, then the verdicts in words.

        Returns:
            A plain-text table.
        """
        head = (f"shieldsplit compare: {self.model} on {self.dataset}, cut {self.cut}, "
                f"{self.epochs} epochs, budget {self.budget}, seed {self.seed}"
                + ("" if self.complete else "  [INCOMPLETE: cancelled]"))
        mia = any(r.membership is not None for r in self.rows)
        cols = "".join(f" {a[:30]:>30s}" for a in self.attacks) + (
            f"  {'membership (strongest attack)':s}" if mia else "")
        lines = [head, f"{'defence':28s} {'acc':>6s} {'bal.acc':>7s} {'F1':>6s} {'eps':>7s} "
                       f"{'sec':>7s}{cols}",
                 f"{'':28s} {'':>6s} {'':>7s} {'':>6s} {'':>7s} {'':>7s}"
                 + "".join(f" {'PSNR bal.att.acc verdict':>30s}" for _ in self.attacks)
                 + ("  AUC, TPR at 1% FPR, verdict (DP bound)" if mia else "")]
        for r in self.rows:
            cells = []
            for a in self.attacks:
                res = r.leakage.get(a)
                if res is None or res.status != "ok":
                    cells.append(f" {res.status if res else 'missing':>30s}")
                else:
                    cells.append(f" {_verdict_cell(res):>30s}")
            eps = "-" if r.epsilon is None else f"{r.epsilon:7.2f}"
            lines.append(f"{run_label(r):28s} {r.accuracy:6.1%} "
                         f"{_pct(r.balanced_accuracy):>7s} {r.f1:6.3f} {eps:>7s} "
                         f"{r.train_seconds:7.1f}" + "".join(cells)
                         + (f"  {r.membership_cell()}" if mia else ""))
        majority = {r.majority_rate for r in self.rows if r.majority_rate is not None}
        if majority:
            lines.append(f"test majority-class rate {max(majority):.1%}; balanced accuracy "
                         "chance is 1/classes; ! = attacker accuracy below chance (flipped, "
                         "not protection)")
        lines += [dp_sentence(r) for r in self.rows if r.membership is not None
                  and r.membership.epsilon is not None]
        lines.append("Verdicts:")
        for r in self.rows:
            for v in r.verdicts:
                lines.append(f"- {run_label(r)}: [{v.verdict}] {v.sentence}")
        return "\n".join(lines)

    def to_json(self, path: str | Path) -> None:
        """Write the table as JSON, atomically."""
        atomic_write_text(path, self.model_dump_json(indent=2))

    def plot(self) -> Any:
        """The frontier: accuracy against each attack's MSE and balanced attacker accuracy.

        A swept defence is drawn as a curve through its strength values.

        Returns:
            A matplotlib figure (needs the ``plots`` extra).

        Raises:
            ConfigError: if matplotlib is not installed.
        """
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ConfigError.build(
                what="matplotlib", expected="matplotlib installed for the plot",
                received="ImportError", fix="pip install 'shieldsplit[plots]'",
            ) from exc
        attacks = self.attacks
        fig, axes = plt.subplots(2, len(attacks), figsize=(5.2 * len(attacks), 8.5),
                                 squeeze=False)
        names = list(dict.fromkeys(r.defense for r in self.rows))
        colours = plt.get_cmap("tab10")
        for j, attack in enumerate(attacks):
            for i, (metric, label) in enumerate(
                (("mse", "reconstruction MSE (higher = less leakage)"),
                 ("balanced_accuracy", "balanced attacker accuracy (lower = less leakage; "
                                       "below chance = flipped)"))
            ):
                ax = axes[i][j]
                for k, name in enumerate(names):
                    pts = sorted(
                        ((getattr(r.leakage[attack], metric), r.accuracy, r.strength_value)
                         for r in self.rows if r.defense == name and attack in r.leakage
                         and r.leakage[attack].status == "ok"
                         and getattr(r.leakage[attack], metric) is not None),
                        key=lambda p: (p[2] if p[2] is not None else 0.0),
                    )
                    if not pts:
                        continue
                    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                    ax.plot(xs, ys, "o-" if len(pts) > 1 else "o", color=colours(k % 10),
                            label=name)
                ax.set_xlabel(label)
                ax.set_ylabel("test accuracy")
                ax.set_title(attack)
                ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"Privacy-utility frontier: {self.dataset}")
        fig.tight_layout()
        return fig

    def save_html(self, path: str | Path) -> None:
        """Write the plot and the table as one self-contained HTML page, atomically.

        Without matplotlib the page carries the table and says how to get the plot.
        """
        atomic_write_text(path, render_html(self))


@dataclass(frozen=True)
class MatchedPair:
    """A baseline run and the candidate run nearest to it in test accuracy.

    Attributes:
        baseline: the baseline's run.
        candidate: the candidate's run.
        attack: the attack both are scored with.
        mse_gain: ``candidate MSE / baseline MSE - 1`` (positive: the candidate leaks less).
        attacker_accuracy_drop: relative drop of the attacker's *balanced* accuracy,
            ``(baseline - candidate) / baseline`` (positive: the candidate leaks less; plain
            accuracy would reward a defence whose reconstructions all look like the
            majority class).
    """

    baseline: DefenseRun
    candidate: DefenseRun
    attack: str
    mse_gain: float
    attacker_accuracy_drop: float


def match_by_accuracy(
    candidates: Sequence[DefenseRun], baselines: Sequence[DefenseRun], attack: str
) -> list[MatchedPair]:
    """Pair every baseline run with the candidate run closest in test accuracy.

    The paper's comparison at matched utility (Jiang et al. 2025: "at the same level of
    client classification accuracy"). Runs whose ``attack`` did not finish are skipped.

    Args:
        candidates: runs of the defence under test (e.g. latent perturbation).
        baselines: runs of a baseline (e.g. DP-SGD at several noise levels).
        attack: the attack whose MSE and attacker accuracy are compared.

    Returns:
        One pair per scored baseline run (empty if no candidate was scored).
    """
    def scored(r: DefenseRun) -> bool:
        res = r.leakage.get(attack)
        return res is not None and res.status == "ok" and res.mse is not None

    pool = [r for r in candidates if scored(r)]
    pairs = []
    for b in (r for r in baselines if scored(r)):
        if not pool:
            break
        c = min(pool, key=lambda r: abs(r.accuracy - b.accuracy))
        lb, lc = b.leakage[attack], c.leakage[attack]
        mse_b, mse_c = float(lb.mse or 0.0), float(lc.mse or 0.0)
        acc_b = float(lb.balanced_accuracy if lb.balanced_accuracy is not None
                      else lb.attacker_accuracy or 0.0)
        acc_c = float(lc.balanced_accuracy if lc.balanced_accuracy is not None
                      else lc.attacker_accuracy or 0.0)
        pairs.append(MatchedPair(
            baseline=b, candidate=c, attack=attack,
            mse_gain=mse_c / mse_b - 1.0 if mse_b > 0 else math.inf,
            attacker_accuracy_drop=(acc_b - acc_c) / acc_b if acc_b > 0 else 0.0,
        ))
    return pairs


def dp_sentence(r: DefenseRun) -> str:
    """DP-SGD's epsilon beside the TPR it allows and the TPR measured, at each FPR.

    Args:
        r: a run whose membership report carries an epsilon.

    Returns:
        One sentence, computed from the run.
    """
    m = r.membership
    if m is None or m.epsilon is None:
        return f"{run_label(r)}: no DP guarantee"
    best = m.best()
    parts = []
    for key, bound in (m.dp_tpr_bound or {}).items():
        tpr = best.tpr.get(key)
        seen = "not resolvable" if tpr is None else f"{tpr:.1%}"
        parts.append(f"at {key} FPR epsilon allows TPR <= {bound:.1%}, {best.attack} "
                     f"measured {seen}")
    return (f"{run_label(r)}: epsilon {m.epsilon:.3g} (delta {m.delta or 0:.0e}): "
            + "; ".join(parts))


def membership_curves(table: CompareTable) -> list[RocCurve]:
    """Each run's strongest membership attack as a ROC curve (a DP run with its bound).

    Args:
        table: a comparison.

    Returns:
        One curve per run with a membership audit.
    """
    out = []
    for r in table.rows:
        if r.membership is None:
            continue
        best = r.membership.best()
        out.append(RocCurve(label=f"{run_label(r)}: {best.attack} (AUC {best.auc:.2f})",
                            fpr=best.roc_fpr, tpr=best.roc_tpr, epsilon=r.membership.epsilon,
                            delta=r.membership.delta))
    return out


def run_label(r: DefenseRun) -> str:
    """``name`` or ``name strength=value``: how a run is named in tables and plots."""
    if r.strength is None or r.strength_value is None:
        return r.defense
    return f"{r.defense} {r.strength}={r.strength_value:g}"


def render_html(table: CompareTable) -> str:
    """Render a :class:`CompareTable` as HTML (plot embedded as PNG, then the table).

    Args:
        table: a finished (or partial) comparison.

    Returns:
        The HTML text.
    """
    try:
        import matplotlib.pyplot as plt

        fig = table.plot()
        plot = f'<img alt="frontier" src="data:image/png;base64,{png_base64(fig)}">'
        plt.close(fig)
    except (ImportError, ConfigError):
        plot = "<p>Install <code>shieldsplit[plots]</code> for the frontier plot.</p>"
    mia = any(r.membership is not None for r in table.rows)
    head = "".join(f"<th>{html.escape(a)}<br>MSE / PSNR / SSIM / balanced att.acc [95% CI]"
                   f" / verdict</th>" for a in table.attacks) + (
        "<th>membership (strongest attack)<br>AUC [95% CI] / TPR at 1% FPR / verdict"
        "</th><th>TPR bound from epsilon at 1% FPR</th>" if mia else "")
    body = []
    for r in table.rows:
        cells = []
        for a in table.attacks:
            res = r.leakage.get(a)
            if res is None or res.status != "ok":
                cells.append(f"<td>{html.escape(res.status if res else 'missing')}</td>")
            else:
                e = res.evidence
                interval = (f" [{e.balanced_low:.0%}, {e.balanced_high:.0%}]"
                            if e is not None and e.balanced_low is not None
                            and e.balanced_high is not None else "")
                cells.append(f"<td>{res.mse or 0:.4f} / {res.psnr or 0:.1f} / "
                             f"{res.ssim or 0:.3f} / {_pct(res.balanced_accuracy)}{interval}"
                             f"{' flipped' if res.flipped else ''} / "
                             f"<b>{html.escape(res.verdict or res.status)}</b></td>")
        eps = "-" if r.epsilon is None else f"{r.epsilon:.2f}"
        body.append(f"<tr><td>{html.escape(run_label(r))}</td><td>{r.accuracy:.1%}</td>"
                    f"<td>{_pct(r.balanced_accuracy)}</td>"
                    f"<td>{r.f1:.3f}</td><td>{eps}</td><td>{r.train_seconds:.1f}</td>"
                    + "".join(cells) + (_membership_cells(r) if mia else "") + "</tr>")
    verdicts = "".join(
        f"<li>{html.escape(run_label(r))}: <b>{html.escape(v.verdict)}</b>: "
        f"{html.escape(v.sentence)}</li>" for r in table.rows for v in r.verdicts)
    dp = "".join(f"<p>{html.escape(dp_sentence(r))}</p>" for r in table.rows
                 if r.membership is not None and r.membership.epsilon is not None)
    title = html.escape(f"shieldsplit compare: {table.dataset}")
    meta = html.escape(
        f"{table.model}, cut {table.cut}, {table.epochs} epochs, budget {table.budget}, "
        f"seed {table.seed}, {table.victims} victims, {table.created}, "
        f"{table.machine.get('cpus', '?')} CPUs"
        + ("" if table.complete else " - INCOMPLETE (cancelled)"))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}table{border-collapse:collapse}</style></head>"
        f"<body><h1>{title}</h1><p>{meta}</p><h2>Verdicts</h2><ul>{verdicts}</ul>{plot}"
        "<table><tr><th>defence</th><th>accuracy</th><th>balanced accuracy</th>"
        "<th>macro F1</th><th>epsilon</th>"
        f"<th>train s</th>{head}</tr>{''.join(body)}</table>{dp}"
        f"{roc_html(membership_curves(table), title='membership inference per defence')}"
        "</body></html>"
    )


def _membership_cells(r: DefenseRun) -> str:
    m = r.membership
    if m is None:
        return "<td>-</td><td>-</td>"
    best = m.best()
    tpr = best.tpr.get("1%")
    bound = (m.dp_tpr_bound or {}).get("1%")
    return (f"<td>{best.attack}: {best.auc:.3f} [{best.auc_low:.3f}, {best.auc_high:.3f}] / "
            f"{'not resolvable' if tpr is None else f'{tpr:.1%}'} / "
            f"<b>{html.escape(m.verdict)}</b></td>"
            f"<td>{'-' if bound is None else f'{bound:.1%}'}</td>")


def _specs(
    defenses: Sequence[str | tuple[str, Mapping[str, Any]]],
    sweeps: Mapping[str, Sequence[float]] | None,
) -> list[tuple[str, dict[str, Any]]]:
    valid = available_defenses()
    specs: list[tuple[str, dict[str, Any]]] = []
    for item in defenses:
        name, opts = (item, {}) if isinstance(item, str) else (item[0], dict(item[1]))
        if name not in valid:
            raise ConfigError.build(
                what="defenses", expected=f"names from {valid}", received=repr(name),
                fix="pick registered defences (shieldsplit.available_defenses())",
            )
        specs.append((name, opts))
    for name in sweeps or {}:
        if name not in [n for n, _ in specs]:
            raise ConfigError.build(
                what="sweeps", expected=f"keys among the compared defences {[n for n, _ in specs]}",
                received=repr(name), fix="add the defence to defenses= or drop the sweep",
            )
    return specs


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _utility(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """Test accuracy, balanced accuracy and macro F1 of a trained defence."""
    preds = []
    with torch.no_grad():
        for i in range(0, len(x), 256):
            preds.append(model.predict_proba(x[i:i + 256]).argmax(-1)  # type: ignore[operator]
                         if hasattr(model, "predict_proba") else model(x[i:i + 256]).argmax(-1))
    p = torch.cat(preds)
    acc = float((p == y).double().mean())
    return (acc, float(balanced_accuracy_score(y.numpy(), p.numpy())),
            float(f1_score(y.numpy(), p.numpy(), average="macro", zero_division=0)))


def compare(
    model: nn.Module,
    *,
    data: Any,
    defenses: Sequence[str | tuple[str, Mapping[str, Any]]] = (
        "none", "pgsl", "latent-fixed", "latent-learned", "dpsgd", "nopeek", "laplace", "bido"),
    sweeps: Mapping[str, Sequence[float]] | None = None,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    cut: int | str = 2,
    epochs: int = 10,
    batch_size: int = 64,
    budget: Budget = "quick",
    victims: int | None = None,
    seed: int = 0,
    membership: bool = True,
    progress: bool = True,
) -> CompareTable:
    """Train each defence on the same split and audit each with the same attacks.

    Args:
        model: the classifier to defend; every defence gets its own copy (the model is
            never modified), so all start from the same weights.
        data: labelled images in any form of docs/data.md. An ``ImageDataset``
            (``shieldsplit.data.load_dataset``) is used as split; any other form (a
            ``TensorDataset``, a DataLoader, an ``(x, y)`` pair) gets a seeded stratified
            70/15/15 split (``ImageDataset.from_tensors``). The train split trains and is
            the audit's victims/auxiliary pool; the test split scores accuracy and F1.
        defenses: registered names, or ``(name, options)`` pairs. ``"none"`` (the
            undefended split, every other defence's positive control) runs first and is
            added when absent.
        sweeps: ``name -> values`` of the defence's strength option (e.g.
            ``{"laplace": [0.1, 0.5, 1.0]}``); each value is one run, drawn as a curve.
        attacks: audit attack names (default: federated IG on a FedAvg update and the
            split black-box decoder).
        cut: the cut of every defence.
        epochs: training epochs of every defence.
        batch_size: training batch size.
        budget: the audit budget.
        victims: victim images per audit (default: the budget's).
        seed: seeds model copies, training, the victim split and the attacks.
        membership: also run membership inference on every defence (its victims as
            members, the validation and test images as non-members; reference models
            trained with each defence's recipe, cached by seed and recipe, the
            overfitted control shared by every defence). A column per defence, DP-SGD's
            epsilon beside the TPR bound it implies, and the ROC curves in the HTML.
        progress: show progress bars.

    Returns:
        The frontier table. Ctrl-C returns what finished, marked ``complete=False``.

    Raises:
        ConfigError: an unknown defence, attack or sweep key, or a bad option.
        InputShapeError, LabelError, UnsupportedModelError: data or a model that breaks
            the data contract of docs/data.md (checked before any training).

    Reference:
        Jiang, Firouzi, Chakrabarty 2025 (Fig. 4); Khowaja et al. 2022 (Table I).
    """
    spec = build_config(RunSpec, dict(attacks=tuple(attacks), cut=cut, epochs=epochs,
                         batch_size=batch_size, budget=budget, victims=victims, seed=seed,
                         membership=membership, progress=progress),
                        fix="see the options of shieldsplit.compare")
    data = as_dataset(data, model=model, seed=seed)  # the one data contract (docs/data.md)
    specs = _specs(defenses, sweeps)
    if "none" not in [n for n, _ in specs]:
        specs.insert(0, ("none", {}))
    specs.sort(key=lambda spec: spec[0] != "none")  # the control first
    from shieldsplit.provenance import machine_info

    table = CompareTable(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        dataset=data.summary().splitlines()[0], model=type(model).__name__, cut=cut,
        budget=budget, seed=seed, epochs=epochs, attacks=list(attacks),
        victims=victims or 0, machine=machine_info(), versions=library_versions(),
    )
    for name, opts in specs:  # a bad sweep fails now, not after hours of other rows
        if name in (sweeps or {}) and create_defense(name, model, cut=cut, seed=seed,
                                                     **opts).strength is None:
            raise ConfigError.build(
                what="sweeps", expected=f"a defence with a strength option ({name!r} has none)",
                received=repr(name), fix="drop its sweep",
            )
    runs: list[tuple[str, dict[str, Any], float | None]] = []
    for name, opts in specs:
        for value in (sweeps or {}).get(name, [None]):
            runs.append((name, opts, value))
    try:
        with progress_bar(runs, total=len(runs), description="compare",
                          enabled=progress) as todo:
            control: AuditReport | None = None
            for name, opts, value in todo:
                options = dict(opts)
                if value is not None:
                    strength = create_defense(name, model, cut=cut, seed=seed,
                                              **options).strength
                    options[str(strength)] = value  # checked above: it has one
                row, report = _run_seeded(model, data, name, options, spec,
                                          "auto" if name == "none" else control)
                if name == "none" and value is None:
                    control = report
                if row.victims:
                    table.victims = row.victims
                table.rows.append(row)
    except KeyboardInterrupt:
        table.complete = False
        logger.warning("compare cancelled; the table is partial")
    return table


def run_defense(
    model: nn.Module,
    data: Any,
    name: str,
    *,
    options: Mapping[str, Any] | None = None,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    cut: int | str = 2,
    epochs: int = 10,
    batch_size: int = 64,
    budget: Budget = "quick",
    victims: int | None = None,
    seed: int = 0,
    progress: bool = True,
    control: Any = "auto",
    membership: bool = False,
) -> DefenseRun:
    """Train one defence with its own protocol, score its utility, audit it: one frontier point.

    Args:
        model: the classifier to defend (copied, never modified).
        data: labelled images in any form of docs/data.md (see :func:`compare`): train
            split to train and audit on, test split for accuracy.
        name: a registered defence.
        options: its keyword options (besides cut and seed).
        attacks: audit attacks; those whose threat model does not apply get ``n/a``.
        cut: the defence's cut.
        epochs: training epochs.
        batch_size: training batch size.
        budget: the audit budget.
        victims: victim images of the audit (default: the budget's).
        seed: seeds the copy, training, the victim split and the attacks.
        progress: show progress bars.
        control: the audit's positive control (see :func:`shieldsplit.audit`): ``"auto"``
            trains the undefended twin for ``epochs``; pass the undefended run's
            :class:`~shieldsplit.auditor.AuditReport` to reuse it.
        membership: also run membership inference (see :func:`compare`); off by
            default here, so the paper reproductions and the frontier, which report
            reconstruction, do not pay for it.

    Returns:
        The run.

    Raises:
        ConfigError: an unknown defence, option or attack.
        KeyboardInterrupt: when the audit was cancelled (nothing partial is returned).

    Example:
        >>> from shieldsplit.data import load_dataset
        >>> from shieldsplit.models import PGSLNet
        >>> ds = load_dataset("digits", seed=0, limit=64)
        >>> net = PGSLNet(num_classes=10, image_size=8, width=8, hidden=16)
        >>> run = run_defense(net, ds, "laplace", options={"scale": 0.5}, epochs=1,
        ...                   attacks=["split-black-box"], victims=8, progress=False)
        >>> run.defense, run.strength, run.strength_value, run.leakage["split-black-box"].status
        ('laplace', 'scale', 0.5, 'ok')
    """
    spec = build_config(RunSpec, dict(attacks=tuple(attacks), cut=cut, epochs=epochs,
                         batch_size=batch_size, budget=budget, victims=victims, seed=seed,
                         membership=membership, progress=progress),
                        fix="see the options of shieldsplit.compare")
    data = as_dataset(data, model=model, seed=seed)
    return _run_seeded(model, data, name, dict(options or {}), spec, control)[0]


def _run_seeded(
    model: nn.Module, data: ImageDataset, name: str, options: dict[str, Any], spec: RunSpec,
    control: Any,
) -> tuple[DefenseRun, AuditReport | None]:
    # Noisy defences draw from torch's global generator: seed it here, so a run's numbers
    # depend on its seed only, not on what ran before it (a resumed sweep = an unbroken one).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return _train_and_audit(model, data, name, options, spec, control)


def _train_and_audit(
    model: nn.Module, data: ImageDataset, name: str, options: dict[str, Any], spec: RunSpec,
    control: Any,
) -> tuple[DefenseRun, AuditReport | None]:
    seed, attacks = spec.seed, spec.attacks
    defense = create_defense(name, copy.deepcopy(model), cut=spec.cut, seed=seed, **options)
    strength = defense.strength
    loaders = make_loaders(data, batch_size=spec.batch_size, seed=seed)
    start = time.perf_counter()
    defense.train_protocol(loaders.train, epochs=spec.epochs, val_loader=loaders.val,
                           seed=seed, progress=spec.progress)
    train_seconds = time.perf_counter() - start
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        acc, bal, f1 = _utility(defense, data.x_test, data.y_test)
    applicable = set(defense_attacks(defense))
    runnable = [a for a in attacks if a in applicable]
    leakage: dict[str, AttackResult] = {}
    dcor = None
    audited = 0
    report: AuditReport | None = None
    if runnable:
        report = audit(defense, data=(data.x_train, data.y_train), budget=spec.budget,
                       seed=seed, attacks=runnable, victims=spec.victims,
                       progress=spec.progress, control=control, control_epochs=spec.epochs,
                       batch_size=spec.batch_size,
                       heldout=heldout_of(data) if spec.membership else None)
        audited = report.victims
        leakage = {r.attack: r for r in report.results}
        dcor = report.distance_correlation
        if not report.complete:
            raise KeyboardInterrupt
    for a in attacks:
        if a not in applicable:
            leakage[a] = AttackResult(attack=a, threat_model="-", observes="-", images=0,
                                      seconds=0.0, status="n/a",
                                      error=f"{name} is not deployed under this threat model")
    privacy = defense.privacy()
    eps = privacy.get("epsilon")
    run = DefenseRun(
        defense=name, options=defense.options(), strength=strength,
        strength_value=_number(defense.options().get(strength)) if strength else None,
        accuracy=acc, balanced_accuracy=bal, majority_rate=majority_rate(data.y_test),
        f1=f1, verdicts=report.verdicts if report is not None else [],
        control=report.control if report is not None else None,
        epsilon=None if eps is None else (float(eps) if math.isfinite(eps) else float("inf")),
        delta=privacy.get("delta"), train_seconds=train_seconds, leakage=leakage,
        distance_correlation=dcor, victims=audited,
        membership=report.membership if report is not None else None,
    )
    return run, report


__all__ = [
    "DEFAULT_ATTACKS", "CompareTable", "DefenseRun", "MatchedPair", "RunSpec", "compare",
    "dp_sentence",
    "match_by_accuracy", "membership_curves", "render_html", "run_defense", "run_label",
]
