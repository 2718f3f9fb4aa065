"""Do a batch's rows keep to themselves? A model is run on a few rows together and on each
row alone, and the answers compared.

A dynamic leading dimension says a model *takes* any number of rows, not that its rows are
independent: ``CumSum`` or ``Softmax`` over axis 0, a batch statistic, a transpose that puts
the rows on another axis, all give each row an answer that depends on the rows beside it.
Packed into one batch with other callers' requests, such a model would hand one caller an
answer made from another's data. :func:`rows_mix` finds it once, at load; the engine then
runs each request of that model alone and whole (``batch_mode == "alone"``).

It is a check of one trial, not a proof: a model whose rows mix only in batches of more
than :data:`ROWS_CHECKED` rows, or only for some values of its inputs, passes it (no finite
trial catches every such model; an adversary built ``(N > 3) * ReduceSum``). Such a model
would need ``max_batch_size`` 1 set by hand.

Example:
    >>> rows_mix(load_model_bytes(cumsum_onnx, "cumsum"))
    "rows of a batch change each other's answers: output 'y' of row 1 differs ..."
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import numpy as np
import onnxruntime as ort

from .sampling import sample_input

__all__ = ["rows_mix", "checked_info", "ROWS_CHECKED"]

#: Rows run together, then one by one.
ROWS_CHECKED = 3

# A row's answer alone and in the batch may differ by a kernel's rounding (a batched GEMM
# sums in another order): relative 1e-3 of the output's scale is far above that.
_RTOL = 1e-3
# A dynamically quantized model takes one scale per batch: a row's answer moves by a few
# quantization steps with its neighbours (demo models quantized with quantize_dynamic: up
# to 2-7 % of the output's scale with rows 10x apart). Rows that mix (CumSum, Softmax over
# the batch, a batch statistic) move by half the scale or more: a quarter of the output's
# scale, absolute, tells them apart. The batch's scale does not change with the rows'
# order, so the same rows in reverse order must give each row the same answer, every
# output compared as closely as any model's: what mixes in order (CumSum) shows there,
# labels included.
_QUANT_SHARE = 0.25


def rows_mix(loaded: Any, time_limit_s: float = 10.0, max_bytes: int = 2**24) -> str | None:
    """Why ``loaded``'s rows cannot share a batch (an output's row differs with others
    beside it, or an output does not have the batch's rows), or None: they can, or it could
    not be told (generated inputs refused, a run failed or passed ``time_limit_s``). An
    output whose answers vary from run to run (a random one) is left out of the comparison,
    the others still compared. ``loaded``: a :class:`core.models.LoadedModel` whose batch
    axis is dynamic. Four runs (3 rows, then each alone), five on a difference."""
    return _verdict(loaded, time_limit_s, max_bytes)[0]


def _verdict(loaded: Any, time_limit_s: float, max_bytes: int = 2**24,
             quantized: bool = False) -> tuple[str | None, str | None]:
    """(why the rows mix, why it could not be told): at most one is not None.
    ``quantized`` (one scale per batch): alone and together, floating outputs are compared
    within :data:`_QUANT_SHARE` of their scale and the others (a label one quantization
    step flips) not when an output floats; then the rows in reverse order, every output
    as closely as any model's."""
    n = ROWS_CHECKED
    try:
        x = sample_input(loaded.info, rows=n, seed=0, max_bytes=max_bytes)
        arrays = list(x.values()) if isinstance(x, dict) else [x]
        together = _run(loaded, arrays, time_limit_s)
        alone = [_run(loaded, [a[i:i + 1] for a in arrays], time_limit_s) for i in range(n)]
        again: list[Any] | None = None
        floats = [getattr(o, "dtype", None) is not None and o.dtype.kind == "f"
                  for o in together]
        checks = []   # (output index, name, the rows' answers to compare with, share)
        for k, name in enumerate(loaded.output_names):
            if not (quantized and any(floats) and not floats[k]):
                checks.append((k, name, [a[k] for a in alone], _QUANT_SHARE if quantized
                               else None))
        if quantized:
            back = _run(loaded, [a[::-1] for a in arrays], time_limit_s)
            checks += [(k, name, [o[::-1][i:i + 1] for i in range(n)] if _rows_of(o, n)
                        else [o] * n, "order") for k, (name, o) in
                       enumerate(zip(loaded.output_names, back))]
        for k, name, others, share in checks:
            why = _difference(name, together[k], others, n,
                              None if share == "order" else share, share == "order")
            if why is None:
                continue
            if again is None:   # the same answer twice, or this output says nothing
                again = _run(loaded, arrays, time_limit_s)
            if np.shape(again[k]) == np.shape(together[k]) and _close(together[k], again[k]):
                return why, None
        return None, None
    except Exception as err:  # noqa: BLE001 - nothing can be said: its own runs will tell
        text = " ".join(str(err).split())[:160] or type(err).__name__
        return None, f"{type(err).__name__}: {text}"


