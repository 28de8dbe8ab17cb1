"""Membership audit: does the trained model reveal who was in its training set?

:func:`membership_sets` draws disjoint, balanced, seeded member and non-member sets;
:func:`membership_audit` runs the membership attacks of
:mod:`shieldsplit.attacks.membership` on the model and on a positive control and returns
a :class:`MembershipReport` with the AUC, the TPR at 0.1% and 1% FPR (None where the
non-members are too few to resolve that FPR, with the sentence why), the balanced
advantage, the ROC points and a verdict by the rule of docs/audit.md:

- an attack **leaks** if the 95% stratified-bootstrap lower bound of its AUC is above
  0.5, or, at the threshold of 1% FPR, the Wilson lower bound of its TPR is above the
  Wilson upper bound of the FPR that threshold reached
  (:func:`~shieldsplit.functional.membership.decide_membership`);
- **no leakage found** only when the same attack, at the same budget, leaked on the
  positive control: a fresh copy of the architecture trained plainly for many epochs on
  the members only (deliberately overfitted), attacked with reference models trained
  with the control's own recipe;
- **inconclusive** otherwise. The model's verdict: **leaks** if any attack leaks, **no
  leakage found** if every attack says so, else inconclusive.

Example:
    >>> import torch
    >>> from torch import nn
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.rand(40, 1, 2, 2, generator=g), torch.arange(40) % 2
    >>> sets = membership_sets((x[:20], y[:20]), (x[20:], y[20:]), seed=0)
    >>> len(sets.members[0]), len(sets.nonmembers[0])
    (20, 20)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from shieldsplit._core.validate import check_int, check_seed
from shieldsplit.attacks.base import Budget
from shieldsplit.attacks.membership import (
    Labelled,
    Recipe,
    available_membership_attacks,
    create_membership_attack,
    membership_attack_class,
    memoized,
    probabilities,
    reference_models,
    template_of,
    train_cached,
)
from shieldsplit.data import ImageDataset
from shieldsplit.datacontract import as_tensors, check_model
from shieldsplit.defenses.base import Defense
from shieldsplit.errors import ConfigError, MembershipSetError
from shieldsplit.functional.membership import (
    MembershipEvidence,
    decide_membership,
    dp_tpr_bound,
    holm_family,
    membership_advantage,
    membership_evidence,
    min_nonmembers,
    roc_points,
    tpr_at_fpr,
)
from shieldsplit.functional.verdict import (
    DEFAULT_TOLERANCE,
    Tolerance,
    VerdictLabel,
    position_verdict,
)
from shieldsplit.plots import RocCurve
from shieldsplit.training import eval_mode

logger = logging.getLogger(__name__)

#: Reference models per budget (RMIA takes 1, 2 or 4; LiRA runs from 4).
REFERENCE_MODELS: dict[str, int] = {"quick": 2, "standard": 4, "thorough": 8}
#: Attacks per budget (LiRA's Gaussian needs more reference models than the quick budget).
BUDGET_ATTACKS: dict[str, tuple[str, ...]] = {
    "quick": ("loss-threshold", "rmia"),
    "standard": ("loss-threshold", "rmia", "lira"),
    "thorough": ("loss-threshold", "rmia", "lira"),
}
#: Epochs of the overfitted positive control (trained on the members only).
CONTROL_EPOCHS: dict[str, int] = {"quick": 30, "standard": 50, "thorough": 100}
#: The FPRs reported by default (0.1% and 1%).
DEFAULT_FPRS: tuple[float, ...] = (0.001, 0.01)
#: ROC points kept in a report (evenly spaced along the curve).
MAX_ROC_POINTS = 256


def fpr_label(fpr: float) -> str:
    """``0.001 -> '0.1%'``.

    Example:
        >>> fpr_label(0.001), fpr_label(0.01)
        ('0.1%', '1%')
    """
    return f"{fpr * 100:g}%"


# ------------------------------------------------------------------ sets

class MembershipSets(BaseModel):
    """Disjoint, balanced member and non-member sets.

    Attributes:
        members: labelled images the model trained on.
        nonmembers: labelled images it did not, as many as members.
        seed: the seed that drew them.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    members: tuple[Tensor, Tensor]
    nonmembers: tuple[Tensor, Tensor]
    seed: int


def _row_hashes(x: Tensor) -> list[bytes]:
    flat = x.detach().cpu().contiguous().float().flatten(1).numpy()
    return [row.tobytes() for row in flat]


