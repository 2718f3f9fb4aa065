"""The experiment history: runs (configuration, environment, results) in one SQLite file.

Example:
    >>> store = ExperimentStore("data/experiments.sqlite")
    >>> run_id = store.save("mlp sweep", {"model": "mlp"}, frame)
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = ["ExperimentStore", "environment", "default_store"]


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

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("""CREATE TABLE IF NOT EXISTS runs (
                id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
                created REAL NOT NULL, config TEXT NOT NULL, environment TEXT NOT NULL,
                results TEXT NOT NULL)""")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def save(self, name: str, config: dict[str, Any], results: pd.DataFrame,
             env: dict[str, Any] | None = None) -> int:
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO runs (name, created, config, environment, results) VALUES (?,?,?,?,?)",
                (name, time.time(), json.dumps(config, default=str),
                 json.dumps(env or environment()), results.to_json(orient="split")))
            return int(cur.lastrowid)

    def list(self) -> pd.DataFrame:
        with self._connect() as db:
            rows = db.execute("SELECT id, name, created, config, results FROM runs "
                              "ORDER BY id DESC").fetchall()
        return pd.DataFrame([{"id": r[0], "name": r[1], "created": pd.Timestamp(r[2], unit="s"),
                              "config": json.loads(r[3]),
                              "points": len(json.loads(r[4])["data"])} for r in rows],
                            columns=["id", "name", "created", "config", "points"])

    def get(self, run_id: int) -> dict[str, Any]:
        with self._connect() as db:
            r = db.execute("SELECT id, name, created, config, environment, results FROM runs "
                           "WHERE id = ?", (run_id,)).fetchone()
        if r is None:
            raise KeyError(f"no experiment run with id {run_id}")
        from io import StringIO
        return {"id": r[0], "name": r[1], "created": r[2], "config": json.loads(r[3]),
                "environment": json.loads(r[4]),
                "results": pd.read_json(StringIO(r[5]), orient="split")}

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
