"""What every ``shieldsplit`` command shares: the consoles, failing with one line, checking
options and output paths before any work, and writing each output on its own.

The command modules (:mod:`shieldsplit.cli.demo`, ``audit``, ``compare``, ...) define
the commands; :mod:`shieldsplit.cli` registers them on its typer app. Like them, this
module imports neither torch nor the data, attack and defence modules until a command
runs, so ``shieldsplit --help`` answers at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from shieldsplit._core.io import check_output_path
from shieldsplit.errors import ConfigError, ShieldSplitError
from shieldsplit.experiments.smoke import SMOKE_ENV, SmokeBudget, smoke_budget

console = Console()
err_console = Console(stderr=True)


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


def check_outputs(**paths: Path | None) -> None:
    """Check that every given output file can be written, before any work.

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
    for path in paths.values():
        if path is not None:
            check_output_path(path)


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
            console.print(f"{label} written to {path}", markup=False, highlight=False)
    return ok


def check_choice(option: str, value: str, valid: Sequence[str]) -> None:
    """Check one option value against its valid choices.

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
        import difflib

        nearest = difflib.get_close_matches(value, list(valid), n=1, cutoff=0.0)
        raise ConfigError.build(what=option, expected=f"one of {', '.join(valid)}",
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
    from shieldsplit.attacks import available_attacks

    valid = available_attacks("reconstruction")
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
    from shieldsplit.data import available_datasets

    return available_datasets()


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

    check_choice("--data", data, data_names())
    root = data_root or (default_data_root() if data != "digits" else None)
    return load_dataset(data, root=root, seed=seed, limit=limit)


def budget_names() -> list[str]:
    """The audit budgets (what ``--budget`` and ``federate --audit`` accept).

    Example:
        >>> budget_names()
        ['quick', 'standard', 'thorough']
    """
    from shieldsplit.audit.budgets import VICTIMS

    return list(VICTIMS)


def parse_cut(cut: str) -> int | str:
    """``--cut``: a block index, or a submodule name.

    Example:
        >>> parse_cut("2"), parse_cut("features.3")
        (2, 'features.3')
    """
    return int(cut) if cut.isdigit() else cut


__all__ = [
    "budget_names",
    "check_attacks",
    "check_choice",
    "check_outputs",
    "console",
    "data_names",
    "err_console",
    "fail",
    "load_data",
    "parse_cut",
    "smoke",
    "split_names",
    "write_outputs",
]
