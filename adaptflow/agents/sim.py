"""The simulator side of the agent interfaces: SimMonitor, SimExecutor and SimClock.

SimMonitor reads the model's cumulative counters and differences them, which costs a few
microseconds per stage: a Gymnasium step calls it every decision interval."""

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

    ``percentiles``: also compute the interval's p95 end-to-end latency (a sort per call; the
    evaluation harness wants it, a training env does not)."""

    def __init__(self, sim: Simulation, percentiles: bool = False):
        self.sim = sim
        self.percentiles = percentiles
        self.controllable = list(sim.scenario.controllable_splits())
        self._stages = list(sim.stages.items())
        self._sources = list(sim.sources.items())
        self._prev_time = sim.now
        self._prev_stage = {name: self._stage_counters(st, sim.now) for name, st in self._stages}
        self._prev_sources = {name: src.arrived for name, src in self._sources}
        self._prev_e2e = self._e2e_counters()

    @staticmethod
    def _stage_counters(st, now: float) -> tuple:
        """The stage's cumulative counters at ``now``; ``observe`` differences two of them."""
        st._integrate(now)
        return (
            st.arrivals,
            st.completed,
            st.drops,
            st.failures,
            st.detected,
            len(st.waits),
            st.queue_area(now),
            st.busy_area(now),
            st.active_area,
            st.billed_area,
        )

    def _e2e_counters(self) -> tuple:
        sim = self.sim
        return (sim.exits, sim.dropped, sim.failed, sim.late, sim.escapes, sim.caught, len(sim.e2e_latencies))

    def observe(self) -> MetricsSnapshot:
        # Positional arguments and one pass over the stages: this runs on every env step.
        sim = self.sim
        now = sim.now
        sim.check_deadlines()
        dt = now - self._prev_time
        stages: dict[str, StageMetrics] = {}
        prev_stage, counters = self._prev_stage, self._stage_counters
        in_system = 0
        for name, st in self._stages:
            cur = counters(st, now)
            prev = prev_stage[name]
            prev_stage[name] = cur
            n_waits = cur[5] - prev[5]
            active_area = cur[8] - prev[8]
            billed = cur[9] - prev[9]
            queued, busy = len(st.queue), st.busy
            in_system += queued + busy
            stages[name] = StageMetrics(
                queued,  # queue_length
                busy,
                st.idle + busy,  # active
                st.starting,
                st.target,
                cur[0] - prev[0],  # arrivals
                cur[1] - prev[1],  # completed
                cur[2] - prev[2],  # drops
                cur[3] - prev[3],  # failures
                cur[4] - prev[4],  # detected
                sum(st.waits[prev[5] :]) / n_waits if n_waits else NAN,  # mean_wait
                (cur[6] - prev[6]) / dt if dt > 0 else float(queued),  # mean_queue_length
                (cur[7] - prev[7]) / active_area if active_area > 0 else NAN,  # utilization
                billed,  # worker_seconds
                billed * st.price,  # cost
            )
        sources = {}
        prev_sources = self._prev_sources
        for name, src in self._sources:
            arrived = src.arrived
            sources[name] = arrived - prev_sources[name]
            prev_sources[name] = arrived
        e2e, prev = self._e2e_counters(), self._prev_e2e
        latencies = sim.e2e_latencies[prev[6] :]
        snapshot = MetricsSnapshot(
            now,  # time
            dt,  # interval
            stages,
            sources,  # source_arrivals
            e2e[0] - prev[0],  # completed
            e2e[1] - prev[1],  # drops
            e2e[2] - prev[2],  # failed
            e2e[3] - prev[3],  # sla_violations
            e2e[4] - prev[4],  # escapes
            e2e[5] - prev[5],  # caught
            sum(latencies) / len(latencies) if latencies else NAN,  # mean_latency
            {owner: sim.split(owner) for owner in self.controllable} if self.controllable else {},
            NAN,  # p95_latency
            in_system,
        )
        if self.percentiles and latencies:
            snapshot.p95_latency = float(np.percentile(latencies, 95))
        self._prev_e2e = e2e
        self._prev_time = now
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
