"""A/B mode ``bandit``: Thompson sampling between the two arms on "answered within the SLO".

Each request is a Bernoulli trial for the arm that served it: a success if it was answered
without error within ``slo_ms`` of being sent (refused, failed or late: a failure). A late
request counts as a failure once its SLO has passed, not when (if ever) it ends: an arm that
hangs loses traffic within the SLO, not after the timeout. A request the caller cancelled
before its SLO passed is no trial at all (it says nothing about the arm). Each
arm's success rate has a Beta(1 + successes, 1 + failures) posterior. A request goes, with
probability ``2 * floor``, to an arm picked at random (exploration: each arm keeps at least
``floor`` of the traffic, so a change in an arm is still seen); otherwise to the arm whose
posterior draw is higher (Thompson sampling). The share of B therefore moves between
``floor`` and ``1 - floor`` as the evidence grows.

Unlike Seldon's routers (explicit feedback from the caller) and KServe canaries (a fixed
split), the reward is measured here, from latency and errors. :meth:`ThompsonBandit.state`
gives each arm's reward rate with its 95 % interval, the probability that B is the better
arm, the routing share now, and the cumulative regret against sending everything to the
better arm (at the rates estimated so far); ``history`` keeps one point a second.
Looking changes nothing: ``state`` and ``p_b_better`` are functions of what the engine did
(the seed and the outcomes so far), so asked twice with no outcome in between they give the
same answer; they never draw from the generator that routes requests, and the history gets
points from outcomes, not from reads.
:func:`simulate_bandit` runs the same algorithm against two known latency distributions.

Example:
    >>> out = simulate_bandit(lambda rng: rng.exponential(10), lambda rng: rng.exponential(40),
    ...                       slo_ms=30, n=2000, seed=0)
    >>> out["final_share_b"] < 0.1
    True
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np

from core.errors import InputValidationError

__all__ = ["ThompsonBandit", "simulate_bandit", "DEFAULT_SLO_MS", "DEFAULT_FLOOR"]

DEFAULT_SLO_MS = 50.0
DEFAULT_FLOOR = 0.05
#: Seconds of per-second history kept (the A/B page's charts).
HISTORY_S = 900


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95 % by default); (0, 1) with no data."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


class ThompsonBandit:
    """Thompson sampling over arms ``a`` and ``b`` with a floor share. Thread-safe."""

    def __init__(self, slo_ms: float = DEFAULT_SLO_MS, floor: float = DEFAULT_FLOOR,
                 seed: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(slo_ms, bool) or not (isinstance(slo_ms, (int, float))
                                            and 0 < slo_ms < math.inf):   # (True: 1 ms)
            raise ValueError(f"the bandit's slo_ms must be a positive number of milliseconds, "
                             f"got {slo_ms!r}")
        if not (isinstance(floor, (int, float)) and 0 <= floor <= 0.5):
            raise ValueError(f"the bandit's floor must be a share from 0 to 0.5 (each arm keeps "
                             f"at least that much of the traffic), got {floor!r}")
        self.slo_ms = float(slo_ms)
        self.floor = float(floor)
        self._rng = random.Random(seed)   # routing only: nothing that reads draws from it
        # p_b_better's Monte Carlo draws come from a generator seeded by this and the counts
        # (a fresh one each time): the same counts, the same answer, however often one looks.
        # (a negative seed too, as an A/B experiment's: numpy takes none below 0)
        self._entropy = np.random.SeedSequence(
            seed if seed is None or seed >= 0 else [1, -seed]).entropy
        self._p_cache: tuple[tuple[int, ...], float] | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self.sent = {"a": 0, "b": 0}
        self.wins = {"a": 0, "b": 0}
        self.losses = {"a": 0, "b": 0}
        self.started = clock()
        # (seconds since start, sent a, sent b, wins a, wins b, losses a, losses b) once a second
        self.history: deque[tuple[float, ...]] = deque(maxlen=HISTORY_S)
        self._next_point = self.started + 1.0
        # The counts at the last outcome, as a history point: shown after ``history`` when
        # newer than its last point (the outcomes of the second under way), never stored.
        self._last: tuple[float, ...] | None = None
        # Requests sent and not yet judged, in send order: [SLO end (perf_counter), arm,
        # judged]. Swept on each choice: one past its SLO is a failure then.
        self._pending: deque[list[Any]] = deque()

    # -- the request path ------------------------------------------------------------------
    def choose(self) -> str:
        """The arm for the next request (counted as sent to it)."""
        with self._lock:
            pending = self._pending
            if pending and pending[0][0] < time.perf_counter():
                self._sweep(time.perf_counter())
            rng = self._rng
            if rng.random() < 2 * self.floor:
                arm = "b" if rng.random() < 0.5 else "a"
            else:
                ta = rng.betavariate(1 + self.wins["a"], 1 + self.losses["a"])
                tb = rng.betavariate(1 + self.wins["b"], 1 + self.losses["b"])
                arm = "b" if tb > ta else "a"
            self.sent[arm] += 1
        return arm

    def unsend(self, arm: str) -> None:
        """The request :meth:`choose` just counted for ``arm`` was refused for its input:
        not sent, and never judged."""
        with self._lock:
            self.sent[arm] -= 1

    def reward(self, arm: str, ok: bool) -> None:
        """One request of ``arm`` ended: within the SLO and without error (``ok``) or not."""
        with self._lock:
            self._count(arm, ok)

    def _count(self, arm: str, ok: bool) -> None:
        (self.wins if ok else self.losses)[arm] += 1
        now = self._clock()
        s, w, lo = self.sent, self.wins, self.losses
        self._last = (now - self.started, s["a"], s["b"], w["a"], w["b"], lo["a"], lo["b"])
        if now >= self._next_point:
            self.history.append(self._last)
            self._next_point = now + 1.0

    def _sweep(self, now: float) -> None:
        """(Lock held.) Count as failures the requests whose SLO passed unanswered."""
        pending = self._pending
        while pending and (pending[0][2] or pending[0][0] < now):
            entry = pending.popleft()
            if not entry[2]:
                entry[2] = True
                self._count(entry[1], False)

    def watch(self, arm: str, fut: Future, t0: float) -> None:
        """Judge ``fut`` (a request to ``arm`` sent at ``t0``, ``time.perf_counter``): a
        success if it ends without error within the SLO; a failure when it fails, or when
        the SLO passes first (counted then, however it ends: the same whether anything
        swept meanwhile); nothing if cancelled, or refused for its inputs, within the SLO."""
        end = t0 + self.slo_ms / 1000.0
        entry = [end, arm, False]
        with self._lock:
            self._pending.append(entry)

        def done(f: Future) -> None:
            with self._lock:
                if entry[2]:
                    return   # judged already: its SLO passed first
                entry[2] = True
                late = time.perf_counter() > end
                err = None if f.cancelled() else f.exception()
                if late:   # however it ended: a sweep while it was late had counted it so
                    self._count(arm, False)    # (a report read then changed the counts)
                elif isinstance(err, InputValidationError):
                    pass   # the caller's doing (an answer in a form refused): no arm's
                elif not f.cancelled():
                    self._count(arm, err is None)
                self._sweep(time.perf_counter())

        fut.add_done_callback(done)

    # -- what it found -----------------------------------------------------------------------
    def p_b_better(self, draws: int = 4000) -> float:
        """P(B's success rate > A's) under the posteriors (Monte Carlo with a generator seeded
        by the bandit's seed and the counts: the same counts give the same answer, and
        reading draws nothing from the routing generator)."""
        with self._lock:
            key = (self.wins["a"], self.losses["a"], self.wins["b"], self.losses["b"], draws)
            cached = self._p_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        wa, la, wb, lb, _ = key
        gen = np.random.default_rng(np.random.SeedSequence(self._entropy, spawn_key=key))
        ra = gen.beta(1 + wa, 1 + la, draws)
        rb = gen.beta(1 + wb, 1 + lb, draws)
        p = float((rb > ra).mean())
        with self._lock:
            self._p_cache = (key, p)
        return p

    def state(self) -> dict[str, Any]:
        """Per arm: sent, ended, successes, reward rate and its 95 % interval; the chance B
        is better, B's routing share now, the cumulative regret, and the history."""
        with self._lock:
            self._sweep(time.perf_counter())
        p_b = self.p_b_better()
        with self._lock:
            arms = {}
            for arm in ("a", "b"):
                n = self.wins[arm] + self.losses[arm]
                lo, hi = wilson(self.wins[arm], n)
                arms[arm] = {"sent": self.sent[arm], "ended": n, "successes": self.wins[arm],
                             "rate": self.wins[arm] / n if n else None,
                             "rate_low": round(lo, 6), "rate_high": round(hi, 6)}
            history = list(self.history)   # what the outcomes recorded; reading adds none
            if self._last is not None and (not history or history[-1] is not self._last):
                history.append(self._last)
        rates = {k: (v["rate"] if v["rate"] is not None else 0.0) for k, v in arms.items()}
        best = max(rates.values())
        regret = sum(arms[k]["ended"] * (best - rates[k]) for k in arms)
        return {"slo_ms": self.slo_ms, "floor": self.floor, "arms": arms,
                "p_b_better": p_b,
                "share_b": self.floor + (1 - 2 * self.floor) * p_b,
                "better": "b" if rates["b"] > rates["a"] else "a" if rates["a"] > rates["b"]
                else None,
                "regret": regret,
                "history": _history_frame(history, rates)}


