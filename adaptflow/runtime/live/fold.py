"""The event fold: a live run's event records, interval by interval, into the interval's counts,
areas and waits. Pure: no Redis, no Celery, no clock; the monitor reads the records and the
workers and hands them in, so every rule here is tested on synthetic records.

The records are the field maps of the run's event stream (string values, as Redis returns them;
see :mod:`adaptflow.runtime.celery_app`): ``arrive`` (``i`` item, ``src``, ``t``), per visit
``enter`` (``s`` stage, ``i``, ``k`` task id, ``t``, ``r`` retry number, absent or 0 on a first
visit), ``start`` (``s``, ``k``, ``t``, ``q`` its enter time) and ``finish`` (``s``, ``k``, ``t``,
``st`` its start, ``x`` failed, ``d`` detected), and ``exit`` / ``drop`` / ``giveup`` (``i``, ``c``
created, ``t``; ``b`` bad and ``f`` flagged on an exit; ``s`` on a drop). A fork's parts are
visits like any other; only their item has ``arrive`` and leaving records, so items count as
wholes (late, dropped, exited once). A ``drop`` with ``w`` = 0 is a part's drop after its item
was already gone: the stage's drop, not another item's. ``join`` records (a part at its join)
are not folded: the parts waiting at a join are read from Redis by the monitor.

Units: record times are wall seconds (``time.time()``). Areas (queue x time, busy x time) stay in
wall seconds: the monitor divides them by wall durations. Waits, latencies and the deadline are
in *scenario* seconds: a wall time ``w`` is the scenario time ``(w - origin) * time_scale``, and
lateness is the scenario's own rule, :meth:`adaptflow.scenario.schema.Sla.is_late` and
:meth:`~adaptflow.scenario.schema.Sla.cutoff`, on scenario times.

Memory is bounded by the items in flight, not by the length of the run: visits are tracked from
``enter`` to ``finish``; an item is tracked from ``arrive`` until its deadline has been checked
(so at most the arrivals of one SLA window plus an interval), then forgotten; whole-run waits and
latencies go to :class:`~.histogram.LogHistogram` s.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from adaptflow.scenario.schema import Sla

from .histogram import LogHistogram

Record = Mapping[str, str]
"""One event record: its fields as the stream holds them."""

_GONE = True  # an item that left before its deadline was checked
_IN_SYSTEM = False


@dataclass
class StageInterval:
    """One stage over an interval: counts, the wait of the visits that started, and the
    time-integrals of the queue and of the busy processes (wall seconds)."""

    arrivals: int = 0  # first visits that entered (a retry is not an arrival, as in simulation)
    retries: int = 0  # visits re-entered after a failure
    completed: int = 0
    drops: int = 0
    failures: int = 0
    detected: int = 0
    started: int = 0  # visits that started service (the waits' count)
    wait_sum: float = 0.0  # scenario seconds
    queue_area: float = 0.0  # wall seconds x visits waiting
    busy_area: float = 0.0  # wall seconds x visits in service
    peak: int = 0  # the most visits in service at once
    waiting: int = 0  # at the interval's end, as the records say
    running: int = 0

    @property
    def mean_wait(self) -> float:
        """Mean wait of the visits that started, in scenario seconds (NaN if none did)."""
        return self.wait_sum / self.started if self.started else math.nan


@dataclass
class Interval:
    """What the fold made of one interval ``[start, end]`` (wall seconds)."""

    start: float
    end: float
    stages: dict[str, StageInterval]
    sources: dict[str, int]  # arrivals per source
    completed: int = 0
    drops: int = 0
    failed: int = 0  # given up after the last retry
    late: int = 0  # items whose deadline passed in this interval (in the system or on leaving)
    escapes: int = 0
    caught: int = 0
    latencies: list[float] = field(default_factory=list)  # scenario seconds, of the items that left

    @property
    def mean_latency(self) -> float:
        return math.fsum(self.latencies) / len(self.latencies) if self.latencies else math.nan


@dataclass
class LiveTotals:
    """Whole-run figures for reports (durations in scenario seconds). Waits and latencies are
    kept as bounded histograms (1 % relative error on percentiles, exact means)."""

    arrived: int = 0
    completed: int = 0
    drops: int = 0
    failed: int = 0
    late: int = 0
    retries: int = 0
    waits: LogHistogram = field(default_factory=LogHistogram)
    latencies: LogHistogram = field(default_factory=LogHistogram)
    stage_waits: dict[str, tuple[float, int]] = field(default_factory=dict)  # stage -> (wait sum, starts)

    @property
    def mean_wait(self) -> float:
        return self.waits.mean

    def stage_mean_wait(self, stage: str) -> float:
        """A stage's mean wait over the run (scenario seconds; NaN before any visit started)."""
        total, started = self.stage_waits.get(stage, (0.0, 0))
        return total / started if started else math.nan

    @property
    def mean_latency(self) -> float:
        return self.latencies.mean

    def wait_percentile(self, q: float) -> float:
        return self.waits.percentile(q)

    def latency_percentile(self, q: float) -> float:
        return self.latencies.percentile(q)


