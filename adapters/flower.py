"""shieldsplit on Flower: defended federated learning and a live audit of the real updates.

Every defence whose :attr:`~shieldsplit.defenses.base.Defense.surfaces` include
``"federated"`` (none, dpsgd, latent-fixed, latent-learned, nopeek, laplace, bido,
jsma-input) trains as a Flower ``ClientApp``; a ``ServerApp`` runs Flower's
``FedAvg`` (optionally wrapped in :class:`AuditingStrategy`). :func:`simulate` runs
both on Flower's simulation engine (Ray backend); :func:`client_app` and
:func:`server_app` are the same apps for a real deployment (SuperLink, SuperNodes,
``flwr run``; docs/federated.md). ``pgsl`` (SplitShield) is split learning only and
raises a typed error here.

What crosses the Flower boundary: the defence's floating-point state-dict entries as
an ``ArrayRecord`` (numpy arrays, serialised by Flower without pickle), except
:meth:`~shieldsplit.defenses.base.Defense.client_only_state` (DP-SGD's privacy accountant),
which stays in the client's ``context.state``; metrics as ``MetricRecord``.

Importing this module imports ``flwr`` (install ``shieldsplit[flower]``);
``import shieldsplit`` does not.

Example:
    >>> from shieldsplit.adapters.flower import macro_f1
    >>> round(macro_f1([[2, 1], [0, 3]]), 4)
    0.8286
"""

from __future__ import annotations

import contextlib
import copy
import html
import itertools
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, Strategy
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit._core.io import atomic_write_text
from shieldsplit._core.progress import progress_line
from shieldsplit._core.validate import check_int, check_seed
from shieldsplit.datacontract import as_tensors, check_model
from shieldsplit.defenses.base import Defense, create_defense
from shieldsplit.errors import ConfigError, ShieldSplitError, UnsupportedModelError
from shieldsplit.functional.partition import partition_indices
from shieldsplit.functional.stats import (
    align_labels,
    lineup_identified,
    majority_rate,
    match_order,
    no_attack_baselines,
    wilson_interval,
)
from shieldsplit.functional.verdict import Evidence, Tolerance, decide, evidence

logger = logging.getLogger(__name__)

#: the key of the client-only state (DP-SGD's accountant) in a client's ``context.state``
LOCAL_STATE_KEY = "shieldsplit.local"
#: the attack run on every real update, and the label inference beside it
UPDATE_ATTACK = "inverting-gradients-fedavg"
LABEL_ATTACK = "label-inference"


# ------------------------------------------------------------------ pure maths
def macro_f1(confusion: Any) -> float:
    """Macro F1 from a confusion matrix (rows: true class, columns: predicted).

    Averages the per-class F1 over the classes that occur in the truth or the
    predictions (scikit-learn's ``f1_score(average="macro")``); a class never
    predicted and never true is left out, one with no true positive scores 0.

    Args:
        confusion: a square ``(K, K)`` array of counts.

    Returns:
        The macro F1 in ``[0, 1]`` (0.0 for an empty matrix).

    Raises:
        ConfigError: if ``confusion`` is not a square matrix of non-negative counts.

    Example:
        >>> macro_f1([[5, 0], [0, 5]])
        1.0
    """
    c = np.asarray(confusion, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or (c < 0).any():
        raise ConfigError.build(what="confusion", expected="a square matrix of counts",
                                received=f"shape {c.shape}", fix="pass a (K, K) count matrix")
    tp = np.diag(c)
    true, pred = c.sum(axis=1), c.sum(axis=0)
    present = (true + pred) > 0
    if not present.any():
        return 0.0
    f1 = np.where(present, 2 * tp / np.maximum(true + pred, 1e-300), 0.0)
    return float(f1[present].mean())


def nearest_mean_labels(images: Tensor, auxiliary: Tensor, labels: Tensor) -> Tensor:
    """The class judge of the live audit: the label of the nearest class-mean image.

    The offline auditor trains a CNN judge on its auxiliary images; a federated server
    holds few, so a nearest-class-mean rule on them reads the class off reconstructions.

    Args:
        images: ``(n, C, H, W)`` reconstructions.
        auxiliary: ``(m, C, H, W)`` the server's own labelled images.
        labels: ``(m,)`` their labels.

    Returns:
        ``(n,)`` predicted labels.

    Example:
        >>> aux = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
        >>> nearest_mean_labels(torch.full((1, 1, 2, 2), 0.9), aux, torch.tensor([0, 1]))
        tensor([1])
    """
    classes = torch.unique(labels)
    means = torch.stack([auxiliary[labels == c].mean(0) for c in classes]).flatten(1)
    dist = torch.cdist(images.flatten(1).double(), means.double())
    return classes[dist.argmin(1)]


# ------------------------------------------------------------------ results
class ClientRound(BaseModel):
    """What one client reported after its local training in one round.

    Attributes:
        round: the server round (1-based).
        client: the client's partition id.
        examples: its training examples.
        train_loss: its mean training loss in the last local epoch.
        epsilon: DP-SGD only: the client's epsilon after this round (all its rounds).
        delta: the delta of that epsilon.
    """

    model_config = ConfigDict(extra="forbid")

    round: int
    client: int
    examples: int
    train_loss: float
    epsilon: float | None = None
    delta: float | None = None


class RoundRecord(BaseModel):
    """One server round: federated evaluation of the new global model.

    Attributes:
        round: the round (1-based).
        accuracy: accuracy on the clients' held-out shards (summed counts).
        macro_f1: macro F1 of the summed confusion matrix.
        loss: cross-entropy, weighted by each client's examples.
        examples: held-out examples evaluated.
        clients: partition ids that trained this round.
        lost: clients whose training reply was an error (named by partition id when
            known, else ``node <id>``); FedAvg averaged the others.
        rejected: replies refused by :func:`check_reply` (malformed or oversized), with
            the typed error's message; the round went on without them.
        seconds: wall time of the round.
    """

    model_config = ConfigDict(extra="forbid")

    round: int
    accuracy: float | None = None
    macro_f1: float | None = None
    loss: float | None = None
    examples: int = 0
    clients: list[int] = Field(default_factory=list)
    lost: list[str] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list)
    seconds: float = 0.0


class LeakageRow(BaseModel):
    """One attack of the live audit on one client's real update of one round.

    Attributes:
        round: the round.
        client: the client's partition id.
        attack: ``inverting-gradients-fedavg`` or ``label-inference``.
        images: images the update averages (the victims).
        psnr: mean PSNR of the order-matched reconstructions (dB).
        baseline_psnr: mean PSNR of the best no-attack guess.
        label_recovery: labels inferred correctly (label inference).
        control_psnr: the same attack on an undefended client's update.
        control_label_recovery: its label recovery.
        verdict: ``leaks``, ``no leakage found`` or ``inconclusive`` (the audit's rule).
        reason: why.
        status: ``ok``, ``failed`` or ``n/a`` (skipped, see reason).
        seconds: wall time.
    """

    model_config = ConfigDict(extra="forbid")

    round: int
    client: int
    attack: str
    images: int
    psnr: float | None = None
    baseline_psnr: float | None = None
    label_recovery: float | None = None
    control_psnr: float | None = None
    control_label_recovery: float | None = None
    verdict: str
    reason: str
    status: str = "ok"
    seconds: float = 0.0


