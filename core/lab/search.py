"""Quick search: a hill-climb over max batch size × max wait × ONNX Runtime threads, from
the model's own settings, instead of measuring the whole grid (Model Analyzer's "quick"
mode).

A setting's **score** is its goodput at the latency budget: the requests per second
answered within ``p99_ms``, at the highest load it sustains with every load below it
sustained too (the recommendation's rule, :func:`core.lab.analysis.recommend`). Loads are
climbed from the lowest and a setting stops at its first miss (the loads above it cannot
count), so a setting that fails early costs one point. The climb starts from the grid
point nearest the model's own settings, measures the neighbours one step away on each
axis, moves to the best if it beats the current score by more than the noise
(:data:`GAIN_PCT`), and stops when none does (early exit).

Constraints: ``p99_ms`` (the latency budget), ``min_throughput_rps`` (a setting whose best
goodput is below it is infeasible), ``max_memory_mib`` (batch sizes whose peak memory,
measured in a child process, exceeds it are never tried), ``max_error_rate``.

Example:
    >>> res = quick_search(engine, "mlp", [1, 8, 32, 64], [0, 2, 5], [500, 2000, 4000],
    ...                    Constraints(p99_ms=10), session_threads=[1, 2])
    >>> res.best, res.points, res.measured_s
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import pandas as pd

from core.config import _check_float, _check_int, plain
from .analysis import _sustained, disturbed_points
from .stability import StabilityRule
from .grid import check_grid, check_rates, is_remote
from .replay import in_process_only
from .sweeps import PointMeasurer, frame_of

if TYPE_CHECKING:
    from core.engine import EngineCore

__all__ = ["Constraints", "SearchResult", "quick_search", "setting_scores", "GAIN_PCT"]

#: A neighbour must beat the current setting's goodput by more than this (%) to move:
#: the arrival count of a Poisson window alone varies by a few %.
GAIN_PCT = 3.0

Setting = tuple[int, float, "int | None"]  # (max_batch_size, max_wait_ms, session threads)


@dataclass(frozen=True)
class Constraints:
    """What a setting must satisfy to count: p99 within ``p99_ms`` (the latency budget, and
    the SLO goodput is counted at), at least ``min_throughput_rps`` of goodput, batches
    within ``max_memory_mib`` of peak memory, errors at most ``max_error_rate``."""

    p99_ms: float
    min_throughput_rps: float | None = None
    max_memory_mib: float | None = None
    max_error_rate: float = 0.0

    def __post_init__(self) -> None:
        _check_float("p99_ms", self.p99_ms, 0.001, 3_600_000.0)
        if self.min_throughput_rps is not None:
            _check_float("min_throughput_rps", self.min_throughput_rps, 0.0, 1e9)
        if self.max_memory_mib is not None:
            _check_float("max_memory_mib", self.max_memory_mib, 0.001, 1e9)
        _check_float("max_error_rate", self.max_error_rate, 0.0, 1.0)


@dataclass
class SearchResult:
    """What a quick search measured and found.

    ``frame``: every point measured (sweep columns); ``scores``: one row per setting tried
    (its goodput score, the load it was reached at, feasible or why not); ``path``: the
    settings the climb stood on, in order; ``best``: the best feasible setting (None if none
    was); ``points``/``measured_s``: what it cost; ``excluded``: settings never tried and
    why (memory); ``reason``: one sentence."""

    frame: pd.DataFrame
    scores: pd.DataFrame
    path: list[Setting]
    best: Setting | None
    points: int
    measured_s: float
    excluded: dict[Setting, str] = field(default_factory=dict)
    reason: str = ""
    complete: bool = True


def _passes(row: Any, c: Constraints) -> bool:
    """A point meets the constraints: the recommendation's rule (``_sustained``)."""
    return bool(_sustained(row, c.p99_ms, c.max_error_rate))


