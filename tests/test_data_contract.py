"""The one data contract (docs/data.md): every entry point accepts the same forms and
turns each bad input of issue 10 item 5 (and issue 14 item 6) into a typed error.

Each probe below was silent, crashed deep inside torch, or raised an untyped error
on main before the contract; each must now be accepted correctly or raise the named
typed error with a fix.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import shieldsplit as ss
from shieldsplit._core.validate import as_labels, check_seed
from shieldsplit.data import ImageDataset, stratified_split
from shieldsplit.datacontract import (
    Normalized,
    as_dataset,
    as_loader,
    as_tensors,
    denormalize,
    probe_model,
)
from shieldsplit.defenses.base import create_defense
from shieldsplit.errors import (
    ConfigError,
    DataFileError,
    EmptyDataError,
    InputShapeError,
    InvalidCutError,
    LabelError,
    ShieldSplitError,
    UnsupportedModelError,
)

N = 40


def _net(size: int = 8, classes: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return ss.PGSLNet(num_classes=classes, image_size=size, width=8, hidden=8)


def _xy(n: int = N, size: int = 8, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, channels, size, size, generator=g), torch.arange(n) % 2


def _audit(model: Any, data: Any) -> Any:
    return ss.audit(model, data=data, attacks=["split-black-box"], victims=8, budget="quick",
                    seed=0, progress=False)


def _shield(size: int = 8) -> ss.SplitShield:
    return ss.SplitShield(_net(size), cut=2, seed=0)


def _fit(shield: Any, data: Any, **kw: Any) -> Any:
    return shield.fit(data, epochs=1, progress=False, **kw)


X, Y = _xy()
X28_MODEL = 28

# models a probe passed in, with their weights and mode then: each must come back unchanged
_KEPT: list[tuple[nn.Module, dict[str, torch.Tensor], bool]] = []


def _kept(model: nn.Module) -> nn.Module:
    _KEPT.append((model, {k: v.clone() for k, v in model.state_dict().items()}, model.training))
    return model


def _meta_net() -> nn.Module:
    with torch.device("meta"):  # shapes without data: nothing can run on it
        return _net()


class _TupleNet(nn.Module):
    """A classifier whose forward returns (logits, features)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.fc = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.fc(f), f