class FederatedResult(BaseModel):
    """What :func:`simulate` returns (and ``shieldsplit federate`` writes).

    Attributes:
        defense: the defence trained.
        clients: the number of clients.
        rounds: the rounds asked for.
        partition: the partition spec.
        partition_sizes: training examples per client (partition id order).
        local_epochs: local epochs per round.
        batch_size: the local batch size.
        seed: the run's seed.
        engine: what ran the rounds.
        flwr_version: Flower's version.
        history: one record per finished round.
        client_rounds: every client's report of every round.
        leakage: the live audit's rows (empty without ``audit``).
        audit_budget: the audit's budget, or None.
        delta: DP-SGD's delta (None for other defences).
        complete: False if the run stopped early (Ctrl-C, an error); the rounds kept
            are those that finished.
        error: what stopped it, if anything.
        notes: what the numbers mean and what was not deterministic.
        validation_accuracy: accuracy of the final global model on the ``validation``
            data passed to :func:`simulate` (None without it): what a setting is chosen
            on, never the held-out shards.
        validation_macro_f1: its macro F1.
        validation_examples: the validation examples.
    """

    model_config = ConfigDict(extra="forbid")

    defense: str
    clients: int
    rounds: int
    partition: str
    partition_sizes: list[int]
    local_epochs: int
    batch_size: int
    seed: int
    engine: str = "flower simulation engine (ray backend)"
    flwr_version: str = ""
    history: list[RoundRecord] = Field(default_factory=list)
    client_rounds: list[ClientRound] = Field(default_factory=list)
    leakage: list[LeakageRow] = Field(default_factory=list)
    audit_budget: str | None = None
    delta: float | None = None
    complete: bool = True
    error: str | None = None
    notes: list[str] = Field(default_factory=list)
    validation_accuracy: float | None = None
    validation_macro_f1: float | None = None
    validation_examples: int = 0

    def epsilons(self) -> dict[int, list[float]]:
        """Each client's epsilon after each of its rounds (DP-SGD), by partition id."""
        out: dict[int, list[float]] = {}
        for r in sorted(self.client_rounds, key=lambda c: (c.client, c.round)):
            if r.epsilon is not None:
                out.setdefault(r.client, []).append(r.epsilon)
        return out

    def accounting_gaps(self) -> list[str]:
        """Where a client's epsilon did not grow from one of its rounds to the next.

        DP-SGD's epsilon covers every round a client trained, so it grows with each one; a
        value that does not grow means the client's accountant started again (a restarted
        SuperNode loses what it kept in memory) and the epsilon it reports from then on
        under-states what it spent. The true total is at least the largest value reported.

        Returns:
            One sentence per discontinuity (empty: every curve grows).

        Example:
            >>> r = FederatedResult(defense="dpsgd", clients=1, rounds=3, partition="iid",
            ...                     partition_sizes=[10], local_epochs=1, batch_size=4,
            ...                     seed=0, delta=1e-5, client_rounds=[
            ...                         ClientRound(round=1, client=1, examples=10,
            ...                                     train_loss=0.1, epsilon=5.2),
            ...                         ClientRound(round=3, client=1, examples=10,
            ...                                     train_loss=0.1, epsilon=5.2)])
            >>> print(r.accounting_gaps()[0])  # doctest: +ELLIPSIS
            client 1: epsilon 5.2 after round 3 is not above 5.2 after round 1: ...
        """
        out = []
        for client in sorted({r.client for r in self.client_rounds}):
            mine = sorted((r for r in self.client_rounds
                           if r.client == client and r.epsilon is not None),
                          key=lambda r: r.round)
            for before, after in itertools.pairwise(mine):
                if after.epsilon is not None and before.epsilon is not None \
                        and after.epsilon <= before.epsilon:
                    out.append(
                        f"client {client}: epsilon {after.epsilon:.3g} after round "
                        f"{after.round} is not above {before.epsilon:.3g} after round "
                        f"{before.round}: its privacy accountant started again, so the "
                        "epsilon it reports from then on under-states what it spent (at "
                        f"least {max(r.epsilon or 0.0 for r in mine):.3g} in all)")
        return out

    def table(self) -> str:
        """A plain-text table: one line per round, then the audit's verdicts."""
        lines = [f"{'round':>5} {'accuracy':>9} {'macro F1':>9} {'loss':>8}  lost / rejected"]
        for h in self.history:
            refused = [r.split(":")[0] + " (rejected)" for r in h.rejected]
            lines.append(f"{h.round:>5} {_fmt(h.accuracy, '.4f'):>9} "
                         f"{_fmt(h.macro_f1, '.4f'):>9} {_fmt(h.loss, '.4f'):>8}  "
                         f"{', '.join([*h.lost, *refused]) or '-'}")
        lines += [f"round {h.round}: rejected {r}" for h in self.history for r in h.rejected]
        for client, eps in self.epsilons().items():
            lines.append(f"client {client}: epsilon per round "
                         f"{', '.join(f'{e:.3g}' for e in eps)} (delta {self.delta:g})")
        lines += [f"PRIVACY ACCOUNTING: {gap}" for gap in self.accounting_gaps()]
        for row in self.leakage:
            lines.append(f"round {row.round} client {row.client} {row.attack}: {row.verdict} "
                         f"({row.reason})")
        if not self.complete:
            lines.append(f"stopped early: {self.error}")
        return "\n".join(lines)

    def save_json(self, path: str | Path) -> None:
        """Write the result as JSON, atomically."""
        atomic_write_text(path, self.model_dump_json(indent=2))

    def save_html(self, path: str | Path) -> None:
        """Write :func:`render_html` atomically."""
        atomic_write_text(path, render_html(self))


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# ------------------------------------------------------------------ the client
#: one client's data: ``((x_train, y_train), (x_eval, y_eval))``
Shard = tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass
class ClientSpec:
    """Everything a client needs to train and evaluate one defence on its shard.

    Attributes:
        model: the architecture and initial weights (never modified).
        defense: the defence's registry name.
        options: the defence's keyword options (``cut`` and ``seed`` included).
        shards: partition id -> ``((x_train, y_train), (x_eval, y_eval))``.
        local_epochs: local epochs per round.
        batch_size: the local batch size.
        seed: the run's seed.
    """

    model: nn.Module
    defense: str
    options: dict[str, Any]
    shards: dict[int, Shard] = field(default_factory=dict)
    local_epochs: int = 1
    batch_size: int = 32
    seed: int = 0
    source: Callable[[int, int], Shard] | None = None

    def build(self) -> Defense:
        """A fresh defence around (a copy of) the model, with the run's initial weights."""
        return build_defense(self.model, self.defense, self.options)

    def shard(self, partition_id: int, num_partitions: int | None = None) -> Shard:
        """The shard of one client (loaded through ``source`` on a SuperNode).

        Args:
            partition_id: the client's partition id.
            num_partitions: the number of partitions (for ``source``).

        Raises:
            ConfigError: for a partition id this spec does not hold.
        """
        if partition_id not in self.shards and self.source is not None \
                and num_partitions is not None and 0 <= partition_id < num_partitions:
            self.shards[partition_id] = self.source(partition_id, num_partitions)
        if partition_id not in self.shards:
            raise ConfigError.build(
                what="partition-id", expected=f"one of {sorted(self.shards)}",
                received=partition_id, fix="start the SuperNode with --node-config "
                "'partition-id=<id> num-partitions=<clients>'")
        return self.shards[partition_id]

    def round_seed(self, server_round: int, partition_id: int) -> int:
        """The local training seed of one client in one round."""
        return (self.seed * 1_000_003 + server_round * 10_007 + partition_id) % (2**31)


def build_defense(model: nn.Module, name: str, options: dict[str, Any]) -> Defense:
    """Build a defence that has a federated form, or raise a typed error.

    Args:
        model: the classifier (copied by the defence).
        name: the registry name.
        options: its keyword options.

    Returns:
        The defence.

    Raises:
        UnsupportedModelError: for a defence deployed only under split learning.
    """
    defense = create_defense(name, model, **options)
    if "federated" not in defense.surfaces:
        raise UnsupportedModelError.build(
            what="defense", expected="a defence with a federated form (its surfaces include "
            "'federated')", received=f"{name!r} (surfaces {sorted(defense.surfaces)})",
            fix="train it with its own fit (split learning) or pick none, dpsgd, "
                "latent-fixed, latent-learned, nopeek, laplace or bido")
    return defense


def shared_state(defense: Defense) -> dict[str, Tensor]:
    """The state a federated client sends: floating-point entries, less the client-only ones.

    Args:
        defense: the defence.

    Returns:
        ``name -> tensor`` (detached, on the CPU), in state-dict order.

    Example:
        >>> from shieldsplit.models import SmallConvNet
        >>> dp = build_defense(SmallConvNet(num_classes=2, image_size=8, width=4), "dpsgd",
        ...                    {"cut": 1})
        >>> state = shared_state(dp)
        >>> "rdp" in state, "head.0.weight" in state
        (False, True)
        >>> back = from_record(to_record(state))
        >>> all(torch.equal(back[k], v) for k, v in state.items())
        True
    """
    private = defense.client_only_state()
    return {k: v.detach().cpu() for k, v in defense.state_dict().items()
            if k not in private and torch.is_floating_point(v)}


