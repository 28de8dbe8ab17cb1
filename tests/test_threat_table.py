"""The threat-model table of docs/audit.md is the registry's declarations, rendered."""

from __future__ import annotations

from pathlib import Path

from shieldsplit.attacks import attack_class, available_attacks
from shieldsplit.attacks.catalog import render_into, threat_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "audit.md"


def test_the_docs_table_matches_the_declarations() -> None:
    text = DOC.read_text()
    assert render_into(text) == text, (
        "docs/audit.md's threat-model table drifted from the attacks' declarations: run "
        "`python -m shieldsplit.attacks.catalog` from the repository root")


def test_every_registered_attack_has_a_row_that_names_its_threat_model() -> None:
    table = threat_table()
    for name in available_attacks():
        cls = attack_class(name)
        row = next(r for r in table.splitlines() if r.startswith(f"| `{name}` |"))
        assert f"| {cls.position()} | {cls.server} |" in row
        assert cls.threat_words().startswith(
            {"split": "split-learning server", "federated": "federated server",
             "query": "outsider", "model": "holder"}[cls.position()])
