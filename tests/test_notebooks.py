"""Every notebook under notebooks/ runs top to bottom without error and draws a chart
(nbclient)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path: Path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    # Each notebook shows its results as a chart at least once (issue 14: one drew none).
    charts = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert charts, f"{path.name} draws no chart"
    # A table of one object's repr is no table (remote_info became a dataclass, and the
    # notebook's pd.Series of it showed "0    RemoteInfo(url=..."; a newcomer)
    texts = [o["data"]["text/plain"] for c in nb.cells if c.cell_type == "code"
             for o in c.get("outputs", []) if "text/plain" in o.get("data", {})]
    reprs = [t[:80] for t in texts if re.match(r"0\s+[A-Z]\w+\(", t)]
    assert not reprs, reprs
