"""Compact, honest figures for tiles, captions and tables: short enough never to be cut
("924.8k", not "924,812…"), precise enough to compare.

Example:
    >>> fmt_num(924_812), fmt_rate(1355.2), fmt_ms(0.4213), fmt_pct(0.00021), fmt_s(12.345)
    ('924.8k', '1,355/s', '0.42 ms', '0.02%', '12.3 s')
"""

from __future__ import annotations

import math
import signal
import time
from typing import Any

import numpy as np

from core.models import format_bytes

__all__ = ["recent_errors_by_type", "fmt_num", "clock_time", "fmt_rate", "fmt_ms", "fmt_pct",
           "fmt_s", "fmt_opset", "fmt_ranges", "fmt_p", "more_needed", "history_caption",
           "exit_words", "restart_words", "try_caption", "nonfinite_words", "shadow_diff_words",
           "run_config_words", "column_formats", "SWEEP_TABLE_LABELS", "SEARCH_TABLE_LABELS",
           "COLUMN_HELP", "sweep_table_columns", "REASON_WORDS", "reason_words"]


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt_num(v: Any) -> str:
    """Counts: exact below 10,000 ('9,999'), then one decimal of a unit ('17.6k',
    '924.8k', '1.2M')."""
    if _missing(v):
        return "-"
    a = abs(float(v))
    if a < 10_000:
        if isinstance(v, float) and not v.is_integer():
            return f"{v:,.1f}"
        return f"{int(v):,}"
    div, unit = next((d, u) for d, u in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if a >= d)
    return f"{v / div:,.1f}{unit}"


def fmt_rate(v: float | None) -> str:
    """Per second: '1,355/s', '12.3k/s'."""
    if _missing(v):
        return "-"
    return (f"{v:,.0f}/s" if abs(v) < 10_000 else f"{fmt_num(v)}/s") if abs(v) >= 10 \
        else f"{v:.1f}/s"


def fmt_ms(v: float | None) -> str:
    """Milliseconds: '0.42 ms', '5.5 ms', '120 ms', '12.3 s'."""
    if _missing(v):
        return "-"
    if v < 1:
        return f"{v:.2f} ms"
    if v < 100:
        return f"{v:.1f} ms"
    return f"{v:.0f} ms" if v < 10_000 else f"{v / 1000:.1f} s"


def shadow_diff_words(name: str, diff: float, nonfinite: int = 0) -> str:
    """One output's largest |A - B| in a shadow comparison; infinite when one arm answered
    NaN or an infinity where the other did not (said, with on how many requests)."""
    if nonfinite and not math.isfinite(diff):
        return (f"{name}: NaN or infinity from one arm where the other gave a number, on "
                f"{fmt_num(nonfinite)} request(s)")
    return f"{name} {diff:.4g}"


def fmt_pct(v: float | None) -> str:
    """A fraction as a percentage: '0%', '<0.01%', '0.02%', '1.5%', '100%' (never '0.00%'
    beside errors that happened)."""
    if _missing(v):
        return "-"
    p = v * 100
    if p == 0 or p == 100:
        return f"{p:.0f}%"
    if 0 < abs(p) < 0.005:
        return "<0.01%" if p > 0 else ">-0.01%"
    return f"{p:.2f}%" if abs(p) < 1 else f"{p:.1f}%"


def clock_time(t: float) -> str:
    """A moment (seconds since the epoch) as the charts' time axes show it: UTC, the
    metrics' and events' own (a caption in local time sat hours away from the axes below
    it on a machine not on UTC; a reviewer)."""
    return time.strftime("%H:%M:%S", time.gmtime(t))


def fmt_s(v: float | None) -> str:
    """Seconds, one decimal below a minute: '0.4 s', '12.3 s', '3 min 5 s'."""
    if _missing(v):
        return "-"
    if v < 60:
        return f"{v:.1f} s"
    m, s = divmod(int(round(v)), 60)
    if m >= 60:
        return f"{m // 60} h {m % 60} min" if m % 60 else f"{m // 60} h"
    return f"{m} min {s} s" if s else f"{m} min"


def fmt_opset(opset: dict[str, int] | None) -> str:
    """An ONNX opset map as people write it: 'ai.onnx 17, ai.onnx.ml 3'."""
    if not opset:
        return "-"
    return ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in sorted(opset.items()))


def fmt_ranges(values: list[int]) -> str:
    """Sorted integers as ranges: [1, 2, 3, 5, 8, 9] -> '1-3, 5, 8-9'."""
    out: list[str] = []
    start = prev = None
    for v in [*values, None]:
        if start is not None and v != prev + 1:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = None
        if start is None and v is not None:
            start = v
        prev = v
    return ", ".join(out)


