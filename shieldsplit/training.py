"""The one training loop and its shared mechanisms, and plain (undefended) training.

* :func:`fit_epochs`: the epoch loop every trainer uses (seeding, progress, the
  empty-loader check, best-epoch selection on validation data, eval mode at the end);
  :func:`fit_plain`, :meth:`SplitShield.fit`, :meth:`LatentPerturb.fit`,
  :class:`DPSGD` (through :func:`fit_plain`) and the attackers' own networks (the
  split attacks' inversion decoder, the GAN prior's DCGAN) give it their step and
  their record.
* :func:`seeded`: the one seeding (the loop's, and the building of what it trains).
* :func:`tensor_batches`: shuffled mini-batches of in-memory tensors, drawn from the
  loop's seed (an attacker's auxiliary pairs).
* :func:`restored_on_error`: the one roll-back (bad input loses nothing).
* :func:`train_mode` / :func:`eval_mode`: the one mode guard.
* :class:`History`: the base of every training history; :class:`TrainConfig`: the
  optimiser settings of :func:`make_optimizer`.

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

import contextlib
import copy
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any, Literal, TypeVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from shieldsplit._core.progress import progress_bar
from shieldsplit._core.validate import check_int
from shieldsplit.errors import EmptyDataError, ShieldSplitError


class TrainConfig(BaseModel):
    """Optimiser settings (the paper: Adam, lr 0.001, decay 0.0003).

    Also ``PGSLConfig.train`` (re-exported by :mod:`shieldsplit.defenses.pgsl.config`).

    Attributes:
        lr: Adam's learning rate.
        lr_decay: Keras-style per-step decay, ``lr_t = lr / (1 + lr_decay * t)``.
        weight_decay: Adam's L2 penalty.

    Example:
        >>> TrainConfig().lr, TrainConfig(lr=0.01).lr_decay
        (0.001, 0.0003)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(1e-3, gt=0.0)
    lr_decay: float = Field(3e-4, ge=0.0)
    weight_decay: float = Field(0.0, ge=0.0)


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


class History(BaseModel):
    """The base of every training history (subclasses add ``epochs``, their records).

    Attributes:
        seed: the seed of the run.
        best_epoch: the epoch whose weights were kept (``restore_best``), else None.
    """

    model_config = ConfigDict(extra="forbid")

    seed: int
    best_epoch: int | None = None

    def without_timing(self) -> dict[str, Any]:
        """The history without wall times: equal for equal seeds."""
        data = self.model_dump()
        for record in data.get("epochs", []):
            record.pop("seconds", None)
        return data


class PlainHistory(History):
    """What :func:`fit_plain` returns.

    Attributes:
        seed: the seed of the run.
        epochs: one record per epoch.
        best_epoch: the epoch whose weights were kept (``restore_best``), else None.
    """

    epochs: list[PlainEpoch]


@contextlib.contextmanager
def train_mode(module: nn.Module, training: bool) -> Iterator[nn.Module]:
    """The one mode guard: ``module`` in train or eval mode for the block, and every
    submodule's own mode restored after (even when the block raises).

    Args:
        module: any module.
        training: the mode inside the block.

    Yields:
        The module.

    Example:
        >>> m = nn.Sequential(nn.Dropout(), nn.Dropout()).train()
        >>> m[1].eval() and None
        >>> with eval_mode(m):
        ...     m.training, m[0].training
        (False, False)
        >>> m.training, m[0].training, m[1].training
        (True, True, False)
    """
    modes = [(m, m.training) for m in module.modules()]
    module.train(training)
    try:
        yield module
    finally:
        for m, mode in modes:
            m.training = mode


