"""``shieldsplit.harden``: the most useful defence setting that the audit cannot break.

:func:`harden` searches each defence's declared strength for the weakest setting whose
audit reaches a target verdict at every named attacker position (on the validation
split), confirms the chosen settings on the test split over 3 seeds, and recommends the
most useful one: :class:`HardenResult` (``summary()``, ``.defense``, ``save_html``).
See ``docs/harden.md``. The names it accepts are in :mod:`shieldsplit.settings`
(``HARDEN_POSITIONS``, ...), which imports no torch.
"""

from __future__ import annotations

from shieldsplit.harden.result import Confirmation, DefenseSearch, HardenResult, Probe
from shieldsplit.harden.run import harden
from shieldsplit.harden.spec import POSITIONS, TARGETS, UTILITIES

__all__ = ["POSITIONS", "TARGETS", "UTILITIES", "Confirmation", "DefenseSearch",
           "HardenResult", "Probe", "harden"]
