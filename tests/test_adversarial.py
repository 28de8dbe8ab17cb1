"""Tests for shieldsplit.evasion.adversarial (FGSM, BIM, C&W L2 and JSMA evasion attacks).

A small CNN trained for about a second on scikit-learn's 8x8 digits is the
undefended victim; every success-rate threshold below was measured on it (see
the comments) and fails if the attack is broken.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from shieldsplit.errors import (
    ConfigError,
    InputShapeError,
    LabelError,
    NonFiniteInputError,
    ShieldSplitError,
    UnsupportedModelError,
)
from shieldsplit.evasion.adversarial import (
    AdversarialExamples,
    Adversary,
    available_adversaries,
    bim,
    carlini_wagner,
    create_adversary,
    fgsm,
    jsma,
    register_adversary,
    unregister_adversary,
)

FAST = settings(max_examples=15, deadline=None)

#: Options of each registered attack that run fast on the digits model.
QUICK = {
    "fgsm": {"eps": 0.3},
    "bim": {"eps": 0.3, "step_size": 0.05, "steps": 10},
    "cw": {"steps": 30, "lr": 0.05},
    "jsma": {"gamma": 0.5},
}


def _digits_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    )


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, Tensor, Tensor, float]:
    """(model, x, y, test accuracy): x, y are 100 correctly classified test digits."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images / 16.0, dtype=torch.float32)[:, None]
    labels = torch.tensor(data.target)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(images), generator=gen)
    train, test = perm[:1400], perm[1400:]
    model = _digits_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(12):
        order = train[torch.randperm(len(train), generator=gen)]
        for i in range(0, len(order), 64):
            batch = order[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(model(images[batch]), labels[batch]).backward()
            opt.step()
    model.eval()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        pred = model(images[test]).argmax(1)
    accuracy = float((pred == labels[test]).float().mean())
    correct = test[pred == labels[test]][:100]
    return model, images[correct], labels[correct], accuracy


def _tiny_model(seed: int = 0, classes: int = 3, features: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, classes))


# --------------------------------------------------------------------------- victim


def test_victim_is_accurate(digits) -> None:
    model, x, y, accuracy = digits
    assert accuracy > 0.9  # measured 0.985
    assert len(x) == 100
    with torch.no_grad():
        assert bool((model(x).argmax(1) == y).all())


# --------------------------------------------------------------------------- success rates


def test_fgsm_success_rate_far_above_clean_error_and_random_noise(digits) -> None:
    model, x, y, _ = digits
    adv = fgsm(model, x, y, eps=0.3)
    assert adv.success_rate >= 0.9  # measured 1.00 (0.99-1.00 over training seeds)
    assert adv.attack == "fgsm" and adv.target is None
    # random signs of the same L-inf size barely hurt: the gradient's sign is what matters
    gen = torch.Generator().manual_seed(0)
    noisy = (x + 0.3 * torch.sign(torch.randn(x.shape, generator=gen))).clamp(0, 1)
    with torch.no_grad():
        noise_rate = float((model(noisy).argmax(1) != y).float().mean())
    assert noise_rate < 0.4  # measured 0.11-0.18
    assert adv.success_rate >= noise_rate + 0.5
    assert torch.equal(adv.success, adv.predicted != y)
    assert torch.equal(adv.original_labels, y)


def test_bim_at_least_as_strong_as_fgsm(digits) -> None:
    model, x, y, _ = digits
    for eps in (0.15, 0.3):
        one = fgsm(model, x, y, eps=eps)
        many = bim(model, x, y, eps=eps, step_size=eps / 5, steps=10)
        assert many.success_rate >= one.success_rate  # measured 0.92 vs 0.88 at eps=0.15
    assert many.success_rate >= 0.95  # eps=0.3: measured 1.00
    assert many.linf <= 0.3 + 1e-6


