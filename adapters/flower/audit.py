"""The live audit: the honest-but-curious server attacks the updates it really receives.

:class:`AuditingStrategy` is a :class:`~shieldsplit.adapters.flower.strategy.RecordingStrategy`
that, every round, takes each valid reply's update (:func:`federated_update`: what Flower
delivered minus what the server sent), runs two registered attacks on it through the
registry (:data:`UPDATE_ATTACK`, a reconstruction attack, and :data:`LABEL_ATTACK`, a
label-inference attack), scores them against the client's true shard and decides each with
the audit's rule against a positive control (the same attack on an undefended twin's
update). The rows land in the result's ``leakage``.

The attack modules load only when an audit runs (the registry imports them on its first
lookup): a ``ClientApp`` never needs them, and every deployed ``ClientApp`` process imports
this package.

Example:
    >>> from shieldsplit.functional.verdict import decide
    >>> where = "federated, Flower client update of 1 local epochs at batch 8"
    >>> leak = LabelEvidence(images=50, label_recovery=0.98, label_low=0.9, label_high=0.99,
    ...                      majority=0.6, setting=where)
    >>> blind = LabelEvidence(images=50, label_recovery=0.6, label_low=0.47, label_high=0.72,
    ...                       majority=0.6, setting=where)
    >>> decide(leak, blind).verdict, decide(blind, leak).verdict  # (target, control)
    ('leaks', 'no leakage found')
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from flwr.app import Message
from flwr.serverapp.strategy import Strategy
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit.adapters.flower.client import ClientSpec, load_shared, shared_state
from shieldsplit.adapters.flower.messages import (
    arrays_of,
    from_record,
    metric,
    metrics_of,
    to_record,
)
from shieldsplit.adapters.flower.report import FederatedResult, LeakageRow
from shieldsplit.adapters.flower.strategy import RecordingStrategy
from shieldsplit.attacks.base import AttackContext, create_attack
from shieldsplit.defenses.base import Defense
from shieldsplit.errors import ShieldSplitError, UnsupportedModelError
from shieldsplit.functional.classification import nearest_mean_labels
from shieldsplit.functional.stats import (
    align_labels,
    lineup_identified,
    majority_rate,
    match_order,
    no_attack_baselines,
    wilson_interval,
)
from shieldsplit.functional.verdict import Evidence, Tolerance, decide, evidence
from shieldsplit.settings import AuditSettings, Budget
from shieldsplit.wire import Observation

#: the attack run on every real update, and the label inference beside it (registered
#: names, created through :func:`~shieldsplit.attacks.base.create_attack`)
UPDATE_ATTACK = "inverting-gradients-fedavg"
LABEL_ATTACK = "label-inference"


@dataclass


class AuditSetting:
    """What the live audit needs besides the replies.

    The true images of each client are an **evaluation device of the simulation**: a
    real server never sees them; they only score the attacks (PSNR, line-up, labels).

    Attributes:
        spec: the clients' spec (their shards are the ground truth, and the defence's
            architecture is the model the attacker holds).
        auxiliary: the server's own labelled images (never in a client's shard).
        run: the attacks' run settings (budget and seed: the run-settings family of
            :mod:`shieldsplit.settings`).
        max_images: the most images the reconstruction attack rebuilds from one update: a
            client holding more is attacked on a seeded subsample of this many of its
            images (:func:`victim_indices`; the row's ``victims``); 0 turns it off.
        lr: the local learning rate the attacker assumes.
        label_grid: candidate label compositions the label inference replays on a
            binary task (the ``grid`` option of :data:`LABEL_ATTACK`).
    """

    spec: ClientSpec
    auxiliary: tuple[Tensor, Tensor]
    run: AuditSettings = field(default_factory=AuditSettings)
    max_images: int = 16
    lr: float = 1e-3
    label_grid: int = 33

    @property
    def budget(self) -> Budget:
        """The attack budget."""
        return self.run.budget

    @property
    def seed(self) -> int:
        """Seeds the attacks."""
        return self.run.seed

    def where(self) -> str:
        """The setting a client's update is observed in (target and control share it)."""
        return (f"federated, Flower client update of {self.spec.local_epochs} local epochs "
                f"at batch {self.spec.batch_size}")


class AuditingStrategy(RecordingStrategy):
    """The honest-but-curious server: attacks the updates it really receives.

    Every round, for every valid reply, the update ``arrays_received - arrays_sent``
    (exactly what Flower delivered) is attacked with Inverting Gradients on a FedAvg
    update (:class:`~shieldsplit.attacks.gradient.InvertingGradientsFedAvg`, through
    :func:`~shieldsplit.attacks.base.create_attack`) and with label inference
    (:class:`~shieldsplit.attacks.label_counts.UpdateLabelCounts`, ``"label-inference"``,
    on the last linear layer's update), both created through the registry. Each is
    scored against the client's true shard and decided with the audit's rule
    (:func:`~shieldsplit.functional.verdict.decide`); the positive control is the same
    attack on the update an **undefended** client (the defence's undefended twin) sends
    from the same data with the same local protocol, computed on the side in the
    simulation. For ``defense="none"`` the update is its own control.

    The attacker simulates plain SGD at ``lr`` for the client's local epochs and batch
    size; the clients really train with the defence's own optimiser (Adam), so the
    attack is misspecified on every update alike (target and control). On a binary task
    the label inference replays the undefended client's protocol instead (Adam,
    :func:`~shieldsplit.attacks.label_counts.replay_label_counts`): exact in form for the
    control, misspecified for a defence that trains otherwise (DP-SGD's clipped, noised
    steps).

    Args:
        inner: the strategy that aggregates.
        result: the result to fill in.
        setting: the audit's data and budget.
        progress: one line per round on stderr.
        on_round: called with the result after every round.
    """

    def __init__(self, inner: Strategy, result: FederatedResult, setting: AuditSetting, *,
                 progress: bool = False,
                 on_round: Callable[[FederatedResult], None] | None = None) -> None:
        super().__init__(inner, result, progress=progress, on_round=on_round)
        self.setting = setting

    def audit_round(self, server_round: int, replies: list[Message]) -> None:
        """Attack every valid reply of the round and append the leakage rows."""
        sent = from_record(self.sent[server_round])
        for msg in replies:
            pid = int(metric(metrics_of(msg.content), "partition-id"))
            received = from_record(arrays_of(msg.content))
            try:
                self.result.leakage.extend(self._audit_client(server_round, pid, sent,
                                                              received))
            except ShieldSplitError as exc:
                self.result.leakage.append(LeakageRow(
                    round=server_round, client=pid, attack=UPDATE_ATTACK, images=0,
                    verdict="inconclusive", reason=f"the attack failed: {exc}",
                    status="failed"))

    def _audit_client(self, rnd: int, pid: int, sent: dict[str, Tensor],
                      received: dict[str, Tensor]) -> list[LeakageRow]:
        s = self.setting
        (x, y), _ = s.spec.shard(pid)
        defense = s.spec.build()
        load_shared(defense, to_record(sent))
        target = federated_update(defense, sent, received)
        control = target if s.spec.defense == "none" else self._twin_update(rnd, pid, x, y)
        rows = [self._labels(rnd, pid, target, control, y)]
        if s.max_images < 1:
            rows.append(LeakageRow(
                round=rnd, client=pid, attack=UPDATE_ATTACK, images=len(x), victims=0,
                verdict="inconclusive", status="n/a",
                reason="not attacked: the reconstruction attack is off (max_images=0)"))
            return rows
        victims = victim_indices(len(x), s.max_images, seed=s.spec.round_seed(rnd, pid))
        rows.append(self._invert(rnd, pid, target, control, x[victims], y[victims],
                                 averaged=len(x)))
        return rows

    def _twin_update(self, rnd: int, pid: int, x: Tensor, y: Tensor) -> ClientUpdate:
        """The update an undefended client (the twin, from its initial weights) sends after
        the same local protocol on the same data: the positive control."""
        s = self.setting
        twin = s.spec.build().undefended_twin()
        before = shared_state(twin)
        seed = s.spec.round_seed(rnd, pid)
        loader = DataLoader(TensorDataset(x, y), batch_size=s.spec.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        after = copy.deepcopy(twin)
        after.fit(loader, epochs=s.spec.local_epochs, seed=seed, progress=False)
        return federated_update(twin, before, shared_state(after))

    def _labels(self, rnd: int, pid: int, target: ClientUpdate, control: ClientUpdate,
                y: Tensor) -> LeakageRow:
        start = time.perf_counter()
        t_ev, t_rate = self._label_evidence(target, y)
        c_ev, c_rate = ((t_ev, t_rate) if control is target
                        else self._label_evidence(control, y))
        decision = decide(t_ev, c_ev, control_name="an undefended client's update")
        return LeakageRow(round=rnd, client=pid, attack=LABEL_ATTACK, images=len(y),
                          label_recovery=t_rate, control_label_recovery=c_rate,
                          verdict=decision.verdict, reason=decision.reason,
                          seconds=time.perf_counter() - start)

    def _invert(self, rnd: int, pid: int, target: ClientUpdate, control: ClientUpdate, x: Tensor,
                y: Tensor, *, averaged: int) -> LeakageRow:
        """Inverting Gradients on the update for the victims ``x`` (all the client's images,
        or a seeded subsample of ``max_images`` of its ``averaged`` images)."""
        start = time.perf_counter()
        t_ev, t_psnr, base = self._inversion_evidence(target, x, y)
        c_ev, c_psnr, _ = ((t_ev, t_psnr, base) if control is target
                           else self._inversion_evidence(control, x, y))
        decision = decide(t_ev, c_ev, control_name="an undefended client's update")
        reason = decision.reason
        if len(x) < averaged:
            reason = (f"victims: a seeded subsample of {len(x)} of the client's {averaged} "
                      f"images (the update averages all {averaged}; the attack rebuilds "
                      f"{len(x)}); {reason}")
        return LeakageRow(round=rnd, client=pid, attack=UPDATE_ATTACK, images=averaged,
                          victims=len(x), psnr=t_psnr, baseline_psnr=base,
                          control_psnr=c_psnr, verdict=decision.verdict, reason=reason,
                          seconds=time.perf_counter() - start)

    def _observe(self, upd: ClientUpdate, images: int) -> tuple[Observation, AttackContext]:
        """What the attacker observes of an update of ``images`` images, and what its threat
        model grants it (the model at the sent weights, the auxiliary images)."""
        s = self.setting
        ax, ay = s.auxiliary
        shape = (int(ax.shape[1]), int(ax.shape[2]), int(ax.shape[3]))
        obs = Observation(kind="update", batch_size=images, image_shape=shape,
                          update=upd.update,
                          meta={"local_epochs": s.spec.local_epochs,
                                "local_batch_size": s.spec.batch_size, "lr": s.lr})
        context = AttackContext(
            image_shape=shape, num_classes=upd.num_classes, model=upd.model,
            auxiliary_images=ax, auxiliary_labels=ay, budget=s.budget,
            seed=s.seed)
        return obs, context

    def _label_evidence(self, upd: ClientUpdate, y: Tensor) -> tuple[LabelEvidence, float]:
        s = self.setting
        attack = create_attack(LABEL_ATTACK, family="label_inference", seed=s.seed,
                               grid=s.label_grid, progress=False)
        obs, context = self._observe(upd, len(y))
        attack.prepare(context)
        try:
            inferred = attack.infer(obs).labels
        except UnsupportedModelError:  # no last linear layer in the update: nothing to read
            return LabelEvidence(status="n/a"), 0.0
        aligned = align_labels(inferred, y)
        right = int((aligned.cpu() == y.cpu()).sum())
        low, high = wilson_interval(right, len(y))
        ev = LabelEvidence(images=len(y), label_recovery=right / len(y), label_low=low,
                           label_high=high, majority=majority_rate(y), setting=s.where())
        return ev, right / len(y)

    def _inversion_evidence(self, upd: ClientUpdate, x: Tensor, y: Tensor
                            ) -> tuple[Evidence, float, float]:
        from shieldsplit.functional.metrics import psnr

        s = self.setting
        ax, ay = s.auxiliary
        obs, context = self._observe(upd, len(x))
        attack = create_attack(UPDATE_ATTACK, family="reconstruction", seed=s.seed,
                               budget=s.budget, progress=False)
        attack.prepare(context)
        rec = attack.reconstruct(obs)
        images = match_order(rec.images.detach().float().clamp(0, 1), x)
        per = psnr(images, x).clamp(max=100)
        best = torch.stack([psnr(g, x).clamp(max=100)
                            for g in no_attack_baselines(x, ax).values()]).max(0).values
        ev = evidence(rec_psnr=per, baseline_psnr=best,
                      identified=lineup_identified(images, x, ax), lineup_size=len(ax) + 1,
                      matched_among=len(x),
                      predicted=nearest_mean_labels(images, ax, ay), true=y, seed=s.seed,
                      setting=s.where())
        return ev, float(per.mean()), float(best.mean())


def victim_indices(images: int, most: int, *, seed: int) -> Tensor:
    """The images the live audit's reconstruction attack targets in a client's update: all
    of them, or a seeded subsample of ``most`` when the client holds more (the update
    still averages them all; the attack rebuilds ``most`` and is scored on those).

    Args:
        images: the client's training images.
        most: the most images attacked (``AuditSetting.max_images``).
        seed: the subsample's seed (the client's round seed).

    Returns:
        Sorted indices into the client's images.

    Example:
        >>> victim_indices(5, 64, seed=0).tolist()
        [0, 1, 2, 3, 4]
        >>> len(victim_indices(100, 8, seed=0)), victim_indices(100, 8, seed=0).equal(
        ...     victim_indices(100, 8, seed=0))
        (8, True)
    """
    if images <= most:
        return torch.arange(images)
    perm = torch.randperm(images, generator=torch.Generator().manual_seed(seed))
    return perm[:most].sort().values


@dataclass


class ClientUpdate:
    """One client's update as an attacker holds it.

    Attributes:
        model: the federated model at the weights the server sent (eval mode).
        update: parameter name (of ``model``) -> weights received minus weights sent.
        num_classes: the classifier's classes.
    """

    model: nn.Module
    update: dict[str, Tensor]
    num_classes: int


def federated_update(defense: Defense, sent: dict[str, Tensor],
                     received: dict[str, Tensor]) -> ClientUpdate:
    """The FedAvg update ``received - sent`` named as the federated model's parameters.

    Args:
        defense: a defence holding the weights that were sent.
        sent: the shared arrays the server sent.
        received: the shared arrays the client replied with.

    Returns:
        The attacker's model (the federated model at the sent weights, eval mode) and the
        update of each of its trainable parameters.
    """
    fl = defense.federated_model()
    names = {id(p): n for n, p in defense.named_parameters()}
    update = {}
    for n, p in fl.named_parameters():
        key = names.get(id(p))
        if p.requires_grad and key is not None and key in received:
            update[n] = (received[key] - sent[key]).to(p.dtype)
    return ClientUpdate(model=copy.deepcopy(fl).eval(), update=update,
                   num_classes=int(defense.num_classes))


class LabelEvidence(Evidence):
    """The evidence of a label-only attack: as a positive control it vouches when it
    recovered labels beyond the majority class (it never claims to rebuild images)."""

    def control_gap(self, control_name: str) -> str | None:
        """None when the control leaked labels, else why it does not vouch."""
        if self.leaks and self.label_leak:
            return None
        return (f"the attack did not infer labels beyond the majority class on {control_name}:"
                " at this budget it is not shown to recover labels")

    def no_leak_reason(self, control_name: str, tolerance: Tolerance) -> str:
        """Labels only: the recovery rate, its upper bound and the tolerance."""
        return (f"labels {self.label_recovery or 0:.0%} of {self.images} (upper bound "
                f"{self.label_high or 0:.0%}, majority {self.majority or 0:.0%}), significantly "
                f"below the same attack on {control_name}; tolerance: majority + "
                f"{tolerance.label_recovery:.0%}")


__all__ = ["LABEL_ATTACK", "UPDATE_ATTACK", "AuditSetting", "AuditingStrategy", "ClientUpdate",
           "LabelEvidence", "federated_update", "victim_indices"]
