"""Peer inference servers that Batchlab's tests and benchmarks start on loopback.

``mlserver`` starts a real MLServer (its own virtualenv, ``make mlserver-env``) serving ONNX
models through ``mlserver_runtime``, a custom runtime that is imported only inside MLServer's
process: nothing here imports it.
"""

from __future__ import annotations

from .mlserver import DEFAULT_VENV, INSTALL_HINT, RUNTIME_MODULE, MLServerProcess

__all__ = ["MLServerProcess", "DEFAULT_VENV", "INSTALL_HINT", "RUNTIME_MODULE"]
