"""What each option accepts, known before torch is imported.

Every command checks its options before any work (:mod:`shieldsplit.cli.common`). The
registries are the truth, but reading one imports torch and every built-in module: seconds
for a mistyped name. So while a registry is not loaded and no plugin of its kind is
installed, the checks read the built-in names here; ``tests/test_cli_options.py`` keeps
each list equal to its registry (and :data:`MODEL_CUTS` to the cut points of each built-in
model). A registry already loaded (a program or a plugin registered a name in this
process) or an installed plugin (an entry point of its group) is always asked instead.

Example:
    >>> "split-black-box" in ATTACKS.names(), MODEL_CUTS["pgsl-net"]
    (True, (1, 2, 3, 4, 5, 6, 7, 8))
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Choices:
    """The valid names of one option: a registry's, or its built-in names while it is
    not loaded.

    Attributes:
        builtin: the names the registry holds with no plugin installed.
        module: the module holding the registry (loaded: it is asked).
        read: lists the registry's names (imports it).
        group: the entry-point group of its plugins (one installed: it is asked).
    """

    builtin: tuple[str, ...]
    module: str
    read: Callable[[], list[str]]
    group: str | None = None

    def names(self) -> list[str]:
        """The valid names (without importing torch when the built-in ones are the answer).

        Example:
            >>> DATASETS.names()
            ['breastmnist', 'digits', 'mnist', 'pneumoniamnist']
        """
        if self.module in sys.modules or self._plugins():
            return list(self.read())
        return list(self.builtin)

    def _plugins(self) -> bool:
        if self.group is None:
            return False
        import importlib.metadata

        return bool(importlib.metadata.entry_points(group=self.group))


def _attacks() -> list[str]:
    from shieldsplit.attacks import available_attacks

    return available_attacks("reconstruction")


def _defenses() -> list[str]:
    from shieldsplit.defenses.base import available_defenses

    return available_defenses()


def _federated_defenses() -> list[str]:
    from shieldsplit.defenses.base import available_defenses

    return available_defenses(surface="federated")


def _datasets() -> list[str]:
    from shieldsplit.data import available_datasets

    return available_datasets()


def _papers() -> list[str]:
    from shieldsplit.experiments.reproduce import available_papers

    return available_papers()


def _models() -> list[str]:
    from shieldsplit.models import MODELS

    return list(MODELS)


def _tolerance_fields() -> list[str]:
    from shieldsplit.functional.verdict import Tolerance

    return list(Tolerance.model_fields)


def _repro_budgets() -> list[str]:
    from typing import get_args

    from shieldsplit.experiments.reproduce.core import ReproBudget

    return list(get_args(ReproBudget))


_DEFENSES = ("bido", "compose", "dpsgd", "jsma-input", "laplace", "latent-fixed", "latent-learned",
             "none", "nopeek")

#: ``--attacks`` and the attack of ``--attack-option``: the reconstruction attacks.
ATTACKS = Choices(
    ("adaptive-split", "dlg", "fedavg-simulation", "fsha", "gan-prior", "idlg", "imprint",
     "inverting-gradients", "inverting-gradients-fedavg", "sdar", "split-black-box",
     "split-white-box", "unsplit"),
    "shieldsplit.attacks.base", _attacks, "shieldsplit.attacks")
#: ``compare --defenses``: every registered defence.
DEFENSES = Choices((*_DEFENSES, "pgsl"), "shieldsplit.defenses.base", _defenses,
                   "shieldsplit.defenses")
#: ``federate --defense``: the defences with a federated form.
FEDERATED_DEFENSES = Choices(_DEFENSES, "shieldsplit.defenses.base", _federated_defenses,
                             "shieldsplit.defenses")
#: ``--data``: the registered data sets.
DATASETS = Choices(("breastmnist", "digits", "mnist", "pneumoniamnist"),
                   "shieldsplit.data.registry", _datasets)
#: ``reproduce PAPER``: the registered papers.
PAPERS = Choices(("latent", "pgsl"), "shieldsplit.experiments.reproduce.core", _papers)
#: ``reproduce --budget``.
REPRO_BUDGETS = Choices(("quick", "full"), "shieldsplit.experiments.reproduce.core",
                        _repro_budgets)
#: ``--model``'s built-in names.
MODELS = Choices(("pgsl-net", "small-convnet", "small-convnet-tanh", "narrow-convnet-tanh"),
                 "shieldsplit.models", _models)
#: The fields of ``--tolerance FIELD=VALUE``.
TOLERANCE_FIELDS = Choices(
    ("reidentification", "psnr_gain_db", "balanced_accuracy", "label_recovery",
     "membership_auc"), "shieldsplit.functional.verdict", _tolerance_fields)
#: The kinds of ``federate --partition`` (``iid``, ``dirichlet:ALPHA``).
PARTITION_KINDS = ("iid", "dirichlet")
#: One valid ``--partition`` of each kind (what a fix suggests).
PARTITION_EXAMPLES = ("iid", "dirichlet:0.5")

#: The block indices ``--cut`` accepts for each built-in model (any geometry).
MODEL_CUTS: dict[str, tuple[int, ...]] = {
    "pgsl-net": tuple(range(1, 9)),
    "small-convnet": (1, 2, 3),
    "small-convnet-tanh": (1, 2, 3),
    "narrow-convnet-tanh": (1, 2, 3),
}


def budget_names() -> list[str]:
    """The audit budgets (``--budget``, ``federate --audit``), read from
    :data:`shieldsplit.settings.Budget` (no torch).

    Example:
        >>> budget_names()
        ['quick', 'standard', 'thorough']
    """
    from typing import get_args

    from shieldsplit.settings import Budget

    return list(get_args(Budget))


__all__ = [
    "ATTACKS",
    "DATASETS",
    "DEFENSES",
    "FEDERATED_DEFENSES",
    "MODELS",
    "MODEL_CUTS",
    "PAPERS",
    "PARTITION_EXAMPLES",
    "PARTITION_KINDS",
    "REPRO_BUDGETS",
    "TOLERANCE_FIELDS",
    "Choices",
    "budget_names",
]
