"""The one cost model: metrics of an interval -> cost components. The env's reward, the
evaluation tables and the live runtime's reports all come from here."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from adaptflow.scenario import Scenario

from .types import CostComponents, MetricsSnapshot


class CostWeights(BaseModel):
    """Price of each kind of harm, in the same unit as worker cost (worker-seconds x price).

    Defaults: a late item costs as much as 5 worker-seconds at price 1; a dropped or failed
    item 10; a quality escape 20 (a bad record that reaches production is the worst outcome).
    ``backlog``: each item still unfinished when an episode ends (late items are counted when
    their deadline passes; this prices the rest of the work a planner leaves behind)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: float = Field(default=1.0, ge=0)
    sla: float = Field(default=5.0, ge=0)
    drops: float = Field(default=10.0, ge=0)
    escapes: float = Field(default=20.0, ge=0)
    backlog: float = Field(default=5.0, ge=0)


def reward_scale(scenario: Scenario, interval: float) -> float:
    """The cost of running every stage at its max for one interval: rewards are costs divided
    by it, so a step's reward is about -1 at worst-case staffing whatever the scenario's size."""
    return interval * sum(s.workers.max * s.workers.cost_per_second for s in scenario.stages.values()) or 1.0


class CostModel:
    def __init__(self, weights: CostWeights | dict | None = None):
        self.weights = weights if isinstance(weights, CostWeights) else CostWeights(**(weights or {}))

    def components(self, snapshot: MetricsSnapshot) -> CostComponents:
        w = self.weights
        worker_cost = 0.0  # a loop, not sum(generator): this runs on every env step
        for stage in snapshot.stages.values():
            worker_cost += stage.cost
        late = snapshot.sla_violation_units  # job classes price their lateness; NaN: a count
        return CostComponents(
            w.workers * worker_cost,
            w.sla * (snapshot.sla_violations if late != late else late),
            w.drops * (snapshot.drops + snapshot.failed),
            w.escapes * snapshot.escapes,
        )

    def terminal(self, snapshot: MetricsSnapshot) -> CostComponents:
        """The end-of-episode cost of the work left in the system."""
        return CostComponents(0.0, 0.0, 0.0, 0.0, backlog=self.weights.backlog * snapshot.in_system)
