"""The one control loop: monitor -> analyze -> plan -> execute, every decision interval.

:class:`ControlLoop` is the loop without a planner: apply a plan, let the world run one
interval, observe, cost, analyze. The :class:`Coordinator` puts a Planner in front of it and
writes the event log; a Gymnasium env puts the RL agent in front of it (the action, decoded into
a Plan). So simulation, evaluation and live runs all go through the same code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .cost import CostModel
from .interfaces import Analyzer, Clock, Executor, Monitor, Planner
from .types import Applied, CostComponents, Insights, MetricsSnapshot, Plan


@dataclass(slots=True)
class Transition:
    """One interval: the plan applied at its start, then what happened during it."""

    decision_time: float
    plan: Plan
    applied: Applied
    snapshot: MetricsSnapshot  # the interval that followed the decision
    cost: CostComponents
    insights: Insights  # the analyzer's view after the interval (input to the next decision)

    def to_record(self, decision_insights: Insights | None = None) -> dict[str, Any]:
        return {
            "decision_time": self.decision_time,
            "time": self.snapshot.time,
            "insights": (decision_insights or self.insights).to_dict(),
            "plan": self.plan.to_dict(),
            "applied": self.applied.to_dict(),
            "metrics": self.snapshot.to_dict(),
            "cost": self.cost.to_dict(),
        }


class ControlLoop:
    def __init__(
        self,
        monitor: Monitor,
        analyzer: Analyzer,
        executor: Executor,
        clock: Clock,
        cost_model: CostModel,
        interval: float,
    ):
        if not interval > 0:
            raise ValueError(f"decision interval must be > 0 seconds, got {interval}")
        self.monitor, self.analyzer, self.executor, self.clock = monitor, analyzer, executor, clock
        self.cost_model, self.interval = cost_model, interval

    def start(self) -> tuple[MetricsSnapshot, Insights]:
        """Reset the analyzer and take the first observation (of an empty interval)."""
        self.analyzer.reset()
        snapshot = self.monitor.observe()
        return snapshot, self.analyzer.analyze(snapshot)

    def act(self, plan: Plan) -> Transition:
        decision_time = self.clock.now()
        applied = self.executor.apply(plan)
        self.clock.advance(self.interval)
        snapshot = self.monitor.observe()
        return Transition(
            decision_time,
            plan,
            applied,
            snapshot,
            self.cost_model.components(snapshot),
            self.analyzer.analyze(snapshot),
        )


class EventLog:
    """JSON Lines, one record per decision. Each record is written with a single ``write`` and
    flushed, so a crash leaves every finished record intact and no torn line in between."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = self.path.open("w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_event_log(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class Coordinator:
    """Runs a Planner against a world (simulated or live) for a number of decisions."""

    def __init__(self, loop: ControlLoop, planner: Planner, log: EventLog | None = None):
        self.loop, self.planner, self.log = loop, planner, log

    def run(self, until: float, settle: float = 0.0) -> list[Transition]:
        """Decide every interval until the clock reaches ``until``; return the transitions.
        ``settle``: past ``until`` go on deciding while items are still in the system, for at
        most that many seconds more: a replay of a live run ends as the run did, at the first
        decision after every arrival has left (a fixed count of decisions cut off an item
        whose exit fell a few milliseconds past the last one)."""
        return list(self.steps(until, settle))

    def steps(self, until: float, settle: float = 0.0) -> Iterator[Transition]:
        """The decisions of :meth:`run` one at a time, each yielded once it is applied, observed
        and logged. A loop that runs for days (``adaptflow control``) takes them so and keeps
        none: a transition holds a whole snapshot (about 4 KB for five stages), and a week of
        one-second decisions kept would be 2 GB."""
        self.planner.reset()
        snapshot, insights = self.loop.start()
        limit = until + max(settle, 0.0)
        while (now := self.loop.clock.now()) < until - 1e-9 or (snapshot.in_system > 0 and now < limit - 1e-9):
            plan = self.planner.plan(snapshot, insights)
            step = self.loop.act(plan)
            if self.log is not None:
                self.log.write(step.to_record(decision_insights=insights))
            yield step
            snapshot, insights = step.snapshot, step.insights
