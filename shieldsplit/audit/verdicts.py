"""An audit's verdicts in words, decided from stored evidence.

The decision rule itself is pure maths (:mod:`shieldsplit.functional.verdict`); this module
applies it to an audit's results (each attack against its control), checks that every
attack that adapts to the audited defence ran, and words one verdict per attacker
position and for membership. The auditor calls :func:`decide_report` once its attacks and
controls ran; a results page calls it (or :func:`decide_results`) on a stored record, so a
page always reads the current rule.

Example:
    >>> unrun_adaptive([], "pgsl", "split")
    ['adaptive-split']
"""

from __future__ import annotations

from collections.abc import Sequence

from shieldsplit.attacks.base import attack_class, available_attacks
from shieldsplit.audit.budgets import FEDAVG
from shieldsplit.audit.membership import MembershipReport, decide_membership_report
from shieldsplit.audit.report import AuditReport
from shieldsplit.audit.results import (
    MALICIOUS_WORDS,
    POSITION_WORDS,
    AttackResult,
    PositionVerdict,
    server_of,
)
from shieldsplit.functional.verdict import (
    DEFAULT_TOLERANCE,
    Decision,
    Evidence,
    Tolerance,
    decide,
    position_verdict,
)


def decide_report(report: AuditReport) -> None:
    """Apply the decision rule to every attack of ``report`` from its stored evidence, then
    combine per attacker position (replacing those verdicts and membership's).

    The one place verdicts are made: the audit calls it, and a results page re-decides a
    stored report with it, so a page always reads the current rule.

    Args:
        report: an audit report (its ``tolerance`` is the rule's).
    """
    report.verdicts = decide_results(report.results, defense=report.defense,
                                     tolerance=report.tolerance)
    if report.membership is not None:
        decide_membership_report(report.membership, report.tolerance)
        report.verdicts.append(membership_verdict(report.membership))


def decide_results(results: Sequence[AttackResult], *, defense: str,
                   tolerance: Tolerance = DEFAULT_TOLERANCE) -> list[PositionVerdict]:
    """Decide every attack of one audited model from its stored evidence (verdict, reason
    and the control's reduction are written into ``results``), and word one verdict per
    attacker position.

    Args:
        results: the attacks' results, each with its control where one ran.
        defense: the audited model's defence (``none`` for a plain model): the attacks
            that declare they adapt to it must have run for a *no leakage found*.
        tolerance: the rule's tolerance.

    Returns:
        The position verdicts (split, then federated, where attacks ran).
    """
    for r in results:
        # an update's reconstructions are paired among its batch (records made before
        # that was kept get the auditor's FedAvg batch)
        k = int(FEDAVG["local_batch_size"]) if r.observes == "update" else None
        if r.evidence is not None:
            r.evidence = r.evidence.completed(matched_among=k)
        if r.control is not None and r.control.evidence is not None:
            r.control.evidence = r.control.evidence.completed(matched_among=k)
        target = r.evidence if r.evidence is not None else Evidence(status=r.status)
        control = None
        if r.control is not None:
            control = r.control.evidence or Evidence(status=r.control.status)
            if r.control.psnr is not None and r.psnr is not None and r.control.kind in (
                    "undefended twin", "your control"):
                r.reduction_db = r.control.psnr - r.psnr
        d = decide(target, control, tolerance=tolerance,
                   control_name=r.control.description if r.control is not None else "the control")
        r.verdict, r.reason = d.verdict, d.reason
    out = []
    for server in ("honest", "malicious"):  # one verdict per position and threat model
        for position in POSITION_WORDS:
            rs = [r for r in results if r.position == position and r.status != "n/a"
                  and server_of(r) == server]
            if rs:
                missing = unrun_adaptive(results, defense, position) \
                    if server == "honest" else []
                out.append(_position_sentence(position, rs, missing, server=server))
    return out


def unrun_adaptive(results: Sequence[AttackResult], defense: str, position: str) -> list[str]:
    """The attacks that declare they adapt to ``defense``, at ``position``, and did not
    finish among ``results`` (a *no leakage found* needs them all).

    Args:
        results: an audit's results.
        defense: the audited defence's name.
        position: ``split`` or ``federated``.

    Returns:
        Attack names, from the registry's declarations.

    Example:
        >>> unrun_adaptive([], "pgsl", "split"), unrun_adaptive([], "laplace", "split")
        (['adaptive-split'], [])
    """
    done = {r.attack for r in results if r.status == "ok"}
    return [a for a in available_attacks("reconstruction")
            if defense in attack_class(a, "reconstruction").adapts_to
            and attack_class(a, "reconstruction").position() == position and a not in done]