def _ladder_score(rows: Any, c: Constraints) -> dict[str, Any]:
    """One setting's score from its points in ascending load: the best goodput up to its
    first miss (loads above it cannot count), and whether that meets the constraints."""
    best: dict[str, Any] | None = None
    for r in rows:
        if not _passes(r, c):
            break
        if best is None or r["goodput_rps"] >= best["goodput_rps"]:
            best = {"goodput_rps": float(r["goodput_rps"]), "load": float(r["load"]),
                    "p99_ms": float(r["p99_ms"])}
    score = best or {"goodput_rps": 0.0, "load": float("nan"), "p99_ms": float("nan")}
    feasible = best is not None and (c.min_throughput_rps is None
                                     or score["goodput_rps"] >= c.min_throughput_rps)
    return {**score, "feasible": feasible}


def setting_scores(frame: pd.DataFrame, c: Constraints) -> pd.DataFrame:
    """Each setting's score from sweep rows (a grid's or a search's): goodput within
    ``c.p99_ms`` at the highest load it sustained with every lower load sustained too;
    columns ``max_batch_size, max_wait_ms, session_threads, goodput_rps, load, p99_ms,
    feasible``. Rate loads only."""
    out = []
    f = frame[frame["load_kind"] == "rate"]
    keys = ["max_batch_size", "max_wait_ms", "session_threads"]
    for key, g in f.groupby(keys, dropna=False, sort=False):
        rows = (r for _, r in g.sort_values("load").iterrows())
        out.append({**dict(zip(keys, key)), **_ladder_score(rows, c)})
    return pd.DataFrame(out, columns=keys + ["goodput_rps", "load", "p99_ms", "feasible"])


def _nearest(values: Sequence[Any], x: Any) -> int:
    return min(range(len(values)), key=lambda i: (abs(float(values[i]) - float(x)), i))


