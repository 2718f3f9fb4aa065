"""What a server keeps across a restart, and what a remote model's server says of it:
the engine's side of :mod:`core.serving.state` and of the statistics extension.

Example:
    >>> engine.persistent_state()["models"][0]["batch"]
    BatchConfig(max_batch_size=32, ...)
"""

from __future__ import annotations

from typing import Any

__all__ = ["StateMethods"]


class StateMethods:
    """Mixed into the engine: reads its namespace (``self._ns``) and settings."""

    def persistent_state(self) -> dict[str, Any]:
        """What a server keeps across a restart (:mod:`core.serving.state`): local models
        (name, content hash, batch and session settings, provenance), remote models (how
        they were added, credentials included: this stays in the process) and A/B
        experiments, each list in the order they were made. No model bytes: those are
        :meth:`model_bytes`."""
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
            models.append({"name": name, "sha256": info.sha256, "batch": batch,
                           "session": self.session_config(name), "source": info.source,
                           "description": info.description})
        experiments = []
        for name in self.ab_experiments():
            exp = self._ns.experiment(name)
            experiments.append({"name": name, "a": exp.a, "b": exp.b,
                                "b_share": exp.b_share, "mode": exp.mode, "seed": exp.seed})
        return {"models": models, "remotes": remotes, "experiments": experiments}

    def server_stats(self, name: str) -> dict[str, Any] | None:
        """For a remote model: what its server reports of it through the statistics
        extension (Triton, a Batchlab server) — its own queue/compute split and executions
        per batch size, cumulative since the server started — or ``available`` False and
        the reason (MLServer has no such extension). None for a local model."""
        remote = self._ns.entry(name).remote
        return remote.server_statistics() if remote is not None else None

