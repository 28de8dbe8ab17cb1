"""``shieldsplit federate``: train a defence with federated averaging on Flower's simulation
engine, with per-round accuracy, each client's epsilon (DP-SGD) and, with ``--audit``, the
leakage of the updates the server really received.

``--defense`` accepts every registered defence that declares a federated form (its
surfaces include ``"federated"``: :func:`shieldsplit.defenses.base.available_defenses`
with ``surface="federated"``), so a defence registered later (a plugin) is among the
choices with no edit here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shieldsplit.cli.choices import FEDERATED_DEFENSES, PARTITION_EXAMPLES, PARTITION_KINDS
from shieldsplit.cli.common import (
    budget_names,
    check_choice,
    check_data,
    check_outputs,
    fail,
    load_data,
    parse_cut,
    say,
    smoke,
    write_outputs,
)
from shieldsplit.cli.loading import check_cut, check_model, check_split, model_for
from shieldsplit.cli.parsing import parse_dotted, parse_options
from shieldsplit.errors import ConfigError, ShieldSplitError
from shieldsplit.experiments.smoke import cap
from shieldsplit.settings import FEDERATED_LR as DEFAULT_LR
from shieldsplit.settings import FEDERATED_MODEL


def federated_defenses() -> list[str]:
    """The choices of ``federate --defense``: every registered defence with a federated
    form (read from the declarations).

    Example:
        >>> "dpsgd" in federated_defenses(), "pgsl" in federated_defenses()
        (True, False)
    """
    return FEDERATED_DEFENSES.names()


#: ``federate``'s training defaults, chosen on the validation split of digits and
#: BreastMNIST (``benchmarks/federate_defaults.py``, docs/results/federate_defaults.json):
#: with Sigmoid, or fewer local epochs, the federated model stayed at the majority class.
#: DP-SGD's model is its own (:data:`~shieldsplit.settings.FEDERATED_MODEL`,
#: :func:`default_model`).
DEFAULT_MODEL, DEFAULT_LOCAL_EPOCHS, DEFAULT_ROUNDS = "small-convnet-tanh", 3, 10


def default_model(defense: str) -> str:
    """``--model``'s default for ``defense``: its own where it has one
    (:data:`~shieldsplit.settings.FEDERATED_MODEL`), else :data:`DEFAULT_MODEL`.

    Example:
        >>> default_model("dpsgd"), default_model("laplace")
        ('narrow-convnet-tanh', 'small-convnet-tanh')
    """
    return FEDERATED_MODEL.get(defense, DEFAULT_MODEL)


def local_options(defense: str, lr: float | None) -> dict[str, float] | None:
    """The defence options ``federate`` passes: ``lr`` (or :data:`DEFAULT_LR`'s) for a
    defence whose options include a learning rate, None for the others.

    Raises:
        ConfigError: ``--lr`` for a defence that takes no learning rate.

    Example:
        >>> local_options("dpsgd", None), local_options("dpsgd", 0.1), local_options("none", None)
        ({'lr': 0.03}, {'lr': 0.1}, None)
    """
    from shieldsplit.defenses.base import defense_config

    if "lr" not in defense_config(defense).model_fields:
        if lr is not None:
            raise ConfigError.build(
                what="--lr", expected="a defence whose options include a learning rate "
                "(dpsgd)", received=f"--lr {lr:g} with --defense {defense}",
                fix=f"drop --lr: {defense} trains with Adam at 0.001")
        return None
    chosen = lr if lr is not None else DEFAULT_LR.get(defense)
    return None if chosen is None else {"lr": chosen}


def federate(
    defense: Annotated[str, typer.Option(
        help="a defence with a federated form: " + ", ".join(FEDERATED_DEFENSES.builtin)
        + " (or a plugin's)")] = "none",
    clients: Annotated[int, typer.Option(min=1, help="clients (virtual SuperNodes)")] = 4,
    rounds: Annotated[int, typer.Option(min=1, help="server rounds")] = DEFAULT_ROUNDS,
    model: Annotated[str | None, typer.Option(
        help="'package.module:factory' or a built-in name (default " + DEFAULT_MODEL + "; "
        + ", ".join(f"{k}: {v}" for k, v in FEDERATED_MODEL.items())
        + ", chosen on the validation split)")] = None,
    data: Annotated[str, typer.Option(help="digits | breastmnist | pneumoniamnist | mnist")]
    = "digits",
    data_root: Annotated[Path | None, typer.Option(help="folder holding the data files")] = None,
    partition: Annotated[str, typer.Option(help="iid | dirichlet:ALPHA (label skew)")] = "iid",
    local_epochs: Annotated[int, typer.Option(min=1, help="local epochs per round")]
    = DEFAULT_LOCAL_EPOCHS,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float | None, typer.Option(
        help="the local learning rate, for a defence that takes one (dpsgd; default "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
        + ", chosen on the validation split); the others train with Adam at 0.001")] = None,
    cut: Annotated[str, typer.Option(help="block index or submodule name")] = "2",
    audit: Annotated[str | None, typer.Option(
        help="run the live audit on the real updates at this budget: quick | standard | "
        "thorough")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="cap each split's size")] = None,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1)] = 0,
    out: Annotated[Path | None, typer.Option(help="write the HTML report here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the JSON here")] = None,
    quiet: Annotated[bool, typer.Option(
        help="no progress lines (Flower's and Ray's logs show only with shieldsplit "
        "--verbose)")] = False,
    epsilon_budget: Annotated[float | None, typer.Option(
        help="dpsgd: a client refuses (sends no update in) a round that would take its "
        "cumulative epsilon past this")] = None,
    privacy_dir: Annotated[Path | None, typer.Option(
        help="keep the clients' privacy ledgers here (default: a temporary folder)")] = None,
    option: Annotated[list[str] | None, typer.Option(
        help="the defence's own options, repeatable: NAME.FIELD=VALUE, e.g. "
        "dpsgd.noise_multiplier=0.5 or laplace.scale=0.2 (see `shieldsplit options`)")]
    = None,
) -> None:
    """Train a defence with federated averaging on Flower's simulation engine (Ray), with
    per-round accuracy, each client's epsilon (DP-SGD) and, with --audit, the leakage of
    the updates the server really received."""
    try:
        # every option, before torch is imported
        check_outputs(out=out, json=json_out)
        if privacy_dir is not None:  # a folder the ledgers can be written in
            check_outputs(privacy_dir=privacy_dir / "ledger.json")
        check_choice("--defense", defense, federated_defenses())
        model = model or default_model(defense)
        check_model(model)
        check_data(data, data_root)
        where = parse_cut(cut)
        check_cut(model, where)
        if audit is not None:
            check_choice("--audit", audit, budget_names())
        if lr is not None and not (0 < lr < float("inf")):
            raise ConfigError.build(what="--lr", expected="a positive number", received=lr,
                                    fix="pass e.g. --lr 0.01")
        if epsilon_budget is not None and not (0 < epsilon_budget < float("inf")):
            raise ConfigError.build(what="--epsilon-budget", expected="a positive number",
                                    received=epsilon_budget, fix="pass e.g. --epsilon-budget 8")

        if partition.strip().lower().partition(":")[0] not in PARTITION_KINDS:
            check_choice("--partition", partition, PARTITION_EXAMPLES,
                         expected="iid or dirichlet:ALPHA (label skew, any ALPHA > 0)")
        # the partition's alpha, by the function that reads it: before any data or model
        from shieldsplit.functional.partition import parse_partition

        parse_partition(partition)
        given = parse_dotted(option or [], [defense], option="--option",
                             example=f"{defense}.FIELD=VALUE").get(defense, {})
        if lr is not None and "lr" in given:
            raise ConfigError.build(
                what="--lr", expected="the learning rate given once",
                received=f"--lr {lr:g} and --option {defense}.lr={given['lr']}",
                fix="drop one of them")
        try:
            from shieldsplit.adapters import flower as ssfl
        except ImportError as exc:
            raise ConfigError.build(
                what="flwr", expected="Flower installed (pip install 'shieldsplit[flower]')",
                received=f"{type(exc).__name__}: {exc}",
                fix="pip install 'shieldsplit[flower]'") from exc
        from shieldsplit.defenses.base import merge_options

        options = merge_options(local_options(defense, lr) or {},
                                parse_options(option or [], [defense]).get(defense, {})) or None
        small = smoke()
        if small is not None:
            limit = cap(limit, small.limit)
        ds = load_data(data, data_root, seed, limit)
        import torch

        torch.manual_seed(seed)  # the model's initial weights: same seed, same report
        net = model_for(model, ds, None, defended_ok=False)
        check_split(net, where)
        result = ssfl.simulate(
            net, data=ds, defense=defense, clients=clients, rounds=rounds, partition=partition,
            local_epochs=local_epochs, batch_size=batch_size, audit=audit, seed=seed,
            cut=where, progress=not quiet, epsilon_budget=epsilon_budget,
            privacy_dir=privacy_dir, defense_options=options,
        )
    except ShieldSplitError as exc:
        fail(exc)
    say(result.table())
    written = write_outputs([(json_out, result.save_json, "JSON report"),
                             (out, result.save_html, "HTML report")])
    if not result.complete:  # Ctrl-C: 130, as a shell reports SIGINT; a shortfall: 1
        if (result.error or "").startswith("interrupted"):
            exit_now(130)
        raise typer.Exit(code=1)
    if not written:
        raise typer.Exit(code=1)


def exit_now(code: int) -> None:
    """End the process at once with ``code``, once the report is on disk.

    After a Ctrl-C, Flower's server thread (not a daemon) still waits for the round it was
    in, so a normal exit would hang until a second Ctrl-C and then print a threading
    traceback. Everything finished is already written (atomically), so the process flushes
    its streams and logs and leaves without joining that thread.
    """
    import logging
    import os
    import sys

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


__all__ = ["DEFAULT_LOCAL_EPOCHS", "DEFAULT_LR", "DEFAULT_MODEL", "DEFAULT_ROUNDS", "default_model",
           "federate", "federated_defenses", "local_options"]
