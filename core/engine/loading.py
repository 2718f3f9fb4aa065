"""Bringing models in: load a model file (checked, optionally tried in a child process
first) or attach a model served elsewhere (``add_remote``), then install it in the registry
— a hot swap when the name is taken and ``replace=True``.

Example:
    >>> loader.load_model(data, "mlp")        # -> ModelInfo
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pandas as pd

from core.config import BatchConfig, EngineConfig, SessionConfig
from core.errors import ConfigError, ModelLoadError, ResourceLimitError
from core.models import (ModelInfo, format_bytes, probe_model, refuse_not_onnx,
                         read_model_source)
from core.remote import (BatchingSource, ServerBatching, connect_remote, declared_tensors,
                         points_at)
from core.models.probe import NOT_SERVABLE, PROBE_COLUMNS, TRIAL_REFUSED, probe_note
from core.models.rowcheck import ROWS_CHECKED, checked_info
from .namespace import Namespace

__all__ = ["Loader"]


class Loader:
    """Loads local models and attaches remote ones (the engine's ``load_model`` and
    ``add_remote``); ``check_open`` and ``check_arms`` are the engine's."""

    def __init__(self, config: EngineConfig, namespace: Namespace, budget_bytes: int,
                 check_open: Callable[[], None],
                 check_arm_compatible: Callable[[str, ModelInfo], None],
                 served_at: set[tuple[str, int]]) -> None:
        self.config = config
        self.ns = namespace
        self.registry = namespace.registry
        self.budget_bytes = budget_bytes
        self._check_open = check_open
        self._check_arm_compatible = check_arm_compatible
        self.served_at = served_at
        #: Where remote models may be (an engine server sets it: core/remote/policy.py);
        #: None: anywhere (an in-process engine's caller is its owner).
        self.outbound_policy: Any = None
        #: The engine's settings guard (``guard(name, what)`` raises to refuse), asked
        #: before a model that exists is replaced, once its name is known.
        self.guard: Callable[[str, str], None] = lambda name, what: None
        # Trial runs in child processes, one at a time (core/models/probe.py).
        self._probe_slot = threading.Semaphore(1)
        self._probes_lock = threading.Lock()
        self._probes_running = self._probes_waiting = 0

    def load_model(self, source: str | Path | bytes | bytearray | memoryview,
                   name: str | None = None, *, replace: bool = False,
                   session: SessionConfig | None = None, batch: BatchConfig | None = None,
                   description: str = "", source_label: str | None = None,
                   probe: bool | None = None, check_rows: bool | None = None) -> ModelInfo:
        self._check_open()
        if check_rows is not None and not isinstance(check_rows, bool):
            raise ConfigError(f"check_rows must be True or False, got {check_rows!r}")
        _check_config("batch", batch, BatchConfig)
        _check_config("session", session, SessionConfig)
        # Built-in demo models are trusted and exempt from the upload size limit.
        limit = 2**62 if source_label == "demo" else self.config.max_model_bytes
        data, where = read_model_source(source, limit)
        if name is None:
            name = Path(where).stem if where != "upload" else None
        if name is None:
            name = "model-" + hashlib.sha256(data).hexdigest()[:8]
        self.ns.check_new_name(name, "model")
        self.ns.check_name_free(name, "model", replace)
        if replace and name in self.registry:   # (a name from the file's stem too: it
            self.guard(name, "replace it")      # went past a guard that saw name=None)
        self.check_room(name, len(data))
        if check_rows is None:   # a hot swap (a sweep's thread swap too) keeps the choice
            check_rows = getattr(self.registry.get(name) if replace else None, "check_rows",
                                 True)
        profile = rows_bad = None
        if probe is None:  # built-in demo models are trusted, like for the size limit
            probe = self.config.probe_models and source_label != "demo"
        if probe:
            # Parsed, checked, opened and run first in a child process under the budget
            # with this session's options: the parse and check (a 168 MiB model of nested
            # subgraphs took 7.65 GB here; an adversary), creating the session (constant
            # folding) or the trial run may blow up there, never here.
            refuse_not_onnx(data)
            # (one row, then the rows the row check runs: they ran in this process, and a
            # model that allocates with the batch's rows took it past the budget there)
            profile = self.probe(data, [1, ROWS_CHECKED], session)
            rows_bad = _rows_failed(profile)
            bad = profile["error"][profile["batch_size"] == 1].dropna()
            if len(bad) and str(bad.iloc[0]).startswith(NOT_SERVABLE):   # (not its memory)
                raise ModelLoadError(f"model {name!r}: {bad.iloc[0][len(NOT_SERVABLE):]}. "
                                     "It was not loaded.")
            if len(bad):
                raise ModelLoadError(
                    f"model {name!r} failed its trial run (one row, in a separate process, "
                    f"memory budget {format_bytes(self.budget_bytes)}): {bad.iloc[0]}. "
                    "It was not loaded.")
            if rows_bad and _not_survivable(rows_bad):
                # (loaded anyway, three one-row requests batched together would do it here:
                # a crash takes the server, an allocation outside the arena its memory; a
                # reviewer)
                raise ModelLoadError(
                    f"model {name!r} failed its trial run of {ROWS_CHECKED} rows (in a "
                    f"separate process, memory budget {format_bytes(self.budget_bytes)}): "
                    f"{rows_bad}. A batch of {ROWS_CHECKED} requests would do the same in the "
                    "server, so it was not loaded. If one row at a time is what it can take, "
                    "re-export it with its batch axis fixed at 1 (it is then served a row at a "
                    "time).")
        loaded = self.registry.build(data, name, session, source_label or where, description)
        if loaded.info.batch_mode == "dynamic" and source_label != "demo":
            # a dynamic axis whose rows see each other: never packed with other requests
            loaded.info = checked_info(loaded, data, min(10.0, self.config.probe_time_limit_s),
                                       check_rows, rows_failed=rows_bad)
        if profile is not None and not loaded.info.batchable:   # (its 3 "rows" ran as 1)
            profile = profile[profile["batch_size"] == 1].reset_index(drop=True)
        if noted := probe_note(profile):   # ids past a table not seen: the trial ran them as 0
            loaded.info = dataclasses.replace(loaded.info, warnings=loaded.info.warnings + (
                f"{TRIAL_REFUSED}: {noted}. It may take "
                "integers in a range the generated ones miss (ids past a table): give it real "
                "inputs (Models page, engine.set_inputs) before traffic, sweeps or warm-up",))
        with self.registry.lock:
            self._check_open()
            self.ns.check_name_free(name, "model", replace)
            if self.registry.get(name) is not None:
                self.guard(name, "replace it")   # (again: a sweep may have started since)
                self._check_arm_compatible(name, loaded.info)
            # again, with what its session holds: another load may have landed meanwhile,
            # and a 4 MB file can hold 440 MB (an adversary)
            try:
                self.check_room(name, len(data), loaded.info.held_bytes)
            except ResourceLimitError:
                self.shed_spare_sessions()   # (its session, cached, no model holds now)
                raise
            self.registry.install(name, loaded, batch, data, profile).check_rows = check_rows
            self.shed_spare_sessions()
        return loaded.info

    @property
    def models_cap(self) -> int:
        """Bytes the loaded models (and spare cached sessions) may take:
        ``max_models_bytes``, by default the memory budget."""
        return self.config.max_models_bytes or self.budget_bytes

    def shed_spare_sessions(self) -> None:
        """Sessions kept cached for models no longer loaded (a reload is then instant) may
        use what the loaded models leave of ``max_models_bytes``: past it, the least
        recently used of them are dropped. Run after a load (a hot swap's old version
        becomes such a session)."""
        cap = self.models_cap
        local = [e for e in self.registry.models.values() if e.remote is None]
        self.registry.cache.shed({e.info.sha256 for e in local},
                                 max(0, cap - sum(_held(e.info) for e in local)))

    def check_room(self, name: str, size: int, held: int | None = None) -> None:
        """Refuse a model of ``size`` bytes under ``name`` (replacing one of that name) that
        would take the loaded models past ``max_models_bytes`` (default: the budget), naming
        the least recently used ones to unload. Each counts what its session holds
        (``held``, measured when it was made; before that, twice its file)."""
        cap = self.models_cap
        others = [(n, e) for n, e in self.registry.models.items()
                  if n != name and e.remote is None]
        used = sum(_held(e.info) for _, e in others)
        held = held or 2 * size
        if used + held <= cap:
            return
        idle = sorted(others, key=lambda ne: ne[1].metrics.counters()["last_batch_wall"] or 0)
        shown = ", ".join(f"{n} ({format_bytes(_held(e.info))})" for n, e in idle[:5])
        raise ResourceLimitError(
            f"model {name!r} ({format_bytes(size)} file, ~{format_bytes(held)} loaded) "
            f"would bring the loaded models to {format_bytes(used + held)}, over the "
            f"{format_bytes(cap)} they may hold (EngineConfig.max_models_bytes; default the "
            f"memory budget); unload one first (least recently used first: {shown})")

    def add_remote(self, name: str, url: str, model: str, version: str | None = None,
                   headers: dict[str, str] | None = None, *, inputs: Any = None,
                   outputs: Any = None, timeout_s: float = 10.0, max_connections: int = 64,
                   binary: bool | None = None, replace: bool = False,
                   batch: BatchConfig | None = None) -> ModelInfo:
        self._check_open()
        _check_config("batch", batch, BatchConfig)
        self.ns.check_new_name(name, "model")
        if points_at(url, self.served_at):
            raise ConfigError(f"{url} is this engine's own server: a remote model of itself "
                              "would send every request back to itself. Use the model "
                              f"{model!r} directly")
        self.ns.check_name_free(name, "model", replace)
        if replace and name in self.registry:
            self.guard(name, "replace it")
        remote = connect_remote(name, url, model, version, headers, inputs=inputs,
                                outputs=outputs, timeout_s=timeout_s,
                                max_connections=max_connections, binary=binary,
                                policy=self.outbound_policy)
        # How to add it again (a server restoring its state after a restart); headers may
        # hold credentials: this stays in the process (and the server's own state folder).
        remote.recipe = {"url": url, "model": model, "version": version,
                         "headers": dict(headers or {}), "inputs": declared_tensors(inputs),
                         "outputs": declared_tensors(outputs), "timeout_s": timeout_s,
                         "max_connections": max_connections, "binary": binary,
                         # (restored without it, an unknown server's batching came back
                         # as "given to add_remote" 32 / 5 ms, the client's defaults; an
                         # adversary)
                         "batch_given": batch is not None}
        if not remote.batching.known and batch is not None:
            # The server does not report them: the caller says how it is deployed.
            remote.batching = ServerBatching(
                batch.max_batch_size, batch.max_wait_ms, BatchingSource.GIVEN,
                remote.batching.configurable)
        cfg = _client_config(batch or self.config.batch, remote.batching)
        try:
            with self.registry.lock:
                self._check_open()
                self.ns.check_name_free(name, "model", replace)
                if self.registry.get(name) is not None:
                    self.guard(name, "replace it")   # (again: a sweep may have started)
                    self._check_arm_compatible(name, remote.info)
                self.registry.install_remote(name, remote, cfg)
        except BaseException:
            remote.target.close()
            raise
        return remote.info

    def probe(self, data: bytes, batch_sizes: Sequence[int],
              session: SessionConfig | None = None,
              time_limit_s: float | None = None) -> pd.DataFrame:
        """``data`` run in a child process under the memory budget (:mod:`core.models.probe`)."""
        opts = session or self.config.session
        with self._probe_turn():
            return probe_model(data, batch_sizes, self.budget_bytes,
                               time_limit_s or self.config.probe_time_limit_s,
                               threads=opts.intra_op_threads,
                               graph_optimization=opts.graph_optimization)

    def probe_each(self, data: bytes, batch_sizes: Sequence[int], time_limit_s: float | None,
                   stop: Any, progress: Any = None) -> pd.DataFrame:
        """:meth:`probe`, a child and a turn of the trial-run slot for each size, until
        ``stop`` is set (one run of every size could not be stopped, and held the slot from
        every upload all along; an adversary); ``progress(done, total, size)`` after each."""
        parts = []
        for k, size in enumerate(batch_sizes):
            if stop.is_set():
                break
            parts.append(self.probe(data, [size], time_limit_s=time_limit_s))
            if progress is not None:
                progress(k + 1, len(batch_sizes), size)
        # (stopped before the first: no child started for an empty frame)
        return (pd.concat(parts, ignore_index=True) if parts else
                pd.DataFrame(columns=PROBE_COLUMNS))

    @contextlib.contextmanager
    def _probe_turn(self) -> Iterator[None]:
        """One probe at a time (each may take the whole budget in its child): the others
        wait their turn, counted in :meth:`loads`."""
        with self._probes_lock:
            self._probes_waiting += 1
        acquired = False
        try:
            self._probe_slot.acquire()
            acquired = True
            with self._probes_lock:
                self._probes_waiting -= 1
                self._probes_running += 1
            yield
        finally:
            with self._probes_lock:
                if acquired:
                    self._probes_running -= 1
                else:
                    self._probes_waiting -= 1
            if acquired:
                self._probe_slot.release()

    def loads(self) -> dict[str, int]:
        """Trial runs (loads of uploads, memory measurements) running and waiting."""
        with self._probes_lock:
            return {"running": self._probes_running, "waiting": self._probes_waiting}


