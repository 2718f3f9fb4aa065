"""The Grafana dashboard in docs/grafana (issue 26): every metric and label its queries use
is in a real engine server's /metrics, as prometheus_client's own parser reads it. (No
Prometheus runs here, so the queries themselves are not evaluated.)"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from core import Engine, build_demo_model
from core.serving import EngineServer

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "batchlab-dashboard.json"
_METRIC = re.compile(r"\b((?:nv|batchlab)_[a-z_]+)\b")
_BY = re.compile(r"\bby \(([^)]*)\)")
_SELECTOR = re.compile(r"\{([^}]*)\}")


def _exposition() -> dict[str, set[str]]:
    """Sample names of a live server's /metrics, each with the label names it carries."""
    with Engine(demo_models=False) as engine:
        engine.load_model(build_demo_model("tiny"), name="tiny")
        for _ in range(3):
            engine.predict("tiny", engine.sample_input("tiny"))
        with EngineServer(engine, port=0) as server:
            text = urllib.request.urlopen(server.url + "/metrics", timeout=30).read().decode()
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def test_every_query_of_the_dashboard_reads_what_the_server_exports():
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    assert len(exprs) >= 10
    exported = _exposition()
    used = set()
    for expr in exprs:
        names = _METRIC.findall(expr)
        assert names, expr
        for name in names:
            assert name in exported, f"{name} (in {expr!r}) is not in /metrics: " \
                                     f"{sorted(exported)}"
            used.add(name)
        labels = set()
        for group in _BY.findall(expr) + _SELECTOR.findall(expr):
            labels |= {part.split("=")[0].strip().rstrip("!~") for part in group.split(",")
                       if part.strip()}
        labels |= set(re.findall(r"label_values\([^,]+,\s*(\w+)\)", expr))
        labels.discard("le")  # the histogram's buckets
        for name in names:
            have = exported[name] | ({"le"} if name.endswith("_bucket") else set())
            assert labels <= have, f"{expr!r} uses labels {labels - have} {name} lacks"
    # the panels a Triton user looks for, by what they show
    titles = {p["title"] for p in dash["panels"]}
    assert {"Inference request rate", "Queue time vs compute time per request", "Load ratio",
            "Rows per batch"} <= titles
    assert {"nv_inference_request_success", "nv_inference_request_failure",
            "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us",
            "batchlab_batch_size_bucket"} <= used
