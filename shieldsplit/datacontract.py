"""One data contract, checked once at every entry point (see docs/data.md).

``audit``, ``compare``, ``SplitShield.fit``/``predict_proba`` and every defence's
``fit`` accept the same forms of labelled images:

- a ``torch.utils.data.DataLoader`` of ``(images, labels)`` batches;
- any map-style ``Dataset`` of ``(image, label)`` items (e.g. ``TensorDataset``);
- an ``(x, y)`` pair of tensors (or numpy arrays);
- a list of ``(image, label)`` items (``(C, H, W)`` images, one number per label);
- a :class:`~shieldsplit.data.ImageDataset` (its training split).

Images are float ``(N, C, H, W)`` with values in ``[0, 1]``; labels are ``(N,)`` or
``(N, 1)`` (medmnist's own) of any integer dtype and come back as int64 ``(N,)``.
When a model is given, a probe forward on two images turns torch's deep crash on
the wrong channel count or image size into a typed error, and the labels are
checked against the model's classes. A float64 model is refused (convert a copy
with ``model.float()``): shieldsplit trains and attacks in float32.

Images that a model expects normalised (``(x - mean) / std``) are passed in
``[0, 1]`` with the model wrapped in :class:`Normalized`: the attacks then rebuild
and score ``[0, 1]`` images while the model still sees its normalised input.

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> x = torch.rand(6, 1, 8, 8)
    >>> y = torch.tensor([[0], [1], [2], [0], [1], [2]], dtype=torch.int32)
    >>> xs, ys = as_tensors(TensorDataset(x, y))
    >>> ys.dtype, tuple(ys.shape), bool(torch.equal(xs, x))
    (torch.int64, (6,), True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from shieldsplit._core.validate import (
    as_labels,
    check_mean_std,
    check_pair,
    check_seed,
    check_unit_range,
    denormalize,
)
from shieldsplit.data import ImageDataset
from shieldsplit.errors import (
    ConfigError,
    EmptyDataError,
    InputShapeError,
    ShieldSplitError,
    UnsupportedModelError,
)
from shieldsplit.training import eval_mode

#: Where the accepted forms are documented (every entry point's docstring points here).
DOCS = "docs/data.md"
_FORMS = ("a DataLoader, a map-style Dataset of (image, label), an (x, y) tensor pair "
          "or an ImageDataset")


# ------------------------------------------------------------------ normalisation
class Normalized(nn.Module):
    """A model that expects normalised input, taking ``[0, 1]`` images instead.

    ``Normalized(model, mean, std)(x) == model((x - mean) / std)``. Audit and defend
    the wrapper with ``[0, 1]`` images: attacks rebuild and are scored on ``[0, 1]``
    images, the wrapped model still sees its normalised input. The model is held,
    not copied; shieldsplit's entry points copy it before training.

    Args:
        model: the classifier trained on normalised images.
        mean: the per-channel mean (a number or one per channel).
        std: the per-channel std.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> wrapped = Normalized(net, mean=0.5, std=0.25)
        >>> x = torch.rand(3, 1, 2, 2)
        >>> bool(torch.allclose(wrapped(x), net((x - 0.5) / 0.25)))
        True
    """

    def __init__(self, model: nn.Module, mean: Any, std: Any) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise UnsupportedModelError.build(
                what="model", expected="a torch.nn.Module", received=type(model).__name__,
                fix="pass the classifier module itself",
            )
        m, s = check_mean_std(mean, std, None)
        self.model = model
        self.register_buffer("mean", m)
        self.register_buffer("std", s)

    def forward(self, x: Tensor) -> Tensor:
        """The wrapped model's output on ``(x - mean) / std``."""
        return self.model((x - self.mean) / self.std)  # type: ignore[operator]