def quick_search(engine: EngineCore, model: str, max_batch_sizes: Sequence[int],
                 max_waits_ms: Sequence[float], rates_rps: Sequence[float],
                 constraints: Constraints, session_threads: Sequence[int] | None = None,
                 duration_s: float = 3.0, pattern: str = "poisson", seed: int = 0,
                 rows_per_request: int = 1, policy: str = "deadline",
                 stability: StabilityRule | bool = True, max_steps: int = 20,
                 progress: Callable[[int, dict[str, Any]], None] | None = None,
                 stop: Any = None) -> SearchResult:
    """Hill-climb to the setting with the most goodput within ``constraints`` (see the
    module docstring); every point is measured as a sweep measures it (pinned policy, no
    latency SLO, one instance, stability windows) and the model's own settings and session
    are restored afterwards. ``progress(points, row)`` after each point."""
    if not rates_rps:
        raise ValueError("give rates_rps: the loads each setting is climbed through")
    check_grid("quick search", max_batch_sizes, max_waits_ms, duration_s, seed, 1, policy,
               session_threads=session_threads)
    _check_int("max_steps", plain(max_steps), 1, 10_000)
    if session_threads:   # (each a hot swap of the model, in the engine's process)
        in_process_only(engine, "a quick search over session_threads loads the model again "
                        "for each thread count", "search")
    check_rates(rates_rps, duration_s, stability)
    c = constraints
    batches = sorted({int(b) for b in max_batch_sizes})
    waits = sorted({float(w) for w in max_waits_ms})
    loads = sorted({float(r) for r in rates_rps})
    threads: list[int | None] = (sorted({int(t) for t in session_threads})
                                 if session_threads else [None])
    excluded: dict[Setting, str] = {}
    if c.max_memory_mib is not None and not is_remote(engine, model):
        mem = engine.measure_memory(model, batch_sizes=batches)
        peak = {int(r.batch_size): r.peak_mib for r in mem.itertuples()}
        for b in batches:
            p = peak.get(b)
            if p is None or pd.isna(p) or p > c.max_memory_mib:
                why = (f"peak memory {p:,.0f} MiB > {c.max_memory_mib:g} MiB" if p is not None
                       and not pd.isna(p) else "its peak memory could not be measured")
                for w, t in itertools.product(waits, threads):
                    excluded[(b, w, t)] = why
    m = PointMeasurer(engine, model, duration_s=duration_s, pattern=pattern, seed=seed,
                      rows_per_request=rows_per_request, stop=stop, policy=policy,
                      stability=stability, slo_ms=c.p99_ms)   # (restored below, at the end)
    rows: list[dict[str, Any]] = []
    scores: dict[Setting, dict[str, Any]] = {}
    k = 0

    def score(s: Setting) -> float:
        nonlocal k
        if s not in scores:
            b, w, t = s
            mine: list[dict[str, Any]] = []
            for load in loads:
                if stop is not None and stop.is_set():
                    return 0.0  # cancelled: this setting was not measured through, not scored
                row = m.measure_or_stop(k, b, w, "rate", load, threads=t)
                if row is None:   # (closed between points: cut short, as by a cancel)
                    return 0.0
                k += 1
                if stop is not None and stop.is_set():
                    return 0.0  # cut short: not a finished point, nor a finished setting
                rows.append(row)
                mine.append(row)
                if progress is not None:
                    progress(len(rows), row)
                if not _passes(row, c):
                    break  # the loads above cannot count (every lower load must pass)
            scores[s] = _ladder_score(mine, c)
        return scores[s]["goodput_rps"] if scores[s]["feasible"] else 0.0

    def setting(i: int, j: int, h: int) -> Setting:
        return (batches[i], waits[j], threads[h])

    own_b, own_w = m.own
    own_t = m.own_threads if threads != [None] else None
    pos = (_nearest(batches, own_b), _nearest(waits, own_w),
           _nearest(threads, own_t) if own_t is not None and threads != [None] else 0)
    path: list[Setting] = []
    try:
        # Start from the nearest allowed setting to the model's own.
        candidates = sorted(itertools.product(range(len(batches)), range(len(waits)),
                                              range(len(threads))),
                            key=lambda p: sum(abs(a - b) for a, b in zip(p, pos)))
        start = next((p for p in candidates if setting(*p) not in excluded), None)
        if start is not None:
            pos = start
            current = score(setting(*pos))
            path.append(setting(*pos))
            for _ in range(max_steps):
                if stop is not None and stop.is_set():
                    break
                neighbours = []
                for axis, size in enumerate((len(batches), len(waits), len(threads))):
                    for d in (-1, 1):
                        p = list(pos)
                        p[axis] += d
                        if 0 <= p[axis] < size and setting(*p) not in excluded:
                            neighbours.append(tuple(p))
                measured = [(score(setting(*p)), p) for p in neighbours]
                if not measured:
                    break
                best_score, best_pos = max(measured, key=lambda sp: sp[0])
                if not best_score > current * (1 + GAIN_PCT / 100.0):
                    break  # no neighbour beats this one beyond the noise: stop here
                pos, current = best_pos, best_score
                path.append(setting(*pos))
    finally:
        m.restore()
    frame = frame_of(rows)
    table = pd.DataFrame([{"max_batch_size": s[0], "max_wait_ms": s[1],
                           "session_threads": s[2] if s[2] is not None else m.own_threads,
                           **v} for s, v in scores.items()],
                         columns=["max_batch_size", "max_wait_ms", "session_threads",
                                  "goodput_rps", "load", "p99_ms", "feasible"])
    best = _smallest_of_the_best(scores, m.own_threads)
    reason = _reason(best, scores, c, m, len(rows), path, max(float(r) for r in rates_rps))
    disturbed = disturbed_points(frame)
    if disturbed:   # (a warm-up elsewhere spoiled the start, unsaid; a newcomer)
        reason += (f" {disturbed} of the {len(frame)} point(s) were measured while something "
                   "else used the machine (marked in the table): their goodput may be low "
                   "for that reason; search again before relying on them.")
    complete = not (stop is not None and stop.is_set())
    if not complete:
        reason = ("Cancelled: the search stopped before it finished; the best of the settings "
                  "measured through: " + reason)
    return SearchResult(frame, table, path, best, len(rows), m.measured_s, excluded, reason,
                        complete)


