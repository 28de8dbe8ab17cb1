"""DP-SGD: differentially private training of the whole split model, through Opacus.

Every step clips each example's gradient to ``max_grad_norm`` and adds Gaussian
noise of standard deviation ``noise_multiplier * max_grad_norm`` to their sum
(Abadi et al. 2016); batches are drawn by Poisson sampling, and a Rényi-DP
accountant turns the steps into an ``(epsilon, delta)`` guarantee for every
example of the training set. The guarantee covers what is computed from the
trained weights alone: the weight updates a federated server sees and the released
model. It does **not** cover the cut activations of split learning during training:
those are a deterministic function of each private image, sent at every step, so an
eavesdropper on the wire is not bounded by epsilon (the auditor's split attacks
measure that leakage instead).

How the split model meets Opacus:

* BatchNorm mixes the examples of a batch, so no per-example gradient exists.
  The model is deep-copied (the user's model is never changed) and Opacus's
  ``ModuleValidator.fix`` swaps every BatchNorm for a GroupNorm; a
  ``UserWarning`` and a log record name the swapped layers. The new GroupNorms
  start from a fresh affine (weight 1, bias 0) and BatchNorm running statistics
  are dropped, so a pretrained model changes function and must be fine-tuned.
  A layer Opacus rejects and cannot fix raises :class:`UnsupportedModelError`.
* The fixed copy is split by :class:`~shieldsplit.defenses.base.CutDefense` with
  ``torch.fx``. The head and tail are ``GraphModule``\\ s that call the original
  leaf layers, so Opacus's per-example gradient hooks (registered on the leaf
  layers of the wrapped defence) work on them unchanged; no un-split copy is
  needed and no parameter is duplicated.
* :meth:`DPSGD.fit` wraps ``self`` in Opacus's ``GradSampleModule`` for the
  duration of the fit only and removes its hooks and the attributes it leaves on
  layers and parameters afterwards, so the defence is a plain module again.
* The privacy loss is kept as a Rényi-DP curve (a buffer, so it is saved and
  loaded with the weights); RDP composes by addition, so ``epsilon`` covers all
  :meth:`DPSGD.fit` calls together. The number of fits, which varies the noise
  seed from fit to fit, is a buffer too, so a loaded defence never replays the
  noise of an earlier fit.
* A fit that raises (a bad label in a later batch, an interrupt) restores every
  weight and buffer to what it was before the fit and re-raises: the noisy steps
  it took are discarded with their weights, so nothing was released and the
  privacy accounting is left unchanged.
* :meth:`DPSGD.observe_federated` gives the auditor what a DP-SGD client of
  federated learning really sends: per-example-clipped, Gaussian-noised
  gradients (or the local-SGD update built from them), not the exact gradient.

Example:
    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> from shieldsplit.models import SmallConvNet
    >>> from shieldsplit.defenses.dpsgd import DPSGD
    >>> net = SmallConvNet(num_classes=2, image_size=8, width=4)
    >>> dp = DPSGD(net, cut=2, noise_multiplier=1.0, max_grad_norm=1.0)
    >>> dp.privacy()
    {'epsilon': 0.0, 'delta': 1e-05}
    >>> data = TensorDataset(torch.rand(16, 1, 8, 8), torch.randint(0, 2, (16,)))
    >>> history = dp.fit(DataLoader(data, batch_size=4), epochs=1, progress=False)
    >>> history.sample_rate, 0 < history.epsilon < float("inf")
    (0.25, True)
    >>> dp.privacy()["epsilon"] == history.epsilon
    True
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn
from torch.func import vmap
from torch.utils.data import DataLoader, IterableDataset

from shieldsplit._core.logsafe import keep_root_logger
from shieldsplit._core.validate import check_batch, check_int, check_number, check_seed
from shieldsplit.datacontract import check_model
from shieldsplit.defenses.base import CutDefense, register_defense
from shieldsplit.defenses.knob import Knob
from shieldsplit.errors import ConfigError, EmptyDataError, UnsupportedModelError
from shieldsplit.training import PlainHistory, fit_plain, restored_on_error
from shieldsplit.wire import ClientMessage

with keep_root_logger():  # Opacus calls logging.basicConfig when imported
    from opacus import PrivacyEngine
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as rdp_analysis
    from opacus.grad_sample import GradSampleModule
    from opacus.validators import ModuleValidator

if TYPE_CHECKING:
    from shieldsplit.wire import Observation

logger = logging.getLogger(__name__)

#: The Rényi orders on which the privacy loss is tracked (Opacus's defaults).
RDP_ORDERS: tuple[float, ...] = tuple(float(a) for a in RDPAccountant.DEFAULT_ALPHAS)

#: Attributes Opacus leaves on layers and parameters during a private fit.
_MODULE_ATTRS = ("activations", "max_batch_len", "ft_compute_sample_grad")
_PARAM_ATTRS = ("grad_sample", "_forward_counter", "_current_grad_sample", "_norm_sample",
                "summed_grad")


class DPHistory(PlainHistory):
    """What :meth:`DPSGD.fit` returns: the plain history plus the privacy spent.

    Attributes:
        epsilon: the epsilon of all fits of the defence so far, at ``delta``
            (``inf`` with ``noise_multiplier=0``: clipping only, no guarantee).
        delta: the delta of the guarantee.
        noise_multiplier: noise std over ``max_grad_norm``.
        max_grad_norm: the per-example clipping bound.
        sample_rate: the probability that an example joins a batch (``1 / len(loader)``).
        steps: the optimiser steps of this fit (empty Poisson batches included).
    """

    model_config = ConfigDict(extra="forbid")

    epsilon: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int


def _type_names(module: nn.Module) -> dict[str, str]:
    return {name: type(m).__name__ for name, m in module.named_modules()}


def _unsupported_layers(module: nn.Module) -> list[str]:
    """``"name (Type)"`` of every trainable layer that Opacus still rejects."""
    bad = []
    for name, m in module.named_modules():
        if not any(p.requires_grad for p in m.parameters(recurse=False)):
            continue
        validator = ModuleValidator.VALIDATORS.get(type(m))
        # Opacus's GradSampleModule refuses trainable layers with buffers (their
        # state would escape the privacy mechanism).
        if (validator is not None and validator(m)) or any(True for _ in m.buffers()):
            bad.append(f"{name or '<root>'} ({type(m).__name__})")
    return bad


def make_dp_compatible(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that Opacus can train (BatchNorm swapped for GroupNorm).

    The model is deep-copied and put in training mode; if Opacus's
    ``ModuleValidator`` finds a problem, ``ModuleValidator.fix`` is applied and a
    ``UserWarning`` (also logged) names the swapped layers.

    Args:
        model: the classifier (not modified).

    Returns:
        The compatible copy (the copy itself when nothing had to change).

    Raises:
        UnsupportedModelError: if ``model`` is not a module, or a layer is still
            incompatible after the fix (the message names it).

    Example:
        >>> import warnings
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     fixed = make_dp_compatible(net)
        >>> type(fixed[1]).__name__, type(net[1]).__name__
        ('GroupNorm', 'BatchNorm2d')
        >>> str(caught[0].message).startswith("DP-SGD: BatchNorm2d -> GroupNorm in: 1")
        True
    """
    check_model(model)  # a module with float32 weights (float64: Opacus crashed deep inside)
    fixed = copy.deepcopy(model).train()
    if ModuleValidator.validate(fixed, strict=False):
        before = _type_names(fixed)
        fixed = ModuleValidator.fix(fixed).train()
        swaps: dict[tuple[str, str], list[str]] = defaultdict(list)
        for name, new in _type_names(fixed).items():
            old = before.get(name)
            if old is not None and old != new:
                swaps[(old, new)].append(name or "<root>")
        if swaps:
            detail = "; ".join(f"{old} -> {new} in: {', '.join(names)}"
                               for (old, new), names in swaps.items())
            message = (f"DP-SGD: {detail} (Opacus cannot compute per-example gradients "
                       "through batch statistics; the new layers start from a fresh affine "
                       "and running statistics are dropped, the user's model is unchanged)")
            logger.warning(message)
            warnings.warn(message, UserWarning, stacklevel=3)
    bad = _unsupported_layers(fixed)
    if bad:
        raise UnsupportedModelError.build(
            what="model",
            expected="layers Opacus can train privately (no buffers in trainable layers, "
                     "no batch statistics)",
            received=f"incompatible layer(s) {', '.join(bad)}",
            fix="replace them by a supported layer (e.g. GroupNorm or LayerNorm for a "
                "normalisation, buffers moved to a parameter-free submodule)",
        )
    return fixed


