"""``shieldsplit audit``: attack a trained model (or a saved SplitShield or defence) with
every applicable attack, or ``--attacks``, and report what leaks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shieldsplit.cli.common import (
    budget_names,
    check_attacks,
    check_choice,
    check_outputs,
    console,
    fail,
    load_data,
    parse_cut,
    smoke,
    split_names,
    write_outputs,
)
from shieldsplit.cli.loading import model_for
from shieldsplit.cli.parsing import parse_attack_options, parse_tolerance
from shieldsplit.errors import ShieldSplitError
from shieldsplit.experiments.smoke import cap


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
        check_choice("--budget", budget, budget_names())
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
        ds = load_data(data, data_root, seed, None if small is None else small.limit)
        net = model_for(model, ds, weights)
        report = run_audit(
            net, data=(ds.x_train, ds.y_train),
            cut=parse_cut(cut), budget=budget,  # type: ignore[arg-type]
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


__all__ = ["audit"]
