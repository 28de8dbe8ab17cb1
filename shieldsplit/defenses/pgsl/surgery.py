"""Model surgery for SplitShield: what PGSL changes in, and learns from, the wrapped model.

A dry run of the plain model gives the activation shape at the cut and the class count
(:func:`probe_shapes`); with unshuffle or the saliency channel on, the client's first
convolution is rebuilt for the ``4C+1``-channel input (:func:`adapt_first_conv`); and
the client gets a local linear probe for its saliency map (:class:`ProbeHead`).

Example:
    >>> import torch
    >>> from shieldsplit.cutting import split_model
    >>> from shieldsplit.models import PGSLNet
    >>> head = split_model(PGSLNet(num_classes=2, image_size=8, width=4, hidden=8), 2).head
    >>> name, conv = first_compute(head)
    >>> conv.in_channels
    1
    >>> adapt_first_conv(head, 5).get_submodule(name).in_channels
    5
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from shieldsplit._core.device import device_of
from shieldsplit._core.validate import build_config
from shieldsplit.cutting import COMPUTE_TYPES, cut_ranks, describe_cuts, list_cut_points
from shieldsplit.datacontract import Normalized
from shieldsplit.defenses.pgsl.config import PGSLConfig
from shieldsplit.errors import (
    ConfigError,
    InvalidCutError,
    ShieldSplitError,
    UnsupportedModelError,
)

#: Square image sizes tried, in order, when the input size is not given.
PROBE_SIZES = (28, 32, 8, 16, 64, 224)


class ProbeHead(nn.Module):
    """The client's local linear probe: a classifier on its activations, for the map.

    Args:
        features: channels (or features) of the activations.
        num_classes: classes.
        spatial: the activations are feature maps (pooled first).

    Example:
        >>> ProbeHead(4, 3, spatial=True)(torch.rand(2, 4, 5, 5)).shape
        torch.Size([2, 3])
    """

    def __init__(self, features: int, num_classes: int, spatial: bool) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1) if spatial else nn.Identity()
        self.linear = nn.Linear(features, num_classes)

    def forward(self, a: Tensor) -> Tensor:
        """Class logits of the activations ``a``."""
        return self.linear(torch.flatten(self.pool(a), 1))


def first_compute(gm: nn.Module) -> tuple[str, nn.Module] | None:
    """The first Conv/Linear layer a traced client part runs, by graph order.

    Args:
        gm: a ``torch.fx.GraphModule`` (anything else has no graph: None).

    Returns:
        ``(name, layer)``, or None.
    """
    graph = getattr(gm, "graph", None)
    if graph is None:
        return None
    modules = dict(gm.named_modules())
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(str(node.target)), COMPUTE_TYPES):
            return str(node.target), modules[str(node.target)]
    return None


def replace_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted ``name`` inside ``root``.

    Args:
        root: the module to change.
        name: a dotted submodule name.
        new: the replacement.
    """
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, new)


def client_channels(config: PGSLConfig, in_channels: int | None) -> int:
    """Channels of the tensor step (c) gives the client's first layer.

    Args:
        config: the PGSL configuration.
        in_channels: the images' channels (None: 1).

    Returns:
        ``C * factor**2`` with unshuffle, plus one with the saliency channel.

    Example:
        >>> client_channels(PGSLConfig(), 1)
        5
    """
    c = in_channels or 1
    if config.unshuffle.enabled:
        c *= config.unshuffle.factor**2
    if config.saliency.enabled and config.saliency.concat:
        c += 1
    return c


