"""Each PGSL step on its own, against independent references, then what each is for.

References: (a) saliency (Captum vs autograd, the softmax identity of eq. 1, the
shield's own gradient vs Captum), (b) the JSMA perturbation (numpy argsort
reference), (c) pixel-unshuffle and sub-pixel up-sampling, (e) conv-sum fusion
(eqs. 7-8), (g) adaptive weighted averaging (eqs. 9-11).

Efficacy (``test_efficacy_*``, on tiny seeded models): the probe learns the task, (a)
the map aims the pixel attack, (b) the attack lowers what an inversion attack rebuilds,
(c) unshuffle is reversible, (e) fusion lifts the fused stream over the attacked one,
(g) decision fusion outvotes a failing stream, and eqs. 10-11 take weight from a
useless stream; (d) is in tests/test_recovery.py. ``tests/pgsl_mutations.py`` switches
each step off and checks that one of them fails.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import Saliency
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shieldsplit import ClientMessage, PGSLConfig, PGSLNet, SplitShield
from shieldsplit.defenses.pgsl.fusion import (
    ConvSumFusion,
    adaptive_weights,
    class_score_sums,
    max_class_score,
    weighted_average,
)
from shieldsplit.defenses.pgsl.perturb import budget_count, jsma_perturb
from shieldsplit.defenses.pgsl.saliency import class_gradient, jsma_saliency
from shieldsplit.defenses.pgsl.unshuffle import (
    SubPixelUpsample,
    pad_to_multiple,
    reshuffle,
    unshuffle,
)
from shieldsplit.errors import ConfigError, InputShapeError, ShieldSplitError

FAST = settings(max_examples=30, deadline=None)
f64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from intra-op threads; on a busy 2-core box they cost a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_classifier(features: int, classes: int, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Flatten(), nn.Linear(features, 6), nn.Tanh(), nn.Linear(6, classes)
        ).to(f64)


# --------------------------------------------------------------------------- (a) saliency


@FAST
@given(
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 4),
    shape=st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4)),
    classes=st.integers(2, 4),
)
def test_class_gradient_equals_autograd(
    seed: int, batch: int, shape: tuple[int, int, int], classes: int
) -> None:
    clf = tiny_classifier(int(np.prod(shape)), classes, seed)

    def proba(t: torch.Tensor) -> torch.Tensor:
        return clf(t).softmax(-1)

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=g, dtype=f64)
    target = torch.randint(0, classes, (batch,), generator=g)
    x_before = x.clone()

    got = class_gradient(proba, x, target, method="saliency")
    leaf = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(proba(leaf).gather(1, target[:, None]).sum(), leaf)
    torch.testing.assert_close(got, ref)
    assert not got.requires_grad
    assert torch.equal(x, x_before)

    ixg = class_gradient(proba, x, target, method="input_x_gradient")
    torch.testing.assert_close(ixg, x * ref)


@FAST
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 4), classes=st.integers(2, 5))
def test_softmax_identity_behind_jsma_saliency(seed: int, batch: int, classes: int) -> None:
    """d f_y/dx == -d(sum_{y' != y} f_y')/dx, each computed by its own Captum call."""
    shape = (1, 3, 3)
    clf = tiny_classifier(9, classes, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=g, dtype=f64)
    target = torch.randint(0, classes, (batch,), generator=g)
    others_mask = 1.0 - F.one_hot(target, classes).to(f64)

    def proba(t: torch.Tensor) -> torch.Tensor:
        return clf(t).softmax(-1)

    def others(t: torch.Tensor) -> torch.Tensor:
        return (proba(t) * others_mask).sum(-1, keepdim=True)

    grad_target = Saliency(proba).attribute(
        x.clone().requires_grad_(True), target=target, abs=False
    )
    grad_others = Saliency(others).attribute(x.clone().requires_grad_(True), target=0, abs=False)
    torch.testing.assert_close(grad_others, -grad_target, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(
        jsma_saliency(grad_target), jsma_saliency(grad_target, grad_others), atol=1e-20, rtol=1e-9
    )


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient"])
@pytest.mark.parametrize("target", ["predicted", "label"])
def test_shield_saliency_gradient_equals_captum(method: str, target: str) -> None:
    """The shield takes eq. 1's derivative with torch.autograd (TorchScript cannot run
    Captum); it equals Captum's attribution of the probe's softmax through the client."""
    cfg = PGSLConfig(saliency={"method": method, "target": target})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        net = PGSLNet(num_classes=3, image_size=8, width=4, hidden=8)
    shield = SplitShield(net, cut=2, config=cfg, input_shape=(1, 8, 8), seed=3).eval()
    steps = shield.client_steps()
    g = torch.Generator().manual_seed(4)
    x, y = torch.rand(5, 1, 8, 8, generator=g), torch.randint(0, 3, (5,), generator=g)

    def proba(images: torch.Tensor) -> torch.Tensor:
        return steps.probe_logits(images).softmax(-1)

    with torch.no_grad():
        predicted = proba(x).argmax(-1)
    expected_target = y if target == "label" else predicted
    expected = class_gradient(proba, x, expected_target, method=method)  # type: ignore[arg-type]
    torch.testing.assert_close(steps.gradient(x, y), expected)
    scores, heat = steps.saliency(x, y)
    torch.testing.assert_close(scores, jsma_saliency(expected))
    assert tuple(heat.shape) == (5, 1, 8, 8)


@FAST
@given(seed=st.integers(0, 2**16), n=st.integers(1, 40))
def test_jsma_saliency_matches_numpy(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    gt = rng.normal(size=n) * (rng.random(n) < 0.8)  # some exact zeros
    go = rng.normal(size=n) * (rng.random(n) < 0.8)
    got = jsma_saliency(torch.from_numpy(gt), torch.from_numpy(go)).numpy()
    cond = (gt < 0) & (go > 0)
    np.testing.assert_allclose(got, np.where(cond, -gt * go, 0.0))
    assert (got >= 0).all()
    assert (got[~cond] == 0).all()
    assert (got[cond & (gt != 0) & (go != 0)] > 0).all()
    # default: others = -target (softmax)
    default = jsma_saliency(torch.from_numpy(gt)).numpy()
    np.testing.assert_allclose(default, np.where(gt < 0, gt * gt, 0.0))
    assert (default >= 0).all()


# --------------------------------------------------------------------------- (b) perturb


@FAST
@given(
    seed=st.integers(0, 2**16),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)),
    budget=st.floats(0.01, 1.0),
    strength=st.floats(0.05, 2.0),
    clip=st.sampled_from([None, (0.0, 1.0), (0.0, 0.7)]),
    density=st.floats(0.0, 1.0),
)
def test_jsma_perturb_against_argsort_reference(
    seed: int,
    shape: tuple[int, int, int, int],
    budget: float,
    strength: float,
    clip: tuple[float, float] | None,
    density: float,
) -> None:
    rng = np.random.default_rng(seed)
    b, n = shape[0], int(np.prod(shape[1:]))
    high = 1.0 if clip is None else clip[1]
    x = rng.uniform(0.0, high, size=shape).astype(np.float32)  # inside the clip range
    # distinct positive scores where eligible, exact zeros elsewhere
    scores = np.stack([rng.permutation(n) + 1.0 for _ in range(b)]).reshape(shape)
    scores = np.where(rng.random(shape) < density, scores, 0.0).astype(np.float32)

    out = jsma_perturb(
        torch.from_numpy(x),
        torch.from_numpy(scores),
        pixel_budget=budget,
        strength=strength,
        clip=clip,
    )
    k = budget_count(n, budget)
    assert k == max(1, round(n * budget))
    adv, delta, mask = out.adversarial.numpy(), out.delta.numpy(), out.mask.numpy()
    assert adv.shape == x.shape and mask.dtype == np.bool_
    np.testing.assert_array_equal(delta, adv - x)

    for i in range(b):
        s, m = scores[i].ravel(), mask[i].ravel()
        order = np.argsort(-s, kind="stable")[:k]
        expected = np.zeros(n, dtype=bool)
        expected[order[s[order] > 0]] = True
        np.testing.assert_array_equal(m, expected)
        changed = adv[i].ravel() != x[i].ravel()
        assert changed.sum() <= k
        assert not (changed & (s <= 0)).any()
        assert not (changed & ~m).any()
    raised = x + strength * mask
    np.testing.assert_allclose(adv, raised if clip is None else np.clip(raised, *clip), rtol=1e-6)
    if clip is not None:
        assert (adv >= clip[0]).all() and (adv <= clip[1]).all()


def test_jsma_perturb_changes_only_masked_elements_for_out_of_range_inputs() -> None:
    x = torch.tensor([[[[-0.5, 0.2], [1.5, 0.3]]]])
    scores = torch.tensor([[[[0.0, 3.0], [0.0, 0.0]]]])
    out = jsma_perturb(x, scores, pixel_budget=0.25, strength=0.5, clip=(0.0, 1.0))
    assert out.mask.sum() == 1
    assert torch.equal(out.delta[~out.mask], torch.zeros(3))


def test_jsma_perturb_bad_arguments() -> None:
    x = torch.zeros(2, 1, 3, 3)
    with pytest.raises(InputShapeError, match=r"expected.*received"):
        jsma_perturb(x, torch.zeros(2, 1, 3, 2), pixel_budget=0.1, strength=1.0, clip=None)
    for budget in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=r"expected.*received") as info:
            jsma_perturb(x, torch.zeros_like(x), pixel_budget=budget, strength=1.0, clip=None)
        assert isinstance(info.value, ShieldSplitError)


# --------------------------------------------------------------------------- (c) unshuffle


@FAST
@given(
    b=st.integers(1, 3),
    c=st.integers(1, 3),
    h=st.integers(1, 4),
    w=st.integers(1, 4),
    factor=st.integers(2, 3),
    seed=st.integers(0, 2**16),
)
def test_unshuffle_is_lossless_for_multiples(
    b: int, c: int, h: int, w: int, factor: int, seed: int
) -> None:
    x = torch.randn(b, c, h * factor, w * factor, generator=torch.Generator().manual_seed(seed))
    u = unshuffle(x, factor)
    assert tuple(u.shape) == (b, c * factor * factor, h, w)
    assert torch.equal(reshuffle(u, factor), x)
    # each output channel is a strided sub-image: u[:, ch*f*f + i*f + j] = x[:, ch, i::f, j::f]
    xn, un = x.numpy(), u.numpy()
    for ch in range(c):
        for i in range(factor):
            for j in range(factor):
                np.testing.assert_array_equal(
                    un[:, ch * factor * factor + i * factor + j], xn[:, ch, i::factor, j::factor]
                )


@FAST
@given(
    b=st.integers(1, 2),
    c=st.integers(1, 3),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    factor=st.integers(2, 3),
    mode=st.sampled_from(["replicate", "zeros"]),
    seed=st.integers(0, 2**16),
)
def test_unshuffle_pads_odd_sizes_and_crops_back(
    b: int, c: int, h: int, w: int, factor: int, mode: str, seed: int
) -> None:
    x = torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))
    u = unshuffle(x, factor, pad=mode)  # type: ignore[arg-type]
    hp, wp = -(-h // factor), -(-w // factor)
    assert tuple(u.shape) == (b, c * factor * factor, hp, wp)
    back = reshuffle(u, factor)
    assert torch.equal(back[..., :h, :w], x)
    padded = pad_to_multiple(x, factor, mode)  # type: ignore[arg-type]
    assert torch.equal(back, padded)
    if mode == "zeros":
        assert (back[..., h:, :] == 0).all() and (back[..., :, w:] == 0).all()
    else:  # replicate: the padding repeats the last row / column
        xn, bn = x.numpy(), back.numpy()
        rows = np.minimum(np.arange(hp * factor), h - 1)
        cols = np.minimum(np.arange(wp * factor), w - 1)
        np.testing.assert_array_equal(bn, xn[:, :, rows][:, :, :, cols])
    if h % factor == 0 and w % factor == 0:
        assert padded is x


@FAST
@given(
    b=st.integers(1, 2),
    c=st.integers(1, 4),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    factor=st.integers(2, 3),
    kernel=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**16),
)
def test_subpixel_upsample_starts_as_nearest_and_honours_size(
    b: int, c: int, h: int, w: int, factor: int, kernel: int, seed: int
) -> None:
    up = SubPixelUpsample(c, factor, kernel)
    assert up.conv.kernel_size == (kernel, kernel)
    a = torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))
    nearest = F.interpolate(a, scale_factor=factor, mode="nearest")
    with torch.no_grad():
        y = up(a)
        torch.testing.assert_close(y, nearest, atol=0, rtol=0)
        torch.testing.assert_close(up(a, (h * factor, w * factor)), nearest, atol=0, rtol=0)
        size = (max(1, h * factor - 1), w * factor + 1)
        resized = up(a, size)
    assert tuple(resized.shape) == (b, c, *size)
    ref = F.interpolate(nearest, size=size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(resized, ref)
    # it is learnable: gradients reach the convolution
    up(a).sum().backward()
    assert up.conv.weight.grad is not None and up.conv.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- (e) fusion


@FAST
@given(
    c=st.integers(1, 4),
    kernel=st.sampled_from([1, 3]),
    b=st.integers(1, 3),
    hw=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_conv_sum_fusion(c: int, kernel: int, b: int, hw: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    u, v = torch.randn(2, b, c, hw, hw, generator=g, dtype=f64)
    fuse = ConvSumFusion(c, kernel).to(f64)
    assert torch.equal(fuse(u, v), u)  # zero-initialised: the fused stream starts as u
    with torch.no_grad():
        fuse.conv.weight.copy_(torch.randn(fuse.conv.weight.shape, generator=g, dtype=f64))
        fuse.conv.bias.copy_(torch.randn(fuse.conv.bias.shape, generator=g, dtype=f64))
    w, bias = fuse.conv.weight.detach(), fuse.conv.bias.detach()
    assert tuple(w.shape) == (c, 2 * c, kernel, kernel)
    ref = F.conv2d(torch.cat([u, v], 1), w, bias, padding=kernel // 2) + u
    torch.testing.assert_close(fuse(u, v), ref)
    # eq. 7 by hand for a 1x1 kernel: per output channel, a weighted sum over both maps
    if kernel == 1:
        manual = np.einsum("oi,bihw->bohw", w[:, :, 0, 0].numpy(), torch.cat([u, v], 1).numpy())
        manual += bias.numpy()[None, :, None, None] + u.numpy()
        np.testing.assert_allclose(fuse(u, v).detach().numpy(), manual, rtol=1e-10)


def _np_adaptive(s_max: np.ndarray, w0: np.ndarray) -> np.ndarray:
    """Eqs. 10-11: gamma, rho and 1 - gamma - rho, written out per stream."""
    den = float(sum(w0[i] * s_max[i] for i in range(len(w0))))
    return np.array([w0[i] * s_max[i] / den for i in range(len(w0))])


@FAST
@given(
    s_max=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=3),
    w0=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3),
)
def test_adaptive_weights_equal_eqs_10_11(s_max: list[float], w0: list[float]) -> None:
    w0 = w0[: len(s_max)]
    if sum(w0) <= 1e-3:
        w0 = [1.0] * len(s_max)
    got = adaptive_weights(torch.tensor(s_max, dtype=f64), torch.tensor(w0, dtype=f64)).numpy()
    ref = _np_adaptive(np.array(s_max), np.array(w0))
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    assert got.sum() == pytest.approx(1.0)
    assert (got >= 0).all()
    if len(s_max) == 3:  # eq. 9's third weight is 1 - gamma - rho
        assert got[2] == pytest.approx(1.0 - got[0] - got[1])


def test_adaptive_weights_paper_example() -> None:
    """Equal S^max keeps the paper's initial weights 0.5, 0.3, 0.2."""
    w = adaptive_weights(torch.full((3,), 0.7), torch.tensor([0.5, 0.3, 0.2]))
    torch.testing.assert_close(w, torch.tensor([0.5, 0.3, 0.2]))


