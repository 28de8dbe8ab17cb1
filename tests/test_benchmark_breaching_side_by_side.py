"""benchmarks/breaching_side_by_side.py: its scoring, its verdicts and its page."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from breaching_side_by_side import markdown, score, verdict
from test_results_pages import missing_fields

ROOT = Path(__file__).resolve().parents[1]


def _side(psnr: float, seconds: float, **extra: object) -> dict:
    return {"psnr": psnr, "psnr_per_image": [psnr] * 8, "identified": 2, "images": 8,
            "seconds": seconds * 8, "seconds_per_image": seconds, **extra}


def _record() -> dict:
    rows = [{"setting": "batch8", "budget": "quick", "batch": 8,
             "ours": _side(20.0, 3.0, iterations=100, restarts=1, matched=["features"]),
             "breaching": _side(21.5, 1.5, iterations=100, restarts=1, label_sets_right=1,
                                label_sets=1)},
            {"setting": "imprint", "budget": "any", "batch": 8,
             "ours": _side(99.0, 0.1, bins=128), "breaching": _side(30.0, 0.2, bins=64)}]
    victim = {"victim": "resnet", "auxiliary": 99, "mean_image_psnr": 17.0, "rows": rows,
              "network": {"arch": "resnet18", "params": 11, "train_images": 546,
                          "accuracy": 0.8, "majority_rate": 0.7},
              "not_run": [{"setting": "batch1", "budget": "standard",
                           "estimate_seconds": 5400.0}]}
    return {"command": "python benchmarks/breaching_side_by_side.py --seed 0",
            "date": "2026-12-06 22:00 UTC", "load_average": [2.0, 2.0, 2.0], "seed": 0,
            "machine": {"cpus": "2", "torch_threads": "1", "gpu": "none", "torch": "2"},
            "threads": 1, "breaching_commit": "abc", "max_seconds": 300.0,
            "fedavg": {"local_epochs": 5, "local_batch_size": 8, "lr": 1e-3},
            "wall_seconds": 600.0, "victims": [victim]}


def test_verdict_says_by_how_much_a_row_falls_short() -> None:
    row = _record()["victims"][0]["rows"][0]
    assert verdict(row) == "PSNR short by 1.50 dB, time over by 2.0x"
    row["ours"].update(psnr=22.0, seconds_per_image=1.0)
    assert verdict(row) == "PSNR met, time met"


def test_score_pairs_a_batch_before_it_measures() -> None:
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    aux = torch.rand(20, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    shuffled = score(x.flip(0), x, aux, batch=8, seconds=4.0)
    assert shuffled["psnr"] == 100.0 and shuffled["identified"] == 8
    assert shuffled["seconds_per_image"] == 0.5
    unpaired = score(x.flip(0), x, aux, batch=1, seconds=4.0)  # batch 1: no pairing
    assert unpaired["psnr"] < 100.0


def test_page_states_its_fields_the_shortfalls_and_what_did_not_run() -> None:
    page = markdown(_record())
    assert missing_fields(page) == set()
    assert "Met in 1 of 2 rows" in page and "PSNR short by 1.50 dB" in page
    assert "Not run: batch1 at the standard budget (estimated 90 min" in page
    assert "DenseNet-121 is not in this run" in page


def test_the_worker_never_imports_shieldsplit_attacks() -> None:
    """breaching's side runs in its own venv: the worker reads a victim's class by name,
    and imports nothing of shieldsplit itself."""
    tree = ast.parse((ROOT / "benchmarks" / "breaching_worker.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert not any(name.startswith("shieldsplit") for name in imported)
    assert "breaching" in imported


def test_the_worker_rebuilds_the_28px_densenet_the_benchmark_attacks() -> None:
    """The worker's DenseNet-121 (torchvision's, with the modules the benchmark names
    replaced by ``nn.Identity``) is ``attack_strength.densenet121_28``: same weights, same
    outputs on a 28 px image. Without the replacement torchvision's own stem max-pool
    leaves the third transition a 1x1 map to pool, and the forward pass fails."""
    from attack_strength import densenet121_28
    from breaching_side_by_side import model_spec
    from breaching_worker import _network

    torch.manual_seed(0)
    net = densenet121_28(2).eval()
    spec = model_spec({"arch": "densenet121", "num_classes": 2, "net": net})
    rebuilt, channels = _network(spec, 3)
    x = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert channels == 3 and torch.equal(rebuilt(x), net(x))
        spec["identity"] = []
        with pytest.raises(RuntimeError, match="too small"):
            _network(spec, 3)[0](x)


def test_a_failed_breaching_imprint_is_named_not_compared() -> None:
    """breaching's malicious server cannot modify DenseNet-121 (its hook reads a list input):
    the page names the failure, keeps shieldsplit's own imprint result and leaves the row
    out of the target."""
    record = _record()
    ours = _side(99.0, 0.1, bins=128)
    record["victims"][0]["rows"][1] = {"setting": "imprint", "budget": "any", "batch": 8,
                                       "ours": ours, "breaching_error": "AttributeError: x"}
    page = markdown(record)
    assert "breaching's imprint attack failed on this network" in page
    assert "Met in 0 of 1 rows" in page and "Not compared: ResNet-18 imprint" in page


def test_a_refined_row_names_both_stages_and_its_pace_counts_as_matching() -> None:
    """A batch-1 row whose path is "features, then gradients" says how many iterations
    the refinement ran after the budget's; its time is not a gradient-matching pace (it
    includes the feature path), unlike a row that only matched gradients."""
    from breaching_side_by_side import gradient_pace

    record = _record()
    record["victims"][0]["rows"].insert(0, {
        "setting": "batch1", "budget": "standard", "batch": 1,
        "ours": _side(25.0, 90.0, iterations=1000, restarts=4, refine_iterations=300,
                      path="features, then gradients",
                      matched=["features of 'fc', then gradients"]),
        "breaching": _side(21.0, 100.0, iterations=1000, restarts=1, label_sets_right=2,
                           label_sets=2)})
    page = markdown(record)
    assert "| 1000 (4 / 1); shieldsplit then 300 matching the gradient |" in page
    assert gradient_pace(record) == []
    record["victims"][0]["rows"][0]["ours"].update(path="gradients", matched=["gradients"])
    assert gradient_pace(record) == [(90.0 / 4 / 100.0, "ResNet-18 batch1 at the standard budget")]


def test_the_planner_asks_the_attack_which_path_it_takes() -> None:
    """The estimate follows the attack's own ``path()``: a narrow classifier above 2M
    parameters is refined at batch 1 above quick, a batch of 8 keeps its features."""
    import argparse

    from breaching_side_by_side import estimate, planned_path
    from torchvision.models import resnet18

    torch.manual_seed(0)
    victim = {"net": resnet18(num_classes=2).eval(), "num_classes": 2, "arch": "resnet18"}
    x = torch.rand(1, 3, 28, 28)
    assert planned_path(victim, x, "batch1", "quick")[1] == "features"
    assert planned_path(victim, x, "batch1", "standard")[1] == "features, then gradients"
    assert planned_path(victim, x, "batch8", "standard")[1] == "features"
    args = argparse.Namespace(iterations=None, batch1_images=2)
    # batch 1, standard: 2 images x (1000 x (0.16 + 0.019 x 4) + 300 x 0.16 x 1.3)
    assert estimate(victim, x, "batch1", "standard", args) == pytest.approx(
        2 * (1000 * (0.16 + 0.019 * 4) + 300 * 0.16 * 1.3))


def test_batch1_rows_are_held_against_the_mean_image_on_their_own_victims() -> None:
    """A batch-1 row scores the first victims only, so it is compared with the mean image's
    PSNR on those (here 16.5 dB, below the 8-victim mean of 17.0 dB)."""
    record = _record()
    victim = record["victims"][0]
    victim["mean_image_psnr_per_image"] = [16.0, 17.0, 17.0, 17.0, 17.0, 17.5, 17.5, 17.0]
    victim["rows"].insert(0, {
        "setting": "batch1", "budget": "quick", "batch": 1,
        "ours": {**_side(16.8, 1.0, iterations=100, restarts=1, matched=["features"]),
                 "images": 2},
        "breaching": {**_side(16.4, 2.0, iterations=100, restarts=1, label_sets_right=2,
                              label_sets=2), "images": 2}})
    page = markdown(record)
    assert "batch 1 scores the first 2 of them, on which it scores 16.50 dB" in page
    assert "shieldsplit's optimisation rows above it: batch1 (quick), batch8 (quick);" in page
    assert "breaching's: batch8 (quick)." in page


def test_a_resumed_record_lists_its_runs_and_tags_each_row() -> None:
    """With rows from two runs (``--resume``) the page lists both runs and names each row's
    run; a setting not run says the cap of the run that skipped it."""
    record = _record()
    victim = record["victims"][0]
    victim["rows"][0]["run"] = 0
    victim["not_run"][0]["max_seconds"] = 1500.0
    first = {k: record[k] for k in ("command", "date", "load_average", "wall_seconds")}
    record["runs"] = [first, {**first, "command": "python b.py --resume", "wall_seconds": 60.0}]
    victim["rows"].insert(1, {**victim["rows"][0], "budget": "standard", "run": 1})
    page = markdown(record)
    assert "The rows come from 2 runs; each victim's rows were measured on the same" in page
    assert "- run 1: `python b.py --resume`, 2026-12-06 22:00 UTC, 1.0 min" in page
    assert "- batch8 at quick (run 0):" in page and "- batch8 at standard (run 1):" in page
    assert "over the run's 25 min cap per setting" in page
    assert "the latest run took" in page and ": run 0 1, run 1 1 (" in page


def test_weights_fingerprint_tells_victims_apart() -> None:
    """``--resume`` keeps rows only for the same weights: the fingerprint is stable for the
    same state and changes with any value."""
    from attack_strength import weights_sha256

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    same = torch.nn.Linear(3, 2)
    same.load_state_dict(net.state_dict())
    assert weights_sha256(net) == weights_sha256(same)
    with torch.no_grad():
        same.bias[0] += 1e-6
    assert weights_sha256(net) != weights_sha256(same)


def test_rows_the_images_cannot_separate_are_named() -> None:
    """A row whose per-image PSNR differences give a 95% t-interval around 0 is named as
    not separated; a row with a steady difference is not."""
    record = _record()
    page = markdown(record)
    assert "PSNR not separated" not in page  # every image 1.5 dB apart
    row = record["victims"][0]["rows"][0]
    row["ours"]["psnr_per_image"] = [23.0, 19.0, 23.0, 19.0, 23.0, 19.0, 23.0, 19.0]
    row["ours"]["psnr"] = 21.0
    page = markdown(record)
    assert "PSNR not separated on these images" in page
    assert "ResNet-18 batch8 (quick, 8 images): -0.50 dB" in page
    assert "PSNR short by 0.50 dB (not separated: inconclusive)" in page
    row["ours"].update(psnr=22.0, psnr_per_image=[24.0, 20.0] * 4, seconds_per_image=1.0)
    page = markdown(record)  # above breaching's mean, not separated: not counted as met
    assert "Met in 1 of 2 rows; inconclusive in 1 (" in page
    assert "| PSNR met (not separated: inconclusive), time met |" in page


def _planning(monkeypatch: pytest.MonkeyPatch, sha: str = "abc") -> tuple[object, dict]:
    """The benchmark module with a victim that needs no data: an untrained ResNet-18 (the
    planner asks its attack which path it takes) and an earlier run's record of it."""
    import breaching_side_by_side as bench
    from torchvision.models import resnet18

    torch.manual_seed(0)
    victim = {"net": resnet18(num_classes=2).eval(), "num_classes": 2, "arch": "resnet18",
              "accuracy": 0.8, "majority_rate": 0.7, "params": 11, "train_images": 546,
              "best_epoch": 3, "weights_sha256": sha}
    x, aux = torch.rand(8, 3, 28, 28), torch.rand(10, 3, 28, 28)
    monkeypatch.setattr(bench, "victim_inputs",
                        lambda key, args: (victim, x, torch.zeros(8), aux, torch.zeros(10)))

    def row(setting: str, budget: str, images: int) -> dict:
        return {"setting": setting, "budget": budget, "ours": {"images": images}, "run": 0}

    previous = {"network": {"weights_sha256": "abc"},
                "rows": [row("batch1", "quick", 2), row("batch8", "quick", 8),
                         row("fedavg", "quick", 8), row("batch1", "standard", 2),
                         row("batch8", "standard", 8), row("imprint", "any", 8)],
                "not_run": [{"setting": "fedavg", "budget": "standard",
                             "estimate_seconds": 5000.0, "max_seconds": 1500.0}]}
    return bench, previous


