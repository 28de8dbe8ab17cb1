"""Tests for shieldsplit.data and the loaders in shieldsplit.adapters."""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import shieldsplit.adapters as adapters
from shieldsplit.adapters.digits import load_digits_arrays
from shieldsplit.adapters.medmnist import OFFICIAL_MD5, load_medmnist, medmnist_class_names
from shieldsplit.adapters.mnist import (
    IMAGES_FILE,
    IMAGES_MD5,
    LABELS_FILE,
    LABELS_MD5,
    load_mnist_test,
    parse_idx,
)
from shieldsplit.data import (
    DATA_ROOT_ENV,
    DataLoaders,
    ImageDataset,
    available_datasets,
    default_data_root,
    load_dataset,
    make_loaders,
    register_dataset,
    unregister_dataset,
)
from shieldsplit.errors import (
    ConfigError,
    DataFileError,
    EmptyDataError,
    InputShapeError,
    LabelError,
    NonFiniteInputError,
    ShieldSplitError,
)

SPLITS = ("train", "val", "test")


def _split(ds: ImageDataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")


def _flip_byte(src: Path, dst: Path) -> Path:
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_dataset("digits", seed=0)


# ---------------------------------------------------------------- digits


def test_digits_shapes_ranges_and_splits(digits: ImageDataset) -> None:
    assert digits.name == "digits"
    assert digits.num_classes == 10
    assert digits.class_names == tuple(str(i) for i in range(10))
    assert digits.in_channels == 1
    assert digits.image_size == (8, 8)
    sizes = {s: len(_split(digits, s)[1]) for s in SPLITS}
    assert sizes == {"train": 1257, "val": 270, "test": 270}
    for split in SPLITS:
        x, y = _split(digits, split)
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert set(y.tolist()) == set(range(10))  # stratified: every class in every split
    assert float(digits.x_train.max()) == 1.0  # 16 / 16


def test_digits_splits_partition_the_source(digits: ImageDataset) -> None:
    images, labels = load_digits_arrays()
    assert images.shape == (1797, 8, 8) and labels.dtype == np.int64
    x_all = torch.cat([digits.x_train, digits.x_val, digits.x_test]).flatten(1)
    y_all = torch.cat([digits.y_train, digits.y_val, digits.y_test])
    assert x_all.shape[0] == 1797
    assert torch.bincount(y_all).tolist() == np.bincount(labels).tolist()
    # the splits hold every source image exactly once (same multiset of rows)
    src = torch.from_numpy(images.reshape(1797, -1).astype(np.float32) / 16.0)
    rows, counts = torch.unique(x_all, dim=0, return_counts=True)
    src_rows, src_counts = torch.unique(src, dim=0, return_counts=True)
    assert torch.equal(rows, src_rows) and torch.equal(counts, src_counts)


def test_digits_stratified_proportions(digits: ImageDataset) -> None:
    train = torch.bincount(digits.y_train, minlength=10).double() / len(digits.y_train)
    test = torch.bincount(digits.y_test, minlength=10).double() / len(digits.y_test)
    assert torch.allclose(train, test, atol=0.01)


def test_same_seed_same_data(digits: ImageDataset) -> None:
    again = load_dataset("digits", seed=0)
    for split in SPLITS:
        assert torch.equal(_split(digits, split)[0], _split(again, split)[0])
        assert torch.equal(_split(digits, split)[1], _split(again, split)[1])


def test_different_seed_different_split(digits: ImageDataset) -> None:
    other = load_dataset("digits", seed=1)
    assert len(other.y_train) == len(digits.y_train)
    assert not torch.equal(other.x_train, digits.x_train)
    assert not torch.equal(other.x_test, digits.x_test)


def test_name_is_case_insensitive_and_digits_is_default() -> None:
    ds = load_dataset()
    assert ds.name == "digits"
    assert torch.equal(load_dataset(" Digits ").x_val, ds.x_val)


def test_limit_caps_each_split_deterministically() -> None:
    a = load_dataset("digits", seed=3, limit=50)
    b = load_dataset("digits", seed=3, limit=50)
    for split in SPLITS:
        assert len(_split(a, split)[1]) == 50
        assert torch.equal(_split(a, split)[0], _split(b, split)[0])
    assert "at most 50 per split" in a.source
    full = load_dataset("digits", seed=3, limit=10_000)
    assert len(full.y_train) == 1257


@pytest.mark.parametrize("limit", [0, -5, 2.5, True, "10"])
def test_bad_limit(limit: object) -> None:
    with pytest.raises(ConfigError, match="limit"):
        load_dataset("digits", limit=limit)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [-1, 2**32, 1.0, None, False])
