"""The live side of the agent interfaces: :class:`CeleryMonitor`, :class:`CeleryExecutor` and
:class:`WallClock`, on the Celery app of :mod:`adaptflow.runtime.celery_app`; and the wrappers
that let the one Coordinator loop survive a Redis outage (:class:`ResilientMonitor`,
:class:`ResilientExecutor`).

Units: the monitor reports *scenario* seconds, as the simulator does. A live run with
``time_scale`` 10 runs ten times faster than the scenario's clock; every duration the monitor
measures in wall seconds (waits, latencies, worker time) is multiplied by ``time_scale`` before
it reaches an analyzer, a planner or the cost model, so that they see the numbers they were
built (or trained) for.

The pool size is reconciled, not read. Measured on Celery 5.7 with Redis 7 (the test
``test_pool_size_reconciliation`` repeats it): after ``pool_grow(3)`` on a 2-process worker the
control command answers at once, but the new processes start at the pool's next maintenance
tick (every 5 s), so for up to 5 s the pool still runs 2 tasks at a time; ``stats()`` then lists
5 ``processes``, and its ``max-concurrency`` says 2 forever (it is the start-up setting). On
Celery 5.6 the processes were seen running before ``processes`` listed them. So the
:class:`PoolLedger` keeps the size the executor applied (the *target*); the monitor takes the
ready size (*active*) as the larger of the processes the worker lists and the tasks measured
running at once (from the tasks' start/finish times), calls the rest *starting* (as the
simulator calls a requested worker not yet ready), and re-bases the target when the worker's
process id changes (a restarted worker starts again at its command-line concurrency).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import kombu.exceptions
import numpy as np
import redis
from celery import Celery
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from adaptflow.agents import Applied, Clock, Executor, MetricsSnapshot, Monitor, Plan, StageMetrics
from adaptflow.agents.safety import SafetyEnvelope, StageBounds
from adaptflow.agents.sim import envelope_for

from .celery_app import LiveContext, context_of
from .worker import expand_node

log = logging.getLogger(__name__)
NAN = math.nan

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
    ConnectionError,
    TimeoutError,
    OSError,
)
"""What a Redis outage raises, through redis-py directly or through Celery's broker connection."""


class WallClock(Clock):
    """Scenario seconds since the run started, on the wall clock sped up ``time_scale`` times.

    ``advance`` sleeps until the next decision time on a fixed grid (start + k x interval), so
    the time the loop spends observing and planning does not shift later decisions; after a
    stall longer than an interval (an outage) the grid restarts from now."""

    def __init__(self, time_scale: float = 1.0, start: float | None = None):
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.time_scale = time_scale
        self.start = time.time() if start is None else start  # wall time.time(), shared by all processes
        self._target: float | None = None

    def now(self) -> float:
        return (time.time() - self.start) * self.time_scale

    def to_scenario(self, wall: float) -> float:
        return (wall - self.start) * self.time_scale

    def to_wall(self, t: float) -> float:
        return self.start + t / self.time_scale

    def advance(self, seconds: float) -> None:
        now = self.now()
        target = (0.0 if self._target is None else self._target) + seconds
        self._target = max(target, now)
        delay = (self._target - self.now()) / self.time_scale
        if delay > 0:
            time.sleep(delay)


def live_envelope(scenario: Any, max_step: int | None = None, cooldown: float = 0.0) -> SafetyEnvelope:
    """The scenario's envelope with every pool's minimum raised to 1: a prefork pool with no
    process consumes nothing and cannot be grown back by a task arriving, so live a stage
    keeps at least one process (a plan asking for 0 is clamped, and the clamp logged)."""
    env = envelope_for(scenario, max_step=max_step, cooldown=cooldown)
    env.bounds = {n: StageBounds(max(1, b.min_workers), max(1, b.max_workers)) for n, b in env.bounds.items()}
    return env


