"""Plain (undefended) training with the same optimiser as PGSL, for side-by-side baselines.

Example:
    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> from shieldsplit.models import PGSLNet
    >>> data = TensorDataset(torch.rand(16, 1, 8, 8), torch.randint(0, 2, (16,)))
    >>> model = PGSLNet(num_classes=2, image_size=8, width=8, hidden=8)
    >>> history = fit_plain(model, DataLoader(data, batch_size=8), epochs=1, seed=0, progress=False)
    >>> len(history.epochs)
    1
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sized
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from .config import TrainConfig
from .errors import ConfigError, EmptyDataError
from .progress import progress_bar


class PlainEpoch(BaseModel):
    """One epoch of plain training.

    Attributes:
        epoch: 1-based epoch number.
        train_loss: mean cross-entropy.
        train_accuracy: accuracy on the training batches.
        val_accuracy: accuracy on the validation loader, if given.
        seconds: wall time.
    """

    model_config = ConfigDict(extra="forbid")

    epoch: int
    train_loss: float
    train_accuracy: float
    val_accuracy: float | None
    seconds: float


class PlainHistory(BaseModel):
    """What :func:`fit_plain` returns.

    Attributes:
        seed: the seed of the run.
        epochs: one record per epoch.
        best_epoch: the epoch whose weights were kept (``restore_best``), else None.
    """

    model_config = ConfigDict(extra="forbid")

    seed: int
    epochs: list[PlainEpoch]
    best_epoch: int | None = None


class BestState:
    """Keeps a copy of a module's state at its best validation score (model selection on
    validation data, never on test data).

    Example:
        >>> from torch import nn
        >>> m = nn.Linear(1, 1)
        >>> best = BestState(m)
        >>> best.update(0.5, epoch=1); best.update(0.4, epoch=2)
        >>> best.epoch
        1
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.score = float("-inf")
        self.epoch: int | None = None
        self.state: dict[str, Tensor] | None = None

    def update(self, score: float, *, epoch: int) -> None:
        """Remember the module's state if ``score`` beats the best so far.

        Args:
            score: the validation score of this epoch (higher is better).
            epoch: the epoch number.
        """
        if score > self.score:
            self.score, self.epoch = score, epoch
            self.state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def restore(self) -> None:
        """Load the best state back into the module (no-op if none was recorded)."""
        if self.state is not None:
            self.module.load_state_dict(self.state)


def make_optimizer(
    params: Iterable[nn.Parameter], config: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam with Keras-style decay ``lr / (1 + decay * step)`` (the PGSL paper's setting).

    Args:
        params: parameters to optimise.
        config: learning rate, decay and weight decay.

    Returns:
        The optimiser and its per-step scheduler.
    """
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    decay = config.lr_decay
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1.0 + decay * step))
    return opt, sched


@torch.no_grad()
def accuracy(model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]]) -> float:
    """Top-1 accuracy of ``model`` in eval mode (its mode is restored).

    Args:
        model: a classifier returning logits.
        loader: yields ``(images, labels)``.

    Returns:
        The fraction of correct predictions.

    Raises:
        EmptyDataError: if the loader yields nothing.
    """
    was_training = model.training
    model.eval()
    correct = seen = 0
    try:
        for x, y in loader:
            correct += int((model(x).argmax(-1) == y).sum())
            seen += int(y.shape[0])
    finally:
        model.train(was_training)
    if seen == 0:
        raise EmptyDataError.build(
            what="loader", expected="at least one batch", received="no batch",
            fix="check the data set",
        )
    return correct / seen


#: ``(model, images, labels) -> (loss, logits)``: one training step's objective.
LossFn = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor]]


def cross_entropy_loss(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The undefended objective: cross-entropy of ``model(x)``.

    Args:
        model: a classifier returning logits.
        x: images.
        y: labels.

    Returns:
        The loss and the logits.
    """
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def fit_plain(
    model: nn.Module,
    train_loader: Iterable[tuple[Tensor, Tensor]],
    *,
    epochs: int = 5,
    val_loader: Iterable[tuple[Tensor, Tensor]] | None = None,
    seed: int = 0,
    config: TrainConfig | None = None,
    progress: bool = True,
    restore_best: bool = False,
    loss_fn: LossFn | None = None,
    optimizer: tuple[torch.optim.Optimizer, Any] | None = None,
) -> PlainHistory:
    """Train ``model`` in place with cross-entropy (the undefended baseline).

    Args:
        model: the classifier; its weights are updated (this is the point).
        train_loader: yields ``(images, labels)``.
        epochs: passes over the data.
        val_loader: optional validation loader.
        seed: seeds dropout and shuffling.
        config: optimiser settings (default: the paper's Adam, lr 0.001, decay 0.0003).
        progress: show a progress bar.
        restore_best: with a ``val_loader``, end with the weights of the epoch of best
            validation accuracy (model selection on validation data only).
        loss_fn: ``(model, x, y) -> (loss, logits)``; default cross-entropy of
            ``model(x)``. Defences add their regulariser here (NoPeek, BiDO).
        optimizer: an ``(optimizer, scheduler)`` pair to use instead of the paper's Adam
            (the scheduler may be None); DP-SGD passes Opacus's private optimiser.

    Returns:
        The per-epoch history.

    Raises:
        ConfigError: if ``epochs < 1``.
        EmptyDataError: if the loader yields nothing.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError.build(
            what="epochs", expected="an int >= 1", received=epochs, fix="pass epochs=1 or more"
        )
    opt, sched = optimizer if optimizer is not None else make_optimizer(
        model.parameters(), config or TrainConfig())
    compute = loss_fn if loss_fn is not None else cross_entropy_loss
    records = []
    best = BestState(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            model.train()
            loss_sum, correct, seen = 0.0, 0, 0
            total = len(train_loader) if isinstance(train_loader, Sized) else None
            with progress_bar(
                train_loader, total=total, description=f"plain epoch {epoch}/{epochs}",
                enabled=progress,
            ) as batches:
                for x, y in batches:
                    opt.zero_grad(set_to_none=True)
                    loss, logits = compute(model, x, y)
                    loss.backward()
                    opt.step()
                    if sched is not None:
                        sched.step()
                    loss_sum += float(loss.detach()) * int(y.shape[0])
                    correct += int((logits.argmax(-1) == y).sum())
                    seen += int(y.shape[0])
            if seen == 0:
                raise EmptyDataError.build(
                    what="train_loader", expected="at least one batch", received="no batch",
                    fix="check the data set",
                )
            records.append(
                PlainEpoch(
                    epoch=epoch,
                    train_loss=loss_sum / seen,
                    train_accuracy=correct / seen,
                    val_accuracy=accuracy(model, val_loader) if val_loader is not None else None,
                    seconds=time.perf_counter() - start,
                )
            )
            if restore_best and records[-1].val_accuracy is not None:
                best.update(records[-1].val_accuracy, epoch=epoch)
    best.restore()
    model.eval()
    return PlainHistory(seed=seed, epochs=records, best_epoch=best.epoch)


__all__ = [
    "LossFn", "PlainEpoch", "PlainHistory", "accuracy", "cross_entropy_loss", "fit_plain",
    "make_optimizer",
]