def _history_frame(points: list[tuple[float, ...]], rates: dict[str, float]
                   ) -> dict[str, list[float]]:
    """The history as columns: seconds, B's share of the requests sent in that second,
    each arm's reward rate so far, and the cumulative regret (at the final rates)."""
    out: dict[str, list[float | None]] = {"t_s": [], "share_b": [], "rate_a": [],
                                          "rate_b": [], "regret": []}
    best = max(rates.values()) if rates else 0.0
    prev = (0.0, 0, 0, 0, 0, 0, 0)
    for p in points:
        t, sa, sb, wa, wb, la, lb = p
        da, db = sa - prev[1], sb - prev[2]
        out["t_s"].append(round(t, 3))
        out["share_b"].append(db / (da + db) if da + db else None)
        out["rate_a"].append(wa / (wa + la) if wa + la else None)
        out["rate_b"].append(wb / (wb + lb) if wb + lb else None)
        out["regret"].append((wa + la) * (best - rates["a"]) + (wb + lb) * (best - rates["b"]))
        prev = p
    return out


def simulate_bandit(latency_a: Callable[[np.random.Generator], float],
                    latency_b: Callable[[np.random.Generator], float], slo_ms: float,
                    n: int = 5000, floor: float = DEFAULT_FLOOR, seed: int = 0,
                    error_a: float = 0.0, error_b: float = 0.0) -> dict[str, Any]:
    """The bandit against two arms with known latency distributions (ms, drawn by
    ``latency_a(rng)``/``latency_b(rng)``) and error rates, one request at a time, answered
    before the next (no feedback delay). Returns the arm chosen per request, B's share per
    window of 100, the cumulative regret (against always the truly better arm) and the final
    share of B (over the last 500 requests)."""
    rng = np.random.default_rng(seed)
    bandit = ThompsonBandit(slo_ms, floor, seed=seed, clock=lambda: 0.0)
    truth = {}
    for arm, draw, err in (("a", latency_a, error_a), ("b", latency_b, error_b)):
        sample = np.array([draw(rng) for _ in range(4000)])
        truth[arm] = float((sample <= slo_ms).mean()) * (1 - err)
    best = max(truth.values())
    chosen, regret, total = [], [], 0.0
    for _ in range(n):
        arm = bandit.choose()
        lat = (latency_a if arm == "a" else latency_b)(rng)
        failed = rng.random() < (error_a if arm == "a" else error_b)
        bandit.reward(arm, lat <= slo_ms and not failed)
        total += best - truth[arm]
        chosen.append(arm)
        regret.append(total)
    b = np.array([c == "b" for c in chosen], dtype=float)
    windows = [float(b[i:i + 100].mean()) for i in range(0, n, 100)]
    return {"chosen": chosen, "share_b_by_100": windows, "regret": regret,
            "final_share_b": float(b[-500:].mean()), "truth": truth,
            "state": bandit.state()}
