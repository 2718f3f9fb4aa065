"""Does looking perturb the numbers? Engine p99 with the Monitor page open in a browser.

``--mode make-run`` (the default) starts everything the way ``make run`` does, nothing
pinned by hand: ``streamlit run app.py`` starts its own engine server (on a port this script
chooses with ``BATCHLAB_ENGINE_PORT``; the dashboard puts the engine and itself on different
cores, ``core.serving.split_cores``), and a real chromium runs wherever the kernel puts it.
``--no-split`` sets ``BATCHLAB_PIN=0`` (the dashboard splits nothing: issue #23's "before").
``--mode pinned`` is the older setup: the engine server pinned to core 0; the dashboard
(attached with ``BATCHLAB_ENGINE_URL``) and chromium pinned to core 1. The engine's built-in traffic sends 300 req/s (Poisson) to the MLP (max
batch 32, max wait 5 ms, deadline policy). Each trial resets the MLP's metrics, runs
``--seconds``, and reads the engine's own p50/p99; trials alternate between "no browser"
and "Monitor page open" ``--pairs`` times, so both see the same machine. Reported: the
median p99 of each condition and their ratio (the bar of issue #13: within 1.2), and the
CPU seconds of the engine server, the dashboard process and chromium in each trial.

Run: ``python -m benchmarks.observer [--mode make-run|pinned] [--no-split] [--seconds 30]
[--pairs 3] [--rate 300] [--page monitor]``; the JSON goes to
``benchmarks/results/observer[-pinned|-no-split].json``. Needs 2 cores and chromium; run it on an
idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.common import RESULTS, machine_info
from core.serving import RemoteEngine
from core.serving import ServerProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def chromium_cpu_s() -> float:
    total = 0.0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if "chrom" in (d / "comm").read_text():
                    total += cpu_s(int(d.name))
            except OSError:
                pass
    return total


def start_dashboard(engine_url: str | None, port: int, log: Path,
                    extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    env = dict(os.environ, **(extra_env or {}))
    if engine_url:
        env["BATCHLAB_ENGINE_URL"] = engine_url
    else:
        env.pop("BATCHLAB_ENGINE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true",
         "--server.address=127.0.0.1", f"--server.port={port}",
         "--browser.gatherUsageStats=false"],
        cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the dashboard did not start; see {log}")


def server_pid(port: int) -> int:
    """The pid of ``python -m core.server ... --port <port>`` (the dashboard's child)."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"core.server" in argv and str(port).encode() in argv:
                return int(d.name)
    raise RuntimeError(f"no engine server process on port {port}")


def affinity(pid: int) -> list[int]:
    try:
        return sorted(os.sched_getaffinity(pid))
    except OSError:
        return []


def trial(engine: RemoteEngine, rate: float, seconds: float, pids: dict[str, int],
          page=None, dashboard_url: str | None = None) -> dict:
    engine.start_traffic("mlp", rate_rps=rate, pattern="poisson", duration_s=seconds + 30,
                         seed=int(time.time()))
    if page is not None:
        from playwright.sync_api import expect
        page.goto(f"{dashboard_url}/monitor")
        expect(page.get_by_role("heading", name="Monitor", level=1)).to_be_visible(
            timeout=60_000)
        page.wait_for_timeout(2000)  # the live fragment is ticking
    engine.reset_metrics("mlp")
    before = {k: cpu_s(p) for k, p in pids.items()}
    chrome0 = chromium_cpu_s()
    t0 = time.monotonic()
    requests_seen = None
    if page is not None:
        tile = page.locator('[data-testid="stMain"] [data-testid="stMetric"]',
                            has_text="Requests").first.locator('[data-testid="stMetricValue"]')
        page.wait_for_timeout(seconds * 1000)
        requests_seen = tile.inner_text()
    else:
        time.sleep(seconds)
    snap = engine.metrics("mlp")
    wall = time.monotonic() - t0
    cpu = {k: cpu_s(p) - before[k] for k, p in pids.items()}
    cpu["chromium"] = chromium_cpu_s() - chrome0
    engine.stop_traffic("mlp")
    if page is not None:
        page.goto("about:blank")
    return {"browser": page is not None, "seconds": wall, "requests": snap.total_requests,
            "errors": snap.error_count, "p50_ms": snap.p50_ms, "p99_ms": snap.p99_ms,
            "mean_batch": snap.avg_batch_rows, "cpu_s": cpu, "page_requests_tile": requests_seen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("make-run", "pinned"), default="make-run")
    ap.add_argument("--no-split", action="store_true",
                    help="make-run mode with BATCHLAB_PIN=0: nothing pinned at all")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=300.0)
    args = ap.parse_args()
    logs = ROOT / "test-results"
    logs.mkdir(exist_ok=True)
    dash_port = free_port()
    dashboard_url = f"http://127.0.0.1:{dash_port}"
    server = None
    data_dir = tempfile.mkdtemp(prefix="batchlab-observer-")
    token = secrets.token_urlsafe(24)  # the engine server's, given to the dashboard too
    if args.mode == "pinned":
        if len(os.sched_getaffinity(0)) < 2:
            sys.exit("--mode pinned puts the engine and the browser on different cores: it needs 2")
        engine_core, browser_core = sorted(os.sched_getaffinity(0))[:2]
        os.sched_setaffinity(0, {browser_core})  # the dashboard and chromium inherit this
        server = ServerProcess(cpus={engine_core}, log_path=logs / "observer-engine.log",
                               token=token)
        server.start()
        dashboard = start_dashboard(server.url, dash_port, logs / "observer-dashboard.log",
                                    {"BATCHLAB_TOKEN": token})
        engine_url, engine_pid = server.url, server.pid
    else:
        engine_port = free_port()
        dashboard = start_dashboard(None, dash_port, logs / "observer-dashboard.log", {
            "BATCHLAB_ENGINE_PORT": str(engine_port), "BATCHLAB_DATA_DIR": data_dir,
            "BATCHLAB_PIN": "0" if args.no_split else "1", "BATCHLAB_TOKEN": token})
        engine_url, engine_pid = f"http://127.0.0.1:{engine_port}", None
    from playwright.sync_api import sync_playwright
    rows = []
    engine = None
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM,
                                         args=["--disable-gpu", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(dashboard_url)  # the first visit starts the engine (make-run mode)
            engine = RemoteEngine.connect(engine_url, timeout_s=120, token=token)
            engine_pid = engine_pid or server_pid(int(engine_url.rsplit(":", 1)[1]))
            page.wait_for_timeout(5000)
            page.goto("about:blank")
            engine.configure("mlp", max_batch_size=32, max_wait_ms=5.0, policy="deadline")
            pids = {"engine_server": engine_pid, "dashboard": dashboard.pid}
            cores = {"engine_server": affinity(engine_pid), "dashboard": affinity(dashboard.pid)}
            print(f"cores: {cores}", flush=True)
            for k in range(args.pairs):
                for with_browser in ((False, True) if k % 2 == 0 else (True, False)):
                    row = trial(engine, args.rate, args.seconds, pids,
                                page if with_browser else None, dashboard_url)
                    rows.append(row)
                    print(f"{'Monitor open' if with_browser else 'no browser  '}: p50 "
                          f"{row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
                          f"{row['requests']} requests, CPU s {row['cpu_s']}", flush=True)
            browser.close()
    finally:
        if engine is not None:
            engine.close()
        dashboard.terminate()  # in make-run mode its engine server goes with it
        dashboard.wait(30)
        if server is not None:
            server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    def med(browser: bool, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["browser"] == browser)

    def med_cpu(browser: bool, who: str) -> float:
        return statistics.median(r["cpu_s"][who] / r["seconds"] for r in rows
                                 if r["browser"] == browser)

    summary = {
        "p99_no_browser_ms": med(False, "p99_ms"), "p99_monitor_open_ms": med(True, "p99_ms"),
        "p50_no_browser_ms": med(False, "p50_ms"), "p50_monitor_open_ms": med(True, "p50_ms"),
        "cpu_share": {who: {"no_browser": med_cpu(False, who), "monitor_open": med_cpu(True, who)}
                      for who in ("engine_server", "dashboard", "chromium")},
    }
    summary["p99_ratio"] = summary["p99_monitor_open_ms"] / summary["p99_no_browser_ms"]
    print(json.dumps(summary, indent=2))
    RESULTS.mkdir(exist_ok=True)
    out = {"benchmark": "observer", "machine": machine_info(1), "args": vars(args),
           "cores": cores, "trials": rows, "summary": summary}
    name = ("observer-pinned" if args.mode == "pinned"
            else "observer-no-split" if args.no_split else "observer")
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / f'{name}.json'}")


if __name__ == "__main__":
    main()
