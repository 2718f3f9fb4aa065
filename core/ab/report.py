"""What an A/B experiment found: per-arm figures, the statistics, the verdict, and every
difference between the arms other than the model (which would confound the verdict).

Example:
    >>> rep = engine.ab_report("exp")
    >>> rep.latency.verdict
    'B is slower by 1.8 ms at p50 (95% CI 1.6 to 2.0 ms), p < 0.001'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from core.metrics import MetricsSnapshot
from .statistics import ErrorComparison, LatencyComparison

__all__ = ["ABReport", "arm_differences"]


@dataclass(frozen=True)
class ABReport:
    """Per-arm figures of an experiment, the statistics, and the verdict.

    Example:
        >>> rep = engine.ab_report("exp")
        >>> rep.to_dict()["arms"]["b"]["share_served"], rep.latency.verdict
        (0.21, 'B is slower by 1.8 ms at p50 (95% CI 1.6 to 2.0 ms), p < 0.001')
    """

    name: str
    a: str
    b: str
    b_share: float
    mode: str
    arms: dict[str, MetricsSnapshot]
    latency: LatencyComparison | None = None
    errors: ErrorComparison | None = None
    shadow: dict[str, Any] = field(default_factory=dict)
    #: every difference between the arms other than the model (sentences), worst first
    warnings: list[str] = field(default_factory=list)
    #: the comparison counts requests since the segment began (1: since the experiment was
    #: made or its metrics reset); a change to either arm (settings, a new version, another
    #: model) begins a new one, so samples from before are never mixed with those after
    segment: int = 1
    segment_reason: str | None = None
    segment_started: float | None = None  # epoch seconds
    #: the earlier segments' reports (``to_dict()`` each, with its reason and span), newest
    #: last; a few are kept
    previous_segments: list[dict[str, Any]] = field(default_factory=list)
    #: mode ``bandit``: what the bandit found (:meth:`core.ab.bandit.ThompsonBandit.state`)
    bandit: dict[str, Any] = field(default_factory=dict)

    @property
    def confound_warning(self) -> str | None:
        """Why latencies may differ for reasons that are not the models (uneven split)."""
        if self.mode == "shadow":
            return None
        rows = {arm: s.avg_batch_rows for arm, s in self.arms.items()}
        # the split these requests had, not the one configured now (a bandit's moves, and a
        # split changed after them took its warning away from the same data; an adversary)
        n = {arm: s.total_requests for arm, s in self.arms.items()}
        total = n["a"] + n["b"]
        share = n["b"] / max(1, total)
        if not 0.0 < share < 1.0 or min(s.total_requests for s in self.arms.values()) == 0:
            return None
        small = "b" if share < 0.5 else "a"
        big = "a" if small == "b" else "b"
        wait = {arm: s.p50_queue_ms for arm, s in self.arms.items()}   # (a slow second
        # on the small arm's few requests moves its mean, not its median)
        # (batches as full and waits as long on both arms, one request at a time say: the
        # split changes no arm's wait, and "fill more slowly (mean 1.0 rows vs 1.0)" said
        # it did; full batches that take the small arm longer to fill are still said)
        # Each part said only when the numbers show it ("... and its requests wait longer"
        # was said of 1.06 ms vs 5.05 ms, and of 5.05 vs 5.05; a newcomer).
        parts = []
        if rows[small] < 0.95 * rows[big]:
            parts.append(f"its batches fill more slowly (mean {rows[small]:.1f} rows vs "
                         f"{rows[big]:.1f})")
        if wait[small] > 1.25 * wait[big] + 0.25:
            parts.append(f"its requests wait longer in the queue ({wait[small]:.2f} ms vs "
                         f"{wait[big]:.2f} ms at p50)")
        # (uneven past the routing's noise too: 14 of 20 on a 50/50 split is chance, and
        # blamed the split; a reviewer)
        noise = max(0.15, 3 * math.sqrt(0.25 / max(1, total)))
        if abs(share - 0.5) < noise or not parts:
            return None
        # (the share set now, if the arrivals' is past random routing's noise from it: the
        # split was changed during the segment, and "B sees 24%" was said at 50 %; a
        # newcomer. Not in sticky mode, where a few busy users move the share by themselves.)
        changed = (f" (the split is {self.b_share:.0%} to B now: it changed during this "
                   "segment; Reset to compare at that split alone)"
                   if self.mode == "random" and abs(share - self.b_share) > noise else "")
        return (f"Uneven split ({1 - share:.0%}/{share:.0%}): arm {small.upper()} got "
                f"{min(share, 1 - share):.0%} of this segment's arrivals{changed}, so "
                f"{' and '.join(parts)}, for reasons that are not the model. For a fair "
                "latency comparison use shadow mode (both arms see every request).")

    @property
    def latency_parts(self) -> str | None:
        """Where a latency difference worth acting on comes from: the arms' p50 queue wait
        and p50 run told apart (an uneven split or other batch settings make an arm wait
        longer whatever its model does), in words; None when there is none to explain."""
        lat = self.latency
        if lat is None or not lat.meaningful:
            return None
        a, b = self.arms["a"], self.arms["b"]
        if not (a.success_count and b.success_count):
            return None
        dq = b.p50_queue_ms - a.p50_queue_ms
        dc = b.p50_compute_ms - a.p50_compute_ms

        def said(d: float, what: str) -> str:   # (both p50 waits 0: "as long", not "0.00 shorter")
            return f"{what} as long as A" if abs(d) < 0.005 else \
                f"{what} {abs(d):.2f} ms {'longer' if d > 0 else 'shorter'} than A"

        # ("runs as long than A" read wrong: each part says its own comparison; a newcomer)
        text = f"At p50 B {said(dq, 'waits')} in the queue and {said(dc, 'runs')}"
        same = lat.diff_p50_ms * dq > 0, lat.diff_p50_ms * dc > 0
        if same[0] and abs(dq) >= 2 * abs(dc):
            return text + ": the difference is mostly queueing, not the model"
        if same[1] and abs(dc) >= 2 * abs(dq):
            return text + ": the difference is mostly the model's run"
        return text

    @property
    def verdict(self) -> str:
        parts = [c.verdict for c in (self.latency, self.errors) if c is not None]
        if self.latency_parts:
            parts.insert(1, self.latency_parts)
        text = ". ".join(parts) + "." if parts else ""
        if self.mode in ("random", "sticky") and self.b_share in (0.0, 1.0):
            # (promoted or rolled back: "not enough data yet" read as if waiting would help)
            arm, model = ("B", self.b) if self.b_share == 1.0 else ("A", self.a)
            where = (f"Every caller goes to {arm} ({model}) now: new requests add to that "
                     "arm only; set B's share between 0 and 1 to compare again.")
            # the comparison that led here is the segment before now (a split to or from 0
            # or 1 begins one: one arm alone is compared with nothing): said beside it
            for k, seg in enumerate(reversed(self.previous_segments)):
                last = seg.get("report") or {}
                if last.get("verdict") and last.get("total_requests") and (
                        last.get("mode") in ("shadow", "bandit")
                        or last.get("b_share") not in (0.0, 1.0)):
                    return (f"{where} {'Before the change' if k == 0 else 'The last comparison'}"
                            f" (segment {seg['segment']}, {_how_split(last, self.a, self.b)}): "
                            f"{last['verdict']}")
            text += " " + where
        return text.strip()

    def to_dict(self) -> dict[str, Any]:
        # the callers' requests: in shadow mode A's (B's copies are not more requests: a
        # newcomer's shadow segment read 13.2k where callers sent 6,601)
        total = (self.arms["a"].total_requests if self.mode == "shadow"
                 else sum(s.total_requests for s in self.arms.values()))
        arms = {}
        for arm, s in self.arms.items():
            arms[arm] = {
                "model": self.a if arm == "a" else self.b,
                "requests": s.total_requests, "successes": s.success_count,
                "errors": s.error_count, "error_rate": s.error_rate,
                "p50_ms": s.p50_ms, "p95_ms": s.p95_ms, "p99_ms": s.p99_ms,
                "avg_latency_ms": s.avg_latency_ms,
                "mean_batch_rows": s.avg_batch_rows,
                "share_served": s.total_requests / total if total else 0.0,
            }
            if self.mode == "shadow":  # callers are all served by A; B sees copies
                arms[arm]["share_served"] = 1.0 if arm == "a" else 0.0
                arms[arm]["shadow_copies"] = s.total_requests if arm == "b" else 0
        return {"name": self.name, "a": self.a, "b": self.b, "b_share": self.b_share,
                "mode": self.mode, "total_requests": total, "arms": arms,
                "latency": self.latency.to_dict() if self.latency else None,
                "errors": self.errors.to_dict() if self.errors else None,
                "shadow": self.shadow, "verdict": self.verdict,
                "confound_warning": self.confound_warning, "warnings": list(self.warnings),
                "latency_parts": self.latency_parts,
                "segment": self.segment, "segment_reason": self.segment_reason,
                "segment_started": self.segment_started,
                "previous_segments": list(self.previous_segments), "bandit": self.bandit}


def _how_split(report: dict[str, Any], a: str, b: str) -> str:
    """How an earlier segment sent its requests, in words, with its arms when they are not
    today's (a shadow segment read "50% to B" where B saw a copy of every request, a 0.5 %
    canary "0% to B", and the arms swapped since went unsaid; a reviewer)."""
    mode, share = report.get("mode"), float(report.get("b_share") or 0.0)
    how = ("shadow: B saw a copy of every request" if mode == "shadow" else
           f"the bandit's split, {share * 100:.3g}% to B at its end" if mode == "bandit" else
           f"{share * 100:.3g}% to B")
    arms = (report.get("a"), report.get("b"))
    return how if arms == (a, b) else f"A {arms[0]}, B {arms[1]}; {how}"


_BATCH_FIELDS = {  # BatchConfig field -> how to say it
    "max_wait_ms": "max wait (ms)", "max_batch_size": "max batch size",
    "policy": "release policy", "latency_slo_ms": "latency SLO (ms)",
    "timeout_ms": "timeout (ms)", "max_queue": "queue bound",
    "instances": "runs at once (instances)"}
_SESSION_FIELDS = {"intra_op_threads": "ONNX Runtime threads",
                   "graph_optimization": "graph optimisation", "provider": "execution provider"}


def arm_differences(report: ABReport, batch: dict[str, Any], session: dict[str, Any],
                    warm: dict[str, bool],
                    exp_cold: dict[str, bool] | None = None) -> list[str]:
    """Every difference between the arms other than the model, as sentences, worst first:
    batch settings, session options, warm state, and the split. ``batch``, ``session`` and
    ``warm`` map "a"/"b" to each arm model's BatchConfig, SessionConfig (or None) and warm
    state."""
    out: list[str] = []
    if report.a == report.b:   # (an A/A test: nothing differs but chance)
        out.append(f"An A/A test: both arms are {report.a} (one queue, one session), so a "
                   "difference found is chance: at p < 0.05 about one comparison in twenty "
                   "finds one. It checks the statistics and the split, not a model.")
    a, b = batch["a"], batch["b"]
    diffs = [f"{label}: A {getattr(a, f)!s}, B {getattr(b, f)!s}"
             for f, label in _BATCH_FIELDS.items() if getattr(a, f) != getattr(b, f)]
    if diffs:
        hint = ""
        if a.max_wait_ms != b.max_wait_ms:
            lower = "B" if b.max_wait_ms < a.max_wait_ms else "A"
            hint = (f" At low load a request waits up to its arm's max wait for company, so "
                    f"{lower} can look up to {abs(a.max_wait_ms - b.max_wait_ms):g} ms faster "
                    "at p50 whatever the models do.")
        out.append("The arms have different batch settings (" + "; ".join(diffs) + "): a "
                   "latency difference may come from them, not from the models." + hint)
    sa, sb = session["a"], session["b"]
    if sa is not None and sb is not None:
        sdiffs = [f"{label}: A {getattr(sa, f)!s}, B {getattr(sb, f)!s}"
                  for f, label in _SESSION_FIELDS.items() if getattr(sa, f) != getattr(sb, f)]
        if sdiffs:
            out.append("The arms' ONNX Runtime sessions are set up differently ("
                       + "; ".join(sdiffs) + "): compute time differs for that reason too.")
    if warm["a"] != warm["b"]:
        cold = "A" if not warm["a"] else "B"
        out.append(f"Arm {cold} has not run every batch size its settings produce yet (not "
                   "warm): its first batches of new sizes are slower. Warm both up first.")
    elif was_cold := [k.upper() for k in ("a", "b") if (exp_cold or {}).get(k)
                      and not (exp_cold or {}).get("b" if k == "a" else "a")]:
        # (warm now, not when these figures began: its cold runs are in them)
        out.append(f"Arm {was_cold[0]} was not warm when this comparison began: its first "
                   "batches of new sizes were slower, and are in these figures. Reset the "
                   "experiment's figures (engine.reset_metrics) to compare warm arms.")
    if report.confound_warning:
        out.append(report.confound_warning)
    return out
