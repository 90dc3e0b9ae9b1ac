"""A machine's cores, shared by the CPU work of the pools placed on it (a scenario's ``hosts``).

Egalitarian processor sharing: with ``n`` CPU jobs in progress on ``c`` cores every one of them
progresses at ``min(1, c / n)`` seconds of work per second (``n`` counts each hand-off and
turnaround in progress as ``handoff_cpu`` of a job: Celery's own work, ``Host.handoff_cpu``;
with ``Host.visit_cpu`` that work is a job of its own per visit instead, run like any other;
with ``Host.oversubscription`` each job past the cores costs the machine that share of its
capacity: ``c / (n * (1 + k (n - c)))``). The speed depends on ``n`` alone, so the virtual
clock below stays exact. A kernel's fair scheduler shares a machine's cores among its runnable
processes this way, to a good approximation at the time scales of tasks (tens of milliseconds
and up).

How, exactly and cheaply: all jobs progress at the same rate, so one clock of *virtual time*
(the work each job in progress has received since t = 0) describes them all. A job of ``w``
seconds of work that starts when the virtual clock reads ``V`` ends when it reads ``V + w``,
whatever happens in between. So the host keeps a heap of those end readings and one wakeup for
the earliest; a job starting or ending changes the rate, and the wakeup is planned again (an
earlier wakeup is not cancelled, it carries an older plan number and does nothing). A job's
start or end costs O(log n) and one scheduled event, not a reschedule of every job in progress.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

import simpy

from .wakeup import Wakeup

_SAME_READING = 1e-12
"""Jobs whose end readings are this close (relative) to the clock end together: a float sum of
rates times durations may fall a hair short of an end it should reach exactly."""


class HostState:
    """One host's cores and the CPU jobs on them. Stages hand it work with :meth:`run` and are
    called back, with the value they gave, when that work is done."""

    def __init__(self, env: simpy.Environment, cores: float, handoff_cpu: float = 0.0, oversubscription: float = 0.0):
        self._env, self.cores = env, cores
        self.oversubscription = oversubscription  # capacity lost per job past the cores (Host.oversubscription)
        self.handoff_cpu = handoff_cpu  # the CPU weight of a hand-off or turnaround (Host.handoff_cpu)
        self.handoffs = 0  # hand-offs and turnarounds in progress on the host, counted when handoff_cpu > 0
        self.virtual = 0.0  # the virtual clock: work each job in progress has received
        self._updated = 0.0  # the (real) time at which ``virtual`` was brought up to date
        self._jobs: list[tuple[float, int, Callable[[Any], None], Any]] = []  # (end reading, order, callback, value)
        self._order = 0  # breaks ties in the heap: jobs ending together end in the order they started
        self._plan = 0  # the number of the current wakeup plan; older wakeups are stale
        self.serving = 0  # pool processes of any stage placed here serving a task (Stage.contention)

    def speed(self) -> float:
        """How fast each job in progress runs now, as a share of its full speed."""
        n = len(self._jobs) + self.handoff_cpu * self.handoffs
        if n <= self.cores:
            return 1.0
        return self.cores / (n * (1.0 + self.oversubscription * (n - self.cores)))

    def handoff(self, delta: int) -> None:
        """A hand-off or turnaround begins (``+1``) or ends (``-1``): the jobs' speed changes
        with the CPU it takes (only called when ``handoff_cpu`` is not 0)."""
        self._advance(self._env._now)
        self.handoffs += delta
        if self._jobs:
            self._replan()

    def run(self, work: float, value: Any, callback: Callable[[Any], None]) -> None:
        """Start a job of ``work`` CPU seconds; ``callback(value)`` when it is done."""
        now = self._env._now
        self._advance(now)
        self._order += 1
        heappush(self._jobs, (self.virtual + work, self._order, callback, value))
        self._replan()

    def _advance(self, now: float) -> None:
        dt = now - self._updated
        if dt and self._jobs:
            self.virtual += dt * self.speed()
        self._updated = now

    def _replan(self) -> None:
        self._plan += 1
        if self._jobs:
            delay = (self._jobs[0][0] - self.virtual) / self.speed()
            Wakeup(self._env, max(delay, 0.0), self._plan, self._due)

    def _due(self, event: Wakeup) -> None:
        if event._value != self._plan:  # planned before a job started or ended: stale
            return
        self._advance(self._env._now)
        jobs, reading = self._jobs, self.virtual + _SAME_READING * max(1.0, abs(self.virtual))
        done = []
        while jobs and jobs[0][0] <= reading:
            done.append(heappop(jobs))
        self._replan()
        for _, _, callback, value in done:  # a callback may start the next job: run() replans
            callback(value)