def check_disjoint(a: Tensor, b: Tensor, *, what: str) -> None:
    """Raise if an image of ``a`` is also (bit for bit) an image of ``b``.

    Args:
        a: ``(n, C, H, W)`` images.
        b: ``(m, C, H, W)`` images.
        what: the two sets' names, for the message.

    Raises:
        MembershipSetError: naming how many overlap and the first indices in ``a``.

    Example:
        >>> check_disjoint(torch.zeros(2, 1, 2, 2), torch.ones(3, 1, 2, 2), what="a and b")
    """
    other = set(_row_hashes(b))
    shared = [i for i, h in enumerate(_row_hashes(a)) if h in other]
    if shared:
        raise MembershipSetError.build(
            what=what, expected=f"{what} disjoint (no image in both)",
            received=f"{len(shared)} shared image(s), e.g. index {shared[:5]} of the first",
            fix="draw them from disjoint parts of the data (and drop duplicate images)")


def without_shared(data: Labelled, other: Tensor) -> Labelled:
    """``data`` without the images that also occur (bit for bit) in ``other``.

    Public data sets hold duplicates across their splits (BreastMNIST has an image in
    both its training and its held-out splits), which :func:`check_disjoint` refuses.

    Args:
        data: labelled images ``(x, y)``.
        other: ``(m, C, H, W)`` images.

    Returns:
        The labelled images of ``data`` that ``other`` does not hold, in order.

    Example:
        >>> x = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
        >>> kept = without_shared((x, torch.tensor([0, 1])), x[:1])
        >>> kept[1].tolist()
        [1]
    """
    seen = set(_row_hashes(other))
    keep = torch.tensor([h not in seen for h in _row_hashes(data[0])], dtype=torch.bool)
    return data[0][keep], data[1][keep]


def heldout_of(data: Any) -> Labelled | None:
    """The natural non-members of ``data``: an ImageDataset's validation and test images
    (less any copy of a training image); None for any other form, which holds no images
    the model is known not to have trained on, or when every held-out image is a copy.

    Args:
        data: what was passed to :func:`shieldsplit.audit` as ``data``.

    Returns:
        Labelled held-out images, or None.

    Example:
        >>> from shieldsplit.data import load_dataset
        >>> ds = load_dataset("digits", seed=0, limit=100)
        >>> len(heldout_of(ds)[0]) > 0, heldout_of((ds.x_train, ds.y_train))
        (True, None)
    """
    if not isinstance(data, ImageDataset):
        return None
    held = without_shared((torch.cat([data.x_val, data.x_test]),
                           torch.cat([data.y_val, data.y_test])), data.x_train)
    return held if len(held[0]) else None


def membership_sets(members: Any, nonmembers: Any, *, size: int | None = None,
                    fprs: Sequence[float] = (), model: nn.Module | None = None,
                    seed: int = 0) -> MembershipSets:
    """Draw balanced, disjoint, seeded member and non-member sets.

    Args:
        members: the images the model trained on (any form of docs/data.md).
        nonmembers: images from the same distribution it did not train on.
        size: images per set (default: as many as the smaller pool holds).
        fprs: FPRs the sets must resolve: at least ``ceil(1 / fpr)`` non-members each.
        model: when given, labels must lie in its classes.
        seed: seeds the draw.

    Returns:
        The sets, ``size`` images each.

    Raises:
        MembershipSetError: overlapping sets, a ``size`` larger than a pool, or fewer
            non-members than an FPR of ``fprs`` needs (the message says how many).
        LabelError: labels outside the model's classes.

    Example:
        >>> x = torch.rand(30, 1, 2, 2)
        >>> try:
        ...     membership_sets((x[:20], torch.zeros(20, dtype=torch.long)),
        ...                     (x[10:], torch.zeros(20, dtype=torch.long)))
        ... except MembershipSetError as err:
        ...     print(str(err)[:66])
        Invalid membership sets: expected members and nonmembers disjoint
    """
    seed = check_seed(seed)
    mx, my = as_tensors(members, model=model, what="members")
    nx, ny = as_tensors(nonmembers, model=model, what="nonmembers")
    available = min(len(mx), len(nx))
    n = available if size is None else check_int("size", size, low=1,
                                                 fix="pass size=100 or more")
    if n > available:
        raise MembershipSetError.build(
            what="size", expected=f"at most {available} (members {len(mx)}, non-members "
            f"{len(nx)})", received=n, fix="pass a smaller size or more images")
    for f in fprs:
        need = min_nonmembers(f)
        if n < need:
            raise MembershipSetError.build(
                what="nonmembers", expected=f"at least {need} non-members to resolve "
                f"{fpr_label(f)} FPR", received=n,
                fix=f"pass {need} or more non-members, or drop {fpr_label(f)} from fprs")
    check_disjoint(mx, nx, what="members and nonmembers")
    rng = np.random.default_rng(seed)
    mi = torch.from_numpy(rng.permutation(len(mx))[:n])
    ni = torch.from_numpy(rng.permutation(len(nx))[:n])
    return MembershipSets(members=(mx[mi], my[mi]), nonmembers=(nx[ni], ny[ni]), seed=seed)


