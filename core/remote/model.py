"""A remote model as the engine keeps it: its server, the interface read from the server's
metadata, and what is known of the server's batch settings (:class:`ServerBatching`, typed:
who reported them, and whether Batchlab can change them there).

Example:
    >>> engine.remote_info("mlp-triton").batching
    ServerBatching(max_batch_size=16, max_wait_ms=2.0, source=<BatchingSource.SERVER_CONFIG...>)
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from typing import Any, Sequence
from urllib.parse import quote

import numpy as np

from core.errors import ConfigError
from core.models import ModelInfo
from core.protocol import triton
from .settings import BatchingSource, RemoteInfo, ServerBatching
from .target import OIPTarget, describe_failure, server_words

__all__ = ["RemoteModel", "STATS_TIMEOUT_S"]

#: The longest a server's statistics are waited for (seconds).
STATS_TIMEOUT_S = 3.0


class RemoteModel:
    """A model on an OIP server, as the registry keeps it: the :class:`~core.batching.Backend`
    of a remote model (its info, one synchronous run), its server, and what is known about
    the server's batching (:class:`ServerBatching`, replaced as a whole when it changes)."""

    def __init__(self, name: str, target: OIPTarget, info: ModelInfo, *, server_name: str,
                 server_version: str, kind: str, batching: ServerBatching,
                 declared: bool) -> None:
        self.name = name
        self.target = target
        self.info = info
        self.server_name = server_name
        self.server_version = server_version
        self.kind = kind                # "batchlab", "triton", "mlserver", ... or "oip"
        self.batching = batching
        self.declared = declared        # the server listed the tensors (else the user did)
        self.output_names = [t.name for t in info.outputs]
        self.sizes_run: set[int] = set()
        self.session_config = None      # the server's to choose, not ours
        self.lock = threading.Lock()

    def describe(self) -> RemoteInfo:
        """What the pages show about it."""
        t = self.target
        return RemoteInfo(url=t.url, model=t.model, version=t.version, server=self.server_name,
                          server_version=self.server_version, kind=self.kind,
                          declared=self.declared, binary=t.binary, batching=self.batching)

    def apply_batch(self, max_batch_size: int | None = None,
                    max_wait_ms: float | None = None) -> ServerBatching:
        """Change the server's batch settings for this model where the server lets a client
        (a model load with a Triton ``config``: Triton, a Batchlab server); returns the
        settings read back. Raises :class:`ConfigError` where it does not (MLServer)."""
        t = self.target
        if self.batching.configurable is None:
            raise ConfigError(
                f"{self.server_name} at {t.url} does not let a client change batch settings"
                + (": MLServer reads max_batch_size and max_batch_time from the model's "
                   "model-settings.json at load. Export them (Experiments page, "
                   "core.lab.mlserver_settings) and reload the model there"
                   if self.kind == "mlserver" else "; change them where the model is deployed"))
        load = f"/v2/repository/models/{quote(t.model, safe='')}/load"

        def call(method: str, path: str, body: Any = None) -> Any:
            try:
                status, answer = t.fetch_json(method, path, body)
            except Exception as err:  # aiohttp's and the OS's errors, in words
                raise ConfigError(f"could not change the batch settings of {t.model!r}: "
                                  f"{describe_failure(err, t.url + path, t.timeout_s)}"
                                  ) from None
            if status != 200:
                words = server_words(answer)
                hint = (" (Triton loads models from a client only with "
                        "--model-control-mode=explicit)" if path == load else "")
                raise ConfigError(f"{t.url} answered {status} to {method} {path} while "
                                  f"changing the batch settings of {t.model!r}: {words}{hint}")
            return answer

        config_path = t.model_path + "/config"
        current = call("GET", config_path)
        cfg = current.get("config", current) if isinstance(current, dict) else {}
        cfg = triton.with_batching(cfg, max_batch_size, max_wait_ms)
        call("POST", load, {"parameters": {"config": json.dumps(cfg)}})
        current = call("GET", config_path)
        if isinstance(current, dict):
            mbs, wait = triton.read_batching(current.get("config", current))
            if mbs is None and wait is None:
                return self.batching  # nothing read back: what was known stays, as it was
            with self.lock:
                old = self.batching
                self.batching = replace(
                    old, max_batch_size=mbs if mbs is not None else old.max_batch_size,
                    max_wait_ms=wait if wait is not None else old.max_wait_ms,
                    source=BatchingSource.SERVER_CONFIG, detail=f"GET {config_path}")
        return self.batching

    def server_statistics(self) -> dict[str, Any]:
        """The server's own statistics of this model (Triton's statistics extension:
        Triton, a Batchlab server), as :func:`core.protocol.triton.read_statistics` reads
        them, cumulative since the server started: ``available`` True with ``success``,
        ``mean_queue_ms``, ``mean_compute_ms``, ``mean_batch_rows``, ``batch_sizes``...;
        or ``available`` False and the ``reason`` (a server without the extension:
        MLServer). ``reachable``: whether the server answered at all."""
        t = self.target
        path = t.model_path + "/stats"
        wait_s = min(STATS_TIMEOUT_S, t.timeout_s)  # a page asks on every refresh
        try:
            status, answer = t.fetch_json("GET", path, timeout_s=wait_s)
        except Exception as err:  # aiohttp's and the OS's errors, in words
            return {"available": False, "reachable": False,
                    "reason": describe_failure(err, t.url + path, wait_s)}
        if status != 200:
            return {"available": False, "reachable": True,
                    "reason": f"{self.server_name} at {t.url} answered {status} to GET {path} "
                              f"({server_words(answer)}): it has no statistics extension"}
        read = triton.read_statistics(answer, t.model)
        if read is None:
            return {"available": False, "reachable": True,
                    "reason": f"GET {t.url}{path} answered no statistics for model "
                              f"{t.model!r}"}
        return {"available": True, "reachable": True, "source": f"GET {t.url}{path}", **read}

    def run(self, arrays: Sequence[np.ndarray], run_options: Any = None) -> list[Any]:
        """Run one request synchronously (warm-up); outputs in ``output_names`` order.
        ``run_options``: ONNX Runtime's, whose ``terminate`` (a warm-up's Cancel or time
        limit) ends the wait for the server's answer here too."""
        stop = None if run_options is None else (lambda: bool(run_options.terminate))
        outs = self.target.infer(dict(zip([s.name for s in self.info.inputs], arrays)),
                                 stop=stop)
        rows = arrays[0].shape[0] if arrays and arrays[0].ndim else 1
        self.sizes_run.add(rows)
        return [outs[n] for n in self.output_names] if self.output_names else list(outs.values())
