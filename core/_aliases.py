"""Module paths from before ``core/`` became layered packages, kept working for notebooks,
scripts and code outside this repository (``from core.experiments import sweep``,
``from core import charts``): each old path is the module or package that holds its names
now. New code imports from the packages (docs/architecture.md).

Example:
    >>> import core.loadgen, core.lab
    >>> core.loadgen is core.lab
    True
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import Any

__all__ = ["OLD_PATHS", "install"]

#: old module path -> where its names are now
OLD_PATHS: dict[str, str] = {
    "core.abstats": "core.ab.statistics",
    "core.adaptive": "core.policies.estimators",
    "core.admission": "core.batching.admission",
    "core.batcher": "core.batching",
    "core.charts": "core.ui.charts",
    "core.control": "core.serving.control",
    "core.demo_models": "core.models",
    "core.executor": "core.batching.executor",
    "core.experiments": "core.lab",
    "core.fmt": "core.ui.fmt",
    "core.jobs": "core.lab",
    "core.launcher": "core.serving.launcher",
    "core.loadgen": "core.lab",
    "core.memory": "core.models.memory",
    "core.oip": "core.protocol.oip",
    "core.probe": "core.models.probe",
    "core.process": "core.serving.tuning",
    "core.prom": "core.serving.prom",
    "core.registry": "core.engine.registry",
    "core.repository": "core.serving.repository",
    "core.router": "core.ab",
    "core.settle": "core.batching.settle",
    "core.supervisor": "core.batching.supervisor",
    "core.trace": "core.metrics.trace",
    "core.traffic": "core.lab.traffic",
    "core.validation": "core.models.validation",
    "core.warmup": "core.engine.warmup",
}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old path as the module that holds its names now."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname in OLD_PATHS:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: Any) -> ModuleType:
        return importlib.import_module(OLD_PATHS[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        pass  # already imported under its own name


def install() -> None:
    """Make the old paths importable (once per process)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
