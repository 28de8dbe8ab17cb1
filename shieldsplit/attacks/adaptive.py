"""Adaptive attack on PGSL: invert the wire format of the deployed SplitShield.

The attacker knows the defence and its configuration (Kerckhoffs). It runs
the deployed shield's own :meth:`~shieldsplit.SplitShield.client` on its
auxiliary images, so its training pairs carry the JSMA perturbation, the
pixel-unshuffle layout and the saliency channel exactly as the deployed
client emits them, and trains an inversion decoder from those wire
activations to the clean auxiliary images. The decoder knows the unshuffle
layout: it predicts the ``factor**2`` sub-images at the wire's resolution and
pixel-shuffles them back (the inverse of step (c)), instead of learning the
up-sampling. Decoder and training are those of the black-box attack
(:func:`shieldsplit.attacks.split.train_inversion_decoder`).

When the shield's saliency target is the true label (``saliency.target="label"``)
the training-time wire depends on the labels; the attacker then passes its
auxiliary labels to the client, as the deployed training protocol does.

Example:
    >>> import torch
    >>> import shieldsplit as ss
    >>> from shieldsplit.attacks import AttackContext, create_attack
    >>> from shieldsplit.attacks.observe_split import observe_activations
    >>> shield = ss.SplitShield(ss.PGSLNet(num_classes=2, image_size=8, width=8, hidden=8),
    ...                         cut=2, seed=0)
    >>> attack = create_attack("adaptive-split", seed=0, epochs=1, progress=False)
    >>> attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=2, defense=shield,
    ...                              auxiliary_images=torch.rand(32, 1, 8, 8)))
    >>> rec = attack.reconstruct(observe_activations(shield, torch.rand(3, 1, 8, 8)))
    >>> tuple(rec.images.shape), rec.meta["unshuffle_factor"]
    ((3, 1, 8, 8), 2)
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from shieldsplit.attacks.base import (
    Assumption,
    AttackContext,
    Observation,
    ObservationKind,
    Reconstruction,
    ThreatModel,
    register_attack,
)
from shieldsplit.attacks.split import BlackBoxDecoder, collect_activations
from shieldsplit.defenses.pgsl.shield import SplitShield
from shieldsplit.errors import ConfigError


def _shield_of(context: AttackContext) -> SplitShield:
    shield = context.defense
    if not isinstance(shield, SplitShield):
        raise ConfigError.build(
            what="context.defense",
            expected="the deployed shieldsplit.SplitShield (the adaptive attacker knows it)",
            received=type(shield).__name__,
            fix="pass AttackContext(defense=shield); against an undefended split use "
            "'split-black-box'",
        )
    return shield


class AdaptiveSplitAttack(BlackBoxDecoder):
    """Decoder trained on the deployed SplitShield's own wire messages.

    Args:
        seed: seeds the decoder's initialisation and shuffling.
        epochs: training epochs; None takes the budget's default.
        batch_size: pairs per step.
        lr: Adam's initial learning rate.
        width: hidden channels of the decoder.
        progress: show a progress bar while training.
    """

    name: ClassVar[str] = "adaptive-split"
    threat_model: ClassVar[ThreatModel] = "adaptive"
    assumes: ClassVar[frozenset[Assumption]] = frozenset({"auxiliary_data", "defense_config"})
    observes: ClassVar[ObservationKind] = "activations"
    adapts_to: ClassVar[tuple[str, ...]] = ("pgsl",)
    #: on a model without SplitShield, the same decoder is the plain black-box attack
    control_attack: ClassVar[str | None] = "split-black-box"

    def _client(self, context: AttackContext) -> SplitShield:
        return _shield_of(context)

    def _pairs(self, context: AttackContext, images: Tensor) -> Tensor:
        shield = _shield_of(context)
        labels = None
        if shield.config.saliency.target == "label" and context.auxiliary_labels is not None:
            labels = context.auxiliary_labels
        return collect_activations(shield, images, labels=labels)

    def _unshuffle_factor(self, context: AttackContext) -> int | None:
        cfg = _shield_of(context).config.unshuffle
        return cfg.factor if cfg.enabled else None

    def prepare(self, context: AttackContext) -> None:
        """Run the deployed shield's client on the auxiliary images and train the decoder.

        Args:
            context: needs ``defense`` (a SplitShield) and ``auxiliary_images``.

        Raises:
            ConfigError: if ``context.defense`` is not a SplitShield.
            EmptyDataError: too few auxiliary images.
            InputShapeError: auxiliary images of the wrong shape.
        """
        _shield_of(context)
        super().prepare(context)

    def reconstruct(self, observation: Observation) -> Reconstruction:
        """Decode an observed wire message (see :meth:`BlackBoxDecoder.reconstruct`)."""
        rec = super().reconstruct(observation)
        context = self.context
        shield = _shield_of(context) if context is not None else None
        if shield is not None:
            rec.meta["unshuffle_factor"] = self._unshuffle_factor(context)  # type: ignore[arg-type]
            rec.meta["defense_steps"] = shield.config.enabled_steps()
        return rec


register_attack(AdaptiveSplitAttack.name, AdaptiveSplitAttack)

__all__ = ["AdaptiveSplitAttack"]
