"""Checks of what users pass in, shared by every defence and attack.

Each check raises a typed :class:`~shieldsplit.errors.ShieldSplitError` that
says what was wrong, what was expected, what was received and how to fix it.

Example:
    >>> import torch
    >>> check_batch(torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), num_classes=2)
    >>> try:
    ...     check_batch(torch.rand(2, 8, 8))
    ... except ValueError as err:
    ...     print(type(err).__name__, err.what)
    InputShapeError x
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor

from shieldsplit.errors import (
    ConfigError,
    EmptyDataError,
    InputShapeError,
    LabelError,
    NonFiniteInputError,
)

_MAX_SEED = 2**32 - 1


def check_batch(
    x: Any,
    y: Any = None,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    what: str = "x",
    unit_range: bool = False,
) -> None:
    """Check an image batch (and its labels, when given).

    Args:
        x: the candidate images: a non-empty, finite, floating ``(N, C, H, W)`` tensor.
        y: None, or ``N`` integer labels (1-D).
        num_classes: when given, labels must lie in ``[0, num_classes)``.
        in_channels: when given, ``x`` must have this many channels.
        what: the name of ``x`` in error messages.
        unit_range: also require pixel values in ``[0, 1]`` (see :func:`check_unit_range`).

    Raises:
        InputShapeError: wrong type, rank, dtype, channel count or an empty batch.
        NonFiniteInputError: NaN or infinity in ``x``.
        LabelError: labels of the wrong shape, dtype or range.
        ConfigError: with ``unit_range``, pixel values outside ``[0, 1]``.
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise InputShapeError.build(
            what=what, expected="a 4-D float tensor (N, C, H, W)",
            received=f"{type(x).__name__} of shape {tuple(getattr(x, 'shape', ()))}",
            fix="add the batch/channel dimensions, e.g. x.unsqueeze(1) for (N, H, W) images",
        )
    if not x.is_floating_point():
        raise InputShapeError.build(
            what=what, expected="a floating-point tensor", received=f"dtype {x.dtype}",
            fix="convert with x.float() (and scale uint8 images to [0, 1])",
        )
    if x.shape[0] == 0:
        raise InputShapeError.build(
            what=what, expected="at least one image", received="an empty batch",
            fix="pass a non-empty batch",
        )
    if in_channels is not None and x.shape[1] != in_channels:
        raise InputShapeError.build(
            what=what, expected=f"{in_channels} channel(s), as the model's first layer",
            received=f"{x.shape[1]} channel(s) (shape {tuple(x.shape)})",
            fix="convert the images to the model's channel count",
        )
    if _transformed():  # inside vmap/grad (an attack's functional forward): no
        return  # data-dependent checks, which vmap cannot run; the caller checked already
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteInputError.build(
            what=what, expected="finite values", received=f"{bad} NaN/inf value(s)",
            fix="clean or impute the images first",
        )
    if unit_range:
        check_unit_range(x, what=what)
    if y is not None:
        check_labels(y, len(x), num_classes=num_classes)


def _transformed() -> bool:
    """Whether a torch.func transform (vmap, grad) is running."""
    peek = getattr(getattr(torch._C, "_functorch", None), "peek_interpreter_stack", None)
    return peek is not None and peek() is not None


