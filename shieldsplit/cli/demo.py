"""``shieldsplit demo``: the PGSL paper's network trained plainly and under SplitShield,
their accuracies side by side, then what the split-learning attacks rebuild from each.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from shieldsplit._core.io import atomic_write_text
from shieldsplit.cli.common import (
    cell,
    check_data,
    check_outputs,
    fail,
    print_table,
    say,
    smoke,
    write_outputs,
)
from shieldsplit.cli.loading import check_cut
from shieldsplit.errors import ConfigError, ShieldSplitError
from shieldsplit.experiments.smoke import cap

if TYPE_CHECKING:
    from shieldsplit.audit.report import AuditReport
    from shieldsplit.experiments.demo import DemoReport

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
        title=cell(f"PGSL paper network on {o.data}, cut={o.cut}, {o.epochs} epochs, "
                   f"seed {o.seed}"),
        caption=cell(report.dataset),
    )
    table.add_column("model", overflow="fold")
    table.add_column("test accuracy", justify="right")
    table.add_column("train seconds", justify="right")
    table.add_row(cell("plain (undefended)"), cell(f"{report.plain_test_accuracy:.1%}"),
                  cell(f"{report.seconds['plain']:.1f}"))
    for key, label in STREAM_ROWS:
        if key in report.shield_test_accuracy:
            table.add_row(
                cell(f"SplitShield {label}"), cell(f"{report.shield_test_accuracy[key]:.1%}"),
                cell(f"{report.seconds['splitshield']:.1f}" if key == "decision" else ""))
    return table


def leakage_table(plain: AuditReport, shielded: AuditReport) -> Table:
    """The demo's audit, plain and shielded side by side (one row per attack).

    Args:
        plain: the audit of the plainly trained network.
        shielded: the audit of the SplitShield.

    Returns:
        A rich table: per attack, a row for each model with PSNR, SSIM and attacker
        accuracy.
    """
    table = Table(
        title=cell(f"What split-learning attacks rebuild of {plain.victims} training images "
                   "(higher PSNR / balanced attacker accuracy = more leakage)"),
        caption=cell(
            f"no-attack baseline (best of the mean and the nearest auxiliary image): "
            f"{_num(max((b.psnr for b in plain.baselines), default=None))} dB; reference "
            f"classifier on clean images: balanced {_pct(plain.reference_balanced_accuracy)}, "
            f"chance {_pct(plain.chance)}. Verdicts: see docs/audit.md"),
    )
    # names and verdicts fold onto a second line in a narrow terminal, never cut short
    table.add_column("attack", overflow="fold")
    table.add_column("model", overflow="fold")
    for metric in ("PSNR dB", "SSIM", "line-up", "bal. att. acc"):
        table.add_column(metric, justify="right")
    table.add_column("verdict", overflow="fold")
    reports = (("plain", plain), ("SplitShield", shielded))
    by_name = {who: {r.attack: r for r in rep.results} for who, rep in reports}
    names = list(dict.fromkeys(r.attack for _, rep in reports for r in rep.results))
    for name in names:
        for who, _ in reports:
            r = by_name[who].get(name)
            if r is None:
                continue
            e = r.evidence
            metrics = ([f"{r.psnr:.1f}", f"{r.ssim:.3f}",
                        f"{e.identified}/{e.images}" if e is not None else "-",
                        _pct(r.balanced_accuracy) + ("!" if r.flipped else "")]
                       if r.status == "ok" and r.psnr is not None and r.ssim is not None
                       else [r.status, "", "", ""])
            table.add_row(*map(cell, [
                name if who == "plain" or name not in by_name["plain"] else "", who,
                *metrics, r.verdict or r.status]))
    return table


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def demo(
    data: Annotated[
        str, typer.Option(help="digits | breastmnist | pneumoniamnist | mnist")
    ] = "digits",
    data_root: Annotated[Path | None, typer.Option(help="folder holding the data files")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    cut: Annotated[int, typer.Option(min=1, help="blocks on the client (the paper: 2)")] = 2,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1)] = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="cap each split's size")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars or progress lines")] = False,
    restore_best: Annotated[
        bool, typer.Option(help="keep each model's best-validation-epoch weights")
    ] = False,
    run_audit: Annotated[
        bool, typer.Option("--audit/--no-audit", help="audit both models side by side")
    ] = True,
) -> None:
    """Train the paper's network plainly and under SplitShield; print accuracy per stream
    and what the split-learning attacks rebuild from each."""
    from pydantic import ValidationError

    try:
        # every option, before torch is imported (the network is the paper's: pgsl-net)
        check_outputs(json=json_out)
        check_data(data, data_root)
        check_cut("pgsl-net", cut)
        from shieldsplit.experiments.demo import DemoOptions, run_demo

        small = smoke()
        sizes: dict[str, Any] = {} if small is None else {
            "width": small.width, "hidden": small.hidden, "audit_victims": small.victims}
        options = DemoOptions(
            data=data,
            data_root=data_root, epochs=epochs if small is None else small.epochs, cut=cut,
            batch_size=batch_size, seed=seed,
            limit=limit if small is None else cap(limit, small.limit),
            progress=not quiet, restore_best=restore_best, audit=run_audit, **sizes,
        )
        report = run_demo(options)
    except ShieldSplitError as exc:
        fail(exc)
    except ValidationError as exc:
        fail(ConfigError.build(what="demo options", expected="valid options",
                               received=str(exc), fix="check the options (--help)"))
    print_table(demo_table(report))
    if report.plain_audit is not None and report.shield_audit is not None:
        print_table(leakage_table(report.plain_audit, report.shield_audit))
        for who, audited in (("plain", report.plain_audit), ("SplitShield", report.shield_audit)):
            for v in audited.verdicts:
                say(f"{who}: [{v.verdict}] {v.sentence}")
        from shieldsplit.experiments.demo import conclusion

        say(conclusion(report.plain_audit.results, report.shield_audit.results))
    written = write_outputs([(json_out, lambda p: atomic_write_text(
        p, report.model_dump_json(indent=2)), "report")])
    if not written:
        raise typer.Exit(code=1)


__all__ = ["STREAM_ROWS", "demo", "demo_table", "leakage_table"]
