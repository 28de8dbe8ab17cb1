"""What each audit budget spends: victims, batches, epochs, and the FedAvg protocol the
federated server observes. One place, read by the auditor, its verdicts and the benchmarks.

Example:
    >>> VICTIMS["quick"], FEDAVG["local_batch_size"]
    (64, 8)
    >>> large_image((3, 224, 224)), reference_pixels((3, 224, 224)), reference_pixels((1, 28, 28))
    (True, 32, 28)
"""

from __future__ import annotations

from typing import Any

from shieldsplit.attacks.base import LARGE_IMAGE_PIXELS

#: Victim images per budget (the split attacks rebuild all of them).
VICTIMS: dict[str, int] = {"quick": 64, "standard": 128, "thorough": 256}
#: Victims of the batch-1 gradient attacks per budget (each is one optimisation problem).
#: 64 is where 95% Wilson intervals separate 50% from 75% attacker accuracy; the quick
#: budget's 40 keeps its audit of the paper's network well inside 3 minutes on 2 cores and
#: is the fewest that can bound a re-identification rate under the default 10% tolerance
#: with none re-identified (36, ``victims_to_bound``), so "no leakage found" stays
#: reachable; its wider intervals show in the verdicts.
FEDERATED_VICTIMS: dict[str, int] = {"quick": 40, "standard": 64, "thorough": 128}
#: Local batches (of ``FEDAVG["local_batch_size"]`` victims each) the update attack rebuilds:
#: the quick budget's one batch (8 victims) can show a leak but never bound one under the
#: tolerance; the standard budget's 5 (40 victims) can.
FEDAVG_BATCHES: dict[str, int] = {"quick": 1, "standard": 5, "thorough": 8}
#: Reference-classifier epochs per budget (fewer than ~15 leave its BatchNorm statistics
#: unsettled: 5 epochs scored below the majority class on BreastMNIST).
REFERENCE_EPOCHS: dict[str, int] = {"quick": 20, "standard": 30, "thorough": 50}
#: Training epochs of a defence's undefended twin when ``control_epochs`` is not given.
CONTROL_EPOCHS: dict[str, int] = {"quick": 10, "standard": 20, "thorough": 30}
#: The local protocol of the FedAvg update the server observes (as in Jiang et al. 2025).
#: SGD lr 1e-3: a trained network's eval-mode update diverged (NaN within 5 steps) at
#: 0.1 and 0.01 on BreastMNIST, since BatchNorm on running statistics does not rescale
#: the gradient the way batch statistics do.
FEDAVG: dict[str, Any] = {"local_epochs": 5, "local_batch_size": 8, "lr": 1e-3}
#: The side (px) the reference classifier sees a *large* image (more than
#: ``LARGE_IMAGE_PIXELS``, 64x64, a channel; MedMNIST up-sampled to 224 px has 50176)
#: average-pooled to. At 224 px a quick audit of torchvision's ResNet-18 at the full
#: budget would take hours on 2 cores (one epoch of the reference classifier alone took 13
#: minutes beside other work), so on large images the quick budget also runs only the
#: attacks that declare they fit (``Attack.quick_max_pixels``: the split decoder, the
#: malicious server's analytic imprint), and its split decoder decodes at most
#: ``QUICK_DECODE_SIDE`` (64) px and up-samples (``shieldsplit.attacks.split``).
REFERENCE_SIDE = 32


def large_image(image_shape: tuple[int, ...]) -> bool:
    """Whether ``(C, H, W)`` images are large (more than :data:`LARGE_IMAGE_PIXELS` a
    channel)."""
    return len(image_shape) == 3 and image_shape[1] * image_shape[2] > LARGE_IMAGE_PIXELS


def reference_pixels(image_shape: tuple[int, ...]) -> int:
    """The side (px) the reference classifier sees ``(C, H, W)`` images at: their own
    height, or :data:`REFERENCE_SIDE` for a large image."""
    return REFERENCE_SIDE if large_image(image_shape) else int(image_shape[1])


__all__ = ["CONTROL_EPOCHS", "FEDAVG", "FEDAVG_BATCHES", "FEDERATED_VICTIMS",
           "LARGE_IMAGE_PIXELS", "REFERENCE_EPOCHS", "REFERENCE_SIDE", "VICTIMS", "large_image",
           "reference_pixels"]