@FAST
@given(
    streams=st.integers(1, 3), n=st.integers(1, 6), k=st.integers(2, 5), seed=st.integers(0, 2**16)
)
def test_weighted_average_and_max_class_score(streams: int, n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(streams, n, k))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    w = rng.random(streams) + 0.01
    w /= w.sum()
    got = weighted_average(torch.from_numpy(probs), torch.from_numpy(w)).numpy()
    ref = sum(w[s] * probs[s] for s in range(streams))
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    np.testing.assert_allclose(got.sum(-1), np.ones(n), rtol=1e-12)
    # float32 scores with float64 weights keep the scores' dtype
    got32 = weighted_average(torch.from_numpy(probs).float(), torch.from_numpy(w))
    assert got32.dtype == torch.float32
    labels = rng.integers(0, k, size=n)
    for s in range(streams):
        sums, counts = class_score_sums(torch.from_numpy(probs[s]), torch.from_numpy(labels), k)
        ref_means = [probs[s][labels == c, c].mean() for c in range(k) if (labels == c).any()]
        assert float(max_class_score(sums, counts)) == pytest.approx(max(ref_means), rel=1e-12)
        # batches add up: two halves give the same S^max as the whole
        p_s, lab = torch.from_numpy(probs[s]), torch.from_numpy(labels)
        a = class_score_sums(p_s[: n // 2], lab[: n // 2], k)
        b = class_score_sums(p_s[n // 2 :], lab[n // 2 :], k)
        whole = max_class_score(sums, counts)
        torch.testing.assert_close(max_class_score(a[0] + b[0], a[1] + b[1]), whole)


def test_shield_calibration_follows_eqs_10_11() -> None:
    shield = SplitShield(
        PGSLNet(num_classes=3, image_size=8, width=4, hidden=8), cut=2, input_shape=(1, 8, 8)
    )
    torch.testing.assert_close(shield.stream_weights, torch.tensor([0.5, 0.3, 0.2]))
    s_max = {
        "recovered": torch.tensor(0.8), "fused": torch.tensor(0.5), "attacked": torch.tensor(0.34),
    }
    shield.calibrate(s_max)
    ref = _np_adaptive(np.array([0.8, 0.5, 0.34]), np.array([0.5, 0.3, 0.2]))
    np.testing.assert_allclose(shield.current_weights().numpy(), ref, rtol=1e-6)


# --------------------------------------------------------------------------- efficacy
# One test per PGSL step, each measuring what the step is *for* on a tiny seeded model:
# tests/pgsl_mutations.py switches each step off in turn (through the methods
# shieldsplit.defenses.pgsl.halves names) and checks that one of these tests fails.


def bands(n: int, seed: int, image: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes: a bright band of rows at the top, middle or bottom, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.2 * torch.rand(n, 1, image, image, generator=g)
    band = image // 3
    for i in range(n):
        k = int(y[i])
        x[i, :, k * band : (k + 1) * band, :] += 0.6
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained() -> tuple[SplitShield, torch.Tensor, torch.Tensor]:
    """A PGSL shield (every step on; a 10% pixel budget, 6 of 64 pixels) trained four
    epochs on 48 band images, in eval mode, and 60 held-out images."""
    cfg = PGSLConfig(train={"lr": 3e-2}, perturb={"pixel_budget": 0.1})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = PGSLNet(num_classes=3, image_size=8, width=8, hidden=16)
    shield = SplitShield(net, cut=2, config=cfg, input_shape=(1, 8, 8), seed=0)
    train = DataLoader(TensorDataset(*bands(48, seed=0)), batch_size=8, shuffle=True)
    shield.fit(train, epochs=4, seed=0, progress=False)
    x, y = bands(60, seed=1)
    return shield.eval(), x, y


def accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    return float((probs.argmax(-1) == y).float().mean())


def test_efficacy_probe_learns_the_task(
    trained: tuple[SplitShield, torch.Tensor, torch.Tensor],
) -> None:
    """The client's local probe is what the map is taken through: it must know the task
    (on held-out images) for the map to point at the pixels the decision rests on."""
    shield, x, y = trained
    with torch.no_grad():
        assert accuracy(shield.client_steps().probe_logits(x), y) >= 0.9


def test_efficacy_saliency_aims_the_pixel_attack(
    trained: tuple[SplitShield, torch.Tensor, torch.Tensor],
) -> None:
    """(a) Eq. 1's map picks the pixels that matter: raising them lowers the client's own
    confidence in the true class far more than raising as many random pixels."""
    shield, x, y = trained
    steps = shield.client_steps()

    def true_class_proba(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return steps.probe_logits(images).softmax(-1).gather(1, y[:, None]).squeeze(1)

    clean = true_class_proba(x)
    attacked, _ = steps.attack(x)
    k = budget_count(x[0].numel(), shield.config.perturb.pixel_budget)
    assert ((attacked != x).flatten(1).sum(1) <= k).all()
    random_scores = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    blind = jsma_perturb(x, random_scores, pixel_budget=shield.config.perturb.pixel_budget,
                         strength=1.0, clip=(0.0, 1.0)).adversarial
    aimed_drop = float((clean - true_class_proba(attacked)).mean())
    blind_drop = float((clean - true_class_proba(blind)).mean())
    assert aimed_drop > 0.05
    assert float((true_class_proba(attacked) < clean).float().mean()) >= 0.8
    assert aimed_drop > 3 * max(blind_drop, 0.0)


def _ridge_inversion(train: torch.Tensor, targets: torch.Tensor, victims: torch.Tensor,
                     lam: float = 1e-2) -> torch.Tensor:
    """A black-box model-inversion attacker (the paper's threat model, linear): a ridge
    decoder from activations to images, fitted on the attacker's own images."""
    def design(a: torch.Tensor) -> torch.Tensor:
        return torch.cat([a.flatten(1), torch.ones(a.shape[0], 1)], 1).double()

    a = design(train)
    w = torch.linalg.solve(a.T @ a + lam * torch.eye(a.shape[1], dtype=a.dtype),
                           a.T @ targets.flatten(1).double())
    return (design(victims) @ w).float().reshape(victims.shape[0], *targets.shape[1:])


def test_efficacy_pixel_attack_lowers_what_an_inversion_attack_rebuilds(
    trained: tuple[SplitShield, torch.Tensor, torch.Tensor],
) -> None:
    """(b) What crosses the cut comes from the attacked images: an attacker who trains a
    decoder on the client's activations of its own images rebuilds the victims' images
    worse than from the activations of the same images unattacked (same client, same map)."""
    shield, victims, _ = trained
    own = bands(300, seed=5)[0]
    steps = shield.client_steps()

    def wire(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what the client sends, what it would send without the pixel attack)."""
        with torch.no_grad():
            sent = shield.client(x).activations
            _, heat = steps.saliency(x)
            return sent, steps.features(x, heat)

    sent_own, plain_own = wire(own)
    sent_victims, plain_victims = wire(victims)
    defended = F.mse_loss(_ridge_inversion(sent_own, own, sent_victims), victims)
    undefended = F.mse_loss(_ridge_inversion(plain_own, own, plain_victims), victims)
    assert float(defended) > 1.3 * float(undefended)


def test_efficacy_unshuffle_is_reversible_at_half_resolution(
    trained: tuple[SplitShield, torch.Tensor, torch.Tensor],
) -> None:
    """(c) The client's layers take every pixel of the attacked image, at half the
    resolution: pixel-shuffling the tensor back gives the image exactly (and the map
    channel is the average-pooled map)."""
    shield, x, _ = trained
    steps = shield.client_steps()
    images, heat = steps.attack(x)
    assert heat is not None
    tensor = steps.assemble(images, heat)
    assert tuple(tensor.shape) == (60, 5, 4, 4)
    assert torch.equal(reshuffle(tensor[:, :4], 2), images)
    torch.testing.assert_close(tensor[:, 4:], F.avg_pool2d(heat, 2))


def _corrupted_messages(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations of 8 channels on 4x4 pixels: a rank-one class signal (each class
    brightens its own two channels) under a dense sparse attack (a quarter of the
    entries raised by up to 8), which robust PCA strips and a linear read-out of the
    attacked map cannot fully see through."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    loadings = torch.ones(3, 8)
    for k in range(3):
        loadings[k, 2 * k : 2 * k + 2] += 1.0
    profile = torch.linspace(0.5, 1.5, 16)
    low = (loadings[y][:, :, None] * profile[None, None, :]).reshape(n, 8, 4, 4)
    hit = torch.rand(n, 8, 4, 4, generator=g) < 0.25
    return low + hit * 8.0 * torch.rand(n, 8, 4, 4, generator=g), y


def test_efficacy_fusion_lifts_the_fused_stream_over_the_attacked_one() -> None:
    """(e) Conv-sum fusion lets the fused stream read the recovered map: trained on the
    same attacked activations, the fused stream beats the attacked stream (the two are
    the same network, from the same weights, and differ by the fusion alone)."""
    cfg = PGSLConfig(train={"lr": 3e-2}, unshuffle={"enabled": False},
                     saliency={"concat": False}, recovery={"max_iter": 50, "tol": 1e-6})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    shield = SplitShield(net, cut=1, config=cfg, input_shape=(1, 4, 4), seed=0)
    half = shield.server_half()
    a, y = _corrupted_messages(96, seed=0)
    for _ in range(4):
        for i in range(0, 96, 16):
            half.step(ClientMessage(a[i : i + 16], None, y[i : i + 16]))
        half.end_epoch()
    shield.eval()
    held_out, labels = _corrupted_messages(150, seed=1000)
    with torch.no_grad():
        logits = shield.server_streams(ClientMessage(held_out, None))
    fused, attacked = accuracy(logits["fused"], labels), accuracy(logits["attacked"], labels)
    assert fused >= 0.9
    assert fused >= attacked + 0.1, (fused, attacked)


def test_efficacy_decision_fusion_outvotes_a_failing_stream(
    trained: tuple[SplitShield, torch.Tensor, torch.Tensor],
) -> None:
    """(g) Eq. 9 lets no single stream decide: with the fused stream broken (its output
    layer zeroed: uniform scores), the decision keeps the other streams' accuracy."""
    shield, x, y = trained
    broken = copy.deepcopy(shield)
    last = [m for m in broken.tails["fused"].modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    streams = broken.predict_streams(x)
    assert accuracy(streams.fused, y) <= 0.4
    decision = accuracy(broken.predict_proba(x), y)
    assert decision >= 0.85
    assert decision >= accuracy(streams.fused, y) + 0.4


def test_efficacy_calibration_takes_weight_from_a_useless_stream(
    trained: tuple[SplitShield, torch.Tensor, torch.Tensor],
) -> None:
    """Eqs. 10-11: after an epoch in which the attacked stream only guesses (its output
    layer frozen at zero: 1/3 per class), its weight falls well below its initial 0.2,
    and the streams that learned gain what it loses."""
    shield = copy.deepcopy(trained[0])
    last = [m for m in shield.tails["attacked"].modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    for p in shield.tails["attacked"].parameters():
        p.requires_grad_(False)
    x, y = bands(48, seed=0)
    half = shield.server_half()
    for i in range(0, 48, 16):
        half.step(shield.client(x[i : i + 16], y[i : i + 16]))
    w = half.end_epoch().stream_weights
    assert w["attacked"] < 0.2 * 0.6, w
    assert w["recovered"] > 0.5 and w["fused"] > 0.3, w
    assert sum(w.values()) == pytest.approx(1.0)