def check_labels(y: Any, n: int, *, num_classes: int | None = None) -> None:
    """Check ``n`` integer class labels.

    Args:
        y: the candidate labels.
        n: how many there must be.
        num_classes: when given, labels must lie in ``[0, num_classes)``.

    Raises:
        LabelError: wrong type, shape, dtype or range.
    """
    if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != n:
        raise LabelError.build(
            what="y", expected=f"a 1-D integer tensor of {n} labels",
            received=f"{type(y).__name__} of shape {tuple(getattr(y, 'shape', ()))}",
            fix="flatten the labels, e.g. y.view(-1)",
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise LabelError.build(
            what="y", expected="integer class indices", received=f"dtype {y.dtype}",
            fix="convert with y.long()",
        )
    if num_classes is not None and y.numel() and not _transformed() and (
        int(y.min()) < 0 or int(y.max()) >= num_classes
    ):
        raise LabelError.build(
            what="y", expected=f"labels in [0, {num_classes - 1}]",
            received=f"labels in [{int(y.min())}, {int(y.max())}]",
            fix="remap the labels or build the model with the right number of classes",
        )


#: Slack on the [0, 1] pixel range, for images de-normalised in float32 (x * std + mean).
UNIT_RANGE_SLACK = 1e-4


def check_unit_range(x: Tensor, *, what: str = "x") -> None:
    """Pixel values must lie in ``[0, 1]`` (the space attacks rebuild and metrics score).

    The fix names the likely cause: ``[0, 255]`` images (divide by 255) or images
    normalised with a mean and std (de-normalise them and wrap the model in
    :class:`shieldsplit.datacontract.Normalized`, see docs/data.md).

    Args:
        x: a floating image tensor.
        what: its name in the message.

    Raises:
        ConfigError: a value below ``-UNIT_RANGE_SLACK`` or above ``1 + UNIT_RANGE_SLACK``.

    Example:
        >>> check_unit_range(torch.tensor([0.0, 0.5, 1.0]))
        >>> try:
        ...     check_unit_range(torch.tensor([0.0, 255.0]))
        ... except ValueError as err:
        ...     print(str(err).split("Fix: ")[1][:20])
        divide the images by
    """
    if x.numel() == 0 or _transformed():
        return
    lo, hi = float(x.min()), float(x.max())
    if lo >= -UNIT_RANGE_SLACK and hi <= 1.0 + UNIT_RANGE_SLACK:
        return
    if lo >= 0.0 and hi <= 255.0 + UNIT_RANGE_SLACK:
        fix = (f"divide the images by {255 if hi > 1.5 else hi:g} (e.g. x / 255.0 for 8-bit "
               "images) so that they lie in [0, 1]")
    else:
        fix = ("the images look normalised: pass them in [0, 1] (undo it with "
               "shieldsplit.datacontract.denormalize(x, mean, std)) and wrap the model as "
               "Normalized(model, mean, std) so that it still sees its normalised input "
               "(docs/data.md)")
    raise ConfigError.build(
        what=what, expected="pixel values in [0, 1]", received=f"values in [{lo:g}, {hi:g}]",
        fix=fix,
    )


def as_labels(y: Any, n: int, *, num_classes: int | None = None, what: str = "y") -> Tensor:
    """Labels as users hold them, as int64 ``(n,)``: ``(N,)`` or ``(N, 1)`` (medmnist's own)
    of any integer dtype (a tensor, a numpy array or a list).

    Args:
        y: the labels.
        n: how many there must be (the number of images).
        num_classes: when given, labels must lie in ``[0, num_classes)``.
        what: their name in messages.

    Returns:
        An int64 tensor of shape ``(n,)`` (``y`` itself when it already is one).

    Raises:
        LabelError: float, bool or complex labels, another shape, another count than
            ``n`` images, or a label outside ``[0, num_classes)``.

    Example:
        >>> import numpy as np
        >>> as_labels(np.array([[1], [0]], dtype=np.uint8), 2)
        tensor([1, 0])
    """
    if not isinstance(y, Tensor):
        try:
            y = torch.as_tensor(y)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise LabelError.build(
                what=what, expected="integer class labels (a tensor or an array)",
                received=type(y).__name__, fix="pass one integer label per image",
            ) from exc
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise LabelError.build(
            what=what, expected="integer class indices", received=f"dtype {y.dtype}",
            fix="pass integer labels; if these floats are whole class numbers, use y.long()",
        )
    if y.dim() == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.dim() != 1:
        raise LabelError.build(
            what=what, expected="labels of shape (N,) or (N, 1)",
            received=f"shape {tuple(y.shape)}",
            fix="pass one class index per image (one-hot labels: y.argmax(1))",
        )
    if y.shape[0] != n:
        raise LabelError.build(
            what=what, expected=f"one label per image ({n})", received=f"{y.shape[0]} labels",
            fix="pass as many labels as images, in the same order",
        )
    y = y.long()
    check_labels(y, n, num_classes=num_classes)
    return y


def check_seed(seed: Any, *, what: str = "seed") -> int:
    """A seed: an int (numpy ints too) in ``[0, 2**32 - 1]``, else a typed ConfigError.

    Example:
        >>> check_seed(3)
        3
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (
        0 <= int(seed) <= _MAX_SEED
    ):
        raise ConfigError.build(
            what=what, expected=f"an int in [0, {_MAX_SEED}]", received=repr(seed),
            fix="pass an integer seed such as seed=0",
        )
    return int(seed)


def _stat(value: Any, channels: int | None = None) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    if t.numel() == 0 or not bool(torch.isfinite(t).all()):
        raise ConfigError.build(
            what="mean/std", expected="finite numbers, one per channel (or one for all)",
            received=repr(value), fix="pass e.g. mean=(0.5,), std=(0.5,)",
        )
    if channels is not None and t.numel() not in (1, channels):
        raise ConfigError.build(
            what="mean/std", expected=f"1 or {channels} value(s)", received=t.numel(),
            fix="give one value per image channel",
        )
    return t.view(1, -1, 1, 1)


def check_mean_std(mean: Any, std: Any, channels: int | None) -> tuple[Tensor, Tensor]:
    """A normalisation's mean and std as ``(1, C, 1, 1)`` tensors (std positive).

    Example:
        >>> [tuple(t.shape) for t in check_mean_std(0.5, (0.2, 0.3), 2)]
        [(1, 1, 1, 1), (1, 2, 1, 1)]
    """
    m, s = _stat(mean, channels), _stat(std, channels)
    if bool((s <= 0).any()):
        raise ConfigError.build(what="std", expected="positive values", received=repr(std),
                                fix="pass the std the images were normalised with")
    return m, s


def denormalize(x: Tensor, mean: Any, std: Any) -> Tensor:
    """Undo ``(x - mean) / std``: back to the ``[0, 1]`` images the attacks score.

    Args:
        x: normalised images ``(N, C, H, W)``.
        mean: the per-channel mean (a number or one per channel).
        std: the per-channel std (positive).

    Returns:
        ``x * std + mean`` (float32).

    Raises:
        ConfigError: a non-finite or non-positive std, or the wrong number of values.

    Example:
        >>> denormalize(torch.tensor([[[[-1.0, 1.0]]]]), 0.5, 0.5).flatten().tolist()
        [0.0, 1.0]
    """
    m, s = check_mean_std(mean, std, int(x.shape[1]) if x.dim() == 4 else None)
    return x.to(torch.float32) * s + m


def check_pair(
    x: Any, y: Any, *, num_classes: int | None = None, in_channels: int | None = None,
    what: str = "data", label_what: str | None = None,
) -> tuple[Tensor, Tensor]:
    """One batch under the contract: float32 images in ``[0, 1]``, int64 ``(N,)`` labels.

    Args:
        x: images ``(N, C, H, W)`` (a float tensor or array).
        y: labels ``(N,)`` or ``(N, 1)`` of any integer dtype.
        num_classes: when given, labels must lie in ``[0, num_classes)``.
        in_channels: when given, the images' channel count.
        what: the name of the data (its images) in messages.
        label_what: the name of the labels in messages (default ``"<what> labels"``).

    Returns:
        ``(x, y)`` as float32 and int64 tensors.

    Raises:
        InputShapeError, NonFiniteInputError, LabelError, ConfigError: see docs/data.md.

    Example:
        >>> x, y = check_pair(torch.rand(2, 1, 4, 4), torch.tensor([[1], [0]], dtype=torch.uint8))
        >>> x.dtype, y.tolist()
        (torch.float32, [1, 0])
    """
    if not isinstance(x, Tensor):
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            x = torch.as_tensor(x)  # else check_batch names the type
    check_batch(x, in_channels=in_channels, what=what, unit_range=True)
    labels = as_labels(y, int(x.shape[0]), num_classes=num_classes,
                       what=label_what or f"{what} labels")
    return x.to(torch.float32), labels


def check_loader(loader: Any, name: str) -> None:
    """Check that ``loader`` holds labelled images (a form of docs/data.md), not known empty.

    Args:
        loader: the candidate loader.
        name: its name in error messages.

    Raises:
        EmptyDataError: not iterable, or known to be empty.
    """
    if loader is None or not (
        hasattr(loader, "__iter__") or hasattr(loader, "__getitem__")
        or hasattr(loader, "x_train")  # an ImageDataset
    ):
        raise EmptyDataError.build(
            what=name, expected="labelled images: a DataLoader, a Dataset, an (x, y) pair or "
            "an ImageDataset (docs/data.md)",
            received=type(loader).__name__, fix="pass one of those",
        )
    try:
        size = len(loader)
    except TypeError:
        return
    if size == 0:
        raise EmptyDataError.build(
            what=name, expected="at least one batch", received="an empty loader",
            fix="check the data set and the loader's batch_size/drop_last",
        )


def check_number(
    what: str, value: Any, *, low: float, low_open: bool, high: float | None = None,
    high_open: bool = False, fix: str,
) -> float:
    """A finite number within ``[low or (low, high] or high)``, else a typed ConfigError.

    Example:
        >>> check_number("gamma", 0.5, low=0.0, low_open=True, high=1.0, fix="-")
        0.5
    """
    is_num = isinstance(value, int | float) and not isinstance(value, bool)
    ok = is_num and math.isfinite(value)
    if ok:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open or high is None else "]"
        top = "inf" if high is None else f"{high:g}"
        raise ConfigError.build(
            what=what, expected=f"a finite number in {left}{low:g}, {top}{right}",
            received=repr(value), fix=fix,
        )
    return float(value)


def check_int(what: str, value: Any, *, low: int, fix: str) -> int:
    """An ``int`` (not a bool) ``>= low``, else a typed ConfigError."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError.build(
            what=what, expected=f"an integer >= {low}", received=repr(value), fix=fix,
        )
    return value


