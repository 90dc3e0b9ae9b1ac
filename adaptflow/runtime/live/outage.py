"""Surviving a Redis outage: the one Coordinator loop keeps running while Redis is away. The
executor holds the last applied plan (the workers keep it anyway), the monitor retries its read
with backoff, and the snapshot taken once Redis is back covers the whole outage."""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from adaptflow.agents import Applied, Executor, MetricsSnapshot, Monitor, Plan

from ..celery_app import TRANSIENT_ERRORS  # what a Redis outage raises; defined beside the visit that waits it out

if TYPE_CHECKING:
    from .executor import CeleryExecutor
    from .monitor import CeleryMonitor

log = logging.getLogger(__name__)

MAX_OUTAGES_KEPT = 1000  # the latest outages, for a run's summary; each is in the event log anyway


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
    taken once Redis is back covers the whole outage (its ``interval`` says how long). The times
    the event stream lost events are noted too (:meth:`CeleryMonitor.lost_events`), each in the
    record after the interval it cut.

    ``give_up_after``: scenario time after which an outage is fatal (the run's end plus a grace):
    the error is raised then, rather than the loop waiting for ever; so is it once the clock is
    interrupted (the loop is stopping: a KEDA scaler told to stop during an outage)."""

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
        self.outages: deque[Outage] = deque(maxlen=MAX_OUTAGES_KEPT)  # a loop may run for a week

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
            is_retryable=lambda _: self.monitor.clock.now() < self.give_up_after and not self.monitor.clock.interrupted,
            with_failure_count=True,
        )
        self.executor.notes.extend(self.monitor.lost_events())  # the event stream's own gaps
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