def test_cw_succeeds_with_smaller_l2_than_fgsm(digits) -> None:
    model, x, y, _ = digits
    cw = carlini_wagner(model, x, y, c=1.0, steps=100, lr=0.05)
    one = fgsm(model, x, y, eps=0.3)
    assert cw.success_rate >= 0.9  # measured 1.00
    assert cw.l2 < 0.6 * one.l2  # measured 0.68 vs 1.97
    # every successful image is really misclassified, every failed one is returned unchanged
    with torch.no_grad():
        assert torch.equal(model(cw.images).argmax(1) != y, cw.success)
    failed = ~cw.success
    assert torch.equal(cw.images[failed], x[failed])


def test_cw_binary_search_beats_a_too_small_fixed_c(digits) -> None:
    model, x, y, _ = digits
    x, y = x[:30], y[:30]
    fixed = carlini_wagner(model, x, y, c=0.1, steps=50, lr=0.05)
    searched = carlini_wagner(model, x, y, c=0.1, steps=50, lr=0.05, binary_search_steps=2)
    assert fixed.success_rate < 0.7  # measured 0.40-0.47
    assert searched.success_rate >= 0.9  # measured 1.00


def test_jsma_success_rate_within_gamma(digits) -> None:
    model, x, y, _ = digits
    adv = jsma(model, x, y, gamma=0.5, seed=0)
    assert adv.success_rate >= 0.8  # measured 0.89-0.99 over training seeds
    assert adv.l0 <= 0.5
    assert adv.target is not None
    assert torch.equal(adv.success, adv.predicted == adv.target)
    changed = (adv.perturbation != 0).flatten(1).sum(1)
    assert int(changed.max()) <= 32  # floor(64 * 0.5 / 2) pairs
    assert bool((adv.perturbation >= 0).all())  # JSMA here only increases features


def test_jsma_hits_a_given_target(digits) -> None:
    model, x, y, _ = digits
    target = (y + 1) % 10
    adv = jsma(model, x, y, target=target, gamma=0.5)
    assert torch.equal(adv.target, target)
    assert adv.success_rate >= 0.75  # measured 0.86-0.99
    with torch.no_grad():
        hit = model(adv.images).argmax(1) == target
    assert torch.equal(hit, adv.success)


def test_jsma_small_gamma_changes_few_features(digits) -> None:
    model, x, y, _ = digits
    adv = jsma(model, x, y, gamma=0.1)
    changed = (adv.perturbation != 0).flatten(1).float().mean(1)
    assert float(changed.max()) <= 0.1
    assert adv.success_rate < jsma(model, x, y, gamma=0.5).success_rate  # 0.17 vs 0.89


# --------------------------------------------------------------------------- JSMA algorithm


def _pair_model() -> nn.Module:
    """Two classes on 4 features; Z_1 = W1.x (target), Z_0 = W0.x + 10.

    Single features: f0 has the largest alpha but also raises class 0; f3 has the
    best single saliency. Pairs (a > 0, b < 0): (1,3) scores 1.5 * 4 = 6, (2,3) 5.6,
    (1,2) 3.8, (0,3) 3.5; so the pairwise map picks features 1 and 3.
    """
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[2.0, -1.0, -1.0, -3.0], [3.0, 1.0, 0.9, 0.5]]))
        lin.bias.copy_(torch.tensor([10.0, 0.0]))
    return nn.Sequential(nn.Flatten(), lin)


@pytest.mark.parametrize("theta", [1.0, 0.3])
def test_jsma_picks_the_best_pair(theta: float) -> None:
    model = _pair_model()
    x = torch.zeros(1, 1, 2, 2)
    adv = jsma(model, x, torch.tensor([0]), target=1, theta=theta, gamma=0.5)
    expected = torch.tensor([0.0, theta, 0.0, theta]).view(1, 1, 2, 2)
    assert torch.allclose(adv.images, expected)
    assert not bool(adv.success[0])  # logit 10 - 4 * theta... still class 0


def test_jsma_stops_when_target_reached() -> None:
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[-0.1, -0.1, -0.1, -0.1], [1.0, 1.0, 1.0, 1.0]]))
        lin.bias.copy_(torch.tensor([1.5, 0.0]))
    model = nn.Sequential(nn.Flatten(), lin)
    adv = jsma(model, torch.zeros(1, 1, 2, 2), torch.tensor([0]), target=1, gamma=1.0)
    assert bool(adv.success[0])
    assert int((adv.perturbation != 0).sum()) == 2  # one pair is enough: 2 > 1.5 - 0.2


