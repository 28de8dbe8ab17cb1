"""Named reference models.

:class:`PGSLNet` is the network of the PGSL paper (Khowaja et al. 2022,
Sec. IV-F): 7 convolutional layers (3x3 kernels, 64 channels, each followed by
ReLU and batch normalisation, in that order as the paper lists them), dropout
0.25 after every third conv, then 2 fully connected layers. The paper does not
give the hidden width of the first FC layer; we use 128 (``hidden``).
The paper splits after the 2nd conv, which is ``cut=2`` here.

:class:`SmallConvNet` is the small, smooth network that gradient-inversion
attacks are measured on (the LeNet variant of DLG, Zhu et al. 2019): three
5x5 convolutions with Sigmoid, then one fully connected layer.

Example:
    >>> import torch
    >>> net = PGSLNet(in_channels=1, num_classes=2, image_size=8)
    >>> net(torch.zeros(3, 1, 8, 8)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from shieldsplit.errors import ConfigError, UnsupportedModelError


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


class SmallConvNet(nn.Sequential):
    """A small ConvNet with smooth activations, the usual victim of gradient inversion.

    The LeNet variant of DLG (Zhu, Liu, Han 2019): three 5x5 convolutions with
    padding 2 (strides 2, 2, 1) of ``width`` channels, each followed by a smooth
    activation, then one fully connected layer. Smooth activations (Sigmoid,
    Tanh) keep the gradient a smooth function of the input, which is what makes
    gradient-matching attacks work; it has no batch normalisation or dropout, so
    it behaves the same in train and eval mode. Weights keep PyTorch's default
    initialisation (an "untrained" model in the attack benchmarks).

    Args:
        in_channels: image channels (1 for grayscale).
        num_classes: number of output classes.
        image_size: height and width of the (square) input images.
        width: channels of every conv layer (DLG: 12).
        activation: ``"sigmoid"`` (DLG) or ``"tanh"``.

    Raises:
        ConfigError: if a size is not a positive int or the activation is unknown.

    Example:
        >>> import torch
        >>> net = SmallConvNet(in_channels=1, num_classes=10, image_size=28)
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
        >>> sum(p.numel() for p in net.parameters())
        13426
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 2,
        image_size: int = 28,
        width: int = 12,
        activation: str = "sigmoid",
    ) -> None:
        for name, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("image_size", image_size),
            ("width", width),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError.build(
                    what=name, expected="a positive int", received=value, fix=f"pass {name}>=1"
                )
        acts: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
        if activation not in acts:
            raise ConfigError.build(
                what="activation", expected=f"one of {sorted(acts)}", received=repr(activation),
                fix='pass activation="sigmoid"',
            )
        act = acts[activation]
        size = image_size
        layers: list[nn.Module] = []
        channels = in_channels
        for stride in (2, 2, 1):
            layers += [nn.Conv2d(channels, width, 5, stride=stride, padding=2), act()]
            channels = width
            size = (size - 1) // stride + 1
        layers += [nn.Flatten(), nn.Linear(width * size * size, num_classes)]
        super().__init__(*layers)


def small_convnet_tanh(*, in_channels: int = 1, num_classes: int = 2, image_size: int = 28,
                       width: int = 12) -> SmallConvNet:
    """:class:`SmallConvNet` with Tanh activations (``"small-convnet-tanh"``): the Sigmoid
    version trained by FedAvg for a few rounds stays at the majority class on digits and
    BreastMNIST, this one learns (``shieldsplit federate``'s default model, chosen on the
    validation split: docs/results/federate_defaults.json).

    Example:
        >>> small_convnet_tanh(num_classes=3, image_size=8)[1]
        Tanh()
    """
    return SmallConvNet(in_channels=in_channels, num_classes=num_classes,
                        image_size=image_size, width=width, activation="tanh")


#: the channels of :func:`narrow_convnet_tanh`'s convolutions
NARROW_WIDTH = 4


def narrow_convnet_tanh(*, in_channels: int = 1, num_classes: int = 2, image_size: int = 28,
                        width: int = NARROW_WIDTH) -> SmallConvNet:
    """:func:`small_convnet_tanh` with 4 channels per convolution instead of 12
    (``"narrow-convnet-tanh"``; 1,306 parameters on BreastMNIST instead of 8,714):
    ``shieldsplit federate``'s model for DP-SGD. DP-SGD adds noise of the same scale to
    every parameter's gradient while the clipped signal is bounded whatever the size, so
    the noise norm grows with the square root of the parameter count; chosen on the
    validation split at the same epsilon (docs/results/federate_defaults.json).

    Example:
        >>> sum(p.numel() for p in narrow_convnet_tanh(num_classes=2).parameters())
        1306
    """
    return small_convnet_tanh(in_channels=in_channels, num_classes=num_classes,
                              image_size=image_size, width=width)


#: Named model factories: ``name -> factory(in_channels, num_classes, image_size)``.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "pgsl-net": PGSLNet,
    "small-convnet": SmallConvNet,
    "small-convnet-tanh": small_convnet_tanh,
    "narrow-convnet-tanh": narrow_convnet_tanh,
}


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


def last_linear_name(model: nn.Module, *, trainable: bool = False) -> str | None:
    """The name of a classifier's last ``nn.Linear`` (in registration order), or None.

    The layer whose weight gradient reveals a batch's labels
    (:func:`~shieldsplit.functional.labels.infer_labels_idlg`): its parameters are
    ``f"{name}.weight"`` and ``f"{name}.bias"``, or ``"weight"`` and ``"bias"`` when the
    model itself is the ``nn.Linear`` (name ``""``).

    Args:
        model: the model.
        trainable: only count a layer whose weight requires a gradient (a layer
            frozen by its owner has no gradient to read).

    Returns:
        The module name, ``""`` for the model itself, or None if it has no such layer.

    Example:
        >>> last_linear_name(SmallConvNet(num_classes=3, image_size=8))
        '7'
        >>> last_linear_name(nn.Linear(4, 2)), last_linear_name(nn.ReLU())
        ('', None)
    """
    name = None
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Linear) and (module.weight.requires_grad or not trainable):
            name = mod_name
    return name


def output_layer_name(model: nn.Module) -> str:
    """The name of a classifier's output layer: its last trainable ``nn.Linear``
    (:func:`last_linear_name` with ``trainable=True``), for attacks that need it.

    Args:
        model: the classifier.

    Returns:
        The module name (``""`` when ``model`` itself is the layer).

    Raises:
        UnsupportedModelError: for a model without a trainable ``nn.Linear``.

    Example:
        >>> output_layer_name(SmallConvNet(num_classes=2, image_size=8))
        '7'
    """
    found = last_linear_name(model, trainable=True)
    if found is None:
        raise UnsupportedModelError.build(
            what="model", expected="a classifier whose last layer is a trainable nn.Linear",
            received=type(model).__name__,
            fix="use a model ending in nn.Linear (or grant the labels)")
    return found


__all__ = ["MODELS", "NARROW_WIDTH", "PGSLNet", "SmallConvNet", "create_model", "last_linear_name",
           "narrow_convnet_tanh", "output_layer_name", "small_convnet_tanh"]
