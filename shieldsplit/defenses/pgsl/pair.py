"""The PGSL client/server pair: a wrapped classifier cut in two, and its inference path.

:class:`ShieldPair` builds the pair (model surgery in
:mod:`~shieldsplit.defenses.pgsl.surgery`), checks what it is given (docs/data.md) and
runs the client and the server. Both halves run through
:class:`~shieldsplit.defenses.pgsl.halves.ClientSteps` and
:class:`~shieldsplit.defenses.pgsl.halves.ServerSteps`, built around the pair's own
layers; :class:`~shieldsplit.SplitShield` adds training
(:mod:`~shieldsplit.defenses.pgsl.fitting`) and checkpoints on top.

Example:
    >>> import torch
    >>> from shieldsplit import PGSLNet, SplitShield
    >>> shield = SplitShield(PGSLNet(num_classes=2, image_size=8, width=4, hidden=8), cut=2)
    >>> steps = shield.client_steps()
    >>> images, heat = steps.attack(torch.rand(3, 1, 8, 8))
    >>> tuple(heat.shape)
    (3, 1, 8, 8)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from shieldsplit._core.device import device_of
from shieldsplit._core.validate import check_batch, check_seed
from shieldsplit.cutting import split_model
from shieldsplit.datacontract import check_model, probe_model
from shieldsplit.defenses.base import Defense
from shieldsplit.defenses.pgsl.config import PGSLConfig
from shieldsplit.defenses.pgsl.fusion import ConvSumFusion
from shieldsplit.defenses.pgsl.halves import ClientSteps, ServerSteps
from shieldsplit.defenses.pgsl.recovery import ProximalRecovery
from shieldsplit.defenses.pgsl.surgery import (
    ProbeHead,
    adapt_first_conv,
    as_config,
    check_normalized,
    client_channels,
    first_compute,
    flat_cut_error,
    probe_shapes,
)
from shieldsplit.defenses.pgsl.unshuffle import SubPixelUpsample
from shieldsplit.errors import ConfigError, InputShapeError, StateError
from shieldsplit.training import eval_mode
from shieldsplit.wire import ClientMessage, StreamScores


class ShieldPair(Defense):
    """The client/server pair and its inference path (the base of SplitShield; its
    arguments are :class:`~shieldsplit.SplitShield`'s)."""

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
        check_model(model)  # real float32 weights (float64 or meta: say so, not torch's crash)
        self.seed = check_seed(seed)  # torch.manual_seed below would crash, fit would refuse
        self.config = as_config(config)
        check_normalized(model, self.config)
        parts = split_model(model, cut)
        self.cut = parts.cut
        self.valid_cuts = parts.valid_cuts
        # Unregistered copies: the architecture template (for unwrap) and the plain
        # client part (for the shapes the server expects). Neither is trained.
        self.__dict__["_template"] = copy.deepcopy(model).eval()
        self.__dict__["_plain_head"] = copy.deepcopy(parts.head).eval()
        first = first_compute(parts.head)
        self.in_channels: int | None = (
            first[1].in_channels if first and isinstance(first[1], nn.Conv2d) else None
        )
        if input_shape is not None:
            self.in_channels = input_shape[0]
        self.input_shape = input_shape
        activation, self.num_classes, example = probe_shapes(
            self.__dict__["_template"], self.__dict__["_plain_head"], self.in_channels,
            input_shape,
        )
        #: (dims, channels) of what the client sends: server() checks a message against it.
        self.wire_layout = (activation.dim(), int(activation.shape[1]))
        spatial = activation.dim() == 4
        cfg = self.config
        needs_image_head = cfg.unshuffle.enabled or (cfg.saliency.enabled and cfg.saliency.concat)
        if needs_image_head and not spatial:  # the message lists the cuts and suggests one
            raise flat_cut_error(self.__dict__["_template"], self.cut, activation, example)
        channels = int(activation.shape[1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head: nn.Module = parts.head
            if needs_image_head:
                head = adapt_first_conv(head, client_channels(cfg, self.in_channels))
            self.head = head
            self.probe = (
                ProbeHead(channels, self.num_classes, spatial) if cfg.saliency.enabled else None
            )
            self.upsample = (
                SubPixelUpsample(channels, cfg.unshuffle.factor, cfg.unshuffle.upsample_kernel)
                if cfg.unshuffle.enabled else None
            )
            r = cfg.recovery
            self.recovery = (
                ProximalRecovery(mu=r.mu, lam=r.lam, max_iter=r.max_iter, tol=r.tol,
                                 matrix=r.matrix, start=r.start)
                if r.enabled else None
            )
            self.fusion = (
                ConvSumFusion(channels, cfg.fusion.kernel_size) if cfg.fusion.enabled else None
            )
        self.streams: tuple[str, ...] = cfg.streams()
        self.tails = nn.ModuleDict(
            {name: (parts.tail if name == "fused" else copy.deepcopy(parts.tail))
             for name in self.streams}
        )
        start = torch.tensor([self.initial_weights()[s] for s in self.streams])
        if cfg.decision.enabled and float(start.sum()) <= 0:
            raise ConfigError.build(
                what="config.decision.weights",
                expected=f"a positive weight for at least one present stream {self.streams}",
                received=cfg.decision.weights,
                fix="give the present streams a positive initial weight",
            )
        self.register_buffer("stream_weights", start / start.sum().clamp_min(1e-12))

    def initial_weights(self) -> dict[str, float]:
        """The configured initial decision weights, by stream name (eq. 9's order).

        Returns:
            ``{"recovered": ..., "fused": ..., "attacked": ...}``.
        """
        return dict(zip(("recovered", "fused", "attacked"), self.config.decision.weights,
                        strict=True))

    # ------------------------------------------------------------------ halves
    def client_steps(self) -> ClientSteps:
        """The client's steps (a)-(c) and layers, around this shield's own layers (they
        share weights, device and mode; nothing is copied).

        Returns:
            A :class:`~shieldsplit.defenses.pgsl.halves.ClientSteps`.
        """
        cfg = self.config
        steps = ClientSteps(
            head=self.head,
            probe=self.probe,
            factor=cfg.unshuffle.factor if cfg.unshuffle.enabled else 0,
            pad=cfg.unshuffle.pad,
            concat=cfg.saliency.enabled and cfg.saliency.concat,
            input_x_gradient=cfg.saliency.method == "input_x_gradient",
            label_target=cfg.saliency.target == "label",
            perturbs=cfg.perturb.enabled,
            pixel_budget=cfg.perturb.pixel_budget,
            strength=cfg.perturb.strength,
            clip=cfg.perturb.clip,
        )
        steps.training = self.training  # its own flag only: the layers keep theirs
        return steps

    def server_steps(self) -> ServerSteps:
        """The server's streams and decision fusion, around this shield's own layers.

        Returns:
            A :class:`~shieldsplit.defenses.pgsl.halves.ServerSteps`.
        """
        steps = ServerSteps(
            upsample=self.upsample, recovery=self.recovery, fusion=self.fusion,
            tails=dict(self.tails.items()), streams=self.streams,
        )
        steps.training = self.training
        return steps

    def current_weights(self) -> Tensor:
        """The decision-weight buffer ``stream_weights`` (kept with decision fusion off too).

        Returns:
            One weight per stream in :attr:`streams` order, summing to one.
        """
        weights = self.stream_weights
        if not isinstance(weights, Tensor):  # a registered buffer; narrows the type
            raise StateError.build(what="stream_weights", expected="a tensor",
                                   received=type(weights).__name__, fix="report this bug")
        return weights

    def decision_weights(self) -> Tensor | None:
        """The weights eq. 9 averages the streams with, or None with decision fusion off.

        Returns:
            One weight per stream, summing to one, or None.
        """
        return self.current_weights() if self.config.decision.enabled else None

    # ------------------------------------------------------------- validation
    def check_inputs(self, x: Any, y: Any = None, *, unit_range: bool = True) -> None:
        """The data contract on one batch (docs/data.md): shape, ``[0, 1]`` pixels (not
        for ``forward``, the plain module call), labels, and, once per image shape, a
        probe of the wrapped model (a wrong image size is a typed error, not torch's
        crash deep in the server).

        Args:
            x: images.
            y: labels, or None.
            unit_range: require pixels in ``[0, 1]``.

        Raises:
            InputShapeError, NonFiniteInputError, LabelError, ConfigError: on bad input.
        """
        check_batch(x, y, num_classes=self.num_classes, in_channels=self.in_channels,
                    unit_range=unit_range)
        shape = tuple(int(s) for s in x.shape[1:])
        known: set[tuple[int, ...]] = self.__dict__.setdefault("_probed_shapes", set())
        if shape not in known:
            template = self.__dict__["_template"]
            probe_model(template, torch.zeros(1, *shape, device=device_of(template)), what="x")
            known.add(shape)

    def prepare(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Move a checked batch to the shield's device and floating dtype.

        Args:
            x: images.
            y: labels, or None.

        Returns:
            ``(x, y)`` on the shield's device.
        """
        ref = next(iter(self.parameters()), None)
        device = ref.device if ref is not None else x.device
        dtype = ref.dtype if ref is not None else x.dtype
        return x.to(device=device, dtype=dtype), (y.to(device) if y is not None else None)

    def target_size(self, x: Tensor) -> tuple[int, int] | None:
        """The spatial size the server's layers expect for images shaped like ``x``
        (what the plain client part gives), or None with unshuffle off.

        Args:
            x: an image batch.

        Returns:
            ``(H, W)`` at the cut of the plain model, or None.
        """
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

    def check_message(self, msg: Any) -> Tensor:
        """The message's activations, if they have this shield's client's layout.

        Args:
            msg: what arrived.

        Returns:
            Its activations.

        Raises:
            InputShapeError: anything else.
        """
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

    # ----------------------------------------------------------------- client
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
        return self.client_steps().features(images, saliency)

    def client_message(self, x: Tensor, y: Tensor | None, *, track: bool) -> ClientMessage:
        """The client's message for a checked, prepared batch.

        Args:
            x: images on the shield's device.
            y: labels, or None.
            track: keep the graph of the client's layers (training).

        Returns:
            The message (its activations carry the graph with ``track``).
        """
        activations = self.client_steps()(x, y, track)
        return ClientMessage(activations=activations, target_size=self.target_size(x),
                             labels=y)

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
        self.check_inputs(x, y)
        x, y = self.prepare(x, y)
        msg = self.client_message(x, y, track=False)
        return ClientMessage(msg.activations.detach(), msg.target_size, msg.labels)

    # ----------------------------------------------------------------- server
    def server_streams(self, msg: ClientMessage) -> dict[str, Tensor]:
        """Run the server on a client message.

        Args:
            msg: what :meth:`client` produced.

        Returns:
            Logits per stream (``recovered``, ``fused``, ``attacked`` where present).

        Raises:
            InputShapeError: activations that are not this shield's client's.
        """
        a = self.check_message(msg)
        try:
            return self.server_steps()(a, msg.target_size)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "error"
            raise InputShapeError.build(
                what="msg.activations", expected="activations of this shield's client",
                received=f"shape {tuple(a.shape)}, on which the server failed ({first})",
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
        self.check_inputs(x, unit_range=False)
        x, _ = self.prepare(x)
        msg = self.client_message(x, None, track=True)
        return self.server_steps()(msg.activations, msg.target_size)["fused"]

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
        return self.decide(self.predict_streams(x).as_dict())

    def decide(self, probs: dict[str, Tensor]) -> Tensor:
        """Step (g): the streams' class probabilities fused with the decision weights.

        Args:
            probs: class probabilities by stream.

        Returns:
            ``(N, classes)`` probabilities.
        """
        return self.server_steps().decide(probs, self.decision_weights())


__all__ = ["ShieldPair"]
