"""SplitShield: any PyTorch image classifier as a PGSL split-learning pair.

Proximal Gradient Split Learning (Khowaja et al., IEEE TNSE 2022): the client
attacks its own images on purpose (JSMA-style few-pixel perturbation guided
by a Captum saliency map), pixel-unshuffles them with the saliency map
concatenated, and runs the first ``cut`` blocks of the model. Only the
activations cross the network. The server up-samples them, recovers a clean
version with accelerated proximal gradient robust PCA, fuses both (conv-sum)
and trains three streams: attacked, fused and recovered. Only the fused
stream's gradient goes back to the client. Predictions fuse the three
streams' scores by adaptive weighted averaging.

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

import contextlib
import copy
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from shieldsplit._core.io import atomic_torch_save, load_checkpoint
from shieldsplit._core.validate import (
    build_config,
    check_batch,
    check_int,
    check_labels,
    check_loader,
    check_seed,
)
from shieldsplit.cutting import COMPUTE_TYPES, split_model
from shieldsplit.datacontract import Normalized, as_loader, check_model, probe_model
from shieldsplit.defenses.base import Defense, Surface, register_defense
from shieldsplit.defenses.pgsl.config import PGSLConfig
from shieldsplit.defenses.pgsl.exported import ExportedShield
from shieldsplit.defenses.pgsl.fusion import (
    ConvSumFusion,
    adaptive_weights,
    class_score_sums,
    max_class_score,
    weighted_average,
)
from shieldsplit.defenses.pgsl.perturb import budget_count, jsma_perturb
from shieldsplit.defenses.pgsl.recovery import ProximalRecovery
from shieldsplit.defenses.pgsl.saliency import class_gradient, jsma_saliency, normalised_heat
from shieldsplit.defenses.pgsl.unshuffle import SubPixelUpsample, assemble
from shieldsplit.errors import (
    ConfigError,
    EmptyDataError,
    InputShapeError,
    StateError,
    UnsupportedModelError,
)
from shieldsplit.training import History, eval_mode, fit_epochs, make_optimizer, restored_on_error
from shieldsplit.wire import ClientMessage, EpochSummary, ServerGradient, StreamScores

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "shieldsplit.SplitShield/1"
_PROBE_SIZES = (28, 32, 8, 16, 64, 224)


class EpochRecord(BaseModel):
    """One epoch of :meth:`SplitShield.fit`.

    Attributes:
        epoch: 1-based epoch number.
        train_loss: mean cross-entropy per stream.
        train_accuracy: accuracy per stream on the (perturbed) training batches.
        val_accuracy: accuracy per stream and of the decision fusion (``"decision"``), if a
            validation loader was given.
        stream_weights: the adaptive decision weights after this epoch.
        seconds: wall time of the epoch (the only field that varies between equal seeds).
    """

    model_config = ConfigDict(extra="forbid")

    epoch: int
    train_loss: dict[str, float]
    train_accuracy: dict[str, float]
    val_accuracy: dict[str, float] | None
    stream_weights: dict[str, float]
    seconds: float


class FitHistory(History):
    """What :meth:`SplitShield.fit` returns.

    Attributes:
        seed: the seed of the run.
        cut: the block index of the split.
        config: the PGSL configuration.
        epochs: one record per epoch.
        best_epoch: the epoch whose weights were kept (``restore_best``), else None.
    """

    cut: int | str
    config: PGSLConfig
    epochs: list[EpochRecord]


class _Probe(nn.Module):
    """Client-side linear probe: a local classifier for the saliency map."""

    def __init__(self, features: int, num_classes: int, spatial: bool) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1) if spatial else nn.Identity()
        self.linear = nn.Linear(features, num_classes)

    def forward(self, a: Tensor) -> Tensor:
        return self.linear(torch.flatten(self.pool(a), 1))


@contextlib.contextmanager
def _frozen_buffers(module: nn.Module) -> Iterator[None]:
    """Restore every buffer (BatchNorm running statistics) on exit."""
    saved = {name: buf.clone() for name, buf in module.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buf in module.named_buffers():
                buf.copy_(saved[name])


def _first_compute(gm: nn.Module) -> tuple[str, nn.Module] | None:
    graph = getattr(gm, "graph", None)
    if graph is None:
        return None
    modules = dict(gm.named_modules())
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(str(node.target)), COMPUTE_TYPES):
            return str(node.target), modules[str(node.target)]
    return None


def _replace_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, new)


class SplitShield(Defense):
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
    config: PGSLConfig

    def __init__(
        self,
        model: nn.Module,
        *,
        cut: int | str = 2,
        config: PGSLConfig | Mapping[str, Any] | None = None,
        input_shape: tuple[int, int, int] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_model(model)  # a module with float32 weights (a float64 one: say it is the dtype)
        self.config = _as_config(config)
        _check_normalized(model, self.config)
        self.seed = seed
        parts = split_model(model, cut)
        self.cut = parts.cut
        self.valid_cuts = parts.valid_cuts
        # Unregistered copies: the architecture template (for unwrap) and the plain
        # client part (for the shapes the server expects). Neither is trained.
        self.__dict__["_template"] = copy.deepcopy(model).eval()
        self.__dict__["_plain_head"] = copy.deepcopy(parts.head).eval()
        first = _first_compute(parts.head)
        self.in_channels: int | None = (
            first[1].in_channels if first and isinstance(first[1], nn.Conv2d) else None
        )
        if input_shape is not None:
            self.in_channels = input_shape[0]
        self.input_shape = input_shape
        activation, self.num_classes = self._probe_shapes()
        #: (dims, channels) of what the client sends: server() checks a message against it.
        self.wire_layout = (activation.dim(), int(activation.shape[1]))
        spatial = activation.dim() == 4
        cfg = self.config
        needs_image_head = cfg.unshuffle.enabled or (cfg.saliency.enabled and cfg.saliency.concat)
        if needs_image_head and not spatial:
            raise UnsupportedModelError.build(
                what="cut",
                expected="a cut whose activations are 4-D feature maps when unshuffle or "
                "saliency concatenation is on",
                received=f"activations of shape {tuple(activation.shape)} at cut={self.cut}",
                fix="cut before the Flatten/Linear layers, or switch unshuffle and "
                "saliency.concat off in PGSLConfig",
            )
        channels = int(activation.shape[1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head: nn.Module = parts.head
            if needs_image_head:
                head = self._adapt_first_conv(head)
            self.head = head
            self.probe = (
                _Probe(channels, self.num_classes, spatial) if cfg.saliency.enabled else None
            )
            self.upsample = (
                SubPixelUpsample(channels, cfg.unshuffle.factor, cfg.unshuffle.upsample_kernel)
                if cfg.unshuffle.enabled else None
            )
            r = cfg.recovery
            self.recovery = (
                ProximalRecovery(
                    mu=r.mu, lam=r.lam, max_iter=r.max_iter, tol=r.tol, matrix=r.matrix,
                    start=r.start,
                )
                if r.enabled
                else None
            )
            self.fusion = (
                ConvSumFusion(channels, cfg.fusion.kernel_size) if cfg.fusion.enabled else None
            )
        self.streams: tuple[str, ...] = cfg.streams()
        self.tails = nn.ModuleDict(
            {name: (parts.tail if name == "fused" else copy.deepcopy(parts.tail))
             for name in self.streams}
        )
        initial = dict(zip(("recovered", "fused", "attacked"), cfg.decision.weights, strict=True))
        start = torch.tensor([initial[s] for s in self.streams])
        if cfg.decision.enabled and float(start.sum()) <= 0:
            raise ConfigError.build(
                what="config.decision.weights",
                expected=f"a positive weight for at least one present stream {self.streams}",
                received=cfg.decision.weights,
                fix="give the present streams a positive initial weight",
            )
        self.register_buffer("stream_weights", start / start.sum().clamp_min(1e-12))

    # ------------------------------------------------------------------ setup
    def _probe_shapes(self) -> tuple[Tensor, int]:
        """Dry-run the plain model to learn the activation shape and class count."""
        template, plain_head = self.__dict__["_template"], self.__dict__["_plain_head"]
        channels = self.in_channels or 1
        sizes = [self.input_shape[1:]] if self.input_shape else [(s, s) for s in _PROBE_SIZES]
        errors = []
        for size in sizes:
            x = torch.zeros(2, channels, *size, device=_device_of(template))
            try:
                with torch.no_grad():
                    activation, logits = plain_head(x), template(x)
            except Exception as exc:  # try the next size
                errors.append(f"{size}: {type(exc).__name__}")
                continue
            if not isinstance(logits, Tensor) or logits.dim() != 2:
                raise UnsupportedModelError.build(
                    what="model",
                    expected="a classifier returning (N, classes) logits",
                    received=f"output {type(logits).__name__} of shape "
                    f"{tuple(getattr(logits, 'shape', ()))}",
                    fix="wrap the model so that forward returns a 2-D logits tensor",
                )
            if not isinstance(activation, Tensor):
                raise UnsupportedModelError.build(
                    what="cut", expected="a single tensor at the cut",
                    received=type(activation).__name__, fix="pick another cut",
                )
            return activation, int(logits.shape[1])
        raise UnsupportedModelError.build(
            what="input_shape",
            expected="an input size the model accepts",
            received=f"none of the tried sizes worked ({'; '.join(errors)})",
            fix="pass input_shape=(C, H, W)",
        )

    def _client_channels(self) -> int:
        cfg = self.config
        c = self.in_channels or 1
        if cfg.unshuffle.enabled:
            c *= cfg.unshuffle.factor**2
        if cfg.saliency.enabled and cfg.saliency.concat:
            c += 1
        return c

    def _adapt_first_conv(self, head: nn.Module) -> nn.Module:
        first = _first_compute(head)
        if first is None or not isinstance(first[1], nn.Conv2d):
            raise UnsupportedModelError.build(
                what="model",
                expected="a Conv2d as the first compute layer when unshuffle or saliency "
                "concatenation is on",
                received=type(first[1]).__name__ if first else "no compute layer before the cut",
                fix="switch unshuffle and saliency.concat off in PGSLConfig",
            )
        name, conv = first
        if not isinstance(conv, nn.Conv2d):  # narrowed above; keeps mypy informed
            raise UnsupportedModelError.build(
                what="model", expected="a Conv2d", received=type(conv).__name__,
                fix="switch unshuffle and saliency.concat off in PGSLConfig",
            )
        new = nn.Conv2d(
            self._client_channels(), conv.out_channels, conv.kernel_size,  # type: ignore[arg-type]
            stride=conv.stride, padding=conv.padding, dilation=conv.dilation,  # type: ignore[arg-type]
            groups=1, bias=conv.bias is not None, padding_mode=conv.padding_mode,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        _replace_submodule(head, name, new)
        return head

    # ------------------------------------------------------------- validation
    def _check_inputs(self, x: Any, y: Any = None, *, unit_range: bool = True) -> None:
        """The data contract on one batch (docs/data.md): shape, [0, 1] pixels (not for
        ``forward``, the plain module call), labels, and, once per image shape, a probe
        of the wrapped model (a wrong image size is a typed error, not torch's crash
        deep in the server)."""
        check_batch(x, y, num_classes=self.num_classes, in_channels=self.in_channels,
                    unit_range=unit_range)
        shape = tuple(int(s) for s in x.shape[1:])
        known: set[tuple[int, ...]] = self.__dict__.setdefault("_probed_shapes", set())
        if shape not in known:
            template = self.__dict__["_template"]
            probe_model(template, torch.zeros(1, *shape, device=_device_of(template)), what="x")
            known.add(shape)

    def _prepare(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Move a checked batch to the shield's device and floating dtype."""
        ref = next(iter(self.parameters()), None)
        device = ref.device if ref is not None else x.device
        dtype = ref.dtype if ref is not None else x.dtype
        return x.to(device=device, dtype=dtype), (y.to(device) if y is not None else None)

    # ----------------------------------------------------------------- client
    def _assemble(self, images: Tensor, saliency: Tensor | None) -> Tensor:
        """Step (c): unshuffle the images and concatenate the saliency channel."""
        cfg = self.config
        return assemble(images, saliency, cfg.unshuffle.factor if cfg.unshuffle.enabled else 0,
                        cfg.unshuffle.pad, cfg.saliency.enabled and cfg.saliency.concat)

    def client_features(self, images: Tensor, saliency: Tensor | None = None) -> Tensor:
        """The client's layers on ``images`` after step (c): what leaves the client for
        given (already attacked) images and saliency map, with gradients.

        A white-box attacker who knows the client's weights inverts this map
        (``split-white-box``, ``adaptive-split``).

        Args:
            images: ``(B, C, H, W)`` images.
            saliency: the one-channel map ``(B, 1, H, W)``; None sends zeros.

        Returns:
            The activations at the cut.
        """
        return self.head(self._assemble(images, saliency))

    def _probe_features(self, images: Tensor) -> Tensor:
        """What the client's probe reads: the client part on the clean images, with the
        saliency channel zeroed (the map does not exist yet when the probe is asked).
        The probe is trained and queried on exactly this input."""
        return self.client_features(images, None)

    def _saliency(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """Step (a): JSMA scores and the normalised one-channel map.

        The saliency is taken through the client's own part and its local probe,
        so no activation of the clean image ever leaves the client. Its target is the
        probe's prediction (``saliency.target="predicted"``, the default), or, with
        ``"label"`` (the paper's eq. 1), the true label when one is given.
        """
        probe = self.probe
        if probe is None:  # config validation guarantees it exists here
            raise StateError.build(what="probe", expected="saliency on", received="off", fix="-")

        def local_proba(images: Tensor) -> Tensor:
            return probe(self._probe_features(images)).softmax(dim=-1)

        with _frozen_buffers(self.head):
            if y is None or self.config.saliency.target == "predicted":
                with torch.no_grad():
                    y = local_proba(x).argmax(dim=-1)
            grad = class_gradient(local_proba, x, y, method=self.config.saliency.method)
        scores = jsma_saliency(grad)
        return scores, normalised_heat(scores)

    def _client_forward(self, x: Tensor, y: Tensor | None) -> ClientMessage:
        cfg = self.config
        heat = None
        images = x
        if cfg.saliency.enabled:
            scores, heat = self._saliency(x, y)
            if cfg.perturb.enabled:
                p = cfg.perturb
                images = jsma_perturb(
                    x, scores, pixel_budget=p.pixel_budget, strength=p.strength, clip=p.clip
                ).adversarial
        activations = self.client_features(images, heat)
        return ClientMessage(
            activations=activations, target_size=self._target_size(x), labels=y
        )

    def _target_size(self, x: Tensor) -> tuple[int, int] | None:
        if self.upsample is None:
            return None
        cache: dict[tuple[int, ...], tuple[int, int]] = self.__dict__.setdefault("_sizes", {})
        key = tuple(x.shape[1:])
        if key not in cache:
            plain = self.__dict__["_plain_head"].to(x.device)
            with torch.no_grad():
                out = plain(torch.zeros(1, *key, device=x.device, dtype=x.dtype))
            cache[key] = (int(out.shape[-2]), int(out.shape[-1]))
        return cache[key]

    def client(self, x: Tensor, y: Tensor | None = None) -> ClientMessage:
        """Run the client side: everything that happens before the network.

        Args:
            x: image batch ``(N, C, H, W)``.
            y: labels; used as the saliency target and sent along for training.
                Without labels the probe's prediction is the saliency target.

        Returns:
            The typed message that crosses the network (detached activations).

        Raises:
            InputShapeError, NonFiniteInputError, LabelError: on bad input.
        """
        self._check_inputs(x, y)
        x, y = self._prepare(x, y)
        with torch.no_grad():
            msg = self._client_forward(x, y)
        return ClientMessage(msg.activations.detach(), msg.target_size, msg.labels)

    # ----------------------------------------------------------------- server
    def _server_forward(self, msg: ClientMessage) -> dict[str, Tensor]:
        a = msg.activations
        u = self.upsample(a, msg.target_size) if self.upsample is not None else a
        out: dict[str, Tensor] = {}
        recovered = None
        if self.recovery is not None:
            # Recover the activations as received, then bring them to the server's
            # resolution with the same up-sampler; no gradient flows through either.
            with torch.no_grad():
                recovered = self.recovery(a.detach())
                if self.upsample is not None:
                    recovered = self.upsample(recovered, msg.target_size)
            out["recovered"] = self.tails["recovered"](recovered)
        if self.fusion is not None and recovered is not None:
            out["fused"] = self.tails["fused"](self.fusion(u, recovered))
            out["attacked"] = self.tails["attacked"](u.detach())
        else:
            out["fused"] = self.tails["fused"](u)
        return out

    def server_streams(self, msg: ClientMessage) -> dict[str, Tensor]:
        """Run the server on a client message.

        Args:
            msg: what :meth:`client` produced.

        Returns:
            Logits per stream (``recovered``, ``fused``, ``attacked`` where present).
        """
        return self._guarded_server_forward(msg)

    def _check_message(self, msg: Any) -> Tensor:
        """The message's activations, if they have this shield's client's layout."""
        if not isinstance(msg, ClientMessage):
            raise InputShapeError.build(
                what="msg", expected="a ClientMessage from SplitShield.client",
                received=type(msg).__name__, fix="call shield.server(shield.client(x))",
            )
        dims, channels = self.wire_layout
        a = msg.activations
        if not isinstance(a, Tensor) or a.dim() != dims or a.shape[1] != channels:
            raise InputShapeError.build(
                what="msg.activations",
                expected=f"a {dims}-D tensor with {channels} channels (what this shield's "
                "client sends)",
                received=f"{type(a).__name__} of shape {tuple(getattr(a, 'shape', ()))}",
                fix="pass the message of this shield's client: shield.server(shield.client(x))",
            )
        return a

    def _guarded_server_forward(self, msg: ClientMessage) -> dict[str, Tensor]:
        """The server's streams on a checked message; a shape torch cannot run is typed."""
        a = self._check_message(msg)
        try:
            return self._server_forward(msg)
        except RuntimeError as exc:
            raise InputShapeError.build(
                what="msg.activations", expected="activations of this shield's client",
                received=f"shape {tuple(a.shape)}, on which the server failed "
                f"({str(exc).strip().splitlines()[0][:160] if str(exc).strip() else 'error'})",
                fix="pass the message of this shield's client: shield.server(shield.client(x))",
            ) from exc

    def server(self, msg: ClientMessage) -> Tensor:
        """The fused stream's logits for a client message.

        Args:
            msg: what :meth:`client` produced.

        Returns:
            ``(N, classes)`` logits of the fused stream.
        """
        return self.server_streams(msg)["fused"]

    def forward(self, x: Tensor) -> Tensor:
        """Client then server in one call: the fused stream's logits.

        With every PGSL step off this is exactly the wrapped model's output.

        Args:
            x: image batch ``(N, C, H, W)``.

        Returns:
            ``(N, classes)`` logits.
        """
        self._check_inputs(x, unit_range=False)
        x, _ = self._prepare(x)
        return self._server_forward(self._client_forward(x, None))["fused"]

    # -------------------------------------------------------------- inference
    @torch.no_grad()
    def predict_streams(self, x: Tensor) -> StreamScores:
        """Class probabilities of every stream (eval mode).

        Args:
            x: image batch ``(N, C, H, W)``.

        Returns:
            Per-stream softmax scores.
        """
        with eval_mode(self):
            logits = self.server_streams(self.client(x))
        probs = {k: v.softmax(dim=-1) for k, v in logits.items()}
        return StreamScores(
            fused=probs["fused"], recovered=probs.get("recovered"), attacked=probs.get("attacked")
        )

    @torch.no_grad()
    def predict_proba(self, x: Tensor) -> Tensor:
        """Decision-level fusion of the streams (eq. 9), or the fused stream alone.

        Args:
            x: image batch ``(N, C, H, W)`` in ``[0, 1]`` (docs/data.md).

        Returns:
            ``(N, classes)`` probabilities.

        Raises:
            InputShapeError, NonFiniteInputError, ConfigError: images that break the data
                contract of docs/data.md (size, channels, ``[0, 1]`` range).
        """
        return self._decide(self.predict_streams(x).as_dict())

    def _decide(self, probs: dict[str, Tensor]) -> Tensor:
        if not self.config.decision.enabled:
            return probs["fused"]
        stacked = torch.stack([probs[s] for s in self.streams])
        return weighted_average(stacked, self._weights())

    def _weights(self) -> Tensor:
        weights = self.stream_weights
        if not isinstance(weights, Tensor):  # a registered buffer; narrows the type
            raise StateError.build(what="stream_weights", expected="a tensor",
                                   received=type(weights).__name__, fix="report this bug")
        return weights

    # --------------------------------------------------------------- training
    def fit(
        self,
        train_loader: Iterable[tuple[Tensor, Tensor]],
        *,
        epochs: int = 5,
        val_loader: Iterable[tuple[Tensor, Tensor]] | None = None,
        seed: int = 0,
        progress: bool = True,
        restore_best: bool = False,
        server: SplitServer | None = None,
    ) -> FitHistory:
        """Train client and server with the PGSL protocol.

        Each step: the client sends its activations; the server trains every
        stream on them and returns only the fused stream's gradient; the
        client back-propagates it (and trains its local saliency probe). After
        each epoch the decision weights are re-estimated from the epoch's
        training scores (eqs. 10-11), so no validation data is used for them.

        Args:
            train_loader: labelled images in any form of docs/data.md (a DataLoader
                keeps its sampler).
            epochs: passes over the data.
            val_loader: optional; its accuracy per stream is recorded.
            seed: seeds dropout, the loader's shuffling (when it uses the global
                generator) and everything else random; the same seed on the same
                data gives the same history.
            progress: show a progress bar.
            restore_best: with a ``val_loader``, end with the weights of the epoch with
                the best validation accuracy of the decision fusion (selection on
                validation data only).
            server: the server side to train against; None trains this shield's own
                server part in this process (:meth:`server_half`). Another object (a
                server in another process, ``shieldsplit.adapters.split_process``)
                receives exactly the messages an in-process server would, and this
                shield then trains its client part only.

        Returns:
            The per-epoch history.

        Raises:
            EmptyDataError: if the loader yields no batch.
            InputShapeError, NonFiniteInputError, LabelError: on a bad batch;
                the shield's weights are restored to what they were before the call.
        """
        epochs = check_int("epochs", epochs, low=1, fix="pass epochs=1 or more")
        seed = check_seed(seed)
        if server is not None and (val_loader is not None or restore_best):
            raise ConfigError.build(
                what="server", expected="no val_loader and no restore_best with a remote "
                "server (validation runs the server's streams, which live there)",
                received=type(server).__name__, fix="drop val_loader and restore_best",
            )
        check_loader(train_loader, "train_loader")
        train_loader = self._contract(train_loader, seed=seed, shuffle=True, what="train_loader")
        if val_loader is not None:
            check_loader(val_loader, "val_loader")
            val_loader = self._contract(val_loader, seed=seed, shuffle=False, what="val_loader")
        with restored_on_error(self):
            return self._fit(train_loader, epochs, val_loader, seed, progress, restore_best,
                             server)

    def _contract(self, data: Any, *, seed: int, shuffle: bool,
                  what: str) -> Iterable[tuple[Tensor, Tensor]]:
        """Any form of docs/data.md as checked batches, the wrapped model probed first."""
        return as_loader(data, seed=seed, shuffle=shuffle, model=self.__dict__["_template"],
                         num_classes=self.num_classes, in_channels=self.in_channels, what=what)

    def client_parameters(self) -> list[nn.Parameter]:
        """The client's trainable parameters: its layers before the cut and its probe.

        Returns:
            The parameters the client's optimiser updates (the server never sees them).
        """
        params = list(self.head.parameters())
        if self.probe is not None:
            params += list(self.probe.parameters())
        return params

    def server_parameters(self) -> list[nn.Parameter]:
        """The server's trainable parameters: up-sampler, fusion and every stream's tail.

        Returns:
            Every parameter of the shield that :meth:`client_parameters` does not list.
        """
        client_ids = {id(p) for p in self.client_parameters()}
        return [p for p in self.parameters() if id(p) not in client_ids]

    def _optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer, list[Any]]:
        client_opt, client_sched = make_optimizer(self.client_parameters(), self.config.train)
        server_opt, server_sched = make_optimizer(self.server_parameters(), self.config.train)
        return client_opt, server_opt, [client_sched, server_sched]

    def client_train_forward(self, x: Tensor, y: Tensor) -> ClientMessage:
        """The client's half of a training step, up to the network: steps (a)-(c) and
        the client's layers on a checked batch, keeping the graph for
        :meth:`client_train_backward`.

        Args:
            x: image batch.
            y: labels (the saliency target and the labels sent to the server).

        Returns:
            The message whose activations still carry the client's graph; what crosses
            the network is their value (``activations.detach()``) with the target size
            and the labels.

        Raises:
            InputShapeError, NonFiniteInputError, LabelError: on a bad batch.
        """
        self._check_inputs(x, y)
        x, y_dev = self._prepare(x, y)
        return self._client_forward(x, y_dev if y_dev is not None else y)

    def server_train_step(
        self, msg: ClientMessage, server_opt: torch.optim.Optimizer
    ) -> tuple[ServerGradient, dict[str, Tensor]]:
        """The server's half of a training step: every stream trains on the received
        activations and only the fused stream's gradient goes back.

        Args:
            msg: the client's message, with labels (its activations are detached here:
                the server starts from a leaf tensor, as across a network).
            server_opt: optimiser over :meth:`server_parameters`.

        Returns:
            The gradient for the client and the server's logits per stream (detached).

        Raises:
            InputShapeError: activations that are not this shield's client's.
            LabelError: missing labels, or labels of another count or range.
        """
        a = self._check_message(msg)
        labels = msg.labels
        check_labels(labels, int(a.shape[0]), num_classes=self.num_classes)
        if labels is None:  # check_labels refused it; narrows the type
            raise StateError.build(what="msg.labels", expected="labels", received=None,
                                   fix="report this bug")
        device = _device_of(self)
        y = labels.to(device)
        received = ClientMessage(a.detach().to(device).requires_grad_(True), msg.target_size, y)
        logits = self._guarded_server_forward(received)
        loss = sum((F.cross_entropy(v, y) for v in logits.values()), torch.zeros((), device=device))
        server_opt.zero_grad(set_to_none=True)
        loss.backward()
        server_opt.step()
        grad = received.activations.grad
        reply = ServerGradient(grad if grad is not None else torch.zeros_like(received.activations))
        return reply, {k: v.detach() for k, v in logits.items()}

    def client_train_backward(
        self, x: Tensor, msg: ClientMessage, reply: ServerGradient,
        client_opt: torch.optim.Optimizer,
    ) -> None:
        """The client's half of a training step after the network: back-propagate the
        server's gradient, train the local saliency probe, step.

        Args:
            x: the batch ``msg`` was made from (by :meth:`client_train_forward`).
            msg: that message, with its graph.
            reply: the server's gradient.
            client_opt: optimiser over :meth:`client_parameters`.

        Raises:
            InputShapeError: a gradient of another shape than the activations sent.
        """
        g, a = reply.grad, msg.activations
        if not isinstance(g, Tensor) or g.shape != a.shape:
            raise InputShapeError.build(
                what="reply.grad", expected=f"a gradient of shape {tuple(a.shape)}",
                received=f"{type(g).__name__} of shape {tuple(getattr(g, 'shape', ()))}",
                fix="reply with the gradient of the activations that were sent",
            )
        x, _ = self._prepare(x)
        client_opt.zero_grad(set_to_none=True)
        a.backward(g.to(device=a.device, dtype=a.dtype))
        if self.probe is not None and msg.labels is not None:
            with torch.no_grad(), _frozen_buffers(self.head):
                features = self._probe_features(x)
            F.cross_entropy(self.probe(features), msg.labels).backward()
        client_opt.step()

    def train_step(
        self,
        x: Tensor,
        y: Tensor,
        client_opt: torch.optim.Optimizer,
        server_opt: torch.optim.Optimizer,
    ) -> dict[str, Tensor]:
        """One PGSL training step, with the network boundary made explicit.

        :meth:`client_train_forward`, :meth:`server_train_step` and
        :meth:`client_train_backward` in one process.

        Args:
            x: image batch.
            y: labels.
            client_opt: optimiser over the client's parameters.
            server_opt: optimiser over the server's parameters.

        Returns:
            The server's logits per stream (detached).
        """
        msg = self.client_train_forward(x, y)
        reply, logits = self.server_train_step(msg, server_opt)
        self.client_train_backward(x, msg, reply, client_opt)
        return logits

    def server_half(self) -> ServerHalf:
        """The server's side of one training run on this shield (see :class:`ServerHalf`).

        Returns:
            A new :class:`ServerHalf` with a fresh optimiser.
        """
        return ServerHalf(self)

    def _fit(
        self,
        train_loader: Iterable[tuple[Tensor, Tensor]],
        epochs: int,
        val_loader: Iterable[tuple[Tensor, Tensor]] | None,
        seed: int,
        progress: bool,
        restore_best: bool = False,
        server: SplitServer | None = None,
    ) -> FitHistory:
        client_opt, client_sched = make_optimizer(self.client_parameters(), self.config.train)
        half: SplitServer = server if server is not None else self.server_half()

        def step(x: Tensor, y: Tensor) -> int:
            msg = self.client_train_forward(x, y)
            reply = half.step(msg)
            self.client_train_backward(x, msg, reply, client_opt)
            client_sched.step()
            return int(y.shape[0])

        def end_epoch(epoch: int, seconds: float) -> EpochRecord:
            summary = half.end_epoch()
            val = self.evaluate(val_loader) if val_loader is not None else None
            record = EpochRecord(
                epoch=epoch,
                train_loss=summary.train_loss,
                train_accuracy=summary.train_accuracy,
                val_accuracy=val,
                stream_weights=summary.stream_weights,
                seconds=seconds,
            )
            logger.info("epoch %d: %s", epoch, record.model_dump(exclude={"epoch"}))
            return record

        records, kept = fit_epochs(
            self, train_loader, epochs=epochs, step=step, end_epoch=end_epoch,
            score=lambda r: r.val_accuracy["decision"] if r.val_accuracy else None, seed=seed,
            description="PGSL epoch", progress=progress, restore_best=restore_best,
        )
        return FitHistory(seed=seed, cut=self.cut, config=self.config, epochs=records,
                          best_epoch=kept)

    def _calibrate(self, s_max: dict[str, Tensor]) -> None:
        """Eqs. 10-11: the initial weights rescaled by each stream's ``S^max``.

        Args:
            s_max: per stream, its largest mean true-class score over the class
                labels (:func:`~shieldsplit.defenses.pgsl.fusion.max_class_score`).
        """
        if not self.config.decision.enabled:
            return
        initial = dict(zip(("recovered", "fused", "attacked"), self.config.decision.weights,
                           strict=True))
        scores = torch.stack([s_max[s].reshape(()) for s in self.streams])
        w0 = torch.tensor([initial[s] for s in self.streams], device=scores.device)
        with torch.no_grad():
            self._weights().copy_(adaptive_weights(scores, w0))

    @torch.no_grad()
    def evaluate(self, loader: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        """Accuracy of every stream and of the decision fusion.

        Args:
            loader: labelled images in any form of docs/data.md.

        Returns:
            ``{"recovered": ..., "fused": ..., "attacked": ..., "decision": ...}``
            (only the present streams).

        Raises:
            EmptyDataError: if the loader yields nothing.
        """
        correct: dict[str, int] = {}
        seen = 0
        for x, y in self._contract(loader, seed=0, shuffle=False, what="loader"):
            self._check_inputs(x, y)
            probs = self.predict_streams(x).as_dict()
            probs["decision"] = self._decide(probs)
            y = y.to(_device_of(self))
            for k, p in probs.items():
                correct[k] = correct.get(k, 0) + int((p.argmax(-1) == y).sum())
            seen += int(y.shape[0])
        if seen == 0:
            raise EmptyDataError.build(
                what="loader", expected="at least one batch", received="no batch",
                fix="check the data set",
            )
        return {k: v / seen for k, v in correct.items()}

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
        model = copy.deepcopy(self.__dict__["_template"]).to(_device_of(self))
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
        cfg = self.config
        example = torch.zeros(1, *shape, device=_device_of(self))
        self._check_inputs(example)
        part = copy.deepcopy
        p = cfg.perturb
        return ExportedShield(
            head=part(self.head),
            probe=part(self.probe) if self.probe is not None else None,
            upsample=part(self.upsample) if self.upsample is not None else None,
            recovery=part(self.recovery) if self.recovery is not None else None,
            fusion=part(self.fusion) if self.fusion is not None else None,
            tails={name: part(tail) for name, tail in self.tails.items()},
            streams=self.streams,
            weights=self._weights().detach().clone() if cfg.decision.enabled else None,
            input_shape=(int(shape[0]), int(shape[1]), int(shape[2])),
            target_size=self._target_size(example),
            unshuffle_factor=cfg.unshuffle.factor if cfg.unshuffle.enabled else 0,
            pad=cfg.unshuffle.pad,
            concat=cfg.saliency.enabled and cfg.saliency.concat,
            input_x_gradient=cfg.saliency.method == "input_x_gradient",
            pixel_count=(budget_count(example[0].numel(), p.pixel_budget)
                         if cfg.saliency.enabled and p.enabled else 0),
            strength=p.strength,
            clip=p.clip,
        ).to(_device_of(self))

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
        """
        ck = load_checkpoint(path, fmt=CHECKPOINT_FORMAT, saver="SplitShield.save")
        shape = ck.get("input_shape")
        shield = cls(
            model,
            cut=ck["cut"] if isinstance(ck["cut"], str) else int(ck["cut"]),
            config=PGSLConfig.model_validate(ck["config"]),
            input_shape=(int(shape[0]), int(shape[1]), int(shape[2])) if shape else None,
            seed=int(ck["seed"]),
        )
        shield.load_state_dict(ck["state_dict"])
        return shield



class SplitServer(Protocol):
    """What :meth:`SplitShield.fit` talks to on the other side of the cut: a
    :class:`ServerHalf` in process, or a server in another process
    (``shieldsplit.adapters.split_process``)."""

    def step(self, msg: ClientMessage) -> ServerGradient:
        """Train the server on one client message; return the fused stream's gradient."""
        ...

    def end_epoch(self) -> EpochSummary:
        """Close the epoch: calibrate the decision weights, report the epoch's tallies."""
        ...


class ServerHalf:
    """The server's side of one PGSL training run on a shield: its optimiser and
    learning-rate schedule, and the epoch's per-stream loss, accuracy and class-score
    tallies (eqs. 10-11 calibrate the decision weights from them at the end of each
    epoch). Only the server's parameters and the decision weights change.

    Args:
        shield: the shield whose server part is trained.

    Example:
        >>> from shieldsplit.models import PGSLNet
        >>> shield = SplitShield(PGSLNet(num_classes=2, image_size=8, width=4, hidden=8),
        ...                      cut=2, seed=0)
        >>> half = shield.server_half()
        >>> msg = shield.client(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]))
        >>> tuple(half.step(msg).grad.shape) == tuple(msg.activations.shape)
        True
        >>> half.end_epoch().examples
        4
    """

    def __init__(self, shield: SplitShield) -> None:
        self.shield = shield
        self.optimizer, self.scheduler = make_optimizer(shield.server_parameters(),
                                                        shield.config.train)
        self._reset()

    def _reset(self) -> None:
        self.seen = 0
        self.loss_sums: dict[str, float] = {}
        self.correct: dict[str, int] = {}
        self.class_sums: dict[str, tuple[Tensor, Tensor]] = {}

    def step(self, msg: ClientMessage) -> ServerGradient:
        """Train every stream on one client message (:meth:`SplitShield.server_train_step`)
        and add its logits to the epoch's tallies.

        Args:
            msg: the client's message, with labels.

        Returns:
            The fused stream's gradient for the client.

        Raises:
            InputShapeError, LabelError: a message this shield's server cannot train on
                (nothing is changed then).
        """
        reply, logits = self.shield.server_train_step(msg, self.optimizer)
        self.scheduler.step()
        shield = self.shield
        y = msg.labels.to(_device_of(shield)) if msg.labels is not None else None
        if y is None:  # server_train_step refused it already
            raise StateError.build(what="msg.labels", expected="labels", received=None,
                                   fix="report this bug")
        n = int(y.shape[0])
        self.seen += n
        for s, v in logits.items():
            self.loss_sums[s] = self.loss_sums.get(s, 0.0) + float(F.cross_entropy(v, y)) * n
            self.correct[s] = self.correct.get(s, 0) + int((v.argmax(-1) == y).sum())
            got = class_score_sums(v.softmax(-1), y, shield.num_classes)
            if s in self.class_sums:
                got = (self.class_sums[s][0] + got[0], self.class_sums[s][1] + got[1])
            self.class_sums[s] = got
        return reply

    def end_epoch(self) -> EpochSummary:
        """Calibrate the decision weights on the epoch's training scores and start a new
        epoch.

        Returns:
            The epoch's mean loss and accuracy per stream and the new decision weights.

        Raises:
            EmptyDataError: if no message was trained on since the last call.
        """
        if self.seen == 0:
            raise EmptyDataError.build(
                what="epoch", expected="at least one training message", received="none",
                fix="send the epoch's batches before closing it",
            )
        shield = self.shield
        shield._calibrate({s: max_class_score(*v) for s, v in self.class_sums.items()})
        n = self.seen
        summary = EpochSummary(
            examples=n,
            train_loss={s: self.loss_sums[s] / n for s in shield.streams},
            train_accuracy={s: self.correct[s] / n for s in shield.streams},
            stream_weights=dict(zip(shield.streams, shield._weights().tolist(), strict=True)),
        )
        self._reset()
        return summary


def _check_normalized(model: nn.Module, cfg: PGSLConfig) -> None:
    """PGSL unshuffles the images and adds a saliency channel before the model's first
    layer: a per-channel normalisation in front of it cannot apply there."""
    if not isinstance(model, Normalized):
        return
    per_channel = max(model.mean.numel(), model.std.numel()) > 1  # type: ignore[operator]
    if per_channel and (cfg.unshuffle.enabled or (cfg.saliency.enabled and cfg.saliency.concat)):
        raise UnsupportedModelError.build(
            what="model", expected="Normalized with one mean and one std for all channels "
            "(PGSL unshuffles the images and adds a saliency channel before the first layer)",
            received=f"per-channel mean {model.mean.flatten().tolist()} and std "  # type: ignore[operator]
            f"{model.std.flatten().tolist()}",  # type: ignore[operator]
            fix="use a single mean and std, or switch unshuffle and saliency.concat off in "
            "PGSLConfig (docs/data.md)",
        )


def _as_config(config: Any) -> PGSLConfig:
    """``config`` as a PGSLConfig: None is the default, a dict (JSON) is validated."""
    if config is None:
        return PGSLConfig()
    if isinstance(config, PGSLConfig):
        return config
    if isinstance(config, Mapping):
        return build_config(PGSLConfig, config,
                            fix="check the field names and ranges in "
                            "shieldsplit.defenses.pgsl.config")
    raise ConfigError.build(
        what="config", expected="a PGSLConfig, a dict of its fields or None",
        received=type(config).__name__, fix="pass config=PGSLConfig(...)",
    )


def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


register_defense(SplitShield.name, SplitShield)

__all__ = ["EpochRecord", "FitHistory", "ServerHalf", "SplitServer", "SplitShield"]
