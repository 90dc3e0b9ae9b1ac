"""Where the KEDA scaler's numbers come from: the latest desired workers per stage.

The scaler answers KEDA's questions from a :class:`PlanSource` and nothing else, so that a
request costs a dictionary read and never a decision: KEDA polls on its own clock (its
``pollingInterval``, the HPA's sync period), while an analyzer's forecasts mean something only
at the decision interval it was built for.

* :class:`LatestPlan` holds the latest desired workers, published by whoever decides.
* :class:`DecisionLoop` decides: the Coordinator on a thread of its own, one decision every
  interval, its executor a :class:`PlanPublisher` (the safety envelope, then the plan published
  to a :class:`LatestPlan`; Kubernetes applies it). It is itself a plan source.
* :func:`decision_loop_for` builds one from a planner spec, as ``adaptflow serve`` builds the
  planner service: the primary planner behind a :class:`~adaptflow.runtime.fallback.FallbackPlanner`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from adaptflow.agents.coordinator import ControlLoop, Coordinator, EventLog, Transition
from adaptflow.agents.cost import CostModel
from adaptflow.agents.interfaces import Clock, Executor, Monitor
from adaptflow.agents.safety import SafetyEnvelope
from adaptflow.agents.types import Applied, Plan

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


class PlanPublisher(Executor):
    """The decision loop's executor when KEDA applies the plan: the plan through the safety
    envelope (bounds, largest step, cooldown, relative to the workers last published; splits
    refused, the app routes its own tasks), then published to ``plans``, where the scaler reads
    it. Kubernetes does the rest: the HPA sizes each stage's Deployment from the metric."""

    def __init__(self, plans: LatestPlan, envelope: SafetyEnvelope, clock: Clock):
        self.plans, self.envelope, self.clock = plans, envelope, clock
        self.splits: dict[str, dict[str | None, float]] = {}  # never written: the app routes its tasks

    def current_workers(self) -> dict[str, int]:
        return dict(self.plans.latest().workers)

    def apply(self, plan: Plan) -> Applied:
        applied = self.envelope.constrain_pools(plan, self.current_workers(), self.clock.now())
        for clamp in applied.clamps:
            log.info("safety envelope: %s", clamp)
        self.plans.publish(applied.workers)
        return applied


class DecisionLoop:
    """The Coordinator's loop on a thread of its own, its plans published for KEDA
    (:class:`PlanPublisher`): one decision every interval of its clock (wall time: a cluster runs
    at the scenario's pace), from :meth:`start` to :meth:`stop`. It is itself a plan source,
    the latest published decision. Being the Coordinator, it writes the Coordinator's event log
    (each record once the interval after its decision has been observed) and resets the planner
    and analyzer when it starts.

    A loop that fails (a bug in the monitor or analyzer: a broker outage is the resilient
    monitor's to wait out, :func:`decision_loop_for`) is logged and counted, and starts over
    after an interval from a reset, while the last plan stays published; the scaler's
    ``stale_after`` turns a loop that keeps failing into errors KEDA sees (and answers with its
    ``fallback`` replicas)."""

    def __init__(self, coordinator: Coordinator, plans: LatestPlan):
        self.coordinator, self.plans = coordinator, plans
        self.last: Transition | None = None  # the latest decision with the interval that followed it
        self.failures = 0  # times the loop failed, since it was made
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def interval(self) -> float:
        return self.coordinator.loop.interval

    # -- a plan source ---------------------------------------------------------------------------
    @property
    def stages(self) -> tuple[str, ...]:
        return self.plans.stages

    def latest(self) -> Desired:
        return self.plans.latest()

    def wait_newer(self, version: int, timeout: float) -> Desired:
        return self.plans.wait_newer(version, timeout)

    # -- deciding --------------------------------------------------------------------------------
    def decisions(self, until: float = math.inf) -> Iterator[Transition]:
        """The Coordinator's decisions until its clock reaches ``until``, each published as it is
        made and kept as :attr:`last` once its interval is observed."""
        for step in self.coordinator.steps(until):
            self.last = step
            yield step

    def start(self) -> DecisionLoop:
        """Decide now and every interval on a daemon thread, until :meth:`stop`."""
        if self._thread is not None:
            raise RuntimeError("the decision loop is already started")
        self._thread = threading.Thread(target=self._run, name="adaptflow-keda-decide", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop deciding: the clock's wait is cut short (a decision in progress finishes first)."""
        self._stop.set()
        self.coordinator.loop.clock.interrupt()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for _ in self.decisions():
                    if self._stop.is_set():
                        return
            except Exception as exc:  # the scaler must outlive a bug: KEDA falls back on its own
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("the decision loop failed (%s); KEDA keeps reading the last plan", self.last_error)
                self._stop.wait(self.interval)


def decision_loop_for(
    planner: str,
    scenario: Scenario,
    interval: float,
    monitor: Monitor,
    *,
    clock: Clock | None = None,
    resilient: bool = False,
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
    not run SimPy; an exported planner carries its fitted analyzer.

    ``clock``: the monitor's (a live monitor stamps its snapshots with its own clock, and a
    decision's time must be on the same one); a new :class:`~adaptflow.runtime.live.WallClock`
    if None. ``resilient``: the monitor is a live :class:`~adaptflow.runtime.live.CeleryMonitor`
    (as :func:`~adaptflow.runtime.user_app.observe_app` builds), made resilient as ``adaptflow
    control``'s is: through a broker outage it retries with backoff, the last plan stays
    published (and goes stale for KEDA), and the record after the outage says how long."""
    from adaptflow.agents.safety import envelope_for
    from adaptflow.runtime.fallback import live_planner
    from adaptflow.runtime.live.clock import WallClock

    guarded, _, analyzer = live_planner(planner, scenario, interval, fallback)
    plans, the_clock = LatestPlan.for_scenario(scenario), clock or WallClock()
    executor: Executor = PlanPublisher(plans, envelope_for(scenario, max_step=max_step, cooldown=cooldown), the_clock)
    if resilient:
        from adaptflow.runtime.live.outage import ResilientExecutor, ResilientMonitor

        executor = ResilientExecutor(executor)  # type: ignore[arg-type]  # duck-typed: current_workers(), splits
        monitor = ResilientMonitor(monitor, executor, backoff_cap=max(0.5, min(5.0, interval)))  # type: ignore[arg-type]
    loop = ControlLoop(monitor, analyzer, executor, the_clock, CostModel(), interval)
    return DecisionLoop(Coordinator(loop, guarded, event_log), plans)
