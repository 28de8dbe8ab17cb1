"""``shieldsplit.audit``: score how much of the training data real attacks rebuild.

The auditor splits the data it is given into *victim* images (what the
attacks try to rebuild) and a disjoint *auxiliary* set (what the threat models
grant the attacker: images from the same distribution). It then runs every
attack that applies to the model:

- a plain ``nn.Module``: the split-learning attacks on ``split_model(model, cut)``
  (black-box decoder, white-box rMLE, GAN prior) and the federated-learning
  attacks on the whole model (DLG, iDLG, Inverting Gradients on one gradient
  and on a 5-local-epoch FedAvg update);
- a :class:`~shieldsplit.defense.Defense` (``SplitShield``, ``LatentPerturb``,
  the baselines): the split-learning attacks on what its client actually sends
  (plus, for PGSL, the adaptive attack that knows the defence) when it is deployed
  as split learning, and the federated attacks on its updates when it is federated.

Each attack is scored with MSE, PSNR and SSIM against the true images, the
accuracy of a reference classifier (trained on the clean auxiliary data) on the
reconstructions, the label recovery rate where labels are inferred, and its
wall time. The report also carries the model's clean accuracy, the distance
correlation between inputs and cut activations, the configuration, the seed,
library versions and a ranking of which threat leaks most.

Reconstructions stay in memory; they are written only by
``report.save_html(path, include_images=True)``.

Example:
    >>> import shieldsplit as ss
    >>> from shieldsplit.data import load_dataset
    >>> ds = load_dataset("digits", seed=0, limit=96)
    >>> net = ss.PGSLNet(num_classes=10, image_size=8, width=8, hidden=16)
    >>> report = ss.audit(net, data=(ds.x_train, ds.y_train), cut=2, budget="quick", seed=0,
    ...                   attacks=["split-black-box"], victims=8, progress=False)
    >>> [r.attack for r in report.results], report.complete
    (['split-black-box'], True)
"""

from __future__ import annotations

import base64
import copy
import html
import io
import logging
import platform
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from torch import Tensor, nn

from . import attacks as _attacks
from .attacks.base import AttackContext, Budget, Observation, Reconstruction
from .attacks.observe import observe_gradient, observe_update
from .attacks.observe_split import observe_activations
from .cutting import split_model
from .datacontract import as_tensors
from .defense import Defense
from .errors import (
    ConfigError,
    EmptyDataError,
    ShieldSplitError,
    UnsupportedModelError,
)
from .io import atomic_write_text
from .metrics import distance_correlation, label_recovery_rate, mse, psnr, ssim
from .progress import progress_bar
from .training import accuracy, fit_plain

logger = logging.getLogger(__name__)

#: Victim images per budget (the federated attacks use fewer, see FEDERATED_VICTIMS).
VICTIMS: dict[str, int] = {"quick": 64, "standard": 128, "thorough": 256}
#: Images the (slow, per-image) gradient attacks rebuild per budget.
FEDERATED_VICTIMS: dict[str, int] = {"quick": 2, "standard": 8, "thorough": 16}
#: Reference-classifier epochs per budget (fewer than ~15 leave its BatchNorm statistics
#: unsettled: 5 epochs scored below the majority class on BreastMNIST).
REFERENCE_EPOCHS: dict[str, int] = {"quick": 20, "standard": 30, "thorough": 50}
#: The local protocol of the FedAvg-update attack (as in Jiang et al. 2025).
#: SGD lr 1e-3: a trained network's eval-mode update diverged (NaN within 5 steps) at
#: 0.1 and 0.01 on BreastMNIST, since BatchNorm on running statistics does not rescale
#: the gradient the way batch statistics do.
FEDAVG: dict[str, Any] = {"local_epochs": 5, "local_batch_size": 8, "lr": 1e-3}
#: Inverting-Gradients iterations on the FedAvg update per budget (each iteration unrolls
#: the 5 local steps, about 10 gradient evaluations); None keeps the attack's own budget.
FEDAVG_ITERATIONS: dict[str, int | None] = {"quick": 60, "standard": None, "thorough": None}
#: Attacks the quick budget leaves out of the default list: DLG is iDLG's optimisation
#: without the analytic label, so at the quick budget iDLG stands for both.
QUICK_SKIPS = ("dlg",)