def test_bad_seed(seed: object) -> None:
    with pytest.raises(ConfigError, match="seed"):
        load_dataset("digits", seed=seed)  # type: ignore[arg-type]


def test_summary_and_repr(digits: ImageDataset) -> None:
    text = digits.summary()
    assert text.startswith("digits: 1797 images of 1x8x8, 10 classes")
    assert "train 1257, val 270, test 270" in text
    assert "source: scikit-learn load_digits()" in text
    assert "num_classes=10" in repr(digits) and len(repr(digits)) < 200


def test_dataset_is_frozen(digits: ImageDataset) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        digits.name = "other"  # type: ignore[misc]


# ---------------------------------------------------------------- registry and errors


def test_builtin_names() -> None:
    assert {"digits", "breastmnist", "pneumoniamnist", "mnist"} <= set(available_datasets())
    assert available_datasets() == sorted(available_datasets())


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset("cifar10")
    message = str(info.value)
    assert "'cifar10'" in message
    for name in available_datasets():
        assert repr(name) in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", ["breastmnist", "pneumoniamnist", "mnist"])
def test_missing_root_tells_how_to_pass_it(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset(name)
    message = str(info.value)
    assert "--data-root DIR" in message and "root=" in message
    assert info.value.what == "root"


def test_bad_root_type() -> None:
    with pytest.raises(ConfigError, match="root"):
        load_dataset("mnist", root=42)  # type: ignore[arg-type]


def test_register_and_unregister_custom_dataset() -> None:
    def tiny(*, root: Path | None, seed: int) -> ImageDataset:
        return load_dataset("digits", seed=seed, limit=4)

    register_dataset("Tiny-Test", tiny)
    try:
        assert "tiny-test" in available_datasets()
        assert len(load_dataset("tiny-test", limit=2).y_train) == 2
        with pytest.raises(ConfigError, match="overwrite=True"):
            register_dataset("tiny-test", tiny)
        register_dataset("tiny-test", tiny, overwrite=True)
    finally:
        unregister_dataset("tiny-test")
    assert "tiny-test" not in available_datasets()
    with pytest.raises(ConfigError):
        unregister_dataset("tiny-test")


def test_register_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="loader_fn"):
        register_dataset("x-not-callable", 3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="name"):
        register_dataset("  ", lambda **_: None)  # type: ignore[arg-type, return-value]


def test_loader_must_return_image_dataset() -> None:
    register_dataset("bad-loader-test", lambda **_: "nope")  # type: ignore[arg-type, return-value]
    try:
        with pytest.raises(ConfigError, match="ImageDataset"):
            load_dataset("bad-loader-test")
    finally:
        unregister_dataset("bad-loader-test")


def test_custom_needs_root() -> None:
    register_dataset("needs-root-test", lambda **_: None, needs_root=True)  # type: ignore[arg-type, return-value]
    try:
        with pytest.raises(ConfigError, match="--data-root"):
            load_dataset("needs-root-test")
    finally:
        unregister_dataset("needs-root-test")


