"""What a sweep says: the Pareto frontier of throughput against p99, and the recommended
setting for a latency target.

Example:
    >>> recommend(frame, p99_slo_ms=10).reason
    'max_batch_size=32, max_wait_ms=2 serves 1,990 req/s with p99 7.9 ms, the most ...'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.config import _check_float, plain
from core.errors import ConfigError

__all__ = ["pareto_frontier", "Recommendation", "recommend", "disturbed_points", "disturbed_rows", "TIE_PCT",
           "TIE_MS"]

#: p99s this close to the best one are ties (the stability rule's tolerance and floor:
#: windows of one point disagree by that much on a quiet machine).
TIE_PCT = 10.0
TIE_MS = 0.5
#: Fewer requests than this at a point, and its p99 is about its slowest one or two.
FEW_REQUESTS = 100


def pareto_frontier(frame: pd.DataFrame, x: str = "achieved_rps", y: str = "p99_ms") -> pd.DataFrame:
    """Rows no other row beats on both higher ``x`` and lower ``y``, sorted by ``x``."""
    f = frame.dropna(subset=[x, y]).sort_values([x, y], ascending=[False, True])
    keep, best_y = [], float("inf")
    for idx, row in f.iterrows():
        if row[y] < best_y:
            keep.append(idx)
            best_y = row[y]
    return frame.loc[keep].sort_values(x)


@dataclass(frozen=True)
class Recommendation:
    """The chosen configuration for an SLO, the evidence for it, and how sure it is.

    ``load`` is the highest load (req/s, or clients) at which the choice met the target;
    ``ties`` are the other settings that met it at that load with a p99 within the noise
    (overlapping 95 % intervals) of the choice's."""

    max_batch_size: int | None
    max_wait_ms: float | None
    achieved_rps: float | None
    p99_ms: float | None
    reason: str
    load: float | None = None
    p99_ci_ms: tuple[float, float] | None = None
    ties: tuple[tuple[int, float], ...] = ()


def _sustained(frame: pd.DataFrame, p99_slo_ms: float, max_error_rate: float) -> pd.Series:
    # Served: every request answered (refusals and timeouts are errors), within the target
    # from its *intended* send time, so queueing and a lagging sender both show in the p99.
    # (Achieved vs offered rate is not compared: over a short Poisson point the number of
    # arrivals alone varies by more than 5 %.)
    return (frame["p99_ms"] <= p99_slo_ms) & (frame["error_rate"] <= max_error_rate) \
        & (frame["achieved_rps"] > 0)


def _setting_keys(f: pd.DataFrame) -> list[str]:
    """What makes a setting: batch size and wait, and the thread count where it was swept."""
    keys = ["max_batch_size", "max_wait_ms"]
    if "session_threads" in f and f["session_threads"].nunique(dropna=True) > 1:
        keys.append("session_threads")
    return keys


def _holds_below(f: pd.DataFrame) -> pd.Series:
    """Per row: every point of its setting and load kind at a lower load passed too."""
    out = pd.Series(True, index=f.index)
    for _, g in f.groupby(_setting_keys(f) + ["load_kind"], sort=False, dropna=False):
        g = g.sort_values("load")
        out[g.index] = g["pass"].astype(bool).cummin().to_numpy()
    return out


def _passed_over(f: pd.DataFrame, met: pd.Series, kind: str, top: float,
                 slo_ms: float, skip_baseline: bool = False) -> str:
    """Why a setting that met the target at a load past the chosen one was not chosen: it
    missed at a lower load (a newcomer saw 8 / 0 ms serve 1,500 req/s within the target and
    the star go to a setting that stopped at 1,500 too, unexplained)."""
    higher = f[met & ~f["pass"] & (f["load_kind"] == kind) & (f["load"] >= top)]
    if skip_baseline and "baseline" in f:   # (said already, by _against_baseline: the
        higher = higher[~higher["baseline"].fillna(False).astype(bool)]   # same twice)
    for _, r in higher.sort_values("load", ascending=False, kind="stable").iterrows():
        same = f[(f["load_kind"] == kind) & (f["load"] < r.load) & ~met]
        for key in _setting_keys(f):
            same = same[same[key].eq(r[key]) | (same[key].isna() & pd.isna(r[key]))]
        if len(same):
            low = same.sort_values("load", kind="stable").iloc[0]
            unit = "req/s" if kind == "rate" else "clients"
            threads = (f", {int(r.session_threads)} thread(s)" if "session_threads"
                       in _setting_keys(f) and pd.notna(r.session_threads) else "")
            why = (f"p99 {low.p99_ms:.1f} ms" if not low.p99_ms <= slo_ms
                   else f"{low.error_rate:.1%} errors")
            return (f" max_batch_size={int(r.max_batch_size)}, max_wait_ms={r.max_wait_ms:g}"
                    f"{threads} met the target at {r.load:,g} {unit} but missed it at "
                    f"{low.load:,g} ({why}), so it does not count: a setting must hold at "
                    "every lower load too (measure again if that miss was the machine).")
    return ""


