"""The auditor end to end, and one matrix over every registered attack.

The matrix runs each attack through seeding (same seed, same reconstruction),
bad input (a wrong observation gives a typed error), hook clean-up (no hook is
left on the attacked model) and no mutation of the attacked model. It fails if
an attack is registered without a row here.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import torch
from torch import nn

import shieldsplit as ss
from shieldsplit.attacks import (
    AttackContext,
    Observation,
    attack_class,
    available_attacks,
    create_attack,
)
from shieldsplit.attacks.observe import observe_gradient, observe_update
from shieldsplit.attacks.observe_split import observe_activations
from shieldsplit.audit.auditor import AuditReport, audit
from shieldsplit.data import load_dataset
from shieldsplit.errors import (
    ConfigError,
    EmptyDataError,
    InvalidCutError,
    ShieldSplitError,
    UnsupportedModelError,
)
from shieldsplit.models import create_model

#: Per attack: tiny settings so that the matrix stays fast on 2 cores.
FAST: dict[str, dict[str, Any]] = {
    "split-black-box": {"epochs": 2},
    "adaptive-split": {"epochs": 2},
    "split-white-box": {"iterations": 15, "restarts": 1},
    "gan-prior": {"epochs": 1, "iterations": 10, "restarts": 1},
    "dlg": {"iterations": 4, "restarts": 1},
    "idlg": {"iterations": 4, "restarts": 1},
    "inverting-gradients": {"iterations": 15, "restarts": 1},
    "inverting-gradients-fedavg": {"iterations": 15, "restarts": 1},
    "imprint": {"bins": 16},
    "fsha": {"client_steps": 4, "pretrain_epochs": 1, "width": 8, "discriminator_width": 8},
    "fedavg-simulation": {"iterations": 3, "restarts": 1, "feature_iterations": 3},
    "sdar": {"epochs": 1, "width": 8, "discriminator_width": 8},
    "unsplit": {"iterations": 10, "restarts": 1},
}

#: The generic split-learning attacks, by their declarations.
SPLIT_ATTACKS = [a for a in sorted(FAST) if attack_class(a).position() == "split"
                 and not attack_class(a).adapts_to and attack_class(a).server == "honest"]


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_dataset("digits", seed=0, limit=120)
    return ds.x_train, ds.y_train


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ss.PGSLNet(num_classes=10, image_size=8, width=8, hidden=16)


def all_hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def setup_attack(name: str, x: torch.Tensor, y: torch.Tensor) -> tuple[
    AttackContext, Observation, nn.Module
]:
    """The context, a victim observation and the model the attack touches."""
    aux_x, aux_y = x[8:], y[8:]
    if attack_class(name).position() == "federated":
        torch.manual_seed(0)
        model = create_model("small-convnet", num_classes=10, image_size=8)
        ctx = AttackContext(image_shape=(1, 8, 8), num_classes=10, model=model,
                            auxiliary_images=aux_x, auxiliary_labels=aux_y, seed=0)
        if attack_class(name).server == "malicious":  # the client trains what was sent
            attacker = create_attack(name, seed=3, progress=False, **FAST[name])
            attacker.prepare(ctx)
            return ctx, observe_gradient(attacker.modify(model), x[:4], y[:4]), model
        if attack_class(name).observes == "update":
            return ctx, observe_update(model, x[:2], y[:2], local_epochs=1,
                                       local_batch_size=2, lr=0.01), model
        return ctx, observe_gradient(model, x[:1], y[:1]), model
    if name == "adaptive-split":
        shield = ss.SplitShield(small_net(), cut=2, input_shape=(1, 8, 8), seed=0)
        ctx = AttackContext(image_shape=(1, 8, 8), num_classes=10, model=shield.head,
                            auxiliary_images=aux_x, auxiliary_labels=aux_y, defense=shield,
                            seed=0)
        return ctx, observe_activations(shield, x[:4]), shield
    head = ss.split_model(small_net(), 2).head.eval()
    ctx = AttackContext(image_shape=(1, 8, 8), num_classes=10, model=head,
                        auxiliary_images=aux_x, auxiliary_labels=aux_y, seed=0)
    if attack_class(name).server == "malicious":  # the server steers the client first
        attacker = create_attack(name, seed=3, progress=False, **FAST[name])
        attacker.prepare(ctx)
        return ctx, observe_activations(attacker.modify(head, x[:16]), x[:4]), head
    return ctx, observe_activations(head, x[:4]), head


def test_every_registered_attack_is_in_the_matrix() -> None:
    # the reconstruction family's matrix (tests/test_registry.py checks every family's
    # Config and declarations; each family's verb has its own test file)
    assert set(available_attacks("reconstruction")) == set(FAST)


@pytest.mark.parametrize("name", sorted(FAST))
def test_attack_matrix(name: str, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    ctx, obs, touched = setup_attack(name, x, y)
    before = copy.deepcopy(touched.state_dict())
    hooks = all_hooks(touched)

    images = []
    for _ in range(2):  # seeding: the same seed gives the same reconstruction
        attack = create_attack(name, seed=3, progress=False, **FAST[name])
        attack.prepare(ctx)
        if obs.kind == "activations" and attack_class(name).server == "malicious":
            # a steering server decodes the client it steered itself (same seed: same)
            obs = observe_activations(attack.modify(touched, x[:16]), x[:4])
        rec = attack.reconstruct(obs)
        assert rec.images.shape == (obs.batch_size, 1, 8, 8)
        assert float(rec.images.min()) >= 0.0 and float(rec.images.max()) <= 1.0
        images.append(rec.images)
    torch.testing.assert_close(images[0], images[1], rtol=0, atol=0)

    # bad input: an observation of the wrong kind is a typed error
    wrong = Observation(kind="update" if obs.kind != "update" else "activations",
                        batch_size=1, image_shape=(1, 8, 8), update={}, activations=None)
    with pytest.raises(ShieldSplitError):
        attack.reconstruct(wrong)

    # hook clean-up and no mutation of the attacked model
    assert all_hooks(touched) == hooks
    after = touched.state_dict()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)


def test_attack_needs_prepare(digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    _, obs, _ = setup_attack("split-black-box", x, y)
    with pytest.raises(ShieldSplitError):
        create_attack("split-black-box", seed=0, progress=False).reconstruct(obs)


def test_unknown_attack_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError, match="split-black-box"):
        create_attack("no-such-attack")


# --------------------------------------------------------------------------- audit()
AUDIT_KW: dict[str, Any] = {"budget": "quick", "victims": 8, "progress": False}


def fast_attacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the auditor build every attack with the FAST settings."""
    from shieldsplit.audit import auditor as audit_module

    real = audit_module._attacks.create_attack

    def patched(name: str, **options: Any) -> Any:
        return real(name, **{**options, **FAST[name]})

    monkeypatch.setattr(audit_module._attacks, "create_attack", patched)
    monkeypatch.setitem(audit_module.REFERENCE_EPOCHS, "quick", 1)
    monkeypatch.setitem(audit_module.FEDERATED_VICTIMS, "quick", 1)


