"""The client attacks its own images before training (PGSL steps b and d, on the image).

This is the PGSL paper's Table I "JSMA +" setting and, with ``recover=True``,
its image-level reading of "the gradients from the proximal gradient method"
(Khowaja et al. 2022, Sec. IV, Fig. 3): every image the client feeds its network
is first perturbed with the few-pixel JSMA step of PGSL (the saliency of the
network's own predicted class, Captum), and then, optionally, cleaned with the
proximal-gradient robust PCA on each image plane. The network itself is the
plain classifier, so a federated server receives the plain network's gradient
of the *perturbed* images and an eavesdropper on the split sees their
activations. An attacker who does not know the perturbation rebuilds perturbed
images; their distance to the originals is what the defence buys.

Unlike :class:`~shieldsplit.SplitShield` there is no pixel-unshuffle, no
second stream and no fusion: it isolates what the perturbation (and the
recovery) alone do to leakage and accuracy.

Example:
    >>> import torch
    >>> from shieldsplit.models import PGSLNet
    >>> net = PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
    >>> defense = JsmaInput(net, cut=2, pixel_budget=0.05)
    >>> x = torch.rand(3, 1, 8, 8)
    >>> int((defense.perturb(x) != x).flatten(1).sum(1).max()) <= 4  # 5% of 64 pixels
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from shieldsplit._core.validate import check_batch
from shieldsplit.defenses.base import CutDefense, register_defense
from shieldsplit.defenses.knob import Knob
from shieldsplit.defenses.pgsl.perturb import jsma_perturb
from shieldsplit.defenses.pgsl.recovery import recover as rpca_recover
from shieldsplit.defenses.pgsl.saliency import class_gradient, jsma_saliency
from shieldsplit.training import eval_mode
from shieldsplit.wire import ClientMessage, Observation


class JsmaInputConfig(BaseModel):
    """Options of :class:`JsmaInput`.

    Attributes:
        pixel_budget: fraction of each image's elements the JSMA step raises, (0, 1].
        strength: the step added to a chosen element (JSMA's theta), > 0.
        recover: clean the perturbed images with robust PCA (PGSL step d) first.
        mu: the proximal-gradient relaxation parameter (the paper: 0.55), > 0.
        max_iter: APG iterations of the recovery, >= 1.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    pixel_budget: float = Field(default=0.02, gt=0.0, le=1.0)
    strength: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    recover: bool = False
    mu: float = Field(default=0.55, gt=0.0, allow_inf_nan=False)
    max_iter: int = Field(default=100, ge=1)


class JsmaInput(CutDefense):
    """Train the plain network on JSMA-perturbed (and optionally recovered) images.

    Args:
        model: the classifier to defend; it is copied, never modified.
        cut: where the split-learning attacks observe it.
        seed: seeds the defence's randomness (kept for a uniform signature).
        **options: the fields of :class:`JsmaInputConfig` (``pixel_budget``,
            ``strength``, ``recover``, ``mu``, ``max_iter``).

    Raises:
        ConfigError: for an option out of range.
        InvalidCutError: if ``cut`` does not exist.
        UnsupportedModelError: if ``model`` is not a traceable classifier.

    Reference:
        Khowaja, Lee, Dev, Jarwar, Qureshi, "Get your Foes Fooled: Proximal Gradient
        Split Learning for Defense against Model Inversion Attacks on IoMT data",
        IEEE TNSE 2022 (Table I, Fig. 3).
    """

    name: ClassVar[str] = "jsma-input"
    knob: ClassVar[Knob | None] = Knob(
        option="pixel_budget", low=0.005, high=0.5, scale="log",
        description="the share of pixels raised by the saliency perturbation")

    Config = JsmaInputConfig
    config: JsmaInputConfig

    def network(self) -> nn.Module:
        """The plain classifier (client part, then server part) the client trains."""
        return nn.Sequential(self.head, self.tail)

    def perturb(self, x: Tensor) -> Tensor:
        """The images the client actually feeds its network (detached, in [0, 1]).

        Args:
            x: images ``(N, C, H, W)`` in [0, 1].

        Returns:
            ``x`` with the JSMA step on its most salient elements (the network's own
            predicted class as the target), then recovered if ``recover`` is set.
        """
        net = self.network()
        # saliency without touching BatchNorm statistics or dropout masks
        with eval_mode(net):
            def proba(images: Tensor) -> Tensor:
                return net(images).softmax(dim=-1)

            with torch.no_grad():
                target = proba(x).argmax(dim=-1)
            grad = class_gradient(proba, x, target)
        out = jsma_perturb(x, jsma_saliency(grad), pixel_budget=self.config.pixel_budget,
                           strength=self.config.strength, clip=(0.0, 1.0)).adversarial
        if self.config.recover:
            out = rpca_recover(out, mu=self.config.mu, max_iter=self.config.max_iter, tol=1e-6,
                               matrix="rows_x_cols").clamp(0.0, 1.0)
        return out.detach()

    def client(self, x: Tensor, y: Tensor | None = None) -> ClientMessage:
        """The activations of the perturbed images: what crosses the network.

        Raises:
            InputShapeError, NonFiniteInputError, LabelError: on a bad batch.
        """
        check_batch(x, y, num_classes=self.num_classes, in_channels=self.in_channels)
        return ClientMessage(activations=self.head(self.perturb(x)), labels=y)

    def training_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-entropy of the plain network on the perturbed images."""
        check_batch(x, y, num_classes=self.num_classes, in_channels=self.in_channels)
        logits = self.tail(self.head(self.perturb(x)))
        return F.cross_entropy(logits, y), logits

    def federated_model(self) -> nn.Module:
        """The plain network: a federated server shares it, the perturbation stays local."""
        return self.network()

    def observe_federated(
        self, x: Tensor, y: Tensor, *, kind: Literal["gradient", "update"],
        seed: int | None = None, send: Callable[[nn.Module], nn.Module] | None = None,
        **local: Any,
    ) -> Observation:
        """The plain network's gradient (or FedAvg update) on the perturbed images (of
        the model a malicious server sent, with ``send``)."""
        from shieldsplit.observe import observe_gradient, observe_update

        check_batch(x, y, num_classes=self.num_classes, in_channels=self.in_channels)
        images = self.perturb(x)
        model = self.sent_model(send)
        if kind == "gradient":
            return observe_gradient(model, images, y)
        return observe_update(model, images, y, seed=seed, **local)


register_defense(JsmaInput.name, JsmaInput)

__all__ = ["JsmaInput", "JsmaInputConfig"]