# ------------------------------------------------------------------ the model
def check_model(model: Any, *, what: str = "model") -> nn.Module:
    """A float32 ``nn.Module`` with real weights, else a typed error (every entry point
    that takes a model calls it first: the one check of the model itself).

    Raises:
        UnsupportedModelError: not a module, weights on the meta device (shapes without
            data: nothing could run), or float64 (or other non-float32) weights.

    Example:
        >>> check_model(nn.Linear(2, 2).double())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        shieldsplit.errors.UnsupportedModelError: ... received weights of dtype torch.float64...
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError.build(
            what=what, expected="a torch.nn.Module classifier", received=type(model).__name__,
            fix="pass the model object itself (load its weights first)",
        )
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.is_meta for t in tensors):
        raise UnsupportedModelError.build(
            what=what, expected="a model with real weights (on the CPU or a GPU)",
            received="weights on the meta device (shapes without data)",
            fix="materialise the weights first: model.to_empty(device='cpu') then load a "
            "state_dict (or build the model outside torch.device('meta'))",
        )
    dtypes = {t.dtype for t in model.parameters() if t.is_floating_point()}
    if dtypes - {torch.float32}:
        raise UnsupportedModelError.build(
            what=what, expected="float32 weights (shieldsplit trains and attacks in float32)",
            received=f"weights of dtype {', '.join(sorted(map(str, dtypes)))}",
            fix="pass a float32 copy: copy.deepcopy(model).float()",
        )
    return model


def first_channels(model: nn.Module) -> int | None:
    """The image channels the model takes: its ``in_channels`` (a defence declares the
    user's, whatever its own first layer takes), else its first ``Conv2d``'s, or None.

    Example:
        >>> first_channels(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 1)))
        3
    """
    declared = getattr(model, "in_channels", None)
    if isinstance(declared, int) and not isinstance(declared, bool):
        return declared
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(conv.in_channels) if conv is not None else None


def probe_model(model: nn.Module, x: Tensor, *, what: str = "data") -> int:
    """Run ``model`` on two images of ``x`` and return its number of classes.

    Turns torch's deep crash (wrong channel count, wrong image size) into a typed
    error. The model's weights and every submodule's train/eval mode are unchanged.

    Args:
        model: a float32 classifier (see :func:`check_model`).
        x: checked images ``(N, C, H, W)``.
        what: the name of the images in messages.

    Returns:
        The width of the model's ``(N, classes)`` output.

    Raises:
        InputShapeError: the model cannot take images of this shape.
        UnsupportedModelError: the model does not return 2-D logits.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> probe_model(net, torch.rand(5, 1, 4, 4))
        3
        >>> probe_model(net, torch.rand(5, 1, 2, 2))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        shieldsplit.errors.InputShapeError: ... (C, H, W) = (1, 2, 2), on which the model failed...
    """
    channels = first_channels(model)
    shape = tuple(int(s) for s in x.shape[1:])
    if channels is not None and shape[0] != channels:
        raise InputShapeError.build(
            what=what, expected=f"{channels} channel(s), as the model's first Conv2d",
            received=f"images of shape {shape}",
            fix="convert the images to the model's channels (e.g. x.mean(1, keepdim=True) "
            "for grey, x.expand(-1, 3, -1, -1) for RGB) or build the model for them",
        )
    try:
        with eval_mode(model), torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = model(x[:2])  # forked RNG: a noisy model's probe draws nothing of the user's
    except ShieldSplitError:
        raise
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise InputShapeError.build(
            what=what, expected="images of the size and channel count the model was built for",
            received=f"images of shape (C, H, W) = {shape}, on which the model failed "
            f"({type(exc).__name__}: {first})",
            fix="resize the images to the model's input size (e.g. "
            "torch.nn.functional.interpolate) or build the model for this size",
        ) from exc
    if not isinstance(out, Tensor) or out.dim() != 2:
        raise UnsupportedModelError.build(
            what="model", expected="a classifier returning (N, classes) logits",
            received=f"{type(out).__name__} of shape {tuple(getattr(out, 'shape', ()))}",
            fix="wrap the model so that forward returns a 2-D logits tensor",
        )
    return int(out.shape[1])


# ------------------------------------------------------------------ the data
def _stack(items: list[Any], what: str) -> Tensor:
    try:
        return torch.stack([torch.as_tensor(v) for v in items])
    except (TypeError, RuntimeError, ValueError) as exc:
        raise InputShapeError.build(
            what=what, expected="items of one shape and type",
            received=f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}",
            fix="make every item the same shape",
        ) from exc


def _pair(item: Any, what: str) -> tuple[Any, Any]:
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        raise InputShapeError.build(
            what=what, expected="(images, labels) pairs", received=type(item).__name__,
            fix=f"pass {_FORMS} ({DOCS})",
        )
    return item[0], item[1]


def _is_items(data: Any) -> bool:
    """A list (or tuple) of ``(image, label)`` items, as a Dataset yields them: each image
    without its batch dimension (``(C, H, W)``) and each label one number. Such a list is
    a data set (stacked), not a list of ``(images, labels)`` batches."""
    if not isinstance(data, (list, tuple)) or not data:
        return False
    first = data[0]
    if not (isinstance(first, (tuple, list)) and len(first) == 2):
        return False
    image, label = first
    return int(getattr(label, "ndim", 0)) == 0 and not isinstance(label, (str, bytes)) and (
        int(getattr(image, "ndim", 4)) < 4)


def _collect(data: Any, what: str) -> tuple[Any, Any]:
    """Any accepted form -> raw (images, labels), not yet checked."""
    if isinstance(data, ImageDataset):
        return data.x_train, data.y_train
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        return data.tensors[0], data.tensors[1]
    if _is_items(data):  # [(image, label), ...]: stacked like a map-style Dataset
        pairs = [_pair(item, what) for item in data]
        return _stack([p[0] for p in pairs], what), _stack([p[1] for p in pairs], what)
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(
        data[0], (tuple, list)
    ):
        return data[0], data[1]
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset) and isinstance(
        data, Sized
    ):
        pairs = [_pair(data[i], what) for i in range(len(data))]
        if not pairs:
            raise EmptyDataError.build(what=what, expected="at least one image",
                                       received="an empty dataset", fix="check the data set")
        return _stack([p[0] for p in pairs], what), _stack([p[1] for p in pairs], what)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, Tensor)):
        xs, ys = [], []
        for batch in data:
            bx, by = _pair(batch, what)
            xs.append(torch.as_tensor(bx))
            ys.append(torch.as_tensor(by))
        if not xs:
            raise EmptyDataError.build(what=what, expected="at least one batch",
                                       received="none", fix="check the loader")
        try:
            return torch.cat(xs), torch.cat([y.reshape(len(y), -1) if y.dim() > 1 else y
                                             for y in ys])
        except RuntimeError as exc:
            raise InputShapeError.build(
                what=what, expected="batches of one image shape", received=str(exc)[:120],
                fix="make every batch the same image shape",
            ) from exc
    raise InputShapeError.build(
        what=what, expected=_FORMS, received=type(data).__name__,
        fix=f"pass one of those ({DOCS})",
    )


def as_tensors(
    data: Any,
    *,
    model: nn.Module | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    what: str = "data",
) -> tuple[Tensor, Tensor]:
    """Every accepted form of labelled images as checked tensors (the one data contract).

    Args:
        data: a DataLoader, a map-style Dataset of ``(image, label)``, an ``(x, y)``
            pair or an :class:`~shieldsplit.data.ImageDataset` (its training split).
        model: when given, checked (a float32 module) and probed on two images; the
            labels must then lie in its classes. It is not modified.
        num_classes: labels must lie in ``[0, num_classes)`` (default: the model's).
        in_channels: the images' channel count, when known without a model.
        what: the name of the data in messages.

    Returns:
        Images float32 ``(N, C, H, W)`` in ``[0, 1]`` and labels int64 ``(N,)``.

    Raises:
        InputShapeError: an unknown form, non-4-D images, or images the model cannot take.
        NonFiniteInputError: NaN or infinity in the images.
        ConfigError: images outside ``[0, 1]`` (the fix says: divide by 255, or declare
            the normalisation with :class:`Normalized`).
        LabelError: float labels, another count than images, labels outside the classes.
        UnsupportedModelError: not a module, or a float64 model.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> as_tensors((torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 5])), model=net)
        Traceback (most recent call last):
        ...
        shieldsplit.errors.LabelError: Invalid label: expected labels in [0, 1], ...
    """
    if model is not None:
        check_model(model)
    raw_x, raw_y = _collect(data, what)
    x, y = check_pair(raw_x, raw_y, in_channels=in_channels, what=what)
    if model is not None:
        classes = probe_model(model, x, what=what)
        num_classes = classes if num_classes is None else num_classes
    if num_classes is not None:
        y = as_labels(y, len(y), num_classes=num_classes, what=f"{what} labels")
    return x, y


# ------------------------------------------------------------------ loaders
def convert_batch(x: Any, y: Any) -> tuple[Any, Any]:
    """One training batch brought to the contract's types, checked only where cheap.

    Labels ``(N, 1)`` or of any integer dtype become int64 ``(N,)`` and numpy arrays
    become tensors; float64 images become float32; finite images outside ``[0, 1]``
    raise. The rest (non-finite values, label range, shapes) is left to the training
    step's own per-batch check, which names ``x`` or ``y`` and rolls a fit back.

    Args:
        x: a batch of images.
        y: its labels.

    Returns:
        The converted ``(x, y)``.

    Raises:
        ConfigError: finite images outside ``[0, 1]``.
        LabelError: float labels, or another count than images.

    Example:
        >>> x, y = convert_batch(torch.rand(2, 1, 3, 3).double(), torch.tensor([[1], [0]]))
        >>> x.dtype, y.tolist()
        (torch.float32, [1, 0])
    """
    if not isinstance(x, Tensor):
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            x = torch.as_tensor(x)
    if not isinstance(x, Tensor) or x.dim() == 0 or x.shape[0] == 0:
        return x, y  # an empty (Poisson) batch, or a shape the step's check will name
    if x.is_floating_point():
        x = x.to(torch.float32)
        if bool(torch.isfinite(x).all()):
            check_unit_range(x, what="x")
    if isinstance(y, Tensor) and y.dim() == 1 and y.dtype == torch.int64:
        return x, y
    return x, as_labels(y, int(x.shape[0]), what="y")


class _ContractCollate:
    """A loader's collate function followed by :func:`convert_batch`."""

    def __init__(self, collate: Callable[[Any], Any], what: str) -> None:
        self.collate, self.what = collate, what

    def __call__(self, items: Any) -> tuple[Any, Any]:
        return convert_batch(*_pair(self.collate(items), self.what))


