"""The live monitor: reads the run's event stream and the workers, feeds the records to the
:class:`~.fold.EventFold`, reconciles the pools and builds the :class:`MetricsSnapshot`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from celery import Celery

from adaptflow.agents import MetricsSnapshot, Monitor, StageMetrics

from .clock import WallClock
from .fold import EventFold, Interval, LiveTotals, Record, StageInterval
from .ledger import PoolLedger
from .system import LiveSystem, builtin_system

NAN = math.nan


@dataclass
class _Reading:
    """Everything one ``observe`` reads from the broker and the workers, read before any state changes."""

    stats: dict[str, dict]
    active: dict[str, list[dict]]  # worker -> its running tasks
    queued: dict[str, int]  # stage -> queue length plus its worker's reserved messages
    splits: dict[str, dict[str | None, float]]
    records: list[Record] = field(default_factory=list)
    in_system: int | None = None  # items in the system, when the system knows (a DAG's)
    join_waiting: dict[str, int] = field(default_factory=dict)  # parts waiting per join


class CeleryMonitor(Monitor):
    """Metrics of the interval since the last ``observe``, as :class:`~adaptflow.agents.SimMonitor`
    fills them: queue length now (the broker's length of the stage's queues plus the messages its
    worker has reserved), busy workers (inspect's active tasks), the reconciled pool (active,
    starting, target), counts of the interval (arrivals, completions, failures, drops, validation
    flags), mean wait, time-average queue length, utilization (busy / ready worker time), worker
    time and its cost, end-to-end latency and SLA violations (counted when the deadline passes, as
    in simulation). In a DAG scenario (fork and join), ``in_system`` counts items, not parts, and
    ``join_waiting`` the parts waiting at each join now, both read from the run's Redis (see
    :class:`~adaptflow.runtime.celery_app.JoinStore`), as SimMonitor fills them.

    What it reads comes from a :class:`~.system.LiveSystem`: adaptflow's own app (its tasks'
    Redis stream, quality escapes known from the load generator's synthetic quality) or any
    user's app (Celery's event stream, through the app's mapping). ``app``: the Celery app to
    inspect; its system is adaptflow's own unless ``system`` is given. ``empty_start``: the
    first observation (the loop's start) reports interval 0, as the simulator's at t=0 does.

    Every broker read happens before any state changes, so an observe that fails in an outage
    can be retried as a whole."""

    def __init__(
        self,
        app: Celery,
        ledger: PoolLedger,
        clock: WallClock,
        percentiles: bool = False,
        inspect_timeout: float = 2.0,
        system: LiveSystem | None = None,
        empty_start: bool = False,
    ):
        self.app, self.ledger, self.clock = app, ledger, clock
        self.system = system or builtin_system(app)
        self.scenario = self.system.scenario
        self.scale = self.system.time_scale
        if abs(clock.time_scale - self.scale) > 1e-12:
            raise ValueError(f"clock time_scale {clock.time_scale} != the app's {self.scale}")
        self.percentiles, self.inspect_timeout = percentiles, inspect_timeout
        self.fold = EventFold(
            self.scenario.stages, self.scenario.sources, self.scenario.sla, self.scale, clock.start, time.time()
        )
        self.last_peaks: dict[str, int] = {}  # most tasks measured running at once, last interval
        self.last_interval: Interval | None = None  # what the fold made of the last interval
        self._prev_active = {stage: p.active for stage, p in ledger.pools.items()}
        self._starting_from: dict[str, int] = {}  # starting processes as the interval began
        self._first = empty_start  # the loop's start observation reports an empty interval

    @property
    def totals(self) -> LiveTotals:
        """Whole-run figures (the fold's)."""
        return self.fold.totals

    def lost_events(self) -> list[str]:
        """A line for each time the last interval's events may have been lost (the event stream
        cut by a broker restart, or its buffer full: :class:`~.events.EventStream`'s gaps), its
        times in scenario seconds: that interval's counts miss them, and whoever logs the
        interval says so rather than passing the counts off as whole. Empty for adaptflow's own
        app, whose records wait in a Redis stream."""
        interval = self.last_interval
        if interval is None:
            return []
        lines = []
        for gap in self.system.gaps():
            if gap.start < interval.end and (gap.end is None or gap.end > interval.start):
                until = "not back yet" if gap.end is None else f"to t={self.clock.to_scenario(gap.end):.1f}"
                lines.append(
                    f"events lost from t={self.clock.to_scenario(gap.start):.1f} {until} ({gap.reason}): "
                    f"the interval to t={self.clock.to_scenario(interval.end):.1f} counts none of them"
                )
        return lines

    # -- reading (no state changes) --------------------------------------------------------------
    def _read(self) -> _Reading:
        # each stage's node, or its group of nodes merged (nodes.py), in one round of inspect
        stats, active, reserved = self.ledger.nodes.read("stats", "active", "reserved", timeout=self.inspect_timeout)
        lengths, workers = self.system.queue_lengths(), self.ledger.workers
        queued = {
            name: lengths.get(name, 0) + len(reserved.get(workers.get(name, ""), []) or [])
            for name in self.scenario.stages
        }
        reading = _Reading(stats, active, queued, self.system.splits())
        if self.system.in_system is not None:
            reading.in_system = self.system.in_system()
        if self.system.join_waiting is not None:
            reading.join_waiting = self.system.join_waiting()
        reading.records = self.system.records.read()  # last: the in-memory feeds change state here
        return reading

    # -- the interval ----------------------------------------------------------------------------
    def observe(self) -> MetricsSnapshot:
        reading = self._read()
        # -- nothing above changed any state: an outage there leaves the monitor as it was --
        now = time.time()
        for record in reading.records:
            self.fold.add(record, now)
        self.system.records.advance()
        tasks = {name: reading.active.get(self.ledger.workers.get(name, "")) for name in self.scenario.stages}
        active_ids = {name: None if t is None else {task.get("id") for task in t} for name, t in tasks.items()}
        interval = self.fold.close(now, reading.queued, active_ids)
        running = {
            name: len(tasks[name]) if tasks[name] is not None else st.running for name, st in interval.stages.items()
        }
        peaks = {name: st.peak for name, st in interval.stages.items()}
        # Processes starting as the interval began: the target the executor applied right after
        # the last observe, less the processes ready then (a grow is a step up at the interval's
        # start, not a ramp from the level before it).
        self._starting_from = {
            n: max(0, p.target - self._prev_active.get(n, p.target)) for n, p in self.ledger.pools.items()
        }
        dt = interval.end - interval.start
        mean_queue = {n: st.queue_area / dt if dt > 0 else 0.0 for n, st in interval.stages.items()}
        self.ledger.reconcile(reading.stats, running, peaks, interval.start, mean_queue)
        self.last_peaks, self.last_interval = peaks, interval
        stages = {
            name: self._stage_metrics(name, st, interval, reading.queued[name], running[name])
            for name, st in interval.stages.items()
        }
        self._prev_active = {n: p.active for n, p in self.ledger.pools.items()}
        for pool in self.ledger.pools.values():  # billed above: the next interval starts at its end
            pool.forget_before(interval.start)
        return self._snapshot(interval, stages, reading)

    def _stage_metrics(self, name: str, st: StageInterval, interval: Interval, queued: int, busy: int) -> StageMetrics:
        """One stage's metrics: the fold's tallies, priced on the pool's target over the interval
        (what is billed), with utilization over the ready part of it. The starting part is the
        trapezoid between the processes starting as the interval began and those starting at its
        end (grown processes start at a pool tick, at a time the worker does not report). Taking
        the level *before* the last grow as the start (as before) halved the starting area of an
        interval that began with a grow: one process running flat out on a pool grown from 1 to
        2 read utilization 0.67, which the HPA rule (target 0.7) took for 'no change'."""
        t0, now = interval.start, interval.end
        dt, scale = now - t0, self.scale
        pool = self.ledger.pools.get(name)
        price = self.scenario.stages[name].workers.cost_per_second
        billed = pool.integral(t0, now) if pool else 0.0
        starting_area = 0.5 * (self._starting_from.get(name, 0) + (pool.starting if pool else 0)) * dt
        active_area = max(0.0, billed - starting_area)
        return StageMetrics(
            queue_length=queued,
            busy=busy,
            active=pool.active if pool else 0,
            starting=pool.starting if pool else 0,
            target=pool.target if pool else 0,
            arrivals=st.arrivals,
            completed=st.completed,
            drops=st.drops,
            failures=st.failures,
            detected=st.detected,
            mean_wait=st.mean_wait,
            mean_queue_length=st.queue_area / dt if dt > 0 else float(queued),
            utilization=st.busy_area / active_area if active_area > 0 else NAN,
            worker_seconds=billed * scale,
            cost=billed * scale * price,
        )

    def _snapshot(self, interval: Interval, stages: dict[str, StageMetrics], reading: _Reading) -> MetricsSnapshot:
        # With empty_start, the loop's first observation reports interval 0, as the simulator's
        # at t=0 does: it covers only the moments since the clock started, and a rate over such a
        # sliver (0, or a few arrivals over milliseconds) seeded the analyzer's forecasts with
        # noise (measured: the EWMA rate read 3.4/s after the first 10 s of 11.4/s, and the Erlang
        # planner asked for 5 workers where the simulated one asked for 13). Its counts are kept.
        span, self._first = (0.0 if self._first else interval.end - interval.start), False
        snapshot = MetricsSnapshot(
            time=self.clock.to_scenario(interval.end),
            interval=span * self.scale,
            stages=stages,
            source_arrivals=dict(interval.sources),
            completed=interval.completed,
            drops=interval.drops,
            failed=interval.failed,
            sla_violations=interval.late,
            escapes=interval.escapes,
            caught=interval.caught,
            mean_latency=interval.mean_latency,
            splits=reading.splits,
            # items, not a fork's parts (as SimMonitor's): a DAG's system counts them in Redis
            in_system=sum(s.queue_length + s.busy for s in stages.values())
            if reading.in_system is None
            else reading.in_system,
            join_waiting=dict(reading.join_waiting),
        )
        if self.percentiles and interval.latencies:
            snapshot.p95_latency = float(np.percentile(interval.latencies, 95))
        return snapshot
