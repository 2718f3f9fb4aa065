"""A/B experiments: route traffic between two models and tell whether B is different.

An experiment has a name (used like a model name in ``submit``/``predict``), arms ``a``
and ``b`` naming registered models, ``b_share`` and a routing ``mode``:

* ``random``: each request goes to B with probability ``b_share`` (seedable generator);
* ``sticky``: the arm is a hash of the request's ``key`` (e.g. a user id), so one key
  always sees one model and keys split in proportion to ``b_share``; raising ``b_share``
  only moves keys from A to B, never back;
* ``shadow``: the caller always gets A's answer and A's latency; B gets a copy of every
  request in the background (its errors and slowness never reach the caller), and the
  report compares the two outputs. Both arms then see the full arrival rate, so their
  latencies compare fairly (no split confound);
* ``bandit``: Thompson sampling on "answered within ``bandit_slo_ms`` without error"
  (:mod:`core.ab.bandit`): the split moves live towards the arm that meets the SLO more
  often, each arm keeping at least ``bandit_floor`` of the traffic; ``b_share`` is then
  the bandit's, not a setting.

Per-arm metrics are recorded before the caller's future resolves, so a report always
agrees with what callers saw.

Example:
    >>> exp = ABExperiment("exp", a="clf-v1", b="clf-v2", b_share=0.2, seed=0)
    >>> exp.route()
    ('a', 'clf-v1')
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np

from .bandit import DEFAULT_FLOOR, DEFAULT_SLO_MS, ThompsonBandit
from .report import ABReport
from .shadow import ShadowStats
from .statistics import compare_arm_errors, compare_latency, latest_only
from core.config import _check_choice, _check_float, as_seed, plain
from core.errors import ConfigError, InputValidationError
from core.metrics import ModelMetrics

_KEEP_SEGMENTS = 5   #: Earlier segments kept per experiment (reports, a few KB each)
#: Seconds an ended segment keeps its metrics for requests settling late, once none does.
_SETTLE_S = 120.0

__all__ = ["ABExperiment", "AB_MODES", "ExperimentRegistry"]


def _keep_segments(segments: deque[dict[str, Any]]) -> None:
    """At most :data:`_KEEP_SEGMENTS` earlier segments: the newest, and among them the last
    that compared both arms however old (five promote and roll-back toggles pushed it out
    of the promoted verdict; a reviewer)."""
    while len(segments) > _KEEP_SEGMENTS:
        kept = next((e for e in reversed(segments) if e.get("_compared")), None)
        segments.remove(next(e for e in segments if e is not kept))

AB_MODES = ("random", "sticky", "shadow", "bandit")

# Latency samples kept per arm for the statistics (the most recent ones).
_SAMPLES_PER_ARM = 20_000


class ArmLabel(str):
    """An arm's label, ``"a"`` or ``"b"`` (equal to it, everywhere a string is), that also
    names its experiment: a request's trace row keeps it, so an experiment's timeline holds
    its own requests, not another experiment's on the same models (it did, with the other's
    arm labels). Made once per arm; pickled as the plain string. ``copy``: B's label on
    shadow mode's copies of A's requests (a timeline told them from nothing)."""

    experiment: str
    copy: bool

    def __new__(cls, arm: str, experiment: str, copy: bool = False) -> ArmLabel:
        label = super().__new__(cls, arm)
        label.experiment = experiment
        label.copy = copy
        return label

    def __reduce__(self) -> tuple[Any, ...]:
        return str, (str(self),)


class ABExperiment:
    """Routes each request to arm A or B; holds per-arm metrics. Thread-safe."""

    def __init__(self, name: str, a: str, b: str, b_share: float = 0.5, mode: str = "random",
                 seed: int | None = None, timeseries_seconds: int = 600,
                 bandit_slo_ms: float = DEFAULT_SLO_MS,
                 bandit_floor: float = DEFAULT_FLOOR) -> None:
        _check_float("b_share", b_share, 0.0, 1.0)   # (a == b: an A/A test, see create_ab)
        _check_choice("mode", mode, AB_MODES)
        self.name = name
        self.a = a
        self.b = b
        self.b_share = float(b_share)
        self.mode = mode
        self.seed = seed if seed is None else as_seed(seed)
        self._rng = random.Random(self.seed)
        self.bandit = self._new_bandit(bandit_slo_ms, bandit_floor)
        self._lock = threading.Lock()
        self._seconds = timeseries_seconds
        self.metrics = {arm: ModelMetrics(timeseries_seconds, keep_samples=_SAMPLES_PER_ARM)
                        for arm in ("a", "b")}
        # Every request a caller sent to the experiment, whichever arm served it (in
        # shadow mode: A's answers; B's copies are only in metrics["b"]).
        self.callers = ModelMetrics(timeseries_seconds)
        self.sinks = {arm: (self.metrics[arm], self.callers) for arm in ("a", "b")}
        #: the arms' labels its requests carry (:class:`ArmLabel`)
        self.labels = {arm: ArmLabel(arm, name) for arm in ("a", "b")}
        self.copy_label = ArmLabel("b", name, copy=True)   # (shadow mode's copies)
        self.shadow_sinks = (self.metrics["b"],)
        self.shadow = ShadowStats()
        self.segment = 1
        self.segment_reason: str | None = None
        self.segment_started = time.time()
        #: Whether an arm's model is warm now (set by the engine), and which arms were not
        #: when the segment under way began: their cold runs are in its figures, and a
        #: warm-up since took the warning away from the same data (an adversary).
        self.warm_of: Callable[[str], bool] | None = None
        self.cold_at_start: dict[str, bool] = {}
        self.reset_perf = time.perf_counter()  # (its timeline's start: made or reset)
        self.previous_segments: deque[dict[str, Any]] = deque()   # (see _keep_segments)
        self._settling = threading.Lock()   # (see _settle_previous)

    def _new_bandit(self, slo_ms: float, floor: float) -> ThompsonBandit:
        try:
            return ThompsonBandit(slo_ms, floor, seed=self.seed)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def route(self, key: Any = None) -> tuple[str, str]:
        """(arm, model name) that serves the caller of one request."""
        if self.mode == "bandit":
            return ("b", self.b) if self.bandit.choose() == "b" else ("a", self.a)
        if self.mode == "random":
            return ("b", self.b) if self._rng.random() < self.b_share else ("a", self.a)
        if self.mode == "sticky":
            if key is None:
                raise InputValidationError(
                    f"A/B experiment {self.name!r} is sticky: it routes by key; pass key=... "
                    "(e.g. a user id) to submit/predict")
            return ("b", self.b) if self.key_point(key) < self.b_share else ("a", self.a)
        return "a", self.a  # shadow: the caller always gets A

    def route_to(self, key: Any = None) -> tuple[str, str, str, Any, Any, Any]:
        """(arm, model, mode, the arm's label, its metrics, and the bandit, or in shadow
        mode (B's model, its label, its metrics, the shadow figures)) for one request, read
        from one state of the experiment: an update between reading the route and the
        arm's metrics counted requests of the old arms in the new segment (an adversary),
        and a switch to shadow mode compared B with itself (a reviewer)."""
        with self._lock:
            arm, model = self.route(key)
            mode = self.mode
            extra = ((self.b, self.copy_label, self.shadow_sinks, self.shadow)
                     if mode == "shadow" else self.bandit)
            return arm, model, mode, self.labels[arm], self.sinks[arm], extra

    def key_point(self, key: Any) -> float:
        """Where ``key`` falls in [0, 1): a stable hash, salted by the experiment's name.
        A whole float is its int (user 1.0 from a pandas column is user 1: they were sent
        to different arms; an adversary); otherwise the key's text (1 and "1" are one)."""
        if isinstance(key, (float, np.floating)) and float(key).is_integer():
            key = int(key)
        digest = hashlib.blake2b(f"{self.name}\x00{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def watch_shadow(self, a_fut: Future, b_fut: Future,
                     a_outputs: list[dict[str, Any]] | None = None,
                     shadow: ShadowStats | None = None) -> None:
        """Compare A's and B's outputs once both are done (shadow mode): A's as they left
        the model when ``a_outputs`` holds them (its caller may have changed its own), in
        ``shadow`` (the segment the pair was sent in, as its arms' metrics; default: now)."""
        pending = [2]
        lock = threading.Lock()
        shadow = self.shadow if shadow is None else shadow

        def done(f: Future) -> None:
            if f is a_fut and a_fut.cancelled():   # the caller's: its copy goes too (B's
                b_fut.cancel()                     # errors were fewer by the cancels)
            with lock:
                pending[0] -= 1
                if pending[0]:
                    return
            if a_fut.cancelled():
                return
            if b_fut.cancelled() or b_fut.exception() is not None:
                shadow.failed()
                return
            if a_fut.exception() is not None:
                return
            shadow.compare(a_outputs[0] if a_outputs else a_fut.result().outputs,
                           b_fut.result().outputs)

        a_fut.add_done_callback(done)
        b_fut.add_done_callback(done)

    def update(self, b_share: float | None = None, a: str | None = None,
               b: str | None = None, mode: str | None = None,
               bandit_slo_ms: float | None = None, bandit_floor: float | None = None) -> bool:
        """Change the split, the arms, the mode or the bandit's settings; True when another
        arm or mode, a bandit's new SLO or floor, or a split (routing by it) to or from 0 or
        1 began a new segment, in the same step (name it: :meth:`name_segment`)."""
        new_bandit = None
        if bandit_slo_ms is not None or bandit_floor is not None:
            new_bandit = self._new_bandit(   # checked before anything changes
                self.bandit.slo_ms if bandit_slo_ms is None else bandit_slo_ms,
                self.bandit.floor if bandit_floor is None else bandit_floor)
        with self._lock:
            if b_share is not None:
                _check_float("b_share", b_share, 0.0, 1.0)
            if mode is not None:
                _check_choice("mode", mode, AB_MODES)
            new_a = a if a is not None else self.a
            new_b = b if b is not None else self.b
            # (the old segment as it was, its mode's figures too, and no request routed to
            # a new arm counted in it: swapped under the lock routing reads)
            # (a split to or from 0 or 1 too, routing by the split: one arm alone under all
            # the load, then the other, were compared as if side by side; a newcomer)
            ends = (0.0, 1.0)
            began = ((new_a, new_b) != (self.a, self.b) or (mode is not None and mode != self.mode)
                     or (b_share is not None and (mode or self.mode) in ("random", "sticky")
                         and float(b_share) != self.b_share
                         and (float(b_share) in ends or self.b_share in ends))
                     # (a bandit's new SLO or floor routes otherwise from now: its figures
                     # and the ones before mixed in one verdict; an adversary)
                     or (new_bandit is not None and (mode or self.mode) == "bandit"
                         and (new_bandit.slo_ms, new_bandit.floor)
                         != (self.bandit.slo_ms, self.bandit.floor)))
            entry = self._swap_locked(None) if began else None
            self.a, self.b = new_a, new_b
            if b_share is not None:
                self.b_share = float(b_share)
            if mode is not None:
                self.mode = mode
            if new_bandit is not None:   # (under the lock routing reads: a request routed
                self.bandit = new_bandit   # between the swap and here went to one dropped)
        if began:
            self.note_cold()
        if entry is not None:
            self._settle_previous()
        return began

    def note_cold(self) -> None:
        """Remember which arms are not warm as a segment begins."""
        if self.warm_of is not None:
            try:
                self.cold_at_start = {arm: not self.warm_of(model)
                                      for arm, model in (("a", self.a), ("b", self.b))}
            except Exception:  # noqa: BLE001 - an arm being swapped: not known, not said
                self.cold_at_start = {}

    def name_segment(self, reason: str) -> None:
        """Say why the segment under way began (after :meth:`update` began it)."""
        self.segment_reason = reason   # (one attribute: no lock needed)

    def reset_metrics(self) -> None:
        self.reset_perf = time.perf_counter()   # (its timeline's start, before the counts')
        for m in self.metrics.values():
            m.reset()
        self.callers.reset()
        self.shadow = ShadowStats()
        self.bandit = self._new_bandit(self.bandit.slo_ms, self.bandit.floor)
        self._rng = random.Random(self.seed)   # (as the bandit's: the same routing again)
        self.note_cold()
        with self._lock:
            self.segment, self.segment_reason, self.segment_started = 1, None, time.time()
            self.previous_segments.clear()

    def new_segment(self, reason: str) -> None:
        """Begin a new comparison: an arm changed (``reason`` says how). The arms' figures
        start again in new metrics, swapped in at once, so samples from before the change
        never mix with those after and none is lost between the two (the old ones were
        reset after a report of tens of ms: requests settled meanwhile were in neither).
        The old segment's report is kept and brought up to date when a request sent
        before the change settles after it. (The experiment's own totals, every caller's
        request, go on.)"""
        with self._lock:
            self._swap_locked(reason)
        self.note_cold()
        self._settle_previous()

    def _settle_previous(self) -> None:
        """Every earlier segment's report brought up to date (and the metrics of those a
        newer segment ended let go), by one thread at a time (a slower one stored its
        older report over a newer: the state saver's, kept across a restart; a reviewer)."""
        with self._lock:
            previous = list(self.previous_segments)
        with self._settling:
            for entry in previous:
                self._bring_up_to_date(entry)

    def _swap_locked(self, reason: str | None) -> dict[str, Any]:
        """(Lock held.) The segment under way ends: new metrics, shadow figures and bandit
        in its place; returns its entry, kept with its own until they settle."""
        fresh = {arm: ModelMetrics(self._seconds, keep_samples=_SAMPLES_PER_ARM)
                 for arm in ("a", "b")}
        entry: dict[str, Any] = {"segment": self.segment, "reason": self.segment_reason,
                                 "started": self.segment_started, "ended": time.time(),
                                 "_of": self._state(), "_counted": None,
                                 "_seen": time.monotonic(),
                                 "_compared": (self.mode in ("shadow", "bandit")  # (kept)
                                               or 0.0 < self.b_share < 1.0) and any(
                                     m.totals()["total_requests"]
                                     for m in self.metrics.values())}
        for older in self.previous_segments:   # (one segment's metrics kept at a time)
            older["_final"] = True
        self.metrics = fresh
        self.sinks = {"a": (fresh["a"], self.callers), "b": (fresh["b"], self.callers)}
        self.shadow_sinks = (fresh["b"],)
        self.shadow = ShadowStats()
        self.bandit = self._new_bandit(self.bandit.slo_ms, self.bandit.floor)
        self.segment += 1
        self.segment_reason, self.segment_started = reason, entry["ended"]
        self.reset_perf = time.perf_counter()   # (its timeline too: A's bars outlived a promote)
        self.previous_segments.append(entry)
        _keep_segments(self.previous_segments)
        return entry

    def _state(self) -> dict[str, Any]:
        """(Lock held.) What one segment's report is made of."""
        return {"metrics": self.metrics, "shadow": self.shadow, "bandit": self.bandit,
                "arms": (self.a, self.b, self.b_share, self.mode),
                "segment": {"segment": self.segment, "segment_reason": self.segment_reason,
                            "segment_started": self.segment_started}}

    def _bring_up_to_date(self, entry: dict[str, Any]) -> None:
        """An earlier segment's report again if anything settled in it since it was made
        (a request, a shadow comparison, a bandit's outcome); its metrics are let go once
        a newer segment ended or nothing settled for :data:`_SETTLE_S` (bounded memory)."""
        of = entry.get("_of")
        if of is None:
            return
        bandit = of["bandit"]
        counted = (sum(m.totals()["total_requests"] for m in of["metrics"].values()),
                   of["shadow"].compared, of["shadow"].b_failed, of["shadow"].uncomparable,
                   sum(bandit.wins.values()) + sum(bandit.losses.values()))
        now = time.monotonic()
        if counted != entry["_counted"]:
            report = self._report_of(of).to_dict()
            report.pop("previous_segments", None)
            entry["report"], entry["_counted"], entry["_seen"] = report, counted, now
        if entry.get("_final") or now - entry["_seen"] > _SETTLE_S:
            entry.pop("_of", None)

    def report(self, detect_ms: float | None = None) -> ABReport:
        if detect_ms is not None:   # (NaN raised numpy's words, inf read "less than inf ms")
            _check_float("detect_ms", plain(detect_ms), 0.001, 86_400_000.0)
            detect_ms = float(plain(detect_ms))
        with self._lock:
            state = self._state()
            previous = list(self.previous_segments)
        self._settle_previous()
        return self._report_of(state, detect_ms, [
            {k: v for k, v in e.items() if not k.startswith("_")} for e in previous])

    def _report_of(self, state: dict[str, Any], detect_ms: float | None = None,
                   previous: list[dict[str, Any]] | None = None) -> ABReport:
        metrics = state["metrics"]
        a, b, b_share, mode = state["arms"]
        samples = {arm: m.samples_ms() for arm, m in metrics.items()}  # (then counts: never
        snaps = {arm: m.snapshot() for arm, m in metrics.items()}  # fewer than the samples)
        latency = latest_only(compare_latency(samples["a"], samples["b"], detect_ms), snaps,
                              _SAMPLES_PER_ARM)
        errors = compare_arm_errors(snaps["a"], snaps["b"])
        bandit = state["bandit"].state() if mode == "bandit" else {}
        return ABReport(self.name, a, b, bandit["share_b"] if bandit else b_share, mode, snaps,
                        latency, errors, state["shadow"].to_dict() if mode == "shadow" else {},
                        previous_segments=previous or [], bandit=bandit, **state["segment"])


class ExperimentRegistry:
    """The A/B experiments of one engine, by name. The table is copy-on-write, so
    ``Engine.submit`` reads it without a lock; the engine checks names against its one
    namespace (models and experiments) and holds its lock around changes.

    Example:
        >>> reg = ExperimentRegistry()
        >>> exp = reg.add(ABExperiment("exp", a="clf-v1", b="clf-v2"))
        >>> reg.get("exp") is exp, reg.with_arm("clf-v2") == [exp]
        (True, True)
    """

    def __init__(self) -> None:
        self.table: dict[str, ABExperiment] = {}

    def get(self, name: str) -> ABExperiment | None:
        return self.table.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.table

    def names(self) -> list[str]:
        return list(self.table)

    def all(self) -> list[ABExperiment]:
        return list(self.table.values())

    def add(self, exp: ABExperiment) -> ABExperiment:
        """Register ``exp`` (replacing one of the same name)."""
        table = dict(self.table)
        table[exp.name] = exp
        self.table = table
        return exp

    def remove(self, name: str) -> ABExperiment:
        table = dict(self.table)
        exp = table.pop(name)
        self.table = table
        return exp

    def with_arm(self, model: str) -> list[ABExperiment]:
        """Experiments one of whose arms is ``model``."""
        return [e for e in self.table.values() if model in (e.a, e.b)]