def as_loader(
    data: Any,
    *,
    batch_size: int = 64,
    seed: int = 0,
    shuffle: bool = True,
    model: nn.Module | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    what: str = "train_loader",
) -> Iterable[tuple[Tensor, Tensor]]:
    """Any accepted form as batches that meet the contract (what every ``fit`` trains on).

    A DataLoader keeps its dataset, sampler and workers: only its collate function
    gains :func:`check_pair`, so labels ``(N, 1)`` or ``int32`` arrive as int64 ``(N,)``
    and a bad batch raises a typed error. Its first batch (built from the dataset,
    the sampler untouched) is checked and probed on ``model`` before any training.
    Tensors, datasets and an ImageDataset become a DataLoader over a TensorDataset.

    Args:
        data: see :func:`as_tensors`.
        batch_size: batch size for the forms that are not loaders.
        seed: seeds the shuffling of those.
        shuffle: shuffle those (False for validation data).
        model: probed on the first batch (see :func:`probe_model`); not modified.
        num_classes: labels must lie in ``[0, num_classes)`` (default: the model's).
        in_channels: the images' channel count, when known.
        what: the name of the data in messages.

    Returns:
        A DataLoader, or for another iterable of batches an iterable that checks each.

    Raises:
        See :func:`as_tensors`; ``ConfigError`` for a bad ``seed``.

    Example:
        >>> x, y = torch.rand(10, 1, 4, 4), torch.arange(10, dtype=torch.int32) % 2
        >>> loader = as_loader((x, y.view(-1, 1)), batch_size=4, seed=0)
        >>> [tuple(b[1].shape) for b in loader], next(iter(loader))[1].dtype
        ([(4,), (4,), (2,)], torch.int64)
    """
    seed = check_seed(seed)
    if model is not None:
        check_model(model)
    if isinstance(data, DataLoader):
        convert = _ContractCollate(data.collate_fn, what)
        if not isinstance(data.dataset, IterableDataset) and data.batch_size is not None:
            n = len(data.dataset)  # type: ignore[arg-type]
            if n == 0:
                raise EmptyDataError.build(what=what, expected="at least one image",
                                           received="an empty dataset", fix="check the data set")
            first = data.collate_fn([data.dataset[i] for i in range(min(n, data.batch_size, 64))])
            _check_first(first, model, num_classes, in_channels, what)
        extra: dict[str, Any] = {}
        if data.num_workers > 0:
            extra = {"prefetch_factor": data.prefetch_factor,
                     "persistent_workers": data.persistent_workers}
        return DataLoader(
            data.dataset, batch_sampler=data.batch_sampler, num_workers=data.num_workers,
            collate_fn=convert, pin_memory=data.pin_memory, timeout=data.timeout,
            worker_init_fn=data.worker_init_fn, generator=data.generator,
            multiprocessing_context=data.multiprocessing_context, **extra,
        ) if data.batch_sampler is not None else DataLoader(
            data.dataset, batch_size=None, collate_fn=convert, num_workers=data.num_workers,
        )
    if _is_batches(data):
        convert = _ContractCollate(_identity, what)
        if iter(data) is not data:  # re-iterable: check the first batch now
            first_batch = next(iter(data), None)
            if first_batch is None:
                raise EmptyDataError.build(what=what, expected="at least one batch",
                                           received="none", fix="check the loader")
            _check_first(first_batch, model, num_classes, in_channels, what)
        return (_Batches if isinstance(data, Sized) else _Unsized)(data, convert)
    x, y = as_tensors(data, model=model, num_classes=num_classes, in_channels=in_channels,
                      what=what)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError.build(what="batch_size", expected="an int >= 1",
                                received=repr(batch_size), fix="pass batch_size=64")
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed) if shuffle else None)


