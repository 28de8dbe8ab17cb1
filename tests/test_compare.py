"""compare(): same split, same attacks, a typed table, HTML and JSON, clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import shieldsplit as ss
from shieldsplit.cli import app
from shieldsplit.compare.frontier import CompareTable, compare
from shieldsplit.data import load_dataset
from shieldsplit.errors import ConfigError, InputShapeError

KW = dict(epochs=1, attacks=["split-black-box", "idlg"], victims=8, progress=False,
          membership=False)  # membership: its own test below (and the same-seed one)


@pytest.fixture(scope="module")
def digits() -> ss.data.ImageDataset:  # type: ignore[name-defined]
    return load_dataset("digits", seed=0, limit=100)


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return ss.PGSLNet(num_classes=10, image_size=8, width=8, hidden=16)


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    import shieldsplit.attacks.gradient as gradient
    import shieldsplit.attacks.split as split

    monkeypatch.setitem(split.DECODER_EPOCHS, "quick", 2)
    monkeypatch.setattr(gradient.IDLG, "budgets", {"quick": (5, 1), "standard": (5, 1),
                                                   "thorough": (5, 1)})


def strip(d: object) -> object:
    if isinstance(d, dict):
        return {k: strip(v) for k, v in d.items()
                if k not in ("seconds", "train_seconds", "reference_seconds", "created",
                             "machine")}
    if isinstance(d, list):
        return [strip(v) for v in d]
    return d


def test_table_rows_sweeps_and_not_applicable(digits, tmp_path: Path) -> None:
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = compare(model, data=digits, defenses=["none", "pgsl", "laplace"],
                    sweeps={"laplace": [0.2, 2.0]}, seed=0, **KW)
    assert [(r.defense, r.strength_value) for r in table.rows] == [
        ("none", None), ("pgsl", None), ("laplace", 0.2), ("laplace", 2.0)]
    pgsl = table.rows[1]
    assert pgsl.leakage["idlg"].status == "n/a"  # split learning sends no weight updates
    assert pgsl.leakage["split-black-box"].status == "ok"
    for r in table.rows:
        assert 0.0 <= r.accuracy <= 1.0 and 0.0 <= r.f1 <= 1.0
    # more noise on the wire: the black-box decoder rebuilds less
    weak, strong = table.rows[2], table.rows[3]
    assert strong.leakage["split-black-box"].mse > weak.leakage["split-black-box"].mse
    for k, v in model.state_dict().items():  # the user's model is untouched
        torch.testing.assert_close(v, before[k])
    table.to_json(tmp_path / "t.json")
    again = CompareTable.model_validate_json((tmp_path / "t.json").read_text())
    assert again == table
    table.save_html(tmp_path / "t.html")
    page = (tmp_path / "t.html").read_text()
    assert "data:image/png;base64" in page and "laplace scale=2" in page
    assert "laplace" in table.summary()


def test_same_seed_same_table(digits) -> None:
    kw = {**KW, "membership": True}
    a = compare(net(), data=digits, defenses=["none", "latent-fixed"], seed=3, **kw)
    b = compare(net(), data=digits, defenses=["none", "latent-fixed"], seed=3, **kw)
    assert a.rows[1].membership is not None
    assert strip(a.model_dump()) == strip(b.model_dump())


def test_a_strengthless_sweep_fails_before_any_training(digits, monkeypatch) -> None:
    cmp = sys.modules["shieldsplit.compare.frontier"]  # the package re-exports compare() by name
    trained: list[str] = []
    monkeypatch.setattr(cmp, "run_defense", lambda model, data, name, **kw: trained.append(name))
    with pytest.raises(ConfigError, match="strength"):
        compare(net(), data=digits, defenses=["laplace", "none"],
                sweeps={"laplace": [1.0], "none": [1.0]}, **KW)
    assert trained == []


def test_bad_names_are_typed_errors(digits) -> None:
    with pytest.raises(ConfigError, match="latent-fixed"):  # the message lists valid names
        compare(net(), data=digits, defenses=["latent"], **KW)
    with pytest.raises(ConfigError, match="defences") as err:
        compare(net(), data=digits, defenses=["none"], sweeps={"laplace": [1.0]}, **KW)
    assert err.value.what == "sweeps"
    with pytest.raises(ConfigError, match="strength") as err:
        compare(net(), data=digits, defenses=["none"], sweeps={"none": [1.0]}, **KW)
    assert err.value.what == "sweeps"
    with pytest.raises(InputShapeError, match="ImageDataset") as shape_err:
        compare(net(), data="digits", defenses=["none"], **KW)  # not a form of docs/data.md
    assert shape_err.value.what == "data"


def test_cli_compare_writes_html_and_json(tmp_path: Path) -> None:
    out, js = tmp_path / "f.html", tmp_path / "f.json"
    result = CliRunner().invoke(app, [
        "compare", "--defenses", "none,laplace", "--sweep", "laplace=0.5,1",
        "--attacks", "split-black-box", "--epochs", "1", "--limit", "100", "--victims", "8",
        "--quiet", "--no-membership", "--out", str(out), "--json", str(js)])
    assert result.exit_code == 0, result.output
    rows = json.loads(js.read_text())["rows"]
    assert [r["defense"] for r in rows] == ["none", "laplace", "laplace"]
    assert all(r["membership"] is None for r in rows)
    assert out.exists()


def test_cli_compare_bad_sweep() -> None:
    result = CliRunner().invoke(app, ["compare", "--sweep", "laplace=abc", "--quiet"])
    assert result.exit_code == 2 and "--sweep" in result.output


class _FrozenBN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = net()
        for m in self.net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()  # frozen by the user inside a model left in train mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_compare_leaves_every_submodule_mode_and_weight_alone(digits) -> None:
    model = _FrozenBN()
    modes = {n: m.training for n, m in model.named_modules()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = compare(model, data=digits, defenses=["laplace"], seed=0,
                    **{**KW, "attacks": ["split-black-box"], "membership": True})
    assert [r.defense for r in table.rows] == ["none", "laplace"]  # the control runs first
    assert {n: m.training for n, m in model.named_modules()} == modes
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    # every defence's verdicts rest on the undefended run as its control
    laplace = table.rows[1].leakage["split-black-box"]
    assert laplace.control is not None and laplace.verdict is not None
    assert "Verdicts:" in table.summary()


def test_membership_column_cached_references_and_the_dp_bound(digits, monkeypatch,
                                                              tmp_path: Path) -> None:
    import shieldsplit.attacks.membership as mia
    from shieldsplit.functional.membership import dp_tpr_bound
    from shieldsplit.plots import roc_html

    mia.clear_reference_cache()
    trained: list[str | None] = []
    real = mia.references.train_recipe

    def counting(template, recipe, data, *, seed):  # type: ignore[no-untyped-def]
        trained.append(recipe.defense)
        return real(template, recipe, data, seed=seed)

    monkeypatch.setattr(mia.references, "train_recipe", counting)  # where train_cached looks
    table = compare(net(), data=digits, defenses=["dpsgd", "laplace"], seed=0,
                    **{**KW, "attacks": ["split-black-box"], "membership": True})
    assert [r.defense for r in table.rows] == ["none", "dpsgd", "laplace"]  # control first
    for r in table.rows:
        m = r.membership
        assert m is not None and m.members == 8 and m.nonmembers == 8
        assert m.recipe.defense == r.defense and m.recipe.batch_size == 64
        assert r.membership_cell().startswith("AUC ")
    # two reference models per defence recipe; the overfitted control and its two reference
    # models are trained once per architecture for the whole comparison (cached by seed and
    # recipe): laplace reuses the undefended run's, DP-SGD's GroupNorm network has its own
    assert trained == ["none"] * 2 + [None] * 3 + ["dpsgd"] * 2 + [None] * 3 + ["laplace"] * 2
    dp = table.rows[1]
    assert dp.membership is not None and dp.membership.epsilon == dp.epsilon
    bound = dp.membership.dp_tpr_bound
    assert bound is not None and bound["1%"] == pytest.approx(
        float(dp_tpr_bound([0.01], dp.epsilon, dp.delta or 0.0)[0]))
    text = table.summary()
    assert "membership" in text and f"epsilon {dp.epsilon:.3g}" in text
    assert "allows TPR <=" in text and table.rows[2].membership_cell() in text
    table.save_html(tmp_path / "m.html")
    page = (tmp_path / "m.html").read_text()
    assert page.count("ROC (log-log)") == 1 and "TPR bound from epsilon" in page
    fallback = roc_html([c for c in __import__("shieldsplit.compare.frontier", fromlist=["x"])
                         .membership_curves(table)], use_matplotlib=False)
    assert "bound at epsilon" in fallback and fallback.count("<tr>") == 13
    assert CompareTable.model_validate_json(table.model_dump_json()) == table
