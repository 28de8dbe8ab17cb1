"""SplitShield: any PyTorch image classifier as a PGSL split-learning pair.

Proximal Gradient Split Learning (Khowaja et al., IEEE TNSE 2022): the client
attacks its own images on purpose (JSMA-style few-pixel perturbation guided
by a saliency map), pixel-unshuffles them with the saliency map
concatenated, and runs the first ``cut`` blocks of the model. Only the
activations cross the network. The server up-samples them, recovers a clean
version with accelerated proximal gradient robust PCA, fuses both (conv-sum)
and trains three streams: attacked, fused and recovered. Only the fused
stream's gradient goes back to the client. Predictions fuse the three
streams' scores by adaptive weighted averaging.

The class is built in layers, one concern per module: model surgery
(:mod:`~shieldsplit.defenses.pgsl.surgery`), the inference path written once
(:mod:`~shieldsplit.defenses.pgsl.halves`), the client/server pair
(:mod:`~shieldsplit.defenses.pgsl.pair`), training
(:mod:`~shieldsplit.defenses.pgsl.fitting`) and, here, checkpoints and export.
docs/pgsl.md maps every equation to the code and lists every departure from
the paper.

Example:
    >>> import torch
    >>> import shieldsplit as ss
    >>> net = ss.PGSLNet(num_classes=3, image_size=8)
    >>> shield = ss.SplitShield(net, cut=2, seed=0)
    >>> x = torch.rand(4, 1, 8, 8)
    >>> wire = shield.client(x)          # what crosses the network
    >>> tuple(wire.activations.shape)    # 64 channels at half resolution
    (4, 64, 4, 4)
    >>> shield.server(wire).shape
    torch.Size([4, 3])
    >>> bool(torch.allclose(shield.predict_proba(x).sum(dim=1), torch.ones(4)))
    True
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from shieldsplit._core.device import device_of
from shieldsplit._core.io import atomic_torch_save, load_checkpoint, restore_checkpoint
from shieldsplit.defenses.base import Surface, register_defense
from shieldsplit.defenses.knob import Knob
from shieldsplit.defenses.pgsl.config import PGSLConfig
from shieldsplit.defenses.pgsl.exported import ExportedShield
from shieldsplit.defenses.pgsl.fitting import (
    EpochRecord,
    FitHistory,
    ServerHalf,
    SplitServer,
    TrainableShield,
)
from shieldsplit.defenses.pgsl.surgery import as_config
from shieldsplit.errors import ConfigError, StateError

CHECKPOINT_FORMAT = "shieldsplit.SplitShield/1"


class SplitShield(TrainableShield):
    """Turn any image classifier into a PGSL client/server pair.

    Args:
        model: the classifier to defend (any ``nn.Module`` that torch.fx can
            trace and that returns ``(N, classes)`` logits). It is deep-copied
            and never modified.
        cut: the number of computational blocks on the client (a Conv or Linear
            layer with the norm, activation, pool and dropout after it), or a
            submodule name. The paper cuts after the 2nd conv: ``cut=2``.
        config: which PGSL steps run and how; ``PGSLConfig.off()`` gives plain
            split learning. A dict of its fields (as :meth:`options` records it)
            is validated into a ``PGSLConfig``.
        input_shape: ``(C, H, W)`` of the inputs; only needed when the model's
            input size cannot be guessed (a Linear layer before the cut).
        seed: seeds the layers that PGSL adds.

    Raises:
        InvalidCutError: if ``cut`` is not a valid cut point (the message lists them).
        UnsupportedModelError: for a model without Conv/Linear layers, one that
            cannot be traced, or one whose client part cannot take the
            unshuffled input.
        ConfigError: if ``config`` is neither a PGSLConfig, a valid dict of its
            fields nor None.

    Reference:
        Khowaja, Lee, Dev, Jarwar, Qureshi. "Get your Foes Fooled: Proximal
        Gradient Split Learning for Defense against Model Inversion Attacks on
        IoMT data". IEEE TNSE 2022, arXiv:2201.04569.
    """

    name: ClassVar[str] = "pgsl"
    surfaces: ClassVar[frozenset[Surface]] = frozenset({"split"})
    Config = PGSLConfig
    config_option = "config"
    knob: ClassVar[Knob | None] = Knob(
        option="perturb.pixel_budget", low=0.005, high=0.5, scale="log",
        description="the share of pixels the saliency perturbation raises")

    # ------------------------------------------------------------------ state
    def unwrap(self) -> nn.Module:
        """A plain model of the wrapped model's class with the trained weights.

        It carries the client's weights and the fused stream's server weights.
        With every PGSL step off it computes exactly what the shield computes.

        Returns:
            A new module; the shield is unchanged.

        Raises:
            StateError: if the client's first layer was adapted to the unshuffled
                ``4C+1``-channel input, which the original architecture cannot hold.
        """
        cfg = self.config
        if cfg.unshuffle.enabled or (cfg.saliency.enabled and cfg.saliency.concat):
            raise StateError.build(
                what="unwrap",
                expected="a shield whose client takes the original images",
                received="a client whose first layer takes the unshuffled 4C+1-channel tensor",
                fix="use the shield itself for inference, or train with unshuffle and "
                "saliency.concat off to get a plain model back",
            )
        model = copy.deepcopy(self.__dict__["_template"]).to(device_of(self))
        state = {**self.head.state_dict(), **self.tails["fused"].state_dict()}
        result = model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise StateError.build(
                what="unwrap", expected="weights that fit the original model",
                received=f"unexpected keys {result.unexpected_keys}", fix="report this bug",
            )
        model.train(self.training)
        return model

    def export(self, *, input_shape: tuple[int, int, int] | None = None) -> ExportedShield:
        """The whole defended inference path as one module: client steps, server streams
        and the decision fusion, for a single process (an edge device, a model server).

        Its output equals :meth:`predict_proba`; it compiles with
        :func:`torch.jit.script` (see :mod:`shieldsplit.defenses.pgsl.exported` for why TorchScript
        and not ``torch.export``, and why it needs autograd on when called).

        Args:
            input_shape: ``(C, H, W)`` of the images it will take; defaults to the
                shield's own ``input_shape``.

        Returns:
            A new :class:`~shieldsplit.defenses.pgsl.exported.ExportedShield` in eval mode, with
            copies of every part: the shield is unchanged.

        Raises:
            ConfigError: if no input shape is known.

        Example:
            >>> from shieldsplit.models import PGSLNet
            >>> shield = SplitShield(PGSLNet(num_classes=2, image_size=8, width=4, hidden=8),
            ...                      cut=2, input_shape=(1, 8, 8))
            >>> scripted = torch.jit.script(shield.export())  # doctest: +SKIP
        """
        shape = input_shape or self.input_shape
        if shape is None or len(shape) != 3:
            raise ConfigError.build(
                what="input_shape", expected="(C, H, W) of the images the export will take",
                received=repr(shape), fix="pass shield.export(input_shape=(1, 28, 28))",
            )
        example = torch.zeros(1, *shape, device=device_of(self))
        self.check_inputs(example)
        weights = self.decision_weights()
        # One deep copy of both halves: a parameter tied across the cut stays tied.
        client, server = copy.deepcopy((self.client_steps(), self.server_steps()))
        return ExportedShield(
            client=client,
            server=server,
            weights=weights.detach().clone() if weights is not None else None,
            input_shape=(int(shape[0]), int(shape[1]), int(shape[2])),
            target_size=self.target_size(example),
        ).to(device_of(self))

    def options(self) -> dict[str, Any]:
        """The shield's PGSL configuration as JSON (what a compare row records).

        Returns:
            ``{"config": ...}``, the :class:`PGSLConfig` as a JSON-able dict.

        Example:
            >>> from shieldsplit.models import PGSLNet
            >>> cfg = PGSLConfig(recovery={"mu": 0.3})
            >>> shield = SplitShield(PGSLNet(width=4, hidden=8), config=cfg)
            >>> shield.options()["config"]["recovery"]["mu"]
            0.3
        """
        return {"config": self.config.model_dump(mode="json")}

    def save(self, path: str | Path) -> None:
        """Write the shield (config, cut, weights) to ``path`` atomically.

        Args:
            path: destination file.
        """
        atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "cut": self.cut,
                "seed": self.seed,
                "input_shape": list(self.input_shape) if self.input_shape else None,
                "config": self.config.model_dump(mode="json"),
                "state_dict": self.state_dict(),
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path, model: nn.Module) -> SplitShield:
        """Rebuild a saved shield around an instance of the same architecture.

        Args:
            path: a file written by :meth:`save`.
            model: an instance of the originally wrapped architecture (its weights
                are replaced by the saved ones in the returned shield; the instance
                itself is not modified).

        Returns:
            The restored shield.

        Raises:
            DataFileError: if the file is missing or not a SplitShield checkpoint.
            UnsupportedModelError: ``model`` is not the saved architecture (other classes,
                other layers), or cannot be wrapped at all.
        """
        ck = load_checkpoint(path, fmt=CHECKPOINT_FORMAT, saver="SplitShield.save")
        shape = ck.get("input_shape")
        return restore_checkpoint(
            lambda: cls(
                model,
                cut=ck["cut"] if isinstance(ck["cut"], str) else int(ck["cut"]),
                config=as_config(ck["config"]),
                input_shape=(int(shape[0]), int(shape[1]), int(shape[2])) if shape else None,
                seed=int(ck["seed"]),
            ),
            ck["state_dict"], path=path, kind="SplitShield checkpoint", model=model,
        )


register_defense(SplitShield.name, SplitShield)

__all__ = [
    "CHECKPOINT_FORMAT", "EpochRecord", "FitHistory", "ServerHalf", "SplitServer", "SplitShield",
]
