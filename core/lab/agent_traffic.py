"""Built-in traffic sent by load agents on a Ray cluster: ``engine.start_traffic(target,
rate_rps=..., agents=N, ray_address=...)``.

An :class:`AgentTraffic` is a traffic generator (the interface the
:class:`~core.lab.traffic.TrafficManager` keeps) whose requests leave from ``N`` load agents
(:class:`~core.lab.agents.LoadAgents`) instead of this process: for a rate one process
can't offer. One open-loop schedule (the pattern's arrival stream, endless unless
``duration_s`` bounds it) is cut into chunks of ``CHUNK_S`` seconds; each chunk is handed to
the agents one chunk ahead of its time, shared out at its intended send times from one
shared zero, so the schedule has no gap between chunks. The status counts a chunk's
requests once its answers are back (so it trails the sends by about a chunk and the
answers' time); the target's own metrics (a model of the engine's server) are live. What
the input is drawn from is looked at for each chunk: new inputs or a hot swap reach the
chunk handed out next. A stop hands out no new chunk: those already handed out (the one
sending and the next, up to ``2 × CHUNK_S`` of sends) complete and are counted. An agent that dies is reported (its
chunk's share failed as "AgentLost") and the traffic goes on with the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from typing import Any, Callable

import numpy as np

from core.config import _check_choice, _check_float, _check_int
from core.errors import ConfigError
from .agents import _LEAD_S, AgentRun, LoadAgents, agent_endpoint, check_ray_address
from .loadgen import LoadResult
from .schedule import ARRIVAL_PATTERNS, arrival_stream
from .traffic import InputsWatch, SenderThread
from .traffic_status import RECENT_S, TrafficStatus

__all__ = ["AgentTraffic", "CHUNK_S"]

log = logging.getLogger("batchlab.traffic")

#: Seconds of the schedule handed to the agents at a time.
CHUNK_S = 1.0


class AgentTraffic(SenderThread):
    """Open-loop traffic to ``target`` of ``engine`` from ``agents`` load agents on the Ray
    cluster at ``ray_address`` (see the module docstring)."""

    def __init__(self, engine: Any, target: str, sample: Callable[[np.random.Generator], Any],
                 agents: int, ray_address: str | None = None, rate_rps: float = 100.0,
                 pattern: str = "constant", rows_per_request: int = 1,
                 duration_s: float | None = None, seed: int | None = 0,
                 on_end: Callable[[str, str], None] | None = None,
                 inputs_key: Callable[[], tuple] | None = None) -> None:
        _check_int("agents", agents, 1, 1024)
        _check_float("rate_rps", rate_rps, 0.1, 10_000_000.0)
        _check_choice("pattern", pattern, ARRIVAL_PATTERNS)
        _check_int("rows_per_request", rows_per_request, 1, 65536)
        if duration_s is not None:
            _check_float("duration_s", duration_s, 0.01, 86_400.0)
        if target in engine.ab_experiments():
            raise ConfigError(f"{target!r} is an A/B experiment, routed inside the engine; "
                              "load agents send to one model's endpoint: send to an arm, or "
                              "leave agents at 0")
        #: where the agents send (refused now, in words, for an engine no server exposes)
        self.endpoint = agent_endpoint(engine, target)
        check_ray_address(engine, ray_address)
        self._engine = engine
        self.target, self.agents, self.ray_address = target, agents, ray_address
        self.rate_rps, self.pattern = float(rate_rps), pattern
        self.rows_per_request, self.duration_s = rows_per_request, duration_s
        self.priority: int | None = None     # agents send without a class
        self._rng = np.random.default_rng(seed)
        self._x = sample(self._rng)
        # looked at for each chunk: new inputs or a hot swap reach the next chunk
        self._watch = (InputsWatch(sample, inputs_key, 1, seed)
                       if inputs_key is not None else None)
        self._on_end = on_end
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sent = self._ok = self._failed = 0
        self._failed_by_type: Counter[str] = Counter()
        self._last_error: str | None = None
        self._recent: deque[list[float]] = deque(maxlen=RECENT_S + 1)
        self._max_lag_ms = 0.0
        self._cpu_pct = 0.0
        self._agent_cpu: dict[tuple[str, int], tuple[float, float]] = {}
        self._note: str | None = f"starting {agents} load agent(s) on Ray"
        self._t_start: float | None = None
        self._t_end: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"traffic-{target}-agents",
                                        daemon=True)

    def status(self) -> TrafficStatus:
        now = time.perf_counter()
        start = self._t_start or now
        end = self._t_end or now
        with self._lock:
            return TrafficStatus(
                target=self.target, running=self.running, rate_rps=self.rate_rps,
                pattern=self.pattern, rows_per_request=self.rows_per_request, sent=self._sent,
                refused=0, succeeded=self._ok, failed=self._failed, elapsed_s=end - start,
                max_lag_ms=self._max_lag_ms, failed_by_type=dict(self._failed_by_type),
                last_error=self._last_error, **self._recent_window(now),
                client_cpu_pct=self._cpu_pct, agents=self.agents,
                note=self._note if self._thread.is_alive() else None)

    def _fold(self, res: LoadResult) -> None:
        """Count one chunk's requests (every one of them answered, failed or lost)."""
        d = res.digest     # (the agents send counts and histograms, not rows)
        live = []
        for a in res.agents:     # each agent's CPU between two of its answers
            if a.get("error") or a.get("process_cpu_s") is None:
                continue
            key, now = (a["node"], a["pid"]), (a["process_cpu_s"], a["wall_s"])
            last = self._agent_cpu.get(key)
            if last is None or now[1] > last[1]:
                self._agent_cpu[key] = now
            if last is not None and now[1] - last[1] > 0.2:
                live.append(100.0 * (now[0] - last[0]) / (now[1] - last[1]))
        with self._lock:
            self._sent += d.sent
            self._ok += d.succeeded
            self._failed += d.failed
            self._failed_by_type.update(d.errors)
            if d.errors:
                self._last_error = d.errors.most_common(1)[0][0]
            lost = [a["error"] for a in res.agents if a.get("error")]
            if lost:
                self._last_error = f"a load agent was lost: {lost[0]}"
            self._max_lag_ms = max(self._max_lag_ms, res.max_lag_ms)
            self._recent.append([int(time.perf_counter()), d.sent, d.failed,
                                 res.max_lag_ms / 1000.0])
            if live:
                self._cpu_pct = max(live)
            self._note = None

    def _collect(self, pending: deque[AgentRun], block: bool) -> None:
        while pending and (block or pending[0].done()):
            self._fold(pending.popleft().result())

    def _run(self) -> None:
        self._t_start = time.perf_counter()
        team: LoadAgents | None = None
        pending: deque[AgentRun] = deque()
        ep = self.endpoint
        try:
            self._note = (f"connecting to Ray at {self.ray_address or 'a local Ray'} and "
                          f"starting {self.agents} load agent(s) (several seconds the first "
                          "time: each gets Batchlab's code)")
            team = LoadAgents(self.agents, self.ray_address)
            # (again, now that Ray is connected: a server listening everywhere is reached
            # at this node's address)
            self.endpoint = ep = agent_endpoint(self._engine, self.target)
            self._note = f"the {self.agents} load agent(s) connect to {ep['url']}"
            team.prepare(ep["url"], ep["model"], ep["headers"], version=ep["version"])
            self._note = (f"sending from {self.agents} load agent(s); counted from the "
                          f"first second's answers")
            stream = arrival_stream(self.pattern, self.rate_rps, self._rng, 0.0,
                                    self.duration_s)
            due = next(stream, None)
            zero = time.time() + _LEAD_S
            self._t_start = time.perf_counter() + _LEAD_S
            k = 0
            while due is not None and not self._stop.is_set():
                lo, hi = k * CHUNK_S, (k + 1) * CHUNK_S
                offsets = []
                while due is not None and due < hi:
                    offsets.append(due - lo)
                    due = next(stream, None)
                if (new := self._drawn_again()) is not None:
                    self._x = new[0]
                if offsets:
                    pending.append(team.start(ep["url"], ep["model"], self._x, self.rate_rps,
                                              CHUNK_S, headers=ep["headers"],
                                              version=ep["version"], offsets_s=offsets,
                                              start_wall=zero + lo, prepare=False,
                                              rows=False))
                k += 1
                # The next chunk is handed out as this one starts: one chunk ahead.
                while not self._stop.wait(min(0.1, max(0.0, zero + lo - time.time()))):
                    self._collect(pending, block=False)
                    if time.time() >= zero + lo:
                        break
            self._collect(pending, block=True)   # what was handed out is sent: count it
        except Exception as err:  # noqa: BLE001 - said in the status, not raised in a thread
            log.warning("traffic to %s from load agents ended: %s", self.target, err)
            with self._lock:
                self._last_error = f"{type(err).__name__}: {err}"
            try:                  # what was handed out still counts
                self._collect(pending, block=True)
            except Exception:  # noqa: BLE001 - the error above is the one to tell
                log.exception("counting the traffic's last chunks failed")
        finally:
            if team is not None:
                team.close()
            self._t_end = time.perf_counter()
            stopped = self._stop.is_set()
            self._stop.set()
            if self._on_end is not None:
                try:
                    self._on_end(self.target, f"traffic from {self.agents} load agent(s) "
                                 + ("stopped" if stopped else
                                    f"ended ({self._sent:,} requests)"))
                except Exception:  # noqa: BLE001 - a mark must not break the sender
                    log.exception("traffic end hook failed")
