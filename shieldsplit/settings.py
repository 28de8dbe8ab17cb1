"""The run settings every entry point builds from: one small family of pydantic models
sharing one base.

:class:`RunSettings` holds what every run has (a seed and whether to show progress);
:class:`DataSettings` where the data come from; :class:`TrainSettings` how a model is cut
and trained; :class:`AuditSettings` how hard the attacks try. ``audit``
(:class:`~shieldsplit.audit.runner.AttackSetting`), ``compare``
(:class:`~shieldsplit.compare.frontier.RunSpec`), ``reproduce``
(:class:`~shieldsplit.experiments.reproduce.core.ReproduceOptions`), the demo
(:class:`~shieldsplit.experiments.demo.DemoOptions`) and ``federate``
(:class:`FederatedSettings`) compose them, so a seed, a cut or a budget is
validated the same way everywhere and named the same in every record.

Example:
    >>> s = TrainSettings(cut=2, epochs=3, seed=1)
    >>> s.batch_size, s.progress
    (64, True)
    >>> try:
    ...     AuditSettings(budget="huge")
    ... except ValueError as exc:
    ...     print("budget" in str(exc))
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: How hard an audit's attacks try.
Budget = Literal["quick", "standard", "thorough"]


#: ``harden``: attacker positions a user names -> (the audit's position, its server).
HARDEN_POSITIONS: dict[str, tuple[str, str]] = {
    "split-server": ("split", "honest"),
    "split-server-malicious": ("split", "malicious"),
    "federated-server": ("federated", "honest"),
    "federated-server-malicious": ("federated", "malicious"),
    "membership": ("membership", "honest"),
}

#: Each position in the words of a report (``the split server``).
HARDEN_POSITION_WORDS: dict[str, str] = {
    "split-server": "the split server",
    "split-server-malicious": "the malicious split server",
    "federated-server": "the federated server",
    "federated-server-malicious": "the malicious federated server",
    "membership": "a membership-inference attacker",
}

#: The targets a search can aim for: a verdict every named position must reach.
HARDEN_TARGETS: tuple[str, ...] = ("no leakage found",)

HardenUtility = Literal["balanced_accuracy", "f1", "accuracy"]
#: Utility metrics the search maximises (on the validation split), with their words.
HARDEN_UTILITIES: dict[str, str] = {
    "balanced_accuracy": "balanced accuracy", "f1": "macro F1", "accuracy": "accuracy",
}

#: Candidates per defence (probes of its knob) by budget: both ends, then bisection.
HARDEN_CANDIDATES: dict[str, int] = {"quick": 4, "standard": 6, "thorough": 8}

#: Seeds the chosen setting is retrained and confirmed with on the test split.
HARDEN_CONFIRM_SEEDS = 3


class RunSettings(BaseModel):
    """What every run has.

    Attributes:
        seed: seeds everything random in the run (the same seed gives the same report).
        progress: show progress bars or progress lines on long work.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=0, ge=0)
    progress: bool = True


class DataSettings(RunSettings):
    """Where the data come from.

    Attributes:
        data: a registered data set (``digits`` ships with scikit-learn).
        data_root: the folder with the verified data files (None: the default).
    """

    data: str = "digits"
    data_root: Path | None = None


class TrainSettings(RunSettings):
    """How a model is cut and trained.

    Attributes:
        cut: the split point (a block index or a submodule name).
        epochs: training epochs.
        batch_size: training batch size.
    """

    cut: int | str = 2
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=64, ge=1)


class AuditSettings(RunSettings):
    """How hard an audit's attacks try.

    Attributes:
        budget: the attack budget.
        victims: victim images per audit (None: the budget's).
    """

    budget: Budget = "quick"
    victims: int | None = Field(default=None, ge=1)


#: Federated training's learning rate for each defence that takes one (``federate --lr``'s
#: default, and a deployment's unless its run config's ``options`` names one), chosen on
#: the validation splits of digits and BreastMNIST (its own default, 0.001, left DP-SGD at
#: the majority class on BreastMNIST; ``benchmarks/federate_defaults.py --dpsgd-search``
#: found no better learning rate, batch size or local epochs for DP-SGD at no more
#: epsilon, tests/test_federate_defaults.py); the other defences train with Adam at 0.001.
FEDERATED_LR: dict[str, float] = {"dpsgd": 0.03}

#: Federated training's model for each defence that needs its own (``federate --model``'s
#: default for it; the others train ``small-convnet-tanh``), chosen on the same validation
#: splits at the same epsilon: DP-SGD's noise grows with the square root of the parameter
#: count, and at 12 channels the README's DP-SGD run on BreastMNIST ended below the
#: majority rate on its held-out shards (``benchmarks/federate_defaults.py
#: --dpsgd-search``, tests/test_federate_defaults.py).
FEDERATED_MODEL: dict[str, str] = {"dpsgd": "narrow-convnet-tanh"}


class FederatedSettings(RunSettings):
    """How a federated run trains (``shieldsplit federate``, the Flower adapter).

    Attributes:
        clients: the number of clients (hospitals).
        rounds: federated rounds.
        local_epochs: local epochs per round.
        batch_size: the local batch size.
        cut: the cut of a cut defence.
        partition: ``"iid"`` or ``"dirichlet:ALPHA"``.

    Example:
        >>> FederatedSettings(clients=3).rounds
        3
    """

    clients: int = Field(default=2, ge=1)
    rounds: int = Field(default=3, ge=1)
    local_epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=32, ge=1)
    cut: int | str = 2
    partition: str = "iid"


__all__ = ["FEDERATED_LR", "FEDERATED_MODEL", "HARDEN_CANDIDATES", "HARDEN_CONFIRM_SEEDS",
           "HARDEN_POSITIONS",
           "HARDEN_POSITION_WORDS", "HARDEN_TARGETS",
           "HARDEN_UTILITIES", "AuditSettings", "Budget", "DataSettings", "FederatedSettings",
           "HardenUtility", "RunSettings", "TrainSettings"]
