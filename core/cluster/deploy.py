"""Deploy a model as Batchlab engine replicas on a Ray cluster (Ray Serve), and change them.

Example (a notebook; a local Ray by default, or ``address="ray://..."``/``"HOST:PORT"``):
    >>> d = deploy("mlp", model_bytes, num_replicas=2, max_ongoing_requests=64,
    ...            batch={"max_batch_size": 32, "max_wait_ms": 5})
    >>> engine.add_remote("mlp-ray", url=d.url, model="mlp")   # a remote model like any other
    >>> configure("mlp", max_batch_size=16)   # every replica, live (Ray Serve's user_config)
    >>> undeploy("mlp")

Each replica is a :class:`~core.cluster.replica.BatchlabReplica`: one engine, its batching
Batchlab's, behind the OIP data plane on Ray Serve's HTTP proxy at
``http://HOST:PORT/<name>`` (the deployment's route prefix). ``num_replicas`` or an
``autoscaling_config`` (``min_replicas``, ``max_replicas``, ``target_ongoing_requests``) and
``max_ongoing_requests`` are Ray Serve's; the batch settings travel as ``user_config``, so
:func:`configure` reaches every replica through ``reconfigure`` without a restart. The
``core`` package goes with the deployment (``runtime_env`` ``py_modules``): the cluster's
Python needs Batchlab's requirements (onnxruntime, numpy...), not this checkout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import BatchConfig
from core.errors import ConfigError
from core.lab.raylink import CORE_DIR, check_cpus, connect
from .replica import BatchlabReplica, batch_user_config
from .store import prune_models, release_model, store_model

__all__ = ["RayDeployment", "deploy", "configure", "undeploy", "deployments",
           "concurrency_warning", "connect", "APP_PREFIX"]

log = logging.getLogger("batchlab.cluster")

#: Ray Serve application names of Batchlab deployments: this prefix and the model's name.
APP_PREFIX = "batchlab-"
#: What the replicas' code is (a new Batchlab means new replicas).
_CODE_VERSION = hashlib.sha256(b"".join(
    p.read_bytes() for p in sorted(Path(CORE_DIR).rglob("*.py")))).hexdigest()[:16]
_ingress: Any = None
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
# Held for a whole deploy / configure / undeploy (seconds): two callers (a page and a
# notebook) change a deployment one after the other, never one over the other.
_lock = threading.RLock()
_deployed: dict[str, RayDeployment] = {}
# A deployment's model stored this long ago without its application (removed by
# serve.delete) is forgotten by the next deploy (a deploy in progress has stored its model
# seconds before its application appears).
_STALE_S = 600.0


@dataclass
class RayDeployment:
    """A model deployed as engine replicas on Ray Serve (what :func:`deploy` returns)."""

    name: str
    #: The OIP base URL (``add_remote(name, url=url, model=name)``).
    url: str
    num_replicas: int | None
    autoscaling_config: dict[str, Any] | None
    max_ongoing_requests: int
    batch: BatchConfig
    replica_cpus: float
    #: Said at deploy time, e.g. a per-replica concurrency below max_batch_size.
    warnings: list[str] = field(default_factory=list)
    _bind_args: tuple[Any, ...] = field(default=(), repr=False)

    @property
    def app_name(self) -> str:
        return APP_PREFIX + self.name

    def serve_options(self) -> dict[str, Any]:
        """The deployment's Ray Serve options (what an export to Ray Serve writes)."""
        out: dict[str, Any] = {"name": self.name,
                               "max_ongoing_requests": self.max_ongoing_requests,
                               "user_config": batch_user_config(self.batch),
                               "ray_actor_options": {"num_cpus": self.replica_cpus}}
        if self.autoscaling_config is not None:
            out["autoscaling_config"] = dict(self.autoscaling_config)
        else:
            out["num_replicas"] = self.num_replicas
        return out


