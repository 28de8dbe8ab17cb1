"""What every ``shieldsplit`` command shares: the consoles, failing with one line, checking
options and output paths before any work, printing for a terminal or a log, and writing
each output on its own.

The command modules (:mod:`shieldsplit.cli.demo`, ``audit``, ``compare``, ...) define
the commands; :mod:`shieldsplit.cli` registers them on its typer app. Like them, this
module imports neither torch nor the data, attack and defence modules until a command
runs, so ``shieldsplit --help`` answers at once, and so does a mistyped option: the names
each option accepts are read from :mod:`shieldsplit.cli.choices`.

Everything a command prints is plain text, never rich markup (a ``[leaks]`` verdict or a
path with brackets prints as it is). When stdout is not a terminal (a pipe, a log file),
tables take their natural width and text is not wrapped, so no row is cut in two and no
name is cut short.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from shieldsplit._core.io import check_output_path
from shieldsplit.cli.choices import ATTACKS, DATASETS, budget_names
from shieldsplit.errors import ConfigError, ShieldSplitError
from shieldsplit.experiments.smoke import SMOKE_ENV, SmokeBudget, smoke_budget

console = Console()
err_console = Console(stderr=True)

#: The widest a table is printed when stdout is not a terminal (its natural width below).
LOG_WIDTH = 1000


def fail(exc: ShieldSplitError | str) -> NoReturn:
    """End the command: one line on stderr, exit code 2.

    Args:
        exc: the error (its message is joined onto one line).

    Raises:
        typer.Exit: always, with code 2.

    Example:
        >>> try:
        ...     fail("no such file")
        ... except typer.Exit as exc:
        ...     print(exc.exit_code)
        2
    """
    typer.echo("error: " + " ".join(str(exc).split()), err=True)
    raise typer.Exit(code=2)


@contextlib.contextmanager
def one_line_usage_errors() -> Iterator[None]:
    """Turn a click usage error (an unknown option or command, a value of the wrong type
    or out of range) into :func:`fail`'s one line and exit code 2.

    Example:
        >>> try:
        ...     with one_line_usage_errors():
        ...         raise click.UsageError("No such option: --epoch")
        ... except typer.Exit as exc:
        ...     print(exc.exit_code)
        2
    """
    try:
        yield
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # no arguments: the help is the answer
            raise
        ctx = exc.ctx
        fail(exc.format_message() + (f" (see `{ctx.command_path} --help`)" if ctx else ""))


class OneLineErrors(TyperGroup):
    """The app's command group: every usage error is one line, like every other mistake
    (typer would draw a box of five lines around it)."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        """Parse the group's own arguments; a usage error is one line."""
        with one_line_usage_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command (its arguments are parsed here); a usage error is one line."""
        with one_line_usage_errors():
            return super().invoke(ctx)


def say(text: str) -> None:
    """Print ``text`` on stdout as it is: no markup, no highlighting, no wrapping (a
    terminal wraps it; a log keeps each line whole).

    Example:
        >>> say("[leaks] split-black-box")
        [leaks] split-black-box
    """
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def cell(value: object) -> Text:
    """A table cell, title or caption holding ``value`` as plain text (never markup).

    Example:
        >>> cell("[leaks]").plain
        '[leaks]'
    """
    return Text(str(value))


def print_table(table: Table) -> None:
    """Print a table: fitted to the terminal, or, when stdout is not one (a pipe, a log
    file), at its natural width, so no row wraps and no name is cut short.

    Example:
        >>> t = Table("attack", "verdict")
        >>> t.add_row(cell("split-black-box-with-a-very-long-name"), cell("[leaks]"))
        >>> print_table(t)  # doctest: +NORMALIZE_WHITESPACE
        ┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━┓
        ┃ attack                                ┃ verdict ┃
        ┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━┩
        │ split-black-box-with-a-very-long-name │ [leaks] │
        └───────────────────────────────────────┴─────────┘
    """
    if console.is_terminal:
        console.print(table)
        return
    # a Console of its own: print(width=) cannot exceed the console's width (80 in a log)
    Console(width=LOG_WIDTH, highlight=False, color_system=None).print(table)


def check_outputs(**paths: Path | None) -> None:
    """Check that every given output file can be written, before any work.

    A folder on the way that does not exist yet is created when the file is written; the
    command says so now, on stderr (stdout may carry the JSON), so that a mistyped folder
    is seen before the work rather than found afterwards.

    Args:
        **paths: option name (``out``, ``json``) to path, None when not asked for.

    Raises:
        OutputPathError: for the first path that cannot be written.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> check_outputs(out=d / "a.html", json=None)
        >>> check_outputs(json=d)
        Traceback (most recent call last):
        ...
        shieldsplit.errors.OutputPathError: Cannot write output: expected a file name, ...
    """
    for name, path in paths.items():
        if path is not None:
            check_output_path(path)
            if not Path(path).parent.exists():
                option = "--" + name.replace("_", "-")
                typer.echo(f"note: {option}: folder {Path(path).parent} does not exist yet; "
                           "it will be created when the file is written", err=True)


def write_outputs(writers: Sequence[tuple[Path | None, Callable[[Path], None], str]]) -> bool:
    """Write each requested output on its own: one failing does not stop the others.

    Args:
        writers: (path or None, write function, label) for each output.

    Returns:
        True if every requested output was written.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> def broken(path):
        ...     raise OSError("disk full")
        >>> write_outputs([(d / "a.json", broken, "JSON"),
        ...                (d / "a.html", lambda p: p.write_text("<html>"), "HTML")])
        HTML written to ...a.html
        False
        >>> (d / "a.html").read_text()
        '<html>'
    """
    ok = True
    for path, write, label in writers:
        if path is None:
            continue
        try:
            write(path)
        except (ShieldSplitError, OSError) as exc:
            typer.echo(f"error: {label} not written: " + " ".join(str(exc).split()), err=True)
            ok = False
        else:
            say(f"{label} written to {path}")
    return ok


def check_choice(option: str, value: str, valid: Sequence[str], *,
                 expected: str | None = None) -> None:
    """Check one option value against its valid choices.

    Args:
        option: the option's name, as the user typed it.
        value: its value.
        valid: the valid values; the fix names the nearest one (difflib).
        expected: what the error says is expected (default: one of ``valid``).

    Raises:
        ConfigError: naming the option and listing the valid values.

    Example:
        >>> check_choice("--budget", "quick", ["quick", "full"])
        >>> check_choice("--budget", "fulll", ["quick", "full"])
        Traceback (most recent call last):
        ...
        shieldsplit.errors.ConfigError: Invalid configuration: ... Fix: pass --budget full.
        >>> check_choice("--budget", "nope", ["quick", "full"])
        Traceback (most recent call last):
        ...
        shieldsplit.errors.ConfigError: Invalid configuration: expected one of quick, full, ...
    """
    if value not in valid:
        nearest = difflib.get_close_matches(value, list(valid), n=1, cutoff=0.0)
        raise ConfigError.build(what=option, expected=expected or f"one of {', '.join(valid)}",
                                received=f"{option} {value!r}",
                                fix=f"pass {option} {nearest[0] if nearest else valid[0]}")


def split_names(spec: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``.

    Example:
        >>> split_names("split-black-box, idlg,")
        ['split-black-box', 'idlg']
    """
    return [name.strip() for name in spec.split(",") if name.strip()]


