"""The audit's per-attack records (pydantic, part of the report's stable JSON schema) and
how a page reads them in words: the threat model, the kind of leak, one line per kind of
evidence at a position, the control beside the target.

:mod:`shieldsplit.audit.report` holds the report that gathers them and renders it.

Example:
    >>> from shieldsplit.functional.verdict import Evidence
    >>> r = AttackResult(attack="idlg", threat_model="federated", observes="gradient",
    ...                  images=8, seconds=0.0, verdict="leaks",
    ...                  evidence=Evidence(images=8, label_low=0.6, majority=0.3))
    >>> verdict_words(r), attack_tone(r)
    ('leaks labels only (no image leak)', 'labels')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shieldsplit.attacks.base import attack_class, available_attacks
from shieldsplit.audit.membership import MembershipReport
from shieldsplit.functional.verdict import Evidence, VerdictLabel


# --------------------------------------------------------------------------- records
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


def fmt_value(value: float | None, spec: str) -> str:
    width = int(spec.split(".")[0]) if spec[0].isdigit() else 6
    return format(value, spec) if value is not None else "-".rjust(width)


# --------------------------------------------------------------------------- in words
#: Who holds each attacker position, as a verdict names them.
POSITION_WORDS: dict[str, str] = {
    "split": "A split-learning server", "federated": "A federated-learning server",
}
#: The same positions held by a server that changes what it sends.
MALICIOUS_WORDS: dict[str, str] = {
    "split": "A malicious split-learning server (it steers the client's training)",
    "federated": "A malicious federated-learning server (it modifies the model it sends)",
}
#: The page's colours: an image leak (rebuilt or re-identified images, and membership),
#: a leak of what an image shows without the image (class, labels), and the other verdicts.
COLOURS: dict[str, str] = {
    "images": "#b3261e", "membership": "#b3261e", "class": "#6f3fa0", "labels": "#6f3fa0",
    "no leakage found": "#2e7d32", "inconclusive": "#9a6200", "none": "#666",
}


def server_of(result: AttackResult) -> str:
    """The threat model's server of a result: recorded, or else the registered attack's
    declaration (``honest`` for an attack no longer registered).

    Example:
        >>> r = AttackResult(attack="dlg", threat_model="federated", observes="gradient",
        ...                  images=1, seconds=0.0)
        >>> server_of(r)
        'honest'
    """
    if result.server is not None:
        return result.server
    return attack_class(result.attack).server if result.attack in available_attacks() \
        else "honest"


def threat_words(result: AttackResult) -> str:
    """The attacker a result assumes, in words (the registered attack's declaration; the
    stored id for an attack no longer registered).

    Example:
        >>> r = AttackResult(attack="split-black-box", threat_model="split_black_box",
        ...                  observes="activations", images=1, seconds=0.0)
        >>> threat_words(r)
        'split-learning server, honest (auxiliary data)'
        >>> threat_words(r.model_copy(update={"attack": "retired"}))
        'split_black_box'
    """
    if result.attack in available_attacks():
        return attack_class(result.attack).threat_words()
    return result.threat_model


def verdict_words(result: AttackResult) -> str:
    """One attack's verdict with the kind of leak: a leak of labels or of the class says
    it rebuilt no image.

    Example:
        >>> from shieldsplit.functional.verdict import Evidence
        >>> r = AttackResult(attack="idlg", threat_model="federated", observes="gradient",
        ...                  images=8, seconds=0.0, verdict="leaks",
        ...                  evidence=Evidence(images=8, label_low=0.6, majority=0.3))
        >>> verdict_words(r)
        'leaks labels only (no image leak)'
    """
    if result.verdict != "leaks" or result.evidence is None:
        return result.verdict or result.status
    e = result.evidence
    if e.image_leak:
        return "leaks images"
    shown = [w for w, hit in (("the class", e.class_leak), ("labels", e.label_leak)) if hit]
    return f"leaks {' and '.join(shown) or 'something'} only (no image leak)"


class KindLine(BaseModel):
    """One kind of leakage at one attacker position, with the strongest attack's numbers.

    Attributes:
        kind: ``images (PSNR gain)``, ``re-identification (line-up)``, ``class``,
            ``labels`` or ``membership``.
        status: ``leaks`` (the evidence of that kind holds), ``not shown`` or ``not
            measured`` (no attack at the position measures it).
        text: the attack and its numbers, in words.
    """

    model_config = ConfigDict(extra="forbid")

    kind: str
    status: Literal["leaks", "not shown", "not measured"]
    text: str

    @property
    def tone(self) -> str:
        """The key of :data:`COLOURS`: the kind's when it leaks, else ``none``."""
        if self.status != "leaks":
            return "none"
        return self.kind if self.kind in ("class", "labels", "membership") else "images"


