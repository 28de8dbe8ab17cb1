"""The ``ServerApp`` and the simulation: federated training of a defence, in one call.

:func:`server_app` runs Flower's ``FedAvg`` behind a
:class:`~shieldsplit.adapters.flower.strategy.RecordingStrategy` (or, with an audit, an
:class:`~shieldsplit.adapters.flower.audit.AuditingStrategy`); :func:`simulate` runs it
with the :func:`~shieldsplit.adapters.flower.client.client_app` on Flower's simulation
engine (Ray backend) and returns the typed
:class:`~shieldsplit.adapters.flower.report.FederatedResult`.

Example:
    >>> from shieldsplit.adapters.flower.report import FederatedResult
    >>> from shieldsplit.models import SmallConvNet
    >>> spec = ClientSpec(model=SmallConvNet(num_classes=2, image_size=8), defense="none",
    ...                   options={"cut": 1})
    >>> result = FederatedResult(defense="none", clients=1, rounds=1, partition="iid",
    ...                          partition_sizes=[4], local_epochs=1, batch_size=2, seed=0)
    >>> type(server_app(spec, rounds=1, result=result)).__name__
    'ServerApp'
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, Strategy
from torch import Tensor, nn

from shieldsplit._core.validate import build_config
from shieldsplit.adapters.flower.audit import AuditingStrategy, AuditSetting
from shieldsplit.adapters.flower.client import (
    ClientSpec,
    aggregate_evaluation,
    build_defense,
    client_app,
    evaluate_counts,
    load_shared,
    make_shards,
    shared_state,
)
from shieldsplit.adapters.flower.messages import to_record
from shieldsplit.adapters.flower.report import FederatedResult
from shieldsplit.adapters.flower.strategy import RecordingStrategy
from shieldsplit.datacontract import as_tensors, check_model
from shieldsplit.errors import ConfigError, ShieldSplitError
from shieldsplit.functional.classification import balanced_accuracy, macro_f1, majority_share
from shieldsplit.settings import AuditSettings, FederatedSettings

logger = logging.getLogger(__name__)


def server_app(spec: ClientSpec, *, rounds: int, result: FederatedResult,
               audit: AuditSetting | None = None, progress: bool = False,
               timeout: float = 3600.0, errors: list[BaseException] | None = None,
               on_round: Callable[[FederatedResult], None] | None = None,
               strategy: Strategy | None = None,
               final: list[ArrayRecord] | None = None) -> ServerApp:
    """The Flower ``ServerApp``: FedAvg (wrapped in :class:`AuditingStrategy` with an audit).

    The result is filled in round by round, so an interrupted run keeps its finished
    rounds.

    Args:
        spec: the defence and the model (the initial arrays).
        rounds: server rounds.
        result: what to fill in.
        audit: the live audit's setting, or None.
        progress: one line per round on stderr.
        timeout: seconds FedAvg waits for the replies of a round.
        errors: where an exception of the server's main is kept for the caller (the
            engine only logs it).
        on_round: called with the result after every round.
        strategy: the Flower strategy that aggregates (default: ``FedAvg`` over all
            ``result.clients`` clients with :func:`aggregate_evaluation`); it must send
            the config's ``server-round`` and read ``num-examples``, as Flower's do.
        final: where the final global arrays are appended when the run finishes.

    Returns:
        The app.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        n = result.clients
        inner = strategy or FedAvg(min_train_nodes=n, min_evaluate_nodes=n,
                                   min_available_nodes=n,
                                   evaluate_metrics_aggr_fn=aggregate_evaluation)
        wrapper = (AuditingStrategy(inner, result, audit, progress=progress, on_round=on_round)
                    if audit is not None
                    else RecordingStrategy(inner, result, progress=progress, on_round=on_round))
        try:
            initial = to_record(shared_state(spec.build()))
            done = wrapper.start(grid=grid, initial_arrays=initial, num_rounds=rounds,
                                 timeout=timeout)
            if final is not None:
                final.append(done.arrays)
        except BaseException as exc:
            if errors is not None:
                errors.append(exc)
            raise

    return app


#: the loggers of the engines :func:`simulate` drives (Flower's, and Ray's in this process)
ENGINE_LOGGERS = ("flwr", "ray")


