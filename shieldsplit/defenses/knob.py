"""``shieldsplit.defenses.knob``: the strength a defence declares (its knob).

A defence that can be made stronger or weaker declares which field of its ``Config``
does it, over which range, on which scale, and which direction is stronger: a
:class:`Knob`. Searches (``shieldsplit.harden``) and sweeps (``compare``) read the
declaration, never a list of names, so a new defence with a declared knob is searchable
with no other change.

The cut itself is a knob too, for any defence deployed at the split (a deeper cut runs
more of the model on the client before anything crosses the wire): :func:`cut_knob`
declares it from the model's valid cut points, once, for every such defence. Its option
is :data:`CUT`, which names the defence's ``cut`` keyword rather than a ``Config`` field.

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
from torch import nn

from shieldsplit.cutting import split_model
from shieldsplit.errors import ConfigError

#: The option of the cut knob (:func:`cut_knob`): the ``cut`` keyword every defence takes.
CUT = "cut"


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
        points: the only values the option takes, ascending from ``low`` to ``high`` (a
            model's valid cuts); a value between them is moved to the nearest on the
            knob's scale. Empty: every value of the range.
        description: what the option does, in words for a report.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    option: str = Field(min_length=1)
    low: float
    high: float
    scale: Literal["linear", "log"] = "linear"
    stronger: Literal["higher", "lower"] = "higher"
    integer: bool = False
    points: tuple[float, ...] = ()
    description: str = ""

    @model_validator(mode="after")
    def _check_range(self) -> Knob:
        if not self.low < self.high:
            raise ValueError(f"a knob's low end must be below its high end: got low={self.low}, "
                             f"high={self.high}")
        if self.scale == "log" and self.low <= 0:
            raise ValueError(f"a log-scale knob needs low > 0: got low={self.low}")
        p = self.points
        if p and (list(p) != sorted(set(p)) or p[0] != self.low or p[-1] != self.high):
            raise ValueError(f"a knob's points must ascend from low={self.low} to "
                             f"high={self.high} without repeats: got {list(p)}")
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
        if self.points:  # the nearest allowed value on the knob's scale
            return float(min(self.points, key=lambda p: abs(self._to(p) - position)))
        value = math.exp(position) if self.scale == "log" else position
        return float(round(value)) if self.integer else float(f"{value:.6g}")

    def snap(self, value: float) -> float:
        """``value`` as the knob takes it: rounded for an integer knob, moved to the
        nearest of its :attr:`points`, clipped to the range.

        Example:
            >>> Knob(option="cut", low=2, high=8, integer=True, points=(2, 4, 8)).snap(5.5)
            4.0
        """
        return self._from(self._to(min(max(value, self.low), self.high)))

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
        """Whether ``value`` lies in the declared range (ends included), and is one of its
        :attr:`points` where the knob has them."""
        return self.low <= value <= self.high and (not self.points or value in self.points)

    @property
    def is_cut(self) -> bool:
        """Whether this is the cut knob (its value is the defence's ``cut``, not a
        ``Config`` field)."""
        return self.option == CUT

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


def cut_knob(model: nn.Module, cut: int | str) -> Knob | None:
    """The cut as a knob, declared once for every defence deployed at the split: from
    ``cut`` to the model's deepest valid cut (a block index; deeper is stronger: more of
    the model runs on the client before anything crosses the wire).

    Args:
        model: the classifier (not modified).
        cut: the cut given (a block index, or a submodule name that ends at one).

    Returns:
        The knob, or None where no valid cut lies deeper than ``cut`` or ``cut`` names
        a point inside a block (no block index to search from).

    Raises:
        InvalidCutError: ``cut`` is not a valid cut of ``model``.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
        ...                     nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> k = cut_knob(net, 1)
        >>> (k.option, k.low, k.high, k.points, k.stronger)
        ('cut', 1.0, 3.0, (1.0, 2.0, 3.0), 'higher')
        >>> cut_knob(net, 3) is None  # nothing deeper
        True
    """
    parts = split_model(model, cut)
    if not isinstance(parts.cut, int):
        return None
    deeper = [float(c) for c in parts.valid_cuts if c >= parts.cut]
    if len(deeper) < 2:
        return None
    return Knob(option=CUT, low=deeper[0], high=deeper[-1], integer=True,
                points=tuple(deeper),
                description="the cut: compute blocks on the client (deeper: more of the "
                            "model runs before anything crosses the wire)")


__all__ = ["CUT", "Knob", "cut_knob", "declared_knob"]
