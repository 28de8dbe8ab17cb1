"""The ``--model`` and ``--weights`` options: a model factory by import path or built-in
name, called with the data set's geometry, and a checkpoint loaded into it (a plain
state_dict, or a saved SplitShield or defence, read with ``weights_only=True``).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any

from shieldsplit.errors import ConfigError


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
    from shieldsplit.models import MODELS

    if spec in MODELS:
        return MODELS[spec]
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        factory = getattr(importlib.import_module(module_name), attr) if attr else None
    except (ImportError, AttributeError) as exc:
        raise ConfigError.build(
            what="--model", expected="'package.module:factory' or a built-in model name",
            received=f"{spec!r} ({type(exc).__name__}: {exc})",
            fix=f"check the import path; the module must be importable from {cwd} "
            "(this directory) or an installed package",
        ) from exc
    finally:
        if added:
            sys.path.remove(cwd)
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


__all__ = ["build_model", "describe_checkpoint", "load_model_factory", "load_weights",
           "model_for"]