def _toy(**overrides: object) -> ImageDataset:
    fields: dict[str, object] = {
        "name": "toy",
        "x_train": torch.rand(4, 1, 3, 3),
        "y_train": torch.tensor([0, 1, 0, 1]),
        "x_val": torch.rand(2, 1, 3, 3),
        "y_val": torch.tensor([0, 1]),
        "x_test": torch.rand(2, 1, 3, 3),
        "y_test": torch.tensor([1, 0]),
        "num_classes": 2,
        "class_names": ("a", "b"),
        "source": "test",
    }
    fields.update(overrides)
    return ImageDataset(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"x_train": torch.rand(4, 3, 3)}, InputShapeError),
        ({"x_train": torch.rand(4, 1, 3, 3).double()}, InputShapeError),
        ({"x_val": torch.rand(2, 1, 4, 4)}, InputShapeError),
        ({"x_test": torch.full((2, 1, 3, 3), float("nan"))}, NonFiniteInputError),
        ({"x_test": torch.full((2, 1, 3, 3), 2.0)}, ConfigError),
        ({"y_train": torch.tensor([0, 1, 0, 2])}, LabelError),
        ({"y_train": torch.tensor([0, 1, 0])}, LabelError),
        ({"y_val": torch.tensor([0.0, 1.0])}, LabelError),
        (
            {"x_val": torch.rand(0, 1, 3, 3), "y_val": torch.zeros(0, dtype=torch.int64)},
            EmptyDataError,
        ),
        ({"class_names": ("a",)}, ConfigError),
        ({"num_classes": 0, "class_names": ()}, ConfigError),
        ({"name": ""}, ConfigError),
    ],
)
def test_image_dataset_validates(overrides: dict[str, object], error: type) -> None:
    assert _toy().in_channels == 1
    with pytest.raises(error):
        _toy(**overrides)


# ---------------------------------------------------------------- loaders


def test_make_loaders_batches_and_shuffling(digits: ImageDataset) -> None:
    loaders = make_loaders(digits, batch_size=100, seed=7)
    assert isinstance(loaders, DataLoaders)
    assert (len(loaders.train), len(loaders.val), len(loaders.test)) == (13, 3, 3)
    xb, yb = next(iter(loaders.val))
    assert torch.equal(xb, digits.x_val[:100]) and torch.equal(yb, digits.y_val[:100])
    xt, _ = next(iter(loaders.test))
    assert torch.equal(xt, digits.x_test[:100])
    first = next(iter(loaders.train))[1]
    assert not torch.equal(first, digits.y_train[:100])  # shuffled
    again = next(iter(make_loaders(digits, batch_size=100, seed=7).train))[1]
    assert torch.equal(first, again)  # same seed, same order
    other = next(iter(make_loaders(digits, batch_size=100, seed=8).train))[1]
    assert not torch.equal(first, other)
    assert sum(len(y) for _, y in loaders.train) == 1257


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True, "64"])
def test_make_loaders_bad_batch_size(digits: ImageDataset, batch_size: object) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        make_loaders(digits, batch_size=batch_size)  # type: ignore[arg-type]


def test_make_loaders_rejects_non_dataset() -> None:
    with pytest.raises(ConfigError):
        make_loaders("digits")  # type: ignore[arg-type]


# ---------------------------------------------------------------- data root


def test_default_data_root_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert default_data_root() == tmp_path.resolve()


def test_default_data_root_ignores_missing_env_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "nope"))
    root = default_data_root()
    assert root is None or (root.is_dir() and root != tmp_path / "nope")


# ---------------------------------------------------------------- file checks (no shared data)


def test_missing_medmnist_file_names_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DataFileError) as info:
        load_dataset("breastmnist", root=tmp_path)
    message = str(info.value)
    assert "breastmnist.npz" in message and str(tmp_path) in message
    assert OFFICIAL_MD5["breastmnist"] in message and "--data-root" in message


def test_missing_mnist_file_names_file_and_folders(tmp_path: Path) -> None:
    with pytest.raises(DataFileError) as info:
        load_dataset("mnist", root=tmp_path)
    message = str(info.value)
    assert IMAGES_FILE in message and str(tmp_path / "mnist") in message


