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
CELERY_LATE_REAP = 0.18
"""The share of ``pool_shrink`` retirements after which Celery's prefork pool wrote a task to
the retired process and held it until a maintenance tick reaped the process: 39 of 218 shrinks
on the example app's workers over five sessions and two VMs (exact 95 % interval 0.13-0.24),
read as a write task received and not started for more than half a second right after a shrink
(``Workers.late_reap``, simulator/reaps.py). The process is reaped late more often, 44 of 162
traced (``examples.pool_trace --summary``, 0.27), but a task was written to it in only about
two thirds of those windows (8 of 10 traced; 10 stalls in 65 erlang shrinks), where the model
sends one at its first start. At the example app's loads a task comes in every window, so the
share that held one is the rate the model needs. It was 0.36 (the first 50 traced reaps) until
stop 42 (docs/sim_to_real.md: erlang's held-out runs simulated 63 % slow on p95 at 0.27)."""
CELERY_DYING_SECONDS = 1.0
"""Wall seconds a late-reaped process takes to die (billiard's exit sleeps 1 s after saying so):
the tick that reaps it is the first one after that (late reaps measured 0.9-5.0 s after the shrink)."""


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
