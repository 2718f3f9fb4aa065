"""``BatchConfig.instances``: several batches of one model running at once (Triton's
instance_group count), changed live, closed and supervised like one."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from core.batching import Batcher
from core.config import BatchConfig
from core.errors import ConfigError, EngineClosedError
from core.protocol import triton
from tests.helpers import WAIT_S, rows


class ConcurrentRun:
    """A fake model that counts the runs inside it at once and holds each on a gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0
        self.entered = threading.Semaphore(0)

    def __call__(self, arrays):
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        self.entered.release()
        try:
            assert self.gate.wait(WAIT_S), "test gate never opened"
            return [arrays[0] * 2.0]
        finally:
            with self.lock:
                self.inside -= 1

    def wait_entered(self, n: int) -> None:
        for _ in range(n):
            assert self.entered.acquire(timeout=WAIT_S), "a run never started"


def make(run, **cfg) -> Batcher:
    return Batcher("inst", run, ["y"], BatchConfig(max_batch_size=1, max_wait_ms=0, **cfg))


def runner_threads(b: Batcher) -> list[str]:
    return sorted(t.name for t in threading.enumerate()
                  if t.name == "batcher-inst" or t.name.startswith("batcher-inst-")
                  and t.name[len("batcher-inst-"):].isdigit())


def test_two_instances_run_two_batches_at_once():
    run = ConcurrentRun()
    b = make(run, instances=2)
    try:
        futs = [b.submit((rows(1, start=i),), 1) for i in range(3)]
        run.wait_entered(2)              # two runs are inside the model together
        assert run.inside == 2 and b.queue_depth() == 1
        run.gate.set()
        for i, f in enumerate(futs):
            assert f.result(WAIT_S).outputs["y"][0, 0] == 2.0 * i
        assert run.most_inside == 2
    finally:
        run.gate.set()
        b.close()


def test_one_instance_runs_one_batch_at_a_time():
    run = ConcurrentRun()
    b = make(run)
    try:
        futs = [b.submit((rows(1, start=i),), 1) for i in range(3)]
        run.wait_entered(1)
        assert b.queue_depth() == 2      # the others wait for the one runner
        run.gate.set()
        for f in futs:
            f.result(WAIT_S)
        assert run.most_inside == 1
    finally:
        run.gate.set()
        b.close()


def test_instances_change_live_and_extra_runners_leave():
    run = ConcurrentRun()
    run.gate.set()
    b = make(run, instances=3)
    try:
        assert runner_threads(b) == ["batcher-inst", "batcher-inst-1", "batcher-inst-2"]
        b.configure(b.config.replace(instances=1))
        for t in [t for t in threading.enumerate() if t.name.startswith("batcher-inst-")
                  and t.name[len("batcher-inst-"):].isdigit()]:
            t.join(WAIT_S)               # the two extra runners leave
        assert runner_threads(b) == ["batcher-inst"]
        assert b.submit((rows(1),), 1).result(WAIT_S).rows == 1
        run.gate.clear()
        b.configure(b.config.replace(instances=2))   # and come back
        futs = [b.submit((rows(1, start=i),), 1) for i in range(2)]
        run.wait_entered(3)              # (one entry was the request above)
        assert run.inside == 2
        run.gate.set()
        assert [f.result(WAIT_S).rows for f in futs] == [1, 1]
        assert b.restarts == 0           # leaving is not dying
    finally:
        run.gate.set()
        b.close()


