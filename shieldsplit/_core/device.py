"""Where a module's weights live: the one helper every layer uses to put new tensors there.

Example:
    >>> from torch import nn
    >>> device_of(nn.Linear(2, 2))
    device(type='cpu')
"""

from __future__ import annotations

import torch
from torch import nn


def device_of(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter, or the CPU for a module without any.

    Args:
        module: any module.

    Returns:
        The device new tensors for ``module`` should be created on.

    Example:
        >>> from torch import nn
        >>> device_of(nn.ReLU())
        device(type='cpu')
    """
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


__all__ = ["device_of"]
