"""Many threads, many requests: every future resolves with exactly its own rows."""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort

from core import Engine, build_demo_model
from tests.helpers import WAIT_S

THREADS = 16
REQUESTS_PER_THREAD = 500


def test_16_threads_x_500_requests_each_get_their_own_rows():
    ref = ort.InferenceSession(build_demo_model("mlp"))
    barrier = threading.Barrier(THREADS)
    failures: list[str] = []
    batch_rows: list[int] = []
    lock = threading.Lock()

    with Engine() as engine:
        engine.configure("mlp", max_batch_size=32, max_wait_ms=1.0)

        def client(tid: int) -> None:
            rng = np.random.default_rng(tid)
            inputs = [rng.standard_normal((int(rng.integers(1, 4)), 256)).astype(np.float32)
                      for _ in range(REQUESTS_PER_THREAD)]
            barrier.wait(WAIT_S)
            # Submit in waves of 25 so requests from all threads interleave in batches.
            for start in range(0, REQUESTS_PER_THREAD, 25):
                wave = inputs[start:start + 25]
                futs = [engine.submit("mlp", x) for x in wave]
                for x, f in zip(wave, futs):
                    pred = f.result(WAIT_S * 3)
                    want = ref.run(None, {"x": x})[0]
                    if not np.allclose(pred.outputs["logits"], want, rtol=1e-4, atol=1e-5):
                        failures.append(f"thread {tid}: wrong rows in batch {pred.batch_id}")
                    with lock:
                        batch_rows.append(pred.batch_rows)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        snap = engine.metrics("mlp")

    total = THREADS * REQUESTS_PER_THREAD
    assert failures == []
    assert len(batch_rows) == total
    assert snap.success_count == total and snap.error_count == 0
    assert max(batch_rows) <= 32 and max(batch_rows) > 3  # requests really were batched
    assert sum(snap.batch_sizes.values()) == snap.batches
