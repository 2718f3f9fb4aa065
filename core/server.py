"""``python -m core.server``: the engine server (:mod:`core.serving.server`), by the name the
README, ``make serve`` and the dashboard's launcher use.

Example:
    $ python -m core.server --port 8000
"""

from __future__ import annotations

from core.serving.server import EngineServer, main

__all__ = ["EngineServer", "main"]

if __name__ == "__main__":
    main()
