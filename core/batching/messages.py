"""What a refused request is told (the admission queue's errors, worded in one place)."""

from __future__ import annotations

__all__ = ["full_message", "bytes_full_message"]


def full_message(model: str, depth: int, max_queue: int, normal_class: bool = False) -> str:
    """A request refused because the model's queue holds ``max_queue`` requests (for the
    normal class, once high-priority requests are in use: four fifths of it)."""
    if normal_class:
        return (f"model {model!r} is overloaded: its queue holds {depth} requests, and the "
                f"last fifth of max_queue={max_queue} is kept for high-priority requests "
                "(priority=1); retry later, send less traffic, or raise max_queue with "
                "engine.configure()")
    return (f"model {model!r} is overloaded: its queue holds {depth} requests "
            f"(max_queue={max_queue}); retry later, send less traffic, or raise max_queue / "
            "max_batch_size with engine.configure()")


def bytes_full_message(model: str, queued: int, nbytes: int, limit: int,
                       normal_class: bool = False) -> str:
    """A request refused because its inputs would take the queue's bytes past ``limit``
    (for the normal class, once high-priority requests are in use: four fifths of it)."""
    kept = ("; the last fifth of it is kept for high-priority requests (priority=1)"
            if normal_class else "")
    return (f"model {model!r} is overloaded: its queue holds {queued / 2**20:.1f} MiB of "
            f"inputs, and this request's {nbytes / 2**20:.1f} MiB would pass the "
            f"{limit / 2**20:.0f} MiB queued per model (an eighth of the memory budget)"
            f"{kept}; retry later or send smaller requests")