def _plain_cnn() -> nn.Module:
    """The simplest CNN: its Flatten falls in block 2, so cut=2 carries flat features."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 2))


def _load_around_other_classes() -> Any:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "shield.pt"
        _shield().save(path)
        return ss.SplitShield.load(path, _kept(_net(classes=3)))


def _items() -> list[tuple[torch.Tensor, int]]:
    """What a Dataset yields, collected in a list: (C, H, W) images and int labels."""
    return [(X[i], int(Y[i])) for i in range(N)]

# name -> (call, expected error type, a fragment the message must hold)
PROBES: dict[str, tuple[Callable[[], Any], type[ShieldSplitError], str]] = {
    # silent on main
    "SplitShield.fit [0,255] images": (
        lambda: _fit(_shield(), [(X * 255, Y)]), ConfigError, "divide the images by 255"),
    "SplitShield.fit [-1,1] images": (
        lambda: _fit(_shield(), [(X * 2 - 1, Y)]), ConfigError, "Normalized(model, mean, std)"),
    "SplitShield.predict_proba [0,255] images": (
        lambda: _shield().predict_proba(X * 255), ConfigError, "divide the images by 255"),
    "SplitShield.predict_proba [-1,1] images": (
        lambda: _shield().predict_proba(X * 2 - 1), ConfigError, "denormalize"),
    "audit [0,255] images": (lambda: _audit(_net(), (X * 255, Y)), ConfigError, "255"),
    "audit [-1,1] images": (lambda: _audit(_net(), (X * 2 - 1, Y)), ConfigError, "normalised"),
    "audit float labels": (lambda: _audit(_net(), (X, Y.float())), LabelError, "y.long()"),
    # deep torch crashes on main
    "audit 28px model on 8px images": (
        lambda: _audit(_net(28), (X, Y)), InputShapeError, "resize the images"),
    "compare 28px model on 8px images": (
        lambda: ss.compare(_net(28), data=(X, Y), defenses=["none"], epochs=1,
                           attacks=["split-black-box"], victims=8, progress=False),
        InputShapeError, "resize the images"),
    "SplitShield.fit 28px model on 8px images": (
        lambda: _fit(_shield(28), [(X, Y)]), InputShapeError, "resize the images"),
    "SplitShield.predict_proba 28px model on 8px images": (
        lambda: _shield(28).predict_proba(X), InputShapeError, "resize the images"),
    "audit 3-channel data, 1-channel model": (
        lambda: _audit(_net(), (X.expand(-1, 3, -1, -1), Y)), InputShapeError, "channel"),
    "audit labels outside the model's classes": (
        lambda: _audit(_net(), (X, Y + 2)), LabelError, "labels in [0, 1]"),
    "audit float64 model": (
        lambda: _audit(_net().double(), (X, Y)), UnsupportedModelError, "float64"),
    "DP-SGD float64 model": (
        lambda: create_defense("dpsgd", _net().double(), cut=2), UnsupportedModelError,
        "float64"),
    "SplitShield float64 model (issue 14: say it is the dtype)": (
        lambda: ss.SplitShield(_net().double(), cut=2), UnsupportedModelError, "dtype"),
    "SplitShield.server given a message of the wrong shape": (
        lambda: _shield().server(ss.ClientMessage(torch.rand(2, 3, 4, 4))), InputShapeError,
        "shield.server(shield.client(x))"),
    "SplitShield.fit(seed='a')": (
        lambda: _fit(_shield(), [(X, Y)], seed="a"), ConfigError, "integer seed"),
    "defence fit(seed='a')": (
        lambda: _fit(create_defense("laplace", _net(), cut=2), (X, Y), seed="a"), ConfigError,
        "integer seed"),
    # untyped on main
    "audit(model='notamodel')": (
        lambda: _audit("notamodel", (X, Y)), UnsupportedModelError, "torch.nn.Module"),
    "x and y of different lengths": (
        lambda: _audit(_net(), (X, Y[:10])), LabelError, "as many labels as images"),
    # issue 26 item 5: crashes inside torch on main
    "SplitShield(seed='zero')": (
        lambda: ss.SplitShield(_kept(_net()), cut=2, seed="zero"),  # type: ignore[arg-type]
        ConfigError, "integer seed"),
    "SplitShield.load around a model with other classes": (
        _load_around_other_classes, UnsupportedModelError, "pass an instance built as the saved"),
    "SplitShield.predict_proba of a meta-device model": (
        lambda: ss.SplitShield(_kept(_meta_net()), cut=2).predict_proba(X),
        UnsupportedModelError, "model.to_empty(device='cpu')"),
    # issue 26 item 5: accepted silently on main
    "SplitShield(meta-device model)": (
        lambda: ss.SplitShield(_kept(_meta_net()), cut=2), UnsupportedModelError,
        "model.to_empty(device='cpu')"),
    "create_defense('laplace', meta-device model)": (
        lambda: create_defense("laplace", _kept(_meta_net()), cut=2), UnsupportedModelError,
        "model.to_empty(device='cpu')"),
    "SplitShield(seed=-1)": (
        lambda: ss.SplitShield(_kept(_net()), cut=2, seed=-1), ConfigError, "integer seed"),
    "SplitShield(seed=1.5)": (
        lambda: ss.SplitShield(_kept(_net()), cut=2, seed=1.5),  # type: ignore[arg-type]
        ConfigError, "integer seed"),
    # issue 26 item 5: untyped errors on main
    "LatentPerturb.from_model(foo=1)": (
        lambda: ss.LatentPerturb.from_model(_kept(_net()), cut=2, foo=1), ConfigError,
        "drop the unknown option"),
    "audit(None)": (lambda: _audit(None, (X, Y)), UnsupportedModelError,
                    "pass the model object itself"),
    "PGSLConfig(bogus=1)": (
        lambda: ss.PGSLConfig(bogus=1),  # type: ignore[call-arg]
        ConfigError, "drop the unknown option"),
    "PGSLConfig(recovry=...)": (
        lambda: ss.PGSLConfig(recovry={"mu": 0.3}),  # type: ignore[call-arg]
        ConfigError, "rename it to 'recovery'"),
    "PGSLConfig(recovery={'mu': -1})": (lambda: ss.PGSLConfig(recovery={"mu": -1}),
                                        ConfigError, "pass recovery.mu=0.55"),
    "DPSGD(seed='a').fit": (
        lambda: _fit(ss.DPSGD(_kept(_net()), cut=2, seed="a"), (X, Y)),  # type: ignore[arg-type]
        ConfigError, "integer seed"),
    # issue 26 item 5: misleading messages on main
    "SplitShield of a model returning a tuple (was 'expected one of []')": (
        lambda: ss.SplitShield(_kept(_TupleNet()), cut=1), UnsupportedModelError,
        "return self.model(x)[0]"),
    "audit a model returning a tuple": (
        lambda: _audit(_kept(_TupleNet()), (X, Y)), UnsupportedModelError,
        "forward returns a 2-D logits tensor"),
    "audit a meta-device model (was 'resize the images')": (
        lambda: _audit(_kept(_meta_net()), (X, Y)), UnsupportedModelError,
        "model.to_empty(device='cpu')"),
    "SplitShield of the plain 2-conv CNN at cut=2 (Flatten in block 2)": (
        lambda: ss.SplitShield(_kept(_plain_cnn()), cut=2), InvalidCutError, "pass cut=1"),
}


def _unchanged(before: torch.Tensor, after: torch.Tensor) -> bool:
    if before.is_meta or after.is_meta:  # no data to compare: the same shape on the same device
        return before.is_meta == after.is_meta and before.shape == after.shape
    return torch.equal(before, after)


@pytest.mark.parametrize("name", list(PROBES))
def test_bad_input_is_a_typed_error_with_a_fix(name: str) -> None:
    call, error, fragment = PROBES[name]
    _KEPT.clear()
    with pytest.raises(error) as info:
        call()
    assert fragment in str(info.value)
    assert "Fix:" in str(info.value)
    for model, state, training in _KEPT:  # the user's model is unchanged
        after = model.state_dict()
        assert after.keys() == state.keys() and model.training == training
        assert all(_unchanged(state[k], after[k]) for k in state)


def _labels_n1_int32() -> torch.Tensor:
    return Y.view(-1, 1).to(torch.int32)


# inputs as users hold them, accepted correctly (deep crashes on main)
ACCEPTED: dict[str, Callable[[], Any]] = {
    "audit (N, 1) int32 labels": lambda: _audit(_net(), (X, _labels_n1_int32())),
    "audit uint8 labels in a TensorDataset": lambda: _audit(
        _net(), TensorDataset(X, Y.to(torch.uint8))),
    "SplitShield.fit (N, 1) int32 labels in a TensorDataset": lambda: _fit(
        _shield(), TensorDataset(X, _labels_n1_int32())),
    "laplace fit (N, 1) labels in a DataLoader": lambda: _fit(
        create_defense("laplace", _net(), cut=2),
        DataLoader(TensorDataset(X, _labels_n1_int32()), batch_size=8)),
    "DP-SGD fit an (x, y) pair with int32 labels": lambda: _fit(
        create_defense("dpsgd", _net(), cut=2, noise_multiplier=0.5), (X, Y.int())),
    # issue 26 item 5: "add the batch/channel dimensions" in fit, a torch concat error in audit
    "SplitShield.fit a list of (image, label) items": lambda: _fit(_shield(), _items()),
    "audit a list of (image, label) items": lambda: _audit(_net(), _items()),
    # issue 26 item 5: "received 's'" on main
    "audit attacks='split-black-box', one name as a string": lambda: ss.audit(
        _net(), data=(X, Y), attacks="split-black-box", victims=8, budget="quick", seed=0,
        progress=False),
}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", list(ACCEPTED))
def test_labels_as_users_hold_them_are_accepted(name: str) -> None:
    result = ACCEPTED[name]()
    if isinstance(result, ss.AuditReport):
        assert [r.status for r in result.results] == ["ok"]
        assert result.victims == 8
    else:
        assert len(result.epochs) == 1


def test_audit_gives_the_same_report_for_every_label_form() -> None:
    base = _audit(_net(), (X, Y))
    other = _audit(_net(), TensorDataset(X, _labels_n1_int32()))
    assert base.clean_accuracy == other.clean_accuracy
    assert base.results[0].mse == pytest.approx(other.results[0].mse, rel=1e-6)


# ------------------------------------------------------------------ the forms
class _Items(Dataset):  # type: ignore[type-arg]
    """A map-style dataset of (image, label) items that is not a TensorDataset."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def _image_dataset() -> ImageDataset:
    return ImageDataset(name="toy", x_train=X, y_train=Y, x_val=X[:4], y_val=Y[:4],
                        x_test=X[:4], y_test=Y[:4], num_classes=2, class_names=("a", "b"),
                        source="test")