def test_close_drains_every_runner_and_fails_what_hangs():
    run = ConcurrentRun()
    b = make(run, instances=2)
    futs = [b.submit((rows(1, start=i),), 1) for i in range(4)]
    run.wait_entered(2)
    b.close(timeout_s=0.2)               # both runs hang past the close timeout
    for f in futs:
        with pytest.raises(EngineClosedError):
            f.result(0)
    assert b.pending() == 0
    run.gate.set()
    for t in [t for t in threading.enumerate() if t.name.startswith("batcher-inst")]:
        t.join(WAIT_S)
    assert runner_threads(b) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_second_runner_is_restarted_and_only_its_batch_fails():
    run = ConcurrentRun()
    run.gate.set()
    b = Batcher("inst", run, ["y"], BatchConfig(max_batch_size=1, max_wait_ms=0, instances=2),
                start=False)
    b.watch_interval_s = 0.01
    real = b._collect
    died = []

    def runner(index=0):
        if index == 1 and not died:
            died.append(1)
            raise SystemExit("injected: runner 1 dies")
        return real(index)

    b._collect = runner
    b.start()
    futs = [b.submit((rows(1, start=i),), 1) for i in range(20)]
    assert [f.result(WAIT_S).rows for f in futs] == [1] * 20
    for _ in range(int(WAIT_S * 100)):
        if b.restarts:
            break
        threading.Event().wait(0.01)
    assert b.restarts == 1
    assert b.metrics.snapshot().incidents == {"CollectorRestarted": 1}
    b.close()


def test_instances_are_checked_and_read_from_triton_configs():
    with pytest.raises(ConfigError, match="instances"):
        BatchConfig(instances=0)
    with pytest.raises(ConfigError, match="instances"):
        BatchConfig(instances=9)
    changes, _ = triton.batch_changes({"instance_group": [{"count": 2, "kind": "KIND_CPU"},
                                                          {"kind": "KIND_CPU"}]})
    assert changes["instances"] == 3
    with pytest.raises(ConfigError, match="instance_group"):
        triton.batch_changes({"instance_group": {"count": 2}})
    with pytest.raises(ConfigError, match="count"):
        triton.batch_changes({"instance_group": [{"count": 0}]})
    cfg = BatchConfig(instances=2)
    out = triton.model_config("m", cfg)
    assert out["instance_group"] == [{"count": 2, "kind": "KIND_CPU"}]
    assert triton.batch_changes(out)[0]["instances"] == 2
    assert "instance_group [ { count: 2 kind: KIND_CPU } ]" in triton.pbtxt(8, 2.0, instances=2)


def test_admission_counts_every_instance_when_predicting_the_wait():
    run = ConcurrentRun()
    run.gate.set()
    b = make(run, instances=2)
    try:
        q = b.queue
        with q.lock:
            q.cost.a_s, q.cost.b_s, q.cost.ready = 0.010, 0.0, True  # 10 ms a batch
            q.run_started(0, 1, 0.0)
            q.run_started(1, 1, 0.0)
            # both runners busy until t=0.010; one frees up first
            assert q.running_left_s(0.004) == pytest.approx(0.006)
            q.run_ended(1)
            assert q.running_left_s(0.004) == 0.0    # a runner is free
            q.run_ended(0)
            assert q.running_rows == 0
    finally:
        b.close()


def test_a_runner_that_dies_while_the_supervisor_sleeps_idle_is_restarted_at_once():
    """With nothing live the supervisor sleeps until a request arrives; a runner dying
    then wakes it (no request needed) and is restarted (the CI once caught the old
    behaviour: the supervisor slept through it)."""
    run = ConcurrentRun()
    run.gate.set()
    b = Batcher("lonely", run, ["y"], BatchConfig(max_batch_size=1, max_wait_ms=0, instances=2),
                start=False)
    real = b._collect
    go_die = threading.Event()

    def runner(index=0):
        if index == 1 and not go_die.is_set():
            assert go_die.wait(WAIT_S)
            raise SystemExit("injected: runner 1 dies")
        return real(index)

    b._collect = runner
    b.start()
    try:
        for _ in range(int(WAIT_S * 100)):       # the supervisor asleep, nothing live
            if b.queue.supervisor_idle:
                break
            threading.Event().wait(0.01)
        assert b.queue.supervisor_idle
        go_die.set()
        for _ in range(int(WAIT_S * 100)):
            if b.restarts:
                break
            threading.Event().wait(0.01)
        assert b.restarts == 1 and not b.queue.dying
        futs = [b.submit((rows(1, start=i),), 1) for i in range(4)]
        assert [f.result(WAIT_S).rows for f in futs] == [1] * 4
    finally:
        b.close()
