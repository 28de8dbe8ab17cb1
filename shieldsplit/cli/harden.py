"""``shieldsplit harden``: the weakest setting of each defence that the audit cannot break,
confirmed on the test split, and the recommendation in words.

Every option is checked before torch is imported (the positions, targets and utility
metrics are read from :mod:`shieldsplit.settings`, the defences from
:mod:`shieldsplit.cli.choices`); ``--json`` and ``--out`` are checked before any work.
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
from shieldsplit.cli.parsing import parse_sweeps
from shieldsplit.errors import ConfigError, ShieldSplitError
from shieldsplit.experiments.smoke import cap
from shieldsplit.settings import HARDEN_POSITIONS, HARDEN_TARGETS, HARDEN_UTILITIES


def parse_ranges(specs: list[str]) -> dict[str, tuple[float, float]]:
    """``--range NAME=LOW,HIGH`` specs -> ``{name: (low, high)}``.

    Raises:
        ConfigError: a spec that is not a name and two numbers.

    Example:
        >>> parse_ranges(["laplace=0.1,2"])
        {'laplace': (0.1, 2.0)}
    """
    out = {}
    for name, values in parse_sweeps(specs).items():
        if len(values) != 2:
            raise ConfigError.build(what="--range", expected="NAME=LOW,HIGH (two numbers)",
                                    received=f"{name}={values}", fix="e.g. --range laplace=0.1,2")
        out[name] = (values[0], values[1])
    return out


def harden(
    defenses: Annotated[str, typer.Option(help="comma-separated defences with a declared "
                                          "strength (`shieldsplit options` lists them)")],
    model: Annotated[str, typer.Option(help="'package.module:factory' or a built-in name")]
    = "pgsl-net",
    weights: Annotated[Path | None, typer.Option(help="state_dict file (weights_only)")] = None,
    data: Annotated[str, typer.Option(help="digits | breastmnist | pneumoniamnist | mnist")]
    = "digits",
    data_root: Annotated[Path | None, typer.Option(help="folder holding the data files")] = None,
    positions: Annotated[str, typer.Option(
        help="comma-separated attacker positions that must reach the target: "
        + " | ".join(HARDEN_POSITIONS))] = "split-server",
    target: Annotated[str, typer.Option(help=" | ".join(HARDEN_TARGETS))] = "no leakage found",
    utility: Annotated[str, typer.Option(help=" | ".join(HARDEN_UTILITIES))]
    = "balanced_accuracy",
    budget: Annotated[str, typer.Option(help="quick | standard | thorough (the audit's budget "
                                        "and the candidates per defence)")] = "quick",
    attacks: Annotated[str | None, typer.Option(
        help="comma-separated attacks",
        show_default="the audit's default set at each position (adaptive ones added)")]
    = None,
    range_: Annotated[list[str] | None, typer.Option(
        "--range", help="NAME=LOW,HIGH: narrow a defence's declared range (repeat)")] = None,
    compose: Annotated[bool, typer.Option(
        help="also search pairs of cut defences (when a 'compose' defence is registered)")]
    = True,
    cut_depth: Annotated[bool, typer.Option(
        help="also search the cut as a knob, from --cut to the deepest: a deeper cut alone "
        "and each split defence with the cut (an Optuna study)")] = True,
    candidates: Annotated[int | None, typer.Option(
        min=2, help="candidates per defence", show_default="the budget's")] = None,
    confirm_seeds: Annotated[int, typer.Option(min=1, help="seeds of the test-split "
                                               "confirmation")] = 3,
    cut: Annotated[str, typer.Option(help="block index or submodule name")] = "2",
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    victims: Annotated[int | None, typer.Option(min=1, help="victim images per audit")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="cap each split's size")] = None,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1)] = 0,
    cache: Annotated[Path | None, typer.Option(
        help="folder keeping trained settings between runs (shared with compare)")] = None,
    out: Annotated[Path | None, typer.Option(help="write the HTML here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the JSON here")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars or progress lines")] = False,
) -> None:
    """Find the most useful defence setting that the audit cannot break, and confirm it."""
    try:
        # every option, before torch is imported
        check_outputs(out=out, json=json_out)
        where = check_model_inputs(model, weights, data, data_root, cut, budget)
        check_choice("--target", target, list(HARDEN_TARGETS))
        check_choice("--utility", utility, list(HARDEN_UTILITIES))
        places = split_names(positions)
        for p in places:
            check_choice("--positions", p, list(HARDEN_POSITIONS))
        names = split_names(defenses)
        for name in names:
            check_choice("--defenses", name, DEFENSES.names())
        if attacks:
            check_attacks(split_names(attacks))
        ranges = parse_ranges(range_ or [])
        for name in ranges:
            check_choice("--range", name, names)
        from shieldsplit.harden import harden as run_harden

        small = smoke()
        if small is not None:
            epochs, victims = small.epochs, cap(victims, small.victims)
            limit = cap(limit, small.limit)
        ds = load_data(data, data_root, seed, limit)
        net = model_for(model, ds, weights, defended_ok=False)
        check_split(net, where)
        result = run_harden(
            net, data=ds, defenses=names, positions=places, target=target, utility=utility,
            budget=budget,  # type: ignore[arg-type]
            attacks=split_names(attacks) if attacks else None, ranges=ranges,
            compose=compose, cut_depth=cut_depth, candidates_per_defense=candidates,
            confirm_seeds=confirm_seeds,
            cut=where, epochs=epochs, batch_size=batch_size, victims=victims, seed=seed,
            cache=cache, progress=not quiet)
    except ShieldSplitError as exc:
        fail(exc)
    say(result.summary())
    written = write_outputs([(json_out, result.to_json, "JSON result"),
                             (out, result.save_html, "HTML result")])
    if not result.complete:
        raise typer.Exit(code=130)
    if not written:
        raise typer.Exit(code=1)


__all__ = ["harden", "parse_ranges"]
