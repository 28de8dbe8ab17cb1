"""Split a labelled data set among federated clients: IID or Dirichlet label skew.

:func:`partition_indices` is a pure function of the labels, the number of clients,
the spec and the seed: every index lands in exactly one client, every client gets
at least one example, and the same arguments give the same partition.

* ``"iid"``: a seeded permutation cut into ``clients`` near-equal parts.
* ``"dirichlet:ALPHA"``: label skew (Hsu et al. 2019): for every class, the
  shares of the clients are drawn from ``Dirichlet(ALPHA, ..., ALPHA)`` and the
  class's shuffled indices are cut at those shares. Small ``ALPHA`` (0.1) gives
  clients that hold mostly one class; large ``ALPHA`` (100) is close to IID. A draw
  that leaves a client empty is redrawn (from the same seeded stream) up to 100
  times, then the smallest spec that works is named in the error.

Example:
    >>> import numpy as np
    >>> labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    >>> parts = partition_indices(labels, clients=2, spec="iid", seed=0)
    >>> sorted(np.concatenate(parts).tolist()) == list(range(8)), [len(p) for p in parts]
    (True, [4, 4])
    >>> skew = partition_indices(labels, clients=3, spec="dirichlet:0.5", seed=1)
    >>> sum(len(p) for p in skew), min(len(p) for p in skew) >= 1
    (8, True)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from shieldsplit.errors import ConfigError, EmptyDataError

#: redraws of a Dirichlet partition that left a client without data
MAX_REDRAWS = 100


def parse_partition(spec: Any) -> float | None:
    """Read a partition spec: None for ``"iid"``, the concentration for ``"dirichlet:A"``.

    Args:
        spec: ``"iid"`` or ``"dirichlet:ALPHA"`` with a finite ``ALPHA > 0``.

    Returns:
        None (IID) or ALPHA.

    Raises:
        ConfigError: for any other spec (``.what == "partition"``).

    Example:
        >>> parse_partition("iid") is None, parse_partition("dirichlet:0.5")
        (True, 0.5)
    """
    fix = 'pass partition="iid" or partition="dirichlet:0.5" (any alpha > 0)'
    if not isinstance(spec, str):
        raise ConfigError.build(what="partition", expected='"iid" or "dirichlet:ALPHA"',
                                received=repr(spec), fix=fix)
    text = spec.strip().lower()
    if text == "iid":
        return None
    name, _, value = text.partition(":")
    try:
        alpha = float(value) if name == "dirichlet" else math.nan
    except ValueError:
        alpha = math.nan
    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError.build(what="partition",
                                expected='"iid" or "dirichlet:ALPHA" with a finite ALPHA > 0',
                                received=repr(spec), fix=fix)
    return alpha


def _check_labels(labels: Any) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ConfigError.build(what="labels", expected="a 1-D array of integer labels",
                                received=f"{y.dtype} array of shape {y.shape}",
                                fix="pass the training labels, e.g. dataset.y_train.numpy()")
    return y


def _dirichlet(y: np.ndarray, clients: int, alpha: float,
               rng: np.random.Generator) -> list[np.ndarray]:
    parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        shares = rng.dirichlet(np.full(clients, alpha))
        cuts = np.floor(np.cumsum(shares)[:-1] * len(members)).astype(int)
        for client, chunk in enumerate(np.split(members, cuts)):
            parts[client].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def partition_indices(labels: Any, *, clients: int, spec: str = "iid",
                      seed: int = 0) -> list[np.ndarray]:
    """Split ``range(len(labels))`` among ``clients`` (see the module docstring).

    Args:
        labels: ``(N,)`` integer labels.
        clients: the number of clients, ``1 <= clients <= N``.
        spec: ``"iid"`` or ``"dirichlet:ALPHA"``.
        seed: seeds the permutation and the Dirichlet draws.

    Returns:
        One sorted int64 index array per client; together they hold every index once.

    Raises:
        ConfigError: for a bad spec, labels that are not 1-D integers, a bad
            ``clients`` or ``seed``, or a Dirichlet spec that keeps leaving a client
            empty.
        EmptyDataError: if there are fewer examples than clients.
    """
    alpha = parse_partition(spec)
    y = _check_labels(labels)
    if isinstance(clients, bool) or not isinstance(clients, int) or clients < 1:
        raise ConfigError.build(what="clients", expected="an int >= 1", received=repr(clients),
                                fix="pass clients=2 or more")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError.build(what="seed", expected="an int >= 0", received=repr(seed),
                                fix="pass seed=0")
    if clients > len(y):
        raise EmptyDataError.build(
            what="clients", expected=f"at most as many clients as examples ({len(y)})",
            received=f"{clients} clients", fix=f"pass clients<={len(y)} or more data")
    rng = np.random.default_rng(seed)
    if alpha is None:
        return [np.sort(p).astype(np.int64)
                for p in np.array_split(rng.permutation(len(y)), clients)]
    for _ in range(MAX_REDRAWS):
        parts = _dirichlet(y, clients, alpha, rng)
        if min(len(p) for p in parts) > 0:
            return [p.astype(np.int64) for p in parts]
    raise ConfigError.build(
        what="partition", expected="a Dirichlet split that gives every client an example",
        received=f"{spec!r}: a client stayed empty in {MAX_REDRAWS} draws for {clients} "
                 f"clients and {len(y)} examples",
        fix="raise alpha, use fewer clients, or pass partition='iid'")


__all__ = ["MAX_REDRAWS", "parse_partition", "partition_indices"]