def to_record(state: dict[str, Tensor]) -> ArrayRecord:
    """Tensors as a Flower ``ArrayRecord`` of numpy arrays (no pickle)."""
    return ArrayRecord({k: Array(v.detach().cpu().numpy()) for k, v in state.items()})


def from_record(record: ArrayRecord) -> dict[str, Tensor]:
    """A Flower ``ArrayRecord`` back as tensors."""
    return {k: torch.from_numpy(np.array(v.numpy(), copy=True)) for k, v in record.items()}


def load_shared(defense: Defense, record: ArrayRecord) -> None:
    """Load the global arrays into ``defense``, checking names and shapes.

    Raises:
        ConfigError: if a name is missing or unknown, or a shape differs (a malformed
            message).
    """
    want = shared_state(defense)
    got = from_record(record)
    if set(got) != set(want) or any(got[k].shape != want[k].shape for k in want):
        bad = sorted(set(got) ^ set(want)) or [k for k in want if got[k].shape != want[k].shape]
        raise ConfigError.build(
            what="arrays", expected="the defence's shared state (same names and shapes)",
            received=f"mismatched entries {bad[:5]}", fix="send the arrays of the same "
            "defence and architecture")
    defense.load_state_dict({k: got[k].to(want[k].dtype) for k in want}, strict=False)


def _local_records(defense: Defense) -> dict[str, Tensor]:
    private = defense.client_only_state()
    return {k: v.detach().cpu() for k, v in defense.state_dict().items() if k in private}


def _eval_counts(defense: Defense, x: Tensor, y: Tensor) -> tuple[float, np.ndarray]:
    k = int(defense.num_classes)
    with torch.no_grad():
        defense.eval()
        logits = defense(x)
        loss = float(F.cross_entropy(logits, y, reduction="sum"))
        pred = logits.argmax(-1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y.numpy(), pred.numpy()), 1)
    return loss, confusion


def _config_value(content: RecordDict, key: str) -> Any:
    record = content.get("config") if "config" in content else None
    if not isinstance(record, ConfigRecord) or key not in record:
        raise _malformed("config", f"a ConfigRecord with {key!r}", type(record).__name__)
    return record[key]


def _last_loss(history: BaseModel) -> float:
    epochs = getattr(history, "epochs", None)
    return float(epochs[-1].train_loss) if epochs else float("nan")


SpecSource = ClientSpec | Callable[[Context], ClientSpec]


def _spec(spec: SpecSource, context: Context) -> ClientSpec:
    return spec if isinstance(spec, ClientSpec) else spec(context)


def _node(context: Context) -> tuple[int, int | None]:
    cfg = context.node_config
    num = cfg.get("num-partitions")
    return int(cfg.get("partition-id", 0)), None if num is None else int(num)


