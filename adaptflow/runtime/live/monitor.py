"""The live monitor: reads the run's event stream and the workers, feeds the records to the
:class:`~.fold.EventFold`, reconciles the pools and builds the :class:`MetricsSnapshot`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from celery import Celery

from adaptflow.agents import MetricsSnapshot, Monitor, StageMetrics

from ..celery_app import LiveContext, context_of
from .clock import WallClock
from .fold import EventFold, Interval, LiveTotals, StageInterval
from .ledger import PoolLedger

NAN = math.nan


@dataclass
class _Reading:
    """Everything one ``observe`` reads from Redis and the workers, read before any state changes."""

    events: list[tuple[str, dict[str, str]]]
    stats: dict[str, dict]
    active: dict[str, list[dict]]  # worker -> its running tasks
    queued: dict[str, int]  # stage -> queue length plus its worker's reserved messages
    splits: dict[str, dict[str | None, float]]


class CeleryMonitor(Monitor):
    """Metrics of the interval since the last ``observe``, as :class:`~adaptflow.agents.SimMonitor`
    fills them: queue length now (LLEN of the stage's queue plus the messages its worker has
    reserved), busy workers (inspect's active tasks), the reconciled pool (active, starting,
    target), counts of the interval (arrivals, completions, failures, drops, validation flags),
    mean wait, time-average queue length, utilization (busy / ready worker time), worker time and
    its cost, end-to-end latency and SLA violations (counted when the deadline passes, as in
    simulation). Quality escapes are known live too: the load generator's items carry their
    synthetic quality.

    Every Redis and broker read happens before any state changes, so an observe that fails in an
    outage can be retried as a whole."""

    def __init__(
        self,
        app: Celery,
        ledger: PoolLedger,
        clock: WallClock,
        percentiles: bool = False,
        inspect_timeout: float = 2.0,
    ):
        self.app, self.ledger, self.clock = app, ledger, clock
        self.context: LiveContext = context_of(app)
        self.scenario = self.context.scenario
        self.scale = self.context.time_scale
        if abs(clock.time_scale - self.scale) > 1e-12:
            raise ValueError(f"clock time_scale {clock.time_scale} != the app's {self.scale}")
        self.percentiles, self.inspect_timeout = percentiles, inspect_timeout
        last = self.context.client.xrevrange(self.context.events_key, count=1)
        self._last_id = last[0][0] if last else "0-0"
        self.fold = EventFold(
            self.scenario.stages, self.scenario.sources, self.scenario.sla, self.scale, clock.start, time.time()
        )
        self.last_peaks: dict[str, int] = {}  # most tasks measured running at once, last interval
        self.last_interval: Interval | None = None  # what the fold made of the last interval
        self._prev_starting = {stage: p.starting for stage, p in ledger.pools.items()}

    @property
    def totals(self) -> LiveTotals:
        """Whole-run figures (the fold's)."""
        return self.fold.totals

    # -- reading (no state changes) --------------------------------------------------------------
    def _read_events(self) -> list[tuple[str, dict[str, str]]]:
        out, start = [], f"({self._last_id}"
        client, key = self.context.client, self.context.events_key
        while True:
            batch = client.xrange(key, min=start, max="+", count=10_000)
            out += batch
            if len(batch) < 10_000:
                return out
            start = f"({batch[-1][0]}"

    def _read(self) -> _Reading:
        events = self._read_events()
        names = list(self.ledger.workers.values())
        inspect = self.app.control.inspect(destination=names, timeout=self.inspect_timeout)
        stats, active, reserved = inspect.stats() or {}, inspect.active() or {}, inspect.reserved() or {}
        client, workers = self.context.client, self.ledger.workers
        queued = {
            name: client.llen(name) + len(reserved.get(workers.get(name, ""), []) or [])
            for name in self.scenario.stages
        }
        return _Reading(events, stats, active, queued, self.context.splits.read_all())

    # -- the interval ----------------------------------------------------------------------------
    def observe(self) -> MetricsSnapshot:
        reading = self._read()
        # -- nothing above changed any state: an outage there leaves the monitor as it was --
        now = time.time()
        for event_id, record in reading.events:
            self.fold.add(record, now)
            self._last_id = event_id
        tasks = {name: reading.active.get(self.ledger.workers.get(name, "")) for name in self.scenario.stages}
        active_ids = {name: None if t is None else {task.get("id") for task in t} for name, t in tasks.items()}
        interval = self.fold.close(now, reading.queued, active_ids)
        running = {
            name: len(tasks[name]) if tasks[name] is not None else st.running for name, st in interval.stages.items()
        }
        peaks = {name: st.peak for name, st in interval.stages.items()}
        dt = interval.end - interval.start
        mean_queue = {n: st.queue_area / dt if dt > 0 else 0.0 for n, st in interval.stages.items()}
        self.ledger.reconcile(reading.stats, running, peaks, interval.start, mean_queue)
        self.last_peaks, self.last_interval = peaks, interval
        stages = {
            name: self._stage_metrics(name, st, interval, reading.queued[name], running[name])
            for name, st in interval.stages.items()
        }
        self._prev_starting = {n: p.starting for n, p in self.ledger.pools.items()}
        return self._snapshot(interval, stages, reading.splits)

    def _stage_metrics(self, name: str, st: StageInterval, interval: Interval, queued: int, busy: int) -> StageMetrics:
        """One stage's metrics: the fold's tallies, priced on the pool's target over the interval
        (what is billed), with utilization over the ready part of it."""
        t0, now = interval.start, interval.end
        dt, scale = now - t0, self.scale
        pool = self.ledger.pools.get(name)
        price = self.scenario.stages[name].workers.cost_per_second
        billed = pool.integral(t0, now) if pool else 0.0
        starting_area = 0.5 * (self._prev_starting.get(name, 0) + (pool.starting if pool else 0)) * dt
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

    def _snapshot(
        self, interval: Interval, stages: dict[str, StageMetrics], splits: dict[str, dict[str | None, float]]
    ) -> MetricsSnapshot:
        snapshot = MetricsSnapshot(
            time=self.clock.to_scenario(interval.end),
            interval=(interval.end - interval.start) * self.scale,
            stages=stages,
            source_arrivals=dict(interval.sources),
            completed=interval.completed,
            drops=interval.drops,
            failed=interval.failed,
            sla_violations=interval.late,
            escapes=interval.escapes,
            caught=interval.caught,
            mean_latency=interval.mean_latency,
            splits=splits,
            in_system=sum(s.queue_length + s.busy for s in stages.values()),
        )
        if self.percentiles and interval.latencies:
            snapshot.p95_latency = float(np.percentile(interval.latencies, 95))
        return snapshot
