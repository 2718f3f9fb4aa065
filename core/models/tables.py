"""A table (``.csv``, ``.parquet``) as a model's real inputs: its numeric columns are the
features of the model's one 2-D input ``[N, C]``.

How it was read is said, never silent (:func:`read_table`'s notes, shown with the inputs'
source): a CSV whose first row is all numbers has no header, so that row is a sample
(pandas' own names 0, 1, 2, ... are read as a header, and said); empty cells (and a
Parquet file's nulls) are sent as NaN.

Example:
    >>> x, notes = read_table(b"1,2,3\\n4,5,,\\n", ".csv", info, "f.csv")
    >>> x.shape, notes
    ((2, 3), ['no header row, so its first row is a sample', '1 missing value sent as NaN'])
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from core.errors import InputValidationError
from .types import ModelInfo

__all__ = ["read_table"]


def _first_row(data: bytes) -> str:
    """What a CSV's first row is: ``"sample"`` when its cells, read as text, are all numbers
    or empty (at least one a number); ``"numbered"`` when they are 0, 1, 2, ... (the names
    ``DataFrame(array).to_csv(index=False)`` writes: read as a header, and said); else
    ``"header"``. (Read as column names, pandas renames a repeated "0.5" to "0.5.1" and an
    empty one to "Unnamed: 1": not numbers any more.)"""
    import pandas as pd
    cells = [str(c).strip() for c in pd.read_csv(io.BytesIO(data), header=None, nrows=1,
                                                  dtype=str, keep_default_na=False).iloc[0]]
    try:
        numbers = [float(c) for c in cells if c]
    except ValueError:
        return "header"
    if cells == [str(i) for i in range(len(cells))]:
        return "numbered"
    return "sample" if numbers else "header"


def read_table(data: bytes, suffix: str, info: ModelInfo,
               where: str) -> tuple[np.ndarray, list[str]]:
    """A table's feature columns and how it was read (notes); others named from the schema
    or first rows, never decoded whole (a column of short strings takes ~60 bytes a cell:
    ~1 GB from a 50 MB file). The caller has checked the table's decoded size."""
    import pandas as pd
    width = info.inputs[0].shape[1]
    notes: list[str] = []

    def refuse_columns(numeric: list[str], other: list[str]) -> InputValidationError:
        def few(names: list[str]) -> str:   # (a table of 200 columns named them all)
            return str(names[:8])[:-1] + (f", … {len(names) - 8} more]" if len(names) > 8
                                          else "]")
        return InputValidationError(
            f"{where}: the model takes {width} features per row; the table has "
            + (f"{len(other)} column(s) that are not numbers, {few(other)}, and "
               if other else "")
            + f"{len(numeric)} numeric column(s) {few(numeric)}: keep only the "
            "feature columns, in the model's order")
    try:
        if suffix == ".csv":
            # (a first row of numbers is a sample: read as names, it was lost unsaid)
            header = 0
            with contextlib.suppress(ValueError, IndexError, pd.errors.ParserError,
                                     UnicodeDecodeError):
                first = _first_row(data)
                if first == "sample":
                    header = None
                    notes.append("no header row, so its first row is a sample")
                elif first == "numbered":
                    notes.append("its first row, 0, 1, 2..., read as column names")

            def read(**kw: object) -> pd.DataFrame:
                return pd.read_csv(io.BytesIO(data), header=header, **kw)
            frame, spec = None, info.inputs[0].dtype
            if spec is not None and spec.kind in "iu":   # (as float64, ids past 2**53 were
                with contextlib.suppress(ValueError, OverflowError):   # rounded unseen)
                    frame = read(dtype=np.dtype(spec.kind + "8"))
            try:   # (not whole numbers: read as numbers, the checks then say which)
                frame = read(dtype=np.float64) if frame is None else frame
            except ValueError as err:  # not all numbers: which columns, from the first rows
                head = read(nrows=100)
                numeric = list(map(str, head.select_dtypes("number").columns))
                other = [str(c) for c in head.columns if str(c) not in numeric]
                if other:
                    raise refuse_columns(numeric, other) from None
                raise InputValidationError(
                    f"{where}: not every value is a number ({err}); keep only the feature "
                    "columns, numbers in every row") from None
        else:
            import pyarrow.parquet as pq
            import pyarrow.types as pt
            schema = pq.read_schema(io.BytesIO(data))   # (a pandas index is not a column)
            index = {c for c in (schema.pandas_metadata or {}).get("index_columns", [])
                     if isinstance(c, str)}
            numeric = [f.name for f in schema if pt.is_integer(f.type) or pt.is_floating(f.type)]
            other = [f.name for f in schema if f.name not in numeric and f.name not in index]
            if other:
                raise refuse_columns(numeric, other)
            frame = pd.read_parquet(io.BytesIO(data))
    except InputValidationError:
        raise
    except Exception as err:  # noqa: BLE001 - pandas' parsers raise many kinds
        raise InputValidationError(f"{where} is not a readable {suffix[1:]} table "
                                   f"({err})") from None
    numeric_frame = frame.select_dtypes("number")
    other = [str(c) for c in frame.columns if c not in numeric_frame.columns]
    if other or (isinstance(width, int) and numeric_frame.shape[1] != width):
        raise refuse_columns(list(map(str, numeric_frame.columns)), other)
    values = numeric_frame.to_numpy()
    if values.dtype.kind == "f" and (missing := int(np.isnan(values).sum())):
        # (a model may take NaN as "missing"; one that does not answers NaN: said, not guessed)
        notes.append(f"{missing:,} missing value{'s' if missing > 1 else ''} sent as NaN")
    return values, notes
