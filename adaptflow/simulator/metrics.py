"""Metrics of a window of simulated time, from two marks of cumulative counters.

A :class:`Mark` is cheap (counters and list lengths, no copies), so a planner can take one every
decision interval and ask for the metrics of exactly that interval. Percentiles come from the
slices of the per-item lists between the two marks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptflow._json import to_jsonable  # noqa: F401  (re-exported: adaptflow.simulator.to_jsonable)

if TYPE_CHECKING:
    from .model import Simulation

NAN = float("nan")


@dataclass(frozen=True)
class StageMark:
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
    queue_length: int
    busy: int
    idle: int
    starting: int
    draining: int
    target: int


@dataclass(frozen=True)
class Mark:
    time: float
    stages: dict[str, StageMark]
    arrived: int
    exits: int
    dropped: int
    failed: int
    late: int
    deadlines_passed: int  # items whose deadline has passed (the denominator of the violation rate)
    escapes: int
    caught: int
    false_rejections: int
    n_latencies: int


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


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else NAN


def summarize(sim: Simulation, start: Mark | None, end: Mark) -> dict[str, Any]:
    """Metrics over ``[start.time, end.time]`` (``start=None``: from t=0).

    Rates and time averages divide by the window's length; counts are of events inside it;
    ``queue_length``, ``*_workers`` are the state at the window's end."""
    t0 = start.time if start else 0.0
    duration = end.time - t0
    stages: dict[str, Any] = {}
    total_cost = 0.0
    for name, state in sim.stages.items():
        e = end.stages[name]
        s = start.stages[name] if start else None

        def delta(field: str, e: StageMark = e, s: StageMark | None = s) -> float:
            return getattr(e, field) - (getattr(s, field) if s else 0)

        cost = delta("billed_area") * state.price
        total_cost += cost
        stages[name] = {
            "arrivals": int(delta("arrivals")),
            "completed": int(delta("completed")),
            "drops": int(delta("drops")),
            "failures": int(delta("failures")),
            "failed_items": int(delta("failed_items")),
            "detected": int(delta("detected")),
            "false_alarms": int(delta("false_alarms")),
            "arrival_rate": _ratio(delta("arrivals"), duration),
            "throughput": _ratio(delta("completed"), duration),
            **_stats(state.waits[s.n_waits if s else 0 : e.n_waits], "wait"),
            **_stats(state.latencies[s.n_latencies if s else 0 : e.n_latencies], "latency"),
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
            "cost": cost,
        }

    def total(field: str) -> int:
        return getattr(end, field) - (getattr(start, field) if start else 0)

    exits = total("exits")
    latencies = sim.e2e_latencies[start.n_latencies if start else 0 : end.n_latencies]
    end_to_end = {
        "arrivals": total("arrived"),
        "completed": exits,
        "drops": total("dropped"),
        "failed_items": total("failed"),
        "in_system": end.arrived - end.exits - end.dropped - end.failed,
        "throughput": _ratio(exits, duration),
        **_stats(latencies, "latency"),
        "sla_violations": total("late"),
        "sla_violation_rate": _ratio(total("late"), total("deadlines_passed")),
        "escapes": total("escapes"),
        "caught": total("caught"),
        "false_rejections": total("false_rejections"),
    }
    return {
        "time": end.time,
        "duration": duration,
        "stages": stages,
        "end_to_end": end_to_end,
        "cost": total_cost,
        "items_arrived": end_to_end["arrivals"],
        "items_completed": exits,
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
