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
import re
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


NO_LOAD = "not recorded for this run (measured before load was logged)"


def load_line(record: Record, *, own: float = 1, key: str = "load_average") -> str:
    """The page's ``Load:`` line from ``record[key]`` (a number, or ``os.getloadavg()``'s
    three, of which the 1-minute one is worded), or that the run did not record it."""
    from shieldsplit._core.provenance import load_note

    load = record.get(key)
    if isinstance(load, list | tuple):
        load = load[0] if load else None
    return f"Load: {NO_LOAD if load is None else load_note(float(load), own=own)}.  "


def seed_of(record: Record) -> object:
    """A record's seed: its ``seed`` field, else the ``--seed`` of its command, else
    ``None`` (a record written before seeds were stored)."""
    if record.get("seed") is not None:
        return record["seed"]
    found = re.search(r"--seed (\d+)", record.get("command", ""))
    return int(found.group(1)) if found else None


def seed_line(seed: object) -> str:
    """The page's ``Seed:`` line (stated even where the command already carries it)."""
    return f"Seed: {seed}.  "


def header(record: Record, *, seed: object, own: float = 1) -> list[str]:
    """The ``Command:``, ``Date:``, ``Machine:``, ``Load:`` and ``Seed:`` lines that
    every results page states (the convention of ``tests/test_results_pages.py``), worded
    from a record with ``command``, ``date`` and ``machine``
    (:func:`shieldsplit._core.provenance.machine_info`) and, where measured, ``load_average``.

    Example:
        >>> rec = {"command": "python b.py --seed 3", "date": "2026-12-06",
        ...        "machine": {"cpus": "2", "torch_threads": "1", "gpu": "none",
        ...                    "torch": "2.14"}}
        >>> print("\\n".join(header(rec, seed=3)))  # doctest: +NORMALIZE_WHITESPACE
        Command: `python b.py --seed 3`
        Date: 2026-12-06
        Machine: 2 cores, 1 torch thread(s), GPU none, torch 2.14
        Load: not recorded for this run (measured before load was logged).
        Seed: 3.
    """
    m = record["machine"]
    return [f"Command: `{record['command']}`  ",
            f"Date: {record['date']}  ",
            f"Machine: {m.get('cpus', '?')} cores, {m.get('torch_threads', '?')} torch "
            f"thread(s), GPU {m.get('gpu', 'none')}, torch {m.get('torch', '?')}  ",
            load_line(record, own=own), seed_line(seed)]


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
