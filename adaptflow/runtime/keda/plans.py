"""Where the KEDA scaler's numbers come from: the latest desired workers per stage.

The scaler answers KEDA's questions from a :class:`PlanSource` and nothing else, so that a
request costs a dictionary read and never a decision: KEDA polls on its own clock (its
``pollingInterval``, the HPA's sync period), while an analyzer's forecasts mean something only
at the decision interval it was built for.

* :class:`LatestPlan` holds the latest desired workers, published by whoever decides.
* :class:`DecisionLoop` decides: the Coordinator's loop (observe, analyze, plan, apply the
  safety envelope) with Kubernetes as the executor, one decision every interval on a thread of
  its own, each published to its :class:`LatestPlan`. It is itself a plan source.
* :func:`decision_loop_for` builds one from a planner spec, as ``adaptflow serve`` builds the
  planner service: the primary planner behind a :class:`~adaptflow.runtime.fallback.FallbackPlanner`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from adaptflow.agents.coordinator import EventLog, Transition
from adaptflow.agents.cost import CostModel
from adaptflow.agents.interfaces import Analyzer, Monitor, Planner
from adaptflow.agents.safety import SafetyEnvelope
from adaptflow.agents.types import Applied, Insights, MetricsSnapshot, Plan

if TYPE_CHECKING:
    from adaptflow.scenario import Scenario

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Desired:
    """The latest decision as the scaler reads it: ``workers`` for every stage, its ``version``
    (0: nothing decided yet, the scenario's initial pools; one more per decision) and when it was
    published (``time.monotonic()``), from which the scaler tells a stalled decision loop."""

    workers: Mapping[str, int]
    version: int
    at: float


class PlanSource(Protocol):
    """What :class:`~adaptflow.runtime.keda.scaler.KedaScaler` reads: constant-time calls."""

    @property
    def stages(self) -> tuple[str, ...]: ...

    def latest(self) -> Desired: ...

    def wait_newer(self, version: int, timeout: float) -> Desired:
        """The latest decision once its version is above ``version``, or after ``timeout`` seconds."""
        ...


def _count(stage: str, value: object) -> int:
    """A worker count as published: a whole number, not negative (a bool is a bug, not a count)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value != int(value):
        raise ValueError(f"workers[{stage!r}] = {value!r}; expected a whole number >= 0")
    if value < 0:
        raise ValueError(f"workers[{stage!r}] = {value!r}; expected a whole number >= 0")
    return int(value)


class LatestPlan:
    """The latest desired workers of every stage, safe to read from the scaler's threads while
    one decider publishes. A stage a publication leaves out keeps its value, as a
    :class:`~adaptflow.agents.types.Plan` that leaves a stage out keeps its current setting."""

    def __init__(self, initial: Mapping[str, int]):
        if not initial:
            raise ValueError("initial workers name no stage; expected at least one stage")
        workers = {stage: _count(stage, n) for stage, n in initial.items()}
        self._stages = tuple(workers)
        self._changed = threading.Condition()
        self._desired = Desired(MappingProxyType(workers), 0, time.monotonic())

    @classmethod
    def for_scenario(cls, scenario: Scenario) -> LatestPlan:
        """Before the first decision, the scenario's initial pools."""
        return cls({name: stage.workers.initial for name, stage in scenario.stages.items()})

    @property
    def stages(self) -> tuple[str, ...]:
        return self._stages

    def latest(self) -> Desired:
        return self._desired  # one attribute read: a Desired is replaced whole, never changed

    def publish(self, workers: Mapping[str, int]) -> Desired:
        """A new decision: these stages' desired workers (others keep theirs)."""
        unknown = [stage for stage in workers if stage not in self._desired.workers]
        if unknown:
            raise KeyError(f"workers name stages {unknown}; expected some of {list(self._stages)}")
        counts = {stage: _count(stage, n) for stage, n in workers.items()}
        with self._changed:
            merged = {**self._desired.workers, **counts}
            self._desired = Desired(MappingProxyType(merged), self._desired.version + 1, time.monotonic())
            self._changed.notify_all()
            return self._desired

    def wait_newer(self, version: int, timeout: float) -> Desired:
        with self._changed:
            self._changed.wait_for(lambda: self._desired.version > version, timeout=max(0.0, timeout))
            return self._desired


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision of a :class:`DecisionLoop`: what it saw, what the planner asked for, what
    the envelope let through, and what was published."""

    snapshot: MetricsSnapshot
    insights: Insights
    plan: Plan
    applied: Applied
    desired: Desired


class DecisionLoop:
    """The Coordinator's loop with Kubernetes as the executor: every ``interval`` seconds (wall
    time: a cluster runs at the scenario's pace) observe, analyze, plan, constrain the plan by
    the safety envelope (bounds, largest step, cooldown, relative to the workers last published)
    and publish it; KEDA and the HPA apply it. As the Coordinator, it resets the planner, the
    analyzer and the envelope when it starts, and runs the analyzer exactly once per interval.

    A decision that fails (the monitor cannot read the world, a bug) is logged and counted, and
    the last plan stays published; the scaler's ``stale_after`` turns a loop that keeps failing
    into errors KEDA sees (and answers with its ``fallback`` replicas).

    ``event_log``: each decision as the Coordinator logs one (:class:`~adaptflow.agents.Transition`'s
    record: what was seen and planned, what the envelope let through, and the interval that
    followed, priced by the cost model), written once the next decision has observed that
    interval; the last decision before a stop has no interval and no record, as in the
    Coordinator's log."""

    def __init__(
        self,
        monitor: Monitor,
        analyzer: Analyzer,
        planner: Planner,
        envelope: SafetyEnvelope,
        interval: float,
        plans: LatestPlan,
        event_log: EventLog | None = None,
        cost_model: CostModel | None = None,
    ):
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"interval must be a positive number of seconds; got {interval}")
        self.monitor, self.analyzer, self.planner, self.envelope = monitor, analyzer, planner, envelope
        self.interval, self.plans = interval, plans
        self.event_log, self.cost_model = event_log, cost_model or CostModel()
        self.last: Decision | None = None
        self._unlogged: Decision | None = None  # the decision whose interval is still under way
        self.failures = 0  # decisions that failed, since the loop was made
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- a plan source ---------------------------------------------------------------------------
    @property
    def stages(self) -> tuple[str, ...]:
        return self.plans.stages

    def latest(self) -> Desired:
        return self.plans.latest()

    def wait_newer(self, version: int, timeout: float) -> Desired:
        return self.plans.wait_newer(version, timeout)

    # -- deciding --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the past, as the Coordinator does at the start of a run."""
        self.planner.reset()
        self.analyzer.reset()
        self.envelope.reset()
        self._unlogged = None

    def tick(self) -> Decision:
        """One decision, published; raises what the monitor, analyzer or planner raised."""
        snapshot = self.monitor.observe()
        insights = self.analyzer.analyze(snapshot)
        self._log_interval(snapshot, insights)
        plan = self.planner.plan(snapshot, insights)
        applied = self.envelope.constrain(plan, dict(self.plans.latest().workers), time.monotonic())
        if applied.clamps:
            log.info("envelope: %s", "; ".join(applied.clamps))
        self.last = self._unlogged = Decision(snapshot, insights, plan, applied, self.plans.publish(applied.workers))
        return self.last

    def _log_interval(self, snapshot: MetricsSnapshot, insights: Insights) -> None:
        """The record of the decision before this one, now that its interval (``snapshot``) is
        known: the Coordinator's record, so that one reader serves every loop's log."""
        before, self._unlogged = self._unlogged, None
        if self.event_log is None or before is None:
            return
        cost = self.cost_model.components(snapshot)
        step = Transition(before.snapshot.time, before.plan, before.applied, snapshot, cost, insights)
        self.event_log.write(step.to_record(decision_insights=before.insights))

    def step(self) -> Decision | None:
        """One decision as the loop's thread makes it: a failure is logged and counted (None),
        and the last published plan stays."""
        try:
            return self.tick()
        except Exception as exc:  # the loop must outlive a monitor outage or a planner's bug
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("decision failed (%s); KEDA keeps reading the last plan", self.last_error)
            return None

    def start(self) -> DecisionLoop:
        """Reset, then decide now and every ``interval`` seconds on a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("the decision loop is already started")
        self.reset()
        self._thread = threading.Thread(target=self._run, name="adaptflow-keda-decide", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop deciding: wakes the thread at once (a decision in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        """Decide on a fixed grid (start + k x interval), so the time a decision takes does not
        shift the next; after a stall longer than an interval the grid restarts from now."""
        due = time.monotonic()
        while not self._stop.is_set():
            self.step()
            due = max(due + self.interval, time.monotonic())
            self._stop.wait(due - time.monotonic())


def decision_loop_for(
    planner: str,
    scenario: Scenario,
    interval: float,
    monitor: Monitor,
    *,
    fallback: str = "erlang",
    max_step: int | None = None,
    cooldown: float = 0.0,
    event_log: EventLog | None = None,
) -> DecisionLoop:
    """The decision loop of a planner spec (``erlang``, ``onnx:PATH``, ...) over ``monitor``:
    the primary behind a :class:`FallbackPlanner` with the rule ``fallback`` (which also guards a
    learned planner outside its training range), the analyzer the planner carries or an EWMA one,
    and the scenario's envelope with ``max_step`` and ``cooldown``. A planner whose forecaster
    must be fitted by simulation (Holt-Winters for a rule) is refused: the runtime's scaler does
    not run SimPy; an exported planner carries its fitted analyzer."""
    from adaptflow.agents.safety import envelope_for
    from adaptflow.runtime.fallback import live_planner

    guarded, _, analyzer = live_planner(planner, scenario, interval, fallback)
    envelope = envelope_for(scenario, max_step=max_step, cooldown=cooldown)
    plans = LatestPlan.for_scenario(scenario)
    return DecisionLoop(monitor, analyzer, guarded, envelope, interval, plans, event_log=event_log)
