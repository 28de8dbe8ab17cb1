"""Numbers the docs quote from a run agree with the run's JSON (issue 21).

``benchmarks/quotes.py`` renders every marked quote from its record; this test re-renders
each doc and fails on drift, and fails where a number the evidence review of 2026-12-06
named is quoted without a marker (or where a number no record holds comes back).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from quotes import REPO, documents, drift, lookup, quote, render, unmarked

#: Numbers the review named, with the docs that quote them: each must sit in a marker.
REVIEW_NUMBERS: dict[str, list[str]] = {
    "docs/defenses.md": ["5.49x", "5.12x"],
    "docs/results/README.md": ["53.1 min", "38.1 min", "+2.2", "5.14"],
}

#: Quotes the review named from runs regenerated since (their numbers changed): each must
#: still be quoted through a marker on its record.
REVIEW_QUOTES: dict[str, list[str]] = {
    "docs/defenses.md": ["frontier_breastmnist.json rows[defense=pgsl].balanced_accuracy",
                         "frontier_breastmnist.json rows[defense=none].balanced_accuracy"],
    "docs/audit.md": [
        "attack_strength_split.json datasets[dataset=breastmnist].rows[1].balanced_accuracy",
        "attack_strength_split.json datasets[dataset=breastmnist].rows[2].balanced_accuracy",
        "attack_strength_split.json "
        "datasets[dataset=breastmnist].reference_clean_balanced_accuracy"],
}

#: Numbers that appear on no page or record: they must not come back.
GONE: dict[str, list[str]] = {
    "docs/defenses.md": ["5.7x"],
}


#: How many marked quotes each doc holds (the marking of 2026-12-06): a later edit that
#: drops markers en masse, or retypes numbers by hand, fails here.
MIN_MARKERS: dict[str, int] = {
    "docs/audit.md": 9,
    "docs/defenses.md": 32,
    "docs/federated.md": 6,
    "docs/membership.md": 3,
    "docs/pgsl.md": 1,
    "docs/results/README.md": 22,
}


@pytest.mark.parametrize("doc", sorted(MIN_MARKERS))
def test_docs_keep_their_marked_quotes(doc: str) -> None:
    count = (REPO / doc).read_text().count("<!-- q ")
    assert count >= MIN_MARKERS[doc], f"{doc} has {count} marked quotes, had {MIN_MARKERS[doc]}"


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_marked_quotes_match_their_records(path: Path) -> None:
    assert drift(path.read_text()) == []


@pytest.mark.parametrize("doc", sorted(REVIEW_NUMBERS))
def test_review_numbers_are_marked(doc: str) -> None:
    text = (REPO / doc).read_text()
    loose = unmarked(text)
    for number in REVIEW_NUMBERS[doc]:
        assert number.rstrip("x% min") in text, f"{doc} no longer quotes {number}"
        assert number not in loose, f"{doc} quotes {number} without a marker"


@pytest.mark.parametrize("doc", sorted(REVIEW_QUOTES))
def test_review_quotes_stay_marked(doc: str) -> None:
    text = (REPO / doc).read_text()
    for path in REVIEW_QUOTES[doc]:
        assert f"<!-- q {path} " in text, f"{doc} no longer quotes {path} from its record"


@pytest.mark.parametrize("doc", sorted(GONE))
def test_numbers_no_record_holds_stay_gone(doc: str) -> None:
    text = (REPO / doc).read_text()
    for number in GONE[doc]:
        assert number not in text


def test_render_rewrites_a_stale_quote(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text(json.dumps(
        {"rows": [{"d": "a", "s": 1, "v": 0.25}, {"d": "b", "s": 2, "v": 0.5}]}))
    stale = "x <!-- q r.json rows[d=b,s=2].v {:.1%} -->40.0%<!-- /q --> y"
    fresh = render(stale, tmp_path)
    assert fresh == "x <!-- q r.json rows[d=b,s=2].v {:.1%} -->50.0%<!-- /q --> y"
    assert drift(stale, tmp_path) == [("r.json rows[d=b,s=2].v {:.1%}", "40.0%", "50.0%")]
    assert drift(fresh, tmp_path) == []
    assert unmarked(fresh) == "x   y"


def test_paths() -> None:
    record = {"a": {"b c": [1, 2, 3]}, "t": 90.0, "rows": [{"k": 1, "v": 4.0}]}
    assert lookup(record, 'a["b c"][2]') == 3
    assert lookup(record, "t/60") == 1.5
    assert lookup(record, "rows[k=1].v*100") == 400.0
    with pytest.raises(KeyError):
        lookup(record, "rows[k=2].v")


def test_difference_sum_and_mean(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text(json.dumps({"x": 3.5, "y": 1.25}))
    assert quote("r.json 'x - y' {:+.2f}", tmp_path) == "+2.25"
    assert quote("r.json 'x + y' {:.2f}", tmp_path) == "4.75"
    assert quote("r.json 'x/2 + y/2' {:.3f}", tmp_path) == "2.375"


def test_results_readme_lists_the_verdicts_the_current_rule_changed() -> None:
    # the README's list of changed verdicts is computed from the records re-decided by
    # the current rule: a change of rule or record without re-rendering it fails here
    import verdict_changes

    readme = (REPO / "docs/results/README.md").read_text()
    assert verdict_changes.START in readme and verdict_changes.END in readme
    assert verdict_changes.render(readme) == readme
