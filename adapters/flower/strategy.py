"""The server's bookkeeping around a Flower strategy: every round, typed and in order.

:class:`RecordingStrategy` wraps the strategy that aggregates (``FedAvg``): it checks every
reply before anything reads it (:func:`~shieldsplit.adapters.flower.messages.check_reply`),
names the clients that were lost or rejected, sorts the replies by partition id (the
weighted average is then the same whatever order they arrive in) and fills in the
:class:`~shieldsplit.adapters.flower.report.FederatedResult` round by round. The live audit
(:class:`~shieldsplit.adapters.flower.audit.AuditingStrategy`) subclasses it.

Example:
    >>> from shieldsplit.adapters.flower.report import FederatedResult
    >>> result = FederatedResult(defense="none", clients=2, rounds=1, partition="iid",
    ...                          partition_sizes=[4, 4], local_epochs=1, batch_size=2, seed=0)
    >>> from flwr.serverapp.strategy import FedAvg
    >>> RecordingStrategy(FedAvg(), result).silent(1, [])
    []
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from shieldsplit._core.progress import progress_line
from shieldsplit.adapters.flower.messages import check_reply, metric, metrics_of
from shieldsplit.adapters.flower.report import ClientRound, FederatedResult, RoundRecord
from shieldsplit.errors import ShieldSplitError

logger = logging.getLogger(__name__)


def _node_of(msg: Message) -> int:
    return int(msg.metadata.src_node_id)


def _refusal(msg: Message) -> str | None:
    """The reason of a client's refusal to train (its epsilon budget), or None."""
    content = msg.content
    metrics = next(iter(content.metric_records.values()), None)
    if metrics is None or not metrics.get("refused"):
        return None
    record = content.get("refusal") if "refusal" in content else None
    reason = record.get("reason") if isinstance(record, ConfigRecord) else None
    return str(reason or "past its epsilon budget")


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
        #: partition_sizes comes from the clients' reports (a deployment: the server never
        #: holds the data)
        self._sizes_reported = not result.partition_sizes
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
                ) -> tuple[list[Message], list[Message], list[str], list[str]]:
        """Valid replies (sorted by client), error replies, the rejected ones' reasons and
        the refusals (a client past its epsilon budget)."""
        good: list[Message] = []
        bad: list[Message] = []
        rejected: list[str] = []
        refused: list[str] = []
        for msg in replies:
            if msg.has_error():
                bad.append(msg)
                continue
            with contextlib.suppress(ShieldSplitError):  # name the client if it can be read
                self.nodes[_node_of(msg)] = int(metric(metrics_of(msg.content),
                                                       "partition-id"))
            why = _refusal(msg)
            if why is not None:
                name = self._lost_names([msg])[0]
                logger.warning("%s refused to train: %s", name, why)
                refused.append(f"{name}: {why}")
                continue
            try:
                check_reply(msg.content, sent)
            except ShieldSplitError as exc:
                name = self._lost_names([msg])[0]
                logger.warning("rejected the reply of %s: %s", name, exc)
                rejected.append(f"{name}: {exc}")
                continue
            good.append(msg)
        good.sort(key=lambda m: self.nodes.get(_node_of(m), _node_of(m)))
        return good, bad, rejected, refused

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
        good, bad, rejected, refused = self._sorted(replies, sent=self.sent.get(server_round))
        silent = self.silent(server_round, replies)
        for name in silent:
            logger.warning("round %d: lost %s (no reply before the round's timeout)",
                           server_round, name)
        record = RoundRecord(round=server_round, lost=[*self._lost_names(bad), *silent],
                             errors=[f"{name}: {msg.error.reason}" for name, msg
                                     in zip(self._lost_names(bad), bad, strict=True)],
                             rejected=rejected, refused=refused)
        for msg in good:
            m = metrics_of(msg.content)
            pid = int(metric(m, "partition-id"))
            record.clients.append(pid)
            self.result.client_rounds.append(ClientRound(
                round=server_round, client=pid, examples=int(metric(m, "num-examples")),
                train_loss=metric(m, "train-loss"),
                epsilon=metric(m, "epsilon") if "epsilon" in m else None,
                delta=metric(m, "delta") if "delta" in m else None,
                accountant_rounds=int(metric(m, "accountant-rounds"))
                if "accountant-rounds" in m else None))
        record.lost += self.absent(record)
        self._fill_sizes()
        for msg in bad:
            logger.warning("round %d: lost %s (%s)", server_round,
                           self._lost_names([msg])[0], msg.error.reason)
        self.result.history.append(record)
        self.audit_round(server_round, good)
        # the inner strategy sees the sorted valid replies and the errors after them (a
        # rejected reply is left out, as if lost)
        return self.inner.aggregate_train(server_round, [*good, *bad])

    def absent(self, record: RoundRecord) -> list[str]:
        """The clients the run has (partition ids ``0 .. clients-1``) that this round
        neither trained nor named: e.g. a SuperNode that went offline before the round,
        to which the inner strategy sent nothing.

        Only when the inner strategy trains every available client (its
        ``fraction_train`` is 1, as FedAvg's default) and every lost node could be
        named (a ``node <id>`` may be any of them).

        Args:
            record: the round so far.

        Returns:
            ``client <id> (no reply: offline)`` for each.
        """
        if float(getattr(self.inner, "fraction_train", 1.0)) < 1.0 \
                or any(name.startswith("node ") for name in record.lost):
            return []
        named = {x.split(":")[0].split(" (")[0]
                 for x in [*record.lost, *record.rejected, *record.refused]}
        return [f"client {p} (no reply: offline)" for p in range(self.result.clients)
                if p not in record.clients and f"client {p}" not in named]

    def _fill_sizes(self) -> None:
        """A deployed run's training examples per client, as the clients report them."""
        if not self._sizes_reported:
            return
        seen = {r.client: r.examples for r in self.result.client_rounds}
        self.result.partition_sizes = [seen.get(p, 0) for p in range(self.result.clients)]

    def audit_round(self, server_round: int, replies: list[Message]) -> None:
        """A hook run on the valid replies of every round (nothing here)."""

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """The inner strategy's federated evaluation."""
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int,
                           replies: Iterable[Message]) -> MetricRecord | None:
        """Aggregate (sorted) and record the round's accuracy, macro F1 and loss."""
        good, bad, _, _ = self._sorted(replies)
        metrics = self.inner.aggregate_evaluate(server_round, [*good, *bad])
        record = next((r for r in self.result.history if r.round == server_round), None)
        if record is None:
            record = RoundRecord(round=server_round)
            self.result.history.append(record)
        if metrics is not None and "accuracy" in metrics:
            record.accuracy = metric(metrics, "accuracy")
            record.macro_f1 = metric(metrics, "macro-f1")
            for key, name in (("balanced-accuracy", "balanced_accuracy"),
                              ("majority-rate", "majority_rate"),
                              ("predicted-classes", "predicted_classes")):
                if key in metrics:  # a caller's own strategy may not send them
                    value = metric(metrics, key)
                    setattr(record, name, int(value) if name == "predicted_classes" else value)
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


__all__ = ["RecordingStrategy"]
