"""A real MLServer on loopback, serving ONNX models, as a peer for tests and benchmarks.

MLServer (PyPI ``mlserver``) lives in a virtualenv of its own, ``.venv-mlserver`` (``make
mlserver-env``), because its fastapi/protobuf/grpcio pins clash with ours; this module only
writes MLServer's model repository and runs ``.venv-mlserver/bin/mlserver start FOLDER`` as a
child process, so it needs nothing from that virtualenv. The models are served by
``core/peers/mlserver_runtime.py`` (ONNX Runtime, one intra-op thread), copied into the folder
as the top-level module ``batchlab_onnx_runtime``: MLServer puts the folder on ``sys.path``,
and importing ``core.peers.mlserver_runtime`` there would run ``core/__init__.py``, which needs
packages MLServer's virtualenv does not have.

``max_batch_size > 0`` turns on MLServer's adaptive batching (``max_batch_size`` and
``max_batch_time`` in each ``model-settings.json``). ``declare_tensors=False`` reproduces a
server whose model metadata lists no inputs or outputs.

Example:
    >>> from core.models import build_demo_model
    >>> with MLServerProcess({"tiny": build_demo_model("tiny")}, max_batch_size=16,
    ...                      max_batch_time_s=0.005).start() as server:
    ...     server.url                  # 'http://127.0.0.1:PORT', Open Inference Protocol v2
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping

__all__ = ["MLServerProcess", "DEFAULT_VENV", "INSTALL_HINT", "RUNTIME_MODULE"]

_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_VENV = _ROOT / ".venv-mlserver"
INSTALL_HINT = "make mlserver-env"
# The runtime as the MLServer process imports it (a copy of mlserver_runtime.py in the folder).
RUNTIME_MODULE = "batchlab_onnx_runtime"
_RUNTIME_SOURCE = Path(__file__).resolve().parent / "mlserver_runtime.py"
_HOST = "127.0.0.1"
_LOG_TAIL_BYTES = 4000


def _free_ports(n: int, host: str = _HOST) -> list[int]:
    """``n`` distinct TCP ports nobody listens on now (all bound at once, so no repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _http_status(url: str, timeout_s: float = 1.0) -> int | None:
    """The status of ``GET url``, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def _wait_exited(pid: int, timeout_s: float) -> bool:
    """Wait until child ``pid`` has exited, without reaping it; False past ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                return True
        except ChildProcessError:  # already reaped
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


class MLServerProcess:
    """MLServer as a child process (own process group) serving ``models`` on loopback.

    ``models`` maps a model name to serialized ONNX bytes or the path of an ``.onnx`` file.

    Example:
        >>> server = MLServerProcess({"mlp": build_demo_model("mlp")}).start()
        >>> server.url, server.port, server.pid
        >>> server.stop()
    """

    def __init__(self, models: Mapping[str, bytes | str | os.PathLike[str]], *,
                 max_batch_size: int = 0, max_batch_time_s: float = 0.0,
                 declare_tensors: bool = True, parallel_workers: int = 0,
                 venv: str | os.PathLike[str] = DEFAULT_VENV,
                 log_path: str | os.PathLike[str] | None = None) -> None:
        if not models:
            raise ValueError("models must name at least one model")
        for name in models:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"model names must be plain folder names, got {name!r}")
        if not isinstance(max_batch_size, int) or max_batch_size < 0:
            raise ValueError(f"max_batch_size must be an int >= 0, got {max_batch_size!r}")
        if max_batch_time_s < 0:
            raise ValueError(f"max_batch_time_s must be >= 0, got {max_batch_time_s!r}")
        if not isinstance(parallel_workers, int) or parallel_workers < 0:
            raise ValueError(f"parallel_workers must be an int >= 0, got {parallel_workers!r}")
        # 0: inference on MLServer's own event loop, one process (quick to start: tests);
        # MLServer's default is 1, a separate worker process doing the inference.
        self.parallel_workers = parallel_workers
        self.models = dict(models)
        self.max_batch_size = max_batch_size
        self.max_batch_time_s = float(max_batch_time_s)
        self.declare_tensors = declare_tensors
        self.venv = Path(venv)
        self._log_path = Path(log_path) if log_path else None
        self._folder: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._metrics_port: int | None = None

    # -- availability -------------------------------------------------------------------------

    @classmethod
    def binary(cls, venv: str | os.PathLike[str] = DEFAULT_VENV) -> Path:
        return Path(venv) / "bin" / "mlserver"

    @classmethod
    def available(cls, venv: str | os.PathLike[str] = DEFAULT_VENV) -> bool:
        """Whether MLServer's virtualenv is installed (its ``mlserver`` command exists)."""
        return os.access(cls.binary(venv), os.X_OK)

    @classmethod
    def missing_message(cls, venv: str | os.PathLike[str] = DEFAULT_VENV) -> str:
        return (f"MLServer is not installed: {cls.binary(venv)} is missing; "
                f"run `{INSTALL_HINT}` (creates {Path(venv).name} from requirements-mlserver.txt)")

    # -- properties ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("MLServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the Open Inference Protocol (REST) root."""
        return f"http://{_HOST}:{self.port}"

    @property
    def metrics_url(self) -> str:
        """MLServer's Prometheus ``/metrics`` (a port of its own)."""
        if self._metrics_port is None:
            raise RuntimeError("MLServer is not started")
        return f"http://{_HOST}:{self._metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> MLServerProcess:
        """Write the model repository, start MLServer and wait until it and every model are
        ready; RuntimeError (with the tail of MLServer's log) past ``timeout_s``."""
        if self._proc is not None:
            raise RuntimeError("MLServer is already started")
        if not self.available(self.venv):
            raise RuntimeError(self.missing_message(self.venv))
        self._folder = Path(tempfile.mkdtemp(prefix="batchlab-mlserver-"))
        try:
            self._write_repository(self._folder)
            if self._log_path is None:
                self._log_path = self._folder / "mlserver.log"
            env = {k: v for k, v in os.environ.items()
                   if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("MLSERVER_")}
            env["PYTHONUNBUFFERED"] = "1"
            env["BATCHLAB_PARENT_PID"] = str(os.getpid())  # the runtime stops with us
            env["BATCHLAB_MLSERVER_FOLDER"] = str(self._folder)  # ...and removes this
            with open(self._log_path, "ab") as log:
                # cwd: MLServer keeps Prometheus files under ./.metrics by default.
                self._proc = subprocess.Popen(
                    [str(self.binary(self.venv)), "start", str(self._folder)],
                    cwd=self._folder, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True)
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _write_repository(self, folder: Path) -> None:
        http_port, grpc_port, metrics_port = _free_ports(3)
        settings = {"host": _HOST, "http_port": http_port, "grpc_port": grpc_port,
                    "metrics_port": metrics_port, "parallel_workers": self.parallel_workers, "debug": False,
                    "metrics_dir": str(folder / ".metrics")}
        (folder / "settings.json").write_text(json.dumps(settings, indent=2))
        shutil.copyfile(_RUNTIME_SOURCE, folder / f"{RUNTIME_MODULE}.py")
        for name, model in self.models.items():
            model_dir = folder / name
            model_dir.mkdir()
            if isinstance(model, (bytes, bytearray, memoryview)):
                (model_dir / "model.onnx").write_bytes(bytes(model))
            else:
                shutil.copyfile(model, model_dir / "model.onnx")
            model_settings: dict = {
                "name": name, "implementation": f"{RUNTIME_MODULE}.OnnxRuntimeModel",
                "platform": "onnxruntime",
                "parameters": {"uri": "./model.onnx",
                               "extra": {"declare_tensors": self.declare_tensors}}}
            if self.max_batch_size > 0:
                model_settings["max_batch_size"] = self.max_batch_size
                model_settings["max_batch_time"] = self.max_batch_time_s
            (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
        self._port, self._metrics_port = http_port, metrics_port

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = ["/v2/health/ready", *(f"/v2/models/{n}/ready" for n in self.models)]
        while pending:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"MLServer exited with code {self._proc.returncode} while "
                                   f"starting; its log ends:\n{self.log_tail()}")
            if _http_status(self.url + pending[0]) == 200:
                pending.pop(0)
                continue
            if time.monotonic() >= deadline:
                raise RuntimeError(f"MLServer on {self.url} was not ready within {timeout_s:g} s "
                                   f"({pending[0]} not 200); its log ends:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        """The last ``max_bytes`` of MLServer's output."""
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        with open(self._log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", "replace")

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM MLServer's process group, SIGKILL it past ``timeout_s``, remove the folder.
        Returns MLServer's exit code (None if it never started)."""
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            if proc.returncode is None:
                self._signal_group(proc.pid, signal.SIGTERM)
                if not _wait_exited(proc.pid, timeout_s):
                    self._signal_group(proc.pid, signal.SIGKILL)
                    _wait_exited(proc.pid, 5.0)
                # MLServer has exited but is not reaped yet, so its process group id cannot
                # have been reused: anything it left in the group goes too.
                self._signal_group(proc.pid, signal.SIGKILL)
            code = proc.wait()
        if self._folder is not None:
            if self._log_path is not None and self._folder in self._log_path.parents:
                self._log_path = None  # the log lived in the folder
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        return code

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> MLServerProcess:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
