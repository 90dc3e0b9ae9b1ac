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
    A shrink with fewer idle processes than asked retires those it found and answers an error;
    the target is then held, and the monitor's reconciliation adopts the worker's process list
    once it has settled. The worker must run without ``--autoscale``.

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
        self.app, self.ledger, self.clock, self.timeout = app, ledger, clock, timeout
        self.context: LiveContext | None = context_of(app) if scenario is None else None
        self.scenario = scenario if scenario is not None else self.context.scenario
        self.envelope = envelope or live_envelope(self.scenario)
        self.splits: dict[str, dict[str | None, float]] = {}

    def current_workers(self) -> dict[str, int]:
        return self.ledger.targets()

    def _command(self, name: str, worker: str, n: int) -> str | None:
        """Run a pool command on one worker; ``None`` if it was done, else the reason."""
        replies = getattr(self.app.control, name)(n, destination=[worker], reply=True, timeout=self.timeout)
        answer = next((r[worker] for r in replies or [] if worker in r), None)
        if answer is None:
            return f"{worker} did not answer {name}"
        return None if "ok" in answer else str(answer.get("error", answer))

    def apply(self, plan: Plan) -> Applied:
        refused = list(plan.splits) if self.context is None else []
        if refused:  # a user's app routes its own tasks: adaptflow does not reach its splits
            plan = Plan(workers=plan.workers)
        applied = self.envelope.constrain(plan, self.current_workers(), self.clock.now())
        applied.clamps += [f"{owner}: split not applied (a user's app routes its own tasks)" for owner in refused]
        for stage, wanted in applied.workers.items():
            pool = self.ledger.pools[stage]  # every stage has its worker (AppMapping.require_workers)
            have = pool.target
            if wanted > have:
                reason = self._command("pool_grow", pool.worker, wanted - have)
                if reason is None:
                    pool.set_target(wanted, time.time())
                else:
                    applied.clamps.append(f"{stage}: held at {have}, pool_grow refused: {reason}")
            elif wanted < have:
                reason = self._command("pool_shrink", pool.worker, have - wanted)
                if reason is None:
                    pool.set_target(wanted, time.time())
                else:  # billiard retired the idle ones it found: the process list will say how many
                    pool.changed_at = time.time()
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