__all__ = [
    "UNIT_RANGE_SLACK",
    "as_labels",
    "check_batch",
    "check_int",
    "check_labels",
    "check_loader",
    "check_mean_std",
    "check_number",
    "check_pair",
    "check_seed",
    "check_unit_range",
    "config_error",
    "denormalize",
]


_Config = TypeVar("_Config", bound=BaseModel)


def build_config(
    cls: type[_Config],
    options: Mapping[str, Any],
    *,
    fixes: Mapping[str, str] | None = None,
    fix: str = "see the component's docstring for its options",
) -> _Config:
    """Validate ``options`` into the pydantic config ``cls``, or raise a typed error.

    The one place where a component's pydantic validation failure becomes a
    :class:`~shieldsplit.errors.ConfigError` naming the first bad option, what it
    expected, what it received and how to fix it.

    Args:
        cls: the config model (``extra="forbid"``: an unknown option fails too).
        options: the keyword options.
        fixes: option name -> the fix sentence for it.
        fix: the fix for options without one in ``fixes`` and without a default
            (an option with a default gets "pass NAME=DEFAULT").

    Returns:
        The validated config.

    Raises:
        ConfigError: an unknown option, or one of the wrong type or out of range.

    Example:
        >>> from pydantic import BaseModel, ConfigDict, Field
        >>> class Noise(BaseModel):
        ...     model_config = ConfigDict(extra="forbid")
        ...     scale: float = Field(default=0.5, gt=0)
        >>> build_config(Noise, {"scale": 0.1}).scale
        0.1
        >>> try:
        ...     build_config(Noise, {"scale": -1}, fixes={"scale": "pass scale=0.5"})
        ... except ConfigError as exc:
        ...     print(exc.what)
        scale
        >>> class Attack(BaseModel):  # None: chosen by the component, no value to pass
        ...     model_config = ConfigDict(extra="forbid")
        ...     iterations: int | None = Field(default=None, ge=1)
        >>> try:
        ...     build_config(Attack, {"iterations": 0})
        ... except ConfigError as exc:
        ...     print(str(exc).split("Fix: ")[1])
        pass iterations=1 or more, or leave iterations out for its default.
    """
    try:
        return cls.model_validate(dict(options))
    except ValidationError as exc:
        raise config_error(cls, options, exc, fixes=fixes, fix=fix) from None