def _rows_of(out: Any, n: int) -> bool:
    return isinstance(out, np.ndarray) and out.ndim > 0 and out.shape[0] == n


def _difference(name: str, out: Any, alone: list[Any], n: int,
                share: float | None = None, order: bool = False) -> str | None:
    if not isinstance(out, np.ndarray) or out.dtype.kind not in "fiubUSO":
        return None   # sequences, maps: not compared (strings are: a label can mix too)
    if out.ndim == 0 or out.shape[0] != n:
        have = "no leading axis" if out.ndim == 0 else f"{out.shape[0]} rows"
        return (f"output {name!r} has {have} for a batch of {n} rows, so a batch's "
                "answers cannot be split per request")
    for i in range(n):
        mine = alone[i]
        if np.shape(mine) != out[i:i + 1].shape or not _close(out[i:i + 1], mine, share):
            return (f"rows of a batch change each other's answers: output {name!r} of "
                    f"row {i} differs when "
                    + ("the batch's rows come in another order (e.g. CumSum over the leading "
                       "axis)" if order else f"run with {n - 1} other rows (e.g. CumSum or "
                       "Softmax over the leading axis)")
                    + ", so each request runs alone, whole")
    return None


def checked_info(loaded: Any, data: bytes, time_limit_s: float = 10.0,
                 check: bool = True, rows_failed: str | None = None) -> Any:
    """``loaded.info`` after the check: ``batch_mode="alone"`` with the reason when its rows
    mix; a dynamically quantized model (``DynamicQuantizeLinear``: its scale is taken over
    the whole batch, so a row's answer moves by a few quantization steps with its
    neighbours, as on any server that batches it) is checked within a quarter of each
    floating output's scale and, passing, keeps batching with a warning saying so.
    ``check=False`` (``load_model(check_rows=False)``, a model its owner knows keeps its
    rows apart): no runs, batched, with a warning saying whose word that is.
    ``rows_failed``: why the trial run of as many rows failed in a child process (an error
    ONNX Runtime returned, e.g. a shape it cannot take): no runs here, and each request
    runs alone, whole, saying why (a batch of them would fail the same way)."""
    info = loaded.info
    if not check:
        return dataclasses.replace(info, warnings=info.warnings + (
            "its rows were not checked for mixing (loaded with check_rows=False): it is "
            "batched on that word; if a row's answer depends on the rows beside it, load it "
            "again without check_rows=False",))
    # (checked all the same, within a quantization's steps: skipped, a CumSum whose
    # doc_string named the operator handed each caller the sum of the others'; an adversary;
    # known from the graph's nodes, not the bytes: a description bought the looser check)
    quantized = bool(getattr(loaded, "quantizes_per_batch", False))
    if rows_failed:
        return dataclasses.replace(info, batch_mode="alone", batch_reason=(
            f"its trial run of {ROWS_CHECKED} rows failed in a separate process "
            f"({rows_failed}), so a batch of requests would too: each request runs alone, "
            "whole"))
    why, unchecked = _verdict(loaded, time_limit_s, quantized=quantized)
    if quantized and not why:
        info = dataclasses.replace(info, warnings=info.warnings + (
            "dynamically quantized (DynamicQuantizeLinear): each batch is quantized with one "
            "scale, so a row's answer can move by a few quantization steps with the rows "
            "batched beside it (its rows were checked for mixing within that)",))
    if unchecked:   # ("checked and independent" and "not checked" must not look the same)
        return dataclasses.replace(info, warnings=info.warnings + (
            f"its rows could not be checked for mixing with generated inputs ({unchecked}); "
            "it is batched: if a row's answer depends on the rows beside it (CumSum or "
            "Softmax over the batch axis), set max_batch_size=1",))
    return dataclasses.replace(info, batch_mode="alone", batch_reason=why) if why else info


def _run(loaded: Any, arrays: list[np.ndarray], time_limit_s: float) -> list[Any]:
    ro = ort.RunOptions()
    timer = threading.Timer(time_limit_s, setattr, (ro, "terminate", True))
    timer.start()
    try:
        return loaded.run(arrays, ro)
    finally:
        timer.cancel()


def _close(a: np.ndarray, b: Any, share: float | None = None) -> bool:
    """Equal, or for floats within :data:`_RTOL` (``share``: within that share of ``a``'s
    scale, absolute: allclose's relative part let 0.6 pass for 1.0 at a quarter)."""
    b = np.asarray(b)
    if a.dtype.kind != "f":
        return bool(np.array_equal(a, b))
    finite = np.isfinite(a)
    scale = max(float(np.abs(a[finite]).max()) if finite.any() else 1.0, 1e-6)
    if share is not None:
        return bool(np.allclose(a, b, rtol=0.0, atol=share * scale, equal_nan=True))
    return bool(np.allclose(a, b, rtol=_RTOL, atol=_RTOL * scale, equal_nan=True))
