"""The package's shape (issue 11): no import cycles between shieldsplit's modules, and no
module importing another module's private names (a public hook instead).

Both read the source with ``ast``, so lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import shieldsplit

ROOT = Path(shieldsplit.__file__).parent


def modules() -> dict[str, Path]:
    """``{dotted name: file}`` for every module of the package."""
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ("shieldsplit", *path.relative_to(ROOT).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


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
