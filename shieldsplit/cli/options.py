"""``shieldsplit options``: every registered defence's and attack's options (name, type,
default), read from each one's ``Config``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from shieldsplit.cli.common import cell, print_table


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
        table = Table(title=cell(title))
        for column in ("name", "option", "type", "default"):
            table.add_column(column, overflow="fold")
        for name, rows in found.items():
            for i, (field, kind, default) in enumerate(rows or [("(none)", "", "")]):
                table.add_row(*map(cell, (name if i == 0 else "", field, kind, default)))
        print_table(table)


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


__all__ = ["options"]
