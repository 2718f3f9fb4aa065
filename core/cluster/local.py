"""A Ray cluster of several node processes on this machine (for tests, benchmarks and
notebooks trying the cluster features without one): ``ray start --head`` and ``ray start
--address=...`` per further node, on free ports, each with its own CPUs and a custom
resource naming it (``node0``, ``node1``...); stopped on exit by ending its own processes
only (its nodes' daemons, found by its session folder, and everything they started): another
Ray on the machine is left alone.

Example:
    >>> with LocalCluster(nodes=2, cpus_per_node=1) as address:
    ...     d = deploy("mlp", model, address=address, num_replicas=2, replica_cpus=0.5)

A real cluster needs none of this: pass its address (``HOST:PORT`` of its head) instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from core.errors import ConfigError

__all__ = ["LocalCluster"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """``nodes`` Ray node processes on this machine (see the module docstring). As a
    context manager it gives the head's address (``127.0.0.1:PORT``)."""

    def __init__(self, nodes: int = 2, cpus_per_node: float = 1.0,
                 spread_requests: bool = True) -> None:
        if not (isinstance(nodes, int) and 1 <= nodes <= 16):
            raise ConfigError(f"nodes must be a whole number from 1 to 16, got {nodes!r}")
        self.nodes = nodes
        self.cpus = cpus_per_node
        self.ray = str(Path(sys.executable).with_name("ray"))
        if not Path(self.ray).exists():
            raise ConfigError(f"Ray is not installed ({self.ray} missing): pip install "
                              "'ray[serve]' (make test installs it from requirements-dev.txt)")
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        if spread_requests:
            # Serve's proxy prefers replicas on its own node: at low load every request
            # would go to one replica. Off, requests spread over all of them.
            self.env.update(RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING="0",
                            RAY_SERVE_PROXY_PREFER_LOCAL_AZ_ROUTING="0")
        if "RAY_AUTH_MODE" not in self.env and (
                "RAY_AUTH_TOKEN" in self.env or "RAY_AUTH_TOKEN_PATH" in self.env
                or (Path.home() / ".ray" / "auth_token").exists()):
            # A head started with a token on the machine (left by any local Ray) turns token
            # authentication on; `ray start --address` does not, and every worker node was
            # refused ("InvalidAuthToken"): the same mode for all, and this process's client.
            self.env["RAY_AUTH_MODE"] = "token"
        self.address: str | None = None
        self._tmp: Path | None = None

    def _run(self, *args: str) -> None:
        out = subprocess.run([self.ray, *args], env=self.env, capture_output=True, text=True,
                             timeout=180)
        if out.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} failed (exit {out.returncode}):\n"
                               f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")

    def start(self) -> str:
        self._tmp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short socket paths
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        try:
            self._run("start", "--head", f"--port={port}", f"--num-cpus={self.cpus:g}",
                      "--include-dashboard=false", "--disable-usage-stats",
                      f"--temp-dir={self._tmp}", f"--resources={json.dumps({'node0': 1})}")
            for k in range(1, self.nodes):
                self._run("start", f"--address={self.address}", f"--num-cpus={self.cpus:g}",
                          "--disable-usage-stats",
                          f"--resources={json.dumps({f'node{k}': 1})}")
        except BaseException:
            self.stop()
            raise
        # This process's own Serve client reads them too.
        for k in ("RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING",
                  "RAY_SERVE_PROXY_PREFER_LOCAL_AZ_ROUTING", "RAY_AUTH_MODE"):
            if k in self.env:
                os.environ[k] = self.env[k]
        return self.address

    def stop(self) -> None:
        """Disconnect this process and end this cluster's processes (its nodes' daemons and
        every worker and actor they started; no other Ray of the machine)."""
        try:
            import ray
            # (only if connected to this cluster: another one keeps its Serve)
            if ray.is_initialized() and self.address and \
                    ray.get_runtime_context().gcs_address.rpartition(":")[2] == \
                    self.address.rpartition(":")[2]:
                from ray import serve
                try:
                    serve.shutdown()
                finally:
                    ray.shutdown()
        finally:
            if self._tmp is not None:
                seen: set[int] = set()
                while (new := [p for p in self._processes() if p not in seen]):
                    seen.update(new)           # (again: one may have started meanwhile)
                    _end(new)
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    def _processes(self) -> list[int]:
        """This cluster's processes: those naming its session folder (GCS, raylets, their
        monitors, the dashboard) or its GCS address (the client server), and all their
        descendants (workers, actors, agents)."""
        tmp, port = str(self._tmp), (self.address or ":").rpartition(":")[2]
        table = _proc_table()
        # (Ray's own programs only: its binaries and modules, .../ray/... or ray.xxx)
        roots = {pid for pid, (_, cmd) in table.items() if _RAYISH.search(cmd)
                 and (tmp in cmd or (port and f":{port} " in cmd + " "))}
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        found, todo = set(), list(roots)
        while todo:
            pid = todo.pop()
            if pid not in found and pid != os.getpid():
                found.add(pid)
                todo.extend(children.get(pid, []))
        return sorted(found)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


_RAYISH = re.compile(r"/ray/|(^|[\s/])ray\.|ray::")


def _proc_table() -> dict[int, tuple[int, str]]:
    """Every process of the machine: pid -> (parent pid, command line)."""
    out: dict[int, tuple[int, str]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue               # ended meanwhile
        out[int(d.name)] = (ppid, cmd)
    return out


def _end(pids: list[int], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL what is left after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace_s
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            time.sleep(0.05)
        if not pids:
            return


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
