"""The ``shieldsplit`` command line.

``shieldsplit demo`` trains the PGSL paper's network plainly and under
SplitShield, prints their accuracies side by side, then what the split-learning
attacks rebuild from each (the audit of both). Tables go to the
terminal; ``--json`` writes the full report for programs.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .attacks import available_attacks
from .auditor import AuditReport
from .demo import DemoOptions, DemoReport, run_demo
from .errors import ConfigError, ShieldSplitError
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
        title=f"What split-learning attacks rebuild of {plain.victims} training images "
        "(higher PSNR/SSIM/attacker accuracy = more leakage)",
        caption=f"reference classifier on clean images: {_pct(plain.reference_accuracy)}",
    )
    table.add_column("attack")
    table.add_column("model")
    for metric in ("PSNR dB", "SSIM", "att. acc"):
        table.add_column(metric, justify="right")
    reports = (("plain", plain), ("SplitShield", shielded))
    by_name = {who: {r.attack: r for r in rep.results} for who, rep in reports}
    names = list(dict.fromkeys(r.attack for _, rep in reports for r in rep.results))
    for name in names:
        for who, _ in reports:
            r = by_name[who].get(name)
            if r is None:
                continue
            metrics = ([f"{r.psnr:.1f}", f"{r.ssim:.3f}", _pct(r.attacker_accuracy)]
                       if r.status == "ok" and r.psnr is not None and r.ssim is not None
                       else [r.status, "", ""])
            table.add_row(name if who == "plain" or name not in by_name["plain"] else "",
                          who, *metrics)
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


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
    run_audit: Annotated[
        bool, typer.Option("--audit/--no-audit", help="audit both models side by side")
    ] = True,
) -> None:
    """Train the paper's network plainly and under SplitShield; print accuracy per stream
    and what the split-learning attacks rebuild from each."""
    try:
        options = DemoOptions(
            data=data,
            data_root=data_root, epochs=epochs, cut=cut, batch_size=batch_size,
            seed=seed, limit=limit, progress=not quiet, restore_best=restore_best,
            audit=run_audit,
        )
        report = run_demo(options)
    except (ShieldSplitError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc
    console.print(demo_table(report))
    if report.plain_audit is not None and report.shield_audit is not None:
        console.print(leakage_table(report.plain_audit, report.shield_audit))
    if json_out is not None:
        atomic_write_text(json_out, report.model_dump_json(indent=2))
        console.print(f"report written to {json_out}")


def load_model_factory(spec: str) -> Any:
    """Resolve ``pkg.module:factory`` (or a built-in model name such as ``pgsl-net``).

    Args:
        spec: the factory's import path, or a key of ``shieldsplit.models.MODELS``.

    Returns:
        The callable.

    Raises:
        ConfigError: if it cannot be imported or is not callable.
    """
    from .models import MODELS

    if spec in MODELS:
        return MODELS[spec]
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr) if attr else None
    except (ImportError, AttributeError) as exc:
        raise ConfigError.build(
            what="--model", expected="'package.module:factory' or a built-in model name",
            received=f"{spec!r} ({type(exc).__name__}: {exc})",
            fix="check the import path; the module must be importable from this directory",
        ) from exc
    if not callable(factory):
        raise ConfigError.build(
            what="--model", expected="'package.module:factory' naming a callable",
            received=repr(spec), fix="name the function or class that builds the model",
        )
    return factory


def build_model(spec: str, **shape: int) -> Any:
    """Call the factory with the keyword arguments it accepts (in_channels, num_classes,
    image_size).

    Args:
        spec: see :func:`load_model_factory`.
        **shape: the data set's geometry.

    Returns:
        The model.
    """
    factory = load_model_factory(spec)
    try:
        params = dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        params = {}
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in shape.items() if accepts_any or k in params}
    return factory(**kwargs)


@app.command()
def audit(
    model: Annotated[str, typer.Option(help="'package.module:factory' or a built-in name")],
    weights: Annotated[Path | None, typer.Option(help="state_dict file (weights_only)")] = None,
    data: Annotated[str, typer.Option(help="digits | breastmnist | pneumoniamnist | mnist")]
    = "digits",
    data_root: Annotated[Path | None, typer.Option(help="folder holding the data files")] = None,
    cut: Annotated[str, typer.Option(help="block index or submodule name")] = "2",
    budget: Annotated[str, typer.Option(help="quick | standard | thorough")] = "quick",
    seed: int = 0,
    attacks: Annotated[
        str | None, typer.Option(help="comma-separated attack names (default: every one that "
                                      f"applies): {', '.join(available_attacks())}")
    ] = None,
    victims: Annotated[int | None, typer.Option(min=1, help="victim images (default by budget)")]
    = None,
    out: Annotated[Path | None, typer.Option(help="write the HTML report here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the JSON here")] = None,
    include_images: Annotated[
        bool, typer.Option(help="embed reconstructions in the HTML (patient data!)")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Attack a trained model with every applicable attack (or --attacks) and report what leaks."""
    from .auditor import audit as run_audit
    from .data import default_data_root, load_dataset

    try:
        root = data_root or (default_data_root() if data != "digits" else None)
        ds = load_dataset(data, root=root, seed=seed)
        net = _load_weights(build_model(model, in_channels=ds.in_channels,
                                        num_classes=ds.num_classes,
                                        image_size=ds.image_size[0]), weights)
        report = run_audit(
            net, data=(ds.x_train, ds.y_train),
            cut=int(cut) if cut.isdigit() else cut, budget=budget,  # type: ignore[arg-type]
            seed=seed, progress=not quiet, victims=victims,
            attacks=None if attacks is None else [a.strip() for a in attacks.split(",")
                                                  if a.strip()],
        )
    except ShieldSplitError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc
    console.print(report.summary())
    if json_out is not None:
        report.to_json(json_out)
    if out is not None:
        report.save_html(out, include_images=include_images)
        console.print(f"HTML report written to {out}")
    if not report.complete:
        raise typer.Exit(code=130)


