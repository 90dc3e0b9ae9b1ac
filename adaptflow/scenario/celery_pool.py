"""A stage's pool as Celery's prefork pool runs it, in a scenario's ``workers`` fields: the one
home of the measured constants that ``calibrate`` (a recorded prefork worker) and the simulated
reference of a live run (``compare_live.as_live``) both write."""

from __future__ import annotations

PREFORK = "celery.concurrency.prefork:TaskPool"
"""What a prefork worker's ``inspect().stats()`` names its pool (``pool.implementation``)."""

CELERY_POOL_TICK = 5.0
"""Wall seconds between a prefork pool's maintenance ticks: a process added by ``pool_grow``
starts at the next tick (measured with Celery 5.7), 0 to 5 s later."""
CELERY_FORK_SECONDS = 0.08
"""Wall seconds the worker takes to fork one new pool process at a tick (measured on a 2-core
machine: growing 1 -> 13 processes held the worker's dispatch for about 1 s)."""
CELERY_LATE_REAP = 0.36
"""The share of ``pool_shrink`` retirements Celery's prefork pool reaps only at a maintenance
tick (18 of 50 traced on the example app, exact 95 % interval 0.23-0.51); until then the fair
scheduler may still write a task to the dead process (``Workers.late_reap``, simulator/reaps.py)."""
CELERY_DYING_SECONDS = 1.0
"""Wall seconds a late-reaped process takes to die (billiard's exit sleeps 1 s after saying so):
the tick that reaps it is the first one after that (late reaps measured 1.2-5.0 s after the shrink)."""


def prefork_workers(time_scale: float = 1.0) -> dict[str, float]:
    """The ``workers`` fields of a stage on a prefork pool, ``time_scale`` scenario seconds to
    the wall second: grown processes start at the pool's ticks and fork one after another, and
    a process a shrink retires is reaped late as often as measured."""
    return {
        "startup_tick": CELERY_POOL_TICK * time_scale,
        "startup_delay": CELERY_FORK_SECONDS * time_scale,
        "late_reap": CELERY_LATE_REAP,
        "late_reap_after": CELERY_DYING_SECONDS * time_scale,
    }