def verdict_results(results: Sequence[AttackResult],
                    verdict: PositionVerdict) -> list[AttackResult]:
    """The attack results among ``results`` that a position verdict combines.

    Example:
        >>> r = AttackResult(attack="idlg", threat_model="federated", observes="gradient",
        ...                  position="federated", images=1, seconds=0.0)
        >>> v = PositionVerdict(position="split", verdict="leaks", sentence="", attacks=["idlg"])
        >>> verdict_results([r], v)
        []
    """
    return [r for r in results if r.attack in verdict.attacks
            and r.position == verdict.position and r.status != "n/a"
            and server_of(r) == verdict.server]


Pair = tuple[AttackResult, Evidence]


def _kind_line(kind: str, pairs: list[Pair], *, measured: Callable[[Evidence], bool],
               shown: Callable[[Evidence], bool], key: Callable[[AttackResult, Evidence], float],
               words: Callable[[AttackResult, Evidence], str], missing: str) -> KindLine:
    """The strongest attack on one kind of evidence (a leak first, then by ``key``)."""
    candidates = [(r, e) for r, e in pairs if measured(e)]
    if not candidates:
        return KindLine(kind=kind, status="not measured", text=missing)
    r, e = max(candidates, key=lambda p: (shown(p[1]), key(p[0], p[1])))
    return KindLine(kind=kind, status="leaks" if shown(e) else "not shown",
                    text=f"{r.attack}: {words(r, e)}")


def _pc(x: float | None) -> str:
    return fmt_value(x, ".0%").strip()


def kind_lines(verdict: PositionVerdict, results: Sequence[AttackResult],
               membership: MembershipReport | None = None) -> list[KindLine]:
    """One line per kind of leakage for a position verdict: images (PSNR gain),
    re-identification (line-up), class and labels; membership for the membership verdict.

    Args:
        verdict: one of an audit's verdicts.
        results: the audit's attack results.
        membership: its membership report, for the membership verdict.

    Returns:
        The lines (none for a membership verdict without its report).

    Example:
        >>> from shieldsplit.functional.verdict import Evidence
        >>> r = AttackResult(attack="idlg", threat_model="federated", observes="gradient",
        ...                  position="federated", images=8, seconds=0.0, verdict="leaks",
        ...                  evidence=Evidence(images=8, label_recovery=1.0, label_low=0.6,
        ...                                    majority=0.3))
        >>> v = PositionVerdict(position="federated", verdict="leaks", sentence="",
        ...                     attacks=["idlg"])
        >>> [(k.kind, k.status) for k in kind_lines(v, [r])][-1]
        ('labels', 'leaks')
    """
    if verdict.position == "membership":
        m = membership
        if m is None:
            return []
        b = m.best()
        return [KindLine(kind="membership", status="leaks" if m.verdict == "leaks" else
                         "not shown",
                         text=f"{b.attack}: AUC {b.auc:.2f} [{b.auc_low:.2f}, {b.auc_high:.2f}] "
                              f"(chance 0.50) over {m.members} members and {m.nonmembers} "
                              "non-members")]
    pairs = [(r, r.evidence) for r in verdict_results(results, verdict)
             if r.status == "ok" and r.evidence is not None]
    none = "no attack at this position finished"

    def image_words(r: AttackResult, e: Evidence) -> str:
        if r.psnr is None or r.baseline_psnr is None:
            return e.gain_words()
        return (f"PSNR {r.psnr:.1f} dB against the no-attack baseline {r.baseline_psnr:.1f} "
                f"dB ({e.gain_words()})")

    def class_words(r: AttackResult, e: Evidence) -> str:
        return (f"balanced accuracy {_pc(e.balanced_accuracy)} [{_pc(e.balanced_low)}, "
                f"{_pc(e.balanced_high)}] on the reconstructions, chance {_pc(e.chance)}"
                + (" (flipped: the class is there, inverted)" if e.flipped else ""))

    def label_words(r: AttackResult, e: Evidence) -> str:
        return (f"{_pc(e.label_recovery)} of {e.images} labels recovered (lower bound "
                f"{_pc(e.label_low)}, majority class {_pc(e.majority)})")

    return [
        _kind_line("images (PSNR gain)", pairs, measured=lambda e: e.gain_db is not None,
                   shown=lambda e: e.rebuilt,
                   key=lambda r, e: e.gain_low if e.gain_low is not None else e.gain_db or 0.0,
                   words=image_words, missing=none),
        _kind_line("re-identification (line-up)", pairs,
                   measured=lambda e: e.images > 0 and e.identified_low is not None,
                   shown=lambda e: e.reidentified, key=lambda r, e: e.identified / e.images,
                   words=lambda r, e: e.lineup_words(), missing=none),
        _kind_line("class", pairs,
                   measured=lambda e: e.balanced_low is not None and e.chance is not None,
                   shown=lambda e: e.class_leak, key=lambda r, e: e.balanced_low or 0.0,
                   words=class_words, missing=none),
        _kind_line("labels", pairs,
                   measured=lambda e: e.label_low is not None and e.majority is not None,
                   shown=lambda e: e.label_leak, key=lambda r, e: e.label_low or 0.0,
                   words=label_words, missing="no attack at this position infers labels"),
    ]