def fmt_p(p: float | None) -> str:
    """A p-value as people read it: '< 0.001', '0.042', '0.31'."""
    if _missing(p):
        return "-"
    return "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def more_needed(comparison: Any) -> str:
    """An A/B comparison's requests per arm still needed, in words: none once a difference
    is detected (a count beside p < 0.001 read as a contradiction), or once there are enough
    to have seen the one worth detecting (a bare 0 read as "enough", beside "no difference")."""
    if _missing(comparison.p_value):   # (under 20 per arm: no test run yet)
        return "not tested yet"
    if comparison.significant and not comparison.more_needed_per_arm:
        return ("none: only a smaller difference is seen" if getattr(
            comparison, "meaningful", True) is False else "none: detected")
    if not comparison.more_needed_per_arm:
        return "none: enough to have seen it"
    return f"{comparison.more_needed_per_arm:,}"


def history_caption(usage: dict[str, int], where: Any) -> str:
    """What the history holds and its bound, for the History panel; where: the file it is
    kept in (``usage["path"]``, on the engine's machine), else ``where``."""
    bound = format_bytes(usage["max_bytes"])
    if usage.get("path"):
        where = usage["path"]
    if not usage.get("runs"):
        head = f"No runs yet. Runs are kept in {where}, up to {bound}"
    else:
        head = f"{usage['runs']} run(s), {format_bytes(usage['bytes'])} of {bound} ({where})"
    tail = "; past that the oldest runs are dropped first"
    if usage.get("dropped"):
        tail += f" ({usage['dropped']} dropped so far)"
    return head + tail + " (BATCHLAB_HISTORY_MAX_MB sets the bound)."


