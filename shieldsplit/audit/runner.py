"""One attack on one model, scored: the per-attack half of :func:`shieldsplit.audit`.

What every attack of an audit shares is its :class:`AttackSetting` (the victims, the
attacker's auxiliary images, the reference classifier that judges reconstructions and
the best no-attack guess per victim, built by :func:`build_setting`). What an attack
observes is an :class:`AttackTarget`: the audited model, or a positive control
(:func:`plain_target` for a plain model split at a cut, :func:`defense_target` for a
defence). :func:`run_attack` then runs one registered attack in its declared position
(split-learning activations, a batch-1 gradient or a FedAvg update), and scores what it
rebuilt against the victims, the baselines and the line-up.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from shieldsplit import attacks as _attacks  # looked up per call: tests patch create_attack
from shieldsplit.attacks.base import (
    AttackContext,
    Budget,
    Observation,
    Reconstruction,
    attack_class,
)
from shieldsplit.attacks.observe import observe_gradient, observe_update
from shieldsplit.attacks.observe_split import observe_activations
from shieldsplit.audit.budgets import (
    FEDAVG,
    FEDAVG_BATCHES,
    FEDERATED_VICTIMS,
    REFERENCE_EPOCHS,
    reference_pixels,
)
from shieldsplit.audit.report import AttackResult, AuditReport, BaselineScore
from shieldsplit.cutting import split_model
from shieldsplit.defenses.base import Defense
from shieldsplit.errors import ShieldSplitError, UnsupportedModelError
from shieldsplit.functional.metrics import label_recovery_rate, mse, psnr, ssim
from shieldsplit.functional.stats import (
    align_labels,
    balanced_accuracy,
    lineup_identified,
    match_order,
    no_attack_baselines,
)
from shieldsplit.functional.verdict import evidence
from shieldsplit.settings import AuditSettings
from shieldsplit.training import accuracy, eval_mode, fit_plain


# --------------------------------------------------------------------------- the setting
@dataclass
class AttackSetting:
    """What every attack of one audit shares: victims, auxiliary data, the judge.

    Attributes:
        vx: the victim images ``(N, C, H, W)``.
        vy: their labels.
        ax: the attacker's auxiliary images (disjoint from the victims).
        ay: their labels.
        num_classes: classes of the audited model.
        reference: the classifier trained on the clean auxiliary images (the judge).
        baseline_psnr: ``(N,)`` the best no-attack guess's PSNR per victim.
        run: the audit's run settings (budget, seed, progress: the run-settings family
            of :mod:`shieldsplit.settings`).
        options: attack name -> its validated options.

    Example:
        >>> import torch
        >>> s = AttackSetting(vx=torch.zeros(4, 1, 8, 8), vy=torch.zeros(4).long(),
        ...                   ax=torch.zeros(16, 1, 8, 8), ay=torch.zeros(16).long(),
        ...                   num_classes=2, reference=torch.nn.Identity(),
        ...                   baseline_psnr=torch.zeros(4),
        ...                   run=AuditSettings(budget="quick", progress=False), options={})
        >>> s.image_shape
        (1, 8, 8)
    """

    vx: Tensor
    vy: Tensor
    ax: Tensor
    ay: Tensor
    num_classes: int
    reference: nn.Module
    baseline_psnr: Tensor
    run: AuditSettings
    options: dict[str, dict[str, Any]]

    @property
    def budget(self) -> Budget:
        """The audit budget."""
        return self.run.budget

    @property
    def seed(self) -> int:
        """Seeds every attack."""
        return self.run.seed

    @property
    def progress(self) -> bool:
        """Show the attacks' progress bars."""
        return self.run.progress

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the victims."""
        return (int(self.vx.shape[1]), int(self.vx.shape[2]), int(self.vx.shape[3]))


def build_setting(
    report: AuditReport, *, vx: Tensor, vy: Tensor, ax: Tensor, ay: Tensor,
    num_classes: int, budget: Budget, seed: int, progress: bool,
    options: dict[str, dict[str, Any]],
) -> AttackSetting:
    """Train the reference classifier on the clean auxiliary images, score the no-attack
    baselines, and record both in ``report``.

    Args:
        report: the audit's report (its reference accuracies and baselines are set).
        vx: the victim images.
        vy: their labels.
        ax: the auxiliary images.
        ay: their labels.
        num_classes: classes of the audited model.
        budget: the audit budget (the reference's epochs: ``REFERENCE_EPOCHS``).
        seed: seeds the reference classifier and every attack.
        progress: show the attacks' progress bars.
        options: attack name -> its validated options.

    Returns:
        The setting every attack of the audit shares.

    Example:
        >>> from shieldsplit.audit.report import AuditReport
        >>> from shieldsplit.data import load_dataset
        >>> ds = load_dataset("digits", seed=0, limit=96)
        >>> report = AuditReport(created="", model="m", defense="none", cut=2,
        ...                      budget="quick", seed=0, victims=8, auxiliary=88,
        ...                      clean_accuracy=0.0)
        >>> s = build_setting(report, vx=ds.x_train[:8], vy=ds.y_train[:8],
        ...                   ax=ds.x_train[8:], ay=ds.y_train[8:], num_classes=10,
        ...                   budget="quick", seed=0, progress=False, options={})
        >>> [b.name for b in report.baselines], tuple(s.baseline_psnr.shape)
        (['auxiliary mean', 'nearest auxiliary'], (8,))
    """
    reference = _reference_classifier(ax, ay, num_classes, epochs=REFERENCE_EPOCHS[budget],
                                      seed=seed)
    with torch.no_grad():
        report.reference_accuracy = accuracy(reference, [(vx, vy)])
        report.reference_balanced_accuracy = balanced_accuracy(reference(vx).argmax(-1), vy)
    return AttackSetting(vx=vx, vy=vy, ax=ax, ay=ay, num_classes=num_classes,
                         reference=reference,
                         baseline_psnr=_score_baselines(report, vx, vy, ax, reference),
                         run=AuditSettings(budget=budget, seed=seed, progress=progress),
                         options=options)


def _reference_classifier(
    x: Tensor, y: Tensor, num_classes: int, *, epochs: int, seed: int
) -> nn.Module:
    """A small CNN trained on the clean auxiliary data: the attacker-accuracy judge (a
    large image average-pooled first, see :func:`~shieldsplit.audit.budgets.reference_pixels`)."""
    c, side = x.shape[1], reference_pixels(tuple(x.shape[1:]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pool = [nn.AdaptiveAvgPool2d(side)] if side < x.shape[2] else []
        ref = nn.Sequential(
            *pool, nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(32), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(64),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(256, num_classes),
        )
        g = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True, generator=g
        )
        fit_plain(ref, loader, epochs=epochs, seed=seed, progress=False)
    return ref.eval()


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


# --------------------------------------------------------------------------- the target
@dataclass
class AttackTarget:
    """One model the attacks are run on (the audited model, or a control).

    Attributes:
        head: what a split-learning attacker queries (a Defense or a split head).
        fl_model: an eval-mode copy of what a federated server holds.
        defense: the defence, or None for a plain model.
        cut: the split point.
        wire: what an eavesdropper on the split sees of the victims.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> target = plain_target(net, 1, torch.rand(5, 1, 2, 2))
        >>> target.defense is None, tuple(target.wire.activations.shape)
        (True, (5, 3))
    """

    head: nn.Module
    fl_model: nn.Module
    defense: Defense | None
    cut: int | str
    wire: Observation


def plain_target(model: nn.Module, cut: int | str, vx: Tensor) -> AttackTarget:
    """A plain model as the attacks see it: split at ``cut`` (its head in eval mode) and,
    for the federated attacks, an eval-mode copy.

    Args:
        model: a plain classifier (not modified).
        cut: the split point.
        vx: the victim images (what the wire carries).

    Returns:
        The target.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> plain_target(net, 1, torch.rand(5, 1, 2, 2)).cut
        1
    """
    parts = split_model(model, cut)
    head = parts.head.eval()
    # Federated attacks see the model in eval mode (no dropout masks, BatchNorm on its
    # running statistics): the setting gradient inversion is evaluated in, since random
    # dropout masks cannot be matched by any attacker.
    return AttackTarget(head=head, fl_model=copy.deepcopy(model).eval(), defense=None,
                        cut=parts.cut, wire=observe_activations(head, vx))


def defense_target(defense: Defense, vx: Tensor) -> AttackTarget:
    """A defence as the attacks see it: what its client emits on the wire, and the module
    whose gradients and updates a federated server receives.

    Args:
        defense: the defence.
        vx: the victim images.

    Returns:
        The target.

    Example:
        >>> import torch
        >>> import shieldsplit as ss
        >>> d = ss.create_defense("none", ss.PGSLNet(num_classes=2, image_size=8, width=8,
        ...                                          hidden=8), cut=2, seed=0)
        >>> defense_target(d, torch.rand(3, 1, 8, 8)).defense is d
        True
    """
    return AttackTarget(head=defense,
                        fl_model=copy.deepcopy(defense.federated_model()).eval(),
                        defense=defense, cut=defense.cut,
                        wire=observe_activations(defense, vx))


def probe_logits(model: nn.Module, x: Tensor) -> int:
    """The classes ``model`` predicts, read off one forward pass (its mode is kept).

    Args:
        model: the classifier.
        x: a few images.

    Returns:
        The number of logits per image.

    Raises:
        UnsupportedModelError: if the model does not return ``(N, classes)`` logits.

    Example:
        >>> import torch
        >>> probe_logits(torch.nn.Linear(4, 3), torch.rand(2, 4))
        3
    """
    with torch.no_grad(), eval_mode(model):
        out = model(x)
    if not isinstance(out, Tensor) or out.dim() != 2:
        raise UnsupportedModelError.build(
            what="model", expected="a classifier returning (N, classes) logits",
            received=f"{type(out).__name__} of shape {tuple(getattr(out, 'shape', ()))}",
            fix="wrap the model so that forward returns a 2-D logits tensor",
        )
    return int(out.shape[-1])


def clean_accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Accuracy of a plain model or a defence on clean images (its mode is kept).

    Args:
        model: a plain classifier or a defence.
        x: the images.
        y: their labels.

    Returns:
        The fraction predicted right.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> 0.0 <= clean_accuracy(net, torch.rand(4, 2), torch.zeros(4).long()) <= 1.0
        True
    """
    if isinstance(model, Defense):
        return float((model.predict_proba(x).argmax(-1) == y).double().mean())
    with eval_mode(model):
        return accuracy(model, [(x, y)])


def architecture(model: nn.Module) -> str:
    """The class name of the network (a defence's defended architecture).

    Args:
        model: a plain classifier or a defence.

    Returns:
        The class name.

    Example:
        >>> architecture(torch.nn.Linear(2, 2))
        'Linear'
    """
    template = model.template() if isinstance(model, Defense) else None
    return type(template if template is not None else model).__name__


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


def _observe(target: AttackTarget, s: AttackSetting, kind: str,
             send: Callable[[nn.Module], nn.Module] | None = None,
             ) -> tuple[list[Observation], Tensor]:
    """The observations an attack gets of ``target`` and the victim indices they cover
    (batch-1 gradients of the budget's count of victims); a federated client trains on
    what the server sent (``send``: a malicious server's ``Attack.modify``)."""
    fl_model = target.fl_model if send is None else send(target.fl_model).eval()
    if kind == "activations":
        return [target.wire], torch.arange(len(s.vx))
    if kind == "update":
        k = int(FEDAVG["local_batch_size"])
        batches = max(1, min(FEDAVG_BATCHES[s.budget], len(s.vx) // k))
        obs = []
        for b in range(batches):
            x, y = s.vx[b * k : (b + 1) * k], s.vy[b * k : (b + 1) * k]
            obs.append(target.defense.observe_federated(x, y, kind="update", seed=s.seed,
                                                        send=send, **FEDAVG)
                       if target.defense is not None
                       else observe_update(fl_model, x, y, seed=s.seed, **FEDAVG))
        return obs, torch.arange(min(batches * k, len(s.vx)))
    n = min(FEDERATED_VICTIMS[s.budget], len(s.vx))
    obs = [
        target.defense.observe_federated(s.vx[i : i + 1], s.vy[i : i + 1], kind="gradient",
                                         seed=s.seed + i, send=send)
        if target.defense is not None
        else observe_gradient(fl_model, s.vx[i : i + 1], s.vy[i : i + 1])
        for i in range(n)]
    return obs, torch.arange(n)


def run_attack(name: str, target: AttackTarget, s: AttackSetting
               ) -> tuple[AttackResult, Tensor | None, Tensor]:
    """Run one attack on ``target`` (what it declares it observes) and score it.

    Args:
        name: a registered attack.
        target: the model it observes.
        s: the audit's setting.

    Returns:
        The scored result (``failed`` or ``cancelled`` on an error or Ctrl-C), the
        reconstructed images (None if it did not finish) and the victims they rebuild.

    Example:
        >>> import shieldsplit as ss
        >>> from shieldsplit.audit.report import AuditReport
        >>> from shieldsplit.data import load_dataset
        >>> ds = load_dataset("digits", seed=0, limit=96)
        >>> net = ss.PGSLNet(num_classes=10, image_size=8, width=8, hidden=16).eval()
        >>> vx, vy, ax, ay = ds.x_train[:8], ds.y_train[:8], ds.x_train[8:], ds.y_train[8:]
        >>> report = AuditReport(created="", model="PGSLNet", defense="none", cut=2,
        ...                      budget="quick", seed=0, victims=8, auxiliary=len(ax),
        ...                      clean_accuracy=0.0)
        >>> setting = build_setting(report, vx=vx, vy=vy, ax=ax, ay=ay, num_classes=10,
        ...                         budget="quick", seed=0, progress=False,
        ...                         options={"split-black-box": {"epochs": 1}})
        >>> result, images, truth = run_attack("split-black-box", plain_target(net, 2, vx),
        ...                                    setting)
        >>> result.status, result.position, tuple(images.shape) == tuple(truth.shape)
        ('ok', 'split', True)
    """
    start = time.perf_counter()
    cls = attack_class(name, "reconstruction")
    observes = cls.observes
    attack = _attacks.create_attack(name, seed=s.seed, progress=s.progress,
                                    **s.options.get(name, {}))
    base = {"attack": name, "threat_model": attack.threat_model, "observes": observes,
            "position": cls.position(), "server": cls.server}
    try:
        context = AttackContext(
            image_shape=s.image_shape, num_classes=s.num_classes,
            model=target.head if cls.position() == "split" else target.fl_model,
            auxiliary_images=s.ax, auxiliary_labels=s.ay,
            defense=target.defense if cls.position() == "split" else None,
            budget=s.budget, seed=s.seed,
        )
        attack.prepare(context)
        # the client observes with what the server made of it: an honest attack's
        # modify() returns the model unchanged; a malicious federated server's a modified
        # model; a malicious split server's a client steered on its own training images
        if observes == "activations" and cls.server == "malicious":
            steered = attack.modify(target.head, s.vx)
            observations, idx = [observe_activations(steered, s.vx)], torch.arange(len(s.vx))
        else:
            observations, idx = _observe(target, s, observes, attack.modify)
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


__all__ = [
    "AttackSetting",
    "AttackTarget",
    "architecture",
    "build_setting",
    "clean_accuracy",
    "defense_target",
    "plain_target",
    "probe_logits",
    "run_attack",
    "setting_words",
]