def _identity(batch: Any) -> Any:
    return batch


def _check_first(batch: Any, model: nn.Module | None, num_classes: int | None,
                 in_channels: int | None, what: str) -> None:
    """The whole contract on the first batch, before any training: a bad form, images
    or labels, or a model that cannot take the images, fail now (nothing has changed)."""
    x, y = check_pair(*_pair(batch, what), in_channels=in_channels, what="x", label_what="y")
    if model is not None:
        classes = probe_model(model, x, what="x")
        num_classes = classes if num_classes is None else num_classes
    if num_classes is not None:
        as_labels(y, len(y), num_classes=num_classes, what="y")


def _is_batches(data: Any) -> bool:
    """An iterable of (x, y) batches that is none of the other forms."""
    return (
        isinstance(data, Iterable)
        and not isinstance(data, (str, bytes, Tensor, ImageDataset, tuple, Dataset))
        and not (isinstance(data, list) and len(data) == 2
                 and not isinstance(data[0], (tuple, list)))
        and not _is_items(data)
    )


class _Unsized:
    """An iterable of batches with :func:`check_pair` on each."""

    def __init__(self, batches: Iterable[Any], convert: _ContractCollate) -> None:
        self.batches, self.convert = batches, convert

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in self.batches:
            yield self.convert(batch)