def config_error(
    cls: type[BaseModel],
    options: Mapping[str, Any],
    exc: ValidationError,
    *,
    fixes: Mapping[str, str] | None = None,
    fix: str = "see the component's docstring for its options",
) -> ConfigError:
    """The typed error for pydantic's ``exc`` on ``options`` (see :func:`build_config`):
    for a config whose own ``__init__`` turns its validation failure into a ConfigError.

    Example:
        >>> from pydantic import BaseModel, ConfigDict, ValidationError
        >>> class Knob(BaseModel):
        ...     model_config = ConfigDict(extra="forbid")
        ...     level: int = 1
        >>> try:
        ...     Knob(levle=2)
        ... except ValidationError as exc:
        ...     print(config_error(Knob, {"levle": 2}, exc).what)
        levle
    """
    err = exc.errors()[0]
    inner = (err.get("ctx") or {}).get("error")
    if isinstance(inner, ConfigError):  # a config's own __init__ already made the typed error
        return inner
    field = ".".join(str(v) for v in err["loc"]) or "options"
    top = str(err["loc"][0]) if err["loc"] else field
    msg = str(err["msg"])
    received = options.get(top, err.get("input")) if top in options else err.get("input")
    owner = _owner(cls, err["loc"])  # the (nested) config that holds the faulty field
    leaf = str(err["loc"][-1]) if err["loc"] else field
    known = cls.model_fields.get(top)
    if len(err["loc"]) > 1 and owner is not cls:  # a nested field: say its own default
        top, known, received = field, owner.model_fields.get(leaf), err.get("input")
    if err["type"] == "extra_forbidden":  # an unknown option: name the valid ones
        valid = sorted(owner.model_fields)
        near = difflib.get_close_matches(leaf, valid, n=1)
        return ConfigError.build(
            what=field, expected=f"an option among {valid}", received=repr(leaf),
            fix=f"rename it to {near[0]!r}" if near else "drop the unknown option",
        )
    default = (known.get_default(call_default_factory=True)
               if known is not None and not known.is_required() else None)
    if top in (fixes or {}):
        fix = (fixes or {})[top]
    elif default is not None:
        fix = f"pass {top}={default!r} (its default)"
    elif known is not None and not known.is_required():  # None is no value to pass
        bound = _bound_fix(field, err)
        fix = f"{bound}, or leave {top} out for its default" if bound else (
            f"leave {top} out for its default")
    return ConfigError.build(
        what=field, expected=f"{field}: {msg[:1].lower()}{msg[1:]}",
        received=repr(received), fix=fix,
    )