def test_jsma_random_targets_differ_from_labels_and_follow_the_seed() -> None:
    model = _tiny_model(classes=5)
    x = torch.rand(200, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.arange(200) % 5
    a = jsma(model, x, y, gamma=0.25, seed=3)
    b = jsma(model, x, y, gamma=0.25, seed=3)
    c = jsma(model, x, y, gamma=0.25, seed=4)
    assert a.target is not None and c.target is not None
    assert bool((a.target != y).all())
    assert set(a.target.tolist()) == set(range(5))
    assert torch.equal(a.target, b.target) and torch.equal(a.images, b.images)
    assert not torch.equal(a.target, c.target)


# --------------------------------------------------------------------------- invariants


@FAST
@given(
    eps=st.floats(0.0, 0.5),
    low=st.floats(-1.0, 0.0),
    width=st.floats(0.5, 2.0),
    seed=st.integers(0, 1000),
)
def test_fgsm_and_bim_stay_in_clip_and_eps_ball(
    eps: float, low: float, width: float, seed: int
) -> None:
    model = _tiny_model(seed)
    gen = torch.Generator().manual_seed(seed)
    clip = (low, low + width)
    lo32, hi32 = torch.tensor(clip)  # the bounds as float32 tensors compare them
    x = (low + width * torch.rand(3, 1, 4, 4, generator=gen)).clamp(lo32, hi32)
    y = torch.tensor([0, 1, 2])
    for adv in (
        fgsm(model, x, y, eps=eps, clip=clip),
        bim(model, x, y, eps=eps, step_size=max(eps, 1e-3) / 3, steps=4, clip=clip),
    ):
        assert adv.images.shape == x.shape
        assert bool((adv.images >= lo32).all() and (adv.images <= hi32).all())
        assert float(adv.perturbation.abs().max()) <= eps + 1e-5
        assert adv.linf <= eps + 1e-5


@FAST
@given(gamma=st.floats(0.125, 1.0), theta=st.floats(0.05, 1.0), seed=st.integers(0, 1000))
def test_jsma_respects_gamma_and_clip(gamma: float, theta: float, seed: int) -> None:
    model = _tiny_model(seed, classes=4)
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    y = torch.tensor([0, 1, 2, 3])
    adv = jsma(model, x, y, gamma=gamma, theta=theta, seed=seed)
    per_image = (adv.perturbation != 0).flatten(1).float().mean(1)
    assert float(per_image.max()) <= gamma + 1e-9
    assert adv.l0 <= gamma + 1e-9
    assert float(adv.images.min()) >= 0.0 and float(adv.images.max()) <= 1.0
    assert bool((adv.perturbation >= 0).all())


@pytest.mark.parametrize("name", sorted(QUICK))
def test_every_attack_in_clip_deterministic_and_input_untouched(digits, name: str) -> None:
    model, x, y = digits[0], digits[1][:20], digits[2][:20]
    before = x.clone()
    attack = create_adversary(name, **QUICK[name])
    first, second = attack(model, x, y), attack(model, x, y)
    assert isinstance(first, AdversarialExamples)
    assert first.attack == name
    assert first.images.shape == x.shape
    assert float(first.images.min()) >= 0.0 and float(first.images.max()) <= 1.0
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.success, second.success)
    assert torch.equal(x, before) and not x.requires_grad
    assert not first.images.requires_grad
    assert 0.0 <= first.success_rate <= 1.0


