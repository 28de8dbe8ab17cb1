"""Importing shieldsplit is cheap and leaves logging alone; ``--verbose`` shows INFO.

Issue 14 item 5: Opacus calls ``logging.basicConfig`` when imported, which used to
hijack the user's root logger at ``import shieldsplit``. Each check runs in a fresh
interpreter (what was imported before cannot leak in). The start-up time itself is
measured in ``benchmarks/import_time.py``, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

HEAVY = ("opacus", "matplotlib", "medmnist", "torchvision", "captum", "flwr", "ray")


def run_python(code: str, cwd: Path | None = None) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_shieldsplit_leaves_the_root_logger_and_heavy_extras_alone() -> None:
    out = run_python("""
        import json, logging, sys
        import shieldsplit
        print(json.dumps({"handlers": len(logging.root.handlers),
                          "modules": sorted(m for m in sys.modules)}))
    """)
    seen = json.loads(out)
    assert seen["handlers"] == 0
    assert not [m for m in (*HEAVY, "torch") if m in seen["modules"]]


def test_the_command_line_module_imports_no_torch() -> None:
    out = run_python("import sys, shieldsplit.cli; print(sorted(sys.modules))")
    assert not [m for m in (*HEAVY, "torch") if f"'{m}'" in out]


def test_using_dpsgd_does_not_configure_the_root_logger() -> None:
    out = run_python("""
        import logging
        import shieldsplit as ss
        ss.DPSGD  # imports Opacus
        import opacus
        print(len(logging.root.handlers), logging.root.level == logging.WARNING)
    """)
    assert out.split() == ["0", "True"]


def test_verbose_shows_info_lines_once(tmp_path: Path) -> None:
    (tmp_path / "issue14_logmod.py").write_text(textwrap.dedent("""
        import logging
        def make(**shape):
            logging.getLogger("shieldsplit.probe").info("INFO-LINE-VISIBLE")
            logging.getLogger("shieldsplit.probe").warning("WARNING-LINE-VISIBLE")
            raise SystemExit(0)
    """))
    script = "import sys; from shieldsplit.cli import main; sys.argv[0] = 'shieldsplit'; main()"

    def stderr(*args: str) -> str:
        done = subprocess.run([sys.executable, "-c", script, *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr
        return done.stderr

    loud = stderr("--verbose", "audit", "--model", "issue14_logmod:make", "--quiet")
    assert "INFO-LINE-VISIBLE" in loud and loud.count("WARNING-LINE-VISIBLE") == 1


def test_public_names_are_the_same_objects_as_before_lazy_loading() -> None:
    out = run_python("""
        import shieldsplit as ss
        import shieldsplit.compare, shieldsplit.auditor  # submodules must not shadow names
        from shieldsplit.compare import compare
        from shieldsplit.auditor import audit
        import shieldsplit.defense as d
        print(ss.compare is compare, ss.audit is audit, "dpsgd" in d.available_defenses(),
              sorted(set(ss.__all__) - set(dir(ss))))
    """)
    assert out.split() == ["True", "True", "True", "[]"]
