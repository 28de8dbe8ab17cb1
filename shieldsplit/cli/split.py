"""``shieldsplit split-serve`` and ``split-client``: SplitShield's two halves as two
processes (one TCP frame each way per batch; docs/federated.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from shieldsplit._core.io import atomic_write_text
from shieldsplit.cli.common import (
    check_data,
    check_outputs,
    fail,
    load_data,
    parse_cut,
    say,
    write_outputs,
)
from shieldsplit.cli.loading import build_model, check_cut, check_model, check_split, model_for
from shieldsplit.errors import ConfigError, ShieldSplitError


def _split_process() -> Any:
    try:
        from shieldsplit.adapters import split_process
    except ImportError as exc:  # pragma: no cover - the adapters ship with shieldsplit
        raise ConfigError.build(what="shieldsplit.adapters", expected="the adapters package",
                                received=str(exc), fix="reinstall shieldsplit") from exc
    return split_process


def split_serve(
    model: Annotated[str, typer.Option(help="'package.module:factory' or a built-in name")]
    = "pgsl-net",
    in_channels: Annotated[int, typer.Option(min=1, help="image channels")] = 1,
    image_size: Annotated[int, typer.Option(min=1, help="image height and width")] = 28,
    num_classes: Annotated[int, typer.Option(min=2, help="classes")] = 2,
    cut: Annotated[str, typer.Option(help="block index or submodule name")] = "2",
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1)] = 0,
    host: Annotated[str, typer.Option(help="address to listen on (no TLS: keep it local)")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="0 picks a free port")] = 9300,
    connections: Annotated[int, typer.Option(min=0, help="runs to serve; 0: until stopped")]
    = 1,
    max_message_bytes: Annotated[int, typer.Option(min=1)] = 64 * 1024 * 1024,
    report: Annotated[Path | None, typer.Option(help="write the server's report (JSON)")]
    = None,
) -> None:
    """Run SplitShield's server half: trains the server's streams on the activations a
    `split-client` sends (one TCP frame each way per batch; docs/federated.md)."""
    try:
        # every option, before torch is imported
        check_outputs(report=report)
        check_model(model)
        where = parse_cut(cut)
        check_cut(model, where)
        sp = _split_process()
        import torch

        from shieldsplit.defenses.pgsl.shield import SplitShield

        torch.manual_seed(seed)  # the same initial weights as the client's
        net = build_model(model, in_channels=in_channels, num_classes=num_classes,
                          image_size=image_size)
        check_split(net, where)
        shield = SplitShield(net, cut=where, seed=seed)

        def ready(bound: int) -> None:
            say(f"split server listening on {host}:{bound}")

        rep = sp.serve(shield, host=host, port=port, connections=connections or None,
                       max_message_bytes=max_message_bytes, report=report, ready=ready)
    except ShieldSplitError as exc:
        fail(exc)
    say(f"served {rep.connections} connection(s), {rep.messages} batches, "
        f"{len(rep.rejected)} refused frame(s)")


def split_client(
    model: Annotated[str, typer.Option(help="'package.module:factory' or a built-in name")]
    = "pgsl-net",
    data: Annotated[str, typer.Option(help="digits | breastmnist | pneumoniamnist | mnist")]
    = "breastmnist",
    data_root: Annotated[Path | None, typer.Option(help="folder holding the data files")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="cap each split's size")] = None,
    cut: Annotated[str, typer.Option(help="block index or submodule name")] = "2",
    epochs: Annotated[int, typer.Option(min=1)] = 5,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1)] = 0,
    host: Annotated[str, typer.Option(help="the split server's address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 9300,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the history here")]
    = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train SplitShield's client half on this machine's images against a `split-serve`
    process: only the activations at the cut and the labels leave this process."""
    try:
        # every option, before torch is imported
        check_outputs(json=json_out)
        check_model(model)
        check_data(data, data_root)
        where = parse_cut(cut)
        check_cut(model, where)
        sp = _split_process()
        ds = load_data(data, data_root, seed, limit)
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        from shieldsplit.defenses.pgsl.shield import SplitShield

        torch.manual_seed(seed)  # the same initial weights as the server's
        net = model_for(model, ds, None, defended_ok=False)
        check_split(net, where)
        shield = SplitShield(net, cut=where, seed=seed)
        loader = DataLoader(TensorDataset(ds.x_train, ds.y_train), batch_size=batch_size,
                            shuffle=True, generator=torch.Generator().manual_seed(seed))
        history, remote = sp.train_client(shield, loader, host=host, port=port, epochs=epochs,
                                          seed=seed, progress=not quiet)
    except OSError as exc:  # refused, reset or timed out
        fail(f"no split server answered at {host}:{port} ({exc}); start `shieldsplit "
             "split-serve` there first")
    except ShieldSplitError as exc:
        fail(exc)
    for record in history.epochs:
        losses = ", ".join(f"{k} {v:.4f}" for k, v in record.train_loss.items())
        say(f"epoch {record.epoch}: train loss {losses}")
    per_batch = remote.message_bytes / max(remote.frames, 1)
    say(f"{remote.frames} batches, {per_batch:,.0f} bytes sent per batch")
    if not write_outputs([(json_out, lambda p: atomic_write_text(
            p, history.model_dump_json(indent=2)), "history")]):
        raise typer.Exit(code=1)


__all__ = ["split_client", "split_serve"]