SPLIT_ATTACKS = ("split-black-box", "split-white-box", "gan-prior")
FEDERATED_ATTACKS = ("idlg", "dlg", "inverting-gradients", "inverting-gradients-fedavg")
#: Attacks that exist only against one defence: the adaptive attacker knows it.
ADAPTIVE_ATTACKS: dict[str, tuple[str, ...]] = {"pgsl": ("adaptive-split",)}


def defense_attacks(defense: Defense) -> tuple[str, ...]:
    """The attacks that apply to ``defense``, from the surfaces it is deployed under.

    Args:
        defense: any registered defence.

    Returns:
        Split-learning attacks on its wire (and the adaptive attack that knows it) when it
        is deployed as split learning, federated attacks on its updates when federated.
    """
    names: tuple[str, ...] = ()
    if "split" in defense.surfaces:
        names += SPLIT_ATTACKS + ADAPTIVE_ATTACKS.get(defense.name, ())
    if "federated" in defense.surfaces:
        names += FEDERATED_ATTACKS
    return names


class AttackResult(BaseModel):
    """One attack's score.

    Attributes:
        attack: the attack's name in the report.
        threat_model: what the attacker holds (see ``shieldsplit.attacks.base.ThreatModel``).
        observes: ``activations``, ``gradient`` or ``update``.
        images: how many victim images were rebuilt.
        mse: mean MSE over those images (lower = more leakage).
        psnr: mean PSNR in dB (higher = more leakage).
        ssim: mean SSIM (higher = more leakage).
        attacker_accuracy: accuracy of the reference classifier on the reconstructions.
        label_recovery: fraction of labels inferred correctly, if the attack infers labels.
        seconds: wall time (preparation and reconstruction).
        status: ``ok``, ``cancelled`` (Ctrl-C), ``failed``, or ``n/a`` (in a comparison:
            the attack's threat model does not apply to that defence).
        error: the error message when ``status`` is ``failed``.
    """

    model_config = ConfigDict(extra="forbid")

    attack: str
    threat_model: str
    observes: str
    images: int
    mse: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    attacker_accuracy: float | None = None
    label_recovery: float | None = None
    seconds: float
    status: Literal["ok", "cancelled", "failed", "n/a"] = "ok"
    error: str | None = None


