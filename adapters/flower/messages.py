"""What crosses the Flower boundary: tensors as ``ArrayRecord``, and the server's gate on replies.

The arrays are numpy arrays that Flower serialises without pickle (:func:`to_record`,
:func:`from_record`); a reply is read only after :func:`check_reply` accepted it, and
every missing or malformed record is a typed :class:`~shieldsplit.errors.ConfigError`
(:func:`malformed`).

Example:
    >>> state = {"w": torch.ones(2, 3)}
    >>> torch.equal(from_record(to_record(state))["w"], state["w"])
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from torch import Tensor

from shieldsplit.errors import ConfigError


def to_record(state: dict[str, Tensor]) -> ArrayRecord:
    """Tensors as a Flower ``ArrayRecord`` of numpy arrays (no pickle)."""
    return ArrayRecord({k: Array(v.detach().cpu().numpy()) for k, v in state.items()})


def from_record(record: ArrayRecord) -> dict[str, Tensor]:
    """A Flower ``ArrayRecord`` back as tensors."""
    return {k: torch.from_numpy(np.array(v.numpy(), copy=True)) for k, v in record.items()}


def malformed(what: str, expected: str, received: Any) -> ConfigError:
    """The typed error of a malformed message: ``what`` was not ``expected``.

    Example:
        >>> malformed("metrics", "a MetricRecord", "none").what
        'metrics'
    """
    return ConfigError.build(what=what, expected=expected, received=received,
                             fix="send the records shieldsplit's ClientApp sends")


def arrays_of(content: RecordDict, key: str = "arrays") -> ArrayRecord:
    """The ``ArrayRecord`` under ``key`` of a message, or a typed error (a malformed message).

    Raises:
        ConfigError: if it is missing or not an ``ArrayRecord``.
    """
    record = content.get(key) if key in content else None
    if not isinstance(record, ArrayRecord):
        raise malformed(key, "an ArrayRecord", type(record).__name__)
    return record


def metrics_of(content: RecordDict) -> MetricRecord:
    """The (only) ``MetricRecord`` of a message, or a typed error.

    Raises:
        ConfigError: if the message holds none.
    """
    record = next(iter(content.metric_records.values()), None)
    if record is None:
        raise malformed("metrics", "a MetricRecord", "none")
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
        raise malformed("num-examples", "a positive count", m.get("num-examples"))
    if sent is None:
        return
    got = arrays_of(content)
    if set(got) != set(sent):
        raise malformed("arrays", f"the {len(sent)} arrays sent",
                         f"{len(got)} arrays, names differing in "
                         f"{sorted(set(got) ^ set(sent))[:3]}")
    for key, array in got.items():
        ref = sent[key]
        if tuple(array.shape) != tuple(ref.shape) or array.dtype != ref.dtype \
                or len(array.data) > 2 * len(ref.data) + 1024:
            raise malformed("arrays", f"{key!r} of shape {tuple(ref.shape)}, {ref.dtype}",
                             f"shape {tuple(array.shape)}, {array.dtype}, "
                             f"{len(array.data)} bytes")
        if not np.isfinite(array.numpy()).all():
            raise malformed("arrays", f"finite values in {key!r}", "NaN or infinity")


def metric(record: MetricRecord, key: str) -> float:
    """A scalar metric, or a typed error.

    Raises:
        ConfigError: if it is missing or not a number.
    """
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise malformed(key, "a number", repr(value))
    return float(value)


def config_value(content: RecordDict, key: str) -> Any:
    """The value of ``key`` in a message's ``config`` record, or a typed error.

    Raises:
        ConfigError: if the record or the key is missing.
    """
    record = content.get("config") if "config" in content else None
    if not isinstance(record, ConfigRecord) or key not in record:
        raise malformed("config", f"a ConfigRecord with {key!r}", type(record).__name__)
    return record[key]


__all__ = ["arrays_of", "check_reply", "config_value", "from_record", "malformed", "metric",
           "metrics_of", "to_record"]
