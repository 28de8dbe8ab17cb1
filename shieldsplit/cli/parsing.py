"""The repeatable ``NAME.FIELD=VALUE`` options: ``--option`` (a defence's), ``--attack-option``
(an attack's), ``--tolerance`` (the audit's) and ``--sweep`` (a defence's strengths), each
parsed and checked against its ``Config`` before any work.

Each is checked in two steps: its form and names first, without torch (``read_*``,
:func:`parse_dotted`, :func:`parse_sweeps`), then its values by the ``Config`` that owns
them (``parse_*``, which import the component), still before any data or model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shieldsplit.cli.choices import ATTACKS, TOLERANCE_FIELDS
from shieldsplit.cli.common import check_choice
from shieldsplit.errors import ConfigError


def parse_sweeps(specs: Sequence[str]) -> dict[str, list[float]]:
    """``--sweep NAME=V1,V2`` specs -> ``{name: [values]}``.

    Raises:
        ConfigError: a spec without a name, without values, or with a non-numeric value.

    Example:
        >>> parse_sweeps(["laplace=0.1, 0.5,1"])
        {'laplace': [0.1, 0.5, 1.0]}
    """
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
    given = parse_dotted(specs, names, option="--option", example="laplace.scale=0.2")
    from shieldsplit.defenses.base import defense_options

    return {name: defense_options(name, fields) for name, fields in given.items()}


def read_tolerance(specs: Sequence[str]) -> dict[str, str]:
    """``--tolerance FIELD=VALUE`` specs -> ``{field: value}``, the form and field names
    checked (without torch; :func:`parse_tolerance` checks the values).

    Raises:
        ConfigError: a malformed spec or an unknown field (the nearest one as its fix).

    Example:
        >>> read_tolerance(["reidentification=0.05"])
        {'reidentification': '0.05'}
    """
    given: dict[str, str] = {}
    for spec in specs:
        field, sep, value = spec.partition("=")
        if not sep or not field.strip():
            raise ConfigError.build(what="--tolerance", expected="FIELD=VALUE",
                                    received=repr(spec),
                                    fix="pass --tolerance reidentification=0.05")
        check_choice("--tolerance", field.strip(), TOLERANCE_FIELDS.names())
        given[field.strip()] = value.strip()
    return given


def parse_tolerance(specs: Sequence[str]) -> Any:
    """``--tolerance FIELD=VALUE`` specs -> the audit's tolerance, checked by its model.

    Raises:
        ConfigError: a malformed spec, an unknown field or a value out of range.

    Example:
        >>> parse_tolerance(["reidentification=0.05"]).reidentification
        0.05
    """
    given = read_tolerance(specs)
    from shieldsplit.functional.verdict import check_tolerance

    return check_tolerance(given)


def read_attack_options(specs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--attack-option`` specs -> options per attack, the form and attack names checked
    (without torch; :func:`parse_attack_options` checks the fields and values).

    Raises:
        ConfigError: a malformed spec or an unknown attack (the nearest one as its fix).

    Example:
        >>> read_attack_options(["idlg.iterations=7"])
        {'idlg': {'iterations': 7}}
    """
    return parse_dotted(specs, ATTACKS.names(), option="--attack-option",
                        example="inverting-gradients.iterations=500")


def parse_attack_options(specs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--attack-option`` specs -> options per attack, each checked by its ``Config``.

    Raises:
        ConfigError: a malformed spec, an unknown attack, or a field its ``Config``
            rejects.

    Example:
        >>> parse_attack_options(["inverting-gradients.iterations=500"])
        {'inverting-gradients': {'iterations': 500}}
    """
    given = read_attack_options(specs)
    from shieldsplit.attacks import attack_class

    for name, fields in given.items():
        attack_class(name, "reconstruction").configure(fields)
    return given


__all__ = ["parse_attack_options", "parse_dotted", "parse_options", "parse_sweeps",
           "parse_tolerance", "read_attack_options", "read_tolerance"]