class _ModeNet(nn.Module):
    """A net with dropout and batch norm, so train/eval mode changes its output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


@pytest.mark.parametrize("name", sorted(QUICK))
def test_model_left_exactly_as_found(name: str) -> None:
    torch.manual_seed(0)
    model = _ModeNet()
    model.train()
    model.bn.eval()  # a mixed state must come back mixed
    model.conv.weight.requires_grad_(False)
    model.fc.weight.grad = torch.full_like(model.fc.weight, 7.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    options = {**QUICK[name], "eps": 0.1} if name in ("fgsm", "bim") else QUICK[name]
    adv = create_adversary(name, **options)(model, x, torch.tensor([0, 1, 2, 0]))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key  # includes BN running stats
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert torch.equal(model.fc.weight.grad, torch.full_like(model.fc.weight, 7.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc.weight")
    # the attack ran in eval mode: its predictions are the deterministic eval predictions
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(adv.images).argmax(1), adv.predicted)


def test_works_under_no_grad() -> None:
    model = _tiny_model()
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    with torch.no_grad():
        adv = bim(model, x, y, eps=0.1, steps=3)
    assert adv.linf > 0


def test_result_norms_by_hand() -> None:
    delta = torch.zeros(2, 1, 2, 2)
    delta[0, 0, 0, 0] = 3.0
    delta[0, 0, 1, 1] = -4.0
    out = AdversarialExamples(
        images=delta, original_labels=torch.tensor([0, 1]), predicted=torch.tensor([1, 1]),
        success=torch.tensor([True, False]), perturbation=delta, attack="hand",
    )
    assert out.success_rate == 0.5
    assert math.isclose(out.l0, (2 / 4 + 0) / 2)
    assert math.isclose(out.l2, (5.0 + 0) / 2)
    assert math.isclose(out.linf, (4.0 + 0) / 2)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", sorted(QUICK))
def test_bad_batches_raise_typed_errors(name: str) -> None:
    model = _tiny_model()
    attack = create_adversary(name, **QUICK[name])
    x, y = torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2])
    with pytest.raises(InputShapeError) as err:
        attack(model, x[:, 0], y)
    assert err.value.what == "x" and "(N, C, H, W)" in str(err.value)
    with pytest.raises(InputShapeError):
        attack(model, x.double().long(), y)
    with pytest.raises(LabelError) as err:
        attack(model, x, y[:2])
    assert "3 labels" in str(err.value)
    with pytest.raises(LabelError):
        attack(model, x, torch.tensor([0, 1, 3]))  # only 3 classes
    with pytest.raises(LabelError):
        attack(model, x, y.float())
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteInputError):
        attack(model, nan, y)
    with pytest.raises(ConfigError) as err:
        attack(model, x * 3, y)  # outside clip=(0, 1)
    assert err.value.what == "clip"
    with pytest.raises(UnsupportedModelError):
        attack(lambda t: t, x, y)  # type: ignore[arg-type]


def test_model_output_shape_checked() -> None:
    x, y = torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2])
    with pytest.raises(UnsupportedModelError) as err:
        fgsm(nn.Sequential(nn.Flatten(0)), x, y)
    assert "(3, K)" in str(err.value)


@pytest.mark.parametrize(
    ("fn", "options", "what"),
    [
        (fgsm, {"eps": -0.1}, "eps"),
        (fgsm, {"eps": float("nan")}, "eps"),
        (bim, {"eps": -1.0}, "eps"),
        (bim, {"step_size": 0.0}, "step_size"),
        (bim, {"steps": 0}, "steps"),
        (bim, {"steps": 2.5}, "steps"),
        (carlini_wagner, {"c": 0.0}, "c"),
        (carlini_wagner, {"kappa": -1.0}, "kappa"),
        (carlini_wagner, {"lr": -0.1}, "lr"),
        (carlini_wagner, {"binary_search_steps": -1}, "binary_search_steps"),
        (jsma, {"gamma": 0.0}, "gamma"),
        (jsma, {"gamma": 1.5}, "gamma"),
        (jsma, {"gamma": 0.1}, "gamma"),  # 16 features: 0.1 allows no pair
        (jsma, {"theta": 0.0}, "theta"),
        (fgsm, {"clip": (1.0, 0.0)}, "clip"),
        (jsma, {"clip": (0.0,)}, "clip"),
    ],
)
def test_bad_options_raise_config_error(fn, options, what: str) -> None:
    model = _tiny_model()
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    with pytest.raises(ConfigError) as err:
        fn(model, x, y, **options)
    assert err.value.what == what
    assert "expected" in str(err.value) and "Fix:" in str(err.value)
    assert isinstance(err.value, ShieldSplitError) and isinstance(err.value, ValueError)


def test_bad_jsma_targets_raise_label_error() -> None:
    model = _tiny_model()
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    for target in (torch.tensor([1, 1]), 1, torch.tensor([1, 5]), torch.tensor([1.0, 2.0]),
                   torch.tensor([1, 2, 0]), "2"):
        with pytest.raises(LabelError) as err:
            jsma(model, x, y, target=target, gamma=0.5)  # type: ignore[arg-type]
        assert err.value.what == "target"


def test_jsma_refuses_images_too_large_for_the_pairwise_map() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 2))
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(InputShapeError) as err:
        jsma(model, x, torch.tensor([0]), gamma=0.01)
    assert "12288" in str(err.value) and err.value.what == "x"


# --------------------------------------------------------------------------- registry


def test_registry_lists_the_four_attacks() -> None:
    assert {"fgsm", "bim", "cw", "jsma"} <= set(available_adversaries())
    attack = create_adversary("fgsm", eps=0.2)
    assert isinstance(attack, Adversary) and attack.options == {"eps": 0.2}


def test_registry_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as err:
        create_adversary("deepfool")
    for name in ("bim", "cw", "fgsm", "jsma"):
        assert name in str(err.value)


def test_registry_unknown_option_lists_valid_options() -> None:
    with pytest.raises(ConfigError) as err:
        create_adversary("fgsm", epsilon=0.1)
    assert "epsilon" in str(err.value) and "eps" in str(err.value) and "clip" in str(err.value)
    with pytest.raises(ConfigError) as err:
        create_adversary("jsma", gama=0.1)
    assert "gamma" in str(err.value)


def test_registry_checks_values_when_built() -> None:
    with pytest.raises(ConfigError):
        create_adversary("bim", eps=-0.1)
    with pytest.raises(ConfigError):
        create_adversary("jsma", gamma=2.0)
    with pytest.raises(ConfigError):
        create_adversary("cw", steps=0)


def test_register_custom_adversary() -> None:
    def noop(model: nn.Module, x: Tensor, y: Tensor, *, scale: float = 1.0) -> AdversarialExamples:
        return AdversarialExamples(
            images=x, original_labels=y, predicted=y, success=y != y,
            perturbation=torch.zeros_like(x), attack="noop",
        )

    register_adversary("noop", noop)
    try:
        assert "noop" in available_adversaries()
        register_adversary("noop", noop)  # same function again: fine
        with pytest.raises(ConfigError):
            register_adversary("noop", fgsm)
        with pytest.raises(ConfigError):
            create_adversary("noop", eps=1.0)
        out = create_adversary("noop", scale=2.0)(_tiny_model(), torch.rand(1, 1, 4, 4),
                                                   torch.tensor([0]))
        assert out.success_rate == 0.0
    finally:
        unregister_adversary("noop")
    assert "noop" not in available_adversaries()
    with pytest.raises(ConfigError):
        register_adversary("", noop)
    with pytest.raises(ConfigError):
        register_adversary("bad", 3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the attack family

#: One out-of-range value per attack (each Config's bound).
OUT_OF_RANGE = {
    "fgsm": ("eps", -0.1),
    "bim": ("steps", 0),
    "cw": ("c", 0.0),
    "jsma": ("gamma", 1.5),
}


def test_the_evasion_family_is_the_four_attacks() -> None:
    from shieldsplit.attacks import available_attacks

    assert available_attacks("evasion") == ["bim", "cw", "fgsm", "jsma"]
    assert available_adversaries() == available_attacks("evasion")


@pytest.mark.parametrize("name", sorted(OUT_OF_RANGE))
def test_every_evasion_config_rejects_unknown_and_out_of_range_options(name: str) -> None:
    from shieldsplit.attacks import attack_class, create_attack
    from shieldsplit.evasion.base import EvasionAttack

    cls = attack_class(name, "evasion")
    assert issubclass(cls, EvasionAttack) and cls.Config.model_config.get("extra") == "forbid"
    assert "seed" not in cls.Config.model_fields  # the base's option
    with pytest.raises(ConfigError) as err:
        create_attack(name, family="evasion", no_such_option=1)
    assert err.value.what == "no_such_option"
    field, bad = OUT_OF_RANGE[name]
    with pytest.raises(ConfigError) as err:
        create_attack(name, family="evasion", **{field: bad})
    assert err.value.what == field
    with pytest.raises(ConfigError) as err:
        create_attack(name, family="evasion", clip=(0.0, float("inf")))
    assert err.value.what == "clip"
    with pytest.raises(ConfigError):
        create_attack(name, family="evasion", seed=-1)
    attack = create_attack(name, family="evasion", seed=5)  # every attack takes a seed
    assert attack.seed == 5 and attack.declaration().threat_model == "white_box_model"


def test_create_attack_fgsm_perturbs_within_eps(digits) -> None:
    from shieldsplit.attacks import create_attack

    model, x, y = digits[0], digits[1][:20], digits[2][:20]
    attack = create_attack("fgsm", family="evasion", eps=0.1)
    adv = attack.perturb(model, x, y)
    assert float(adv.perturbation.abs().max()) <= 0.1 + 1e-6
    assert adv.linf > 0.09  # the sign step uses the whole budget where not clipped
    assert torch.equal(adv.images, attack(model, x, y).images)  # __call__ is perturb
    assert torch.equal(adv.images, fgsm(model, x, y, eps=0.1).images)  # the function too


def test_create_adversary_names_only_evasion_attacks() -> None:
    with pytest.raises(ConfigError) as err:
        create_adversary("rmia")  # a membership attack
    assert "['bim', 'cw', 'fgsm', 'jsma']" in str(err.value) and "lira" not in str(err.value)


def test_jsma_target_type_is_a_label_error_when_built() -> None:
    from shieldsplit.attacks import create_attack

    with pytest.raises(LabelError) as err:
        create_attack("jsma", family="evasion", target=1.5)
    assert err.value.what == "target"
    with pytest.raises(LabelError):
        create_adversary("jsma", target=True)
    built = create_adversary("jsma", target=torch.tensor([1, 2]))
    assert built.options["target"].tolist() == [1, 2]


def test_register_an_attack_class_and_a_function_with_a_seed() -> None:
    from shieldsplit.evasion.base import EvasionAttack, EvasionConfig

    class Zero(EvasionAttack):
        name = "zero"
        Config = EvasionConfig

        def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> AdversarialExamples:
            return AdversarialExamples.of(model, self.name, x, x.clone(), y)

    seeds: list[int] = []

    def seeded(model: nn.Module, x: Tensor, y: Tensor, *, scale: float = 1.0,
               seed: int = 0) -> AdversarialExamples:
        seeds.append(seed)
        return AdversarialExamples.of(model, "seeded", x, x * scale, y)

    register_adversary("zero", Zero)
    register_adversary("seeded", seeded)
    try:
        assert {"zero", "seeded"} <= set(available_adversaries())
        model, x, y = _tiny_model(), torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
        assert create_adversary("zero")(model, x, y).l2 == 0.0
        attack = create_adversary("seeded", scale=0.5, seed=7)
        assert attack.declaration().options == ["scale"]  # seed is the base's
        assert torch.allclose(attack(model, x, y).images, x * 0.5) and seeds == [7]
        with pytest.raises(ConfigError) as err:
            create_adversary("seeded", scale="big")
        assert err.value.what == "scale"
        with pytest.raises(ConfigError):
            register_adversary("zero", seeded)  # taken by another attack
    finally:
        unregister_adversary("zero")
        unregister_adversary("seeded")
    assert available_adversaries() == ["bim", "cw", "fgsm", "jsma"]
    unregister_adversary("rmia")  # another family's name: left alone
    from shieldsplit.attacks import available_attacks

    assert "rmia" in available_attacks("membership")
