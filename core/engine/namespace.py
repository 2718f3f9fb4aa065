"""One namespace for models and A/B experiments: a name is either, never both, and every
method that takes a name resolves it here, with one set of messages.

Example:
    >>> ns = Namespace(registry, experiments)
    >>> entry, exp = ns.resolve("mlp")          # (ModelEntry, None) for a model
"""

from __future__ import annotations

import difflib

import re
from typing import Any

from core.ab import ABExperiment, ExperimentRegistry
from core.errors import ConfigError, ModelNotFoundError
from .registry import ModelEntry, ModelRegistry

__all__ = ["Namespace"]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Namespace:
    """Names of models and experiments: checks, resolution and not-found messages."""

    def __init__(self, registry: ModelRegistry, experiments: ExperimentRegistry) -> None:
        self.registry = registry
        self.experiments = experiments

    @staticmethod
    def check_new_name(name: Any, kind: str) -> None:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ConfigError(f"{kind} name must be 1-64 characters of letters, digits, '.', "
                              f"'_' or '-', starting with a letter or digit; got {name!r}")

    def kind_of(self, name: str) -> str | None:
        if name in self.registry:
            return "model"
        if name in self.experiments:
            return "experiment"
        return None

    def check_name_free(self, name: str, kind: str, replace: bool) -> None:
        """``name`` must be free, or (with ``replace``) already be a ``kind`` ("model" or
        "experiment")."""
        have = self.kind_of(name)
        if have is None:
            return
        if have != kind:
            what = "an A/B experiment" if have == "experiment" else "a model"
            raise ConfigError(f"{name!r} is the name of {what}; give the {kind} another "
                              "name (models and experiments share one namespace)")
        if not replace:
            hint = ("pass replace=True to hot-swap it" if kind == "model" else
                    "use update_ab() to change it, or pass replace=True")
            what = "a model" if kind == "model" else "an A/B experiment"
            where = "loaded" if kind == "model" else "running"
            raise ConfigError(f"{what} named {name!r} is already {where}; {hint} (on the "
                              f"{'Models' if kind == 'model' else 'A/B test'} page: open it "
                              "there), or choose another name")

    def resolve(self, name: str) -> tuple[ModelEntry | None, ABExperiment | None]:
        """``(entry, None)`` for a model, ``(None, experiment)`` for an experiment; raises
        :class:`ModelNotFoundError` for neither. Lock-free (copy-on-write tables)."""
        entry = self.registry.models.get(name)
        if entry is not None:
            return entry, None
        exp = self.experiments.get(name)
        if exp is not None:
            return None, exp
        raise self.not_found(name)

    def entry(self, name: str) -> ModelEntry:
        """The model ``name``; an experiment's name or an unknown one raises."""
        entry = self.registry.models.get(name)
        if entry is None:
            raise self.not_found(name)
        return entry

    def experiment(self, name: str) -> ABExperiment:
        """The A/B experiment ``name``; a model's name or an unknown one raises."""
        exp = self.experiments.get(name)
        if exp is None:
            have = ", ".join(self.experiments.names()) or "none"
            hint = f" ({name!r} is a model)" if name in self.registry else ""
            raise ModelNotFoundError(f"no A/B experiment named {name!r}{hint}; experiments: "
                                     f"{have}. Create one with engine.create_ab(name, a=..., "
                                     "b=...)")
        return exp

    def not_found(self, name: object) -> ModelNotFoundError:
        if isinstance(name, str) and name in self.experiments:
            return ModelNotFoundError(f"{name!r} is an A/B experiment, not a model; use "
                                      "ab_report / ab_metrics for it, or name one of its arms")
        names = list(self.registry.names())
        have = ", ".join(names) or "none"
        exps = ", ".join(self.experiments.names())
        # ("MLP" was told to load a model: it meant mlp; a newcomer. Among a few names only:
        # a flood of unknown names must not buy a fuzzy match over a thousand each.)
        near = difflib.get_close_matches(name[:100], names + list(self.experiments.names()),
                                         1, 0.6) if isinstance(name, str) and len(names) <= 100 \
            else []
        near += [n for n in names if isinstance(name, str) and n.lower() == name.lower()
                 and n not in near][:1]
        return ModelNotFoundError(
            f"no model named {name!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
            + f"; loaded models: {have}" + (f"; A/B experiments: {exps}" if exps else "")
            + f". Load it with engine.load_model(path_or_bytes, name={name!r})")

    @staticmethod
    def check_inputs_known(name: str, entry: ModelEntry) -> None:
        """Batchlab can make inputs for ``name`` (a remote server may declare none)."""
        if not entry.info.inputs:
            raise ConfigError(
                f"the server of remote model {name!r} declares no input tensors, so Batchlab "
                "cannot make inputs for it (sample input, traffic, warm-up): send one request "
                "yourself (its tensors are learned from it), or add the model again with "
                "inputs=[{'name': ..., 'datatype': 'FP32', 'shape': [-1, 4]}]")
