"""A Ray cluster of several node processes on this machine (for tests, benchmarks and
notebooks trying the cluster features without one): ``ray start --head`` and ``ray start
--address=...`` per further node, on free ports, each with its own CPUs and a custom
resource naming it (``node0``, ``node1``...); stopped with ``ray stop --force`` on exit,
which stops every Ray of this machine's user: use it where no other Ray runs.

Example:
    >>> with LocalCluster(nodes=2, cpus_per_node=1) as address:
    ...     d = deploy("mlp", model, address=address, num_replicas=2, replica_cpus=0.5)

A real cluster needs none of this: pass its address (``HOST:PORT`` of its head) instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
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
                  "RAY_SERVE_PROXY_PREFER_LOCAL_AZ_ROUTING"):
            if k in self.env:
                os.environ[k] = self.env[k]
        return self.address

    def stop(self) -> None:
        """Disconnect this process and stop every node (``ray stop``)."""
        try:
            import ray
            if ray.is_initialized():
                from ray import serve
                try:
                    serve.shutdown()
                finally:
                    ray.shutdown()
        finally:
            subprocess.run([self.ray, "stop", "--force"], env=self.env, capture_output=True,
                           timeout=120)
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
