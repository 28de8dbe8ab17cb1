"""The ``shieldsplit`` command line.

``shieldsplit demo`` trains the PGSL paper's network plainly and under
SplitShield and prints their accuracies side by side. Tables go to the
terminal; ``--json`` writes the full report for programs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .demo import DemoOptions, DemoReport, run_demo
from .errors import ShieldSplitError
from .io import atomic_write_text

app = typer.Typer(
    name="shieldsplit",
    help="Defend medical image classifiers (PGSL split learning) and measure what leaks.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

STREAM_ROWS = (
    ("attacked", "attacked stream"),
    ("fused", "fused stream"),
    ("recovered", "recovered stream"),
    ("decision", "decision fusion (eq. 9)"),
)


def demo_table(report: DemoReport) -> Table:
    """The demo's accuracy table.

    Args:
        report: a finished demo report.

    Returns:
        A rich table: one row per model/stream, test accuracy and training seconds.
    """
    o = report.options
    table = Table(
        title=f"PGSL paper network on {o.data}, cut={o.cut}, {o.epochs} epochs, seed {o.seed}",
        caption=report.dataset,
    )
    table.add_column("model")
    table.add_column("test accuracy", justify="right")
    table.add_column("train seconds", justify="right")
    table.add_row("plain (undefended)", f"{report.plain_test_accuracy:.1%}",
                  f"{report.seconds['plain']:.1f}")
    for key, label in STREAM_ROWS:
        if key in report.shield_test_accuracy:
            table.add_row(f"SplitShield {label}", f"{report.shield_test_accuracy[key]:.1%}",
                          f"{report.seconds['splitshield']:.1f}" if key == "decision" else "")
    return table


@app.command()
def demo(
    data: Annotated[
        str, typer.Option(help="digits | breastmnist | pneumoniamnist | mnist")
    ] = "digits",
    data_root: Annotated[Path | None, typer.Option(help="folder holding the data files")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    cut: Annotated[int, typer.Option(min=1, help="blocks on the client (the paper: 2)")] = 2,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    seed: int = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="cap each split's size")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
    restore_best: Annotated[
        bool, typer.Option(help="keep each model's best-validation-epoch weights")
    ] = False,
) -> None:
    """Train the paper's network plainly and under SplitShield; print accuracy per stream."""
    try:
        options = DemoOptions(
            data=data,
            data_root=data_root, epochs=epochs, cut=cut, batch_size=batch_size,
            seed=seed, limit=limit, progress=not quiet, restore_best=restore_best,
        )
        report = run_demo(options)
    except (ShieldSplitError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc
    console.print(demo_table(report))
    if json_out is not None:
        atomic_write_text(json_out, report.model_dump_json(indent=2))
        console.print(f"report written to {json_out}")


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)


def main() -> None:
    """Entry point of the ``shieldsplit`` script."""
    app()


if __name__ == "__main__":
    main()
