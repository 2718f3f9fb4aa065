"""Real inputs for a model: sample data a person uploads, so traffic, sweeps, warm-up and
shadow comparisons send what the model really sees instead of random numbers.

Accepted files (:func:`read_inputs`):

* ``.npy``: one array, for a model with one input (rows first);
* ``.npz``: arrays named like the model's inputs (or one array for a one-input model);
* ``.csv`` / ``.parquet``: a table for a model with one 2-D input ``[N, C]``: its numeric
  columns are the C features (a file with other columns is refused, naming them; a CSV
  without a header keeps its first row; missing values are sent as NaN, and said:
  :mod:`core.models.tables`);
* ``.json``: perf_analyzer's ``--input-data`` format, ``{"data": [{"INPUT": [...]}, ...]}``
  (values flat or ``{"content": [...], "shape": [...]}``; ``b64`` is not read), one entry
  per request;
* ``.zip``: a folder of images for a model with one image input, with the model's own
  preprocessing declared (``preprocess=``: :mod:`core.models.images`).

Each input is checked against the model: its trailing dimensions must be the model's fixed
ones, its values must fit the model's datatype (no NaN or infinities made by an overflow;
for an integer input, whole numbers within its range: nothing changes when cast; a CSV is
read as 64-bit integers for it, as float64 otherwise), and the whole set is bounded
(:data:`MAX_INPUT_BYTES`). For a model that batches, a sample is one row; for a model of
one fixed shape, a sample is one whole input.

Example:
    >>> samples = read_inputs(open("iris.csv", "rb").read(), "iris.csv", info)
    >>> samples.describe(), samples.draw(rows=4, seed=0).shape
    ('real: iris.csv (150 samples)', (4, 4))
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import PurePath
from typing import Any

import numpy as np

from core.errors import InputValidationError
from .types import ModelInfo
from .sampling import check_rows, check_seed, frozen, ids_outside
from .tables import read_table

__all__ = ["SampleInputs", "read_inputs", "refit", "MAX_INPUT_BYTES", "INPUT_SUFFIXES"]

#: The largest set of sample inputs kept for one model (bytes, as arrays).
MAX_INPUT_BYTES = 64 * 2**20
#: The file kinds :func:`read_inputs` reads.
INPUT_SUFFIXES = (".npy", ".npz", ".csv", ".parquet", ".json", ".zip")


class SampleInputs:
    """A model's real inputs: one array per input, samples along the first axis."""

    def __init__(self, arrays: dict[str, np.ndarray], source: str, exact: bool) -> None:
        for a in arrays.values():   # (a whole input drawn is a view: read-only all through,
            a.flags.writeable = False   # submit takes it as it is, see validation.owned)
        self.arrays = arrays
        self.source = source
        self.exact = exact  # a sample is a whole input (a model of one fixed shape)
        self.count = len(next(iter(arrays.values())))

    def describe(self) -> str:
        return f"real: {self.source} ({self.count} sample{'s' if self.count != 1 else ''})"

    def draw(self, rows: int = 1, seed: int | None = 0) -> np.ndarray | dict[str, np.ndarray]:
        """``rows`` samples (rows of every input together), in a seeded random order; all of
        them in their own order when ``rows`` is the count and ``seed`` is None. A model of
        one fixed shape gets one whole input."""
        check_rows(rows)
        check_seed(seed)
        if self.exact:
            k = int(np.random.default_rng(seed).integers(self.count))
            out = {n: a[k, ...] for n, a in self.arrays.items()}   # (a scalar input: 0-d)
        else:
            if seed is None and rows == self.count:
                idx = np.arange(self.count)
            else:
                rng = np.random.default_rng(seed)
                idx = rng.choice(self.count, size=rows, replace=rows > self.count)
            out = {n: a[idx] for n, a in self.arrays.items()}
        return frozen(out)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def digest(self) -> str:
        """A content hash (arrays and label): what a state folder compares."""
        h = hashlib.sha256(self.source.encode())
        for name in sorted(self.arrays):
            a = self.arrays[name]
            h.update(f"{name}{a.dtype.str}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def to_npz(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **self.arrays)
        return buf.getvalue()


_refuse = InputValidationError


def _fit(name: str, values: Any, spec: Any, exact: bool, where: str) -> np.ndarray:
    """``values`` as samples of input ``spec``: cast to its dtype, trailing dims checked."""
    dtype = np.dtype(spec.dtype) if spec.dtype is not None else None
    if dtype is None or dtype.kind not in "biuf":
        raise _refuse(f"{where}: input {name!r} is {spec.dtype}; real inputs are read for "
                      "numeric inputs only")
    src = np.asarray(values)
    if src.dtype.kind == "c":   # (a cast drops the imaginary parts)
        raise _refuse(f"{where}: input {name!r} is {dtype}; the file holds complex numbers")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            arr = src.astype(dtype)
    except (TypeError, ValueError, OverflowError) as err:
        raise _refuse(f"{where}: input {name!r} is not numbers of {dtype} ({err})") from None
    if arr.ndim == 0:
        raise _refuse(f"{where}: input {name!r} is a single number; give samples (rows)")
    if dtype.kind == "f" and not np.isfinite(arr).all() and np.isfinite(
            src.astype(np.float64, copy=False)).all():
        raise _refuse(f"{where}: input {name!r} has values beyond {dtype}'s range")
    if dtype.kind in "iub" and src.dtype.kind in "biuf" and src.dtype != dtype:
        changed = src.reshape(-1) != arr.reshape(-1)
        if n := int(np.count_nonzero(changed)):
            first = src.reshape(-1)[int(changed.argmax())].item()
            raise _refuse(f"{where}: input {name!r} is {dtype}, and {n:,} value"
                          f"{'s' * (n != 1)} (e.g. {first!r}"
                          f"{': a missing value' if first != first else ''}) would change "
                          "cast to it: give " + ("0 or 1" if dtype.kind == "b" else
                                                 "whole numbers within its range"))
    if bad := ids_outside(arr, spec):      # (ids past an embedding's table fail every run)
        raise _refuse(f"{where}: input {name!r} {bad}")
    want = tuple(spec.shape or ())
    fixed = want if exact else want[1:]
    got = arr.shape[1:]
    if exact and arr.shape == tuple(d if isinstance(d, int) else -1 for d in want):
        arr = arr[None]
        got = arr.shape[1:]
    if len(got) != len(fixed) or any(isinstance(d, int) and d != g for d, g in zip(fixed, got)):
        shown = ["?" if not isinstance(d, int) else d for d in fixed]
        raise _refuse(f"{where}: input {name!r} gives samples of shape {list(got)}, the model "
                      f"takes {shown} per {'request' if exact else 'row'}")
    return np.ascontiguousarray(arr)


#: What a file may take decoded (numbers as float64, JSON as Python values), before the cut.
MAX_DECODED_BYTES = 2 * MAX_INPUT_BYTES


def _too_big(where: str, what: str, size: float) -> InputValidationError:
    return _refuse(f"{where}: {what} would take ~{size / 2**20:,.0f} MiB to read, over the "
                   f"{MAX_DECODED_BYTES // 2**20} MiB read for sample inputs (and "
                   f"{MAX_INPUT_BYTES // 2**20} MiB kept); use fewer samples, or an .npy/.npz "
                   "file, which is read as it is stored")


def _perf_analyzer(raw: bytes, info: ModelInfo, where: str) -> dict[str, list[Any]]:
    # ~40 bytes a number, ~80 a list parsed (14 MiB of empty lists took 408 MiB): counted
    parsed = 40 * (raw.count(b",") + raw.count(b":")) + 80 * raw.count(b"[") \
        + 240 * raw.count(b"{")
    if parsed > MAX_DECODED_BYTES:
        raise _too_big(where, "its values parsed", parsed)
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise _refuse(f"{where} is not JSON ({err}); expected perf_analyzer's input data "
                      '{"data": [{"INPUT": [...]}, ...]}') from None
    entries = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise _refuse(f"{where}: expected perf_analyzer's input data, an object with a "
                      '"data" list of requests ({"data": [{"INPUT": [...]}, ...]})')
    by_name: dict[str, list[Any]] = {s.name: [] for s in info.inputs}
    for k, entry in enumerate(entries):
        if isinstance(entry, list):  # one list per request for each input? (streams): no
            raise _refuse(f"{where}: request {k} is a list; sequence streams are not read")
        if not isinstance(entry, dict):
            raise _refuse(f"{where}: request {k} is not an object of inputs")
        for spec in info.inputs:
            if spec.name not in entry:
                raise _refuse(f"{where}: request {k} has no input {spec.name!r} (it has "
                              f"{', '.join(map(str, entry))})")
            value = entry[spec.name]
            if isinstance(value, dict) and "content" in value and "shape" in value:
                try:
                    arr = np.asarray(value["content"]).reshape(value["shape"])
                except (ValueError, TypeError) as err:
                    raise _refuse(f"{where}: request {k}, input {spec.name!r}: its content "
                                  f"does not fill its shape ({err})") from None
                by_name[spec.name].append(arr)
                continue
            if isinstance(value, dict):
                if "b64" in value:
                    raise _refuse(f"{where}: request {k}: b64 values are not read; give "
                                  "them as numbers")
                arr = np.asarray(value.get("content"))  # content with its shape: above
            else:
                arr = np.asarray(value)
            by_name[spec.name].append(arr)
    return by_name


def read_inputs(data: bytes, filename: str, info: ModelInfo,
                preprocess: Any = None) -> SampleInputs:
    """Sample inputs for ``info`` from a file's bytes (the kind from ``filename``);
    ``preprocess`` declares how a ``.zip`` of images becomes the model's input."""
    suffix = PurePath(filename).suffix.lower()
    where = PurePath(filename).name
    if preprocess is not None and suffix != ".zip":
        raise _refuse(f"{where}: preprocess= is for a .zip of images; a {suffix or 'file'} "
                      "holds the model's inputs as they are")
    exact = info.batch_mode == "exact"
    specs = {s.name: s for s in info.inputs}
    if not specs:
        raise _refuse(f"model {info.name!r} declares no inputs: its inputs cannot be checked")
    one = next(iter(specs)) if len(specs) == 1 else None
    columns: dict[str, Any] = {}
    notes: list[str] = []   # how a table was read, said with the source
    if suffix == ".zip":
        from .images import read_images
        columns, where = read_images(data, filename, info, preprocess, MAX_INPUT_BYTES)
    elif suffix == ".npy":
        if one is None:
            raise _refuse(f"{where}: an .npy file holds one array, and model {info.name!r} "
                          f"has {len(specs)} inputs; use an .npz with arrays named "
                          f"{', '.join(specs)}")
        columns = {one: _load_npy(data, where)}
    elif suffix == ".npz":
        _check_unzipped(data, where)  # a compressed .npz can unpack to far more than it is
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                for member in z.zip.infolist():   # (each as it declares, before any is read)
                    with z.zip.open(member) as f:
                        _check_npy_header(f, member.file_size, f"{where}: {member.filename}")
                found = {k: z[k] for k in z.files}
        except _refuse:
            raise
        except (ValueError, OSError) as err:
            raise _refuse(f"{where} is not a readable .npz ({err})") from None
        if one is not None and len(found) == 1:
            columns = {one: next(iter(found.values()))}
        else:
            missing = [n for n in specs if n not in found]
            if missing:
                raise _refuse(f"{where} has arrays {', '.join(found) or 'none'}; model "
                              f"{info.name!r} needs {', '.join(specs)}")
            columns = {n: found[n] for n in specs}
    elif suffix in (".csv", ".parquet"):
        name = _table_input(info, where)
        _check_table_size(data, suffix, where)
        columns[name], notes = read_table(data, suffix, info, where)
    elif suffix == ".json":
        requests = _perf_analyzer(data, info, where)
        try:
            if exact:  # one whole input per request
                columns = {n: np.stack([_whole(a, specs[n], where) for a in v])
                           for n, v in requests.items()}
            else:  # each request's rows, one after the other
                columns = {n: np.concatenate([_rows(a, specs[n], where) for a in v])
                           for n, v in requests.items()}
        except ValueError as err:  # requests of different shapes, a shape that does not fit
            raise _refuse(f"{where}: the requests' values do not fit together ({err}); each "
                          "request must give every input in the model's shape") from None
    else:
        raise _refuse(f"{where}: inputs are read from {', '.join(INPUT_SUFFIXES)} files")
    arrays = {n: _fit(n, v, specs[n], exact, where) for n, v in columns.items()}
    counts = {n: len(a) for n, a in arrays.items()}
    if len(set(counts.values())) != 1:
        raise _refuse(f"{where}: the inputs have different numbers of samples ({counts})")
    # A file's own arrays of another type are cast (whole numbers for an integer input, checked
    # above): said with the source, as a table's or JSON's reading as numbers is not.
    cast = sorted({f"{v.dtype} to {arrays[n].dtype}" for n, v in columns.items()
                   if suffix in (".npy", ".npz") and v.dtype != arrays[n].dtype})
    notes += [f"cast {', '.join(cast)}"] if cast else []
    samples = SampleInputs(arrays, "; ".join([where, *notes]), exact)
    if samples.count == 0:
        raise _refuse(f"{where} holds no samples")
    if samples.nbytes > MAX_INPUT_BYTES:
        raise _refuse(f"{where}: {samples.nbytes / 2**20:.1f} MiB of inputs, over the "
                      f"{MAX_INPUT_BYTES // 2**20} MiB kept per model; use fewer samples")
    return samples


def _check_unzipped(data: bytes, where: str) -> None:
    """Refuse an .npz whose arrays would unpack past :data:`MAX_INPUT_BYTES`, before any
    is read."""
    import zipfile
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            size = sum(i.file_size for i in z.infolist())
    except zipfile.BadZipFile as err:
        raise _refuse(f"{where} is not a readable .npz ({err})") from None
    if size > MAX_INPUT_BYTES + 2**20:
        raise _refuse(f"{where} unpacks to {size / 2**20:.1f} MiB, over the "
                      f"{MAX_INPUT_BYTES // 2**20} MiB kept per model; use fewer samples")


def _fixed(spec: Any) -> tuple[Any, ...]:
    return tuple(spec.shape or ())[1:]


def _rows(a: np.ndarray, spec: Any, where: str) -> np.ndarray:
    """One perf_analyzer request's value as rows of input ``spec`` (a model that batches):
    with its batch axis, without it (one row), or flat (the model's fixed row shape)."""
    rank = len(spec.shape or ())
    if a.ndim == rank:
        return a
    if a.ndim == rank - 1:
        return a[None]
    fixed = _fixed(spec)
    if a.ndim == 1 and all(isinstance(d, int) for d in fixed):
        size = int(np.prod(fixed)) if fixed else 1
        if size and a.size % size == 0:
            return a.reshape((-1,) + fixed)
    raise _refuse(f"{where}: a value of input {spec.name!r} has shape {list(a.shape)}; give "
                  "it with its shape (\"content\" and \"shape\") or as the model's rows")


def _whole(a: np.ndarray, spec: Any, where: str) -> np.ndarray:
    """One perf_analyzer request's value as the whole fixed-shape input ``spec``."""
    shape = tuple(spec.shape or ())
    if all(isinstance(d, int) for d in shape) and a.size == int(np.prod(shape)):
        return a.reshape(shape)
    return a


def _check_npy_header(f: Any, size: int, where: str) -> None:
    """The .npy in ``f`` (``size`` bytes) holds what its header declares: a header that
    declared 1 PiB was a 500 "MemoryError" from numpy's allocation (in an .npz too)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else \
            fmt.read_array_header_2_0
        shape, _, dtype = read_header(f, max_header_size=10_000)
        need, held = math.prod(shape) * dtype.itemsize, size - f.tell()
    except (ValueError, OSError, TypeError) as err:
        raise _refuse(f"{where} is not a readable .npy ({err})") from None
    if need > held:
        raise _refuse(f"{where}: its header declares an array of shape {list(shape)[:8]} "
                      f"{dtype} ({need:,} bytes) but the file holds {held:,} bytes after it; "
                      "save the array with numpy.save")


def _load_npy(data: bytes, where: str) -> np.ndarray:
    _check_npy_header(io.BytesIO(data), len(data), where)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as err:
        raise _refuse(f"{where} is not a readable .npy ({err})") from None


def _table_input(info: ModelInfo, where: str) -> str:
    if len(info.inputs) != 1 or len(info.inputs[0].shape or ()) != 2:
        raise _refuse(f"{where}: a table feeds a model with one 2-D input [N, features]; "
                      f"model {info.name!r} takes "
                      + "; ".join(f"{s.name} {list(s.shape or ())}" for s in info.inputs)
                      + " (use .npz)")
    return info.inputs[0].name


def _check_table_size(data: bytes, suffix: str, where: str) -> None:
    """Refuse a table whose cells would decode past :data:`MAX_DECODED_BYTES`, before it
    is decoded (a 0.9 MiB Parquet file of zeros decoded to 5 GB): a Parquet file's
    footer says its rows, columns and uncompressed size; a CSV's lines and first line's
    commas are counted."""
    if suffix == ".csv":
        rows = data.count(b"\n") + 1
        cols = data[:data.find(b"\n") % (len(data) + 1)].count(b",") + 1  # (-1: all)
        size = 8.0 * rows * cols
    else:
        import pyarrow.parquet as pq
        try:
            meta = pq.ParquetFile(io.BytesIO(data)).metadata
        except Exception as err:  # noqa: BLE001 - pyarrow raises several kinds
            raise _refuse(f"{where} is not a readable parquet table ({err})") from None
        stored = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        size = max(8.0 * meta.num_rows * max(1, meta.num_columns), float(stored))
        rows, cols = meta.num_rows, meta.num_columns
    if size > MAX_DECODED_BYTES:
        raise _too_big(where, f"{rows:,} rows of {cols:,} columns", size)


def refit(samples: SampleInputs, info: ModelInfo) -> SampleInputs | None:
    """``samples`` for model ``info`` (a new version after a hot swap), cast to its input
    types; None when they no longer fit it."""
    specs = {s.name: s for s in info.inputs}
    if set(specs) != set(samples.arrays) or samples.exact != (info.batch_mode == "exact"):
        return None
    try:
        arrays = {name: _fit(name, arr, specs[name], samples.exact, samples.source)
                  for name, arr in samples.arrays.items()}
    except InputValidationError:
        return None
    return SampleInputs(arrays, samples.source, samples.exact)
