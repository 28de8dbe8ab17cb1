"""Adding a defence touches one file (issue 11): this file defines one, registers it, and
the library's own orchestrators (``create_defense``, ``audit`` with the undefended twin as
control, ``compare``) pick it up by name and by what it declares, with no list to edit.

The toy defence quantises the cut activations to their sign on the wire: a strong
(and costly) defence, so the efficacy check below can also fail if the auditor stopped
attacking what the wire carries.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

import shieldsplit as ss
from shieldsplit.audit.auditor import audit
from shieldsplit.compare.frontier import compare
from shieldsplit.data import load_dataset
from shieldsplit.defenses.base import (
    CutDefense,
    available_defenses,
    create_defense,
    register_defense,
    unregister_defense,
)


class SignOnTheWire(CutDefense):
    """Split learning that sends only the sign of each cut activation."""

    name: ClassVar[str] = "toy-sign"

    def __init__(self, model: nn.Module, *, cut: int | str = 2, seed: int = 0) -> None:
        super().__init__(model, cut=cut, seed=seed)

    def transform(self, a: Tensor) -> Tensor:
        # straight-through: the forward sends signs, the gradient passes unchanged
        return a + (torch.sign(a) - a).detach()

    def options(self) -> dict[str, Any]:
        return {}


@pytest.fixture
def registered() -> Iterator[None]:
    register_defense(SignOnTheWire.name, SignOnTheWire)
    try:
        yield
    finally:
        unregister_defense(SignOnTheWire.name)


@pytest.fixture(scope="module")
def digits() -> ss.data.ImageDataset:  # type: ignore[name-defined]
    return load_dataset("digits", seed=0, limit=200)


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return ss.PGSLNet(num_classes=10, image_size=8, width=8, hidden=16)


def test_a_registered_toy_defence_is_built_audited_and_compared(registered, digits) -> None:
    assert "toy-sign" in available_defenses()
    toy = create_defense("toy-sign", tiny(), cut=2, seed=0)
    x, y = digits.x_train, digits.y_train
    toy.fit((x, y), epochs=2, seed=0, progress=False)
    assert set(torch.unique(toy.client(x[:4]).activations).tolist()) <= {-1.0, 0.0, 1.0}

    report = audit(toy, data=(x, y), attacks=["split-black-box"], control_epochs=2,
                   budget="quick", victims=16, progress=False, seed=0)
    r = report.results[0]
    assert r.control is not None and r.control.kind == "undefended twin"
    assert r.control.psnr is not None and r.psnr is not None
    assert r.psnr < r.control.psnr  # signs on the wire rebuild worse than the twin's floats

    table = compare(tiny(), data=digits, defenses=["none", "toy-sign"], membership=False,
                    attacks=["split-black-box"], epochs=1, budget="quick", victims=8,
                    seed=0, progress=False)
    assert [row.defense for row in table.rows] == ["none", "toy-sign"]
    assert table.rows[1].leakage["split-black-box"].status == "ok"