# ------------------------------------------------------------------ report

class MembershipResult(BaseModel):
    """One membership attack on one model.

    Attributes:
        attack: its name.
        reference_models: reference models it used.
        auc: ROC AUC (0.5 is chance).
        auc_low: 95% bootstrap lower bound.
        auc_high: 95% bootstrap upper bound.
        tpr: TPR at each FPR (``"0.1%"``, ``"1%"``), None where not resolvable.
        advantage: balanced membership advantage ``max (TPR - FPR)``.
        roc_fpr: ROC points (FPR), for a log-log plot.
        roc_tpr: ROC points (TPR).
        evidence: the numbers the rule reads.
        verdict: the rule's verdict.
        reason: why.
        control_auc: the same attack's AUC on the positive control, if run.
        seconds: scoring time (reference training excluded).
    """

    model_config = ConfigDict(extra="forbid")

    attack: str
    reference_models: int
    auc: float
    auc_low: float
    auc_high: float
    tpr: dict[str, float | None]
    advantage: float
    roc_fpr: list[float]
    roc_tpr: list[float]
    evidence: MembershipEvidence
    verdict: VerdictLabel = "inconclusive"
    reason: str = ""
    control_auc: float | None = None
    seconds: float = 0.0


class MembershipReport(BaseModel):
    """What :func:`membership_audit` returns.

    Attributes:
        members: member images scored.
        nonmembers: non-member images scored.
        auxiliary: auxiliary images the reference models trained on (halves of them).
        reference_models: reference models per recipe.
        budget: the budget.
        seed: the seed.
        recipe: the target's recipe the reference models repeated.
        results: one per attack on the audited model.
        control: the same attacks on the overfitted control (None: not run).
        control_epochs: the control's training epochs (None: not run).
        verdict: ``leaks``, ``no leakage found`` or ``inconclusive`` over the attacks.
        reason: the verdict in words.
        notes: sentences about what could not be measured (unresolvable FPRs).
        epsilon: the target's DP epsilon, if it declares one.
        delta: its delta.
        dp_tpr_bound: the TPR bound that ``(epsilon, delta)`` implies at each FPR.
        reference_seconds: time spent training reference models (cache misses only).
        seconds: total time.
        one_class: the model predicts one class for every audited image (stuck).
    """

    model_config = ConfigDict(extra="forbid")

    members: int
    nonmembers: int
    auxiliary: int
    reference_models: int
    budget: Budget
    seed: int
    recipe: Recipe
    results: list[MembershipResult]
    control: list[MembershipResult] | None = None
    control_epochs: int | None = None
    verdict: VerdictLabel
    reason: str
    notes: list[str] = []
    epsilon: float | None = None
    delta: float | None = None
    dp_tpr_bound: dict[str, float] | None = None
    reference_seconds: float = 0.0
    seconds: float = 0.0
    one_class: bool = False

    def best(self) -> MembershipResult:
        """The attack with the highest AUC."""
        return max(self.results, key=lambda r: r.auc)

    def curves(self, *, prefix: str = "") -> list[RocCurve]:
        """The ROC curve of each attack (the DP bound on the first), for :mod:`~shieldsplit.plots`.

        Args:
            prefix: put before each attack's name in the legend (e.g. the defence).

        Returns:
            One curve per attack.
        """
        return [RocCurve(label=f"{prefix}{r.attack} (AUC {r.auc:.2f})", fpr=r.roc_fpr,
                         tpr=r.roc_tpr, epsilon=self.epsilon if i == 0 else None,
                         delta=self.delta if i == 0 else None)
                for i, r in enumerate(self.results)]

    def summary(self) -> str:
        """One line per attack, then the verdict.

        Returns:
            Text such as ``rmia (2 refs): AUC 0.71 [0.65, 0.77], TPR 12% at 1% FPR ...``.
        """
        lines = [f"membership: {self.members} members, {self.nonmembers} non-members, "
                 f"{self.reference_models} reference models ({self.budget}, seed {self.seed})"]
        for r in self.results:
            tprs = ", ".join(f"TPR {v:.1%} at {k} FPR" if v is not None else
                             f"TPR at {k} FPR not resolvable" for k, v in r.tpr.items())
            lines.append(f"  {r.attack} ({r.reference_models} refs): AUC {r.auc:.3f} "
                         f"[{r.auc_low:.3f}, {r.auc_high:.3f}], {tprs}, advantage "
                         f"{r.advantage:.3f}: {r.verdict} ({r.reason})")
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"  verdict: {self.verdict} ({self.reason})")
        return "\n".join(lines)


