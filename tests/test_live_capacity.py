"""Where live capacity went (issue 16, part 5): a ``pool_shrink`` that billiard refuses because
processes are busy still retires the idle ones it found. The executor used to hold the target
it had, so the ledger billed and counted processes that were gone, and a planner asking for that
target again sent no ``pool_grow``: the pool shrank with every refusal and never grew back.

Real Redis and real Celery workers (tests/live_fixtures.py), sped up ``TIME_SCALE`` times."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from adaptflow.agents import Plan
from adaptflow.runtime.celery_app import context_of
from adaptflow.runtime.live_run import build_loop

from .live_fixtures import app_for, events, wait_for, write_scenario

# One stage of long fixed visits (40 s, 8 s wall): busy processes stay busy through the test.
LONG = {
    "name": "live_long",
    "horizon": 600,
    "sla": {"latency": 600.0},
    "sources": {"jobs": {"process": "poisson", "rate": 0.1, "to": "work"}},
    "stages": {
        "work": {
            "workers": {"initial": 4, "min": 1, "max": 6, "cost_per_second": 1.0},
            "service": {"dist": "deterministic", "mean": 40.0},
            "next": None,
        }
    },
}


def listed(app, worker: str) -> int:
    """The processes the worker lists (``inspect().stats()``)."""
    stats = app.control.inspect(destination=[worker], timeout=1.0).stats() or {}
    return len(stats[worker]["pool"]["processes"]) if worker in stats else -1


@pytest.mark.slow  # the refusal path, now rare (shrinks ask for idle processes): make test-slow (12 s)
@pytest.mark.live
def test_a_refused_shrink_is_not_counted_as_applied_and_the_pool_grows_back(
    broker: str, workers, tmp_path: Path
) -> None:
    scenario = write_scenario(tmp_path, LONG)
    (worker,) = workers.start(scenario, broker, {"work": 4})
    app = app_for(scenario, broker)
    live = build_loop(app, {"work": worker.name}, interval=10)
    executor, monitor, pool = live.executor, live.celery_monitor, live.ledger.pools["work"]
    # the loop's start observation is of an empty interval, as the simulator's at t=0
    assert monitor.observe().interval == 0.0

    for k in range(3):  # three busy processes, one idle
        context_of(app).submit("jobs", k)
    wait_for(lambda: len(events(app, "start")) == 3, 5, 0.05, "3 visits started")
    assert monitor.observe().interval > 0

    getattr(executor, "executor", executor).idle_only = False  # ask for all 3 at once: how a refusal is handled
    applied = executor.apply(Plan(workers={"work": 1}))  # shrink(3): billiard retires the idle one only
    assert any("pool_shrink to 1 refused" in c for c in applied.clamps), applied.clamps
    wait_for(lambda: listed(app, worker.name) == 3, 8, 0.2, "the retired process to leave the list")

    snapshot = monitor.observe().stages["work"]
    applied = executor.apply(Plan(workers={"work": 4}))  # the refused shrink is re-based first: grow(1)
    assert applied.workers == {"work": 4} and pool.target == 4
    assert snapshot.busy == 3
    # the worker really runs 4 processes again (the old executor held 4, sent nothing, and left 3)
    wait_for(lambda: listed(app, worker.name) == 4, 8, 0.2, "the pool to grow back to 4 processes")
    # the interval that re-based the pool bills the 3 processes from the refusal on, not 4
    start = pool.history[-2]
    assert start[1] == 3, pool.history
    time.sleep(0.2)
    assert monitor.observe().stages["work"].target == 4


def prefetch(app, worker: str) -> int:
    stats = app.control.inspect(destination=[worker], timeout=1.0).stats() or {}
    return int(stats[worker]["prefetch_count"]) if worker in stats else -1


@pytest.mark.live
def test_a_shrink_retires_the_idle_processes_only_and_keeps_the_prefetch_in_step(
    broker: str, workers, tmp_path: Path
) -> None:
    """With three of four processes busy, a plan for 1 shrinks by the one idle process now (no
    refusal), so Celery lowers the worker's prefetch with it; the busy ones are left for later
    decisions. (A refused shrink retires the idle process but leaves the prefetch at 4: the
    worker then reserves messages it has no process for.)"""
    scenario = write_scenario(tmp_path, LONG)
    (worker,) = workers.start(scenario, broker, {"work": 4})
    app = app_for(scenario, broker)
    live = build_loop(app, {"work": worker.name}, interval=10)
    executor, pool = live.executor, live.ledger.pools["work"]
    assert prefetch(app, worker.name) == 4  # worker_prefetch_multiplier 1 x 4 processes
    for k in range(3):
        context_of(app).submit("jobs", k)
    wait_for(lambda: len(events(app, "start")) == 3, 5, 0.05, "3 visits started")

    applied = executor.apply(Plan(workers={"work": 1}))
    assert not any("refused" in c for c in applied.clamps), applied.clamps
    assert any("1 idle: shrinking by 1 now" in c for c in applied.clamps), applied.clamps
    assert applied.workers == {"work": 3} and pool.target == 3
    wait_for(lambda: listed(app, worker.name) == 3, 8, 0.2, "the idle process to leave the list")
    assert prefetch(app, worker.name) == 3
    again = executor.apply(Plan(workers={"work": 1}))  # still all busy: nothing to retire yet
    assert again.workers == {"work": 3} and not any("refused" in c for c in again.clamps)
