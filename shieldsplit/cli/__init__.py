"""The ``shieldsplit`` command line.

``shieldsplit demo`` trains the PGSL paper's network plainly and under
SplitShield, prints their accuracies side by side, then what the split-learning
attacks rebuild from each (the audit of both). Tables go to the
terminal; ``--json`` writes the full report for programs.

Every command checks its options and output paths before any work, and before torch is
imported wherever the option allows it (the names each option accepts are in
:mod:`~shieldsplit.cli.choices`): a mistake, a usage error included, ends it at once with
one line on stderr and exit code 2, its fix naming the nearest valid value. Output is
plain text (never rich markup); when stdout is not a terminal, tables keep their natural
width and lines are not wrapped, so a log keeps every row and name whole. Each output file is
written on its own, so a failing ``--json`` does not lose the HTML. This package
imports neither torch nor the data, attack and defence modules until a command
runs, so ``shieldsplit --help`` answers at once.

One module per command group, each command registered here on the one typer
:data:`app`: :mod:`~shieldsplit.cli.demo`, :mod:`~shieldsplit.cli.audit`,
:mod:`~shieldsplit.cli.options`, :mod:`~shieldsplit.cli.compare`,
:mod:`~shieldsplit.cli.federate`, :mod:`~shieldsplit.cli.split` (``split-serve``,
``split-client``) and :mod:`~shieldsplit.cli.reproduce`. ``--model``/``--weights`` are
read by :mod:`~shieldsplit.cli.loading`, the ``NAME.FIELD=VALUE`` options by
:mod:`~shieldsplit.cli.parsing`; the option checks and output writing every command
shares are :mod:`~shieldsplit.cli.common`, the names each option accepts before torch is
imported :mod:`~shieldsplit.cli.choices`.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from shieldsplit.cli import audit, compare, demo, federate, harden, options, reproduce, split
from shieldsplit.cli.common import (
    OneLineErrors,
    check_attacks,
    check_choice,
    check_outputs,
    console,
    err_console,
    fail,
    smoke,
    split_names,
    write_outputs,
)
from shieldsplit.cli.demo import STREAM_ROWS, demo_table, leakage_table
from shieldsplit.cli.federate import federated_defenses
from shieldsplit.cli.loading import (
    build_model,
    describe_checkpoint,
    load_model_factory,
    load_weights,
)
from shieldsplit.cli.parsing import (
    parse_attack_options,
    parse_dotted,
    parse_options,
    parse_tolerance,
)
from shieldsplit.cli.reproduce import REPRODUCE_OUT

app = typer.Typer(
    name="shieldsplit",
    cls=OneLineErrors,
    help="Defend medical image classifiers (PGSL split learning) and measure what leaks.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _configure_logging(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="show INFO log lines")] = False) -> None:
    # no docstring: typer would show it as the app's help
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("shieldsplit").setLevel(level)


# every command, in the order ``shieldsplit --help`` lists them
app.command()(demo.demo)
app.command()(audit.audit)
app.command()(options.options)
app.command()(compare.compare)
app.command()(harden.harden)
app.command()(federate.federate)
app.command("split-serve")(split.split_serve)
app.command("split-client")(split.split_client)
app.command()(reproduce.reproduce)


def main() -> None:
    """Entry point of the ``shieldsplit`` script: :data:`app` on the command line's arguments.

    Example:
        >>> from typer.testing import CliRunner
        >>> result = CliRunner().invoke(app, ["--help"], prog_name="shieldsplit")
        >>> result.exit_code, "Usage: shieldsplit" in result.output
        (0, True)
    """
    app()


__all__ = [
    "REPRODUCE_OUT",
    "STREAM_ROWS",
    "app",
    "build_model",
    "check_attacks",
    "check_choice",
    "check_outputs",
    "console",
    "demo_table",
    "describe_checkpoint",
    "err_console",
    "fail",
    "federated_defenses",
    "leakage_table",
    "load_model_factory",
    "load_weights",
    "main",
    "parse_attack_options",
    "parse_dotted",
    "parse_options",
    "parse_tolerance",
    "smoke",
    "split_names",
    "write_outputs",
]
