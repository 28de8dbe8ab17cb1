"""The audit's report (pydantic, a stable JSON schema), its one-screen summary and its
HTML page: what :func:`shieldsplit.audit.audit` returns, kept apart from how it is
computed. The per-attack records and their reading in words are
:mod:`shieldsplit.audit.results` (re-exported here).
"""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from torch import Tensor

from shieldsplit._core.io import atomic_write_text
from shieldsplit.attacks.base import Budget
from shieldsplit.audit.membership import MembershipReport
from shieldsplit.audit.results import (
    COLOURS,
    MALICIOUS_WORDS,
    POSITION_WORDS,
    AttackResult,
    BaselineScore,
    ControlResult,
    KindLine,
    PositionVerdict,
    attack_tone,
    control_cells,
    fmt_value,
    headline,
    kind_lines,
    server_of,
    threat_words,
    verdict_results,
    verdict_words,
)
from shieldsplit.functional.verdict import Tolerance
from shieldsplit.plots import png_base64, roc_html

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the report
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
            (a reference for attacker accuracy, not a ceiling: reconstructions can
            score above it within their intervals).
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
        for v in self.verdicts:
            lines.append(f"- [{v.verdict}] {v.sentence}")
            lines += [f"    {k.kind + ':':29s} {k.status:12s} {k.text}"
                      for k in kind_lines(v, self.results, self.membership)]
        if not self.verdicts:
            lines.append("- (none)")
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
            f"{'bal.acc [95% CI]':>19s} {'labels':>6s} {'control':>9s} {'reduct':>6s} "
            f"{'sec':>6s}  verdict",
        ]
        for b in self.baselines:
            lines.append(
                f"{'(no attack) ' + b.name:27s} {b.mse:7.4f} {b.psnr:6.2f} {'':>5s} "
                f"{b.ssim:6.3f} {'':>7s} {b.balanced_accuracy:>19.1%} {'':>6s} {'':>9s} "
                f"{'':>6s} {'':>6s}  baseline")
        order = {name: i for i, name in enumerate(self.ranking)}
        for r in sorted(self.results, key=lambda r: order.get(r.attack, len(order))):
            e = r.evidence
            ident = f"{e.identified}/{e.images}" if e is not None else "-"
            bal = (f"{e.balanced_accuracy:.0%} [{e.balanced_low:.0%},{e.balanced_high:.0%}]"
                   if e is not None and e.balanced_accuracy is not None
                   and e.balanced_low is not None and e.balanced_high is not None else "-")
            if r.flipped:
                bal += "!"
            ctrl, reduction = control_cells(r, self.defense)
            lines.append(
                f"{r.attack:27s} {fmt_value(r.mse, '7.4f')} {fmt_value(r.psnr, '6.2f')} "
                f"{fmt_value(r.baseline_psnr, '5.1f')} {fmt_value(r.ssim, '6.3f')} {ident:>7s} "
                f"{bal:>19s} {fmt_value(r.label_recovery, '6.0%')} {ctrl:>9s} {reduction:>6s} "
                f"{r.seconds:6.1f}  {verdict_words(r)}"
                + ("" if r.status == "ok" else f" [{r.status}{': ' + r.error if r.error else ''}]")
            )
        lines.append("base: PSNR of the best no-attack guess for the same victims; ident: "
                     "victims picked out of a line-up by their reconstruction; control: PSNR "
                     "of the same attack on the positive control (not run: an attack that "
                     "leaks needs none); reduct: the control's PSNR minus the attack's, what "
                     "the defence buys (n/a: no defence); ! = below chance (flipped, not "
                     "protection)")
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


# --------------------------------------------------------------------------- HTML
CSS = """
body{margin:0;padding:0 1.5em;background:#f3f3f1;color:#222;
 font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{box-sizing:border-box;max-width:84em;margin:2em auto;padding:1.5em 2.5em 2.5em;background:#fff;
 box-shadow:0 1px 4px #0002;border-radius:6px}
h1{margin:.2em 0 .8em;font-size:1.6em}h1 small{font-weight:normal;color:#666;font-size:.6em}
h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.verdict{border-left:.5em solid #666;background:#fafafa;margin:1em 0;padding:.6em 1em}
.verdict h3{margin:.1em 0 .4em}.verdict p{margin:.4em 0;color:#444;font-size:.92em}
ul.kinds{list-style:none;padding:0;margin:.3em 0}
ul.kinds li{padding:.15em 0 .15em 1.4em;position:relative}
ul.kinds li:before{content:"";position:absolute;left:.2em;top:.55em;width:.7em;height:.7em;
 border-radius:50%;background:var(--c)}
ul.kinds .k{display:inline-block;min-width:15em;font-weight:600}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.88em}
td,th{border:1px solid #ddd;padding:.3em .5em;vertical-align:top;text-align:left}
th{background:#f0f0ee}td.n{text-align:right;white-space:nowrap}tr.base td{color:#555}
td:first-child{white-space:nowrap}
tr.why td{color:#555;font-size:.92em;border-top:none;padding-left:1.5em;white-space:normal}
.note{color:#555;font-size:.9em}
img{max-width:100%;height:auto}
"""


