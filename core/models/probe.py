"""Measure a model's memory and run time per batch size in a child process.

The serving process never runs an unknown model to find out what it costs: a child
interpreter (``python -m core.models.probe``) creates the session without an arena (so a run's
memory is allocated and freed with it) and with its address space capped at what it has
plus the engine's memory budget, runs each batch size once on generated input, and reports
per batch size the peak resident memory the run added (Linux's ``VmHWM``, reset before
each run through ``/proc/self/clear_refs``) and the run time. A run that needs more than
the budget, crashes the child or outlives the time limit is reported as such, and the
serving process is untouched. ``Engine.load_model(..., probe=True)`` refuses a model
whose batch-1 run fails the probe; ``Engine.measure_memory`` fills the Models page's table.

Example:
    >>> frame = probe_model(model_bytes, [1, 8, 32], budget_bytes=2**30)
    >>> frame[["batch_size", "peak_mib", "run_ms", "error"]]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import pandas as pd

__all__ = ["probe_model", "probe_note", "PROBE_COLUMNS", "TRIAL_REFUSED", "NOT_SERVABLE"]

#: How a probe's error starts when the model was refused for what it is (an input type the
#: engine cannot feed), not for what its session or run did: said as that, not as memory.
NOT_SERVABLE = "not servable: "

PROBE_COLUMNS = ["batch_size", "peak_mib", "run_ms", "error", "note"]
#: How a model's warning starts when its trial run's generated integers were refused (a
#: row's ``note``; core.engine.loading writes it, the Models page reads it).
TRIAL_REFUSED = "its trial run could not use generated inputs"

_ROOT = Path(__file__).resolve().parents[2]

# Allowance for the child's start-up (interpreter, imports, session) on a busy machine.
_STARTUP_S = 60.0


def probe_model(data: bytes, batch_sizes: Sequence[int], budget_bytes: int,
                time_limit_s: float = 60.0, threads: int | None = None,
                graph_optimization: str = "all") -> pd.DataFrame:
    """Run the model at each of ``batch_sizes`` in a child process; one row per size.

    ``error`` is ``None`` for a run that worked, else why it did not (over the memory
    budget, an ONNX Runtime error, the child died, or a run passed ``time_limit_s`` and
    was stopped); sizes after a failed one are not tried. ``note`` says when ONNX Runtime
    refused the generated integers (ids past a table the generator could not see) and the
    size was run with every integer input 0 instead (always a row of a table).
    """
    request = json.dumps({"batch_sizes": [int(b) for b in batch_sizes],
                          "budget": int(budget_bytes), "threads": threads,
                          "graph_optimization": graph_optimization,
                          "time_limit_s": float(time_limit_s)})
    env = dict(os.environ, PYTHONPATH=str(_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               # Tensors of 16 KiB and more get their own pages, returned when freed, so
               # each run's peak shows in the resident memory instead of reused heap.
               MALLOC_MMAP_THRESHOLD_="16384")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "core.models.probe", request], cwd=str(_ROOT),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    # The child stops a run past the time limit itself (RunOptions.terminate); this is the
    # backstop for a child that is stuck elsewhere (start-up on a busy machine is slow).
    backstop_s = _STARTUP_S + time_limit_s * (len(batch_sizes) + 1)
    try:
        out, err = proc.communicate(data, timeout=backstop_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        rows = _rows(out)
        done = {r["batch_size"] for r in rows}
        rest = [b for b in batch_sizes if b not in done]
        if rest:
            rows.append({"batch_size": rest[0], "peak_mib": None, "run_ms": None,
                         "error": f"the probe process did not answer within {backstop_s:g} s "
                                  "and was killed"})
        return pd.DataFrame(rows, columns=PROBE_COLUMNS)
    rows = _rows(out)
    if proc.returncode != 0:
        done = {r["batch_size"] for r in rows}
        rest = [b for b in batch_sizes if b not in done]
        rows.append({"batch_size": rest[0] if rest else None, "peak_mib": None,
                     "run_ms": None,
                     "error": f"the probe process {_death(proc.returncode, err)} after "
                              f"{time.monotonic() - t0:.1f} s"})
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


def _death(code: int, err: bytes) -> str:
    """How the child ended, in words: a signal by name (a crash said only a runpy warning
    it had printed at start-up, beside "exit -11"), with its last words that are not a
    warning."""
    lines = [ln for ln in err.decode(errors="replace").strip().splitlines()
             if ln.strip() and "Warning" not in ln and not ln.startswith(" ")]
    said = f": {lines[-1][:300]}" if lines else ""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        crash = " (it crashed)" if name in ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGILL") else ""
        return f"was killed by {name}{crash}{said}"
    return f"exited with code {code}{said or ': no message'}"


def probe_note(profile: pd.DataFrame | None) -> str | None:
    """A probe's first ``note`` (its generated integers refused and run as 0), else None;
    a frame without the column (an older probe's) has none."""
    noted = profile["note"].dropna() if profile is not None and "note" in profile else ()
    return str(noted.iloc[0]) if len(noted) else None


def _rows(out: bytes) -> list[dict]:
    rows = []
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return rows


def _reset_hwm() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS to the current RSS
    except OSError:
        pass


def _child(request: str) -> None:
    """The child side: read the model from stdin, print one JSON line per batch size."""
    args = json.loads(request)
    data = sys.stdin.buffer.read()
    import resource
    import threading

    import numpy as np
    import onnxruntime as ort

    from core.config import SessionConfig
    from .memory import (current_rss_bytes, generated_input_limit, peak_rss_bytes,
                             proc_status_bytes)
    from .loading import load_model_bytes
    from .sampling import sample_input
    from .session import SESSION_FAILED

    # No arena here (each run's memory is malloc'd and freed, so its peak shows), and the
    # budget enforced on the address space instead: an allocation past it fails. It holds
    # from before the session is created, with the server's own options: a model whose
    # constants ONNX Runtime folds into gigabytes while creating its session fails here.
    def cap() -> None:   # (under a hard limit of the caller's own: kept, the cap within it)
        vm_now = proc_status_bytes("VmSize") or 0
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = vm_now + args["budget"]
        resource.setrlimit(resource.RLIMIT_AS, (
            soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))

    cap()
    first = args["batch_sizes"][0] if args["batch_sizes"] else 1
    try:
        loaded = load_model_bytes(data, "probe", options=SessionConfig(
            intra_op_threads=args["threads"],
            graph_optimization=args.get("graph_optimization", "all")), arena=False,
            budget_bytes=args["budget"])
    except Exception as err:  # noqa: BLE001 - reported: the model is not loaded
        text = " ".join(str(err).split())[:300] or type(err).__name__
        refused = type(err).__name__ == "ModelLoadError" and SESSION_FAILED not in text
        print(json.dumps({"batch_size": first, "peak_mib": None,
                          "run_ms": None,
                          "error": NOT_SERVABLE + text if refused else
                          "its session could not be created (here, with the memory budget "
                          f"as the limit): {type(err).__name__}: {text}"}), flush=True)
        return
    cap()  # the budget again, from what the session holds: for the runs
    info = loaded.info
    limit = args["time_limit_s"]
    ro: list[ort.RunOptions] = []   # the run going on, for the time limit's words

    def measure(arrays: list, row: dict, first: bool) -> None:
        # The session's very first run also allocates what every later run reuses (kernel
        # state, thread-pool buffers): run the first size once unmeasured, so the figures
        # are what each batch size costs.
        for measured in ((False, True) if first else (True,)):
            base = current_rss_bytes()
            _reset_hwm()
            ro[:] = [ort.RunOptions()]
            timer = threading.Timer(limit, setattr, (ro[0], "terminate", True))
            timer.start()
            t = time.perf_counter()
            try:
                loaded.run(arrays, ro[0])
            finally:
                timer.cancel()
            if measured:
                row["run_ms"] = (time.perf_counter() - t) * 1000.0
                row["peak_mib"] = max(0, peak_rss_bytes() - base) / 2**20

    for i, bs in enumerate(args["batch_sizes"]):
        row = {"batch_size": bs, "peak_mib": None, "run_ms": None, "error": None, "note": None}
        ro.clear()
        try:
            x = sample_input(info, rows=bs if info.batchable else 1, seed=bs,
                             max_bytes=generated_input_limit(args["budget"]))
            arrays = list(x.values()) if isinstance(x, dict) else [x]
            try:
                measure(arrays, row, i == 0)
            except Exception as err:  # noqa: BLE001 - generated ids refused: try ids 0
                ints = [a.dtype.kind in "iu" for a in arrays]
                if type(err).__name__ != "InvalidArgument" or not any(ints) or (
                        ro and ro[0].terminate):
                    raise
                text = " ".join(str(err).split())      # (its end kept: the range is there)
                text = text if len(text) <= 400 else "…" + text[-400:]
                row["note"] = (f"ONNX Runtime refused them ({type(err).__name__}: {text}), "
                               "so it ran with every integer input 0")
                measure([np.zeros_like(a) if k else a for a, k in zip(arrays, ints)], row,
                        i == 0)
        except Exception as err:  # noqa: BLE001 - reported, and the probe stops
            if ro and ro[0].terminate:
                row["error"] = (f"did not finish within {limit:g} s (the model may hang or "
                                "be far too slow at this batch size)")
            else:
                text = " ".join(str(err).split())[:300] or type(err).__name__
                row["error"] = f"{type(err).__name__}: {text}"
        print(json.dumps(row), flush=True)
        if row["error"]:
            return


if __name__ == "__main__":
    _child(sys.argv[1])
