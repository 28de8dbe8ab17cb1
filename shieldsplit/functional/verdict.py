"""The auditor's decision rule: *leaks*, *no leakage found at this strength* or *inconclusive*.

An attack that fails proves nothing by itself: it may be too weak, or given too small
a budget. So "no leakage found" is never inferred from a test that did not fire: it is
*shown*. The rule is stated in ``docs/audit.md`` and each branch has a unit test
(``tests/test_verdict.py``).

Evidence of leakage, per attack (:class:`Evidence`, built by :func:`evidence`), four
kinds, any one of which is a leak:

- **re-identification** (an image leak): the share of victims whose reconstruction
  picks them out of a line-up (the victim and every auxiliary image, nearest by MSE) is
  significantly above the line-up's chance rate: the exact (Clopper-Pearson) 95% lower
  bound is above ``1 / line-up size``. A reconstruction that picks the patient out of
  hundreds of images is a leak whatever its PSNR;
- **rebuilt images** (an image leak): the 95% bootstrap lower bound of the mean per-image
  PSNR gain over the best no-attack baseline (per victim, the better of the mean
  auxiliary image and the auxiliary image nearest to the victim) is above 0 dB;
- **class**: the 95% bootstrap lower bound of the reference classifier's balanced
  accuracy on the reconstructions is above chance (1 / classes present);
- **labels**: for attacks that infer labels, the Wilson lower bound of the label
  recovery rate is above the majority-class rate.

A balanced accuracy whose upper bound is below chance, with at least two classes
predicted, is *flipped*: the reconstructions carry the class, inverted; that is never
counted as protection.

:func:`decide` (per attack):

1. the attack did not finish (failed, cancelled) → inconclusive;
2. it leaks → **leaks**;
3. its reconstructions are flipped → inconclusive;
4. no control was run → inconclusive;
5. the control ran in another setting (position, cut, observation, batch size or
   protocol differ: a calibration at cut 1 cannot vouch for cut 3, nor batch-1
   gradients for a FedAvg update) → inconclusive;
6. the control did not leak *images* (re-identification or rebuilt images; a label-only
   evidence type declares its own kind) → inconclusive: the attack is not shown to work
   in this setting;
7. the target is not significantly below the control on every kind of evidence the
   control leaked (the 95% intervals overlap) → inconclusive;
8. any upper bound is above its :class:`Tolerance` (re-identification rate, PSNR gain,
   balanced accuracy above chance, label recovery above the majority rate) →
   inconclusive, with the victims a zero re-identification count would need;
9. otherwise → **no leakage found at this strength**, quoting every number and the
   tolerance.

:func:`position_verdict` (per attacker position, over its attacks): **leaks** if any
attack leaks; **no leakage found** only if every attack that ran says so (and, for a
defence, every attack that declares it adapts to that defence ran: the auditor checks
that); else inconclusive.

Example:
    >>> import torch
    >>> strong = evidence(rec_psnr=torch.full((32,), 30.0), baseline_psnr=torch.full((32,), 15.0),
    ...                   identified=torch.ones(32, dtype=torch.bool), lineup_size=100,
    ...                   predicted=torch.arange(32) % 2, true=torch.arange(32) % 2, seed=0,
    ...                   setting="split at cut 2")
    >>> weak = evidence(rec_psnr=torch.full((64,), 10.0), baseline_psnr=torch.full((64,), 15.0),
    ...                 identified=torch.zeros(64, dtype=torch.bool), lineup_size=100,
    ...                 predicted=torch.arange(64) % 2, true=torch.arange(64) // 32,
    ...                 seed=0, setting="split at cut 2")
    >>> decide(strong, None).verdict, decide(weak, strong).verdict, decide(weak, weak).verdict
    ('leaks', 'no leakage found', 'inconclusive')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from shieldsplit._core.validate import build_config
from shieldsplit.errors import ConfigError, InputShapeError
from shieldsplit.functional.stats import (
    balanced_accuracy,
    balanced_accuracy_interval,
    bootstrap_interval,
    clopper_pearson_interval,
    majority_rate,
    victims_to_bound,
    wilson_interval,
)

VerdictLabel = Literal["leaks", "no leakage found", "inconclusive"]
Status = Literal["ok", "cancelled", "failed", "n/a"]


class Tolerance(BaseModel):
    """How much a target may still show, at the upper end of its 95% interval, for the
    verdict *no leakage found* (the defaults of ``docs/audit.md``; ``audit(...,
    tolerance=...)`` changes them, and every such verdict quotes them).

    Attributes:
        reidentification: the share of victims picked out of the line-up.
        psnr_gain_db: the mean PSNR gain over the best no-attack baseline (dB).
        balanced_accuracy: the reference classifier's balanced accuracy on the
            reconstructions, above chance.
        label_recovery: the share of labels inferred correctly, above the majority rate.
        membership_auc: a membership attack's AUC, above 0.5.

    Example:
        >>> Tolerance().reidentification, Tolerance(psnr_gain_db=0.5).psnr_gain_db
        (0.1, 0.5)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    reidentification: float = Field(default=0.10, gt=0, lt=1)
    psnr_gain_db: float = Field(default=1.0, ge=0)
    balanced_accuracy: float = Field(default=0.15, gt=0, lt=1)
    label_recovery: float = Field(default=0.15, gt=0, lt=1)
    membership_auc: float = Field(default=0.15, gt=0, lt=0.5)

    def words(self) -> str:
        """The tolerance as a verdict quotes it."""
        return (f"tolerance: re-identification {self.reidentification:.0%}, PSNR gain "
                f"{self.psnr_gain_db:g} dB, balanced accuracy chance + "
                f"{self.balanced_accuracy:.0%}, labels majority + {self.label_recovery:.0%}")


