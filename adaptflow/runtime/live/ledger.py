"""The pool size of every managed stage's worker, shared by the executor (which moves it) and
the monitor (which reconciles it with what the worker reports).

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

import bisect
import logging
import math
import time
from dataclasses import dataclass

from celery import Celery

from .nodes import NodeReader, Roster, is_group

log = logging.getLogger(__name__)


@dataclass
class PoolState:
    """One stage's pool: the target the executor applied (as a step function of wall time, for
    the worker-time integral) and what the worker last reported."""

    worker: str
    target: int
    history: list[tuple[float, int]]  # (wall time, target from then on)
    pid: object = None  # the worker's main process, to notice a restart (a group's: its nodes')
    reported_processes: int | None = None  # len(stats.pool.processes)
    reported_max_concurrency: int | None = None  # stats.pool.max-concurrency: its start-up value
    autoscaler: dict | None = None  # stats.autoscaler of a worker run with --autoscale
    active: int = 0  # reconciled: ready processes now
    starting: int = 0  # reconciled: applied but not ready yet
    changed_at: float = 0.0  # wall time of the last resize command
    shrunk: bool = False  # the last resize was the executor's own pool_shrink
    lingering: bool = False  # a retired process still listed, said once (see PoolLedger._correct)
    last_grow: float = -math.inf
    """Wall time the target last went up: the grown processes start at the pool's next
    maintenance tick, so the process list lags for up to ``PoolLedger.SETTLE`` s. Kept apart
    from ``history``, which forgets what is billed."""

    def set_target(self, n: int, wall: float, shrink: bool = False) -> None:
        """``shrink``: the executor's own ``pool_shrink`` to ``n`` (what it leaves listed may be
        retiring processes, see :meth:`PoolLedger._correct`)."""
        self.changed_at = wall
        self.shrunk, self.lingering = shrink, False
        if n > self.target:
            self.last_grow = wall
        if n != self.target:
            self.target = n
            self.history.append((wall, n))

    def forget_before(self, t: float) -> None:
        """Drop the targets superseded before ``t``, keeping the one in force at ``t``. The
        monitor bills each interval once, from its start on, and calls this then: a control loop
        that runs for weeks keeps a step function a few entries long, not every resize it made
        (which each interval's integral would walk again)."""
        in_force = bisect.bisect_right(self.history, t, key=lambda entry: entry[0]) - 1
        if in_force > 0:
            del self.history[:in_force]

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

    def __init__(
        self,
        app: Celery,
        workers: dict[str, str],
        timeout: float = 2.0,
        roster: Roster | None = None,
    ):
        self.app, self.timeout = app, timeout
        self.nodes = NodeReader(app, workers, timeout, roster)  # roster: a group's nodes by heartbeat
        self.workers = self.nodes.patterns  # stage -> its node, or its group's pattern (nodes.py)
        self.pools: dict[str, PoolState] = {}

    def stats(self) -> dict[str, dict]:
        """``inspect().stats()`` of the managed workers, by node name or group pattern (a named
        node that does not answer is missing; a group is its nodes' stats merged)."""
        return self.nodes.read("stats")[0]

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
            if s is None or s.get("partial"):  # a group with a silent member is read next time
                log.warning("worker %s (stage %s) did not answer stats; pool assumed unchanged", pool.worker, stage)
                continue
            self._read(pool, s)
            self._rebase(stage, pool, s, now)
            self._correct(stage, pool, running.get(stage, 0), queued.get(stage, 0.0), now)
            pool.active = min(pool.target, max(pool.reported_processes or 0, running.get(stage, 0)))
            pool.starting = pool.target - pool.active

    @staticmethod
    def _rebase(stage: str, pool: PoolState, s: dict, now: float) -> None:
        """A pool someone else sizes: Celery's autoscaler (its own count is the target) or a
        restarted worker (a new pid: it runs its command-line concurrency again)."""
        if pool.autoscaler:
            pool.set_target(int(pool.autoscaler.get("current", pool.reported_processes)), now)
        elif s.get("pid") != pool.pid:
            if is_group(pool.worker):  # KEDA added or removed a node: the group's pid is its (node, pid) pairs
                log.info(
                    "stage %s: the nodes of %s are now %s: pool re-based from %d to their %d processes",
                    stage, pool.worker, s.get("nodes"), pool.target, pool.reported_processes,
                )  # fmt: skip
            else:
                log.warning(
                    "worker %s (stage %s) restarted (pid %s -> %s): pool re-based from %d to its %d processes",
                    pool.worker, stage, pool.pid, s.get("pid"), pool.target, pool.reported_processes,
                )  # fmt: skip
            pool.set_target(int(pool.reported_processes or 0), now)
        pool.pid = s.get("pid")

    def _correct(self, stage: str, pool: PoolState, measured: int, queued: float, now: float) -> None:
        """Adopt the worker's process list once settled, and a pool proved bigger by the tasks
        the worker runs now. Only the worker's own list of running tasks can prove the pool
        bigger: a peak measured from the tasks' records is a report (last_peaks), since records
        lost in a Redis restart would overstate it."""
        listed = int(pool.reported_processes or 0)
        settled = now - pool.changed_at > self.SETTLE and not pool.autoscaler
        starved = listed < pool.target and queued > 0 and measured <= listed
        if settled and listed > pool.target and pool.shrunk:
            # After a shrink of ours the surplus is a retired process that has not exited: billiard
            # lists it until it does, and one whose SIGTERM Python swallowed (raised inside a
            # weakref callback: "Exception ignored") lingers on. It serves nothing. Taking it for
            # capacity made the next shrink retire the last healthy process, and the stage stood
            # still with a backlog (measured: 15 s on the example app). Only tasks running at
            # once (below) prove the pool bigger.
            if not pool.lingering:
                log.warning(
                    "stage %s: the worker still lists %d processes, %.0f s after it was shrunk to %d: a "
                    "retired process has not exited; the target stays %d",
                    stage, listed, now - pool.changed_at, pool.target, pool.target,
                )  # fmt: skip
            pool.lingering = True
        elif settled and (listed > pool.target or starved):
            log.warning(
                "stage %s: the worker lists %d processes, %.0f s after it was set to %d; target re-based",
                stage, listed, now - pool.changed_at, pool.target,
            )  # fmt: skip
            pool.set_target(listed, now)
        if measured > pool.target:
            log.warning(
                "stage %s: %d tasks ran at once on a pool of %d; the worker was resized outside the executor "
                "(or a resize ran twice: kombu publishes control messages with retries, around a broker restart)",
                stage, measured, pool.target,
            )  # fmt: skip
            pool.set_target(measured, now)
