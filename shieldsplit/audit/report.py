"""The audit's report types (pydantic, a stable JSON schema) and their HTML rendering:
what :func:`shieldsplit.audit.audit` returns, kept apart from how it is computed.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from torch import Tensor

from shieldsplit._core.io import atomic_write_text
from shieldsplit.attacks.base import (
    Budget,
)
from shieldsplit.audit.membership import MembershipReport
from shieldsplit.functional.verdict import (
    Evidence,
    Tolerance,
    VerdictLabel,
)
from shieldsplit.plots import png_base64, roc_html

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- report models
class ControlResult(BaseModel):
    """The same attack on the positive control.

    Attributes:
        kind: ``undefended twin``, ``your control`` (a model you passed), ``calibration``
            (a plain model's freshly initialised copy, in the audited setting) or ``same
            run`` (reports made before the calibration moved into the audited setting).
        description: what the control was, in words.
        attack: the attack run on the control (an adaptive attack's stand-in on a model
            without its defence).
        images: victims rebuilt.
        psnr: mean PSNR on the control.
        balanced_accuracy: the reference classifier's balanced accuracy on them.
        status: as for :class:`AttackResult`.
        evidence: the control's evidence.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["undefended twin", "your control", "calibration", "same run"]
    description: str
    attack: str
    images: int = 0
    psnr: float | None = None
    balanced_accuracy: float | None = None
    status: Literal["ok", "cancelled", "failed", "n/a"] = "ok"
    evidence: Evidence | None = None


class AttackResult(BaseModel):
    """One attack's score and verdict.

    Attributes:
        attack: the attack's name in the report.
        threat_model: what the attacker holds (see ``shieldsplit.attacks.base.ThreatModel``).
        observes: ``activations``, ``gradient`` or ``update``.
        position: ``split`` or ``federated`` (where the attacker sits).
        server: ``honest`` or ``malicious`` (the attack's declared threat model; None in
            records made before it was kept: read from the registry when decided).
        images: how many victim images were rebuilt.
        mse: mean MSE over those images (lower = more leakage).
        psnr: mean PSNR in dB (higher = more leakage).
        ssim: mean SSIM (higher = more leakage).
        baseline_psnr: mean PSNR of the best no-attack guess for the same victims.
        attacker_accuracy: accuracy of the reference classifier on the reconstructions.
        balanced_accuracy: its balanced accuracy (chance: 1 / classes present).
        label_recovery: fraction of labels inferred correctly, if the attack infers labels.
        evidence: the numbers the decision rule reads (gain over the baseline and its
            interval, line-up re-identifications, balanced-accuracy interval, chance).
        diagnostics: convergence facts (final against initial matching loss, a decoder's
            loss on held-out auxiliary images), where the attack reports them.
        control: the same attack on the positive control, when one ran.
        reduction_db: the control's PSNR minus this attack's (what a defence buys).
        verdict: ``leaks``, ``no leakage found`` or ``inconclusive``.
        reason: why (the decision rule's branch).
        seconds: wall time (preparation and reconstruction).
        status: ``ok``, ``cancelled`` (Ctrl-C), ``failed``, or ``n/a`` (in a comparison:
            the attack's threat model does not apply to that defence).
        error: the error message when ``status`` is ``failed``.
    """

    model_config = ConfigDict(extra="forbid")

    attack: str
    threat_model: str
    observes: str
    position: str = "-"
    server: str | None = None
    images: int
    mse: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    baseline_psnr: float | None = None
    attacker_accuracy: float | None = None
    balanced_accuracy: float | None = None
    label_recovery: float | None = None
    evidence: Evidence | None = None
    diagnostics: dict[str, float] = Field(default_factory=dict)
    control: ControlResult | None = None
    reduction_db: float | None = None
    verdict: VerdictLabel | None = None
    reason: str | None = None
    seconds: float
    status: Literal["ok", "cancelled", "failed", "n/a"] = "ok"
    error: str | None = None

    @property
    def flipped(self) -> bool:
        """Balanced attacker accuracy significantly below chance (a systematic flip)."""
        return self.evidence is not None and self.evidence.flipped


class BaselineScore(BaseModel):
    """A no-attack guess scored like an attack, over every victim.

    Attributes:
        name: ``auxiliary mean`` or ``nearest auxiliary`` (an oracle: the auxiliary image
            nearest to each victim).
        mse: mean MSE.
        psnr: mean PSNR (dB).
        ssim: mean SSIM.
        attacker_accuracy: the reference classifier's accuracy on the guesses.
        balanced_accuracy: its balanced accuracy.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    mse: float
    psnr: float
    ssim: float
    attacker_accuracy: float
    balanced_accuracy: float


class PositionVerdict(BaseModel):
    """The verdict for one attacker position and threat model, in words.

    Attributes:
        position: ``split``, ``federated`` or ``membership``.
        verdict: ``leaks``, ``no leakage found`` or ``inconclusive``.
        sentence: one plain sentence with the numbers behind it.
        attacks: the attacks the verdict combines.
        server: ``honest`` or ``malicious``: an honest and a malicious server at the
            same position get a verdict each.
    """

    model_config = ConfigDict(extra="forbid")

    position: str
    verdict: VerdictLabel
    sentence: str
    attacks: list[str]
    server: str = "honest"

    @property
    def label(self) -> str:
        """The position and, for a malicious server, its threat model: ``"federated"``,
        ``"federated, malicious"``."""
        return self.position if self.server == "honest" else f"{self.position}, {self.server}"


class AuditReport(BaseModel):
    """The result of :func:`audit`; a pydantic model with a stable JSON schema.

    Attributes:
        schema_version: bumps when the JSON layout changes.
        verdicts: one per attacker position, in words (read these first).
        created: UTC time of the audit.
        model: the audited model's class and parameter count.
        defense: ``none`` or the defence's class.
        cut: the split point the split-learning attacks observe.
        budget: ``quick``, ``standard`` or ``thorough``.
        seed: the seed of the audit.
        victims: victim images.
        auxiliary: auxiliary images granted to the attacker.
        clean_accuracy: the model's accuracy on the victim images.
        majority_rate: the victims' majority-class rate (what a constant guess scores).
        chance: ``1 / classes present`` among the victims (chance balanced accuracy).
        reference_accuracy: the reference classifier's accuracy on the clean victim images
            (the ceiling of attacker accuracy).
        reference_balanced_accuracy: its balanced accuracy on them.
        distance_correlation: between victim inputs and their cut activations.
        control: what the positive control was, in words.
        control_accuracy: the control model's accuracy on the victims, when it is a model.
        baselines: the no-attack guesses, scored over every victim.
        membership: membership inference (when ``heldout`` images were given, or
            ``heldout="auto"`` with an ImageDataset; see docs/membership.md), with its
            own verdict, control and ROC.
        membership_note: why membership inference did not run, and how to run it.
        results: one entry per attack.
        ranking: attack names from most to least leakage (by PSNR).
        complete: False when the audit was cancelled.
        versions: library versions.
        machine: where it ran.
        tolerance: what a *no leakage found* bounds each kind of evidence under.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 3
    verdicts: list[PositionVerdict] = Field(default_factory=list)
    created: str
    model: str
    defense: str
    cut: int | str
    budget: Budget
    seed: int
    victims: int
    auxiliary: int
    clean_accuracy: float
    majority_rate: float | None = None
    chance: float | None = None
    reference_accuracy: float | None = None
    reference_balanced_accuracy: float | None = None
    distance_correlation: float | None = None
    control: str | None = None
    control_accuracy: float | None = None
    baselines: list[BaselineScore] = Field(default_factory=list)
    membership: MembershipReport | None = None
    membership_note: str | None = None
    results: list[AttackResult] = Field(default_factory=list)
    ranking: list[str] = Field(default_factory=list)
    complete: bool = True
    versions: dict[str, str] = Field(default_factory=dict)
    machine: dict[str, str] = Field(default_factory=dict)
    tolerance: Tolerance = Field(default_factory=Tolerance)

    _images: dict[str, tuple[Tensor, Tensor]] = PrivateAttr(default_factory=dict)

    def summary(self) -> str:
        """One screen of text: the verdicts first, then a row per attack, most leakage first.

        Returns:
            A plain-text report.
        """
        head = (
            f"shieldsplit audit: {self.model}, defence {self.defense}, cut {self.cut}, "
            f"budget {self.budget}, seed {self.seed}"
            + ("" if self.complete else "  [INCOMPLETE: cancelled]")
        )
        lines = [head, "", "Verdicts:"]
        lines += [f"- [{v.verdict}] {v.sentence}" for v in self.verdicts] or ["- (none)"]
        if self.membership_note:
            lines.append(f"- ({self.membership_note})")
        lines += [
            "",
            f"clean accuracy {self.clean_accuracy:.1%} on {self.victims} victim images; "
            f"{self.auxiliary} auxiliary images granted to the attacker"
            + (f"; majority class {self.majority_rate:.1%}" if self.majority_rate is not None
               else "")
            + (f"; reference classifier {self.reference_accuracy:.1%} "
               f"(balanced {fmt_value(self.reference_balanced_accuracy, '.1%')})"
               if self.reference_accuracy is not None else "")
            + (f"; distance correlation {self.distance_correlation:.3f}"
               if self.distance_correlation is not None else ""),
            f"control: {self.control or 'none'}",
            f"{'attack':27s} {'MSE':>7s} {'PSNR':>6s} {'base':>5s} {'SSIM':>6s} {'ident':>7s} "
            f"{'bal.acc [95% CI]':>19s} {'labels':>6s} {'control':>7s} {'sec':>6s}  verdict",
        ]
        for b in self.baselines:
            lines.append(
                f"{'(no attack) ' + b.name:27s} {b.mse:7.4f} {b.psnr:6.2f} {'':>5s} "
                f"{b.ssim:6.3f} {'':>7s} {b.balanced_accuracy:>19.1%} {'':>6s} {'':>7s} "
                f"{'':>6s}  baseline")
        order = {name: i for i, name in enumerate(self.ranking)}
        for r in sorted(self.results, key=lambda r: order.get(r.attack, len(order))):
            e = r.evidence
            ident = f"{e.identified}/{e.images}" if e is not None else "-"
            bal = (f"{e.balanced_accuracy:.0%} [{e.balanced_low:.0%},{e.balanced_high:.0%}]"
                   if e is not None and e.balanced_accuracy is not None
                   and e.balanced_low is not None and e.balanced_high is not None else "-")
            if r.flipped:
                bal += "!"
            ctrl = fmt_value(r.control.psnr, "7.2f") if r.control is not None else "-".rjust(7)
            lines.append(
                f"{r.attack:27s} {fmt_value(r.mse, '7.4f')} {fmt_value(r.psnr, '6.2f')} "
                f"{fmt_value(r.baseline_psnr, '5.1f')} {fmt_value(r.ssim, '6.3f')} {ident:>7s} "
                f"{bal:>19s} {fmt_value(r.label_recovery, '6.0%')} {ctrl} {r.seconds:6.1f}  "
                f"{r.verdict or r.status}"
                + ("" if r.status == "ok" else f" [{r.status}{': ' + r.error if r.error else ''}]")
            )
        lines.append("base: PSNR of the best no-attack guess for the same victims; ident: "
                     "victims picked out of a line-up by their reconstruction; control: PSNR "
                     "of the same attack on the positive control; ! = below chance (flipped, "
                     "not protection)")
        return "\n".join(lines)

    def to_json(self, path: str | Path) -> None:
        """Write the report as JSON, atomically.

        Args:
            path: destination file.
        """
        atomic_write_text(path, self.model_dump_json(indent=2))

    def save_html(self, path: str | Path, *, include_images: bool = False) -> None:
        """Write a self-contained HTML page (verdicts, table, leakage plot), atomically.

        Args:
            path: destination file.
            include_images: also embed the original and reconstructed victim images.
                They are patient data: the default is False.
        """
        atomic_write_text(path, render_html(self, include_images=include_images))


def fmt_value(value: float | None, spec: str) -> str:
    width = int(spec.split(".")[0]) if spec[0].isdigit() else 6
    return format(value, spec) if value is not None else "-".rjust(width)



# --------------------------------------------------------------------------- HTML
def membership_html(report: AuditReport) -> str:
    """The membership section: the summary and the ROC curves (log-log), or the note."""
    m = report.membership
    if m is None:
        return (f"<h2>Membership inference</h2><p>{html.escape(report.membership_note)}</p>"
                if report.membership_note else "")
    return (f"<h2>Membership inference</h2><pre>{html.escape(m.summary())}</pre>"
            + roc_html(m.curves(), title="membership inference"))


def render_html(report: AuditReport, *, include_images: bool = False) -> str:
    """Render the report as one self-contained HTML page, verdicts first.

    Args:
        report: a finished (or partial) audit.
        include_images: embed victim images and their reconstructions.

    Returns:
        The HTML text.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    esc = html.escape
    colour = {"leaks": "#b33", "no leakage found": "#272", "inconclusive": "#a70"}
    verdicts = "".join(
        f'<li><b style="color:{colour[v.verdict]}">{esc(v.verdict)}</b>: {esc(v.sentence)}</li>'
        for v in report.verdicts)
    base_rows = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in (
            f"(no attack) {b.name}", "-", "-", report.victims, f"{b.mse:.4f}", f"{b.psnr:.2f}",
            "-", f"{b.ssim:.3f}", "-", f"{b.balanced_accuracy:.1%}", "-", "-", "-", "-",
            "baseline")) + "</tr>"
        for b in report.baselines)
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in (
            r.attack, r.threat_model, r.observes, r.images, fmt_value(r.mse, ".4f"),
            fmt_value(r.psnr, ".2f"), fmt_value(r.baseline_psnr, ".2f"), fmt_value(r.ssim, ".3f"),
            f"{r.evidence.identified}/{r.evidence.images}" if r.evidence else "-",
            (f"{r.evidence.balanced_accuracy:.1%} [{r.evidence.balanced_low:.0%}, "
             f"{r.evidence.balanced_high:.0%}]" + (" flipped" if r.flipped else ""))
            if r.evidence and r.evidence.balanced_low is not None
            and r.evidence.balanced_accuracy is not None
            and r.evidence.balanced_high is not None else "-",
            fmt_value(r.label_recovery, ".0%"),
            f"{fmt_value(r.control.psnr, '.2f')} ({r.control.kind})" if r.control else "-",
            fmt_value(r.reduction_db, ".2f"), f"{r.seconds:.1f}",
            f"{r.verdict or r.status}" + (f": {r.reason}" if r.reason else "")
            + (f" [{r.status}: {r.error}]" if r.status != "ok" else ""))) + "</tr>"
        for r in report.results
    )
    scored = [r for r in report.results if r.psnr is not None]
    plot = ""
    if scored:
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(scored)))
        ax.barh([r.attack for r in scored], [r.psnr or 0.0 for r in scored],
                color=[colour.get(r.verdict or "", "#888") for r in scored])
        best_base = max((b.psnr for b in report.baselines), default=None)
        if best_base is not None:
            ax.axvline(best_base, color="k", ls="--", lw=1, label="best no-attack baseline")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlabel("PSNR of reconstructions (dB, higher = more leakage)")
        ax.invert_yaxis()
        plot = f'<img alt="leakage per attack" src="data:image/png;base64,{png_base64(fig)}">'
        plt.close(fig)
    gallery = ""
    if include_images:
        for name, (orig, rec) in report._images.items():
            n = min(8, len(orig))
            fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.6), squeeze=False)
            for i in range(n):
                for row, img in ((0, orig[i]), (1, rec[i])):
                    a = axes[row][i]
                    a.imshow(img.permute(1, 2, 0).squeeze(-1).cpu().numpy(), cmap="gray",
                             vmin=0, vmax=1)
                    a.axis("off")
            gallery += (f"<h3>{esc(name)}: originals (top), reconstructions (bottom)</h3>"
                        f'<img src="data:image/png;base64,{png_base64(fig)}">')
            plt.close(fig)
    status = "complete" if report.complete else "INCOMPLETE (cancelled)"
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>shieldsplit audit</title>
<style>body{{font-family:sans-serif;max-width:80em;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em}}</style>
</head><body><h1>shieldsplit audit ({esc(status)})</h1>
<h2>Verdicts</h2><ul>{verdicts}</ul>
<p>{esc(report.model)}; defence {esc(report.defense)}; cut {esc(str(report.cut))};
budget {esc(report.budget)}; seed {report.seed}; {esc(report.created)}</p>
<p>Clean accuracy {report.clean_accuracy:.1%} on {report.victims} victim images
(majority class {fmt_value(report.majority_rate, '.1%')}); {report.auxiliary} auxiliary images
granted to the attacker; reference classifier {fmt_value(report.reference_accuracy, '.1%')}
(balanced {fmt_value(report.reference_balanced_accuracy, '.1%')}).
Control: {esc(report.control or 'none')}.</p>
<table><tr><th>attack</th><th>threat model</th><th>observes</th><th>images</th><th>MSE</th>
<th>PSNR</th><th>no-attack PSNR</th><th>SSIM</th><th>line-up</th>
<th>balanced attacker accuracy [95% CI]</th><th>labels</th><th>control PSNR</th>
<th>reduction (dB)</th><th>seconds</th><th>verdict</th></tr>{base_rows}{rows}</table>
<p>Most leakage first: {esc(", ".join(report.ranking))}</p>{plot}{membership_html(report)}
{gallery}
<h2>Report (JSON)</h2><pre>{esc(report.model_dump_json(indent=2))}</pre></body></html>"""


__all__ = [
    "AttackResult",
    "AuditReport",
    "BaselineScore",
    "ControlResult",
    "PositionVerdict",
    "fmt_value",
    "membership_html",
    "render_html",
]