DEFAULT_TOLERANCE = Tolerance()


def check_tolerance(tolerance: Tolerance | Mapping[str, Any] | None) -> Tolerance:
    """A :class:`Tolerance` from what a user passed (the one place it is validated).

    Args:
        tolerance: a Tolerance, a mapping of its fields (values may be strings, as a
            command line gives them), or None (the defaults).

    Returns:
        The validated tolerance.

    Raises:
        ConfigError: not a mapping, an unknown field, or a value out of range.

    Example:
        >>> check_tolerance({"reidentification": "0.05"}).reidentification
        0.05
    """
    if isinstance(tolerance, Tolerance):
        return tolerance
    if tolerance is not None and not isinstance(tolerance, Mapping):
        raise ConfigError.build(
            what="tolerance", expected="a Tolerance, a mapping of its fields or None",
            received=repr(tolerance)[:80], fix="pass e.g. tolerance={'reidentification': 0.1}")
    return build_config(Tolerance, dict(tolerance or {}),
                        fix="fields: " + ", ".join(Tolerance.model_fields))


def _pct(x: float | None) -> str:
    """A rate in percent, with two significant digits where one decimal would show 0."""
    if x is None:
        return "-"
    return f"{x:.1%}" if x == 0 or x >= 0.001 else f"{x * 100:.2g}%"


