"""PGSL training: the split protocol's client and server halves, and their epoch loop.

Each step the client sends its activations; the server trains every stream on them
and returns only the fused stream's gradient (Khowaja et al. 2022, Fig. 2); the client
back-propagates it and trains its local saliency probe. After each epoch the server
re-estimates the decision weights from the epoch's training scores (eqs. 10-11).
:class:`ServerHalf` is the server's side in process; ``shieldsplit.adapters.split_process``
runs it in another process (:class:`SplitServer` is what both offer).

Example:
    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> from shieldsplit import PGSLNet, SplitShield
    >>> shield = SplitShield(PGSLNet(num_classes=2, image_size=8, width=4, hidden=8), cut=2)
    >>> data = TensorDataset(torch.rand(8, 1, 8, 8), torch.tensor([0, 1] * 4))
    >>> history = shield.fit(DataLoader(data, batch_size=4), epochs=1, progress=False)
    >>> sorted(history.epochs[0].train_loss)
    ['attacked', 'fused', 'recovered']
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from shieldsplit._core.device import device_of
from shieldsplit._core.validate import check_int, check_labels, check_loader, check_seed
from shieldsplit.datacontract import as_loader
from shieldsplit.defenses.pgsl.config import PGSLConfig
from shieldsplit.defenses.pgsl.fusion import adaptive_weights, class_score_sums, max_class_score
from shieldsplit.defenses.pgsl.halves import frozen_buffers
from shieldsplit.defenses.pgsl.pair import ShieldPair
from shieldsplit.errors import ConfigError, EmptyDataError, InputShapeError, StateError
from shieldsplit.training import History, fit_epochs, make_optimizer, restored_on_error
from shieldsplit.wire import ClientMessage, EpochSummary, ServerGradient

logger = logging.getLogger(__name__)


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


class TrainableShield(ShieldPair):
    """The PGSL training protocol on a :class:`~shieldsplit.defenses.pgsl.pair.ShieldPair`
    (the base of SplitShield, which documents its arguments)."""

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
        train_loader = self.contract(train_loader, seed=seed, shuffle=True, what="train_loader")
        if val_loader is not None:
            check_loader(val_loader, "val_loader")
            val_loader = self.contract(val_loader, seed=seed, shuffle=False, what="val_loader")
        with restored_on_error(self):
            return self._fit(train_loader, epochs, val_loader, seed, progress, restore_best,
                             server)

    def contract(self, data: Any, *, seed: int, shuffle: bool,
                 what: str) -> Iterable[tuple[Tensor, Tensor]]:
        """Any form of docs/data.md as checked batches, the wrapped model probed first.

        Args:
            data: labelled images.
            seed: the shuffling seed.
            shuffle: shuffle (when ``data`` is not already a loader).
            what: its name in error messages.

        Returns:
            Re-iterable ``(images, labels)`` batches.
        """
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

    def optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer, list[Any]]:
        """Fresh optimisers for a training run by hand (:meth:`train_step`).

        Returns:
            ``(client optimiser, server optimiser, [client schedule, server schedule])``.
        """
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
        self.check_inputs(x, y)
        x, y_dev = self.prepare(x, y)
        return self.client_message(x, y_dev if y_dev is not None else y, track=True)

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
        a = self.check_message(msg)
        labels = msg.labels
        check_labels(labels, int(a.shape[0]), num_classes=self.num_classes)
        if labels is None:  # check_labels refused it; narrows the type
            raise StateError.build(what="msg.labels", expected="labels", received=None,
                                   fix="report this bug")
        device = device_of(self)
        y = labels.to(device)
        received = ClientMessage(a.detach().to(device).requires_grad_(True), msg.target_size, y)
        logits = self.server_streams(received)
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
        x, _ = self.prepare(x)
        client_opt.zero_grad(set_to_none=True)
        a.backward(g.to(device=a.device, dtype=a.dtype))
        if self.probe is not None and msg.labels is not None:
            with frozen_buffers(self.head):
                self.client_steps().probe_loss(x, msg.labels).backward()
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

    def calibrate(self, s_max: dict[str, Tensor]) -> None:
        """Eqs. 10-11: the initial weights rescaled by each stream's ``S^max`` (nothing
        with decision fusion off).

        Args:
            s_max: per stream, its largest mean true-class score over the class
                labels (:func:`~shieldsplit.defenses.pgsl.fusion.max_class_score`).
        """
        weights = self.decision_weights()
        if weights is None:
            return
        initial = self.initial_weights()
        scores = torch.stack([s_max[s].reshape(()) for s in self.streams])
        w0 = torch.tensor([initial[s] for s in self.streams], device=scores.device)
        with torch.no_grad():
            weights.copy_(adaptive_weights(scores, w0))

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
        for x, y in self.contract(loader, seed=0, shuffle=False, what="loader"):
            self.check_inputs(x, y)
            probs = self.predict_streams(x).as_dict()
            probs["decision"] = self.decide(probs)
            y = y.to(device_of(self))
            for k, p in probs.items():
                correct[k] = correct.get(k, 0) + int((p.argmax(-1) == y).sum())
            seen += int(y.shape[0])
        if seen == 0:
            raise EmptyDataError.build(
                what="loader", expected="at least one batch", received="no batch",
                fix="check the data set",
            )
        return {k: v / seen for k, v in correct.items()}


class ServerHalf:
    """The server's side of one PGSL training run on a shield: its optimiser and
    learning-rate schedule, and the epoch's per-stream loss, accuracy and class-score
    tallies (eqs. 10-11 calibrate the decision weights from them at the end of each
    epoch). Only the server's parameters and the decision weights change.

    Args:
        shield: the shield whose server part is trained.

    Example:
        >>> from shieldsplit.models import PGSLNet
        >>> from shieldsplit import SplitShield
        >>> shield = SplitShield(PGSLNet(num_classes=2, image_size=8, width=4, hidden=8),
        ...                      cut=2, seed=0)
        >>> half = shield.server_half()
        >>> msg = shield.client(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]))
        >>> tuple(half.step(msg).grad.shape) == tuple(msg.activations.shape)
        True
        >>> half.end_epoch().examples
        4
    """

    def __init__(self, shield: TrainableShield) -> None:
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
        y = msg.labels.to(device_of(shield)) if msg.labels is not None else None
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
        shield.calibrate({s: max_class_score(*v) for s, v in self.class_sums.items()})
        n = self.seen
        summary = EpochSummary(
            examples=n,
            train_loss={s: self.loss_sums[s] / n for s in shield.streams},
            train_accuracy={s: self.correct[s] / n for s in shield.streams},
            stream_weights=dict(zip(shield.streams, shield.current_weights().tolist(),
                                    strict=True)),
        )
        self._reset()
        return summary


__all__ = ["EpochRecord", "FitHistory", "ServerHalf", "SplitServer", "TrainableShield"]
