"""A faithful port of the seed's batching design, kept only as a benchmark baseline.

The seed (the prototype Batchlab replaced) had one collector thread that opened a window
of ``max_wait_ms``, pulled requests off a ``queue.Queue`` one ``get(timeout=...)`` at a
time until the window closed or the batch was full, ``np.vstack``-ed the rows, ran the
session, then set each future's result from a per-row Python loop and recorded every
latency into a lock-protected list. The window timer restarts after each flush. This is
reconstructed from the seed's description in the project's issues; it is not Batchlab code.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

import numpy as np


class SeedMetrics:
    """The seed's metrics: a lock, a list of every latency, counters."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.total_requests = 0
        self.success_count = 0
        self.error_count = 0

    def record(self, latency_ms: float, ok: bool) -> None:
        with self.lock:
            self.total_requests += 1
            if ok:
                self.success_count += 1
                self.latencies.append(latency_ms)
            else:
                self.error_count += 1

    def to_dict(self) -> dict:
        with self.lock:
            lat = list(self.latencies)
        return {"total_requests": self.total_requests, "success_count": self.success_count,
                "error_count": self.error_count,
                "avg_latency_ms": float(np.mean(lat)) if lat else 0.0,
                "error_rate": self.error_count / max(self.total_requests, 1)}


class SeedBatcher:
    """Collector thread with a window timer reset after each flush (the seed design)."""

    def __init__(self, session, input_name: str, max_batch_size: int = 32,
                 max_wait_ms: float = 5.0) -> None:
        self.session = session
        self.input_name = input_name
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.queue: queue.Queue = queue.Queue()
        self.metrics = SeedMetrics()
        self.running = True
        self.thread = threading.Thread(target=self._loop, name="seed-batcher", daemon=True)
        self.thread.start()

    def submit(self, x: np.ndarray) -> Future:
        fut: Future = Future()
        self.queue.put({"input": x, "future": fut, "t": time.time()})
        return fut

    def _loop(self) -> None:
        while self.running:
            batch = []
            start = time.time()
            while len(batch) < self.max_batch_size:
                remaining = self.max_wait_ms / 1000.0 - (time.time() - start)
                if remaining <= 0:
                    break
                try:
                    batch.append(self.queue.get(timeout=remaining))
                except queue.Empty:
                    break
            if not batch:
                continue
            try:
                inputs = np.vstack([item["input"] for item in batch])
                outputs = self.session.run(None, {self.input_name: inputs})
                for i, item in enumerate(batch):
                    result = [out[i:i + 1] for out in outputs]
                    item["future"].set_result(result)
                    self.metrics.record((time.time() - item["t"]) * 1000.0, True)
            except Exception as err:  # noqa: BLE001 - the seed failed the whole batch
                for item in batch:
                    item["future"].set_exception(err)
                    self.metrics.record((time.time() - item["t"]) * 1000.0, False)

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
