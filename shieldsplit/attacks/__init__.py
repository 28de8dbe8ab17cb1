"""Every attack behind one base (:class:`AttackBase`) and one registry.

Four families, one verb each: reconstruction (:class:`Attack`), membership inference,
evasion and label inference. The built-in attacks are found by walking this package
(and :mod:`shieldsplit.evasion`) on the registry's first lookup, and third-party ones
through the ``shieldsplit.attacks`` entry points (:mod:`shieldsplit._core.plugins`): a
new attack is one module that registers itself.
"""

from __future__ import annotations

from shieldsplit.attacks.base import (
    Attack,
    AttackBase,
    AttackContext,
    Observation,
    Reconstruction,
    attack_class,
    available_attacks,
    create_attack,
    register_attack,
    unregister_attack,
)

__all__ = [
    "Attack",
    "AttackBase",
    "AttackContext",
    "Observation",
    "Reconstruction",
    "attack_class",
    "available_attacks",
    "create_attack",
    "register_attack",
    "unregister_attack",
]
