"""A client's privacy accountant on its own disk, so that a restarted SuperNode goes on counting.

DP-SGD's accountant (the Rényi-DP curve and the count of fits,
:meth:`~shieldsplit.defenses.base.Defense.client_only_state`) never leaves its client. Kept
only in Flower's in-memory ``context.state`` it is lost when a SuperNode restarts, and the
epsilon the client reports from then on covers only the rounds since. A
:class:`PrivacyLedger` keeps it in a JSON file (never pickle) in a folder the client is
told, written atomically after every round, under a name that is a fingerprint of the
client's partition and of the run (:func:`fingerprint`): the same client of the same run
finds its curve again, any other starts at zero. :meth:`PrivacyLedger.check_budget`
refuses a round that would take the client past a declared epsilon budget.

The folder: the node config's ``privacy-dir``, else the run config's, else
:func:`default_privacy_dir` (``$SHIELDSPLIT_PRIVACY_DIR``, else
``$XDG_CACHE_HOME/shieldsplit/privacy``, else ``~/.cache/shieldsplit/privacy``).

Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> ledger = PrivacyLedger(folder, fingerprint({"run": 1, "partition": 0}))
    >>> ledger.load().rounds
    0
    >>> ledger.save({"rdp": torch.tensor([0.5, 1.0], dtype=torch.float64)}, epsilon=2.5).rounds
    1
    >>> again = PrivacyLedger(folder, ledger.key).load()
    >>> again.rounds, again.epsilons, again.tensors()["rdp"].tolist()
    (1, [2.5], [0.5, 1.0])
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor

from shieldsplit._core.io import atomic_write_text
from shieldsplit.errors import ConfigError, ShieldSplitError

#: the format tag of a ledger file (a different tag is refused, not guessed at)
LEDGER_FORMAT = "shieldsplit.privacy-ledger/1"


class BudgetExceededError(ShieldSplitError):
    """A client refused to train: the round would take it past its epsilon budget."""

    label = "Privacy budget exhausted"


def default_privacy_dir() -> Path:
    """Where a client keeps its accountant when it is told no folder.

    ``$SHIELDSPLIT_PRIVACY_DIR``, else ``$XDG_CACHE_HOME/shieldsplit/privacy``, else
    ``~/.cache/shieldsplit/privacy``.

    Example:
        >>> default_privacy_dir().name
        'privacy'
    """
    named = os.environ.get("SHIELDSPLIT_PRIVACY_DIR")
    if named:
        return Path(named).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "shieldsplit" / "privacy"


def fingerprint(parts: Mapping[str, Any]) -> str:
    """A short, stable hex name for ``parts`` (JSON with sorted keys, SHA-256).

    Args:
        parts: what identifies a client's accountant (run, seed, defence options,
            partition...); values that JSON cannot hold are written with ``str``.

    Example:
        >>> fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
        True
        >>> fingerprint({"a": 1}) == fingerprint({"a": 2})
        False
    """
    text = json.dumps(dict(parts), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def tensor_digest(*tensors: Tensor) -> str:
    """A SHA-256 of tensors' dtypes, shapes and bytes (a partition's fingerprint).

    Example:
        >>> tensor_digest(torch.ones(2)) == tensor_digest(torch.ones(2))
        True
        >>> tensor_digest(torch.ones(2)) == tensor_digest(torch.zeros(2))
        False
    """
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class LedgerEntry(BaseModel):
    """What a ledger file holds: the accountant's tensors and the epsilon after each round.

    Attributes:
        format: :data:`LEDGER_FORMAT`.
        key: the fingerprint the file is named after.
        state: ``name -> {"dtype", "shape", "values"}`` (flat list of numbers).
        epsilons: the client's cumulative epsilon after each round it trained.
        rounds: how many rounds the accountant covers.
    """

    model_config = ConfigDict(extra="forbid")

    format: str = LEDGER_FORMAT
    key: str = ""
    state: dict[str, dict[str, Any]] = Field(default_factory=dict)
    epsilons: list[float] = Field(default_factory=list)
    rounds: int = 0

    def tensors(self) -> dict[str, Tensor]:
        """The accountant's tensors, as they were saved (dtype and shape)."""
        out = {}
        for name, item in self.state.items():
            dtype = getattr(torch, str(item["dtype"]).removeprefix("torch."))
            out[name] = torch.tensor(item["values"], dtype=dtype).reshape(item["shape"])
        return out


