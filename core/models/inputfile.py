"""Sample inputs read where the caller is: a file, or a folder of images (zipped), each
bounded before it is read (:func:`input_file`; :func:`~core.models.read_inputs` decodes);
or a notebook's own arrays, as the file they would be (:func:`input_bytes`).

Example:
    >>> filename, data = input_file("iris.csv")
    >>> input_bytes(np.zeros((8, 4), np.float32))[0]
    'array.npy'
"""

from __future__ import annotations

import io
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ConfigError, ResourceLimitError
from .inputs import INPUT_SUFFIXES, MAX_INPUT_BYTES

__all__ = ["input_file", "input_bytes"]


def input_file(path: str | Path, filename: str | None = None) -> tuple[str, bytes]:
    """``(filename, bytes)`` of sample inputs at ``path``, read where the caller is: a file
    (its size checked before it is read), or a folder (its images, as a ``.zip``)."""
    path = Path(path)
    limit = 4 * MAX_INPUT_BYTES
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise ConfigError(f"cannot read sample inputs from {str(path)!r}: "
                          f"{err.strerror or err}; give a file ({', '.join(INPUT_SUFFIXES)}) "
                          "or a folder of images") from None
    if stat.S_ISDIR(mode):
        from .images import zip_folder
        return filename or f"{path.name or 'images'}.zip", zip_folder(path, limit)
    if not stat.S_ISREG(mode):  # a device or a pipe: its size says nothing (/dev/zero)
        raise ConfigError(f"{str(path)!r} is not a regular file; sample inputs are read "
                          "from a file or a folder of images")
    with open(path, "rb") as f:   # read at most the limit, whatever the size said
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ResourceLimitError(f"{path} is over the {limit:,} bytes read for sample inputs; "
                                 "use fewer samples")
    return filename or path.name, data


def input_bytes(data: Any, filename: str | None = None) -> tuple[str | None, bytes]:
    """What ``set_inputs`` was given, as a file's name and bytes: a path (read here, see
    :func:`input_file`), a numpy array (as an ``.npy``), a dict of arrays named like the
    model's inputs (an ``.npz``), or a file's bytes (``filename`` then says its kind)."""
    one = isinstance(data, np.ndarray)
    if one or isinstance(data, Mapping):
        arrays = [data] if one else [v for v in data.values() if isinstance(v, np.ndarray)]
        if (size := sum(a.nbytes for a in arrays)) > 4 * MAX_INPUT_BYTES:
            raise ResourceLimitError(f"{size:,} bytes of arrays, over the "
                                     f"{4 * MAX_INPUT_BYTES:,} read for sample inputs; use "
                                     "fewer samples")
        if one or (data and len(arrays) == len(data)):   # (an .npy, or an .npz by name)
            buf = io.BytesIO()
            try:
                if one:
                    np.save(buf, data, allow_pickle=False)
                else:
                    np.savez(buf, allow_pickle=False, **{str(k): v for k, v in data.items()})
            except ValueError as err:       # (object arrays: nothing a model takes)
                raise ConfigError(f"sample inputs must be arrays of numbers: {err}") from None
            return filename or ("array.npy" if one else "arrays.npz"), buf.getvalue()
    if isinstance(data, str) and ("\n" in data or len(data) > 4096):
        raise ConfigError(f"set_inputs reads a str as a path, and this one holds text "
                          f"({data[:40]!r}...): pass the file's bytes (text.encode()) with "
                          "filename= saying its kind, e.g. filename='inputs.csv'")
    if isinstance(data, (str, Path)):
        return input_file(data, filename)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return filename, bytes(data)
    raise ConfigError(f"set_inputs takes a path, a file's bytes, a numpy array or a dict of "
                      f"arrays named like the model's inputs; got {type(data).__name__}")