FORMS: dict[str, Callable[[], Any]] = {
    "pair": lambda: (X, Y),
    "numpy pair (N, 1) uint8": lambda: (X.numpy(), Y.numpy().astype(np.uint8)[:, None]),
    "TensorDataset": lambda: TensorDataset(X, Y),
    "map-style Dataset": lambda: _Items(X, Y),
    "DataLoader": lambda: DataLoader(TensorDataset(X, Y.view(-1, 1)), batch_size=7),
    "list of batches": lambda: [(X[:20], Y[:20]), (X[20:], Y[20:])],
    "ImageDataset": _image_dataset,
}


@pytest.mark.parametrize("form", list(FORMS))
def test_every_form_gives_the_same_checked_tensors(form: str) -> None:
    x, y = as_tensors(FORMS[form](), model=_net())
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and y.shape == (N,)
    torch.testing.assert_close(x, X)
    assert torch.equal(y, Y)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32,
                                   torch.int64])
@pytest.mark.parametrize("shape", [(N,), (N, 1)])
def test_labels_of_any_integer_dtype_and_n1_shape(dtype: torch.dtype, shape: tuple) -> None:
    y = as_labels(Y.to(dtype).view(shape), N, num_classes=2)
    assert y.dtype == torch.int64 and torch.equal(y, Y)


