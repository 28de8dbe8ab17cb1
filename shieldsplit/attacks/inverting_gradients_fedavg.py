"""Inverting Gradients on a FedAvg weight update: :class:`InvertingGradientsFedAvg`.

Example:
    >>> import torch
    >>> from shieldsplit.attacks import AttackContext, create_attack
    >>> from shieldsplit.observe import observe_update
    >>> from shieldsplit.models import SmallConvNet
    >>> torch.manual_seed(0) and None
    >>> net = SmallConvNet(num_classes=4, image_size=8)
    >>> x, y = torch.rand(2, 1, 8, 8), torch.tensor([1, 3])
    >>> upd = observe_update(net, x, y, local_epochs=1, local_batch_size=1, lr=0.1)
    >>> attack = create_attack("inverting-gradients-fedavg", seed=0, iterations=3,
    ...                        progress=False)
    >>> attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=4, model=net))
    >>> rec = attack.reconstruct(upd)
    >>> rec.images.shape, sorted(attack.declaration().assumes)
    (torch.Size([2, 1, 8, 8]), ['auxiliary_data', 'local_hyperparameters'])
"""

from __future__ import annotations

from typing import ClassVar

from shieldsplit.attacks.base import Assumption, ObservationKind, register_attack
from shieldsplit.attacks.inverting_gradients import InvertingGradients


class InvertingGradientsFedAvg(InvertingGradients):
    """Inverting Gradients on a FedAvg weight update (Geiping et al. 2020, Sec. 5).

    The same attack as :class:`InvertingGradients`, registered on its own for the
    ``"update"`` observation (several local SGD steps, simulated differentiably on
    the candidate images) with budgets sized for it: each iteration unrolls all
    the client's local steps, so an iteration costs about ``local_epochs x
    ceil(B / local_batch_size)`` gradient iterations. On a model with a wide first
    ``nn.Linear`` the update's block of that layer is separated into per-image
    features instead (the features drift little over a few local steps at a small
    learning rate), at the single-gradient budgets (:attr:`feature_budgets`). Same
    options.
    """

    name = "inverting-gradients-fedavg"
    observes: ClassVar[ObservationKind] = "update"
    #: it simulates the client's local steps with the protocol's epochs, batch size
    #: and learning rate (``Observation.meta``), from the auxiliary images
    assumes: ClassVar[frozenset[Assumption]] = frozenset(
        {"auxiliary_data", "local_hyperparameters"})
    # it also accepts batch-1 gradients (a caller may attack single images with it)
    budgets: ClassVar[dict[str, tuple[int, int]]] = {
        "quick": (60, 1), "standard": (300, 2), "thorough": (1000, 4),
    }
    #: the feature paths cost one backward pass per iteration, unrolled steps or not
    feature_budgets: ClassVar[dict[str, tuple[int, int]] | None] = (
        InvertingGradients.budgets
    )



register_attack("inverting-gradients-fedavg", InvertingGradientsFedAvg)

__all__ = ["InvertingGradientsFedAvg"]
