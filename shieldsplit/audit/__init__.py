"""``shieldsplit.audit``: how much of the training data real attacks rebuild or reveal.

:func:`audit` (``auditor``) runs every applicable registered attack on victim images,
with a positive control and a verdict per attacker position; ``membership`` adds
membership inference. The report types live beside them.
"""

from shieldsplit.audit.auditor import (
    AttackResult,
    AuditReport,
    BaselineScore,
    ControlResult,
    PositionVerdict,
    applicable_attacks,
    audit,
    default_attacks,
    defense_attacks,
)

__all__ = [
    "AttackResult",
    "AuditReport",
    "BaselineScore",
    "ControlResult",
    "PositionVerdict",
    "applicable_attacks",
    "audit",
    "default_attacks",
    "defense_attacks",
]
