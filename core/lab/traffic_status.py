"""What a traffic generator reports (:class:`TrafficStatus`), and when it says the client,
not the server, sets the pace.

Example:
    >>> status = engine.traffic()[0]
    >>> status.succeeded, status.client_bound
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TrafficStatus", "CLIENT_BOUND_CPU_PCT", "CLIENT_BOUND_LAG_MS", "RECENT_S"]

#: How far back TrafficStatus.recent_* look (seconds).
RECENT_S = 5

#: Client CPU (% of one core) and sender lag (ms) past which TrafficStatus.client_bound
#: says the client, not the server, sets the pace.
CLIENT_BOUND_CPU_PCT = 85.0
CLIENT_BOUND_LAG_MS = 100.0


@dataclass(frozen=True)
class TrafficStatus:
    """Counts of one generator's traffic so far."""

    target: str
    running: bool
    rate_rps: float
    pattern: str
    rows_per_request: int
    sent: int
    refused: int
    succeeded: int
    failed: int
    elapsed_s: float
    max_lag_ms: float
    refused_by_type: dict[str, int] = field(default_factory=dict)
    failed_by_type: dict[str, int] = field(default_factory=dict)
    #: the last refusal or failure, "Type: message"
    last_error: str | None = None
    #: over the last few seconds: requests sent, and those refused or failed
    recent_sent: int = 0
    recent_bad: int = 0
    #: how far behind its schedule the sender was at worst over the last few seconds (ms);
    #: ``max_lag_ms`` is the worst since the start
    recent_lag_ms: float = 0.0
    #: CPU the client used, in % of one core over ``elapsed_s`` (0 in the first second):
    #: the sender thread plus, for remote models, the HTTP client's loop (core.remote; one
    #: loop serves every remote model of the process, so traffic to two remote models at
    #: once counts it in both). Python runs them under one lock, so near 100 % the client,
    #: not the server, sets the pace.
    client_cpu_pct: float = 0.0
    #: the share of requests sent in the high priority class (``priority=1``; the others
    #: with ``priority=2``); None: no priority sent
    high_share: float | None = None
    #: the priority every request of this generator carries (a generator per class); None:
    #: none, or a mix by ``high_share``
    priority: int | None = None
    #: load agents on a Ray cluster sending it (core.lab.agent_traffic); 0: this process.
    #: Their counts arrive a chunk (about a second) after the sends, with the answers.
    agents: int = 0
    #: what it does when not simply sending (e.g. "starting 2 load agents on Ray")
    note: str | None = None
    #: about how many requests due in its duration went unsent: the sender fell behind
    #: its schedule and stopped with the duration (then 0.5 s late) instead of flooding on
    unsent: int = 0
    #: in the status ``start_traffic`` returns, the traffic this one replaced (the same
    #: target and class, still running): its rate, pattern and what it had sent; else None
    replaced: str | None = None
    #: how long it was started for (seconds); None: until stopped
    duration_s: float | None = None

    @property
    def label(self) -> str:
        """The target, and the class when the generator sends one (``mlp · high``)."""
        if self.priority is None:
            return self.target
        return f"{self.target} · {'high' if self.priority == 1 else 'normal'}"

    @property
    def brief(self) -> str:
        """``'mlp: 50 req/s constant, 1 row(s) a request, 1,234 requests sent in 24.7 s'``."""
        return (f"{self.label}: {self.rate_rps:g} req/s {self.pattern}, "
                f"{self.rows_per_request} row(s) a request, {self.sent:,} requests sent in "
                f"{self.elapsed_s:.1f} s")

    @property
    def client_bound(self) -> str | None:
        """A sentence when the client, not the server, is the bottleneck (its CPU near a
        full core, or the sender far behind its schedule), else None."""
        said = self._bound()
        return None if said is None else said[1]

    @property
    def client_bound_brief(self) -> str | None:
        """:attr:`client_bound` in a line naming the traffic, with what to do (a sidebar's)."""
        said = self._bound()
        return None if said is None else f"{self.label}: {said[0]}"

    def _bound(self) -> tuple[str, str] | None:
        if self.elapsed_s < 1.0 or self.sent < 50:
            return None
        cpu = f"{self.client_cpu_pct:.0f} % of a core"
        if self.agents and self.client_cpu_pct >= CLIENT_BOUND_CPU_PCT:
            return (f"the load agents are the bottleneck ({cpu}): add agents or send less.",
                    f"The load agents are the bottleneck: the busiest of the {self.agents} "
                    f"used {cpu}, so these figures measure "
                    "the agents, not the server. Add agents (on more nodes), or send less.")
        if self.client_cpu_pct >= CLIENT_BOUND_CPU_PCT:
            return (f"the client is the bottleneck ({cpu}): send less, or load the server "
                    "from more processes.",
                    f"The client is the bottleneck: sending to {self.target} and reading the "
                    f"answers takes {cpu} (Python runs it on "
                    "one), so these figures measure Batchlab's client, not the server. Send "
                    "less, or load the server from more processes.")
        if self.running and self.recent_lag_ms > CLIENT_BOUND_LAG_MS:
            why = ("this machine cannot send this rate now" if self.client_cpu_pct >= 50 else
                   f"at {cpu}, other work in its process (a "
                   "job, another generator) or a busy machine held it up")
            return (f"the sender fell up to {self.recent_lag_ms:.0f} ms behind its schedule; "
                    "latencies include that delay.",
                    f"The sender fell up to {self.recent_lag_ms:.0f} ms behind its schedule in "
                    f"the last {RECENT_S} s: {why}; latencies include that delay.")
        return None

    @property
    def in_flight(self) -> int:
        return self.sent - self.refused - self.succeeded - self.failed

    @property
    def problem(self) -> str | None:
        """A sentence when much of the recent traffic is refused or failing, else None
        (what the sidebar and the pages show, so a generator never fails silently)."""
        if self.recent_sent == 0 or self.recent_bad == 0:
            return None
        # Of the requests whose fate is known: one still on its way is neither.
        settled = max(self.recent_sent - max(self.in_flight, 0), self.recent_bad)
        share = self.recent_bad / settled
        if share < 0.01:
            return None
        return (f"{share:.0%} of the requests sent to {self.target} in the last seconds were "
                f"refused or failed. Last: {self.last_error}")