# ------------------------------------------------------------------------------------------------
# The pool sizes, shared by executor and monitor
# ------------------------------------------------------------------------------------------------
@dataclass
class PoolState:
    """One stage's pool: the target the executor applied (as a step function of wall time, for
    the worker-time integral) and what the worker last reported."""

    worker: str
    target: int
    history: list[tuple[float, int]]  # (wall time, target from then on)
    pid: int | None = None  # the worker's main process, to notice a restart
    reported_processes: int | None = None  # len(stats.pool.processes)
    reported_max_concurrency: int | None = None  # stats.pool.max-concurrency: its start-up value
    autoscaler: dict | None = None  # stats.autoscaler of a worker run with --autoscale
    active: int = 0  # reconciled: ready processes now
    starting: int = 0  # reconciled: applied but not ready yet
    changed_at: float = 0.0  # wall time of the last resize command

    def set_target(self, n: int, wall: float) -> None:
        self.changed_at = wall
        if n != self.target:
            self.target = n
            self.history.append((wall, n))

    def integral(self, t0: float, t1: float) -> float:
        """The target's integral over [t0, t1] (wall seconds x processes)."""
        total, hist = 0.0, self.history
        for k, (start, n) in enumerate(hist):
            end = hist[k + 1][0] if k + 1 < len(hist) else math.inf
            lo, hi = max(start, t0), min(end, t1)
            if hi > lo:
                total += n * (hi - lo)
        return total


class PoolLedger:
    """The pool of every managed stage's worker: synced from the workers' ``stats`` once at
    start (a fresh worker's process list is right), then moved by the executor and corrected by
    the monitor's reconciliation."""

    def __init__(self, app: Celery, workers: dict[str, str], timeout: float = 2.0):
        self.app, self.timeout = app, timeout
        self.workers = {stage: expand_node(name) for stage, name in workers.items()}
        self.pools: dict[str, PoolState] = {}

    def stats(self) -> dict[str, dict]:
        """``inspect().stats()`` of the managed workers, by node name (missing if silent)."""
        names = list(self.workers.values())
        return self.app.control.inspect(destination=names, timeout=self.timeout).stats() or {}

    def sync(self) -> PoolLedger:
        stats, now = self.stats(), time.time()
        missing = [w for w in self.workers.values() if w not in stats]
        if missing:
            raise RuntimeError(f"workers {missing} did not answer inspect().stats(); are they running?")
        for stage, worker in self.workers.items():
            s = stats[worker]
            size = len(s["pool"]["processes"])
            self.pools[stage] = PoolState(worker, size, [(now, size)], pid=s.get("pid"))
            self._read(self.pools[stage], s)
            self.pools[stage].active = size
        return self

    @staticmethod
    def _read(pool: PoolState, s: dict) -> None:
        pool.reported_processes = len(s["pool"]["processes"])
        pool.reported_max_concurrency = s["pool"].get("max-concurrency")
        pool.autoscaler = s.get("autoscaler") or None

    def targets(self) -> dict[str, int]:
        return {stage: p.target for stage, p in self.pools.items()}

    SETTLE = 6.0
    """Wall seconds after a resize within which the worker's process list may lag: a grown
    pool's processes start at its next maintenance tick (every 5 s), retired ones leave the list
    when joined."""

    def reconcile(
        self,
        stats: dict[str, dict],
        running: dict[str, int],
        peaks: dict[str, int],
        since: float,
        queued: dict[str, float],
    ) -> None:
        """Bring each pool up to date with what its worker reports and what was measured.

        ``running``: tasks running now (inspect's active list, or the tasks' own records);
        ``peaks``: the most tasks measured running at once in the interval that began at wall
        time ``since`` (kept for reports); ``queued``:
        the time-average queue of the interval. The target is the size applied, except:

        * the worker restarted (new pid): it runs its command-line concurrency again;
        * the worker runs more tasks now than the target: the pool is bigger (resized by someone
          else);
        * settled (``SETTLE`` s after the last resize), the worker lists more processes than the
          target (they exist: their pids are listed), or fewer while work waited and no more than
          that many tasks ran at once (the missing processes do not exist)."""
        now = time.time()
        for stage, pool in self.pools.items():
            s = stats.get(pool.worker)
            if s is None:
                log.warning("worker %s (stage %s) did not answer stats; pool assumed unchanged", pool.worker, stage)
                continue
            self._read(pool, s)
            if pool.autoscaler:  # Celery's autoscaler moves the pool: its own count is the target
                pool.set_target(int(pool.autoscaler.get("current", pool.reported_processes)), now)
            elif s.get("pid") != pool.pid:
                log.warning(
                    "worker %s (stage %s) restarted (pid %s -> %s): pool re-based from %d to its %d processes",
                    pool.worker, stage, pool.pid, s.get("pid"), pool.target, pool.reported_processes,
                )  # fmt: skip
                pool.set_target(int(pool.reported_processes or 0), now)
            pool.pid = s.get("pid")
            # Only the worker's own list of running tasks can prove the pool bigger: a peak
            # measured from the tasks' records is a report (last_peaks), since records lost in a
            # Redis restart would overstate it.
            measured = running.get(stage, 0)
            listed = int(pool.reported_processes or 0)
            settled = now - pool.changed_at > self.SETTLE and not pool.autoscaler
            starved = listed < pool.target and queued.get(stage, 0.0) > 0 and measured <= listed
            if settled and (listed > pool.target or starved):
                log.warning(
                    "stage %s: the worker lists %d processes, %.0f s after it was set to %d; target re-based",
                    stage, listed, now - pool.changed_at, pool.target,
                )  # fmt: skip
                pool.set_target(listed, now)
            if measured > pool.target:
                log.warning(
                    "stage %s: %d tasks ran at once on a pool of %d; the worker was resized outside the executor",
                    stage, measured, pool.target,
                )  # fmt: skip
                pool.set_target(measured, now)
            pool.active = min(pool.target, max(pool.reported_processes or 0, running.get(stage, 0)))
            pool.starting = pool.target - pool.active