@pytest.mark.parametrize("bad", [Y.float(), Y.bool(), Y.view(-1, 2), Y.view(-1, 1, 1)])
def test_bad_labels_are_refused(bad: torch.Tensor) -> None:
    with pytest.raises(LabelError):
        as_labels(bad, N if bad.numel() == N and bad.dim() < 3 else bad.shape[0])


def test_unknown_form_names_the_forms() -> None:
    with pytest.raises(InputShapeError, match=r"docs/data\.md"):
        as_tensors("images.npz")


def test_non_4d_images_are_refused() -> None:
    with pytest.raises(InputShapeError, match="4-D"):
        as_tensors((X[:, 0], Y))


def test_a_dataloader_keeps_its_sampler_and_order() -> None:
    g = torch.Generator().manual_seed(5)
    loader = DataLoader(TensorDataset(X, Y.view(-1, 1).int()), batch_size=8, shuffle=True,
                        generator=g)
    checked = as_loader(loader, model=_net())
    torch.manual_seed(0)
    g.manual_seed(5)
    plain_first = next(iter(loader))
    g.manual_seed(5)
    checked_first = next(iter(checked))
    torch.testing.assert_close(checked_first[0], plain_first[0])
    assert torch.equal(checked_first[1], plain_first[1].view(-1).long())
    assert len(checked) == len(loader) == 5


def test_a_bad_batch_in_a_loader_is_typed() -> None:
    loader = as_loader([(X[:8], Y[:8]), (X[8:16] * 255, Y[8:16])])
    with pytest.raises(ConfigError, match="255"):
        list(loader)


def test_as_loader_is_seeded() -> None:
    def order(seed: int) -> torch.Tensor:
        return torch.cat([b[0][:, 0, 0, 0] for b in as_loader((X, Y), batch_size=8,
                                                               seed=seed)])
    assert torch.equal(order(0), order(0))
    assert not torch.equal(order(0), order(1))


# ----------------------------------------------------------- the model probe
def _frozen_bn_model() -> nn.Module:
    net = _net()
    net.train()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()  # frozen by the user
    return net


def test_probe_leaves_the_model_alone() -> None:
    net = _frozen_bn_model()
    before = copy.deepcopy(net.state_dict())
    modes = [m.training for m in net.modules()]
    rng = torch.get_rng_state()
    assert probe_model(net, X) == 2
    assert [m.training for m in net.modules()] == modes
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(torch.get_rng_state(), rng)


def test_probe_turns_a_model_that_returns_no_logits_into_a_typed_error() -> None:
    with pytest.raises(UnsupportedModelError, match="logits"):
        probe_model(nn.Sequential(nn.Conv2d(1, 2, 3)), X)