def _num(x: Any) -> str:
    """A number as people read it in a settings line: 1,500,000 · 0.5 · 2; else as text."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if x == x and abs(x) < 1e15 and float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.4g}"


def _seq(v: Any) -> str:
    items = v if isinstance(v, (list, tuple)) else [v]
    return ", ".join(_num(x) for x in items)


def run_config_words(config: Any, name: str = "", cut: int = 40) -> tuple[str, str]:
    """A history run's settings as a line people read ('batch 8, 32 · wait 0, 2 ms · rate
    300, 1,500 req/s · 2 s a point · p99 ≤ 200 ms'), and its state ('complete', 'partial':
    still running or cut off, 'stopped': cancelled with its points kept). Keys it does not
    know are shown as ``key=value``; a value past ``cut`` characters is cut; the model is
    named unless
    ``name`` (the run's) already does. A config saved by hand in any other shape is shown
    as its text, never an error."""
    try:
        return _config_words(dict(config or {}), name, cut)
    except (TypeError, ValueError):
        text = str(config)
        return (text if len(text) <= 200 else text[:197] + "..."), "complete"


def _config_words(c: dict[str, Any], name: str, cut: int) -> tuple[str, str]:
    partial, complete = c.pop("partial", False), c.pop("complete", True)
    state = "partial" if partial else "complete" if complete else "stopped"
    model = c.pop("model", None)
    for k in ("reason", "search"):  # the name says the kind
        c.pop(k, None)
    out = [f"model {model}"] if model is not None and str(model) not in name else []
    if c.get("max_batch_sizes") not in (None, [], ()):
        out.append("batch " + _seq(c.pop("max_batch_sizes")))
    if c.get("max_waits_ms") not in (None, [], ()):
        out.append("wait " + _seq(c.pop("max_waits_ms")) + " ms")
    if c.get("session_threads") not in (None, [], ()):
        out.append("threads " + _seq(c.pop("session_threads")))
    kind = c.pop("load_kind", None)
    if c.get("loads") not in (None, [], ()):
        loads = _seq(c.pop("loads"))
        out.append(f"rate {loads} req/s" if kind == "rate" else
                   f"{loads} clients" if kind == "clients" else f"loads {loads}")
    if not _missing(c.get("duration_s")):
        out.append(f"{_num(c.pop('duration_s'))} s a point")
    if not _missing(c.get("slo_p99_ms")):
        out.append(f"p99 ≤ {_num(c.pop('slo_p99_ms'))} ms")
    # (the load's shape as sent: said where it is not the default, the seed always)
    if c.get("pattern") == "poisson":
        c.pop("pattern")
    if c.get("rows_per_request") == 1:
        c.pop("rows_per_request")
    for k, v in c.items():
        if v is None or v == [] or v == {}:
            continue
        text = _seq(v) if isinstance(v, (list, tuple)) else _num(v)
        out.append(f"{k}={text if len(text) <= cut else text[:cut - 3] + '...'}")
    return " · ".join(out), state


#: How a measurement table's number columns read, by the column name's ending.
_COLUMN_FORMATS = (("_ms", "%.2f"), ("_rps", "%.0f"), ("_pct", "%.1f %%"),
                   ("_cores", "%.2f"), ("_mib", "%.2f"), ("_s", "%.1f"))
_FRACTIONS = {"error_rate", "within_slo", "share", "b_share"}


def column_formats(columns: Any) -> dict[str, str]:
    """Display formats for a table of measurements (a sweep's, a search's): latencies to
    0.01 ms, rates whole, shares as percents; other columns as they are. Streamlit's
    ``NumberColumn(format=...)`` takes these (printf-style, or 'percent')."""
    out = {}
    for c in map(str, columns):
        if c in _FRACTIONS:
            out[c] = "percent"
        elif c in ("mean_batch_rows", "max_batch_rows"):
            out[c] = "%.1f" if c == "mean_batch_rows" else "%.0f"
        else:
            for end, form in _COLUMN_FORMATS:
                if c.endswith(end):
                    out[c] = form
                    break
    return out


#: A sweep's table at first, headers in words (every column behind a toggle, in the CSV
#: and the HTML report); the largest batch beside the limit it is read against.
SWEEP_TABLE_LABELS = {
    "max_batch_size": "max batch", "max_batch_rows": "largest batch",
    "max_wait_ms": "max wait (ms)", "load_kind": "load is", "load": "load",
    "achieved_rps": "served (req/s)", "goodput_rps": "goodput of offered (req/s)",
    "p50_ms": "p50 (ms)", "p99_ms": "p99 (ms)", "p99_ci_low_ms": "p99 95% CI from",
    "p99_ci_high_ms": "p99 95% CI to", "error_rate": "errors",
    "mean_batch_rows": "request's batch (mean)", "stable": "stable",
    "baseline": "model's own", "disturbed": "disturbed"}


#: A quick search's table of the settings it tried, in words (one row a setting).
SEARCH_TABLE_LABELS = {
    "max_batch_size": "max batch", "max_wait_ms": "max wait (ms)", "session_threads": "threads",
    "goodput_rps": "best goodput (req/s)", "load": "at load (req/s)",
    "p99_ms": "p99 there (ms)", "feasible": "meets the limits"}


#: What a sweep table's less obvious columns mean (their headers' help).
COLUMN_HELP = {
    "achieved_rps": "Requests answered per second over the point's measured span.",
    "goodput_rps": "The offered load times the share of the requests sent that were answered "
                   "within the target: all in time reads exactly the load, so it can be a "
                   "little above 'served', which is timed over the measured span.",
    # (a missing value shows as None in the table: said here what it means)
    "p99_ms": "The 99th percentile of the answered requests' latency. None: nothing to take "
              "it from (no request answered; in a quick search, no load met the limits).",
    **dict.fromkeys(("p99_ci_low_ms", "p99_ci_high_ms"), "The p99's 95 % interval, from the "
                    "order statistics. None: fewer than 20 requests answered, too few."),
    "max_batch_rows": "The most rows a request of the point rode in. While one more "
                      "request would still have fitted it under the max batch, that limit "
                      "never acted at this load. None: not known (a remote model's server "
                      "batches, or a run from before it was kept).",
    "session_threads": "ONNX Runtime's threads for one run in this setting. None: not a "
                       "setting Batchlab can change (a remote model's server owns them).",
    "load": "The load offered (in a quick search: where the best goodput was found; None: "
            "no load met the limits).",
}


def sweep_table_columns(frame: Any, everything: bool = False) -> list[str]:
    """The columns of a sweep's ``frame`` to show: the labelled ones (those present, and
    ``disturbed`` only when a point was), or all of them."""
    if everything:
        return [str(c) for c in frame.columns]
    keep = [c for c in SWEEP_TABLE_LABELS if c in frame.columns]
    if "disturbed" in keep and not (frame["disturbed"].fillna("").astype(str) != "").any():
        keep.remove("disturbed")
    return keep


def exit_words(code: float | None) -> str:
    """How a process ended: 'was killed by SIGKILL', 'exited with code 1'."""
    if code is None:
        return "stopped"
    code = int(code)
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _names(items: list[Any], limit: int = 6) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def restart_words(last_exit: dict[str, float] | None, restored: dict[str, Any] | None) -> str:
    """What a person needs after the engine server died and was started again: how it
    ended, what came back from its state folder, what did not (and why), which jobs the
    restart cut short and where their results are."""
    parts = []
    if last_exit:
        parts.append(f"The engine server {exit_words(last_exit.get('code'))} at "
                     f"{clock_time(last_exit['at'])} UTC and was started again.")
    else:
        parts.append("The engine server had stopped and was started again.")
    if not restored:
        parts.append("It keeps no state folder: models uploaded before, remote models and "
                     "experiments are gone.")
    else:
        back = []
        for key, word in (("models", "model"), ("remotes", "remote model"),
                          ("experiments", "A/B experiment")):
            items = restored.get(key) or []
            if items:
                back.append(f"{len(items)} {word}{'s' if len(items) != 1 else ''} "
                            f"({_names(items)})")
        parts.append(("It came back with " + "; ".join(back) if back
                      else "Nothing was kept to come back") + f" from {restored.get('root')}.")
        if restored.get("experiments"):   # (20,640 requests and a verdict went unsaid)
            parts.append("A/B experiments come back with their arms, split and mode, and "
                         "the reports of their segments (the one under way too after a "
                         "graceful stop; a crash loses it); their live figures start again.")
        if restored.get("demos_unloaded"):
            parts.append(f"Demo models unloaded before stay unloaded "
                         f"({_names(restored['demos_unloaded'])}).")
        for f in restored.get("failed") or []:
            parts.append(f"Not back: {f.get('kind')} {f.get('name')!r}: {f.get('reason')}.")
        for job in restored.get("jobs_cut_short") or []:
            where = (f" its points so far are run {job['run_id']} in the History, marked "
                     "cut short" if job.get("run_id") is not None else " nothing was saved")
            parts.append(f"Cut short: the {job.get('kind')} of {job.get('target')!r} (job "
                         f"{job.get('job_id')}, {100 * float(job.get('progress') or 0):.0f} "
                         f"% done);{where}.")
        for t in restored.get("traffic_stopped") or []:   # (it went unsaid; a newcomer)
            r = t.get("rate_rps") if isinstance(t.get("rate_rps"), (int, float)) else None
            ended = " (or it ended by itself just before)" if t.get("may_have_ended") else ""
            parts.append(f"Stopped by the restart{ended}: the traffic to {t.get('target')!r} "
                         f"({fmt_rate(r)} {t.get('pattern')}); start it again on its page.")
    parts.append("Metrics start afresh; traffic and jobs do not start again by themselves.")
    return " ".join(parts)


def try_caption(batch_mode: str, input_shape: Any, pred: Any) -> str:
    """How one request of the Models page's "Try it" was served, in the model's own terms:
    packed with others (dynamic batch axis), run row by row (axis fixed at 1), or run
    alone as one input of the model's fixed shape."""
    if batch_mode == "exact":
        shape = "[" + ", ".join(str(d) for d in (input_shape or ())) + "]"
        return (f"This request: one input of the model's fixed shape {shape}, run alone "
                f"(batch #{pred.batch_id}): requests to this model are never combined.")
    if batch_mode == "alone":
        return (f"This request: {pred.rows} row(s), run alone and whole in batch "
                f"#{pred.batch_id}: the model's rows change each other's answers, so "
                "requests to it are never combined.")
    if batch_mode == "rows":
        return (f"This request: {pred.rows} row(s), run one row at a time (the model's batch "
                f"dimension is fixed at 1), alone in batch #{pred.batch_id}.")
    others = pred.batch_rows - pred.rows
    return (f"This request: {pred.rows} row(s) · it rode in batch #{pred.batch_id} of "
            f"{pred.batch_rows} row(s)" + (f" ({others} from other requests)" if others else "")
            + f" · the batch left: {reason_words(pred.release_reason)}.")


