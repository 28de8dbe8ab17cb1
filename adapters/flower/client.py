"""The Flower ``ClientApp`` of a defence: what a client holds, trains and evaluates.

A client holds its shard (:class:`ClientSpec`, :func:`make_shards`), builds the defence
around the global weights it receives (:func:`build_defense`, :func:`load_shared`),
trains it with the defence's own ``fit`` and sends back its shared state
(:func:`shared_state`); the client-only state (DP-SGD's accountant) stays on the client:
in its ``context.state`` under :data:`LOCAL_STATE_KEY` and, so that a restarted SuperNode
goes on counting, in its :class:`~shieldsplit.adapters.flower.ledger.PrivacyLedger` on
disk. A client refuses a round that would take it past its epsilon budget. Federated
evaluation sends confusion matrices and loss sums, which :func:`aggregate_evaluation` adds
up exactly.

Example:
    >>> x, y = torch.rand(10, 1, 8, 8), torch.arange(10) % 2
    >>> shards = make_shards(x, y, clients=2, partition="iid", seed=0)
    >>> sorted(shards), len(shards[0][0][1]) + len(shards[0][1][1])
    ([0, 1], 5)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from pydantic import BaseModel
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit.adapters.flower.ledger import (
    BudgetExceededError,
    PrivacyLedger,
    check_budget,
    default_privacy_dir,
    fingerprint,
    tensor_digest,
)
from shieldsplit.adapters.flower.messages import (
    arrays_of,
    config_value,
    from_record,
    metric,
    metrics_of,
    to_record,
)
from shieldsplit.defenses.base import Defense, create_defense
from shieldsplit.errors import ConfigError, UnsupportedModelError
from shieldsplit.functional.classification import (
    balanced_accuracy,
    confusion_matrix,
    macro_f1,
    majority_share,
)
from shieldsplit.functional.partition import partition_indices

logger = logging.getLogger(__name__)

#: the key of the client-only state (DP-SGD's accountant) in a client's ``context.state``
LOCAL_STATE_KEY = "shieldsplit.local"

#: the node-config (or run-config) keys of a client's privacy folder and epsilon budget
PRIVACY_DIR_KEY, EPSILON_BUDGET_KEY = "privacy-dir", "epsilon-budget"

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
        source: loads one partition on a SuperNode (``(partition_id, num_partitions)``).
        privacy_dir: the folder of the clients' privacy ledgers (a node config's
            ``privacy-dir`` wins; None: :func:`~.ledger.default_privacy_dir`).
        epsilon_budget: a client refuses a round that would take its epsilon past this
            (None: no budget; a node config's ``epsilon-budget`` can only lower it).
    """

    model: nn.Module
    defense: str
    options: dict[str, Any]
    shards: dict[int, Shard] = field(default_factory=dict)
    local_epochs: int = 1
    batch_size: int = 32
    seed: int = 0
    source: Callable[[int, int], Shard] | None = None
    privacy_dir: str | Path | None = None
    epsilon_budget: float | None = None

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


def evaluate_counts(defense: Defense, x: Tensor, y: Tensor) -> tuple[float, np.ndarray]:
    """The summed cross-entropy and the confusion matrix of ``defense`` on ``(x, y)``.

    Both add up over clients (a federated evaluation sums them, then scores once).

    Args:
        defense: the defence (put in eval mode).
        x: images.
        y: their labels.

    Returns:
        ``(loss sum, (K, K) confusion matrix)``.

    Example:
        >>> from shieldsplit.models import SmallConvNet
        >>> d = build_defense(SmallConvNet(num_classes=2, image_size=8, width=4), "none",
        ...                   {"cut": 1})
        >>> loss, confusion = evaluate_counts(d, torch.rand(5, 1, 8, 8), torch.ones(5).long())
        >>> int(confusion.sum()), loss > 0
        (5, True)
    """
    with torch.no_grad():
        defense.eval()
        logits = defense(x)
        loss = float(F.cross_entropy(logits, y, reduction="sum"))
        pred = logits.argmax(-1)
    return loss, confusion_matrix(y, pred, num_classes=int(defense.num_classes))


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


def _ledger(run: ClientSpec, defense: Defense, context: Context, pid: int, num: int | None,
            x: Tensor, y: Tensor) -> PrivacyLedger | None:
    """The client's ledger (None for a defence with no client-only state)."""
    if not defense.client_only_state():
        return None
    folder = context.node_config.get(PRIVACY_DIR_KEY) or run.privacy_dir \
        or default_privacy_dir()
    key = fingerprint({"run": context.run_id, "seed": run.seed, "defense": run.defense,
                       "options": run.options, "local-epochs": run.local_epochs,
                       "batch-size": run.batch_size, "partition-id": pid,
                       "num-partitions": num, "data": tensor_digest(x, y)})
    return PrivacyLedger(str(folder), key)


