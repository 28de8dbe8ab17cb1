"""The DP-SGD cross-check of ``harden`` (issue 24 item 4): the empirical setting beside
what riskcal computes for the same target, with every word of the comparison computed
from recorded numbers.

:class:`DpCheck` keeps the target in attack terms (TPR at FPR = the audit's line-up chance,
plus its re-identification tolerance), DP-SGD's sampling and steps as Opacus accounts
them, the weakest noise multiplier the audit passed and the failing probe below it, and
riskcal's calibrated noise; :meth:`DpCheck.words` says which is tighter, by what factor
and why the two can differ (:func:`shieldsplit.harden.run.riskcal_check` fills it).

Example:
    >>> d = DpCheck(empirical_noise=0.5, riskcal_noise=1.0, tighter="empirical", ratio=2.0)
    >>> d.factor().split(" (")[0]
    'The empirical setting is tighter: it needs 2x less noise than riskcal'
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shieldsplit.harden.spec import positions_words


class DpCheck(BaseModel):
    """DP-SGD's empirical setting beside what riskcal computes for the same target (the
    hook of :func:`shieldsplit.harden.run.riskcal_check`).

    Attributes:
        empirical_noise: the weakest noise multiplier the search found to meet the target.
        epsilon: the epsilon that setting spent (Opacus's RDP accountant, at ``delta``).
        delta: its delta.
        riskcal_noise: the noise riskcal calibrates to the target risk, or None.
        riskcal_risk: the TPR riskcal allows at the empirical setting, or None.
        riskcal_one_step: riskcal's noise for the same target over one noised step of a
            batch that surely holds the victim (sample rate 1): the least that any release
            of such an update needs (a federated attacker's observation is one or more).
        target_tpr: the target in attack terms: the TPR allowed ...
        at_fpr: ... at this FPR (the line-up's chance rate).
        sample_rate: DP-SGD's sampling rate (one over the batches per epoch, as Opacus's).
        steps: its optimiser steps.
        failing_noise: the strongest probed noise below ``empirical_noise`` that failed the
            target (the boundary lies between the two), or None.
        tighter: which needs less noise for the target: ``empirical``, ``riskcal``,
            ``equal``, or None where one of them is missing.
        ratio: ``riskcal_noise / empirical_noise``, or None.
        positions: the positions the audit searched.
        attacks: the attacks the audit ran.
        holds: per confirmation seed, whether the empirical setting held the target.
        reason: why riskcal gave nothing (not installed, a setting it cannot take), or "".
        note: the cross-check in words (:meth:`words`, kept in the record).
    """

    model_config = ConfigDict(extra="forbid")

    empirical_noise: float | None
    epsilon: float | None = None
    delta: float | None = None
    riskcal_noise: float | None = None
    riskcal_risk: float | None = None
    riskcal_one_step: float | None = None
    target_tpr: float | None = None
    at_fpr: float | None = None
    sample_rate: float | None = None
    steps: int | None = None
    failing_noise: float | None = None
    tighter: Literal["empirical", "riskcal", "equal"] | None = None
    ratio: float | None = None
    positions: list[str] = Field(default_factory=list)
    attacks: list[str] = Field(default_factory=list)
    holds: list[bool] = Field(default_factory=list)
    reason: str = ""
    note: str = ""

    def goal(self) -> str:
        """The target in attack terms (empty where it was not computed)."""
        if self.target_tpr is None or self.at_fpr is None:
            return ""
        return (f"TPR <= {self.target_tpr:.3g} at FPR {self.at_fpr:.3g} (the line-up's chance "
                "plus the audit's re-identification tolerance), for DP-SGD at sample rate "
                f"{self.sample_rate:.3g} over {self.steps} steps")

    def factor(self) -> str:
        """Which needs less noise, and by what factor (with the search's bracket).

        Example:
            >>> f = DpCheck(empirical_noise=0.01, riskcal_noise=0.9, failing_noise=0.001,
            ...             tighter="empirical", ratio=90.0).factor()
            >>> f.split(":")[0], "needs 90x less noise" in f, "up to 900x less" in f
            ('The empirical setting is tighter', True, True)
        """
        e, r, f = self.empirical_noise, self.riskcal_noise, self.failing_noise
        if e is None or r is None or self.ratio is None:
            return ""
        if self.tighter == "equal":
            return f"They agree: both need a noise multiplier of about {r:.3g}"
        if self.tighter == "empirical":
            head = (f"The empirical setting is tighter: it needs {self.ratio:.3g}x less noise "
                    f"than riskcal ({e:.3g} vs {r:.3g})")
            if f is None:
                return head + (", and the weakest end of the searched range met the target, "
                               "so the boundary may lie lower still (the factor is a lower "
                               "bound)")
            return head + (f", and up to {r / f:.3g}x less where the boundary lies (between "
                           f"the failing {f:.3g} and {e:.3g})")
        head = (f"The theory is tighter: riskcal needs {1 / self.ratio:.3g}x less noise than "
                f"the empirical setting ({r:.3g} vs {e:.3g})")
        if f is None:
            return head
        if f <= r:
            return head + (f", but the boundary lies between the failing {f:.3g} and {e:.3g}, "
                           "so the two may agree (the search's grid is coarser than the gap)")
        return head + (f", and at least {f / r:.3g}x less (the probe at {f:.3g} failed)")

    def scope(self) -> str:
        """Whether riskcal's bound covers what the searched positions' attackers see."""
        if any(p.startswith("split-server") for p in self.positions):
            return ("At the split server the attacker reads each image's activations, which "
                    "DP-SGD's guarantee does not cover (it bounds what the trained weights and "
                    "their updates reveal about one example), so there riskcal's bound is not "
                    "a bound on the audit's attacks.")
        if any(p.startswith("federated-server") for p in self.positions):
            return ("At the federated server riskcal's bound does apply: the server sees only "
                    "the clipped, noised updates that DP-SGD's guarantee covers.")
        return ""

    def why(self) -> str:
        """Why the two can differ, for the comparison found."""
        scope = self.scope()
        if self.tighter == "riskcal":
            return " ".join(filter(None, [
                "riskcal asks for less noise than the audit needed: the audit's attacks reach "
                "what DP-SGD does not cover, or the training's sampling differs from the "
                "Poisson sampling riskcal assumes, or the search's grid overshot.", scope]))
        at_empirical = ""
        if self.riskcal_risk is not None and self.riskcal_risk >= 1.0 - 1e-9:
            at_empirical = ("At the empirical setting riskcal's bound is vacuous (TPR 1): the "
                            "theory proves nothing there.")
        elif self.riskcal_risk is not None:
            at_empirical = (f"At the empirical setting riskcal bounds any attacker's TPR by "
                            f"{self.riskcal_risk:.3g}, above the target.")
        one_step = ""
        if (self.riskcal_one_step is not None and self.empirical_noise
                and not any(p.startswith("split-server") for p in self.positions)):
            one_step = ("riskcal's noise is for the training as Opacus accounts it; the "
                        "attacker here sees noised updates of a batch that surely holds each "
                        "victim, and even one such step needs a noise multiplier of "
                        f"{self.riskcal_one_step:.3g} for the same bound "
                        f"({self.riskcal_one_step / self.empirical_noise:.3g}x the empirical "
                        "one).")
        attacks = ", ".join(self.attacks) or "the audit's attacks"
        return " ".join(filter(None, [
            "riskcal bounds the strongest attacker the theory allows (the best test against "
            "one example, over any neighbouring data set, with every update seen), while the "
            f"audit measures only the attacks that ran ({attacks}) on this data set: it can "
            "pass a setting the bound does not, which shows no leakage by those attacks, not "
            "a guarantee.", at_empirical, scope, one_step]))

    def words(self) -> str:
        """The cross-check in words, every number from the fields: the target, the
        empirical noise and its epsilon, riskcal's noise, which is tighter and by how much,
        and why they can differ.

        Example:
            >>> d = DpCheck(empirical_noise=0.01, epsilon=4.9e5, delta=1e-5, riskcal_noise=0.9,
            ...             riskcal_risk=1.0, target_tpr=0.102, at_fpr=0.00183,
            ...             sample_rate=0.111, steps=90, tighter="empirical", ratio=90.0,
            ...             positions=["federated-server-malicious"])
            >>> sentences = d.words().split(". ")
            >>> print(sentences[1].split(" from ")[1].split(";")[0])
            a noise multiplier of 0.01 (epsilon 4.9e+05 at delta 1e-05)
            >>> print(sentences[2].split(" (")[0])
            The empirical setting is tighter: it needs 90x less noise than riskcal
        """
        where = positions_words(self.positions)
        goal = self.goal()
        if self.empirical_noise is None:
            head = f"The search found no DP-SGD noise meeting the target at {where}"
            if self.riskcal_noise is not None:
                head += (f"; for {goal}, riskcal calibrates a noise multiplier of "
                         f"{self.riskcal_noise:.3g}")
            return " ".join(filter(None, [head + ".", self.reason, self.scope()]))
        eps = "" if self.epsilon is None else (
            f" (epsilon {self.epsilon:.3g}"
            + ("" if self.delta is None else f" at delta {self.delta:.3g}") + ")")
        found = (f"The audit found no leakage at {where} from a noise multiplier of "
                 f"{self.empirical_noise:.3g}{eps}")
        held = "" if not self.holds else (
            f"It held on {sum(self.holds)} of {len(self.holds)} confirmation seeds.")
        if self.riskcal_noise is None or not self.factor():
            return " ".join(filter(None, [found + ".", held, self.reason]))
        return " ".join(filter(None, [
            f"Target: {goal}.",
            f"{found}; riskcal calibrates {self.riskcal_noise:.3g} for the same target.",
            self.factor() + ".", held, "Why they differ: " + self.why()]))


__all__ = ["DpCheck"]
