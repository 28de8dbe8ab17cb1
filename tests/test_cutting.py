"""Tests for shieldsplit.cutting: splitting any model into a client head and a server tail.

Invariants: for every valid cut the head and tail compose to the model exactly;
the parts hold copies of the model's tensors under the model's own state_dict
keys; the model itself is never changed; invalid cuts raise InvalidCutError
listing the valid ones.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from model_strategies import CNNSpec, build_cnn, cnn_specs
from torch import nn

from shieldsplit import PGSLNet
from shieldsplit.cutting import list_cut_points, split_model
from shieldsplit.errors import InvalidCutError, ShieldSplitError, UnsupportedModelError

torchvision = pytest.importorskip("torchvision")

FAST = settings(max_examples=30, deadline=None)
IMAGE = 8


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from intra-op threads; on a busy 2-core box they cost a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)




def assert_state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def check_parts(model: nn.Module, cut: int | str, x: torch.Tensor, atol: float = 1e-6) -> None:
    """Composition equals the model; parts hold equal, unshared copies; model untouched."""
    before = copy.deepcopy(model.state_dict())
    training = model.training
    parts = split_model(model, cut)
    model.eval()
    parts.head.eval()
    parts.tail.eval()
    with torch.no_grad():
        expected = model(x)
        got = parts.tail(parts.head(x))
    torch.testing.assert_close(got, expected, atol=atol, rtol=1e-5)

    original = model.state_dict()
    original_ptrs = {t.data_ptr() for t in original.values()}
    head_sd, tail_sd = parts.head.state_dict(), parts.tail.state_dict()
    for sd in (head_sd, tail_sd):
        assert set(sd) <= set(original)
        for k, t in sd.items():
            assert torch.equal(t, original[k]), k
            assert t.data_ptr() not in original_ptrs, f"{k} shares storage with the model"
    # every parameter of the model ends up on exactly one side
    params = {k for k, _ in model.named_parameters()}
    head_params = {k for k, _ in parts.head.named_parameters()}
    tail_params = {k for k, _ in parts.tail.named_parameters()}
    assert head_params | tail_params == params
    assert not head_params & tail_params
    model.train(training)
    assert_state_equal(model.state_dict(), before)


# --------------------------------------------------------------------------- sequential CNNs


@FAST
@given(spec=cnn_specs(), batch=st.integers(1, 4))
def test_random_sequential_cnn_every_cut_composes(spec: CNNSpec, batch: int) -> None:
    model = build_cnn(spec)
    model.train()
    x = torch.randn(
        batch, spec.in_channels, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1)
    )
    cuts = [p.index for p in list_cut_points(model)]
    # In a chain exactly one tensor crosses every block boundary.
    assert cuts == list(range(1, spec.compute_layers))
    for cut in cuts:
        check_parts(model, cut, x)
    assert model.training  # the training flag is left alone


@FAST
@given(spec=cnn_specs())
def test_sequential_cut_head_ends_before_next_compute_layer(spec: CNNSpec) -> None:
    """cut=k puts exactly the first k compute layers (and what follows them) on the client."""
    model = build_cnn(spec)
    compute = [n for n, m in model.named_children() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for point in list_cut_points(model):
        parts = split_model(model, point.index)
        head_modules = {n for n, _ in parts.head.named_children()}
        assert point.after == compute[point.index - 1]
        assert set(compute[: point.index]) <= head_modules
        assert not set(compute[point.index :]) & head_modules
        assert parts.compute_layers == tuple(compute)


# --------------------------------------------------------------------------- PGSLNet


def test_pgslnet_valid_cuts_and_activation_shape() -> None:
    torch.manual_seed(0)
    net = PGSLNet(num_classes=3, image_size=8)
    assert [p.index for p in list_cut_points(net)] == list(range(1, 9))
    parts = split_model(net, 2)
    assert parts.valid_cuts == tuple(range(1, 9))
    x = torch.rand(5, 1, 8, 8)
    parts.head.eval()
    assert tuple(parts.head(x).shape) == (5, 64, 8, 8)
    for cut in range(1, 9):
        check_parts(net, cut, x)


# --------------------------------------------------------------------------- resnet18


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_resnet18_valid_cuts_skip_residual_insides(resnet: nn.Module) -> None:
    cuts = [p.index for p in list_cut_points(resnet)]
    assert 1 in cuts
    # inside layer1.0 (between its two convs) two tensors cross: the branch and the identity
    assert 2 not in cuts
    # the ends of the residual blocks are valid
    assert {3, 5} <= set(cuts)
    assert cuts == sorted(set(cuts))
    with pytest.raises(InvalidCutError):
        split_model(resnet, 2)


def test_resnet18_every_valid_cut_composes(resnet: nn.Module) -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for point in list_cut_points(resnet):
        check_parts(resnet, point.index, x, atol=1e-5)


def test_resnet18_named_cut_equals_reported_index(resnet: nn.Module) -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    named = split_model(resnet, "layer1")
    assert named.cut in named.valid_cuts
    by_index = split_model(resnet, named.cut)
    check_parts(resnet, "layer1", x, atol=1e-5)
    named.head.eval()
    by_index.head.eval()
    with torch.no_grad():
        torch.testing.assert_close(named.head(x), by_index.head(x))
    assert named.head.state_dict().keys() == by_index.head.state_dict().keys()
    assert all(k.startswith(("conv1.", "bn1.", "layer1.")) for k in named.head.state_dict())


def test_named_cut_mid_block_reports_an_index_that_reproduces_it(resnet: nn.Module) -> None:
    try:
        named = split_model(resnet, "conv1")
    except InvalidCutError:
        return  # rejecting a name that ends mid-block would be a fix too
    by_index = split_model(resnet, named.cut)
    assert named.head.state_dict().keys() == by_index.head.state_dict().keys()


# --------------------------------------------------------------------------- non-chain module


class ResidualNet(nn.Module):
    """A residual connection and functional calls inside forward: not a chain."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv0(x))
        out = F.relu(self.conv2(F.relu(self.conv1(x))) + x)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def test_custom_residual_module() -> None:
    torch.manual_seed(0)
    model = ResidualNet()
    points = list_cut_points(model)
    assert [p.index for p in points] == [1, 3]  # 2 is inside the residual
    assert [p.after for p in points] == ["conv0", "conv2"]
    x = torch.randn(3, 2, 6, 6)
    for p in points:
        check_parts(model, p.index, x)
    with pytest.raises(InvalidCutError):
        split_model(model, 2)
    with pytest.raises(InvalidCutError):  # by name, inside the residual
        split_model(model, "conv1")
    check_parts(model, "conv0", x)