def membership_html(report: AuditReport) -> str:
    """The membership section: the summary and the ROC curves (log-log); nothing when
    membership inference did not run (the verdicts say why)."""
    m = report.membership
    if m is None:
        return ""
    return (f'<section id="membership"><h2>Membership inference</h2>'
            f"<pre>{html.escape(m.summary())}</pre>"
            + roc_html(m.curves(), title="membership inference") + "</section>")


def verdicts_html(report: AuditReport) -> str:
    """The verdicts section: per position and threat model, a headline coloured by the
    kind of leak and one line per kind of evidence, then the verdict's sentence."""
    esc = html.escape
    cards = []
    for v in report.verdicts:
        lines = kind_lines(v, report.results, report.membership)
        head, tone = headline(v, lines)
        who = (MALICIOUS_WORDS if v.server == "malicious" else POSITION_WORDS).get(
            v.position, "Anyone who can query the model's scores")
        kinds = "".join(
            f'<li style="--c:{COLOURS[k.tone]}" data-kind="{esc(k.kind)}" '
            f'data-status="{k.status}"><span class="k">{esc(k.kind)}</span> '
            f'<b style="color:{COLOURS[k.tone]}">{esc(k.status)}</b>: {esc(k.text)}</li>'
            for k in lines)
        cards.append(
            f'<div class="verdict" data-verdict="{esc(v.verdict)}" data-tone="{tone}" '
            f'style="border-left-color:{COLOURS[tone]}"><h3>{esc(who)}: '
            f'<span style="color:{COLOURS[tone]}">{esc(head)}</span></h3>'
            f'<ul class="kinds">{kinds}</ul><p>{esc(v.sentence)}</p></div>')
    note = f'<p class="note">{esc(report.membership_note)}</p>' if report.membership_note else ""
    return (f'<section id="verdicts"><h2>Verdicts</h2>{"".join(cards) or "<p>(none)</p>"}'
            f"{note}</section>")


