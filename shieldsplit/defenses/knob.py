"""``shieldsplit.defenses.knob``: the strength a defence declares (its knob).

A defence that can be made stronger or weaker declares which field of its ``Config``
does it, over which range, on which scale, and which direction is stronger: a
:class:`Knob`. Searches (``shieldsplit.harden``) and sweeps (``compare``) read the
declaration, never a list of names, so a new defence with a declared knob is searchable
with no other change.

Example:
    >>> knob = Knob(option="scale", low=0.01, high=10.0, scale="log")
    >>> knob.grid(4)
    [0.01, 0.1, 1.0, 10.0]
    >>> knob.between(0.01, 1.0), knob.fields(0.5)
    (0.1, {'scale': 0.5})
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shieldsplit.errors import ConfigError


class Knob(BaseModel):
    """One option of a defence's ``Config`` that sets how strong it is.

    Attributes:
        option: the field of the defence's ``Config``; dotted for a nested config
            (SplitShield's ``perturb.pixel_budget``).
        low: the weak end of the range searched (the smaller number).
        high: the strong end's number (the larger one).
        scale: ``"linear"`` or ``"log"`` (steps and midpoints taken on this scale; a
            log range needs ``low > 0``).
        stronger: ``"higher"`` when a larger value protects more, ``"lower"`` when a
            smaller one does.
        integer: the option takes whole numbers (midpoints are rounded).
        description: what the option does, in words for a report.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    option: str = Field(min_length=1)
    low: float
    high: float
    scale: Literal["linear", "log"] = "linear"
    stronger: Literal["higher", "lower"] = "higher"
    integer: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _check_range(self) -> Knob:
        if not self.low < self.high:
            raise ValueError(f"a knob's low end must be below its high end: got low={self.low}, "
                             f"high={self.high}")
        if self.scale == "log" and self.low <= 0:
            raise ValueError(f"a log-scale knob needs low > 0: got low={self.low}")
        return self

    # ------------------------------------------------------------------ values
    @property
    def weakest(self) -> float:
        """The end of the range that protects least."""
        return self.low if self.stronger == "higher" else self.high

    @property
    def strongest(self) -> float:
        """The end of the range that protects most."""
        return self.high if self.stronger == "higher" else self.low

    def _to(self, value: float) -> float:
        return math.log(value) if self.scale == "log" else value

    def _from(self, position: float) -> float:
        value = math.exp(position) if self.scale == "log" else position
        return float(round(value)) if self.integer else float(f"{value:.6g}")

    def between(self, a: float, b: float) -> float:
        """The midpoint of ``a`` and ``b`` on the knob's scale.

        Example:
            >>> Knob(option="alpha", low=0.0, high=4.0).between(1.0, 3.0)
            2.0
        """
        return self._from((self._to(a) + self._to(b)) / 2)

    def at(self, t: float) -> float:
        """The value at fraction ``t`` of the way from the weakest end (0) to the strongest
        (1), on the knob's scale.

        Example:
            >>> Knob(option="s", low=0.01, high=1.0, scale="log").at(0.5)
            0.1
        """
        a, b = self._to(self.weakest), self._to(self.strongest)
        return self._from(a + (b - a) * t)

    def grid(self, n: int) -> list[float]:
        """``n`` values evenly spaced on the knob's scale, weakest first.

        Raises:
            ConfigError: for ``n < 2``.

        Example:
            >>> Knob(option="eps", low=1.0, high=3.0, stronger="lower").grid(3)
            [3.0, 2.0, 1.0]
        """
        if n < 2:
            raise ConfigError.build(what="grid size", expected="an integer >= 2",
                                    received=n, fix="ask for at least both ends")
        values = [self.at(i / (n - 1)) for i in range(n)]
        return list(dict.fromkeys(values))  # integer knobs may repeat a value

    def is_stronger(self, a: float, b: float) -> bool:
        """Whether setting ``a`` protects more than setting ``b``."""
        return a > b if self.stronger == "higher" else a < b

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the declared range (ends included)."""
        return self.low <= value <= self.high

    def fields(self, value: float) -> dict[str, Any]:
        """The ``Config`` fields that set the knob to ``value`` (nested for a dotted
        option), as :func:`~shieldsplit.defenses.base.defense_options` takes them.

        Example:
            >>> Knob(option="perturb.pixel_budget", low=0.01, high=0.5).fields(0.1)
            {'perturb': {'pixel_budget': 0.1}}
        """
        out: dict[str, Any] = {}
        node = out
        *parents, leaf = self.option.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = int(value) if self.integer else value
        return out

    def value_of(self, config: BaseModel) -> float:
        """The knob's value in a built defence's config."""
        node: Any = config
        for part in self.option.split("."):
            node = getattr(node, part)
        return float(node)


def declared_knob(factory: Any) -> Knob | None:
    """The knob a defence factory (a class, a bound ``from_model`` or a function with a
    ``knob`` attribute) declares, or None."""
    knob = getattr(factory, "knob", None)
    if knob is None:  # a bound classmethod: its class declares it
        knob = getattr(getattr(factory, "__self__", None), "knob", None)
    return knob if isinstance(knob, Knob) else None


__all__ = ["Knob", "declared_knob"]
