"""The simplest planner: a fixed pool per stage and fixed splits."""

from __future__ import annotations

from adaptflow.agents import Insights, MetricsSnapshot, Plan, Planner


class StaticPlanner(Planner):
    """Always asks for the same workers per stage (and the same splits). Stages and splits it
    does not name keep whatever they have: ``StaticPlanner()`` holds the scenario as declared.

    ``pool`` asks every stage ``workers`` does not name for that many workers (the spec
    ``static:pool=2``): runs at more than one pool size interleave in one ``compare-app --repeat``
    (``p1@static:pool=1,p2@static:pool=2``), so the machine's drift between minutes falls on both
    sizes alike. The pools start from the scenario's and are held from the first decision on;
    ``adaptflow fit-growth`` takes only runs held from their first second, so its runs take
    their size from the scenario's ``initial`` instead."""

    def __init__(
        self,
        workers: dict[str, int] | None = None,
        splits: dict[str, dict[str | None, float]] | None = None,
        pool: int | None = None,
    ):
        if pool is not None and pool < 1:
            raise ValueError(f"static pool {pool!r}: expected a whole number of workers of at least 1")
        self.workers = dict(workers or {})
        self.splits = {k: dict(v) for k, v in (splits or {}).items()}
        self.pool = pool

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        held = dict.fromkeys(snapshot.stages, self.pool) if self.pool is not None else {}
        return Plan(workers=held | self.workers, splits={k: dict(v) for k, v in self.splits.items()})