# ------------------------------------------------------------------------------------------------
# Executor
# ------------------------------------------------------------------------------------------------
class CeleryExecutor(Executor):
    """Resizes each stage worker's prefork pool with ``pool_grow``/``pool_shrink`` aimed at that
    worker alone, after the shared :class:`SafetyEnvelope` (bounds, cooldown, largest step; every
    clamp logged), and writes the splits to Redis where the routing tasks read them.

    A pool shrinks in one ``pool_shrink(n)``, never in steps of one: billiard retires idle
    processes, and a retiring process stays in its list (idle) until it is joined, so a second
    ``shrink(1)`` right after the first picks the same process again: measured, five
    ``shrink(1)`` on a 6-process pool retired 2 processes while the pool's own count went to 1.
    A shrink with fewer idle processes than asked retires those it found and answers an error;
    the target is then held, and the monitor's reconciliation adopts the worker's process list
    once it has settled. The worker must run without ``--autoscale``."""

    def __init__(
        self,
        app: Celery,
        ledger: PoolLedger,
        clock: Clock,
        envelope: SafetyEnvelope | None = None,
        timeout: float = 2.0,
    ):
        self.app, self.ledger, self.clock, self.timeout = app, ledger, clock, timeout
        self.context: LiveContext = context_of(app)
        self.envelope = envelope or live_envelope(self.context.scenario)
        self.splits: dict[str, dict[str | None, float]] = {}

    def current_workers(self) -> dict[str, int]:
        return self.ledger.targets()

    def _command(self, name: str, worker: str, n: int) -> str | None:
        """Run a pool command on one worker; ``None`` if it was done, else the reason."""
        replies = getattr(self.app.control, name)(n, destination=[worker], reply=True, timeout=self.timeout)
        answer = next((r[worker] for r in replies or [] if worker in r), None)
        if answer is None:
            return f"{worker} did not answer {name}"
        return None if "ok" in answer else str(answer.get("error", answer))

    def apply(self, plan: Plan) -> Applied:
        applied = self.envelope.constrain(plan, self.current_workers(), self.clock.now())
        for stage, wanted in applied.workers.items():
            pool = self.ledger.pools[stage]
            have = pool.target
            if wanted > have:
                reason = self._command("pool_grow", pool.worker, wanted - have)
                if reason is None:
                    pool.set_target(wanted, time.time())
                else:
                    applied.clamps.append(f"{stage}: held at {have}, pool_grow refused: {reason}")
            elif wanted < have:
                reason = self._command("pool_shrink", pool.worker, have - wanted)
                if reason is None:
                    pool.set_target(wanted, time.time())
                else:  # billiard retired the idle ones it found: the process list will say how many
                    pool.changed_at = time.time()
                    applied.clamps.append(
                        f"{stage}: pool_shrink to {wanted} refused ({reason}); held at {have} until the "
                        "worker's process list shows what was retired"
                    )
            applied.workers[stage] = pool.target
        self.splits.update(applied.splits)
        store = self.context.splits
        for owner, probs in self.splits.items():  # all of them: a restarted Redis lost the keys
            store.write(owner, probs)
        for clamp in applied.clamps:
            log.info("safety envelope: %s", clamp)
        return applied