def headline(verdict: PositionVerdict, lines: list[KindLine]) -> tuple[str, str]:
    """A position verdict's headline and its colour key: which kind of leak it is (an
    image leak, or only the class or labels).

    Example:
        >>> v = PositionVerdict(position="split", verdict="leaks", sentence="", attacks=[])
        >>> headline(v, [KindLine(kind="labels", status="leaks", text="")])
        ('leaks labels only (no image leak shown)', 'labels')
        >>> headline(v, [KindLine(kind="re-identification (line-up)", status="leaks", text="")])
        ('leaks images (re-identified)', 'images')
    """
    if verdict.verdict != "leaks":
        return verdict.verdict, verdict.verdict
    shown = {k.kind.split(" ")[0] for k in lines if k.status == "leaks"}
    if "membership" in shown:
        return "leaks membership (tells training images from others)", "membership"
    how = [w for kind, w in (("images", "rebuilt"), ("re-identification", "re-identified"))
           if kind in shown]
    if how:
        return f"leaks images ({' and '.join(how)})", "images"
    rest = [kind for kind in ("class", "labels") if kind in shown]
    return (f"leaks {' and '.join(rest)} only (no image leak shown)" if rest else "leaks",
            rest[-1] if rest else "images")


def control_cells(result: AttackResult, defense: str) -> tuple[str, str]:
    """A result's control PSNR and the reduction the defence bought, as table cells.

    A plain model has no defence (its calibration control vouches only for the attack:
    the reduction is ``n/a``); an attack that leaks needs no control (``not run``).

    Example:
        >>> r = AttackResult(attack="a", threat_model="t", observes="activations",
        ...                  images=8, seconds=0.0, verdict="leaks")
        >>> control_cells(r, "none")
        ('not run', 'n/a')
    """
    c = result.control
    if c is None:
        control = "not run" if result.verdict == "leaks" else "-"
    else:
        control = f"{c.psnr:.2f}" if c.psnr is not None else c.status
    if result.reduction_db is not None:
        reduction = f"{result.reduction_db:.2f}"
    else:
        reduction = "n/a" if defense == "none" else "-"
    return control, reduction


def attack_tone(result: AttackResult) -> str:
    """The colour key of one attack: its kind of leak, or its verdict.

    Example:
        >>> attack_tone(AttackResult(attack="a", threat_model="t", observes="x", images=1,
        ...                          seconds=0.0, verdict="inconclusive"))
        'inconclusive'
    """
    e = result.evidence
    if result.verdict == "leaks" and e is not None and not e.image_leak:
        return "labels" if e.label_leak else "class"
    if result.verdict == "leaks":
        return "images"
    return result.verdict or "none"


__all__ = [
    "COLOURS",
    "MALICIOUS_WORDS",
    "POSITION_WORDS",
    "AttackResult",
    "BaselineScore",
    "ControlResult",
    "KindLine",
    "PositionVerdict",
    "attack_tone",
    "control_cells",
    "fmt_value",
    "headline",
    "kind_lines",
    "server_of",
    "threat_words",
    "verdict_results",
    "verdict_words",
]
