"""``shieldsplit.harden``: the search, the confirmation, the words and the bad inputs.

The search's logic is tested against a fake audit step (monkeypatched
``evaluate_defense``: a verdict that is a known function of the knob), so the boundary
and the number of probes are exact; the real path runs once end to end.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

import shieldsplit as ss
from shieldsplit.audit.results import PositionVerdict
from shieldsplit.compare.cache import DefenseCache, train_defense
from shieldsplit.compare.frontier import Evaluation
from shieldsplit.compare.report import DefenseRun
from shieldsplit.data import load_dataset
from shieldsplit.defenses.base import create_defense
from shieldsplit.defenses.knob import Knob
from shieldsplit.errors import ConfigError
from shieldsplit.harden import run as harden_run
from shieldsplit.harden.search import bisect_knob


@pytest.fixture(scope="module")
def ds() -> Any:
    return load_dataset("digits", seed=0, limit=60)


@pytest.fixture(scope="module")
def net() -> Any:
    return ss.PGSLNet(num_classes=10, image_size=8, width=8, hidden=16)


class FakeAudit:
    """``evaluate_defense`` whose split verdict is *no leakage found* from ``boundary`` on
    (or where ``rule(name, scale, cut)`` says so), recording every call (defence, options,
    seed, which split scored utility) and, in ``audits``, each call's cut and the control
    it was audited against (an undefended run's report is ``("control", cut, seed)``)."""

    def __init__(self, boundary: float, *, stuck_from: float | None = None,
                 fail_seeds: tuple[int, ...] = (),
                 rule: Callable[[str, float, Any], bool] | None = None) -> None:
        self.boundary, self.stuck_from, self.fail_seeds = boundary, stuck_from, fail_seeds
        self.rule = rule
        self.calls: list[tuple[str, dict[str, Any], int, bool]] = []
        self.audits: list[tuple[str, Any, Any]] = []

    def __call__(self, model: Any, data: Any, name: str, options: Any, spec: Any,
                 control: Any, *, cache: Any = None) -> Evaluation:
        on_val = bool((data.x_test.shape == data.x_val.shape)
                      and (data.x_test == data.x_val).all())
        self.calls.append((name, dict(options), spec.seed, on_val))
        self.audits.append((name, spec.cut, control))
        value = float(options.get("scale", 0.0)) if name != "none" else 0.0
        meets = (value >= self.boundary if self.rule is None
                 else self.rule(name, value, spec.cut))
        safe = name != "none" and meets and spec.seed not in self.fail_seeds
        is_stuck = self.stuck_from is not None and value >= self.stuck_from
        verdict = PositionVerdict(position="split", verdict="no leakage found" if safe
                                  else "leaks", sentence="A split-learning server: "
                                  + ("nothing" if safe else "rebuilds images") + ".",
                                  attacks=["split-black-box"])
        bal = 0.9 - 0.05 * value
        run = DefenseRun(defense=name, options=dict(options), strength=None,
                         strength_value=None, accuracy=bal, balanced_accuracy=bal,
                         f1=bal - 0.01, train_seconds=0.0, leakage={}, verdicts=[verdict],
                         predicted_classes=1 if is_stuck else 10, majority_rate=0.1)
        report = ("control", spec.cut, spec.seed) if name == "none" else None
        return Evaluation(run, report, create_defense(name, model, cut=spec.cut,  # type: ignore[arg-type]
                                                      seed=spec.seed, **options))


def fake_harden(monkeypatch: pytest.MonkeyPatch, fake: FakeAudit, net: Any, ds: Any,
                **kw: Any) -> Any:
    monkeypatch.setattr(harden_run, "evaluate_defense", fake)
    kw.setdefault("cut_depth", False)  # the cut as a knob has its own tests
    return ss.harden(net, data=ds, defenses=kw.pop("defenses", ["laplace"]),
                     positions=["split-server"], epochs=1, progress=False, **kw)


def test_bisection_finds_the_boundary_in_the_expected_probes() -> None:
    knob = Knob(option="scale", low=0.01, high=10.0, scale="log")
    seen: list[float] = []

    def meets(v: float) -> bool:
        seen.append(v)
        return v >= 0.5

    trace = bisect_knob(knob, meets, bound=8)
    assert len(seen) == 8 and trace.monotone  # both ends, then 6 halvings of the log range
    assert seen[:2] == [10.0, 0.01]
    fails = max(v for v in seen if v < 0.5)
    assert trace.chosen is not None
    assert trace.chosen >= 0.5 and trace.chosen / fails < 1.12  # 3 decades / 2**6 in log
    # a boundary at the weak end: two probes; none reached: two probes
    assert len(bisect_knob(knob, lambda v: True, bound=8).probes) == 2
    assert bisect_knob(knob, lambda v: False, bound=8).chosen is None
    # a verdict that is not monotone over the probed points is said
    assert bisect_knob(knob, lambda v: v < 1.0, bound=8).monotone is False


def test_harden_searches_on_validation_confirms_on_test_with_3_seeds(
        monkeypatch: pytest.MonkeyPatch, net: Any, ds: Any) -> None:
    fake = FakeAudit(0.5)
    result = fake_harden(monkeypatch, fake, net, ds)
    search = result.searches[0]
    assert search.chosen is not None and search.chosen >= 0.5
    assert len(search.probes) == 4 and result.candidates_run == 4  # the quick budget's bound
    searched = [c for c in fake.calls if c[0] == "laplace" and c[3]]
    assert len(searched) == 4  # every probe scored on the validation split
    confirmed = [c for c in fake.calls if c[0] == "laplace" and not c[3]]
    assert sorted(c[2] for c in confirmed) == [0, 1, 2]  # on the test split, seeds 0, 1, 2
    assert all(c[1]["scale"] == search.chosen for c in confirmed)
    conf = result.confirmation()
    assert result.recommended == "laplace" and conf is not None and conf.seeds == [0, 1, 2]
    assert conf.balanced_accuracy.low is not None and conf.balanced_accuracy_cost is not None
    assert result.defense is not None and result.defense.name == "laplace"
    text = result.summary()
    assert text.splitlines()[2].startswith(f"Recommended: laplace with scale={search.chosen:g}")
    assert "seeds [0, 1, 2]" in text and "balanced accuracy" in text and "macro F1" in text


def test_harden_says_plainly_when_nothing_reaches_the_target(
        monkeypatch: pytest.MonkeyPatch, net: Any, ds: Any, tmp_path: Any) -> None:
    result = fake_harden(monkeypatch, FakeAudit(100.0), net, ds)
    assert result.recommended is None and result.defense is None
    text = result.summary()
    assert "nothing is recommended" in text
    assert "failing at split-server (leaks)" in text and "rebuilds images" in text
    result.save_html(tmp_path / "h.html")
    assert "nothing is recommended" in (tmp_path / "h.html").read_text()
    assert json.loads(result.model_dump_json())["recommended"] is None


def test_stuck_models_are_never_recommended(monkeypatch: pytest.MonkeyPatch, net: Any,
                                            ds: Any) -> None:
    # every setting that reaches the target predicts one class: none may be recommended
    result = fake_harden(monkeypatch, FakeAudit(0.5, stuck_from=0.5), net, ds)
    assert result.recommended is None
    assert all(not p.meets for p in result.searches[0].probes if p.stuck)
    assert "stuck at the majority class" in result.summary()


def test_a_setting_that_fails_a_confirmation_seed_is_not_recommended(
        monkeypatch: pytest.MonkeyPatch, net: Any, ds: Any) -> None:
    result = fake_harden(monkeypatch, FakeAudit(0.5, fail_seeds=(2,)), net, ds)
    assert result.recommended is None and result.confirmations[0].holds == [True, True, False]
    assert "failed on seeds [2]" in result.summary()


@pytest.mark.parametrize(("kwargs", "what"), [
    ({"target": "no leaks"}, "target"),  # not a verdict the audit gives
    ({"defenses": ["pgsl"], "positions": ["federated-server"]}, "target"),  # no position
    ({"defenses": ["none"]}, "declared strength"),
    ({"utility": "auc"}, "utility"),
    ({"ranges": {"laplace": (5.0, 50.0)}}, "declared range"),
    ({"positions": ["the-moon"]}, "positions"),
    ({"attacks": []}, "attacks"),  # nothing to audit the named position with
    ({"attacks": ["imprint"]}, "attacks"),  # not at the named position
])
def test_bad_input_gets_a_typed_error(net: Any, ds: Any, kwargs: dict[str, Any],
                                      what: str) -> None:
    args: dict[str, Any] = {"defenses": ["laplace"], "positions": ["split-server"], **kwargs}
    with pytest.raises(ConfigError, match=what):
        ss.harden(net, data=ds, epochs=1, progress=False, **args)


def test_the_default_attacks_are_the_audits_own_at_each_position() -> None:
    from torch import nn

    from shieldsplit.attacks.base import attack_class
    from shieldsplit.audit.auditor import applicable_attacks
    from shieldsplit.audit.auditor import default_attacks as audit_defaults
    from shieldsplit.harden.spec import POSITIONS, default_attacks

    def at(name: str) -> tuple[str, str]:
        cls = attack_class(name, "reconstruction")
        return cls.position(), getattr(cls, "server", "honest")

    plain = nn.Identity()
    for budget in ("quick", "standard"):
        for shape in ((1, 28, 28), (3, 224, 224)):
            audit = audit_defaults(plain, budget, image_shape=shape)
            for position in ("split-server", "federated-server", "federated-server-malicious"):
                mine = default_attacks([position], budget, image_shape=shape)
                theirs = [a for a in audit if at(a) == POSITIONS[position]]
                assert mine == theirs or not theirs, (position, budget, shape)
    # large images at the quick budget: only what fits, as the audit runs it, and a
    # position the audit leaves empty there keeps its quick attacks (never none)
    big = (3, 224, 224)
    assert default_attacks(["split-server"], "quick", image_shape=big) == ["split-black-box"]
    assert default_attacks(["federated-server"], "quick", image_shape=big) == [
        "inverting-gradients", "inverting-gradients-fedavg"]
    # a named position the quick audit leaves empty still gets its attacks (FSHA)
    assert default_attacks(["split-server-malicious"], "quick") == [
        a for a in applicable_attacks(plain) if at(a) == ("split", "malicious")] == ["fsha"]
    assert default_attacks(["membership"]) == []


def test_a_utility_the_data_cannot_give(net: Any) -> None:
    one = load_dataset("digits", seed=0, limit=60)
    import dataclasses

    import torch
    one = dataclasses.replace(one, y_val=torch.zeros_like(one.y_val))
    with pytest.raises(ConfigError, match="two classes"):
        ss.harden(net, data=one, defenses=["laplace"], progress=False)


def test_a_range_whose_ends_give_the_same_verdict(monkeypatch: pytest.MonkeyPatch,
                                                  net: Any, ds: Any) -> None:
    fake = FakeAudit(0.5)
    with pytest.raises(ConfigError, match="both ends meet"):
        fake_harden(monkeypatch, fake, net, ds, ranges={"laplace": (1.0, 5.0)})
    assert len([c for c in fake.calls if c[0] == "laplace"]) == 2  # only the two ends


def test_each_setting_is_trained_once_and_read_back_from_disk(net: Any, ds: Any,
                                                              tmp_path: Any) -> None:
    kw: dict[str, Any] = dict(cut=2, seed=0, epochs=1, batch_size=64, progress=False)
    first = DefenseCache(tmp_path)
    a, _ = train_defense(net, ds, "laplace", {"scale": 0.5}, cache=first, **kw)
    again = DefenseCache(tmp_path)  # a later run: reads the file, trains nothing
    b, _ = train_defense(net, ds, "laplace", {"scale": 0.5}, cache=again, **kw)
    assert (first.trained, again.trained, again.hits) == (1, 0, 1)
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert v.equal(w), k


def test_harden_end_to_end_with_laplace(net: Any, ds: Any) -> None:
    result = ss.harden(net, data=ds, defenses=["laplace"], positions=["split-server"],
                       epochs=1, victims=8, candidates_per_defense=2, confirm_seeds=1,
                       progress=False)
    assert result.control is not None and result.control.defense == "none"
    # every attack the audit runs at the split server by default, read from declarations
    assert {"split-black-box", "split-white-box", "gan-prior"} <= set(result.attacks)
    probes = result.searches[0].probes
    assert [p.value for p in probes] == [10.0, 0.01]  # strongest end first, then weakest
    assert all(p.positions["split-server"] in ("leaks", "inconclusive", "no leakage found")
               for p in probes)
    assert result.baseline is not None and result.baseline.seeds == [0]
    assert result.summary().startswith("shieldsplit harden: PGSLNet")
    # the cut as a knob, for real: the deepest cut's own control, a study over two knobs
    assert [s.defense for s in result.searches] == ["laplace", "cut", "laplace+cut"]
    assert set(result.controls) == {"2", "8"} and result.controls["8"].defense == "none"
    study = result.searches[2].study
    assert study is not None and [t.values for t in study.trials] == [
        {"scale": 10.0, "cut": 8.0}, {"scale": 0.01, "cut": 2.0}]  # the corners, first
    assert [p.cut for p in result.searches[2].probes] == [8, 2]


def test_the_command_line_writes_json_and_html(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from shieldsplit.cli import app

    monkeypatch.setattr(harden_run, "evaluate_defense", FakeAudit(0.5))
    out, page = tmp_path / "h.json", tmp_path / "h.html"
    result = CliRunner().invoke(app, ["harden", "--defenses", "laplace", "--limit", "60",
                                      "--epochs", "1", "--json", str(out), "--out",
                                      str(page), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Recommended: laplace with scale=" in result.stdout
    assert json.loads(out.read_text())["recommended"] == "laplace"
    assert "Recommended: laplace" in page.read_text()


@pytest.mark.parametrize(("args", "fix"), [
    (["--positions", "split-sever"], "pass --positions split-server"),
    (["--utility", "f2"], "pass --utility f1"),
    (["--range", "laplace=1"], "NAME=LOW,HIGH"),
    (["--range", "nopeek=1,2"], "pass --range laplace"),
    (["--json", "{file}/h.json"], "is a file, not a folder"),
])
def test_the_command_line_checks_its_options_first(args: list[str], fix: str,
                                                   tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from shieldsplit.cli import app

    (tmp_path / "file").write_text("not a folder")
    args = [a.format(file=tmp_path / "file") for a in args]
    result = CliRunner().invoke(app, ["harden", "--defenses", "laplace", *args])
    assert result.exit_code == 2 and fix in result.output, result.output


def test_pairs_of_cut_defences_are_candidates_when_compose_is_registered(net: Any) -> None:
    from shieldsplit.defenses.base import (
        available_defenses,
        register_defense,
        require_knob,
        unregister_defense,
    )
    from shieldsplit.harden.search import candidates

    knobs = {n: require_knob(n) for n in ("laplace", "nopeek", "pgsl")}
    if "compose" not in available_defenses():  # stands in for the registered composition
        def compose(model: Any, *, cut: Any, seed: int, parts: Any) -> Any:
            return create_defense(parts[0]["name"], model, cut=cut, seed=seed,
                                  **parts[0]["options"])
        register_defense("compose", compose)
        added = True
    else:
        added = False
    try:
        found, _ = candidates(list(knobs), knobs, model=net, cut=2, compose=True)
        without, notes = candidates(list(knobs), knobs, model=net, cut=2, compose=False)
    finally:
        if added:
            unregister_defense("compose")
    pairs = [c for c in found if c.parts]
    assert [c.label for c in pairs] == ["laplace+nopeek"]  # pgsl is no cut defence
    weakest, strongest = pairs[0].options(0.0), pairs[0].options(1.0)
    assert weakest == {"parts": [{"name": "laplace", "options": {"scale": 0.01}},
                                 {"name": "nopeek", "options": {"alpha": 0.01}}]}
    assert strongest["parts"][0]["options"] == {"scale": 10.0}
    assert not [c for c in without if c.parts] and notes == []  # not asked: nothing to say


def test_the_dp_row_puts_riskcal_beside_the_empirical_noise(ds: Any) -> None:
    pytest.importorskip("riskcal", reason="riskcal is the 'harden' extra")
    from shieldsplit.compare.frontier import RunSpec
    from shieldsplit.defenses.base import require_knob
    from shieldsplit.harden.result import DefenseSearch
    from shieldsplit.harden.run import riskcal_check

    spec = RunSpec(epochs=2, batch_size=16)
    found = riskcal_check(DefenseSearch(defense="dpsgd", knob=require_knob("dpsgd"), chosen=0.3),
                          None, ds, spec)
    assert found.empirical_noise == 0.3 and found.riskcal_noise is not None
    assert found.riskcal_risk is not None and found.ratio is not None
    # Opacus's sampling: one over the batches per epoch, epochs times as many steps
    batches = -(-len(ds.x_train) // 16)
    assert found.sample_rate == pytest.approx(1 / batches) and found.steps == 2 * batches
    assert 0.0 < found.riskcal_risk <= 1.0 and found.tighter == "empirical"
    assert f"it needs {found.ratio:.3g}x less noise than riskcal" in found.note
    # more noise than riskcal needs: the theory is the tighter one, and says by how much
    lots = riskcal_check(DefenseSearch(defense="dpsgd", knob=require_knob("dpsgd"),
                                       chosen=found.riskcal_noise * 4), None, ds, spec)
    assert lots.tighter == "riskcal"
    assert "riskcal needs 4x less noise than the empirical" in lots.note
    assert lots.riskcal_risk is not None and lots.riskcal_risk < found.riskcal_risk
    none = riskcal_check(DefenseSearch(defense="dpsgd", knob=require_knob("dpsgd")), None, ds,
                         spec)
    assert none.empirical_noise is None and none.riskcal_noise == found.riskcal_noise


def dp_check(**kw: Any) -> Any:
    from shieldsplit.harden.result import DpCheck

    base: dict[str, Any] = dict(
        empirical_noise=0.01, epsilon=4.9e5, delta=1e-5, riskcal_noise=0.9, riskcal_risk=1.0,
        target_tpr=0.102, at_fpr=0.00183, sample_rate=1 / 9, steps=90, failing_noise=0.002,
        tighter="empirical", ratio=90.0, positions=["federated-server-malicious"],
        attacks=["imprint"], holds=[True, True, True])
    return DpCheck(**{**base, **kw})


def test_the_dp_cross_check_says_which_is_tighter_and_by_how_much_from_its_numbers() -> None:
    words = dp_check().words()
    assert ("Target: TPR <= 0.102 at FPR 0.00183 (the line-up's chance plus the audit's "
            "re-identification tolerance), for DP-SGD at sample rate 0.111 over 90 steps."
            in words)
    assert ("from a noise multiplier of 0.01 (epsilon 4.9e+05 at delta 1e-05); riskcal "
            "calibrates 0.9 for the same target" in words)
    # the factor at the searched setting, and up to riskcal over the failing probe below it
    assert ("The empirical setting is tighter: it needs 90x less noise than riskcal (0.01 vs "
            "0.9), and up to 450x less where the boundary lies (between the failing 0.002 and "
            "0.01)." in words)
    assert "held on 3 of 3 confirmation seeds" in words
    assert "riskcal's bound is vacuous (TPR 1)" in words and "(imprint)" in words
    assert "riskcal's bound does apply" in words and "split server" not in words
    # riskcal tighter, at the split server: by 1 / ratio, and why (the activations)
    split = dp_check(empirical_noise=2.0, riskcal_noise=0.5, ratio=0.25, tighter="riskcal",
                     failing_noise=1.0, riskcal_risk=0.05, positions=["split-server"]).words()
    assert ("The theory is tighter: riskcal needs 4x less noise than the empirical setting (0.5 "
            "vs 2), "
            "and at least 2x less (the probe at 1 failed)." in split)
    assert "which DP-SGD's guarantee does not cover" in split
    # a failing probe below riskcal's noise: the bracket cannot say which is tighter
    coarse = dp_check(empirical_noise=2.0, riskcal_noise=0.5, ratio=0.25, tighter="riskcal",
                      failing_noise=0.3).words()
    assert "between the failing 0.3 and 2, so the two may agree" in coarse
    # the weakest end met: the empirical factor is a least
    assert "the factor is a lower bound" in dp_check(failing_noise=None).words()
    # the attacker's own release: one noised step of a batch holding the victim
    assert ("even one such step needs a noise multiplier of 0.6 for the same bound (60x the "
            "empirical one)" in dp_check(riskcal_one_step=0.6).words())
    assert dp_check(tighter="equal", ratio=1.0, riskcal_noise=0.01).factor().startswith(
        "They agree")


def test_the_benchmark_page_names_only_the_positions_searched() -> None:
    import importlib.util
    import sys
    from pathlib import Path

    from shieldsplit.harden.result import HardenResult

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        spec = importlib.util.spec_from_file_location("bench_harden", bench / "harden.py")
        assert spec is not None and spec.loader is not None
        page = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(page)
    finally:
        sys.path.remove(str(bench))

    def record(positions: list[str]) -> dict[str, Any]:
        r = HardenResult(created="now", dataset="breastmnist: 546 images", model="PGSLNet",
                         cut=2, epochs=1, budget="quick", seed=0, positions=positions,
                         target="no leakage found", utility="balanced_accuracy",
                         attacks=["imprint"], candidates_bound=4,
                         dp=dp_check(positions=positions).model_copy(
                             update={"note": dp_check(positions=positions).words()}))
        return {"command": "python benchmarks/harden.py", "date": "now", "seed": 0,
                "machine": {"cpus": "2"}, "data": "breastmnist", "width": 16, "hidden": 64,
                "wall_minutes": 1.0, "result": r.model_dump(mode="json")}

    fed = page.markdown(record(["federated-server-malicious"]))
    assert "split server" not in fed and "points of balanced" not in fed
    assert fed.startswith("# Hardening to *no leakage found* at the malicious federated server")
    assert "tighter: empirical, riskcal / empirical = 90" in fed
    split = page.markdown(record(["split-server"]))
    assert "No on breastmnist: no defence held *no leakage found* at the split server" in split
    assert page.stem("breastmnist", ["federated-server-malicious"]) == (
        "harden_breastmnist_federated-server-malicious")


# ---------------------------------------------------------------- the cut as a knob
def test_the_cut_knob_is_a_candidate_for_split_defences_only(net: Any) -> None:
    from shieldsplit.cutting import list_cut_points
    from shieldsplit.defenses.base import register_defense, require_knob, unregister_defense
    from shieldsplit.defenses.laplace import LaplaceNoise
    from shieldsplit.harden.search import candidates

    class FederatedOnly(LaplaceNoise):  # a defence not deployed at the split
        name = "test-federated-only"
        surfaces = frozenset({"federated"})

    register_defense(FederatedOnly.name, FederatedOnly)
    try:
        names = ["laplace", FederatedOnly.name]
        knobs = {n: require_knob(n) for n in names}
        found, notes = candidates(names, knobs, model=net, cut=3, compose=False, deeper=True)
        flat, _ = candidates(names, knobs, model=net, cut=3, compose=False, deeper=False)
        deepest, deep_notes = candidates(names, knobs, model=net, cut=8, compose=False,
                                         deeper=True)
    finally:
        unregister_defense(FederatedOnly.name)
    labels = [c.label for c in found]
    assert labels == ["laplace", FederatedOnly.name, "cut", "laplace+cut"] and notes == []
    alone, with_cut = found[2], found[3]
    valid = [float(p.index) for p in list_cut_points(net)]
    assert alone.name == "none" and alone.knob.is_cut and alone.depth is None
    assert list(alone.knob.points) == [c for c in valid if c >= 3]  # the given cut, deeper
    assert alone.knob.strongest == max(valid)  # deeper is stronger
    assert with_cut.name == "laplace" and with_cut.depth == alone.knob
    assert with_cut.options(0.5) == {"scale": 0.5} and with_cut.cut_at((0.5, 6.0), 3) == 6
    assert alone.options(6.0) == {} and alone.cut_at((6.0,), 3) == 6
    assert [c.label for c in flat] == names  # not asked: no cut candidates
    assert [c.label for c in deepest] == names and "deeper than 8" in deep_notes[0]


def test_every_candidate_is_audited_against_the_control_at_its_cut(
        monkeypatch: pytest.MonkeyPatch, net: Any, ds: Any) -> None:
    # laplace protects only from cut 5 on: only a deeper cut with noise meets the target
    fake = FakeAudit(0.0, rule=lambda name, scale, cut: scale >= 0.1 and cut >= 5)
    result = fake_harden(monkeypatch, fake, net, ds, cut_depth=True, candidates_per_defense=4)
    assert [s.defense for s in result.searches] == ["laplace", "cut", "laplace+cut"]
    audited = [(name, cut, control) for name, cut, control in fake.audits if name != "none"]
    assert audited and all(control[:2] == ("control", cut) for _, cut, control in audited)
    # while searching (on validation): one control per cut, at every cut a candidate used
    on_val = [(a, c[3]) for a, c in zip(fake.audits, fake.calls, strict=True)]
    control_cuts = [a[1] for a, v in on_val if a[0] == "none" and v]
    candidate_cuts = {a[1] for a, v in on_val if a[0] != "none" and v}
    assert len(control_cuts) == len(set(control_cuts))  # each cut's control audited once
    assert candidate_cuts <= set(control_cuts) and {2, 8} <= set(control_cuts)
    assert set(result.controls) == {str(c) for c in control_cuts}
    alone = result.searches[1]  # the undefended model cut deeper is its own control:
    assert all(p.positions["split-server"] == "leaks" for p in alone.probes)  # never meets
    assert alone.chosen is None and alone.probes[0].cut == 8
    two = result.searches[2]
    assert two.depth is not None and two.study is not None and two.study.why.startswith("two")
    assert two.chosen is not None and two.chosen_cut is not None and int(two.chosen_cut) >= 5
    assert len([t for t in two.study.trials if t.probed]) <= 4
    assert result.recommended == "laplace+cut" and result.searches[0].chosen is None
    conf = result.confirmation()
    assert conf is not None and conf.cut == two.chosen_cut and conf.seeds == [0, 1, 2]
    confirmed = [a for a, c in zip(fake.audits, fake.calls, strict=True)
                 if a[0] == "laplace" and not c[3]]
    assert [a[2] for a in confirmed] == [("control", two.chosen_cut, s) for s in (0, 1, 2)]
    text = result.summary()
    assert f"and the cut at {two.chosen_cut}" in text.splitlines()[2]
    assert "Optuna studies" in text and "#0 scale=10 cut=8: meets" in text


def test_a_non_monotone_verdict_runs_a_seeded_optuna_study(
        monkeypatch: pytest.MonkeyPatch, net: Any, ds: Any, tmp_path: Any) -> None:
    # a weaker setting meets where a stronger fails: bisection alone would stop at the weak end
    def run() -> Any:
        fake = FakeAudit(0.0, rule=lambda name, scale, cut: scale <= 1.0)
        return fake_harden(monkeypatch, fake, net, ds, candidates_per_defense=6,
                           confirm_seeds=1), fake

    result, fake = run()
    search = result.searches[0]
    assert search.monotone is False and search.study is not None
    study = search.study
    assert (study.seed, study.bound, study.sampler) == (0, 4, "TPESampler")
    assert [t.probed for t in study.trials[:2]] == [False, False]  # the bisection's, told
    assert [t.values["scale"] for t in study.trials[:2]] == [10.0, 0.01]
    new = [t for t in study.trials if t.probed]
    assert len(new) == 4 == len([p for p in search.probes if p.method == "optuna"])
    assert all(t.meets == (t.values["scale"] <= 1.0) for t in study.trials)
    laplace_calls = [c for c in fake.calls if c[0] == "laplace" and c[3]]
    assert len(laplace_calls) == 6  # the bound: 2 bisection probes, 4 trials
    # the most useful setting that met the target (the fake's utility falls with scale)
    met = [t for t in study.trials if t.meets]
    assert search.chosen == min(met, key=lambda t: t.cost).values["scale"]
    again, _ = run()
    assert again.searches[0].study == study  # the same seed, the same trials
    text = result.summary()
    assert "not monotone" in text and "An Optuna study (TPESampler, seed 0" in text
    result.save_html(tmp_path / "h.html")
    assert "Optuna studies" in (tmp_path / "h.html").read_text()
    back = json.loads(result.model_dump_json())["searches"][0]["study"]
    assert len(back["trials"]) == len(study.trials) and back["seed"] == 0


def test_optuna_missing_is_a_typed_error(monkeypatch: pytest.MonkeyPatch, net: Any,
                                         ds: Any) -> None:
    import importlib

    from shieldsplit.errors import ShieldSplitError

    real = importlib.import_module

    def no_optuna(name: str, *a: Any, **k: Any) -> Any:
        if name == "optuna":
            raise ImportError("No module named 'optuna'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", no_optuna)
    fake = FakeAudit(0.5)
    with pytest.raises(ShieldSplitError, match=r'pip install -e "\.\[harden\]"'):
        fake_harden(monkeypatch, fake, net, ds)
    assert fake.calls == []  # refused before any training


def test_a_cut_that_is_not_valid_is_a_typed_error(net: Any, ds: Any) -> None:
    from shieldsplit.errors import InvalidCutError

    with pytest.raises(InvalidCutError, match="cut"):
        ss.harden(net, data=ds, defenses=["laplace"], cut=99, progress=False)


def test_a_depth_a_defence_cannot_be_built_at_is_a_failed_trial(
        monkeypatch: pytest.MonkeyPatch, net: Any, ds: Any) -> None:
    from shieldsplit.harden import HardenResult

    def rule(name: str, scale: float, cut: Any) -> bool:
        if cut == 8:  # as SplitShield refuses a cut without feature maps
            raise ConfigError.build(what="cut", expected="feature maps", received=cut,
                                    fix="cut earlier")
        return scale >= 1.0

    fake = FakeAudit(0.0, rule=rule)
    result = fake_harden(monkeypatch, fake, net, ds, cut_depth=True, candidates_per_defense=4,
                         confirm_seeds=1)
    two = result.searches[2]
    assert two.error is None and two.study is not None  # the study went on
    first = two.study.trials[0]
    assert first.values == {"scale": 10.0, "cut": 8.0} and first.error is not None
    assert first.utility is None and not first.meets and "not built" in result.summary()
    assert len([t for t in two.study.trials if t.probed]) == 4  # the failure spent one
    assert result.searches[1].error is not None  # the cut alone: its deepest end failed
    back = HardenResult.model_validate_json(result.model_dump_json())
    assert back.searches[2].study == two.study  # the record reads back
