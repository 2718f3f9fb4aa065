"""Serving: the engine server (the OIP data plane, Triton's repository extension, the control
API and ``/metrics``), its client :class:`RemoteEngine` (the engine's contract over HTTP),
the launcher the dashboard starts it with, and interpreter tuning for serving.

Example:
    >>> with Engine() as engine, EngineServer(engine, port=0) as server:
    ...     RemoteEngine(server.url).status()
"""

from __future__ import annotations

from .asgi import OipApp
from .client import DEFAULT_URL, RemoteEngine
from .control import ENGINE_CONTRACT, ENGINE_METHODS, STORE_CONTRACT, STORE_METHODS
from .launcher import ServerProcess, free_port, pin_process, split_cores
from .repository import Repository
from .routes import Routes
from .server import EngineServer
from .tuning import tune_for_serving
from .wire_types import WIRE, WIRE_TYPES

__all__ = ["DEFAULT_URL", "RemoteEngine", "ENGINE_CONTRACT", "ENGINE_METHODS", "STORE_CONTRACT",
           "STORE_METHODS", "ServerProcess", "free_port", "pin_process", "split_cores", "Repository", "Routes",
           "OipApp", "EngineServer", "tune_for_serving", "WIRE", "WIRE_TYPES"]