# ----------------------------------------------------------- normalisation
def test_normalized_wrapper_sees_normalised_input_and_takes_unit_images() -> None:
    net = _net()
    wrapped = Normalized(net, mean=0.5, std=0.25)
    x01 = X[:4]
    torch.testing.assert_close(wrapped.eval()(x01), net.eval()((x01 - 0.5) / 0.25))
    normalised = (X - 0.5) / 0.25
    with pytest.raises(ConfigError, match="normalised"):
        as_tensors((normalised, Y), model=net)
    x, _ = as_tensors((denormalize(normalised, 0.5, 0.25), Y), model=wrapped)
    torch.testing.assert_close(x, X)


def test_audit_of_a_normalized_model_scores_unit_images() -> None:
    report = _audit(Normalized(_net(), mean=(0.5,), std=(0.5,)), (X, Y))
    assert report.results[0].status == "ok"
    assert report.results[0].psnr is not None and report.results[0].psnr > 0


def test_denormalize_per_channel_against_numpy() -> None:
    x = torch.rand(3, 2, 4, 4)
    mean, std = (0.1, 0.2), (0.3, 0.4)
    expect = x.numpy() * np.array(std)[None, :, None, None] + np.array(mean)[None, :, None, None]
    np.testing.assert_allclose(denormalize(x, mean, std).numpy(), expect, rtol=1e-6)
    with pytest.raises(ConfigError):
        denormalize(x, mean, (0.3, 0.0))
    with pytest.raises(ConfigError):
        denormalize(x, (0.1, 0.2, 0.3), std)


# ----------------------------------------------------------- stratified split
def _imbalanced(n: int = 200) -> np.ndarray:
    return np.array([0] * (n * 3 // 4) + [1] * (n // 5) + [2] * (n - n * 3 // 4 - n // 5))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_stratified_split_preserves_class_proportions(seed: int) -> None:
    y = _imbalanced()
    tr, va, te = stratified_split(y, val=0.15, test=0.2, seed=seed)
    whole = np.bincount(y) / len(y)
    for idx, frac in ((va, 0.15), (te, 0.2), (tr, 0.65)):
        assert len(idx) == round(len(y) * frac)
        counts = np.bincount(y[idx], minlength=3)
        # within one image per class of the exact share
        assert np.all(np.abs(counts - whole * len(idx)) <= 1.0), (counts, whole * len(idx))


def test_stratified_split_is_disjoint_deterministic_and_seeded() -> None:
    y = _imbalanced()
    a = stratified_split(y, val=0.15, test=0.15, seed=3)
    b = stratified_split(y, val=0.15, test=0.15, seed=3)
    c = stratified_split(y, val=0.15, test=0.15, seed=4)
    joined = np.concatenate(a)
    assert sorted(joined.tolist()) == list(range(len(y)))  # disjoint and complete
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("val, test", [(0.0, 0.1), (0.5, 0.5), (1.2, 0.1), ("a", 0.1)])
def test_stratified_split_refuses_bad_fractions(val: Any, test: Any) -> None:
    with pytest.raises(ConfigError):
        stratified_split(_imbalanced(), val=val, test=test, seed=0)


def test_stratified_split_refuses_an_empty_split() -> None:
    with pytest.raises(EmptyDataError):
        stratified_split(np.array([0, 1, 0]), val=0.1, test=0.1, seed=0)


def test_from_tensors_builds_a_stratified_dataset() -> None:
    y = torch.from_numpy(_imbalanced()).to(torch.int32).view(-1, 1)
    x = torch.rand(len(y), 1, 4, 4)
    ds = ImageDataset.from_tensors(x, y, val=0.15, test=0.15, seed=0)
    again = ImageDataset.from_tensors(x, y, val=0.15, test=0.15, seed=0)
    other = ImageDataset.from_tensors(x, y, val=0.15, test=0.15, seed=1)
    assert ds.num_classes == 3 and ds.y_train.dtype == torch.int64
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (140, 30, 30)
    assert torch.equal(ds.x_val, again.x_val) and not torch.equal(ds.x_val, other.x_val)
    rows = {tuple(r.flatten().tolist()) for s in ("train", "val", "test")
            for r in getattr(ds, f"x_{s}")}
    assert len(rows) == len(y)  # disjoint: every image once
    share = np.bincount(_imbalanced()) / len(y) * len(ds.y_test)  # 22.5, 6, 1.5
    assert np.all(np.abs(np.bincount(ds.y_test.numpy(), minlength=3) - share) <= 1.0)


def test_from_tensors_denormalises_declared_normalisation() -> None:
    ds = ImageDataset.from_tensors((X - 0.5) / 0.5, Y, normalization=(0.5, 0.5), seed=0)
    assert float(ds.x_train.min()) >= 0.0 and float(ds.x_train.max()) <= 1.0


def test_compare_accepts_a_tensor_dataset() -> None:
    table = ss.compare(_net(), data=TensorDataset(X, _labels_n1_int32()), defenses=["none"],
                       epochs=1, attacks=["split-black-box"], victims=8, seed=0,
                       progress=False)
    assert [r.defense for r in table.rows] == ["none"]
    assert table.rows[0].leakage["split-black-box"].status == "ok"
    ds = as_dataset(TensorDataset(X, Y), model=_net(), seed=0)
    assert len(ds.y_test) == round(N * 0.15)


# ----------------------------------------------------------- issue 14 item 6
def test_root_pointing_at_a_file_names_its_folder(tmp_path: Path) -> None:
    from shieldsplit.adapters import verified_file

    file = tmp_path / "breastmnist.npz"
    file.write_bytes(b"x")
    with pytest.raises(DataFileError) as info:
        verified_file(file, "breastmnist.npz", md5="0" * 32, how_to_get="the official file")
    message = str(info.value)
    assert "breastmnist.npz/breastmnist.npz" not in message
    assert f"root={str(tmp_path)!r}" in message


def test_check_seed() -> None:
    assert check_seed(np.int64(4)) == 4
    for bad in ("a", -1, 2**32, True, 1.0):
        with pytest.raises(ConfigError):
            check_seed(bad)


# ----------------------------------------------------------- every defence's fit
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ss.available_defenses())
def test_every_defence_fit_takes_the_same_forms(name: str) -> None:
    data = TensorDataset(X, _labels_n1_int32())  # medmnist-style labels in a plain dataset
    defense = create_defense(name, _net(), cut=2, seed=0)
    with pytest.raises(ConfigError, match="integer seed"):
        defense.fit(data, epochs=1, seed="a", progress=False)
    with pytest.raises(ConfigError, match="255"):
        defense.fit((X * 255, Y), epochs=1, progress=False)
    history = defense.fit(data, epochs=1, seed=0, progress=False)
    assert len(history.epochs) == 1
    assert defense.predict_proba(X[:3]).shape == (3, 2)


def _rgb_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 2))


