"""Every PGSL step is pinned by an efficacy test (issue 23): ``tests/pgsl_mutations.py``
switches each step off in turn and exits 0 only if one of the efficacy tests in
tests/test_pgsl_steps.py and tests/test_recovery.py fails for every step (and all of
them pass with every step on). About 30 s of one core."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "pgsl_mutations.py"


def test_every_pgsl_step_is_caught_by_an_efficacy_test() -> None:
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": path}, timeout=3600, check=False,
    )
    report = done.stdout[-6000:] + done.stderr[-3000:]
    assert done.returncode == 0, report
    rows = [line for line in done.stdout.splitlines() if line.startswith("| (")]
    assert len(rows) >= 10, report  # one row per step, each naming a test
    assert all(not line.rstrip(" |").endswith("NONE") for line in rows), report