class AuditReport(BaseModel):
    """The result of :func:`audit`; a pydantic model with a stable JSON schema.

    Attributes:
        schema_version: bumps when the JSON layout changes.
        created: UTC time of the audit.
        model: the audited model's class and parameter count.
        defense: ``none`` or the defence's class.
        cut: the split point the split-learning attacks observe.
        budget: ``quick``, ``standard`` or ``thorough``.
        seed: the seed of the audit.
        victims: victim images.
        auxiliary: auxiliary images granted to the attacker.
        clean_accuracy: the model's accuracy on the victim images.
        reference_accuracy: the reference classifier's accuracy on the clean victim images
            (the ceiling of attacker accuracy).
        distance_correlation: between victim inputs and their cut activations.
        results: one entry per attack.
        ranking: attack names from most to least leakage (by PSNR).
        complete: False when the audit was cancelled.
        versions: library versions.
        machine: where it ran.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    created: str
    model: str
    defense: str
    cut: int | str
    budget: Budget
    seed: int
    victims: int
    auxiliary: int
    clean_accuracy: float
    reference_accuracy: float | None = None
    distance_correlation: float | None = None
    results: list[AttackResult] = Field(default_factory=list)
    ranking: list[str] = Field(default_factory=list)
    complete: bool = True
    versions: dict[str, str] = Field(default_factory=dict)
    machine: dict[str, str] = Field(default_factory=dict)

    _images: dict[str, tuple[Tensor, Tensor]] = PrivateAttr(default_factory=dict)

    def summary(self) -> str:
        """One screen of text: a row per attack, most leakage first.

        Returns:
            A plain-text table.
        """
        head = (
            f"shieldsplit audit: {self.model}, defence {self.defense}, cut {self.cut}, "
            f"budget {self.budget}, seed {self.seed}"
            + ("" if self.complete else "  [INCOMPLETE: cancelled]")
        )
        lines = [
            head,
            f"clean accuracy {self.clean_accuracy:.1%} on {self.victims} victim images; "
            f"{self.auxiliary} auxiliary images granted to the attacker"
            + (f"; reference classifier {self.reference_accuracy:.1%}"
               if self.reference_accuracy is not None else "")
            + (f"; distance correlation {self.distance_correlation:.3f}"
               if self.distance_correlation is not None else ""),
            f"{'attack':28s} {'threat model':16s} {'MSE':>8s} {'PSNR':>7s} {'SSIM':>6s} "
            f"{'att.acc':>7s} {'labels':>6s} {'sec':>7s}",
        ]
        order = {name: i for i, name in enumerate(self.ranking)}
        for r in sorted(self.results, key=lambda r: order.get(r.attack, len(order))):
            lines.append(
                f"{r.attack:28s} {r.threat_model:16s} {_fmt(r.mse, '8.4f')} {_fmt(r.psnr, '7.2f')} "
                f"{_fmt(r.ssim, '6.3f')} {_fmt(r.attacker_accuracy, '7.1%')} "
                f"{_fmt(r.label_recovery, '6.0%')} {r.seconds:7.1f}"
                + ("" if r.status == "ok" else f"  [{r.status}{': ' + r.error if r.error else ''}]")
            )
        return "\n".join(lines)

    def to_json(self, path: str | Path) -> None:
        """Write the report as JSON, atomically.

        Args:
            path: destination file.
        """
        atomic_write_text(path, self.model_dump_json(indent=2))

    def save_html(self, path: str | Path, *, include_images: bool = False) -> None:
        """Write a self-contained HTML page (table and leakage plot), atomically.

        Args:
            path: destination file.
            include_images: also embed the original and reconstructed victim images.
                They are patient data: the default is False.
        """
        atomic_write_text(path, render_html(self, include_images=include_images))


def _fmt(value: float | None, spec: str) -> str:
    width = int(spec.split(".")[0]) if spec[0].isdigit() else 6
    return format(value, spec) if value is not None else "-".rjust(width)


# --------------------------------------------------------------------------- data handling
def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("shieldsplit", "torch", "captum", "opacus", "numpy", "torchmetrics", "pydantic"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


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
    progress: bool = True,
) -> AuditReport:
    """Attack ``model`` with every applicable attack and score what leaks.

    Args:
        model: a plain classifier or a :class:`~shieldsplit.defense.Defense` (such as
            a :class:`~shieldsplit.SplitShield`); it is not modified.
        data: labelled images in [0, 1], in any form of docs/data.md (a DataLoader, a
            Dataset, an ``(x, y)`` pair, an ``ImageDataset``'s training split). A seeded random
            ``victims`` of them are the victims; the rest is the attacker's auxiliary data.
        cut: where the split-learning attacks observe a plain model (ignored for a
            Defense, which has its own cut).
        budget: ``quick``, ``standard`` or ``thorough`` (iterations, epochs, image counts).
        seed: seeds the victim/auxiliary split and every attack.
        attacks: attack names to run (default: all that apply to the model; the quick
            budget leaves out :data:`QUICK_SKIPS`).
        victims: number of victim images (default by budget: 64/128/256).
        progress: show progress bars.

    Returns:
        The report. If the audit is cancelled with Ctrl-C, the report of what
        finished, marked ``complete=False``.

    Raises:
        EmptyDataError, InputShapeError, LabelError: if the data cannot be read, is too
            small, or breaks the data contract of docs/data.md (the model is probed on it).
        UnsupportedModelError: not a module, or a float64 model.
        InvalidCutError: if ``cut`` does not exist in the model.
        UnsupportedModelError: if the model does not return logits.
        ConfigError: for an unknown budget or attack name.

    Reference:
        Geiping et al. 2020; Zhu et al. 2019; Zhao et al. 2020; He et al. 2019;
        Titcombe et al. 2021; Khowaja et al. 2022.
    """
    if budget not in VICTIMS:
        raise ConfigError.build(
            what="budget", expected=f"one of {sorted(VICTIMS)}", received=repr(budget),
            fix="pass budget='quick'",
        )
    x_all, y_all = as_tensors(data, model=model)  # the one data contract (docs/data.md)
    n_victims = victims if victims is not None else VICTIMS[budget]
    if n_victims < 1 or len(x_all) < n_victims + 16:
        raise EmptyDataError.build(
            what="data",
            expected=f"at least {n_victims + 16} images ({n_victims} victims + 16 auxiliary)",
            received=f"{len(x_all)} images",
            fix="pass more data or a smaller victims= count",
        )
    perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(seed))
    vx, vy = x_all[perm[:n_victims]], y_all[perm[:n_victims]].long()
    ax, ay = x_all[perm[n_victims:]], y_all[perm[n_victims:]].long()
    image_shape = (int(vx.shape[1]), int(vx.shape[2]), int(vx.shape[3]))

    shield = model if isinstance(model, Defense) else None
    if shield is not None:
        num_classes = shield.num_classes
        clean = float((shield.predict_proba(vx).argmax(-1) == vy).double().mean())
        head: nn.Module = shield  # the attackers query the deployed client
        observed_cut: int | str = shield.cut
        applicable = defense_attacks(shield)
        fl_source: nn.Module = shield.federated_model()
    else:
        was_training = model.training
        with torch.no_grad():
            out = model.eval()(vx[:2])
        model.train(was_training)
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise UnsupportedModelError.build(
                what="model", expected="a classifier returning (N, classes) logits",
                received=f"{type(out).__name__} of shape {tuple(getattr(out, 'shape', ()))}",
                fix="wrap the model so that forward returns a 2-D logits tensor",
            )
        num_classes = int(out.shape[-1])
        parts = split_model(model, cut)
        head, observed_cut = parts.head.eval(), parts.cut
        clean = accuracy(model, [(vx, vy)])
        applicable = SPLIT_ATTACKS + FEDERATED_ATTACKS
        fl_source = model
    names = list(attacks) if attacks is not None else [
        n for n in applicable if not (budget == "quick" and n in QUICK_SKIPS)]
    for name in names:
        if name not in applicable:
            raise ConfigError.build(
                what="attacks", expected=f"names from {list(applicable)} for this model",
                received=repr(name), fix="drop it or audit a model it applies to",
            )

    report = AuditReport(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=f"{_architecture(model)} "
        f"({sum(p.numel() for p in model.parameters())} parameters)",
        defense=shield.name if shield is not None else "none",
        cut=observed_cut, budget=budget, seed=seed, victims=n_victims, auxiliary=len(ax),
        clean_accuracy=clean, versions=_versions(), machine=_machine(),
    )
    wire = observe_activations(shield if shield is not None else head, vx)
    if wire.activations is not None:
        report.distance_correlation = distance_correlation(vx, wire.activations)
    reference = _reference_classifier(ax, ay, num_classes, epochs=REFERENCE_EPOCHS[budget],
                                      seed=seed)
    report.reference_accuracy = accuracy(reference, [(vx, vy)])

    context = AttackContext(
        image_shape=image_shape, num_classes=num_classes,
        model=head, auxiliary_images=ax, auxiliary_labels=ay,
        defense=shield, budget=budget, seed=seed,
    )
    # Federated attacks see the model in eval mode (no dropout masks, BatchNorm on its
    # running statistics): the setting gradient inversion is evaluated in, since random
    # dropout masks cannot be matched by any attacker.
    fl_model = copy.deepcopy(fl_source).eval()
    full_context = AttackContext(
        image_shape=image_shape, num_classes=num_classes, model=fl_model, auxiliary_images=ax,
        auxiliary_labels=ay, budget=budget, seed=seed,
    )
    with progress_bar(names, total=len(names), description="audit", enabled=progress) as todo:
        for name in todo:
            result = _run_one(name, report, reference, vx, vy, wire, context, full_context,
                              fl_model, budget, seed, progress, shield)
            report.results.append(result)
            if result.status == "cancelled":
                report.complete = False
                logger.warning("audit cancelled during %s; the report is partial", name)
                break
    scored = [r for r in report.results if r.psnr is not None]
    report.ranking = [r.attack for r in sorted(scored, key=lambda r: -(r.psnr or 0.0))]
    return report


def _architecture(model: nn.Module) -> str:
    template = model.__dict__.get("_template")  # a SplitShield's copy of the user's model
    return type(template if template is not None else model).__name__


def _machine() -> dict[str, str]:
    from .demo import machine_info

    return machine_info()


def _run_one(
    name: str,
    report: AuditReport,
    reference: nn.Module,
    vx: Tensor,
    vy: Tensor,
    wire: Observation,
    context: AttackContext,
    full_context: AttackContext,
    model: nn.Module,
    budget: Budget,
    seed: int,
    progress: bool,
    defense: Defense | None = None,
) -> AttackResult:
    start = time.perf_counter()
    registered = "inverting-gradients" if name == "inverting-gradients-fedavg" else name
    options: dict[str, Any] = {}
    if name == "inverting-gradients-fedavg" and FEDAVG_ITERATIONS[budget] is not None:
        options["iterations"] = FEDAVG_ITERATIONS[budget]
    attack = _attacks.create_attack(registered, seed=seed, progress=progress, **options)
    base = {"attack": name, "threat_model": attack.threat_model, "observes": attack.observes}
    try:
        if attack.observes == "activations":
            attack.prepare(context)
            recs = [attack.reconstruct(wire)]
            truth_x, truth_y = vx, vy
        else:
            attack.prepare(full_context)
            n = min(FEDERATED_VICTIMS[budget], len(vx))
            truth_x, truth_y = vx[:n], vy[:n]
            if name == "inverting-gradients-fedavg":
                k = FEDAVG["local_batch_size"]
                truth_x, truth_y = vx[:k], vy[:k]
                base["observes"] = "update"
                obs = (defense.observe_federated(truth_x, truth_y, kind="update", seed=seed,
                                                 **FEDAVG)
                       if defense is not None
                       else observe_update(model, truth_x, truth_y, seed=seed, **FEDAVG))
                recs = [attack.reconstruct(obs)]
            else:  # one client batch of one image each: the strongest, per-image setting
                observations = [
                    defense.observe_federated(truth_x[i : i + 1], truth_y[i : i + 1],
                                              kind="gradient", seed=seed + i)
                    if defense is not None
                    else observe_gradient(model, truth_x[i : i + 1], truth_y[i : i + 1])
                    for i in range(n)]
                many = getattr(attack, "reconstruct_many", None)  # batched: one optimisation
                recs = list(many(observations)) if many is not None else [
                    attack.reconstruct(o) for o in observations]
        rec = _merge(recs, name)
    except KeyboardInterrupt:
        return AttackResult(**base, images=0, seconds=time.perf_counter() - start,
                            status="cancelled")
    except ShieldSplitError as exc:
        return AttackResult(**base, images=0, seconds=time.perf_counter() - start,
                            status="failed", error=str(exc))
    images = rec.images.detach().float().clamp(0, 1)
    report._images[name] = (truth_x, images)
    with torch.no_grad():
        att_acc = float((reference(images).argmax(-1) == truth_y).double().mean())
    return AttackResult(
        **base,
        images=len(images),
        mse=float(mse(images, truth_x).mean()),
        psnr=float(psnr(images, truth_x).clamp(max=100).mean()),
        ssim=float(ssim(images, truth_x).mean()),
        attacker_accuracy=att_acc,
        label_recovery=label_recovery_rate(rec.labels, truth_y) if rec.labels is not None
        else None,
        seconds=time.perf_counter() - start,
    )


def _merge(recs: list[Reconstruction], name: str) -> Reconstruction:
    labels = [r.labels for r in recs]
    return Reconstruction(
        images=torch.cat([r.images for r in recs]),
        attack=name,
        labels=torch.cat([lab for lab in labels if lab is not None])
        if all(lab is not None for lab in labels) else None,
        seconds=sum(r.seconds for r in recs),
    )


# --------------------------------------------------------------------------- HTML
def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render_html(report: AuditReport, *, include_images: bool = False) -> str:
    """Render the report as one self-contained HTML page.

    Args:
        report: a finished (or partial) audit.
        include_images: embed victim images and their reconstructions.

    Returns:
        The HTML text.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    esc = html.escape
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in (
            r.attack, r.threat_model, r.observes, r.images, _fmt(r.mse, ".4f"),
            _fmt(r.psnr, ".2f"), _fmt(r.ssim, ".3f"), _fmt(r.attacker_accuracy, ".1%"),
            _fmt(r.label_recovery, ".0%"), f"{r.seconds:.1f}", r.status)) + "</tr>"
        for r in report.results
    )
    scored = [r for r in report.results if r.psnr is not None]
    plot = ""
    if scored:
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(scored)))
        ax.barh([r.attack for r in scored], [r.psnr or 0.0 for r in scored], color="#b33")
        ax.set_xlabel("PSNR of reconstructions (dB, higher = more leakage)")
        ax.invert_yaxis()
        plot = f'<img alt="leakage per attack" src="data:image/png;base64,{_png(fig)}">'
        plt.close(fig)
    gallery = ""
    if include_images:
        for name, (orig, rec) in report._images.items():
            n = min(8, len(orig))
            fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.6), squeeze=False)
            for i in range(n):
                for row, img in ((0, orig[i]), (1, rec[i])):
                    a = axes[row][i]
                    a.imshow(img.permute(1, 2, 0).squeeze(-1).cpu().numpy(), cmap="gray",
                             vmin=0, vmax=1)
                    a.axis("off")
            gallery += (f"<h3>{esc(name)}: originals (top), reconstructions (bottom)</h3>"
                        f'<img src="data:image/png;base64,{_png(fig)}">')
            plt.close(fig)
    status = "complete" if report.complete else "INCOMPLETE (cancelled)"
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>shieldsplit audit</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em}}</style>
</head><body><h1>shieldsplit audit ({esc(status)})</h1>
<p>{esc(report.model)}; defence {esc(report.defense)}; cut {esc(str(report.cut))};
budget {esc(report.budget)}; seed {report.seed}; {esc(report.created)}</p>
<p>Clean accuracy {report.clean_accuracy:.1%} on {report.victims} victim images;
{report.auxiliary} auxiliary images granted to the attacker.</p>
<table><tr><th>attack</th><th>threat model</th><th>observes</th><th>images</th><th>MSE</th>
<th>PSNR</th><th>SSIM</th><th>attacker accuracy</th><th>labels</th><th>seconds</th>
<th>status</th></tr>{rows}</table>
<p>Most leakage first: {esc(", ".join(report.ranking))}</p>{plot}{gallery}
<h2>Report (JSON)</h2><pre>{esc(report.model_dump_json(indent=2))}</pre></body></html>"""


__all__ = ["AttackResult", "AuditReport", "audit", "render_html"]