# ------------------------------------------------------------------------------------------------
# Monitor
# ------------------------------------------------------------------------------------------------
@dataclass
class _Stage:
    waiting: dict[str, float] = field(default_factory=dict)  # task id -> enter (wall)
    running: dict[str, float] = field(default_factory=dict)  # task id -> start (wall)
    arrivals: int = 0
    completed: int = 0
    drops: int = 0
    failures: int = 0
    detected: int = 0
    waits: list[float] = field(default_factory=list)  # wall seconds
    queue_area: float = 0.0
    busy_area: float = 0.0
    steps: list[tuple[float, int]] = field(default_factory=list)  # (time, +1 start / -1 finish)
    finished_open: int = 0  # visits finished in the interval that were running at its start

    def clear(self) -> None:
        self.arrivals = self.completed = self.drops = self.failures = self.detected = self.finished_open = 0
        self.waits, self.steps = [], []
        self.queue_area = self.busy_area = 0.0


@dataclass
class LiveTotals:
    """Whole-run figures for reports: every wait and end-to-end latency (scenario seconds)."""

    arrived: int = 0
    completed: int = 0
    drops: int = 0
    failed: int = 0
    late: int = 0
    waits: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


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
        self.sla_wall = self.scenario.sla.latency / self.scale
        self.stages = {name: _Stage() for name in self.scenario.stages}
        self.sources = {name: 0 for name in self.scenario.sources}
        self.totals = LiveTotals()
        self._pending: deque[tuple[str, float]] = deque()  # (item, created) not past deadline yet
        self._gone: set[str] = set()
        self._late: set[str] = set()
        self._e2e = dict.fromkeys(("completed", "drops", "failed", "late", "escapes", "caught"), 0)
        self._latencies: list[float] = []
        last = self.context.client.xrevrange(self.context.events_key, count=1)
        self._last_id = last[0][0] if last else "0-0"
        self._prev_wall = time.time()
        self.last_peaks: dict[str, int] = {}  # most tasks measured running at once, last interval
        self._prev_starting = {stage: p.starting for stage, p in ledger.pools.items()}

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

    def _read_workers(self) -> tuple[dict, dict, dict]:
        names = list(self.ledger.workers.values())
        inspect = self.app.control.inspect(destination=names, timeout=self.inspect_timeout)
        return inspect.stats() or {}, inspect.active() or {}, inspect.reserved() or {}

    # -- the interval ----------------------------------------------------------------------------
    def _event(self, kind: str, f: dict[str, str], t0: float, now: float) -> None:
        t = float(f["t"])
        if kind == "arrive":
            self.sources[f["src"]] = self.sources.get(f["src"], 0) + 1
            self._pending.append((f["i"], t))
            self.totals.arrived += 1
            return
        if kind in ("exit", "drop", "giveup"):
            item, created = f["i"], float(f["c"])
            self._gone.add(item)
            if t - created > self.sla_wall and item not in self._late:
                self._late.add(item)
                self._e2e["late"] += 1
            if kind == "exit":
                self._e2e["completed"] += 1
                self._latencies.append((t - created) * self.scale)
                bad, flagged = f["b"] == "1", f["f"] == "1"
                if bad:
                    self._e2e["caught" if flagged else "escapes"] += 1
            elif kind == "drop":
                self._e2e["drops"] += 1
                self.stages[f["s"]].drops += 1
            else:
                self._e2e["failed"] += 1
            return
        st = self.stages[f["s"]]
        if kind == "enter":
            st.waiting[f["k"]] = t
            st.arrivals += 1
        elif kind == "start":
            enter = st.waiting.pop(f["k"], float(f["q"]))
            st.queue_area += max(0.0, min(t, now) - max(enter, t0))
            st.waits.append(t - float(f["q"]))
            st.running[f["k"]] = t  # a redelivered visit (its process was killed) starts again
            if t >= t0:  # a start stamped before the interval is in the level at its start
                st.steps.append((t, 1))
        elif kind == "finish":
            start = st.running.pop(f["k"], float(f["st"]))
            st.busy_area += max(0.0, min(t, now) - max(start, t0))
            st.finished_open += start < t0 <= t
            if t >= t0:
                st.steps.append((t, -1))
            if f["x"] == "1":
                st.failures += 1
            else:
                st.completed += 1
                st.detected += f["d"] == "1"

    @staticmethod
    def _prune(st: _Stage, active: list[dict] | None, queued_now: int, t0: float) -> None:
        """Forget visits whose records were lost (a Redis restart without persistence loses the
        queued messages and the records of the visits it interrupted): a visit running since
        before the interval that the worker no longer lists as active, and the oldest waiting
        visits beyond what is queued now (LLEN plus reserved)."""
        if active is not None:
            ids = {task.get("id") for task in active}
            for key in [k for k, start in st.running.items() if start < t0 and k not in ids]:
                del st.running[key]
        surplus = len(st.waiting) - queued_now
        for key in sorted(st.waiting, key=st.waiting.__getitem__)[: max(0, surplus)]:
            if st.waiting[key] < t0:
                del st.waiting[key]

    @staticmethod
    def _peak(level: int, steps: list[tuple[float, int]]) -> int:
        peak = level
        for _, d in sorted(steps):
            level += d
            peak = max(peak, level)
        return peak

    def observe(self) -> MetricsSnapshot:
        events = self._read_events()
        stats, active, reserved = self._read_workers()
        client = self.context.client
        queued = {name: client.llen(name) for name in self.stages}
        splits = self.context.splits.read_all()
        # -- nothing above changed any state: an outage there leaves the monitor as it was --
        now, t0 = time.time(), self._prev_wall
        for event_id, f in events:
            self._event(f["e"], f, t0, now)
            self._last_id = event_id
        cutoff = now - self.sla_wall
        while self._pending and self._pending[0][1] < cutoff:
            item, _ = self._pending.popleft()
            if item in self._gone:
                self._gone.discard(item)
            elif item not in self._late:
                self._late.add(item)
                self._e2e["late"] += 1
        workers = self.ledger.workers
        running, peaks = {}, {}
        for name, st in self.stages.items():
            tasks = active.get(workers.get(name, ""))
            self._prune(st, tasks, queued[name] + len(reserved.get(workers.get(name, ""), []) or []), t0)
            level = st.finished_open + sum(1 for start in st.running.values() if start < t0)
            peaks[name] = self._peak(level, st.steps)
            for enter in st.waiting.values():
                st.queue_area += max(0.0, now - max(enter, t0))
            for start in st.running.values():
                st.busy_area += max(0.0, now - max(start, t0))
            running[name] = len(tasks) if tasks is not None else len(st.running)
        mean_queue = {n: st.queue_area / (now - t0) if now > t0 else 0.0 for n, st in self.stages.items()}
        self.ledger.reconcile(stats, running, peaks, t0, mean_queue)
        self.last_peaks = peaks
        dt = now - t0
        scale = self.scale
        out: dict[str, StageMetrics] = {}
        for name, st in self.stages.items():
            pool = self.ledger.pools.get(name)
            price = self.scenario.stages[name].workers.cost_per_second
            billed = pool.integral(t0, now) if pool else 0.0
            starting_area = 0.5 * (self._prev_starting.get(name, 0) + (pool.starting if pool else 0)) * dt
            active_area = max(0.0, billed - starting_area)
            out[name] = StageMetrics(
                queue_length=queued[name] + len(reserved.get(workers.get(name, ""), []) or []),
                busy=running[name],
                active=pool.active if pool else 0,
                starting=pool.starting if pool else 0,
                target=pool.target if pool else 0,
                arrivals=st.arrivals,
                completed=st.completed,
                drops=st.drops,
                failures=st.failures,
                detected=st.detected,
                mean_wait=float(np.mean(st.waits)) * scale if st.waits else NAN,
                mean_queue_length=st.queue_area / dt if dt > 0 else float(queued[name]),
                utilization=st.busy_area / active_area if active_area > 0 else NAN,
                worker_seconds=billed * scale,
                cost=billed * scale * price,
            )
            self.totals.waits += [w * scale for w in st.waits]
            st.clear()
        self._prev_starting = {n: p.starting for n, p in self.ledger.pools.items()}
        e2e, latencies = self._e2e, self._latencies
        snapshot = MetricsSnapshot(
            time=self.clock.to_scenario(now),
            interval=dt * scale,
            stages=out,
            source_arrivals=dict(self.sources),
            completed=e2e["completed"],
            drops=e2e["drops"],
            failed=e2e["failed"],
            sla_violations=e2e["late"],
            escapes=e2e["escapes"],
            caught=e2e["caught"],
            mean_latency=float(np.mean(latencies)) if latencies else NAN,
            splits=splits,
            in_system=sum(s.queue_length + s.busy for s in out.values()),
        )
        if self.percentiles and latencies:
            snapshot.p95_latency = float(np.percentile(latencies, 95))
        t = self.totals
        t.completed += e2e["completed"]
        t.drops += e2e["drops"]
        t.failed += e2e["failed"]
        t.late += e2e["late"]
        t.latencies += latencies
        self.sources = dict.fromkeys(self.sources, 0)
        self._e2e = dict.fromkeys(self._e2e, 0)
        self._latencies = []
        self._prev_wall = now
        return snapshot


