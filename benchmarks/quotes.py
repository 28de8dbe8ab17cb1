"""Numbers the docs quote from a run, rendered from that run's JSON (issue 21).

A quoted number sits between two HTML comments, invisible on the rendered page::

    <!-- q pgsl_overhead.json ratio_to_plain.dpsgd {:.2f}x -->5.49x<!-- /q -->

The opening comment names the record (a file under ``docs/results``), the path of the
number in it and a Python format string (``{}`` when left out). The text between the
comments is what the format gives for the record's value today; :func:`render` writes it
again, so a changed record changes every doc that quotes it, and ``--check`` fails on
drift. Words of the marker are split as a shell splits them: quote one with spaces.

Path: keys joined by dots; ``[3]`` picks a list item, ``[defense=pgsl]`` the first list
item whose ``defense`` field is ``pgsl`` (compared as text; ``[a=1,b=x]`` asks for
both), ``["a key"]`` a key with
spaces or dots. A path may end in ``/60`` or ``*100`` (seconds to minutes, ...); two
paths joined by `` - `` or `` + `` (quoted, as one word) quote their difference or sum
(``'a/2 + b/2'``: their mean).

Usage::

    python benchmarks/quotes.py --check          # exit 1 and list every drifted quote
    python benchmarks/quotes.py --write          # re-render the quotes in place

Example:
    >>> import json, tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "r.json").write_text(json.dumps({"rows": [{"n": "a", "s": 90.0}]}))
    >>> render("took <!-- q r.json rows[n=a].s/60 '{:.1f} min' -->9 min<!-- /q -->", root)
    "took <!-- q r.json rows[n=a].s/60 '{:.1f} min' -->1.5 min<!-- /q -->"
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"

MARK = re.compile(r"<!-- q (?P<spec>.+?) -->(?P<value>.*?)<!-- /q -->")
_STEP = re.compile(r"""\.?(?:\["(?P<quoted>[^"]+)"\]|\[(?P<index>-?\d+)\]"""
                   r"""|\[(?P<where>[^=\]]+=[^\]]*)\]|(?P<key>[^.\[\]/*]+))""")
_SCALE = re.compile(r"(?P<op>[/*])(?P<by>\d+(?:\.\d+)?)$")


@cache
def _record(path: Path) -> Any:
    return json.loads(path.read_text())


def lookup(record: Any, path: str) -> Any:
    """The value at ``path`` in ``record`` (the path syntax of the module docstring)."""
    scale = _SCALE.search(path)
    if scale:
        path = path[: scale.start()]
    value, pos = record, 0
    while pos < len(path):
        step = _STEP.match(path, pos)
        if step is None or step.end() == pos:
            raise KeyError(f"bad path {path!r} at {path[pos:]!r}")
        pos = step.end()
        if step["quoted"] is not None:
            value = value[step["quoted"]]
        elif step["index"] is not None:
            value = value[int(step["index"])]
        elif step["where"] is not None:
            want = dict(cond.split("=", 1) for cond in step["where"].split(","))
            hits = [item for item in value
                    if all(str(item.get(k)) == v for k, v in want.items())]
            if not hits:
                raise KeyError(f"no item with {step['where']} in {path!r}")
            value = hits[0]
        else:
            value = value[step["key"]]
    if scale:
        by = float(scale["by"])
        value = value / by if scale["op"] == "/" else value * by
    return value


def quote(spec: str, root: Path = RESULTS) -> str:
    """The text a marker's ``spec`` (``FILE PATH [FORMAT]``) stands for today."""
    words = shlex.split(spec)
    if len(words) not in (2, 3):
        raise ValueError(f"a quote needs FILE PATH [FORMAT], got {spec!r}")
    fmt = words[2] if len(words) == 3 else "{}"
    record = _record((root / words[0]).resolve())
    parts = re.split(r" ([-+]) ", words[1], maxsplit=1)
    value = lookup(record, parts[0])
    if len(parts) == 3:
        other = lookup(record, parts[2])
        value = value - other if parts[1] == "-" else value + other
    return fmt.format(value)


def render(text: str, root: Path = RESULTS) -> str:
    """``text`` with every marked number written again from its record under ``root``."""
    return MARK.sub(lambda m: f"<!-- q {m['spec']} -->{quote(m['spec'], root)}<!-- /q -->",
                    text)


def drift(text: str, root: Path = RESULTS) -> list[tuple[str, str, str]]:
    """``(spec, on the page, from the record)`` for every marked number that differs."""
    return [(m["spec"], m["value"], new) for m in MARK.finditer(text)
            if (new := quote(m["spec"], root)) != m["value"]]


def unmarked(text: str) -> str:
    """``text`` with every marked span taken out: what is left quotes no record."""
    return MARK.sub(" ", text)


def documents(repo: Path = REPO) -> list[Path]:
    """The docs whose quotes this script keeps: ``docs/*.md`` and ``docs/results/*.md``."""
    return sorted([*repo.glob("docs/*.md"), *repo.glob("docs/results/*.md")])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--check", action="store_true", help="exit 1 on any drifted quote")
    what.add_argument("--write", action="store_true", help="re-render the quotes in place")
    parser.add_argument("files", nargs="*", type=Path, help="default: docs/*.md, "
                        "docs/results/*.md")
    args = parser.parse_args(argv)
    bad = 0
    for path in args.files or documents():
        text = path.read_text()
        if args.write:
            new = render(text)
            if new != text:
                path.write_text(new)
                print(f"re-rendered {path}")
            continue
        for spec, old, new in drift(text):
            bad += 1
            print(f"{path}: {spec}: page says {old!r}, record gives {new!r}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