class Evidence(BaseModel):
    """What one attack showed, reduced to the numbers the decision rule reads.

    Attributes:
        status: ``ok`` when the attack finished.
        setting: where it was observed (position, cut or observation, batch size,
            protocol), in words; a control vouches only for its own setting.
        images: victims rebuilt.
        gain_db: mean per-image PSNR gain over the best no-attack baseline (dB).
        gain_low: its 95% bootstrap lower bound.
        gain_high: its 95% bootstrap upper bound.
        identified: victims picked out of the line-up by their reconstruction.
        identified_low: exact (Clopper-Pearson) 95% lower bound of that share.
        identified_high: its upper bound.
        lineup_chance: the chance rate of the line-up, ``1 / (auxiliary + 1)``
            (``k / (auxiliary + k)`` for reconstructions paired among ``k`` victims).
        matched_among: that ``k`` (1: each reconstruction belongs to a known victim).
        balanced_accuracy: the reference classifier's balanced accuracy on the reconstructions.
        balanced_low: its 95% bootstrap lower bound.
        balanced_high: its 95% bootstrap upper bound.
        chance: ``1 / classes present`` among the victims.
        label_recovery: labels inferred correctly (attacks that infer labels), else None.
        label_low: Wilson lower bound of that rate.
        label_high: its upper bound.
        majority: the victims' majority-class rate.
        predicted_classes: distinct labels the reference classifier gave the reconstructions.
    """

    model_config = ConfigDict(extra="forbid")

    status: Status = "ok"
    setting: str | None = None
    images: int = 0
    gain_db: float | None = None
    gain_low: float | None = None
    gain_high: float | None = None
    identified: int = 0
    identified_low: float | None = None
    identified_high: float | None = None
    lineup_chance: float | None = None
    matched_among: int = 1
    balanced_accuracy: float | None = None
    balanced_low: float | None = None
    balanced_high: float | None = None
    chance: float | None = None
    label_recovery: float | None = None
    label_low: float | None = None
    label_high: float | None = None
    majority: float | None = None
    predicted_classes: int = 0

    def completed(self, *, matched_among: int | None = None) -> Evidence:
        """This evidence with the bounds that its counts determine filled in (exact
        re-identification bounds, Wilson label bounds): a record written under an older
        rule is then decided like a new one, where its counts allow.

        Args:
            matched_among: how many victims each reconstruction was paired among, where
                the record predates :attr:`matched_among` (its line-up chance is then
                recomputed from the line-up's size).

        Example:
            >>> old = Evidence(images=64, identified=1, identified_low=0.0028,
            ...                lineup_chance=1 / 483)
            >>> old.reidentified, old.completed().reidentified
            (True, False)
        """
        update: dict[str, float | int] = {}
        if matched_among is not None and matched_among != self.matched_among \
                and self.lineup_chance:
            auxiliary = round(self.matched_among / self.lineup_chance) - self.matched_among
            update["matched_among"] = matched_among
            update["lineup_chance"] = matched_among / (auxiliary + matched_among)
        if self.images:
            update["identified_low"], update["identified_high"] = clopper_pearson_interval(
                self.identified, self.images)
            if self.label_recovery is not None:
                right = round(self.label_recovery * self.images)
                update["label_low"], update["label_high"] = wilson_interval(right, self.images)
        return self.model_copy(update=update)

    @property
    def lineup_images(self) -> int | None:
        """Images in the line-up (the victim and the auxiliary images), or None."""
        if not self.lineup_chance:
            return None
        return round(self.matched_among / self.lineup_chance) - self.matched_among + 1

    # ----------------------------------------------------------------- the four kinds
    @property
    def reidentified(self) -> bool:
        """Significantly more victims picked out of the line-up than chance picks."""
        return (self.identified_low is not None and self.lineup_chance is not None
                and self.identified_low > self.lineup_chance)

    @property
    def rebuilt(self) -> bool:
        """Reconstructions beat every no-attack baseline (gain's lower bound above 0 dB)."""
        return self.gain_low is not None and self.gain_low > 0.0

    @property
    def image_leak(self) -> bool:
        """Either kind of image evidence: re-identification or rebuilt images."""
        return self.reidentified or self.rebuilt

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
        """Any kind of evidence holds (and the attack finished)."""
        return self.status == "ok" and (self.image_leak or self.class_leak or self.label_leak)

    @property
    def flipped(self) -> bool:
        """Balanced accuracy significantly below chance: the class is there, inverted."""
        return (self.balanced_high is not None and self.chance is not None
                and self.predicted_classes >= 2 and self.balanced_high < self.chance)

    # ----------------------------------------------------------------- in words
    def lineup_words(self) -> str:
        """The line-up count with its interval and chance."""
        if self.identified_low is None or self.images == 0:
            return "no line-up"
        return (f"{self.identified} of {self.images} victims picked out of the line-up "
                f"(95% CI {_pct(self.identified_low)}-{_pct(self.identified_high)}, chance "
                f"{_pct(self.lineup_chance)})")

    def gain_words(self) -> str:
        """The PSNR gain with its interval."""
        if self.gain_db is None:
            return "no PSNR gain measured"
        if self.gain_low is None or self.gain_high is None:
            return f"PSNR gain {self.gain_db:+.1f} dB over the best no-attack guess (no interval)"
        return (f"PSNR gain {self.gain_db:+.1f} dB [{self.gain_low:+.1f}, {self.gain_high:+.1f}]"
                " over the best no-attack guess")

    def leak_reason(self) -> str:
        """The kinds of leakage shown, in words, with both image numbers."""
        kinds = []
        if self.reidentified:
            kinds.append(f"re-identification ({self.lineup_words()})")
        if self.rebuilt:
            kinds.append(f"rebuilt images ({self.gain_words()})")
        if self.class_leak:
            kinds.append(f"class (balanced accuracy {_pct(self.balanced_accuracy)} "
                         f"[{_pct(self.balanced_low)}, {_pct(self.balanced_high)}], chance "
                         f"{_pct(self.chance)})")
        if self.label_leak:
            kinds.append(f"labels ({_pct(self.label_recovery)} recovered, lower bound "
                         f"{_pct(self.label_low)} > majority {_pct(self.majority)})")
        text = "leaks " + "; ".join(kinds)
        if self.image_leak and not (self.reidentified and self.rebuilt):
            other = (self.gain_words() if self.reidentified else self.lineup_words())
            text += f"; also {other}"
        return text

    def reversed_reason(self) -> str | None:
        """The flip, in words, or None."""
        if not self.flipped:
            return None
        return ("reconstructions are classified below chance (a systematic flip): the class "
                "is there, inverted, which is not protection")

    # ----------------------------------------------------------------- as a control
    def control_gap(self, control_name: str) -> str | None:
        """As a control it vouches only if it leaked images (labels or class do not)."""
        if self.leaks and self.image_leak:
            return None
        shown = "leaked only the class or labels" if self.leaks else "did not leak either"
        return (f"the attack {shown} on {control_name}: in this setting it is not shown to "
                "rebuild or re-identify images")

    def setting_gap(self, control: LeakageEvidence) -> str | None:
        """None when the control was observed in the same setting, else why not."""
        theirs = getattr(control, "setting", None)
        if self.setting is None or theirs is None:
            return "the setting of the attack or of its control is not recorded"
        if self.setting != theirs:
            return (f"the control leaked in another setting ({theirs}) than the audited one "
                    f"({self.setting}): it does not vouch for this one")
        return None

    def separation_gap(self, control: LeakageEvidence) -> str | None:
        """None when the target is significantly below the control on every kind of
        evidence the control leaked (95% intervals disjoint), else why not."""
        if not isinstance(control, Evidence):
            return "the control's evidence is of another type"
        pairs = (
            ("re-identification", control.reidentified, self.identified_high,
             control.identified_low),
            ("PSNR gain", control.rebuilt, self.gain_high, control.gain_low),
            ("balanced accuracy", control.class_leak, self.balanced_high, control.balanced_low),
            ("label recovery", control.label_leak, self.label_high, control.label_low),
        )
        close = [name for name, shown, high, low in pairs
                 if shown and (high is None or low is None or not high < low)]
        if close:
            return ("not significantly below the control on " + ", ".join(close)
                    + " (the 95% intervals overlap)")
        return None

    def tolerance_gap(self, tolerance: Tolerance) -> str | None:
        """None when every upper bound is under its tolerance, else what cannot be ruled out."""
        out = []
        if self.images and self.identified_high is not None \
                and self.identified_high >= tolerance.reidentification:
            out.append(f"re-identification up to {_pct(self.identified_high)} ({self.identified} "
                       f"of {self.images}; tolerance {tolerance.reidentification:.0%}, which "
                       f"needs at least {victims_to_bound(tolerance.reidentification)} victims "
                       "with none re-identified)")
        if self.gain_db is not None and (self.gain_high is None
                                         or self.gain_high >= tolerance.psnr_gain_db):
            shown = "no interval" if self.gain_high is None else f"up to {self.gain_high:+.1f} dB"
            out.append(f"PSNR gain {shown} (tolerance {tolerance.psnr_gain_db:g} dB)")
        if self.balanced_high is not None and self.chance is not None and self.chance < 1 \
                and self.balanced_high >= self.chance + tolerance.balanced_accuracy:
            out.append(f"balanced accuracy up to {_pct(self.balanced_high)} (tolerance chance "
                       f"{_pct(self.chance)} + {tolerance.balanced_accuracy:.0%})")
        if self.label_recovery is not None and self.majority is not None and (
                self.label_high is None
                or self.label_high >= self.majority + tolerance.label_recovery):
            out.append(f"label recovery up to {_pct(self.label_high)} (tolerance majority "
                       f"{_pct(self.majority)} + {tolerance.label_recovery:.0%})")
        if not out:
            return None
        return "too few victims or too close to call to rule out " + "; ".join(out)

    def no_leak_reason(self, control_name: str, tolerance: Tolerance) -> str:
        """The *no leakage found* sentence: every number and the tolerance."""
        parts = [self.lineup_words(), self.gain_words()]
        if self.balanced_high is not None:
            parts.append(f"balanced accuracy {_pct(self.balanced_accuracy)} (upper bound "
                         f"{_pct(self.balanced_high)}, chance {_pct(self.chance)})")
        if self.label_recovery is not None:
            parts.append(f"labels {_pct(self.label_recovery)} (upper bound "
                         f"{_pct(self.label_high)}, majority {_pct(self.majority)})")
        return ("; ".join(parts) + f"; significantly below the same attack on {control_name}; "
                + tolerance.words())


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
    setting: str | None = None,
    matched_among: int = 1,
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
        setting: where the observation was made, in words (see :attr:`Evidence.setting`).
        matched_among: how many victims each reconstruction was paired among by its
            nearness to them (an update's batch comes in no order: each reconstruction is
            paired with one of its ``k`` victims by minimum MSE). A reconstruction that
            carries nothing of its victim then lands on *some* victim of the ``k`` rather
            than on an auxiliary image with chance ``k / (auxiliary + k)``, not
            ``1 / (auxiliary + 1)``: the line-up's chance rate.

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
    # one image has no spread to bound: too few to decide on the gain
    gain_low, gain_high = bootstrap_interval(gains, seed=seed) if n >= 2 else (None, None)
    id_low, id_high = clopper_pearson_interval(k, n)
    out = Evidence(
        setting=setting, images=n, gain_db=float(gains.mean()),
        gain_low=gain_low, gain_high=gain_high,
        identified=k, identified_low=id_low, identified_high=id_high,
        lineup_chance=matched_among / max(1, lineup_size - 1 + matched_among),
        matched_among=matched_among,
        balanced_accuracy=balanced_accuracy(predicted, true),
        chance=1.0 / len(torch.unique(true)), majority=majority_rate(true),
        predicted_classes=len(torch.unique(predicted)),
    )
    out.balanced_low, out.balanced_high = balanced_accuracy_interval(predicted, true, seed=seed)
    if inferred_labels is not None:
        right = int((inferred_labels.cpu() == true.cpu()).sum())
        out.label_recovery = right / n
        out.label_low, out.label_high = wilson_interval(right, n)
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

    def setting_gap(self, control: LeakageEvidence) -> str | None:
        """None when ``control`` was observed in the same setting, else why not."""
        ...

    def separation_gap(self, control: LeakageEvidence) -> str | None:
        """None when significantly below ``control`` where it leaked, else why not."""
        ...

    def tolerance_gap(self, tolerance: Tolerance) -> str | None:
        """None when every upper bound is under ``tolerance``, else what is not ruled out."""
        ...

    def no_leak_reason(self, control_name: str, tolerance: Tolerance) -> str:
        """The *no leakage found* sentence with its numbers and the tolerance."""
        ...


def decide(target: LeakageEvidence, control: LeakageEvidence | None, *,
           control_name: str = "the control",
           tolerance: Tolerance = DEFAULT_TOLERANCE) -> Decision:
    """The decision rule for one attack (see the module docstring for the branches).

    One rule for every kind of evidence: what "leaks", "reversed", "same setting",
    "below the control", "under the tolerance" and "vouches as a control" mean is the
    evidence's own (:class:`LeakageEvidence`).

    Args:
        target: the attack's evidence on the audited model.
        control: the same attack, same budget, on the control; None when none was run.
        control_name: how the reason names the control.
        tolerance: what the target's upper bounds must stay under for *no leakage found*.

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
    for gap in (target.setting_gap(control), control.control_gap(control_name),
                target.separation_gap(control), target.tolerance_gap(tolerance)):
        if gap is not None:
            return Decision(verdict="inconclusive", reason=gap)
    return Decision(verdict="no leakage found",
                    reason=target.no_leak_reason(control_name, tolerance))


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


__all__ = [
    "DEFAULT_TOLERANCE",
    "Decision",
    "Evidence",
    "LeakageEvidence",
    "Tolerance",
    "VerdictLabel",
    "check_tolerance",
    "decide",
    "evidence",
    "position_verdict",
]
