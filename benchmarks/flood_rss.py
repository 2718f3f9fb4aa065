"""The engine server's resting memory after floods of large requests: this tree vs a
baseline commit.

Each tree's server (``--no-probe --no-demo-models``, a 1 GiB budget) gets an identity
model of 8 Mi floats a row and takes ``--rounds`` rounds of floods: binary 32 MiB requests
and answers (12 clients x 6 each), then JSON bodies of 1.5 Mi floats (6 clients x 4 each).
After each round, ``--rest`` seconds of nothing, then its RSS (``/proc/<pid>/status``);
the peak (VmHWM) at the end. What glibc keeps of what a burst freed shows here, not in any
Python object count.

Run: ``python -m benchmarks.flood_rss --baseline REV [--rounds 4] [--rest 5]``.
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

WIDTH = 8 * 2**20   # floats a row of the binary flood: 32 MiB


def _identity() -> bytes:
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "ident",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "K"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "K"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                             ).SerializeToString()


def _status(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def _flood(srv: ServerProcess, body: bytes, headers: dict, clients: int, each: int) -> dict:
    codes: dict = {}
    lock = threading.Lock()

    def run() -> None:
        for _ in range(each):
            conn = http.client.HTTPConnection(srv.host, srv.port, timeout=300)
            try:
                conn.request("POST", "/v2/models/ident/infer", body=body,
                             headers={**headers, "Authorization": f"Bearer {srv.token}"})
                resp = conn.getresponse()
                resp.read()
                key = resp.status
            except OSError as err:
                key = type(err).__name__
            finally:
                conn.close()
            with lock:
                codes[key] = codes.get(key, 0) + 1
    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


def _binary() -> tuple[bytes, dict]:
    x = np.random.default_rng(0).random((1, WIDTH), dtype=np.float32).tobytes()
    head = json.dumps({"inputs": [{"name": "x", "shape": [1, WIDTH], "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(x)}}],
                       "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    return head + x, {"Inference-Header-Content-Length": str(len(head)),
                      "Content-Type": "application/octet-stream"}


def _json() -> tuple[bytes, dict]:
    n = 2**20 + 2**19
    body = ('{"inputs":[{"name":"x","shape":[1,%d],"datatype":"FP32","data":[%s]}],'
            '"outputs":[{"name":"y","parameters":{"binary_data":true}}]}'
            % (n, ",".join(["0.123456"] * n))).encode()
    return body, {"Content-Type": "application/json"}


def one_tree(root: Path | None, rounds: int, rest_s: float, log) -> dict:
    srv = ServerProcess(args=["--no-probe", "--no-demo-models", "--memory-budget-mib", "1024"],
                        root=root).start()
    try:
        back = RemoteEngine.connect(srv.url, token=srv.token)
        back.load_model(_identity(), name="ident")
        back.close()
        time.sleep(rest_s)
        resting = [_status(srv.pid, "VmRSS")]
        binary, text = _binary(), _json()
        for r in range(rounds):
            codes = _flood(srv, *binary, clients=12, each=6)
            codes.update({f"json {k}": v for k, v in
                          _flood(srv, *text, clients=6, each=4).items()})
            time.sleep(rest_s)
            resting.append(_status(srv.pid, "VmRSS"))
            log(f"  round {r + 1}: {codes}; resting {resting[-1]:,.0f} MiB")
        return {"resting_mib": resting, "peak_mib": _status(srv.pid, "VmHWM")}
    finally:
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="commit to compare against")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--rest", type=float, default=5.0, help="seconds of rest before a reading")
    args = ap.parse_args()
    out = {}
    with baseline_tree(args.baseline) as base:
        for label, root in (("this tree", None), (args.baseline, base)):
            print(f"{label}:", flush=True)
            out[label] = r = one_tree(root, args.rounds, args.rest, print)
            print(f"{label}: resting RSS {' -> '.join(f'{m:,.0f}' for m in r['resting_mib'])} "
                  f"MiB, peak {r['peak_mib']:,.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
