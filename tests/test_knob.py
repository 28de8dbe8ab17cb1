"""The strength each defence declares (``shieldsplit.defenses.knob``): the maths of a
knob against numpy, and every registered declaration against its defence's Config."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shieldsplit.defenses.base import (
    available_defenses,
    defense_config,
    defense_knob,
    defense_options,
    require_knob,
)
from shieldsplit.defenses.knob import Knob
from shieldsplit.errors import ConfigError

SEARCHABLE = [n for n in available_defenses() if defense_knob(n) is not None]


def test_every_defence_but_the_control_declares_a_strength() -> None:
    # a composition's strength is its last part's (shieldsplit.defenses.compose.compose_knob)
    assert set(available_defenses()) - set(SEARCHABLE) == {"none", "compose"}


@pytest.mark.parametrize("name", SEARCHABLE)
def test_a_declared_knob_is_a_valid_range_of_its_config(name: str) -> None:
    knob = require_knob(name)
    for end in (knob.low, knob.high):  # both ends are values the Config accepts
        defense_options(name, knob.fields(end))
    default = knob.value_of(defense_config(name)())
    assert knob.contains(default), (name, default)  # the default is searchable
    assert knob.is_stronger(knob.strongest, knob.weakest)


def test_a_defence_without_a_strength_is_a_typed_error() -> None:
    with pytest.raises(ConfigError, match="'none', which has no declared strength") as err:
        require_knob("none")
    assert "laplace" in str(err.value)  # names what can be searched


@given(st.floats(1e-3, 1.0), st.floats(1.5, 1e3), st.integers(2, 12))
def test_a_log_grid_is_numpys_geomspace(low: float, high: float, n: int) -> None:
    knob = Knob(option="x", low=low, high=high, scale="log")
    np.testing.assert_allclose(knob.grid(n), np.geomspace(low, high, n), rtol=1e-5)
    weaker_first = Knob(option="x", low=low, high=high, scale="log", stronger="lower")
    np.testing.assert_allclose(weaker_first.grid(n), np.geomspace(high, low, n), rtol=1e-5)


@given(st.floats(-10, 10), st.floats(0.5, 10))
def test_midpoints_on_each_scale(a: float, width: float) -> None:
    lin = Knob(option="x", low=a, high=a + width)
    assert lin.between(a, a + width) == pytest.approx(a + width / 2, rel=1e-5, abs=1e-5)
    log = Knob(option="x", low=width, high=width * 16, scale="log")
    assert log.between(width, width * 16) == pytest.approx(width * 4, rel=1e-5)


def test_integer_knob_rounds_and_drops_repeats() -> None:
    knob = Knob(option="depth", low=1, high=3, integer=True)
    assert knob.grid(5) == [1.0, 2.0, 3.0]  # 1.5 and 2.5 round onto neighbours
    assert knob.fields(2.0) == {"depth": 2}


@pytest.mark.parametrize("bad", [dict(low=1.0, high=1.0), dict(low=2.0, high=1.0),
                                 dict(low=0.0, high=1.0, scale="log")])
def test_bad_ranges_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="low"):
        Knob(option="x", **bad)


def test_a_nested_option_reaches_its_config() -> None:
    knob = require_knob("pgsl")
    assert defense_options("pgsl", knob.fields(0.1)) == {
        "config": {"perturb": {"pixel_budget": 0.1}}}


def test_the_docs_table_is_the_declarations() -> None:
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "defenses.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].startswith("`") and cells[0] != "`name`":
            rows[cells[0].strip("`")] = cells
    assert set(rows) == set(available_defenses())
    for name, cells in rows.items():
        knob = defense_knob(name)
        if knob is None:
            assert cells[4] == "none"
            continue
        default = knob.value_of(defense_config(name)())
        assert cells[4] == f"`{knob.option}` ({default:g})", name
        assert cells[5] == f"{knob.low:g} to {knob.high:g}, {knob.scale}", name
        assert cells[6].startswith("larger" if knob.stronger == "higher" else "smaller"), name


def test_a_knob_with_points_takes_only_those_values() -> None:
    knob = Knob(option="cut", low=1, high=8, integer=True, points=(1, 2, 5, 8))
    assert knob.between(1, 8) == 5.0 and knob.between(2, 5) in (2.0, 5.0)  # snapped
    assert knob.grid(8) == [1.0, 2.0, 5.0, 8.0] and knob.snap(3.4) == 2.0
    assert knob.snap(99) == 8.0 and knob.contains(5) and not knob.contains(3)
    for bad in [(1, 5), (2, 8), (1, 5, 2, 8), (1, 2, 2, 8)]:  # must ascend from low to high
        with pytest.raises(ValueError, match="points"):
            Knob(option="cut", low=1, high=8, points=bad)


def test_the_cut_knob_is_the_models_valid_cuts_from_the_given_one() -> None:
    import shieldsplit as ss
    from shieldsplit.cutting import list_cut_points
    from shieldsplit.defenses.knob import CUT, cut_knob
    from shieldsplit.errors import InvalidCutError

    net = ss.PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
    valid = [p.index for p in list_cut_points(net)]
    knob = cut_knob(net, 3)
    assert knob is not None and knob.option == CUT and knob.is_cut and knob.integer
    assert list(knob.points) == [c for c in valid if c >= 3]
    assert (knob.weakest, knob.strongest) == (3.0, float(max(valid)))  # deeper is stronger
    assert cut_knob(net, max(valid)) is None  # nothing deeper to search
    assert not require_knob("laplace").is_cut
    with pytest.raises(InvalidCutError):
        cut_knob(net, 99)
