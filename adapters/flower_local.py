"""Flower's deployment engine on this machine: a SuperLink and SuperNodes on 127.0.0.1.

:class:`LocalFederation` runs the commands of docs/federated.md (insecure, for localhost
only) with this Python interpreter, each process in its own process group, and stops
them all however the block that uses it ends. ``tests/test_flower.py`` runs its
deployment and fault tests on it, ``benchmarks/flower_roundtrip.py`` its measurement.

Example:
    >>> port = free_port()
    >>> 1024 <= port <= 65535
    True
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)

#: Flower's commands and their entry points, run by this interpreter (the one with
#: shieldsplit installed) whatever ``PATH`` says.
FLOWER_COMMANDS = {
    "flower-superlink": "flwr.superlink.cli:flower_superlink",
    "flower-supernode": "flwr.supernode.cli:flower_supernode",
    "flower-superexec": "flwr.supercore.cli:flower_superexec",
    "flwr": "flwr.cli.app:app",
    "flwr-clientapp": "flwr.supernode.cli:flwr_clientapp",
    "flwr-serverapp": "flwr.superlink.cli:flwr_serverapp",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now.

    Returns:
        The port number.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, seconds: float) -> None:
    """Wait until something answers HTTP on 127.0.0.1:``port``.

    Args:
        port: the port.
        seconds: how long to wait.

    Raises:
        TimeoutError: nothing answered in time.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return
        except urllib.error.HTTPError:  # it answers: it is up
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"nothing answered on 127.0.0.1:{port} in {seconds} s")


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the process group of ``proc`` (gone already: nothing happens).

    Args:
        proc: a process started in its own session.
        sig: the signal (``signal.SIGTERM``, ``signal.SIGKILL``).
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


class LocalFederation:
    """A SuperLink and SuperNodes on 127.0.0.1 (insecure), each in its own process group.

    Args:
        root: a folder for the commands, Flower's home (``FLWR_HOME``, whose
            ``config.toml`` names the SuperLink ``localhost``) and one log per process.

    Attributes:
        port: the SuperLink's port.
        env: the environment every command runs in (``PATH`` and ``FLWR_HOME`` set).
        procs: the started processes, in order.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        bindir = root / "bin"
        bindir.mkdir(parents=True, exist_ok=True)
        for name, target in FLOWER_COMMANDS.items():
            module, func = target.split(":")
            script = bindir / name
            script.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {func}\n"
                              f"sys.exit({func}())\n")
            script.chmod(0o755)
        self.port = free_port()
        home = root / "flwr_home"
        home.mkdir(exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "localhost"\n\n[superlink.localhost]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')
        self.env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
                    "FLWR_HOME": str(home), "OMP_NUM_THREADS": "1"}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start a command in its own session, its output in ``root/<name>.log``.

        Args:
            name: the log's name.
            *args: the command line.

        Returns:
            The process.
        """
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_superlink(self, *, timeout: float = 120.0) -> subprocess.Popen[bytes]:
        """Start the SuperLink (Fleet, Control and ServerAppIo on one HTTP port) and wait
        for it to answer.

        Args:
            timeout: seconds to wait.

        Returns:
            The process.
        """
        proc = self.start("superlink", "flower-superlink", "--insecure", "--host",
                          "127.0.0.1", "--port", str(self.port),
                          "--disable-runtime-dependency-installation")
        wait_http(self.port, timeout)
        return proc

    def start_supernode(self, name: str, node_config: str = "") -> subprocess.Popen[bytes]:
        """Start a SuperNode connected to the SuperLink.

        Args:
            name: its log's name.
            node_config: its ``--node-config`` (e.g. ``"partition-id=0 num-partitions=2"``).

        Returns:
            The process.
        """
        args = ["flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{self.port}",
                "--port", str(free_port())]
        if node_config:
            args += ["--node-config", node_config]
        return self.start(name, *args)

    def submit(self, app: Path, run_config: str, *, timeout: float = 180.0) -> Path:
        """``flwr run`` a copy of the Flower app ``app`` on this federation.

        Args:
            app: the app's folder (its ``pyproject.toml`` declares the ``ServerApp``).
            run_config: ``--run-config`` entries after the report path.
            timeout: seconds ``flwr run`` may take to submit the run.

        Returns:
            Where the run's JSON report will be written (``out=`` of the run config).

        Raises:
            RuntimeError: ``flwr run`` failed; the message holds its output.
        """
        copy = self.root / "app"
        shutil.copytree(app, copy)
        out = self.root / "result.json"
        done = subprocess.run(
            ["flwr", "run", str(copy), "localhost", "--run-config", f"out='{out}' {run_config}"],
            env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(done.stdout + done.stderr)
        return out

    def log(self, name: str) -> str:
        """The log of the process started as ``name`` so far."""
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM every process group, SIGKILL those still alive after 15 s."""
        for proc in self.procs:
            signal_group(proc, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=15)

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


__all__ = ["FLOWER_COMMANDS", "LocalFederation", "free_port", "signal_group", "wait_http"]
