"""The comparison's result types (pydantic) and their rendering (table, plot, HTML):
what :func:`shieldsplit.compare.compare` returns, kept apart from how it is computed.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shieldsplit._core.io import atomic_write_text
from shieldsplit.audit.auditor import (
    AttackResult,
    PositionVerdict,
)
from shieldsplit.audit.membership import MembershipReport, fpr_label
from shieldsplit.errors import ConfigError
from shieldsplit.functional.verdict import Tolerance
from shieldsplit.plots import RocCurve, png_base64, roc_html

logger = logging.getLogger(__name__)


#: The two threat models of issue 4's frontier: the federated Inverting Gradients attack
#: on a 5-local-epoch update of batch 8, and the split-learning black-box decoder.
DEFAULT_ATTACKS = ("inverting-gradients-fedavg", "split-black-box")


class DefenseRun(BaseModel):
    """One trained defence (one point of the frontier).

    Attributes:
        defense: the registry name.
        options: the options it was built with (besides cut and seed).
        strength: the name of its strength option, or None.
        strength_value: that option's value, or None.
        accuracy: test accuracy.
        val_accuracy: validation accuracy (what runs are matched on; None in tables made
            before it was kept).
        predicted_classes: distinct classes it predicts on the test split (1: a stuck
            classifier, whatever its accuracy).
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
    val_accuracy: float | None = None
    predicted_classes: int | None = None
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


def verdict_cell(res: AttackResult) -> str:
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
        tolerance: the decision rule's tolerance (every audit's).
        run: how the table was made, where a benchmark records it (command, wall time,
            load average).
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
    tolerance: Tolerance = Field(default_factory=Tolerance)
    run: dict[str, Any] = Field(default_factory=dict)

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
                    cells.append(f" {verdict_cell(res):>30s}")
            eps = "-" if r.epsilon is None else f"{r.epsilon:7.2f}"
            lines.append(f"{run_label(r):28s} {r.accuracy:6.1%} "
                         f"{percent(r.balanced_accuracy):>7s} {r.f1:6.3f} {eps:>7s} "
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
    """A baseline run and the candidate run nearest to it in validation accuracy.

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
    """Pair every baseline run with the candidate run closest in validation accuracy.

    The paper's comparison at matched utility (Jiang et al. 2025: "at the same level of
    client classification accuracy"). The pairs are chosen on the validation split (the
    test split only reports); a table made before validation accuracy was kept falls
    back to test accuracy, and :func:`matched_on` says which. Runs whose ``attack`` did
    not finish are skipped.

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
        c = min(pool, key=lambda r: abs(_matching_accuracy(r) - _matching_accuracy(b)))
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


def stuck(r: DefenseRun, classes: int | None = None) -> bool:
    """Whether a defended classifier learned nothing: it predicts one class for every test
    image. A run recorded before the classes it predicts were kept falls back on its
    membership audit (one class on every image it scored) and, given ``classes``, on a
    balanced accuracy at chance with an accuracy at one class's share of the test split
    (what a one-class classifier scores): the majority rate or, on two classes, the
    minority's (a model that predicts the rarer class for every image).

    Example:
        >>> run = DefenseRun(defense="dpsgd", options={}, strength=None, strength_value=None,
        ...                  accuracy=0.7307, balanced_accuracy=0.5, majority_rate=0.7307,
        ...                  f1=0.4, train_seconds=1.0, leakage={})
        >>> stuck(run), stuck(run, 2), stuck(run.model_copy(update={"balanced_accuracy": 0.512}), 2)
        (False, True, False)
        >>> stuck(run.model_copy(update={"accuracy": 1 - 0.7307}), 2)
        True
    """
    if r.predicted_classes is not None:
        return r.predicted_classes == 1
    if r.membership is not None and r.membership.one_class:
        return True
    if classes is None or r.balanced_accuracy is None or r.majority_rate is None:
        return False
    one_class = [r.majority_rate, *([1 - r.majority_rate] if classes == 2 else [])]
    return (abs(r.balanced_accuracy - 1 / classes) < 1e-9
            and any(abs(r.accuracy - rate) < 1e-9 for rate in one_class))


def _matching_accuracy(r: DefenseRun) -> float:
    return r.val_accuracy if r.val_accuracy is not None else r.accuracy


def matched_on(runs: Sequence[DefenseRun]) -> str:
    """Which split :func:`match_by_accuracy` paired ``runs`` on, in words."""
    if runs and all(r.val_accuracy is not None for r in runs):
        return "validation accuracy"
    return "test accuracy (the table predates validation accuracy)"


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
                             f"{res.ssim or 0:.3f} / {percent(res.balanced_accuracy)}{interval}"
                             f"{' flipped' if res.flipped else ''} / "
                             f"<b>{html.escape(res.verdict or res.status)}</b></td>")
        eps = "-" if r.epsilon is None else f"{r.epsilon:.2f}"
        body.append(f"<tr><td>{html.escape(run_label(r))}</td><td>{r.accuracy:.1%}</td>"
                    f"<td>{percent(r.balanced_accuracy)}</td>"
                    f"<td>{r.f1:.3f}</td><td>{eps}</td><td>{r.train_seconds:.1f}</td>"
                    + "".join(cells) + (membership_cells(r) if mia else "") + "</tr>")
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


def membership_cells(r: DefenseRun) -> str:
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


def number_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"



__all__ = [
    "CompareTable", "DefenseRun", "MatchedPair", "dp_sentence", "match_by_accuracy",
    "membership_cells", "membership_curves", "number_or_none", "percent", "render_html",
    "run_label", "verdict_cell",
]
