"""Named reference models.

:class:`PGSLNet` is the network of the PGSL paper (Khowaja et al. 2022,
Sec. IV-F): 7 convolutional layers (3x3 kernels, 64 channels, each followed by
ReLU and batch normalisation, in that order as the paper lists them), dropout
0.25 after every third conv, then 2 fully connected layers. The paper does not
give the hidden width of the first FC layer; we use 128 (``hidden``).
The paper splits after the 2nd conv, which is ``cut=2`` here.

Example:
    >>> import torch
    >>> net = PGSLNet(in_channels=1, num_classes=2, image_size=8)
    >>> net(torch.zeros(3, 1, 8, 8)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .errors import ConfigError


class PGSLNet(nn.Sequential):
    """The 7-conv, 2-FC classifier of the PGSL paper.

    Args:
        in_channels: image channels (1 for grayscale).
        num_classes: number of output classes.
        image_size: height and width of the (square) input images.
        width: channels of every conv layer (the paper: 64).
        hidden: width of the first FC layer (not given in the paper).
        dropout: dropout probability after every third conv (the paper: 0.25).

    Raises:
        ConfigError: if a size is not positive or dropout is outside [0, 1).

    Reference:
        Khowaja et al., "Get your Foes Fooled: Proximal Gradient Split Learning
        for Defense against Model Inversion Attacks on IoMT data", IEEE TNSE 2022.

    Example:
        >>> net = PGSLNet(num_classes=10, image_size=28)
        >>> sum(isinstance(m, nn.Conv2d) for m in net.modules())
        7
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 2,
        image_size: int = 28,
        width: int = 64,
        hidden: int = 128,
        dropout: float = 0.25,
    ) -> None:
        for name, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("image_size", image_size),
            ("width", width),
            ("hidden", hidden),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigError.build(
                    what=name, expected="a positive int", received=value, fix=f"pass {name}>=1"
                )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError.build(
                what="dropout", expected="0 <= dropout < 1", received=dropout, fix="pass 0.25"
            )
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(7):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(width)]
            channels = width
            if i % 3 == 2:
                layers.append(nn.Dropout(dropout))
        layers += [
            nn.Flatten(),
            nn.Linear(width * image_size * image_size, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        ]
        super().__init__(*layers)


#: Named model factories: ``name -> factory(in_channels, num_classes, image_size)``.
MODELS: dict[str, Callable[..., nn.Module]] = {"pgsl-net": PGSLNet}


def create_model(name: str, **kwargs: int) -> nn.Module:
    """Build a named model.

    Args:
        name: a key of :data:`MODELS`.
        **kwargs: passed to the model's constructor.

    Returns:
        A freshly initialised model.

    Raises:
        ConfigError: if ``name`` is unknown; the message lists the known names.

    Example:
        >>> type(create_model("pgsl-net", num_classes=3, image_size=8)).__name__
        'PGSLNet'
    """
    if name not in MODELS:
        raise ConfigError.build(
            what="model", expected=f"one of {sorted(MODELS)}", received=repr(name),
            fix="pick a listed model name",
        )
    return MODELS[name](**kwargs)


__all__ = ["MODELS", "PGSLNet", "create_model"]
