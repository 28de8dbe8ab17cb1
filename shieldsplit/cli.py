"""The ``shieldsplit`` command line.

``shieldsplit demo`` trains the PGSL paper's network plainly and under
SplitShield, prints their accuracies side by side, then what the split-learning
attacks rebuild from each (the audit of both). Tables go to the
terminal; ``--json`` writes the full report for programs.

Every command checks its options and output paths before any work: a mistake
ends it at once with one line on stderr and exit code 2. Each output file is
written on its own, so a failing ``--json`` does not lose the HTML. This module
imports neither torch nor the data, attack and defence modules until a command
runs, so ``shieldsplit --help`` answers at once.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from shieldsplit._core.io import atomic_write_text, check_output_path
from shieldsplit.errors import ConfigError, ShieldSplitError
from shieldsplit.experiments.smoke import SMOKE_ENV, SmokeBudget, cap, smoke_budget

if TYPE_CHECKING:
    from shieldsplit.audit.auditor import AuditReport
    from shieldsplit.experiments.demo import DemoReport

logger = logging.getLogger(__name__)

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
        "(higher PSNR / balanced attacker accuracy = more leakage)",
        caption=f"no-attack baseline (best of the mean and the nearest auxiliary image): "
        f"{_num(max((b.psnr for b in plain.baselines), default=None))} dB; reference "
        f"classifier on clean images: balanced {_pct(plain.reference_balanced_accuracy)}, "
        f"chance {_pct(plain.chance)}. Verdicts: see docs/audit.md",
    )
    table.add_column("attack")
    table.add_column("model")
    for metric in ("PSNR dB", "SSIM", "line-up", "bal. att. acc"):
        table.add_column(metric, justify="right")
    table.add_column("verdict")
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
            table.add_row(name if who == "plain" or name not in by_name["plain"] else "",
                          who, *metrics, r.verdict or r.status)
    return table


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def fail(exc: ShieldSplitError | str) -> NoReturn:
    """End the command: one line on stderr, exit code 2.

    Args:
        exc: the error (its message is joined onto one line).

    Raises:
        typer.Exit: always, with code 2.
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
    """
    from shieldsplit.attacks import available_attacks

    valid = available_attacks("reconstruction")
    for name in names:
        check_choice("--attacks", name, valid)


def smoke() -> SmokeBudget | None:
    """The small budgets when ``SHIELDSPLIT_SMOKE=1`` (said on stderr), else None."""
    budget = smoke_budget()
    if budget is not None:
        typer.echo(f"{SMOKE_ENV}=1: small budgets ({budget.epochs} epoch, at most "
                   f"{budget.limit} images per split, {budget.victims} victims); the numbers "
                   "mean nothing", err=True)
    return budget


def _data_names() -> list[str]:
    from shieldsplit.data import available_datasets

    return available_datasets()


def _load_data(data: str, data_root: Path | None, seed: int, limit: int | None = None) -> Any:
    from shieldsplit.data import default_data_root, load_dataset

    check_choice("--data", data, _data_names())
    root = data_root or (default_data_root() if data != "digits" else None)
    return load_dataset(data, root=root, seed=seed, limit=limit)


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

    from shieldsplit.experiments.demo import DemoOptions, run_demo

    try:
        check_outputs(json=json_out)
        check_choice("--data", data, _data_names())
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
    console.print(demo_table(report))
    if report.plain_audit is not None and report.shield_audit is not None:
        console.print(leakage_table(report.plain_audit, report.shield_audit))
        for who, audited in (("plain", report.plain_audit), ("SplitShield", report.shield_audit)):
            for v in audited.verdicts:
                console.print(f"{who}: [{v.verdict}] {v.sentence}", soft_wrap=True,
                              markup=False)
        from shieldsplit.experiments.demo import conclusion

        console.print(conclusion(report.plain_audit.results, report.shield_audit.results),
                      soft_wrap=True, markup=False, highlight=False)
    written = write_outputs([(json_out, lambda p: atomic_write_text(
        p, report.model_dump_json(indent=2)), "report")])
    if not written:
        raise typer.Exit(code=1)


def load_model_factory(spec: str) -> Any:
    """Resolve ``pkg.module:factory`` (or a built-in model name such as ``pgsl-net``).

    The current directory is searched first, as ``python -m`` would, so a
    ``mymod.py`` beside you is found without ``PYTHONPATH=.``.

    Args:
        spec: the factory's import path, or a key of ``shieldsplit.models.MODELS``.

    Returns:
        The callable.

    Raises:
        ConfigError: if it cannot be imported or is not callable.
    """
    from shieldsplit.models import MODELS

    if spec in MODELS:
        return MODELS[spec]
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        factory = getattr(importlib.import_module(module_name), attr) if attr else None
    except (ImportError, AttributeError) as exc:
        raise ConfigError.build(
            what="--model", expected="'package.module:factory' or a built-in model name",
            received=f"{spec!r} ({type(exc).__name__}: {exc})",
            fix=f"check the import path; the module must be importable from {cwd} "
            "(this directory) or an installed package",
        ) from exc
    finally:
        if added:
            sys.path.remove(cwd)
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


def _model_for(spec: str, ds: Any, weights: Path | None, *, defended_ok: bool = True) -> Any:
    net = build_model(spec, in_channels=ds.in_channels, num_classes=ds.num_classes,
                      image_size=ds.image_size[0])
    return load_weights(net, weights, defended_ok=defended_ok)


def _budgets() -> list[str]:
    from shieldsplit.audit.auditor import VICTIMS

    return list(VICTIMS)


@app.command()
def audit(
    model: Annotated[str, typer.Option(help="'package.module:factory' or a built-in name")],
    weights: Annotated[Path | None, typer.Option(
        help="a state_dict, or a file written by SplitShield.save / Defense.save "
        "(read with weights_only=True)")] = None,
    data: Annotated[str, typer.Option(help="digits | breastmnist | pneumoniamnist | mnist")]
    = "digits",
    data_root: Annotated[Path | None, typer.Option(help="folder holding the data files")] = None,
    cut: Annotated[str, typer.Option(help="block index or submodule name")] = "2",
    budget: Annotated[str, typer.Option(help="quick | standard | thorough")] = "quick",
    seed: int = 0,
    attacks: Annotated[
        str | None, typer.Option(help="comma-separated attack names (default: every one that "
                                      "applies; the list is in docs/audit.md)")
    ] = None,
    victims: Annotated[int | None, typer.Option(min=1, help="victim images (default by budget)")]
    = None,
    out: Annotated[Path | None, typer.Option(help="write the HTML report here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the JSON here")] = None,
    include_images: Annotated[
        bool, typer.Option(help="embed reconstructions in the HTML (patient data!)")
    ] = False,
    attack_option: Annotated[list[str] | None, typer.Option(
        help="NAME.FIELD=VALUE: an attack's option, e.g. inverting-gradients.iterations=500 "
        "(repeat; `shieldsplit options` lists them)")] = None,
    tolerance: Annotated[list[str] | None, typer.Option(
        help="FIELD=VALUE: what a 'no leakage found' must bound each kind of evidence under, "
        "e.g. reidentification=0.05 (repeat; fields and defaults in docs/audit.md)")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars or progress lines")] = False,
) -> None:
    """Attack a trained model (or a saved SplitShield / defence) with every applicable attack
    (or --attacks) and report what leaks."""
    try:
        check_outputs(out=out, json=json_out)
        check_choice("--budget", budget, _budgets())
        names = None if attacks is None else split_names(attacks)
        if names is not None:
            check_attacks(names)
        tuned = parse_attack_options(attack_option or [])
        bounds = parse_tolerance(tolerance or [])
        from shieldsplit.audit.auditor import audit as run_audit

        small = smoke()
        if small is not None:
            victims = cap(victims, small.victims)
            names = list(small.attacks) if names is None else names
        ds = _load_data(data, data_root, seed, None if small is None else small.limit)
        net = _model_for(model, ds, weights)
        report = run_audit(
            net, data=(ds.x_train, ds.y_train),
            cut=int(cut) if cut.isdigit() else cut, budget=budget,  # type: ignore[arg-type]
            seed=seed, progress=not quiet, victims=victims, attacks=names,
            attack_options=tuned or None, tolerance=bounds,
        )
    except ShieldSplitError as exc:
        fail(exc)
    console.print(report.summary(), markup=False, highlight=False)
    written = write_outputs([
        (json_out, report.to_json, "JSON report"),
        (out, lambda p: report.save_html(p, include_images=include_images), "HTML report"),
    ])
    if not report.complete:
        raise typer.Exit(code=130)
    if not written:
        raise typer.Exit(code=1)


#: The attacks of ``compare`` by default: the frontier's two threat models.
FRONTIER_ATTACKS = ("inverting-gradients-fedavg", "split-black-box")


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


def parse_dotted(specs: Sequence[str], names: Sequence[str], *, option: str,
                 example: str) -> dict[str, dict[str, Any]]:
    """``["laplace.scale=0.2", "pgsl.recovery.mu=0.3"]`` -> ``{name: {field: value}}``
    (nested for dotted fields). Values are read as JSON (``0.2``, ``true``,
    ``[1, 28, 28]``), else kept as text.

    Raises:
        ConfigError: a malformed spec, or a name not in ``names``.

    Example:
        >>> parse_dotted(["pgsl.recovery.mu=0.3"], ["pgsl"], option="--option", example="")
        {'pgsl': {'recovery': {'mu': 0.3}}}
    """
    fields: dict[str, dict[str, Any]] = {}
    for spec in specs:
        path, eq, text = spec.partition("=")
        keys = [k.strip() for k in path.split(".")]
        if not eq or len(keys) < 2 or not all(keys):
            raise ConfigError.build(
                what=option, expected="NAME.FIELD=VALUE", received=repr(spec),
                fix=f"e.g. {option} {example} (see `shieldsplit options`)",
            )
        check_choice(option, keys[0], names)
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        node = fields.setdefault(keys[0], {})
        for key in keys[1:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return fields


def parse_options(specs: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--option`` specs -> validated keyword options per defence
    (:func:`shieldsplit.defenses.base.defense_options`).

    Raises:
        ConfigError: a malformed spec, a defence not in ``names``, or a field its
            ``Config`` rejects.

    Example:
        >>> parse_options(["laplace.scale=0.2"], ["none", "laplace"])
        {'laplace': {'scale': 0.2}}
    """
    from shieldsplit.defenses.base import defense_options

    given = parse_dotted(specs, names, option="--option", example="laplace.scale=0.2")
    return {name: defense_options(name, fields) for name, fields in given.items()}