def _goodput(row: pd.Series, slo_ms: float) -> float | None:
    """The row's goodput if it was measured at this SLO, else None."""
    g, at = row.get("goodput_rps"), row.get("slo_ms")
    if g is None or at is None or pd.isna(g) or pd.isna(at) or float(at) != float(slo_ms):
        return None
    return float(g)


def _against_baseline(f: pd.DataFrame, chosen: pd.Series, kind: str, top: float,
                      slo_ms: float) -> str:
    """The choice against the model's own settings (the sweep's baseline) at its load."""
    if "baseline" not in f or not f["baseline"].fillna(False).astype(bool).any():
        return ""
    base = f[f["baseline"].fillna(False).astype(bool) & (f["load_kind"] == kind)
             & (f["load"] == top)]
    if base.empty:
        return ""
    b = base.iloc[0]
    own = f"max_batch_size={int(b.max_batch_size)}, max_wait_ms={b.max_wait_ms:g}"
    runs = b.get("policy")
    if isinstance(runs, str) and runs:   # (its size and wait, under the sweep's policy:
        own += f", measured under {runs} as every point"   # not all the model's settings)
    if (b.max_batch_size, b.max_wait_ms) == (chosen.max_batch_size, chosen.max_wait_ms):
        # (its size and wait only: a model of another policy was measured under the
        # sweep's, and "its own settings" claimed what was not measured; an adversary)
        return (" These are the model's own batch size and wait" + (
            f" (measured under {runs}, as every point)" if isinstance(runs, str) and runs
            else "") + ": the sweep found nothing better.")
    g_c, g_b = _goodput(chosen, slo_ms), _goodput(b, slo_ms)
    if not bool(b.get("pass", False)) and b.p99_ms <= slo_ms:
        # Within the target here, but not at every lower load: say where it missed.
        own_rows = f[f["baseline"].fillna(False).astype(bool) & (f["load_kind"] == kind)
                     & (f["load"] < top)].sort_values("load")
        missed = own_rows[(own_rows["p99_ms"] > slo_ms) | (own_rows["error_rate"] > 0)]
        if not missed.empty:
            m = missed.iloc[0]
            why = (f"p99 {m.p99_ms:.1f} ms" if m.p99_ms > slo_ms
                   else f"{m.error_rate:.1%} errors")
            return (f" The model's own settings ({own}) met the target at that load (p99 "
                    f"{b.p99_ms:.1f} ms) but missed it at the lower load {m.load:,g} ({why}), "
                    "so they do not hold up to it.")
        return (f" The model's own settings ({own}) did not hold at that load (p99 "
                f"{b.p99_ms:.1f} ms, within the target, but with errors).")
    if not bool(b.get("pass", False)):
        text = (f" The model's own settings ({own}) missed the target at that load ("
                + (f"p99 {b.p99_ms:.1f} ms" if pd.notna(b.p99_ms) else "no request served"))
        if g_c is not None and g_b is not None:
            text += (f"; goodput {g_b:,.0f} vs {g_c:,.0f} req/s within {slo_ms:g} ms, "
                     f"{_pct(g_c, g_b)} with this choice")
        return text + ")."
    if g_c is not None and g_b is not None:
        return (f" Goodput within {slo_ms:g} ms at that load: {g_c:,.0f} req/s with this "
                f"choice against {g_b:,.0f} with the model's own settings ({own}; "
                f"{_pct(g_c, g_b)}), which met the target too (p99 {b.p99_ms:.2f} ms).")
    return f" The model's own settings ({own}) met the target too (p99 {b.p99_ms:.2f} ms)."


def _pct(new: float, old: float) -> str:
    if old <= 0:
        return "all of it"
    d = 100.0 * (new - old) / old
    return f"{d:+.1f} %" if abs(d) >= 0.05 else "the same"


