"""The simplest planner: a fixed pool per stage and fixed splits."""

from __future__ import annotations

from adaptflow.agents import Insights, MetricsSnapshot, Plan, Planner


class StaticPlanner(Planner):
    """Always asks for the same workers per stage (and the same splits). Stages and splits it
    does not name keep whatever they have: ``StaticPlanner()`` holds the scenario as declared.

    ``pool`` asks every stage ``workers`` does not name for that many workers (the spec
    ``static:pool=2``): runs at more than one pool size interleave in one ``compare-app --repeat``
    (``p1@static:pool=1,p2@static:pool=2``), so the machine's drift between minutes falls on both
    sizes alike. ``workers`` sets the stages it names (``static:pool=1,workers=aggregate:2+write:2``:
    a size between the two, with the stages grown that a moving planner grows). ``compare-app``
    starts each run at these pools (:meth:`held_pools`), so every run is held at its size from
    its first second: what ``adaptflow fit-growth`` reads."""

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

    def checked(self, stages: list[str]) -> StaticPlanner:
        """This planner, once its ``workers`` and ``splits`` name only ``stages`` and ask for at
        least 1 worker each; else a ValueError, a line per problem. Why: a stage it does not name
        keeps its pool, so a misspelt one (``writ:2``) would leave a fit set's size silently wrong."""
        problems = [f"static {key} {name!r}: not a stage; expected one of {', '.join(stages)}"
                    for key, names in (("workers", self.workers), ("splits", self.splits))
                    for name in names if name not in stages]  # fmt: skip
        problems += [f"static workers {name}:{n!r}: expected a whole number of workers of at least 1"
                     for name, n in self.workers.items() if not (isinstance(n, int) and n >= 1)]  # fmt: skip
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def held_pools(self, stages: list[str]) -> dict[str, int]:
        held = dict.fromkeys(stages, self.pool) if self.pool is not None else {}
        return held | {name: n for name, n in self.workers.items() if name in stages}

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        return Plan(workers=self.held_pools(list(snapshot.stages)) | self.workers,
                    splits={k: dict(v) for k, v in self.splits.items()})  # fmt: skip


class ScheduledPlanner(Planner):
    """Asks at its k-th decision for the k-th pools of ``schedule`` (the last ones past its end).

    Why: ``resimulate --live-pools`` replays a live run's own applied pools, so that the model
    is judged on the decisions the run made. A planner rebuilt in simulation decides on the
    model's queues: one that grew and shrank live because of a stall meets no stall in
    simulation and holds its pool, and the gap then mixes the model's error with the planner's
    different choices (measured on the example app: ppo's write pool moved six times a live run
    and never in its simulated twin)."""

    def __init__(self, schedule: list[dict[str, int]]):
        if not schedule:
            raise ValueError("a schedule of pools needs at least one decision; got none")
        self.schedule = [dict(pools) for pools in schedule]
        self.decisions = 0

    def reset(self) -> None:
        self.decisions = 0

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        pools = self.schedule[min(self.decisions, len(self.schedule) - 1)]
        self.decisions += 1
        return Plan(workers=dict(pools))
