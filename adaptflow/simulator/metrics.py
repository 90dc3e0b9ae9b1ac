"""Metrics of a window of simulated time, from two readings of the model's cumulative counters.

:meth:`Simulation.counters <adaptflow.simulator.Simulation.counters>` returns a :class:`Counters`:
every cumulative count and time integral of the model, by name, and the lengths of its per-item
lists. It is cheap (counters and list lengths, no copies), so a planner's monitor can read one
every decision interval and difference it with the previous one; :class:`Samples` gives the
per-item values (waits, latencies) recorded between two readings. :func:`summarize` (what
``Simulation.summary`` and ``record`` return), ``SimMonitor`` and ``compare-live`` all read the
model through these two, never through its internals, so none of them depends on how the model
keeps its books.

Why named tuples: a Gymnasium step reads the counters every decision interval, and a named tuple
is built about twice as fast as a frozen dataclass; it is as immutable and is read by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from adaptflow._json import to_jsonable  # noqa: F401  (re-exported: adaptflow.simulator.to_jsonable)

if TYPE_CHECKING:
    from .model import Simulation

NAN = float("nan")


class StageCounters(NamedTuple):
    """One stage's cumulative counters and time integrals since t=0, and its state now."""

    arrivals: int  # visits that entered the stage (retries are not new visits)
    drops: int  # items refused by a full queue
    completed: int  # visits served successfully
    failures: int  # failed attempts (each retry that failed counts)
    failed_items: int  # items given up after their last retry
    detected: int  # bad items flagged by this (validation) stage
    false_alarms: int  # good items flagged
    n_waits: int  # length of the per-attempt wait list
    n_latencies: int  # length of the per-visit latency list
    queue_area: float  # integral of queue length over time
    busy_area: float  # integral of busy workers
    active_area: float  # integral of ready (idle + busy) workers
    billed_area: float  # integral of provisioned (starting + idle + busy) workers
    queue_length: int  # waiting now
    busy: int  # serving now
    idle: int  # ready and free now
    starting: int  # requested, not ready yet
    draining: int  # busy, retiring after their current item
    target: int  # where the pool is heading (ready, not retiring, plus starting)
    turnaround_sum: float  # seconds of turnaround begun (per attempt: / (completed + failures))
    # those begun with an item waiting, and how many: the hand-offs a live worker's task events
    # show (a gap with nothing waiting is idle time there; adaptflow.runtime.live.handoff)
    backlogged_turnaround_sum: float
    backlogged_turnarounds: int
    # the waits of the visits that entered with nothing else of the stage in progress, and how
    # many: the way in alone, as live reads it (adaptflow.runtime.live.handoff.idle_waits)
    idle_wait_sum: float
    idle_waits: int
    # the services of a stage placed on a host (Stage.host), finished: their seconds, the sum of
    # their squares and how many: their spread, which the sharing of the host's cores widens (a
    # live run's is read off its task events: runtime/live/spread.py; 0 off any host)
    hosted_service_sum: float
    hosted_service_squares: float
    hosted_services: int


class Counters(NamedTuple):
    """The whole model's cumulative counters at ``time`` (deadlines checked up to it)."""

    time: float
    stages: dict[str, StageCounters]
    source_arrivals: dict[str, int]  # items created by each source
    arrived: int  # items created, all sources
    exits: int  # items that left the system served
    dropped: int
    failed: int  # items given up after their retries
    late: int  # SLA violations
    deadlines_passed: int  # items whose deadline has passed (the denominator of the violation rate)
    escapes: int  # bad items that left unflagged
    caught: int  # bad items that left flagged
    false_rejections: int  # good items that left flagged
    n_latencies: int  # length of the end-to-end latency list
    # each join's counters (joins.JoinCounters), by join stage ("exit" for a join at the exit);
    # empty for a pipeline (a default, so a world without joins need not build it)
    joins: dict[str, Any] = {}  # noqa: RUF012 (a NamedTuple default, never mutated)
    # each job class's counters (classes.ClassCounters), by class; empty without classes
    classes: dict[str, Any] = {}  # noqa: RUF012 (a NamedTuple default, never mutated)

    @property
    def in_system(self) -> int:
        """Items created and not gone yet (queued, in service, or between stages)."""
        return self.arrived - self.exits - self.dropped - self.failed


class Samples:
    """The per-item values recorded between two :class:`Counters` (``start=None``: from t=0),
    as fresh lists: waits (one per service attempt) and visit latencies per stage, and the
    end-to-end latencies of the items that left served."""

    __slots__ = ("_end", "_sim", "_start")

    def __init__(self, sim: Simulation, start: Counters | None, end: Counters):
        self._sim, self._start, self._end = sim, start, end

    def waits(self, stage: str) -> list[float]:
        s = self._start.stages[stage].n_waits if self._start else 0
        return self._sim.stages[stage].waits[s : self._end.stages[stage].n_waits]

    def latencies(self, stage: str) -> list[float]:
        s = self._start.stages[stage].n_latencies if self._start else 0
        return self._sim.stages[stage].latencies[s : self._end.stages[stage].n_latencies]

    def end_to_end(self) -> list[float]:
        s = self._start.n_latencies if self._start else 0
        return self._sim.e2e_latencies[s : self._end.n_latencies]

    def of_class(self, name: str) -> list[float]:
        """End-to-end latencies of the items of job class ``name`` that left served."""
        s = self._start.classes[name].n_latencies if self._start else 0
        k = self._sim.class_book.names.index(name)  # type: ignore[union-attr]
        return self._sim.class_book.latencies[k][s : self._end.classes[name].n_latencies]  # type: ignore[union-attr]


