"""``shieldsplit reproduce``: the two papers' tables, re-measured on real medical data.

``reproduce("pgsl", ...)`` re-runs the PGSL paper's Table I (reconstruction MSE),
Table II (accuracy on attacked and rebuilt images, PGSL's streams) and Fig. 3
(the mu sweep); ``reproduce("latent", ...)`` re-runs the latent-perturbation
paper's Fig. 4 (MSE against client accuracy), Tables III-V (PSNR) and Fig. 5
(attacker accuracy against MSE). Each writes a Markdown page with the paper's
number beside ours in every cell, PNG plots and the finished cells (JSON).

Every cell is saved the moment it finishes (:class:`CellStore`), so Ctrl-C or a
crash keeps what finished and a re-run resumes. Nothing is tuned on the test
split: settings are fixed in advance by :data:`PRESETS` and the papers.
"""

from __future__ import annotations

from shieldsplit.experiments.reproduce import latent as _latent  # registers "latent"
from shieldsplit.experiments.reproduce import pgsl as _pgsl  # registers "pgsl"
from shieldsplit.experiments.reproduce.core import *  # noqa: F403  (the public names of the machinery)
from shieldsplit.experiments.reproduce.core import __all__ as __all__

del _latent, _pgsl
