"""Improved DLG (Zhao, Mopuri, Bilen 2020, "iDLG"): :class:`IDLG`.

The labels are read analytically from the last layer's weight gradient
(:func:`~shieldsplit.functional.labels.infer_labels_idlg`), then DLG's L2 matching
with L-BFGS on the images (or, on a model with a wide ``nn.Linear``, on that layer's
input: :class:`~shieldsplit.attacks.gradient_features.FeatureAttack`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, Literal

import torch
from torch import Tensor

from shieldsplit.attacks.base import Assumption, ObservationKind, register_attack
from shieldsplit.attacks.dlg import DLG, DLGConfig
from shieldsplit.attacks.gradient_features import FeatureAttack


class IDLGConfig(DLGConfig):
    """Options of :class:`IDLG` (see its Args)."""

    init: Literal["auxiliary", "uniform"] = "auxiliary"
    features: bool = True


class IDLG(DLG, FeatureAttack):
    """Improved DLG (Zhao et al. 2020): labels from the last layer, then L2 matching
    with L-BFGS.

    The labels come from :func:`~shieldsplit.functional.labels.infer_labels_idlg` on
    the observed gradient of the last linear layer's weight (the observation's own
    labels are ignored: inferring them is the point of iDLG). Then, as in the paper,
    L-BFGS minimises a squared L2 distance; what it matches depends on ``features``:

    - ``features=True`` (default): at batch 1, when the model has an ``nn.Linear``
      with a bias and at least as many inputs as the image has values, the analytic
      step of iDLG is carried one layer further: that layer's input is read exactly
      from its weight and bias gradients
      (:func:`~shieldsplit.functional.gradients.linear_input_from_gradient`, the
      observation of Phong et al. 2017 that R-GAP, Zhu & Blaschko 2021, builds on),
      and L-BFGS fits the images to it (relative squared distance). On trained
      ReLU/BatchNorm networks whole-gradient L2 matching from noise does not converge
      at a CPU budget (the paper's network trained on BreastMNIST: 9.6 dB, below the
      mean image); this least-squares problem does, in the same 100 iterations.
      Gradients that are not one clean image's (a defence's noise) fall back to
      gradient matching; batches take ``InvertingGradients``' separated-feature
      path.
    - ``features=False``: the paper's iDLG, L2 distance between whole gradients.

    Args:
        seed: seeds the initial images.
        budget: as :class:`DLG` (``"quick"``: 100 L-BFGS iterations, 1 restart).
        iterations: overrides the budget's L-BFGS iterations.
        restarts: overrides the budget's restarts.
        lr: L-BFGS step size (1, with a strong-Wolfe line search).
        init: ``"auxiliary"`` (default): start from the auxiliary mean image of the
            inferred label plus uniform noise of half-width ``init_noise``, when the
            attacker holds auxiliary images; ``"uniform"``: noise in [0, 1] (the paper).
        features: see above.
        max_parallel: as for ``InvertingGradients``.
        progress: show a progress bar.

    Raises:
        ConfigError: on an invalid option.

    Example:
        >>> import torch
        >>> from shieldsplit.attacks import AttackContext
        >>> from shieldsplit.observe import observe_gradient
        >>> from shieldsplit.functional.metrics import psnr
        >>> torch.manual_seed(0) and None
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 32),
        ...                           torch.nn.Sigmoid(), torch.nn.Linear(32, 3))
        >>> x = torch.rand(1, 1, 4, 4)
        >>> attack = IDLG(seed=0, progress=False)
        >>> attack.prepare(AttackContext(image_shape=(1, 4, 4), num_classes=3, model=net))
        >>> rec = attack.reconstruct(observe_gradient(net, x, torch.tensor([1])))
        >>> rec.labels.tolist(), rec.meta["matched"], bool(psnr(rec.images, x) > 40)
        ([1], "features of '1'", True)
    """

    name = "idlg"
    #: the labels are inferred (not granted); the auxiliary images start the search
    #: (``init="auxiliary"``)
    assumes: ClassVar[frozenset[Assumption]] = frozenset({"auxiliary_data"})
    accepts: ClassVar[tuple[ObservationKind, ...]] = ("gradient",)
    learn_labels = False
    #: the audit's quick budget runs Inverting Gradients, which reads the same analytic
    #: labels; run iDLG by name, or at the standard budget
    quick_default = False

    Config = IDLGConfig
    config: IDLGConfig

    def _feature_descent(
        self, flat: Tensor, closure: Callable[[], Tensor], iterations: int
    ) -> tuple[int, Callable[[], None], int]:
        """L-BFGS (strong-Wolfe line search), ``chunk`` iterations per tick."""
        opt = torch.optim.LBFGS(
            [flat], lr=self.lr, max_iter=self.chunk, history_size=100,
            line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15,
        )
        return max(1, math.ceil(iterations / self.chunk)), lambda: opt.step(closure), self.chunk



register_attack("idlg", IDLG)

__all__ = ["IDLG", "IDLGConfig"]
