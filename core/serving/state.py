"""The engine server's state on disk: what a restart (or a crash) brings back.

A model repository in Triton's layout, so the folder is also one Triton can serve::

    STATE/models/NAME/1/model.onnx      the model file
    STATE/models/NAME/config.pbtxt      Triton's batching (max_batch_size, dynamic_batching)
    STATE/models/NAME/batchlab.json     Batchlab's settings: batch (all of BatchConfig),
                                        session options, provenance, content hash, order
    STATE/models/NAME/inputs.npz        its real inputs, when it has some (set_inputs)
    STATE/remotes.json                  remote models: how each was added (headers
                                        included, so the file is readable by its owner only)
    STATE/experiments.json              A/B experiments: arms, split, mode, seed, the
                                        ended segments' reports (and, at a graceful stop,
                                        the one under way)
    STATE/demos_unloaded.json           built-in demo models unloaded (unloaded again at
                                        start: an engine makes them all)
    STATE/jobs.json                     jobs and traffic running at the last save (found
                                        there at start: cut short, stopped by the restart)

:class:`StateDir` writes what changed (:meth:`StateDir.save`, called after every change a
client makes and every ``interval`` seconds for changes the engine makes itself), each file
replaced atomically, so a kill at any moment leaves the previous or the next state, never
half of one. :meth:`StateDir.restore` loads it all into a fresh engine at start, in the
order it was made, and says what came back and what did not (with the reason); a remote
model or experiment that could not come back (its server is down) stays in the folder and
is tried again at the next start. ``batchlab.json`` is authoritative; ``config.pbtxt`` is
written for Triton and not read back.

Example:
    >>> state = StateDir("data/engine-state")
    >>> summary = state.restore(engine)     # {"models": [...], "failed": [...], ...}
    >>> state.save(engine)                  # True when something was written
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from core.config import BatchConfig, SessionConfig
from core.errors import BatchlabError
from core.protocol import triton

__all__ = ["StateDir", "STATE_VERSION", "STATE_ENV", "STATE_INTERVAL_S"]

log = logging.getLogger("batchlab.state")

#: The layout's version, in every ``batchlab.json``.
STATE_VERSION = 1
#: The environment variable naming a server's state folder (``--state-dir``).
STATE_ENV = "BATCHLAB_STATE_DIR"
#: How often a server writes changes the engine made by itself (seconds).
STATE_INTERVAL_S = 2.0


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically (a reader sees the old file or the new)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def _owned(engine: Any, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with each model's own settings where a job (a sweep, a search) holds
    others while it runs: a restart then brings back the user's, not a sweep's point."""
    pinned = {j.target: j.params for j in getattr(engine, "jobs", lambda: [])()
              if not j.finished and j.params.get("own_settings")}
    for model in state["models"] + state["remotes"]:   # (a remote's batch settings too)
        params = pinned.get(model["name"])
        if params:
            model["batch"] = {**model["batch"], **params["own_settings"]}
            if params.get("own_session") and "session" in model:
                model["session"] = params["own_session"]
    return state


