"""``shieldsplit split-serve`` and ``split-client``: SplitShield's two halves as two
processes (one TCP frame each way per batch; docs/federated.md).

The server serves clients at once (a thread each) and drops a bad or stalled one without
stopping; ``--connections`` counts served runs only. Both sides ``--save`` their shield
as :meth:`SplitShield.save <shieldsplit.defenses.pgsl.shield.SplitShield.save>` writes it
(what ``SplitShield.load`` and ``shieldsplit audit --weights`` read), each with its own
half trained. The client ends by evaluating the pair on the validation and test splits.
"""

from __future__ import annotations

import json
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


FrameTimeout = Annotated[float, typer.Option(
    min=0.001, help="seconds the other side has for each whole frame (header and payload) "
    "before its connection is dropped")]


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
    connections: Annotated[int, typer.Option(
        min=0, help="client runs to serve (ended by the client's bye) before exiting; "
        "dropped connections do not count; 0: until stopped")] = 1,
    max_message_bytes: Annotated[int, typer.Option(min=1)] = 64 * 1024 * 1024,
    frame_timeout: FrameTimeout = 30.0,
    report: Annotated[Path | None, typer.Option(help="write the server's report (JSON)")]
    = None,
    save: Annotated[Path | None, typer.Option(
        help="save the shield (SplitShield.save; its server half trained) after every run")]
    = None,
) -> None:
    """Run SplitShield's server half: trains the server's streams on the activations
    `split-client`s send (one TCP frame each way per batch; clients at once, a bad or
    stalled one is dropped and the server goes on; docs/federated.md)."""
    try:
        # every option, before torch is imported
        check_outputs(report=report, save=save)
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
                       max_message_bytes=max_message_bytes, frame_timeout=frame_timeout,
                       report=report, save=save, ready=ready)
    except ShieldSplitError as exc:
        fail(exc)
    say(f"served {rep.served} run(s), dropped {rep.dropped} connection(s), {rep.messages} "
        f"batches, {len(rep.rejected)} refused frame(s)")
    if save is not None and rep.served:
        say(f"saved the shield (server half trained) to {save}")


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
    frame_timeout: FrameTimeout = 30.0,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="write the history and the evaluation here")] = None,
    save: Annotated[Path | None, typer.Option(
        help="save the shield (SplitShield.save; its client half trained)")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train SplitShield's client half on this machine's images against a `split-serve`
    process, then report the pair's validation and test accuracy: only the activations
    at the cut and the training labels leave this process."""
    try:
        # every option, before torch is imported
        check_outputs(json=json_out, save=save)
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
        splits = {"val": (ds.x_val, ds.y_val), "test": (ds.x_test, ds.y_test)}
        history, remote = sp.train_client(
            shield, loader, host=host, port=port, epochs=epochs, seed=seed,
            progress=not quiet, frame_timeout=frame_timeout,
            evaluate={k: DataLoader(TensorDataset(*v), batch_size=batch_size)
                      for k, v in splits.items() if len(v[1])})
    except OSError as exc:  # refused, reset or timed out
        fail(f"no split server answered at {host}:{port} ({exc}); start `shieldsplit "
             "split-serve` there first")
    except ShieldSplitError as exc:
        fail(exc)
    for record in history.epochs:
        losses = ", ".join(f"{k} {v:.4f}" for k, v in record.train_loss.items())
        say(f"epoch {record.epoch}: train loss {losses}")
    for name, ev in remote.evaluations.items():
        streams = ", ".join(f"{k} {v:.4f}" for k, v in ev.accuracy.items() if k != "decision")
        say(f"{name} accuracy {ev.accuracy['decision']:.4f}, balanced accuracy "
            f"{ev.balanced_accuracy:.4f} ({ev.examples} images; streams: {streams})")
    per_batch = remote.message_bytes / max(remote.frames, 1)
    say(f"{remote.frames} batches, {per_batch:,.0f} bytes sent per batch")
    result = {**history.model_dump(mode="json"),
              "evaluation": {k: v.model_dump() for k, v in remote.evaluations.items()}}
    if not write_outputs([
            (json_out, lambda p: atomic_write_text(p, json.dumps(result, indent=2)), "history"),
            (save, shield.save, "shield")]):
        raise typer.Exit(code=1)


__all__ = ["split_client", "split_serve"]