def concurrency_warning(max_ongoing_requests: int, max_batch_size: int) -> str | None:
    """A sentence when a replica may hold fewer requests than a batch has rows: its batches
    can never fill (Ray Serve issue 43288), else None."""
    if max_ongoing_requests >= max_batch_size:
        return None
    return (f"max_ongoing_requests={max_ongoing_requests} is below max_batch_size="
            f"{max_batch_size}: Ray Serve sends a replica at most {max_ongoing_requests} "
            f"requests at once, so its batches never hold more than {max_ongoing_requests} "
            "one-row requests and every batch waits out max_wait_ms. Raise "
            f"max_ongoing_requests to at least {max_batch_size} (or lower max_batch_size).")


def _start_serve(http_host: str, http_port: int) -> tuple[str, int]:
    """Start Ray Serve's HTTP proxy at ``http_host:http_port`` (on the head node), or find
    the one running: where it listens (a running one keeps its own address)."""
    from ray import serve
    from ray.serve.context import _get_global_client
    serve.start(http_options={"host": http_host, "port": int(http_port)},
                proxy_location="HeadOnly")
    opts = _get_global_client().http_config
    host = opts.host if opts.host not in ("0.0.0.0", "::", "") else _head_ip()
    if (opts.host, int(opts.port)) != (http_host, int(http_port)):
        log.warning("Ray Serve already listens on %s:%s; the deployment answers there",
                    opts.host, opts.port)
    return host, int(opts.port)


def _head_ip() -> str:
    """The head node's address (where a HeadOnly proxy answers for every node)."""
    import ray
    for nd in ray.nodes():
        if nd.get("Alive") and "node:__internal_head__" in nd.get("Resources", {}):
            return nd["NodeManagerAddress"]
    return ray.util.get_node_ip_address()


def _check_room(num_replicas: int | None, autoscaling: dict[str, Any] | None,
                replica_cpus: float) -> None:
    n = num_replicas or int((autoscaling or {}).get("min_replicas", 1) or 1)
    check_cpus(n, replica_cpus, "replica(s)", "load agents and other deployments",
               "replica_cpus or num_replicas")


def deploy(name: str, model: bytes | str | Path, *, address: str | None = None,
           num_replicas: int | None = 1, autoscaling_config: dict[str, Any] | None = None,
           max_ongoing_requests: int | None = None,
           batch: BatchConfig | dict[str, Any] | None = None, replica_cpus: float = 1.0,
           http_host: str = "127.0.0.1", http_port: int = 8000,
           token: str | None = None, allowed_hosts: tuple[str, ...] = (),
           check_rows: bool = True) -> RayDeployment:
    """Deploy ``model`` (ONNX bytes or a path) as Batchlab engine replicas named ``name``
    on Ray Serve (see the module docstring); returns where it answers. Replaces a
    deployment of the same name. Ray Serve's proxy listens at ``http_host:http_port`` if
    this starts it; one already running keeps its address (the URL says where).
    ``max_ongoing_requests`` (per replica) defaults to twice
    ``max_batch_size``; below ``max_batch_size`` it is allowed, with a warning saying why
    batches will not fill. Returns once every replica is up. Beyond loopback (a ``token``),
    replicas answer requests addressed by IP or by one of ``allowed_hosts`` (host names, as a
    Batchlab server's ``--allow-host``). ``check_rows=False``: the replicas batch the model
    without its row check (:meth:`core.Engine.load_model`'s), on its owner's word."""
    if isinstance(model, (str, Path)):
        model = Path(model).read_bytes()
    if not isinstance(model, (bytes, bytearray)) or not model:
        raise ConfigError("model must be the ONNX file's bytes or its path")
    if not (isinstance(name, str) and _NAME.fullmatch(name)):
        raise ConfigError(f"name must be 1-64 letters, digits, '-', '_' or '.' (it is the "
                          f"URL's path and the model's name), got {name!r}")
    if token is None and http_host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(f"replicas answering on {http_host!r} (beyond loopback) need a "
                          "token: anyone who reaches them could send requests; pass "
                          "token=... (clients send 'Authorization: Bearer TOKEN')")
    if not isinstance(check_rows, bool):
        raise ConfigError(f"check_rows must be True or False, got {check_rows!r}")
    cfg = BatchConfig(**batch) if isinstance(batch, dict) else (batch or BatchConfig())
    if autoscaling_config is not None:
        if not isinstance(autoscaling_config, dict):
            raise ConfigError("autoscaling_config must be a dict of Ray Serve's autoscaling "
                              "options, e.g. {'min_replicas': 1, 'max_replicas': 4, "
                              "'target_ongoing_requests': 32}")
        num_replicas = None
    elif not (isinstance(num_replicas, int) and num_replicas >= 1):
        raise ConfigError(f"num_replicas must be a whole number >= 1, got {num_replicas!r}")
    ongoing = 2 * cfg.max_batch_size if max_ongoing_requests is None else max_ongoing_requests
    if not (isinstance(ongoing, int) and ongoing >= 1):
        raise ConfigError(f"max_ongoing_requests must be a whole number >= 1, got {ongoing!r}")
    if not (isinstance(replica_cpus, (int, float)) and replica_cpus > 0):
        raise ConfigError(f"replica_cpus must be a positive number, got {replica_cpus!r}")
    warnings = [w for w in [concurrency_warning(ongoing, cfg.max_batch_size)] if w]
    for w in warnings:
        log.warning("deploy %s: %s", name, w)
    with _lock:
        connect(address)
        if name not in _deployed:
            _check_room(num_replicas, autoscaling_config, float(replica_cpus))
        host, port = _start_serve(http_host, http_port)
        # The bytes go to the cluster's model store once; the deployment is bound to a
        # reference (core.cluster.store: a change of the deployment no longer ships them).
        # Deployments removed without undeploy (serve.delete) leave theirs: forgotten here.
        from ray import serve
        prune_models([a.removeprefix(APP_PREFIX) for a in serve.status().applications
                      if a.startswith(APP_PREFIX)], _STALE_S)
        ref = store_model(name, bytes(model))
        dep = RayDeployment(name=name, url=f"http://{host}:{port}/{name}",
                            num_replicas=num_replicas, autoscaling_config=autoscaling_config,
                            max_ongoing_requests=ongoing, batch=cfg,
                            replica_cpus=float(replica_cpus), warnings=warnings,
                            _bind_args=(ref, name, token,
                                        max(1, math.ceil(float(replica_cpus))),
                                        tuple(str(h) for h in allowed_hosts), check_rows))
        _deployed[name] = dep   # before it runs: a failed deploy can still be undeployed
        _run(dep)
    return dep


