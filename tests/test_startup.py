"""Importing shieldsplit is cheap and leaves logging alone; ``--verbose`` shows INFO.

Issue 14 item 5: Opacus calls ``logging.basicConfig`` when imported, which used to
hijack the user's root logger at ``import shieldsplit``. Each check runs in a fresh
interpreter (what was imported before cannot leak in). The start-up time itself is
measured in ``benchmarks/import_time.py``, not here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

HEAVY = ("opacus", "matplotlib", "medmnist", "torchvision", "captum", "flwr", "ray", "riskcal",
         "optuna")


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
        import shieldsplit.compare, shieldsplit.audit  # packages must not shadow the names
        import shieldsplit.compare.frontier, shieldsplit.audit.auditor
        from shieldsplit.compare.frontier import compare
        from shieldsplit.audit.auditor import audit
        import shieldsplit.defenses.base as d
        print(ss.compare is compare, ss.audit is audit, "dpsgd" in d.available_defenses(),
              sorted(set(ss.__all__) - set(dir(ss))))
    """)
    assert out.split() == ["True", "True", "True", "[]"]


OPTIONAL = ("medmnist", "torchvision", "flwr", "ray", "riskcal", "optuna")


def site_without(tmp: Path, absent: tuple[str, ...]) -> Path:
    """A site-packages folder of symlinks to this environment's packages, without the
    ``absent`` distributions (their modules and their metadata both gone): an
    environment where they were never installed, built in a moment."""
    site = tmp / "site-packages"
    site.mkdir()
    pattern = re.compile(rf"^({'|'.join(absent)})([-_.].*)?$", re.IGNORECASE)
    dirs = [Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    for folder in dirs:
        for entry in folder.iterdir():
            target = site / entry.name
            if pattern.match(entry.name) or target.exists():
                continue
            if entry.suffix == ".pth" and any(
                line.strip().endswith("site-packages") for line in entry.read_text().splitlines()
            ):
                continue  # a .pth that chains another site folder (the absent ones are there)
            target.symlink_to(entry)
    return site


def test_the_core_works_without_the_optional_extras(tmp_path: Path) -> None:
    """Issue 11 item 5: in an environment without medmnist, torchvision, Flower, riskcal
    and Optuna (their packages and metadata removed from the path), shieldsplit imports,
    trains a SplitShield, audits a model and writes its HTML report. matplotlib stays: Captum, a
    core dependency, requires it (captum 0.9 imports it in ``captum.attr``), so it is
    present wherever shieldsplit runs; the ``plots`` extra only states its version."""
    site = site_without(tmp_path, OPTIONAL)
    code = textwrap.dedent(f"""
        import site, sys
        site.addsitedir({str(site)!r})
        import importlib.util, json, torch
        assert all(importlib.util.find_spec(m) is None for m in {OPTIONAL!r})
        import shieldsplit as ss
        from shieldsplit.data import load_dataset
        ds = load_dataset("digits", seed=0, limit=120)
        torch.manual_seed(0)
        net = ss.PGSLNet(num_classes=10, image_size=8, width=4, hidden=8)
        shield = ss.SplitShield(net, cut=2, seed=0)
        shield.fit((ds.x_train, ds.y_train), epochs=1, seed=0, progress=False)
        report = ss.audit(net, data=(ds.x_train, ds.y_train), cut=2,
                          attacks=["split-black-box"], budget="quick", victims=8,
                          control=None, progress=False, seed=0)
        report.save_html({str(tmp_path / "r.html")!r})
        print(json.dumps({{"loaded": sorted(m for m in {OPTIONAL!r} if m in sys.modules),
                          "verdicts": len(report.verdicts)}}))
    """)
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"loaded": [], "verdicts": 1}
    assert (tmp_path / "r.html").read_text().lower().count("<html") == 1