def table_html(report: AuditReport) -> str:
    """The attacks table: each attack's score beside its control's, the reduction, the
    threat model in words and the verdict with its kind of leak."""
    esc = html.escape

    def row(cells: list[str], cls: str = "") -> str:
        return f"<tr{cls}>" + "".join(cells) + "</tr>"

    def td(v: object, num: bool = False) -> str:
        return f'<td class="n">{esc(str(v))}</td>' if num else f"<td>{esc(str(v))}</td>"

    rows = [row([td(f"(no attack) {b.name}"), td("-"), td("-"), td(report.victims, True),
                 td(f"{b.psnr:.2f}", True), td("-", True), td("-", True), td("-", True),
                 td(f"{b.mse:.4f}", True), td(f"{b.ssim:.3f}", True), td("-", True),
                 td(f"{b.balanced_accuracy:.1%}", True), td("-", True), td("-", True),
                 td("baseline")], ' class="base"') for b in report.baselines]
    for r in report.results:
        e = r.evidence
        control, reduction = control_cells(r, report.defense)
        if r.control is not None:
            control += f" ({r.control.kind})"
        bal = (f"{e.balanced_accuracy:.1%} [{e.balanced_low:.0%}, {e.balanced_high:.0%}]"
               + (" flipped" if r.flipped else "")
               if e is not None and e.balanced_accuracy is not None
               and e.balanced_low is not None and e.balanced_high is not None else "-")
        words = verdict_words(r)
        tone = attack_tone(r)
        verdict = (f'<td><b style="color:{COLOURS[tone]}">{esc(words)}</b>'
                   + (f"<br>[{esc(r.status)}: {esc(r.error or '')}]" if r.status != "ok"
                      else "") + "</td>")
        rows.append(row([
            td(r.attack), td(threat_words(r)), td(r.observes), td(r.images, True),
            td(fmt_value(r.psnr, ".2f").strip(), True), td(control, True),
            td(reduction, True), td(fmt_value(r.baseline_psnr, ".2f").strip(), True),
            td(fmt_value(r.mse, ".4f").strip(), True), td(fmt_value(r.ssim, ".3f").strip(), True),
            td(f"{e.identified}/{e.images}" if e else "-", True), td(bal, True),
            td(fmt_value(r.label_recovery, ".0%").strip(), True), td(f"{r.seconds:.1f}", True),
            verdict]))
        if r.reason:
            rows.append(f'<tr class="why"><td colspan="15">{esc(r.attack)}: '
                        f"{esc(r.reason)}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in (
        "attack", "threat model", "observes", "images", "PSNR (dB)", "control PSNR (dB)",
        "reduction (dB)", "no-attack PSNR (dB)", "MSE", "SSIM", "line-up",
        "balanced attacker accuracy [95% CI]", "labels", "seconds", "verdict"))
    return (f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>'
            '<p class="note">control PSNR: the same attack on the positive control ('
            f"{esc(report.control or 'none')}); not run: an attack that leaks needs no "
            "control. Reduction: the control's PSNR minus the attack's, what the defence "
            "buys (n/a: the audited model has no defence). Line-up: victims picked out of a "
            f"line-up by their reconstruction. Most leakage first: "
            f"{esc(', '.join(report.ranking))}.</p>")


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
    from matplotlib.patches import Patch

    esc = html.escape
    scored = [r for r in report.results if r.psnr is not None]
    plot = ""
    if scored:
        fig, ax = plt.subplots(figsize=(6.5, 0.9 + 0.4 * len(scored)))
        tones = [attack_tone(r) for r in scored]
        ax.barh([r.attack for r in scored], [r.psnr or 0.0 for r in scored],
                color=[COLOURS[t] for t in tones])
        handles: list[Any] = [Patch(color=COLOURS[t], label=label) for t, label in (
            ("images", "leaks images"), ("labels", "leaks labels or class only"),
            ("inconclusive", "inconclusive"), ("no leakage found", "no leakage found"))
            if t in tones or (t == "labels" and "class" in tones)]
        best_base = max((b.psnr for b in report.baselines), default=None)
        if best_base is not None:
            handles.append(ax.axvline(best_base, color="k", ls="--", lw=1,
                                      label="best no-attack baseline"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
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
                        f'<img class="grid" alt="{esc(name)} reconstructions" '
                        f'src="data:image/png;base64,{png_base64(fig)}">')
            plt.close(fig)
        gallery = f'<section id="images"><h2>Reconstructions</h2>{gallery}</section>'
    status = "complete" if report.complete else "INCOMPLETE (cancelled)"
    data = base64.b64encode(report.model_dump_json(indent=2).encode()).decode("ascii")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>shieldsplit audit: {esc(report.model)}</title><style>{CSS}</style></head>
<body><main><h1>shieldsplit audit <small>{esc(status)}</small></h1>
{verdicts_html(report)}
<section id="setting"><h2>What was audited</h2>
<p>{esc(report.model)}; defence {esc(report.defense)}; cut {esc(str(report.cut))};
budget {esc(report.budget)}; seed {report.seed}; {esc(report.created)}.</p>
<p>Clean accuracy {report.clean_accuracy:.1%} on {report.victims} victim images
(majority class {fmt_value(report.majority_rate, '.1%').strip()}); {report.auxiliary}
auxiliary images granted to the attacker; reference classifier
{fmt_value(report.reference_accuracy, '.1%').strip()} (balanced
{fmt_value(report.reference_balanced_accuracy, '.1%').strip()}).
Control: {esc(report.control or 'none')}.</p></section>
<section id="attacks"><h2>Attacks</h2>{table_html(report)}{plot}</section>
{membership_html(report)}{gallery}
<section id="data"><h2>Report data</h2><p><a id="json" download="shieldsplit-audit.json"
href="data:application/json;base64,{data}">Download the full report as JSON</a>
(schema version {report.schema_version}: every number above, the evidence behind each
verdict, versions and machine).</p></section>
</main></body></html>"""


__all__ = [
    "COLOURS",
    "MALICIOUS_WORDS",
    "POSITION_WORDS",
    "AttackResult",
    "AuditReport",
    "BaselineScore",
    "ControlResult",
    "KindLine",
    "PositionVerdict",
    "attack_tone",
    "control_cells",
    "fmt_value",
    "headline",
    "kind_lines",
    "membership_html",
    "render_html",
    "server_of",
    "table_html",
    "threat_words",
    "verdict_results",
    "verdict_words",
    "verdicts_html",
]
