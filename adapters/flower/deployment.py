"""A deployed Flower App (``flwr run``): its ``ClientApp`` and ``ServerApp`` from the run config.

A SuperLink and SuperNodes run the two apps (docs/federated.md;
``examples/flower_app/`` names :func:`deployment_client_app` and
:func:`deployment_server_app` in its ``[tool.flwr.app.components]``). Both build their
:class:`~shieldsplit.adapters.flower.client.ClientSpec` from the run config
(:func:`spec_from_config`; keys and defaults: :data:`RUN_CONFIG_DEFAULTS`).

Example:
    >>> spec = spec_from_config({"defense": "none", "limit": 40})
    >>> spec.defense, spec.local_epochs, spec.batch_size
    ('none', 1, 32)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch
from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from shieldsplit.adapters.flower.client import (
    ClientSpec,
    Shard,
    aggregate_evaluation,
    client_app,
    make_shards,
    shared_state,
)
from shieldsplit.adapters.flower.messages import to_record
from shieldsplit.adapters.flower.report import FederatedResult
from shieldsplit.adapters.flower.strategy import RecordingStrategy
from shieldsplit.errors import ConfigError
from shieldsplit.settings import FEDERATED_LR

#: the run-config keys of a deployed app (``[tool.flwr.app.config]``) and their defaults
RUN_CONFIG_DEFAULTS: dict[str, Any] = {
    "defense": "none", "model": "small-convnet", "data": "digits", "limit": 0,
    "partition": "iid", "seed": 0, "local-epochs": 1, "batch-size": 32, "cut": 2,
    "num-clients": 2, "num-server-rounds": 2, "out": "", "min-clients": 0,
    "round-timeout": 3600, "privacy-dir": "", "epsilon-budget": 0.0, "options": "",
}


def _config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(run_config) - set(RUN_CONFIG_DEFAULTS))
    if unknown:
        raise ConfigError.build(what="run config",
                                expected=f"keys of {sorted(RUN_CONFIG_DEFAULTS)}",
                                received=unknown, fix="drop or rename the unknown keys")
    return {**RUN_CONFIG_DEFAULTS, **dict(run_config)}


def own_options(defense: str, text: str) -> dict[str, Any]:
    """The ``options`` key of a run config: the defence's own options, a JSON object
    checked by its ``Config`` (:func:`~shieldsplit.defenses.base.defense_options`).

    Raises:
        ConfigError: text that is not a JSON object, or a field the ``Config`` rejects.

    Example:
        >>> own_options("dpsgd", '{"noise_multiplier": 0.5}')
        {'noise_multiplier': 0.5}
        >>> own_options("dpsgd", "")
        {}
    """
    from shieldsplit.defenses.base import defense_options

    if not text.strip():
        return {}
    try:
        fields = json.loads(text)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        raise ConfigError.build(
            what="options", expected="a JSON object of the defence's options",
            received=repr(text), fix='e.g. options = \'{"noise_multiplier": 0.5}\'')
    return defense_options(defense, fields)


def spec_from_config(run_config: Mapping[str, Any]) -> ClientSpec:
    """The :class:`ClientSpec` of a deployed app, from its run config.

    Every SuperNode loads the named data set and keeps its own partition
    (``partition-id`` of ``num-partitions`` in its ``--node-config``), a stand-in for a
    site's own data. Keys: see :data:`RUN_CONFIG_DEFAULTS` (``limit`` 0: no cap;
    ``privacy-dir`` "": the node config's, else the default folder of
    :func:`~shieldsplit.adapters.flower.ledger.default_privacy_dir`; ``epsilon-budget``
    0: none; ``options``: the defence's own options as a JSON object, e.g.
    ``'{"noise_multiplier": 0.5}'``, checked by its ``Config``; "": its defaults, but
    the learning rate ``federate`` uses, :data:`~shieldsplit.settings.FEDERATED_LR`).

    Args:
        run_config: the run config (``context.run_config``).

    Returns:
        The spec (shards loaded on first use).

    Raises:
        ConfigError: for an unknown key or value.
    """
    from shieldsplit.data import default_data_root, load_dataset
    from shieldsplit.models import create_model

    cfg = _config(run_config)
    seed, data, limit = int(cfg["seed"]), str(cfg["data"]), int(cfg["limit"]) or None
    ds = load_dataset(data, root=None if data == "digits" else default_data_root(), seed=seed,
                      limit=limit)
    torch.manual_seed(seed)
    model = create_model(str(cfg["model"]), in_channels=ds.in_channels,
                         num_classes=ds.num_classes, image_size=ds.image_size[0])
    cut = int(cfg["cut"]) if str(cfg["cut"]).isdigit() else str(cfg["cut"])
    defense = str(cfg["defense"])
    chosen = {"lr": FEDERATED_LR[defense]} if defense in FEDERATED_LR else {}
    options: dict[str, Any] = {"cut": cut, "seed": seed, **chosen,
                               **own_options(defense, str(cfg["options"]))}
    if str(cfg["defense"]).startswith("latent"):
        options["input_shape"] = tuple(int(v) for v in ds.x_train.shape[1:])

    def source(pid: int, num: int) -> Shard:
        return make_shards(ds.x_train, ds.y_train, clients=num, partition=str(cfg["partition"]),
                           seed=seed)[pid]

    budget = float(cfg["epsilon-budget"])
    if not budget >= 0:  # NaN included
        raise ConfigError.build(what="epsilon-budget", expected="a number >= 0 (0: none)",
                                received=cfg["epsilon-budget"], fix="epsilon-budget=8.0")
    return ClientSpec(model=model, defense=str(cfg["defense"]), options=options,
                      local_epochs=int(cfg["local-epochs"]), batch_size=int(cfg["batch-size"]),
                      seed=seed, source=source, privacy_dir=str(cfg["privacy-dir"]) or None,
                      epsilon_budget=budget or None)


def deployment_client_app() -> ClientApp:
    """The ``ClientApp`` of a deployed run (``flwr run``): its spec comes from the run config.

    Returns:
        The app (name it in ``[tool.flwr.app.components] clientapp``).
    """
    cache: dict[int, ClientSpec] = {}

    def spec(context: Context) -> ClientSpec:
        if context.run_id not in cache:
            cache[context.run_id] = spec_from_config(context.run_config)
        return cache[context.run_id]

    return client_app(spec)


def deployment_server_app() -> ServerApp:
    """The ``ServerApp`` of a deployed run: FedAvg over ``num-clients`` SuperNodes.

    With ``out`` in the run config the :class:`FederatedResult` is written there as JSON
    (atomically) after every round (``complete`` false) and at the end: ``complete`` is
    true only when every round finished with at least ``min-clients`` clients; a run
    stopped by Ctrl-C or an error is written with ``complete`` false and the reason.

    Returns:
        The app (name it in ``[tool.flwr.app.components] serverapp``).
    """
    import flwr

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = _config(context.run_config)
        spec = spec_from_config(cfg)
        clients, rounds = int(cfg["num-clients"]), int(cfg["num-server-rounds"])
        out = str(cfg["out"])
        least = int(cfg["min-clients"]) or clients
        result = FederatedResult(
            defense=spec.defense, clients=clients, rounds=rounds,
            partition=str(cfg["partition"]), partition_sizes=[],
            local_epochs=spec.local_epochs, batch_size=spec.batch_size, seed=spec.seed,
            engine="flower deployment engine (SuperLink, SuperNodes)",
            flwr_version=str(getattr(flwr, "__version__", "")),
            delta=spec.build().privacy().get("delta"), epsilon_budget=spec.epsilon_budget,
            min_clients=least, complete=False)
        # min-clients (0: all): a round goes ahead once this many SuperNodes are online,
        # so a run that lost a SuperNode can finish with the others
        inner = FedAvg(min_train_nodes=least, min_evaluate_nodes=least,
                       min_available_nodes=least,
                       evaluate_metrics_aggr_fn=aggregate_evaluation)
        save = (lambda r: r.save_json(out)) if out else (lambda r: None)
        strategy = RecordingStrategy(inner, result, on_round=save)
        try:
            strategy.start(grid=grid, initial_arrays=to_record(shared_state(spec.build())),
                           num_rounds=rounds, timeout=float(cfg["round-timeout"]))
        except KeyboardInterrupt:
            save(result.finish("interrupted (Ctrl-C)"))
            raise
        except BaseException as exc:
            save(result.finish(f"{type(exc).__name__}: {exc}"))
            raise
        save(result.finish())

    return app


__all__ = ["RUN_CONFIG_DEFAULTS", "deployment_client_app", "deployment_server_app",
           "spec_from_config"]