def _check_positive(name: str, value: Any, *, example: str, allow_zero: bool = False) -> float:
    bound = ">=0" if allow_zero else ">0"
    return check_number(name, value, low=0.0, low_open=not allow_zero,
                        fix=f"pass {name}{bound}, e.g. {name}={example}")


def _is_empty_batch(x: Any, y: Any) -> bool:
    """Whether ``(x, y)`` is an empty ``(0, C, H, W)`` batch (with no label, if any)."""
    return (isinstance(x, Tensor) and x.dim() == 4 and x.shape[0] == 0
            and (y is None or (isinstance(y, Tensor) and y.numel() == 0)))


@contextmanager
def _quiet_opacus() -> Iterator[None]:
    """Silence the warnings a seeded, hooks-based Opacus run always emits."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        warnings.filterwarnings("ignore", message="Optimal order is the")
        yield


class DPSGDConfig(BaseModel):
    """Options of :class:`DPSGD` (see its Args).

    Attributes:
        noise_multiplier: the noise std over ``max_grad_norm`` (>= 0; 0 clips without
            noise, no formal guarantee).
        max_grad_norm: the bound each example's gradient is clipped to (> 0).
        delta: the delta of the ``(epsilon, delta)`` guarantee, in ``(0, 1)``.
        lr: the learning rate of the private Adam optimiser (> 0).
        poisson_sampling: draw batches by Poisson sampling (what the accountant assumes).
        secure_mode: a cryptographically secure RNG (needs ``torchcsprng``).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    noise_multiplier: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    max_grad_norm: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    delta: float = Field(default=1e-5, gt=0.0, lt=1.0)
    lr: float = Field(default=1e-3, gt=0.0, allow_inf_nan=False)
    poisson_sampling: bool = True
    secure_mode: bool = False

    @model_validator(mode="after")
    def _secure_rng_installed(self) -> DPSGDConfig:
        if self.secure_mode and importlib.util.find_spec("torchcsprng") is None:
            raise ValueError("secure_mode=True needs torchcsprng installed (it is missing)")
        return self


