"""The load generator: a scenario's arrival process, submitted as Celery tasks in real time.

The arrival times, sizes and qualities come from the simulator's own arrival processes with the
simulator's random streams (:class:`~adaptflow.scenario.streams.Streams`, one per source), so
``loadgen(scenario, seed=s)`` submits exactly the arrivals that ``Simulation(scenario, rng=s)``
simulates: the same trace, live and simulated."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from celery import Celery

from adaptflow.scenario.loading import load_scenario
from adaptflow.scenario.schema import Scenario
from adaptflow.scenario.streams import Streams, arrivals_with_quality

from .celery_app import context_of, make_app

log = logging.getLogger(__name__)


def arrival_trace(
    scenario: str | Path | Scenario, seed: int, duration: float
) -> Iterator[tuple[float, str, float, bool]]:
    """``(time, source, size, bad)`` of every arrival before ``duration`` (scenario seconds), in
    time order, as the simulator draws them for ``seed``."""
    streams = Streams(np.random.default_rng(seed))
    spec = load_scenario(scenario).for_episode(streams)  # the episode's windows and profiles, as drawn there
    iters = [
        ((t, order, name, size, bad) for t, size, bad in arrivals_with_quality(
            src, streams.get("arrivals", name), streams.get("quality", name), duration))
        for order, (name, src) in enumerate(spec.sources.items())
    ]  # fmt: skip
    for t, _, name, size, bad in heapq.merge(*iters):
        if t >= duration:
            return
        yield t, name, size, bad


@dataclass
class LoadgenResult:
    submitted: int = 0
    lost: int = 0  # arrivals that could not be submitted (the broker was down)
    per_source: dict[str, int] = field(default_factory=dict)
    wall_seconds: float = 0.0


def run_loadgen(
    scenario: str | Path | Scenario,
    broker_url: str | None = None,
    duration: float | None = None,
    time_scale: float = 1.0,
    seed: int = 0,
    prefix: str = "adaptflow",
    app: Celery | None = None,
    stop: threading.Event | None = None,
    start: float | None = None,
) -> LoadgenResult:
    """Submit the scenario's arrivals for ``duration`` scenario seconds (default: its horizon),
    each at its time on the wall clock sped up ``time_scale`` times from ``start`` (wall
    ``time.time()``, default now). ``app``: an app from :func:`make_app` (else one is made from
    ``broker_url``); ``stop``: an event that ends the load early (for a thread).

    An arrival the broker refuses (Redis down) is logged and counted as lost, not retried: a
    real producer's retry policy is its own, and the load's timing must not drift."""
    if app is None:
        if broker_url is None:
            raise ValueError("give a broker URL or an app")
        app = make_app(scenario, broker_url, time_scale, prefix)
    ctx = context_of(app)
    duration = ctx.scenario.horizon if duration is None else duration
    if not duration > 0:
        raise ValueError(f"duration must be > 0 scenario seconds, got {duration}")
    result = LoadgenResult(per_source={name: 0 for name in ctx.scenario.sources})
    t0 = time.time() if start is None else start
    from .live import TRANSIENT_ERRORS

    for t, source, size, bad in arrival_trace(ctx.scenario, seed, duration):
        delay = t0 + t / ctx.time_scale - time.time()
        if delay > 0 and (stop.wait(delay) if stop is not None else time.sleep(delay)):
            break
        if stop is not None and stop.is_set():
            break
        try:
            ctx.submit(source, result.per_source[source], size, bad)
        except TRANSIENT_ERRORS as exc:
            result.lost += 1
            log.warning("loadgen: %s-%d lost, broker unavailable (%s)", source, result.per_source[source], exc)
        else:
            result.submitted += 1
        result.per_source[source] += 1
    result.wall_seconds = time.time() - t0
    return result
