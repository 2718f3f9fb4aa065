"""The load agents live in :mod:`core.lab.agents` (the lab's sweeps, replays and traffic
use them); their names stay importable from here."""

from core.lab.agents import AGENT_LOST, AgentRun, LoadAgents, merged_histogram, _HIST  # noqa: F401

__all__ = ["LoadAgents", "AgentRun", "merged_histogram", "AGENT_LOST"]