# ------------------------------------------------------------------------------------------------
# Surviving a Redis outage
# ------------------------------------------------------------------------------------------------
@dataclass
class Outage:
    """One Redis outage as the loop saw it (scenario seconds)."""

    start: float
    end: float | None = None
    failures: int = 0
    error: str = ""
    plan: dict[str, Any] = field(default_factory=dict)  # the plan kept in force


class ResilientExecutor(Executor):
    """An executor that keeps the last applied plan when Redis is gone: ``apply`` then changes
    nothing, says so in ``Applied.clamps`` (so the event log records it) and logs it; the next
    call tries again. Notes of an outage the monitor waited out are added to the next record."""

    def __init__(self, executor: CeleryExecutor):
        self.executor = executor
        self.last_applied = Applied(workers=executor.current_workers(), splits={})
        self.notes: list[str] = []

    def apply(self, plan: Plan) -> Applied:
        try:
            applied = self.executor.apply(plan)
        except TRANSIENT_ERRORS as exc:
            kept = self.last_applied
            note = f"redis unavailable ({type(exc).__name__}: {exc}); kept the last applied plan {kept.to_dict()}"
            log.warning(note)
            applied = Applied(workers=dict(kept.workers), splits=dict(kept.splits), clamps=[note])
        else:
            self.last_applied = Applied(
                workers={**self.last_applied.workers, **applied.workers},
                splits={**self.last_applied.splits, **self.executor.splits},
            )
        applied.clamps[:0], self.notes = self.notes, []
        return applied