class _Batches(_Unsized):
    """The same for a sized iterable: keeps its ``len`` (progress bars, sample rates)."""

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]


def as_dataset(data: Any, *, model: nn.Module | None = None, val: float = 0.15,
               test: float = 0.15, seed: int = 0) -> ImageDataset:
    """Any accepted form as an :class:`~shieldsplit.data.ImageDataset` (what ``compare``
    trains, tests and audits on).

    An ImageDataset is kept (and checked against ``model``); any other form gets a
    seeded stratified train/val/test split (:meth:`ImageDataset.from_tensors`).

    Args:
        data: see :func:`as_tensors`.
        model: probed on two images (not modified); its classes set ``num_classes``.
        val: validation fraction of the split.
        test: test fraction of the split.
        seed: seeds the split.

    Returns:
        The data set.

    Raises:
        See :func:`as_tensors` and :func:`shieldsplit.data.stratified_split`.
    """
    if isinstance(data, ImageDataset):
        if model is not None:
            check_model(model)
            classes = probe_model(model, data.x_train)
            if classes < data.num_classes:
                as_tensors((data.x_train, data.y_train), num_classes=classes)
                as_tensors((data.x_test, data.y_test), num_classes=classes, what="test split")
        return data
    x, y = as_tensors(data, model=model)
    model_classes = probe_model(model, x) if model is not None else None
    return ImageDataset.from_tensors(x, y, val=val, test=test, seed=seed,
                                     num_classes=model_classes,
                                     name="data")


__all__ = [
    "DOCS", "Normalized", "as_dataset", "as_loader", "as_tensors", "check_model", "check_pair",
    "convert_batch", "denormalize", "first_channels", "probe_model",
]