def test_resume_runs_what_the_record_lacks_and_what_this_run_counts_otherwise(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``--resume --batch1-images 8``: the batch-1 rows of 2 images are measured again, the
    setting an earlier cap skipped is run, every other row is kept, and the victim's rows
    keep the page's order whichever process measured them."""
    import argparse

    bench, previous = _planning(monkeypatch)
    args = argparse.Namespace(batch1_images=8, budgets=["quick", "standard"],
                              max_seconds=1e9, iterations=None, seed=0, aux_limit=10)
    plan = bench.plan_victim("resnet", args, previous)
    assert [(t["setting"], t["budget"]) for t in plan["tasks"]] == [
        ("batch1", "quick"), ("batch1", "standard"), ("fedavg", "standard")]
    assert plan["not_run"] == []
    done = {("resnet", t["setting"], t["budget"]): {"setting": t["setting"],
                                                     "budget": t["budget"], "run": 1}
            for t in plan["tasks"]}
    rows = bench.assemble(plan, done)["rows"]
    assert [(r["setting"], r["budget"], r["run"]) for r in rows] == [
        ("batch1", "quick", 1), ("batch8", "quick", 0), ("fedavg", "quick", 0),
        ("batch1", "standard", 1), ("batch8", "standard", 0), ("fedavg", "standard", 1),
        ("imprint", "any", 0)]
    # a budget this run does not name keeps its rows, whatever their images, and its skips
    args.budgets = ["quick"]
    plan = bench.plan_victim("resnet", args, previous)
    assert [(t["setting"], t["budget"]) for t in plan["tasks"]] == [("batch1", "quick")]
    assert plan["not_run"] == previous["not_run"]
    assert ("batch1", "standard") in {(r["setting"], r["budget"])
                                      for r in plan["slots"] if isinstance(r, dict)}
    # the same options and a cap: nothing to run again, the cap is named
    args.budgets, args.batch1_images, args.max_seconds = ["quick", "standard"], 2, 60.0
    plan = bench.plan_victim("resnet", args, previous)
    assert plan["tasks"] == []
    assert [(s["setting"], s["max_seconds"]) for s in plan["not_run"]] == [("fedavg", 60.0)]


def test_resume_stops_on_other_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    bench, previous = _planning(monkeypatch, sha="retrained")
    args = argparse.Namespace(batch1_images=2, budgets=["quick"], max_seconds=1e9,
                              iterations=None, seed=0, aux_limit=10)
    with pytest.raises(SystemExit, match="resnet's weights differ from the record's"):
        bench.plan_victim("resnet", args, previous)


def test_the_page_says_what_each_process_attacked() -> None:
    """Earlier runs gave each process a victim; runs since give each a setting."""
    record = _record()
    first = {k: record[k] for k in ("command", "date", "load_average", "wall_seconds")}
    record["runs"] = [{**first, "jobs": 2}, {**first, "jobs": 2, "parallel": "settings"}]
    page = markdown(record)
    assert ": run 0 2 (one per victim), run 1 2 (one per setting) (" in page
    record.pop("runs")
    record.update(jobs=2, parallel="settings")
    assert "2 settings were attacked at once" in markdown(record)


def test_the_load_line_counts_every_process_of_the_run() -> None:
    """Two processes of one thread each keep a load of 2 busy themselves: that is no
    other work."""
    record = _record()
    record.update(jobs=2, load_average=[2.0, 2.0, 2.0])
    assert "no other work (the benchmark's own 2 processes or threads)" in markdown(record)
    record.update(jobs=1)
    assert "above the benchmark's own 1: other work shared the cores" in markdown(record)


def test_met_rows_where_neither_tool_beats_the_mean_image_are_named() -> None:
    """A row that meets the target while both tools stay at or below the mean auxiliary
    image compares two failures, and the page says so with shieldsplit's path."""
    record = _record()
    row = record["victims"][0]["rows"][0]
    row["ours"].update(psnr=16.9, psnr_per_image=[16.9] * 8, matched=["separated (1 of 8)"],
                       seconds_per_image=1.0)
    row["breaching"].update(psnr=15.0, psnr_per_image=[15.0] * 8)
    page = markdown(record)
    assert "Of the met and inconclusive rows, 1 compares two failures" in page
    assert "ResNet-18 batch8 (quick): 16.90 and 15.00 dB against 17.00 (separated (1 of 8))" in page
    row["ours"].update(psnr=17.5, psnr_per_image=[17.5] * 8)
    assert "compare two failures" not in markdown(record)
