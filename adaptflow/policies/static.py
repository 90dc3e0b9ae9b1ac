"""The simplest planner: a fixed pool per stage and fixed splits."""

from __future__ import annotations

from adaptflow.agents import Insights, MetricsSnapshot, Plan, Planner


class StaticPlanner(Planner):
    """Always asks for the same workers per stage (and the same splits). Stages and splits it
    does not name keep whatever they have: ``StaticPlanner()`` holds the scenario as declared."""

    def __init__(self, workers: dict[str, int] | None = None, splits: dict[str, dict[str | None, float]] | None = None):
        self.workers = dict(workers or {})
        self.splits = {k: dict(v) for k, v in (splits or {}).items()}

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        return Plan(workers=dict(self.workers), splits={k: dict(v) for k, v in self.splits.items()})
