"""BiDO: bilateral dependency optimisation of the cut representation (Peng et al. 2022).

The client's cut activations ``a`` are trained to depend little on the input
and much on the label: the loss is
``CE + lambda_x * HSIC(x, a) - lambda_y * HSIC(onehot(y), a)``, with HSIC the
biased kernel estimator (Gretton et al. 2005). Nothing is added on the wire.

Example:
    >>> import torch
    >>> from shieldsplit.models import PGSLNet
    >>> from shieldsplit.defenses.bido import BiDO
    >>> net = PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
    >>> defense = BiDO(net, cut=2, lambda_x=0.05, lambda_y=0.5)
    >>> tuple(defense.client(torch.rand(3, 1, 8, 8)).activations.shape)
    (3, 8, 8, 8)
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from shieldsplit.defenses.base import CutDefense, register_defense
from shieldsplit.defenses.knob import Knob
from shieldsplit.functional.dependence import hsic

#: Gaussian bandwidth for one-hot labels: different classes lie sqrt(2) apart, so their
#: kernel value is exp(-1); a median heuristic would be 0 or sqrt(2) depending on the
#: class balance of the batch.
LABEL_SIGMA = 1.0


class BiDOConfig(BaseModel):
    """Options of :class:`BiDO`.

    Attributes:
        lambda_x: weight of the input-dependence penalty, >= 0 (the strength).
        lambda_y: weight of the label-dependence reward, >= 0.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    lambda_x: float = Field(default=0.05, ge=0.0, allow_inf_nan=False)
    lambda_y: float = Field(default=0.5, ge=0.0, allow_inf_nan=False)


class BiDO(CutDefense):
    """Split learning trained with BiDO-HSIC on the cut representation (Peng et al. 2022).

    The objective per batch is
    ``CE + lambda_x * HSIC(x, a) - lambda_y * HSIC(onehot(y), a)`` where ``a`` is the
    client's cut activation (before anything is sent). The HSIC terms use Gaussian
    kernels: median-heuristic bandwidths for ``x`` and ``a``
    (:func:`shieldsplit.functional.dependence.hsic`) and :data:`LABEL_SIGMA` for the labels.
    Departures from the paper: BiDO regularises several hidden layers of a
    centralised classifier and its reference code uses the normalised (CCA)
    variant of HSIC; here only the representation that crosses the network is
    regularised, with the plain biased estimator. Inference is the plain split model.

    Args:
        model: the classifier to defend; it is copied, never modified.
        cut: the number of compute blocks on the client, or a submodule name.
        seed: seeds the defence's own randomness (kept for a uniform signature).
        **options: :class:`BiDOConfig`'s ``lambda_x`` (input-dependence penalty,
            the strength) and ``lambda_y`` (label-dependence reward).

    Raises:
        ConfigError: if ``lambda_x`` or ``lambda_y`` is negative or not finite.
        InvalidCutError: if ``cut`` does not exist.
        UnsupportedModelError: if ``model`` is not a traceable classifier.

    Reference:
        Peng, Liu, Yang, Wu, Han, "Bilateral Dependency Optimization: Defending
        Against Model-inversion Attacks", KDD 2022, arXiv:2206.05483.

    Example:
        >>> import torch
        >>> from shieldsplit.models import PGSLNet
        >>> net = PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
        >>> defense = BiDO(net, cut=2, lambda_x=0.05, lambda_y=0.5)
        >>> x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 0, 1, 0, 1])
        >>> loss, logits = defense.training_loss(defense, x, y)
        >>> loss.dim(), tuple(logits.shape)
        (0, (6, 2))
    """

    name: ClassVar[str] = "bido"
    knob: ClassVar[Knob | None] = Knob(
        option="lambda_x", low=0.005, high=5.0, scale="log",
        description="the weight of the input-dependence (HSIC) penalty")

    Config = BiDOConfig
    config: BiDOConfig

    def regularizer(self, x: Tensor, a: Tensor, y: Tensor) -> Tensor | None:
        """``lambda_x * HSIC(x, a) - lambda_y * HSIC(onehot(y), a)`` (None if both are 0).

        Args:
            x: images ``(N, C, H, W)``.
            a: the client's cut activations for ``x``.
            y: labels ``(N,)`` in ``[0, num_classes)``.

        Returns:
            The term, differentiable in the client part's weights.
        """
        out: Tensor | None = None
        if self.config.lambda_x > 0.0:
            out = self.config.lambda_x * hsic(x, a)
        if self.config.lambda_y > 0.0:
            onehot = F.one_hot(y.long(), num_classes=self.num_classes).to(a.dtype)
            reward = self.config.lambda_y * hsic(onehot, a, sigma_x=LABEL_SIGMA)
            out = -reward if out is None else out - reward
        return out


register_defense(BiDO.name, BiDO)

__all__ = ["LABEL_SIGMA", "BiDO", "BiDOConfig"]
