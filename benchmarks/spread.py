"""Do a timing benchmark's rounds agree? One check for every timing script.

A benchmark times each variant over several rounds and reports medians. On a
loaded machine the rounds disagree and the medians (and their ratios) mean
little; this module measures the disagreement and words the warning that the
script prints and its results page carries.

The spread of a variant is ``(max - min) / median`` of its rounds. Above
:data:`MAX_SPREAD` the figures are declared unreliable.

Usage from a script in ``benchmarks/``::

    from spread import check_spread
    check = check_spread(times)            # {variant: [seconds per round]}
    if not check.reliable:
        print(check.warning())

Example:
    >>> check = check_spread({"plain": [1.0, 1.1, 1.0], "pgsl": [2.0, 4.0, 2.1]})
    >>> check.reliable, check.noisy
    (False, ['pgsl'])
    >>> round(check.spreads["plain"], 3)
    0.1
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: The largest spread, ``(max - min) / median`` of a variant's rounds, at which the
#: figures still count as reliable.
MAX_SPREAD = 0.5


def spread(samples: Sequence[float]) -> float:
    """``(max - min) / median`` of ``samples`` (0 for a single sample).

    Example:
        >>> spread([1.0, 2.0, 3.0])
        1.0
    """
    if not samples:
        raise ValueError("spread of no samples")
    median = statistics.median(samples)
    if median <= 0:
        raise ValueError(f"median {median} is not positive: not timings")
    return (max(samples) - min(samples)) / median


@dataclass(frozen=True)
class SpreadCheck:
    """The spread of every variant and the verdict."""

    spreads: dict[str, float]
    limit: float

    @property
    def noisy(self) -> list[str]:
        """Variants whose rounds disagree by more than the limit."""
        return [name for name, s in self.spreads.items() if s > self.limit]

    @property
    def reliable(self) -> bool:
        """True when every variant's rounds agree within the limit."""
        return not self.noisy

    def warning(self) -> str:
        """One sentence for the console and the page (empty when reliable)."""
        if self.reliable:
            return ""
        worst = max(self.noisy, key=self.spreads.__getitem__)
        return (f"UNRELIABLE: the rounds disagree by more than the stated spread of "
                f"{self.limit:.0%} ((max - min) / median) for {len(self.noisy)} of "
                f"{len(self.spreads)} variants ({', '.join(self.noisy)}; worst {worst}: "
                f"{self.spreads[worst]:.0%}); the machine was probably loaded: re-run it "
                "on an idle machine before relying on these figures.")


def check_spread(times: Mapping[str, Sequence[float]], limit: float = MAX_SPREAD) -> SpreadCheck:
    """Check that every variant's rounds agree within ``limit``.

    Args:
        times: variant name to its per-round seconds.
        limit: the largest acceptable spread.

    Returns:
        The spreads and the verdict.
    """
    return SpreadCheck(spreads={k: spread(v) for k, v in times.items()}, limit=limit)
