"""``shieldsplit.compare``: train every defence on the same split, audit each the same way.

:func:`compare` and :func:`run_defense` (``frontier``) build the privacy-utility
frontier; :class:`RunSpec` is what every compared defence shares.
"""

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
    "DefenseRun",
    "MatchedPair",
    "RunSpec",
    "compare",
    "match_by_accuracy",
    "run_defense",
]
