"""The simulator side of the agent interfaces: SimMonitor, SimExecutor and SimClock.

SimMonitor reads the model's named cumulative counters (:meth:`Simulation.counters`) and
differences them, which costs a few microseconds per stage: a Gymnasium step calls it every
decision interval."""

from __future__ import annotations

import math

import numpy as np

from adaptflow.scenario import Scenario
from adaptflow.simulator import Simulation

from .interfaces import Clock, Executor, Monitor
from .safety import SafetyEnvelope, StageBounds
from .types import Applied, MetricsSnapshot, Plan, StageMetrics

NAN = math.nan


class SimMonitor(Monitor):
    """Metrics of the interval since the last ``observe`` (or since the monitor was made).

    It differences two readings of :meth:`Simulation.counters` and averages the per-item values
    recorded between them (:meth:`Simulation.samples`): the same public reading that
    ``Simulation.summary`` makes, so the two cannot disagree about what a counter means.

    ``percentiles``: also compute the interval's p95 end-to-end latency (a sort per call; the
    evaluation harness wants it, a training env does not)."""

    def __init__(self, sim: Simulation, percentiles: bool = False):
        self.sim = sim
        self.percentiles = percentiles
        self.controllable = list(sim.scenario.controllable_splits())
        self._prices = {name: stage.workers.cost_per_second for name, stage in sim.scenario.stages.items()}
        self._prev = sim.counters()

    def observe(self) -> MetricsSnapshot:
        # Plain loops and positional constructors, in field order: this runs on every env step.
        sim = self.sim
        prev, cur = self._prev, sim.counters()
        self._prev = cur
        dt = cur.time - prev.time
        samples, prices, prev_stages = sim.samples(prev, cur), self._prices, prev.stages
        stages: dict[str, StageMetrics] = {}
        for name, c in cur.stages.items():
            p = prev_stages[name]
            waits = samples.waits(name)
            active_area = c.active_area - p.active_area
            billed = c.billed_area - p.billed_area
            stages[name] = StageMetrics(
                c.queue_length,
                c.busy,
                c.idle + c.busy,  # active
                c.starting,
                c.target,
                c.arrivals - p.arrivals,
                c.completed - p.completed,
                c.drops - p.drops,
                c.failures - p.failures,
                c.detected - p.detected,
                sum(waits) / len(waits) if waits else NAN,  # mean_wait
                (c.queue_area - p.queue_area) / dt if dt > 0 else float(c.queue_length),  # mean_queue_length
                (c.busy_area - p.busy_area) / active_area if active_area > 0 else NAN,  # utilization
                billed,  # worker_seconds
                billed * prices[name],  # cost
            )
        source_arrivals = cur.source_arrivals.copy()
        for name, arrived in prev.source_arrivals.items():
            source_arrivals[name] -= arrived
        latencies = samples.end_to_end()
        snapshot = MetricsSnapshot(
            cur.time,  # time
            dt,  # interval
            stages,
            source_arrivals,
            cur.exits - prev.exits,  # completed
            cur.dropped - prev.dropped,  # drops
            cur.failed - prev.failed,  # failed
            cur.late - prev.late,  # sla_violations
            cur.escapes - prev.escapes,  # escapes
            cur.caught - prev.caught,  # caught
            sum(latencies) / len(latencies) if latencies else NAN,  # mean_latency
            {owner: sim.split(owner) for owner in self.controllable} if self.controllable else {},  # splits
            NAN,  # p95_latency
            cur.in_system,  # items, not a fork's parts: created and not gone
            sim.calendar(cur.time),  # calendar
        )
        if self.percentiles and latencies:
            snapshot.p95_latency = float(np.percentile(latencies, 95))
        if cur.joins:
            snapshot.join_waiting = {name: j.waiting for name, j in cur.joins.items()}
        if cur.classes:  # job classes: lateness priced by class (see JobClass.late_weight)
            snapshot.class_backlog = {n: c.arrived - c.exits - c.dropped - c.failed for n, c in cur.classes.items()}
            units = sum(c.late_units - prev.classes[n].late_units for n, c in cur.classes.items())
            snapshot.sla_violation_units = units
        return snapshot


def envelope_for(scenario: Scenario, max_step: int | None = None, cooldown: float = 0.0) -> SafetyEnvelope:
    """The safety envelope of a scenario: its worker bounds and controllable splits."""
    return SafetyEnvelope(
        bounds={n: StageBounds(s.workers.min, s.workers.max) for n, s in scenario.stages.items()},
        split_targets={o: [b.to for b in s.split] for o, s in scenario.controllable_splits().items()},
        max_step=max_step,
        cooldown=cooldown,
    )


class SimExecutor(Executor):
    """Applies plans to a Simulation through the safety envelope; unchanged values cost nothing."""

    def __init__(self, sim: Simulation, envelope: SafetyEnvelope | None = None):
        self.sim = sim
        self.envelope = envelope or envelope_for(sim.scenario)

    def current_workers(self) -> dict[str, int]:
        workers = {}
        for name, st in self.sim.stages.items():
            workers[name] = st.target
        return workers

    def apply(self, plan: Plan) -> Applied:
        current = self.current_workers()
        applied = self.envelope.constrain(plan, current, self.sim.now)
        stages = self.sim.stages
        for name, n in applied.workers.items():
            if current[name] != n:
                stages[name].set_workers(n)
        for owner, probs in applied.splits.items():
            if self.sim.split(owner) != probs:
                self.sim.set_split(owner, probs)
        return applied


class SimClock(Clock):
    def __init__(self, sim: Simulation):
        self.sim = sim

    def now(self) -> float:
        return self.sim.now

    def advance(self, seconds: float) -> None:
        self.sim.run(self.sim.now + seconds)
