"""Every registered attack's declaration, as records and as the threat-model table of
``docs/audit.md`` (rendered from the registry, so the docs cannot drift from the code).

In the spirit of LeakPro's capability levels, each row says where the attacker sits,
whether the server follows the protocol, what it observes and what else it is granted.

Example:
    >>> rows = declarations("membership")
    >>> [r.name for r in rows]
    ['lira', 'loss-threshold', 'rmia']
    >>> threat_table("membership").splitlines()[0]
    '| attack | family | position | server | observes | assumes | adapts to |'
"""

from __future__ import annotations

from shieldsplit.attacks.base import (
    ASSUMPTION_WORDS,
    AttackDeclaration,
    Family,
    attack_class,
    available_attacks,
)

#: The markers between which ``docs/audit.md`` holds the rendered table.
TABLE_START = "<!-- threat-model table: python -m shieldsplit.attacks.catalog -->"
TABLE_END = "<!-- /threat-model table -->"


def declarations(family: Family | None = None) -> list[AttackDeclaration]:
    """The declarations of every registered attack (of one family, or all), by name.

    Args:
        family: an attack family, or None for all.

    Returns:
        One record per attack.
    """
    return [attack_class(n).declaration() for n in available_attacks(family)]


def threat_table(family: Family | None = None) -> str:
    """The threat-model table, one markdown row per registered attack.

    Args:
        family: an attack family, or None for all.

    Returns:
        The markdown table.
    """
    rows = ["| attack | family | position | server | observes | assumes | adapts to |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for d in sorted(declarations(family), key=lambda d: (d.family, d.position, d.name)):
        assumes = ", ".join(ASSUMPTION_WORDS[a] for a in d.assumes) or "-"
        rows.append(f"| `{d.name}` | {d.family.replace('_', ' ')} | {d.position} | "
                    f"{d.server} | {d.observes} | {assumes} | "
                    f"{', '.join(d.adapts_to) or '-'} |")
    return "\n".join(rows)


def render_into(text: str) -> str:
    """``text`` with the table between :data:`TABLE_START` and :data:`TABLE_END` re-rendered.

    Args:
        text: a document holding both markers.

    Returns:
        The document with the current table.

    Raises:
        ValueError: if the markers are missing.
    """
    start, end = text.index(TABLE_START), text.index(TABLE_END)
    return text[: start + len(TABLE_START)] + "\n" + threat_table() + "\n" + text[end:]


def main() -> None:  # pragma: no cover - a maintenance command
    """Re-render the table in ``docs/audit.md`` (run from the repository root)."""
    from pathlib import Path

    from shieldsplit._core.io import atomic_write_text

    path = Path("docs/audit.md")
    atomic_write_text(path, render_into(path.read_text()))


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["TABLE_END", "TABLE_START", "declarations", "main", "render_into", "threat_table"]
