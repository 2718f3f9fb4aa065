"""Random valid inputs for a model, checked against the memory budget before allocating.

Example:
    >>> sample_input(info, rows=3).shape
    (3, 256)
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from core.errors import ConfigError, ResourceLimitError
from .memory import check_elements, generated_input_limit, memory_budget
from .types import ModelInfo, TensorSpec

#: One past the largest integer generated for an integer input that is not known to index a
#: table of the model's own (core.models.ids).
GENERATED_INT_HIGH = 10

__all__ = ["GENERATED_INT_HIGH", "sample_input", "check_rows", "frozen", "generated_values", "narrowed",
           "ids_outside", "ids_refused"]


def check_rows(rows: object) -> None:
    """A number of rows asked for: a whole number, at least 1 (a ConfigError that says so,
    not numpy's 'negative dimensions are not allowed')."""
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
        raise ConfigError(f"rows must be a whole number of at least 1, got {rows!r}")


def check_seed(seed: object) -> None:
    """A seed: None (a fresh one) or a whole number, at least 0 (a ConfigError that says
    so, not numpy's 'expected non-negative integer')."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise ConfigError(f"seed must be a whole number of at least 0 (or None for a fresh "
                          f"one), got {seed!r}")


def sample_input(info: ModelInfo, rows: int = 1, seed: int | None = 0,
                 dynamic_size: int = 4,
                 max_bytes: int | None = None) -> np.ndarray | dict[str, np.ndarray]:
    """Random input for ``info`` with ``rows`` rows (the exact shape for non-batchable models).

    Dynamic dims other than the batch axis get ``dynamic_size``; dims sharing a name agree.
    Every input's size is checked against ``max_bytes`` (default: an eighth of the
    process's memory budget) before anything is allocated, and values are generated in the
    input's own
    dtype, so a declared shape such as ``[1, 2^31-1]`` is refused with a
    :class:`~core.errors.ResourceLimitError` naming the input and dimension instead of
    allocating tens of GiB. Returns an array for a one-input model, else a dict.

    Example:
        >>> sample_input(info, rows=3)["x"].shape  # doctest: +SKIP
        (3, 256)
    """
    check_rows(rows)
    check_seed(seed)
    budget = max_bytes if max_bytes is not None else generated_input_limit(memory_budget())
    shapes: dict[str, list[int]] = {}
    total = 0
    for spec in info.inputs:
        shape = []
        for i, d in enumerate(spec.shape or ()):
            if i == 0 and info.batch_mode in ("dynamic", "rows", "alone"):
                shape.append(rows)
            elif isinstance(d, int):
                shape.append(d)
            else:
                shape.append(dynamic_size)
        assert spec.dtype is not None
        total += check_elements(f"input {spec.name!r}", shape, spec.dtype, budget)
        shapes[spec.name] = shape
    if budget is not None and total > budget:
        raise ResourceLimitError(
            f"the inputs of model {info.name!r} with {rows} rows need {total / 2**20:.1f} MiB "
            f"together, over the {budget / 2**20:.1f} MiB the engine generates at most (1/8 "
            "of its memory budget); use fewer rows or raise EngineConfig.memory_budget_bytes")
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for spec in info.inputs:
        shape, dtype = shapes[spec.name], spec.dtype
        if dtype in (np.float32, np.float64):
            arr = rng.standard_normal(shape, dtype=dtype.type)
        elif dtype.kind == "f":
            arr = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        elif dtype.kind == "b":
            arr = rng.integers(0, 2, size=shape, dtype=np.uint8).astype(bool)
        elif dtype.kind in "iu":
            arr = rng.integers(0, _int_high(spec), size=shape, dtype=dtype.type)
        else:
            arr = np.zeros(shape, dtype=dtype)
        arrays[spec.name] = arr
    return frozen(arrays)


def _int_high(spec: TensorSpec) -> int:
    """One past the largest integer generated for ``spec``: its table's length for an index
    into one (at most its dtype's largest, plus one), else :data:`GENERATED_INT_HIGH`."""
    assert spec.dtype is not None
    if spec.index_bound is None:
        return GENERATED_INT_HIGH
    return min(spec.index_bound, int(np.iinfo(spec.dtype).max) + 1)


def ids_outside(arr: np.ndarray, spec: TensorSpec) -> str | None:
    """What of ``arr`` an input indexing a table of the model's own cannot take (Gather
    takes -n to n-1), in words after the input's name; None when it can take it all."""
    n = spec.index_bound
    if n is None or arr.dtype.kind not in "iu" or arr.size == 0:
        return None
    bad = ((arr < -n) | (arr >= n)).reshape(-1)
    if not (k := int(np.count_nonzero(bad))):
        return None
    first = arr.reshape(-1)[int(bad.argmax())].item()
    return (f"has {k:,} value{'s' * (k != 1)} (e.g. {first}) past the table of {n:,} rows it "
            f"indexes in the model: give ids from 0 to {n - 1:,}")


def ids_refused(arrays: dict[str, np.ndarray], info: ModelInfo) -> str | None:
    """The first input of ``info`` whose ids in ``arrays`` (another model's real inputs) its
    table cannot take, in words; None when it takes them all."""
    for spec in info.inputs:
        if spec.name in arrays and (bad := ids_outside(arrays[spec.name], spec)):
            return f"input {spec.name!r} {bad}"
    return None


def narrowed(info: ModelInfo, others: Sequence[ModelInfo]) -> ModelInfo:
    """``info`` with each input's index bound the smallest of its own and those of the
    inputs of that name in ``others`` (one without a bound counts as
    :data:`GENERATED_INT_HIGH`, what it is drawn below): generated inputs valid for every
    model at once (an A/B experiment's arms)."""
    if not others:
        return info
    def bound(spec: TensorSpec) -> int | None:
        theirs = [t.index_bound or GENERATED_INT_HIGH
                  for o in others for t in o.inputs if t.name == spec.name]
        if not theirs:
            return spec.index_bound
        low = min(theirs)
        if spec.index_bound is None:          # (drawn below GENERATED_INT_HIGH already)
            return low if low < GENERATED_INT_HIGH else None
        return min(spec.index_bound, low)

    return dataclasses.replace(info, inputs=tuple(
        dataclasses.replace(s, index_bound=bound(s)) for s in info.inputs))


def generated_values(spec: TensorSpec) -> str:
    """What :func:`sample_input` draws for ``spec``, in words (the Models page shows it)."""
    dtype = spec.dtype
    if dtype is None:
        return "not generated"
    if dtype.kind == "f":
        return "standard normal"
    if dtype.kind == "b":
        return "true or false"
    if dtype.kind in "iu":
        high = _int_high(spec)
        where = ("" if spec.index_bound is None else
                 f" (indices into a table of {spec.index_bound:,} rows)")
        return f"integers 0 to {high - 1:,}{where}"
    return "zeros"


def frozen(arrays: dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
    """Sample arrays made read-only (``submit`` takes a read-only array as it is, while it
    copies one its caller could still write into; ``np.array(x)`` is a writable copy),
    the one array bare for a one-input model."""
    for a in arrays.values():
        a.flags.writeable = False
    return next(iter(arrays.values())) if len(arrays) == 1 else arrays