@dataclass
class _Visits:
    """A stage's visits in flight (task id -> wall time) and its open interval's tallies."""

    waiting: dict[str, float] = field(default_factory=dict)  # task id -> enter
    running: dict[str, float] = field(default_factory=dict)  # task id -> start
    now: StageInterval = field(default_factory=StageInterval)
    steps: list[tuple[float, int]] = field(default_factory=list)  # (time, +1 start / -1 end)
    ended_open: int = 0  # visits running at the interval's start that ended in it

    def level_at(self, t0: float) -> int:
        """Visits in service at ``t0``, from the records."""
        return self.ended_open + sum(1 for start in self.running.values() if start < t0)

    def prune(self, active: Collection[str] | None, queued_now: int | None, t0: float) -> None:
        """Forget visits whose records were lost (a Redis restart without persistence loses the
        queued messages and the records of the visits it interrupted): a visit running since
        before the interval that the worker no longer lists as active, and the oldest waiting
        visits beyond what is queued now (the queue's length plus the worker's reserved)."""
        if active is not None:
            for key in [k for k, start in self.running.items() if start < t0 and k not in active]:
                del self.running[key]
        if queued_now is None:
            return
        surplus = len(self.waiting) - queued_now
        for key in sorted(self.waiting, key=self.waiting.__getitem__)[: max(0, surplus)]:
            if self.waiting[key] < t0:
                del self.waiting[key]


