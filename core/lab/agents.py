"""Open-loop load from many agents on a Ray cluster: one schedule, shared out.

One Python client offers ~3,000 one-row req/s (its own CPU is the ceiling), so a cluster's
endpoint can't be measured from one process. :class:`LoadAgents` starts ``n`` agents (Ray
actors, pinned round-robin to the cluster's alive nodes); :meth:`LoadAgents.run` draws one
open-loop schedule, gives agent ``k`` the sends ``k, k + n, k + 2n...`` at their intended
times from one shared instant (wall clock: the nodes' clocks are assumed in sync, as NTP keeps
them), and each agent sends its share to an Open Inference Protocol endpoint through
Batchlab's own remote-model client (latency from the intended send time). Each agent returns
its per-request rows, an HdrHistogram of its latencies, its CPU and its lag; the driver merges
them into one :class:`~core.lab.LoadResult` (the histograms merged losslessly:
``merged_histogram``). An agent that dies is reported (``LoadResult.agents[k]["error"]``) and
its share of the schedule is in the frame as failed requests ("AgentLost"): nothing is lost
silently. ``LoadResult.agents_bound`` says when the agents, not the server, set the pace.

Example:
    >>> with LoadAgents(2, address="127.0.0.1:6379") as agents:
    ...     res = agents.run(d.url, "mlp", x, rate_rps=4000, duration_s=10)
    >>> res.summary()["p99_ms"], res.agents_bound
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from core.config import _check_choice, _check_float, _check_int, plain
from core.errors import ConfigError
from .digest import HIST_RANGE, LoadDigest, digest_frame, encode_histogram, histogram_of
from .loadgen import LOAD_COLUMNS, LoadResult, open_loop
from .schedule import ARRIVAL_PATTERNS, run_schedule
from .raylink import connect, place

__all__ = ["LoadAgents", "merged_histogram", "AGENT_LOST", "agent_endpoint", "agents_for",
           "check_ray_address"]

#: The error of an intended send that no agent made (its agent died).
AGENT_LOST = "AgentLost"
# HdrHistogram range: 1 us .. 1 h at 3 significant digits (the metrics' own use 2).
_HIST = HIST_RANGE
# Seconds between the (prepared) agents being told and the schedule's zero.
_LEAD_S = 1.0
# Runs an agent holds at once: traffic hands out a chunk a second, each held until its
# answers are back (up to drain_s): an overloaded server must not stall the schedule.
_CONCURRENCY = 64
# How long agents may take to start (placed, Batchlab's code set up on their node).
_START_S = 120.0
_PLACING = threading.Lock()


class _Agent:
    """One load agent (a Ray actor): an engine whose one model is the remote endpoint."""

    def where(self) -> dict[str, Any]:
        """Where the agent runs (asked once it is up, after importing what a run needs, so
        that a run starts on time)."""
        import ray
        import core.engine  # noqa: F401 - the engine, imported now
        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "ip": ray.util.get_node_ip_address()}

    def prepare(self, url: str, model: str, headers: dict[str, str] | None,
                drain_s: float, version: str | None = None) -> None:
        """Connect to the endpoint (its metadata read, the client's settings made) before
        the shared start, so the schedule's first sends are not late for it. The same
        endpoint again (a sweep's next window) keeps the connection."""
        from core.engine import EngineCore
        from core.config import EngineConfig
        key = (url, model, version, tuple(sorted((headers or {}).items())), drain_s)
        old = getattr(self, "engine", None)
        if old is not None and getattr(self, "key", None) == key:
            return
        if old is not None:
            old.close()
        self.engine = engine = EngineCore(EngineConfig(demo_models=False))
        self.key = None
        engine.add_remote("target", url=url, model=model, version=version, headers=headers,
                          max_connections=256)
        engine.configure("target", max_queue=1_000_000, timeout_ms=drain_s * 1000.0)
        self.key = key

    def run(self, x: Any, offsets: list[float], start_wall: float,
            drain_s: float, rows: bool = True) -> dict[str, Any]:
        submit = self.engine.submit
        start = time.perf_counter() + (start_wall - time.time())
        res = open_loop(lambda v: submit("target", v), lambda rng: x, 1.0,
                        offsets_s=offsets, start_at=start, drain_s=drain_s)
        frame = res.frame
        # the schedule's own times (t0 + offset - t0 can round across a second's edge, where
        # a lost share is placed by the offsets themselves)
        frame["intended_s"] = np.asarray(offsets[:len(frame)], dtype=np.float64)
        # rows=False: the digest (histograms, per-second counts) instead of the rows
        part: dict[str, Any] = {"digest": digest_frame(frame)} if not rows else {
            "frame": frame, "histogram": encode_histogram(histogram_of(
                frame.loc[frame["ok"], "latency_ms"].to_numpy()))}
        return {**part, "client_cpu_pct": res.client_cpu_pct,
                "max_lag_ms": res.max_lag_ms, "duration_s": res.duration_s,
                # (the agent's whole CPU so far: runs overlap in traffic, see agent_traffic)
                "process_cpu_s": time.process_time(), "wall_s": time.time(), **self.where()}


class LoadAgents:
    """``n`` load agents on the Ray cluster at ``address`` (None: the one connected, else a
    local Ray), pinned round-robin to its alive nodes that have room; each takes
    ``agent_cpus`` CPUs (None: up to one, less on a node with less free)."""

    def __init__(self, n: int = 2, address: str | None = None,
                 agent_cpus: float | None = None) -> None:
        _check_int("agents", n := plain(n), 1, 1024)
        if agent_cpus is not None:
            _check_float("agent_cpus", agent_cpus, 0.0, 1024.0)
        ray = connect(address)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        actor = ray.remote(_Agent)
        self._ray = ray
        self._dropped: set[Any] = set()
        with _PLACING:   # (two teams placed at once would both count the same free CPUs)
            # Each on a node with room for it (a hard pin to a full node would wait for
            # ever); None: the cluster does not say per node (a ray:// client).
            spots = place(n, agent_cpus)
            self.actors = [actor.options(
                num_cpus=cpus, max_concurrency=_CONCURRENCY,
                **({"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}
                   if node is not None else {})).remote()
                for node, cpus in spots]
        try:
            #: Where each agent runs: {"node": Ray node id, "pid": process id}.
            self.placement = ray.get([a.where.remote() for a in self.actors],
                                     timeout=_START_S)
        except BaseException as err:
            self.close()       # none left pending, holding CPUs the replicas need
            if type(err).__name__ == "GetTimeoutError":
                raise ConfigError(f"the {n} load agent(s) did not start within {_START_S:g} "
                                  "s: the cluster may be short of CPUs (another team or a "
                                  "deployment took them) or unable to set up Batchlab's "
                                  "code on a node (see the Ray logs)") from None
            raise

    def __enter__(self) -> LoadAgents:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _drop(self, actor: Any) -> None:
        """Kill ``actor`` (dead, or late: it may still be sending) and run without it."""
        try:
            self._ray.kill(actor)
        except Exception:  # noqa: BLE001 - dead already
            pass
        self._dropped.add(actor)

    def close(self) -> None:
        for a in self.actors:
            try:
                self._ray.kill(a)
            except Exception:  # noqa: BLE001 - dead already
                pass
        self.actors = []

    def prepare(self, url: str, model: str, headers: dict[str, str] | None = None,
                drain_s: float = 30.0, version: str | None = None) -> None:
        """Have every agent connect to the endpoint (done by :meth:`start` too; the same
        endpoint again costs one round trip)."""
        self._ray.get([a.prepare.remote(url, model, headers, drain_s, version)
                       for a in self.actors], timeout=120)

    def start(self, url: str, model: str, x: Any, rate_rps: float, duration_s: float,
              pattern: str = "poisson", seed: int | None = 0,
              headers: dict[str, str] | None = None, drain_s: float = 30.0,
              version: str | None = None, offsets_s: Any = None,
              start_wall: float | None = None, prepare: bool = True,
              rows: bool = True) -> AgentRun:
        """Start one open-loop schedule shared out over the agents (see the module
        docstring); :meth:`AgentRun.result` waits for it. ``offsets_s``: the send times
        (seconds from the start; a replay's recorded arrivals) instead of a schedule drawn
        from ``rate_rps``, ``duration_s`` and ``pattern``. ``start_wall``: the schedule's zero
        (``time.time()``; default: a moment from now, once the agents are ready).
        ``prepare=False``: the agents were prepared for this endpoint already
        (:meth:`prepare`), so nothing waits on them here. ``rows=False``: each agent returns
        its histograms and per-second counts, not a row per request (a long or fast run: a
        few KB a second instead of ~100 B a request); the result's frame is then empty and
        its summary, :meth:`~core.lab.LoadResult.per_second` and merged histogram come
        from the digest (:mod:`core.lab.digest`)."""
        if offsets_s is None:
            _check_float("rate_rps", rate_rps, 0.1, 10_000_000.0)
            _check_float("duration_s", duration_s, 0.01, 86_400.0)
            _check_choice("pattern", pattern, ARRIVAL_PATTERNS)
        if self._dropped:      # agents lost in an earlier run: the rest go on
            keep = [k for k, a in enumerate(self.actors) if a not in self._dropped]
            self.actors = [self.actors[k] for k in keep]
            self.placement = [self.placement[k] for k in keep]
            self._dropped = set()
        if not self.actors:
            raise ConfigError("these load agents are closed (or all died); make new ones")
        if offsets_s is not None:
            offsets = np.sort(np.asarray(offsets_s, dtype=np.float64))
            if len(offsets) == 0 or not np.isfinite(offsets).all() or offsets[0] < 0:
                raise ConfigError("offsets_s must be finite send times in seconds, >= 0")
            duration_s = float(offsets[-1])
        else:
            rng = np.random.default_rng(seed)
            offsets = run_schedule(pattern, rate_rps, duration_s, None, rng)
        n = len(self.actors)
        if prepare:
            self.prepare(url, model, headers, drain_s, version)
        if start_wall is None:
            start_wall = time.time() + _LEAD_S
        # (an agent with no share of a short schedule sends nothing: None)
        refs = [a.run.remote(x, offsets[k::n].tolist(), start_wall, drain_s, bool(rows))
                if len(offsets[k::n]) else None for k, a in enumerate(self.actors)]
        run = AgentRun(self, refs, offsets, duration_s + drain_s + _LEAD_S + 60.0, start_wall,
                       list(self.actors), list(self.placement), rows=bool(rows))
        run.schedule_s = float(duration_s)   # what the load was offered over
        return run

    def run(self, url: str, model: str, x: Any, rate_rps: float, duration_s: float,
            **options: Any) -> LoadResult:
        """:meth:`start`, then wait for the result."""
        return self.start(url, model, x, rate_rps, duration_s, **options).result()


class AgentRun:
    """A schedule being sent by the agents."""

    def __init__(self, agents: LoadAgents, refs: list[Any], offsets: np.ndarray,
                 timeout_s: float, start_wall: float = 0.0, actors: list[Any] | None = None,
                 placement: list[dict[str, Any]] | None = None, rows: bool = True) -> None:
        self.agents, self.refs, self.offsets, self.timeout_s = agents, refs, offsets, timeout_s
        self.rows = rows
        self.schedule_s = float(offsets[-1]) if len(offsets) else 0.0
        # The agents as they were when it started (a later run may go without a dead one).
        self.actors = actors if actors is not None else list(agents.actors)
        self.placement = placement if placement is not None else list(agents.placement)
        #: the schedule's zero (``time.time()``): send ``k`` is due at ``start_wall +
        #: offsets[k]``
        self.start_wall = start_wall

    def done(self) -> bool:
        """Whether every agent has answered (or died): :meth:`result` would not wait."""
        refs = [r for r in self.refs if r is not None]
        if not refs:
            return True
        ready, _ = self.agents._ray.wait(refs, num_returns=len(refs), timeout=0)
        return len(ready) == len(refs)

    def result(self) -> LoadResult:
        """Every agent's answer merged into one load result (an agent that died or did not
        answer in time is reported, its share failed as "AgentLost")."""
        import pandas as pd
        ray = self.agents._ray
        n = len(self.refs)
        deadline = time.monotonic() + self.timeout_s
        frames, reports, lost = [], [], 0
        digest = None if self.rows else LoadDigest()
        for k, ref in enumerate(self.refs):
            share = self.offsets[k::n]
            if ref is None:   # no share of a short schedule: sent nothing
                reports.append(self._silent(k, None))
                continue
            try:
                out = ray.get(ref, timeout=max(1.0, deadline - time.monotonic()))
            except Exception as err:  # noqa: BLE001 - a dead agent is reported, not raised
                # Its share's outcome is unknown (some may have been answered): failed, as
                # "AgentLost". The agent is dropped: a later run goes without it.
                self.agents._drop(self.actors[k])
                lost += len(share)
                if digest is not None:
                    digest.add_lost(share, AGENT_LOST)
                else:
                    frames.append(_lost_frame(share, k, n))
                reports.append(self._silent(k, f"{type(err).__name__}: {str(err)[:300]}"))
                continue
            if digest is not None:
                part = out["digest"]
                digest.add(part)
                sent, ok, hist = part["sent"], part["succeeded"], part["histogram"]
            else:
                f = out["frame"]
                f["request"] = f["request"] * n + k     # the request's place in the schedule
                f["client"] = k
                frames.append(f)
                sent, ok, hist = len(f), int(f["ok"].sum()), out["histogram"]
            reports.append({"agent": k, "node": out["node"], "pid": out["pid"],
                            "ip": out.get("ip"), "process_cpu_s": out.get("process_cpu_s"),
                            "wall_s": out.get("wall_s"), "sent": sent, "succeeded": ok,
                            "client_cpu_pct": float(out["client_cpu_pct"]),
                            "max_lag_ms": float(out["max_lag_ms"]),
                            "histogram": hist, "error": None})
        if digest is not None:
            frame = _lost_frame(np.empty(0), 0, 1)     # no rows (with the columns' types)
            span = digest.last_done_s if np.isfinite(digest.last_done_s) else 0.0
        else:
            frame = pd.concat(frames, ignore_index=True).sort_values("request",
                                                                     ignore_index=True)
            done = frame["done_s"].to_numpy()
            span = float(np.nanmax(done)) if np.isfinite(done).any() else 0.0
        live = [r for r in reports if not r["error"]]
        span = max(span, self.schedule_s)   # at least the schedule (achieved <= offered)
        return LoadResult("open", frame[LOAD_COLUMNS], span,
                          max((r["max_lag_ms"] for r in live), default=0.0),
                          # the busiest agent's share of a core (as for one client)
                          client_cpu_pct=max((r["client_cpu_pct"] for r in live), default=0.0),
                          agents=tuple(reports), lost=lost, digest=digest)


    def _silent(self, k: int, error: str | None) -> dict[str, Any]:
        """The report of agent ``k`` that sent nothing, or whose answer was lost (``error``)."""
        return {"agent": k, "node": self.placement[k]["node"],
                "pid": self.placement[k].get("pid"), "ip": self.placement[k].get("ip"),
                "sent": 0,
                "succeeded": 0, "client_cpu_pct": 0.0, "max_lag_ms": 0.0, "histogram": "",
                "error": error}


def _lost_frame(share: np.ndarray, k: int, n: int) -> Any:
    import pandas as pd
    m = len(share)
    nan = np.full(m, math.nan)
    return pd.DataFrame({"request": np.arange(m) * n + k, "client": np.full(m, k, np.int64),
                         "intended_s": share, "sent_s": nan, "done_s": nan,
                         "latency_ms": nan, "engine_ms": nan, "queue_ms": nan,
                         "compute_ms": nan, "batch_rows": np.zeros(m, np.int64),
                         "ok": np.zeros(m, bool), "error": [AGENT_LOST] * m},
                        columns=LOAD_COLUMNS)


def merged_histogram(result: LoadResult) -> Any:
    """The agents' latency HdrHistograms (µs) added into one, losslessly (every recorded
    value kept at the histograms' precision, unlike averaged percentiles)."""
    from hdrh.histogram import HdrHistogram
    if result.digest is not None:
        return result.digest.histogram
    merged = HdrHistogram(*_HIST)
    for a in result.agents:
        if a.get("histogram"):
            merged.add(HdrHistogram.decode(base64.b64decode(a["histogram"])))
    return merged


_WILDCARD = ("0.0.0.0", "::", "")


def agent_endpoint(engine: Any, model: str) -> dict[str, Any]:
    """Where load agents send ``model``'s requests: a remote model's server, or this
    engine's own HTTP server (``url``, ``model``, ``version``, ``headers``). ConfigError
    for a model of an engine that no server exposes (agents send over HTTP)."""
    remote = engine.remote_endpoint(model)
    if remote is not None:
        return remote
    engine.model_info(model)     # an unknown name says so
    if not engine.served_at:
        raise ConfigError(
            f"load agents send over HTTP, and {model!r} is a model of this engine, which no "
            "server exposes: serve the engine (python -m core.server, or EngineServer) and "
            "start the work there, or add the model's server as a remote model")
    host, port = sorted(engine.served_at)[0]
    import ray
    if host in _WILDCARD:        # listening everywhere: the address other nodes reach
        host = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
    elif ray.is_initialized() and host in ("127.0.0.1", "localhost", "::1"):
        me = ray.util.get_node_ip_address()
        away = sorted({nd["NodeManagerAddress"] for nd in ray.nodes() if nd.get("Alive")}
                      - {me})
        if away:
            raise ConfigError(
                f"the engine's server listens on {host}, which the cluster's nodes at "
                f"{', '.join(away[:3])} cannot reach: serve the engine where they reach it "
                "(python -m core.server --host 0.0.0.0 --token ...), or send from agents "
                "on this machine's node only")
    token = getattr(engine, "served_token", None)
    return {"url": f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}",
            "model": model, "version": None,
            "headers": {"Authorization": f"Bearer {token}"} if token else None}


def check_ray_address(engine: Any, address: str | None) -> None:
    """ConfigError when an engine server's outbound policy does not allow the Ray cluster at
    ``address`` (a client of the control API chooses it; the server would connect there and
    take what it sends). None: a local Ray, allowed."""
    policy = getattr(engine, "outbound_policy", None)
    if policy is None or address in (None, "", "auto"):
        return
    host = str(address).split("://", 1)[-1]
    try:
        policy.check(f"http://{host}")
    except ConfigError as err:
        raise ConfigError(str(err).replace("refused to add a remote model at",
                                           "refused to connect to the Ray cluster at")
                          ) from None


@contextlib.contextmanager
def agents_for(agents: Any, address: str | None, rates: bool = True) -> Iterator[Any]:
    """The load agents a piece of work asked for: None for none (``agents`` 0 or None),
    the one given (a :class:`LoadAgents`, left running), or ``agents`` new ones on the
    cluster at ``address``, closed afterwards."""
    agents = plain(agents)   # (a notebook's np.int64(0): no agents)
    if agents is None or (type(agents) is int and agents == 0):
        yield None
        return
    if not isinstance(agents, int) or isinstance(agents, bool):
        yield agents
        return
    if not rates:
        raise ConfigError("load agents send open-loop rates (rates_rps); closed-loop "
                          "clients run in this process: leave agents at 0 for them")
    team = LoadAgents(agents, address)
    try:
        yield team
    finally:
        team.close()
