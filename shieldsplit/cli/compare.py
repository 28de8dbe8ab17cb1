"""``shieldsplit compare``: train every defence on the same split, audit each the same way,
print the privacy-utility frontier.

With no ``--defenses``, every registered defence that one of the ``--attacks`` can observe
is compared (:func:`shieldsplit.compare.frontier.fitting_defenses`, read from each
defence's declared surfaces), so a defence registered later (a plugin) is among the
choices with no edit here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shieldsplit.cli.choices import DEFENSES
from shieldsplit.cli.common import (
    check_attacks,
    check_choice,
    check_outputs,
    fail,
    load_data,
    say,
    smoke,
    split_names,
    write_outputs,
)
from shieldsplit.cli.loading import check_model_inputs, check_split, model_for
from shieldsplit.cli.parsing import parse_dotted, parse_options, parse_sweeps
from shieldsplit.errors import ShieldSplitError
from shieldsplit.experiments.smoke import cap


def compare(
    model: Annotated[str, typer.Option(help="'package.module:factory' or a built-in name")]
    = "pgsl-net",
    weights: Annotated[Path | None, typer.Option(help="state_dict file (weights_only)")] = None,
    data: Annotated[str, typer.Option(help="digits | breastmnist | pneumoniamnist | mnist")]
    = "digits",
    data_root: Annotated[Path | None, typer.Option(help="folder holding the data files")] = None,
    defenses: Annotated[str | None, typer.Option(
        help="comma-separated registered defences", show_default="every registered defence "
        "that one of --attacks can observe (its declared surfaces)")] = None,
    sweep: Annotated[
        list[str] | None, typer.Option(help="NAME=V1,V2: sweep a defence's strength (repeat)")
    ] = None,
    option: Annotated[list[str] | None, typer.Option(
        help="NAME.FIELD=VALUE: a defence's option (repeat; `shieldsplit options` lists "
        "them)")] = None,
    attacks: Annotated[str | None, typer.Option(
        help="comma-separated audit attacks",
        show_default="inverting-gradients-fedavg,split-black-box")] = None,
    cut: Annotated[str, typer.Option(help="block index or submodule name")] = "2",
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    budget: Annotated[str, typer.Option(help="quick | standard | thorough")] = "quick",
    victims: Annotated[int | None, typer.Option(min=1, help="victim images per audit")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="cap each split's size")] = None,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1)] = 0,
    membership: Annotated[bool, typer.Option(
        help="membership inference on every defence (reference models per defence)")] = True,
    out: Annotated[Path | None, typer.Option(help="write the HTML (plot + table) here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the JSON here")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars or progress lines")] = False,
) -> None:
    """Train every defence on the same split, audit each the same way, print the frontier."""
    try:
        # every option, before torch is imported
        check_outputs(out=out, json=json_out)
        where = check_model_inputs(model, weights, data, data_root, cut, budget)
        if attacks:
            check_attacks(split_names(attacks))
        chosen = None if defenses is None else split_names(defenses)
        for name in chosen or []:
            check_choice("--defenses", name, DEFENSES.names())
        sweeps = parse_sweeps(sweep or [])
        for name in sweeps:
            check_choice("--sweep", name, chosen or DEFENSES.names())
        parse_dotted(option or [], chosen or DEFENSES.names(), option="--option",
                     example="laplace.scale=0.2")
        # the defaults and the values, from the registries: before any data or model
        from shieldsplit.compare.frontier import DEFAULT_ATTACKS, fitting_defenses
        from shieldsplit.compare.frontier import compare as run_compare

        attack_names = split_names(attacks) if attacks else list(DEFAULT_ATTACKS)
        names = fitting_defenses(attack_names) if chosen is None else chosen
        for name in sweeps:
            check_choice("--sweep", name, names)
        given = parse_options(option or [], names)
        small = smoke()
        if small is not None:
            epochs, victims = small.epochs, cap(victims, small.victims)
            limit = cap(limit, small.limit)
            attack_names = list(small.attacks) if attacks is None else attack_names
        ds = load_data(data, data_root, seed, limit)
        net = model_for(model, ds, weights, defended_ok=False)
        check_split(net, where)  # an impossible cut fails now, not after the first defence
        table = run_compare(
            net, data=ds, defenses=[(n, given.get(n, {})) for n in names], sweeps=sweeps,
            attacks=attack_names,
            cut=where, epochs=epochs, batch_size=batch_size,
            budget=budget, victims=victims, seed=seed, membership=membership,  # type: ignore[arg-type]
            progress=not quiet,
        )
    except ShieldSplitError as exc:
        fail(exc)
    say(table.summary())
    written = write_outputs([(json_out, table.to_json, "JSON frontier"),
                             (out, table.save_html, "HTML frontier")])
    if not table.complete:
        raise typer.Exit(code=130)
    if not written:
        raise typer.Exit(code=1)


__all__ = ["compare"]
