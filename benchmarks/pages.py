"""Record and page: the plumbing every benchmark with a results page shares.

A benchmark measures once into a JSON *record* (command, date, machine, load and its
numbers) and words its Markdown *page* from that record alone, so that ``--render``
can write the page again (after a change of wording) without measuring. This module
holds the options, the command line the page quotes and the write of both files.

Usage from a script in ``benchmarks/``::

    from pages import add_page_options, command_line, publish
    add_page_options(parser)
    args = parser.parse_args()
    publish(args, "split_wire", measure=lambda: {...}, markdown=markdown)

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--seed", type=int, default=0)
    >>> add_page_options(parser)
    >>> command_line("benchmarks/x.py", parser.parse_args(["--seed", "3"]))
    'python benchmarks/x.py --seed 3'
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from shieldsplit._core.io import atomic_write_text

Record = dict[str, Any]


def add_page_options(parser: argparse.ArgumentParser, *,
                     out: Path = Path("docs/results")) -> None:
    """``--out`` (the folder of the page and its JSON) and ``--render``."""
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: write the page again from --out's JSON")


def command_line(script: str, args: argparse.Namespace, *,
                 skip: Iterable[str] = ()) -> str:
    """The command a page quotes: ``script`` with every option that shaped the numbers
    (not ``--out``, ``--render``, ``skip`` or options left at ``None``)."""
    left_out = {"out", "render", *skip}
    options = []
    for key, value in vars(args).items():
        if key in left_out or value is None:
            continue
        shown = " ".join(map(str, value)) if isinstance(value, list | tuple) else value
        options.append(f"--{key.replace('_', '-')} {shown}")
    return " ".join(["python", script, *options])


def publish(args: argparse.Namespace, stem: str, *, measure: Callable[[], Record],
            markdown: Callable[[Record], str]) -> Record:
    """Measure (or, with ``--render``, read the last record), write ``<stem>.json`` and
    ``<stem>.md`` under ``--out`` atomically, print the page; returns the record."""
    path = args.out / f"{stem}.json"
    if args.render:
        record: Record = json.loads(path.read_text())
    else:
        record = measure()
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=2))
    page = markdown(record)
    atomic_write_text(args.out / f"{stem}.md", page)
    print(page)
    return record
