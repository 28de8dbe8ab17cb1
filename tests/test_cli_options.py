"""Issue 26: every option of every command is checked before any work, a mistake is one
line whose fix names the nearest valid value, and the output keeps its verdicts in a log.

The sweep runs in a fresh interpreter, so "before torch is imported" is observable; the
checks that need a component's ``Config`` (an option's value) run in this process, with
the data loading and the work replaced by spies that must not be reached.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from shieldsplit.cli import app

runner = CliRunner()


def one_error_line(result: Any) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return str(lines[0])


# ------------------------------------------------- the lists the checks read without torch


def test_the_built_in_choices_are_the_registries() -> None:
    from typing import get_args

    from shieldsplit.audit.budgets import VICTIMS
    from shieldsplit.cli import choices
    from shieldsplit.cli.loading import build_model
    from shieldsplit.cutting import list_cut_points
    from shieldsplit.functional.partition import parse_partition
    from shieldsplit.settings import Budget

    for name in ("ATTACKS", "DEFENSES", "FEDERATED_DEFENSES", "DATASETS", "PAPERS",
                 "REPRO_BUDGETS", "MODELS", "TOLERANCE_FIELDS"):
        c = getattr(choices, name)
        assert sorted(c.builtin) == sorted(c.read()), name  # a drift fails here
        assert c.module in sys.modules  # loaded: names() asks the registry itself
    assert set(choices.MODEL_CUTS) == set(choices.MODELS.builtin)
    for model, cuts in choices.MODEL_CUTS.items():
        for shape in ({"image_size": 8}, {"image_size": 28, "in_channels": 3, "num_classes": 10}):
            net = build_model(model, **shape)
            assert tuple(p.index for p in list_cut_points(net)) == cuts, (model, shape)
    assert choices.budget_names() == list(VICTIMS) == list(get_args(Budget))
    assert [e.partition(":")[0] for e in choices.PARTITION_EXAMPLES] == list(
        choices.PARTITION_KINDS)
    for example in choices.PARTITION_EXAMPLES:
        parse_partition(example)


# --------------------------------------- one bad value per option, in a fresh interpreter


def sweep_cases(tmp: Path) -> list[tuple[list[str], str]]:
    """(arguments, what the one error line must hold) for every option of every command."""
    folder, missing = str(tmp), str(tmp / "no-such-folder")
    a_file = tmp / "a-file"
    a_file.write_text("")
    model = ["--model", "pgsl-net"]
    common = {  # the options several commands share
        "--data": (["--data", "digts"], "pass --data digits"),
        "--data-root": (["--data-root", missing], "no-such-folder"),
        "--seed": (["--seed", "-1"], "--seed"),
        "--epochs": (["--epochs", "0"], "--epochs"),
        "--batch-size": (["--batch-size", "0"], "--batch-size"),
        "--limit": (["--limit", "0"], "--limit"),
        "--victims": (["--victims", "0"], "--victims"),
        "--model": (["--model", "pgsl_net"], "pass --model pgsl-net"),
        "--weights": (["--weights", str(tmp / "w.pt")], "w.pt"),
        "--out": (["--out", folder], "a folder"),
        "--json": (["--json", folder], "a folder"),
    }

    def shared(*names: str) -> list[tuple[list[str], str]]:
        return [common[n] for n in names]

    per_command: dict[tuple[str, ...], list[tuple[list[str], str]]] = {
        ("demo",): [
            *shared("--data", "--data-root", "--epochs", "--batch-size", "--seed", "--limit",
                    "--json"),
            (["--cut", "99"], "pass --cut 8"),
        ],
        ("audit", *model): [
            *shared("--model", "--weights", "--data", "--data-root", "--seed", "--victims",
                    "--out", "--json"),
            (["--cut", "9"], "pass --cut 8"),
            (["--budget", "quik"], "pass --budget quick"),
            (["--attacks", "split-blak-box"], "pass --attacks split-black-box"),
            (["--heldout", "tset"], "pass --heldout test"),
            (["--heldout", str(tmp / "held.npz")], "held.npz (no such file)"),
            (["--attack-option", "idgl.iterations=3"], "pass --attack-option idlg"),
            (["--tolerance", "reidentifcation=0.1"], "pass --tolerance reidentification"),
        ],
        ("compare",): [
            *shared("--model", "--weights", "--data", "--data-root", "--epochs", "--batch-size",
                    "--victims", "--limit", "--seed", "--out", "--json"),
            (["--defenses", "none,lapalce"], "pass --defenses laplace"),
            (["--sweep", "laplace=x"], "laplace=x"),
            (["--sweep", "lapalce=0.1"], "pass --sweep laplace"),
            (["--option", "lapalce.scale=0.2"], "pass --option laplace"),
            (["--attacks", "idgl"], "pass --attacks idlg"),
            (["--cut", "99"], "pass --cut 8"),
            (["--budget", "thorogh"], "pass --budget thorough"),
        ],
        ("federate",): [
            *shared("--data", "--data-root", "--batch-size", "--limit", "--seed", "--out",
                    "--json"),
            (["--model", "small_convnet"], "pass --model small-convnet"),
            (["--defense", "lapalce"], "pass --defense laplace"),
            (["--clients", "0"], "--clients"),
            (["--rounds", "0"], "--rounds"),
            (["--partition", "dirichlet0.5"], "pass --partition dirichlet:0.5"),
            (["--local-epochs", "0"], "--local-epochs"),
            (["--cut", "5"], "pass --cut 3"),  # the default model: small-convnet
            (["--audit", "quik"], "pass --audit quick"),
        ],
        ("split-serve",): [
            *shared("--model", "--seed"),
            (["--in-channels", "0"], "--in-channels"),
            (["--image-size", "0"], "--image-size"),
            (["--num-classes", "1"], "--num-classes"),
            (["--cut", "9"], "pass --cut 8"),
            (["--port", "70000"], "--port"),
            (["--connections", "-1"], "--connections"),
            (["--max-message-bytes", "0"], "--max-message-bytes"),
            (["--frame-timeout", "0"], "--frame-timeout"),
            (["--report", folder], "a folder"),
            (["--save", folder], "a folder"),
        ],
        ("split-client",): [
            *shared("--model", "--data", "--data-root", "--limit", "--epochs", "--batch-size",
                    "--seed", "--json"),
            (["--cut", "9"], "pass --cut 8"),
            (["--port", "0"], "--port"),
            (["--frame-timeout", "0"], "--frame-timeout"),
            (["--save", folder], "a folder"),
        ],
        ("reproduce", "pgsl"): [
            (["--data", "breastmnst"], "pass --data breastmnist"),
            (["--data", "digits"], "'digits'"),  # no paper table on digits
            *shared("--data-root", "--seed"),
            (["--budget", "ful"], "pass --budget full"),
            (["--out", str(a_file)], "a-file"),
        ],
        ("options",): [(["--jsn"], "--jsn")],
    }
    cases = [([*head, *args], expected) for head, bad in per_command.items()
             for args, expected in bad]
    cases += [(["reproduce", "pgls"], "pass reproduce pgsl"), (["audit"], "--model"),
              (["bogus"], "bogus"), (["demo", "--bogus"], "--bogus")]
    return cases


SWEEP = """
import json, sys, time
from typer.testing import CliRunner
from shieldsplit.cli import app