def test_split_shield_takes_a_scalar_normalisation_and_names_the_per_channel_limit() -> None:
    x = torch.rand(2, 3, 8, 8)
    shield = ss.SplitShield(Normalized(_rgb_net(), 0.5, 0.25), cut=1, seed=0)
    torch.testing.assert_close(shield.predict_proba(x).sum(1), torch.ones(2))
    with pytest.raises(UnsupportedModelError, match="single mean and std"):
        ss.SplitShield(Normalized(_rgb_net(), (0.4, 0.5, 0.6), (0.2, 0.3, 0.4)), cut=1)
    off = ss.SplitShield(Normalized(_rgb_net(), (0.4, 0.5, 0.6), (0.2, 0.3, 0.4)), cut=1,
                         config=ss.PGSLConfig.off())
    assert off.predict_proba(x).shape == (2, 2)


def test_a_list_of_items_gives_the_tensors_of_the_pair() -> None:
    x, y = as_tensors(_items(), model=_net())
    torch.testing.assert_close(x, X)
    assert torch.equal(y, Y)


def test_the_suggested_cut_of_the_plain_cnn_works() -> None:
    with pytest.raises(InvalidCutError) as info:
        ss.SplitShield(_plain_cnn(), cut=2)
    assert "valid cuts: 1 (after 0), 2 (after 2)" in str(info.value)
    shield = ss.SplitShield(_plain_cnn(), cut=1, seed=0)  # the cut the message suggests
    proba = shield.predict_proba(X[:4])
    assert proba.shape == (4, 2) and torch.allclose(proba.sum(1), torch.ones(4))


def test_check_seed_is_the_one_seed_check_of_every_entry_point() -> None:
    for bad in ("zero", -1, 1.5, True, 2**32):
        with pytest.raises(ConfigError, match="integer seed"):
            check_seed(bad)
    shield = ss.SplitShield(_net(), cut=2, seed=np.int64(3))  # type: ignore[arg-type]
    assert shield.seed == 3 and type(shield.seed) is int  # stored as a plain int
