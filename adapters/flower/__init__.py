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

The package, by concern (every name below is re-exported here):

- :mod:`~shieldsplit.adapters.flower.messages`: what crosses the boundary (``ArrayRecord``
  of tensors, the server's gate :func:`check_reply`);
- :mod:`~shieldsplit.adapters.flower.client`: the ``ClientApp`` (:class:`ClientSpec`,
  :func:`client_app`, :func:`make_shards`, :func:`aggregate_evaluation`);
- :mod:`~shieldsplit.adapters.flower.ledger`: a client's privacy accountant on its own disk
  (:class:`PrivacyLedger`, so a restarted SuperNode goes on counting) and its epsilon
  budget (:func:`check_budget`);
- :mod:`~shieldsplit.adapters.flower.strategy`: :class:`RecordingStrategy`, the server's
  typed record of every round;
- :mod:`~shieldsplit.adapters.flower.audit`: the live audit (:class:`AuditingStrategy`;
  its attacks come from the attack registry: :data:`UPDATE_ATTACK`, :data:`LABEL_ATTACK`);
- :mod:`~shieldsplit.adapters.flower.simulation`: :func:`server_app` and :func:`simulate`;
- :mod:`~shieldsplit.adapters.flower.deployment`: the apps of ``flwr run``;
- :mod:`~shieldsplit.adapters.flower.report`: :class:`FederatedResult` and its HTML.

The metric maths is pure and lives in :mod:`shieldsplit.functional.classification`
(:func:`macro_f1`, :func:`nearest_mean_labels`); the label inference is the registered
attack :class:`~shieldsplit.attacks.label_counts.UpdateLabelCounts`.

Importing this package imports ``flwr`` (install ``shieldsplit[flower]``);
``import shieldsplit`` does not.

Example:
    >>> from shieldsplit.adapters.flower import macro_f1
    >>> round(macro_f1([[2, 1], [0, 3]]), 4)
    0.8286
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shieldsplit.adapters.flower.audit import (
    LABEL_ATTACK,
    UPDATE_ATTACK,
    AuditingStrategy,
    AuditSetting,
    ClientUpdate,
    LabelEvidence,
    federated_update,
    victim_indices,
)
from shieldsplit.adapters.flower.client import (
    EPSILON_BUDGET_KEY,
    LOCAL_STATE_KEY,
    PRIVACY_DIR_KEY,
    ClientSpec,
    Shard,
    SpecSource,
    aggregate_evaluation,
    build_defense,
    client_app,
    evaluate_counts,
    load_shared,
    make_shards,
    shared_state,
)
from shieldsplit.adapters.flower.deployment import (
    RUN_CONFIG_DEFAULTS,
    deployment_client_app,
    deployment_server_app,
    spec_from_config,
)
from shieldsplit.adapters.flower.ledger import (
    BudgetExceededError,
    LedgerEntry,
    PrivacyLedger,
    check_budget,
    default_privacy_dir,
)
from shieldsplit.adapters.flower.messages import (
    arrays_of,
    check_reply,
    from_record,
    metric,
    metrics_of,
    to_record,
)
from shieldsplit.adapters.flower.report import (
    ClientRound,
    FederatedResult,
    LeakageRow,
    RoundRecord,
    render_html,
)
from shieldsplit.adapters.flower.simulation import engine_logs, server_app, simulate
from shieldsplit.adapters.flower.strategy import RecordingStrategy
from shieldsplit.functional.classification import macro_f1, nearest_mean_labels

if TYPE_CHECKING:  # loads on first use (see __getattr__): a ClientApp needs no attack module
    from shieldsplit.attacks.label_counts import replay_label_counts


def __getattr__(name: str) -> Any:
    if name == "replay_label_counts":
        from shieldsplit.attacks.label_counts import replay_label_counts

        return replay_label_counts
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "EPSILON_BUDGET_KEY",
    "LABEL_ATTACK",
    "LOCAL_STATE_KEY",
    "PRIVACY_DIR_KEY",
    "RUN_CONFIG_DEFAULTS",
    "UPDATE_ATTACK",
    "AuditSetting",
    "AuditingStrategy",
    "BudgetExceededError",
    "ClientRound",
    "ClientSpec",
    "ClientUpdate",
    "FederatedResult",
    "LabelEvidence",
    "LeakageRow",
    "LedgerEntry",
    "PrivacyLedger",
    "RecordingStrategy",
    "RoundRecord",
    "Shard",
    "SpecSource",
    "aggregate_evaluation",
    "arrays_of",
    "build_defense",
    "check_budget",
    "check_reply",
    "client_app",
    "default_privacy_dir",
    "deployment_client_app",
    "deployment_server_app",
    "engine_logs",
    "evaluate_counts",
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
    "victim_indices",
]