runner = CliRunner()
seen = []
for args in json.loads(sys.stdin.read()):
    start = time.process_time()
    result = runner.invoke(app, args)
    seen.append({"args": args, "code": result.exit_code, "stderr": result.stderr,
                 "seconds": time.process_time() - start, "torch": "torch" in sys.modules})
print(json.dumps(seen))
"""


def test_every_bad_option_fails_at_once_in_one_line_naming_the_fix(tmp_path: Path) -> None:
    cases = sweep_cases(tmp_path)
    done = subprocess.run([sys.executable, "-c", SWEEP, ], input=json.dumps(
        [["--help"], *[args for args, _ in cases]]), capture_output=True, text=True,
        timeout=300, env={**os.environ, "SHIELDSPLIT_SMOKE": "0"})
    assert done.returncode == 0, done.stderr
    help_run, *runs = json.loads(done.stdout)
    assert help_run["code"] == 0 and not help_run["torch"]
    for run, (args, expected) in zip(runs, cases, strict=True):
        assert run["code"] == 2, (args, run)
        lines = [line for line in run["stderr"].splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, run["stderr"])
        assert expected in lines[0], (args, lines[0])
        assert not run["torch"], f"{args} imported torch before failing: {lines[0]}"
        assert run["seconds"] <= 2 * help_run["seconds"] + 1.5, (args, run["seconds"])


def cpu_seconds(*args: str) -> tuple[float, str]:
    """Run ``python -m shieldsplit ARGS`` to its end; its CPU time (user + system: the
    machine's load does not move it, as it moves the wall time) and its stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "shieldsplit", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "SHIELDSPLIT_SMOKE": "0"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert done.returncode == (0 if "--help" in args else 2), (args, done.stderr)
    return spent, done.stderr


def test_a_bad_option_costs_no_more_than_the_help(tmp_path: Path) -> None:
    # one per command, as the issue saw them: each used to build a model or train first
    bad = [["demo", "--cut", "99"], ["audit", "--model", "pgsl-net", "--data", "breastmnst"],
           ["audit", "--model", "pgsl-net", "--cut", "9"], ["compare", "--budget", "quik"],
           ["federate", "--defense", "pgls"], ["split-serve", "--cut", "9"],
           ["split-client", "--model", "pgsl_net"], ["reproduce", "pgsl", "--budget", "ful"],
           ["options", "--jsn"]]
    baseline = cpu_seconds("--help")[0]
    for args in bad:
        spent, stderr = cpu_seconds(*args)
        assert len(stderr.strip().splitlines()) == 1, stderr
        assert spent <= 2 * baseline + 1.5, (args, spent, baseline)


# ------------------------------ the checks that need a Config: still before data or model


class Refuse:
    """Stands in for the data loading or the work: reaching it fails the test."""

    def __call__(self, *args: object, **kwargs: object) -> object:
        raise AssertionError("reached past the option checks")


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    from shieldsplit.cli import audit, compare, federate, split

    for module in (audit, compare, federate, split):
        monkeypatch.setattr(module, "load_data", Refuse())


def test_bad_values_fail_before_any_data_or_model(no_work: None) -> None:
    cases = {
        ("audit", "--model", "pgsl-net", "--attack-option", "idlg.iterations=0"):
            "pass iterations=1 or more",
        ("audit", "--model", "pgsl-net", "--attack-option", "idlg.iteration=5"):
            "rename it to 'iterations'",
        ("audit", "--model", "pgsl-net", "--tolerance", "reidentification=2"): "0.1",
        ("compare", "--defenses", "none,laplace", "--option", "laplace.scale=-1"):
            "pass scale=",
        ("compare", "--defenses", "none,laplace", "--option", "laplace.scal=1"):
            "rename it to 'scale'",
        ("federate", "--partition", "dirichlet:-1"): "dirichlet",
    }
    for args, expected in cases.items():
        result = runner.invoke(app, [*args, "--quiet"])
        assert result.exit_code == 2, (args, result.output)
        line = one_error_line(result)
        assert expected in line and "=None" not in line, (args, line)


def test_a_factory_models_cut_is_checked_before_any_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shieldsplit.audit import auditor

    (tmp_path / "issue26_factory.py").write_text(textwrap.dedent("""
        from torch import nn
        def make(in_channels=1, num_classes=2, image_size=8):
            return nn.Sequential(nn.Flatten(),
                                 nn.Linear(in_channels * image_size ** 2, 16), nn.ReLU(),
                                 nn.Linear(16, num_classes))
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(auditor, "audit", Refuse())
    result = runner.invoke(app, ["audit", "--model", "issue26_factory:make", "--cut", "5",
                                 "--quiet"])
    assert result.exit_code == 2
    assert "'5'" not in (line := one_error_line(result)) and "1 (after" in line, line


# -------------------------------------------------------------------- audit --heldout


@pytest.fixture
def audit_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    from shieldsplit.audit import auditor

    calls: list[dict[str, Any]] = []

    class Report:
        complete = True
        membership = None
        membership_note = "membership inference not run: pass heldout="

        def summary(self) -> str:
            return f"Verdicts:\n- ({self.membership_note})"

        def to_json(self, path: object) -> None:
            raise AssertionError("no --json was asked for")

        save_html = to_json

    def fake(net: object, **kwargs: Any) -> Report:
        calls.append(kwargs)
        return Report()

    monkeypatch.setattr(auditor, "audit", fake)
    return calls


def test_heldout_passes_a_split_or_a_file_to_the_membership_audit(
        tmp_path: Path, audit_calls: list[dict[str, Any]]) -> None:
    import torch

    from shieldsplit.data import ImageDataset
    from shieldsplit.datacontract import as_tensors

    x = np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32)
    y = np.arange(20) % 10
    np.savez(tmp_path / "held.npz", x=x, y=y)
    torch.save((torch.from_numpy(x), torch.from_numpy(y)), tmp_path / "held.pt")
    base = ["audit", "--model", "pgsl-net", "--quiet"]
    for heldout in ("auto", "val", "test", str(tmp_path / "held.npz"),
                    str(tmp_path / "held.pt")):
        result = runner.invoke(app, [*base, "--heldout", heldout])
        assert result.exit_code == 0, (heldout, result.output)
        call = audit_calls[-1]
        assert isinstance(call["data"], ImageDataset)
        if heldout == "auto":
            assert call["heldout"] == "auto"
        else:
            hx, hy = as_tensors(call["heldout"])
            assert hx.shape[1:] == (1, 8, 8) and len(hx) == len(hy) > 0, heldout
    assert len(hx) == 20 and torch.equal(hy, torch.from_numpy(y))
    # no --heldout: the note names the option that runs it, not a Python argument
    result = runner.invoke(app, base)
    assert audit_calls[-1]["heldout"] is None
    assert "--heldout auto" in result.stdout and "heldout=" not in result.stdout

    calls = len(audit_calls)
    torch.save({"images": torch.zeros(2)}, tmp_path / "bad.pt")
    (tmp_path / "bad.npz").write_text("not an archive")
    for bad, expected in (("bad.pt", "(x, y) pair"), ("bad.npz", "np.savez")):
        result = runner.invoke(app, [*base, "--heldout", str(tmp_path / bad)])
        assert result.exit_code == 2 and expected in one_error_line(result), bad
    assert len(audit_calls) == calls  # refused before the audit


# ------------------------------------------------- a log keeps every row and verdict whole


LONG = "split-black-box-with-a-name-longer-than-a-column"
SENTENCE = ("- [leaks] A split-learning server re-identifies patients and rebuilds images "
            f"with {LONG}: 8 of 8 victims picked out of a line-up of 89 images")


@pytest.fixture
def log_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # what rich assumes for a pipe


def fake(**attrs: Any) -> Any:
    from types import SimpleNamespace

    def unused(path: object, **kw: object) -> None:
        raise AssertionError("no output file was asked for")

    return SimpleNamespace(complete=True, membership=None, membership_note=None,
                           to_json=unused, save_html=unused, save_json=unused, **attrs)


def test_every_command_keeps_its_verdict_words_when_piped(
        monkeypatch: pytest.MonkeyPatch, log_width: None) -> None:
    import shieldsplit.experiments.demo as demo_module
    import shieldsplit.experiments.reproduce as repro
    from shieldsplit.adapters import flower
    from shieldsplit.audit import auditor
    from shieldsplit.compare import frontier

    text = f"Verdicts:\n{SENTENCE}\n- [no leakage found] [bold]x[/bold]"
    monkeypatch.setattr(auditor, "audit", lambda *a, **k: fake(summary=lambda: text))
    monkeypatch.setattr(frontier, "compare", lambda *a, **k: fake(summary=lambda: text))
    monkeypatch.setattr(flower, "simulate", lambda *a, **k: fake(table=lambda: text))
    monkeypatch.setattr(repro, "reproduce", lambda *a, **k: fake(
        markdown=text, page="p.md", computed=1, reused=0, seconds=60.0, plots=[]))
    monkeypatch.setattr(demo_module, "run_demo", lambda options: demo_report(options))
    monkeypatch.setattr(demo_module, "conclusion", lambda plain, shielded: "In short: [leaks]")
    runs = {
        "audit": ["audit", "--model", "pgsl-net"],
        "compare": ["compare", "--defenses", "none", "--limit", "60"],
        "federate": ["federate", "--limit", "60"],
        "reproduce": ["reproduce", "pgsl", "--data-root", str(Path.cwd())],
        "demo": ["demo"],
    }
    for name, args in runs.items():
        result = runner.invoke(app, [*args, "--quiet"])
        assert result.exit_code == 0, (name, result.output)
        lines = result.stdout.splitlines()
        if name == "demo":  # a table row: the whole name and its verdict on one line
            assert any(LONG in line and "[leaks]" in line for line in lines), result.stdout
            assert "plain: [leaks] " + SENTENCE in result.stdout
        else:
            assert SENTENCE in lines, (name, result.stdout)  # not wrapped at 80 columns
            assert "- [no leakage found] [bold]x[/bold]" in lines, name  # not markup


def demo_report(options: Any) -> Any:
    result = fake(attack=LONG, status="ok", psnr=16.6, ssim=0.787, balanced_accuracy=0.29,
                  flipped=False, verdict="[leaks]",
                  evidence=fake(identified=8, images=8))
    audited = fake(victims=8, baselines=[fake(psnr=14.3)], reference_balanced_accuracy=0.5,
                   chance=0.5, results=[result], verdicts=[fake(verdict="leaks",
                                                                sentence=SENTENCE)])
    return fake(options=options, dataset="digits [8x8]", plain_test_accuracy=0.9,
                shield_test_accuracy={"decision": 0.8}, seconds={"plain": 1.0,
                                                                  "splitshield": 2.0},
                plain_audit=audited, shield_audit=audited,
                model_dump_json=lambda **kw: "{}")


def test_the_options_tables_keep_every_name_whole(log_width: None) -> None:
    result = runner.invoke(app, ["options"])
    assert result.exit_code == 0
    rows = result.stdout.splitlines()
    for name in ("inverting-gradients-fedavg", "latent-learned", "split-black-box"):
        assert any(f" {name} " in row for row in rows), name


def test_help_keeps_the_bracketed_defaults() -> None:
    # "[default: ...]" written into a help text was read as a rich style tag and vanished
    result = runner.invoke(app, ["compare", "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.stdout.split())
    assert "every registered defence that one of --attacks can observe" in text
    assert "inverting-gradients-fedavg,split-black-box" in text
