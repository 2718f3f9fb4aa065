"""The Ray Serve application builder of Batchlab engine replicas, for config files
(``serve deploy``; :func:`core.lab.ray_serve_config` writes one): ``import_path:
core.cluster.app:build`` with ``args: {name, model_path}`` (and optionally ``token``, and
``check_rows: false`` for a model batched without its row check, on its owner's word).

The deployment's options (replicas, ``max_ongoing_requests``, ``user_config`` with the batch
settings) come from the config file's ``deployments`` entry of the same name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import ConfigError
from .replica import BatchlabReplica

__all__ = ["build"]


def build(args: dict[str, Any]) -> Any:
    """The application: one deployment named ``args["name"]`` of engine replicas serving
    the ONNX file ``args["model_path"]``."""
    from ray import serve
    name, path = args.get("name"), args.get("model_path")
    if not name or not path:
        raise ConfigError("the Batchlab application needs args name (the model's name) and "
                          f"model_path (its ONNX file), got {sorted(args)}")
    check_rows = args.get("check_rows", True)
    if not isinstance(check_rows, bool):
        raise ConfigError(f"the Batchlab application's check_rows must be true or false, got "
                          f"{check_rows!r}")
    model = Path(path).read_bytes()
    cls = serve.deployment(serve.ingress()(BatchlabReplica), name=str(name))
    return cls.bind(model, str(name), args.get("token"), args.get("threads"),
                    tuple(args.get("allowed_hosts") or ()), check_rows)