def _run(dep: RayDeployment) -> None:
    from ray import serve
    global _ingress
    if _ingress is None:   # (under _lock)
        _ingress = serve.ingress()(BatchlabReplica)
    # The code version: the same model, name and token are the same replicas, so a change
    # of user_config, replicas or max_ongoing_requests is applied in place (reconfigure),
    # not by a rolling restart (Ray Serve gives each serve.run a new version otherwise).
    ref, name, token, threads, hosts, check_rows = dep._bind_args
    version = hashlib.sha256(f"{ref.key}\0{name}\0{token}\0{threads}\0{hosts}\0{check_rows}\0"
                             f"{_CODE_VERSION}".encode()).hexdigest()[:16]
    cls = serve.deployment(_ingress, **dep.serve_options()).options(version=version,
                                                                    _internal=True)
    serve.run(cls.bind(*dep._bind_args), name=dep.app_name, route_prefix=f"/{dep.name}")


def _get(name: str) -> RayDeployment:
    with _lock:
        dep = _deployed.get(name)
        names = sorted(_deployed)
    if dep is None:
        raise ConfigError(f"no Ray deployment {name!r} made from this process; deployed: "
                          f"{names or 'none'} (deploy it with core.cluster.deploy; one made "
                          f"by another process is deleted with "
                          f"core.cluster.undeploy({name!r}, address=...))")
    return dep


def configure(name: str, *, num_replicas: int | None = None,
              max_ongoing_requests: int | None = None, **batch_changes: Any) -> RayDeployment:
    """Change deployment ``name`` live: batch settings (``max_batch_size=16``...) reach
    every replica through Ray Serve's ``reconfigure``, without a restart; ``num_replicas``
    and ``max_ongoing_requests`` are Ray Serve's own (replicas added or removed)."""
    with _lock:
        return _configure(name, num_replicas, max_ongoing_requests, batch_changes)


