"""The interface every release policy implements, and the registry."""

from __future__ import annotations

from typing import Protocol

__all__ = ["PolicyView", "ReleasePolicy", "register", "registered", "unregister"]


class PolicyView(Protocol):
    """What a policy may read about the queue (the admission queue implements it)."""

    queued_rows: int      # rows waiting (live requests only)
    arrived_rows: int     # rows ever admitted (for arrival-rate estimates)
    oldest_t: float       # submit time of the oldest waiting request
    newest_t: float       # submit time of the newest waiting request
    window_start: float   # when the last batch left (for fixed windows)
    cost: object          # core.policies.estimators.CostEstimator: learned t(n) = a + b*n
    rate: object          # core.policies.estimators.RateEstimator: learned arrival rate


class ReleasePolicy:
    """Decides when the forming batch leaves the queue.

    ``decide`` returns ``(reason, 0.0)`` to release now (reason is recorded per batch:
    ``full``, ``deadline``, ``adaptive``...) or ``(None, seconds)`` to look again after at
    most that long (an arrival wakes the collector earlier when it fills the batch).
    ``shed_after_s`` may return how long a request may have waited and still be worth
    running in a batch of ``rows`` (``None``: never shed).

    Subclasses set ``name`` and ``rank`` (order in menus) and are registered with
    :func:`register`.
    """

    name = ""
    rank = 100
    #: How menus show it (default: the name).
    label = ""
    #: True if the model's ``latency_slo_ms`` means something to this policy (it may be
    #: set only for such policies).
    uses_slo = False
    #: True if the executor should report each batch's outcome (:meth:`observe_batch`).
    observes_batches = False

    def batch_rows(self, max_rows: int) -> int:
        """The most rows the next batch may take (a policy may cap it below the model's
        ``max_batch_size``, as AIMD does)."""
        return max_rows

    def fewest_batch_rows(self, max_rows: int) -> int:
        """The fewest rows :meth:`batch_rows` may ever give under this configuration
        (admission's bound on the longest wait it could predict assumes batches this
        small; AIMD's cap can fall to one row)."""
        return self.batch_rows(max_rows)

    def observe_batch(self, rows: int, latency_s: float, slo_ms: float | None,
                      max_rows: int | None = None, full: bool = False) -> None:
        """(If :attr:`observes_batches`.) A batch of ``rows`` was run in ``latency_s``
        (the run alone, as Clipper measures it: queueing is the load's, not the batch
        size's); ``full``: it left because :meth:`batch_rows` rows were queued (its size
        was the cap's doing, not the load's). Called by the runner threads, possibly at once: keep it short and
        thread-safe."""

    def decide(self, view: PolicyView, max_rows: int, max_wait_s: float,
               now: float) -> tuple[str | None, float]:
        raise NotImplementedError

    def shed_after_s(self, view: PolicyView, rows: int, latency_slo_ms: float | None
                     ) -> float | None:
        return None

    def state(self, config: object) -> dict[str, object] | None:
        """What this policy keeps live, for the pages and ``engine.policy_state`` (JSON
        values); ``config`` is the model's :class:`~core.config.BatchConfig`."""
        return None


_REGISTRY: dict[str, type[ReleasePolicy]] = {}


def register(cls: type[ReleasePolicy]) -> type[ReleasePolicy]:
    """Class decorator: make ``cls`` selectable by its ``name``."""
    if not cls.name or not cls.name.isidentifier():
        raise ValueError(f"a release policy needs an identifier as its name, got {cls.name!r}")
    old = _REGISTRY.get(cls.name)
    if old is not None and old is not cls and (old.__module__, old.__qualname__) != (
            cls.__module__, cls.__qualname__):   # the same class defined again: a re-run cell
        raise ValueError(f"two release policies are named {cls.name!r} "
                         f"({old.__module__}.{old.__qualname__} and "
                         f"{cls.__module__}.{cls.__qualname__}); rename one")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Forget policy ``name`` (models already using it keep their policy object)."""
    _REGISTRY.pop(name, None)


def registered() -> dict[str, type[ReleasePolicy]]:
    """Name -> policy class, in rank order."""
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].rank, kv[0])))