def test_medmnist_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "medmnist", None)  # makes `import medmnist` fail
    with pytest.raises(ConfigError, match=r'pip install "shieldsplit\[medmnist\]"'):
        load_medmnist("breastmnist", tmp_path)


def test_medmnist_unknown_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="breastmnist"):
        load_medmnist("chestmnist", tmp_path)  # multi-label: not supported
    assert medmnist_class_names("BreastMNIST") == ("malignant", "normal, benign")


def test_md5_is_cached_per_path_mtime_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"abc")
    calls = []
    real_md5 = adapters.hashlib.md5

    class CountingHashlib:
        @staticmethod
        def md5(*args: object, **kwargs: object) -> object:
            calls.append(1)
            return real_md5(*args, **kwargs)

    monkeypatch.setattr(adapters, "hashlib", CountingHashlib)
    first = adapters.file_md5(path)
    assert adapters.file_md5(path) == first == "900150983cd24fb0d6963f7d28e17f72"
    assert len(calls) == 1
    path.write_bytes(b"abd")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert adapters.file_md5(path) != first
    assert len(calls) == 2


def test_parse_idx_rejects_bad_headers() -> None:
    good = struct.pack(">IIII", 2051, 1, 2, 2) + bytes(4)
    assert parse_idx(good, expected_magic=2051, source="x").shape == (1, 2, 2)
    with pytest.raises(DataFileError, match="2049"):
        parse_idx(good, expected_magic=2049, source="x")
    with pytest.raises(DataFileError, match="bytes"):
        parse_idx(good[:-1], expected_magic=2051, source="x")
    with pytest.raises(DataFileError):
        parse_idx(b"\x00\x00", expected_magic=2051, source="x")
    labels = struct.pack(">II", 2049, 3) + bytes([7, 8, 9])
    assert parse_idx(labels, expected_magic=2049, source="y").tolist() == [7, 8, 9]
    wide = struct.pack(">II", 0x0C01, 2) + struct.pack(">ii", -1, 70000)
    assert parse_idx(wide, expected_magic=0x0C01, source="z").tolist() == [-1, 70000]


# ---------------------------------------------------------------- shared data


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("name", "sizes", "class_names", "counts"),
    [
        (
            "breastmnist",
            (546, 78, 156),
            ("malignant", "normal, benign"),
            ([147, 399], [21, 57], [42, 114]),
        ),
        (
            "pneumoniamnist",
            (4708, 524, 624),
            ("normal", "pneumonia"),
            ([1214, 3494], [135, 389], [234, 390]),
        ),
    ],
)
def test_medmnist_official_splits(
    shared_data_root: Path,
    name: str,
    sizes: tuple[int, int, int],
    class_names: tuple[str, ...],
    counts: tuple[list[int], ...],
) -> None:
    ds = load_dataset(name, root=shared_data_root)
    assert ds.name == name and ds.num_classes == 2 and ds.class_names == class_names
    assert (ds.in_channels, ds.image_size) == (1, (28, 28))
    for split, size, count in zip(SPLITS, sizes, counts, strict=True):
        x, y = _split(ds, split)
        assert x.shape == (size, 1, 28, 28) and x.dtype == torch.float32
        assert y.shape == (size,) and y.dtype == torch.int64
        assert torch.bincount(y, minlength=2).tolist() == count
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert f"{name}.npz" in ds.source
    # the official splits do not depend on the seed
    assert torch.equal(load_dataset(name, root=str(shared_data_root), seed=5).x_val, ds.x_val)


@pytest.mark.shared_data
def test_medmnist_matches_raw_npz(shared_data_root: Path) -> None:
    raw = np.load(shared_data_root / "breastmnist.npz")
    arrays = load_medmnist("breastmnist", shared_data_root)
    for split in SPLITS:
        np.testing.assert_array_equal(arrays[split][0], raw[f"{split}_images"])
        np.testing.assert_array_equal(arrays[split][1], raw[f"{split}_labels"].ravel())
    ds = load_dataset("breastmnist", root=shared_data_root)
    expected = torch.from_numpy(raw["test_images"][:, None].astype(np.float32) / 255.0)
    assert torch.equal(ds.x_test, expected)