def _conditions(f: pd.DataFrame, chosen: pd.Series, kind: str, top: float) -> str:
    """What the recommendation was measured under, and any unstable point it rests on."""
    text = ""
    if "policy" in f and pd.notna(chosen.get("policy")):
        slo = chosen.get("latency_slo_ms")
        inst = chosen.get("instances")
        text += (f" Measured under policy {chosen['policy']}"
                 + (f" with latency_slo_ms={slo:g}" if pd.notna(slo) else ", no latency SLO")
                 + (f", {int(inst)} instance(s)" if pd.notna(inst) else "") + ".")
    if "stable" in f:
        mine = f[(f["max_batch_size"] == chosen.max_batch_size)
                 & (f["max_wait_ms"] == chosen.max_wait_ms) & (f["load_kind"] == kind)
                 & (f["load"] <= top)]
        shaky = mine[mine["stable"].eq(False)]
        others = int(f["stable"].eq(False).sum()) - len(shaky)
        if len(shaky):
            loads = ", ".join(f"{v:g}" for v in sorted(shaky["load"]))
            text += (f" Caution: it rests on {len(shaky)} unstable point(s) (load {loads}: "
                     "its windows never agreed within the tolerance); measure again on a "
                     "quieter machine or with longer windows before relying on it.")
        if others > 0:
            text += f" {others} other point(s) were unstable."
    if "disturbed" in f:
        hit = f[f["disturbed"].notna() & (f["disturbed"].astype(str) != "")]
        if len(hit):
            first = str(hit["disturbed"].iloc[0])
            text += (f" {len(hit)} point(s) were measured under disturbance the engine could "
                     f"see (e.g. {first}): their figures may be the machine's, not the "
                     "settings'.")
    return text


def _limit_idle(at_top: pd.DataFrame, best: pd.Series, keys: list[str]) -> pd.Series:
    """Per row: it differs from ``best`` in max batch size only (not in errors either: a
    limit that acted on failed batches is not seen in the answered ones; an adversary),
    and one more request would have fitted the largest batch of either (``max_batch_rows``)
    under the smaller limit: the limits never acted, so the two ran alike and their p99s
    differ by noise (a newcomer saw 32 chosen over 8 at a load where no batch reached 8,
    on a disturbed point)."""
    out = pd.Series(False, index=at_top.index)
    if "max_batch_rows" not in at_top or not pd.notna(best.get("max_batch_rows")):
        return out
    for idx, r in at_top.iterrows():
        if not pd.notna(r.max_batch_rows) or r.error_rate != best.error_rate or any(
                k != "max_batch_size" and not (r[k] == best[k] or (pd.isna(r[k])
                                                                 and pd.isna(best[k])))
                for k in keys):
            continue
        out[idx] = (max(r.max_batch_rows, best.max_batch_rows)
                    + max(_request_rows(r), _request_rows(best))
                    <= min(r.max_batch_size, best.max_batch_size))
    return out


def _request_rows(row: pd.Series) -> int:
    """The rows of one of the point's requests (1 for a frame that does not say)."""
    v = row.get("rows_per_request")
    return int(v) if v is not None and pd.notna(v) else 1


