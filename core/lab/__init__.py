"""The lab: a client of the engine. Load generation (one open-loop pacer), built-in traffic,
jobs, sweeps, replay, analysis and recommendation, the cost model, exports to production
servers, the history store — and :class:`Engine`, the engine with its lab attached.

Example:
    >>> from core.lab import open_loop, sweep, recommend
    >>> frame = sweep(engine, "mlp", [8, 32], [0, 2], rates_rps=[500, 2000])
    >>> recommend(frame, p99_slo_ms=10).reason
"""

from __future__ import annotations

from .analysis import Recommendation, disturbed_rows, pareto_frontier, recommend
from .costmodel import (ENGINE_BOUND_RPS, CostModel, fit_cost_model, measure_capacity,
                        measure_overhead, profile_cost, profile_cost_frame, with_capacities,
                        with_capacity)
from .engine import Engine
from .exports import (MLSERVER_BATCHLAB_RUNTIME, kserve_inference_service, kserve_name,
                      mlserver_settings, provenance, ray_serve_config, tf_serving_batching,
                      triton_config)
from .history import ExperimentStore, default_store, environment
from .job_kinds import JOB_KINDS, JOB_WORDS
from .jobs import Job, JobManager, JobStatus
from .lab import Lab
from .loadgen import LOAD_COLUMNS, LoadResult, check_clients, closed_loop, open_loop
from .replay import (REPLAY_POLICIES, arrivals_from_csv, arrivals_to_csv, read_arrivals_csv,
                     replay)
from .search import Constraints, SearchResult, quick_search, setting_scores
from .schedule import ARRIVAL_PATTERNS, arrival_stream, arrival_times, paced
from .sweeps import SWEEP_COLUMNS, check_rates, p99_interval, sweep
from .whatif import WHAT_IF_REFUSED, calibrate_overhead, simulate, what_if_curve
from .traffic import (CLIENT_BOUND_CPU_PCT, CLIENT_BOUND_LAG_MS, TrafficGenerator,
                      TrafficManager, TrafficStatus, experiments_with_arm, generated_refused)

__all__ = [
    "Recommendation", "disturbed_rows", "pareto_frontier", "recommend", "ENGINE_BOUND_RPS", "WHAT_IF_REFUSED",
    "CostModel",
    "calibrate_overhead", "fit_cost_model", "measure_capacity", "measure_overhead", "profile_cost",
    "with_capacities", "with_capacity",
    "profile_cost_frame", "simulate", "what_if_curve", "Engine", "MLSERVER_BATCHLAB_RUNTIME",
    "kserve_inference_service", "kserve_name", "mlserver_settings", "provenance",
    "tf_serving_batching",
    "triton_config", "ExperimentStore", "default_store", "environment", "JOB_KINDS", "JOB_WORDS", "Job",
    "JobManager", "JobStatus", "Lab", "LOAD_COLUMNS", "LoadResult", "closed_loop", "open_loop",
    "check_clients",
    "ray_serve_config",
    "REPLAY_POLICIES", "replay", "arrivals_from_csv", "arrivals_to_csv", "read_arrivals_csv", "ARRIVAL_PATTERNS", "arrival_stream", "arrival_times", "paced",
    "SWEEP_COLUMNS", "check_rates", "p99_interval", "sweep", "CLIENT_BOUND_CPU_PCT", "CLIENT_BOUND_LAG_MS",
    "TrafficGenerator", "TrafficManager", "TrafficStatus", "experiments_with_arm", "generated_refused",
    "Constraints", "SearchResult",
    "quick_search", "setting_scores",
]
