"""The engine's A/B experiments: created over two loaded models with the same interface,
changed live, reported with every difference between the arms that would confound the
verdict (batch settings, session options, warm state, where each arm is served).

Example:
    >>> room.create("exp", "clf-v1", "clf-v2", b_share=0.2)      # -> ABReport
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


from core.ab import ABExperiment, ABReport, arm_differences
from core.ab.bandit import DEFAULT_FLOOR, DEFAULT_SLO_MS
from core.ab.statistics import compare_arm_errors
from core.config import BatchConfig, EngineConfig
from core.errors import ConfigError
from core.metrics import MetricsSnapshot
from core.metrics.events import EventLog, describe_changes
from core.models import ModelInfo, interface, interface_differences
from .namespace import Namespace

__all__ = ["ExperimentRoom", "interface"]


class ExperimentRoom:
    """Create, change, delete and report A/B experiments (the engine holds the lock)."""

    def __init__(self, config: EngineConfig, namespace: Namespace,
                 is_warm: Callable[[str], bool], events: EventLog | None = None) -> None:
        self.config = config
        self.events = events or EventLog()
        self.ns = namespace
        self.table = namespace.experiments
        self.registry = namespace.registry
        self._is_warm = is_warm

    def create(self, name: str, a: str, b: str, b_share: float, mode: str,
               seed: int | None, replace: bool, bandit: dict[str, float] | None = None
               ) -> ABReport:
        self.ns.check_new_name(name, "experiment")
        with self.registry.lock:
            self.ns.check_name_free(name, "experiment", replace)
            self.check_arms(a, b)
            exp = self.table.add(ABExperiment(name, a, b, b_share, mode, seed,
                                              self.config.timeseries_seconds,
                                              **(bandit or {})))
            exp.warm_of = self._is_warm
            exp.note_cold()
        return exp.report()

    def check_arms(self, a: str, b: str) -> None:
        for model in (a, b):
            if model in self.table:
                raise ConfigError(f"{model!r} is an A/B experiment; an arm must be a model")
            self.ns.entry(model)
        ia, ib = self.ns.entry(a).info, self.ns.entry(b).info
        if interface(ia) != interface(ib):
            raise ConfigError(f"models {a!r} and {b!r} have different inputs: "
                              f"{'; '.join(interface_differences(ia, ib))}; an A/B test "
                              "needs two models that take the same inputs")

    def check_arm_compatible(self, model: str, info: ModelInfo) -> None:
        """A hot swap must keep the interface of a model that is an A/B arm."""
        for exp in self.table.with_arm(model):
            if exp.a == exp.b:   # (an A/A test: both arms change together)
                continue
            other = exp.b if model == exp.a else exp.a
            other_entry = self.registry.get(other)
            if other_entry is not None and interface(other_entry.info) != interface(info):
                raise ConfigError(
                    f"model {model!r} is an arm of A/B experiment {exp.name!r}, and the new "
                    f"version's inputs differ from those of arm {other!r}: "
                    f"{'; '.join(interface_differences(info, other_entry.info))}; delete or "
                    "update the experiment first")

    def check_not_an_arm(self, model: str) -> None:
        arms = self.table.with_arm(model)
        if arms:
            raise ConfigError(f"model {model!r} is an arm of A/B experiment "
                              f"{arms[0].name!r}; delete the experiment first "
                              "(engine.delete_ab) or give it another arm")

    def update(self, name: str, b_share: float | None, a: str | None, b: str | None,
               mode: str | None, bandit: dict[str, float | None] | None = None) -> ABReport:
        with self.registry.lock:
            exp = self.ns.experiment(name)
            if a is not None or b is not None:
                self.check_arms(a if a is not None else exp.a, b if b is not None else exp.b)
            before = (exp.a, exp.b, exp.mode, exp.b_share, exp.bandit.slo_ms, exp.bandit.floor)
            began = exp.update(b_share=b_share, a=a, b=b, mode=mode, **(bandit or {}))
        changes = [f"arm {arm} is now {new!r}" for arm, old, new in
                   (("A", before[0], exp.a), ("B", before[1], exp.b)) if old != new]
        if exp.mode != before[2]:
            changes.append(f"routing is now {exp.mode}")
        if (exp.bandit.slo_ms, exp.bandit.floor) != before[4:]:
            changes.append(f"bandit SLO {exp.bandit.slo_ms:g} ms, floor {exp.bandit.floor:g} "
                           "(its evidence starts again)")
        if exp.b_share != before[3]:
            # (a bandit sets the split itself: "0.50 → 0.90" while B got 48 %; an adversary)
            changes.append(f"B's share {before[3]:.2f} → {exp.b_share:.2f}"
                           + (" (for when the bandit stops: it sets the split while it "
                              "routes)" if exp.mode == "bandit" else ""))
        if began:   # (begun by update, in the same step as the change)
            exp.name_segment("; ".join(changes))
        if changes:
            self.events.add(name, "ab", "; ".join(changes))
        return exp.report()

    def delete(self, name: str) -> None:
        with self.registry.lock:
            self.ns.experiment(name)
            self.table.remove(name)

    def report(self, name: str, detect_ms: float | None = None) -> ABReport:
        report = self.ns.experiment(name).report(detect_ms)
        entries = {arm: self.registry.get(model) for arm, model in (("a", report.a),
                                                                      ("b", report.b))}
        if any(e is None for e in entries.values()):
            return report  # an arm is being swapped out: no comparison of settings now
        configs = {k: e.served.config for k, e in entries.items()}
        if configs["a"].max_batch_size != configs["b"].max_batch_size:   # too large for one
            report = dataclasses.replace(report, errors=compare_arm_errors(   # arm, not both
                report.arms["a"], report.arms["b"], frozenset({"RequestTooLargeError"})))
        warnings = arm_differences(
            report, configs,
            {k: e.backend.session_config for k, e in entries.items()},
            {k: self._is_warm(m) for k, m in (("a", report.a), ("b", report.b))},
            exp_cold=self.ns.experiment(name).cold_at_start)
        sh = report.shadow or {}
        if sh.get("uncomparable") and not sh.get("compared_requests"):   # (said "compared
            warnings.append(   # 50" of outputs of other shapes, unsaid; an adversary)
                f"B's outputs could not be compared with A's on any of {sh['uncomparable']:,} "
                "copies: no output of the same name, or at the same position with the same "
                "kind and shape; shadow mode compares outputs that mean the same thing")
        where = {k: (e.remote.target.url if e.remote is not None else None)
                 for k, e in entries.items()}
        if where["a"] != where["b"]:
            arms = "; ".join(f"{k.upper()} by {u or 'this engine'}" for k, u in where.items())
            warnings.append(f"The arms are served in different places ({arms}): a remote "
                            "arm's latency includes the network and its server's HTTP and "
                            "batching, measured at this client.")
        return dataclasses.replace(report, warnings=warnings)

    def arm_warmed(self, model: str) -> None:
        """``model`` was warmed up: an experiment with no request on that arm yet in the
        segment under way compares it warm (no cold run of it is in the figures; warmed
        before any traffic, it was said to be; a reviewer)."""
        for exp in self.table.with_arm(model):
            for arm, name in (("a", exp.a), ("b", exp.b)):
                if name == model and not exp.metrics[arm].totals()["total_requests"]:
                    exp.cold_at_start[arm] = False

    def arms_depth(self, exp: Any) -> int:
        """Requests waiting in the queues of ``exp``'s arms (those sent to the arms'
        models directly too, as the Monitor counts them); it read 0 (an adversary)."""
        return sum(self.registry.queue_depth(e) for e in self._arm_entries(exp, None))

    def arms_in_flight(self, exp: Any) -> int:
        """Requests ``exp``'s arms' models accepted and have not settled (as ``arms_depth``,
        those sent to the models directly too)."""
        return sum(self.registry.in_flight(e) for e in self._arm_entries(exp, None))

    def _arm_entries(self, exp: Any, arm: str | None) -> list[Any]:
        """The loaded models of ``exp``'s arms (``arm`` None) or of one arm."""
        models = (exp.a, exp.b) if arm is None else (exp.a if arm == "a" else exp.b,)
        return [e for e in (self.registry.get(m) for m in dict.fromkeys(models))
                if e is not None]

    def snapshot(self, exp: Any, arm: str | None, window_s: float | None) -> MetricsSnapshot:
        """What ``exp``'s callers saw (``arm`` None) or one arm served, with the queue — now
        and each second — of its arms' models (or the arm's), whole: this experiment's part
        and other traffic to them. The experiment's own series read 0 (the Monitor's CSV,
        beside its chart of 3-7 queued; a newcomer)."""
        entries = self._arm_entries(exp, arm)
        own = exp.callers if arm is None else exp.metrics[arm]
        snap = own.snapshot(sum(self.registry.queue_depth(e) for e in entries),
                            window_s=window_s)
        ts = snap.timeseries
        if not entries or ts.empty:
            return snap
        depth: dict[Any, int] = {}
        for e in entries:
            for t, d in e.metrics.depth_series().items():
                depth[t] = depth.get(t, 0) + d
        ts = ts.assign(queue_depth=ts["time"].map(depth).fillna(0).astype(
            ts["queue_depth"].dtype))
        return dataclasses.replace(snap, timeseries=ts)

    def match_settings(self, name: str, guard: Callable[[str], None]) -> BatchConfig:
        """``guard(model)`` refuses the change (asked under the lock a sweep starts in)."""
        with self.registry.lock:
            exp = self.ns.experiment(name)
            guard(exp.b)   # (again: a sweep of B starting meanwhile undid it; a reviewer)
            a_cfg = self.ns.entry(exp.a).served.config
            b_entry = self.ns.entry(exp.b)
            b_cfg = b_entry.served.config
            changed = b_cfg != a_cfg
            b_entry.served.configure(a_cfg)
        if changed:
            self.events.add(exp.b, "settings", "given arm A's settings: "
                            + describe_changes(b_cfg, a_cfg))
            self.arm_changed(exp.b, "was given arm A's batch settings")
        return a_cfg

    def arm_changed(self, model: str, what: str) -> None:
        """``model`` changed (its settings, its version): every experiment it is an arm of
        begins a new comparison segment."""
        for exp in self.table.with_arm(model):
            arm = ("arms A and B" if exp.a == exp.b == model
                   else "arm A" if exp.a == model else "arm B")
            exp.new_segment(f"{arm} ({model}) {what}")


