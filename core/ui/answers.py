"""A prediction's answer as the Models page keeps and shows it: its figures, and each
output's type, shape and non-finite count with at most ``ROWS`` rows of ``COLUMNS`` values.

A 222-byte model answering 20 million floats was drawn whole (a 20M-row table, 8 s of the
dashboard's CPU) and kept in full in the tab's session, +400 MiB a click that stayed after
the tab closed (an adversary): the page keeps what it shows.

Example:
    >>> kept = preview_answer(engine.predict("mlp", engine.sample_input("mlp")))
    >>> kept.outputs["logits"][:2]   # (dtype, shape, words, rows shown)
    (dtype('float32'), (1, 10))
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from core.ui.fmt import nonfinite_words

__all__ = ["preview_answer", "ROWS", "COLUMNS"]

#: The most rows and values a row of an output the page shows (and keeps).
ROWS, COLUMNS = 1000, 20


def preview_answer(pred: Any) -> SimpleNamespace:
    """``pred`` (a Prediction) without its outputs' bulk: its figures as they are, each
    array output as ``(dtype, shape, words, shown)`` (``words`` say its non-finite values
    and what is left out), any other output as it is."""
    outputs = {}
    for name, value in pred.outputs.items():
        if not isinstance(value, np.ndarray):
            outputs[name] = value
            continue
        flat = value.reshape(value.shape[0], -1) if value.ndim > 1 else value.reshape(-1)
        shown = flat[:ROWS, :COLUMNS] if flat.ndim > 1 else flat[:ROWS]
        cut = (f" The first {len(shown):,} of {len(flat):,} rows shown."
               if len(flat) > ROWS else "")
        outputs[name] = (value.dtype, value.shape, nonfinite_words(value) + cut,
                         np.array(shown))   # (a copy: not a view keeping the whole alive)
    fields = {k: getattr(pred, k) for k in ("model", "arm", "rows", "batch_id", "batch_rows",
                                           "release_reason", "queue_ms", "compute_ms",
                                           "total_ms")}
    return SimpleNamespace(**fields, outputs=outputs)
