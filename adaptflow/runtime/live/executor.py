"""The live executor: a plan becomes pool resizes of the stage workers and split
probabilities in Redis, inside the shared safety envelope."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery

from adaptflow.agents import Applied, Clock, Executor, Plan
from adaptflow.agents.safety import SafetyEnvelope, StageBounds, envelope_for
from adaptflow.scenario.schema import Scenario

from ..celery_app import LiveContext, context_of
from .ledger import PoolLedger
from .nodes import refuse_groups

log = logging.getLogger(__name__)


def live_envelope(scenario: Any, max_step: int | None = None, cooldown: float = 0.0) -> SafetyEnvelope:
    """The scenario's envelope with every pool's minimum raised to 1: a prefork pool with no
    process consumes nothing and cannot be grown back by a task arriving, so live a stage
    keeps at least one process (a plan asking for 0 is clamped, and the clamp logged)."""
    env = envelope_for(scenario, max_step=max_step, cooldown=cooldown)
    env.bounds = {n: StageBounds(max(1, b.min_workers), max(1, b.max_workers)) for n, b in env.bounds.items()}
    return env


class CeleryExecutor(Executor):
    """Resizes each stage worker's prefork pool with ``pool_grow``/``pool_shrink`` aimed at that
    worker alone, after the shared :class:`SafetyEnvelope` (bounds, cooldown, largest step; every
    clamp logged), and writes the splits to Redis where the routing tasks read them.

    A pool shrinks in one ``pool_shrink(n)``, never in steps of one: billiard retires idle
    processes, and a retiring process stays in its list (idle) until it is joined, so a second
    ``shrink(1)`` right after the first picks the same process again: measured, five
    ``shrink(1)`` on a 6-process pool retired 2 processes while the pool's own count went to 1.
    It asks for no more than the idle processes (:meth:`_shrink_now`; the busy ones retire at
    later decisions, as they finish). A shrink with fewer idle processes than asked, which a task
    starting in between can still cause, retires those it found (billiard lowers its own
    count by as many) and answers an error: the pool is then smaller than the target, by a number
    the answer does not give. A retired process leaves the worker's process list a second or more
    later (its SIGTERM handler exits after a 1 s pause, and it is joined after that), so the pool
    is re-based on the list at the following decisions (:meth:`adopt_retired`), for
    ``PoolLedger.SETTLE`` wall seconds after the refusal. Holding the target instead (as before)
    billed and counted processes that were gone, and since a planner asking for the held target
    sent no ``pool_grow``, the pool shrank with every refused shrink and never grew back: measured
    on ``mmc`` with the Erlang planner, a target of 11-12 on 6-8 processes for 200 scenario
    seconds, and a queue of 580. The worker must run without ``--autoscale``.

    On a user's app (``scenario`` given: the app has no adaptflow context), the same pool
    commands go to the mapped workers; splits are the app's own routing, which adaptflow does not
    reach: a plan's splits are refused, and the refusal logged."""

    def __init__(
        self,
        app: Celery,
        ledger: PoolLedger,
        clock: Clock,
        envelope: SafetyEnvelope | None = None,
        timeout: float = 2.0,
        scenario: Scenario | None = None,
    ):
        refuse_groups(ledger.workers, "the central executor resizes one named worker per stage")
        self.app, self.ledger, self.clock, self.timeout = app, ledger, clock, timeout
        self.context: LiveContext | None = context_of(app) if scenario is None else None
        self.scenario = scenario if scenario is not None else self.context.scenario
        self.envelope = envelope or live_envelope(self.scenario)
        self.splits: dict[str, dict[str | None, float]] = {}
        self.refused: dict[str, float] = {}  # stage -> wall time of its last refused pool_shrink
        # Shrink by the idle processes only (see _shrink_now): a refused shrink leaves the
        # worker's prefetch too high. False only to test how a refusal is handled.
        self.idle_only = True

    def current_workers(self) -> dict[str, int]:
        return self.ledger.targets()

    def _command(self, name: str, worker: str, n: int) -> str | None:
        """Run a pool command on one worker; ``None`` if it was done, else the reason."""
        replies = getattr(self.app.control, name)(n, destination=[worker], reply=True, timeout=self.timeout)
        answer = next((r[worker] for r in replies or [] if worker in r), None)
        if answer is None:
            return f"{worker} did not answer {name}"
        return None if "ok" in answer else str(answer.get("error", answer))

    def _idle(self, worker: str) -> int | None:
        """Processes of ``worker`` not running a task now (listed processes minus active tasks,
        one inspect round trip each); None when it does not answer."""
        inspect = self.app.control.inspect(destination=[worker], timeout=self.timeout)
        stats, active = inspect.stats() or {}, inspect.active() or {}
        if worker not in stats or worker not in active:
            return None
        return max(0, len(stats[worker]["pool"]["processes"]) - len(active[worker]))

    def _shrink_now(self, stage: str, have: int, wanted: int, applied: Applied) -> int:
        """The size to shrink to now: ``wanted``, or as far as the idle processes allow.

        Why: billiard refuses a shrink with fewer idle processes than asked, after retiring the
        idle ones, and Celery then skips lowering the worker's prefetch (it does so only after a
        shrink that returns). The worker is left reserving more messages than it has processes:
        the broker's queue reads short, and every later run starts on that worker (measured on
        the example app: 1 process, prefetch_count 3). Busy processes retire at later decisions,
        as they finish, which is what the simulator's graceful scale-down does."""
        if not self.idle_only:
            return wanted
        idle = self._idle(self.ledger.pools[stage].worker)
        if idle is None or have - wanted <= idle:
            return wanted
        applied.clamps.append(
            f"{stage}: {have - wanted} fewer processes asked, {idle} idle: shrinking by {idle} now, "
            "the busy ones at later decisions"
        )
        return have - idle

    def adopt_retired(self, now: float) -> None:
        """Re-base each pool whose shrink was refused on what its worker runs: the processes it
        lists (or more, if more tasks ran at once; the monitor's reconciliation just read both into
        ``pool.active``), when that is below the target. Processes retired by the refused shrink
        leave the list over the next seconds, so this repeats until ``PoolLedger.SETTLE`` wall
        seconds after the refusal; it never raises a target (a list holding a retiring process
        says nothing more)."""
        for stage, since in list(self.refused.items()):
            pool = self.ledger.pools[stage]
            grown = pool.last_grow
            if now - grown > self.ledger.SETTLE and pool.active < pool.target:  # no grown process pending
                log.info(
                    "stage %s: a refused pool_shrink retired %d of %d processes; target re-based to %d",
                    stage, pool.target - pool.active, pool.target, pool.active,
                )  # fmt: skip
                # billed from the refusal on (when billiard retired them), unless re-based since
                pool.set_target(pool.active, max(since, pool.history[-1][0]))
                pool.starting = 0
            if now - max(since, grown) > self.ledger.SETTLE:
                del self.refused[stage]

    def apply(self, plan: Plan) -> Applied:
        refused = list(plan.splits) if self.context is None else []
        if refused:  # a user's app routes its own tasks: adaptflow does not reach its splits
            plan = Plan(workers=plan.workers)
        self.adopt_retired(time.time())
        applied = self.envelope.constrain(plan, self.current_workers(), self.clock.now())
        applied.clamps += [f"{owner}: split not applied (a user's app routes its own tasks)" for owner in refused]
        for stage, wanted in applied.workers.items():
            pool = self.ledger.pools[stage]  # every stage has its worker (AppMapping.require_workers)
            have = pool.target
            if wanted > have:
                reason = self._command("pool_grow", pool.worker, wanted - have)
                if reason is None:
                    self.refused.pop(stage, None)  # the list now lags the grow: settled rules re-base
                    pool.set_target(wanted, time.time())
                else:
                    applied.clamps.append(f"{stage}: held at {have}, pool_grow refused: {reason}")
            elif wanted < have:
                wanted = self._shrink_now(stage, have, wanted, applied)
                if wanted == have:
                    applied.workers[stage] = have
                    continue
                reason = self._command("pool_shrink", pool.worker, have - wanted)
                if reason is None:
                    pool.set_target(wanted, time.time(), shrink=True)
                else:  # billiard retired the idle ones it found: the process list will say how many
                    pool.changed_at = self.refused[stage] = time.time()
                    applied.clamps.append(
                        f"{stage}: pool_shrink to {wanted} refused ({reason}); held at {have} until the "
                        "worker's process list shows what was retired"
                    )
            applied.workers[stage] = pool.target
        if self.context is not None:
            self.splits.update(applied.splits)
            store = self.context.splits
            for owner, probs in self.splits.items():  # all of them: a restarted Redis lost the keys
                store.write(owner, probs)
        for clamp in applied.clamps:
            log.info("safety envelope: %s", clamp)
        return applied
