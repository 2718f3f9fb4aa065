"""Check a request's inputs against the model at ``submit`` time.

Validation happens before a request is queued so that a bad request fails alone, at once,
with a message that says what was expected; it never reaches (and poisons) a batch.
The common case (one input, an ndarray of the right dtype) costs a few attribute reads and
a copy: an array the caller can still write into is copied here, so the request is what was
sent even if the caller refills its buffer before the batch runs (a read-only array, such
as one decoded from a request body, is taken as it is).

Example:
    >>> v = RequestValidator(info)          # info: float32 [N,256]
    >>> arrays, rows = v(np.zeros((3, 256), np.float32))
    >>> rows
    3
    >>> v(np.zeros((3, 255), np.int64))
    Traceback (most recent call last):
    InputValidationError: input 'x' expects float32 [N,256], got int64 [3,255]
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from core.errors import InputValidationError
from .types import ModelInfo

__all__ = ["RequestValidator", "describe_array", "owned", "unchanging"]


def owned(a: Any) -> Any:
    """The rule for what a request keeps of its caller's array: a copy of one the caller
    could still write into, a read-only one as it is (anything else unchanged). A
    read-only view of a writable array is written through that array: copied (an
    adversary refilled the buffer under a read-only view and got the refill's answer).
    The validator's fast path inlines it (one call less per request)."""
    if not isinstance(a, np.ndarray):
        return a
    return a if not a.flags.writeable and (a.base is None or unchanging(a)) else a.copy()


def unchanging(a: np.ndarray) -> bool:
    """(``a`` read-only.) Whether every array ``a`` is a view of is read-only too. A buffer
    that is not an array (bytes, a memoryview) is taken at its word: ``np.frombuffer``
    over a read-only memoryview is read-only. Another object between them is looked
    through (``as_strided``'s, under ``sliding_window_view``, keeps the array it views as
    its ``base``: a window of a buffer its caller refills was taken uncopied)."""
    base = a.base
    if base is None:   # (the common case: an array of its own)
        return True
    for _ in range(64):
        if isinstance(base, np.ndarray):
            if base.flags.writeable:
                return False
        elif isinstance(base, memoryview) and isinstance(base.obj, np.ndarray):
            base = base.obj   # (a read-only view of a writable array: its buffer changes)
            continue
        elif base is None or isinstance(base, (bytes, memoryview)):
            return True
        base = getattr(base, "base", None)
    return False   # (a chain that long: copied, not trusted)


def describe_array(a: np.ndarray) -> str:
    """``'int64 [3,255]'``: dtype and shape the way error messages show them."""
    return f"{a.dtype} [{','.join(map(str, a.shape))}]"


class RequestValidator:
    """Turns a request (array or mapping) into input arrays in declared order plus its rows.

    Rows are the leading axis for batchable and row-at-a-time models; a request to an
    ``exact`` model must match the declared shape and counts as one row.
    """

    __slots__ = ("info", "names", "dtypes", "tails", "specs", "mode", "single",
                 "exact_shapes", "_name_set", "_fast", "_named")

    def __init__(self, info: ModelInfo) -> None:
        self.info = info
        self.specs = info.inputs
        self.names = tuple(s.name for s in info.inputs)
        self._name_set = frozenset(self.names)
        self.dtypes = tuple(s.dtype for s in info.inputs)
        # Expected dims after the leading axis: int must match, None accepts any size.
        self.tails = tuple(tuple(d if isinstance(d, int) else None for d in (s.shape or ())[1:])
                           for s in info.inputs)
        self.exact_shapes = tuple(tuple(d if isinstance(d, int) else None for d in (s.shape or ()))
                                  for s in info.inputs)
        self.mode = info.batch_mode
        self.single = len(self.names) == 1
        # The common case, one input whose non-batch dims are all fixed, is checked by one
        # comparison of (dtype, shape tail); anything else takes the general path.
        # Named dynamic dims (after the leading axis) that appear more than once across the
        # inputs: (dim name, [(input index, axis)]) -- their sizes must agree in a request.
        seen: dict[str, list[tuple[int, int]]] = {}
        for i, spec in enumerate(info.inputs):
            for axis, d in enumerate(spec.shape or ()):
                if isinstance(d, str) and (axis > 0 or self.mode == "exact"):
                    seen.setdefault(d, []).append((i, axis))
        self._named = tuple((d, tuple(places)) for d, places in seen.items() if len(places) > 1)
        self._fast = None
        if self.single and self.mode != "exact" and None not in self.tails[0]:
            self._fast = (self.dtypes[0], self.tails[0])

    def __call__(self, x: Any) -> tuple[tuple[np.ndarray, ...], int]:
        fast = self._fast
        if fast is not None and type(x) is np.ndarray:
            shape = x.shape
            if x.dtype == fast[0] and shape[1:] == fast[1] and shape and shape[0]:
                return (x if not x.flags.writeable and (x.base is None or unchanging(x))
                        else x.copy(),), shape[0]
        if self.single:
            if type(x) is np.ndarray:
                arrays: tuple[np.ndarray, ...] = (x,)
            elif isinstance(x, Mapping):
                arrays = self._from_mapping(x)
            elif isinstance(x, np.ndarray):
                arrays = (x,)
            else:
                raise InputValidationError(
                    f"input {self.names[0]!r} must be a numpy array of "
                    f"{self.specs[0].describe()}, got {type(x).__name__}; convert with "
                    f"np.asarray(x, dtype=np.{self.dtypes[0]})")
        else:
            if not isinstance(x, Mapping):
                raise InputValidationError(
                    f"model {self.info.name!r} has {len(self.names)} inputs "
                    f"({', '.join(map(repr, self.names))}); pass a dict of input name to "
                    f"array, got {type(x).__name__}")
            arrays = self._from_mapping(x)
        if self.mode == "exact":
            arrays = self._check_exact(arrays)
            rows = 1
        else:
            rows = self._check_rows(arrays)
        if self._named:
            self._check_named(arrays)
        # What the caller may still write into is copied: the request is what was sent
        # (a notebook that refills one buffer per submit got another request's answer);
        # a read-only array cannot change through it and is taken as it is.
        return tuple(owned(a) for a in arrays), rows

    def _check_named(self, arrays: tuple[np.ndarray, ...]) -> None:
        for dim, places in self._named:
            sizes = [(self.names[i], axis, arrays[i].shape[axis]) for i, axis in places]
            if len({size for _, _, size in sizes}) > 1:
                got = ", ".join(f"{name!r} axis {axis} = {size}" for name, axis, size in sizes)
                raise InputValidationError(
                    f"dimension {dim!r} must have one size across the inputs of model "
                    f"{self.info.name!r}, got {got}")

    def _from_mapping(self, x: Mapping[str, Any]) -> tuple[np.ndarray, ...]:
        keys = set(x)
        if keys != self._name_set:
            missing = [n for n in self.names if n not in keys]
            unknown = sorted(map(str, keys - self._name_set))
            # (names are the caller's: a few, each cut short, not a 4 MiB name quoted whole)
            extra = [n if len(n) <= 60 else n[:60] + "…" for n in unknown[:5]]
            if len(unknown) > 5:
                extra.append(f"... ({len(unknown) - 5:,} more)")
            parts = []
            if missing:
                parts.append(f"missing {', '.join(map(repr, missing))}")
            if extra:
                parts.append(f"unknown {', '.join(map(repr, extra))}")
            raise InputValidationError(
                f"model {self.info.name!r} expects inputs {', '.join(map(repr, self.names))}; "
                f"{' and '.join(parts)}")
        out = []
        for spec in self.specs:
            a = x[spec.name]
            if not isinstance(a, np.ndarray):
                raise InputValidationError(
                    f"input {spec.name!r} must be a numpy array of {spec.describe()}, got "
                    f"{type(a).__name__}; convert with np.asarray(value, dtype=np.{spec.dtype})")
            out.append(a)
        return tuple(out)

    def _fail(self, i: int, a: np.ndarray, why: str = "") -> InputValidationError:
        spec = self.specs[i]
        return InputValidationError(
            f"input {spec.name!r} expects {spec.describe()}, got {describe_array(a)}"
            + (f" ({why})" if why else ""))

    def _check_rows(self, arrays: tuple[np.ndarray, ...]) -> int:
        rows = -1
        for i, a in enumerate(arrays):
            if a.dtype != self.dtypes[i]:   # (float64 is what np.random.rand gives: said how)
                want = self.dtypes[i]
                raise self._fail(i, a, (f"convert it with .astype("
                                        f"{'bool' if want.kind == 'b' else f'np.{want}'})")
                                 if a.dtype.kind in "biuf" and want.kind in "biuf" else "")
            tail = self.tails[i]
            shape = a.shape
            if len(shape) != len(tail) + 1:
                raise self._fail(i, a, f"rank {len(shape)}, expected rank {len(tail) + 1} "
                                       "with rows on the leading axis")
            for got, want in zip(shape[1:], tail):
                if want is not None and got != want:
                    raise self._fail(i, a)
            if rows < 0:
                rows = shape[0]
            elif shape[0] != rows:
                raise InputValidationError(
                    f"all inputs must have the same number of rows: {self.names[0]!r} has "
                    f"{rows}, {self.names[i]!r} has {shape[0]}")
        if rows == 0:
            raise InputValidationError("the request has 0 rows; send at least one row")
        return rows

    def _check_exact(self, arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        for i, a in enumerate(arrays):
            want = self.exact_shapes[i]
            if a.dtype != self.dtypes[i] or len(a.shape) != len(want) or any(
                    w is not None and g != w for g, w in zip(a.shape, want)):
                raise self._fail(i, a, f"model {self.info.name!r} is not batchable: "
                                       f"{self.info.batch_reason}")
        return arrays