def client_app(spec: SpecSource) -> ClientApp:
    """The Flower ``ClientApp`` of one defence (simulation and deployment alike).

    ``train``: load the global arrays and the client's own accountant state, run the
    defence's :meth:`~shieldsplit.defenses.base.Defense.fit` for ``local_epochs`` on its shard,
    reply with the new shared arrays and ``num-examples``, ``train-loss``,
    ``partition-id`` (and ``epsilon``, ``delta`` for DP-SGD). ``evaluate``: loss and the
    confusion matrix on the held-out shard. The client's partition id comes from the
    node config (``partition-id``), as Flower's simulation engine sets it.

    Args:
        spec: the defence, the model and the shards, or a function of the run's
            ``Context`` that builds them (a deployed app, :func:`spec_from_config`).

    Returns:
        The app.
    """
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        run = _spec(spec, context)
        pid, num = _node(context)
        (x, y), _ = run.shard(pid, num)
        defense = run.build()
        load_shared(defense, arrays_of(msg.content))
        if LOCAL_STATE_KEY in context.state:
            defense.load_state_dict(from_record(arrays_of(context.state, LOCAL_STATE_KEY)),
                                    strict=False)
        rnd = int(_config_value(msg.content, "server-round"))
        seed = run.round_seed(rnd, pid)
        loader = DataLoader(TensorDataset(x, y), batch_size=run.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        history = defense.fit(loader, epochs=run.local_epochs, seed=seed, progress=False)
        local = _local_records(defense)
        if local:
            context.state[LOCAL_STATE_KEY] = to_record(local)
        metrics: dict[str, int | float | list[int] | list[float]] = {
            "num-examples": len(x), "partition-id": pid,
            "train-loss": _last_loss(history),
        }
        privacy = defense.privacy()
        if "epsilon" in privacy:
            metrics["epsilon"] = float(privacy["epsilon"])
            metrics["delta"] = float(privacy["delta"])
        return Message(RecordDict({"arrays": to_record(shared_state(defense)),
                                   "metrics": MetricRecord(metrics)}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        run = _spec(spec, context)
        pid, num = _node(context)
        _, (x, y) = run.shard(pid, num)
        defense = run.build()
        load_shared(defense, arrays_of(msg.content))
        loss, confusion = _eval_counts(defense, x, y)
        metrics: dict[str, int | float | list[int] | list[float]] = {
            "num-examples": len(x), "partition-id": pid, "loss-sum": loss,
                   "confusion": [int(v) for v in confusion.ravel()]}
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    return app


def aggregate_evaluation(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Federated evaluation summed exactly: confusion matrices and loss sums add up.

    Args:
        records: the clients' evaluate replies.
        weight_key: the examples key (``num-examples``).

    Returns:
        ``accuracy``, ``macro-f1``, ``loss`` (per example) and ``num-examples``.
    """
    total, loss, confusion = 0, 0.0, None
    for record in records:
        metrics = metrics_of(record)
        total += int(metric(metrics, weight_key))
        loss += metric(metrics, "loss-sum")
        c = np.asarray(metrics.get("confusion"), dtype=np.int64)
        confusion = c if confusion is None else confusion + c
    if confusion is None or total == 0:
        return MetricRecord({weight_key: 0})
    k = round(len(confusion) ** 0.5)
    matrix = confusion.reshape(k, k)
    return MetricRecord({weight_key: total, "loss": loss / total,
                         "accuracy": float(np.trace(matrix)) / total,
                         "macro-f1": macro_f1(matrix)})


# ------------------------------------------------------------------ the server
def _node_of(msg: Message) -> int:
    return int(msg.metadata.src_node_id)


def _malformed(what: str, expected: str, received: Any) -> ConfigError:
    return ConfigError.build(what=what, expected=expected, received=received,
                             fix="send the records shieldsplit's ClientApp sends")


def arrays_of(content: RecordDict, key: str = "arrays") -> ArrayRecord:
    """The ``ArrayRecord`` under ``key`` of a message, or a typed error (a malformed message).

    Raises:
        ConfigError: if it is missing or not an ``ArrayRecord``.
    """
    record = content.get(key) if key in content else None
    if not isinstance(record, ArrayRecord):
        raise _malformed(key, "an ArrayRecord", type(record).__name__)
    return record


def metrics_of(content: RecordDict) -> MetricRecord:
    """The (only) ``MetricRecord`` of a message, or a typed error.

    Raises:
        ConfigError: if the message holds none.
    """
    record = next(iter(content.metric_records.values()), None)
    if record is None:
        raise _malformed("metrics", "a MetricRecord", "none")
    return record


def check_reply(content: RecordDict, sent: ArrayRecord | None = None) -> None:
    """Check a client's reply before anything reads it (the server's gate).

    A training reply (``sent`` given) must hold exactly the arrays that were sent (same
    names, shapes and dtypes, so never more bytes) with finite values, and a metric
    record with numeric ``num-examples`` (positive) and ``partition-id``.

    Args:
        content: the reply's records.
        sent: the arrays the server sent this round, for a training reply.

    Raises:
        ConfigError: naming what is malformed or oversized.

    Example:
        >>> sent = ArrayRecord({"w": Array(np.zeros(3, dtype=np.float32))})
        >>> reply = RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(9, np.float32))}),
        ...                     "metrics": MetricRecord({"num-examples": 4,
        ...                                              "partition-id": 0})})
        >>> check_reply(reply, sent)
        Traceback (most recent call last):
        ...
        shieldsplit.errors.ConfigError: Invalid configuration: expected 'w' of shape (3,), ...
    """
    m = metrics_of(content)
    for key in ("num-examples", "partition-id"):
        metric(m, key)
    if metric(m, "num-examples") <= 0:
        raise _malformed("num-examples", "a positive count", m.get("num-examples"))
    if sent is None:
        return
    got = arrays_of(content)
    if set(got) != set(sent):
        raise _malformed("arrays", f"the {len(sent)} arrays sent",
                         f"{len(got)} arrays, names differing in "
                         f"{sorted(set(got) ^ set(sent))[:3]}")
    for key, array in got.items():
        ref = sent[key]
        if tuple(array.shape) != tuple(ref.shape) or array.dtype != ref.dtype \
                or len(array.data) > 2 * len(ref.data) + 1024:
            raise _malformed("arrays", f"{key!r} of shape {tuple(ref.shape)}, {ref.dtype}",
                             f"shape {tuple(array.shape)}, {array.dtype}, "
                             f"{len(array.data)} bytes")
        if not np.isfinite(array.numpy()).all():
            raise _malformed("arrays", f"finite values in {key!r}", "NaN or infinity")


def metric(record: MetricRecord, key: str) -> float:
    """A scalar metric, or a typed error.

    Raises:
        ConfigError: if it is missing or not a number.
    """
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _malformed(key, "a number", repr(value))
    return float(value)


class RecordingStrategy(Strategy):
    """Wraps a Flower strategy and keeps a typed record of every round.

    Replies are sorted by partition id before the inner strategy aggregates them (the
    weighted sum is then the same whatever order Ray delivers them in); error replies
    (a client that crashed or timed out) are logged as lost and left to the inner
    strategy, which, as Flower's FedAvg does, aggregates the valid replies only.

    Args:
        inner: the strategy that aggregates (e.g. ``FedAvg``).
        result: the result to fill in (its ``history`` and ``client_rounds``).
        progress: write one progress line per round to stderr.
        on_round: called with the result after every round (e.g. to save it, so that an
            interrupted run keeps its finished rounds).
    """

    def __init__(self, inner: Strategy, result: FederatedResult, *, progress: bool = False,
                 on_round: Callable[[FederatedResult], None] | None = None) -> None:
        self.inner = inner
        self.result = result
        self.progress = progress
        self.on_round = on_round
        self.sent: dict[int, ArrayRecord] = {}
        #: per round, the training messages sent (their ids are set when Flower sends them)
        self.outgoing: dict[int, list[Message]] = {}
        #: sent message id -> destination node (names error replies the SuperLink made)
        self.destinations: dict[str, int] = {}
        self.nodes: dict[int, int] = {}
        self._start = time.perf_counter()
        self._round_start = time.perf_counter()

    def summary(self) -> None:
        """Log the inner strategy's summary."""
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Remember the arrays sent this round and the nodes they go to, then let the
        inner strategy configure."""
        self._round_start = time.perf_counter()
        self.sent[server_round] = arrays
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self.outgoing[server_round] = messages
        return messages

    def _sorted(self, replies: Iterable[Message], *, sent: ArrayRecord | None = None
                ) -> tuple[list[Message], list[Message], list[str]]:
        """Valid replies (sorted by client), error replies, and the rejected ones' reasons."""
        good: list[Message] = []
        bad: list[Message] = []
        rejected: list[str] = []
        for msg in replies:
            if msg.has_error():
                bad.append(msg)
                continue
            with contextlib.suppress(ShieldSplitError):  # name the client if it can be read
                self.nodes[_node_of(msg)] = int(metric(metrics_of(msg.content),
                                                       "partition-id"))
            try:
                check_reply(msg.content, sent)
            except ShieldSplitError as exc:
                name = self._lost_names([msg])[0]
                logger.warning("rejected the reply of %s: %s", name, exc)
                rejected.append(f"{name}: {exc}")
                continue
            good.append(msg)
        good.sort(key=lambda m: self.nodes.get(_node_of(m), _node_of(m)))
        return good, bad, rejected

    def _lost_names(self, bad: list[Message]) -> list[str]:
        return [self._name(self.destinations.get(m.metadata.reply_to_message_id, _node_of(m)))
                for m in bad]

    def _name(self, node: int) -> str:
        return f"client {self.nodes[node]}" if node in self.nodes else f"node {node}"

    def silent(self, server_round: int, replies: list[Message]) -> list[str]:
        """The clients sent this round's training message that sent no reply at all (not
        even an error) before the round's timeout, e.g. a SuperNode killed after it
        pulled the message.

        Args:
            server_round: the round.
            replies: every reply received, error replies included.

        Returns:
            Their names (``client <partition>`` when known, else ``node <id>``).
        """
        answered = {m.metadata.reply_to_message_id for m in replies}
        return [self._name(int(m.metadata.dst_node_id))
                for m in self.outgoing.get(server_round, [])
                if m.metadata.message_id and m.metadata.message_id not in answered]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Record every client's report, then aggregate with the inner strategy."""
        replies = list(replies)
        for out in self.outgoing.get(server_round, []):
            self.destinations[out.metadata.message_id] = int(out.metadata.dst_node_id)
        good, bad, rejected = self._sorted(replies, sent=self.sent.get(server_round))
        silent = self.silent(server_round, replies)
        for name in silent:
            logger.warning("round %d: lost %s (no reply before the round's timeout)",
                           server_round, name)
        record = RoundRecord(round=server_round, lost=[*self._lost_names(bad), *silent],
                             rejected=rejected)
        for msg in good:
            m = metrics_of(msg.content)
            pid = int(metric(m, "partition-id"))
            record.clients.append(pid)
            self.result.client_rounds.append(ClientRound(
                round=server_round, client=pid, examples=int(metric(m, "num-examples")),
                train_loss=metric(m, "train-loss"),
                epsilon=metric(m, "epsilon") if "epsilon" in m else None,
                delta=metric(m, "delta") if "delta" in m else None))
        for msg in bad:
            logger.warning("round %d: lost %s (%s)", server_round,
                           self._lost_names([msg])[0], msg.error.reason)
        self.result.history.append(record)
        self.audit_round(server_round, good)
        # the inner strategy sees the sorted valid replies and the errors after them (a
        # rejected reply is left out, as if lost)
        return self.inner.aggregate_train(server_round, [*good, *bad])

    def audit_round(self, server_round: int, replies: list[Message]) -> None:
        """A hook run on the valid replies of every round (nothing here)."""

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """The inner strategy's federated evaluation."""
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int,
                           replies: Iterable[Message]) -> MetricRecord | None:
        """Aggregate (sorted) and record the round's accuracy, macro F1 and loss."""
        good, bad, _ = self._sorted(replies)
        metrics = self.inner.aggregate_evaluate(server_round, [*good, *bad])
        record = next((r for r in self.result.history if r.round == server_round), None)
        if record is None:
            record = RoundRecord(round=server_round)
            self.result.history.append(record)
        if metrics is not None and "accuracy" in metrics:
            record.accuracy = metric(metrics, "accuracy")
            record.macro_f1 = metric(metrics, "macro-f1")
            record.loss = metric(metrics, "loss")
            record.examples = int(metric(metrics, "num-examples"))
        record.seconds = time.perf_counter() - self._round_start
        if self.progress:
            sys.stderr.write(progress_line(
                "federated rounds", server_round, self.result.rounds,
                time.perf_counter() - self._start,
                finished=server_round == self.result.rounds) + "\n")
        if self.on_round is not None:
            self.on_round(self.result)
        return metrics


