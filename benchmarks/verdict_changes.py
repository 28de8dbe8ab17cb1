"""What changed, verdict by verdict, when the decision rule changed (issue 21).

A snapshot of the verdicts the results pages printed before the change
(``docs/results/verdicts_before_issue21.json``, taken once from git with ``--snapshot``)
is compared with the verdicts their records give now (each frontier re-decided by the
current rule), and the list is written into ``docs/results/README.md`` between the
markers ``<!-- verdict-changes -->`` and ``<!-- /verdict-changes -->``: computed, never
fixed text. ``tests/test_doc_quotes.py`` re-renders it and fails on drift.

Usage::

    python benchmarks/verdict_changes.py --snapshot e4bdefe   # once: the verdicts before
    python benchmarks/verdict_changes.py --write               # the README's section
    python benchmarks/verdict_changes.py --check               # exit 1 on drift

Example:
    >>> before = {"frontier_x": {"pgsl": {"split": "no leakage found"}}}
    >>> now = {"frontier_x": {"pgsl": {"split": ("leaks", "A split-learning server "
    ...                                          "re-identifies patients: 60 of 64")}}}
    >>> print(changes(before, now)[0])  # doctest: +NORMALIZE_WHITESPACE
    - `frontier_x` pgsl, split: was *no leakage found*, is *leaks* (A split-learning
    server re-identifies patients: 60 of 64)
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
SNAPSHOT = RESULTS / "verdicts_before_issue21.json"
PAGES = ("frontier_breastmnist", "frontier_pneumoniamnist")
#: Pages whose verdicts live in their text (no record of evidence): the sentence
#: "Verdicts per attacker position: split: leaks; federated: ..." of benchmarks/audit_quick.py.
AUDIT_PAGES = ("audit_quick_breastmnist", "audit_quick_resnet18")
STRENGTH = "attack_strength_split"
_POSITIONS = re.compile(r"Verdicts per attacker position: ([^.]*)\.")
START, END = "<!-- verdict-changes -->", "<!-- /verdict-changes -->"

Verdicts = dict[str, dict[str, dict[str, str]]]


def _label(row: dict) -> str:
    from shieldsplit.compare.frontier import DefenseRun, run_label

    return run_label(DefenseRun.model_validate(row))


def recorded(text: str) -> dict[str, dict[str, str]]:
    """The verdicts a frontier JSON records: run label -> position -> verdict."""
    table = json.loads(text)
    return {_label(row): {v["position"]: v["verdict"] for v in row["verdicts"]}
            for row in table["rows"]}


def page_verdicts(text: str) -> dict[str, str]:
    """A quick-audit page's verdict per attacker position, from its computed sentence.

    Example:
        >>> page_verdicts("Verdicts per attacker position: split: leaks; federated: no.")
        {'split': 'leaks', 'federated': 'no'}
    """
    found = _POSITIONS.search(text)
    if found is None:
        return {}
    return dict(part.split(": ", 1) for part in found.group(1).split("; "))


def strength_verdicts(record: dict) -> dict[str, dict[str, str]]:
    """The split-strength record's verdict per data set and target/attack row."""
    return {ds["dataset"]: {f"{row['target']}, {row['attack']}": row.get("verdict", "?")
                            for row in ds["rows"]} for ds in record["datasets"]}