def _budget(run: ClientSpec, context: Context) -> float | None:
    """The tighter of the run's and the node's epsilon budget (None: neither)."""
    node = context.node_config.get(EPSILON_BUDGET_KEY)
    declared = [float(b) for b in (run.epsilon_budget, node) if b]
    return min(declared) if declared else None


def _refusal(msg: Message, pid: int, examples: int, spent: float, budget: float | None,
             reason: str) -> Message:
    """The reply of a client that refuses to train: no arrays, its epsilon so far, why."""
    metrics: dict[str, int | float | list[int] | list[float]] = {
        "num-examples": examples, "partition-id": pid,
        "refused": 1, "epsilon": spent, "epsilon-budget": float(budget or 0.0)}
    return Message(RecordDict({"metrics": MetricRecord(metrics),
                               "refusal": ConfigRecord({"reason": reason})}), reply_to=msg)


def client_app(spec: SpecSource) -> ClientApp:
    """The Flower ``ClientApp`` of one defence (simulation and deployment alike).

    ``train``: load the global arrays and the client's own accountant state, run the
    defence's :meth:`~shieldsplit.defenses.base.Defense.fit` for ``local_epochs`` on its shard,
    reply with the new shared arrays and ``num-examples``, ``train-loss``,
    ``partition-id`` (and ``epsilon``, ``delta``, ``accountant-rounds`` for DP-SGD). The
    client-only state is read from and written to the client's
    :class:`~shieldsplit.adapters.flower.ledger.PrivacyLedger` (folder: node config
    ``privacy-dir``, else ``spec.privacy_dir``, else the default), so a restarted
    SuperNode's epsilon goes on from where it stopped. A round that would take the
    client's epsilon past its budget (``spec.epsilon_budget``, node config
    ``epsilon-budget``) is refused: the reply holds no arrays, ``refused`` 1 and a
    ``refusal`` record with the reason, and the accountant is left unchanged.
    ``evaluate``: loss and the confusion matrix on the held-out shard. The client's
    partition id comes from the node config (``partition-id``), as Flower's simulation
    engine sets it.

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
        ledger = _ledger(run, defense, context, pid, num, x, y)
        entry = None if ledger is None else ledger.load()
        if entry is not None and entry.rounds:  # the disk outlives a SuperNode's memory
            defense.load_state_dict(entry.tensors(), strict=False)
        elif LOCAL_STATE_KEY in context.state:
            defense.load_state_dict(from_record(arrays_of(context.state, LOCAL_STATE_KEY)),
                                    strict=False)
        budget = _budget(run, context)
        spent = defense.privacy().get("epsilon")
        try:
            if spent is not None:
                check_budget(spent, budget, client=pid)  # spent already: no training
            rnd = int(config_value(msg.content, "server-round"))
            seed = run.round_seed(rnd, pid)
            loader = DataLoader(TensorDataset(x, y), batch_size=run.batch_size, shuffle=True,
                                generator=torch.Generator().manual_seed(seed))
            history = defense.fit(loader, epochs=run.local_epochs, seed=seed, progress=False)
            privacy = defense.privacy()
            if "epsilon" in privacy:
                check_budget(float(privacy["epsilon"]), budget, client=pid)
        except BudgetExceededError as exc:
            logger.warning("client %d refuses to train: %s", pid, exc)
            return _refusal(msg, pid, len(x), float(spent or 0.0), budget, str(exc))
        local = _local_records(defense)
        metrics: dict[str, int | float | list[int] | list[float]] = {
            "num-examples": len(x), "partition-id": pid,
            "train-loss": _last_loss(history),
        }
        if local:
            context.state[LOCAL_STATE_KEY] = to_record(local)
            if ledger is not None:
                metrics["accountant-rounds"] = ledger.save(
                    local, epsilon=float(privacy.get("epsilon", 0.0))).rounds
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
        loss, confusion = evaluate_counts(defense, x, y)
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
        ``accuracy``, ``macro-f1``, ``balanced-accuracy``, ``majority-rate`` (always
        predicting the commonest true class), ``predicted-classes`` (how many classes the
        model predicted at all), ``loss`` (per example) and ``num-examples``.
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
                         "macro-f1": macro_f1(matrix),
                         "balanced-accuracy": balanced_accuracy(matrix),
                         "majority-rate": majority_share(matrix),
                         "predicted-classes": int((matrix.sum(axis=0) > 0).sum())})


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


__all__ = ["EPSILON_BUDGET_KEY", "LOCAL_STATE_KEY", "PRIVACY_DIR_KEY", "ClientSpec", "Shard",
           "SpecSource", "aggregate_evaluation", "build_defense", "client_app",
           "evaluate_counts", "load_shared", "make_shards", "shared_state"]
