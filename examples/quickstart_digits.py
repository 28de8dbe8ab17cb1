"""Wrap the PGSL paper's network with SplitShield and train it on scikit-learn's digits.

Run: python examples/quickstart_digits.py
"""

from __future__ import annotations

import shieldsplit as ss
from shieldsplit.data import load_dataset, make_loaders


def main() -> None:
    ds = load_dataset("digits", seed=0)
    loaders = make_loaders(ds, batch_size=64, seed=0)
    model = ss.PGSLNet(in_channels=1, num_classes=ds.num_classes, image_size=8)

    shield = ss.SplitShield(model, cut=2, seed=0)  # `model` itself is never changed
    history = shield.fit(loaders.train, epochs=3, val_loader=loaders.val, seed=0)
    print("validation accuracy per stream:", history.epochs[-1].val_accuracy)

    x, _ = next(iter(loaders.test))
    wire = shield.client(x)  # exactly what crosses the network
    print("the server receives", tuple(wire.activations.shape), f"({wire.nbytes} bytes)")
    print("fused-decision probabilities of the first test image:", shield.predict_proba(x)[0])


if __name__ == "__main__":
    main()