def _image_words(r: AttackResult, e: Evidence) -> str:
    """Both kinds of image evidence, numbers and line-up count included."""
    paired = (f", each paired among its batch of {e.matched_among} first"
              if e.matched_among > 1 else "")
    return (f"{e.identified} of {e.images} victims picked out of a line-up of "
            f"{e.lineup_images or '?'} images{paired} (95% CI "
            f"{(e.identified_low or 0):.1%}-{(e.identified_high or 0):.1%}, chance "
            f"{(e.lineup_chance or 0):.1%}); PSNR {r.psnr or 0:.1f} dB against the no-attack "
            f"baseline {r.baseline_psnr or 0:.1f} dB ({e.gain_words()})")


def _position_sentence(position: str, rs: list[AttackResult],
                       missing: Sequence[str] = (), *, server: str = "honest",
                       ) -> PositionVerdict:
    who = (MALICIOUS_WORDS if server == "malicious" else POSITION_WORDS)[position]
    verdict = position_verdict([Decision(verdict=r.verdict or "inconclusive", reason="")
                                for r in rs])
    names = [r.attack for r in rs]
    if verdict == "no leakage found" and missing:
        verdict = "inconclusive"
    if verdict == "leaks":
        leaking = [(r, r.evidence) for r in rs if r.verdict == "leaks" and r.evidence is not None]
        images = [(r, e) for r, e in leaking if e.image_leak]
        if images:
            best, e = max(images, key=lambda pair: (pair[1].identified, pair[0].psnr or 0.0))
            kinds = " and ".join(k for k, hit in (("re-identifies patients", e.reidentified),
                                                  ("rebuilds images", e.rebuilt)) if hit)
            text = f"{who} {kinds} with {best.attack}: {_image_words(best, e)}"
        else:
            best, e = max(leaking, key=lambda pair: pair[0].balanced_accuracy or 0.0)
            if e.class_leak:
                text = (f"{who} can read the class off its reconstructions: balanced "
                        f"accuracy {e.balanced_accuracy:.0%} [{e.balanced_low:.0%}, "
                        f"{e.balanced_high:.0%}] with {best.attack} (chance {e.chance:.0%}); "
                        f"no image leak shown: {_image_words(best, e)}")
            else:
                text = (f"{who} can read each victim's label: {best.label_recovery:.0%} "
                        f"of {e.images} with {best.attack} (majority class {e.majority:.0%}); "
                        f"no image leak shown: {_image_words(best, e)}")
    elif verdict == "no leakage found":
        text = f"{who}: no leakage found at this strength (" + "; ".join(
            f"{r.attack}: {r.reason}" for r in rs) + ")"
    else:
        why = [f"{r.attack}: {r.reason}" for r in rs if r.verdict == "inconclusive"]
        if missing:
            why.append(f"{', '.join(missing)} declare(s) they adapt to this defence and did "
                       "not run: without them no leakage cannot be shown")
        text = f"{who}: inconclusive ({'; '.join(why)})"
    return PositionVerdict(position=position, verdict=verdict, sentence=text, attacks=names,
                           server=server)


def membership_verdict(m: MembershipReport) -> PositionVerdict:
    """The membership verdict in words, from a decided membership report.

    Args:
        m: the membership report.

    Returns:
        The position verdict ``membership``.
    """
    best = m.best()
    tprs = ", ".join(f"TPR {v:.1%} at {k} FPR" for k, v in best.tpr.items() if v is not None)
    can = "can" if m.verdict == "leaks" else "cannot, at this strength,"
    text = (f"Anyone who can query the model's scores {can} "
            f"tell its training images from others: {best.attack} AUC {best.auc:.2f} "
            f"[{best.auc_low:.2f}, {best.auc_high:.2f}], "
            + (tprs or "TPR at 1% FPR not resolvable")
            + f" ({m.members} members, {m.nonmembers} non-members)")
    if m.verdict == "inconclusive":
        text = f"Membership inference: inconclusive ({m.reason})"
    elif m.verdict == "no leakage found":
        text += f"; {best.reason}"
    if m.one_class and m.verdict != "inconclusive":
        text += ("; the model predicts one class for every audited image: it has learned "
                 "nothing to leak, which is not protection")
    return PositionVerdict(position="membership", verdict=m.verdict, sentence=text,
                           attacks=[r.attack for r in m.results])


__all__ = [
    "MALICIOUS_WORDS",
    "POSITION_WORDS",
    "decide_report",
    "decide_results",
    "membership_verdict",
    "server_of",
    "unrun_adaptive",
]