class DPSGD(CutDefense):
    """DP-SGD (Opacus) on the model split at ``cut``.

    Args:
        model: the classifier to defend; it is deep-copied (BatchNorm layers of the
            copy become GroupNorm, with a warning), never modified.
        cut: the number of compute blocks on the client, or a submodule name.
        seed: the defence's seed (mixed into the noise and sampling seeds of :meth:`fit`).
        **options: the fields of :class:`DPSGDConfig`:
        noise_multiplier: the noise std over ``max_grad_norm``; larger means a smaller
            epsilon. ``0`` clips without noise: no formal guarantee (``epsilon=inf``).
        max_grad_norm: the bound each example's gradient is clipped to.
        delta: the delta of the ``(epsilon, delta)`` guarantee, in ``(0, 1)``; keep
            it well below ``1 / len(train set)``.
        lr: the learning rate of the private Adam optimiser.
        poisson_sampling: draw batches by Poisson sampling (what the accountant
            assumes). With ``False`` the loader's own batches are used and the
            reported epsilon is the usual, only approximate, figure.
        secure_mode: use a cryptographically secure RNG for noise and sampling
            (needs ``torchcsprng``; runs are then not reproducible). Without it the
            seeded pseudo-RNG is fine for experiments, not for deployment.

    Raises:
        ConfigError: if an option is out of range (``.what`` names it).
        UnsupportedModelError: if a layer cannot be made Opacus-compatible.
        InvalidCutError: if ``cut`` does not exist.

    Reference:
        Abadi et al., "Deep Learning with Differential Privacy", ACM CCS 2016.
        Yousefpour et al., "Opacus: User-Friendly Differential Privacy Library in
        PyTorch", arXiv:2109.12298, 2021.

    Example:
        >>> import torch
        >>> from shieldsplit.models import SmallConvNet
        >>> dp = DPSGD(SmallConvNet(num_classes=2, image_size=8, width=4), cut=1,
        ...            noise_multiplier=2.0)
        >>> tuple(dp.client(torch.rand(2, 1, 8, 8)).activations.shape)
        (2, 4, 4, 4)
        >>> dp.options()["noise_multiplier"]
        2.0
    """

    name: ClassVar[str] = "dpsgd"
    # The range reaches down to 1e-4, far below any useful epsilon: a malicious federated
    # server's imprint attack already fails there or just above (docs/results/imprint.md),
    # so harden can bracket where the audit stops finding leakage, and compare that
    # boundary with riskcal's calibrated noise (docs/results/harden_*_federated-*.md).
    knob: ClassVar[Knob | None] = Knob(
        option="noise_multiplier", low=1e-4, high=8.0, scale="log",
        description="DP-SGD's noise multiplier (Gaussian noise over the clipping norm)")
    Config = DPSGDConfig
    config: DPSGDConfig

    rdp: Tensor
    fits: Tensor

    def __init__(
        self, model: nn.Module, *, cut: int | str = 2, seed: int = 0, **options: Any
    ) -> None:
        super().__init__(model, cut=cut, seed=seed, **options)
        # The accumulated Rényi-DP curve over RDP_ORDERS (composition adds curves).
        self.register_buffer("rdp", torch.zeros(len(RDP_ORDERS), dtype=torch.float64))
        # The number of completed fits (mixed into the noise seed of the next fit);
        # a buffer, so it is saved and loaded with the weights and the curve.
        self.register_buffer("fits", torch.zeros((), dtype=torch.long))
        # True only while fit() runs: Poisson sampling then yields empty batches.
        self._empty_batches_ok = False

    def adapt_model(self, model: nn.Module) -> nn.Module:
        """The copy made Opacus-compatible (:func:`make_dp_compatible`).

        Args:
            model: the user's model (not modified).

        Returns:
            A copy with BatchNorm swapped for GroupNorm where Opacus needs it.
        """
        return make_dp_compatible(model)

    def client_only_state(self) -> frozenset[str]:
        """The privacy accountant (``rdp`` curve, ``fits`` count) stays on its client."""
        return frozenset({"rdp", "fits"})

    def privacy(self) -> dict[str, float]:
        """The ``(epsilon, delta)`` spent by all fits so far (epsilon 0.0 before any fit)."""
        return {"epsilon": self._epsilon(), "delta": self.config.delta}

    def _epsilon(self) -> float:
        rdp = self.rdp.detach().cpu().double().numpy()
        if not rdp.any():
            return 0.0
        with _quiet_opacus():
            eps, _ = rdp_analysis.get_privacy_spent(orders=list(RDP_ORDERS), rdp=rdp,
                                                    delta=self.config.delta)
        return float(eps)

    def observe_federated(
        self, x: Tensor, y: Tensor, *, kind: Literal["gradient", "update"],
        seed: int | None = None, send: Callable[[nn.Module], nn.Module] | None = None,
        **local: Any,
    ) -> Observation:
        """What a federated server receives from a DP-SGD client training on ``(x, y)``.

        The client never sends an exact gradient (Abadi et al. 2016, Algorithm 1):
        on a copy of :meth:`federated_model` in eval mode it computes each example's
        gradient of the cross-entropy loss (``torch.func.vmap`` over examples), scales
        it to total L2 norm at most ``max_grad_norm`` (factor
        ``min(1, max_grad_norm / (norm + 1e-6))``, as Opacus's ``DPOptimizer``), sums
        the clipped gradients, adds ``N(0, (noise_multiplier * max_grad_norm)^2)``
        noise to every coordinate and divides by the batch size. That is what the
        server sees:

        * ``kind="gradient"`` (FedSGD): this noisy mean gradient of the whole batch.
        * ``kind="update"`` (FedAvg): ``weights_after - weights_before`` of the local
          protocol of :func:`~shieldsplit.observe.observe_update` (plain SGD
          at ``lr``, ``local_epochs`` passes in mini-batches of ``local_batch_size``,
          in order or reshuffled with ``seed``) where every step uses the noisy
          clipped gradient of its mini-batch (divided by the mini-batch's own size,
          so that without noise and clipping the update is exactly the plain one).

        The noise is drawn, parameter by parameter in ``named_parameters`` order and
        step by step, from a ``torch.Generator`` seeded with ``seed`` (the defence's
        seed when None), so the same seed gives the same observation. The defence's
        weights, ``.grad`` and mode are left unchanged. ``meta["dp"]`` records the
        public mechanism (``noise_multiplier``, ``max_grad_norm``).

        Args:
            x: ``(B, C, H, W)`` client images.
            y: ``(B,)`` int64 labels.
            kind: ``"gradient"`` (one noisy step) or ``"update"`` (noisy local SGD).
            seed: seeds the noise (None: the defence's seed); for an update, an int
                also reshuffles the mini-batches each epoch, None keeps them in order
                (as :func:`~shieldsplit.observe.observe_update`).
            **local: ``local_epochs`` (default 5), ``local_batch_size`` (8) and ``lr``
                (0.1) of an update; ignored for a gradient.

        Returns:
            An :class:`~shieldsplit.attacks.base.Observation`: kind ``"gradient"``
            with ``gradients``, or kind ``"update"`` with ``update`` and ``meta``
            holding ``local_epochs``, ``local_batch_size`` and ``lr``; both with
            ``meta["dp"]``. No labels.

        Raises:
            ConfigError: on an unknown ``kind``, an unknown or bad local option or
                a bad ``seed``.
            InputShapeError: if ``x`` is not a batch the model accepts.
            NonFiniteInputError: if ``x`` holds NaN or infinity.
            LabelError: if ``y`` has the wrong dtype, shape or range.

        Example:
            >>> import torch
            >>> from shieldsplit.models import SmallConvNet
            >>> dp = DPSGD(SmallConvNet(num_classes=2, image_size=8, width=4), cut=1,
            ...            noise_multiplier=1.0, max_grad_norm=0.5)
            >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 1, 0])
            >>> obs = dp.observe_federated(x, y, kind="gradient", seed=3)
            >>> obs.kind, obs.batch_size, obs.meta["dp"]["max_grad_norm"]
            ('gradient', 4, 0.5)
            >>> again = dp.observe_federated(x, y, kind="gradient", seed=3)
            >>> all(torch.equal(obs.gradients[n], again.gradients[n]) for n in obs.gradients)
            True
            >>> upd = dp.observe_federated(x, y, kind="update", local_epochs=2,
            ...                            local_batch_size=2, lr=0.1)
            >>> upd.kind, upd.meta["local_epochs"], upd.meta["local_batch_size"]
            ('update', 2, 2)
        """
        from shieldsplit.observe import functional_victim, minibatch_schedule
        from shieldsplit.wire import Observation

        if kind not in ("gradient", "update"):
            raise ConfigError.build(
                what="kind", expected="'gradient' or 'update'", received=repr(kind),
                fix='pass kind="gradient" (FedSGD) or kind="update" (FedAvg)',
            )
        unknown = sorted(set(local) - {"local_epochs", "local_batch_size", "lr"})
        if unknown:
            raise ConfigError.build(
                what="local", expected="only local_epochs, local_batch_size and lr",
                received=", ".join(unknown), fix="drop the unknown option(s)",
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError.build(
                what="seed", expected="None or an int", received=repr(seed),
                fix="pass seed=None or an int such as seed=0",
            )
        if kind == "update":
            local_epochs = check_int("local_epochs", local.get("local_epochs", 5), low=1,
                                     fix="pass local_epochs>=1")
            local_batch_size = check_int("local_batch_size", local.get("local_batch_size", 8),
                                         low=1, fix="pass local_batch_size>=1")
            lr = _check_positive("lr", local.get("lr", 0.1), example="0.1")
        model = self.sent_model(send)  # a malicious server's model, if it sent one
        clone, params, frozen, x = functional_victim(model, x, y)
        y = y.to(x.device)
        device = next(iter(params.values())).device
        generator = torch.Generator(device=device).manual_seed(
            int(self.seed if seed is None else seed))
        dp_meta = {"noise_multiplier": self.config.noise_multiplier,
                   "max_grad_norm": self.config.max_grad_norm}
        image_shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
        if kind == "gradient":
            grads = self._noisy_gradient(clone, params, frozen, x, y, generator)
            return Observation(kind="gradient", batch_size=int(x.shape[0]),
                               image_shape=image_shape, gradients=grads, meta={"dp": dp_meta})
        schedule = minibatch_schedule(
            int(x.shape[0]), local_epochs=local_epochs, local_batch_size=local_batch_size,
            shuffle=seed is not None, seed=0 if seed is None else seed,
        )
        current = dict(params)
        for idx in schedule:
            g = self._noisy_gradient(clone, current, frozen, x[idx], y[idx], generator)
            current = {n: current[n] - float(lr) * g[n] for n in current}
        return Observation(
            kind="update", batch_size=int(x.shape[0]), image_shape=image_shape,
            update={n: (current[n] - params[n]).detach() for n in params},
            meta={"local_epochs": local_epochs, "local_batch_size": local_batch_size,
                  "lr": float(lr), "dp": dp_meta},
        )

    def _noisy_gradient(
        self, model: nn.Module, params: dict[str, Tensor], frozen: dict[str, Tensor],
        x: Tensor, y: Tensor, generator: torch.Generator,
    ) -> dict[str, Tensor]:
        """The DP-SGD aggregate of one batch: clip per example, sum, add noise, divide by B."""
        from shieldsplit.observe import loss_gradients

        def one(xi: Tensor, yi: Tensor) -> dict[str, Tensor]:
            return loss_gradients(model, params, frozen, xi.unsqueeze(0), yi.unsqueeze(0))

        with torch.no_grad():
            per_example = vmap(one)(x, y)
            norms = torch.stack([g.reshape(len(g), -1).norm(2, dim=-1)
                                 for g in per_example.values()], dim=1).norm(2, dim=1)
            factor = (self.config.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
            std = self.config.noise_multiplier * self.config.max_grad_norm
            out = {}
            for name, g in per_example.items():
                summed = torch.einsum("i,i...", factor.to(g.dtype), g)
                if std > 0:
                    summed = summed + torch.normal(mean=0.0, std=std, size=summed.shape,
                                                   generator=generator, device=summed.device,
                                                   dtype=summed.dtype)
                out[name] = (summed / x.shape[0]).detach()
        return out

    def client(self, x: Tensor, y: Tensor | None = None) -> ClientMessage:
        """As :meth:`CutDefense.client`; during :meth:`fit` an empty batch is allowed.

        Poisson sampling draws empty batches, and DP-SGD must still take their
        (noise-only) step for the accounting to hold; elsewhere an empty batch
        raises :class:`~shieldsplit.errors.InputShapeError` as for any defence.
        """
        if self._empty_batches_ok and _is_empty_batch(x, y):
            return ClientMessage(activations=self.transform(self.head(x)), labels=y)
        return super().client(x, y)

    def _private_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        # Every batch (labels included: forward() sees no label) is checked before
        # its forward pass, so a bad batch raises a typed error, not torch's
        # IndexError; fit() then rolls the weights back. An empty Poisson batch
        # (Opacus builds it with the dataset's shapes) is allowed.
        if not _is_empty_batch(x, y):
            check_batch(x, y, num_classes=self.num_classes,
                        in_channels=getattr(self, "in_channels", None))
        logits = model(x)
        if y.numel() == 0:
            # An empty Poisson batch: the step still happens (noise only) and is
            # accounted for; a mean over no example would be NaN.
            return logits.sum() * 0.0, logits
        return F.cross_entropy(logits, y), logits

    def _check_loader(self, train_loader: Any) -> DataLoader:
        if not isinstance(train_loader, DataLoader):
            raise ConfigError.build(
                what="train_loader",
                expected="a torch.utils.data.DataLoader (Opacus resamples its dataset)",
                received=type(train_loader).__name__,
                fix="wrap the data in DataLoader(dataset, batch_size=...)",
            )
        if isinstance(train_loader.dataset, IterableDataset):
            raise ConfigError.build(
                what="train_loader", expected="a DataLoader over a map-style dataset",
                received="an IterableDataset",
                fix="use a dataset with __len__ and __getitem__ (e.g. TensorDataset)",
            )
        if len(train_loader) == 0:
            raise EmptyDataError.build(
                what="train_loader", expected="at least one batch", received="no batch",
                fix="check the data set",
            )
        n = len(train_loader.dataset)  # type: ignore[arg-type]
        if self.config.delta >= 1.0 / n:
            message = (f"DP-SGD: delta={self.config.delta:g} is not below 1/n = {1.0 / n:g} "
                       f"for n={n} "
                       "training examples; such a delta allows leaking whole examples "
                       "(pass a delta well below 1/n, e.g. 0.1/n)")
            logger.warning(message)
            warnings.warn(message, UserWarning, stacklevel=3)
        return train_loader

    def _clean_up(self) -> None:
        for m in self.modules():
            for attr in _MODULE_ATTRS:
                if attr in vars(m):
                    delattr(m, attr)
        for p in self.parameters():
            for attr in _PARAM_ATTRS:
                if hasattr(p, attr):
                    delattr(p, attr)
            p.grad = None

    def fit(
        self,
        train_loader: Iterable[tuple[Tensor, Tensor]],
        *,
        epochs: int = 5,
        val_loader: Iterable[tuple[Tensor, Tensor]] | None = None,
        seed: int = 0,
        progress: bool = True,
        restore_best: bool = False,
    ) -> DPHistory:
        """Train client and server end to end with DP-SGD (Opacus, Adam, RDP accounting).

        The same defence, seed and data give the same history and weights: the
        noise and the Poisson sampler draw from generators seeded by ``seed``, the
        defence's seed and the number of earlier fits (so a second fit draws fresh
        noise, also after :meth:`save` and :meth:`~shieldsplit.defenses.base.Defense.load`:
        the count is a buffer), unless ``secure_mode`` is on.

        If the fit raises, every weight and buffer (privacy curve and fit count
        included) is restored to its value before the fit and the error is
        re-raised: the failed fit's noisy steps are discarded, so it spends no
        privacy and ``privacy()`` is unchanged.

        Args:
            train_loader: any form of docs/data.md; a ``DataLoader`` over a map-style
                dataset sets the sample rate ``1 / len(train_loader)`` with its batch size
                (other forms get batches of 64).
            epochs: passes over the data.
            val_loader: optional validation loader; it must be disjoint from the
                training set (the accountant covers only the training examples, and
                ``restore_best`` selects on this data).
            seed: seeds dropout, noise and sampling.
            progress: show a progress bar.
            restore_best: keep the weights of the best validation epoch.

        Returns:
            The per-epoch history with the privacy spent so far.

        Raises:
            ConfigError: if ``train_loader`` is not a DataLoader over a map-style
                dataset, or ``epochs < 1``.
            EmptyDataError: if the loader is empty.
            InputShapeError: if a batch's images are not a non-empty 4-D float tensor.
            NonFiniteInputError: if a batch's images hold NaN or infinity.
            LabelError: if a batch's labels are not 1-D integers in
                ``[0, num_classes)`` (the weights are rolled back first).
        """
        seed = check_seed(seed)
        loader = self._check_loader(self.contract(train_loader, seed=seed))
        if val_loader is not None:
            val_loader = self.contract(val_loader, seed=seed, shuffle=False, what="val_loader")
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise ConfigError.build(
                what="epochs", expected="an int >= 1", received=epochs, fix="pass epochs=1 or more"
            )
        # A fit that raises anything (Opacus's own errors too) is rolled back.
        self._empty_batches_ok = True
        try:
            with restored_on_error(self, errors=(BaseException,)):
                return self._fit(loader, epochs=epochs, val_loader=val_loader, seed=seed,
                                 progress=progress, restore_best=restore_best)
        finally:
            self._empty_batches_ok = False

    def _fit(
        self,
        loader: DataLoader,
        *,
        epochs: int,
        val_loader: Iterable[tuple[Tensor, Tensor]] | None,
        seed: int,
        progress: bool,
        restore_best: bool,
    ) -> DPHistory:
        """The body of :meth:`fit` (which rolls the defence back if this raises)."""
        self.train()
        device = next(self.parameters()).device
        stream = torch.Generator().manual_seed(int(seed))
        stream.manual_seed(int(torch.randint(2**62, (1,), generator=stream)) + int(self.seed)
                           + 1_000_003 * int(self.fits))
        noise_seed, sample_seed = (int(v) for v in torch.randint(2**62, (2,), generator=stream))
        optimizer = torch.optim.Adam(self.parameters(), lr=self.config.lr)
        private: GradSampleModule | None = None
        with _quiet_opacus():
            engine = PrivacyEngine(accountant="rdp", secure_mode=self.config.secure_mode)
            try:
                private, private_opt, private_loader = engine.make_private(
                    module=self, optimizer=optimizer, data_loader=loader,
                    noise_multiplier=self.config.noise_multiplier,
                    max_grad_norm=self.config.max_grad_norm,
                    poisson_sampling=self.config.poisson_sampling,
                    noise_generator=None if self.config.secure_mode else
                    torch.Generator(device=device).manual_seed(noise_seed),
                )
                sampler = getattr(private_loader, "batch_sampler", None)
                cfg = self.config
                if cfg.poisson_sampling and not cfg.secure_mode and sampler is not None \
                        and hasattr(sampler, "generator"):
                    sampler.generator = torch.Generator().manual_seed(sample_seed)
                plain = fit_plain(
                    private, private_loader, epochs=epochs, val_loader=val_loader, seed=seed,
                    progress=progress, restore_best=restore_best,
                    loss_fn=self._private_loss, optimizer=(private_opt, None),
                )
            finally:
                if private is not None:
                    private._close()
                self._clean_up()
                self.eval()
        self.fits += 1
        history = engine.accountant.history
        for noise, rate, steps in history:
            curve = rdp_analysis.compute_rdp(q=rate, noise_multiplier=noise, steps=steps,
                                             orders=list(RDP_ORDERS))
            self.rdp += torch.as_tensor(curve, dtype=torch.float64, device=self.rdp.device)
        epsilon = self._epsilon()
        logger.info("DP-SGD fit: epsilon=%.4g at delta=%g after %d step(s)", epsilon,
                    self.config.delta, sum(int(s) for _, _, s in history))
        return DPHistory(
            **plain.model_dump(), epsilon=epsilon, delta=self.config.delta,
            noise_multiplier=self.config.noise_multiplier, max_grad_norm=self.config.max_grad_norm,
            sample_rate=1.0 / len(loader), steps=sum(int(s) for _, _, s in history),
        )


register_defense(DPSGD.name, DPSGD)

__all__ = ["DPSGD", "RDP_ORDERS", "DPHistory", "DPSGDConfig", "make_dp_compatible"]
