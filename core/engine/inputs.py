"""Real inputs for a model (:mod:`core.models.inputs`): set from a file, kept with the model,
and drawn by everything that sends it generated load (traffic, sweeps, warm-up, replays,
shadow comparisons) through :meth:`EngineCore.sample_input`.

Example:
    >>> engine.set_inputs("iris-forest", "iris.csv")
    'real: iris.csv (150 samples)'
    >>> engine.input_source("iris-forest")
    'real: iris.csv (150 samples)'
"""

from __future__ import annotations

from typing import Any

from core.errors import ConfigError, ResourceLimitError
from core.models import MAX_INPUT_BYTES, SampleInputs, input_bytes, read_inputs

__all__ = ["InputMethods", "GENERATED"]

#: What :meth:`InputMethods.input_source` says of a model without real inputs.
GENERATED = "generated: random values of each input's type and shape"


class InputMethods:
    """Mixed into the engine: its namespace (``self._ns``), A/B room (``self._ab``) and the
    real inputs by model name (``self._inputs``)."""

    _ns: Any
    _ab: Any
    _inputs: dict[str, SampleInputs]
    _events: Any
    _guard: Any   # (EventMethods': a sweep measuring the model refuses a change of inputs)
    _lock: Any

    def set_inputs(self, name: str, data: Any,
                   filename: str | None = None, label: str | None = None,
                   preprocess: str | dict[str, Any] | None = None) -> str:
        """Give model ``name`` real inputs: a file's bytes (``filename`` says its kind:
        .npy, .npz, .csv, .parquet, perf_analyzer's .json, or a .zip of images), a path
        (a folder: its images), a numpy array, or a dict of arrays named like the inputs.
        Checked against the model's inputs; from now on generated load draws from them. Returns what they are (``"real: iris.csv (150 samples)"``);
        ``label`` names them instead of the file. ``preprocess`` declares how images become
        the model's input: a preset ("imagenet", "unit", "symmetric", "raw") or a dict of
        it and overrides (:mod:`core.models.images`)."""
        filename, data = input_bytes(data, filename)
        if not filename:
            raise ConfigError("set_inputs needs filename= with the bytes (its suffix says "
                              "how to read them: .npy, .npz, .csv, .parquet, .json, .zip)")
        if len(data) > 4 * MAX_INPUT_BYTES:
            raise ResourceLimitError(f"{filename} is {len(data):,} bytes, over the "
                                     f"{4 * MAX_INPUT_BYTES:,} read for sample inputs")
        entry = self._ns.entry(name)
        self._guard(name, "give it other inputs")   # (what the sweep's next points send)
        samples = read_inputs(bytes(data), filename, entry.info, preprocess)
        if label:
            samples.source = str(label)
        with self._lock:   # (asked again: a sweep may have started while they were read)
            self._guard(name, "give it other inputs")
            self._inputs[name] = samples
        self._events.add(name, "inputs", samples.describe())
        self._ab.arm_changed(name, f"now gets real inputs ({samples.describe()})")
        return samples.describe()

    def clear_inputs(self, name: str) -> None:
        """Go back to generated inputs for ``name``."""
        self._ns.entry(name)
        with self._lock:   # (the lock a sweep starts under: refused, or done before it)
            if name in self._inputs:
                self._guard(name, "give it generated inputs")
            dropped = self._inputs.pop(name, None)
        if dropped is not None:
            self._events.add(name, "inputs", "generated inputs again")
            self._ab.arm_changed(name, "gets generated inputs again")

    def real_inputs(self, name: str) -> SampleInputs | None:
        """The real inputs of ``name`` (this process only: a server keeps them in its state
        folder), or None."""
        return self._inputs.get(name)

    def _refit_inputs(self, name: str) -> None:
        """After a hot swap: keep the real inputs if the new version takes them."""
        real = self._inputs.get(name)
        if real is None:
            return
        from core.models.inputs import refit
        fitted = refit(real, self._ns.entry(name).info)   # (cast to the new version's types)
        if fitted is not None:
            self._inputs[name] = fitted
            return
        del self._inputs[name]
        self._events.add(name, "inputs", "real inputs dropped: the new version does not "
                         "take them; generated inputs again")

    def input_source(self, name: str) -> str:
        """What generated load sends ``name`` (for an A/B experiment: arm A's):
        ``"real: FILE (N samples)"`` or ``"generated: ..."``."""
        if name in self._ns.experiments:
            name = self._ns.experiment(name).a
        self._ns.entry(name)
        real = self._inputs.get(name)
        return real.describe() if real is not None else GENERATED
