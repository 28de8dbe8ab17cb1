"""``Compose`` (issue 24): one cut defence from the steps of registered cut defences.

The wire of a composition is its parts' transforms applied in order to the same cut
activations, and its loss is cross-entropy plus the sum of its parts' regularisers:
checked against the parts built on their own, under the same seed, so a composition
that skipped, reordered or double-counted a step fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shieldsplit.defenses.base import (
    CutDefense,
    Surface,
    create_defense,
    register_defense,
    require_knob,
    unregister_defense,
)
from shieldsplit.defenses.compose import (
    Compose,
    composable_defenses,
    compose_knob,
    compose_options,
)
from shieldsplit.errors import ConfigError
from shieldsplit.models import PGSLNet


class Double(CutDefense):
    """A deterministic wire step that does not commute with additive noise."""

    name: ClassVar[str] = "test-double"
    surfaces: ClassVar[frozenset[Surface]] = frozenset({"split"})

    def transform(self, a: Tensor) -> Tensor:
        return 2.0 * a


@pytest.fixture
def double() -> Iterator[None]:
    register_defense(Double.name, Double)
    try:
        yield
    finally:
        unregister_defense(Double.name)


def net() -> nn.Module:
    torch.manual_seed(0)
    return PGSLNet(num_classes=3, image_size=8, width=8, hidden=8)


def batch() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(12, 1, 8, 8, generator=g), torch.arange(12) % 3


def single(name: str, **options: Any) -> CutDefense:
    built = create_defense(name, net(), cut=2, seed=0, **options)
    assert isinstance(built, CutDefense)
    return built


def compose(*parts: tuple[str, dict]) -> Compose:
    built = create_defense("compose", net(), cut=2, seed=0,
                           parts=[{"name": n, "options": o} for n, o in parts])
    assert isinstance(built, Compose)
    return built


def test_the_wire_is_the_parts_transforms_in_order(double: None) -> None:
    noise_then_double = compose(("laplace", {"scale": 0.5}), ("test-double", {}))
    double_then_noise = compose(("test-double", {}), ("laplace", {"scale": 0.5}))
    alone = single("laplace", scale=0.5)
    x, _ = batch()
    with torch.no_grad():
        a = alone.head(x)
        torch.testing.assert_close(noise_then_double.head(x), a, rtol=0, atol=0)
        torch.manual_seed(5)
        wire = noise_then_double.client(x).activations
        torch.manual_seed(5)
        expected = 2.0 * alone.client(x).activations
        torch.testing.assert_close(wire, expected, rtol=0, atol=0)
        torch.manual_seed(5)
        other = double_then_noise.client(x).activations
        torch.manual_seed(5)
        torch.testing.assert_close(other, alone.transform(2.0 * a), rtol=0, atol=0)
    assert not torch.allclose(wire, other)  # the order of the parts is kept
    assert noise_then_double.surfaces == frozenset({"split"})  # every part's surfaces


def test_nopeek_with_laplace_trains_on_the_noisy_wire_and_the_summed_penalty() -> None:
    both = compose(("nopeek", {"alpha": 1.0}), ("laplace", {"scale": 0.5}))
    nopeek = single("nopeek", alpha=1.0)
    laplace = single("laplace", scale=0.5)
    x, y = batch()
    torch.manual_seed(9)
    loss, logits = both.training_loss(both, x, y)
    torch.manual_seed(9)
    noisy_loss, noisy_logits = laplace.training_loss(laplace, x, y)
    penalty = nopeek.regularizer(x, nopeek.head(x), y)
    assert penalty is not None and penalty.item() > 0.1
    torch.testing.assert_close(logits, noisy_logits, rtol=0, atol=0)
    torch.testing.assert_close(loss, noisy_loss + penalty)
    # the penalty reaches the client's weights: NoPeek's gradient is in the composition's
    loss.backward()
    torch.manual_seed(9)
    noisy_loss.backward()
    first = next(both.head.parameters()).grad
    assert first is not None
    other = next(laplace.head.parameters()).grad
    assert other is not None and not torch.allclose(first, other)


def test_the_regularisers_add_up() -> None:
    both = compose(("nopeek", {"alpha": 1.0}), ("bido", {"lambda_x": 0.5, "lambda_y": 0.2}))
    nopeek = single("nopeek", alpha=1.0)
    bido = single("bido", lambda_x=0.5, lambda_y=0.2)
    x, y = batch()
    a = both.head(x)
    first, second = (d.regularizer(x, a, y) for d in (nopeek, bido))
    assert first is not None and second is not None
    torch.testing.assert_close(both.regularizer(x, a, y), first + second)
    loss, logits = both.training_loss(both, x, y)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y) + first + second)
    off = compose(("nopeek", {"alpha": 0.0}), ("bido", {"lambda_x": 0.0, "lambda_y": 0.0}))
    assert off.regularizer(x, a, y) is None


def test_one_network_is_saved() -> None:
    both = compose(("nopeek", {}), ("laplace", {}))
    plain = single("none")
    assert both.state_dict().keys() == plain.state_dict().keys()
    assert [p.options for p in both.config.parts] == [{"alpha": 0.1}, {"scale": 0.5}]


@pytest.mark.parametrize("name", ["dpsgd", "jsma-input", "pgsl", "latent-fixed",
                                  "latent-learned", "compose", "none"])
def test_parts_that_change_the_training_are_refused(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        compose(("laplace", {}), (name, {}))
    assert info.value.what == "parts" and repr(name) in str(info.value)
    assert "'nopeek'" in str(info.value)  # names what can be composed


def test_composable_defences_are_read_from_their_classes(double: None) -> None:
    assert composable_defenses() == ["bido", "laplace", "nopeek", "test-double"]


@pytest.mark.parametrize(("parts", "what"), [
    ([{"name": "laplace"}], "parts"),
    ([{"name": "laplace"}, {"name": "nopeek"}, {"name": "laplace"}], "parts"),
    ([{"name": "nopeek"}, {"name": "laplace", "options": {"scale": -1.0}}], "laplace.scale"),
    ([{"name": "nopeek"}, {"name": "laplace", "options": {"sigma": 1.0}}], "laplace.sigma"),
    ([{"name": "nopeek"}, {"name": "laplace", "opts": {}}], "parts.1.opts"),
])
def test_bad_parts_are_typed_errors(parts: list, what: str) -> None:
    with pytest.raises(ConfigError) as info:
        create_defense("compose", net(), cut=2, parts=parts)
    assert info.value.what == what


def test_the_strength_is_the_last_parts_knob(double: None) -> None:
    parts: list[dict[str, Any]] = [{"name": "nopeek", "options": {"alpha": 2.0}},
                                   {"name": "laplace"}]
    assert compose_knob(parts) == require_knob("laplace")
    built = create_defense("compose", net(), cut=2, seed=0, **compose_options(parts, 3.0))
    assert isinstance(built, Compose)
    assert [s.options() for s in built.steps] == [{"alpha": 2.0}, {"scale": 3.0}]
    assert compose_knob(built.config.parts).value_of(built.steps[-1].config) == 3.0
    assert Compose.knob is None and built.strength is None  # no class-level strength
    with pytest.raises(ConfigError, match="scale"):
        compose_options(parts, -1.0)
    with pytest.raises(ConfigError, match="no declared strength"):
        compose_options([{"name": "laplace"}, {"name": "test-double"}], 1.0)