def _smallest_of_the_best(scores: dict[Setting, dict[str, Any]], own_threads: Any
                          ) -> Setting | None:
    """The feasible setting with the most goodput, or, among those within the noise of it
    (:data:`GAIN_PCT`), the smallest (shortest wait, then smallest batch, then fewest
    threads), as :func:`core.lab.analysis.recommend` breaks its ties: no waiting that the
    evidence does not show to help."""
    ties = _within_noise_of_the_best(scores)
    if not ties:
        return None
    return min(ties, key=lambda s: (s[1], s[0], own_threads if s[2] is None else s[2]))


def _within_noise_of_the_best(scores: dict[Setting, dict[str, Any]]) -> list[Setting]:
    """The feasible settings whose goodput is within :data:`GAIN_PCT` of the most."""
    feasible = {s: v["goodput_rps"] for s, v in scores.items() if v["feasible"]}
    top = max(feasible.values(), default=0.0)
    return [s for s, g in feasible.items() if g * (1 + GAIN_PCT / 100.0) >= top]


def _reason(best: Setting | None, scores: dict[Setting, dict[str, Any]], c: Constraints,
            m: PointMeasurer, points: int, path: list[Setting], top: float) -> str:
    def name(s: Setting) -> str:
        b, w, t = s
        t = m.own_threads if t is None else t
        return (f"max_batch_size={b}, max_wait_ms={w:g}"
                + (f", {t} ONNX Runtime thread(s)" if t is not None else ""))

    cost = f"{len(scores)} setting(s), {points} point(s), {m.measured_s:.0f} s of measurement"
    if best is None:
        return (f"No setting tried met p99 <= {c.p99_ms:g} ms"
                + (f" with at least {c.min_throughput_rps:,.0f} req/s of goodput"
                   if c.min_throughput_rps else "")
                + f" at the lowest load ({cost}): relax the constraints or lower the loads.")
    v = scores[best]
    where = (f"found in {path.index(best)} step(s) from {name(path[0])}" if best in path
             else f"measured beside the climb from {name(path[0])}")
    text = (f"{name(best)}: {v['goodput_rps']:,.0f} req/s of goodput within {c.p99_ms:g} ms "
            f"(at {v['load']:,.0f} req/s offered, p99 {v['p99_ms']:.2f} ms); {where} "
            f"({cost}).")
    ties = [s for s in _within_noise_of_the_best(scores) if s != best]
    if ties:
        text += (f" {len(ties)} other setting(s) were within {GAIN_PCT:g} % of the most "
                 f"goodput ({'; '.join(name(s) for s in ties[:3])}"
                 + ("; ..." if len(ties) > 3 else "")
                 + "); this one waits least, then batches least: no waiting that the "
                 "evidence does not show to help.")
    own_b, own_w = m.own
    if (path[0][0], float(path[0][1])) != (own_b, float(own_w)):
        text += (f" The climb started there, the choices nearest the model's own "
                 f"max_batch_size={own_b}, max_wait_ms={own_w:g} (not among them).")
    start = scores.get(path[0])
    if start is not None and best != path[0]:
        g0 = start["goodput_rps"] if start["feasible"] else 0.0
        text += (f" The starting point had {g0:,.0f} req/s"
                 + (f" ({100 * (v['goodput_rps'] - g0) / g0:+.1f} %)." if g0 > 0 else
                    " (it missed the target at the lowest load)." if not start["feasible"]
                    else "."))
    at_top = sum(1 for x in scores.values() if x["feasible"] and x["load"] >= top)
    if v["load"] >= top:   # (every one at the ceiling: the climb could not tell them apart)
        text += (f" It met the target at the highest load tried ({top:,.0f} req/s), as did "
                 f"{at_top} of the {len(scores)} setting(s) measured: capacity may be higher, "
                 "and settings that all serve every load cannot be told apart; add higher "
                 "loads to find where they differ.")
    return text
