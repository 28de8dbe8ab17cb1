"""The audit's positive controls: the same attack at the same budget on a model known to leak.

A verdict of *no leakage found* rests on a control that found leakage where there is
some (docs/audit.md). :func:`run_controls` attaches one to every finished attack:

- for a defence, its *undefended twin* (trained on the audit's data), or the trained
  undefended model the user passes as ``control``;
- for a plain model, a *calibration*: the same attack on a freshly initialised copy
  of the architecture, at the same cut and with the same observation protocol;
- or the results of an undefended audit made earlier with the same seed, budget and
  victims (what ``compare`` and ``reproduce`` pass).

:func:`check_control` and :func:`check_control_report` refuse a bad ``control=``
before any work.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from torch import Tensor, nn

from shieldsplit.attacks.base import attack_class
from shieldsplit.audit.budgets import CONTROL_EPOCHS
from shieldsplit.audit.report import AttackResult, AuditReport, ControlResult
from shieldsplit.audit.runner import (
    AttackSetting,
    AttackTarget,
    architecture,
    clean_accuracy,
    defense_target,
    plain_target,
    run_attack,
)
from shieldsplit.defenses.base import Defense
from shieldsplit.errors import ConfigError, UnsupportedModelError
from shieldsplit.training import eval_mode


def check_control(control: Any) -> Any:
    """Check ``audit(control=...)`` before any work.

    Args:
        control: ``"auto"``, a trained ``nn.Module``, an :class:`AuditReport`, a list of
            :class:`AttackResult`, or None.

    Returns:
        The control (a tuple of results as a list).

    Raises:
        ConfigError: for anything else.

    Example:
        >>> check_control("auto")
        'auto'
        >>> check_control("twin")
        Traceback (most recent call last):
        ...
        shieldsplit.errors.ConfigError: Invalid configuration: ... Fix: pass control='auto'.
    """
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


def check_control_report(control: Any, *, seed: int, budget: str, victims: int) -> None:
    """A control given as an :class:`AuditReport` must share the audit's seed, budget and
    victims (the same victims and attacks); anything else passes.

    Args:
        control: as :func:`check_control` returned it.
        seed: the audit's seed.
        budget: the audit's budget.
        victims: the audit's victim count.

    Raises:
        ConfigError: for a report made otherwise.

    Example:
        >>> check_control_report("auto", seed=0, budget="quick", victims=64)
    """
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


def run_controls(
    report: AuditReport, model: nn.Module, target: AttackTarget, s: AttackSetting,
    control: Any, control_epochs: int | None, x_all: Tensor, y_all: Tensor,
) -> None:
    """Attach to every finished attack of ``report`` the same attack on the positive control.

    Args:
        report: the audit's report, its attacks run (``control`` and each result's
            ``control`` are set).
        model: the audited model.
        target: the audited model as the attacks saw it.
        s: the audit's setting.
        control: as :func:`check_control` returned it.
        control_epochs: training epochs of the undefended twin (None: the budget's).
        x_all: every image of the audit (the twin trains on them).
        y_all: their labels.

    Raises:
        ConfigError: a trained control for a plain model.
        UnsupportedModelError: a defence without an undefended twin.

    Example:
        >>> from shieldsplit.audit.report import AuditReport
        >>> report = AuditReport(created="", model="m", defense="none", cut=2,
        ...                      budget="quick", seed=0, victims=8, auxiliary=8,
        ...                      clean_accuracy=0.0)
        >>> run_controls(report, None, None, None, None, None, None, None)
        >>> report.control
        'none (verdicts that need a control are inconclusive)'
    """
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
        report.control_accuracy = clean_accuracy(twin.defense or twin.fl_model, s.vx, s.vy)
        report.control = f"{description}; its accuracy on the victims {report.control_accuracy:.1%}"
        for r in ok:
            stand_in = _stand_in(r.attack, "none")
            c, _, _ = run_attack(stand_in, twin, s)
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
    fresh: AttackTarget | None = None
    for r in ok:
        if r.evidence is not None and r.evidence.leaks:
            continue
        if fresh is None:
            fresh = _fresh_target(model, target, s)
        c, _, _ = run_attack(r.attack, fresh, s)
        r.control = _control_from(c, "calibration",
                                  f"a freshly initialised {architecture(model)} at cut "
                                  f"{target.cut}, same protocol")


def _fresh_target(model: nn.Module, target: AttackTarget, s: AttackSetting) -> AttackTarget:
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
        return defense_target(fresh, s.vx)
    return plain_target(fresh, target.cut, s.vx)


def _stand_in(attack: str, defense_name: str) -> str:
    """The attack that stands for ``attack`` on a model with defence ``defense_name``."""
    cls = attack_class(attack, "reconstruction")
    if cls.adapts_to and defense_name not in cls.adapts_to and cls.control_attack:
        return cls.control_attack
    return attack


def _twin_target(
    shield: Defense, control: Any, epochs: int | None, x_all: Tensor, y_all: Tensor,
    s: AttackSetting,
) -> tuple[AttackTarget, Literal["undefended twin", "your control"], str]:
    if isinstance(control, nn.Module) and not isinstance(control, Defense):
        with eval_mode(control):
            return (plain_target(control, shield.cut, s.vx), "your control",
                    f"your undefended model {type(control).__name__} at cut {shield.cut}")
    if isinstance(control, Defense):
        return defense_target(control, s.vx), "your control", f"your {control.name} model"
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
    return (defense_target(twin, s.vx), "undefended twin",
            f"undefended twin ({architecture(shield)} at cut {twin.cut}, "
            f"trained {n_epochs} epochs on the audit's {len(x_all)} images)")


def _control_from(r: AttackResult, kind: Any, description: str) -> ControlResult:
    return ControlResult(kind=kind, description=description, attack=r.attack, images=r.images,
                         psnr=r.psnr, balanced_accuracy=r.balanced_accuracy, status=r.status,
                         evidence=r.evidence)


__all__ = ["check_control", "check_control_report", "run_controls"]