def _client_config(cfg: BatchConfig, server: ServerBatching) -> BatchConfig:
    """The configuration a remote model is shown and swept with: the server's batch
    settings where known (Triton's ``max_batch_size: 0`` shown as 1), the client's queue
    and timeout."""
    known: dict[str, Any] = {}
    if server.max_batch_size is not None:
        known["max_batch_size"] = max(1, server.max_batch_size)
    if server.max_wait_ms is not None:
        known["max_wait_ms"] = server.max_wait_ms
    try:
        return cfg.replace(**known)
    except ConfigError:
        return cfg  # a server value outside Batchlab's ranges: keep ours for display


def _check_config(name: str, value: Any, cls: type) -> None:
    """A ``batch=``/``session=`` argument is one of those configs or None (a dict failed
    deep inside with AttributeError, and over HTTP as a 500)."""
    if value is not None and not isinstance(value, cls):
        raise ConfigError(f"{name} must be a {cls.__name__} (e.g. {cls.__name__}(...) from "
                          f"core.config) or None, got {type(value).__name__} "
                          f"{repr(value)[:60]}")


def _rows_failed(profile: pd.DataFrame | None) -> str | None:
    """Why the trial run of the row check's rows failed in its child process, or None."""
    if profile is None:
        return None
    bad = profile["error"][profile["batch_size"] == ROWS_CHECKED].dropna()
    return str(bad.iloc[0]) if len(bad) else None


#: How a trial run's failure reads when the server would not survive it in its own process
#: (the child died or hung, or an allocation failed): not an error ONNX Runtime returns.
_NOT_SURVIVABLE = ("the probe process", "did not finish within", "bad_alloc",
                   "Failed to allocate", "MemoryError", "could not be created")


def _not_survivable(error: str) -> bool:
    return any(words in error for words in _NOT_SURVIVABLE)


def _held(info: ModelInfo) -> int:
    """What a loaded model's session holds (twice its file where not measured)."""
    return info.held_bytes or 2 * info.size_bytes