class PrivacyLedger:
    """One client's accountant on disk: ``<folder>/<key>.json``, written atomically.

    Args:
        folder: the client's privacy folder (created on the first save).
        key: the fingerprint of the client and the run (:func:`fingerprint`).
    """

    def __init__(self, folder: str | Path, key: str) -> None:
        self.folder = Path(folder).expanduser()
        self.key = key

    @property
    def path(self) -> Path:
        """The ledger's file."""
        return self.folder / f"{self.key}.json"

    def load(self) -> LedgerEntry:
        """The saved entry, or an empty one (no file yet).

        Raises:
            ConfigError: if the file exists but is not a ledger (the client must not
                guess its privacy loss: fix or remove the file).
        """
        if not self.path.exists():
            return LedgerEntry(key=self.key)
        try:
            entry = LedgerEntry.model_validate_json(self.path.read_text(encoding="utf-8"))
        except (OSError, ValidationError, ValueError) as exc:
            raise ConfigError.build(
                what="privacy ledger", expected=f"a {LEDGER_FORMAT} JSON file",
                received=f"{self.path} ({type(exc).__name__})",
                fix="restore the file, or remove it to start this client's accounting "
                    "again at zero (its reported epsilon then under-states what it spent)",
            ) from exc
        if entry.format != LEDGER_FORMAT or entry.key != self.key:
            raise ConfigError.build(
                what="privacy ledger", expected=f"format {LEDGER_FORMAT}, key {self.key}",
                received=f"format {entry.format}, key {entry.key}",
                fix=f"remove {self.path} or point the client at its own privacy-dir")
        return entry

    def save(self, state: Mapping[str, Tensor], *, epsilon: float) -> LedgerEntry:
        """Add one trained round: the accountant's new tensors and its epsilon.

        Args:
            state: the accountant's tensors after the round.
            epsilon: the client's cumulative epsilon after the round.

        Returns:
            The entry written.
        """
        entry = self.load()
        entry.state = {name: {"dtype": str(t.dtype), "shape": list(t.shape),
                              "values": t.detach().cpu().flatten().tolist()}
                       for name, t in state.items()}
        entry.epsilons.append(float(epsilon))
        entry.rounds += 1
        atomic_write_text(self.path, entry.model_dump_json(indent=1))
        return entry


def check_budget(epsilon: float, budget: float | None, *, client: int) -> None:
    """Refuse a round whose cumulative epsilon would pass the client's budget.

    Args:
        epsilon: the client's epsilon if this round's update were released.
        budget: the declared budget (None or 0: no budget).
        client: the client's partition id (named in the message).

    Raises:
        BudgetExceededError: past the budget.

    Example:
        >>> check_budget(2.0, 3.0, client=0)
        >>> check_budget(4.0, 3.0, client=0)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ...
        shieldsplit.adapters.flower.ledger.BudgetExceededError: Privacy budget exhausted: ...
    """
    if budget and epsilon > budget:
        raise BudgetExceededError.build(
            what="epsilon budget",
            expected=f"client {client}'s cumulative epsilon at most {budget:g}",
            received=f"epsilon {epsilon:.4g} with this round's update",
            fix="the client sent no update this round (its accountant is unchanged); raise "
                "--epsilon-budget (run config epsilon-budget) or stop the run")


__all__ = ["LEDGER_FORMAT", "BudgetExceededError", "LedgerEntry", "PrivacyLedger",
           "check_budget", "default_privacy_dir", "fingerprint", "tensor_digest"]
