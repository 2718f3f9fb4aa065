"""A/B experiments: routing between two models (random, sticky, shadow, bandit), per-arm metrics,
the statistics and the report.

Example:
    >>> exp = ABExperiment("exp", a="clf-v1", b="clf-v2", b_share=0.2, seed=0)
    >>> exp.route()
    ('a', 'clf-v1')
"""

from __future__ import annotations

from .bandit import ThompsonBandit, simulate_bandit
from .report import ABReport, arm_differences
from .routing import AB_MODES, ABExperiment, ExperimentRegistry
from .shadow import ShadowStats, matched_outputs
from .statistics import (ErrorComparison, LatencyComparison, compare_errors, compare_latency,
                         format_p, sample_size_means, sample_size_proportions,
                         too_small_words)

__all__ = ["ThompsonBandit", "simulate_bandit", "ABReport", "arm_differences", "AB_MODES", "ABExperiment", "ExperimentRegistry",
           "ShadowStats", "matched_outputs", "ErrorComparison", "LatencyComparison",
           "compare_errors", "compare_latency", "format_p", "sample_size_means",
           "sample_size_proportions", "too_small_words"]