@dataclass
class AuditSetting:
    """What the live audit needs besides the replies.

    The true images of each client are an **evaluation device of the simulation**: a
    real server never sees them; they only score the attacks (PSNR, line-up, labels).

    Attributes:
        spec: the clients' spec (their shards are the ground truth, and the defence's
            architecture is the model the attacker holds).
        auxiliary: the server's own labelled images (never in a client's shard).
        budget: the attack budget.
        max_images: updates that average more images are not attacked (reported n/a).
        lr: the local learning rate the attacker assumes.
        seed: seeds the attacks.
        label_grid: candidate label compositions the label inference replays on a
            binary task (:func:`replay_label_counts`).
    """

    spec: ClientSpec
    auxiliary: tuple[Tensor, Tensor]
    budget: str = "quick"
    max_images: int = 64
    lr: float = 1e-3
    seed: int = 0
    label_grid: int = 33

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
    (:func:`~shieldsplit.attacks.gradient.infer_labels_idlg` on the last linear layer's
    update). Each is scored against the client's true shard and decided with the audit's
    rule (:func:`~shieldsplit.functional.verdict.decide`); the positive control is the
    same attack on the update an **undefended** client (the defence's undefended twin)
    sends from the same data with the same local protocol, computed on the side in the
    simulation. For ``defense="none"`` the update is its own control.

    The attacker simulates plain SGD at ``lr`` for the client's local epochs and batch
    size; the clients really train with the defence's own optimiser (Adam), so the
    attack is misspecified on every update alike (target and control). On a binary task
    the label inference replays the undefended client's protocol instead (Adam,
    :func:`replay_label_counts`): exact in form for the control, misspecified for a
    defence that trains otherwise (DP-SGD's clipped, noised steps).

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
        if len(x) > s.max_images:
            rows.append(LeakageRow(
                round=rnd, client=pid, attack=UPDATE_ATTACK, images=len(x),
                verdict="inconclusive", status="n/a",
                reason=f"the update averages {len(x)} images, more than max_images="
                       f"{s.max_images}: not attacked"))
            return rows
        rows.append(self._invert(rnd, pid, target, control, x, y))
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
        t_ev, t_rate = _label_evidence(target, y, self.setting)
        c_ev, c_rate = ((t_ev, t_rate) if control is target
                        else _label_evidence(control, y, self.setting))
        decision = decide(t_ev, c_ev, control_name="an undefended client's update")
        return LeakageRow(round=rnd, client=pid, attack=LABEL_ATTACK, images=len(y),
                          label_recovery=t_rate, control_label_recovery=c_rate,
                          verdict=decision.verdict, reason=decision.reason,
                          seconds=time.perf_counter() - start)

    def _invert(self, rnd: int, pid: int, target: ClientUpdate, control: ClientUpdate, x: Tensor,
                y: Tensor) -> LeakageRow:
        start = time.perf_counter()
        t_ev, t_psnr, base = self._inversion_evidence(target, x, y)
        c_ev, c_psnr, _ = ((t_ev, t_psnr, base) if control is target
                           else self._inversion_evidence(control, x, y))
        decision = decide(t_ev, c_ev, control_name="an undefended client's update")
        return LeakageRow(round=rnd, client=pid, attack=UPDATE_ATTACK, images=len(x),
                          psnr=t_psnr, baseline_psnr=base, control_psnr=c_psnr,
                          verdict=decision.verdict, reason=decision.reason,
                          seconds=time.perf_counter() - start)

    def _inversion_evidence(self, upd: ClientUpdate, x: Tensor, y: Tensor
                            ) -> tuple[Evidence, float, float]:
        # the attack modules and metrics load only when an audit runs (a ClientApp never
        # needs them, and every deployed ClientApp process imports this module)
        from shieldsplit.attacks.base import AttackContext, Observation, create_attack
        from shieldsplit.functional.metrics import psnr

        s = self.setting
        ax, ay = s.auxiliary
        obs = Observation(kind="update", batch_size=len(x),
                          image_shape=(int(x.shape[1]), int(x.shape[2]), int(x.shape[3])),
                          update=upd.update,
                          meta={"local_epochs": s.spec.local_epochs,
                                "local_batch_size": s.spec.batch_size, "lr": s.lr})
        attack = create_attack(UPDATE_ATTACK, seed=s.seed, budget=s.budget, progress=False)
        attack.prepare(AttackContext(
            image_shape=obs.image_shape, num_classes=upd.num_classes, model=upd.model,
            auxiliary_images=ax, auxiliary_labels=ay, budget=s.budget,  # type: ignore[arg-type]
            seed=s.seed))
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


def _last_linear(model: nn.Module) -> str:
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return last[-1] if last else ""


def replay_label_counts(model: nn.Module, update: Mapping[str, Tensor], *, images: int,
                        auxiliary: tuple[Tensor, Tensor], local_epochs: int,
                        local_batch_size: int, grid: int = 33, repeats: int = 3,
                        seed: int = 0) -> Tensor:
    """A binary client's label counts, read off its update by replaying its local training.

    The honest-but-curious server knows the protocol (the project's training loop:
    Adam, ``local_epochs`` of batches of ``local_batch_size``) and holds the weights it
    sent. For each candidate share ``k / (grid - 1)`` of class 0 it replays the client's
    training of the **last linear layer** (Adam is per parameter: that layer's steps
    depend on the rest of the network only through the features it receives, taken here
    at the sent weights, frozen) on ``images`` feature vectors of auxiliary images with that
    label composition (each class's images cycled in a seeded order), and keeps the composition
    whose update of that layer (weight and bias) is nearest (L2) to the received one.
    Adam's normalised steps destroy the gradient magnitudes the count heuristic of
    :func:`~shieldsplit.attacks.gradient.infer_labels_idlg` relies on; the replay does
    not need them. Cost: one forward pass of the auxiliary images, then ``grid x
    repeats`` trainings of one linear layer.

    Args:
        model: the federated model at the weights the server sent (not modified).
        update: parameter name -> received minus sent (must hold the last linear
            layer's ``weight`` and ``bias``).
        images: the client's training examples (its ``num-examples``).
        auxiliary: the server's labelled images (both classes).
        local_epochs: the clients' local epochs.
        local_batch_size: their batch size.
        grid: candidate compositions (at least 2; at most ``images + 1`` are distinct).
        repeats: seeded draws (image order and shuffling) averaged per candidate.
        seed: seeds the draws and the replayed shuffling.

    Returns:
        ``(images,)`` inferred labels, sorted.

    Raises:
        ConfigError: for a model that is not binary or has no last linear layer in
            ``update``, or a bad count.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> y = torch.tensor([0] * 30 + [1] * 10)                # the client: 30 and 10
        >>> x = (torch.rand(40, 1, 2, 2) + y.view(-1, 1, 1, 1)) / 2
        >>> trained = copy.deepcopy(net)
        >>> from shieldsplit.training import fit_plain
        >>> loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True,
        ...                     generator=torch.Generator().manual_seed(0))
        >>> _ = fit_plain(trained, loader, epochs=2, progress=False)
        >>> update = {k: v - dict(net.named_parameters())[k]
        ...           for k, v in trained.named_parameters()}
        >>> replay_label_counts(net, update, images=40, auxiliary=(x, y), local_epochs=2,
        ...                     local_batch_size=8).bincount().tolist()
        [29, 11]
    """
    from shieldsplit.training import fit_plain

    images = check_int("images", images, low=1, fix="pass the client's num-examples")
    grid = check_int("grid", grid, low=2, fix="pass grid=33")
    repeats = check_int("repeats", repeats, low=1, fix="pass repeats=3")
    last = _last_linear(model)
    layer = model.get_submodule(last) if last else None
    keys = (f"{last}.weight", f"{last}.bias")
    classes = int(layer.out_features) if isinstance(layer, nn.Linear) else 0
    if layer is None or classes != 2 or any(k not in update for k in keys):
        raise ConfigError.build(what="model", expected="a binary classifier whose last "
                                "nn.Linear (weight and bias) is in the update",
                                received=f"{classes} classes, keys {sorted(update)[-2:]}",
                                fix="use infer_labels_idlg for more classes")
    ax, ay = auxiliary
    replica = copy.deepcopy(model).eval()
    captured: list[Tensor] = []
    hook = replica.get_submodule(last).register_forward_hook(
        lambda _m, inputs, _out: captured.append(inputs[0].detach()))
    try:
        with torch.no_grad():
            replica(ax)
    finally:
        hook.remove()
    features = captured[0].flatten(1)
    seen = torch.cat([update[k].detach().flatten() for k in keys])
    gen = torch.Generator().manual_seed(seed)
    best: tuple[float, int] | None = None
    for zeros in sorted({round(step * images / (grid - 1)) for step in range(grid)}):
        labels = torch.tensor([0] * zeros + [1] * (images - zeros))
        moved = torch.zeros_like(seen)
        for rep in range(repeats):  # the mean replayed update over seeded draws
            picks = []
            for c in (0, 1):
                # every auxiliary image of the class once before any twice, seeded order
                pool = torch.nonzero(ay == c).flatten()
                pool = pool if len(pool) else torch.arange(len(ay))
                count = int((labels == c).sum())
                order = pool[torch.randperm(len(pool), generator=gen)]
                picks.append(order.repeat(count // len(order) + 1)[:count])
            head = cast(nn.Linear, copy.deepcopy(layer)).train()
            start = torch.cat([head.weight.detach().flatten(), head.bias.detach().flatten()])
            loader = DataLoader(TensorDataset(features[torch.cat(picks)], labels),
                                batch_size=local_batch_size, shuffle=True,
                                generator=torch.Generator().manual_seed(seed + rep))
            fit_plain(head, loader, epochs=local_epochs, seed=seed + rep, progress=False)
            end = torch.cat([head.weight.detach().flatten(), head.bias.detach().flatten()])
            moved += (end - start) / repeats
        dist = float(torch.linalg.vector_norm(moved - seen))
        if best is None or dist < best[0]:
            best = (dist, zeros)
    zeros = best[1] if best is not None else 0
    return torch.tensor([0] * zeros + [1] * (images - zeros), dtype=torch.long)


def _label_evidence(upd: ClientUpdate, y: Tensor, setting: AuditSetting | None = None
                    ) -> tuple[LabelEvidence, float]:
    from shieldsplit.attacks.gradient import infer_labels_idlg

    weight = f"{_last_linear(upd.model)}.weight"
    if weight not in upd.update:
        return LabelEvidence(status="n/a"), 0.0
    if setting is not None and upd.num_classes == 2 \
            and weight.replace(".weight", ".bias") in upd.update:
        inferred = replay_label_counts(
            upd.model, upd.update, images=len(y), auxiliary=setting.auxiliary,
            local_epochs=setting.spec.local_epochs, local_batch_size=setting.spec.batch_size,
            grid=setting.label_grid, seed=setting.seed)
    else:  # an update is minus the learning rate times the summed gradients
        inferred = infer_labels_idlg(-upd.update[weight], batch_size=len(y))
    aligned = align_labels(inferred, y)
    right = int((aligned.cpu() == y.cpu()).sum())
    low, high = wilson_interval(right, len(y))
    ev = LabelEvidence(images=len(y), label_recovery=right / len(y), label_low=low,
                       label_high=high, majority=majority_rate(y),
                       setting=setting.where() if setting is not None else None)
    return ev, right / len(y)


# ------------------------------------------------------------------ server app
def server_app(spec: ClientSpec, *, rounds: int, result: FederatedResult,
               audit: AuditSetting | None = None, progress: bool = False,
               timeout: float = 3600.0, errors: list[BaseException] | None = None,
               on_round: Callable[[FederatedResult], None] | None = None,
               strategy: Strategy | None = None,
               final: list[ArrayRecord] | None = None) -> ServerApp:
    """The Flower ``ServerApp``: FedAvg (wrapped in :class:`AuditingStrategy` with an audit).

    The result is filled in round by round, so an interrupted run keeps its finished
    rounds.

    Args:
        spec: the defence and the model (the initial arrays).
        rounds: server rounds.
        result: what to fill in.
        audit: the live audit's setting, or None.
        progress: one line per round on stderr.
        timeout: seconds FedAvg waits for the replies of a round.
        errors: where an exception of the server's main is kept for the caller (the
            engine only logs it).
        on_round: called with the result after every round.
        strategy: the Flower strategy that aggregates (default: ``FedAvg`` over all
            ``result.clients`` clients with :func:`aggregate_evaluation`); it must send
            the config's ``server-round`` and read ``num-examples``, as Flower's do.
        final: where the final global arrays are appended when the run finishes.

    Returns:
        The app.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        n = result.clients
        inner = strategy or FedAvg(min_train_nodes=n, min_evaluate_nodes=n,
                                   min_available_nodes=n,
                                   evaluate_metrics_aggr_fn=aggregate_evaluation)
        wrapper = (AuditingStrategy(inner, result, audit, progress=progress, on_round=on_round)
                    if audit is not None
                    else RecordingStrategy(inner, result, progress=progress, on_round=on_round))
        try:
            initial = to_record(shared_state(spec.build()))
            done = wrapper.start(grid=grid, initial_arrays=initial, num_rounds=rounds,
                                 timeout=timeout)
            if final is not None:
                final.append(done.arrays)
        except BaseException as exc:
            if errors is not None:
                errors.append(exc)
            raise

    return app


@contextlib.contextmanager
def _flower_logs(quiet: bool) -> Iterator[None]:
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    if quiet:
        flwr_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        flwr_logger.setLevel(level)


def make_shards(x: Tensor, y: Tensor, *, clients: int, partition: str, seed: int,
                eval_fraction: float = 0.2
                ) -> dict[int, tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]]:
    """Partition ``(x, y)`` among clients, then hold out ``eval_fraction`` of each shard.

    Args:
        x: images.
        y: labels.
        clients: the number of clients.
        partition: ``"iid"`` or ``"dirichlet:ALPHA"``.
        seed: seeds the partition and the hold-out.
        eval_fraction: the share of each shard kept for federated evaluation (at
            least one example when the shard has two).

    Returns:
        partition id -> ``((x_train, y_train), (x_eval, y_eval))``.

    Example:
        >>> x, y = torch.rand(20, 1, 8, 8), torch.arange(20) % 2
        >>> shards = make_shards(x, y, clients=2, partition="iid", seed=0)
        >>> [(len(tr[1]), len(ev[1])) for tr, ev in shards.values()]
        [(8, 2), (8, 2)]
    """
    parts = partition_indices(y.numpy(), clients=clients, spec=partition, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    out = {}
    for pid, idx in enumerate(parts):
        order = torch.as_tensor(idx)[torch.randperm(len(idx), generator=g)]
        k = min(len(order) - 1, max(1, round(eval_fraction * len(order)))) \
            if len(order) > 1 else 0
        ev, tr = order[:k], order[k:]
        out[pid] = ((x[tr], y[tr]), (x[ev] if k else x[tr], y[ev] if k else y[tr]))
    return out


def simulate(
    model: nn.Module,
    *,
    data: Any,
    defense: str = "none",
    clients: int = 2,
    rounds: int = 3,
    partition: str = "iid",
    local_epochs: int = 1,
    batch_size: int = 32,
    audit: str | None = None,
    seed: int = 0,
    cut: int | str = 2,
    defense_options: dict[str, Any] | None = None,
    audit_share: float = 0.1,
    audit_max_images: int = 64,
    progress: bool = True,
    validation: Any = None,
) -> FederatedResult:
    """Federated training of a defence on Flower's simulation engine (Ray backend).

    The data (any form of docs/data.md; an ``ImageDataset`` gives its training split)
    is partitioned among ``clients`` (:func:`make_shards`); with ``audit`` a share
    ``audit_share`` (at least 16 images) is first set aside as the server's auxiliary
    data. Each round every client trains the defence for ``local_epochs`` from the
    global weights, FedAvg averages (weighted by examples) and every client evaluates
    the new global model on its held-out shard.

    Deterministic with the seed: client seeds derive from (seed, round, client),
    replies are sorted by client before averaging, and Ray runs one client at a time.
    Flower's node ids and log timestamps differ from run to run.

    Args:
        model: the classifier (never modified).
        data: labelled images.
        defense: a defence with a federated form.
        clients: virtual SuperNodes.
        rounds: server rounds.
        partition: ``"iid"`` or ``"dirichlet:ALPHA"``.
        local_epochs: local epochs per round.
        batch_size: local batch size.
        audit: None, or the live audit's budget (``"quick"``, ``"standard"``,
            ``"thorough"``).
        seed: seeds everything.
        cut: the defence's cut.
        defense_options: the defence's own keyword options.
        audit_share: the share of the data the server keeps as auxiliary images.
        audit_max_images: the audit skips updates that average more images.
        progress: a line per round on stderr; Flower's INFO logs otherwise hidden.
        validation: labelled images (any form of docs/data.md; e.g. ``(ds.x_val,
            ds.y_val)``) the final global model is scored on
            (``result.validation_accuracy``, ``validation_macro_f1``): the split a
            setting is chosen on.

    Returns:
        The result (rounds finished so far if interrupted; ``complete`` says so).

    Raises:
        ConfigError: on a bad option.
        UnsupportedModelError: for a defence without a federated form.
    """
    import flwr
    from flwr.simulation import run_simulation

    check_model(model)
    seed = check_seed(seed)
    clients = check_int("clients", clients, low=1, fix="pass clients=2 or more")
    rounds = check_int("rounds", rounds, low=1, fix="pass rounds=1 or more")
    local_epochs = check_int("local_epochs", local_epochs, low=1, fix="pass local_epochs=1")
    batch_size = check_int("batch_size", batch_size, low=1, fix="pass batch_size=32")
    if audit not in (None, "quick", "standard", "thorough"):
        raise ConfigError.build(what="audit", expected="None, 'quick', 'standard' or "
                                "'thorough'", received=repr(audit), fix="pass audit='quick'")
    x, y = as_tensors(data, model=model)
    options = {"cut": cut, "seed": seed, **(defense_options or {})}
    if defense.startswith("latent"):
        options.setdefault("input_shape", tuple(int(s) for s in x.shape[1:]))
    probe = build_defense(model, defense, options)
    auxiliary: tuple[Tensor, Tensor] | None = None
    if audit is not None:
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        k = max(16, int(audit_share * len(x)))
        auxiliary = (x[perm[:k]], y[perm[:k]])
        x, y = x[perm[k:]], y[perm[k:]]
    shards = make_shards(x, y, clients=clients, partition=partition, seed=seed)
    spec = ClientSpec(model=copy.deepcopy(model).cpu(), defense=defense, options=options,
                      shards=shards, local_epochs=local_epochs, batch_size=batch_size,
                      seed=seed)
    result = FederatedResult(
        defense=defense, clients=clients, rounds=rounds, partition=partition,
        partition_sizes=[len(shards[p][0][1]) for p in range(clients)],
        local_epochs=local_epochs, batch_size=batch_size, seed=seed,
        flwr_version=str(getattr(flwr, "__version__", "")), audit_budget=audit,
        delta=probe.privacy().get("delta"),
        notes=["accuracy, macro F1 and loss: the global model after each round on the "
               "clients' held-out shards (confusion matrices and loss sums added up)"])
    setting = None
    if auxiliary is not None:
        lr = float(getattr(probe, "lr", 1e-3))
        setting = AuditSetting(spec=spec, auxiliary=auxiliary, budget=audit or "quick",
                               max_images=audit_max_images, lr=lr, seed=seed)
        result.notes.append("the live audit scores attacks with the clients' true images: "
                            "an evaluation device of the simulation, not what a server sees")
    val = None if validation is None else as_tensors(validation, model=model,
                                                     what="validation")
    failure: list[BaseException] = []
    final: list[ArrayRecord] = []
    server = server_app(spec, rounds=rounds, result=result, audit=setting, progress=progress,
                        errors=failure, final=final)
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": 1, "include_dashboard": False}}
    try:
        with _flower_logs(quiet=not progress):
            run_simulation(server_app=server, client_app=client_app(spec),
                           num_supernodes=clients, backend_config=backend)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        result.complete, result.error = False, "interrupted (Ctrl-C)"
    except Exception as exc:  # the engine re-raises the server's error: keep what finished
        if isinstance(exc, ShieldSplitError):
            raise
        logger.warning("the simulation stopped: %s: %s", type(exc).__name__, exc)
        result.complete, result.error = False, f"{type(exc).__name__}: {exc}"
    if failure:
        result.complete, result.error = False, f"{type(failure[0]).__name__}: {failure[0]}"
        if isinstance(failure[0], ShieldSplitError):
            raise failure[0]
    done = [h for h in result.history if h.accuracy is not None]
    if len(done) < rounds and result.complete:
        result.complete, result.error = False, f"{len(done)} of {rounds} rounds finished"
    if val is not None and final:
        scored = spec.build()
        load_shared(scored, final[-1])
        _, confusion = _eval_counts(scored, *val)
        result.validation_examples = int(confusion.sum())
        result.validation_accuracy = float(np.trace(confusion)) / max(1, len(val[1]))
        result.validation_macro_f1 = macro_f1(confusion)
    return result


# ------------------------------------------------------------------ deployment
#: the run-config keys of a deployed app (``[tool.flwr.app.config]``) and their defaults
RUN_CONFIG_DEFAULTS: dict[str, Any] = {
    "defense": "none", "model": "small-convnet", "data": "digits", "limit": 0,
    "partition": "iid", "seed": 0, "local-epochs": 1, "batch-size": 32, "cut": 2,
    "num-clients": 2, "num-server-rounds": 2, "out": "", "min-clients": 0,
    "round-timeout": 3600,
}


def _config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(run_config) - set(RUN_CONFIG_DEFAULTS))
    if unknown:
        raise ConfigError.build(what="run config",
                                expected=f"keys of {sorted(RUN_CONFIG_DEFAULTS)}",
                                received=unknown, fix="drop or rename the unknown keys")
    return {**RUN_CONFIG_DEFAULTS, **dict(run_config)}


def spec_from_config(run_config: Mapping[str, Any]) -> ClientSpec:
    """The :class:`ClientSpec` of a deployed app, from its run config.

    Every SuperNode loads the named data set and keeps its own partition
    (``partition-id`` of ``num-partitions`` in its ``--node-config``), a stand-in for a
    site's own data. Keys: see :data:`RUN_CONFIG_DEFAULTS` (``limit`` 0: no cap).

    Args:
        run_config: the run config (``context.run_config``).

    Returns:
        The spec (shards loaded on first use).

    Raises:
        ConfigError: for an unknown key or value.
    """
    from shieldsplit.data import default_data_root, load_dataset
    from shieldsplit.models import create_model

    cfg = _config(run_config)
    seed, data, limit = int(cfg["seed"]), str(cfg["data"]), int(cfg["limit"]) or None
    ds = load_dataset(data, root=None if data == "digits" else default_data_root(), seed=seed,
                      limit=limit)
    torch.manual_seed(seed)
    model = create_model(str(cfg["model"]), in_channels=ds.in_channels,
                         num_classes=ds.num_classes, image_size=ds.image_size[0])
    cut = int(cfg["cut"]) if str(cfg["cut"]).isdigit() else str(cfg["cut"])
    options: dict[str, Any] = {"cut": cut, "seed": seed}
    if str(cfg["defense"]).startswith("latent"):
        options["input_shape"] = tuple(int(v) for v in ds.x_train.shape[1:])

    def source(pid: int, num: int) -> Shard:
        return make_shards(ds.x_train, ds.y_train, clients=num, partition=str(cfg["partition"]),
                           seed=seed)[pid]

    return ClientSpec(model=model, defense=str(cfg["defense"]), options=options,
                      local_epochs=int(cfg["local-epochs"]), batch_size=int(cfg["batch-size"]),
                      seed=seed, source=source)


def deployment_client_app() -> ClientApp:
    """The ``ClientApp`` of a deployed run (``flwr run``): its spec comes from the run config.

    Returns:
        The app (name it in ``[tool.flwr.app.components] clientapp``).
    """
    cache: dict[int, ClientSpec] = {}

    def spec(context: Context) -> ClientSpec:
        if context.run_id not in cache:
            cache[context.run_id] = spec_from_config(context.run_config)
        return cache[context.run_id]

    return client_app(spec)


def deployment_server_app() -> ServerApp:
    """The ``ServerApp`` of a deployed run: FedAvg over ``num-clients`` SuperNodes.

    With ``out`` in the run config the :class:`FederatedResult` is written there as JSON
    (atomically) after every round.

    Returns:
        The app (name it in ``[tool.flwr.app.components] serverapp``).
    """
    import flwr

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = _config(context.run_config)
        spec = spec_from_config(cfg)
        clients, rounds = int(cfg["num-clients"]), int(cfg["num-server-rounds"])
        out = str(cfg["out"])
        result = FederatedResult(
            defense=spec.defense, clients=clients, rounds=rounds,
            partition=str(cfg["partition"]), partition_sizes=[],
            local_epochs=spec.local_epochs, batch_size=spec.batch_size, seed=spec.seed,
            engine="flower deployment engine (SuperLink, SuperNodes)",
            flwr_version=str(getattr(flwr, "__version__", "")),
            delta=spec.build().privacy().get("delta"))
        # min-clients (0: all): a round goes ahead once this many SuperNodes are online,
        # so a run that lost a SuperNode can finish with the others
        least = int(cfg["min-clients"]) or clients
        inner = FedAvg(min_train_nodes=least, min_evaluate_nodes=least,
                       min_available_nodes=least,
                       evaluate_metrics_aggr_fn=aggregate_evaluation)
        strategy = RecordingStrategy(inner, result,
                                     on_round=(lambda r: r.save_json(out)) if out else None)
        strategy.start(grid=grid, initial_arrays=to_record(shared_state(spec.build())),
                       num_rounds=rounds, timeout=float(cfg["round-timeout"]))

    return app


# ------------------------------------------------------------------ HTML
def _svg_lines(series: Mapping[str, Sequence[float]], *, title: str) -> str:
    """A small inline SVG line plot (no matplotlib needed)."""
    points = [v for s in series.values() for v in s]
    if not points:
        return ""
    w, h, pad = 420, 180, 30
    lo, hi = min(points), max(points)
    hi = hi if hi > lo else lo + 1.0
    longest = max(len(s) for s in series.values())
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    lines = []
    for i, (name, s) in enumerate(series.items()):
        xs = [pad + (w - 2 * pad) * (j / max(1, longest - 1)) for j in range(len(s))]
        ys = [h - pad - (h - 2 * pad) * ((v - lo) / (hi - lo)) for v in s]
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, ys, strict=True))
        colour = colours[i % len(colours)]
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                     f'points="{path}"/><text x="{w - pad}" y="{pad + 14 * i}" '
                     f'fill="{colour}" font-size="11" text-anchor="end">'
                     f"{html.escape(name)}</text>")
    return (f'<figure><svg width="{w}" height="{h}" role="img" '
            f'aria-label="{html.escape(title)}"><rect width="{w}" height="{h}" fill="white" '
            f'stroke="#ccc"/>{"".join(lines)}<text x="{pad}" y="{h - 8}" font-size="11">'
            f"round 1..{longest}; {lo:.3g} to {hi:.3g}</text></svg>"
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def render_html(result: FederatedResult) -> str:
    """A self-contained HTML report: accuracy, epsilon per client and leakage per round.

    Each table comes with an inline SVG plot (no plotting library needed).

    Args:
        result: the federated result.

    Returns:
        The page.
    """
    esc = html.escape
    rows = "".join(
        f"<tr><td>{h.round}</td><td>{_fmt(h.accuracy, '.4f')}</td>"
        f"<td>{_fmt(h.macro_f1, '.4f')}</td><td>{_fmt(h.loss, '.4f')}</td>"
        f"<td>{esc(', '.join(h.lost) or '-')}</td><td>{esc('; '.join(h.rejected) or '-')}</td>"
        "</tr>" for h in result.history)
    acc = {"accuracy": [h.accuracy for h in result.history if h.accuracy is not None],
           "macro F1": [h.macro_f1 for h in result.history if h.macro_f1 is not None]}
    eps = result.epsilons()
    eps_rows = "".join(f"<tr><td>{c}</td><td>{esc(', '.join(f'{e:.4g}' for e in v))}</td></tr>"
                       for c, v in eps.items())
    leak_rows = "".join(
        f"<tr><td>{r.round}</td><td>{r.client}</td><td>{esc(r.attack)}</td>"
        f"<td>{_fmt(r.psnr, '.2f')}</td><td>{_fmt(r.control_psnr, '.2f')}</td>"
        f"<td>{_fmt(r.label_recovery, '.2f')}</td><td>{esc(r.verdict)}</td>"
        f"<td>{esc(r.reason)}</td></tr>" for r in result.leakage)
    leak_series: dict[str, list[float]] = {}
    for r in result.leakage:
        if r.label_recovery is not None:
            leak_series.setdefault(f"labels, client {r.client}", []).append(r.label_recovery)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>shieldsplit federated "
        "report</title></head><body>",
        f"<h1>Federated training of {esc(result.defense)}</h1>",
        f"<p>{result.clients} clients, {len(result.history)} of {result.rounds} rounds, "
        f"partition {esc(result.partition)} (sizes {result.partition_sizes}), "
        f"{result.local_epochs} local epoch(s), seed {result.seed}; {esc(result.engine)}, "
        f"flwr {esc(result.flwr_version)}.</p>",
        "" if result.complete else f"<p><b>Stopped early:</b> {esc(str(result.error))}</p>",
        "<h2>Accuracy per round</h2><table border='1'><tr><th>round</th><th>accuracy</th>"
        f"<th>macro F1</th><th>loss</th><th>lost clients</th><th>rejected replies</th></tr>"
        f"{rows}</table>",
        _svg_lines(acc, title="accuracy and macro F1 per round"),
    ]
    if eps:
        parts += [f"<p><b>Privacy accounting:</b> {esc(gap)}</p>"
                  for gap in result.accounting_gaps()]
        parts += [f"<h2>Epsilon per client (delta {result.delta:g})</h2><table border='1'>"
                  f"<tr><th>client</th><th>epsilon after each round</th></tr>{eps_rows}"
                  "</table>",
                  _svg_lines({f"client {c}": v for c, v in eps.items()},
                             title="epsilon per client per round")]
    if result.leakage:
        parts += ["<h2>Leakage per round (live audit)</h2><table border='1'><tr><th>round"
                  "</th><th>client</th><th>attack</th><th>PSNR</th><th>control PSNR</th>"
                  f"<th>label recovery</th><th>verdict</th><th>reason</th></tr>{leak_rows}"
                  "</table>", _svg_lines(leak_series, title="label recovery per round")]
    parts += [f"<ul>{''.join(f'<li>{esc(n)}</li>' for n in result.notes)}</ul>",
              "</body></html>"]
    return "\n".join(p for p in parts if p)


__all__ = [
    "LABEL_ATTACK",
    "LOCAL_STATE_KEY",
    "RUN_CONFIG_DEFAULTS",
    "UPDATE_ATTACK",
    "AuditSetting",
    "AuditingStrategy",
    "ClientRound",
    "ClientSpec",
    "ClientUpdate",
    "FederatedResult",
    "LabelEvidence",
    "LeakageRow",
    "RecordingStrategy",
    "RoundRecord",
    "Shard",
    "aggregate_evaluation",
    "arrays_of",
    "build_defense",
    "check_reply",
    "client_app",
    "deployment_client_app",
    "deployment_server_app",
    "federated_update",
    "from_record",
    "load_shared",
    "macro_f1",
    "make_shards",
    "metric",
    "metrics_of",
    "nearest_mean_labels",
    "render_html",
    "replay_label_counts",
    "server_app",
    "shared_state",
    "simulate",
    "spec_from_config",
    "to_record",
]
