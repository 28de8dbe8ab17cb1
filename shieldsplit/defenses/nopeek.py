"""NoPeek: split learning with a distance-correlation penalty on the cut activations.

The client part is trained to keep its output useful for the server's
classifier while making it as little dependent on the raw image as it can:
the loss is ``CE + alpha * dCor(x, a)``, with ``dCor`` the sample distance
correlation (Szekely et al. 2007) between the images of a batch and their cut
activations. Nothing is added on the wire; the defence lives in the weights.

Example:
    >>> import torch
    >>> from shieldsplit.models import PGSLNet
    >>> from shieldsplit.defenses.nopeek import NoPeek
    >>> net = PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
    >>> defense = NoPeek(net, cut=2, alpha=0.5)
    >>> tuple(defense.client(torch.rand(3, 1, 8, 8)).activations.shape)
    (3, 8, 8, 8)
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from shieldsplit.defenses.base import CutDefense, register_defense
from shieldsplit.defenses.knob import Knob
from shieldsplit.functional.dependence import distance_correlation_loss


class NoPeekConfig(BaseModel):
    """Options of :class:`NoPeek`.

    Attributes:
        alpha: weight of the distance-correlation term, >= 0 (0 is the undefended
            split; the paper sweeps the trade-off, larger leaks less).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    alpha: float = Field(default=0.1, ge=0.0, allow_inf_nan=False)


class NoPeek(CutDefense):
    """Split learning trained on ``CE + alpha * dCor(x, a)`` (Vepakomma et al. 2019).

    ``a`` is the client's output at the cut, before anything is sent; the distance
    correlation is computed per training batch on the flattened images and
    activations (:func:`shieldsplit.functional.dependence.distance_correlation_loss`, not
    squared). Inference is the plain split model: no noise, no extra cost.

    Args:
        model: the classifier to defend; it is copied, never modified.
        cut: the number of compute blocks on the client, or a submodule name.
        seed: seeds the defence's own randomness (kept for a uniform signature).
        **options: :class:`NoPeekConfig`'s ``alpha``, the weight of the
            distance-correlation term.

    Raises:
        ConfigError: if ``alpha`` is negative or not a finite number.
        InvalidCutError: if ``cut`` does not exist.
        UnsupportedModelError: if ``model`` is not a traceable classifier.

    Reference:
        Vepakomma, Gupta, Dubey, Raskar, "Reducing leakage in distributed deep
        learning for sensitive health data", ICLR 2019 AI for social good workshop,
        arXiv:1812.00564.

    Example:
        >>> import torch
        >>> from shieldsplit.models import PGSLNet
        >>> net = PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
        >>> defense = NoPeek(net, cut=2, alpha=1.0)
        >>> x = torch.rand(6, 1, 8, 8)
        >>> reg = defense.regularizer(x, defense.head(x), torch.zeros(6, dtype=torch.long))
        >>> 0.0 < reg.item() <= 1.0
        True
    """

    name: ClassVar[str] = "nopeek"
    knob: ClassVar[Knob | None] = Knob(
        option="alpha", low=0.01, high=10.0, scale="log",
        description="the weight of the distance-correlation loss at the cut")

    Config = NoPeekConfig
    config: NoPeekConfig

    def regularizer(self, x: Tensor, a: Tensor, y: Tensor) -> Tensor | None:
        """``alpha * dCor(x, a)`` on the batch (None when ``alpha`` is 0).

        Args:
            x: images ``(N, C, H, W)``.
            a: the client's cut activations for ``x``.
            y: labels (unused).

        Returns:
            The penalty, differentiable in the client part's weights.
        """
        if self.config.alpha == 0.0:
            return None
        return self.config.alpha * distance_correlation_loss(x, a)


register_defense(NoPeek.name, NoPeek)

__all__ = ["NoPeek", "NoPeekConfig"]