def check_attacks(names: Sequence[str]) -> None:
    """Check attack names against those the auditor runs (before any work).

    Raises:
        ConfigError: for an unknown name, listing the valid ones.

    Example:
        >>> check_attacks(["split-black-box"])
    """
    valid = ATTACKS.names()
    for name in names:
        check_choice("--attacks", name, valid)


def smoke() -> SmokeBudget | None:
    """The small budgets when ``SHIELDSPLIT_SMOKE=1`` (said on stderr), else None.

    Example:
        >>> import os
        >>> smoke() is None or os.environ.get("SHIELDSPLIT_SMOKE") == "1"
        True
    """
    budget = smoke_budget()
    if budget is not None:
        typer.echo(f"{SMOKE_ENV}=1: small budgets ({budget.epochs} epoch, at most "
                   f"{budget.limit} images per split, {budget.victims} victims); the numbers "
                   "mean nothing", err=True)
    return budget


def data_names() -> list[str]:
    """The registered data sets (what ``--data`` accepts).

    Example:
        >>> "digits" in data_names()
        True
    """
    return DATASETS.names()


def check_data(data: str, data_root: Path | None) -> None:
    """Check ``--data`` and ``--data-root`` (a folder that exists), without loading.

    Raises:
        ConfigError: an unknown data set, or a ``--data-root`` that is not a folder.

    Example:
        >>> check_data("digits", None)
        >>> check_data("digits", Path("/no/such/folder"))
        Traceback (most recent call last):
        ...
        shieldsplit.errors.ConfigError: Invalid configuration: expected an existing folder ...
    """
    check_choice("--data", data, data_names())
    if data_root is not None and not data_root.is_dir():
        raise ConfigError.build(what="--data-root", expected="an existing folder holding the "
                                "data files", received=str(data_root),
                                fix="check the path (docs/data.md says which files go there)")


def check_file(option: str, path: Path | None, fix: str) -> None:
    """Check that an input file exists, before any work (its content is read later).

    Raises:
        ConfigError: ``path`` is not a file.

    Example:
        >>> check_file("--weights", None, "")
        >>> check_file("--weights", Path("/no/such.pt"), "check the path")
        Traceback (most recent call last):
        ...
        shieldsplit.errors.ConfigError: Invalid configuration: expected an existing file, ...
    """
    if path is not None and not path.is_file():
        raise ConfigError.build(what=option, expected="an existing file",
                                received=f"{option} {path}", fix=fix)


def load_data(data: str, data_root: Path | None, seed: int, limit: int | None = None) -> Any:
    """Check ``--data`` and load it (from ``--data-root`` or the default folder; the
    bundled ``digits`` need none).

    Raises:
        ConfigError: an unknown data set.
        DataFileError: a missing or corrupted data file (the message says where to put it).

    Example:
        >>> load_data("digits", None, 0, limit=60).num_classes
        10
    """
    from shieldsplit.data import default_data_root, load_dataset

    check_data(data, data_root)
    root = data_root or (default_data_root() if data != "digits" else None)
    return load_dataset(data, root=root, seed=seed, limit=limit)


def parse_cut(cut: str) -> int | str:
    """``--cut``: a block index, or a submodule name.

    Example:
        >>> parse_cut("2"), parse_cut("features.3")
        (2, 'features.3')
    """
    return int(cut) if cut.isdigit() else cut


__all__ = [
    "LOG_WIDTH",
    "OneLineErrors",
    "budget_names",
    "cell",
    "check_attacks",
    "check_choice",
    "check_data",
    "check_file",
    "check_outputs",
    "console",
    "data_names",
    "err_console",
    "fail",
    "load_data",
    "one_line_usage_errors",
    "parse_cut",
    "print_table",
    "say",
    "smoke",
    "split_names",
    "write_outputs",
]
