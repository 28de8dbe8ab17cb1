"""``shieldsplit audit``: attack a trained model (or a saved SplitShield or defence) with
every applicable attack, or ``--attacks``, and report what leaks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shieldsplit.cli.common import (
    check_attacks,
    check_outputs,
    fail,
    load_data,
    say,
    smoke,
    split_names,
    write_outputs,
)
from shieldsplit.cli.loading import (
    HELDOUT_FILES,
    WEIGHTS_FIX,
    check_heldout,
    check_model_inputs,
    check_split,
    load_heldout,
    model_for,
)
from shieldsplit.cli.parsing import (
    parse_attack_options,
    parse_tolerance,
    read_attack_options,
    read_tolerance,
)
from shieldsplit.errors import ShieldSplitError
from shieldsplit.experiments.smoke import cap

#: The report's note when membership inference did not run, in the command line's words.
HELDOUT_NOTE = ("membership inference not run (it trains reference models and an overfitted "
                "control: several times the model's own training); pass --heldout auto to "
                "use the data's validation and test images as the non-members, --heldout "
                f"val or test for one of them, or a {' / '.join(HELDOUT_FILES)} file of "
                "labelled images of the same distribution the model never saw")


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
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1)] = 0,
    attacks: Annotated[
        str | None, typer.Option(help="comma-separated attack names (default: every one that "
                                      "applies; the list is in docs/audit.md)")
    ] = None,
    victims: Annotated[int | None, typer.Option(min=1, help="victim images (default by budget)")]
    = None,
    heldout: Annotated[str | None, typer.Option(
        help="also run membership inference against images the model did not train on: "
        "auto (the data's validation and test images), val, test, or a .npz (x, y arrays) "
        "/ .pt ((x, y) pair) file; docs/membership.md")] = None,
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
        # every option, before torch is imported
        check_outputs(out=out, json=json_out)
        where = check_model_inputs(
            model, weights, data, data_root, cut, budget,
            weights_fix=f"{WEIGHTS_FIX}, or SplitShield.save or Defense.save wrote")
        names = None if attacks is None else split_names(attacks)
        if names is not None:
            check_attacks(names)
        check_heldout(heldout)
        read_attack_options(attack_option or [])
        read_tolerance(tolerance or [])
        # the values, by the Config that owns them: before any data or model
        tuned = parse_attack_options(attack_option or [])
        bounds = parse_tolerance(tolerance or [])
        from shieldsplit.audit.auditor import audit as run_audit

        small = smoke()
        if small is not None:
            victims = cap(victims, small.victims)
            names = list(small.attacks) if names is None else names
        ds = load_data(data, data_root, seed, None if small is None else small.limit)
        held = load_heldout(heldout, ds)
        net = model_for(model, ds, weights)
        check_split(net, where)
        report = run_audit(
            net, data=ds, cut=where, budget=budget,  # type: ignore[arg-type]
            seed=seed, progress=not quiet, victims=victims, attacks=names,
            attack_options=tuned or None, tolerance=bounds, heldout=held,
        )
    except ShieldSplitError as exc:
        fail(exc)
    if report.membership is None and report.membership_note and heldout is None:
        report.membership_note = HELDOUT_NOTE
    say(report.summary())
    written = write_outputs([
        (json_out, report.to_json, "JSON report"),
        (out, lambda p: report.save_html(p, include_images=include_images), "HTML report"),
    ])
    if not report.complete:
        raise typer.Exit(code=130)
    if not written:
        raise typer.Exit(code=1)


__all__ = ["HELDOUT_NOTE", "audit"]