def nonfinite_words(value: Any) -> str:
    """What a float output holds that is not a number ('2 NaN, 1 -inf of 20 values.'), for
    a caption beside its table (whose grid shows a NaN as "None"); "" otherwise."""
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
        return ""
    counts = ((int(np.isnan(value).sum()), "NaN"), (int(np.isposinf(value).sum()), "inf"),
              (int(np.isneginf(value).sum()), "-inf"))
    found = [f"{n:,} {word}" for n, word in counts if n]
    return f"Not numbers: {', '.join(found)} of {value.size:,} values." if found else ""


def recent_errors_by_type(errors: Any) -> Any:
    """Recent errors (a frame of time, type, message) as one row per type, the most
    frequent first: how many, when the latest came and its whole message."""
    g = errors.sort_values("time").groupby("type", sort=False)
    out = g["message"].agg(["size", "last"]).rename(columns={"size": "count",
                                                              "last": "latest message"})
    out.insert(1, "latest", g["time"].last().map(
        lambda t: t.strftime("%H:%M:%S") if hasattr(t, "strftime") else str(t)))
    return out.sort_values(["count", "latest"], ascending=False)


#: Why a batch left, in words for charts: "deadline" is the batch's wait running out under
#: any policy (a fixed window's too), and read as the deadline policy beside the others.
REASON_WORDS = {"full": "full", "deadline": "time up", "drain": "drain", "retry": "retry",
                "adaptive": "adaptive"}


def reason_words(reason: str) -> str:
    """A release reason (``Prediction.release_reason``) as charts name it."""
    return REASON_WORDS.get(str(reason), str(reason))

