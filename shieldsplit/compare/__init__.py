"""``shieldsplit.compare``: train every defence on the same split, audit each the same way.

:func:`compare` and :func:`run_defense` (``frontier``) build the privacy-utility
frontier; :class:`RunSpec` is what every compared defence shares. Every defence is
trained through :func:`~shieldsplit.compare.cache.train_defense`, which reads a setting
already trained back from a :class:`DefenseCache` (shared with ``harden``).
"""

from shieldsplit.compare.cache import DefenseCache
from shieldsplit.compare.frontier import (
    DEFAULT_ATTACKS,
    CompareTable,
    DefenseRun,
    MatchedPair,
    RunSpec,
    compare,
    match_by_accuracy,
    run_defense,
)

__all__ = [
    "DEFAULT_ATTACKS",
    "CompareTable",
    "DefenseCache",
    "DefenseRun",
    "MatchedPair",
    "RunSpec",
    "compare",
    "match_by_accuracy",
    "run_defense",
]
