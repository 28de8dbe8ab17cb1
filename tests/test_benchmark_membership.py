"""benchmarks/membership_defenses.py: the intervals over seeds and the computed sentences."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from membership_defenses import interval, sentences


def test_interval_is_the_t_interval_of_the_seeds() -> None:
    v = [0.61, 0.65, 0.70]
    mean, low, high = interval(v)
    half = stats.t.ppf(0.975, 2) * np.std(v, ddof=1) / np.sqrt(3)
    assert (mean, low, high) == pytest.approx((np.mean(v), np.mean(v) - half, np.mean(v) + half))
    assert interval([0.6]) == (0.6, 0.6, 0.6)
    assert interval([0.0, 0.05, 0.0])[1] == 0.0  # a rate's interval stays in [0, 1]


def test_sentences_separate_only_disjoint_intervals_and_check_the_dp_bound() -> None:
    summary = {
        "none": {"auc": (0.65, 0.60, 0.70), "verdicts": ["leaks"] * 3, "tpr1": [0.05] * 3,
                 "eps": [], "bounds": [], "names": ["rmia"] * 3},
        "laplace": {"auc": (0.50, 0.45, 0.55), "verdicts": ["inconclusive"] * 3,
                    "tpr1": [0.01] * 3, "eps": [], "bounds": [], "names": ["rmia"] * 3},
        "pgsl": {"auc": (0.66, 0.62, 0.71), "verdicts": ["leaks", "inconclusive", "leaks"],
                 "tpr1": [0.04] * 3, "eps": [], "bounds": [], "names": ["rmia"] * 3},
        "dpsgd": {"auc": (0.52, 0.49, 0.56), "verdicts": ["no leakage found"] * 3,
                  "tpr1": [0.02, 0.03, None], "eps": [2.0] * 3, "bounds": [0.025] * 3,
                  "names": ["rmia"] * 3},
    }
    text = "\n".join(sentences(summary, [0, 1, 2]))
    assert "Leaks in every seed run: none (undefended);" in text
    assert "leaks in some seeds only: pgsl;" in text
    assert "no leakage found in every seed run: dpsgd." in text
    assert "entirely below it: laplace, dpsgd;" in text
    assert "(inconclusive): pgsl." in text
    assert "1 of 2 seed(s) within the bound" in text  # 3% > 2.5%: flagged, not hidden
