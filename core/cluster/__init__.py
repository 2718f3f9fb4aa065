"""Past one machine, on Ray: Batchlab engine replicas as a Ray Serve deployment behind the
Open Inference Protocol (:mod:`core.cluster.deploy`, :mod:`core.cluster.replica`), and
open-loop load from many agents on the cluster (:mod:`core.lab.agents`).

Ray is imported only when a function here needs it (``requirements-dev.txt`` has it; a
dashboard without Ray runs as before).
"""

from .deploy import (APP_PREFIX, RAY_SUFFIX, RayDeployment, concurrency_warning, configure,
                     connect, deploy, deploy_model, deployments, undeploy)
from .agents import AGENT_LOST, AgentRun, LoadAgents, merged_histogram
from .local import LocalCluster
from .sweep import REPLICA_SWEEP_COLUMNS, recommend_replicas, replica_counts, sweep_replicas
from .replica import BATCH_HEADER, REPLICA_HEADER, BatchlabReplica, batch_user_config

__all__ = ["RayDeployment", "deploy", "deploy_model", "RAY_SUFFIX", "configure", "undeploy", "deployments", "connect",
           "concurrency_warning", "APP_PREFIX", "BatchlabReplica", "batch_user_config",
           "REPLICA_HEADER", "BATCH_HEADER", "LoadAgents", "AgentRun", "merged_histogram",
           "AGENT_LOST", "LocalCluster", "sweep_replicas", "recommend_replicas",
           "replica_counts", "REPLICA_SWEEP_COLUMNS"]
