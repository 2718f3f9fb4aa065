"""core.serving.tune_for_serving: process-wide settings, so each check runs in a fresh
interpreter (the test process itself is left alone)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.serving import tune_for_serving

ROOT = Path(__file__).resolve().parent.parent

# A backlog that only grows, like a queue under overload: live Futures and request records.
_BACKLOG = """
import gc, json, sys
from concurrent.futures import Future
sys.path.insert(0, {root!r})
from core.serving import tune_for_serving
info = tune_for_serving() if {tuned} else None
full = []
gc.callbacks.append(lambda phase, i: phase == "stop" and i["generation"] == 2 and full.append(1))
backlog = [(Future(), {{"row": i}}, [i]) for i in range(200_000)]
print(json.dumps({{"full_collections": len(full), "thresholds": gc.get_threshold(),
                  "switch": sys.getswitchinterval(), "frozen": gc.get_freeze_count(),
                  "info": info}}))
"""


@functools.lru_cache(maxsize=None)
def _run(tuned: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", _BACKLOG.format(root=str(ROOT), tuned=tuned)],
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def test_tuning_sets_switch_interval_freeze_and_thresholds():
    r = _run(tuned=True)
    assert r["switch"] == pytest.approx(0.001)
    assert r["frozen"] > 1000
    assert r["thresholds"] == [50_000, 50, 100]
    assert r["info"]["gc_thresholds"] == [50_000, 50, 100]


def test_growing_backlog_triggers_far_fewer_full_collections_when_tuned():
    """Each full collection walks the whole backlog while holding the GIL: the reason the
    engine's throughput collapsed under overload with CPython's defaults."""
    default, tuned = _run(tuned=False), _run(tuned=True)
    assert default["full_collections"] >= 3
    assert tuned["full_collections"] <= default["full_collections"] // 3


@pytest.mark.parametrize("kwargs, message", [
    ({"switch_interval_s": 0}, "switch_interval_s must be > 0"),
    ({"gc_thresholds": (0, 10, 10)}, "gc_thresholds must be three ints >= 1"),
    ({"gc_thresholds": (700, 10)}, "gc_thresholds must be three ints >= 1"),
])
def test_bad_settings_are_refused_before_anything_changes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tune_for_serving(**kwargs)


def test_the_engine_and_the_pages_get_different_cores():
    from core.serving import split_cores
    assert split_cores({3}) is None  # one core: nothing to split
    engine, pages = split_cores({0, 1})
    assert (engine, pages) == ({0}, {1})
    engine, pages = split_cores(set(range(8)))
    assert engine == set(range(6)) and pages == {6, 7}  # the engine keeps most
    assert not engine & pages


def test_pin_process_moves_every_thread_and_new_threads_follow():
    # In a child: pin the whole process to one core, then start a thread; all of them
    # (the ones that existed and the new one) run on that core only.
    code = """
import os, threading, json
from core.serving import pin_process
ready = threading.Event(); go = threading.Event(); seen = {}
def old():
    ready.set(); go.wait(); seen['old'] = sorted(os.sched_getaffinity(0))
t = threading.Thread(target=old); t.start(); ready.wait()
core = max(os.sched_getaffinity(0))
moved = pin_process({core})
def new(): seen['new'] = sorted(os.sched_getaffinity(0))
n = threading.Thread(target=new); n.start(); n.join(); go.set(); t.join()
seen['main'] = sorted(os.sched_getaffinity(0)); seen['moved'] = moved; seen['core'] = core
print(json.dumps(seen))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent, check=True, timeout=60)
    seen = json.loads(out.stdout)
    core = seen["core"]
    assert seen["old"] == seen["new"] == seen["main"] == [core]
    assert seen["moved"] >= 2


_ARENAS = """
import ctypes, os, sys, tempfile, threading
from core.serving.tuning import limit_malloc_arenas
told = limit_malloc_arenas() if sys.argv[1] == "limit" else None
held, both = [], threading.Barrier(8)
def work():   # eight threads alive at once, each allocating
    held.append(bytearray(1000)); both.wait()
    held.append([bytearray(100_000) for _ in range(50)]); both.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
libc = ctypes.CDLL("libc.so.6"); libc.fopen.restype = ctypes.c_void_p
fd, path = tempfile.mkstemp(); os.close(fd)
fp = ctypes.c_void_p(libc.fopen(path.encode(), b"w")); libc.malloc_info(0, fp); libc.fclose(fp)
print(json.dumps({"told": told, "arenas": open(path).read().count("<heap nr=")}))
os.unlink(path)
"""


def test_the_engine_server_caps_malloc_arenas_so_floods_leave_less_behind():
    """glibc gives each thread that allocates an arena of its own (eight threads: ten) and
    keeps what a flood freed in each: the server rested at 1,191 MiB after floods (from
    262; an adversary). Two arenas, set before its threads start; a MALLOC_ARENA_MAX given
    by the user is left as it is."""
    import os
    root = Path(__file__).resolve().parent.parent
    code = "import json\n" + _ARENAS

    def arenas(mode: str, **env: str) -> dict:
        done = subprocess.run([sys.executable, "-c", code, mode], cwd=root, text=True,
                              capture_output=True, timeout=120,
                              env={**{k: v for k, v in os.environ.items()
                                      if k != "MALLOC_ARENA_MAX"}, **env})
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])
    assert arenas("default")["arenas"] >= 4
    assert arenas("limit") == {"told": True, "arenas": 2}
    assert arenas("limit", MALLOC_ARENA_MAX="3") == {"told": False, "arenas": 3}
    server = (root / "core" / "serving" / "server.py").read_text()
    assert server.index("limit_malloc_arenas()") < server.index("engine = Engine(")