def _owner(cls: type[BaseModel], loc: Any) -> type[BaseModel]:
    """The config class that holds the last field of ``loc`` (``cls`` or a nested one)."""
    model = cls
    for part in list(loc)[:-1]:
        info = model.model_fields.get(str(part))
        ann = info.annotation if info is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return model
        model = ann
    return model


#: pydantic's range errors: the bound's key in the error's context, and how to say it.
_BOUNDS = {"greater_than_equal": ("ge", "={} or more"), "greater_than": ("gt", " above {}"),
           "less_than_equal": ("le", "={} or less"), "less_than": ("lt", " below {}")}


def _bound_fix(field: str, err: Any) -> str | None:
    """``pass iterations=1 or more`` for a value out of its range, else None."""
    kind = _BOUNDS.get(str(err.get("type")))
    ctx = err.get("ctx") or {}
    if kind is None or kind[0] not in ctx:
        return None
    return f"pass {field}" + kind[1].format(ctx[kind[0]])


class NoOptions(BaseModel):
    """The options of a component that has none of its own (or validates its own)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Configurable:
    """A component whose keyword options are validated by its pydantic :attr:`Config`
    (the single source of their names, types, ranges and defaults): every defence and
    attack.
    """

    Config: ClassVar[type[BaseModel]] = NoOptions

    @classmethod
    def configure(cls, options: Mapping[str, Any]) -> Any:
        """Validate keyword options into :attr:`Config`.

        Args:
            options: the component's own options.

        Returns:
            The validated config.

        Raises:
            ConfigError: an unknown option, or one of the wrong type or out of range.
        """
        return build_config(cls.Config, options, fix=f"see {cls.__name__}.Config")