def disturbed_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The points of a sweep's (or search's) frame measured under disturbance (a non-empty
    ``disturbed`` note); none for a frame without the column."""
    if "disturbed" not in frame:
        return frame.iloc[0:0]
    return frame[frame["disturbed"].map(lambda v: isinstance(v, str) and v != "")]


def disturbed_points(frame: pd.DataFrame) -> int:
    """How many points of a sweep's (or search's) frame were measured under disturbance
    (:func:`disturbed_rows`); 0 for a frame without the column."""
    return len(disturbed_rows(frame))


#: The columns of a sweep's frame a recommendation reads.
_SWEEP_NEEDS = ("max_batch_size", "max_wait_ms", "load_kind", "load", "achieved_rps",
                "p99_ms", "error_rate")


def recommend(frame: pd.DataFrame, p99_slo_ms: float, max_error_rate: float = 0.0) -> Recommendation:
    """The settings that meet ``p99_slo_ms`` at the highest load, decided by evidence.

    For each setting (max batch size, max wait) the highest load it sustains within the
    target, and at every lower load measured, is found (a point counts when every request
    was answered within the target, latency counted from the intended send time). Among
    the settings that reach the highest such load, those whose p99 there is within noise of
    the lowest (overlapping p99 intervals, or within 10 % / 0.5 ms) are ties; of the
    ties the smallest settings are chosen (shortest max wait, then smallest batch): no
    latency is paid for waiting that the evidence does not show to help. Achieved throughput at the same offered load is not
    compared: it is the load plus noise."""
    # (an empty frame raised KeyError: 'p99_ms'; a newcomer)
    if missing := [c for c in _SWEEP_NEEDS if c not in getattr(frame, "columns", ())]:
        raise ConfigError(f"recommend needs a sweep's frame (core.lab.sweep, or a run's "
                          f"results from the history); this one has no {', '.join(missing)}"
                          + (" (it is empty)" if len(getattr(frame, "columns", ())) == 0
                             else ""))
    _check_float("p99_slo_ms", plain(p99_slo_ms), 0.001, 86_400_000.0)
    _check_float("max_error_rate", plain(max_error_rate), 0.0, 1.0)
    if len(frame) == 0:   # (read as "no setting met the target: relax it"; an adversary)
        raise ConfigError("recommend: the sweep measured no point (an empty grid, or one "
                          "cancelled before its first point ended): measure first")
    f = frame.copy()
    for col in ("p99_ci_low_ms", "p99_ci_high_ms"):
        if col not in f:
            f[col] = f["p99_ms"]
    met = f["pass"] = _sustained(f, p99_slo_ms, max_error_rate)
    # A setting qualifies at a load only if it met the target at every load up to it:
    # meeting it at 2,000 req/s says nothing for 500 if it missed there.
    f["pass"] = f["pass"] & _holds_below(f)
    ok = f[f["pass"]]
    if ok.empty:
        best = f.sort_values("p99_ms").head(1)
        hint = ""
        if not best.empty:
            r = best.iloc[0]
            hint = (f"; the lowest p99 measured was {r.p99_ms:.1f} ms (max_batch_size="
                    f"{int(r.max_batch_size)}, max_wait_ms={r.max_wait_ms:g}, load "
                    f"{r.load:g})")
        if met.any():   # met higher up, missed lower down: say so, it reads as a pass
            r = f[met].iloc[0]
            same = f[(f["load"] < r.load) & ~met]
            for key in _setting_keys(f) + ["load_kind"]:
                same = same[same[key].eq(r[key]) | (same[key].isna() & pd.isna(r[key]))]
            if len(same):
                low = same.iloc[0]
                hint += (f". max_batch_size={int(r.max_batch_size)}, max_wait_ms="
                         f"{r.max_wait_ms:g} met it at load {r.load:g} but missed at "
                         f"{low.load:g} (p99 {low.p99_ms:.1f} ms): a setting must hold at "
                         "every lower load too (measure again if that miss was the machine)")
        disturbed = disturbed_points(f)
        if disturbed:   # (one disturbed point of a cancelled sweep read as a verdict)
            return Recommendation(None, None, None, None, (
                f"No setting met p99 <= {p99_slo_ms:g} ms with every request served{hint}; "
                f"{disturbed} of the {len(f)} point(s) were measured while something else "
                "used the machine (marked in the table): measure again before concluding"))
        return Recommendation(None, None, None, None,
                              f"No setting met p99 <= {p99_slo_ms:g} ms with every request "
                              f"served{hint}: relax the target, lower the load, or use a "
                              "faster model or machine")
    kind = "rate" if (ok["load_kind"] == "rate").any() else "clients"
    ok = ok[ok["load_kind"] == kind]
    top = ok["load"].max()
    keys = _setting_keys(f)
    order = ["max_wait_ms", "max_batch_size"] + [k for k in keys if k == "session_threads"]
    # (row order decided the best among equal p99s, and so the ties; an adversary)
    at_top = ok[ok["load"] == top].sort_values(["p99_ms"] + order, kind="stable")
    best = at_top.iloc[0]
    # Within noise of the best: overlapping p99 intervals, or within what the
    # stability rule counts as agreement between windows (10 %, or 0.5 ms at a few ms).
    # (The margin is for the p99s themselves: against an interval's low end it made a p99
    # 90 % worse, with an interval apart from the best's, a tie.)
    best_hi = best["p99_ci_high_ms"] if not np.isnan(best["p99_ci_high_ms"]) else best["p99_ms"]
    margin = max(best["p99_ms"] * (1 + TIE_PCT / 100.0), best["p99_ms"] + TIE_MS)
    in_noise = ((at_top["p99_ci_low_ms"].fillna(at_top["p99_ms"]) <= best_hi)
                | (at_top["p99_ms"] <= margin))
    idle = _limit_idle(at_top, best, keys) & ~in_noise
    ties = at_top[in_noise | idle]
    chosen = ties.sort_values(order, kind="stable").iloc[0]
    unit = "req/s" if kind == "rate" else "clients"
    settings = f"max_batch_size={int(chosen.max_batch_size)}, max_wait_ms={chosen.max_wait_ms:g}"
    if "session_threads" in _setting_keys(f) and pd.notna(chosen.get("session_threads")):
        settings += f", {int(chosen['session_threads'])} ONNX Runtime thread(s)"
    ci = (float(chosen.p99_ci_low_ms), float(chosen.p99_ci_high_ms))
    ci_text = (f" (95% interval {ci[0]:.2f}-{ci[1]:.2f} ms)" if not np.isnan(ci[0]) else "")
    highest_tried = f["load"][f["load_kind"] == kind].max()
    reason = (f"{settings} meets p99 <= {p99_slo_ms:g} ms at {top:,.0f} {unit}"
              + (" (the highest load tried: capacity may be higher)" if top == highest_tried
                 else f" (the highest load at which any setting did; {highest_tried:,.0f} "
                 f"was too much)")
              + f", p99 {chosen.p99_ms:.2f} ms{ci_text}.")
    if not np.isnan(ci[1]) and ci[1] > p99_slo_ms:   # (read as a sure pass; a newcomer)
        reason += (f" Its interval reaches past the target ({ci[1]:.2f} ms): the p99 met it "
                   "here, another measurement may not; measure longer to be sure.")
    sent = chosen.get("sent")
    if sent is not None and pd.notna(sent) and sent < FEW_REQUESTS:
        reason += (f" That p99 is of {int(sent)} request(s): under {FEW_REQUESTS} it is about "
                   "the slowest one or two, with no interval; measure longer or at a higher "
                   "load for a p99 to rely on.")
    not_chosen = [r for _, r in ties.iterrows()
                  if tuple(r[k] for k in order) != tuple(chosen[k] for k in order)]
    others = [(int(r.max_batch_size), float(r.max_wait_ms)) for r in not_chosen]
    noisy = [(int(r.max_batch_size), float(r.max_wait_ms)) for r in not_chosen
             if in_noise[r.name] and not (idle[chosen.name] and r.name == best.name)]
    threads = {int(r.session_threads): 0 for _, r in ties.iterrows()
               if "session_threads" in order and pd.notna(r.session_threads)}
    least = ("this one waits least, then batches least"
             + (", then uses fewest threads" if len(threads) > 1 else "")
             + ": no waiting that the evidence does not show to help.")
    if noisy:
        reason += (f" {len(noisy)} other setting(s) did as well within noise ("
                   + ", ".join(f"{b}/{w:g} ms" for b, w in noisy[:4])
                   + (f"; threads {', '.join(map(str, threads))}" if len(threads) > 1 else "")
                   + "); " + least)
    alike = ties[idle[ties.index]]
    if len(alike):   # (each with its own figures: one limit said of all misled; a reviewer)
        reason += (" " + "; ".join(f"{int(r.max_batch_size)}/{r.max_wait_ms:g} ms (p99 "
                                   f"{r.p99_ms:.2f} ms, largest batch {r.max_batch_rows:.0f} "
                                   "rows)" for _, r in alike.head(4).iterrows())
                   + f" ran as {int(best.max_batch_size)}/{best.max_wait_ms:g} ms (p99 "
                   f"{best.p99_ms:.2f} ms, largest batch {best.max_batch_rows:.0f}) did: one "
                   "more request fitted every batch under the smaller limit, so the limits "
                   "never acted and the difference in p99 is the machine's; counted as ties"
                   + ("." if noisy else f"; of them {least}"))
    remeasured = int((f.get("measurements", pd.Series(1, index=f.index)) > 1).sum())
    if remeasured:
        reason += f" {remeasured} outlier point(s) were measured three times (median kept)."
    base = _against_baseline(f, chosen, kind, top, p99_slo_ms)
    reason += base + _passed_over(f, met, kind, top, p99_slo_ms, skip_baseline=bool(base))
    reason += _conditions(f, chosen, kind, top)
    return Recommendation(int(chosen.max_batch_size), float(chosen.max_wait_ms),
                          float(chosen.achieved_rps), float(chosen.p99_ms), reason,
                          load=float(top), p99_ci_ms=ci, ties=tuple(others))
