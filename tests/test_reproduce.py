"""``shieldsplit reproduce``: resumable cells, clear errors and both papers end to end.

Key invariants: a finished cell is saved the moment it finishes and read back instead
of recomputed; a cell file of other settings is refused (naming ``--fresh``) and a
corrupted one raises a typed error; Ctrl-C or a crash keeps the finished cells and a
re-run resumes; a corrupted or missing data file is named with its MD5 and the fix
(in Python and on the command line, exit code 2); the pages put the paper's numbers
beside ours, with provenance, plots and mean ± sd over seeds, and the same seed gives
the same numbers. The end-to-end runs use the real data (skipped without it) with the
budgets shrunk by monkeypatching, so they take seconds.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import shieldsplit.experiments.reproduce.core as repro
from shieldsplit.adapters.medmnist import OFFICIAL_MD5
from shieldsplit.audit import auditor
from shieldsplit.cli import app
from shieldsplit.data import load_dataset
from shieldsplit.errors import ConfigError, DataFileError
from shieldsplit.experiments.reproduce import (
    PRESETS,
    CellStore,
    Preset,
    RunContext,
    available_papers,
    register_experiment,
    reproduce,
)
from shieldsplit.experiments.reproduce.cells import FORMAT

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAKE = "test-fake"


def _flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


# ---------------------------------------------------------------- CellStore


def test_finished_cell_is_read_back_without_recomputation(tmp_path: Path) -> None:
    path = tmp_path / "cells.json"
    calls: list[str] = []

    def compute(key: str) -> dict[str, Any]:
        calls.append(key)
        return {"value": len(key), "pair": (1, 2)}

    store = CellStore(path, fingerprint={"data": "digits", "seed": 0})
    assert not path.exists()  # created on the first finished cell
    first = store.run("a", functools.partial(compute, "a"))
    assert first == {"value": 1, "pair": [1, 2]}  # JSON types, as stored
    assert calls == ["a"] and "a" in store and len(store) == 1 and store.reused == 0
    assert store.run("a", functools.partial(compute, "a")) == first  # same store
    assert calls == ["a"] and store.reused == 1

    again = CellStore(path, fingerprint={"data": "digits", "seed": 0})
    assert len(again) == 1 and "a" in again and "b" not in again
    assert again.run("a", lambda: pytest.fail("a finished cell was recomputed")) == first
    assert again.run("b", functools.partial(compute, "bb")) == {"value": 2, "pair": [1, 2]}
    assert calls == ["a", "bb"] and again.reused == 1 and len(again) == 2


def test_every_cell_is_on_disk_before_the_next_one_runs(tmp_path: Path) -> None:
    path = tmp_path / "cells.json"
    store = CellStore(path, fingerprint={"data": "digits"})
    seen: list[dict[str, Any]] = []

    def second() -> int:
        seen.append(json.loads(path.read_text()))
        return 2

    store.run("first", lambda: 1)
    assert path.is_file()
    store.run("second", second)
    assert seen[0]["format"] == FORMAT
    assert seen[0]["fingerprint"] == {"data": "digits"}
    assert seen[0]["cells"] == {"first": 1}  # the first cell, and only it
    assert json.loads(path.read_text())["cells"] == {"first": 1, "second": 2}


def test_cell_file_of_other_settings_is_refused_naming_fresh(tmp_path: Path) -> None:
    path = tmp_path / "cells.json"
    CellStore(path, fingerprint={"seed": 0}).run("a", lambda: 1)
    with pytest.raises(ConfigError) as info:
        CellStore(path, fingerprint={"seed": 1})
    msg = str(info.value)
    assert "--fresh" in msg and str(path) in msg
    assert json.loads(path.read_text())["cells"] == {"a": 1}  # nothing was lost


def test_fresh_discards_old_cells(tmp_path: Path) -> None:
    path = tmp_path / "cells.json"
    old = CellStore(path, fingerprint={"seed": 0})
    old.run("a", lambda: 1)
    old.run("b", lambda: 2)
    calls: list[int] = []
    for fingerprint in ({"seed": 0}, {"seed": 1}):  # same or other settings
        store = CellStore(path, fingerprint=fingerprint, fresh=True)
        assert len(store) == 0 and "a" not in store
        calls.clear()

        def compute() -> int:
            calls.append(1)
            return 10

        assert store.run("a", compute) == 10
        assert calls == [1] and store.reused == 0
        saved = json.loads(path.read_text())
        assert saved["cells"] == {"a": 10} and saved["fingerprint"] == fingerprint
    assert len(CellStore(path, fingerprint={"seed": 1})) == 1  # resumes the fresh run


@pytest.mark.parametrize(
    "content",
    [b"\x00\xffnot json{", b"[1, 2, 3]", b'{"format": "something/else", "cells": {}}'],
    ids=["garbage", "not-a-dict", "other-format"],
)
def test_corrupted_cell_file_raises_data_file_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "cells.json"
    path.write_bytes(content)
    with pytest.raises(DataFileError) as info:
        CellStore(path, fingerprint={"seed": 0})
    msg = str(info.value)
    assert str(path) in msg and "--fresh" in msg
    assert len(CellStore(path, fingerprint={"seed": 0}, fresh=True)) == 0  # the way out


# ---------------------------------------------------------------- a throwaway experiment


@dataclass
class FakePaper:
    """A registered three-cell experiment whose cells can be made to fail once."""

    calls: list[int] = field(default_factory=list)
    loads: list[tuple[str, Any, int, int | None]] = field(default_factory=list)
    fail: tuple[int, BaseException] | None = None
    presets: list[Preset] = field(default_factory=list)

    def run(self, ctx: RunContext) -> list[str]:
        self.presets.append(ctx.preset)
        values = [ctx.store.run(f"cell {i}", functools.partial(self._cell, i))
                  for i in range(3)]
        return ["## Fake table", "", "| cell | ours | paper |", "| --- | --- | --- |",
                *(f"| {i} | {v['value']:.2f} | 3.14 |" for i, v in enumerate(values)), ""]

    def _cell(self, i: int) -> dict[str, float]:
        self.calls.append(i)
        if self.fail is not None and self.fail[0] == i:
            exc, self.fail = self.fail[1], None
            raise exc
        return {"value": 1.5 * i}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePaper]:
    paper = FakePaper()

    def digits_instead(name: str, *, root: Any = None, seed: int = 0,
                       limit: int | None = None) -> Any:
        paper.loads.append((name, root, seed, limit))
        return load_dataset("digits", seed=seed, limit=limit)

    monkeypatch.setattr(repro, "load_dataset", digits_instead)
    register_experiment(FAKE, paper.run)
    try:
        yield paper
    finally:
        repro.unregister_experiment(FAKE)


def _fake_files(out: Path) -> tuple[Path, Path]:
    stem = f"reproduce_{FAKE}_breastmnist_quick"
    return out / f"{stem}.cells.json", out / f"{stem}.md"


def test_registered_experiment_is_listed_and_names_are_unique(fake: FakePaper) -> None:
    assert {"latent", "pgsl", FAKE} <= set(available_papers())
    with pytest.raises(ConfigError, match=FAKE):
        register_experiment(FAKE, lambda ctx: [])


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("boom in cell 1")],
                         ids=["ctrl-c", "crash"])
def test_interrupt_or_crash_keeps_finished_cells_and_rerun_resumes(
        fake: FakePaper, tmp_path: Path, error: BaseException) -> None:
    cells, page = _fake_files(tmp_path)
    fake.fail = (1, error)
    with pytest.raises(type(error)):
        reproduce(FAKE, data_root=tmp_path / "unused", out=tmp_path, seed=3, progress=False)
    assert fake.calls == [0, 1]
    assert json.loads(cells.read_text())["cells"] == {"cell 0": {"value": 0.0}}
    assert not page.exists()
    assert fake.loads == [("breastmnist", tmp_path / "unused", 3, PRESETS["quick"].limit)]

    fake.calls.clear()
    result = reproduce(FAKE, data_root=tmp_path / "unused", out=tmp_path, seed=3,
                       progress=False)
    assert fake.calls == [1, 2]  # only the unfinished cells
    assert (result.computed, result.reused) == (2, 1)
    assert result.cells == cells and result.page == page and result.plots == []
    text = page.read_text()
    assert text == result.markdown
    assert "| 2 | 3.00 | 3.14 |" in text and "## Fake table" in text
    assert "1 cells read back" in text
    runs = json.loads(cells.read_text())["runs"]  # the interrupted run's time counts too
    assert [r["computed"] for r in runs] == [1, 2] and "records 2 runs that computed" in text
    assert f"Command: `shieldsplit reproduce {FAKE} --data breastmnist" in text
    assert "--seed 3" in text
    assert set(json.loads(cells.read_text())["cells"]) == {"cell 0", "cell 1", "cell 2"}

    fake.calls.clear()
    again = reproduce(FAKE, data_root=tmp_path / "unused", out=tmp_path, seed=3,
                      progress=False)
    assert fake.calls == [] and (again.computed, again.reused) == (0, 3)


def test_other_settings_in_out_are_refused_until_fresh(fake: FakePaper, tmp_path: Path) -> None:
    reproduce(FAKE, out=tmp_path, seed=0, progress=False)
    fake.calls.clear()
    with pytest.raises(ConfigError, match="--fresh"):
        reproduce(FAKE, out=tmp_path, seed=1, progress=False)
    assert fake.calls == []
    result = reproduce(FAKE, out=tmp_path, seed=1, fresh=True, progress=False)
    assert fake.calls == [0, 1, 2] and (result.computed, result.reused) == (3, 0)
    cells, _ = _fake_files(tmp_path)
    assert json.loads(cells.read_text())["fingerprint"]["seed"] == 1


def test_cli_interrupt_exits_130_and_rerun_resumes(fake: FakePaper, tmp_path: Path) -> None:
    args = ["reproduce", FAKE, "--data-root", str(tmp_path), "--out", str(tmp_path), "--quiet"]
    fake.fail = (2, KeyboardInterrupt())
    result = runner.invoke(app, args)
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and "resume" in result.output
    cells, page = _fake_files(tmp_path)
    assert set(json.loads(cells.read_text())["cells"]) == {"cell 0", "cell 1"}

    fake.calls.clear()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert fake.calls == [2]
    text = _flat(result.output)
    assert "1 cells computed, 2 read back" in text and "| 2 | 3.00 | 3.14 |" in text
    assert page.is_file()


# ---------------------------------------------------------------- errors


def test_corrupted_data_file_names_file_md5_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "breastmnist.npz"
    bad.write_bytes(b"this is not the official file" * 10)
    with pytest.raises(DataFileError) as info:
        reproduce("pgsl", data="breastmnist", data_root=tmp_path, out=tmp_path / "out",
                  progress=False)
    msg = str(info.value)
    assert "breastmnist.npz" in msg and OFFICIAL_MD5["breastmnist"] in msg
    assert "Fix:" in msg and "re-download" in msg


@pytest.mark.parametrize("paper", ["pgsl", "latent"])
@pytest.mark.parametrize("data", ["breastmnist", "pneumoniamnist"])
def test_missing_data_file_names_it_where_and_its_md5(tmp_path: Path, paper: str,
                                                      data: str) -> None:
    with pytest.raises(DataFileError) as info:
        reproduce(paper, data=data, data_root=tmp_path, out=tmp_path / "out",  # type: ignore[arg-type]
                  progress=False)
    msg = str(info.value)
    assert f"{data}.npz" in msg and str(tmp_path) in msg and OFFICIAL_MD5[data] in msg
    assert "--data-root" in msg


def test_missing_data_root_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        reproduce("pgsl", data="breastmnist", data_root=None, out=tmp_path, progress=False)
    assert "--data-root" in str(info.value) and "breastmnist" in str(info.value)


def test_cli_corrupted_data_file_exits_2_with_the_message(tmp_path: Path) -> None:
    (tmp_path / "breastmnist.npz").write_bytes(b"\x00garbage\xff" * 50)
    result = runner.invoke(app, ["reproduce", "pgsl", "--data", "breastmnist", "--data-root",
                                 str(tmp_path), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 2, result.output
    text = _flat(result.output)
    assert "error:" in text and "breastmnist.npz" in text
    assert OFFICIAL_MD5["breastmnist"] in text and "Fix:" in text
    assert "Traceback" not in result.output


def test_unknown_paper_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        reproduce("khowaja", out=tmp_path, progress=False)
    msg = str(info.value)
    assert "'khowaja'" in msg and "'latent'" in msg and "'pgsl'" in msg
    result = runner.invoke(app, ["reproduce", "khowaja", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 2
    assert "pgsl" in result.output and "latent" in result.output


@pytest.mark.parametrize("kwargs", [{"budget": "huge"}, {"data": "cifar10"},
                                    {"data": "digits"}])
def test_bad_budget_or_data_is_a_config_error(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        reproduce("latent", out=tmp_path / "out", progress=False, **kwargs)
    assert repr(next(iter(kwargs.values()))) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_cli_bad_budget_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["reproduce", "latent", "--budget", "huge", "--out",
                                 str(tmp_path), "--quiet"])
    assert result.exit_code == 2
    assert "huge" in result.output and "quick" in result.output


# ---------------------------------------------------------------- end to end (real data)

TINY = Preset(limit=32, epochs=1, width=4, hidden=8, audit="quick", victims=4, seeds=2,
              rebuild=2, sweep="short")


def _no_seconds(value: Any) -> Any:
    """A cell without its wall times (everything else must repeat for a seed)."""
    if isinstance(value, dict):
        return {k: _no_seconds(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [_no_seconds(v) for v in value]
    return value


def _cells(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())["cells"]


def _section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


@pytest.fixture
def tiny_budget(monkeypatch: pytest.MonkeyPatch) -> Preset:
    monkeypatch.setitem(repro.PRESETS, "quick", TINY)
    from shieldsplit.attacks.gradient import InvertingGradientsFedAvg

    monkeypatch.setitem(InvertingGradientsFedAvg.budgets, "quick", (2, 1))
    monkeypatch.setitem(auditor.REFERENCE_EPOCHS, "quick", 1)
    return TINY


@pytest.mark.shared_data
def test_latent_end_to_end_on_real_data(shared_data_root: Path, tiny_budget: Preset,
                                        tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import shieldsplit.experiments.reproduce.latent as latent

    # DP-SGD and fixed latent noise are in the sweep so that the PSNR table shows the
    # paper's columns beside ours; the headline needs all of HEADLINE (kept as is).
    swept = [("none", {}), ("dpsgd", {"noise_multiplier": 1.0}),
             ("latent-fixed", {"mean": 1.0, "std": 0.1})]
    monkeypatch.setattr(latent, "settings", lambda sweep: list(swept))
    n_cells = len({(n, json.dumps(o)) for n, o in swept + latent.HEADLINE}) + len(latent.HEADLINE)
    kwargs: dict[str, Any] = {"data": "breastmnist", "data_root": shared_data_root,
                              "seed": 0, "progress": False}

    torch.manual_seed(1)  # the global generator's state must not matter
    first = reproduce("latent", out=tmp_path / "a", **kwargs)
    assert (first.computed, first.reused) == (n_cells, 0)
    assert len(_cells(first.cells)) == n_cells
    text = first.page.read_text()
    assert text == first.markdown

    # the paper's PSNR beside ours, in the rows of the matching method
    psnr = _section(text, "## Tables III-V")
    dp_row = next(line for line in psnr.splitlines() if line.startswith("| dpsgd |"))
    lat_row = next(line for line in psnr.splitlines() if line.startswith("| latent |"))
    assert "10.43" in dp_row and "6.02" in lat_row
    assert re.search(r"\| \d+\.\d\d \| 10\.43", dp_row)  # ours, then the paper's
    # the headline: mean ± sd over the 2 seeds for every headline setting
    head = _section(text, "## Headline cells: 2 seeds")
    rows = [line for line in head.split("###")[0].splitlines()
            if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == len(latent.HEADLINE) and all("±" in r for r in rows)
    assert "| dpsgd |" in head and "| bido |" in head
    # every claim is decided from the numbers, with the undefended run's verdict read first
    claims = {line.split(" | ")[5].strip("*") for line in head.splitlines()
              if line.startswith(("| dpsgd |", "| bido |"))}
    assert claims <= {"holds", "does not hold", "inconclusive"} and claims
    from shieldsplit.compare.frontier import DefenseRun

    none_verdicts = [DefenseRun.model_validate(value).leakage[latent.ATTACK].verdict
                     for key, value in _cells(first.cells).items() if key.startswith("none ")]
    if "leaks" not in none_verdicts:
        assert claims == {"inconclusive"}
    assert "PSNR 6-9 dB" not in text and "reconstructions reach PSNR" in text
    # provenance
    assert "Command: `shieldsplit reproduce latent --data breastmnist --data-root " \
           f"{shared_data_root} --budget quick --seed 0" in text
    assert re.search(r"Date: \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert re.search(r"Machine: \d+ cores", text)
    assert "seeds [0, 1]" in text and "seed 0 elsewhere" in text
    assert "breastmnist" in text and "MD5-checked" in text
    # both plots, as PNG files, linked from the page
    assert sorted(p.name for p in first.plots) == [
        "reproduce_latent_breastmnist_quick_fig4.png",
        "reproduce_latent_breastmnist_quick_fig5.png"]
    for plot in first.plots:
        assert plot.is_file() and plot.read_bytes()[:8] == PNG_MAGIC
        assert f"]({plot.name})" in text

    # an identical call reads every cell back and trains nothing
    def no_training(*args: Any, **kw: Any) -> Any:
        raise AssertionError("a finished cell was recomputed")

    with monkeypatch.context() as m:
        m.setattr(latent, "run_defense", no_training)
        start = time.perf_counter()
        second = reproduce("latent", out=tmp_path / "a", **kwargs)
        wall = time.perf_counter() - start
    assert (second.computed, second.reused) == (0, n_cells)
    assert wall < max(first.seconds, 5.0)
    assert f"({n_cells} cells read back" in second.markdown
    assert second.markdown.split("## Fig. 4")[1] == text.split("## Fig. 4")[1]

    # same seed, same numbers: a fresh run elsewhere repeats every cell, whatever state
    # the global generator is in (the latent noise draws from it)
    torch.manual_seed(2)
    third = reproduce("latent", out=tmp_path / "b", **kwargs)
    assert third.computed == n_cells
    a, b = _cells(first.cells), _cells(third.cells)
    assert a.keys() == b.keys()
    for key in a:
        assert _no_seconds(a[key]) == _no_seconds(b[key]), key


@pytest.mark.shared_data
def test_pgsl_end_to_end_on_real_data(shared_data_root: Path, tiny_budget: Preset,
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shieldsplit.attacks.gan as gan
    import shieldsplit.attacks.gradient as gradient
    import shieldsplit.attacks.split as split
    import shieldsplit.experiments.reproduce.pgsl as pgsl

    # 48 images per split: the DCGAN prior needs 32 auxiliary images besides 4 victims
    monkeypatch.setitem(repro.PRESETS, "quick", tiny_budget.model_copy(update={"limit": 48}))
    monkeypatch.setattr(pgsl, "T1_SETTINGS", [("undefended split", "none", {}),
                                              ("[8] (Laplace noise) +", "laplace",
                                               {"scale": 0.5}),
                                              ("Ours (PGSL, SplitShield)", "pgsl", {})])
    monkeypatch.setattr(pgsl, "T1_HEADLINE", ("undefended split",))
    monkeypatch.setattr(pgsl, "ADVERSARIES", ("fgsm",))
    monkeypatch.setattr(pgsl, "REBUILDERS", ("gan-prior",))
    monkeypatch.setattr(pgsl, "mu_sweep",
                        functools.partial(pgsl.mu_sweep, mus=[0.25, 0.55], max_iter=10))
    monkeypatch.setitem(gradient.DLG.budgets, "quick", (2, 1))  # iDLG shares it
    monkeypatch.setitem(gan.GAN_EPOCHS, "quick", 1)
    monkeypatch.setitem(split.DECODER_EPOCHS, "quick", 1)
    n_cells = 4 + 1 + 1 + 2 + 1  # Table I (3 settings + 1 headline seed), II, streams, Fig. 3

    result = reproduce("pgsl", data="breastmnist", data_root=shared_data_root,
                       out=tmp_path, seed=0, progress=False)
    assert (result.computed, result.reused) == (n_cells, 0)
    text = result.page.read_text()
    t1 = _section(text, "## Table I")
    assert "paper MSE (MIAS)" in t1
    dlg = next(line for line in t1.splitlines() if line.startswith("| DLG | undefended split"))
    assert dlg.endswith("| 3.14 |") and "±" in dlg  # the paper's MIAS number; 2 seeds
    assert "| DLG | Ours (PGSL, SplitShield) | n/a | n/a |" in t1  # no weight gradients
    dcgan = next(line for line in t1.splitlines()
                 if line.startswith("| DCGAN | undefended split"))
    assert re.search(r"\| DCGAN \| undefended split \| \d\.\d{4} ± \d\.\d{4} \|", dcgan)
    t2 = _section(text, "## Table II")
    assert "| FGSM-attacked images |" in t2 and "61.9%" in t2
    assert "| images rebuilt by DCGAN |" in t2 and "PGSL with decision fusion" in t2
    assert "## Fig. 3" in text and "| 0.55 |" in _section(text, "## Fig. 3")
    why = _section(text, "## Where and why")
    assert f"width {tiny_budget.width} / hidden {tiny_budget.hidden}" in why  # the run's preset
    assert f"{tiny_budget.epochs} epochs" in why
    assert [p.name for p in result.plots] == ["reproduce_pgsl_breastmnist_quick_fig3.png"]
    assert result.plots[0].read_bytes()[:8] == PNG_MAGIC

    assert "| DLG | [8] (Laplace noise) + |" in t1 and "| 2.543 |" in t1
    assert "| verdict |" in t1 and "ordering |" in t1
    assert "PSNR about 8-9 dB" not in text and "minimum is at mu = 0.05" not in text
    assert "MSE is lowest at mu = " in _section(text, "## Fig. 3")

    kwargs: dict[str, Any] = {"data": "breastmnist", "data_root": shared_data_root,
                              "out": tmp_path, "seed": 0, "progress": False}
    again = reproduce("pgsl", **kwargs)
    assert (again.computed, again.reused) == (0, n_cells)
    assert again.markdown.split("## Table I")[1] == text.split("## Table I")[1]

    # a resumed run gives the numbers of an uninterrupted one: drop the Laplace cell
    # (its noise draws from the global generator) and let a re-run redo it
    saved = json.loads(result.cells.read_text())
    key = "table1 [8] (Laplace noise) + seed=0"
    laplace = saved["cells"].pop(key)
    result.cells.write_text(json.dumps(saved))
    torch.manual_seed(12345)
    resumed = reproduce("pgsl", **kwargs)
    assert (resumed.computed, resumed.reused) == (1, n_cells - 1)
    assert _no_seconds(_cells(result.cells)[key]) == _no_seconds(laplace)


# ---------------------------------------------------------------- computed sentences
# Pages built from hand-made cells with given numbers: every interpretive sentence must
# follow those numbers (the old pages said "PSNR about 8-9 dB", "the minimum is at mu =
# 0.05" and "claim reached: no" whatever the run measured).

CHANCE, MAJORITY = 0.5, 0.731


def _attack(attack: str, *, mse: float, psnr: float, balanced: float, verdict: str,
            width: float = 0.05, leak: str = "images") -> Any:
    """An attack's result whose evidence agrees with ``verdict``: a ``leaks`` result
    re-identifies all 8 victims (an image leak), or with ``leak="labels"`` only recovers
    labels (a label-only leak: it cannot decide a claim about images)."""
    from shieldsplit.audit.auditor import AttackResult
    from shieldsplit.functional.verdict import Evidence

    leaks = verdict == "leaks"
    ev = Evidence(images=8, balanced_accuracy=balanced, balanced_low=balanced - width,
                  balanced_high=balanced + width, chance=CHANCE,
                  # 8 of 8 labels clear a 50% majority (Wilson), not a 73.1% one
                  majority=0.5 if leak == "labels" else MAJORITY,
                  predicted_classes=2, lineup_chance=1 / 483,
                  identified=8 if leaks and leak == "images" else 0,
                  label_recovery=1.0 if leaks and leak == "labels" else None)
    return AttackResult(attack=attack, threat_model="t", observes="update", images=8, mse=mse,
                        psnr=psnr, attacker_accuracy=balanced, balanced_accuracy=balanced,
                        evidence=ev, verdict=verdict, seconds=1.0)


def _run(defense: str, options: dict[str, Any], accuracy: float, leakage: dict[str, Any]) -> Any:
    from shieldsplit.compare.frontier import DefenseRun

    return DefenseRun(defense=defense, options=options, strength=None, strength_value=None,
                      accuracy=accuracy, balanced_accuracy=accuracy, majority_rate=MAJORITY,
                      f1=0.5, train_seconds=1.0, leakage=leakage)


def _context(tmp_path: Path, cells: dict[str, Any], seeds: int) -> RunContext:
    """A run context whose cells are all finished (nothing is computed, no data needed)."""
    store = CellStore(tmp_path / "cells.json", fingerprint={"test": 1})
    store.cells.update(json.loads(json.dumps(cells, default=str)))
    opts = repro.ReproduceOptions(paper="pgsl", out=tmp_path, progress=False)
    # only what the pages read of the data: its classes and test labels
    data = SimpleNamespace(num_classes=2, y_test=torch.tensor([0] * 17 + [1] * 31 + [1] * 52))
    return RunContext(options=opts, preset=TINY.model_copy(update={"seeds": seeds}),
                      data=data, store=store, stem="page")  # type: ignore[arg-type]


def _headline_runs(none_verdict: str, latent_mse: list[float], latent_bal: list[float],
                   ) -> dict[str, Any]:
    import shieldsplit.experiments.reproduce.latent as latent

    runs = {}
    for s in (0, 1, 2):
        for name, opts in latent.HEADLINE:
            if name == "none":
                res = _attack(latent.ATTACK, mse=0.01, psnr=20.0 + s, balanced=0.9,
                              verdict=none_verdict)
            elif name.startswith("latent"):
                res = _attack(latent.ATTACK, mse=latent_mse[s], psnr=8.0, balanced=latent_bal[s],
                              verdict="no leakage found")
            else:  # the baselines: MSE 0.05 +- 0.001, balanced attacker accuracy 80%
                res = _attack(latent.ATTACK, mse=0.05 + 0.001 * s, psnr=12.0,
                              balanced=0.8 + 0.01 * s, verdict="leaks")
            runs[latent._key(name, opts, s)] = _run(name, opts, 0.8, {latent.ATTACK: res})
    return runs


def _claims(text: list[str]) -> dict[str, str]:
    rows = [line.split(" | ") for line in text if line.startswith(("| dpsgd |", "| bido |"))]
    return {r[0][2:]: r[5].strip("*") for r in rows}


def test_latent_claim_is_inconclusive_when_the_attack_fails_undefended(tmp_path: Path) -> None:
    import shieldsplit.experiments.reproduce.latent as latent

    # latent clearly better than both baselines on MSE and attacker accuracy ...
    runs = _headline_runs("leaks", [0.09, 0.1, 0.11], [0.55, 0.56, 0.57])
    ctx = _context(tmp_path, {}, seeds=3)
    assert _claims(latent._headline(ctx, runs)) == {"dpsgd": "holds", "bido": "holds"}
    # ... but the attack does not leak on the undefended run: nothing can be decided
    runs = _headline_runs("inconclusive", [0.09, 0.1, 0.11], [0.55, 0.56, 0.57])
    lines = latent._headline(ctx, runs)
    assert _claims(lines) == {"dpsgd": "inconclusive", "bido": "inconclusive"}
    assert "does not leak on the undefended run" in "\n".join(lines)
    assert "| inconclusive 3/3 |" in "\n".join(lines)  # the undefended row's verdicts


def test_latent_claim_within_the_seed_spread_or_flipped_is_inconclusive(
        tmp_path: Path) -> None:
    import shieldsplit.experiments.reproduce.latent as latent

    ctx = _context(tmp_path, {}, seeds=3)
    # MSE overlapping the baselines' (0.05 +- 0.001): inconclusive, whatever the mean says
    runs = _headline_runs("leaks", [0.03, 0.06, 0.09], [0.55, 0.56, 0.57])
    assert set(_claims(latent._headline(ctx, runs)).values()) == {"inconclusive"}
    # clearly lower MSE than the baselines: the claim does not hold
    runs = _headline_runs("leaks", [0.02, 0.021, 0.022], [0.55, 0.56, 0.57])
    assert set(_claims(latent._headline(ctx, runs)).values()) == {"does not hold"}
    # attacker accuracy far below chance is a flip, never counted as a drop
    runs = _headline_runs("leaks", [0.09, 0.1, 0.11], [0.2, 0.21, 0.22])
    lines = latent._headline(ctx, runs)
    assert set(_claims(lines).values()) == {"inconclusive"}
    assert "flipped" in "\n".join(lines)


def test_latent_attack_note_states_the_measured_psnr_and_verdict() -> None:
    import shieldsplit.experiments.reproduce.latent as latent

    weak = [_attack(latent.ATTACK, mse=0.1, psnr=p, balanced=0.5, verdict="inconclusive")
            for p in (5.04, 5.71)]
    note = latent.attack_note("quick", weak, weak[:1])
    assert "PSNR 5.0-5.7 dB" in note and "6-9 dB" not in note
    assert "*inconclusive*" in note and "inconclusive in 1 of 1" in note
    strong = [_attack(latent.ATTACK, mse=0.01, psnr=24.0, balanced=0.9, verdict="leaks")
              for _ in range(2)]
    note = latent.attack_note("quick", strong, strong[:1])
    assert "PSNR 24.0-24.0 dB" in note and "leaks images on every undefended run" in note
    assert "*inconclusive*" not in note and "re-identified victims in 1 of 1" in note
    # "no leakage found is evidence" is never said: the rule's other conditions stand
    assert "is evidence" not in note
    # a control that leaked labels only cannot back any reading of MSE or PSNR
    labels = [_attack(latent.ATTACK, mse=0.01, psnr=24.0, balanced=0.9, verdict="leaks",
                      leak="labels")]
    note = latent.attack_note("quick", labels, labels)
    assert "labels or the class only, not images" in note and "*inconclusive*" in note


def _t1_cells(undefended_verdict: str, dlg_mse: dict[str, list[float]]) -> dict[str, Any]:
    import shieldsplit.experiments.reproduce.pgsl as pgsl

    cells = {}
    for label, name, opts in pgsl.T1_SETTINGS:
        seeds = (0, 1, 2) if label in pgsl.T1_HEADLINE else (0,)
        for s in seeds:
            leak = {}
            for attack in pgsl.T1_ATTACKS:
                mse = dlg_mse[label][s] if attack in ("dlg", "idlg") else 0.05
                verdict = undefended_verdict if label == "undefended split" else "leaks"
                leak[attack] = _attack(attack, mse=mse, psnr=5.0 + mse, balanced=0.5,
                                       verdict=verdict)
            cells[pgsl._t1_key(label, s)] = _run(name, opts, 0.8, leak).model_dump(mode="json")
    return cells


def _orderings(lines: list[str]) -> dict[tuple[str, str], str]:
    rows = [line.split(" | ") for line in lines
            if line.startswith(("| DLG |", "| iDLG |")) and line.count("|") == 7]
    return {(r[0][2:], r[1]): r[4].strip("*") for r in rows}


def test_pgsl_ordering_follows_the_verdicts_and_the_seed_spread(tmp_path: Path) -> None:
    import shieldsplit.experiments.reproduce.pgsl as pgsl

    mse = {"undefended split": [0.10, 0.11, 0.12], "JSMA +": [0.5],
           "[8] (Laplace noise) +": [0.115], "Ours (PGSL, SplitShield)": [0.2, 0.21, 0.22],
           "Ours (PGSL image steps)": [0.01, 0.011, 0.012]}
    # the paper: JSMA above undefended (far above here, but one seed: never decides),
    # Laplace below (one seed), PGSL below (clearly above here for SplitShield: does not
    # hold; clearly below for its image steps: holds, 95% t-intervals disjoint)
    lines, notes = pgsl.table1(_context(tmp_path / "a", _t1_cells("leaks", mse), seeds=3))
    got = _orderings(lines)
    assert got[("DLG", "JSMA +")] == "inconclusive"
    assert got[("DLG", "[8] (Laplace noise) +")] == "inconclusive"
    assert "| DLG | JSMA + | yes | yes | inconclusive | MSE from one seed" in "\n".join(lines)
    assert got[("DLG", "Ours (PGSL image steps)")] == "holds"
    assert got[("DLG", "Ours (PGSL, SplitShield)")] == "does not hold"
    assert "Both leak images on every undefended seed" in notes[0]
    # the same numbers, but DLG and iDLG fail on the undefended split: nothing is decided
    lines, notes = pgsl.table1(_context(tmp_path / "b", _t1_cells("inconclusive", mse), seeds=3))
    assert set(_orderings(lines).values()) == {"inconclusive"}
    assert "ordering rows read *inconclusive*" in notes[0]
    # the PSNR range is the run's (5.01-5.5 dB here), not a fixed "about 8-9 dB"
    assert "DLG PSNR 5.0-5.5 dB" in notes[0] and "8-9 dB" not in notes[0]
    t1 = "\n".join(lines)
    assert "| verdict |" in t1 and "balanced attacker accuracy" in t1 and "chance is 50.0%" in t1


def test_pgsl_fig3_sentences_follow_the_sweep(tmp_path: Path) -> None:
    import shieldsplit.experiments.reproduce.pgsl as pgsl

    # as on the MNIST page: recovery makes the images worse and the minimum is inside
    sweep = {"mse_attacked": 0.001, "attacked_accuracy": 0.5, "rows": [
        {"mu": mu, "mse_recovered": m, "accuracy_on_recovered": 0.5}
        for mu, m in ((0.05, 0.004), (0.15, 0.003), (0.25, 0.005))]}
    lines, notes = pgsl.fig3(_context(tmp_path, {"fig3 mu sweep": sweep}, seeds=1), None)  # type: ignore[arg-type]
    text = "\n".join([*lines, *notes])
    assert "lowest at mu = 0.15" in text and "is not monotonic in mu" in text
    assert "makes the images worse" in text
    assert "grows with mu" not in text and "minimum is at mu = 0.05" not in text
    sweep["rows"] = [{"mu": mu, "mse_recovered": m, "accuracy_on_recovered": 0.5}
                     for mu, m in ((0.05, 0.0001), (0.15, 0.0002), (0.25, 0.0003))]
    _, notes = pgsl.fig3(_context(tmp_path / "b", {"fig3 mu sweep": sweep}, seeds=1), None)  # type: ignore[arg-type]
    assert "lowest at mu = 0.05 and rises monotonically" in notes[0]
    assert "lowers MSE below the attacked images' (0.00100) at every mu" in notes[0]


def test_pgsl_table2_notes_follow_the_accuracies() -> None:
    import shieldsplit.experiments.reproduce.pgsl as pgsl

    kw: dict[str, Any] = {"majority": 0.731, "rebuilt": 16, "paper_jsma": "46.3"}
    notes = pgsl.table2_notes({"FGSM": 0.7, "BIM": 0.9}, {"DLG": 0.646, "iDLG": 0.8},
                              plain=0.8, attacked_stream=0.5, **kw,
                              stuck={"DLG": "scores exactly the majority rate (31/48)"})
    assert "on BIM (90.0%)" in notes[0] and "FGSM" not in notes[0]
    assert "1 of 2 networks are stuck: DLG scores exactly" in notes[1]
    assert "scores 50.0%, -30.0 points" in notes[2]
    notes = pgsl.table2_notes({"FGSM": 0.7}, {"DLG": 0.9}, plain=0.8, attacked_stream=0.79,
                              **kw)
    assert "No attacked-image row that learned scores above" in notes[0]
    assert "0 of 1 networks are stuck" in notes[1]
    # a stuck attacked-image row is no evidence of a learned feature, however high
    notes = pgsl.table2_notes({"BIM": 0.9}, {}, plain=0.8, attacked_stream=0.79, **kw,
                              stuck={"BIM": "scores exactly the majority rate"})
    assert "on BIM (90.0%)" not in notes[0] and "1 of 1 attacked-image networks" in notes[0]


def test_frontier_page_reads_the_verdicts() -> None:
    import sys

    from shieldsplit.compare.frontier import CompareTable

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import frontier

    def table(none_verdict: str, latent_bal: float) -> CompareTable:
        def row(name: str, acc: float, mse: float, bal: float, verdict: str) -> Any:
            return _run(name, {}, acc, {frontier.FEDAVG: _attack(
                frontier.FEDAVG, mse=mse, psnr=6.0, balanced=bal, verdict=verdict)})
        return CompareTable(created="now", dataset="d", model="m", cut=2, budget="quick",
                            seed=0, epochs=1, attacks=[frontier.FEDAVG], victims=8, rows=[
                                row("none", 0.8, 0.01, 0.9, none_verdict),
                                row("dpsgd", 0.7, 0.05, 0.8, "leaks"),
                                row("latent-fixed", 0.72, 0.09, latent_bal, "leaks")])

    rows = frontier.matched(table("leaks", 0.6), "dpsgd", frontier.FEDAVG)
    assert [label for _, label in rows] == ["inconclusive"]  # one seed: MSE spread unknown
    # accuracy clearly up, but on one seed: a single-seed pair never decides
    rows = frontier.matched(table("leaks", 0.95), "dpsgd", frontier.FEDAVG)
    assert [label for _, label in rows] == ["inconclusive"] and "one seed" in rows[0][0]
    rows = frontier.matched(table("inconclusive", 0.6), "dpsgd", frontier.FEDAVG)
    assert [label for _, label in rows] == ["inconclusive"]
    assert "does not leak on the undefended run" in rows[0][0]
    text = "\n".join(frontier.reading(table("inconclusive", 0.6)))
    assert "not shown to leak undefended" in text and "majority-class rate 73.1%" in text
    assert "leaks images on the undefended run" in "\n".join(
        frontier.reading(table("leaks", 0.6)))


def test_one_class_victims_are_marked_and_chance_is_stated() -> None:
    from shieldsplit.experiments.reproduce.reading import balanced_cell, chance_sentence

    two = _attack("a", mse=0.1, psnr=6.0, balanced=0.2, verdict="inconclusive")
    assert two.flipped and balanced_cell([two]) == "20.0% **flipped**"
    one = two.model_copy(update={"balanced_accuracy": 1.0, "evidence": two.evidence.model_copy(
        update={"chance": 1.0, "balanced_low": 1.0, "balanced_high": 1.0})})
    assert balanced_cell([one]) == "100.0% *one class*"
    text = chance_sentence([two, one])
    assert "chance is 50.0%" in text and "majority-class rate is 73.1%" in text
    assert "1 of the 2 scored runs here are flipped" in text
    assert "In 1 of the 2 runs the victims hold a single class" in text


def test_frontier_page_renders_from_a_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            ) -> None:
    import sys

    from shieldsplit.compare.frontier import CompareTable

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import frontier

    def row(name: str, acc: float, bal: float, verdict: str) -> Any:
        return _run(name, {}, acc, {a: _attack(a, mse=0.1, psnr=6.0, balanced=bal,
                                               verdict=verdict)
                                    for a in (frontier.FEDAVG, frontier.BLACK_BOX)})

    table = CompareTable(created="now", dataset="digits", model="m", cut=2, budget="quick",
                         seed=0, epochs=1, attacks=[frontier.FEDAVG, frontier.BLACK_BOX],
                         victims=8, rows=[row("none", 0.8, 0.9, "inconclusive"),
                                          row("dpsgd", 0.7, 0.2, "inconclusive"),
                                          row("latent-fixed", 0.72, 0.6, "inconclusive")])
    monkeypatch.setattr(frontier.ss, "compare", lambda *a, **k: table)
    monkeypatch.setattr(sys, "argv", ["frontier.py", "--data", "digits", "--limit", "120",
                                      "--out", str(tmp_path)])
    frontier.main()
    text = (tmp_path / "frontier_digits.md").read_text()
    assert "; 8 victims)" in text and "is not shown to leak undefended" in text
    assert "20.0% **flipped**" in text  # DP-SGD's attacker accuracy is below chance
    assert "Of 2 matched pairs, the claim holds: 0, does not hold: 0, inconclusive: 2." in text


# --------------------------------------------------------------------------------------
# The ordering rules of issue 21: image claims need an image leak, 95% t-intervals across
# seeds, one seed never decides, stuck classifiers are left out, a page renders from its
# cells alone.

def test_seed_interval_is_the_student_t_interval_of_the_mean() -> None:
    import statistics

    from scipy import stats

    from shieldsplit.experiments.reproduce.reading import seed_interval

    for values in ([0.10, 0.11, 0.12], [1.0, 4.0], [0.2, 0.25, 0.21, 0.3, 0.22]):
        want = stats.t.interval(0.95, len(values) - 1, loc=statistics.mean(values),
                                scale=stats.sem(values))
        assert seed_interval(values) == pytest.approx(want, rel=1e-12)
    # wider than mean +- 1 sd: the old rule called these separated, the t-interval not
    lo, hi = seed_interval([0.10, 0.11, 0.12]) or (0.0, 0.0)
    assert lo < 0.10 - 0.01 and hi > 0.12 + 0.01
    assert seed_interval([0.5]) is None and seed_interval([]) is None


def test_one_seed_never_decides_an_ordering() -> None:
    import shieldsplit.experiments.reproduce.pgsl as pgsl

    control = [_attack("dlg", mse=0.1, psnr=10.0, balanced=0.5, verdict="leaks")] * 3
    mse = {("dlg", "undefended split"): [0.10, 0.11, 0.12], ("dlg", "far"): [0.9],
           ("dlg", "seeds"): [0.9, 0.91, 0.92]}
    rows = pgsl.ordering_rows({"dlg": control}, mse, {("dlg", "far"): True,
                                                      ("dlg", "seeds"): True})
    got = {r[1]: r[4:] for r in rows}
    assert got["far"] == ("inconclusive", "MSE from one seed (no interval across seeds)")
    assert got["seeds"][0] == "holds"
    # the latent claim likewise: one seed per side never decides
    import shieldsplit.experiments.reproduce.latent as latent
    from shieldsplit.compare.frontier import match_by_accuracy

    runs = _headline_runs("leaks", [0.09, 0.1, 0.11], [0.55, 0.56, 0.57])
    opts = dict(latent.HEADLINE)
    pairs = match_by_accuracy([runs[latent._key("latent-fixed", opts["latent-fixed"], 0)]],
                              [runs[latent._key("dpsgd", opts["dpsgd"], 0)]], latent.ATTACK)
    none = [runs[latent._key("none", {}, 0)].leakage[latent.ATTACK]]
    label, why = latent.matched_claim(pairs, none, mse_gain=0.124, accuracy_drop=0.125)
    assert label == "inconclusive" and "one seed" in why


def test_control_that_leaked_labels_only_cannot_decide_an_image_claim(tmp_path: Path) -> None:
    import shieldsplit.experiments.reproduce.latent as latent
    import shieldsplit.experiments.reproduce.pgsl as pgsl

    mse = {"undefended split": [0.10, 0.11, 0.12], "JSMA +": [0.5],
           "[8] (Laplace noise) +": [0.115], "Ours (PGSL, SplitShield)": [0.2, 0.21, 0.22],
           "Ours (PGSL image steps)": [0.01, 0.011, 0.012]}
    cells = _t1_cells("leaks", mse)
    for key, cell in cells.items():  # the undefended split leaks labels only
        if key.startswith("table1 undefended split"):
            for attack in cell["leakage"]:
                cell["leakage"][attack] = _attack(attack, mse=0.1, psnr=5.1, balanced=0.5,
                                                  verdict="leaks", leak="labels"
                                                  ).model_dump(mode="json")
    lines, notes = pgsl.table1(_context(tmp_path, cells, seeds=3))
    text = "\n".join(lines)
    # the rule still calls a label leak a leak ...
    assert "| DLG | undefended split | 0.1000 ± 0.0000 | 5.10 ± 0.00 | 50.0% ± 0.0% | leaks 3/3" \
        in text
    got = _orderings(lines)  # ... but it orders nothing by MSE, not even clear separations
    assert got[("DLG", "Ours (PGSL, SplitShield)")] == "inconclusive"
    assert got[("DLG", "Ours (PGSL image steps)")] == "inconclusive"
    assert "labels or the class only, not images (3 of 3 runs)" in text
    assert "re-identified victims in 0 of 3" in text and "ordering rows read" in notes[0]
    # the latent claim: clearly better than both baselines, but the control leaked labels
    runs = _headline_runs("leaks", [0.09, 0.1, 0.11], [0.55, 0.56, 0.57])
    for s in (0, 1, 2):
        runs[latent._key("none", {}, s)].leakage[latent.ATTACK] = _attack(
            latent.ATTACK, mse=0.01, psnr=20.0, balanced=0.9, verdict="leaks", leak="labels")
    lines = latent._headline(_context(tmp_path / "l", {}, seeds=3), runs)
    assert _claims(lines) == {"dpsgd": "inconclusive", "bido": "inconclusive"}
    assert "labels or the class only" in "\n".join(lines)


def test_stuck_rows_are_reported_and_left_out(tmp_path: Path) -> None:
    import shieldsplit.experiments.reproduce.latent as latent
    import shieldsplit.experiments.reproduce.pgsl as pgsl
    from shieldsplit.experiments.reproduce.reading import stuck_reason

    # the exact subset: 31 of the first 48 labels are the majority class; the whole split's
    # majority rate (here 83/100) is not what a network tested on those 48 can score
    labels = [0] * 17 + [1] * 31
    assert "31/48 = 64.6%" in stuck_reason(31 / 48, labels, 2)
    assert stuck_reason(32 / 48, labels, 2) == ""
    assert "below chance" in stuck_reason(3 / 48, list(range(10)) * 5, 10)
    assert stuck_reason(0.2, list(range(10)) * 5, 10) == ""
    # Table II flags the stuck rebuilt-image rows on the page, with the subset's rate
    cells = {f"table2 adversarial {n}": {"accuracy": 0.9, "success_rate": 1.0, "l2": 1.0,
                                         "l0": 0.1, "linf": 0.1} for n in pgsl.ADVERSARIES}
    cells |= {f"table2 rebuilt {n}": {"accuracy": a, "images": 48, "mse_test": 0.01}
              for n, a in (("dlg", 31 / 48), ("idlg", 31 / 48), ("gan-prior", 40 / 48))}
    cells |= {f"table2 streams seed={s}": {k: 0.8 for k in (
        "plain", "recovered", "fused", "attacked", "decision")} for s in (0, 1)}
    lines, notes = pgsl.table2(_context(tmp_path, cells, seeds=2), None)  # type: ignore[arg-type]
    text = "\n".join(lines)
    assert text.count("**stuck**: scores exactly the majority rate of the 48 images") == 2
    assert "2 of 3 networks are stuck" in notes[1] and "(31/48 = 64.6%)" in notes[1]
    # an ordering with a stuck setting is left out, saying why
    control = [_attack("dlg", mse=0.1, psnr=10.0, balanced=0.5, verdict="leaks")] * 3
    rows = pgsl.ordering_rows({"dlg": control},
                              {("dlg", "undefended split"): [0.10, 0.11, 0.12],
                               ("dlg", "x"): [0.9, 0.91, 0.92]}, {("dlg", "x"): True},
                              stuck={"x": "its client classifier is stuck"})
    assert rows[0][4:] == ("inconclusive", "excluded: its client classifier is stuck")
    # the latent claim leaves out pairs whose baseline is a one-class classifier
    runs = _headline_runs("leaks", [0.09, 0.1, 0.11], [0.55, 0.56, 0.57])
    for s in (0, 1, 2):
        key = latent._key("dpsgd", dict(latent.HEADLINE)["dpsgd"], s)
        runs[key] = runs[key].model_copy(update={"accuracy": MAJORITY, "balanced_accuracy": 0.5})
    claims = _claims(latent._headline(_context(tmp_path / "l", {}, seeds=3), runs))
    assert claims == {"dpsgd": "inconclusive", "bido": "holds"}


def test_render_reads_cells_only_and_never_computes(tmp_path: Path) -> None:
    path = tmp_path / "cells.json"
    store = CellStore(path, fingerprint={"data": "d", "audit_schema": 2})
    store.run("a", lambda: 1)
    store.record_run(finished="2026-12-02T01:07:29+00:00", seconds=60.0, computed=1)
    before = path.read_bytes()
    # other code versions may be read (and are stated), other settings never
    ro = CellStore(path, fingerprint={"data": "d", "audit_schema": 3}, read_only=True,
                   versions=("audit_schema",))
    assert ro.version_changes == {"audit_schema": (2, 3)}
    assert ro.run("a", lambda: 1 / 0) == 1
    with pytest.raises(ConfigError, match="nothing is computed"):
        ro.run("b", lambda: pytest.fail("computed"))
    ro.record_run(finished="now", seconds=1.0, computed=1)
    assert path.read_bytes() == before
    with pytest.raises(ConfigError):
        CellStore(path, fingerprint={"data": "other", "audit_schema": 3}, read_only=True,
                  versions=("audit_schema",))
    with pytest.raises(ConfigError, match="missing"):
        CellStore(tmp_path / "none.json", fingerprint={}, read_only=True)
    # files written before the module moved carry its earlier format name
    saved = json.loads(before)
    saved["format"] = "shieldsplit.reproduce.cells/1"
    path.write_text(json.dumps(saved))
    assert CellStore(path, fingerprint={"data": "d", "audit_schema": 2}).run("a", int) == 1
    # the page words what the file records, not more
    text = repro.runs_sentence(ro.runs, 3)
    assert "computed 1 of the 3 cells in 1.0 min" in text and "the other 2" in text


def test_render_with_a_missing_cell_fails_without_computing(fake: FakePaper,
                                                             tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        reproduce(FAKE, data_root=tmp_path / "unused", out=tmp_path, seed=3, progress=False,
                  render=True)
    assert fake.calls == []