def parse_tolerance(specs: Sequence[str]) -> Any:
    """``--tolerance FIELD=VALUE`` specs -> the audit's tolerance, checked by its model.

    Raises:
        ConfigError: a malformed spec, an unknown field or a value out of range.

    Example:
        >>> parse_tolerance(["reidentification=0.05"]).reidentification
        0.05
    """
    from shieldsplit.errors import ConfigError
    from shieldsplit.functional.verdict import check_tolerance

    given: dict[str, Any] = {}
    for spec in specs:
        field, sep, value = spec.partition("=")
        if not sep or not field:
            raise ConfigError.build(what="--tolerance", expected="FIELD=VALUE",
                                    received=repr(spec),
                                    fix="pass --tolerance reidentification=0.05")
        given[field.strip()] = value.strip()
    return check_tolerance(given)


def parse_attack_options(specs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--attack-option`` specs -> options per attack, each checked by its ``Config``.

    Raises:
        ConfigError: a malformed spec, an unknown attack, or a field its ``Config``
            rejects.

    Example:
        >>> parse_attack_options(["inverting-gradients.iterations=500"])
        {'inverting-gradients': {'iterations': 500}}
    """
    from shieldsplit.attacks import attack_class, available_attacks

    given = parse_dotted(specs, available_attacks("reconstruction"), option="--attack-option",
                         example="inverting-gradients.iterations=500")
    for name, fields in given.items():
        attack_class(name, "reconstruction").configure(fields)
    return given


@app.command()
def options(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
    = False,
) -> None:
    """List every registered defence's and attack's options: name, type and default (each
    one's ``Config``, the single source of its options)."""
    from typing import get_args

    from shieldsplit.attacks.base import Family, attack_class, available_attacks
    from shieldsplit.defenses.base import available_defenses, defense_config

    listing = {"defence": {n: _config_rows(defense_config(n)) for n in available_defenses()}}
    for family in get_args(Family):  # every family of the one attack registry
        title = "attack" if family == "reconstruction" else (
            f"{family.replace('_', ' ')} attack")
        found = {n: _config_rows(attack_class(n).Config) for n in available_attacks(family)}
        if found:
            listing[title] = found
    if as_json:
        typer.echo(json.dumps({
            kind: {name: [{"option": f, "type": t, "default": d} for f, t, d in rows]
                   for name, rows in found.items()}
            for kind, found in listing.items()}, indent=1))
        return
    for title, found in listing.items():
        table = Table(title, "option", "type", "default")
        for name, rows in found.items():
            for i, (field, kind, default) in enumerate(rows or [("(none)", "", "")]):
                table.add_row(name if i == 0 else "", field, kind, default)
        console.print(table)


def _config_rows(config: type[Any], prefix: str = "") -> list[tuple[str, str, str]]:
    from pydantic import BaseModel

    rows: list[tuple[str, str, str]] = []
    for field, info in config.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            rows += _config_rows(kind, f"{prefix}{field}.")
            continue
        name = kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")
        rows.append((f"{prefix}{field}", str(name),
                     repr(info.get_default(call_default_factory=True))))
    return rows


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
    option: Annotated[list[str] | None, typer.Option(
        help="NAME.FIELD=VALUE: a defence's option (repeat; `shieldsplit options` lists "
        "them)")] = None,
    attacks: Annotated[str | None, typer.Option(
        help="comma-separated audit attacks [default: inverting-gradients-fedavg,"
        "split-black-box]")] = None,
    cut: Annotated[str, typer.Option(help="block index or submodule name")] = "2",
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    budget: Annotated[str, typer.Option(help="quick | standard | thorough")] = "quick",
    victims: Annotated[int | None, typer.Option(min=1, help="victim images per audit")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="cap each split's size")] = None,
    seed: int = 0,
    membership: Annotated[bool, typer.Option(
        help="membership inference on every defence (reference models per defence)")] = True,
    out: Annotated[Path | None, typer.Option(help="write the HTML (plot + table) here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the JSON here")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars or progress lines")] = False,
) -> None:
    """Train every defence on the same split, audit each the same way, print the frontier."""
    try:
        check_outputs(out=out, json=json_out)
        check_choice("--budget", budget, _budgets())
        from shieldsplit.compare.frontier import compare as run_compare
        from shieldsplit.defenses.base import available_defenses

        names = split_names(defenses)
        for name in names:
            check_choice("--defenses", name, available_defenses())
        attack_names = split_names(attacks or ",".join(FRONTIER_ATTACKS))
        check_attacks(attack_names)
        sweeps = _parse_sweeps(sweep or [])
        for name in sweeps:
            check_choice("--sweep", name, names)
        given = parse_options(option or [], names)
        small = smoke()
        if small is not None:
            epochs, victims = small.epochs, cap(victims, small.victims)
            limit = cap(limit, small.limit)
            attack_names = list(small.attacks) if attacks is None else attack_names
        ds = _load_data(data, data_root, seed, limit)
        net = _model_for(model, ds, weights, defended_ok=False)
        from shieldsplit.cutting import split_model

        where: int | str = int(cut) if cut.isdigit() else cut
        split_model(net, where)  # an impossible cut fails now, not after the first defence
        table = run_compare(
            net, data=ds, defenses=[(n, given.get(n, {})) for n in names], sweeps=sweeps,
            attacks=attack_names,
            cut=where, epochs=epochs, batch_size=batch_size,
            budget=budget, victims=victims, seed=seed, membership=membership,  # type: ignore[arg-type]
            progress=not quiet,
        )
    except ShieldSplitError as exc:
        fail(exc)
    console.print(table.summary(), soft_wrap=True, markup=False, highlight=False)
    written = write_outputs([(json_out, table.to_json, "JSON frontier"),
                             (out, table.save_html, "HTML frontier")])
    if not table.complete:
        raise typer.Exit(code=130)
    if not written:
        raise typer.Exit(code=1)


#: The defences ``federate`` trains (those with a federated form, see docs/federated.md).
FEDERATED_DEFENSES = ("none", "dpsgd", "latent-fixed", "latent-learned", "nopeek", "laplace",
                      "bido", "jsma-input")


@app.command()
def federate(
    defense: Annotated[str, typer.Option(help="a defence with a federated form")] = "none",
    clients: Annotated[int, typer.Option(min=1, help="clients (virtual SuperNodes)")] = 4,
    rounds: Annotated[int, typer.Option(min=1, help="server rounds")] = 5,
    model: Annotated[str, typer.Option(help="'package.module:factory' or a built-in name")]
    = "small-convnet",
    data: Annotated[str, typer.Option(help="digits | breastmnist | pneumoniamnist | mnist")]
    = "digits",
    data_root: Annotated[Path | None, typer.Option(help="folder holding the data files")] = None,
    partition: Annotated[str, typer.Option(help="iid | dirichlet:ALPHA (label skew)")] = "iid",
    local_epochs: Annotated[int, typer.Option(min=1, help="local epochs per round")] = 1,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    cut: Annotated[str, typer.Option(help="block index or submodule name")] = "2",
    audit: Annotated[str | None, typer.Option(
        help="run the live audit on the real updates at this budget: quick | standard | "
        "thorough")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="cap each split's size")] = None,
    seed: int = 0,
    out: Annotated[Path | None, typer.Option(help="write the HTML report here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the JSON here")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress lines, no Flower INFO logs")] = False,
) -> None:
    """Train a defence with federated averaging on Flower's simulation engine (Ray), with
    per-round accuracy, each client's epsilon (DP-SGD) and, with --audit, the leakage of
    the updates the server really received."""
    try:
        check_outputs(out=out, json=json_out)
        check_choice("--defense", defense, list(FEDERATED_DEFENSES))
        if audit is not None:
            check_choice("--audit", audit, _budgets())
        from shieldsplit.functional.partition import parse_partition

        parse_partition(partition)
        try:
            from shieldsplit.adapters import flower as ssfl
        except ImportError as exc:
            raise ConfigError.build(
                what="flwr", expected="Flower installed (pip install 'shieldsplit[flower]')",
                received=f"{type(exc).__name__}: {exc}",
                fix="pip install 'shieldsplit[flower]'") from exc
        small = smoke()
        if small is not None:
            limit = cap(limit, small.limit)
        ds = _load_data(data, data_root, seed, limit)
        import torch

        torch.manual_seed(seed)  # the model's initial weights: same seed, same report
        net = _model_for(model, ds, None, defended_ok=False)
        result = ssfl.simulate(
            net, data=ds, defense=defense, clients=clients, rounds=rounds, partition=partition,
            local_epochs=local_epochs, batch_size=batch_size, audit=audit, seed=seed,
            cut=int(cut) if cut.isdigit() else cut, progress=not quiet,
        )
    except ShieldSplitError as exc:
        fail(exc)
    console.print(result.table(), markup=False, highlight=False, soft_wrap=True)
    written = write_outputs([(json_out, result.save_json, "JSON report"),
                             (out, result.save_html, "HTML report")])
    if not result.complete:
        raise typer.Exit(code=130)
    if not written:
        raise typer.Exit(code=1)


def _split_process() -> Any:
    try:
        from shieldsplit.adapters import split_process
    except ImportError as exc:  # pragma: no cover - the adapters ship with shieldsplit
        raise ConfigError.build(what="shieldsplit.adapters", expected="the adapters package",
                                received=str(exc), fix="reinstall shieldsplit") from exc
    return split_process


def _cut(cut: str) -> int | str:
    return int(cut) if cut.isdigit() else cut


@app.command("split-serve")
def split_serve(
    model: Annotated[str, typer.Option(help="'package.module:factory' or a built-in name")]
    = "pgsl-net",
    in_channels: Annotated[int, typer.Option(min=1, help="image channels")] = 1,
    image_size: Annotated[int, typer.Option(min=1, help="image height and width")] = 28,
    num_classes: Annotated[int, typer.Option(min=2, help="classes")] = 2,
    cut: Annotated[str, typer.Option(help="block index or submodule name")] = "2",
    seed: int = 0,
    host: Annotated[str, typer.Option(help="address to listen on (no TLS: keep it local)")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="0 picks a free port")] = 9300,
    connections: Annotated[int, typer.Option(min=0, help="runs to serve; 0: until stopped")]
    = 1,
    max_message_bytes: Annotated[int, typer.Option(min=1)] = 64 * 1024 * 1024,
    report: Annotated[Path | None, typer.Option(help="write the server's report (JSON)")]
    = None,
) -> None:
    """Run SplitShield's server half: trains the server's streams on the activations a
    `split-client` sends (one TCP frame each way per batch; docs/federated.md)."""
    try:
        check_outputs(report=report)
        sp = _split_process()
        import torch

        from shieldsplit.defenses.pgsl.shield import SplitShield

        torch.manual_seed(seed)  # the same initial weights as the client's
        net = build_model(model, in_channels=in_channels, num_classes=num_classes,
                          image_size=image_size)
        shield = SplitShield(net, cut=_cut(cut), seed=seed)

        def ready(bound: int) -> None:
            console.print(f"split server listening on {host}:{bound}", markup=False,
                          highlight=False)

        rep = sp.serve(shield, host=host, port=port, connections=connections or None,
                       max_message_bytes=max_message_bytes, report=report, ready=ready)
    except ShieldSplitError as exc:
        fail(exc)
    console.print(f"served {rep.connections} connection(s), {rep.messages} batches, "
                  f"{len(rep.rejected)} refused frame(s)", markup=False, highlight=False)