def adapt_first_conv(head: nn.Module, channels: int) -> nn.Module:
    """Rebuild the client's first convolution for ``channels`` input channels (a fresh
    initialisation from the global generator; every other layer keeps its weights).

    Args:
        head: the traced client part (changed in place).
        channels: the new input channels.

    Returns:
        ``head``.

    Raises:
        UnsupportedModelError: if the first compute layer is not a Conv2d.
    """
    first = first_compute(head)
    conv = first[1] if first is not None else None
    if first is None or not isinstance(conv, nn.Conv2d):
        raise UnsupportedModelError.build(
            what="model",
            expected="a Conv2d as the first compute layer when unshuffle or saliency "
            "concatenation is on",
            received=type(conv).__name__ if first else "no compute layer before the cut",
            fix="switch unshuffle and saliency.concat off in PGSLConfig",
        )
    new = nn.Conv2d(
        channels, conv.out_channels, conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride, padding=conv.padding, dilation=conv.dilation,  # type: ignore[arg-type]
        groups=1, bias=conv.bias is not None, padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    replace_submodule(head, first[0], new)
    return head


def probe_shapes(
    template: nn.Module, plain_head: nn.Module, in_channels: int | None,
    input_shape: tuple[int, int, int] | None,
) -> tuple[Tensor, int, Tensor]:
    """Dry-run the plain model to learn the activation at the cut and the class count.

    Args:
        template: the wrapped model.
        plain_head: its client part, unchanged.
        in_channels: the images' channels, if known.
        input_shape: ``(C, H, W)``, if given; else :data:`PROBE_SIZES` are tried.

    Returns:
        ``(activation of a 2-image batch, classes, that batch)``.

    Raises:
        UnsupportedModelError: for a model that takes none of the sizes, returns no
            2-D logits or has no single tensor at the cut.
    """
    channels = in_channels or 1
    sizes = [input_shape[1:]] if input_shape else [(s, s) for s in PROBE_SIZES]
    errors = []
    for size in sizes:
        x = torch.zeros(2, channels, *size, device=device_of(template))
        try:
            with torch.no_grad():
                activation, logits = plain_head(x), template(x)
        except Exception as exc:  # try the next size
            errors.append(f"{size}: {type(exc).__name__}")
            continue
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            raise UnsupportedModelError.build(
                what="model",
                expected="a classifier returning (N, classes) logits",
                received=f"output {type(logits).__name__} of shape "
                f"{tuple(getattr(logits, 'shape', ()))}",
                fix="wrap the model so that forward returns a 2-D logits tensor",
            )
        if not isinstance(activation, Tensor):
            raise UnsupportedModelError.build(
                what="cut", expected="a single tensor at the cut",
                received=type(activation).__name__, fix="pick another cut",
            )
        return activation, int(logits.shape[1]), x
    raise UnsupportedModelError.build(
        what="input_shape",
        expected="an input size the model accepts",
        received=f"none of the tried sizes worked ({'; '.join(errors)})",
        fix="pass input_shape=(C, H, W)",
    )


def flat_cut_error(template: nn.Module, cut: int | str, activation: Tensor,
                   x: Tensor) -> ShieldSplitError:
    """The error for a cut whose activations are flat (the cut falls after a ``Flatten``)
    while unshuffle or the saliency channel needs feature maps: it lists the valid cuts
    and suggests the last one that carries feature maps (:func:`~shieldsplit.cutting.cut_ranks`).

    Args:
        template: the wrapped model.
        cut: the requested cut.
        activation: its activation (not 4-D).
        x: a batch the model takes.

    Returns:
        An InvalidCutError naming a cut with feature maps, or an UnsupportedModelError
        when the model has none (then PGSL's input steps must be switched off).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
        ...                     nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
        ...                     nn.Linear(2 * 4 * 4, 3))
        >>> x = torch.zeros(2, 1, 4, 4)
        >>> err = flat_cut_error(net, 2, net[:5](x), x)
        >>> type(err).__name__, str(err).split("Fix: ")[1][:9]
        ('InvalidCutError', 'pass cut=')
    """
    points = list_cut_points(template)
    ranks = cut_ranks(template, x)
    spatial = [i for i, r in ranks.items() if r == 4]
    received = f"cut={cut!r}, whose activations are {tuple(activation.shape)}"
    expected = ("a cut whose activations are 4-D feature maps (unshuffle and the saliency "
                f"channel act on them); valid cuts: {describe_cuts(points)}")
    off = "or switch unshuffle and saliency.concat off in PGSLConfig"
    if spatial:
        best = spatial[-1]
        return InvalidCutError.build(
            what="cut", expected=f"{expected}, of which {spatial} carry feature maps",
            received=received,
            fix=f"pass cut={best} (the last cut before the Flatten/Linear layers), {off}",
        )
    return UnsupportedModelError.build(
        what="cut", expected=expected, received=f"{received}; no cut carries feature maps",
        fix="switch unshuffle and saliency.concat off in PGSLConfig "
        "(PGSLConfig(unshuffle={'enabled': False}, saliency={'concat': False}))",
    )


def check_normalized(model: nn.Module, config: PGSLConfig) -> None:
    """Refuse a per-channel normalisation in front of the model when PGSL reshapes the
    input: it unshuffles the images and adds a saliency channel before the first layer.

    Args:
        model: the wrapped model.
        config: the PGSL configuration.

    Raises:
        UnsupportedModelError: a per-channel :class:`Normalized` with unshuffle or the
            saliency channel on.
    """
    if not isinstance(model, Normalized):
        return
    per_channel = max(model.mean.numel(), model.std.numel()) > 1  # type: ignore[operator]
    reshapes = config.unshuffle.enabled or (config.saliency.enabled and config.saliency.concat)
    if per_channel and reshapes:
        raise UnsupportedModelError.build(
            what="model", expected="Normalized with one mean and one std for all channels "
            "(PGSL unshuffles the images and adds a saliency channel before the first layer)",
            received=f"per-channel mean {model.mean.flatten().tolist()} and std "  # type: ignore[operator]
            f"{model.std.flatten().tolist()}",  # type: ignore[operator]
            fix="use a single mean and std, or switch unshuffle and saliency.concat off in "
            "PGSLConfig (docs/data.md)",
        )


def as_config(config: Any) -> PGSLConfig:
    """``config`` as a PGSLConfig: None is the default, a dict (JSON) is validated.

    Args:
        config: a PGSLConfig, a dict of its fields, or None.

    Returns:
        The configuration.

    Raises:
        ConfigError: for anything else, or a dict that does not validate.

    Example:
        >>> as_config({"recovery": {"mu": 0.3}}).recovery.mu
        0.3
    """
    if config is None:
        return PGSLConfig()
    if isinstance(config, PGSLConfig):
        return config
    if isinstance(config, Mapping):
        return build_config(PGSLConfig, config,
                            fix="check the field names and ranges in "
                            "shieldsplit.defenses.pgsl.config")
    raise ConfigError.build(
        what="config", expected="a PGSLConfig, a dict of its fields or None",
        received=type(config).__name__, fix="pass config=PGSLConfig(...)",
    )


__all__ = [
    "PROBE_SIZES", "ProbeHead", "adapt_first_conv", "as_config", "check_normalized",
    "client_channels", "first_compute", "flat_cut_error", "probe_shapes", "replace_submodule",
]
