"""Issue 25's remote row replayed: a remote model's server answering gzip bombs (60 KB on
the wire, 60 MB of JSON each) while a healthy remote model keeps serving through the same
engine.

Three processes: a hostile Open Inference Protocol server (its own process, a few lines of
``http.server``), a Batchlab engine server serving ``tiny`` (the healthy target), and this
one, whose in-process engine has both as remote models. A thread sends 50 one-row
requests a second to the healthy one; after a quiet stretch (its p99 alone), ``--bombs``
requests go to the hostile one at once. Reported: what they were answered, this
process's peak resident memory during the row (VmHWM, reset before it) and after it, and
the healthy model's p99 and worst latency during it against alone.

Usage:
    .venv/bin/python -m benchmarks.remote_bombs [--bombs 6] [--mb 60]
Prints a JSON line; writes benchmarks/results/remote_bombs.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

from benchmarks.common import RESULTS
from benchmarks.server_bombs import reset_peak, status_kib
from core import Engine, EngineConfig
from core.models import build_demo_model
from core.serving import RemoteEngine, ServerProcess

_HOSTILE = r"""
import gzip, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
mb = float(sys.argv[1])
n = int(mb * 1e6 / 2)                      # "0," per value
body = (b'{"model_name": "m", "outputs": [{"name": "y", "datatype": "FP32", "shape": ['
        + str(n).encode() + b'], "data": [' + b"0," * (n - 1) + b'0]}]}')
bomb = gzip.compress(body, 9)
meta = json.dumps({"name": "m", "platform": "bomb", "inputs": [
    {"name": "x", "datatype": "FP32", "shape": [-1, 4]}], "outputs": [
    {"name": "y", "datatype": "FP32", "shape": [-1, 4]}]}).encode()

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def _send(self, code, data, gz=False):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        if gz:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path.rstrip("/") in ("/v2/models/m", "/v2/models/m/versions/1"):
            self._send(200, meta)
        elif self.path.endswith("/ready") or self.path.endswith("/live"):
            self._send(200, b'{"ready": true}')
        else:
            self._send(404, b'{"error": "no"}')
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._send(200, bomb, gz=True)

srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.daemon_threads = True
print(srv.server_address[1], len(bomb), len(body), flush=True)
srv.serve_forever()
"""


class Steady(threading.Thread):
    """50 one-row requests a second to ``name`` through ``engine``, each latency kept with
    its time."""

    def __init__(self, engine: Engine, name: str) -> None:
        super().__init__(daemon=True)
        self.engine, self.name = engine, name
        self.rows: list[tuple[float, float, bool]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        x = np.ones((1, 4), np.float32)
        nxt = time.monotonic()
        while not self.stop.is_set():
            nxt += 0.02
            t = time.perf_counter()
            try:
                self.engine.predict(self.name, x)
                ok = True
            except Exception:  # noqa: BLE001 - counted
                ok = False
            self.rows.append((time.time(), (time.perf_counter() - t) * 1000, ok))
            self.stop.wait(max(0.0, nxt - time.monotonic()))

    def between(self, t0: float, t1: float) -> list[float]:
        return [lat for t, lat, _ in list(self.rows) if t0 <= t <= t1]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bombs", type=int, default=6)
    ap.add_argument("--mb", type=float, default=60.0, help="JSON per answer, decompressed")
    ap.add_argument("--budget-mib", type=int, default=1024)
    args = ap.parse_args(argv)
    hostile = subprocess.Popen([sys.executable, "-c", _HOSTILE, str(args.mb)],
                               stdout=subprocess.PIPE, text=True)
    port, wire, plain = (int(v) for v in hostile.stdout.readline().split())
    healthy = ServerProcess(args=["--no-demo-models"]).start()
    with RemoteEngine(healthy.url, token=healthy.token) as control:
        control.load_model(build_demo_model("tiny"), name="tiny")
    engine = Engine(EngineConfig(demo_models=False, memory_budget_bytes=args.budget_mib * 2**20))
    out: dict = {"bombs": args.bombs, "bomb_on_wire_bytes": wire, "bomb_json_bytes": plain,
                 "budget_mib": args.budget_mib}
    steady = None
    try:
        engine.add_remote("good", healthy.url, "tiny",
                          headers={"Authorization": f"Bearer {healthy.token}"})
        engine.add_remote("bad", f"http://127.0.0.1:{port}", "m", timeout_s=60)
        steady = Steady(engine, "good")
        steady.start()
        t_alone = time.time()
        time.sleep(6)
        alone = steady.between(t_alone + 1, time.time())
        pid = os.getpid()
        rss_before = status_kib(pid, "VmRSS") // 1024
        reset_peak(pid)
        t0 = time.time()
        x = np.ones((1, 4), np.float32)
        with cf.ThreadPoolExecutor(args.bombs) as pool:
            futs = [pool.submit(engine.predict, "bad", x) for _ in range(args.bombs)]
            said = []
            for f in futs:
                try:
                    f.result()
                    said.append("answered")
                except Exception as err:  # noqa: BLE001 - what it said is the result
                    said.append(f"{type(err).__name__}: {str(err)[:160]}")
        t1 = time.time()
        time.sleep(1.0)
        during = steady.between(t0, t1 + 1.0)
        out.update({
            "said": sorted(set(said)), "s": round(t1 - t0, 2),
            "rss_before_mib": rss_before, "peak_mib": status_kib(pid, "VmHWM") // 1024,
            "rss_after_mib": status_kib(pid, "VmRSS") // 1024,
            "good_p99_alone_ms": round(float(np.percentile(alone, 99)), 2),
            "good_p99_during_ms": round(float(np.percentile(during, 99)), 2),
            "good_max_during_ms": round(max(during), 2),
            "good_requests_during": len(during),
            "good_errors": sum(1 for *_, ok in steady.rows if not ok)})
        out["within_budget"] = out["peak_mib"] <= rss_before + args.budget_mib
    finally:
        if steady is not None:
            steady.stop.set()
            steady.join(5)
        engine.close()
        healthy.stop()
        hostile.terminate()
        hostile.wait(10)
    print(json.dumps(out))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "remote_bombs.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