@pytest.mark.shared_data
def test_mnist_split(shared_data_root: Path) -> None:
    ds = load_dataset("mnist", root=shared_data_root, seed=0)
    assert ds.num_classes == 10 and ds.class_names == tuple(str(i) for i in range(10))
    assert [len(_split(ds, s)[1]) for s in SPLITS] == [7000, 1000, 2000]
    assert ds.x_train.shape[1:] == (1, 28, 28)
    y_all = torch.cat([ds.y_train, ds.y_val, ds.y_test])
    readme_counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert torch.bincount(y_all).tolist() == readme_counts
    for split in SPLITS:
        assert set(_split(ds, split)[1].tolist()) == set(range(10))
    assert float(ds.x_train.max()) == 1.0 and float(ds.x_train.min()) == 0.0
    # deterministic per seed, different across seeds; root may be the mnist/ folder itself
    same = load_dataset("mnist", root=shared_data_root / "mnist", seed=0)
    assert torch.equal(same.x_test, ds.x_test)
    other = load_dataset("mnist", root=shared_data_root, seed=1)
    assert not torch.equal(other.y_train, ds.y_train)


@pytest.mark.shared_data
def test_mnist_raw_arrays(shared_data_root: Path) -> None:
    images, labels = load_mnist_test(shared_data_root)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    with gzip.open(shared_data_root / "mnist" / LABELS_FILE) as handle:
        raw = np.frombuffer(handle.read(), np.uint8, offset=8)
    np.testing.assert_array_equal(labels, raw)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["breastmnist", "pneumoniamnist"])
def test_corrupted_medmnist_copy(shared_data_root: Path, tmp_path: Path, name: str) -> None:
    _flip_byte(shared_data_root / f"{name}.npz", tmp_path / f"{name}.npz")
    with pytest.raises(DataFileError) as info:
        load_dataset(name, root=tmp_path)
    message = str(info.value)
    assert OFFICIAL_MD5[name] in message
    assert f"{name}.npz" in message and "re-download" in message
    assert isinstance(info.value, ShieldSplitError)


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("filename", "md5"), [(IMAGES_FILE, IMAGES_MD5), (LABELS_FILE, LABELS_MD5)]
)
def test_corrupted_mnist_copy(
    shared_data_root: Path, tmp_path: Path, filename: str, md5: str
) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in (IMAGES_FILE, LABELS_FILE):
        (folder / name).write_bytes((shared_data_root / "mnist" / name).read_bytes())
    _flip_byte(shared_data_root / "mnist" / filename, folder / filename)
    with pytest.raises(DataFileError) as info:
        load_dataset("mnist", root=tmp_path)
    assert md5 in str(info.value) and filename in str(info.value)


@pytest.mark.shared_data
def test_mnist_missing_labels_file(shared_data_root: Path, tmp_path: Path) -> None:
    (tmp_path / IMAGES_FILE).write_bytes((shared_data_root / "mnist" / IMAGES_FILE).read_bytes())
    with pytest.raises(DataFileError) as info:
        load_dataset("mnist", root=tmp_path)  # root is the folder holding the files
    assert LABELS_FILE in str(info.value) and str(tmp_path) in str(info.value)


@pytest.mark.shared_data
def test_file_changed_after_a_good_load_is_rechecked(
    shared_data_root: Path, tmp_path: Path
) -> None:
    path = tmp_path / "breastmnist.npz"
    path.write_bytes((shared_data_root / "breastmnist.npz").read_bytes())
    assert len(load_dataset("breastmnist", root=tmp_path).y_train) == 546
    _flip_byte(path, path)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    with pytest.raises(DataFileError, match=OFFICIAL_MD5["breastmnist"]):
        load_dataset("breastmnist", root=tmp_path)
