"""benchmarks/spread.py: the rounds-disagree check every timing benchmark uses."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from spread import MAX_SPREAD, check_spread, spread

timings = st.lists(st.floats(1e-4, 1e3), min_size=1, max_size=20)


@given(timings)
def test_spread_matches_numpy(samples: list[float]) -> None:
    assert spread(samples) == pytest.approx(np.ptp(samples) / np.median(samples))


def test_noisy_rounds_are_flagged_and_worded() -> None:
    steady = [1.0, 1.05, 0.98, 1.02]
    noisy = [1.0, 3.2, 1.1, 0.9]  # the load of issue 14: one round three times slower
    check = check_spread({"plain": noisy, "pgsl": steady})
    assert not check.reliable and check.noisy == ["plain"]
    text = check.warning()
    assert "UNRELIABLE" in text and f"{MAX_SPREAD:.0%}" in text and "plain" in text
    assert f"{spread(noisy):.0%}" in text
    calm = check_spread({"plain": steady, "pgsl": steady})
    assert calm.reliable and calm.warning() == ""


def test_not_timings_is_an_error() -> None:
    with pytest.raises(ValueError):
        spread([])
    with pytest.raises(ValueError):
        spread([0.0, 0.0])


@pytest.mark.parametrize(("load", "own", "other"), [(1.1, 2, False), (2.5, 2, False),
                                                     (2.6, 2, True), (5.7, 1, True)])
def test_load_sentence_follows_the_measured_load(load: float, own: int, other: bool) -> None:
    # the timing pages' load sentence is computed: "other work" only above the
    # benchmark's own processes (the fixed text of split_wire.md said it at load 1.1)
    from shieldsplit._core.provenance import load_note, other_work_ran

    assert other_work_ran(load, own=own) is other
    note = load_note(load, own=own)
    assert f"{load:.1f}" in note
    assert ("other work shared the cores" in note) is other
    assert ("no other work" in note) is not other


def test_benchmark_pages_measure_once_and_render_from_the_record(tmp_path: Path) -> None:
    # benchmarks/pages.py: the page is words of the JSON record alone, so --render
    # rewrites it without measuring, and the quoted command leaves out --out/--render
    import argparse

    from pages import add_page_options, command_line, publish

    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", nargs="+", default=["16:64", "64:128"])
    parser.add_argument("--limit", type=int, default=None)
    add_page_options(parser)
    args = parser.parse_args(["--out", str(tmp_path)])
    assert command_line("benchmarks/b.py", args) == "python benchmarks/b.py --configs 16:64 64:128"
    calls: list[int] = []

    def measure() -> dict[str, int]:
        calls.append(1)
        return {"x": 2}

    publish(args, "b", measure=measure, markdown=lambda r: f"x is {r['x']}\n")
    assert (tmp_path / "b.md").read_text() == "x is 2\n" and len(calls) == 1
    args.render = True
    publish(args, "b", measure=measure, markdown=lambda r: f"x = {r['x']}\n")
    assert (tmp_path / "b.md").read_text() == "x = 2\n" and len(calls) == 1
