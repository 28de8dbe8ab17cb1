"""List where a torchvision ResNet-18 can be split, then wrap it at the end of layer1.

Needs the `vision` extra (torchvision). No weights are downloaded.
Run: python examples/resnet18_cut_points.py
"""

from __future__ import annotations

import torch
import torchvision

import shieldsplit as ss


def main() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=2)
    for point in ss.list_cut_points(model):
        print(f"cut={point.index:2d} after {point.after}")
    # Residual blocks can only be cut at their ends, where a single tensor crosses.
    shield = ss.SplitShield(model, cut="layer1", input_shape=(3, 32, 32), seed=0)
    print("client activations:", tuple(shield.client(torch.rand(2, 3, 32, 32)).activations.shape))


if __name__ == "__main__":
    main()
