"""The imprint attack of a malicious federated server (Fowl et al., "Robbing the Fed", ICLR 2022).

The server does not only watch: it changes the model it sends. :meth:`ImprintAttack.modify`
returns the user's model behind an *imprint block*: a linear layer of ``bins`` rows that
all measure the same linear functional of the image (a random unit direction, or the mean
brightness), biased by minus the quantiles of that measurement on auxiliary data, then a
ReLU, then a linear map back to the image shape that is **added** to the image, so that
the rest of the model still runs on (a slightly shifted copy of) its input. Every column
of that map is the same constant, so every row of the imprint layer gets the same output
gradient for one image, and consecutive rows' gradients differ only by the images whose
measurement falls between their thresholds. :meth:`ImprintAttack.reconstruct` reads each
image that is alone in its bin exactly, as ``(dW_i - dW_{i+1}) / (db_i - db_{i+1})``
(:func:`~shieldsplit.functional.imprint.read_bins`); the expected fraction of a batch of
``B`` images read so with ``k`` equiprobable bins is ``((k - 1) / k)^(B - 1)``
(:func:`~shieldsplit.functional.imprint.expected_recovered_fraction`).

What it observes. A FedSGD gradient of the modified model (``kind="gradient"``), or a
FedAvg update (``kind="update"``). The read is invariant to scale, so an update of one
local step (``-lr`` times the gradient) reads as the gradient, to the precision that a
float32 difference of weights keeps (the ``gain`` option sets the imprint gradients' size
beside the imprint weights). Over several local steps the update sums gradients taken at
moving weights: each imprint row moves by its own gradient, so the rows stop measuring one
functional and the bins shift; images are read only where their bin held still. The attack
accepts such updates and records the number of local steps in ``meta["local_steps"]``;
``docs/results/imprint.md`` measures how much of a batch it still reads (far less than from
a gradient under the auditor's FedAvg protocol).

What stops it. Anything that leaves the ratio of the imprint rows' gradients intact does
not: per-example clipping scales an example's whole gradient, so it cancels in the ratio.
Noise added to the sum (DP-SGD) does: it is of the size of the clipping bound on every
coordinate, while one image's share of a row is a small part of its clipped gradient.

Example:
    >>> import torch
    >>> from shieldsplit.attacks.base import AttackContext
    >>> from shieldsplit.observe import observe_gradient
    >>> from shieldsplit.functional.imprint import recovered_mask
    >>> from shieldsplit.models import SmallConvNet
    >>> g = torch.Generator().manual_seed(0)
    >>> aux, x = torch.rand(512, 1, 8, 8, generator=g), torch.rand(4, 1, 8, 8, generator=g)
    >>> net = SmallConvNet(num_classes=3, image_size=8, width=4)
    >>> attack = ImprintAttack(bins=64, seed=0)
    >>> attack.prepare(AttackContext(image_shape=(1, 8, 8), num_classes=3, model=net,
    ...                              auxiliary_images=aux))
    >>> sent = attack.modify(net)                      # what the malicious server sends
    >>> obs = observe_gradient(sent, x, torch.tensor([0, 1, 2, 0]))
    >>> rec = attack.reconstruct(obs)
    >>> rec.images.shape, int(recovered_mask(rec.images, x).sum()) >= 3
    (torch.Size([4, 1, 8, 8]), True)
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from shieldsplit.attacks.base import (
    Assumption,
    Attack,
    AttackContext,
    Observation,
    ObservationKind,
    Reconstruction,
    register_attack,
)
from shieldsplit.errors import (
    ConfigError,
    InputShapeError,
    NonFiniteInputError,
    StateError,
    UnsupportedModelError,
)
from shieldsplit.functional.imprint import bin_thresholds, read_bins

#: The imprint layer's parameter names in the module :meth:`ImprintAttack.modify` returns
#: (a wrapper may prefix them, e.g. ``head.`` in a split defence).
IMPRINT_WEIGHT = "imprint.measure.weight"
IMPRINT_BIAS = "imprint.measure.bias"


class ImprintBlock(nn.Module):
    """The malicious block: ``x + spread(ReLU(measure(flatten(x))))``.

    Row ``i`` of ``measure`` is ``gain * (direction . x - thresholds[i])`` and every
    entry of ``spread`` is ``scale / (k * gain)``: the image is shifted by ``scale`` times
    the mean fired measurement, whatever ``gain``, while the imprint rows' gradients grow
    as ``1 / gain`` and their weights shrink as ``gain`` (so that a float32 weight update
    still carries them: Fowl et al.'s gain).

    Args:
        image_shape: ``(C, H, W)``.
        direction: ``(C*H*W,)`` the measurement's row (every row of ``measure``).
        thresholds: ``(k,)`` the bins' lower edges on the measurement.
        scale: the brightness shift per unit of mean fired measurement.
        offset: the mean fired measurement on the calibration data (subtracted, so the
            calibration images are shifted by zero on average).
        gain: the imprint rows' scale.
    """

    def __init__(self, image_shape: tuple[int, int, int], direction: Tensor,
                 thresholds: Tensor, *, scale: float, offset: float, gain: float) -> None:
        super().__init__()
        d, k = int(direction.numel()), int(thresholds.numel())
        self.image_shape = tuple(int(s) for s in image_shape)
        self.measure = nn.Linear(d, k)
        self.spread = nn.Linear(k, d)
        with torch.no_grad():
            self.measure.weight.copy_(gain * direction.reshape(1, d).expand(k, d))
            self.measure.bias.copy_(-gain * thresholds)
            self.spread.weight.fill_(scale / (k * gain))
            self.spread.bias.fill_(-scale * offset)

    def forward(self, x: Tensor) -> Tensor:
        """The image plus a uniform brightness shift set by the fired rows."""
        h = torch.relu(self.measure(x.flatten(1)))
        return x + self.spread(h).view_as(x)


class ImprintedModel(nn.Module):
    """What the malicious server sends: the imprint block, then the user's model (a copy).

    Args:
        imprint: the :class:`ImprintBlock`.
        model: the copy of the user's model.
    """

    def __init__(self, imprint: ImprintBlock, model: nn.Module) -> None:
        super().__init__()
        self.imprint = imprint
        self.model = model
        classes = getattr(model, "num_classes", None)
        if isinstance(classes, int):
            self.num_classes = classes

    def forward(self, x: Tensor) -> Tensor:
        """The user's model on the imprinted image."""
        return self.model(self.imprint(x))


class ImprintConfig(BaseModel):
    """Options of :class:`ImprintAttack` (see its Args)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    bins: int = Field(default=128, ge=2)
    measurement: Literal["random", "brightness"] = "random"
    scale: float = Field(default=0.1, gt=0.0, allow_inf_nan=False)
    gain: float = Field(default=1e-3, gt=0.0, allow_inf_nan=False)
    rtol: float = Field(default=1e-6, ge=0.0, lt=1.0, allow_inf_nan=False)


class ImprintAttack(Attack):
    """Robbing the Fed's imprint attack: a malicious server reads images from its bins.

    Call :meth:`prepare` (calibrates the bins on the auxiliary images), send
    :meth:`modify` of the model to the client, and pass what the client returns for it
    (its gradient, or a FedAvg update) to :meth:`reconstruct`.

    Args:
        seed: seeds the random measurement direction.
        progress: unused (the attack is one division).
        bins: ``k``, the imprint layer's rows (Fowl et al. use 128 and more).
        measurement: the linear functional the bins cut: ``"random"`` (a seeded random
            unit direction: continuous values, no ties) or ``"brightness"`` (the mean
            pixel, the paper's example; discrete pixel values give tied bins).
        scale: how much the fired rows shift the image's brightness on its way into the
            user's model (the shift is zero on average over the auxiliary images; the
            read does not depend on it).
        gain: the imprint rows' weights are ``gain`` times the measurement (and the map
            back ``1 / gain``): a small gain makes their gradients large beside their
            weights, so that a float32 FedAvg update (weights after minus before) still
            holds them (Fowl et al. use ``1e-3``).
        rtol: bins whose bias-gradient difference is below ``rtol`` times the largest
            are taken as empty.

    Raises:
        ConfigError: an invalid option.

    Reference:
        Fowl, Geiping, Czaja, Goldblum, Goldstein, "Robbing the Fed: Directly Obtaining
        Private Data in Federated Learning with Modified Models", ICLR 2022.
    """

    name: ClassVar[str] = "imprint"
    threat_model = "malicious_federated"
    observes: ClassVar[ObservationKind] = "gradient"
    server = "malicious"
    assumes: ClassVar[frozenset[Assumption]] = frozenset({"auxiliary_data"})
    #: observation kinds the attack reads
    accepts: ClassVar[tuple[ObservationKind, ...]] = ("gradient", "update")

    Config = ImprintConfig
    config: ImprintConfig
    bins: int
    measurement: str
    scale: float
    gain: float
    rtol: float

    def __init__(self, *, seed: int = 0, progress: bool = True, **options: Any) -> None:
        super().__init__(seed=seed, progress=progress, **options)
        self.calibration: dict[str, Tensor] | None = None

    # -- calibration ----------------------------------------------------------------------

    def _missing(self, capability: str, received: Any, fix: str) -> ConfigError:
        return ConfigError.build(
            what=capability,
            expected=f"the {self.name!r} attack (malicious federated server) to be granted "
                     f"{capability}", received=received, fix=fix)

    def prepare(self, context: AttackContext) -> None:
        """Calibrate the bins: the measurement's quantiles on the auxiliary images.

        Args:
            context: must grant ``auxiliary_images`` (at least 2, of ``image_shape``);
                its ``model``, when given, must take image tensors.

        Raises:
            ConfigError: no auxiliary images (the message names the attack, the missing
                capability and the fix), or they all measure the same.
            InputShapeError: auxiliary images of another shape than ``image_shape``.
            UnsupportedModelError: a model whose input is not an image tensor.
        """
        shape = tuple(context.image_shape)
        if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise UnsupportedModelError.build(
                what="image_shape", expected=f"the {self.name!r} attack's image tensor shape "
                "(C, H, W) of positive ints: its block measures images",
                received=shape, fix="pass AttackContext(image_shape=(C, H, W)), or run an "
                "attack for non-image models")
        aux = context.auxiliary_images
        if aux is None or not isinstance(aux, Tensor) or aux.dim() == 0 or len(aux) < 2:
            raise self._missing(
                "auxiliary_data",
                "no auxiliary images" if aux is None else f"{type(aux).__name__} "
                f"{tuple(getattr(aux, 'shape', ()))}",
                "pass AttackContext(auxiliary_images=...) with at least 2 images from the "
                "victims' distribution (the bins are their measurement's quantiles), or run an "
                "attack that assumes no auxiliary data, e.g. 'dlg'")
        if tuple(aux.shape[1:]) != shape:
            raise InputShapeError.build(
                what="auxiliary_images", expected=f"(N, {', '.join(map(str, shape))})",
                received=tuple(aux.shape), fix="pass auxiliary images of the victims' shape")
        if not bool(torch.isfinite(aux).all()):
            raise NonFiniteInputError.build(
                what="auxiliary_images", expected="finite values", received="NaN or infinity",
                fix="pass finite images")
        if context.model is not None:
            self._probe(context.model, shape)
        super().prepare(context)
        flat = aux.detach().cpu().double().flatten(1)
        d = flat.shape[1]
        if self.measurement == "brightness":
            direction = torch.full((d,), 1.0 / d, dtype=torch.float64)
        else:
            direction = torch.randn(d, generator=self.generator(), dtype=torch.float64)
            direction /= direction.norm()
        m = flat @ direction
        spread = float(m.std())
        if not spread > 0:
            raise ConfigError.build(
                what="auxiliary_images", expected=f"images whose {self.measurement} measurement "
                "varies (the bins cut its distribution)", received="one value for all",
                fix="pass varied auxiliary images, or measurement='random'")
        z = (m - m.mean()) / spread
        thresholds = bin_thresholds(z, self.bins)
        fired = torch.relu(z[:, None] - thresholds[None, :]).mean(dim=1)
        self.calibration = {
            "direction": (direction / spread).float(),
            "thresholds": (thresholds + float(m.mean()) / spread).float(),
            "offset": fired.mean().float(), "mean": aux.detach().cpu().float().mean(dim=0),
        }

    def _probe(self, model: Any, shape: tuple[int, ...]) -> None:
        """Raise the typed error unless ``model`` is a module that maps an image batch of
        ``shape`` to ``(batch, classes)`` logits (probed on a copy, in eval mode)."""
        fix = ("pass the image classifier itself (input (N, C, H, W)), not a feature head or "
               "a model of flat vectors; an honest-server attack such as "
               "'inverting-gradients' needs no imprint block")
        if not isinstance(model, nn.Module):
            raise UnsupportedModelError.build(
                what="model", expected=f"a torch.nn.Module for the {self.name!r} attack",
                received=type(model).__name__, fix=fix)
        probe = copy.deepcopy(model).eval()
        first = next(iter(probe.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
        dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        try:
            with torch.no_grad():
                out = probe(torch.zeros(2, *shape, device=device, dtype=dtype))
        except (RuntimeError, TypeError, ValueError, IndexError) as err:
            raise UnsupportedModelError.build(
                what="model", expected=f"a model whose input is an image tensor (N, "
                f"{', '.join(map(str, shape))}): the {self.name!r} attack puts its block in "
                "front of it", received=f"{type(model).__name__} failing on such a batch "
                f"({str(err).splitlines()[0][:160]})", fix=fix) from err
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 2:
            raise UnsupportedModelError.build(
                what="model", expected=f"a classifier returning (N, classes) logits for the "
                f"{self.name!r} attack", received=f"output {getattr(out, 'shape', type(out))}",
                fix=fix)

    def _calibrated(self) -> tuple[dict[str, Tensor], AttackContext]:
        if self.calibration is None or self.context is None:
            raise StateError.build(
                what="attack", expected="a prepared imprint attack (its bins calibrated)",
                received="an unprepared attack",
                fix="call attack.prepare(AttackContext(auxiliary_images=...)) first")
        return self.calibration, self.context

    # -- the malicious model --------------------------------------------------------------

    def modify(self, model: nn.Module, images: Tensor | None = None) -> nn.Module:
        """The model the malicious server sends: the imprint block, then a copy of ``model``.

        Args:
            model: the user's model (not modified: it is deep-copied).
            images: unused (the server reads the client's images off the gradient only).

        Returns:
            A new :class:`ImprintedModel` on ``model``'s device and dtype, in its mode.
            Its imprint parameters are named :data:`IMPRINT_WEIGHT` and
            :data:`IMPRINT_BIAS`; its compute blocks are ``model``'s plus two (see
            :meth:`modified_cut`).

        Raises:
            StateError: before :meth:`prepare`.
            UnsupportedModelError: ``model`` does not take image tensors of the
                context's shape (the message says what to pass instead).
        """
        cal, context = self._calibrated()
        shape = tuple(context.image_shape)
        self._probe(model, shape)
        copied = copy.deepcopy(model)
        first = next(iter(copied.parameters()), None)
        block = ImprintBlock(context.image_shape, cal["direction"], cal["thresholds"],
                             scale=self.scale, offset=float(cal["offset"]), gain=self.gain)
        if first is not None and first.is_floating_point():
            block = block.to(device=first.device, dtype=first.dtype)
        return ImprintedModel(block, copied).train(model.training)

    @staticmethod
    def modified_cut(cut: int | str) -> int | str:
        """The cut of ``model`` as a cut of :meth:`modify`'s module (the imprint block adds
        two compute blocks in front; a named submodule moves under ``model.``).

        Example:
            >>> ImprintAttack.modified_cut(2), ImprintAttack.modified_cut("layer1")
            (4, 'model.layer1')
        """
        return cut + 2 if isinstance(cut, int) else f"model.{cut}"

    # -- the read -------------------------------------------------------------------------

    def _imprint_tensors(self, obs: Observation, d: int) -> tuple[Tensor, Tensor]:
        tensors = obs.gradients if obs.kind == "gradient" else obs.update
        if not isinstance(tensors, dict):
            raise ConfigError.build(
                what=f"observation.{'gradients' if obs.kind == 'gradient' else 'update'}",
                expected="a dict name -> tensor", received=type(tensors).__name__,
                fix="build the observation with shieldsplit.observe")
        found = []
        for key in (IMPRINT_WEIGHT, IMPRINT_BIAS):
            names = [n for n in tensors if n == key or n.endswith("." + key)]
            if len(names) != 1:
                raise ConfigError.build(
                    what="observation", expected=f"the {self.name!r} attack's view of the "
                    f"model its server sent (one parameter named ...{key})",
                    received=f"{len(names)} such parameter(s) among {len(tensors)}",
                    fix="observe the client on attack.modify(model), not on the user's model: "
                        "the imprint attack needs a malicious server that sends its model")
            found.append(tensors[names[0]])
        weight, bias = found
        k = self.bins
        if tuple(weight.shape) != (k, d) or tuple(bias.shape) != (k,):
            raise InputShapeError.build(
                what="observation", expected=f"imprint gradients of shape ({k}, {d}) and ({k},)",
                received=f"{tuple(weight.shape)} and {tuple(bias.shape)}",
                fix="reconstruct with the attack that built the model")
        return weight, bias

    def reconstruct(self, observation: Observation) -> Reconstruction:
        """Read the images alone in their bins from the imprint layer's gradient.

        Args:
            observation: a ``"gradient"`` or ``"update"`` observation of the module
                :meth:`modify` returned.

        Returns:
            ``batch_size`` images in ``[0, 1]``, the read ones first (strongest bias
            difference first), then the auxiliary mean for the bins that held no image
            alone (order unknown: a gradient reveals none). ``meta`` holds ``bins``,
            ``bins_read`` and ``local_steps``.

        Raises:
            StateError: before :meth:`prepare`.
            ConfigError: an observation of another kind, or of a model without the block.
            InputShapeError: an observation of another image shape or bin count.
            NonFiniteInputError: NaN or infinity in the imprint gradients.
        """
        start = time.perf_counter()
        cal, context = self._calibrated()
        if not isinstance(observation, Observation) or observation.kind not in self.accepts:
            raise ConfigError.build(
                what="observation.kind", expected=f"one of {list(self.accepts)}",
                received=repr(getattr(observation, "kind", type(observation).__name__)),
                fix="observe the client's gradient or update on attack.modify(model)")
        if tuple(observation.image_shape) != tuple(context.image_shape):
            raise InputShapeError.build(
                what="observation.image_shape",
                expected=f"the context's {tuple(context.image_shape)}",
                received=tuple(observation.image_shape), fix="prepare with the right image_shape")
        weight, bias = self._imprint_tensors(observation, math.prod(context.image_shape))
        rows, _ = read_bins(weight, bias, limit=observation.batch_size, rtol=self.rtol)
        images = rows.float().reshape(-1, *context.image_shape).clamp(0, 1)
        missing = observation.batch_size - len(images)
        filler = cal["mean"].unsqueeze(0).expand(missing, *context.image_shape)
        meta = observation.meta
        steps = 1
        if observation.kind == "update":
            per_epoch = math.ceil(observation.batch_size
                                  / int(meta.get("local_batch_size", observation.batch_size)))
            steps = int(meta.get("local_epochs", 1)) * per_epoch
        return Reconstruction(
            images=torch.cat([images, filler.to(images)]), attack=self.name,
            seconds=time.perf_counter() - start,
            meta={"bins": self.bins, "bins_read": len(images), "local_steps": steps})


register_attack(ImprintAttack.name, ImprintAttack)

__all__ = [
    "IMPRINT_BIAS", "IMPRINT_WEIGHT", "ImprintAttack", "ImprintBlock", "ImprintConfig",
    "ImprintedModel",
]