@contextlib.contextmanager
def engine_logs() -> Iterator[bool]:
    """Route Flower's and Ray's logs through the project's logging while a simulation runs.

    Flower installs its own console handler on the ``flwr`` logger and lets records
    propagate to the root logger as well, so under ``logging.basicConfig`` (the command
    line) every Flower line printed twice, DEBUG lines included. For the block, the engines'
    own handlers are removed (each record reaches the root's handlers once, in the
    project's format), and they are silent below ERROR unless the ``shieldsplit`` logger
    shows INFO (``shieldsplit --verbose``); Ray's and Flower's Python warnings (Flower's
    ``run_simulation`` deprecation, Ray's accelerator tip) are hidden likewise. Everything
    is restored after the block.

    Yields:
        Whether the run is verbose (Ray then forwards its workers' output too).

    Example:
        >>> import logging
        >>> flwr_logger = logging.getLogger("flwr")
        >>> handlers = list(flwr_logger.handlers)
        >>> with engine_logs():
        ...     flwr_logger.handlers
        []
        >>> flwr_logger.handlers == handlers
        True
    """
    verbose = logging.getLogger("shieldsplit").isEnabledFor(logging.INFO)
    saved = []
    for name in ENGINE_LOGGERS:
        engine = logging.getLogger(name)
        saved.append((engine, engine.level, list(engine.handlers), engine.propagate))
        for handler in list(engine.handlers):
            engine.removeHandler(handler)
        engine.setLevel(logging.INFO if verbose else logging.ERROR)
        engine.propagate = True
    try:
        with warnings.catch_warnings():
            if not verbose:
                for module in (r"ray(\..*)?", r"flwr(\..*)?"):
                    warnings.filterwarnings("ignore", module=module)
            yield verbose
    finally:
        for engine, level, handlers, propagate in saved:
            for handler in list(engine.handlers):
                engine.removeHandler(handler)
            for handler in handlers:
                engine.addHandler(handler)
            engine.setLevel(level)
            engine.propagate = propagate


def _check_budget(budget: float | None, privacy: dict[str, float]) -> None:
    """An epsilon budget is a positive number, for a defence that accounts for epsilon."""
    if budget is None:
        return
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) \
            or not math.isfinite(budget) or budget <= 0:
        raise ConfigError.build(what="epsilon_budget", expected="a positive finite number",
                                received=repr(budget), fix="pass e.g. epsilon_budget=8.0")
    if "epsilon" not in privacy:
        raise ConfigError.build(
            what="epsilon_budget", expected="a defence that accounts for epsilon (dpsgd)",
            received="a defence without a privacy accountant",
            fix="drop the epsilon budget or train dpsgd")


