"""What a server keeps across a restart: the engine's side of :mod:`core.serving.state`.

Example:
    >>> engine.persistent_state()["models"][0]["batch"]
    BatchConfig(max_batch_size=32, ...)
"""

from __future__ import annotations

from typing import Any

from core.ab.segments import kept_state, restore_segments
from core.models import DEMO_MODELS

__all__ = ["StateMethods"]


class StateMethods:
    """Mixed into the engine: reads its namespace (``self._ns``), settings and real inputs
    (``self._inputs``)."""

    _inputs: dict[str, Any]

    def persistent_state(self, final: bool = False) -> dict[str, Any]:
        """What a server keeps across a restart (:mod:`core.serving.state`): local models
        (name, content hash, batch and session settings, provenance), remote models (how
        they were added, credentials included: this stays in the process) and A/B
        experiments (with their ended segments' reports), each list in the order they were
        made. No model bytes: those are :meth:`model_bytes`. ``final`` (a graceful stop):
        each experiment's segment under way too, as of now."""
        models, remotes = [], []
        for name in self.model_names():
            entry = self._ns.entry(name)
            batch = self.batch_config(name)
            if entry.remote is not None:
                recipe = getattr(entry.remote, "recipe", None)
                if recipe is not None:
                    remotes.append({"name": name, "batch": batch, **recipe})
                continue
            info = entry.info
            if str(info.source).startswith("replay of "):   # (a replay's private copy
                continue   # came back after a crash as a model for good; an adversary)
            real = self._inputs.get(name)
            models.append({"name": name, "sha256": info.sha256, "batch": batch,
                           "session": self.session_config(name), "source": info.source,
                           "description": info.description,
                           "inputs": None if real is None else
                           {"label": real.source, "sha256": real.digest()},
                           **({} if entry.check_rows else {"check_rows": False})})
        experiments = []
        for name in self.ab_experiments():
            exp = self._ns.experiment(name)
            experiments.append({"name": name, "a": exp.a, "b": exp.b,
                                "b_share": exp.b_share, "mode": exp.mode, "seed": exp.seed,
                                "bandit_slo_ms": exp.bandit.slo_ms,
                                "bandit_floor": exp.bandit.floor,
                                **kept_state(exp, current=final),
                                **({"stopped": True} if final else {})})
        # built-in demo models unloaded: an engine makes them at start, so a restart must
        # unload them again (they came back, unreported)
        names = set(self.model_names())
        gone = [n for n in DEMO_MODELS if n not in names] if self.config.demo_models else []
        return {"models": models, "remotes": remotes, "experiments": experiments,
                "demos_unloaded": gone}

    def restore_ab_segments(self, name: str, saved: dict[str, Any]) -> None:
        """Put experiment ``name``'s segments kept by :meth:`persistent_state` back (a
        server's restart: :func:`core.ab.segments.restore_segments`)."""
        restore_segments(self._ns.experiment(name), saved)
