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

This module is the orchestration: which attacks run, the victim/auxiliary split, and the
order of the steps. One attack on one model (the shared setting, the observation and the
scoring) is :mod:`shieldsplit.audit.runner`; the positive controls are
:mod:`shieldsplit.audit.controls`; the budgets and the verdict wording are
:mod:`~shieldsplit.audit.budgets` and :mod:`~shieldsplit.audit.verdicts`.

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

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, get_args

import torch
from torch import nn

from shieldsplit import attacks as _attacks  # noqa: F401  (tests patch _attacks.create_attack)
from shieldsplit._core.progress import progress_bar
from shieldsplit._core.provenance import library_versions, machine_info
from shieldsplit._core.validate import check_int, check_seed
from shieldsplit.attacks.base import Budget, ThreatModel, attack_class, available_attacks
from shieldsplit.audit.budgets import (
    CONTROL_EPOCHS,
    FEDAVG,
    FEDAVG_BATCHES,
    FEDERATED_VICTIMS,
    REFERENCE_EPOCHS,
    VICTIMS,
)
from shieldsplit.audit.controls import check_control, check_control_report, run_controls
from shieldsplit.audit.membership import heldout_of, membership_audit
from shieldsplit.audit.report import (
    AttackResult,
    AuditReport,
    BaselineScore,
    ControlResult,
    PositionVerdict,
    render_html,
)
from shieldsplit.audit.runner import (
    AttackSetting,
    architecture,
    build_setting,
    clean_accuracy,
    defense_target,
    plain_target,
    probe_logits,
    run_attack,
    setting_words,
)
from shieldsplit.audit.verdicts import (
    decide_report,
    decide_results,
    membership_verdict,
    unrun_adaptive,
)
from shieldsplit.datacontract import as_tensors, check_model
from shieldsplit.defenses.base import Defense
from shieldsplit.errors import ConfigError, EmptyDataError
from shieldsplit.functional.metrics import distance_correlation
from shieldsplit.functional.stats import interleave_classes, majority_rate
from shieldsplit.functional.verdict import Tolerance, check_tolerance
from shieldsplit.plots import png_base64
from shieldsplit.training import eval_mode

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


def default_attacks(model: nn.Module, budget: Budget, *,
                    image_shape: tuple[int, ...] | None = None) -> list[str]:
    """The attacks an audit runs when none are named: every applicable one, less those
    that declare another stands for them at the quick budget, and, on images larger than
    they declare they fit at the quick budget (``Attack.quick_max_pixels``), those too.

    Args:
        model: the audited model.
        budget: the audit budget.
        image_shape: ``(C, H, W)`` of the audited images (None: any size fits).

    Returns:
        Attack names.

    Example:
        >>> from torch import nn
        >>> small = default_attacks(nn.Linear(2, 2), "quick", image_shape=(3, 28, 28))
        >>> large = default_attacks(nn.Linear(2, 2), "quick", image_shape=(3, 224, 224))
        >>> sorted(set(small) - set(large))
        ['gan-prior', 'inverting-gradients', 'inverting-gradients-fedavg', 'split-white-box']
    """
    pixels = 0 if image_shape is None else int(image_shape[-1]) * int(image_shape[-2])

    def fits(cls: Any) -> bool:
        return cls.quick_default and (cls.quick_max_pixels is None
                                      or pixels <= cls.quick_max_pixels)

    return [n for n in applicable_attacks(model)
            if budget != "quick" or fits(attack_class(n, "reconstruction"))]


# --------------------------------------------------------------------------- the audit
def audit(
    model: nn.Module,
    *,
    data: Any,
    cut: int | str = 2,
    budget: Budget = "quick",
    seed: int = 0,
    attacks: Sequence[str] | str | None = None,
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
        attacks: attack names to run, or one name as a string (default: every applicable
            one; the quick budget leaves out those that declare ``quick_default = False``
            and, on images of more than 64x64 pixels, those whose ``quick_max_pixels`` is
            smaller: at 224 px the split decoder and the malicious server's imprint run).
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
    check_model(model)  # a module with real float32 weights, before anything else
    seed = check_seed(seed)
    if budget not in VICTIMS:
        raise ConfigError.build(
            what="budget", expected=f"one of {sorted(VICTIMS)}", received=repr(budget),
            fix="pass budget='quick'",
        )
    n_victims = VICTIMS[budget] if victims is None else check_int(
        "victims", victims, low=1, fix="pass victims=16 or more (None: the budget's default)")
    if control_epochs is not None:
        check_int("control_epochs", control_epochs, low=1, fix="pass your defence's epochs")
    control = check_control(control)
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
        target = defense_target(shield, vx)
    else:
        num_classes = probe_logits(model, vx[:2])
        with eval_mode(model):
            target = plain_target(model, cut, vx)
    applicable = applicable_attacks(model)
    # one name as a string is that one attack (not its letters)
    names = ([attacks] if isinstance(attacks, str) else list(attacks)) if attacks is not None \
        else default_attacks(model, budget, image_shape=tuple(vx.shape[1:]))
    for name in names:
        if name not in applicable:
            raise ConfigError.build(
                what="attacks", expected=f"names from {list(applicable)} for this model",
                received=repr(name), fix="drop it or audit a model it applies to",
            )
    tuned = checked_attack_options(attack_options, names)
    check_control_report(control, seed=seed, budget=budget, victims=n_victims)

    report = AuditReport(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=f"{architecture(model)} "
        f"({sum(p.numel() for p in model.parameters())} parameters)",
        defense=shield.name if shield is not None else "none",
        cut=target.cut, budget=budget, seed=seed, victims=n_victims, auxiliary=len(ax),
        clean_accuracy=clean_accuracy(model, vx, vy), majority_rate=majority_rate(vy),
        chance=1.0 / len(torch.unique(vy)), versions=library_versions(), machine=machine_info(),
        tolerance=tol,
    )
    if target.wire.activations is not None:
        report.distance_correlation = distance_correlation(vx, target.wire.activations)
    setting = build_setting(report, vx=vx, vy=vy, ax=ax, ay=ay, num_classes=num_classes,
                            budget=budget, seed=seed, progress=progress, options=tuned)

    with progress_bar(names, total=len(names), description="audit", enabled=progress) as todo:
        for name in todo:
            result, images, truth = run_attack(name, target, setting)
            report.results.append(result)
            if images is not None:
                report._images[name] = (truth, images)
            if result.status == "cancelled":
                report.complete = False
                logger.warning("audit cancelled during %s; the report is partial", name)
                break
    if report.complete:
        try:
            run_controls(report, model, target, setting, control, control_epochs, x_all, y_all)
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


# --------------------------------------------------------------------------- membership
def _membership(report: AuditReport, model: nn.Module, s: AttackSetting, heldout: Any,
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
    "FEDAVG",
    "FEDAVG_BATCHES",
    "FEDERATED_VICTIMS",
    "REFERENCE_EPOCHS",
    "VICTIMS",
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
