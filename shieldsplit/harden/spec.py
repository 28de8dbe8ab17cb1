"""What ``harden`` searches for (the names live in :mod:`shieldsplit.settings`, torch-free,
for the command line), checked before any work: the attacker positions, the
target verdict, the utility metric, the budget, and the ranges.

Every bad input gets a typed :class:`~shieldsplit.errors.ConfigError` that says what to
change: a target no position supports, a defence without a declared strength, a utility
metric the data cannot give (or an unknown one), a range outside the declared one.

Example:
    >>> POSITIONS["split-server"]
    ('split', 'honest')
    >>> check_positions(["split-server"], ["laplace"])
    ['split-server']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from shieldsplit.attacks.base import attack_class
from shieldsplit.data import ImageDataset
from shieldsplit.defenses.base import defense_surfaces
from shieldsplit.defenses.knob import Knob
from shieldsplit.errors import ConfigError
from shieldsplit.settings import (
    HARDEN_CANDIDATES as CANDIDATES,
)
from shieldsplit.settings import (
    HARDEN_CONFIRM_SEEDS as CONFIRM_SEEDS,
)
from shieldsplit.settings import (
    HARDEN_POSITION_WORDS as POSITION_WORDS,
)
from shieldsplit.settings import (
    HARDEN_POSITIONS as POSITIONS,
)
from shieldsplit.settings import (
    HARDEN_TARGETS as TARGETS,
)
from shieldsplit.settings import (
    HARDEN_UTILITIES as UTILITIES,
)
from shieldsplit.settings import Budget
from shieldsplit.settings import (
    HardenUtility as Utility,
)


def check_target(target: str, positions: Sequence[str], defenses: Sequence[str]) -> str:
    """``target`` when it is a verdict the search can aim for and some named position can
    give it for some searched defence.

    Raises:
        ConfigError: an unknown target, or one no named position supports (every named
            position lies outside every searched defence's declared surfaces).

    Example:
        >>> check_target("no leakage found", ["split-server"], ["laplace"])
        'no leakage found'
    """
    if target not in TARGETS:
        raise ConfigError.build(
            what="target", expected=f"one of {list(TARGETS)}", received=repr(target),
            fix="pass target='no leakage found'")
    supported = [p for p in positions if POSITIONS[p][0] == "membership"
                 or any(POSITIONS[p][0] in defense_surfaces(d) for d in defenses)]
    if not supported:
        raise ConfigError.build(
            what="target",
            expected=f"a target ({target!r}) that a named position supports: one where some "
                     "searched defence is deployed",
            received=f"positions {list(positions)}, which none of {list(defenses)} exposes "
                     "to an attacker (their declared surfaces)",
            fix="name a position the defences expose (split-server for a split-learning "
                "defence) or add a defence deployed there")
    return target


def check_positions(positions: Sequence[str] | str, defenses: Sequence[str]) -> list[str]:
    """The named positions, known and without repeats.

    Raises:
        ConfigError: an unknown or empty list of positions.
    """
    names = [positions] if isinstance(positions, str) else list(positions)
    if not names:
        raise ConfigError.build(what="positions", expected=f"names from {list(POSITIONS)}",
                                received="an empty list", fix="pass positions=['split-server']")
    for p in names:
        if p not in POSITIONS:
            raise ConfigError.build(what="positions", expected=f"names from {list(POSITIONS)}",
                                    received=repr(p), fix="pick known attacker positions")
    return list(dict.fromkeys(names))


def positions_words(positions: Sequence[str]) -> str:
    """The named positions in a report's words, joined with "and".

    Example:
        >>> positions_words(["split-server", "federated-server-malicious"])
        'the split server and the malicious federated server'
    """
    words = [POSITION_WORDS.get(p, p) for p in positions]
    if len(words) < 2:
        return words[0] if words else "no position"
    return ", ".join(words[:-1]) + " and " + words[-1]


def default_attacks(positions: Sequence[str], budget: Budget = "quick", *,
                    image_shape: tuple[int, ...] | None = None) -> list[str]:
    """The attacks that audit the named positions when none are named (before the
    adaptive ones): at each position, the audit's own default set at ``budget`` for that
    image size (:func:`shieldsplit.audit.auditor.default_attacks`, read from the attacks'
    declarations). A named position must be attacked, so where that set has none there
    (images larger than the quick attacks declare they fit, or the malicious split
    server, whose FSHA is off the quick budget) it gets the position's quick-budget
    attacks whatever the image size, else every attack that declares the position.

    Args:
        positions: attacker positions (see :data:`POSITIONS`).
        budget: the audit budget.
        image_shape: ``(C, H, W)`` of the images (None: any size fits).

    Returns:
        Attack names, position by position.

    Example:
        >>> default_attacks(["split-server", "federated-server"])
        ['split-black-box', 'split-white-box', 'gan-prior', 'inverting-gradients', \
'inverting-gradients-fedavg']
        >>> default_attacks(["federated-server"], image_shape=(3, 224, 224))
        ['inverting-gradients', 'inverting-gradients-fedavg']
        >>> default_attacks(["split-server-malicious"])
        ['fsha']
    """
    from torch import nn

    from shieldsplit.audit.auditor import applicable_attacks
    from shieldsplit.audit.auditor import default_attacks as audit_defaults

    def at(name: str) -> tuple[str, str]:
        cls = attack_class(name, "reconstruction")
        return cls.position(), getattr(cls, "server", "honest")

    plain = nn.Identity()  # a plain model: every surface, no defence to adapt to
    chosen = audit_defaults(plain, budget, image_shape=image_shape)
    every = applicable_attacks(plain)
    out: list[str] = []
    for p in positions:
        there = [a for a in every if at(a) == POSITIONS[p]]
        mine = ([a for a in chosen if a in there]
                or [a for a in there if attack_class(a, "reconstruction").quick_default]
                or there)
        out += [a for a in mine if a not in out]
    return out


def check_attacks(attacks: Sequence[str], positions: Sequence[str]) -> list[str]:
    """Named attacks, each at one of the named positions (its declared position and server).

    Raises:
        ConfigError: an attack at no named position.
    """
    wanted = {POSITIONS[p] for p in positions}
    for a in attacks:
        cls = attack_class(a, "reconstruction")  # a typed error for an unknown name
        if (cls.position(), getattr(cls, "server", "honest")) not in wanted:
            raise ConfigError.build(
                what="attacks", expected=f"attacks at the named positions {list(positions)}",
                received=f"{a!r} (at {cls.position()}, {getattr(cls, 'server', 'honest')} "
                         "server)", fix="drop it or name its position")
    return list(attacks)


def check_utility(utility: str, data: ImageDataset) -> str:
    """``utility`` when it is known and the data's validation and test splits can give it.

    Raises:
        ConfigError: an unknown metric, or one the splits cannot give (a balanced
            accuracy or macro F1 needs at least two classes in each split).

    Example:
        >>> from shieldsplit.data import load_dataset
        >>> check_utility("f1", load_dataset("digits", seed=0, limit=60))
        'f1'
    """
    if utility not in UTILITIES:
        raise ConfigError.build(what="utility", expected=f"one of {list(UTILITIES)}",
                                received=repr(utility), fix="pass utility='balanced_accuracy'")
    for split, y in (("validation", data.y_val), ("test", data.y_test)):
        classes = len(torch.unique(y))
        if utility != "accuracy" and classes < 2:
            raise ConfigError.build(
                what="utility",
                expected=f"a metric the {split} split can give ({UTILITIES[utility]} needs "
                         "two classes or more)",
                received=f"{utility!r} on a {split} split of {len(y)} images, all one class",
                fix="pass more data (a larger limit=) or utility='accuracy'")
    return utility


def check_budget(budget: str) -> int:
    """Candidates per defence for ``budget``.

    Raises:
        ConfigError: an unknown budget.
    """
    if budget not in CANDIDATES:
        raise ConfigError.build(what="budget", expected=f"one of {list(CANDIDATES)}",
                                received=repr(budget), fix="pass budget='quick'")
    return CANDIDATES[budget]


def ranged_knob(name: str, knob: Knob, ranges: Mapping[str, tuple[float, float]] | None
                ) -> tuple[Knob, bool]:
    """The knob to search for ``name``: its declaration, or narrowed to a given range.

    Returns:
        The knob, and whether its range was given (then its ends must differ in verdict).

    Raises:
        ConfigError: a range that is not two increasing numbers inside the declared one.

    Example:
        >>> from shieldsplit.defenses.base import require_knob
        >>> k, given = ranged_knob("laplace", require_knob("laplace"), {"laplace": (0.1, 2)})
        >>> (k.low, k.high, given)
        (0.1, 2.0, True)
    """
    if not ranges or name not in ranges:
        return knob, False
    given = ranges[name]
    ok = (isinstance(given, Sequence) and len(given) == 2
          and all(isinstance(v, int | float) for v in given))
    if not ok or not knob.low <= float(given[0]) < float(given[1]) <= knob.high:
        raise ConfigError.build(
            what=f"ranges[{name!r}]",
            expected=f"(low, high) with {knob.low} <= low < high <= {knob.high} "
                     f"(the declared range of {knob.option})",
            received=repr(given), fix="pass two increasing numbers inside the declared range")
    return knob.model_copy(update={"low": float(given[0]), "high": float(given[1])}), True


__all__ = [
    "CANDIDATES", "CONFIRM_SEEDS", "POSITIONS", "POSITION_WORDS", "TARGETS",
    "UTILITIES", "Utility", "check_attacks", "check_budget", "check_positions", "check_target",
    "check_utility", "default_attacks", "positions_words", "ranged_knob",
]
