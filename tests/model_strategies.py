"""Hypothesis strategies for random Sequential CNNs, shared by the cutting and shield tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st
from torch import nn

IMAGE = 8


@dataclass(frozen=True)
class ConvBlock:
    out: int
    kernel: int
    relu: bool
    bn: bool
    pool: bool
    dropout: bool


@dataclass(frozen=True)
class CNNSpec:
    """A Sequential CNN: conv blocks, Flatten, 1-2 Linear layers (shown by hypothesis)."""

    in_channels: int
    blocks: tuple[ConvBlock, ...]
    hidden: int | None
    classes: int
    seed: int

    @property
    def compute_layers(self) -> int:
        return len(self.blocks) + (2 if self.hidden else 1)


@st.composite
def cnn_specs(draw: st.DrawFn, image: int = IMAGE) -> CNNSpec:
    size = image
    blocks = []
    for _ in range(draw(st.integers(1, 4))):
        pool = size >= 2 and draw(st.booleans())
        size = size // 2 if pool else size
        blocks.append(
            ConvBlock(
                out=draw(st.integers(1, 5)),
                kernel=draw(st.sampled_from([1, 3])),
                relu=draw(st.booleans()),
                bn=draw(st.booleans()),
                pool=pool,
                dropout=draw(st.booleans()),
            )
        )
    return CNNSpec(
        in_channels=draw(st.integers(1, 3)),
        blocks=tuple(blocks),
        hidden=draw(st.one_of(st.none(), st.integers(2, 6))),
        classes=draw(st.integers(2, 4)),
        seed=draw(st.integers(0, 2**16)),
    )


def build_cnn(spec: CNNSpec, image: int = IMAGE) -> nn.Sequential:
    """Build the CNN with seeded weights and non-trivial BatchNorm statistics."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        layers: list[nn.Module] = []
        c, size = spec.in_channels, image
        for b in spec.blocks:
            layers.append(nn.Conv2d(c, b.out, b.kernel, padding=b.kernel // 2))
            c = b.out
            if b.relu:
                layers.append(nn.ReLU())
            if b.bn:
                bn = nn.BatchNorm2d(c)
                with torch.no_grad():
                    bn.running_mean.normal_()
                    bn.running_var.uniform_(0.5, 2.0)
                    bn.weight.normal_()
                    bn.bias.normal_()
                layers.append(bn)
            if b.pool:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            if b.dropout:
                layers.append(nn.Dropout(0.3))
        layers.append(nn.Flatten())
        features = c * size * size
        if spec.hidden:
            layers += [
                nn.Linear(features, spec.hidden),
                nn.ReLU(),
                nn.Linear(spec.hidden, spec.classes),
            ]
        else:
            layers.append(nn.Linear(features, spec.classes))
        return nn.Sequential(*layers)
