"""Where and with what a measurement ran: the provenance every report records.

Example:
    >>> sorted(machine_info())[:3]
    ['cpus', 'gpu', 'platform']
    >>> library_versions()["shieldsplit"] != ""
    True
    >>> print(load_note(1.1, own=2))
    load average at the end 1.1: no other work (the benchmark's own 2 processes or threads)
    >>> "other work shared the cores" in load_note(5.7, own=2)
    True
"""

from __future__ import annotations

import os
import platform

import torch


def machine_info() -> dict[str, str]:
    """Where a measurement ran.

    Returns:
        CPU count, torch threads, platform, Python and torch versions, the GPU (or none).
    """
    return {
        "cpus": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a report's numbers depend on.

    Returns:
        ``{package: version}`` (``not installed`` where absent).
    """
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("shieldsplit", "torch", "captum", "opacus", "numpy", "torchmetrics", "pydantic"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def other_work_ran(load: float, *, own: float, margin: float = 0.5) -> bool:
    """Whether a load average shows work beyond the benchmark's own.

    The 1-minute load average counts the benchmark's own busy processes (or
    threads) too, so only an excess over ``own`` by more than ``margin`` (the
    average lags and counts short-lived helpers) is other work.

    Example:
        >>> other_work_ran(1.3, own=2), other_work_ran(3.1, own=2)
        (False, True)
    """
    return load > own + margin


def load_note(load: float, *, own: float, margin: float = 0.5) -> str:
    """Words a timing page's load sentence from the load it measured, never fixed text.

    Args:
        load: The 1-minute load average read at the end of the run.
        own: How many processes or threads the benchmark itself keeps busy.
        margin: The excess over ``own`` still read as no other work
            (see :func:`other_work_ran`).

    Returns:
        A sentence fragment: the load and whether other work shared the cores.
    """
    if other_work_ran(load, own=own, margin=margin):
        return (f"load average at the end {load:.1f}, above the benchmark's own {own:g}: "
                "other work shared the cores, so the times are inflated")
    return (f"load average at the end {load:.1f}: no other work (the benchmark's own "
            f"{own:g} processes or threads)")


__all__ = ["library_versions", "load_note", "machine_info", "other_work_ran"]
