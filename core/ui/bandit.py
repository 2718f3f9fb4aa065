"""The A/B page's view of a bandit: B's share over time against its floor, the cumulative
regret, and one sentence of what the bandit has learnt.

Example:
    >>> fig = bandit_figure(engine.ab_report("exp").bandit)
"""

from __future__ import annotations

import math

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .fmt import fmt_num, fmt_pct
from .style import COLORS, _layout

__all__ = ["bandit_figure", "bandit_caption", "bandit_warning", "BANDIT_ACT_POINTS"]

#: A difference in the share of answers within the SLO smaller than this is said to be too
#: small to act on (both arms at 99.6 % and 99.9 % are, for a choice between them, the same).
BANDIT_ACT_POINTS = 0.01


def bandit_figure(state: dict[str, Any],
                  title: str = "The bandit's split and its regret"
                  ) -> go.Figure:
    """B's share of each second's requests (with the floor and the ceiling it stays
    within) and the cumulative regret against sending everything to the better arm."""
    h = state.get("history") or {}
    t = h.get("t_s", [])
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=t, y=h.get("share_b", []), name="B's share",
                             mode="lines", line=dict(color=COLORS["b"])))
    floor = state.get("floor", 0.0)
    for y, label in ((floor, "floor"), (1 - floor, "ceiling")):
        fig.add_hline(y=y, line=dict(color="#94a3b8", dash="dot", width=1),
                      annotation_text=label, annotation_position="top left")
    fig.add_trace(go.Scatter(x=t, y=h.get("regret", []), name="cumulative regret (requests)",
                             mode="lines", line=dict(color=COLORS["p99"], dash="dash")),
                  secondary_y=True)
    _layout(fig, title, "B's share of requests")
    # (the unit an axis title: in the title it was cut at 1024 px; a newcomer)
    fig.update_xaxes(title_text="seconds since the bandit started")
    fig.update_yaxes(range=[0, 1], tickformat=".0%", secondary_y=False)
    fig.update_yaxes(title_text="regret (requests)", rangemode="nonnegative",
                     secondary_y=True, showgrid=False, tickmode="auto")
    return fig


def bandit_caption(state: dict[str, Any], a: str, b: str) -> str:
    """Each arm's reward rate with its interval, who is ahead and how sure, the regret."""
    arms = state["arms"]

    def arm(k: str, model: str) -> str:
        v = arms[k]
        if not v["ended"]:
            return f"{k.upper()} ({model}): no answers yet"
        return (f"{k.upper()} ({model}) met the SLO on {fmt_pct(v['rate'])} of "
                f"{fmt_num(v['ended'])} (95% CI {fmt_pct(v['rate_low'])} to "
                f"{fmt_pct(v['rate_high'])})")

    p_b = state["p_b_better"]
    ahead = ("B" if p_b >= 0.5 else "A", p_b if p_b >= 0.5 else 1 - p_b)
    ra, rb = arms["a"]["rate"], arms["b"]["rate"]
    small = ""
    if ra is not None and rb is not None and abs(rb - ra) < BANDIT_ACT_POINTS:
        small = (f" The arms differ by {abs(rb - ra) * 100:.2f} points of the SLO met, under "
                 f"the {BANDIT_ACT_POINTS * 100:g} worth acting on: for this SLO they are "
                 "alike, though the bandit still follows the difference (that is how it "
                 "explores); a tighter SLO, or the latency verdict, tells them apart.")
    regret = round(state["regret"], 1)
    # (no outcome yet: 50.7 % "better" was the posterior's noise, said as a finding)
    better = (f"{ahead[0]} is the better arm with probability {fmt_pct(ahead[1])}"
              if arms["a"]["ended"] or arms["b"]["ended"] else "No request has ended yet: "
              "neither arm is known to be better")
    if all(arms[k]["ended"] and arms[k]["rate"] == 1.0 for k in "ab") \
            and arms["a"]["ended"] != arms["b"]["ended"]:   # (equal counts: a coin's toss)
        # (both always within it: "A is the better arm with probability 79 %" beside 100 %
        # and 100 %; the arm with more answers has the narrower posterior; a newcomer)
        better = (f"Neither arm has missed the SLO yet, so the bandit cannot tell them apart: "
                  f"the arm with more answers looks better to it ({ahead[0]}, probability "
                  f"{fmt_pct(ahead[1])}: its posterior is narrower) and keeps more of the "
                  "traffic until one misses")
    # (its evidence starts again with each SLO: counts beside the tiles' whole segment
    # read as a contradiction; a newcomer)
    return (f"Bandit, SLO {state['slo_ms']:g} ms, floor {fmt_pct(state['floor'])}, counting "
            f"since its SLO was set: {arm('a', a)}; {arm('b', b)}. {better}; B gets {fmt_pct(state['share_b'])} of "
            "the traffic now. "
            f"Regret so far: {fmt_num(regret)} request{'' if regret == 1 else 's'} that "
            "all-to-the-"
            "better-arm would have answered within the SLO." + small)


#: How far over an arm's max wait plus its run a bandit's SLO must be for the arm starved
#: of traffic to meet it as its model deserves: half again, at most 5 ms more (a 200 ms
#: wait under a 250 ms SLO has room; a reviewer).
_NEAR, _NEAR_MAX_MS = 1.5, 5.0


def bandit_warning(state: dict[str, Any], max_wait_ms: dict[str, float | None],
                   run_ms: dict[str, float | None] | None = None) -> str | None:
    """Words when the SLO is within an arm's max wait plus its run (``run_ms``: its median
    run, when known), or just above it: the arm the bandit gives less traffic fills its
    batches slower, waits its max wait, and misses such an SLO (or meets it with no room
    for a hand-off or a busy second) because it is starved, not because its model is
    slower, so the bandit feeds its own split. (An SLO of 5.3 ms over 5 ms waits starved B
    to 5 % of the traffic unremarked: only an SLO within the wait itself was said.)"""
    run_ms = {k: v for k, v in (run_ms or {}).items()
              if isinstance(v, (int, float)) and math.isfinite(v)}   # (no runs yet: NaN)
    least = {k: w + (run_ms.get(k) or 0.0) for k, w in max_wait_ms.items() if w is not None}
    # (an SLO just above it too: 5.5 ms over 5 ms waits and 0.3 ms runs starved B to 5 %
    # while the verdict saw 0.2 ms between the models; a newcomer. A request that waits its
    # whole max wait has the hand-off, a busy second, a slower batch to spare: half again)
    top = max(least.values(), default=0.0)
    if not least or state["slo_ms"] > top + min((_NEAR - 1.0) * top, _NEAR_MAX_MS):
        return None
    worst = max(least, key=least.get)
    wait, run = max_wait_ms[worst], run_ms.get(worst)
    within = (f"arm {worst.upper()}'s max wait ({wait:g} ms)" if not run else
              f"arm {worst.upper()}'s max wait plus its run ({wait:g} + {run:.2f} ms)")
    how = ("is within" if state["slo_ms"] <= least[worst] else "leaves little room over")
    return (f"The bandit's SLO ({state['slo_ms']:g} ms) {how} {within}: the arm given "
            "less traffic waits that long for its batches to fill and misses the SLO (or "
            "meets it with no room to spare) because it is starved, not because its model is "
            "slower, so the split feeds itself. Set the SLO well above both arms' max wait "
            "plus their run time (half again, or 5 ms more), or give both arms a max_wait_ms "
            "well under the SLO.")