def eval_mode(module: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """:func:`train_mode` with ``training=False``.

    Args:
        module: any module.

    Returns:
        The context manager.
    """
    return train_mode(module, False)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """The one seeding: torch's global (CPU) generator seeded with ``seed`` for the block,
    and left as it was after (``torch.random.fork_rng``: other code's draws are unmoved).

    :func:`fit_epochs` runs under it; a trainer builds its networks under it too, so
    the same seed gives the same initial weights.

    Args:
        seed: the seed.

    Yields:
        Nothing.

    Example:
        >>> before = torch.random.get_rng_state()
        >>> with seeded(3):
        ...     a = torch.rand(2)
        >>> with seeded(3):
        ...     b = torch.rand(2)
        >>> bool(torch.equal(a, b)), bool(torch.equal(torch.random.get_rng_state(), before))
        (True, True)
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def tensor_batches(x: Tensor, y: Tensor, *, batch_size: int) -> DataLoader:
    """Shuffled ``(x[idx], y[idx])`` mini-batches of two in-memory tensors, for :func:`fit_epochs`.

    Every pass draws a new order from torch's global generator, so under
    :func:`fit_epochs` the order follows its seed. A last batch of one sample is
    left out (batch normalisation needs two) unless there is only one sample.

    Args:
        x: ``(N, ...)`` inputs.
        y: ``(N, ...)`` targets (labels, images to rebuild, ...).
        batch_size: samples per batch, ``>= 1``.

    Returns:
        A re-iterable loader (its ``len`` is the number of batches of a pass).

    Raises:
        ConfigError: if ``batch_size < 1``.

    Example:
        >>> batches = tensor_batches(torch.arange(5.0), torch.arange(5), batch_size=2)
        >>> with seeded(0):
        ...     sizes = [len(a) for a, b in batches]
        >>> len(batches), sizes
        (2, [2, 2])
    """
    batch_size = check_int("batch_size", batch_size, low=1, fix="pass batch_size=1 or more")
    n = int(x.shape[0])
    sampler = BatchSampler(RandomSampler(range(n)), batch_size,
                           drop_last=n > 1 and n % batch_size == 1)
    return DataLoader(TensorDataset(x, y), sampler=sampler, batch_size=None)


@contextlib.contextmanager
def restored_on_error(module: nn.Module, *, errors: tuple[type[BaseException], ...] = (
        ShieldSplitError,), undo: Callable[[], None] | None = None) -> Iterator[None]:
    """The one roll-back: if the block raises one of ``errors``, ``module``'s weights,
    buffers and train/eval modes are restored (bad input loses nothing).

    Args:
        module: the module being trained.
        errors: the exceptions that roll back (default: shieldsplit's typed errors).
        undo: also called on roll-back, before the weights are restored (for
            example to drop submodules the block built lazily).

    Yields:
        Nothing.

    Example:
        >>> m = nn.Linear(1, 1)
        >>> before = m.weight.detach().clone()
        >>> try:
        ...     with restored_on_error(m, errors=(ValueError,)):
        ...         _ = m.weight.data.fill_(3.0)
        ...         raise ValueError("bad batch")
        ... except ValueError:
        ...     pass
        >>> bool((m.weight == before).all())
        True
    """
    snapshot = copy.deepcopy(module.state_dict())
    modes = [(m, m.training) for m in module.modules()]
    try:
        yield
    except errors:
        if undo is not None:
            undo()
        module.load_state_dict(snapshot)
        for m, mode in modes:
            m.training = mode
        raise


Record = TypeVar("Record")


def fit_epochs(
    module: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    epochs: int,
    step: Callable[[Tensor, Tensor], int],
    end_epoch: Callable[[int, float], Record],
    score: Callable[[Record], float | None],
    seed: int,
    description: str,
    progress: bool = True,
    progress_unit: Literal["batch", "epoch"] = "batch",
    restore_best: bool = False,
) -> tuple[list[Record], int | None]:
    """The one training loop: ``epochs`` passes of ``step`` over ``batches``.

    Each epoch puts ``module`` in train mode, runs ``step(x, y)`` on every batch
    (it trains, with as many optimisers as it needs, e.g. a GAN's two, and returns
    how many samples it used), raises a typed error when the loader yields nothing,
    and asks ``end_epoch(epoch, seconds)`` for the epoch's record. With
    ``restore_best`` the weights of the epoch of best ``score(record)`` (a validation
    score, higher is better; None skips) are loaded back at the end. The loop runs
    under :func:`seeded` ``(seed)`` and leaves ``module`` in eval mode.

    Args:
        module: what is trained (its state is what best-epoch selection keeps).
        batches: re-iterable ``(images, labels)`` batches.
        epochs: passes, ``>= 1``.
        step: one training step on a batch; returns the batch's sample count.
        end_epoch: builds the epoch's record from its number and wall time.
        score: the record's validation score, or None.
        seed: seeds dropout, shuffling and lazy initialisation inside the loop.
        description: the progress bar's label (``"{description} {epoch}/{epochs}"``
            per batch, ``description`` per epoch).
        progress: show a progress bar.
        progress_unit: ``"batch"``: one bar per epoch over its batches (long epochs);
            ``"epoch"``: one bar over the epochs (many short ones, e.g. an attacker's
            decoder on a few hundred images).
        restore_best: keep the best-scoring epoch's weights.

    Returns:
        The records, and the kept epoch (None without ``restore_best`` or scores).

    Raises:
        ConfigError: if ``epochs < 1``.
        EmptyDataError: if ``batches`` yields nothing.

    Example:
        >>> lin = nn.Linear(2, 2)
        >>> opt = torch.optim.SGD(lin.parameters(), lr=0.1)
        >>> def step(x, y):
        ...     opt.zero_grad(); F.cross_entropy(lin(x), y).backward(); opt.step()
        ...     return len(y)
        >>> data = [(torch.rand(4, 2), torch.tensor([0, 1, 0, 1]))]
        >>> records, kept = fit_epochs(lin, data, epochs=2, step=step,
        ...                            end_epoch=lambda e, s: e, score=lambda r: None,
        ...                            seed=0, description="demo", progress=False)
        >>> records, kept, lin.training
        ([1, 2], None, False)
    """
    epochs = check_int("epochs", epochs, low=1, fix="pass epochs=1 or more")
    records: list[Record] = []
    best = BestState(module)
    total = len(batches) if isinstance(batches, Sized) else None
    per_batch = progress and progress_unit == "batch"
    with seeded(seed), progress_bar(range(1, epochs + 1), total=epochs, description=description,
                                    enabled=progress and not per_batch) as epoch_bar:
        for epoch in epoch_bar:
            start = time.perf_counter()
            module.train()
            seen = 0
            with progress_bar(batches, total=total, description=f"{description} {epoch}/{epochs}",
                              enabled=per_batch) as bar:
                for x, y in bar:
                    seen += step(x, y)
            if seen == 0:
                raise EmptyDataError.build(
                    what="train_loader", expected="at least one batch", received="no batch",
                    fix="check the data set and the loader's batch_size/drop_last",
                )
            records.append(end_epoch(epoch, time.perf_counter() - start))
            value = score(records[-1]) if restore_best else None
            if value is not None:
                best.update(value, epoch=epoch)
    best.restore()
    module.eval()
    return records, best.epoch


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
    correct = seen = 0
    with eval_mode(model):
        for x, y in loader:
            correct += int((model(x).argmax(-1) == y).sum())
            seen += int(y.shape[0])
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
    opt, sched = optimizer if optimizer is not None else make_optimizer(
        model.parameters(), config or TrainConfig())
    compute = loss_fn if loss_fn is not None else cross_entropy_loss
    sums = {"loss": 0.0, "correct": 0.0, "seen": 0.0}

    def step(x: Tensor, y: Tensor) -> int:
        opt.zero_grad(set_to_none=True)
        loss, logits = compute(model, x, y)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        n = int(y.shape[0])
        sums["loss"] += float(loss.detach()) * n
        sums["correct"] += int((logits.argmax(-1) == y).sum())
        sums["seen"] += n
        return n

    def end_epoch(epoch: int, seconds: float) -> PlainEpoch:
        record = PlainEpoch(
            epoch=epoch, train_loss=sums["loss"] / sums["seen"],
            train_accuracy=sums["correct"] / sums["seen"],
            val_accuracy=accuracy(model, val_loader) if val_loader is not None else None,
            seconds=seconds,
        )
        sums.update(loss=0.0, correct=0.0, seen=0.0)
        return record

    records, kept = fit_epochs(
        model, train_loader, epochs=epochs, step=step, end_epoch=end_epoch,
        score=lambda r: r.val_accuracy, seed=seed, description="plain epoch", progress=progress,
        restore_best=restore_best,
    )
    return PlainHistory(seed=seed, epochs=records, best_epoch=kept)


__all__ = [
    "BestState", "History", "LossFn", "PlainEpoch", "PlainHistory", "TrainConfig", "accuracy",
    "cross_entropy_loss", "eval_mode", "fit_epochs", "fit_plain", "make_optimizer",
    "restored_on_error", "seeded", "tensor_batches", "train_mode",
]
