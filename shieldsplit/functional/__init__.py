"""Pure functions: the statistics and decision rules behind the auditor (no state, no I/O)."""

from shieldsplit.functional.separation import (
    fast_ica,
    refine_nonnegative,
    separate_nonnegative_sources,
)
from shieldsplit.functional.stats import (
    align_labels,
    balanced_accuracy,
    balanced_accuracy_interval,
    bootstrap_interval,
    interleave_classes,
    lineup_identified,
    majority_rate,
    match_order,
    no_attack_baselines,
    pairwise_mse,
    wilson_interval,
)
from shieldsplit.functional.verdict import (
    Decision,
    Evidence,
    Tolerance,
    VerdictLabel,
    decide,
    evidence,
    position_verdict,
)

__all__ = [
    "Decision",
    "Evidence",
    "Tolerance",
    "VerdictLabel",
    "align_labels",
    "balanced_accuracy",
    "balanced_accuracy_interval",
    "bootstrap_interval",
    "decide",
    "evidence",
    "fast_ica",
    "interleave_classes",
    "lineup_identified",
    "majority_rate",
    "match_order",
    "no_attack_baselines",
    "pairwise_mse",
    "position_verdict",
    "refine_nonnegative",
    "separate_nonnegative_sources",
    "wilson_interval",
]