class EventFold:
    """Folds event records into :class:`Interval` s: ``add`` each record of the interval, then
    ``close`` it at its end. ``origin`` is the wall time of scenario time 0 (the clock's start);
    ``start`` the wall time the first interval begins (records stamped before it are of visits
    and items already in flight)."""

    def __init__(
        self,
        stages: Iterable[str],
        sources: Iterable[str],
        sla: Sla,
        time_scale: float,
        origin: float,
        start: float,
    ):
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.sla, self.scale, self.origin = sla, time_scale, origin
        self.t0 = start
        self.visits = {name: _Visits() for name in stages}
        self.sources = dict.fromkeys(sources, 0)
        self.totals = LiveTotals()
        self._interval = self._fresh()
        # Deadline tracking: (created, item) in arrival order, and item -> gone, for the items
        # whose deadline has not been checked yet. ``_checked`` is the last cutoff checked.
        self._deadlines: deque[tuple[float, str]] = deque()
        self._open: dict[str, bool] = {}
        self._watched_from = self.scenario_time(start)
        self._checked = -math.inf

    def scenario_time(self, wall: float) -> float:
        """The scenario time of the wall time ``wall``."""
        return (wall - self.origin) * self.scale

    def _fresh(self) -> Interval:
        return Interval(self.t0, self.t0, {name: v.now for name, v in self.visits.items()}, self.sources)

    # -- records ---------------------------------------------------------------------------------
    def add(self, record: Record, now: float) -> None:
        """Fold one record into the open interval; ``now`` is its end (wall), already known when
        the records are read (the monitor reads everything, then folds)."""
        kind = record["e"]
        if kind == "arrive":
            self._arrive(record)
        elif kind in ("exit", "drop", "giveup"):
            self._leave(kind, record)
        elif kind == "enter":
            self._enter(record)
        elif kind == "start":
            self._start(record, now)
        elif kind == "finish":
            self._finish(record, now)

    def _arrive(self, f: Record) -> None:
        self.sources[f["src"]] = self.sources.get(f["src"], 0) + 1
        self.totals.arrived += 1
        self._deadlines.append((self.scenario_time(float(f["t"])), f["i"]))
        self._open[f["i"]] = _IN_SYSTEM

    def _leave(self, kind: str, f: Record) -> None:
        if f.get("w") == "0":  # a part's drop when its item is gone already: the stage's count only
            self.visits[f["s"]].now.drops += 1
            return
        item, created, t = f["i"], self.scenario_time(float(f["c"])), self.scenario_time(float(f["t"]))
        state = self._open.get(item)
        if state is _IN_SYSTEM:
            self._open[item] = _GONE
            late = self.sla.is_late(created, t)
        elif state is None:
            # Not tracked: it arrived before the fold started watching, or its arrive record was
            # lost (both: its deadline was never checked, so check it now); or its deadline was
            # checked already (and counted then if it was still in the system).
            unchecked = created < self._watched_from or created >= self._checked
            late = unchecked and self.sla.is_late(created, t)
        else:
            late = False  # left twice: counted the first time
        e2e = self._interval
        e2e.late += late
        if kind == "exit":
            e2e.completed += 1
            e2e.latencies.append(t - created)
            if f["b"] == "1":
                if f["f"] == "1":
                    e2e.caught += 1
                else:
                    e2e.escapes += 1
        elif kind == "drop":
            e2e.drops += 1
            self.visits[f["s"]].now.drops += 1
        else:
            e2e.failed += 1

    def _enter(self, f: Record) -> None:
        visits = self.visits[f["s"]]
        visits.waiting[f["k"]] = float(f["t"])
        if int(f.get("r") or 0) > 0:  # a retry re-enters the queue but is not an arrival
            visits.now.retries += 1
        else:
            visits.now.arrivals += 1

    def _start(self, f: Record, now: float) -> None:
        visits, key, t, t0 = self.visits[f["s"]], f["k"], float(f["t"]), self.t0
        queued = float(f["q"])
        enter = visits.waiting.pop(key, queued)
        tally = visits.now
        tally.queue_area += max(0.0, min(t, now) - max(enter, t0))
        wait = (t - queued) * self.scale
        tally.wait_sum += wait
        tally.started += 1
        self.totals.waits.add(wait)
        earlier = visits.running.get(key)
        if earlier is not None:
            # Redelivered (its process was killed): the earlier attempt ended by now. Its busy
            # time is not counted past what an earlier interval closed: when it died is unknown.
            visits.ended_open += earlier < t0 <= t
            if t >= t0:
                visits.steps.append((t, -1))
        visits.running[key] = t
        if t >= t0:  # a start stamped before the interval is in the level at its start
            visits.steps.append((t, 1))

    def _finish(self, f: Record, now: float) -> None:
        visits, t, t0 = self.visits[f["s"]], float(f["t"]), self.t0
        start = visits.running.pop(f["k"], float(f["st"]))
        tally = visits.now
        tally.busy_area += max(0.0, min(t, now) - max(start, t0))
        visits.ended_open += start < t0 <= t
        if t >= t0:
            visits.steps.append((t, -1))
        if f["x"] == "1":
            tally.failures += 1
        else:
            tally.completed += 1
            tally.detected += f["d"] == "1"

    # -- the interval's end ----------------------------------------------------------------------
    def check_deadlines(self, now: float) -> None:
        """Count the items whose deadline passed by ``now`` (wall) while still in the system,
        then forget every item whose deadline has been checked."""
        cutoff = self.sla.cutoff(self.scenario_time(now))
        deadlines, tracked = self._deadlines, self._open
        while deadlines and deadlines[0][0] < cutoff:
            _, item = deadlines.popleft()
            if tracked.pop(item, _GONE) is _IN_SYSTEM:
                self._interval.late += 1
        self._checked = max(self._checked, cutoff)

    def close(
        self,
        now: float,
        queued: Mapping[str, int] | None = None,
        active: Mapping[str, Collection[str] | None] | None = None,
    ) -> Interval:
        """End the open interval at ``now`` (wall) and return it; a new one begins at ``now``.

        ``queued``: per stage, the visits queued now (queue length plus reserved), and
        ``active``: per stage, the task ids its worker runs now (``None``: not known), to forget
        visits whose records were lost (see :meth:`_Visits.prune`)."""
        self.check_deadlines(now)
        t0, queued, active = self.t0, queued or {}, active or {}
        for name, visits in self.visits.items():
            visits.prune(active.get(name), queued.get(name), t0)
            tally = visits.now
            tally.peak = _peak(visits.level_at(t0), visits.steps)
            tally.queue_area += sum(max(0.0, now - max(enter, t0)) for enter in visits.waiting.values())
            tally.busy_area += sum(max(0.0, now - max(start, t0)) for start in visits.running.values())
            tally.waiting, tally.running = len(visits.waiting), len(visits.running)
            visits.now, visits.steps, visits.ended_open = StageInterval(), [], 0
        done = self._interval
        done.end = now
        self._add_to_totals(done)
        self.t0 = now
        self.sources = dict.fromkeys(self.sources, 0)
        self._interval = self._fresh()
        return done

    def _add_to_totals(self, done: Interval) -> None:
        t = self.totals
        t.completed += done.completed
        t.drops += done.drops
        t.failed += done.failed
        t.late += done.late
        t.retries += sum(s.retries for s in done.stages.values())
        for name, st in done.stages.items():
            total, started = t.stage_waits.get(name, (0.0, 0))
            t.stage_waits[name] = (total + st.wait_sum, started + st.started)
        t.latencies.extend(done.latencies)

    def tracked(self) -> dict[str, int]:
        """Sizes of the fold's containers: what memory it holds between intervals (for tests and
        a long run's logs)."""
        return {
            "deadlines": len(self._deadlines),
            "items": len(self._open),
            "waiting": sum(len(v.waiting) for v in self.visits.values()),
            "running": sum(len(v.running) for v in self.visits.values()),
        }


def _peak(level: int, steps: list[tuple[float, int]]) -> int:
    """The most visits in service at once, from the level at the start and the +1/-1 steps."""
    peak = level
    for _, step in sorted(steps):
        level += step
        peak = max(peak, level)
    return peak