def _read_list(path: Path, failed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of a list file (remotes, experiments, jobs); one damaged (not JSON, not a
    list of objects) is moved aside, kept for its owner, and said in ``failed``: it had
    stopped the server from starting."""
    try:
        value = _read_json(path, [])
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            return value
        why = "not a list of objects"
    except (ValueError, OSError) as err:
        why = f"not valid JSON ({' '.join(str(err).split())[:120]})"
    aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
    try:
        path.replace(aside)
        kept = f"; kept as {aside.name}"
    except OSError:
        kept = ""
    failed.append({"name": path.name, "kind": "file", "reason": f"{path} is {why}: nothing in "
                   f"it was restored{kept}"})
    return []


class StateDir:
    """One engine server's state folder (see the module docstring for the layout)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.models = self.root / "models"
        self.models.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(self.root, 0o700)  # remote models' credentials live here
        except OSError:
            pass
        self._lock = threading.Lock()
        self._saved: str | None = None         # fingerprint of the last state written
        self._hashes: dict[str, str] = {}      # model -> sha256 of the file on disk
        self._inputs_saved: dict[str, str] = {}  # model -> digest of its inputs on disk
        # Remote models and experiments that did not come back at start: kept in the
        # files (tried again next start) until a model of that name is made again.
        self._pending_remotes: list[dict[str, Any]] = []
        self._pending_experiments: list[dict[str, Any]] = []
        self._pending_models: set[str] = set()
        self._written: dict[str, str] = {}     # model -> its settings as last written
        self._jobs_saved: str | None = None
        self._stopped = False    # the final save (a graceful stop) was written

    # -- saving ----------------------------------------------------------------------
    def save(self, engine: Any, final: bool = False) -> bool:
        """Write what changed since the last save; True when anything was written.
        ``final`` (a graceful stop): the A/B segments under way are kept too."""
        with self._lock:
            # After the final save (a graceful stop) every save is one: a change answered
            # meanwhile is written, and the segments under way stay kept (a reviewer).
            final = final or self._stopped
            state = _owned(engine, _plain(engine.persistent_state(final=final)))
            names = {m["name"] for m in state["models"]} | {r["name"] for r in state["remotes"]}
            self._pending_remotes = [r for r in self._pending_remotes if r["name"] not in names]
            state["remotes"] += self._pending_remotes
            self._pending_models -= names
            taken = names | set(e["name"] for e in state["experiments"])
            self._pending_experiments = [e for e in self._pending_experiments
                                         if e["name"] not in taken]
            state["experiments"] += self._pending_experiments
            fingerprint = json.dumps(state, sort_keys=True, default=str)
            if fingerprint == self._saved:
                return False
            for order, model in enumerate(state["models"]):
                if not self._save_model(engine, order, model):
                    return True  # it went away meanwhile: the next save writes the rest
            # a model that did not come back at start keeps its folder (tried again next
            # start) until a model of its name is loaded
            keep = {m["name"] for m in state["models"]} | self._pending_models
            for folder in self.models.iterdir():
                if folder.is_dir() and folder.name not in keep:
                    shutil.rmtree(folder, ignore_errors=True)
                    self._hashes.pop(folder.name, None)
                    self._inputs_saved.pop(folder.name, None)
                    self._written.pop(folder.name, None)
            _write(self.root / "remotes.json",
                   json.dumps(state["remotes"], indent=1, default=str).encode(), private=True)
            _write(self.root / "experiments.json",
                   json.dumps(state["experiments"], indent=1).encode())
            _write(self.root / "demos_unloaded.json", json.dumps(
                [{"name": n} for n in state.get("demos_unloaded", [])]).encode())
            self._saved = fingerprint
            self._stopped = final
            return True

    def _save_model(self, engine: Any, order: int, model: dict[str, Any]) -> bool:
        name = model["name"]
        folder = self.models / name
        (folder / "1").mkdir(parents=True, exist_ok=True)
        if self._hashes.get(name) != model["sha256"]:
            try:
                data = engine.model_bytes(name)
            except (BatchlabError, KeyError):
                return False
            if hashlib.sha256(data).hexdigest() != model["sha256"]:
                return False  # replaced while we read it: the next save has the new one
            _write(folder / "1" / "model.onnx", data)
            self._hashes[name] = model["sha256"]
        inputs, path = model.get("inputs"), folder / "inputs.npz"
        if inputs is None:
            path.unlink(missing_ok=True)
        elif self._inputs_saved.get(name) != inputs["sha256"]:
            real = engine.real_inputs(name)
            if real is None or real.digest() != inputs["sha256"]:
                return False  # changed while we read it: the next save has it
            _write(path, real.to_npz())
            self._inputs_saved[name] = inputs["sha256"]
        written = json.dumps({"order": order, **model}, sort_keys=True, default=str)
        if self._written.get(name) == written:
            return True  # its settings are on disk already
        batch = model["batch"]
        try:   # (a model whose requests run alone: Triton must not batch it either)
            batched = engine.model_info(name).batchable
        except (BatchlabError, KeyError):
            return False
        _write(folder / "config.pbtxt", (
            f'name: "{name}"\nplatform: "onnxruntime_onnx"\n' + triton.pbtxt(
                batch["max_batch_size"] if batched else 0, batch["max_wait_ms"],
                max_queue=batch["max_queue"],
                instances=batch.get("instances"),
                intra_op_threads=(model["session"] or {}).get("intra_op_threads"),
                comment="written by Batchlab (core/serving/state.py); Batchlab reads "
                        "batchlab.json")).encode())
        _write(folder / "batchlab.json", json.dumps(
            {"version": STATE_VERSION, "order": order, **model}, indent=1).encode())
        self._written[name] = written
        return True

    def save_running(self, engine: Any) -> None:
        """Record the jobs and the traffic running now: found at the next start, they were
        cut short (stopped) by the restart (traffic stopped went unsaid; a newcomer)."""
        self.save_jobs([
            {"job_id": j.job_id, "kind": j.kind, "target": j.target, "run_id": j.run_id,
             "progress": j.progress, "message": j.message}
            for j in engine.jobs() if not j.finished] + [
            {"kind": "traffic", "target": t.target, "rate_rps": t.rate_rps,
             "pattern": t.pattern, "ends_at": None if t.duration_s is None else
             round(time.time() + t.duration_s - t.elapsed_s)}   # (whole s: one write)
            for t in engine.traffic() if t.running])

    def save_jobs(self, jobs: list[dict[str, Any]]) -> None:
        """Record the jobs running now (kind, model, id, start, their run in the history)."""
        text = json.dumps(jobs, sort_keys=True, default=str)
        with self._lock:
            if text != self._jobs_saved:
                _write(self.root / "jobs.json", text.encode())
                self._jobs_saved = text

    # -- restoring -------------------------------------------------------------------
    def restore(self, engine: Any) -> dict[str, Any]:
        """Load the saved state into ``engine`` (at start); what came back, what did not
        (``failed``: name, kind, reason) and the jobs the restart cut short."""
        done: dict[str, list[Any]] = {"models": [], "remotes": [], "experiments": [],
                                      "failed": []}
        saved = []
        for folder in self.models.iterdir() if self.models.is_dir() else ():
            if not folder.is_dir():
                continue
            meta_path = folder / "batchlab.json"
            why = None
            try:
                meta = json.loads(meta_path.read_text())
                if not isinstance(meta, dict):
                    why = f"{meta_path} holds no settings object"
                elif meta.get("name") != folder.name:
                    why = (f"{meta_path} names model {str(meta.get('name'))[:60]!r}, not "
                           f"its folder's {folder.name!r}")
                else:
                    saved.append(meta)
            except FileNotFoundError:
                why = f"{folder} has no batchlab.json (its settings)"
            except (ValueError, OSError) as err:
                why = f"{meta_path} is not valid JSON ({' '.join(str(err).split())[:120]})"
            if why:   # kept (tried again next start), never deleted as unknown
                self._pending_models.add(folder.name)
                done["failed"].append({"name": folder.name, "kind": "model", "reason": why})
        saved_names = {m.get("name") for m in saved}
        for gone in _read_list(self.root / "demos_unloaded.json", done["failed"]):
            name = gone.get("name")   # a demo model unloaded before: unloaded again
            if name not in saved_names and name in engine.model_names() \
                    and engine.model_info(name).source == "demo":
                try:
                    engine.unload_model(name)
                    done.setdefault("demos_unloaded", []).append(name)
                except BatchlabError as err:
                    done["failed"].append({"name": name, "kind": "demo model",
                                           "reason": f"could not be unloaded again: {err}"})
        for meta in sorted(saved, key=lambda m: m.get("order", 0)
                           if isinstance(m.get("order", 0), (int, float)) else 0):
            self._restore_model(engine, meta, done)
        for recipe in _read_list(self.root / "remotes.json", done["failed"]):
            self._restore_remote(engine, recipe, done)
        for exp in _read_list(self.root / "experiments.json", done["failed"]):
            try:
                engine.create_ab(exp["name"], a=exp["a"], b=exp["b"], b_share=exp["b_share"],
                                 mode=exp["mode"], seed=exp.get("seed"), replace=True,
                                 **{k: exp[k] for k in ("bandit_slo_ms", "bandit_floor")
                                    if k in exp})
                done["experiments"].append(exp["name"])
            except (BatchlabError, KeyError, ValueError, TypeError) as err:
                self._pending_experiments.append(exp)
                done["failed"].append({"name": exp.get("name"), "kind": "experiment",
                                       "reason": str(err)})
                continue
            if "segment" in exp:   # (saved by a version that keeps them: said on its page)
                try:
                    engine.restore_ab_segments(exp["name"], exp)
                    done.setdefault("segments_kept", []).append(exp["name"])
                except Exception as err:  # noqa: BLE001 - the experiment is back without them
                    done["failed"].append({"name": exp["name"], "kind": "experiment's segments",
                                           "reason": f"{type(err).__name__}: {err}"})
        cut = _read_list(self.root / "jobs.json", done["failed"])
        # (traffic due to end before now may have ended by itself before a crash: the
        # saves come 2 s apart; an adversary)
        traffic = [{**j, "may_have_ended": isinstance(j.get("ends_at"), (int, float))
                    and j["ends_at"] <= time.time() + 1}
                   for j in cut if isinstance(j, dict) and j.get("kind") == "traffic"]
        cut = [j for j in cut if not (isinstance(j, dict) and j.get("kind") == "traffic")]
        for job in cut:  # its run in the history says it was cut short, with what it had
            if isinstance(job, dict) and job.get("run_id") is not None:
                try:
                    run = engine.store.get(job["run_id"])
                    engine.store.update(job["run_id"], {
                        **run["config"], "complete": False, "partial": True,
                        "cut_short": "the engine server stopped while it ran"})
                except (KeyError, BatchlabError, OSError):
                    pass
        summary = {"at": time.time(), "root": str(self.root), **done,
                   "jobs_cut_short": cut, "traffic_stopped": traffic}
        _write(self.root / "jobs.json", b"[]")
        self._jobs_saved = "[]"
        self.save(engine)
        return summary

    def _restore_model(self, engine: Any, meta: dict[str, Any],
                       done: dict[str, list[Any]]) -> None:
        name = meta.get("name", "?")
        try:
            path = self.models / name / "1" / "model.onnx"
            batch = BatchConfig(**meta["batch"])
            session = SessionConfig(**meta["session"]) if meta.get("session") else None
            same = (name in engine.model_names() and engine.remote_info(name) is None
                    and engine.model_info(name).sha256 == meta["sha256"]
                    and (session is None or engine.session_config(name) == session))
            if same:  # a demo model, loaded already: its settings (its file is not needed:
                engine.configure(name, **dataclasses.asdict(batch))   # the save rewrites it)
                if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() \
                        == meta["sha256"]:
                    self._hashes[name] = meta["sha256"]   # (there as saved: not rewritten)
            else:
                data = path.read_bytes()
                if hashlib.sha256(data).hexdigest() != meta["sha256"]:
                    raise ValueError(f"{path} is not the file that was saved (its sha256 "
                                     "differs): it was changed or damaged")
                engine.load_model(data, name=name, replace=name in engine.model_names(),
                                  session=session, batch=batch,
                                  source_label=meta.get("source"),
                                  description=meta.get("description") or "",
                                  check_rows=meta.get("check_rows", True) is not False)
                self._hashes[name] = meta["sha256"]
            inputs = meta.get("inputs")
            if inputs:  # its real inputs, under the name they were given
                engine.set_inputs(name, (self.models / name / "inputs.npz").read_bytes(),
                                  "inputs.npz", label=inputs["label"])
                self._inputs_saved[name] = inputs["sha256"]
            done["models"].append(name)
        except (OSError, BatchlabError, KeyError, ValueError, TypeError) as err:
            self._pending_models.add(name)
            done["failed"].append({"name": name, "kind": "model", "reason": str(err)})

    def _restore_remote(self, engine: Any, recipe: dict[str, Any],
                        done: dict[str, list[Any]]) -> None:
        name = recipe.get("name", "?")
        try:
            kwargs = {k: recipe[k] for k in ("url", "model", "version", "headers", "inputs",
                                             "outputs", "timeout_s", "max_connections",
                                             "binary") if k in recipe}
            saved = BatchConfig(**recipe["batch"])
            given = recipe.get("batch_given", True)
            engine.add_remote(name, batch=saved if given else None,
                              replace=name in engine.model_names(), **kwargs)
            if not given:   # (the server's batching stays unknown: the client's own only)
                engine.configure(name, max_queue=saved.max_queue, timeout_ms=saved.timeout_ms)
            done["remotes"].append(name)
        except (BatchlabError, KeyError, ValueError, TypeError) as err:
            self._pending_remotes.append(recipe)
            done["failed"].append({"name": name, "kind": "remote model",
                                   "reason": str(err)})
