"""Release policies: when does the forming batch leave the queue?

A policy is a small object behind one interface (:class:`ReleasePolicy`); the collector
asks it, under the queue's lock, whether to release now or how long to wait before asking
again. Each policy is one module in this package that registers itself with
:func:`register`; adding a policy means adding a module here (it is imported below, and
then selectable everywhere: ``BatchConfig(policy=...)``, ``engine.configure``, the
Batching page, sweeps).

Example:
    >>> make_policy("deadline").decide(view, max_rows=8, max_wait_s=0.010, now=1.004)
    (None, 0.006...)
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import PolicyView, ReleasePolicy, register, registered, unregister
from .estimators import (MAX_SLOWDOWN, CostEstimator, RateEstimator, adaptive_decision,
                         choose_within_slo)

__all__ = ["ReleasePolicy", "PolicyView", "register", "registered", "make_policy", "POLICIES",
           "policy_label", "policy_short_label", "uses_slo", "unregister",
           "CostEstimator", "RateEstimator", "adaptive_decision", "choose_within_slo",
           "MAX_SLOWDOWN"]

# Import every module of this package so each policy registers itself.
for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("base", "estimators"):
        importlib.import_module(f"{__name__}.{_mod.name}")

#: Registered policy names, in rank order (the default first).
POLICIES: tuple[str, ...] = tuple(registered())


def policy_label(name: str) -> str:
    """How menus show policy ``name`` (its ``label``, else the name)."""
    cls = registered().get(name)
    return (cls.label or cls.name) if cls is not None else name


def policy_short_label(name: str) -> str:
    """Policy ``name`` as a short button shows it: its label without the parenthesis
    ("fixed window", as the Batching page's menu names it, not ``fixed_window``)."""
    return policy_label(name).split(" (")[0]


def uses_slo(name: str) -> bool:
    """Whether ``latency_slo_ms`` means something to policy ``name``."""
    cls = registered().get(name)
    return bool(cls is not None and cls.uses_slo)


def make_policy(name: str) -> ReleasePolicy:
    """A fresh policy object for ``name`` (one of :data:`POLICIES`)."""
    return registered()[name]()
