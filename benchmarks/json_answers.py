"""Another model's latency while clients ask one model for a large answer as JSON: this
tree vs a baseline commit.

An answer of millions of numbers asked for as JSON (under the server's JSON bound) was
encoded whole (``tolist`` and ``json.dumps``), holding the server's interpreter for
seconds while every other request waited (an adversary: one model's p50 7 ms -> p90
2.3 s). Now it is written in pieces of :data:`core.protocol.oip_answer.JSON_PIECE`
values. This starts the engine server of each tree (``--baseline REV``: a ``git
worktree``), loads ``bigout`` (x[N, 4] tiled to [N, 4 * 2**20]: one row is 4 M values, ~80
MB of JSON), and measures one-row ``mlp`` requests every 20 ms, alone and while
``--clients`` clients ask ``bigout`` for one row as JSON in a loop (their answers are read,
not parsed), alternating the trees, ``--rounds`` times.

Run: ``python -m benchmarks.json_answers --baseline REV [--seconds 6] [--clients 2]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

from benchmarks.common import baseline_tree
from core.serving import RemoteEngine, ServerProcess

K = 2**20


def bigout_model() -> bytes:
    reps = helper.make_tensor("reps", TensorProto.INT64, [2], [1, K])
    graph = helper.make_graph(
        [helper.make_node("Tile", ["x", "reps"], ["y"])], "bigout",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4 * K])],
        initializer=[reps])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def post(port: int, path: str, body: bytes, conn: list) -> tuple[int, int]:
    if not conn:
        conn.append(http.client.HTTPConnection("127.0.0.1", port, timeout=300))
    conn[0].request("POST", path, body=body, headers={"Content-Type": "application/json"})
    resp = conn[0].getresponse()
    return resp.status, len(resp.read())


def probe(port: int, until: float) -> list[float]:
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32",
                                   "data": [0.0] * 256}]}).encode()
    lat, conn = [], []
    while time.monotonic() < until:
        t = time.perf_counter()
        status, _ = post(port, "/v2/models/mlp/infer", body, conn)
        assert status == 200, status
        lat.append((time.perf_counter() - t) * 1000.0)
        time.sleep(0.02)
    return lat


def one(root: Path | None, seconds: float, clients: int) -> dict:
    srv = ServerProcess(args=["--no-probe"], root=root).start()
    try:
        with RemoteEngine.connect(srv.url, token=srv.token) as back:
            back.load_model(bigout_model(), name="bigout")
        port = int(srv.url.rsplit(":", 1)[1])
        probe(port, time.monotonic() + 1.0)   # warm
        alone = probe(port, time.monotonic() + seconds / 2)
        big = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                      "data": [1.0] * 4}]}).encode()
        until = time.monotonic() + seconds
        answers: list[tuple[int, int]] = []

        def hog() -> None:
            conn: list = []
            while time.monotonic() < until:
                answers.append(post(port, "/v2/models/bigout/infer", big, conn))
        hogs = [threading.Thread(target=hog) for _ in range(clients)]
        for h in hogs:
            h.start()
        during = probe(port, until)
        for h in hogs:
            h.join()
        assert {s for s, _ in answers} == {200}, answers
        return {"alone_p50": np.percentile(alone, 50), "alone_p99": np.percentile(alone, 99),
                "p50": np.percentile(during, 50), "p99": np.percentile(during, 99),
                "max": max(during), "answers": len(answers),
                "answer_mb": answers[0][1] / 1e6 if answers else 0.0}
    finally:
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", required=True, metavar="REV")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with baseline_tree(args.baseline) as base:
        for k in range(args.rounds):
            order = (("this tree", None), (args.baseline, base))[::1 - 2 * (k % 2)]
            for name, root in order:
                r = one(root, args.seconds, args.clients)
                print(f"round {k + 1}, {name}: mlp alone p50 {r['alone_p50']:.1f} / p99 "
                      f"{r['alone_p99']:.1f} ms; beside {args.clients} clients' JSON "
                      f"answers ({r['answers']} of {r['answer_mb']:.0f} MB): p50 "
                      f"{r['p50']:.1f}, p99 {r['p99']:.1f}, max {r['max']:.1f} ms",
                      flush=True)

if __name__ == "__main__":
    main()