class ResilientMonitor(Monitor):
    """Retries ``observe`` with exponential backoff (redis-py's :class:`~redis.retry.Retry` and
    :class:`~redis.backoff.ExponentialBackoff`) while Redis is away; meanwhile the workers keep
    the pools and splits last applied, and each failure is logged with that plan. The snapshot
    taken once Redis is back covers the whole outage (its ``interval`` says how long).

    ``give_up_after``: scenario time after which an outage is fatal (the run's end plus a grace):
    the error is raised then, rather than the loop waiting for ever."""

    def __init__(
        self,
        monitor: CeleryMonitor,
        executor: ResilientExecutor,
        give_up_after: float = math.inf,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
    ):
        self.monitor, self.executor, self.give_up_after = monitor, executor, give_up_after
        self.retry = Retry(ExponentialBackoff(cap=backoff_cap, base=backoff_base), -1, TRANSIENT_ERRORS)
        self.outages: list[Outage] = []

    def _failed(self, error: Exception, failures: int) -> None:
        now = self.monitor.clock.now()
        if failures == 1:
            self.outages.append(Outage(start=now, error=f"{type(error).__name__}: {error}"))
            self.outages[-1].plan = self.executor.last_applied.to_dict()
        self.outages[-1].failures = failures
        log.warning(
            "redis unavailable at t=%.1f (%s: %s); keeping the last applied plan %s; retry %d with backoff",
            now, type(error).__name__, error, self.executor.last_applied.to_dict(), failures,
        )  # fmt: skip

    def observe(self) -> MetricsSnapshot:
        snapshot = self.retry.call_with_retry(
            self.monitor.observe,
            self._failed,
            is_retryable=lambda _: self.monitor.clock.now() < self.give_up_after,
            with_failure_count=True,
        )
        outage = self.outages[-1] if self.outages else None
        if outage is not None and outage.end is None:
            outage.end = snapshot.time
            note = (
                f"redis was unavailable from t={outage.start:.1f} to t={outage.end:.1f} "
                f"({outage.failures} failed reads, {outage.error}); the plan {outage.plan} stayed in force"
            )
            log.warning(note)
            self.executor.notes.append(note)
        return snapshot
