"""Start the engine server as a child process, and keep it running.

The dashboard (``streamlit run app.py``) uses this when ``BATCHLAB_ENGINE_URL`` is not
set: it starts ``python -m core.server`` on a free loopback port, so the engine measures in
its own interpreter and the pages only draw. The child watches its parent and drains and
exits when the parent is gone; :meth:`ServerProcess.ensure` restarts it (on the same port)
if it died, so the pages recover.

Example:
    >>> server = ServerProcess().start()
    >>> engine = RemoteEngine(server.url)
    >>> server.stop()
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from core.errors import EngineUnavailableError
from .guard import TOKEN_ENV

__all__ = ["ServerProcess", "free_port", "split_cores", "pin_process"]

_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the server binds it with SO_REUSEADDR)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def split_cores(cpus: set[int] | None = None) -> tuple[set[int], set[int]] | None:
    """The cores for the engine server and the cores for the dashboard (and what it starts),
    from ``cpus`` (default: the cores this process may use); None below two cores.

    The engine gets all but a quarter (at least one core each): drawing a page costs the
    dashboard and the browser most of a core per refresh, and on a shared core that shows
    up in the engine's tail latency (issue #23: p99 6.3 ms -> 22 ms with the Monitor open).
    """
    cores = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
    if len(cores) < 2:
        return None
    ui = max(1, len(cores) // 4)
    return set(cores[:-ui]), set(cores[-ui:])


def pin_process(cpus: set[int]) -> int:
    """Keep every thread of this process (and what it starts later) on ``cpus``; returns
    how many threads were moved. (``os.sched_setaffinity(0, ...)`` moves the calling
    thread only.)"""
    moved = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
            moved += 1
        except (ProcessLookupError, ValueError):  # the thread ended meanwhile
            pass
    return moved


class ServerProcess:
    """``python -m core.server`` as a child of this process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 args: Sequence[str] = (), log_path: str | Path | None = None,
                 cpus: set[int] | None = None, root: str | Path | None = None,
                 token: str | None = None) -> None:
        self.cpus = cpus  # CPU affinity of the child (benchmarks pin it to one core)
        # The checkout whose core.server runs (benchmarks compare against an older commit
        # in a git worktree); this one by default.
        self.root = Path(root) if root else _ROOT
        #: The token the child asks of its clients (given in its environment, never on
        #: its command line, where other users could read it): pass it to RemoteEngine.
        self.token = token or os.environ.get(TOKEN_ENV, "").strip() or secrets.token_urlsafe(24)
        self.host = host
        self.port = port or free_port(host)
        self.args = list(args)
        self.log_path = Path(log_path) if log_path else None
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.restarts = 0
        self.restarted_at: float | None = None  # time.monotonic() of the last restart
        #: How the child ended the last time it died: {"code": returncode, "at": epoch s}
        self.last_exit: dict[str, float] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _spawn(self) -> None:
        cmd = [sys.executable, "-m", "core.server", "--host", self.host, "--port",
               str(self.port), "--parent-pid", str(os.getpid()), *self.args]
        env = dict(os.environ, PYTHONPATH=str(self.root) + os.pathsep
                   + os.environ.get("PYTHONPATH", ""), **{TOKEN_ENV: self.token})
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            cpus = self.cpus
            self._proc = subprocess.Popen(
                cmd, cwd=self.root, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        finally:
            if self.log_path:
                out.close()

    def start(self, wait_s: float = 120.0) -> ServerProcess:
        """Start the child and wait until it answers (building the demo models takes a
        few seconds)."""
        with self._lock:
            self._stopping.clear()
            if self._proc is None or self._proc.poll() is not None:
                self._spawn()
        self.wait_ready(wait_s)
        return self

    def wait_ready(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            proc = self._proc
            if proc is not None and proc.poll() is not None:
                raise EngineUnavailableError(
                    f"the engine server exited with code {proc.returncode} while starting"
                    + (f"; see {self.log_path}" if self.log_path else "")
                    + f" (command: python -m core.server --port {self.port})")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() >= deadline:
                    raise EngineUnavailableError(
                        f"the engine server on {self.url} did not answer within "
                        f"{wait_s:g} s") from None
                time.sleep(0.1)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ensure(self, wait_s: float = 120.0) -> bool:
        """Restart the child if it died; True when this call did (several callers at once
        restart it once)."""
        with self._lock:
            if self.alive() or self._stopping.is_set():
                restarted = False
            else:
                if self._proc is not None:  # reaped by poll() in alive()
                    self.last_exit = {"code": self._proc.returncode, "at": time.time()}
                self.restarts += 1
                self.restarted_at = time.monotonic()
                self._spawn()
                restarted = True
        self.wait_ready(wait_s)
        return restarted

    def keep_alive(self, interval_s: float = 0.5) -> ServerProcess:
        """Watch the child from a thread of this process: when it dies (a crash, a kill),
        it is reaped at once and started again on the same port, without waiting for
        anyone to notice (with ``--state-dir`` it comes back with its models and settings).
        :meth:`stop` ends the watch."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, args=(interval_s,),
                                             name="engine-server-watch", daemon=True)
            self._watcher.start()
        return self

    def _watch(self, interval_s: float) -> None:
        while not self._stopping.wait(interval_s):
            proc = self._proc
            if proc is None or proc.poll() is None:
                continue
            try:
                self.ensure(wait_s=120)
            except EngineUnavailableError:  # it failed to start: tried again next tick
                continue

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (the server drains accepted requests), then SIGKILL past ``timeout_s``."""
        self._stopping.set()  # no restart from the watch while it stops
        with self._lock:
            proc = self._proc
            if proc is None:
                return None
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            return proc.returncode
