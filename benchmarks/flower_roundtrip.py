"""Time of one message round trip through Flower's deployment engine on localhost.

Split learning exchanges one message pair per batch. This measures what one such
exchange costs through Flower's Message API with real processes: a SuperLink and one
SuperNode on 127.0.0.1 (insecure, as tests/test_flower.py runs them), and a Flower App
whose ServerApp sends ``--messages`` messages one after the other (``grid.send_and_receive``,
each carrying ``--nbytes`` bytes of float32 in an ``ArrayRecord``: a small message, and one
the size of a batch's activations) to a ClientApp that replies with the same content. The
ServerApp records each round trip's wall time and writes them to a JSON file; this script
prints them and the median, and writes ``flower_roundtrip.json`` under ``--out``. The
processes are stopped however the script ends.

Usage:
    python benchmarks/flower_roundtrip.py --messages 5 --nbytes 4096 1605632 --out docs/results
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from shieldsplit._core.io import atomic_write_text
from shieldsplit.adapters.flower_local import LocalFederation
from shieldsplit.experiments.demo import machine_info

APP_TOML = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "roundtrip"
version = "1.0.0"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "shieldsplit"

[tool.flwr.app.components]
serverapp = "roundtrip_app:server"
clientapp = "roundtrip_app:client"

[tool.flwr.app.config]
messages = 5
nbytes = "4096"
out = ""
"""

APP_PY = '''"""One message round trip per exchange, timed on the ServerApp."""
import json
import time

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

client = ClientApp()
server = ServerApp()


@client.query()
def echo(msg: Message, context: Context) -> Message:
    return Message(msg.content, reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    nodes = []
    while not nodes:
        nodes = list(grid.get_node_ids())
        time.sleep(0.2)
    seconds = {}
    for size in str(cfg["nbytes"]).split(","):
        payload = np.zeros(int(size) // 4, dtype=np.float32)
        seconds[size] = []
        for _ in range(int(cfg["messages"])):
            content = RecordDict({"a": ArrayRecord({"x": Array(payload)})})
            msg = Message(content, dst_node_id=nodes[0], message_type="query")
            start = time.perf_counter()
            replies = list(grid.send_and_receive([msg]))
            seconds[size].append(time.perf_counter() - start)
            if not replies or replies[0].has_error():
                raise RuntimeError("no reply")
    with open(str(cfg["out"]) + ".tmp", "w") as f:
        json.dump({"seconds": seconds}, f)
    import os
    os.replace(str(cfg["out"]) + ".tmp", str(cfg["out"]))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--nbytes", type=int, nargs="+", default=[4096, 1605632])
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    import flwr

    with tempfile.TemporaryDirectory() as tmp, LocalFederation(Path(tmp)) as fed:
        began = time.perf_counter()
        app = fed.root / "app"
        app.mkdir()
        (app / "pyproject.toml").write_text(APP_TOML)
        (app / "roundtrip_app.py").write_text(APP_PY)
        out = fed.root / "roundtrip.json"
        fed.start_superlink()
        fed.start_supernode("supernode")
        done = subprocess.run(
            ["flwr", "run", str(app), "localhost", "--run-config",
             f"out='{out}' messages={args.messages} "
             f"nbytes='{','.join(map(str, args.nbytes))}'"],
            env=fed.env, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            raise SystemExit(done.stdout + done.stderr)
        deadline = time.monotonic() + 60 + 15 * args.messages * len(args.nbytes)
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        if not out.exists():
            raise SystemExit("no timings came back\n" + fed.log("superlink")[-1500:]
                             + fed.log("supernode")[-1500:])
        seconds = json.loads(out.read_text())["seconds"]
        total = time.perf_counter() - began
    record = {
        "command": f"python benchmarks/flower_roundtrip.py --messages {args.messages} "
        f"--nbytes {' '.join(map(str, args.nbytes))}",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()), "flwr": flwr.__version__,
        "round_trip_s": seconds,
        "median_round_trip_s": {k: statistics.median(v) for k, v in seconds.items()},
        "total_s": total,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "flower_roundtrip.json", json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
