"""Issue 27, part 2: a load run as histograms instead of rows (what load agents return with
``rows=False``): its summary has the rows' counts and means, its percentiles are
HdrHistogram's (the recorded value at or above the rank, 3 significant digits), and digests
of parts merge into the digest of the whole, losslessly."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.lab import LOAD_COLUMNS, LoadResult
from core.lab.digest import LoadDigest, digest_frame


def _frame(n: int = 6000, seed: int = 7) -> pd.DataFrame:
    """A load run's rows: 3.5 s of sends, lognormal latencies, some failures."""
    rng = np.random.default_rng(seed)
    intended = np.sort(rng.uniform(0.0, 3.5, n))
    lat = rng.lognormal(mean=1.5, sigma=0.8, size=n)          # ms, a long tail
    ok = rng.random(n) > 0.03
    err = np.where(ok, "", np.where(rng.random(n) < 0.5, "ServerError", "TimeoutError"))
    rows = rng.integers(1, 33, n)
    queue = rng.uniform(0.1, 4.0, n)
    return pd.DataFrame({
        "request": np.arange(n), "client": np.zeros(n, np.int64), "intended_s": intended,
        "sent_s": intended, "done_s": np.where(ok, intended + lat / 1000.0, math.nan),
        "latency_ms": np.where(ok, lat, math.nan), "engine_ms": queue + 1.0,
        "queue_ms": queue, "compute_ms": np.full(n, 1.0), "batch_rows": rows, "ok": ok,
        "error": err.tolist()}, columns=LOAD_COLUMNS)


def _digest_of(*frames: pd.DataFrame) -> LoadDigest:
    d = LoadDigest()
    for f in frames:
        d.add(digest_frame(f))
    return d


def test_a_digest_summarises_as_the_rows_do():
    f = _frame()
    by_rows = LoadResult("open", f, 3.6, 2.0).summary()
    d = _digest_of(f)
    by_digest = LoadResult("open", f.iloc[:0], 3.6, 2.0, digest=d).summary()
    assert list(by_digest) == list(by_rows)                  # the same fields, in order
    for k in ("mode", "sent", "succeeded", "failed", "error_rate", "achieved_rps",
              "max_lag_ms", "agents", "lost", "max_batch_rows"):
        assert by_digest[k] == by_rows[k], k
    for k in ("mean_batch_rows", "mean_queue_ms", "mean_compute_ms"):
        assert by_digest[k] == pytest.approx(by_rows[k], rel=1e-9), k
    ok_ms = f.loc[f["ok"], "latency_ms"].to_numpy()
    for p in (50, 95, 99):       # 3 significant digits, values rounded to the microsecond
        assert by_digest[f"p{p}_ms"] == pytest.approx(
            np.percentile(ok_ms, p, method="inverted_cdf"), rel=2e-3, abs=1e-3), p
    assert by_digest["max_ms"] == pytest.approx(ok_ms.max(), rel=2e-3, abs=1e-3)
    assert dict(d.errors) == f.loc[~f["ok"], "error"].value_counts().to_dict()
    assert d.histogram.get_total_count() == len(ok_ms)
    assert d.count_within(10.0) == pytest.approx((ok_ms <= 10.0).sum(), abs=5)


def test_digests_of_parts_merge_into_the_digest_of_the_whole():
    """Three agents' shares (every third send), merged, are the whole run: the same counts,
    the same histogram at every value, the same per-second series."""
    f = _frame()
    parts = [f.iloc[k::3] for k in range(3)]
    merged, whole = _digest_of(*parts), _digest_of(f)
    assert (merged.sent, merged.succeeded, merged.errors) == (whole.sent, whole.succeeded,
                                                              whole.errors)
    values = lambda h: [(v.value_iterated_to, v.count_at_value_iterated_to)  # noqa: E731
                        for v in h.get_recorded_iterator()]
    assert values(merged.histogram) == values(whole.histogram)
    series = merged.per_second()
    pd.testing.assert_frame_equal(series, whole.per_second())
    assert series["second"].tolist() == [0, 1, 2, 3]
    assert series["sent"].sum() == len(f) and series["failed"].sum() == (~f["ok"]).sum()
    one = f[(f["intended_s"] >= 2) & (f["intended_s"] < 3) & f["ok"]]["latency_ms"]
    row = series.set_index("second").loc[2]
    assert row["p99_ms"] == pytest.approx(np.percentile(one, 99, method="inverted_cdf"),
                                          rel=2e-3, abs=1e-3)
    # the rows' own series is the digest's
    pd.testing.assert_frame_equal(LoadResult("open", f, 3.6, 0.0).per_second(), series)


def test_sends_no_agent_made_are_counted_failed_in_their_seconds():
    f = _frame(n=1000)
    d = _digest_of(f)
    d.add_lost(np.array([0.5, 0.7, 4.2]), "AgentLost")
    assert d.sent == 1003 and d.errors["AgentLost"] == 3
    s = d.per_second().set_index("second")
    assert s.loc[4, "sent"] == 1 and s.loc[4, "failed"] == 1 and math.isnan(s.loc[4, "p99_ms"])
    assert s["sent"].sum() == 1003


def test_an_empty_run_digests_to_nothing_answered():
    f = _frame().iloc[:0]
    d = _digest_of(f)
    s = LoadResult("open", f, 0.0, 0.0, digest=d).summary()
    assert s["sent"] == 0 and s["error_rate"] == 0.0 and math.isnan(s["p99_ms"])
    assert d.per_second().empty


def test_a_histograms_percentile_is_the_value_at_the_rank_not_an_interpolation():
    """Over a handful of requests the definitions differ (documented in core.lab.digest);
    over many they agree within the histogram's precision."""
    f = _frame(n=2)
    f["ok"], f["error"] = True, ""
    f["latency_ms"] = [10.0, 100.0]
    rows = LoadResult("open", f, 1.0, 0.0).summary()
    hist = LoadResult("open", f.iloc[:0], 1.0, 0.0, digest=_digest_of(f)).summary()
    assert rows["p50_ms"] == pytest.approx(55.0)
    assert hist["p50_ms"] == pytest.approx(10.0, rel=2e-3)
    assert hist["p99_ms"] == pytest.approx(100.0, rel=2e-3)
    big = _frame(n=20_000, seed=3)
    rows = LoadResult("open", big, 3.6, 0.0).summary()
    hist = LoadResult("open", big.iloc[:0], 3.6, 0.0, digest=_digest_of(big)).summary()
    for p in ("p50_ms", "p95_ms", "p99_ms"):
        assert hist[p] == pytest.approx(rows[p], rel=0.01), p