class ExperimentMethods:
    """The engine's A/B methods (mixed into :class:`~core.engine.EngineCore`, whose rooms
    ``_ab`` and ``_ns`` they use)."""

    _ab: ExperimentRoom
    _ns: Any
    _guard: Callable[[str, str], None]
    _guard_use: Callable[[str, str], None]

    def create_ab(self, name: str, a: str, b: str, b_share: float = 0.5, mode: str = "random",
                  seed: int | None = None, replace: bool = False,
                  bandit_slo_ms: float = DEFAULT_SLO_MS,
                  bandit_floor: float = DEFAULT_FLOOR) -> ABReport:
        """Create an A/B experiment ``name`` splitting traffic between models ``a`` and ``b``;
        submit to ``name`` like to a model. Returns its (empty) report. ``a == b`` is an
        A/A test: both arms the same model (one queue), a check of the statistics and the
        split (its report's warnings say so). ``mode="bandit"``
        moves the split live towards the arm that answers within ``bandit_slo_ms`` more
        often, each arm keeping at least ``bandit_floor`` of the traffic."""
        self._check_open()
        self._guard_arms(a, b)
        return self._ab.create(name, a, b, b_share, mode, seed, replace,
                               {"bandit_slo_ms": bandit_slo_ms, "bandit_floor": bandit_floor})

    def update_ab(self, name: str, b_share: float | None = None, a: str | None = None,
                  b: str | None = None, mode: str | None = None,
                  bandit_slo_ms: float | None = None,
                  bandit_floor: float | None = None) -> ABReport:
        """Change an experiment's split (``b_share=1.0`` promotes B), arms, mode or bandit
        settings, live. New arms are checked like at creation: loaded models with the same
        inputs. Other arms, another mode, a bandit's new SLO or floor, and a split to or
        from 0 or 1 begin a new comparison segment: the report's arms, latency and errors
        start again, and the one before is ``ab_report(name).previous_segments[-1]
        ["report"]`` (a split between 0 and 1 changed again goes on in the same segment)."""
        self._guard_arms(a, b)
        return self._ab.update(name, b_share, a, b, mode,
                               {"bandit_slo_ms": bandit_slo_ms, "bandit_floor": bandit_floor})

    def _guard_arms(self, *arms: str | None) -> None:
        for arm in arms:   # (a replay's private copy: its traffic would skew the replay)
            if arm is not None:
                self._guard_use(arm, "make it an arm of an A/B experiment")

    def delete_ab(self, name: str) -> None:
        self._ab.delete(name)
        self._removed(name)

    def ab_arms(self, name: str) -> tuple[str, str]:
        """The models behind arms A and B of experiment ``name`` (cheap: no statistics)."""
        exp = self._ns.experiment(name)
        return exp.a, exp.b

    def ab_experiments(self) -> list[str]:
        return self._ns.experiments.names()

    def ab_report(self, name: str, detect_ms: float | None = None) -> ABReport:
        """Per-arm figures, statistics and verdict of experiment ``name`` (``.to_dict()``).
        ``detect_ms``: the latency difference worth detecting (for the sample size).
        ``.warnings`` names every difference between the arms other than the model (batch
        settings, session options, warm state, an uneven split, where each is served)."""
        return self._ab.report(name, detect_ms)

    def ab_match_settings(self, name: str) -> BatchConfig:
        """Give arm B's model arm A's batch settings (all of them), so that a comparison is
        of the models alone; returns B's new configuration."""
        self._check_open()   # (configure() after close raises: so does this)
        self._guard(self._ns.experiment(name).b, "change its batch settings")
        return self._ab.match_settings(
            name, lambda model: self._guard(model, "change its batch settings"))

    def ab_metrics(self, name: str, arm: str, window_s: float | None = None) -> MetricsSnapshot:
        """What arm ``arm`` ("a" or "b") of experiment ``name`` served (see :meth:`metrics`
        for ``window_s``)."""
        exp = self._ns.experiment(name)
        if arm not in exp.metrics:
            raise ConfigError(f"arm must be 'a' or 'b', got {arm!r}")
        return self._ab.snapshot(exp, arm, window_s)
