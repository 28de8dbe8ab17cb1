"""Typed errors raised on bad input.

Every error says what was wrong, what was expected, what was received and how
to fix it, so a user never has to read a traceback to understand a mistake.
All of them subclass :class:`ShieldSplitError`, itself a ``ValueError``, so
``except ValueError`` keeps working for callers that do not know this library.

Example:
    >>> from shieldsplit.errors import InvalidCutError
    >>> err = InvalidCutError.build(
    ...     what="cut", expected="one of [1, 2]", received=7, fix="pass cut=1 or cut=2")
    >>> isinstance(err, ValueError)
    True
    >>> print(err)
    Invalid cut: expected one of [1, 2], received 7. Fix: pass cut=1 or cut=2.
"""

from __future__ import annotations

from typing import Any, TypeVar

_E = TypeVar("_E", bound="ShieldSplitError")


class ShieldSplitError(ValueError):
    """Base of every error that shieldsplit raises on bad input."""

    label = "Invalid input"

    @classmethod
    def build(cls: type[_E], *, what: str, expected: str, received: Any, fix: str) -> _E:
        """Build an error whose message names what, expected, received and fix.

        Args:
            what: the argument or object at fault (kept on the error as ``.what``).
            expected: what would have been accepted.
            received: what was given (rendered with ``str``).
            fix: one sentence telling the user what to do.

        Returns:
            An instance of ``cls`` ready to raise.
        """
        err = cls(f"{cls.label}: expected {expected}, received {received}. Fix: {fix}.")
        err.what = what
        return err

    what: str = ""


class InvalidCutError(ShieldSplitError):
    """The requested split point does not exist or cannot carry a single tensor."""

    label = "Invalid cut"


class UnsupportedModelError(ShieldSplitError):
    """The model cannot be wrapped (no Conv/Linear layer, not traceable, ...)."""

    label = "Unsupported model"


class InputShapeError(ShieldSplitError):
    """An input batch has the wrong rank, channel count or size."""

    label = "Invalid input shape"


class NonFiniteInputError(ShieldSplitError):
    """An input batch contains NaN or infinity."""

    label = "Non-finite input"


class LabelError(ShieldSplitError):
    """A label is out of range or has the wrong shape."""

    label = "Invalid label"


class EmptyDataError(ShieldSplitError):
    """A loader or data set yields no batch."""

    label = "Empty data"


class DataFileError(ShieldSplitError):
    """A data file is missing or corrupted."""

    label = "Data file problem"


class ConfigError(ShieldSplitError):
    """A configuration value is out of its valid range."""

    label = "Invalid configuration"


class MembershipSetError(ShieldSplitError):
    """Member and non-member sets that cannot support the requested membership test
    (overlapping, too few non-members for an FPR, unbalanced beyond what is available)."""

    label = "Invalid membership sets"


class OutputPathError(ShieldSplitError):
    """An output file cannot be written where asked (missing, unwritable or a folder)."""

    label = "Cannot write output"


class StateError(ShieldSplitError):
    """An operation was called in a state that does not allow it."""

    label = "Invalid state"


class WireError(ShieldSplitError):
    """A message from a network peer that breaks the wire protocol (bad framing, header,
    dtype, shape or size, or over the size limit). The receiver refuses it and goes on."""

    label = "Malformed message"


__all__ = [
    "ConfigError",
    "DataFileError",
    "EmptyDataError",
    "InputShapeError",
    "InvalidCutError",
    "LabelError",
    "MembershipSetError",
    "NonFiniteInputError",
    "OutputPathError",
    "ShieldSplitError",
    "StateError",
    "UnsupportedModelError",
    "WireError",
]