@app.command("split-client")
def split_client(
    model: Annotated[str, typer.Option(help="'package.module:factory' or a built-in name")]
    = "pgsl-net",
    data: Annotated[str, typer.Option(help="digits | breastmnist | pneumoniamnist | mnist")]
    = "breastmnist",
    data_root: Annotated[Path | None, typer.Option(help="folder holding the data files")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="cap each split's size")] = None,
    cut: Annotated[str, typer.Option(help="block index or submodule name")] = "2",
    epochs: Annotated[int, typer.Option(min=1)] = 5,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    seed: int = 0,
    host: Annotated[str, typer.Option(help="the split server's address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 9300,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the history here")]
    = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train SplitShield's client half on this machine's images against a `split-serve`
    process: only the activations at the cut and the labels leave this process."""
    try:
        check_outputs(json=json_out)
        sp = _split_process()
        ds = _load_data(data, data_root, seed, limit)
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        from shieldsplit.defenses.pgsl.shield import SplitShield

        torch.manual_seed(seed)  # the same initial weights as the server's
        net = _model_for(model, ds, None, defended_ok=False)
        shield = SplitShield(net, cut=_cut(cut), seed=seed)
        loader = DataLoader(TensorDataset(ds.x_train, ds.y_train), batch_size=batch_size,
                            shuffle=True, generator=torch.Generator().manual_seed(seed))
        history, remote = sp.train_client(shield, loader, host=host, port=port, epochs=epochs,
                                          seed=seed, progress=not quiet)
    except OSError as exc:  # refused, reset or timed out
        fail(f"no split server answered at {host}:{port} ({exc}); start `shieldsplit "
             "split-serve` there first")
    except ShieldSplitError as exc:
        fail(exc)
    for record in history.epochs:
        losses = ", ".join(f"{k} {v:.4f}" for k, v in record.train_loss.items())
        console.print(f"epoch {record.epoch}: train loss {losses}", markup=False,
                      highlight=False)
    per_batch = remote.message_bytes / max(remote.frames, 1)
    console.print(f"{remote.frames} batches, {per_batch:,.0f} bytes sent per batch",
                  markup=False, highlight=False)
    if not write_outputs([(json_out, lambda p: atomic_write_text(
            p, history.model_dump_json(indent=2)), "history")]):
        raise typer.Exit(code=1)


#: Where ``shieldsplit reproduce`` writes by default: a folder in the current directory,
#: never the checkout's committed ``docs/results``.
REPRODUCE_OUT = Path("shieldsplit-results")


@app.command()
def reproduce(
    paper: Annotated[str, typer.Argument(help="pgsl | latent")],
    data: Annotated[str, typer.Option(help="breastmnist | pneumoniamnist | mnist")]
    = "breastmnist",
    data_root: Annotated[Path | None, typer.Option(help="folder holding the data files")] = None,
    budget: Annotated[str, typer.Option(help="quick (minutes) | full (committed results)")]
    = "quick",
    out: Annotated[Path, typer.Option(help="folder for the page, plots and cells")]
    = REPRODUCE_OUT,
    seed: int = 0,
    fresh: Annotated[bool, typer.Option(help="discard finished cells instead of resuming")]
    = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars or progress lines")] = False,
    render: Annotated[bool, typer.Option(
        help="compute nothing: write the page again from the finished cells in --out "
             "(fails if a cell is missing)")] = False,
) -> None:
    """Re-measure a paper's tables on real data; the paper's number beside ours in every cell.

    Every finished cell is saved at once: Ctrl-C or a crash keeps it, a re-run resumes.
    With --render nothing is computed: the page is re-worded from the finished cells.
    """
    try:
        from typing import get_args

        from shieldsplit.data import default_data_root
        from shieldsplit.experiments.reproduce import ReproBudget, available_papers
        from shieldsplit.experiments.reproduce import reproduce as run_reproduce

        check_choice("paper", paper, available_papers())
        check_choice("--budget", budget, list(get_args(ReproBudget)))
        check_choice("--data", data, [d for d in _data_names() if d != "digits"])
        check_output_path(out / f"reproduce_{paper}_{data}_{budget}.md")
        result = run_reproduce(
            paper, data=data, data_root=data_root or default_data_root(),  # type: ignore[arg-type]
            budget=budget, out=out, seed=seed, fresh=fresh, progress=not quiet,  # type: ignore[arg-type]
            render=render,
        )
    except ShieldSplitError as exc:
        fail(exc)
    except KeyboardInterrupt as exc:
        err_console.print(f"interrupted: finished cells are kept in {out}; run the same "
                          "command again to resume")
        raise typer.Exit(code=130) from exc
    console.print(result.markdown, soft_wrap=True, markup=False, highlight=False)
    console.print(f"Written: {result.page} ({result.computed} cells computed, "
                  f"{result.reused} read back, {result.seconds / 60:.1f} min); plots: "
                  + ", ".join(str(p) for p in result.plots), markup=False)


def describe_checkpoint(obj: Any) -> str:
    """Say what kind of file ``torch.load`` returned, for error messages.

    Args:
        obj: what :func:`shieldsplit._core.io.safe_torch_load` returned.

    Returns:
        A short description: a SplitShield checkpoint, a defence checkpoint, a plain
        state_dict, or what else it is.

    Example:
        >>> import torch
        >>> describe_checkpoint({"w": torch.zeros(2), "b": torch.zeros(1)})
        'a plain state_dict of 2 tensors'
        >>> describe_checkpoint({"format": "shieldsplit.SplitShield/1", "cut": 2})
        'a SplitShield checkpoint (SplitShield.save, cut 2)'
        >>> describe_checkpoint([1, 2])
        'a list, not a state_dict'
    """
    from shieldsplit.defenses.base import CHECKPOINT_FORMAT as DEFENSE_FORMAT
    from shieldsplit.defenses.pgsl.shield import CHECKPOINT_FORMAT as SHIELD_FORMAT

    if isinstance(obj, dict):
        fmt = obj.get("format")
        if fmt == SHIELD_FORMAT:
            return f"a SplitShield checkpoint (SplitShield.save, cut {obj.get('cut')})"
        if fmt == DEFENSE_FORMAT:
            return (f"a {obj.get('name')!r} defence checkpoint (Defense.save, "
                    f"cut {obj.get('cut')})")
        if isinstance(fmt, str):
            return f"a checkpoint of unknown format {fmt!r}"
        import torch

        tensors = sum(isinstance(v, torch.Tensor) for v in obj.values())
        if obj and tensors == len(obj):
            return f"a plain state_dict of {tensors} tensors"
        return f"a dict of {len(obj)} entries ({tensors} tensors), not a state_dict"
    return f"a {type(obj).__name__}, not a state_dict"


def load_weights(net: Any, weights: Path | None, *, defended_ok: bool = True) -> Any:
    """Load ``--weights`` into ``net``: a plain state_dict, or a saved SplitShield or
    defence, rebuilt around ``net`` (read with ``weights_only=True`` only).

    Args:
        net: a freshly built model of the saved architecture.
        weights: the file, or None for ``net`` as it is.
        defended_ok: accept SplitShield and defence checkpoints (``compare`` needs a
            plain model).

    Returns:
        ``net`` with the weights, or the restored SplitShield / defence.

    Raises:
        ConfigError: if the file does not fit; the message says which kind of file it is.
        DataFileError: if the file is missing or not a weights-only checkpoint.
    """
    from shieldsplit._core.io import safe_torch_load

    if weights is None:
        return net
    state = safe_torch_load(weights)
    kind = describe_checkpoint(state)
    defended = "SplitShield checkpoint" in kind or "defence checkpoint" in kind
    if defended and not defended_ok:
        raise ConfigError.build(
            what="--weights", expected="a plain state_dict (every defence is trained from it)",
            received=f"{weights}: {kind}",
            fix="pass the undefended model's torch.save(model.state_dict(), path)",
        )
    try:
        if "SplitShield checkpoint" in kind:
            from shieldsplit.defenses.pgsl.shield import SplitShield

            return SplitShield.load(weights, net)
        if "defence checkpoint" in kind:
            from shieldsplit.defenses.base import Defense

            return Defense.load(weights, net)
        if "plain state_dict" not in kind:
            raise TypeError(kind)
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError, KeyError) as exc:
        raise ConfigError.build(
            what="--weights",
            expected=f"a state_dict of {type(net).__name__}, or a file written by "
            f"SplitShield.save / Defense.save around {type(net).__name__}",
            received=f"{weights}: {kind} ({' '.join(str(exc).split())})",
            fix="pass the --model the file was saved from, or save with "
            "torch.save(model.state_dict(), path)",
        ) from exc
    return net


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                                help="show INFO log lines")] = False) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("shieldsplit").setLevel(level)


def main() -> None:
    """Entry point of the ``shieldsplit`` script."""
    app()


if __name__ == "__main__":
    main()
