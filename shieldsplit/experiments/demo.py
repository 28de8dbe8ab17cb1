"""The main job: train the paper's network plainly and under SplitShield, side by side,
then audit both with the split-learning attacks on the same training images.

Example:
    >>> report = run_demo(DemoOptions(epochs=1, limit=64, width=8, hidden=16, progress=False,
    ...                               audit=False))
    >>> sorted(report.shield_test_accuracy)
    ['attacked', 'decision', 'fused', 'recovered']
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from shieldsplit._core.provenance import machine_info
from shieldsplit.audit.auditor import AttackResult, AuditReport, audit
from shieldsplit.data import default_data_root, load_dataset, make_loaders
from shieldsplit.defenses.pgsl.config import PGSLConfig
from shieldsplit.defenses.pgsl.shield import FitHistory, SplitShield
from shieldsplit.models import PGSLNet
from shieldsplit.settings import DataSettings, TrainSettings
from shieldsplit.training import PlainHistory, accuracy, fit_plain

logger = logging.getLogger(__name__)

#: The attacks of the demo's side-by-side audit: PGSL's threat model (split learning).
DEMO_ATTACKS = ("split-black-box", "split-white-box", "gan-prior")


class DemoOptions(DataSettings, TrainSettings):
    """Options of :func:`run_demo` (and of ``shieldsplit demo``), built from the
    run-settings family (:mod:`shieldsplit.settings`).

    Attributes:
        data: data set name (``digits`` ships with scikit-learn; the others need ``data_root``).
        data_root: folder with the MedMNIST ``.npz`` files / the ``mnist`` folder.
        epochs: training epochs for both models.
        cut: the split point (the paper: 2).
        batch_size: batch size.
        seed: seeds data split, initialisation and training.
        limit: cap on each split's size (quick runs).
        width: conv channels of the paper's network (the paper: 64).
        hidden: width of its first FC layer.
        restore_best: keep each model's weights from its best validation epoch.
        audit: after training, audit both models with :data:`DEMO_ATTACKS` (and the
            adaptive attack on the shield) on their training images.
        audit_victims: victim images of each audit.
        progress: show progress bars.
        pgsl: the SplitShield configuration (default: every PGSL step on, the
            paper's settings).
    """

    model_config = ConfigDict(extra="forbid")

    data: Literal["digits", "breastmnist", "pneumoniamnist", "mnist"] = "digits"
    cut: int = Field(2, ge=1)
    limit: int | None = Field(None, ge=1)
    width: int = Field(64, ge=1)
    hidden: int = Field(128, ge=1)
    restore_best: bool = False
    audit: bool = True
    audit_victims: int = Field(32, ge=1)
    pgsl: PGSLConfig = PGSLConfig()


class DemoReport(BaseModel):
    """What the demo measured.

    Attributes:
        options: the options of the run.
        dataset: the data set's summary line.
        plain_test_accuracy: the plainly trained network on the test split.
        shield_test_accuracy: each SplitShield stream and the decision fusion on the test split.
        plain_history: per-epoch record of the plain run.
        shield_history: per-epoch record of the SplitShield run.
        plain_audit: the audit of the plainly trained network at the same cut (None when
            ``audit`` is off).
        shield_audit: the audit of the trained SplitShield.
        seconds: wall time of each run.
        machine: CPU count, platform, torch version.
        date: UTC time of the run.
    """

    model_config = ConfigDict(extra="forbid")

    options: DemoOptions
    dataset: str
    plain_test_accuracy: float
    shield_test_accuracy: dict[str, float]
    plain_history: PlainHistory
    shield_history: FitHistory
    plain_audit: AuditReport | None = None
    shield_audit: AuditReport | None = None
    seconds: dict[str, float]
    machine: dict[str, str]
    date: str


def conclusion(plain: Sequence[AttackResult], shielded: Sequence[AttackResult]) -> str:
    """The demo's reading in one sentence, computed from both audits: what SplitShield bought
    against the strongest attack, and whether its victims are still re-identified.

    Args:
        plain: the attacks' results on the plainly trained network.
        shielded: the same attacks (and the adaptive one) on the SplitShield.

    Returns:
        The sentence (empty when either audit scored nothing).

    Example:
        >>> from shieldsplit.audit.auditor import AttackResult
        >>> from shieldsplit.functional.verdict import Evidence
        >>> def r(name, psnr, hits):
        ...     return AttackResult(attack=name, threat_model="t", observes="activations",
        ...                         images=32, psnr=psnr, seconds=1.0, evidence=Evidence(
        ...                             images=32, identified=hits, identified_low=0.8,
        ...                             lineup_chance=0.001))
        >>> print(conclusion([r("a", 32.8, 32)], [r("a", 22.9, 32), r("b", 22.2, 32)]))
        SplitShield lowered the strongest attack's PSNR by 9.9 dB (32.8 dB with a on the
        plain network, 22.9 dB with a against the shield), and still 32 of 32 victims are
        picked out of the line-up: the images still leak.
    """
    def strongest(results: Sequence[AttackResult]) -> AttackResult | None:
        scored = [r for r in results if r.status == "ok" and r.psnr is not None]
        return max(scored, key=lambda r: r.psnr or 0.0) if scored else None

    best_plain, best_shield = strongest(plain), strongest(shielded)
    if best_plain is None or best_shield is None:
        return ""
    ids = [r for r in shielded if r.status == "ok" and r.evidence is not None]
    most = max(ids, key=lambda r: r.evidence.identified if r.evidence else 0, default=None)
    e = most.evidence if most is not None else None
    change = (best_plain.psnr or 0.0) - (best_shield.psnr or 0.0)
    text = (f"SplitShield {'lowered' if change >= 0 else 'raised'} the strongest attack's PSNR "
            f"by {abs(change):.1f} dB ({best_plain.psnr:.1f} dB with {best_plain.attack} on "
            f"the plain network, {best_shield.psnr:.1f} dB with {best_shield.attack} against "
            "the shield)")
    if e is None:
        return text + "."
    still = e.reidentified
    return (text + f", and {'still ' if still else ''}{e.identified} of {e.images} victims "
            "are picked out of the line-up: "
            + ("the images still leak." if still else
               "not significantly more than chance (the verdicts say whether that is shown)."))


def run_demo(options: DemoOptions | None = None) -> DemoReport:
    """Train the PGSL paper's network plainly and under SplitShield on the same split.

    Args:
        options: what to run; defaults to digits, 10 epochs, cut 2.

    Returns:
        Test accuracies of both, with histories and timings.

    Raises:
        DataFileError: if a data file is missing or corrupted.
        ConfigError: if a data set that needs a folder gets none.
    """
    opts = options or DemoOptions()
    root = opts.data_root
    if root is None and opts.data != "digits":
        root = default_data_root()
    ds = load_dataset(opts.data, root=root, seed=opts.seed, limit=opts.limit)
    logger.info("data: %s", ds.summary())
    c, (h, _) = ds.in_channels, ds.image_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        model = PGSLNet(
            in_channels=c, num_classes=ds.num_classes, image_size=h, width=opts.width,
            hidden=opts.hidden,
        )
    initial = copy.deepcopy(model)  # both runs start from the same weights
    seconds = {}

    loaders = make_loaders(ds, batch_size=opts.batch_size, seed=opts.seed)
    start = time.perf_counter()
    plain_history = fit_plain(
        model, loaders.train, epochs=opts.epochs, val_loader=loaders.val, seed=opts.seed,
        progress=opts.progress, restore_best=opts.restore_best,
    )
    seconds["plain"] = time.perf_counter() - start
    plain_acc = accuracy(model, loaders.test)

    loaders = make_loaders(ds, batch_size=opts.batch_size, seed=opts.seed)
    shield = SplitShield(initial, cut=opts.cut, config=opts.pgsl, seed=opts.seed)
    start = time.perf_counter()
    shield_history = shield.fit(
        loaders.train, epochs=opts.epochs, val_loader=loaders.val, seed=opts.seed,
        progress=opts.progress, restore_best=opts.restore_best,
    )
    seconds["splitshield"] = time.perf_counter() - start
    shield_acc = shield.evaluate(loaders.test)
    audits: dict[str, AuditReport | None] = {"plain": None, "shield": None}
    if opts.audit:
        victims = min(opts.audit_victims, max(1, len(ds.x_train) - 64))
        for key, target, names in (("plain", model, DEMO_ATTACKS),
                                   ("shield", shield, (*DEMO_ATTACKS, "adaptive-split"))):
            start = time.perf_counter()
            # the plainly trained network is the shield's undefended twin: its audit is the
            # shield's positive control (same seed, budget and victims)
            audits[key] = audit(target, data=(ds.x_train, ds.y_train), cut=opts.cut,
                                budget="quick", seed=opts.seed, attacks=names, victims=victims,
                                progress=opts.progress,
                                control="auto" if key == "plain" else audits["plain"])
            seconds[f"audit_{key}"] = time.perf_counter() - start
    return DemoReport(
        options=opts,
        dataset=ds.summary().splitlines()[0],
        plain_test_accuracy=plain_acc,
        shield_test_accuracy=shield_acc,
        plain_history=plain_history,
        shield_history=shield_history,
        plain_audit=audits["plain"],
        shield_audit=audits["shield"],
        seconds=seconds,
        machine=machine_info(),
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


__all__ = ["DEMO_ATTACKS", "DemoOptions", "DemoReport", "conclusion", "machine_info", "run_demo"]
