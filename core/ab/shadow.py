"""Shadow mode's comparison: B's outputs beside A's on the same requests."""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

__all__ = ["ShadowStats", "matched_outputs", "pair_names"]


def _kind(v: Any) -> str | None:
    """'int' (labels, classes, flags), 'float', or None (not a tensor)."""
    if not isinstance(v, np.ndarray):
        return None
    return "int" if v.dtype.kind in "iub" else "float" if v.dtype.kind in "fc" else None


def _matched(a_out: dict[str, Any], b_out: dict[str, Any]
             ) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(A's name, B's name, A's value, B's value) of each pair :func:`matched_outputs`
    compares."""
    out = []
    b_items = list(b_out.items())
    for i, (name, av) in enumerate(a_out.items()):
        b_name = name if name in b_out else b_items[i][0] if i < len(b_items) else None
        bv = b_out.get(b_name) if b_name is not None else None
        if _kind(av) is None or _kind(av) != _kind(bv) or av.shape != bv.shape:
            continue
        out.append((name, b_name, av, bv))
    return out


def matched_outputs(a_out: dict[str, Any], b_out: dict[str, Any]
                    ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Pairs of A's and B's outputs that mean the same thing: the same name, else the same
    position with the same kind (int/float) and shape (converted classifiers name their
    labels ``label`` or ``output_label``). Named by A's output."""
    return [(name, av, bv) for name, _, av, bv in _matched(a_out, b_out)]


def pair_names(a_out: dict[str, Any], b_out: dict[str, Any]) -> dict[str, str]:
    """A's output -> the B output :func:`matched_outputs` compares it with (only those: an
    output of another shape was named a pair, and nothing compared; an adversary)."""
    return {name: b_name for name, b_name, _, _ in _matched(a_out, b_out)}


def _max_abs_diff(av: np.ndarray, bv: np.ndarray) -> float:
    """The largest |A - B| of two outputs: NaN beside NaN (or an infinity beside the same
    one) is no difference, NaN or an infinity beside anything else an infinite one
    (``nanmax`` left it out: B answering NaN everywhere read as identical to A)."""
    wide = np.complex128 if "c" in (av.dtype.kind, bv.dtype.kind) else np.float64
    a, b = np.atleast_1d(av.astype(wide)), np.atleast_1d(np.asarray(bv).astype(wide))
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(a - b)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    d[same] = 0.0
    d[np.isnan(d)] = np.inf
    return float(d.max())


class ShadowStats:
    """How B's outputs compare with A's on the same requests (shadow mode)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.compared = 0
        self.label_rows = 0
        self.label_agree = 0
        self.max_abs_diff: dict[str, float] = {}
        self.b_failed = 0
        #: Copies whose outputs had nothing to compare with A's (no output of the same
        #: name, or at the same position of the same kind and shape): not "compared".
        self.uncomparable = 0
        self.pairs: dict[str, str] = {}  # A's output -> the B output compared with it
        #: Per output, the requests on which one arm answered NaN or an infinity where the
        #: other did not (their difference is counted as infinite).
        self.nonfinite: dict[str, int] = {}

    def compare(self, a_out: dict[str, Any], b_out: dict[str, Any]) -> None:
        agree = labels = 0
        diffs: dict[str, float] = {}
        matched = _matched(a_out, b_out)
        if not matched:
            with self._lock:
                self.uncomparable += 1
            return
        pairs = {name: b_name for name, b_name, _, _ in matched}
        for name, _, av, bv in matched:
            if av.dtype.kind in "iub":  # labels, classes, flags: agreement per row
                same = ((av == bv).reshape(len(av), -1).all(axis=1) if av.ndim
                        else np.array([av == bv]))
                agree += int(same.sum())
                labels += len(same)
            elif av.size:
                diffs[name] = _max_abs_diff(av, bv)
        with self._lock:
            self.compared += 1
            self.pairs.update(pairs)
            self.label_agree += agree
            self.label_rows += labels
            for name, d in diffs.items():
                self.max_abs_diff[name] = max(self.max_abs_diff.get(name, 0.0), d)
                if d == math.inf:
                    self.nonfinite[name] = self.nonfinite.get(name, 0) + 1

    def failed(self) -> None:
        with self._lock:
            self.b_failed += 1

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"compared_requests": self.compared,
                    "label_agreement": self.label_agree / self.label_rows
                    if self.label_rows else None,
                    "max_abs_diff": dict(self.max_abs_diff), "b_failed": self.b_failed,
                    "pairs": dict(self.pairs), "nonfinite": dict(self.nonfinite),
                    "uncomparable": self.uncomparable}