def _parse_sweeps(specs: list[str]) -> dict[str, list[float]]:
    sweeps: dict[str, list[float]] = {}
    for spec in specs:
        name, _, values = spec.partition("=")
        try:
            sweeps[name.strip()] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError as exc:
            raise ConfigError.build(
                what="--sweep", expected="NAME=V1,V2,... with numeric values",
                received=repr(spec), fix="e.g. --sweep laplace=0.1,0.5,1",
            ) from exc
        if not name.strip() or not sweeps[name.strip()]:
            raise ConfigError.build(
                what="--sweep", expected="NAME=V1,V2,...", received=repr(spec),
                fix="e.g. --sweep laplace=0.1,0.5,1",
            )
    return sweeps


@app.command()
def compare(
    model: Annotated[str, typer.Option(help="'package.module:factory' or a built-in name")]
    = "pgsl-net",
    weights: Annotated[Path | None, typer.Option(help="state_dict file (weights_only)")] = None,
    data: Annotated[str, typer.Option(help="digits | breastmnist | pneumoniamnist | mnist")]
    = "digits",
    data_root: Annotated[Path | None, typer.Option(help="folder holding the data files")] = None,
    defenses: Annotated[str, typer.Option(help="comma-separated registered defences")]
    = "none,pgsl,latent-fixed,latent-learned,dpsgd,nopeek,laplace,bido",
    sweep: Annotated[
        list[str] | None, typer.Option(help="NAME=V1,V2: sweep a defence's strength (repeat)")
    ] = None,
    attacks: Annotated[str, typer.Option(help="comma-separated audit attacks")]
    = "inverting-gradients-fedavg,split-black-box",
    cut: Annotated[str, typer.Option(help="block index or submodule name")] = "2",
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    budget: Annotated[str, typer.Option(help="quick | standard | thorough")] = "quick",
    victims: Annotated[int | None, typer.Option(min=1, help="victim images per audit")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="cap each split's size")] = None,
    seed: int = 0,
    out: Annotated[Path | None, typer.Option(help="write the HTML (plot + table) here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the JSON here")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Train every defence on the same split, audit each the same way, print the frontier."""
    from .compare import compare as run_compare
    from .data import default_data_root, load_dataset

    try:
        root = data_root or (default_data_root() if data != "digits" else None)
        ds = load_dataset(data, root=root, seed=seed, limit=limit)
        net = _load_weights(build_model(model, in_channels=ds.in_channels,
                                        num_classes=ds.num_classes,
                                        image_size=ds.image_size[0]), weights)
        table = run_compare(
            net, data=ds, defenses=[d.strip() for d in defenses.split(",") if d.strip()],
            sweeps=_parse_sweeps(sweep or []),
            attacks=[a.strip() for a in attacks.split(",") if a.strip()],
            cut=int(cut) if cut.isdigit() else cut, epochs=epochs, batch_size=batch_size,
            budget=budget, victims=victims, seed=seed, progress=not quiet,  # type: ignore[arg-type]
        )
    except ShieldSplitError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc
    console.print(table.summary(), soft_wrap=True)
    if json_out is not None:
        table.to_json(json_out)
    if out is not None:
        table.save_html(out)
        console.print(f"HTML frontier written to {out}")
    if not table.complete:
        raise typer.Exit(code=130)


@app.command()
def reproduce(
    paper: Annotated[str, typer.Argument(help="pgsl | latent")],
    data: Annotated[str, typer.Option(help="breastmnist | pneumoniamnist | mnist")]
    = "breastmnist",
    data_root: Annotated[Path | None, typer.Option(help="folder holding the data files")] = None,
    budget: Annotated[str, typer.Option(help="quick (minutes) | full (committed results)")]
    = "quick",
    out: Annotated[Path, typer.Option(help="folder for the page, plots and cells")]
    = Path("docs/results"),
    seed: int = 0,
    fresh: Annotated[bool, typer.Option(help="discard finished cells instead of resuming")]
    = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Re-measure a paper's tables on real data; the paper's number beside ours in every cell.

    Every finished cell is saved at once: Ctrl-C or a crash keeps it, a re-run resumes.
    """
    from .data import default_data_root
    from .reproduce import reproduce as run_reproduce

    try:
        result = run_reproduce(
            paper, data=data, data_root=data_root or default_data_root(),  # type: ignore[arg-type]
            budget=budget, out=out, seed=seed, fresh=fresh, progress=not quiet,  # type: ignore[arg-type]
        )
    except ShieldSplitError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc
    except KeyboardInterrupt as exc:
        err_console.print(f"interrupted: finished cells are kept in {out}; run the same "
                          "command again to resume")
        raise typer.Exit(code=130) from exc
    console.print(result.markdown, soft_wrap=True, markup=False, highlight=False)
    console.print(f"Written: {result.page} ({result.computed} cells computed, "
                  f"{result.reused} read back, {result.seconds / 60:.1f} min); plots: "
                  + ", ".join(str(p) for p in result.plots), markup=False)


def _load_weights(net: Any, weights: Path | None) -> Any:
    from .io import safe_torch_load

    if weights is None:
        return net
    state = safe_torch_load(weights)
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ConfigError.build(
            what="--weights", expected=f"a state_dict for {type(net).__name__}",
            received=f"{weights} ({str(exc).splitlines()[0]})",
            fix="save with torch.save(model.state_dict(), path) from the same model",
        ) from exc
    return net


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)


def main() -> None:
    """Entry point of the ``shieldsplit`` script."""
    app()


if __name__ == "__main__":
    main()
