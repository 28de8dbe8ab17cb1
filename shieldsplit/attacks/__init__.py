"""Reconstruction attacks behind one :class:`Attack` base and a registry.

Importing this package registers the built-in attacks.
"""

from __future__ import annotations

from shieldsplit.attacks.base import (
    Attack,
    AttackContext,
    Observation,
    Reconstruction,
    attack_class,
    available_attacks,
    create_attack,
    register_attack,
    unregister_attack,
)

# Importing the modules registers the built-in attacks.
from shieldsplit.attacks import adaptive, gan, gradient, split  # noqa: F401  isort: skip

__all__ = [
    "Attack",
    "AttackContext",
    "Observation",
    "Reconstruction",
    "attack_class",
    "available_attacks",
    "create_attack",
    "register_attack",
    "unregister_attack",
]
