"""Arrivals files a replay reads and writes: a CSV of arrival times (``arrived_s``,
seconds) and, when recorded, each arrival's rows; what a replay takes of them (how many,
over how long a span), refused in words before anything is loaded.

Example:
    >>> text = arrivals_to_csv([0.0, 0.004, 0.009], rows=[1, 4, 1])
    >>> read_arrivals_csv(text)
    ([0.0, 0.004, 0.009], [1, 4, 1])
"""

from __future__ import annotations

import io
import re
from typing import Any, Sequence

import numpy as np
import pandas as pd

from core.errors import ConfigError

__all__ = ["arrivals_to_csv", "arrivals_from_csv", "read_arrivals_csv", "check_arrivals",
           "MAX_REPLAY_ARRIVALS", "MAX_REPLAY_SPAN_S", "MAX_ARRIVALS_FILE_BYTES"]

#: The most arrivals a replay takes (a file of more is refused, saying so).
MAX_REPLAY_ARRIVALS = 200_000
#: The longest span of arrivals a replay takes (seconds); each policy replays all of it.
MAX_REPLAY_SPAN_S = 600.0
#: The largest arrivals file read (bytes): refused unparsed past it.
MAX_ARRIVALS_FILE_BYTES = 32 * 2**20
#: A header past these is refused unparsed (a timeline export has about 20 columns).
_MAX_COLUMNS = 64
_MAX_HEAD_CHARS = 4096


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
