"""What a model's size costs a Ray deployment: ``deploy`` (2 replicas, until both answer) and
``configure`` (a batch setting reaching every replica) with a tiny model and a large one
(``--mib``), on a two-node Ray cluster on this machine (``LocalCluster``).

Run it on this tree, and on another commit from a worktree for a before/after (the script
by its path, the other tree first on ``PYTHONPATH``):

    .venv/bin/python -m benchmarks.deploy_bytes [--mib 150] [--configures 3]
    git worktree add -f /tmp/wt REV
    PYTHONPATH=/tmp/wt .venv/bin/python benchmarks/deploy_bytes.py --label REV
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))   # (run by its path; PYTHONPATH first)

from benchmarks.server_bombs import big_model  # noqa: E402
from core.cluster import LocalCluster, configure, deploy, undeploy  # noqa: E402
from core.models import build_demo_model  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=150)
    ap.add_argument("--configures", type=int, default=3)
    ap.add_argument("--label", default="this tree")
    args = ap.parse_args()
    import core
    models = {"tiny": build_demo_model("tiny"), f"{args.mib} MiB": big_model(args.mib)}
    out = {"label": args.label, "core": str(Path(core.__file__).parent), "rows": []}
    with LocalCluster(nodes=2, cpus_per_node=1) as address:
        port = _port()
        for label, data in models.items():
            t = time.perf_counter()
            deploy("m", data, address=address, num_replicas=2, replica_cpus=0.5,
                   http_port=port)
            dep_s = time.perf_counter() - t
            conf = []
            for k in range(args.configures):
                t = time.perf_counter()
                configure("m", max_batch_size=8 + k)
                conf.append(time.perf_counter() - t)
            t = time.perf_counter()
            undeploy("m")
            row = {"model": label, "bytes": len(data), "deploy_s": round(dep_s, 2),
                   "configure_s": [round(c, 2) for c in conf],
                   "configure_median_s": round(statistics.median(conf), 2),
                   "undeploy_s": round(time.perf_counter() - t, 2)}
            print(json.dumps(row), flush=True)
            out["rows"].append(row)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