# --------------------------------------------------------------------------- invalid cuts


@pytest.mark.parametrize(
    "cut",
    [0, -1, 99, 2, "no_such_layer", "", True, False, 1.0, None, [1]],
    ids=repr,
)
def test_invalid_cut_lists_valid_cuts(cut: object) -> None:
    torch.manual_seed(0)
    model = ResidualNet()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(InvalidCutError) as info:
        split_model(model, cut)  # type: ignore[arg-type]
    err = info.value
    assert isinstance(err, ShieldSplitError)
    assert isinstance(err, ValueError)
    msg = str(err)
    assert "expected" in msg and "received" in msg
    assert "1 (after conv0)" in msg and "3 (after conv2)" in msg
    assert "2 (after" not in msg
    assert_state_equal(model.state_dict(), before)


def test_invalid_cut_on_resnet_lists_its_cuts(resnet: nn.Module) -> None:
    valid = [p.index for p in list_cut_points(resnet)]
    for cut in (0, 2, 21, 500, "layer9", 1.5):
        with pytest.raises(InvalidCutError) as info:
            split_model(resnet, cut)  # type: ignore[arg-type]
        for v in valid:
            assert f"{v} (after" in str(info.value)
    with pytest.raises(InvalidCutError):  # a name whose end leaves nothing on the server
        split_model(resnet, "fc")
    with pytest.raises(InvalidCutError):  # a name inside a residual block
        split_model(resnet, "layer1.0.conv1")


@pytest.mark.parametrize(
    "model",
    [nn.Sequential(nn.ReLU()), nn.Sequential(nn.Flatten(), nn.Dropout(0.1)), nn.Identity()],
    ids=["relu", "flatten-dropout", "identity"],
)
def test_model_without_compute_layer(model: nn.Module) -> None:
    with pytest.raises(UnsupportedModelError) as info:
        list_cut_points(model)
    assert "expected" in str(info.value) and "received" in str(info.value)
    with pytest.raises(UnsupportedModelError):
        split_model(model, 1)


def test_untraceable_model_is_unsupported() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(2, 2)
            self.b = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow
                return self.b(self.a(x))
            return self.a(x)

    with pytest.raises(UnsupportedModelError):
        list_cut_points(Branchy())


def test_single_compute_layer_has_no_cut() -> None:
    model = nn.Sequential(nn.Linear(4, 2))
    assert list_cut_points(model) == []
    with pytest.raises(InvalidCutError, match="expected"):
        split_model(model, 1)
