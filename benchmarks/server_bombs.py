"""Issue 25's table replayed against a real engine server (``python -m core.server``), with
its own memory budget, while another model keeps serving.

For each way in: what the server answered, the server process's peak resident memory
during it (VmHWM, reset before each row) against its resident memory before plus the
budget, its resident memory after, and the p99 of a steady 50 req/s of one-row requests to
``mlp`` during the row against the same p99 alone. Last, SIGTERM while a ``Loop`` whose
trip count the request sets runs with the longest timeout the server allows: how long the
server takes to exit, and what the held request is answered.

Usage:
    .venv/bin/python -m benchmarks.server_bombs [--budget-mib 1024] [--only hung --repeat 6]
Prints one JSON line per row; writes benchmarks/results/server_bombs.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import http.client
import json
import time

import numpy as np
from onnx import TensorProto, helper

from benchmarks.common import RESULTS
from core import BatchConfig, SessionConfig
from core.models import build_demo_model, build_loop_model, build_memory_bomb
from core.models.demo import build_onnx
from core.serving import RemoteEngine, ServerProcess


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def shape_model() -> bytes:
    """ConstantOfShape(x): the request says how big the answer is."""
    return build_onnx("shape", [helper.make_node(
        "ConstantOfShape", ["x"], ["y"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))],
        [], [helper.make_tensor_value_info("x", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["A", "B"])], "output bomb")


def big_model(mib: int) -> bytes:
    """x [N,1] + a constant of ``mib`` MiB, summed: a large file."""
    n = mib * 2**20 // 4
    w = helper.make_tensor("w", TensorProto.FLOAT, [n], np.zeros(n, np.float32).tobytes(), raw=True)
    return build_onnx("big", [helper.make_node("ReduceSum", ["w"], ["s"], keepdims=0),
                              helper.make_node("Add", ["x", "s"], ["y"])], [w],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])], "big")


_STEADY = """
import http.client, json, sys, time
port, path = int(sys.argv[1]), sys.argv[2]
body = json.dumps({"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32",
                               "data": [0.0] * 256}]}).encode()
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
nxt = time.monotonic()
with open(path, "w", buffering=1) as out:
    while True:
        nxt += 0.02
        t = time.perf_counter()
        try:
            conn.request("POST", "/v2/models/mlp/infer", body)
            r = conn.getresponse(); r.read(); ok = r.status == 200
        except OSError:
            ok = False
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        out.write(f"{time.time():.6f} {(time.perf_counter() - t) * 1000:.3f} {int(ok)}\\n")
        time.sleep(max(0.0, nxt - time.monotonic()))