def current() -> dict[str, dict[str, dict[str, tuple[str, str]]]]:
    """Every page's verdicts under the current rule (re-decided from its record; a quick
    audit's page is its run's own words)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from split_attack_strength import decide_rows

    from shieldsplit.compare.frontier import CompareTable, redecide, run_label

    out: dict[str, dict[str, dict[str, tuple[str, str]]]] = {}
    for page in AUDIT_PAGES:
        verdicts = page_verdicts((RESULTS / f"{page}.md").read_text())
        out[page] = {"audit": {pos: (v, f"the page's verdict for the {pos} position")
                               for pos, v in verdicts.items()}}
    record = json.loads((RESULTS / f"{STRENGTH}.json").read_text())
    for ds in record["datasets"]:
        decide_rows(ds["rows"])
    out[STRENGTH] = {name: {row: (v, "decided again from the stored evidence")
                            for row, v in rows.items()}
                     for name, rows in strength_verdicts(record).items()}
    for page in PAGES:
        table = redecide(CompareTable.model_validate_json(
            (RESULTS / f"{page}.json").read_text()))
        # a malicious server's verdict is its own position (the records before had none)
        out[page] = {run_label(r): {(v.position if getattr(v, "server", "honest") == "honest"
                                     else f"{v.position}, {v.server}"): (v.verdict, v.sentence)
                                    for v in r.verdicts}
                     for r in table.rows}
    return out


def changes(before: Verdicts, now: dict[str, dict[str, dict[str, tuple[str, str]]]],
            *, width: int = 220) -> list[str]:
    """One line per verdict that changed (a run or position new on either side too)."""
    lines = []
    for page, runs in now.items():
        old = before.get(page, {})
        for label, positions in runs.items():
            for position, (verdict, sentence) in positions.items():
                was = old.get(label, {}).get(position)
                if was == verdict:
                    continue
                short = sentence if len(sentence) <= width else sentence[:width - 3] + "..."
                was_words = f"was *{was}*" if was else "new"
                lines.append(f"- `{page}` {label}, {position}: {was_words}, is *{verdict}* "
                             f"({short})")
    return lines


def _created(page: str) -> str:
    return str(json.loads((RESULTS / f"{page}.json").read_text()).get("created", "?"))[:10]


def section() -> str:
    """The README's section body."""
    before: Verdicts = json.loads(SNAPSHOT.read_text())
    now = current()
    lines = changes(before, now)
    total = sum(len(p) for runs in now.values() for p in runs.values())
    new = sum(before.get(page, {}).get(label, {}).get(position) is None
              for page, runs in now.items() for label, positions in runs.items()
              for position in positions)
    dates = ", ".join(f"`{page}.json` of {_created(page)}" for page in PAGES)
    head = (f"Computed by `python benchmarks/verdict_changes.py --write` from "
            f"`{SNAPSHOT.name}` (the verdicts the pages printed before the rule changed) and "
            f"the records now published ({dates}; `{STRENGTH}.json`, decided again from its "
            "stored evidence; the quick-audit pages' own verdict sentences): "
            f"{len(lines) - new} of {total - new} verdicts changed, and {new} are new (a "
            "position or run the earlier pages did not have). Every one of these pages was re-run "
            "on 2026-12-06 (the frontiers with the adaptive attack), so a change can come "
            "from the run as well as from the rule." + _added_words())
    return "\n".join([head, "", *lines]) if lines else head


def _added_words() -> str:
    """Attacks added to a frontier's record after its run (``frontier.py --add-attacks``):
    a verdict at their position can change from them too."""
    words = []
    for page in PAGES:
        run = json.loads((RESULTS / f"{page}.json").read_text()).get("run") or {}
        for added in run.get("added", []):
            words.append(f"`{page}` gained {', '.join(f'`{a}`' for a in added['attacks'])} "
                         f"on {str(added.get('date', '?'))[:10]}")
    return (" Since then " + "; ".join(words) + ", so a verdict at their positions can also "
            "change from those attacks.") if words else ""


def render(readme: str) -> str:
    """``readme`` with the section between the markers written again."""
    i, j = readme.index(START) + len(START), readme.index(END)
    return readme[:i] + "\n" + section() + "\n" + readme[j:]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--snapshot", metavar="REV")
    group.add_argument("--write", action="store_true")
    group.add_argument("--check", action="store_true")
    args = parser.parse_args()
    from shieldsplit._core.io import atomic_write_text

    if args.snapshot:
        def old(name: str) -> str:
            return subprocess.run(["git", "show", f"{args.snapshot}:docs/results/{name}"],
                                  cwd=ROOT, check=True, capture_output=True, text=True).stdout

        snap: Verdicts = {page: recorded(old(f"{page}.json")) for page in PAGES}
        for page in AUDIT_PAGES:
            snap[page] = {"audit": page_verdicts(old(f"{page}.md"))}
        snap[STRENGTH] = strength_verdicts(json.loads(old(f"{STRENGTH}.json")))
        atomic_write_text(SNAPSHOT, json.dumps(snap, indent=1) + "\n")
        return
    path = RESULTS / "README.md"
    text = path.read_text()
    if args.write:
        atomic_write_text(path, render(text))
    elif render(text) != text:
        print("docs/results/README.md: the verdict-changes section drifted; run "
              "python benchmarks/verdict_changes.py --write", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
