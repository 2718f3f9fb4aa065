"""The experiment history: runs (configuration, environment, results) in one SQLite file.

Results are kept exactly (every float to the last bit, NaN and infinities too: the wire's
frame encoding, :mod:`core.protocol.wire`); runs saved before that, as pandas' JSON, are
still read. The file has a size bound (``max_bytes``, default
:data:`DEFAULT_MAX_BYTES` or ``$BATCHLAB_HISTORY_MAX_MB``): past it, the oldest runs are
dropped first, and a run larger than the whole bound is refused.

Example:
    >>> store = ExperimentStore("data/experiments.sqlite")
    >>> run_id = store.save("mlp sweep", {"model": "mlp"}, frame)
    >>> store.usage()
    {'runs': 1, 'bytes': 5120, 'max_bytes': 268435456, 'dropped': 0}
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from core.errors import ConfigError
from core.protocol import WireCodec, WireError

__all__ = ["ExperimentStore", "environment", "default_store", "DEFAULT_MAX_BYTES",
           "MAX_BYTES_ENV"]

#: The history's default size bound (bytes of stored runs).
DEFAULT_MAX_BYTES = 256 * 2**20
#: The environment variable that sets it, in MiB.
MAX_BYTES_ENV = "BATCHLAB_HISTORY_MAX_MB"

_FRAMES = WireCodec([])
_WIRE_PREFIX = '{"__t": "df"'


def environment() -> dict[str, Any]:
    """Where a run was measured: machine and library versions."""
    import onnxruntime

    return {"machine": platform.machine(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "pandas": pd.__version__}


def default_store() -> ExperimentStore:
    """The history file: ``$BATCHLAB_DATA_DIR/experiments.sqlite`` (default ``data/``)."""
    return ExperimentStore(Path(os.environ.get("BATCHLAB_DATA_DIR", "data")) / "experiments.sqlite")


class ExperimentStore:
    """Experiment runs in one SQLite file: configuration, environment and results.

    Example:
        >>> store = ExperimentStore("data/experiments.sqlite")
        >>> run_id = store.save("mlp sweep", {"model": "mlp"}, frame)
        >>> store.list()[["id", "name", "points"]]
    """

    def __init__(self, path: str | Path, max_bytes: int | None = None) -> None:
        self.path = Path(path)
        if max_bytes is None:
            raw = os.environ.get(MAX_BYTES_ENV, "").strip()
            try:
                max_bytes = int(float(raw) * 2**20) if raw else DEFAULT_MAX_BYTES
            except ValueError:
                raise ConfigError(f"{MAX_BYTES_ENV} is the history's size bound in MiB (a "
                                  f"number), got {raw!r}") from None
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 2**16:
            raise ConfigError(f"the history's size bound is at least 65536 bytes (64 KiB), "
                              f"got {max_bytes!r}")
        self.max_bytes = max_bytes
        #: The runs of jobs still running (set by the engine's lab): the bound keeps them.
        self.running_runs: Callable[[], set[int]] = set
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            # set before the first table: deleted runs give their pages back to the file
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            db.execute("""CREATE TABLE IF NOT EXISTS runs (
                id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
                created REAL NOT NULL, config TEXT NOT NULL, environment TEXT NOT NULL,
                results TEXT NOT NULL)""")
            columns = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
            for column in ("points", "bytes"):  # added later: older files get them here
                if column not in columns:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {column} INTEGER")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def save(self, name: str, config: dict[str, Any], results: pd.DataFrame,
             env: dict[str, Any] | None = None) -> int:
        """Store a run; returns its id. The oldest runs are dropped first when the history
        would grow past its size bound; a run larger than the whole bound is refused."""
        try:
            text = json.dumps(_FRAMES.encode(results), allow_nan=False)
        except WireError:  # a column of values the wire does not carry: as pandas writes it
            text = results.to_json(orient="split", double_precision=15, default_handler=str)
        row = (name, time.time(), json.dumps(config, default=str),
               json.dumps(env or environment()), text)
        size = sum(len(v) for v in (row[0], row[2], row[3], row[4]))
        if size > self.max_bytes:
            raise ConfigError(
                f"run {name!r} takes {size:,} bytes, more than the whole history's bound of "
                f"{self.max_bytes:,} bytes; raise the bound ({MAX_BYTES_ENV}, in MiB) or "
                "save fewer points")
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time decides what to drop
            cur = db.execute(
                "INSERT INTO runs (name, created, config, environment, results, points, bytes) "
                "VALUES (?,?,?,?,?,?,?)", (*row, len(results), size))
            run_id = int(cur.lastrowid)
            self._bound(db, run_id)
        return run_id

    def update(self, run_id: int, config: dict[str, Any],
               results: pd.DataFrame | None = None) -> None:
        """Replace a run's configuration (and results): a long run saved point by point,
        so what it measured is kept if it is cut short."""
        text = None
        if results is not None:
            try:
                text = json.dumps(_FRAMES.encode(results), allow_nan=False)
            except WireError:
                text = results.to_json(orient="split", double_precision=15,
                                       default_handler=str)
        cfg = json.dumps(config, default=str)
        if text is not None and len(cfg) + len(text) > self.max_bytes:
            # (it went past the bound and the bound dropped every run, itself too; an
            # adversary)
            raise ConfigError(
                f"run {run_id} now takes over {len(cfg) + len(text):,} bytes, more than the "
                f"whole history's bound of {self.max_bytes:,} bytes; raise the bound "
                f"({MAX_BYTES_ENV}, in MiB) or save fewer points")
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            if text is None:
                cur = db.execute("UPDATE runs SET config = ?, bytes = NULL WHERE id = ?",
                                 (cfg, run_id))
            else:
                cur = db.execute("UPDATE runs SET config = ?, results = ?, points = ?, "
                                 "bytes = NULL WHERE id = ?",
                                 (cfg, text, len(results), run_id))
            if cur.rowcount == 0:
                raise KeyError(f"no experiment run with id {run_id}")
            self._bound(db, run_id)

    def _bound(self, db: sqlite3.Connection, written: int) -> None:
        """Drop the oldest runs until the stored runs fit the bound (inside the caller's
        transaction): never ``written``, the run just saved, nor the run of a job still
        running (:attr:`running_runs`; a sweep's own run went while it ran, and the sweep
        failed; an adversary). A run left partial by a job that ended goes like any."""
        db.execute("UPDATE runs SET bytes = length(name) + length(config) + "
                   "length(environment) + length(results) WHERE bytes IS NULL")
        total = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM runs").fetchone()[0]
        if total <= self.max_bytes:
            return
        dropped = 0
        kept = {written, *self.running_runs()}
        for run_id, size in db.execute("SELECT id, bytes FROM runs ORDER BY id").fetchall():
            if run_id in kept:
                continue
            if total <= self.max_bytes:
                break
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            total -= size
            dropped += 1
        db.execute("INSERT INTO meta (key, value) VALUES ('dropped', ?) ON CONFLICT(key) "
                   "DO UPDATE SET value = value + excluded.value", (dropped,))
        db.commit()
        db.execute("PRAGMA incremental_vacuum")

    def usage(self) -> dict[str, int]:
        """How much the history holds: runs, bytes, its bound, how many old runs the bound
        has dropped so far, and the file (on the machine that keeps it)."""
        with self._connect() as db:
            runs, size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(COALESCE(bytes, length(name) + length(config) "
                "+ length(environment) + length(results))), 0) FROM runs").fetchone()
            row = db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        return {"runs": int(runs), "bytes": int(size), "max_bytes": self.max_bytes,
                "dropped": int(row[0]) if row else 0, "path": str(self.path)}

    def list(self) -> pd.DataFrame:
        with self._connect() as db:
            rows = db.execute("SELECT id, name, created, config, points FROM runs "
                              "ORDER BY id DESC").fetchall()
            missing = [r[0] for r in rows if r[4] is None]  # runs saved before 'points'
            for run_id in missing:
                text = db.execute("SELECT results FROM runs WHERE id = ?",
                                  (run_id,)).fetchone()[0]
                db.execute("UPDATE runs SET points = ? WHERE id = ?",
                           (len(_results(text)), run_id))
            if missing:
                rows = db.execute("SELECT id, name, created, config, points FROM runs "
                                  "ORDER BY id DESC").fetchall()
        return pd.DataFrame([{"id": r[0], "name": r[1], "created": pd.Timestamp(r[2], unit="s"),
                              "config": json.loads(r[3]), "points": int(r[4])} for r in rows],
                            columns=["id", "name", "created", "config", "points"])

    def get(self, run_id: int) -> dict[str, Any]:
        with self._connect() as db:
            r = db.execute("SELECT id, name, created, config, environment, results FROM runs "
                           "WHERE id = ?", (run_id,)).fetchone()
        if r is None:
            raise KeyError(f"no experiment run with id {run_id}")
        return {"id": r[0], "name": r[1], "created": r[2], "config": json.loads(r[3]),
                "environment": json.loads(r[4]), "results": _results(r[5])}

    def delete(self, run_id: int) -> bool:
        with self._connect() as db:
            return db.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount > 0

    def compare(self, run_ids: Sequence[int]) -> pd.DataFrame:
        """The runs' result rows side by side, tagged with run id and name."""
        frames = []
        for rid in run_ids:
            run = self.get(rid)
            frames.append(run["results"].assign(run_id=rid, run=run["name"]))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def export_csv(self, run_id: int, path: str | Path | None = None) -> str:
        csv = self.get(run_id)["results"].to_csv(index=False)
        if path is not None:
            Path(path).write_text(csv)
        return csv


def _results(text: str) -> pd.DataFrame:
    """A run's stored results: the exact wire form, or pandas' JSON (runs saved before)."""
    if text.startswith(_WIRE_PREFIX):
        return _FRAMES.decode(json.loads(text))
    from io import StringIO
    return pd.read_json(StringIO(text), orient="split")