"""


class Steady:
    """50 one-row requests a second to mlp, from a process of its own (so this script's own
    work, building payloads and reading answers, does not show in its latencies)."""

    def __init__(self, port: int) -> None:
        import subprocess
        import sys
        import tempfile
        self.path = tempfile.mktemp(suffix=".steady")
        self.proc = subprocess.Popen([sys.executable, "-c", _STEADY, str(port), self.path])

    def _rows(self) -> list[tuple[float, float, int]]:
        try:
            with open(self.path) as f:
                return [(float(a), float(b), int(c)) for a, b, c in
                        (line.split() for line in f if line.count(" ") == 2)]
        except FileNotFoundError:
            return []

    def p99(self, t0: float, t1: float) -> float:
        part = [lat for t, lat, _ in self._rows() if t0 <= t <= t1]
        return float(np.percentile(part, 99)) if part else float("nan")

    def errors(self) -> int:
        return sum(1 for *_, ok in self._rows() if not ok)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def post(port: int, path: str, body: bytes, headers: dict | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, body, headers or {})
        r = conn.getresponse()
        raw = r.read()
        return r.status, raw[:200].decode(errors="replace")
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-mib", type=int, default=1024)
    ap.add_argument("--only", default=None, metavar="WORDS",
                    help="only the rows whose label contains WORDS (e.g. 'hung'); no SIGTERM")
    ap.add_argument("--repeat", type=int, default=1, help="run the rows this many times")
    args = ap.parse_args(argv)
    server = ServerProcess(args=["--no-demo-models", "--memory-budget-mib",
                                 str(args.budget_mib)]).start()
    pid = server.pid
    engine = RemoteEngine(server.url, token=server.token)
    out: dict = {"budget_mib": args.budget_mib, "rows": []}
    try:
        engine.load_model(build_demo_model("mlp"), name="mlp")
        engine.load_model(shape_model(), name="shape")
        engine.load_model(build_loop_model(10**7), name="hang",   # ~6 s a run
                          batch=BatchConfig(max_batch_size=1, max_wait_ms=0.0,
                                            timeout_ms=300_000))
        steady = Steady(server.port)
        t_alone = time.time()
        time.sleep(6)
        out["p99_alone_ms"] = steady.p99(t_alone + 1, time.time())

        pad = "x" * (32 * 2**20)   # 32 MiB bodies for one-row requests
        flood_body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32",
                                             "data": [1.0]}],
                                 "parameters": {"timeout_ms": 300_000, "pad": pad}}).encode()

        def hung_flood() -> str:
            conns, codes = [], []
            for _ in range(40):
                c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
                try:
                    c.request("POST", "/v2/models/hang/infer", flood_body)
                except OSError:
                    pass  # refused before its body was read: the connection closed
                conns.append(c)
            time.sleep(1.0)
            held = engine.status()
            for c in conns:
                try:
                    c.sock.settimeout(0.2)
                    codes.append(c.getresponse().status)
                except (OSError, AttributeError, http.client.HTTPException):
                    codes.append("no answer yet")
                c.close()                                  # the clients go away
            time.sleep(1.0)
            counts = {k: codes.count(k) for k in set(codes)}
            return (f"answers {counts}; queued while held {held['queue_depth']}, after the "
                    f"clients left {engine.queue_depth('hang')}")

        def output_bomb() -> str:
            req = {"inputs": [{"name": "x", "shape": [2], "datatype": "INT64",
                               "data": [8000, 8000]}]}
            a = post(server.port, "/v2/models/shape/infer", json.dumps(req).encode())
            req["parameters"] = {"binary_data_output": True}
            b = post(server.port, "/v2/models/shape/infer", json.dumps(req).encode())
            return f"as JSON: {a[0]} {a[1][:90]!r}; as binary: {b[0]}"

        def probes() -> str:
            with cf.ThreadPoolExecutor(8) as pool:
                futs = [pool.submit(engine.measure_memory, "mlp", [1, 8]) for _ in range(8)]
                done = [f.result() for f in futs]
            return f"{len(done)} measured, one at a time"

        big_data = big_model(190)
        empties = (b'{"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", '
                   b'"data": [' + b",".join([b"[]"] * (18 * 2**20)) + b"]}]}")

        def uploads() -> str:
            data = big_data
            with cf.ThreadPoolExecutor(3) as pool:
                futs = [pool.submit(engine.load_model, data, f"big{i}") for i in range(3)]
                said = []
                for f in futs:
                    try:
                        f.result()
                        said.append("loaded")
                    except Exception as err:  # noqa: BLE001 - what the server said
                        said.append(f"{type(err).__name__}: {str(err)[:80]}")
            for i in range(3):
                try:
                    engine.unload_model(f"big{i}")
                except Exception:  # noqa: BLE001 - not loaded
                    pass
            return "; ".join(said)

        def upload_bomb() -> str:
            try:
                engine.load_model(build_memory_bomb(16000), name="fold")
                return "loaded"
            except Exception as err:  # noqa: BLE001
                return f"{type(err).__name__}: {str(err)[:100]}"

        engine.load_model(build_loop_model(None), name="xloop")  # the request sets its trips

        def xloop_body(x: float, timeout_us: float) -> bytes:
            return json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32",
                                           "data": [x]}],
                               "parameters": {"timeout": timeout_us}}).encode()

        def input_loop() -> str:
            said = []
            for label, body in (("timeout 1e12 us", xloop_body(1e12, 1e12)),
                                ("timeout 601 s", xloop_body(1e12, 601e6)),
                                ("x = 1e12 with a 3 s timeout", xloop_body(1e12, 3e6)),
                                ("then x = 2", xloop_body(2.0, 3e6))):
                t = time.monotonic()
                status, text = post(server.port, "/v2/models/xloop/infer", body)
                said.append(f"{label}: {status} after {time.monotonic() - t:.1f} s "
                            f"({text[:60]!r})")
            return "; ".join(said)

        def threads() -> str:
            try:
                engine.load_model(build_demo_model("tiny"), name="t",
                                  session=SessionConfig(intra_op_threads=1024))
                return "loaded"
            except Exception as err:  # noqa: BLE001
                return f"{type(err).__name__}: {str(err)[:80]}"

        rows = [
            ("memory bomb upload (folds 1 GB at session creation)", upload_bomb),
            ("54 MiB JSON body of empty lists", lambda: "{} {}".format(*post(
                server.port, "/v2/models/mlp/infer", empties))),
            ("ConstantOfShape [8000, 8000] answered", output_bomb),
            ("hung model, 40 queued 32 MiB requests, clients gone", hung_flood),
            ("8 concurrent memory probes", probes),
            ("3 concurrent uploads of a 190 MiB model", uploads),
            ("intra_op_threads=1024", threads),
            ("Loop whose trip count the request sets (x = 1e12)", input_loop),
        ]
        rows = [(label, act) for label, act in rows
                if args.only is None or args.only in label] * args.repeat
        for label, act in rows:
            before = status_kib(pid, "VmRSS")
            reset_peak(pid)
            w0 = time.time()
            t0 = time.monotonic()
            said = act()
            w1 = time.time()
            row = {"row": label, "said": said, "s": round(time.monotonic() - t0, 1),
                   "rss_before_mib": before // 1024,
                   "peak_mib": status_kib(pid, "VmHWM") // 1024,
                   "rss_after_mib": status_kib(pid, "VmRSS") // 1024,
                   "within_budget": status_kib(pid, "VmHWM") <= before + args.budget_mib * 1024,
                   "mlp_p99_ms": round(steady.p99(w0, w1), 1)}
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
        steady.stop()
        out["mlp_errors"] = steady.errors()
        if args.only is not None:
            print(json.dumps({"p99_alone_ms": out["p99_alone_ms"], "mlp_errors": out["mlp_errors"]}))
            return out
        # SIGTERM while such a Loop runs with the longest timeout the server allows: the
        # server drains for its close timeout (10 s), fails the run's request, and exits.
        held = cf.ThreadPoolExecutor(1).submit(post, server.port, "/v2/models/xloop/infer",
                                               xloop_body(1e12, 600e6))
        time.sleep(1.0)
        t0 = time.monotonic()
        code = server.stop(timeout_s=60.0)
        try:
            answered = "{} {}".format(*held.result(30))[:160]
        except Exception as err:  # noqa: BLE001 - what the client saw
            answered = f"{type(err).__name__}: {err}"[:160]
        out["sigterm"] = {"s": round(time.monotonic() - t0, 1), "exit": code,
                          "held_request": answered}
        print(json.dumps(out["sigterm"]), flush=True)
    finally:
        engine.close()
        server.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "server_bombs.json").write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}))
    return out


if __name__ == "__main__":
    main()
