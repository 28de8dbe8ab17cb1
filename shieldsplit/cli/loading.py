"""The ``--model``, ``--cut``, ``--weights`` and ``--heldout`` options: a model factory by
import path or built-in name, called with the data set's geometry, where it is cut, a
checkpoint loaded into it (a plain state_dict, or a saved SplitShield or defence, read with
``weights_only=True``), and the held-out images of membership inference.

:func:`check_model` and :func:`check_cut` run before any work and without torch (the
built-in models' cut points are known: :data:`~shieldsplit.cli.choices.MODEL_CUTS`); a
factory's own model is cut by :func:`check_split` right after it is built, before any
training.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shieldsplit.cli.choices import MODEL_CUTS, MODELS, budget_names
from shieldsplit.errors import ConfigError, DataFileError, InvalidCutError

#: ``--heldout``'s split names: the data set's validation images, its test images, or both
#: (``auto``, what :func:`shieldsplit.audit`'s ``heldout="auto"`` takes), less any copy of
#: a training image.
HELDOUT_SPLITS = ("auto", "val", "test")
#: The files ``--heldout`` reads: an ``(x, y)`` pair (docs/data.md) saved by numpy or torch.
HELDOUT_FILES = (".npz", ".pt", ".pth")

_FACTORY_HINT = "'package.module:factory' or a built-in model name"


@contextlib.contextmanager
def cwd_on_path() -> Iterator[str]:
    """The current directory first on ``sys.path`` for the block, as ``python -m`` would
    have it, so a ``mymod.py`` beside you is found without ``PYTHONPATH=.``.

    Example:
        >>> with cwd_on_path() as cwd:
        ...     cwd in sys.path or "" in sys.path
        True
    """
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield cwd
    finally:
        if added:
            sys.path.remove(cwd)


def check_model(spec: str) -> None:
    """Check ``--model`` before any work: a built-in name, or an import path whose module
    exists (found, not imported; the factory is read when the model is built).

    Raises:
        ConfigError: neither, with the nearest built-in name as its fix.

    Example:
        >>> check_model("pgsl-net"), check_model("math:hypot")
        (None, None)
        >>> check_model("pgsl_net")
        Traceback (most recent call last):
        ...
        shieldsplit.errors.ConfigError: Invalid configuration: ... Fix: pass --model pgsl-net, ...
    """
    names = MODELS.names()
    if spec in names:
        return
    module_name, colon, attr = spec.partition(":")
    if not (colon and module_name and attr):
        nearest = difflib.get_close_matches(spec, names, n=1, cutoff=0.0)
        raise ConfigError.build(
            what="--model", expected=f"{_FACTORY_HINT} ({', '.join(names)})",
            received=repr(spec), fix=f"pass --model {nearest[0] if nearest else names[0]}, "
            "or name your factory as package.module:factory")
    with cwd_on_path() as cwd:
        try:
            found = importlib.util.find_spec(module_name) is not None
        except (ImportError, ValueError):
            found = False
    if not found:
        raise ConfigError.build(
            what="--model", expected=_FACTORY_HINT,
            received=f"{spec!r} (no module named {module_name!r})",
            fix=f"check the import path; the module must be importable from {cwd} "
            "(this directory) or an installed package",
        )


def check_cut(spec: str, cut: int | str) -> None:
    """Check ``--cut`` against a built-in model's cut points, before any work (another
    model is checked by :func:`check_split` once built).

    Raises:
        InvalidCutError: a cut the built-in model does not have, with the nearest one.

    Example:
        >>> check_cut("pgsl-net", 2), check_cut("pkg.mod:factory", "features.3")
        (None, None)
        >>> check_cut("small-convnet", 7)
        Traceback (most recent call last):
        ...
        shieldsplit.errors.InvalidCutError: ... Fix: pass --cut 3.
    """
    valid = MODEL_CUTS.get(spec)
    if valid is None or cut in valid:
        return
    index = cut if isinstance(cut, int) else 2  # a name: the paper's cut
    nearest = min(valid, key=lambda v: abs(v - index))
    raise InvalidCutError.build(
        what="--cut", expected=f"a block index of {spec}: one of {list(valid)}",
        received=f"--cut {cut}", fix=f"pass --cut {nearest}")


def check_split(net: Any, cut: int | str) -> None:
    """Check ``--cut`` on a built model (a plain one: a saved defence has its own cut)
    before any training: an impossible cut fails now, with the valid ones.

    Raises:
        InvalidCutError: ``cut`` is not a cut point of ``net``.

    Example:
        >>> check_split(build_model("small-convnet", image_size=8), 2)
    """
    from shieldsplit.cutting import split_model
    from shieldsplit.defenses.base import Defense

    if not isinstance(net, Defense):
        split_model(net, cut)


def load_model_factory(spec: str) -> Any:
    """Resolve ``pkg.module:factory`` (or a built-in model name such as ``pgsl-net``).

    The current directory is searched first, as ``python -m`` would, so a
    ``mymod.py`` beside you is found without ``PYTHONPATH=.``.

    Args:
        spec: the factory's import path, or a key of ``shieldsplit.models.MODELS``.

    Returns:
        The callable.

    Raises:
        ConfigError: if it cannot be imported or is not callable.

    Example:
        >>> load_model_factory("pgsl-net").__name__, load_model_factory("math:hypot")(3, 4)
        ('PGSLNet', 5.0)
    """
    from shieldsplit.models import MODELS as BUILT_IN

    if spec in BUILT_IN:
        return BUILT_IN[spec]
    module_name, _, attr = spec.partition(":")
    with cwd_on_path() as cwd:
        try:
            factory = getattr(importlib.import_module(module_name), attr) if attr else None
        except (ImportError, AttributeError) as exc:
            raise ConfigError.build(
                what="--model", expected=_FACTORY_HINT,
                received=f"{spec!r} ({type(exc).__name__}: {exc})",
                fix=f"check the import path; the module must be importable from {cwd} "
                "(this directory) or an installed package",
            ) from exc
    if not callable(factory):
        raise ConfigError.build(
            what="--model", expected="'package.module:factory' naming a callable",
            received=repr(spec), fix="name the function or class that builds the model",
        )
    return factory


def build_model(spec: str, **shape: int) -> Any:
    """Call the factory with the keyword arguments it accepts (in_channels, num_classes,
    image_size).

    Args:
        spec: see :func:`load_model_factory`.
        **shape: the data set's geometry.

    Returns:
        The model.

    Example:
        >>> type(build_model("pgsl-net", in_channels=1, num_classes=2, image_size=8,
        ...                  unused=3)).__name__
        'PGSLNet'
    """
    factory = load_model_factory(spec)
    try:
        params = dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        params = {}
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in shape.items() if accepts_any or k in params}
    return factory(**kwargs)


def model_for(spec: str, ds: Any, weights: Path | None, *, defended_ok: bool = True) -> Any:
    """Build ``--model`` for the data set ``ds`` and load ``--weights`` into it.

    Args:
        spec: see :func:`load_model_factory`.
        ds: the loaded data set (its channels, classes and image size).
        weights: see :func:`load_weights`.
        defended_ok: see :func:`load_weights`.

    Returns:
        The model, or the restored SplitShield / defence.

    Example:
        >>> from shieldsplit.data import load_dataset
        >>> net = model_for("pgsl-net", load_dataset("digits", seed=0, limit=60), None)
        >>> type(net).__name__
        'PGSLNet'
    """
    net = build_model(spec, in_channels=ds.in_channels, num_classes=ds.num_classes,
                      image_size=ds.image_size[0])
    return load_weights(net, weights, defended_ok=defended_ok)


def describe_checkpoint(obj: Any) -> str:
    """Say what kind of file ``torch.load`` returned, for error messages.

    Args:
        obj: what :func:`shieldsplit._core.io.safe_torch_load` returned.

    Returns:
        A short description: a SplitShield checkpoint, a defence checkpoint, a plain
        state_dict, or what else it is.

    Example:
        >>> import torch
        >>> describe_checkpoint({"w": torch.zeros(2), "b": torch.zeros(1)})
        'a plain state_dict of 2 tensors'
        >>> describe_checkpoint({"format": "shieldsplit.SplitShield/1", "cut": 2})
        'a SplitShield checkpoint (SplitShield.save, cut 2)'
        >>> describe_checkpoint([1, 2])
        'a list, not a state_dict'
    """
    from shieldsplit.defenses.base import CHECKPOINT_FORMAT as DEFENSE_FORMAT
    from shieldsplit.defenses.pgsl.shield import CHECKPOINT_FORMAT as SHIELD_FORMAT

    if isinstance(obj, dict):
        fmt = obj.get("format")
        if fmt == SHIELD_FORMAT:
            return f"a SplitShield checkpoint (SplitShield.save, cut {obj.get('cut')})"
        if fmt == DEFENSE_FORMAT:
            return (f"a {obj.get('name')!r} defence checkpoint (Defense.save, "
                    f"cut {obj.get('cut')})")
        if isinstance(fmt, str):
            return f"a checkpoint of unknown format {fmt!r}"
        import torch

        tensors = sum(isinstance(v, torch.Tensor) for v in obj.values())
        if obj and tensors == len(obj):
            return f"a plain state_dict of {tensors} tensors"
        return f"a dict of {len(obj)} entries ({tensors} tensors), not a state_dict"
    return f"a {type(obj).__name__}, not a state_dict"


def load_weights(net: Any, weights: Path | None, *, defended_ok: bool = True) -> Any:
    """Load ``--weights`` into ``net``: a plain state_dict, or a saved SplitShield or
    defence, rebuilt around ``net`` (read with ``weights_only=True`` only).

    Args:
        net: a freshly built model of the saved architecture.
        weights: the file, or None for ``net`` as it is.
        defended_ok: accept SplitShield and defence checkpoints (``compare`` needs a
            plain model).

    Returns:
        ``net`` with the weights, or the restored SplitShield / defence.

    Raises:
        ConfigError: if the file does not fit; the message says which kind of file it is.
        DataFileError: if the file is missing or not a weights-only checkpoint.

    Example:
        >>> import tempfile, pathlib, torch
        >>> net = torch.nn.Linear(2, 2)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
        >>> torch.save(torch.nn.Linear(2, 2).state_dict(), path)
        >>> load_weights(net, path) is net, load_weights(net, None) is net
        (True, True)
    """
    from shieldsplit._core.io import safe_torch_load

    if weights is None:
        return net
    state = safe_torch_load(weights)
    kind = describe_checkpoint(state)
    defended = "SplitShield checkpoint" in kind or "defence checkpoint" in kind
    if defended and not defended_ok:
        raise ConfigError.build(
            what="--weights", expected="a plain state_dict (every defence is trained from it)",
            received=f"{weights}: {kind}",
            fix="pass the undefended model's torch.save(model.state_dict(), path)",
        )
    try:
        if "SplitShield checkpoint" in kind:
            from shieldsplit.defenses.pgsl.shield import SplitShield

            return SplitShield.load(weights, net)
        if "defence checkpoint" in kind:
            from shieldsplit.defenses.base import Defense

            return Defense.load(weights, net)
        if "plain state_dict" not in kind:
            raise TypeError(kind)
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError, KeyError) as exc:
        raise ConfigError.build(
            what="--weights",
            expected=f"a state_dict of {type(net).__name__}, or a file written by "
            f"SplitShield.save / Defense.save around {type(net).__name__}",
            received=f"{weights}: {kind} ({' '.join(str(exc).split())})",
            fix="pass the --model the file was saved from, or save with "
            "torch.save(model.state_dict(), path)",
        ) from exc
    return net


def check_heldout(spec: str | None) -> None:
    """Check ``--heldout`` before any work: a split name, or an existing file of a kind
    :func:`load_heldout` reads (its content is read after the data).

    Raises:
        ConfigError: neither, with the nearest split name when it looks like one.

    Example:
        >>> check_heldout("auto"), check_heldout(None)
        (None, None)
        >>> check_heldout("tset")
        Traceback (most recent call last):
        ...
        shieldsplit.errors.ConfigError: Invalid configuration: ... Fix: pass --heldout test.
    """
    if spec is None or spec in HELDOUT_SPLITS:
        return
    path = Path(spec)
    if path.is_file() and path.suffix.lower() in HELDOUT_FILES:
        return
    nearest = difflib.get_close_matches(spec, HELDOUT_SPLITS, n=1, cutoff=0.0)
    looks_like_a_name = os.sep not in spec and not path.suffix
    raise ConfigError.build(
        what="--heldout",
        expected=f"one of {', '.join(HELDOUT_SPLITS)} (the data's held-out splits) or an "
        f"existing {' / '.join(HELDOUT_FILES)} file holding an (x, y) pair",
        received=f"--heldout {spec}" + ("" if path.exists() or looks_like_a_name
                                        else " (no such file)"),
        fix=(f"pass --heldout {nearest[0]}" if looks_like_a_name and nearest else
             "save labelled images the model never saw with np.savez(path, x=x, y=y) or "
             "torch.save((x, y), path)"),
    )


def load_heldout(spec: str | None, ds: Any) -> Any:
    """Read ``--heldout``: the images the model did not train on, for membership inference.

    Args:
        spec: ``auto`` (the validation and test images), ``val``, ``test`` (less any copy
            of a training image), a ``.npz`` file with arrays ``x`` and ``y`` (or exactly
            two arrays), or a ``.pt``/``.pth`` file holding an ``(x, y)`` pair or a
            ``{"x": ..., "y": ...}`` dict (read with ``weights_only=True``); None: none.
        ds: the loaded :class:`~shieldsplit.data.ImageDataset`.

    Returns:
        What :func:`shieldsplit.audit` takes as ``heldout``: ``"auto"``, an ``(x, y)``
        pair, or None. The auditor checks the images against the model (docs/data.md).

    Raises:
        ConfigError: a file that holds no ``(x, y)`` pair.
        DataFileError: a file that cannot be read (safely: no pickled objects).

    Example:
        >>> from shieldsplit.data import load_dataset
        >>> ds = load_dataset("digits", seed=0, limit=60)
        >>> load_heldout("auto", ds), len(load_heldout("val", ds)[0]) <= len(ds.x_val)
        ('auto', True)
    """
    if spec is None or spec == "auto":
        return spec
    if spec in HELDOUT_SPLITS:
        from shieldsplit.audit.membership import without_shared

        split = (ds.x_val, ds.y_val) if spec == "val" else (ds.x_test, ds.y_test)
        return without_shared(split, ds.x_train)
    path = Path(spec)
    if path.suffix.lower() == ".npz":
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as arrays:
                held: Any = {k: arrays[k] for k in arrays.files}
        except Exception as exc:  # not an npz archive, or one with pickled objects
            raise DataFileError.build(
                what="--heldout", expected="a .npz file written by np.savez (no objects)",
                received=f"{path} ({type(exc).__name__}: {' '.join(str(exc).split())})",
                fix="save it with np.savez(path, x=x, y=y)") from exc
    else:
        from shieldsplit._core.io import safe_torch_load

        held = safe_torch_load(path)
    if isinstance(held, dict):
        held = (held["x"], held["y"]) if {"x", "y"} <= set(held) else (
            tuple(held.values()) if len(held) == 2 else held)
    if not (isinstance(held, (tuple, list)) and len(held) == 2):
        raise ConfigError.build(
            what="--heldout", expected="a file holding an (x, y) pair of labelled images",
            received=f"{path}: {type(held).__name__}"
            + (f" of {sorted(map(str, held))}" if isinstance(held, dict) else ""),
            fix="save it with np.savez(path, x=x, y=y) or torch.save((x, y), path)")
    return tuple(held)


WEIGHTS_FIX = "pass the file torch.save(model.state_dict(), path) wrote"


def check_model_inputs(model: str, weights: Path | None, data: str, data_root: Path | None,
                       cut: str, budget: str | None = None, *,
                       weights_fix: str = WEIGHTS_FIX) -> int | str:
    """The checks every command that trains or audits a model makes first, before torch
    is imported: ``--model``, ``--weights``, ``--data``/``--data-root``, ``--cut`` on that
    model and, where given, ``--budget``.

    Returns:
        The parsed cut.

    Raises:
        ConfigError: the first option that is wrong, naming it and how to fix it.
    """
    from shieldsplit.cli.common import check_choice, check_data, check_file, parse_cut

    check_model(model)
    check_file("--weights", weights, weights_fix)
    check_data(data, data_root)
    where = parse_cut(cut)
    check_cut(model, where)
    if budget is not None:
        check_choice("--budget", budget, budget_names())
    return where


__all__ = ["HELDOUT_FILES", "HELDOUT_SPLITS", "build_model", "check_cut", "check_heldout",
           "check_model", "check_model_inputs", "check_split", "cwd_on_path", "describe_checkpoint",
           "load_heldout", "load_model_factory", "load_weights", "model_for"]
