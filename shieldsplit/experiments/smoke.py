"""Small budgets for trying the examples: the ``SHIELDSPLIT_SMOKE`` environment variable.

With ``SHIELDSPLIT_SMOKE=1`` the command line (``shieldsplit demo``, ``audit`` and
``compare``) runs with tiny budgets: one epoch, at most :attr:`SmokeBudget.limit`
images per split, :attr:`SmokeBudget.victims` victim images per audit, only the
fast :attr:`SmokeBudget.attacks` unless ``--attacks`` names others and, for the
demo, a narrow network. It checks that a command works end to end in
seconds; its numbers mean nothing. The documentation's examples are run this
way by ``tests/test_docs_examples.py``. This module is the only place that
reads the variable.

Example:
    >>> import os
    >>> os.environ.pop(SMOKE_ENV, None) and None
    >>> smoke_budget() is None
    True
    >>> os.environ[SMOKE_ENV] = "1"
    >>> smoke_budget().epochs
    1
    >>> del os.environ[SMOKE_ENV]
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field

from shieldsplit.errors import ConfigError

#: The environment variable that switches the small budgets on.
SMOKE_ENV = "SHIELDSPLIT_SMOKE"


class SmokeBudget(BaseModel):
    """The small budgets of ``SHIELDSPLIT_SMOKE=1``.

    Attributes:
        epochs: training epochs of every model.
        limit: images per data split.
        victims: victim images per audit.
        width: conv channels of the demo's network.
        hidden: width of its first FC layer.
        attacks: the attacks of ``audit`` and ``compare`` when ``--attacks`` is not given.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(1, ge=1)
    limit: int = Field(96, ge=1)
    victims: int = Field(8, ge=1)
    width: int = Field(8, ge=1)
    hidden: int = Field(16, ge=1)
    attacks: tuple[str, ...] = ("split-black-box",)


def smoke_budget() -> SmokeBudget | None:
    """The small budgets if ``SHIELDSPLIT_SMOKE`` is set to 1, else None.

    Returns:
        The budgets, or None when the variable is unset, empty or ``0``.

    Raises:
        ConfigError: for any other value.
    """
    value = os.environ.get(SMOKE_ENV, "").strip()
    if value in ("", "0"):
        return None
    if value != "1":
        raise ConfigError.build(what=SMOKE_ENV, expected="1, 0 or unset",
                                received=repr(value), fix=f"export {SMOKE_ENV}=1 or unset it")
    return SmokeBudget()


def cap(value: int | None, smallest: int) -> int:
    """``value`` capped at ``smallest`` (``smallest`` when ``value`` is None).

    Example:
        >>> cap(None, 8), cap(100, 8), cap(4, 8)
        (8, 8, 4)
    """
    return smallest if value is None else min(value, smallest)


__all__ = ["SMOKE_ENV", "SmokeBudget", "cap", "smoke_budget"]
