"""Third-party attacks and defences: discovered by entry points, usable from the CLI.

A tiny plugin package (one reconstruction attack, one cut defence) is built as a wheel,
installed with pip into a temporary folder outside the repository, and run from
``shieldsplit audit``, ``shieldsplit compare`` and ``shieldsplit options`` in a fresh
interpreter whose path holds that folder; nothing in shieldsplit names it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from shieldsplit._core.plugins import load_entry_points, plugin_failures

PLUGIN = textwrap.dedent('''
    """A third-party plugin for shieldsplit (test fixture)."""
    from typing import ClassVar

    import torch
    from pydantic import BaseModel, ConfigDict, Field

    from shieldsplit.attacks.base import Attack, Reconstruction
    from shieldsplit.defenses.base import CutDefense
    from shieldsplit.defenses.knob import Knob


    class MeanImage(Attack):
        """Answers every victim with the auxiliary images' mean (a floor, not an attack)."""

        name = "toy-mean"
        threat_model = "split_black_box"
        observes = "activations"
        assumes: ClassVar[frozenset] = frozenset({"auxiliary_data"})

        def reconstruct(self, observation):
            aux = self.context.auxiliary_images
            mean = aux.mean(0, keepdim=True).expand(observation.batch_size, *aux.shape[1:])
            return Reconstruction(images=mean.clone(), attack=self.name)


    class ClipConfig(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
        bound: float = Field(default=1.0, gt=0.0)


    class ClipActivations(CutDefense):
        """Clamps what crosses the cut to [-bound, bound]."""

        name: ClassVar[str] = "toy-clip"
        knob: ClassVar[Knob] = Knob(option="bound", low=0.1, high=10.0, scale="log",
                                    stronger="lower")
        Config = ClipConfig

        def transform(self, a):
            return a.clamp(-self.config.bound, self.config.bound)
''')

ENTRY_POINTS = textwrap.dedent('''
    [shieldsplit.attacks]
    toy-mean = toy_ssplugin:MeanImage

    [shieldsplit.defenses]
    toy-clip = toy_ssplugin:ClipActivations
''')


def build_wheel(folder: Path, *, entry_points: str = ENTRY_POINTS) -> Path:
    """A pure-Python wheel of the plugin (a wheel is a zip with its dist-info)."""
    wheel = folder / "toy_ssplugin-0.1-py3-none-any.whl"
    info = "toy_ssplugin-0.1.dist-info"
    files = {
        "toy_ssplugin/__init__.py": PLUGIN,
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: toy-ssplugin\nVersion: 0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
        f"{info}/entry_points.txt": entry_points,
    }
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n")
    return wheel


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin, installed by pip into a folder outside the repository."""
    root = tmp_path_factory.mktemp("plugin")
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--disable-pip-version-check", "--target", str(target), str(build_wheel(root))],
        check=True, capture_output=True, text=True, timeout=300)
    return target


def shieldsplit_cli(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "SHIELDSPLIT_SMOKE": "1"}
    return subprocess.run([sys.executable, "-m", "shieldsplit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_plugin_attack_runs_from_shieldsplit_audit(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.json"
    done = shieldsplit_cli(site, "audit", "--model", "pgsl-net", "--data", "digits",
                           "--attacks", "toy-mean", "--victims", "4", "--quiet",
                           "--json", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert "toy-mean" in json.dumps(report["results"])
    assert "toy-mean" in done.stdout


def test_a_plugin_defense_and_attack_run_from_shieldsplit_compare(site: Path,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    done = shieldsplit_cli(site, "compare", "--data", "digits", "--defenses", "none,toy-clip",
                           "--option", "toy-clip.bound=0.5", "--attacks", "toy-mean",
                           "--no-membership", "--quiet", "--json", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    record = out.read_text()
    assert "toy-clip" in record and "toy-mean" in record
    assert "toy-clip" in done.stdout


def test_plugins_are_listed_with_their_options(site: Path, tmp_path: Path) -> None:
    done = shieldsplit_cli(site, "options", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    listing = json.loads(done.stdout)
    assert "toy-mean" in listing["attack"]
    assert [row["option"] for row in listing["defence"]["toy-clip"]] == ["bound"]


def test_without_the_plugin_its_names_are_unknown(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", "shieldsplit", "audit", "--model", "pgsl-net",
                           "--attacks", "toy-mean"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "toy-mean" in done.stdout + done.stderr


def test_a_broken_plugin_is_skipped_with_its_name(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    broken = "[shieldsplit.attacks]\nbroken = toy_ssplugin_missing:Nothing\n"
    with zipfile.ZipFile(build_wheel(tmp_path, entry_points=broken)) as z:
        z.extractall(site)
    monkeypatch.syspath_prepend(str(site))
    registered: list[str] = []
    loaded = load_entry_points("shieldsplit.attacks", lambda n, o: registered.append(n))
    assert "broken" not in loaded and registered == []
    assert "ModuleNotFoundError" in plugin_failures()["shieldsplit.attacks:broken"]


def test_federate_offers_a_plugin_defense_with_a_federated_form(site: Path,
                                                                tmp_path: Path) -> None:
    # the plugin's defence passes federate's --defense check (read from the registry's
    # declared surfaces), so the first error is the bad cut that follows it
    done = shieldsplit_cli(site, "federate", "--defense", "toy-clip", "--cut", "99",
                           cwd=tmp_path)
    assert done.returncode == 2
    assert "--cut" in done.stdout + done.stderr and "--defense" not in done.stdout + done.stderr
    unknown = shieldsplit_cli(site, "federate", "--defense", "toy-clipp", cwd=tmp_path)
    assert unknown.returncode == 2 and "toy-clip" in unknown.stdout + unknown.stderr
