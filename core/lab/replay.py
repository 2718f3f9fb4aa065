"""Replay: the same recorded arrivals sent to a model once under each release policy, on
the engine, so the policies are compared on one trace.

The replay runs on a private copy of the model (loaded from the same file, with the same
batch settings, under a name of its own, warmed up first, unloaded after): live traffic to
the model does not mix into the replay's batches (it still shares the cores: the Batching
page offers to stop it), and the live model's settings and metrics are never touched.

Example:
    >>> out = replay(engine, "mlp", engine.timeline("mlp", 2.0)["arrived_s"])
    >>> out["summary"][["policy", "p99_ms"]]
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from core.config import _check_int, as_list, plain
from core.errors import ConfigError
from core.policies import POLICIES, registered
from .agents import agent_endpoint, agents_for, check_ray_address
from .grid import hold_copy
from .loadgen import open_loop

if TYPE_CHECKING:
    from core.engine import EngineCore

log = logging.getLogger("batchlab.replay")

__all__ = ["REPLAY_POLICIES", "DEFAULT_SLO_MS", "replay_policies", "replay", "arrivals_from_csv", "arrivals_to_csv",
           "read_arrivals_csv",
           "MAX_REPLAY_ARRIVALS", "MAX_ARRIVALS_FILE_BYTES", "check_replay"]

#: The most arrivals a replay takes (a file of more is refused, saying so).
MAX_REPLAY_ARRIVALS = 200_000
#: The longest span of arrivals a replay takes (seconds); each policy replays all of it.
MAX_REPLAY_SPAN_S = 600.0
#: The largest arrivals file read (bytes): refused unparsed past it.
MAX_ARRIVALS_FILE_BYTES = 32 * 2**20
#: A header past these is refused unparsed (a timeline export has about 20 columns).
_MAX_COLUMNS = 64
_MAX_HEAD_CHARS = 4096


#: The policies a replay compares unless told otherwise: every registered one (a policy
#: module added to ``core/policies/``, or registered in a notebook, is replayed too).
REPLAY_POLICIES = POLICIES
#: The latency objective a replay counts goodput against, unless given one (ms).
DEFAULT_SLO_MS = 50.0


def replay_policies() -> tuple[str, ...]:
    """Every release policy registered now, in menu order."""
    return tuple(registered())


def arrivals_to_csv(arrivals_s: Sequence[float], rows: Sequence[int] | None = None) -> str:
    """Arrivals as a file to keep and replay later: a column ``arrived_s``, seconds from
    the first arrival, and with ``rows`` (each arrival's rows, as recorded) a column
    ``rows`` (a file without it replayed 4-row requests as 1-row ones: another answer to
    the same question; a newcomer)."""
    arr, order = _in_time_order(arrivals_s)
    offsets = arr - arr[0] if len(arr) else arr
    frame = pd.DataFrame({"arrived_s": offsets})
    if rows is not None:
        frame["rows"] = np.asarray(rows, dtype=np.int64)[order]
    return frame.to_csv(index=False, float_format="%.6f")


_LINE_END = re.compile(r"\r\n|\r|\n")
_BLANK_LINES = re.compile(r"(?:[ \t]*(?:\r\n|\r|\n))*")


def _in_time_order(arrivals_s: Any) -> tuple[np.ndarray, np.ndarray]:
    """The arrival times sorted, and the order that sorts them (stable: arrivals at one
    instant keep their file order, and their rows with them)."""
    arr = np.asarray(arrivals_s, dtype=np.float64)
    order = np.argsort(arr, kind="stable")
    return arr[order], order


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def check_arrivals(arr: np.ndarray) -> None:
    """Refuse arrivals a replay does not take (too many, too long a span), saying why."""
    if len(arr) > MAX_REPLAY_ARRIVALS:
        raise ConfigError(f"{len(arr):,} arrivals; a replay takes at most "
                          f"{MAX_REPLAY_ARRIVALS:,} (cut the file)")
    span = float(arr.max() - arr.min()) if len(arr) else 0.0
    if span > MAX_REPLAY_SPAN_S:
        raise ConfigError(f"the arrivals span {span:,.0f} s; a replay takes at most "
                          f"{MAX_REPLAY_SPAN_S:g} s per policy (are the times in ms? they "
                          "must be seconds)")


def _lines(wrong: pd.Series, header: int) -> str:
    """``'line 3: abc, line 5: foo'``: the first three wrong values and their lines."""
    shown = [f"line {int(i) + header + 1}: "
             f"{'empty' if pd.isna(v) or not str(v).strip() else v}"
             for i, v in wrong.head(3).items()]
    return ", ".join(shown) + (f", and {len(wrong) - 3} more" if len(wrong) > 3 else "")


def _check_arrivals_size(text: str | bytes) -> None:
    """Refuse a file past what a replay takes by its size and lines, before parsing it: a
    190 MiB file of ``0`` lines was parsed whole (4 GB) to be refused for its count (an
    adversary)."""
    if len(text) > MAX_ARRIVALS_FILE_BYTES:
        raise ConfigError(f"the arrivals file is {len(text) / 2**20:,.1f} MiB; a replay file "
                          f"is at most {MAX_ARRIVALS_FILE_BYTES // 2**20} MiB "
                          f"({MAX_REPLAY_ARRIVALS:,} arrivals as arrived_s,rows take about 3 "
                          "MiB): cut it, or keep only its arrived_s and rows columns")
    nl, cr = (b"\n", b"\r") if isinstance(text, (bytes, bytearray)) else ("\n", "\r")
    # (lines end in \n, \r\n or \r alone: an old Mac's files; counted by either)
    lines = (max(text.count(nl), text.count(cr))
             + (0 if text.endswith(nl) or text.endswith(cr) else 1))
    if lines > MAX_REPLAY_ARRIVALS + 1:   # (one of them may be the header)
        raise ConfigError(f"the arrivals file has {lines:,} lines; a replay takes at most "
                          f"{MAX_REPLAY_ARRIVALS:,} arrivals (cut the file)")


def arrivals_from_csv(text: str | bytes) -> list[float]:
    """Arrival times from a CSV file to replay: the column ``arrived_s`` (what
    :func:`arrivals_to_csv` and the Batching page write, or a timeline export), else the
    only column; seconds, any origin (they are replayed relative to the first). Refuses,
    saying what is wrong, a file without such a column, with non-numeric, negative-span or
    non-finite values, more than :data:`MAX_REPLAY_ARRIVALS` arrivals, or a span longer than
    :data:`MAX_REPLAY_SPAN_S`."""
    return read_arrivals_csv(text)[0]


def read_arrivals_csv(text: str | bytes, notes: list[str] | None = None
                      ) -> tuple[list[float], list[int] | None]:
    """:func:`arrivals_from_csv`, and each arrival's rows from a ``rows`` column when the
    file has one (what :func:`arrivals_to_csv` writes with rows, or a timeline export),
    else None: pass them to ``replay(rows_per_request=...)``. What was done to the file's
    times to replay them (out of order: sorted) is appended to ``notes`` when given."""
    import io
    _check_arrivals_size(text)
    raw = text.decode("utf-8", "replace") if isinstance(text, (bytes, bytearray)) else text
    leading = _BLANK_LINES.match(raw)   # (blank lines before the header: counted, not read)
    lead = len(_LINE_END.findall(leading.group(0)))
    raw = raw[leading.end():]
    first = raw[:_MAX_HEAD_CHARS + 1].replace("\r", "\n").split("\n", 1)[0]
    head = [c.strip().strip('"') for c in first.split(",")]
    if len(first) > _MAX_HEAD_CHARS or len(head) > _MAX_COLUMNS:
        # (pandas names 100,000 repeated columns in 93 s: quadratic; an adversary)
        raise ConfigError("the arrivals file's first line is "
                          + (f"over {_MAX_HEAD_CHARS:,} characters" if len(first) >
                             _MAX_HEAD_CHARS else f"{len(head):,} columns")
                          + f"; a replay file has at most {_MAX_COLUMNS} columns (it reads "
                          "arrived_s and rows)")
    # (a timeline export's other columns are not parsed: only what a replay reads)
    read = {"arrived_s", "rows", "request_id"}
    wanted = (lambda c: str(c).strip().strip('"') in read) if "arrived_s" in head else None
    if not raw.strip():   # (was "not a CSV file (No columns to parse from file)"; a newcomer)
        raise ConfigError("the arrivals file is empty; expected a column arrived_s of times "
                          "in seconds, one arrival per row")
    header = 1 + lead   # (lines before the first arrival: the file's line numbers said)
    try:
        # every line read as a row, the blank ones (spaces too) then dropped: a row's index
        # is its line's (skipped by pandas, they shifted the line numbers said; a reviewer)
        frame = pd.read_csv(io.StringIO(raw), usecols=wanted, skip_blank_lines=False)
        if frame.shape[1] == 1 and _numeric(str(frame.columns[0])):
            frame = pd.read_csv(io.StringIO(raw), header=None, skip_blank_lines=False)
            header = lead   # no header: keep row one
        named = header - lead   # (the header line, when there is one)
        lines = _LINE_END.split(raw)
        frame = frame.drop(index=[i - named for i in range(named, len(lines))
                                  if not lines[i].strip() and i - named in frame.index])
        frame.columns = [str(c).strip() for c in frame.columns]   # ("arrived_s ,rows")
    except (ValueError, pd.errors.ParserError) as err:
        raise ConfigError(f"the arrivals file is not a CSV file ({err}); expected a column "
                          "arrived_s of times in seconds, one arrival per row") from None
    if "arrived_s" in frame:
        col = frame["arrived_s"]
        if "request_id" in frame:  # a timeline export: requests with no arrival time left
            col = col[col.notna()]
    elif frame.shape[1] == 1:
        col = frame.iloc[:, 0]
    else:
        raise ConfigError("the arrivals file has no arrived_s column (columns: "
                          f"{', '.join(map(str, frame.columns[:8]))}); expected a column "
                          "arrived_s of times in seconds, one arrival per row")
    values = pd.to_numeric(col, errors="coerce")
    wrong = ~np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
    if wrong.any():   # (the lines that are wrong: it quoted the first three, good or not)
        raise ConfigError(f"{int(wrong.sum())} arrival time(s) in the file are not finite "
                          f"numbers ({_lines(col[wrong], header)}); expected seconds, e.g. "
                          "0.0, 0.0031, 0.0047")
    if len(values) == 0:
        raise ConfigError("the arrivals file has no rows: nothing to replay")
    arr, order = _in_time_order(values.to_numpy(dtype=np.float64))
    check_arrivals(arr)
    back = np.flatnonzero(np.diff(values.to_numpy(dtype=np.float64)) < 0)
    if len(back) and notes is not None:   # (accepted silently before; a newcomer)
        notes.append(f"{len(back):,} of the file's times came before the one above them "
                     f"(the first on line {int(col.index[back[0] + 1]) + header + 1}): "
                     "replayed in time order"
                     + (", each with its rows" if "rows" in frame else ""))
    rows = None
    if "arrived_s" in frame and "rows" in frame:
        given = frame.loc[col.index, "rows"]
        got = pd.to_numeric(given, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            wrong = ~(np.isfinite(got) & (got >= 1) & (got == np.floor(got)))
        if wrong.any():
            raise ConfigError("the arrivals file's rows column must hold each arrival's rows, "
                              f"whole numbers >= 1 ({_lines(given[wrong], header)})")
        rows = got.astype(np.int64)[order].tolist()
    return (arr - arr[0]).tolist(), rows


def check_replay(arrivals_s: Sequence[float], policies: Sequence[str] | None,
                 slo_ms: float) -> tuple[tuple[str, ...], np.ndarray]:
    """The policies (default: every registered one) and sorted arrivals a replay takes, or
    ValueError saying what is wrong (before anything is loaded, or any traffic stopped)."""
    if isinstance(policies, str):   # (read letter by letter: "unknown policy 'd'")
        raise ConfigError(f"policies must be a list of policy names, such as [{policies!r}], "
                          f"got the string {policies!r}")
    policies = tuple(policies) if policies else replay_policies()
    unknown = [p for p in policies if p not in registered()]
    if unknown:
        raise ConfigError(f"unknown policy {unknown[0]!r}; registered: "
                          f"{', '.join(registered())}")
    if not (isinstance(slo_ms, (int, float)) and 0 < slo_ms < float("inf")):
        raise ConfigError(f"slo_ms must be a positive number of milliseconds, got {slo_ms!r}")
    try:
        arr = np.asarray(arrivals_s, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.asarray([np.nan])
    if arr.ndim != 1:   # (one number: numpy's AxisError)
        raise ConfigError(f"arrivals_s must be a list of arrival times in seconds (e.g. "
                          f"engine.timeline(...)['arrived_s'].tolist()), got {arrivals_s!r:.60}")
    arr = np.sort(arr)
    if len(arr) == 0:
        raise ConfigError("no arrivals to replay: run some traffic first")
    if not np.isfinite(arr).all():
        raise ConfigError("arrival times must be finite numbers of seconds")
    check_arrivals(arr)
    return policies, arr


def _warm(engine: EngineCore, model: str, copy: str, stop: Any) -> str | None:
    """The copy's session is new: warm-up runs it at the batch sizes its settings produce
    before the first policy (which would otherwise pay for the cold runs alone), on the
    session itself (outside its queue: no policy or estimator learns from it, no max wait is
    waited) and with the model's own samples (its real inputs: the copy has none, and random
    values can be out of a real model's range). Returns why it could not, or None."""
    try:
        engine.warmup(copy, iterations=3, stop=stop, inputs_of=model)
    except Exception as err:  # noqa: BLE001 - the replay goes on cold, and says so
        log.info("replay: warming %s failed (%s); replayed cold", copy, err)
        return f"the copy could not be warmed up ({err}): the first policy ran it cold"
    return None


def in_process_only(engine: Any, what: str, kind: str) -> None:
    """Refuse work that loads a model into the engine's own process (``what`` says how)
    for an engine's client: over HTTP it said "load_model over HTTP cannot choose whether
    the upload is tried in a child process", about an argument nobody passed."""
    from core.engine import EngineCore
    if not isinstance(engine, EngineCore):
        raise ConfigError(f"{what} in the engine's own process, which a client of its "
                          f"server cannot do from here: run it there "
                          f"as a job, engine.start_job({kind!r}, model, ...), and watch it with "
                          "engine.job(id)")


def check_replay_rows(arrivals_s: Sequence[float], rows_per_request: Sequence[int] | None,
                     agents: Any = 0) -> list[int]:
    """Each arrival's rows in the arrivals' time order (one each when None), or a
    ConfigError: a count that is not a whole number >= 1, a list of another length, or rows
    that vary sent by load agents (they send one request shape)."""
    n = len(arrivals_s) if hasattr(arrivals_s, "__len__") else 0
    if rows_per_request is None:
        return [1] * max(1, n)
    rows = as_list("rows_per_request", rows_per_request, "[1, 4, 4]")
    if len(rows) != n:
        raise ConfigError(f"rows_per_request has {len(rows)} counts for {n} arrivals: give "
                          "one per arrival (timeline(...)['rows'])")
    for r in rows:
        _check_int("rows_per_request", plain(r), 1, 1 << 20)
    order = _in_time_order(arrivals_s)[1]
    rows = [int(rows[i]) for i in order]
    if agents and len(set(rows)) > 1:
        raise ConfigError("load agents send one request shape: these arrivals carry "
                          f"{len(set(rows))} different row counts; replay them from this "
                          "process (no agents)")
    return rows


def replay(engine: EngineCore, model: str, arrivals_s: Sequence[float],
           policies: Sequence[str] | None = None, stop: Any = None,
           progress: Callable[[int, int, str], None] | None = None,
           slo_ms: float = DEFAULT_SLO_MS, agents: Any = 0,
           ray_address: str | None = None,
           rows_per_request: Sequence[int] | None = None) -> dict[str, Any]:
    """Send the same arrivals (seconds, as recorded in ``engine.timeline``) to a private
    copy of ``model`` once under each policy (default: every registered one), on the
    engine (real runs, one after the other), with the model's max batch size and max wait;
    the copy is unloaded after. ``aimd`` sizes batches by the model's ``latency_slo_ms``
    if the model runs aimd, else by ``slo_ms``; the other policies run without an SLO.

    Returns ``{"summary": DataFrame (policy, requests, p50_ms, p99_ms, mean_batch_rows,
    batches, slo_ms, within_slo: the share of requests answered within ``slo_ms``,
    goodput_rps: those per second of the run), "timelines": {policy: DataFrame}, "copy":
    its name, "cold": why the copy could not be warmed up, or None, "timeline_note": what
    the timelines leave out when a run outran the trace, or None}`` with each run's
    timeline (batches and mean batch are counted by the copy's metrics: all of them).

    ``agents``: the arrivals are sent by that many load agents on the Ray cluster at
    ``ray_address`` (or a :class:`~core.lab.agents.LoadAgents` given), shared out at their
    recorded times, to this engine's server (an engine no server exposes is refused).

    ``rows_per_request``: each arrival's rows, as recorded (``timeline(...)["rows"]``;
    default: one each). Traffic of 4 rows a request was replayed as one-row requests, its
    batches then 9 and 7 rows where 28 had left (a newcomer)."""
    policies, arr = check_replay(arrivals_s, policies, slo_ms)
    sizes = check_replay_rows(arrivals_s, rows_per_request, agents)
    in_process_only(engine, "replay loads a private copy of the model", "replay")
    offsets = arr - arr[0]
    before = engine.batch_config(model)
    # (a sweep measuring the model holds its own settings: replayed under the sweep's point
    # of the moment, 2 / 0 ms for a model of 32 / 5 ms, unsaid; an adversary)
    jobs = getattr(engine, "jobs", None) or (lambda **_: [])
    own = next((j.params["own_settings"] for j in jobs(target=model)
                if not j.finished and isinstance(j.params.get("own_settings"), dict)), None)
    if own:
        before = before.replace(**own)
    if max(sizes) > before.max_batch_size:   # (each refused at submit, unsaid; a reviewer)
        raise ConfigError(f"these arrivals carry requests of up to {max(sizes)} rows, and "
                          f"{model} takes at most max_batch_size={before.max_batch_size} "
                          "rows a request now: raise it (engine.configure) to replay them")
    data = engine.model_file(model)
    inputs = {r: engine.sample_input(model, rows=r) for r in sorted(set(sizes))}
    sample_x = inputs[sizes[0]]
    copy = f"{model}-replay-{uuid.uuid4().hex[:6]}"
    rows, timelines = [], {}
    traced: dict[str, tuple[int, int]] = {}   # policy: (in its timeline, sent)
    with contextlib.ExitStack() as stack:
        stack.callback(hold_copy(engine, model, copy))   # (held from before it exists)
        engine.load_model(data, name=copy, batch=before.replace(latency_slo_ms=None),
                          description=f"private copy of {model} for a replay (unloaded "
                          "after)", source_label=f"replay of {model}", probe=False,
                          # batched as the model is (its row check's verdict, or its owner's)
                          check_rows=engine.model_info(model).batch_mode == "alone")
        stack.callback(engine.unload_model, copy)   # (before the hold is let go)
        cold = _warm(engine, model, copy, stop)
        ep = agent_endpoint(engine, copy) if agents else None   # (refused before Ray)
        if agents:
            check_ray_address(engine, ray_address)
        team = stack.enter_context(agents_for(agents, ray_address))
        if team is not None:    # (again, with Ray connected: the address nodes reach)
            ep = agent_endpoint(engine, copy)
        for k, policy in enumerate(policies):
            if stop is not None and stop.is_set():
                break
            # aimd sizes batches by an objective: the model's own if it runs aimd, else the
            # replay's SLO (its default, 10 ms, would judge it by another target).
            keep = ((before.latency_slo_ms or slo_ms) if policy == before.policy == "aimd"
                    else slo_ms if policy == "aimd" else None)
            engine.configure(copy, policy=policy, latency_slo_ms=keep)
            engine.reset_metrics(copy)
            t_start = time.perf_counter()
            if team is not None:
                res = team.run(ep["url"], ep["model"], sample_x, 1.0, 1.0, offsets_s=offsets,
                               headers=ep["headers"])
            else:
                order = iter([inputs[r] for r in sizes])   # (sent in order, one thread)
                res = open_loop(lambda v: engine.submit(copy, next(order)),
                                lambda rng: sample_x, 1.0, offsets_s=offsets, seed=k,
                                stop=stop)
            span = time.perf_counter() - t_start + 0.5
            tl = engine.timeline(copy, last_s=span)
            tl = tl[tl["arrived_s"] >= t_start].reset_index(drop=True)
            timelines[policy] = tl
            s = res.summary()
            f = res.frame
            within = int((f["ok"] & (f["latency_ms"] <= slo_ms)).sum())
            # batches from the copy's counters (every batch of the copy is the replay's):
            # the timeline is the trace's last trace_requests, which a long replay outruns
            counts = engine.counters(copy)
            if len(tl) < s["sent"] and len(tl) >= engine.config.trace_requests:
                traced[policy] = (len(tl), int(s["sent"]))   # (the trace full: not refusals)
            rows.append({"policy": policy, "requests": s["sent"], "p50_ms": s["p50_ms"],
                         "p99_ms": s["p99_ms"],
                         "mean_batch_rows": counts["rows"] / counts["batches"]
                         if counts["batches"]
                         else float("nan"),
                         "batches": int(counts["batches"]),
                         "slo_ms": float(slo_ms),
                         "within_slo": within / s["sent"] if s["sent"] else float("nan"),
                         "goodput_rps": within / res.duration_s if res.duration_s > 0
                         else float("nan")})
            if progress is not None:
                progress(k + 1, len(policies), policy)
    note = None if not traced else (
        "the timelines hold each run's last " + ", ".join(
            f"{n:,} of {sent:,} requests ({p})" for p, (n, sent) in traced.items())
        + ": the trace keeps the last EngineConfig.trace_requests; the table counts them all")
    return {"summary": pd.DataFrame(rows), "timelines": timelines, "copy": copy, "cold": cold,
            "timeline_note": note, "max_batch_size": before.max_batch_size,
            "max_wait_ms": before.max_wait_ms}   # (what it ran with: the charts' marks)