def test_audit_plain_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
                           digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    fast_attacks(monkeypatch)
    x, y = digits
    net = small_net()
    state = copy.deepcopy(net.state_dict())
    attacks = ["split-black-box", "split-white-box", "idlg"]
    report = audit(net, data=(x, y), cut=2, seed=0, attacks=attacks, **AUDIT_KW)
    assert report.complete and report.defense == "none" and report.cut == 2
    assert [r.attack for r in report.results] == attacks
    assert all(r.status == "ok" for r in report.results), report.summary()
    assert sorted(report.ranking) == sorted(attacks)
    assert report.victims == 8 and report.auxiliary == len(x) - 8
    assert 0.0 <= report.clean_accuracy <= 1.0
    assert report.distance_correlation is not None and 0 <= report.distance_correlation <= 1
    idlg = next(r for r in report.results if r.attack == "idlg")
    assert idlg.label_recovery is not None
    for key, value in state.items():  # the audited model is not modified
        torch.testing.assert_close(net.state_dict()[key], value, rtol=0, atol=0)
    assert "split-black-box" in report.summary()

    # JSON round trip with a stable schema, written atomically
    report.to_json(tmp_path / "a.json")
    again = AuditReport.model_validate_json((tmp_path / "a.json").read_text())
    assert again.model_dump() == report.model_dump()
    assert "results" in AuditReport.model_json_schema()["properties"]

    # reconstructions are written only when asked
    report.save_html(tmp_path / "a.html")
    text = (tmp_path / "a.html").read_text()
    assert "originals (top)" not in text and "split-black-box" in text
    report.save_html(tmp_path / "b.html", include_images=True)
    assert "originals (top)" in (tmp_path / "b.html").read_text()
    assert not list(tmp_path.glob(".*tmp"))

    # determinism: the same seed gives the same report (apart from timings)
    second = audit(net, data=(x, y), cut=2, seed=0, attacks=attacks, **AUDIT_KW)

    def strip(r: AuditReport) -> Any:
        d = json.loads(r.model_dump_json())
        for k in ("created",):
            d.pop(k)
        for res in d["results"]:
            res.pop("seconds")
        return d

    assert strip(second) == strip(report)


