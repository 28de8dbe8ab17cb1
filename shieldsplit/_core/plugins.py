"""Where registered components come from: the built-in modules of a package, found by
walking it, and third-party plugins, found by ``importlib.metadata`` entry points.

A new built-in attack or defence is one module in ``shieldsplit/attacks/`` or
``shieldsplit/defenses/`` that registers itself when imported: no list to edit. A
third-party package advertises its components in its own ``pyproject.toml``::

    [project.entry-points."shieldsplit.attacks"]
    my-attack = "my_package.attacks:MyAttack"      # a class: registered under "my-attack"

    [project.entry-points."shieldsplit.defenses"]
    my-defense = "my_package.defense"               # a module: importing it registers

Once installed, they are available to :func:`shieldsplit.audit`, :func:`shieldsplit.compare`
and every CLI command, exactly like the built-in ones.

A plugin that fails to load is skipped with a logged warning naming it and the error (one
broken package must not take the library down); :func:`plugin_failures` lists them.

Example:
    >>> import_package_modules("shieldsplit.functional")  # every functional module, imported
    >>> sorted(g for g in ENTRY_POINT_GROUPS)
    ['shieldsplit.attacks', 'shieldsplit.defenses']
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import pkgutil
import types
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

#: The entry-point groups shieldsplit reads, by registry.
ENTRY_POINT_GROUPS = ("shieldsplit.attacks", "shieldsplit.defenses")

_FAILURES: dict[str, str] = {}


def import_package_modules(package: str, *, skip: tuple[str, ...] = ()) -> None:
    """Import every module of ``package`` (recursively), so each registers what it defines.

    Args:
        package: a dotted package name.
        skip: module basenames not to import.
    """
    pkg = importlib.import_module(package)
    for info in pkgutil.walk_packages(pkg.__path__, f"{package}."):
        if info.name.rsplit(".", 1)[-1] not in skip:
            importlib.import_module(info.name)


def load_entry_points(group: str, register: Callable[[str, Any], None]) -> list[str]:
    """Load the installed plugins of an entry-point ``group``.

    An entry point naming a class (or any non-module object) is registered under the
    entry point's name with ``register(name, obj)``; one naming a module is imported
    (the module registers what it defines).

    Args:
        group: the entry-point group, e.g. ``"shieldsplit.attacks"``.
        register: the registry's ``register(name, obj)``.

    Returns:
        The entry-point names loaded.
    """
    loaded = []
    for ep in importlib.metadata.entry_points(group=group):
        try:
            obj = ep.load()
            if not isinstance(obj, types.ModuleType):
                register(ep.name, obj)
        except Exception as exc:  # a broken plugin must not break the library
            _FAILURES[f"{group}:{ep.name}"] = f"{type(exc).__name__}: {exc}"
            logger.warning("plugin %s (%s, group %s) could not be loaded and is skipped: %s",
                           ep.name, ep.value, group, exc)
            continue
        loaded.append(ep.name)
    return loaded


def plugin_failures() -> dict[str, str]:
    """Plugins that failed to load, as ``{"group:name": "error"}``."""
    return dict(_FAILURES)


__all__ = ["ENTRY_POINT_GROUPS", "import_package_modules", "load_entry_points", "plugin_failures"]
