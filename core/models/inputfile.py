"""Sample inputs read where the caller is: a file, or a folder of images (zipped), each
bounded before it is read (:func:`input_file`; :func:`~core.models.read_inputs` decodes).

Example:
    >>> filename, data = input_file("iris.csv")
"""

from __future__ import annotations

import stat
from pathlib import Path

from core.errors import ConfigError, ResourceLimitError
from .inputs import INPUT_SUFFIXES, MAX_INPUT_BYTES

__all__ = ["input_file"]


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