def _thin(fpr: np.ndarray, tpr: np.ndarray) -> tuple[list[float], list[float]]:
    if len(fpr) > MAX_ROC_POINTS:
        keep = np.unique(np.linspace(0, len(fpr) - 1, MAX_ROC_POINTS).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr.tolist(), tpr.tolist()


def _score_model(model: nn.Module, template: nn.Module, recipe: Recipe, sets: MembershipSets,
                 auxiliary: Labelled, names: Sequence[str], refs: int, fprs: Sequence[float],
                 seed: int) -> tuple[list[MembershipResult], float]:
    start = time.perf_counter()
    needed = refs if any(membership_attack_class(n).needs_references for n in names) else 0
    trained = (reference_models(template, recipe, auxiliary, count=needed, seed=seed)
               if needed else [])
    ref_seconds = time.perf_counter() - start
    queries = [memoized(probabilities(m)) for m in trained]
    target = memoized(probabilities(model))
    results = []
    for name in names:
        t0 = time.perf_counter()
        attack = create_membership_attack(
            name, reference_models=refs if membership_attack_class(name).needs_references
            else 0)
        sc = attack.score(target, sets.members, sets.nonmembers, references=queries,
                          population=auxiliary)
        s = np.r_[sc.members, sc.nonmembers]
        m = np.r_[np.ones(len(sc.members)), np.zeros(len(sc.nonmembers))].astype(int)
        ev = membership_evidence(s, m, seed=seed)
        fpr, tpr = roc_points(s, m)
        roc_f, roc_t = _thin(fpr, tpr)
        results.append(MembershipResult(
            attack=name, reference_models=sc.reference_models, auc=ev.auc or 0.0,
            auc_low=ev.auc_low or 0.0, auc_high=ev.auc_high or 0.0,
            tpr={fpr_label(f): tpr_at_fpr(s, m, f) for f in fprs},
            advantage=membership_advantage(s, m), roc_fpr=roc_f, roc_tpr=roc_t, evidence=ev,
            seconds=time.perf_counter() - t0))
    return results, ref_seconds


def overfitted_control(template: nn.Module, members: Labelled, *, epochs: int,
                       batch_size: int = 32, seed: int = 0) -> nn.Module:
    """The positive control: a fresh copy of ``template`` trained plainly on the members
    only for ``epochs`` (many: it memorises them).

    Args:
        template: the undefended architecture (not modified).
        members: the member images.
        epochs: training epochs.
        batch_size: batch size.
        seed: seeds the initialisation and the shuffling.

    Returns:
        The trained control, in eval mode (cached like the reference models: every
        defence of a ``compare`` shares it).
    """
    return train_cached(template, Recipe(epochs=epochs, batch_size=batch_size), members,
                        seed=seed)


def predicts_one_class(model: nn.Module, x: Tensor) -> bool:
    """Whether ``model`` gives every image of ``x`` the same class (a stuck classifier).

    Example:
        >>> from torch import nn
        >>> predicts_one_class(nn.Linear(4, 3), torch.zeros(5, 4))
        True
    """
    with torch.no_grad(), eval_mode(model):
        out = (model.predict_proba(x) if isinstance(model, Defense)
               else model(x))
    return len(torch.unique(out.argmax(-1))) == 1


def membership_audit(
    model: nn.Module,
    *,
    members: Any,
    nonmembers: Any,
    auxiliary: Any,
    epochs: int,
    batch_size: int = 32,
    template: nn.Module | None = None,
    budget: Budget = "quick",
    attacks: Sequence[str] | None = None,
    reference_count: int | None = None,
    control: Literal["auto"] | None = "auto",
    control_epochs: int | None = None,
    size: int | None = None,
    fprs: Sequence[float] | None = None,
    seed: int = 0,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> MembershipReport:
    """Audit how much ``model`` reveals about which images it trained on.

    The rule (module docstring, docs/audit.md): an attack *leaks* if its AUC's 95%
    bootstrap lower bound is above 0.5 (its one primary test; the TPR at 1% FPR is
    reported beside it); *no leakage found* needs the same attack to leak on the
    overfitted control, the target's AUC interval below the control's and its upper
    bound under 0.5 plus ``tolerance.membership_auc``; else *inconclusive*. A model that
    predicts one class for every audited image is flagged in the reason: a *no leakage
    found* there is not protection.

    Args:
        model: the trained classifier or :class:`~shieldsplit.defenses.base.Defense` (queried
            only, never modified).
        members: images it trained on (any form of docs/data.md).
        nonmembers: images from the same distribution it did not train on.
        auxiliary: the attacker's images (disjoint from both), on whose seeded halves the
            reference models train.
        epochs: the epochs the target was trained for (the reference models repeat them).
        batch_size: its training batch size.
        template: the untrained architecture (default: the model's, re-initialised).
        budget: ``quick`` (2 reference models; loss-threshold and RMIA), ``standard``
            (4; LiRA too) or ``thorough`` (8).
        attacks: names from :func:`~shieldsplit.attacks.membership.available_membership_attacks`
            (default: the budget's).
        reference_count: reference models (default by budget, :data:`REFERENCE_MODELS`).
        control: ``"auto"``: the overfitted control; None: none (no "no leakage found").
        control_epochs: its epochs (default by budget, :data:`CONTROL_EPOCHS`).
        size: images per set (default: the smaller pool).
        fprs: FPRs to report; default 0.1% and 1%, None where unresolvable (with a note);
            FPRs passed here must be resolvable, else an error.
        seed: seeds the sets, the reference models, the control and the bootstrap.
        tolerance: the AUC upper bound a *no leakage found* must stay under
            (:class:`~shieldsplit.functional.verdict.Tolerance`).

    Returns:
        The report.

    Raises:
        MembershipSetError: overlapping sets (members, non-members, auxiliary), too few
            non-members for a requested FPR.
        LabelError: labels outside the model's classes.
        ConfigError: an unknown budget, attack, or control.

    Example:
        >>> from sklearn.datasets import load_digits
        >>> import shieldsplit as ss
        >>> from shieldsplit.training import fit_plain
        >>> d = load_digits()
        >>> x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
        >>> y = torch.tensor(d.target)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> _ = fit_plain(net, torch.utils.data.DataLoader(list(zip(x[:100], y[:100])),
        ...               batch_size=32), epochs=3, seed=0, progress=False)
        >>> report = membership_audit(net, members=(x[:100], y[:100]),
        ...                           nonmembers=(x[100:200], y[100:200]),
        ...                           auxiliary=(x[200:400], y[200:400]), epochs=3, seed=0)
        >>> [r.attack for r in report.results], report.members, len(report.notes)
        (['loss-threshold', 'rmia'], 100, 1)
    """
    start = time.perf_counter()
    check_model(model)
    seed = check_seed(seed)
    if budget not in REFERENCE_MODELS:
        raise ConfigError.build(what="budget", expected=f"one of {sorted(REFERENCE_MODELS)}",
                                received=repr(budget), fix="pass budget='quick'")
    if control not in ("auto", None):
        raise ConfigError.build(what="control", expected="'auto' or None",
                                received=repr(control), fix="pass control='auto'")
    names = list(attacks) if attacks is not None else list(BUDGET_ATTACKS[budget])
    known = available_membership_attacks()
    for name in names:
        if name not in known:
            raise ConfigError.build(what="attacks", expected=f"names among {known}",
                                    received=repr(name), fix="pick registered attacks")
    refs = REFERENCE_MODELS[budget] if reference_count is None else check_int(
        "reference_count", reference_count, low=1, fix="pass 1, 2 or 4")
    sets = membership_sets(members, nonmembers, size=size, fprs=fprs or (), model=model,
                           seed=seed)
    aux = as_tensors(auxiliary, model=model, what="auxiliary")
    check_disjoint(aux[0], torch.cat([sets.members[0], sets.nonmembers[0]]),
                   what="auxiliary and the audited images")
    wanted = tuple(fprs) if fprs is not None else DEFAULT_FPRS
    n = len(sets.nonmembers[0])
    notes = [f"TPR at {fpr_label(f)} FPR is not resolvable: {n} non-members, "
             f"{min_nonmembers(f)} needed" for f in wanted if n < min_nonmembers(f)]
    arch = template if template is not None else template_of(model)
    recipe = Recipe.of(model, epochs=epochs, batch_size=batch_size)

    results, ref_seconds = _score_model(model, arch, recipe, sets, aux, names, refs, wanted,
                                        seed)
    control_results: list[MembershipResult] | None = None
    c_epochs = None
    if control == "auto":
        c_epochs = CONTROL_EPOCHS[budget] if control_epochs is None else check_int(
            "control_epochs", control_epochs, low=1, fix="pass control_epochs=30")
        twin = overfitted_control(arch, sets.members, epochs=c_epochs, batch_size=batch_size,
                                  seed=seed)
        control_results, c_ref = _score_model(
            twin, arch, Recipe(epochs=c_epochs, batch_size=batch_size), sets, aux, names,
            refs, wanted, seed)
        ref_seconds += c_ref
    stuck = predicts_one_class(model, torch.cat([sets.members[0], sets.nonmembers[0]]))
    privacy = model.privacy() if isinstance(model, Defense) else {}
    eps, dlt = privacy.get("epsilon"), privacy.get("delta")
    bound = ({fpr_label(f): float(dp_tpr_bound([f], eps, dlt or 0.0)[0]) for f in wanted}
             if eps else None)
    report = MembershipReport(
        members=len(sets.members[0]), nonmembers=n, auxiliary=len(aux[0]),
        reference_models=refs, budget=budget, seed=seed, recipe=recipe, results=results,
        control=control_results, control_epochs=c_epochs, verdict="inconclusive", reason="",
        notes=notes, epsilon=eps, delta=dlt, dp_tpr_bound=bound, one_class=stuck,
        reference_seconds=ref_seconds, seconds=time.perf_counter() - start)
    decide_membership_report(report, tolerance)
    return report


def decide_membership_report(report: MembershipReport,
                             tolerance: Tolerance = DEFAULT_TOLERANCE) -> None:
    """Apply the decision rule to every attack of ``report`` from its stored evidence and
    its control's, then combine (the one place membership verdicts are made: the audit
    calls it, and a results page re-decides a stored report with it).

    Args:
        report: a membership report; its verdicts and reasons are replaced.
        tolerance: the AUC upper bound a *no leakage found* must stay under.
    """
    holm_family([r.evidence for r in report.results])
    if report.control:
        holm_family([c.evidence for c in report.control])
    controls = {c.attack: c for c in report.control or []}
    decisions = []
    for r in report.results:
        ctl = controls.get(r.attack)
        d = decide_membership(r.evidence, ctl.evidence if ctl else None, tolerance=tolerance)
        r.verdict, r.reason = d.verdict, d.reason
        r.control_auc = ctl.auc if ctl else None
        decisions.append(d)
    report.verdict = position_verdict(decisions)
    leaking = [r.attack for r in report.results if r.verdict == "leaks"]
    reason = (f"{', '.join(leaking)} detect(s) members" if leaking else
              "every attack found nothing and leaked on the overfitted control"
              if report.verdict == "no leakage found" else
              "no attack leaked, and not every attack is vouched for by the control")
    if report.one_class:
        reason += ("; the model predicts one class for every audited image (stuck at a "
                   "single class): it has learned nothing to leak, which is not protection")
    report.reason = reason


__all__ = [
    "BUDGET_ATTACKS",
    "CONTROL_EPOCHS",
    "DEFAULT_FPRS",
    "REFERENCE_MODELS",
    "MembershipReport",
    "MembershipResult",
    "MembershipSets",
    "check_disjoint",
    "decide_membership_report",
    "fpr_label",
    "heldout_of",
    "membership_audit",
    "membership_sets",
    "overfitted_control",
    "predicts_one_class",
    "without_shared",
]
