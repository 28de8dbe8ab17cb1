"""The package's shape (issues 11 and 23), over ``shieldsplit/`` and ``adapters/``
(installed as ``shieldsplit.adapters``):

- no import cycles between modules;
- no module importing another module's private names (a public hook instead);
- no lower layer importing a higher one (:data:`LAYERS`, the same table as
  ``docs/architecture.md``);
- no module over :data:`MAX_LINES` lines.

Every check reads the source with ``ast``, so imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import shieldsplit
import shieldsplit.adapters

ROOT = Path(shieldsplit.__file__).parent
#: The adapters' folder (``shieldsplit.adapters`` once installed).
ADAPTERS = Path(shieldsplit.adapters.__file__).parent

#: The layers, lowest first: a module may import its own layer and those below it.
#: Keys are top-level names under ``shieldsplit``, or whole dotted modules where one
#: package spans two layers (the data-source adapters sit with the data they load);
#: a key starting with ``=`` names that module alone, not its submodules (the adapters'
#: package root holds the data files' checksums).
LAYERS: list[tuple[str, ...]] = [
    ("errors", "_core", "wire", "settings"),
    ("functional",),
    ("models", "cutting", "training", "datacontract", "observe", "plots",
     "=adapters", "adapters.digits", "adapters.mnist", "adapters.medmnist", "data"),
    ("defenses",),
    ("attacks", "evasion"),
    ("audit",),
    ("compare",),
    ("experiments", "harden", "adapters"),
    ("cli", "__main__"),
]
#: The longest a module may be (issue 23).
MAX_LINES = 800


def modules() -> dict[str, Path]:
    """``{dotted name: file}`` for every module of the package and of its adapters."""
    out = {}
    for root, prefix in ((ROOT, ("shieldsplit",)), (ADAPTERS, ("shieldsplit", "adapters"))):
        for path in root.rglob("*.py"):
            parts = (*prefix, *path.relative_to(root).with_suffix("").parts)
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def layer(module: str) -> int:
    """The layer of a dotted module name (the package root sits above every layer)."""
    if module == "shieldsplit":
        return len(LAYERS)
    rest = module.split(".", 1)[1]
    best = None
    for i, keys in enumerate(LAYERS):
        for key in keys:
            exact = key.startswith("=")
            name = key.lstrip("=")
            hit = rest == name or (not exact and rest.startswith(name + "."))
            if hit and (best is None or len(key) > len(best[1])):
                best = (i, key)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and the docs' table")
    return best[0]


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """``(imported shieldsplit module, imported names)`` for every import in ``path``."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            found += [(s, []) for s in subs]
            if target in known and len(subs) < len(names):
                found.append((target, [n for n in names if f"{target}.{n}" not in known]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name in known]
    return found


def test_no_import_cycles() -> None:
    known = modules()
    graph = {m: {t for t, _ in imports(m, p, known) if t != m} for m, p in known.items()}
    cycles = []

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += graph[m]
        return seen

    for m in graph:
        cycles += [(m, t) for t in graph[m] if m in reach(t)]
    assert not cycles, f"import cycles (module -> a module that leads back): {sorted(cycles)}"


def test_no_module_imports_another_modules_private_names() -> None:
    known = modules()
    reaching = [
        (m, t, n)
        for m, p in known.items()
        for t, names in imports(m, p, known)
        for n in names
        if t != m and n.startswith("_") and not n.startswith("__")
    ]
    assert not reaching, f"private names imported across modules: {reaching}"


def test_every_module_is_in_a_layer_and_imports_only_its_own_or_lower() -> None:
    known = modules()
    upward = [(m, layer(m), t, layer(t)) for m, p in known.items()
              for t, _ in imports(m, p, known) if layer(t) > layer(m)]
    assert not upward, f"lower layers importing higher ones (module, layer, target): {upward}"


def test_the_adapters_are_checked_too() -> None:
    known = modules()
    assert "shieldsplit.adapters.flower" in known or any(
        m.startswith("shieldsplit.adapters.flower.") for m in known)
    assert layer("shieldsplit.adapters.digits") < layer("shieldsplit.defenses.base")
    assert layer("shieldsplit.adapters.flower") > layer("shieldsplit.audit.auditor")


def test_no_module_is_over_the_line_cap() -> None:
    sizes = {m: len(p.read_text().splitlines()) for m, p in modules().items()}
    long = {m: n for m, n in sizes.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them along their concerns): {long}"


def test_function_level_imports_are_read() -> None:
    # the lazy import of the adapters' data sources inside shieldsplit.data's functions
    # must be seen, or the layer check would pass vacuously
    known = modules()
    builtin = "shieldsplit.data.builtin"
    targets = {t for t, _ in imports(builtin, known[builtin], known)}
    assert any(t.startswith("shieldsplit.adapters.") for t in targets)


def test_the_docs_layer_table_is_this_one() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| ") and ". " in line[:6]]
    assert len(rows) == len(LAYERS), "docs/architecture.md's layer table has another count"
    for i, (row, keys) in enumerate(zip(rows, LAYERS, strict=True)):
        assert row.startswith(f"| {i}. "), row
        modules_cell = row.split("|")[2]
        for key in keys:
            assert f"`{key.lstrip('=').replace('.', '/')}" in modules_cell, (i, key)
