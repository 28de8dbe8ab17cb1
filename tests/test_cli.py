"""The command line: the demo job, its JSON, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shieldsplit.cli import app

runner = CliRunner()


def test_demo_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    result = runner.invoke(
        app, ["demo", "--epochs", "1", "--limit", "120", "--quiet", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "decision fusion" in result.output and "plain (undefended)" in result.output
    report = json.loads(out.read_text())
    assert set(report["shield_test_accuracy"]) == {"attacked", "fused", "recovered", "decision"}
    assert 0.0 <= report["plain_test_accuracy"] <= 1.0
    assert "split-black-box" in result.output and "adaptive-split" in result.output
    plain = {r["attack"]: r for r in report["plain_audit"]["results"]}
    shield = {r["attack"]: r for r in report["shield_audit"]["results"]}
    assert set(plain) == {"split-black-box", "split-white-box", "gan-prior"}
    assert set(shield) == set(plain) | {"adaptive-split"}
    assert all(r["status"] == "ok" for r in [*plain.values(), *shield.values()])


def test_demo_missing_file_names_it_and_where_to_put_it(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["demo", "--data", "breastmnist", "--data-root", str(tmp_path), "--quiet"]
    )
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "breastmnist.npz" in text and str(tmp_path) in text and "Fix:" in text


def test_audit_unknown_model_factory() -> None:
    result = runner.invoke(app, ["audit", "--model", "no_such_module:factory", "--quiet"])
    assert result.exit_code == 2
    assert "no_such_module" in " ".join(result.output.split())


def test_audit_rejects_weights_of_another_model(tmp_path: Path) -> None:
    import torch

    bad = tmp_path / "w.pt"
    torch.save({"not": torch.zeros(1)}, bad)
    result = runner.invoke(
        app, ["audit", "--model", "pgsl-net", "--weights", str(bad), "--quiet"]
    )
    assert result.exit_code == 2
    assert "state_dict" in " ".join(result.output.split())


def test_audit_passes_attacks_and_victims_to_the_auditor(monkeypatch: pytest.MonkeyPatch) -> None:
    import shieldsplit.auditor as auditor
    from shieldsplit.errors import StateError

    seen: dict[str, object] = {}

    def spy(net: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise StateError.build(what="spy", expected="-", received="-", fix="-")

    monkeypatch.setattr(auditor, "audit", spy)
    result = runner.invoke(app, ["audit", "--model", "pgsl-net", "--attacks",
                                 "split-black-box, idlg", "--victims", "8", "--quiet"])
    assert result.exit_code == 2
    assert seen["attacks"] == ["split-black-box", "idlg"] and seen["victims"] == 8


def test_audit_unknown_attack_lists_the_valid_ones() -> None:
    result = runner.invoke(app, ["audit", "--model", "pgsl-net", "--attacks", "nope", "--quiet"])
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "'nope'" in out and "split-black-box" in out
