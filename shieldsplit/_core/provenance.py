"""Where and with what a measurement ran: the provenance every report records.

Example:
    >>> sorted(machine_info())[:3]
    ['cpus', 'gpu', 'platform']
    >>> library_versions()["shieldsplit"] != ""
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


__all__ = ["library_versions", "machine_info"]
