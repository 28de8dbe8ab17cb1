"""The shared Registry behind every register_*/create_* pair."""

from __future__ import annotations

import pytest

from shieldsplit._core.registry import Registry
from shieldsplit.attacks import available_attacks, create_attack
from shieldsplit.data import available_datasets, load_dataset
from shieldsplit.defenses.base import available_defenses, create_defense
from shieldsplit.errors import ConfigError
from shieldsplit.evasion.adversarial import available_adversaries, create_adversary
from shieldsplit.experiments.reproduce import available_papers, reproduce


def test_register_get_names() -> None:
    reg: Registry[object] = Registry("thing")
    a, b = object(), object()
    reg.register("b", b)
    reg.register("a", a)
    reg.register("a", a)  # same object again: a no-op
    assert reg.names() == ["a", "b"]
    assert reg.get("a") is a and "a" in reg and "c" not in reg


def test_taken_name_needs_overwrite() -> None:
    reg: Registry[object] = Registry("thing", unregister_hint="drop_thing()")
    first, second = object(), object()
    reg.register("x", first)
    with pytest.raises(ConfigError, match=r"drop_thing\(\)") as info:
        reg.register("x", second)
    assert "['x']" in str(info.value)
    assert reg.get("x") is first  # the failed call changed nothing
    reg.register("x", second, overwrite=True)
    assert reg.get("x") is second


@pytest.mark.parametrize("name", ["", "   ", None, 3, b"x"])
def test_bad_names_are_refused(name: object) -> None:
    reg: Registry[object] = Registry("thing")
    with pytest.raises(ConfigError, match="non-empty thing name"):
        reg.register(name, object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"one of \[\]"):
        reg.get(name)
    assert reg.names() == []


def test_unknown_name_lists_the_valid_ones() -> None:
    reg: Registry[int] = Registry("thing", lookup_hint="register it first")
    reg.register("one", 1)
    with pytest.raises(ConfigError, match=r"one of \['one'\].*register it first"):
        reg.get("two")


def test_unregister() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("one", 1)
    reg.unregister("one")
    reg.unregister("one")  # missing_ok by default
    with pytest.raises(ConfigError, match="one of"):
        reg.unregister("one", missing_ok=False)


def test_normalize() -> None:
    reg: Registry[int] = Registry("thing", normalize=lambda n: n.strip().lower())
    reg.register(" One ", 1)
    assert reg.names() == ["one"] and reg.get("ONE") == 1


@pytest.mark.parametrize(
    ("names", "create"),
    [
        (available_attacks, lambda: create_attack("no-such")),
        (available_defenses, lambda: create_defense("no-such", None)),  # type: ignore[arg-type]
        (available_adversaries, lambda: create_adversary("no-such")),
        (available_datasets, lambda: load_dataset("no-such")),
        (available_papers, lambda: reproduce("no-such")),
    ],
    ids=["attack", "defense", "adversary", "dataset", "paper"],
)
def test_every_public_registry_lists_valid_names_on_a_typo(names, create) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        create()
    assert str(names()) in str(info.value)


def test_every_attack_validates_its_options_with_its_config() -> None:
    """Each registered attack's Config forbids unknown options; a bad value is a typed
    error naming the option, and the attack exposes every config field as an attribute."""
    from shieldsplit.attacks import attack_class, available_attacks, create_attack
    from shieldsplit.errors import ConfigError

    for name in available_attacks():
        config = attack_class(name).Config
        assert config.model_config.get("extra") == "forbid", name
        attack = create_attack(name, seed=0, progress=False)
        for field in config.model_fields:
            assert getattr(attack, field) == getattr(attack.config, field), (name, field)
        with pytest.raises(ConfigError) as info:
            create_attack(name, seed=0, no_such_option=1)
        assert info.value.what == "no_such_option", name
        floats = [f for f, i in config.model_fields.items() if i.annotation is float]
        for field in floats[:1]:
            with pytest.raises(ConfigError) as info:
                create_attack(name, seed=0, **{field: "fast"})
            assert info.value.what == field, name
