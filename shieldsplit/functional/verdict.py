"""The auditor's decision rule: *leaks*, *no leakage found at this strength* or *inconclusive*.

An attack that fails proves nothing by itself: it may be too weak, or given too small
a budget. So the rule says "no leakage found" only when the *same* attack, at the *same*
budget, leaked on a control known to leak (a defended model's undefended twin; for a
plain model, a calibration setting where leakage is certain). The rule is stated in
``docs/audit.md`` and each branch has a unit test (``tests/test_verdict.py``).

Evidence of leakage, per attack (:class:`Evidence`, built by :func:`evidence`):

- **images**: the 95% bootstrap lower bound of the mean per-image PSNR gain over the
  best no-attack baseline (per victim, the better of the mean auxiliary image and the
  auxiliary image nearest to the victim) is above 0 dB, *and* the Wilson lower bound of
  the share of victims the reconstruction picks out of a line-up (the victim and every
  auxiliary image, nearest by MSE) is above the line-up's chance rate;
- **class**: the 95% bootstrap lower bound of the reference classifier's balanced
  accuracy on the reconstructions is above chance (1 / classes present);
- **labels**: for attacks that infer labels, the Wilson lower bound of the label
  recovery rate is above the majority-class rate (what always guessing the most common
  diagnosis scores).

An attack *leaks* if any of the three holds. A balanced accuracy whose upper bound is
below chance, with at least two classes predicted, is *flipped*: the reconstructions
carry the class, inverted; that is never counted as protection. (A constant prediction
carries no class at all; it scores chance, or 0 when the class it names is absent.)

:func:`decide` (per attack):

1. the attack did not finish (failed, cancelled) → inconclusive;
2. it leaks → **leaks**;
3. its reconstructions are flipped → inconclusive;
4. no control was run → inconclusive;
5. the control did not leak *images* → inconclusive (the attack is too weak at this
   budget to show that it can rebuild images; a control that leaks only labels or the
   class does not vouch for the images);
6. otherwise → **no leakage found at this strength**.

:func:`position_verdict` (per attacker position, over its attacks): **leaks** if any
attack leaks; **no leakage found** only if every attack that ran says so; else
inconclusive.

Example:
    >>> import torch
    >>> strong = evidence(rec_psnr=torch.full((32,), 30.0), baseline_psnr=torch.full((32,), 15.0),
    ...                   identified=torch.ones(32, dtype=torch.bool), lineup_size=100,
    ...                   predicted=torch.arange(32) % 2, true=torch.arange(32) % 2, seed=0)
    >>> weak = evidence(rec_psnr=torch.full((32,), 10.0), baseline_psnr=torch.full((32,), 15.0),
    ...                 identified=torch.zeros(32, dtype=torch.bool), lineup_size=100,
    ...                 predicted=torch.zeros(32, dtype=torch.long), true=torch.arange(32) % 2,
    ...                 seed=0)
    >>> decide(strong, None).verdict, decide(weak, strong).verdict, decide(weak, weak).verdict
    ('leaks', 'no leakage found', 'inconclusive')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from shieldsplit.errors import InputShapeError
from shieldsplit.functional.stats import (
    balanced_accuracy,
    balanced_accuracy_interval,
    bootstrap_interval,
    majority_rate,
    wilson_interval,
)

VerdictLabel = Literal["leaks", "no leakage found", "inconclusive"]
Status = Literal["ok", "cancelled", "failed", "n/a"]


class Evidence(BaseModel):
    """What one attack showed, reduced to the numbers the decision rule reads.

    Attributes:
        status: ``ok`` when the attack finished.
        images: victims rebuilt.
        gain_db: mean per-image PSNR gain over the best no-attack baseline (dB).
        gain_low: its 95% bootstrap lower bound.
        identified: victims picked out of the line-up by their reconstruction.
        identified_low: Wilson lower bound of that share.
        lineup_chance: the chance rate of the line-up, ``1 / (auxiliary + 1)``.
        balanced_accuracy: the reference classifier's balanced accuracy on the reconstructions.
        balanced_low: its 95% bootstrap lower bound.
        balanced_high: its 95% bootstrap upper bound.
        chance: ``1 / classes present`` among the victims.
        label_recovery: labels inferred correctly (attacks that infer labels), else None.
        label_low: Wilson lower bound of that rate.
        majority: the victims' majority-class rate.
        predicted_classes: distinct labels the reference classifier gave the reconstructions.
    """

    model_config = ConfigDict(extra="forbid")

    status: Status = "ok"
    images: int = 0
    gain_db: float | None = None
    gain_low: float | None = None
    identified: int = 0
    identified_low: float | None = None
    lineup_chance: float | None = None
    balanced_accuracy: float | None = None
    balanced_low: float | None = None
    balanced_high: float | None = None
    chance: float | None = None
    label_recovery: float | None = None
    label_low: float | None = None
    majority: float | None = None
    predicted_classes: int = 0

    @property
    def image_leak(self) -> bool:
        """Reconstructions beat every no-attack baseline and re-identify victims."""
        return (self.gain_low is not None and self.gain_low > 0.0
                and self.identified_low is not None and self.lineup_chance is not None
                and self.identified_low > self.lineup_chance)

    @property
    def class_leak(self) -> bool:
        """The reference classifier reads the class off the reconstructions above chance."""
        return (self.balanced_low is not None and self.chance is not None
                and self.balanced_low > self.chance)

    @property
    def label_leak(self) -> bool:
        """Inferred labels beat always guessing the majority class."""
        return (self.label_low is not None and self.majority is not None
                and self.label_low > self.majority)

    @property
    def leaks(self) -> bool:
        """Any of the three kinds of evidence holds (and the attack finished)."""
        return self.status == "ok" and (self.image_leak or self.class_leak or self.label_leak)

    @property
    def flipped(self) -> bool:
        """Balanced accuracy significantly below chance: the class is there, inverted."""
        return (self.balanced_high is not None and self.chance is not None
                and self.predicted_classes >= 2 and self.balanced_high < self.chance)

    def leak_reason(self) -> str:
        """The kinds of leakage shown, in words."""
        kinds = [name for name, hit in (("images", self.image_leak),
                                        ("class", self.class_leak),
                                        ("labels", self.label_leak)) if hit]
        return "leaks " + ", ".join(kinds)

    def reversed_reason(self) -> str | None:
        """The flip, in words, or None."""
        if not self.flipped:
            return None
        return ("reconstructions are classified below chance (a systematic flip): the class "
                "is there, inverted, which is not protection")

    def control_gap(self, control_name: str) -> str | None:
        """As a control it vouches only if it rebuilt images (labels or class do not)."""
        if self.leaks and self.image_leak:
            return None
        shown = "leaked only the class or labels" if self.leaks else "did not leak either"
        return (f"the attack {shown} on {control_name}: at this budget it is not shown to "
                "rebuild images")


class Decision(BaseModel):
    """A verdict and the reason, in words.

    Attributes:
        verdict: ``leaks``, ``no leakage found`` or ``inconclusive``.
        reason: why, naming the rule's branch.
    """

    model_config = ConfigDict(extra="forbid")

    verdict: VerdictLabel
    reason: str


def evidence(
    *,
    rec_psnr: Tensor,
    baseline_psnr: Tensor,
    identified: Tensor,
    lineup_size: int,
    predicted: Tensor,
    true: Tensor,
    inferred_labels: Tensor | None = None,
    seed: int = 0,
) -> Evidence:
    """Reduce one attack's per-image scores to :class:`Evidence`.

    Args:
        rec_psnr: ``(n,)`` PSNR of each reconstruction against its victim.
        baseline_psnr: ``(n,)`` PSNR of the best no-attack guess for the same victims.
        identified: ``(n,)`` bool, the line-up result of each reconstruction.
        lineup_size: images in the line-up (the victim plus the auxiliary images).
        predicted: ``(n,)`` the reference classifier's labels for the reconstructions.
        true: ``(n,)`` the victims' labels.
        inferred_labels: ``(n,)`` labels the attack inferred, if it infers them, aligned
            with ``true`` (for a batch whose order is unknown, see
            :func:`~shieldsplit.functional.stats.align_labels`).
        seed: seeds the bootstrap.

    Returns:
        The evidence (intervals at 95%).

    Raises:
        InputShapeError: if the per-image tensors disagree in length or are empty.
    """
    n = len(true)
    sizes = {len(rec_psnr), len(baseline_psnr), len(identified), len(predicted)}
    if n == 0 or sizes != {n} or (inferred_labels is not None and len(inferred_labels) != n):
        raise InputShapeError.build(
            what="per-image scores", expected="one value per victim, at least one victim",
            received=f"{sorted(sizes)} values for {n} victims",
            fix="score every reconstruction against its own victim",
        )
    gains = rec_psnr.double().clamp(max=100) - baseline_psnr.double().clamp(max=100)
    k = int(identified.sum())
    out = Evidence(
        images=n, gain_db=float(gains.mean()),
        # one image has no spread to bound: too few to decide
        gain_low=bootstrap_interval(gains, seed=seed)[0] if n >= 2 else None,
        identified=k, identified_low=wilson_interval(k, n)[0],
        lineup_chance=1.0 / max(1, lineup_size),
        balanced_accuracy=balanced_accuracy(predicted, true),
        chance=1.0 / len(torch.unique(true)), majority=majority_rate(true),
        predicted_classes=len(torch.unique(predicted)),
    )
    out.balanced_low, out.balanced_high = balanced_accuracy_interval(predicted, true, seed=seed)
    if inferred_labels is not None:
        right = int((inferred_labels.cpu() == true.cpu()).sum())
        out.label_recovery, out.label_low = right / n, wilson_interval(right, n)[0]
    return out


class LeakageEvidence(Protocol):
    """What :func:`decide` reads of any evidence (reconstruction :class:`Evidence`, or
    :class:`~shieldsplit.functional.membership.MembershipEvidence`)."""

    @property
    def status(self) -> str:
        """``ok`` when the attack finished."""
        ...

    @property
    def leaks(self) -> bool:
        """Whether it shows leakage."""
        ...

    def leak_reason(self) -> str:
        """Why it leaks, in words."""
        ...

    def reversed_reason(self) -> str | None:
        """Why the signal is there but inverted (never protection), or None."""
        ...

    def control_gap(self, control_name: str) -> str | None:
        """As a positive control: None when it vouches for the attack, else why not."""
        ...


def decide(target: LeakageEvidence, control: LeakageEvidence | None, *,
           control_name: str = "the control") -> Decision:
    """The decision rule for one attack (see the module docstring for the branches).

    One rule for every kind of evidence: what "leaks", "reversed" and "vouches as a
    control" mean is the evidence's own (:class:`LeakageEvidence`).

    Args:
        target: the attack's evidence on the audited model.
        control: the same attack, same budget, on the control; None when none was run.
        control_name: how the reason names the control.

    Returns:
        The verdict and its reason.
    """
    if target.status != "ok":
        return Decision(verdict="inconclusive",
                        reason=f"the attack did not finish ({target.status})")
    if target.leaks:
        return Decision(verdict="leaks", reason=target.leak_reason())
    reversed_reason = target.reversed_reason()
    if reversed_reason is not None:
        return Decision(verdict="inconclusive", reason=reversed_reason)
    if control is None:
        return Decision(verdict="inconclusive",
                        reason="the attack found nothing and no positive control was run")
    gap = control.control_gap(control_name)
    if gap is not None:
        return Decision(verdict="inconclusive", reason=gap)
    return Decision(verdict="no leakage found",
                    reason=f"the same attack at the same budget leaked on {control_name}")


def position_verdict(decisions: Sequence[Decision]) -> VerdictLabel:
    """Combine the verdicts of one attacker position's attacks.

    Args:
        decisions: one per attack that applies to the position.

    Returns:
        ``leaks`` if any attack leaks; ``no leakage found`` if every one says so
        (and there is at least one); else ``inconclusive``.
    """
    verdicts = [d.verdict for d in decisions]
    if "leaks" in verdicts:
        return "leaks"
    if verdicts and all(v == "no leakage found" for v in verdicts):
        return "no leakage found"
    return "inconclusive"


__all__ = ["Decision", "Evidence", "LeakageEvidence", "VerdictLabel", "decide", "evidence",
           "position_verdict"]
