"""Each PGSL step on its own, against independent references.

(a) saliency (Captum vs autograd, the softmax identity of eq. 1), (b) the JSMA
perturbation (numpy argsort reference), (c) pixel-unshuffle and sub-pixel
up-sampling, (e) conv-sum fusion (eqs. 7-8), (g) adaptive weighted averaging
(eqs. 9-11), and one paper-level check: the client's JSMA perturbation lowers
its probe's confidence in the true class.
"""

from __future__ import annotations

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

from shieldsplit import PGSLConfig, PGSLNet, SplitShield
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
    np.testing.assert_allclose(shield.stream_weights.numpy(), ref, rtol=1e-6)


def _useless_attacked_stream_weights(seed: int) -> dict[str, float]:
    """Train a shield whose attacked stream is frozen to constant (uniform) scores."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = PGSLNet(num_classes=3, image_size=8, width=8, hidden=16)
    shield = SplitShield(net, cut=2, config=PGSLConfig(train={"lr": 3e-2}),
                         input_shape=(1, 8, 8), seed=seed)
    last = [m for m in shield.tails["attacked"].modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()  # type: ignore[union-attr]
    for p in shield.tails["attacked"].parameters():
        p.requires_grad_(False)
    train = DataLoader(TensorDataset(*stripes(48, seed=seed)), batch_size=8, shuffle=True)
    history = shield.fit(train, epochs=3, seed=seed, progress=False)
    return history.epochs[-1].stream_weights


def test_a_useless_stream_loses_weight() -> None:
    """Eqs. 10-11 on the true class: a stream that only guesses (1/3 per class) falls
    well below its initial 0.2, and the streams that learned gain what it loses."""
    w = _useless_attacked_stream_weights(seed=0)
    assert w["attacked"] < 0.2 * 0.6, w
    assert w["recovered"] > 0.5 and w["fused"] > 0.3, w
    assert sum(w.values()) == pytest.approx(1.0)


# --------------------------------------------------------------------------- paper-level check


def stripes(n: int, seed: int, image: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal stripes, vertical stripes or a checkerboard, plus noise: 3 easy classes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    i = torch.arange(image)
    patterns = torch.stack(
        [
            (i[:, None] % 2).expand(image, image).float(),
            (i[None, :] % 2).expand(image, image).float(),
            ((i[:, None] + i[None, :]) % 2).float(),
        ]
    )
    x = 0.15 + 0.6 * patterns[y][:, None] + 0.1 * torch.rand(n, 1, image, image, generator=g)
    return x, y


def test_client_jsma_lowers_the_probes_true_class_confidence() -> None:
    cfg = PGSLConfig(train={"lr": 3e-2}, perturb={"pixel_budget": 0.05})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        net = PGSLNet(num_classes=3, image_size=8, width=8, hidden=16)
    shield = SplitShield(net, cut=2, config=cfg, input_shape=(1, 8, 8), seed=2)
    train = DataLoader(TensorDataset(*stripes(48, seed=0)), batch_size=8, shuffle=True)
    shield.fit(train, epochs=5, seed=2, progress=False)
    shield.eval()
    probe = shield.probe
    assert probe is not None
    x, y = stripes(30, seed=1)

    steps = shield.client_steps()

    def true_class_proba(images: torch.Tensor) -> torch.Tensor:
        """The client's local view (the same function its saliency differentiates)."""
        with torch.no_grad():
            p = steps.probe_logits(images).softmax(-1)
        return p.gather(1, y[:, None]).squeeze(1)

    clean = true_class_proba(x)
    with torch.no_grad():
        accuracy = (steps.probe_logits(x).argmax(-1) == y).float().mean()
    assert accuracy >= 0.8  # the probe has learnt the task

    scores, heat = steps.saliency(x, y)
    p = cfg.perturb
    attack = jsma_perturb(x, scores, pixel_budget=p.pixel_budget, strength=p.strength, clip=p.clip)
    k = budget_count(x[0].numel(), p.pixel_budget)
    assert (attack.mask.flatten(1).sum(1) <= k).all()
    # the shield's client sends exactly the activations of this attacked image
    with torch.no_grad():
        sent = shield.client(x, y).activations
        expected = steps.features(attack.adversarial, heat)
    torch.testing.assert_close(sent, expected)

    attacked = true_class_proba(attack.adversarial)
    # control: the same number of random pixels raised by the same strength
    random_scores = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    control = jsma_perturb(
        x, random_scores, pixel_budget=p.pixel_budget, strength=p.strength, clip=p.clip
    )
    random_drop = float((clean - true_class_proba(control.adversarial)).mean())
    jsma_drop = float((clean - attacked).mean())
    assert jsma_drop > 0.02
    assert float((attacked < clean).float().mean()) >= 0.8
    assert jsma_drop > 2 * max(random_drop, 0.0)