def _configure(name: str, num_replicas: int | None, max_ongoing_requests: int | None,
               batch_changes: dict[str, Any]) -> RayDeployment:
    dep = _get(name)
    new = dataclasses.replace(dep, batch=dep.batch.replace(**batch_changes))
    if num_replicas is not None:
        if not (isinstance(num_replicas, int) and num_replicas >= 1):
            raise ConfigError(f"num_replicas must be a whole number >= 1, got {num_replicas!r}")
        new.num_replicas, new.autoscaling_config = num_replicas, None
    if max_ongoing_requests is not None:
        if not (isinstance(max_ongoing_requests, int) and max_ongoing_requests >= 1):
            raise ConfigError(f"max_ongoing_requests must be a whole number >= 1, got "
                              f"{max_ongoing_requests!r}")
        new.max_ongoing_requests = max_ongoing_requests
    new.warnings = [w for w in [concurrency_warning(new.max_ongoing_requests,
                                                    new.batch.max_batch_size)] if w]
    _run(new)
    _deployed[name] = new
    return new


def undeploy(name: str, address: str | None = None) -> None:
    """Delete deployment ``name`` (its replicas end) and drop its model's bytes from the
    cluster's model store. One made by another process (or whose process has gone) is found
    on the cluster at ``address`` (None: the one connected)."""
    from ray import serve
    with _lock:
        dep = _deployed.get(name)
        if dep is None:
            import ray
            if address is None and not ray.is_initialized():
                _get(name)          # (not connected: no local Ray started just to look)
            connect(address)
            from .store import held
            if APP_PREFIX + name not in serve.status().applications \
                    and name not in held()["users"]:
                _get(name)          # says what is deployed, in words
            serve.delete(APP_PREFIX + name)
        else:
            serve.delete(dep.app_name)
        _deployed.pop(name, None)
        try:
            release_model(name)
        except Exception as err:  # noqa: BLE001 - the deployment is gone; say how to finish
            log.warning("undeploy %s: its model's bytes stay in the cluster's model store "
                        "(%s: %s); core.cluster.store.release_model(%r) drops them, or the "
                        "next deploy does", name, type(err).__name__, err, name)


def deployments() -> list[RayDeployment]:
    """The deployments made from this process."""
    with _lock:
        return list(_deployed.values())


#: The name a deployed model has in the engine that deployed it (a remote model).
RAY_SUFFIX = "-ray"


def deploy_model(engine: Any, model: str, *, name: str | None = None,
                 address: str | None = None, num_replicas: int = 1,
                 max_ongoing_requests: int | None = None, replica_cpus: float = 1.0,
                 http_host: str = "127.0.0.1", http_port: int = 8000,
                 token: str | None = None, allowed_hosts: tuple[str, ...] = (),
                 replace: bool = True) -> RayDeployment:
    """Deploy ``engine``'s model ``model`` (its file and its batch settings) to the Ray
    cluster at ``address`` as :func:`deploy` does, and add it back to ``engine`` as the
    remote model ``model + "-ray"``, measured, swept and A/B tested like any other (the
    Models page's "Deploy to a Ray cluster"). ``engine`` is an :class:`~core.Engine` or a
    client of an engine server."""
    if engine.remote_info(model) is not None:
        raise ConfigError(f"{model!r} is a remote model: its file is on its server; deploy "
                          "a model loaded in this engine")
    cfg = engine.batch_config(model)
    name = name or model
    dep = deploy(name, engine.model_file(model), address=address, num_replicas=num_replicas,
                 max_ongoing_requests=max_ongoing_requests, replica_cpus=replica_cpus,
                 http_host=http_host, http_port=http_port, token=token,
                 allowed_hosts=allowed_hosts,
                 batch={"max_batch_size": cfg.max_batch_size, "max_wait_ms": cfg.max_wait_ms},
                 # batched there as here (its row check's verdict, or its owner's word)
                 check_rows=engine.model_info(model).batch_mode == "alone")
    try:
        engine.add_remote(name + RAY_SUFFIX, url=dep.url, model=name, replace=replace,
                          headers={"Authorization": f"Bearer {token}"} if token else None)
    except BaseException:
        undeploy(name)     # not left running where nothing uses it
        raise
    return dep
