"""``shieldsplit.audit``: score how much of the training data real attacks rebuild, and say
so in a verdict a privacy officer can rely on.

The auditor splits the data it is given into *victim* images (what the attacks try to
rebuild) and a disjoint *auxiliary* set (what the threat models grant the attacker:
images from the same distribution). It then runs every registered attack whose
declarations fit the model (:func:`applicable_attacks`): the split-learning attacks
(they observe ``activations``) where the model is deployed as split learning, the
federated attacks (``gradient``, ``update``) where it is federated, and an attack that
``adapts_to`` a defence only against that defence. A plain ``nn.Module`` is attacked
in both positions, at ``cut`` for split learning.

Each attack is scored against the true images (MSE, PSNR, SSIM), against what an
attacker gets without observing anything (the *no-attack baselines*: the mean
auxiliary image, and the auxiliary image nearest to each victim), by a line-up
(is the reconstruction nearer to its victim than to every auxiliary image?), and by a
reference classifier trained on the clean auxiliary images (attacker accuracy, and
balanced accuracy with a bootstrap interval beside chance and the majority rate).

An attack that failed proves nothing, so every verdict of *no leakage found* rests on
a **positive control**: the same attack at the same budget on a model known to leak.

- For a defence, its *undefended twin*: the same architecture at the same cut, trained
  on the audit's data (``control_epochs``), or the trained undefended model you pass as
  ``control``; the report also shows the reduction the defence buys.
- For a plain model, a *calibration* in the audited setting: the same attack on a
  freshly initialised copy of the architecture, at the same cut and with the same
  observation protocol (a control in another setting, another cut or batch-1 gradients
  for a FedAvg update, vouches for nothing and the rule says so).

A *no leakage found* also needs the target significantly below its control, every upper
bound under the audit's :class:`~shieldsplit.functional.verdict.Tolerance` (quoted in the
verdict), and, for a defence, every attack that declares it adapts to that defence run.

The decision rule (:mod:`shieldsplit.functional.verdict`) gives one verdict per attack
and one per attacker position; the summary, the JSON and the HTML open with those
verdicts in words. Reconstructions stay in memory; they are written only by
``report.save_html(path, include_images=True)``.

Example:
    >>> import shieldsplit as ss
    >>> from shieldsplit.data import load_dataset
    >>> ds = load_dataset("digits", seed=0, limit=96)
    >>> net = ss.PGSLNet(num_classes=10, image_size=8, width=8, hidden=16)
    >>> report = ss.audit(net, data=(ds.x_train, ds.y_train), cut=2, budget="quick", seed=0,
    ...                   attacks=["split-black-box"], victims=8, progress=False)
    >>> [r.attack for r in report.results], report.complete, [v.position for v in report.verdicts]
    (['split-black-box'], True, ['split'])
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from shieldsplit import attacks as _attacks
from shieldsplit._core.progress import progress_bar
from shieldsplit._core.provenance import library_versions, machine_info
from shieldsplit._core.validate import check_int
from shieldsplit.attacks.base import (
    AttackContext,
    Budget,
    Observation,
    Reconstruction,
    ThreatModel,
    attack_class,
    available_attacks,
)
from shieldsplit.attacks.observe import observe_gradient, observe_update
from shieldsplit.attacks.observe_split import observe_activations
from shieldsplit.audit.budgets import (
    CONTROL_EPOCHS,
    FEDAVG,
    FEDAVG_BATCHES,
    FEDERATED_VICTIMS,
    REFERENCE_EPOCHS,
    VICTIMS,
)
from shieldsplit.audit.membership import heldout_of, membership_audit
from shieldsplit.audit.report import (
    AttackResult,
    AuditReport,
    BaselineScore,
    ControlResult,
    PositionVerdict,
    render_html,
)
from shieldsplit.audit.verdicts import (
    decide_report,
    decide_results,
    membership_verdict,
    unrun_adaptive,
)
from shieldsplit.cutting import split_model
from shieldsplit.datacontract import as_tensors
from shieldsplit.defenses.base import Defense
from shieldsplit.errors import ConfigError, EmptyDataError, ShieldSplitError, UnsupportedModelError
from shieldsplit.functional.metrics import (
    distance_correlation,
    label_recovery_rate,
    mse,
    psnr,
    ssim,
)
from shieldsplit.functional.stats import (
    align_labels,
    balanced_accuracy,
    interleave_classes,
    lineup_identified,
    majority_rate,
    match_order,
    no_attack_baselines,
)
from shieldsplit.functional.verdict import (
    Tolerance,
    check_tolerance,
    evidence,
)
from shieldsplit.plots import png_base64
from shieldsplit.training import accuracy, eval_mode, fit_plain

logger = logging.getLogger(__name__)

#: Why an audit ran no membership inference: no held-out images / not asked for.
MEMBERSHIP_OFF = ("membership inference not run: the data holds no images the model did "
                  "not train on; pass heldout= (labelled images of the same distribution "
                  "it never saw) or data= an ImageDataset with heldout='auto'")
MEMBERSHIP_ASK = ("membership inference not run (it trains reference models and an "
                  "overfitted control: several times the model's own training); pass "
                  "heldout='auto' to use this ImageDataset's validation and test images "
                  "as the non-members")


def applicable_attacks(model: nn.Module) -> tuple[str, ...]:
    """The registered attacks whose declarations fit ``model`` (no name lists).

    An attack applies when its position (``split`` for attacks that observe activations,
    ``federated`` for gradients and updates) is among the surfaces the model is deployed
    under (a plain model: both), and, if it ``adapts_to`` defences, the model is one of them.

    Args:
        model: a plain classifier or a :class:`~shieldsplit.defenses.base.Defense`.

    Returns:
        Attack names, the split-learning attacks first (black-box, white-box, GAN prior,
        adaptive), then the federated ones, by name.

    Example:
        >>> from torch import nn
        >>> "adaptive-split" in applicable_attacks(nn.Linear(2, 2))
        False
    """
    surfaces = model.surfaces if isinstance(model, Defense) else frozenset({"split", "federated"})
    name = model.name if isinstance(model, Defense) else None
    out = []
    for attack in available_attacks("reconstruction"):
        cls = attack_class(attack, "reconstruction")
        if cls.position() in surfaces and (not cls.adapts_to or name in cls.adapts_to):
            out.append(attack)
    order = list(get_args(ThreatModel))
    return tuple(sorted(out, key=lambda a: (attack_class(a).position() != "split",
                                            order.index(attack_class(a).threat_model), a)))


def defense_attacks(defense: Defense) -> tuple[str, ...]:
    """The attacks that apply to ``defense`` (see :func:`applicable_attacks`).

    Args:
        defense: any registered defence.

    Returns:
        Attack names.
    """
    return applicable_attacks(defense)


def default_attacks(model: nn.Module, budget: Budget) -> list[str]:
    """The attacks an audit runs when none are named: every applicable one, less those
    that declare another stands for them at the quick budget.

    Args:
        model: the audited model.
        budget: the audit budget.

    Returns:
        Attack names.
    """
    return [n for n in applicable_attacks(model)
            if budget != "quick" or attack_class(n, "reconstruction").quick_default]


# --------------------------------------------------------------------------- data handling
def _reference_classifier(
    x: Tensor, y: Tensor, num_classes: int, *, epochs: int, seed: int
) -> nn.Module:
    """A small CNN trained on the clean auxiliary data: the attacker-accuracy judge."""
    c = x.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ref = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(32), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(64),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(256, num_classes),
        )
        g = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True, generator=g
        )
        fit_plain(ref, loader, epochs=epochs, seed=seed, progress=False)
    return ref.eval()


# --------------------------------------------------------------------------- the setting
@dataclass
class _Setting:
    """What every attack of one audit shares: victims, auxiliary data, the judge."""

    vx: Tensor
    vy: Tensor
    ax: Tensor
    ay: Tensor
    num_classes: int
    reference: nn.Module
    baseline_psnr: Tensor  # (victims,) the best no-attack guess per victim
    budget: Budget
    seed: int
    progress: bool
    options: dict[str, dict[str, Any]]  # attack name -> its validated options

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (int(self.vx.shape[1]), int(self.vx.shape[2]), int(self.vx.shape[3]))


@dataclass
class _Target:
    """One model the attacks are run on (the audited model, or a control)."""

    head: nn.Module  # what a split-learning attacker queries (a Defense or a split head)
    fl_model: nn.Module  # an eval-mode copy of what a federated server holds
    defense: Defense | None
    cut: int | str
    wire: Observation


def _plain_target(model: nn.Module, cut: int | str, vx: Tensor) -> _Target:
    parts = split_model(model, cut)
    head = parts.head.eval()
    # Federated attacks see the model in eval mode (no dropout masks, BatchNorm on its
    # running statistics): the setting gradient inversion is evaluated in, since random
    # dropout masks cannot be matched by any attacker.
    return _Target(head=head, fl_model=copy.deepcopy(model).eval(), defense=None,
                   cut=parts.cut, wire=observe_activations(head, vx))


def _defense_target(defense: Defense, vx: Tensor) -> _Target:
    return _Target(head=defense, fl_model=copy.deepcopy(defense.federated_model()).eval(),
                   defense=defense, cut=defense.cut, wire=observe_activations(defense, vx))


def _probe_logits(model: nn.Module, x: Tensor) -> int:
    with torch.no_grad(), eval_mode(model):
        out = model(x)
    if not isinstance(out, Tensor) or out.dim() != 2:
        raise UnsupportedModelError.build(
            what="model", expected="a classifier returning (N, classes) logits",
            received=f"{type(out).__name__} of shape {tuple(getattr(out, 'shape', ()))}",
            fix="wrap the model so that forward returns a 2-D logits tensor",
        )
    return int(out.shape[-1])


def _clean_accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    if isinstance(model, Defense):
        return float((model.predict_proba(x).argmax(-1) == y).double().mean())
    with eval_mode(model):
        return accuracy(model, [(x, y)])


# --------------------------------------------------------------------------- the audit
def audit(
    model: nn.Module,
    *,
    data: Any,
    cut: int | str = 2,
    budget: Budget = "quick",
    seed: int = 0,
    attacks: Sequence[str] | None = None,
    victims: int | None = None,
    control: Any = "auto",
    control_epochs: int | None = None,
    heldout: Any = None,
    batch_size: int = 32,
    attack_options: Mapping[str, Mapping[str, Any]] | None = None,
    tolerance: Tolerance | Mapping[str, float] | None = None,
    progress: bool = True,
) -> AuditReport:
    """Attack ``model`` with every applicable attack, score what leaks, and give verdicts.

    Args:
        model: a plain classifier or a :class:`~shieldsplit.defenses.base.Defense` (such as
            a :class:`~shieldsplit.SplitShield`); it is not modified (nor the train/eval
            mode of any of its submodules).
        data: labelled images in [0, 1], in any form of docs/data.md (a DataLoader, a
            Dataset, an ``(x, y)`` pair, an ``ImageDataset``'s training split). A seeded random
            ``victims`` of them are the victims; the rest is the attacker's auxiliary data.
        cut: where the split-learning attacks observe a plain model (ignored for a
            Defense, which has its own cut).
        budget: ``quick``, ``standard`` or ``thorough`` (iterations, epochs, image counts).
        seed: seeds the victim/auxiliary split, every attack and the control.
        attacks: attack names to run (default: every applicable one; the quick budget
            leaves out those that declare ``quick_default = False``).
        victims: number of victim images (default by budget: 64/128/256).
        control: the positive control. ``"auto"``: a defence's undefended twin, trained
            on ``data`` for ``control_epochs``; a plain model's calibration. An
            ``nn.Module``: your trained undefended model of the same architecture (for a
            defence). An :class:`AuditReport` of the control made with the same seed,
            budget and victims (what ``compare`` passes), or the list of its
            :class:`AttackResult` (what ``reproduce`` keeps). ``None``: no control (every
            verdict that needs one is *inconclusive*).
        control_epochs: training epochs of the undefended twin (default
            :data:`CONTROL_EPOCHS` by budget; pass your defence's own epochs to compare
            like with like). Membership inference's reference models repeat them too.
        heldout: labelled images from the same distribution that the model did NOT
            train on (any form of docs/data.md): the audit also runs membership inference
            (docs/membership.md), the victims being the members and these the
            non-members, with its own verdict and overfitted control. ``"auto"``: an
            ImageDataset's validation and test images (less copies of training images).
            ``None`` (default; membership trains reference models and a control, several
            times the model's own training, see docs/membership.md): not run, and
            ``membership_note`` says how to run it.
        batch_size: the batch size the model was trained with (membership inference's
            reference models repeat it, as they repeat ``control_epochs``).
        attack_options: ``attack name -> {option: value}``, each validated by that
            attack's ``Config`` before any work (``shieldsplit options`` lists them), e.g.
            ``{"inverting-gradients": {"iterations": 500}}``. The attack's control runs
            with the same options, so its verdict still compares like with like.
        tolerance: what a *no leakage found* must bound each kind of evidence under (the
            95% upper bounds of re-identification, PSNR gain, balanced accuracy above
            chance, label recovery above the majority rate, membership AUC above 0.5): a
            :class:`~shieldsplit.functional.verdict.Tolerance`, or a mapping of its fields
            (default: ``Tolerance()``, the values of docs/audit.md). Every such verdict
            quotes it.
        progress: show progress bars.

    Returns:
        The report. If the audit is cancelled with Ctrl-C, the report of what
        finished, marked ``complete=False``.

    Raises:
        EmptyDataError, InputShapeError, LabelError: if the data cannot be read, is too
            small, or breaks the data contract of docs/data.md (the model is probed on it).
        UnsupportedModelError: not a module, or a float64 model.
        InvalidCutError: if ``cut`` does not exist in the model.
        UnsupportedModelError: if the model does not return logits, or a defence has no
            undefended twin (the message names ``control=``).
        ConfigError: for an unknown budget, attack name or control.

    Reference:
        Geiping et al. 2020; Zhu et al. 2019; Zhao et al. 2020; He et al. 2019;
        Titcombe et al. 2021; Khowaja et al. 2022.
    """
    if budget not in VICTIMS:
        raise ConfigError.build(
            what="budget", expected=f"one of {sorted(VICTIMS)}", received=repr(budget),
            fix="pass budget='quick'",
        )
    n_victims = VICTIMS[budget] if victims is None else check_int(
        "victims", victims, low=1, fix="pass victims=16 or more (None: the budget's default)")
    if control_epochs is not None:
        check_int("control_epochs", control_epochs, low=1, fix="pass your defence's epochs")
    control = _check_control(control)
    tol = check_tolerance(tolerance)
    if isinstance(heldout, str) and heldout != "auto":
        raise ConfigError.build(what="heldout", expected="'auto', labelled images or None",
                                received=repr(heldout)[:80], fix="pass heldout='auto'")
    x_all, y_all = as_tensors(data, model=model)  # the one data contract (docs/data.md)
    if len(x_all) < n_victims + 16:
        raise EmptyDataError.build(
            what="data",
            expected=f"at least {n_victims + 16} images ({n_victims} victims + 16 auxiliary)",
            received=f"{len(x_all)} images",
            fix="pass more data or a smaller victims= count",
        )
    perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(seed))
    chosen = perm[:n_victims]
    # classes in turn: the federated attacks rebuild the first victims, which should not
    # all be of the majority class (balanced accuracy would then be blind)
    chosen = chosen[interleave_classes(y_all[chosen])]
    vx, vy = x_all[chosen], y_all[chosen].long()
    ax, ay = x_all[perm[n_victims:]], y_all[perm[n_victims:]].long()

    shield = model if isinstance(model, Defense) else None
    if shield is not None:
        num_classes = shield.num_classes
        target = _defense_target(shield, vx)
    else:
        num_classes = _probe_logits(model, vx[:2])
        with eval_mode(model):
            target = _plain_target(model, cut, vx)
    applicable = applicable_attacks(model)
    names = list(attacks) if attacks is not None else default_attacks(model, budget)
    for name in names:
        if name not in applicable:
            raise ConfigError.build(
                what="attacks", expected=f"names from {list(applicable)} for this model",
                received=repr(name), fix="drop it or audit a model it applies to",
            )
    tuned = checked_attack_options(attack_options, names)
    _check_control_report(control, seed=seed, budget=budget, victims=n_victims)

    report = AuditReport(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=f"{_architecture(model)} "
        f"({sum(p.numel() for p in model.parameters())} parameters)",
        defense=shield.name if shield is not None else "none",
        cut=target.cut, budget=budget, seed=seed, victims=n_victims, auxiliary=len(ax),
        clean_accuracy=_clean_accuracy(model, vx, vy), majority_rate=majority_rate(vy),
        chance=1.0 / len(torch.unique(vy)), versions=library_versions(), machine=machine_info(),
        tolerance=tol,
    )
    if target.wire.activations is not None:
        report.distance_correlation = distance_correlation(vx, target.wire.activations)
    reference = _reference_classifier(ax, ay, num_classes, epochs=REFERENCE_EPOCHS[budget],
                                      seed=seed)
    with torch.no_grad():
        report.reference_accuracy = accuracy(reference, [(vx, vy)])
        report.reference_balanced_accuracy = balanced_accuracy(reference(vx).argmax(-1), vy)
    setting = _Setting(vx=vx, vy=vy, ax=ax, ay=ay, num_classes=num_classes,
                       reference=reference,
                       baseline_psnr=_score_baselines(report, vx, vy, ax, reference),
                       budget=budget, seed=seed, progress=progress, options=tuned)

    with progress_bar(names, total=len(names), description="audit", enabled=progress) as todo:
        for name in todo:
            result, images, truth = _attack(name, target, setting)
            report.results.append(result)
            if images is not None:
                report._images[name] = (truth, images)
            if result.status == "cancelled":
                report.complete = False
                logger.warning("audit cancelled during %s; the report is partial", name)
                break
    if report.complete:
        try:
            _run_controls(report, model, target, setting, control, control_epochs, x_all, y_all)
        except KeyboardInterrupt:
            report.complete = False
            logger.warning("audit cancelled while running its controls; the report is partial")
    decide_report(report)
    held = heldout_of(data) if isinstance(heldout, str) else heldout
    if held is not None and report.complete:
        _membership(report, model, setting, held, control, control_epochs, batch_size, tol)
    elif held is None:
        report.membership_note = (MEMBERSHIP_ASK if heldout is None and heldout_of(data)
                                  is not None else MEMBERSHIP_OFF)
    scored = [r for r in report.results if r.psnr is not None]
    report.ranking = [r.attack for r in sorted(scored, key=lambda r: -(r.psnr or 0.0))]
    return report


def checked_attack_options(
    options: Mapping[str, Mapping[str, Any]] | None, names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Validate per-attack options against each attack's ``Config`` (see :func:`audit`).

    Args:
        options: ``attack name -> {option: value}``, or None.
        names: the attacks the audit runs.

    Returns:
        The options as plain dicts (only the given fields, so the rest keep defaults).

    Raises:
        ConfigError: options for an attack the audit does not run, an unknown option,
            or a value of the wrong type or out of range.

    Example:
        >>> checked_attack_options({"inverting-gradients": {"iterations": 5}},
        ...                        ["inverting-gradients"])
        {'inverting-gradients': {'iterations': 5}}
    """
    out: dict[str, dict[str, Any]] = {}
    for name, given in (options or {}).items():
        if name not in names:
            raise ConfigError.build(
                what="attack_options", expected=f"options for attacks the audit runs {list(names)}",
                received=repr(name), fix="add the attack to attacks= or drop its options",
            )
        if not isinstance(given, Mapping):
            raise ConfigError.build(
                what=f"attack_options[{name!r}]", expected="a mapping option -> value",
                received=type(given).__name__, fix='pass e.g. {"iterations": 500}',
            )
        attack_class(name, "reconstruction").configure(dict(given))
        out[name] = dict(given)
    return out


def _check_control(control: Any) -> Any:
    if isinstance(control, (list, tuple)) and all(isinstance(r, AttackResult) for r in control):
        return list(control)
    if not (control is None or isinstance(control, (str, nn.Module, AuditReport))) or (
            isinstance(control, str) and control != "auto"):
        raise ConfigError.build(
            what="control",
            expected="'auto', a trained nn.Module, an AuditReport, a list of AttackResult "
                     "or None",
            received=repr(control)[:80], fix="pass control='auto'",
        )
    return control


def _check_control_report(control: Any, *, seed: int, budget: str, victims: int) -> None:
    if isinstance(control, AuditReport) and (
            control.seed, control.budget, control.victims) != (seed, budget, victims):
        raise ConfigError.build(
            what="control",
            expected=f"an AuditReport made with seed {seed}, budget {budget!r}, "
                     f"{victims} victims (the same victims and attacks)",
            received=f"seed {control.seed}, budget {control.budget!r}, "
                     f"{control.victims} victims",
            fix="audit the control with the same seed, budget and victims, or pass "
                "control='auto'",
        )


def _architecture(model: nn.Module) -> str:
    template = model.template() if isinstance(model, Defense) else None
    return type(template if template is not None else model).__name__


def _score_baselines(report: AuditReport, vx: Tensor, vy: Tensor, ax: Tensor,
                     reference: nn.Module) -> Tensor:
    """Score the no-attack guesses over every victim; return the best one's PSNR per victim."""
    best = torch.full((len(vx),), -float("inf"))
    for name, guess in no_attack_baselines(vx, ax).items():
        p = psnr(guess, vx).clamp(max=100)
        best = torch.maximum(best, p)
        with torch.no_grad():
            pred = reference(guess).argmax(-1)
        report.baselines.append(BaselineScore(
            name=name, mse=float(mse(guess, vx).mean()), psnr=float(p.mean()),
            ssim=float(ssim(guess, vx).mean()),
            attacker_accuracy=float((pred == vy).double().mean()),
            balanced_accuracy=balanced_accuracy(pred, vy)))
    return best


# --------------------------------------------------------------------------- one attack
def setting_words(kind: str, cut: int | str) -> str:
    """Where an attack observes, in words: what a control must share to vouch for it.

    Args:
        kind: ``activations``, ``gradient`` or ``update``.
        cut: the split point (for activations).

    Returns:
        The setting (position, cut or observation, batch size, protocol).

    Example:
        >>> setting_words("activations", 2)
        'split learning, activations at cut 2'
    """
    if kind == "activations":
        return f"split learning, activations at cut {cut}"
    if kind == "update":
        return (f"federated, FedAvg update of {FEDAVG['local_epochs']} local epochs of SGD "
                f"(lr {FEDAVG['lr']:g}) at batch {FEDAVG['local_batch_size']}")
    return "federated, gradient of one image"


def _observe(target: _Target, s: _Setting, kind: str) -> tuple[list[Observation], Tensor]:
    """The observations an attack gets of ``target`` and the victim indices they cover
    (batch-1 gradients of the budget's count of victims)."""
    if kind == "activations":
        return [target.wire], torch.arange(len(s.vx))
    if kind == "update":
        k = int(FEDAVG["local_batch_size"])
        batches = max(1, min(FEDAVG_BATCHES[s.budget], len(s.vx) // k))
        obs = []
        for b in range(batches):
            x, y = s.vx[b * k : (b + 1) * k], s.vy[b * k : (b + 1) * k]
            obs.append(target.defense.observe_federated(x, y, kind="update", seed=s.seed,
                                                        **FEDAVG)
                       if target.defense is not None
                       else observe_update(target.fl_model, x, y, seed=s.seed, **FEDAVG))
        return obs, torch.arange(min(batches * k, len(s.vx)))
    n = min(FEDERATED_VICTIMS[s.budget], len(s.vx))
    obs = [
        target.defense.observe_federated(s.vx[i : i + 1], s.vy[i : i + 1], kind="gradient",
                                         seed=s.seed + i)
        if target.defense is not None
        else observe_gradient(target.fl_model, s.vx[i : i + 1], s.vy[i : i + 1])
        for i in range(n)]
    return obs, torch.arange(n)


def _attack(name: str, target: _Target, s: _Setting) -> tuple[AttackResult, Tensor | None,
                                                               Tensor]:
    """Run one attack on ``target`` (what it declares it observes) and score it."""
    start = time.perf_counter()
    cls = attack_class(name, "reconstruction")
    observes = cls.observes
    attack = _attacks.create_attack(name, seed=s.seed, progress=s.progress,
                                    **s.options.get(name, {}))
    base = {"attack": name, "threat_model": attack.threat_model, "observes": observes,
            "position": cls.position()}
    try:
        context = AttackContext(
            image_shape=s.image_shape, num_classes=s.num_classes,
            model=target.head if cls.position() == "split" else target.fl_model,
            auxiliary_images=s.ax, auxiliary_labels=s.ay,
            defense=target.defense if cls.position() == "split" else None,
            budget=s.budget, seed=s.seed,
        )
        attack.prepare(context)
        observations, idx = _observe(target, s, observes)
        many = getattr(attack, "reconstruct_many", None)  # batched: one optimisation
        recs = (list(many(observations)) if many is not None and len(observations) > 1
                else [attack.reconstruct(o) for o in observations])
        rec = _merge(recs, name)
    except KeyboardInterrupt:
        return (AttackResult(**base, images=0, seconds=time.perf_counter() - start,
                             status="cancelled"), None, s.vx[:0])
    except ShieldSplitError as exc:
        return (AttackResult(**base, images=0, seconds=time.perf_counter() - start,
                             status="failed", error=str(exc)), None, s.vx[:0])
    truth_x, truth_y = s.vx[idx], s.vy[idx]
    images = rec.images.detach().float().clamp(0, 1)
    if observes == "update":  # an update is a sum over its batch: it reveals no order
        k = int(FEDAVG["local_batch_size"])
        images = torch.cat([match_order(images[i : i + k], truth_x[i : i + k])
                            for i in range(0, len(images), k)])
    labels = rec.labels
    if observes == "update" and labels is not None:
        k = int(FEDAVG["local_batch_size"])
        labels = torch.cat([align_labels(labels[i : i + k], truth_y[i : i + k])
                            for i in range(0, len(labels), k)])
    per_psnr = psnr(images, truth_x).clamp(max=100)
    with torch.no_grad():
        predicted = s.reference(images).argmax(-1)
    ev = evidence(
        rec_psnr=per_psnr, baseline_psnr=s.baseline_psnr[idx],
        identified=lineup_identified(images, truth_x, s.ax), lineup_size=len(s.ax) + 1,
        predicted=predicted, true=truth_y, inferred_labels=labels, seed=s.seed,
        setting=setting_words(observes, target.cut),
        matched_among=int(FEDAVG["local_batch_size"]) if observes == "update" else 1,
    )
    result = AttackResult(
        **base,
        images=len(images),
        mse=float(mse(images, truth_x).mean()),
        psnr=float(per_psnr.mean()),
        ssim=float(ssim(images, truth_x).mean()),
        baseline_psnr=float(s.baseline_psnr[idx].mean()),
        attacker_accuracy=float((predicted == truth_y).double().mean()),
        balanced_accuracy=ev.balanced_accuracy,
        label_recovery=label_recovery_rate(labels, truth_y) if labels is not None else None,
        evidence=ev,
        diagnostics=_diagnostics(recs),
        seconds=time.perf_counter() - start,
    )
    return result, images, truth_x


def _diagnostics(recs: list[Reconstruction]) -> dict[str, float]:
    """Convergence facts the attacks put in their meta, averaged over observations."""
    out: dict[str, float] = {}
    keys = ("initial_loss", "loss", "final_loss", "heldout_loss", "train_loss")
    for key in keys:
        values = [float(r.meta[key]) for r in recs if isinstance(r.meta.get(key), (int, float))]
        if values:
            out[key] = sum(values) / len(values)
    final = out.get("loss", out.get("final_loss"))
    if final is not None and out.get("initial_loss"):
        out["loss_ratio"] = final / out["initial_loss"]
    return out


def _merge(recs: list[Reconstruction], name: str) -> Reconstruction:
    # labels the observation granted are not inferred: they say nothing about leakage
    labels = [None if r.meta.get("labels_from") == "given" else r.labels for r in recs]
    return Reconstruction(
        images=torch.cat([r.images for r in recs]),
        attack=name,
        labels=torch.cat([lab for lab in labels if lab is not None])
        if all(lab is not None for lab in labels) else None,
        seconds=sum(r.seconds for r in recs),
    )


# --------------------------------------------------------------------------- controls
def _run_controls(
    report: AuditReport, model: nn.Module, target: _Target, s: _Setting, control: Any,
    control_epochs: int | None, x_all: Tensor, y_all: Tensor,
) -> None:
    """Attach to every finished attack the same attack on the positive control."""
    ok = [r for r in report.results if r.status == "ok"]
    if control is None or not ok:
        report.control = "none (verdicts that need a control are inconclusive)"
        return
    if isinstance(control, (AuditReport, list)):
        results, defense = ((control.results, control.defense) if isinstance(control, AuditReport)
                            else (control, "none"))
        report.control = ("the undefended audit you passed"
                          + (f" ({control.model})" if isinstance(control, AuditReport) else ""))
        previous = {r.attack: r for r in results}
        for r in ok:
            stand_in = _stand_in(r.attack, defense)
            c = previous.get(stand_in)
            r.control = (_control_from(c, "your control", report.control) if c is not None
                         else None)
        return
    shield = model if isinstance(model, Defense) else None
    if shield is not None and shield.name != "none":
        twin, kind, description = _twin_target(shield, control, control_epochs, x_all, y_all, s)
        report.control_accuracy = _clean_accuracy(twin.defense or twin.fl_model, s.vx, s.vy)
        report.control = f"{description}; its accuracy on the victims {report.control_accuracy:.1%}"
        for r in ok:
            stand_in = _stand_in(r.attack, "none")
            c, _, _ = _attack(stand_in, twin, s)
            r.control = _control_from(c, kind, description)
        return
    if isinstance(control, nn.Module):
        raise ConfigError.build(
            what="control", expected="'auto' or None for a plain (undefended) model",
            received=type(control).__name__,
            fix="audit a plain model with control='auto' (a calibration run)",
        )
    # A plain model (or the undefended split itself): calibrate what found nothing, in
    # the audited setting (same cut, same observation protocol), on untrained weights.
    report.control = ("calibration: the same attacks on a freshly initialised copy of the "
                      f"architecture, at cut {target.cut} and with the same observation "
                      "protocol")
    fresh: _Target | None = None
    for r in ok:
        if r.evidence is not None and r.evidence.leaks:
            continue
        if fresh is None:
            fresh = _fresh_target(model, target, s)
        c, _, _ = _attack(r.attack, fresh, s)
        r.control = _control_from(c, "calibration",
                                  f"a freshly initialised {_architecture(model)} at cut "
                                  f"{target.cut}, same protocol")


def _fresh_target(model: nn.Module, target: _Target, s: _Setting) -> _Target:
    """The calibration target: a copy of ``model`` with every layer re-initialised (seeded),
    observed at the same cut (the user's model is not touched)."""
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None)
            if module is not fresh and callable(reset):
                reset()
    fresh.eval()
    if isinstance(fresh, Defense):
        return _defense_target(fresh, s.vx)
    return _plain_target(fresh, target.cut, s.vx)


def _stand_in(attack: str, defense_name: str) -> str:
    """The attack that stands for ``attack`` on a model with defence ``defense_name``."""
    cls = attack_class(attack, "reconstruction")
    if cls.adapts_to and defense_name not in cls.adapts_to and cls.control_attack:
        return cls.control_attack
    return attack


def _twin_target(
    shield: Defense, control: Any, epochs: int | None, x_all: Tensor, y_all: Tensor, s: _Setting,
) -> tuple[_Target, Literal["undefended twin", "your control"], str]:
    if isinstance(control, nn.Module) and not isinstance(control, Defense):
        with eval_mode(control):
            return (_plain_target(control, shield.cut, s.vx), "your control",
                    f"your undefended model {type(control).__name__} at cut {shield.cut}")
    if isinstance(control, Defense):
        return _defense_target(control, s.vx), "your control", f"your {control.name} model"
    try:
        twin = shield.undefended_twin()
    except NotImplementedError as exc:
        raise UnsupportedModelError.build(
            what="control", expected=f"an undefended twin of {type(shield).__name__}",
            received=f"none ({exc})",
            fix="pass audit(..., control=<your trained undefended model>) or control=None",
        ) from None
    n_epochs = epochs if epochs is not None else CONTROL_EPOCHS[s.budget]
    g = torch.Generator().manual_seed(s.seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_all, y_all.long()),
                                         batch_size=64, shuffle=True, generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        twin.fit(loader, epochs=n_epochs, seed=s.seed, progress=s.progress)
    twin.eval()
    return (_defense_target(twin, s.vx), "undefended twin",
            f"undefended twin ({_architecture(shield)} at cut {twin.cut}, "
            f"trained {n_epochs} epochs on the audit's {len(x_all)} images)")


def _control_from(r: AttackResult, kind: Any, description: str) -> ControlResult:
    return ControlResult(kind=kind, description=description, attack=r.attack, images=r.images,
                         psnr=r.psnr, balanced_accuracy=r.balanced_accuracy, status=r.status,
                         evidence=r.evidence)


# --------------------------------------------------------------------------- membership
def _membership(report: AuditReport, model: nn.Module, s: _Setting, heldout: Any,
                control: Any, control_epochs: int | None, batch_size: int,
                tolerance: Tolerance) -> None:
    """Membership inference on the victims (members) against ``heldout`` (non-members)."""
    hx, hy = as_tensors(heldout, model=model)
    m = membership_audit(
        model, members=(s.vx, s.vy), nonmembers=(hx, hy), auxiliary=(s.ax, s.ay),
        epochs=control_epochs or CONTROL_EPOCHS[s.budget], batch_size=batch_size,
        budget=s.budget, seed=s.seed,
        control=None if control is None else "auto", tolerance=tolerance,
    )
    report.membership = m
    report.verdicts.append(membership_verdict(m))


__all__ = [
    "CONTROL_EPOCHS",
    "AttackResult",
    "AuditReport",
    "BaselineScore",
    "ControlResult",
    "PositionVerdict",
    "applicable_attacks",
    "audit",
    "check_tolerance",
    "decide_report",
    "decide_results",
    "default_attacks",
    "defense_attacks",
    "library_versions",
    "membership_verdict",
    "png_base64",
    "render_html",
    "setting_words",
    "unrun_adaptive",
]
