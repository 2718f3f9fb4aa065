"""What a caller gets back: a :class:`Prediction`, its request's outputs and how it was served.

Example:
    >>> pred = engine.predict("mlp", x)
    >>> pred.outputs["logits"].shape, pred.batch_rows, pred.release_reason
    ((1, 10), 17, 'deadline')
"""

from __future__ import annotations

from typing import Any

__all__ = ["Prediction"]


class Prediction:
    """What happened to one request: its outputs and how it was served.

    ``outputs`` maps each output name to this request's rows (views into the batch's
    output arrays; lists for non-tensor outputs). Times are in milliseconds: ``queue_ms``
    from submit until its batch started running, ``compute_ms`` the batch's run time,
    ``total_ms`` from submit until the request was settled (its result handed over).

    Example:
        >>> pred = engine.predict("mlp", x)
        >>> pred.outputs["logits"].shape, pred.batch_rows, pred.release_reason
        ((1, 10), 17, 'deadline')
    """

    __slots__ = ("outputs", "model", "arm", "batch_id", "batch_rows", "release_reason",
                 "queue_ms", "compute_ms", "total_ms", "rows")

    def __init__(self, outputs: dict[str, Any], model: str, batch_id: int, batch_rows: int,
                 release_reason: str, queue_ms: float, compute_ms: float, total_ms: float,
                 rows: int, arm: str | None = None) -> None:
        self.outputs = outputs
        self.model = model
        self.arm = arm
        self.batch_id = batch_id
        self.batch_rows = batch_rows
        self.release_reason = release_reason
        self.queue_ms = queue_ms
        self.compute_ms = compute_ms
        self.total_ms = total_ms
        self.rows = rows

    def __getitem__(self, name: str) -> Any:
        return self.outputs[name]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self) -> str:
        outs = ", ".join(f"{k}: {getattr(v, 'shape', type(v).__name__)}"
                         for k, v in self.outputs.items())
        return (f"Prediction(model={self.model!r}, arm={self.arm!r}, rows={self.rows}, "
                f"batch_id={self.batch_id}, batch_rows={self.batch_rows}, "
                f"release_reason={self.release_reason!r}, queue_ms={self.queue_ms:.3f}, "
                f"compute_ms={self.compute_ms:.3f}, total_ms={self.total_ms:.3f}, "
                f"outputs={{{outs}}})")
