"""What the Batching page says about batching policies: AIMD's cap, which replayed policy
did best on the same arrivals, and the priority classes side by side.

Example:
    >>> replay_verdict(None)
    'No policy was replayed.'
"""

from __future__ import annotations

from typing import Any

from .fmt import fmt_ms, fmt_pct, fmt_rate

__all__ = ["aimd_caption", "replay_verdict", "class_table"]


def aimd_caption(state: dict[str, Any], max_batch_size: int) -> str:
    """The Batching page's line under an AIMD model: where its cap is and why."""
    src = ("the latency SLO" if state.get("objective_from") == "latency_slo_ms"
           else "the default; set a latency SLO to choose it")
    return (f"AIMD: batches capped at {state['cap_rows']} of {max_batch_size} rows now; "
            f"grew {state['grown']:,} times, backed off {state['backed_off']:,} times, "
            f"against a {state['objective_ms']:g} ms objective ({src}). The timeline's "
            "batch sizes show its sawtooth under load."
            + (f" **Even one-row runs missed the objective ({state['one_row_misses']:,} "
               "times)**: it is below what a single row costs here, so AIMD holds batches at "
               "one row and throughput suffers; raise the latency SLO."
               if state.get("one_row_misses") and state["cap_rows"] <= 1 else ""))


def replay_verdict(summary: Any) -> str:
    """One line over a replay's table: which policy answered the most requests within the
    SLO, and by how much (a replay's question: which policy meets my target at this load)."""
    if summary is None or len(summary) == 0 or "within_slo" not in summary:
        return "No policy was replayed."
    # Every policy had the same arrivals: the share within the SLO compares them (goodput
    # per second also moves with how long each run took to drain).
    ranked = summary.sort_values(["within_slo", "p99_ms"], ascending=[False, True])
    best, worst = ranked.iloc[0], ranked.iloc[-1]
    slo = f"{best['slo_ms']:g} ms"
    # Shares within less than half a request of each other are the same count (a tie
    # threshold of 0.1 % named one winner of three at 100 % beside one at 300 of 301)
    n = float(summary["requests"].max()) if "requests" in summary else 0.0
    tol = 0.5 / n if n > 0 else 0.001
    if len(ranked) > 1 and best["within_slo"] - worst["within_slo"] < tol:
        low, nxt = (summary.sort_values("p99_ms").iloc[k] for k in (0, 1))  # (one replay:
        close = "" if nxt["p99_ms"] > 1.2 * low["p99_ms"] else (     # within a fifth, noise?)
            f"; {nxt['policy']} {fmt_ms(nxt['p99_ms'])}, within a fifth of it in one replay: "
            "replay again before choosing on it")
        fast = summary.sort_values("p50_ms").iloc[0] if "p50_ms" in summary else None
        typical = "" if fast is None or fast["p50_ms"] >= 0.5 * low["p50_ms"] else (
            f" Lowest p50: **{fast['policy']}** ({fmt_ms(fast['p50_ms'])}, against "
            f"{fmt_ms(low['p50_ms'])}): the typical request is answered sooner.")
        return (f"Every policy answered {fmt_pct(worst['within_slo'])} of requests within "
                f"{slo}: the SLO does not separate them at this load. Lowest p99: "
                f"**{low['policy']}** ({fmt_ms(low['p99_ms'])}){close}.{typical}")
    tied = ranked[ranked["within_slo"] > best["within_slo"] - tol]
    if len(tied) > 1:
        names = [f"**{p}**" for p in tied["policy"]]
        line = (f"{', '.join(names[:-1])} and {names[-1]} answered the most within {slo}, "
                f"tied: {fmt_pct(best['within_slo'])} of requests (lowest p99 of them: "
                f"{best['policy']}, {fmt_ms(best['p99_ms'])})")
    else:
        line = (f"**{best['policy']}** answered the most within {slo}: "
                f"{fmt_pct(best['within_slo'])} of requests ({fmt_rate(best['goodput_rps'])} "
                "goodput)")
    if len(ranked) > 1:
        line += (f"; {worst['policy']} the fewest ({fmt_pct(worst['within_slo'])}, "
                 f"{fmt_rate(worst['goodput_rps'])})")
    return line + "."


def class_table(snaps: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per priority class (high first): requests, served, refused at once (over
    capacity), other errors, p50/p99 of those served (``engine.class_metrics``)."""
    rows = []
    for name in ("high", "normal"):
        s = snaps.get(name)
        if s is None:
            continue
        refused = sum(v for k, v in s.errors_by_type.items() if k == "OverloadedError")
        rows.append({"class": name, "requests": s.total_requests, "served": s.success_count,
                     "refused": refused, "other errors": s.error_count - refused,
                     "p50_ms": s.p50_ms if s.success_count else None,
                     "p99_ms": s.p99_ms if s.success_count else None})
    return rows
