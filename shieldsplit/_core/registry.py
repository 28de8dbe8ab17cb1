"""One name-to-object registry, shared by attacks, defences, adversaries, data sets and papers.

Every public registry in shieldsplit (``register_attack``/``create_attack``,
``register_defense``, ``register_adversary``, ``register_dataset``,
``register_experiment``) is a :class:`Registry`, so they all refuse the same
bad input the same way: an empty or non-string name, a name taken by another
object, and an unknown name on lookup, whose error lists the valid ones.

Example:
    >>> reg = Registry("widget", unregister_hint="unregister_widget()")
    >>> reg.register("a", int)
    >>> reg.register("a", int)  # the same object again is a no-op
    >>> reg.names(), reg.get("a") is int
    (['a'], True)
    >>> try:
    ...     reg.get("b")
    ... except ConfigError as exc:
    ...     print(exc)
    Invalid configuration: expected one of ['a'], received 'b'. Fix: pick a registered widget name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from shieldsplit.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names mapped to objects, with typed errors for bad names.

    Args:
        kind: what the registry holds, as the errors name it (``"attack"``).
        normalize: maps a name to its key (for example ``str.lower``); identity if None.
        unregister_hint: the call that frees a name, named in the "taken" error.
        lookup_hint: the fix suggested for an unknown name.
        populate: called once, before the first lookup (:meth:`names`, :meth:`get`,
            ``in``), to register what is not registered at import: the built-in modules
            of a package and the installed plugins (:mod:`shieldsplit._core.plugins`).
    """

    def __init__(
        self, kind: str, *, normalize: Callable[[str], str] | None = None,
        unregister_hint: str = "unregister it", lookup_hint: str | None = None,
        populate: Callable[[], None] | None = None,
    ) -> None:
        self.kind = kind
        self._normalize = normalize or (lambda name: name)
        self._unregister_hint = unregister_hint
        self._lookup_hint = lookup_hint or f"pick a registered {kind} name"
        self._items: dict[str, T] = {}
        self._populate = populate
        self._populated = populate is None

    def populate(self) -> None:
        """Run the ``populate`` hook if it has not run yet (re-entrant calls return at once)."""
        if self._populated or self._populate is None:
            return
        self._populated = True  # before the call: the hook's imports may look names up
        try:
            self._populate()
        except BaseException:
            self._populated = False
            raise

    def key(self, name: Any) -> str:
        """The registry key of ``name``.

        Raises:
            ConfigError: if ``name`` is not a non-empty string.
        """
        if not isinstance(name, str) or not name.strip():
            raise ConfigError.build(
                what="name", expected=f"a non-empty {self.kind} name", received=repr(name),
                fix=f"pass a name such as 'my-{self.kind}'",
            )
        return self._normalize(name)

    def register(self, name: str, obj: T, *, overwrite: bool = False) -> None:
        """Register ``obj`` under ``name``; registering the same object again is a no-op.

        Raises:
            ConfigError: for a bad name, or one taken by another object (unless ``overwrite``).
        """
        key = self.key(name)
        if key in self._items and self._items[key] is not obj and not overwrite:
            raise ConfigError.build(
                what="name", expected=f"a {self.kind} name not yet registered "
                f"(taken: {self.names()})", received=repr(name),
                fix=f"pick another name or {self._unregister_hint} first",
            )
        self._items[key] = obj

    def unregister(self, name: str, *, missing_ok: bool = True) -> None:
        """Remove ``name``.

        Raises:
            ConfigError: if the name is not registered and ``missing_ok`` is false.
        """
        key = self.key(name)
        if key not in self._items:
            # a built-in not yet loaded must be loaded before it can be removed, or the
            # first lookup would bring it back
            self.populate()
        if key not in self._items and not missing_ok:
            raise self._unknown(name)
        self._items.pop(key, None)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self.populate()
        return sorted(self._items)

    def get(self, name: Any) -> T:
        """The object registered under ``name``.

        Raises:
            ConfigError: for an unknown name; the message lists the valid ones.
        """
        key = self.key(name) if isinstance(name, str) and name.strip() else None
        if key is not None and key not in self._items:
            self.populate()
        if key is None or key not in self._items:
            raise self._unknown(name)
        return self._items[key]

    def __contains__(self, name: object) -> bool:
        if not (isinstance(name, str) and name.strip()):
            return False
        if self.key(name) not in self._items:
            self.populate()
        return self.key(name) in self._items

    def _unknown(self, name: Any) -> ConfigError:
        return ConfigError.build(
            what=self.kind, expected=f"one of {self.names()}", received=repr(name),
            fix=self._lookup_hint,
        )


__all__ = ["Registry"]
