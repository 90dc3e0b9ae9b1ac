"""``adaptflow control``: the decision loop over a user's Celery app, for as long as it is asked to run.

The loop is the one every world runs (monitor on the app's events through its mapping, analyzer,
the planner behind its fallback rule, the safety envelope, a Coordinator writing the event log);
what differs is how a plan reaches the workers, chosen by ``executor`` (docs/deploy.md, step 4):

* ``autoscaler``: the loop publishes each stage's desired workers to Redis
  (:class:`~.autoscaler.RedisPlanPublisher`) and each worker, run with ``--autoscale`` and
  ``worker_autoscaler = adaptflow.runtime.autoscaler:PlannedAutoscaler``, follows it with
  Celery's own machinery, handing back to Celery's rule when the plan goes stale.
* ``central``: the loop resizes each mapped worker itself with ``pool_grow`` / ``pool_shrink``
  (:class:`~.live.CeleryExecutor`, as ``compare-app`` and ``adaptflow live`` do), for workers
  run without ``--autoscale``: nothing to install in the workers, but a decider that stops leaves
  the pools where it last put them.
* ``shadow``: nothing reaches the workers (:class:`ShadowExecutor`). The planner decides on the
  live app as it would in control, and the event log keeps what it asked, what the envelope would
  have let through, and the pools the app's own sizing (its ``--autoscale``, KEDA, fixed pools)
  kept: a learned planner watched beside the system before it is given the pools.

The first two refuse a stage run as a group of nodes (``enrich@*``): one count a stage cannot
size pods; shadow only reads, and reads a group as one pool.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from adaptflow._signals import sigterm_as_interrupt
from adaptflow.agents import Applied, Clock, ControlLoop, Coordinator, CostModel, EventLog, Executor, Plan

if TYPE_CHECKING:
    from pathlib import Path

    from celery import Celery

    from adaptflow.agents.safety import SafetyEnvelope
    from adaptflow.scenario import Scenario

    from .live import CeleryMonitor, PoolLedger
    from .live.events import EventStream
    from .live.mapping import AppMapping

ExecutorKind = Literal["autoscaler", "central", "shadow"]
EXECUTORS: tuple[ExecutorKind, ...] = ("autoscaler", "central", "shadow")
MAX_DURATION = 7 * 86400  # a week: the work a command may ask for is bounded


@dataclass
class AppControl:
    """The decision loop of a user's app: run it with ``coordinator.steps(until=seconds)`` (one
    decision every interval, an event log record each if one was given); the parts are here to
    be looked at. ``executor`` is the inner one: the Redis publisher, the central executor or the
    shadow one."""

    coordinator: Coordinator
    executor: Executor
    monitor: CeleryMonitor
    ledger: PoolLedger


class ShadowExecutor(Executor):
    """Applies nothing: each plan goes through the envelope relative to the pools the workers
    run now (read by the monitor; sized by whatever sizes them), and the record keeps those pools
    as applied, with a note per stage the loop would have changed (``shadow: enrich would be 3
    (asked 4), kept at 1``). The envelope's cooldown counts the changes it would have made, so
    the notes are what the loop in control would have done from the same pools. ``differed``:
    the decisions at which it would have changed a pool."""

    def __init__(self, ledger: PoolLedger, envelope: SafetyEnvelope, clock: Clock):
        self.ledger, self.envelope, self.clock = ledger, envelope, clock
        self.splits: dict[str, dict[str | None, float]] = {}  # the app routes its own tasks
        self.differed = 0

    def current_workers(self) -> dict[str, int]:
        return self.ledger.targets()

    def apply(self, plan: Plan) -> Applied:
        current = self.current_workers()
        would = self.envelope.constrain_pools(plan, current, self.clock.now())
        notes = [
            f"shadow: {stage} would be {n} (asked {plan.workers[stage]}), kept at {current[stage]}"
            for stage, n in would.workers.items()
            if n != current[stage]
        ]
        self.differed += bool(notes)
        return Applied(workers=current, splits={}, clamps=[*would.clamps, *notes])


def check_executor(executor: str) -> None:
    """Refuse an executor kind this module does not build, naming it and the kinds it does."""
    if executor not in EXECUTORS:
        raise ValueError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")


def _refuse_autoscaled(ledger: PoolLedger) -> None:
    """The central executor's resizes would be undone by a worker's own autoscaler: refused,
    one line naming each such worker, before the loop sends anything."""
    autoscaled = sorted(pool.worker for pool in ledger.pools.values() if pool.autoscaler)
    if autoscaled:
        problems = [
            f"worker {worker!r} runs --autoscale: --executor central resizes its pool itself, and the "
            "worker's autoscaler would undo each resize; run it without --autoscale, or use --executor autoscaler"
            for worker in autoscaled
        ]
        raise ValueError("\n".join(problems))


def app_control(
    app: Celery,
    mapping: AppMapping,
    scenario: Scenario,
    planner: str,
    interval: float,
    stream: EventStream,
    *,
    executor: ExecutorKind = "autoscaler",
    key: str | None = None,
    fallback: str = "erlang",
    max_step: int | None = None,
    cooldown: float = 0.0,
    event_log: str | Path | None = None,
    inspect_timeout: float = 2.0,
) -> AppControl:
    """The Coordinator over a user's app (its events through ``mapping``, read from ``stream``,
    which the caller has started) with the planner spec ``planner`` (``erlang``, ``onnx:PATH``,
    ...) behind a :class:`~.fallback.FallbackPlanner` with the rule ``fallback``, its plans
    reaching the workers by ``executor`` (module docstring), inside a
    :class:`~.live.outage.ResilientExecutor`. The mapping must name each stage's worker (the pools
    are read from them; a group of nodes, ``enrich@*``, only in shadow). ``interval``: wall
    seconds (a user's app runs at its own pace); ``key``: the Redis hash the autoscaler path
    publishes to (its default, ``adaptflow:desired``)."""
    from .fallback import live_planner
    from .live import CeleryMonitor, PoolLedger, ResilientExecutor, ResilientMonitor, WallClock, live_envelope
    from .live.system import app_system

    check_executor(executor)
    mapping.require_workers(scenario.stages)
    if executor != "shadow":
        mapping.require_named_workers(f"adaptflow control --executor {executor} sizes one named worker per stage")
    guarded, _, analyzer = live_planner(planner, scenario, interval, fallback)
    # a group's nodes by their heartbeats (only shadow accepts a group; named nodes never read it)
    clock, ledger = WallClock(), PoolLedger(app, mapping.workers(), timeout=inspect_timeout, roster=stream.alive_nodes)
    ledger.sync()
    envelope = live_envelope(scenario, max_step=max_step, cooldown=cooldown)
    inner = _executor(executor, app, ledger, envelope, clock, scenario, interval, key, inspect_timeout)
    resilient_executor = ResilientExecutor(inner)  # type: ignore[arg-type]  # duck-typed: current_workers(), splits
    system = app_system(app, mapping, scenario, stream)
    monitor = CeleryMonitor(app, ledger, clock, percentiles=True, inspect_timeout=inspect_timeout, system=system)
    resilient = ResilientMonitor(monitor, resilient_executor, backoff_cap=max(0.5, min(5.0, interval)))
    loop = ControlLoop(resilient, analyzer, resilient_executor, clock, CostModel(), interval)
    log_file = EventLog(event_log) if event_log is not None else None
    return AppControl(Coordinator(loop, guarded, log_file), inner, monitor, ledger)


def _executor(
    kind: ExecutorKind,
    app: Celery,
    ledger: PoolLedger,
    envelope: SafetyEnvelope,
    clock: Clock,
    scenario: Scenario,
    interval: float,
    key: str | None,
    inspect_timeout: float,
) -> Executor:
    """How the loop's plans reach the workers (the module docstring's three kinds)."""
    from .autoscaler import DEFAULT_KEY, RedisPlanPublisher
    from .celery_app import redis_client
    from .live import CeleryExecutor

    if kind == "shadow":
        return ShadowExecutor(ledger, envelope, clock)
    if kind == "central":
        _refuse_autoscaled(ledger)
        return CeleryExecutor(app, ledger, clock, envelope, inspect_timeout, scenario=scenario)
    plans = redis_client(str(app.conf.broker_url))
    return RedisPlanPublisher(plans, scenario, interval, envelope, key or DEFAULT_KEY, clock)


def run_app_control(
    app: str,
    mapping: str | Path,
    scenario: str | Path,
    planner: str,
    interval: float,
    duration: float,
    **options: Any,
) -> tuple[int, int | None]:
    """``adaptflow control``: check the arguments, import the app, load mapping and scenario,
    receive its events and run the decision loop for ``duration`` seconds (Ctrl-C or SIGTERM stop
    it sooner); returns how many decisions it made and, in shadow, at how many it would have
    changed a pool (None otherwise). ``options``: those of :func:`app_control`, and
    ``allow_pickle`` (a planner whose model file is a pickle, ``sb3:``, is refused without it,
    before anything is opened: a deployment path loads only formats that cannot run code).
    The decisions are taken one at a time and none is kept (the event log has them): a week of
    them would fill the memory (:meth:`~adaptflow.agents.Coordinator.steps`)."""
    from adaptflow.policies.registry import check_trusted
    from adaptflow.scenario import load_scenario

    from .live.events import EventStream
    from .live.mapping import load_mapping
    from .record import load_app

    if not interval > 0:
        raise ValueError(f"--interval {interval}: expected seconds > 0")
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"--duration {duration}: expected seconds in (0, {MAX_DURATION}] (a week)")
    check_executor(options.get("executor", "autoscaler"))
    allow_pickle = options.pop("allow_pickle", False)
    check_trusted([planner, options.get("fallback", "erlang")], allow_pickle, command="control with")
    the_mapping, the_scenario, the_app = load_mapping(mapping), load_scenario(scenario), load_app(app)
    stream = EventStream(the_app).start()
    decisions, control = 0, None
    try:
        control = app_control(the_app, the_mapping, the_scenario, planner, interval, stream, **options)
        with sigterm_as_interrupt(), contextlib.suppress(KeyboardInterrupt):  # SIGTERM stops as Ctrl-C does
            for _ in control.coordinator.steps(until=duration):
                decisions += 1
        shadow = control.executor if isinstance(control.executor, ShadowExecutor) else None
        return decisions, None if shadow is None else shadow.differed
    finally:
        stream.stop()
        if control is not None and control.coordinator.log is not None:
            control.coordinator.log.close()


__all__ = ["EXECUTORS", "AppControl", "ShadowExecutor", "app_control", "run_app_control"]