def simulate(
    model: nn.Module,
    *,
    data: Any,
    defense: str = "none",
    clients: int = 2,
    rounds: int = 3,
    partition: str = "iid",
    local_epochs: int = 1,
    batch_size: int = 32,
    audit: str | None = None,
    seed: int = 0,
    cut: int | str = 2,
    defense_options: dict[str, Any] | None = None,
    audit_share: float = 0.1,
    audit_max_images: int = 16,
    progress: bool = True,
    validation: Any = None,
    epsilon_budget: float | None = None,
    privacy_dir: str | Path | None = None,
) -> FederatedResult:
    """Federated training of a defence on Flower's simulation engine (Ray backend).

    The data (any form of docs/data.md; an ``ImageDataset`` gives its training split)
    is partitioned among ``clients`` (:func:`make_shards`); with ``audit`` a share
    ``audit_share`` (at least 16 images) is first set aside as the server's auxiliary
    data. Each round every client trains the defence for ``local_epochs`` from the
    global weights, FedAvg averages (weighted by examples) and every client evaluates
    the new global model on its held-out shard.

    Deterministic with the seed: client seeds derive from (seed, round, client),
    replies are sorted by client before averaging, and Ray runs one client at a time.
    Flower's node ids and log timestamps differ from run to run.

    Args:
        model: the classifier (never modified).
        data: labelled images.
        defense: a defence with a federated form.
        clients: virtual SuperNodes.
        rounds: server rounds.
        partition: ``"iid"`` or ``"dirichlet:ALPHA"``.
        local_epochs: local epochs per round.
        batch_size: local batch size.
        audit: None, or the live audit's budget (``"quick"``, ``"standard"``,
            ``"thorough"``).
        seed: seeds everything.
        cut: the defence's cut.
        defense_options: the defence's own keyword options.
        audit_share: the share of the data the server keeps as auxiliary images.
        audit_max_images: the most images the reconstruction attack rebuilds from one
            update: a client holding more is attacked on a seeded subsample of this many
            (the victims, stated in each row); 0 turns the reconstruction attack off.
        progress: a line per round on stderr. Flower's and Ray's logs go through
            :func:`engine_logs` (silent below ERROR unless the ``shieldsplit`` logger
            shows INFO).
        validation: labelled images (any form of docs/data.md; e.g. ``(ds.x_val,
            ds.y_val)``) the final global model is scored on
            (``result.validation_accuracy``, ``validation_macro_f1``): the split a
            setting is chosen on.
        epsilon_budget: DP-SGD: a client refuses (sends no update in) a round that would
            take its cumulative epsilon past this; the round records the refusal.
        privacy_dir: where the clients keep their privacy ledgers
            (:class:`~shieldsplit.adapters.flower.ledger.PrivacyLedger`); None: a
            temporary folder removed after the run.

    Returns:
        The result (rounds finished so far if interrupted); ``complete`` is True only
        when every round finished with every client
        (:meth:`~shieldsplit.adapters.flower.report.FederatedResult.finish`).

    Raises:
        ConfigError: on a bad option.
        UnsupportedModelError: for a defence without a federated form.
    """
    import flwr
    from flwr.simulation import run_simulation

    check_model(model)
    # the run-settings family validates every option the same way as the other commands
    run = build_config(FederatedSettings, {
        "seed": seed, "clients": clients, "rounds": rounds, "local_epochs": local_epochs,
        "batch_size": batch_size, "cut": cut, "partition": partition, "progress": progress})
    if audit is not None:  # checked now, before any work
        build_config(AuditSettings, {"budget": audit, "seed": seed})
    seed, clients, rounds = run.seed, run.clients, run.rounds
    local_epochs, batch_size = run.local_epochs, run.batch_size
    x, y = as_tensors(data, model=model)
    options = {"cut": cut, "seed": seed, **(defense_options or {})}
    if defense.startswith("latent"):
        options.setdefault("input_shape", tuple(int(s) for s in x.shape[1:]))
    probe = build_defense(model, defense, options)
    _check_budget(epsilon_budget, probe.privacy())
    auxiliary: tuple[Tensor, Tensor] | None = None
    if audit is not None:
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        k = max(16, int(audit_share * len(x)))
        auxiliary = (x[perm[:k]], y[perm[:k]])
        x, y = x[perm[k:]], y[perm[k:]]
    shards = make_shards(x, y, clients=clients, partition=partition, seed=seed)
    spec = ClientSpec(model=copy.deepcopy(model).cpu(), defense=defense, options=options,
                      shards=shards, local_epochs=local_epochs, batch_size=batch_size,
                      seed=seed, privacy_dir=privacy_dir, epsilon_budget=epsilon_budget)
    result = FederatedResult(
        defense=defense, clients=clients, rounds=rounds, partition=partition,
        partition_sizes=[len(shards[p][0][1]) for p in range(clients)],
        local_epochs=local_epochs, batch_size=batch_size, seed=seed,
        flwr_version=str(getattr(flwr, "__version__", "")), audit_budget=audit,
        delta=probe.privacy().get("delta"), epsilon_budget=epsilon_budget, complete=False,
        notes=["accuracy, macro F1 and loss: the global model after each round on the "
               "clients' held-out shards (confusion matrices and loss sums added up)"])
    setting = None
    if auxiliary is not None:
        lr = float(getattr(probe, "lr", 1e-3))
        setting = AuditSetting(spec=spec, auxiliary=auxiliary,
                               run=build_config(AuditSettings, {"budget": audit or "quick",
                                                                "seed": seed}),
                               max_images=audit_max_images, lr=lr)
        result.notes.append("the live audit scores attacks with the clients' true images: "
                            "an evaluation device of the simulation, not what a server sees")
    val = None if validation is None else as_tensors(validation, model=model,
                                                     what="validation")
    failure: list[BaseException] = []
    final: list[ArrayRecord] = []
    server = server_app(spec, rounds=rounds, result=result, audit=setting, progress=progress,
                        errors=failure, final=final)
    backend: dict[str, Any] = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                               "init_args": {"num_cpus": 1, "include_dashboard": False}}
    error: str | None = None
    with contextlib.ExitStack() as stack:
        if privacy_dir is None:
            spec.privacy_dir = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="shieldsplit-privacy-"))
        try:
            with engine_logs() as verbose:
                backend["init_args"].update(
                    logging_level=logging.INFO if verbose else logging.ERROR,
                    log_to_driver=verbose)
                run_simulation(server_app=server, client_app=client_app(spec),
                               num_supernodes=clients,
                               backend_config=backend)
        except KeyboardInterrupt:
            error = "interrupted (Ctrl-C)"
        except Exception as exc:  # the engine re-raises the server's error: keep what finished
            if isinstance(exc, ShieldSplitError):
                raise
            logger.warning("the simulation stopped: %s: %s", type(exc).__name__, exc)
            error = f"{type(exc).__name__}: {exc}"
    if failure:
        error = error or f"{type(failure[0]).__name__}: {failure[0]}"
        if isinstance(failure[0], ShieldSplitError):
            result.finish(error)
            raise failure[0]
    result.finish(error)
    if val is not None and final:
        scored = spec.build()
        try:
            load_shared(scored, final[-1])
        except ConfigError as exc:  # seen after Ray's OOM killer stopped the clients
            result.notes.append(f"validation not scored: the final arrays do not fit the "
                                f"model ({exc})")
            return result.finish(result.error or "the final global arrays do not fit the "
                                 "model")
        _, confusion = evaluate_counts(scored, *val)
        result.validation_examples = int(confusion.sum())
        result.validation_accuracy = float(np.trace(confusion)) / max(1, len(val[1]))
        result.validation_macro_f1 = macro_f1(confusion)
        result.validation_balanced_accuracy = balanced_accuracy(confusion)
        result.validation_majority = majority_share(confusion)
    return result


__all__ = ["ENGINE_LOGGERS", "engine_logs", "server_app", "simulate"]