def _stats(values: list[float], prefix: str) -> dict[str, float]:
    if not values:
        return {f"mean_{prefix}": NAN, f"p50_{prefix}": NAN, f"p95_{prefix}": NAN, f"p99_{prefix}": NAN}
    arr = np.asarray(values)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        f"mean_{prefix}": float(arr.mean()),
        f"p50_{prefix}": float(p50),
        f"p95_{prefix}": float(p95),
        f"p99_{prefix}": float(p99),
    }


def _delta(end: Any, start: Any | None) -> Callable[[str], float]:
    """A field's change from ``start`` (a counters tuple, or None: from t=0) to ``end``."""

    def delta(field: str) -> float:
        return getattr(end, field) - (getattr(start, field) if start else 0)

    return delta


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else NAN


def summarize(sim: Simulation, start: Counters | None, end: Counters) -> dict[str, Any]:
    """Metrics over ``[start.time, end.time]`` (``start=None``: from t=0).

    Rates and time averages divide by the window's length; counts are of events inside it;
    ``queue_length``, ``*_workers`` are the state at the window's end."""
    duration = end.time - (start.time if start else 0.0)
    samples = Samples(sim, start, end)
    stages = {
        name: _stage_summary(e, start.stages[name] if start else None, samples, name, sim.stages[name].price, duration)
        for name, e in end.stages.items()
    }
    end_to_end = _end_to_end(start, end, samples.end_to_end(), duration)
    summary = {
        "time": end.time,
        "duration": duration,
        "stages": stages,
        "end_to_end": end_to_end,
        "cost": sum(stage["cost"] for stage in stages.values()),
        "items_arrived": end_to_end["arrivals"],
        "items_completed": end_to_end["completed"],
    }
    if end.joins:  # only a scenario with fork/join has the key, so a pipeline's columns stay as they were
        summary["joins"] = {
            name: _join_summary(e, start.joins[name] if start else None, duration) for name, e in end.joins.items()
        }
    if end.classes:  # only a scenario with job classes has the key
        summary["classes"] = {
            name: _class_summary(e, start.classes[name] if start else None, samples.of_class(name), duration)
            for name, e in end.classes.items()
        }
    return summary


def _class_summary(e: Any, s: Any, latencies: list[float], duration: float) -> dict[str, Any]:
    """One job class's counts, lateness and latencies (``e``, ``s``: ``classes.ClassCounters``)."""

    delta = _delta(e, s)
    return {
        "arrivals": int(delta("arrived")),
        "completed": int(delta("exits")),
        "drops": int(delta("dropped")),
        "failed_items": int(delta("failed")),
        "throughput": _ratio(delta("exits"), duration),
        **_stats(latencies, "latency"),
        "sla_violations": int(delta("late")),
        "sla_violation_rate": _ratio(delta("late"), delta("deadlines_passed")),
        "late_units": delta("late_units"),  # violations x the class's late_weight
    }


def _join_summary(e: Any, s: Any, duration: float) -> dict[str, Any]:
    """How long parts and items waited at a join (``e``, ``s``: ``joins.JoinCounters``)."""

    delta = _delta(e, s)
    return {
        "parts": int(delta("parts")),
        "joined": int(delta("joined")),
        "mean_part_wait": _ratio(delta("wait_sum"), delta("released")),  # per part, the last one's 0 included
        "mean_join_delay": _ratio(delta("delay_sum"), delta("joined")),  # per item: first part in -> last part in
        "mean_waiting": _ratio(delta("area"), duration),  # parts waiting, time-averaged
        "waiting": e.waiting,
    }


def _stage_summary(
    e: StageCounters, s: StageCounters | None, samples: Samples, name: str, price: float, duration: float
) -> dict[str, Any]:
    delta = _delta(e, s)
    return {
        "arrivals": int(delta("arrivals")),
        "completed": int(delta("completed")),
        "drops": int(delta("drops")),
        "failures": int(delta("failures")),
        "failed_items": int(delta("failed_items")),
        "detected": int(delta("detected")),
        "false_alarms": int(delta("false_alarms")),
        "arrival_rate": _ratio(delta("arrivals"), duration),
        "throughput": _ratio(delta("completed"), duration),
        **_stats(samples.waits(name), "wait"),
        **_stats(samples.latencies(name), "latency"),
        "mean_queue_length": _ratio(delta("queue_area"), duration),
        "mean_busy_workers": _ratio(delta("busy_area"), duration),
        "mean_workers": _ratio(delta("billed_area"), duration),
        "utilization": _ratio(delta("busy_area"), delta("active_area")),
        "queue_length": e.queue_length,
        "busy_workers": e.busy,
        "active_workers": e.busy + e.idle,
        "starting_workers": e.starting,
        "draining_workers": e.draining,
        "target_workers": e.target,
        "cost": delta("billed_area") * price,
    }


def _end_to_end(start: Counters | None, end: Counters, latencies: list[float], duration: float) -> dict[str, Any]:
    def total(field: str) -> int:
        return getattr(end, field) - (getattr(start, field) if start else 0)

    return {
        "arrivals": total("arrived"),
        "completed": total("exits"),
        "drops": total("dropped"),
        "failed_items": total("failed"),
        "in_system": end.in_system,
        "throughput": _ratio(total("exits"), duration),
        **_stats(latencies, "latency"),
        "sla_violations": total("late"),
        "sla_violation_rate": _ratio(total("late"), total("deadlines_passed")),
        "escapes": total("escapes"),
        "caught": total("caught"),
        "false_rejections": total("false_rejections"),
    }


def flatten(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"stages": {"work": {"mean_wait": 1}}}`` -> ``{"stages.work.mean_wait": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