def test_audit_shield_runs_the_adaptive_attack(
    monkeypatch: pytest.MonkeyPatch, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    fast_attacks(monkeypatch)
    x, y = digits
    shield = ss.SplitShield(small_net(), cut=2, input_shape=(1, 8, 8), seed=0)
    report = audit(shield, data=(x, y), seed=0, attacks=["adaptive-split"], **AUDIT_KW)
    assert report.defense == "pgsl"
    assert report.results[0].threat_model == "adaptive" and report.results[0].status == "ok"
    with pytest.raises(ConfigError):  # federated attacks do not apply to split learning
        audit(shield, data=(x, y), seed=0, attacks=["idlg"], **AUDIT_KW)


@pytest.mark.parametrize("defense", ["pgsl", "none"])
def test_every_split_attack_runs_on_a_defence_wire(
    monkeypatch: pytest.MonkeyPatch, digits: tuple[torch.Tensor, torch.Tensor], defense: str
) -> None:
    fast_attacks(monkeypatch)
    x, y = digits
    from shieldsplit.defenses.base import create_defense

    wrapped = create_defense(defense, small_net(), cut=2, seed=0)
    report = audit(wrapped, data=(x, y), seed=0, attacks=SPLIT_ATTACKS, control=None,
                   **AUDIT_KW)
    assert report.defense == defense
    assert [r.status for r in report.results] == ["ok"] * len(SPLIT_ATTACKS), [
        r.error for r in report.results]


def test_cancelled_audit_returns_a_partial_report(
    monkeypatch: pytest.MonkeyPatch, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    fast_attacks(monkeypatch)
    import shieldsplit.attacks.split as split_module

    def interrupted(self: Any, observation: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(split_module.WhiteBoxInversion, "reconstruct", interrupted)
    x, y = digits
    report = audit(small_net(), data=(x, y), cut=2, seed=0,
                   attacks=["split-black-box", "split-white-box", "idlg"], **AUDIT_KW)
    assert not report.complete
    assert [r.status for r in report.results] == ["ok", "cancelled"]
    assert "INCOMPLETE" in report.summary()


class TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 64, 10)

    def forward(self, x: torch.Tensor) -> Any:
        return self.fc(self.conv(x).flatten(1)), x


def test_audit_bad_input(digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    with pytest.raises(EmptyDataError):  # fewer images than the audit needs
        audit(small_net(), data=(x[:10], y[:10]), **AUDIT_KW)
    with pytest.raises(InvalidCutError):
        audit(small_net(), data=(x, y), cut=99, **AUDIT_KW)
    with pytest.raises(UnsupportedModelError):  # a model that does not return logits
        audit(TupleOut(), data=(x, y), cut=1, **AUDIT_KW)
    with pytest.raises(ConfigError):
        audit(small_net(), data=(x, y), attacks=["no-such-attack"], **AUDIT_KW)
    with pytest.raises(ConfigError):
        audit(small_net(), data=(x, y), budget="huge", victims=8)  # type: ignore[arg-type]


def test_attack_options_reach_the_attack(
        digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    """``attack_options`` are checked by the attack's Config before any work and change
    what the attack does."""
    x, y = digits
    kw = {**AUDIT_KW, "attacks": ["split-white-box"]}
    fast = audit(small_net(), data=(x, y),
                 attack_options={"split-white-box": {"iterations": 1}}, **kw).results[0]
    slow = audit(small_net(), data=(x, y),
                 attack_options={"split-white-box": {"iterations": 40}}, **kw).results[0]
    assert fast.psnr != slow.psnr  # the option changed what the attack did
    for bad, what in (({"split-white-box": {"iterations": 0}}, "iterations"),
                      ({"split-white-box": {"no_such": 1}}, "no_such"),
                      ({"split-black-box": {"epochs": 1}}, "attack_options")):
        with pytest.raises(ConfigError) as info:
            audit(small_net(), data=(x, y), attack_options=bad, **kw)
        assert info.value.what == what
