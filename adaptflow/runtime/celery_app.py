"""The live world: a scenario's pipeline as Celery tasks on a Redis broker.

Every stage is a Celery queue (named after the stage) served by one worker, whose prefork pool is
the stage's worker pool. A stage visit is one task message: the task sleeps a service time drawn
from the stage's service distribution (divided by ``time_scale``, so that a live run can go
faster than the scenario's seconds), applies the stage's failure and validation draws, then
routes the item by the scenario's route to the next stage's queue or to the exit. A controllable
split reads its current probabilities from Redis (:class:`SplitStore`), where the executor
writes them, so a planner's rerouting takes effect for the very next item.

What the monitor needs is written by the tasks themselves into one Redis stream per run
(``<prefix>:events``): an ``arrive`` record per item (loadgen), and per visit ``enter`` (queued),
``start``, ``finish`` (with its enter/start times and validation flag) records, plus ``exit``,
``drop`` and ``giveup`` records when an item leaves. A retry (an attempt that failed, queued
again at the same stage) is an ``enter`` with ``r`` = the attempt number (1, 2, ...); a first
visit has no ``r``: a retry is not an arrival, in the simulator nor here. Times are wall-clock
``time.time()`` seconds (shared by every process on the machine); the monitor turns them into
scenario seconds.

This module imports the scenario room (not the SimPy model), and asks it what the scenario
means: the route objects decide where an item goes (``choose``), :func:`outcome_rule` decides a
visit's failure, retry and validation, and the service samplers draw the same distributions.
The simulator calls the same code, so the two worlds cannot drift apart.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
from celery import Celery
from kombu import Queue

from adaptflow.scenario.loading import load_scenario
from adaptflow.scenario.outcome import DETECTED, FAILED_RETRY, Decide, Outcome, outcome_rule
from adaptflow.scenario.routing import Route, Split, Target
from adaptflow.scenario.schema import Scenario
from adaptflow.scenario.streams import service_sampler

log = logging.getLogger(__name__)

TASK_NAME = "adaptflow.visit"
STREAM_MAXLEN = 2_000_000
"""Cap of the event stream (approximate trimming): about 200 MB of Redis at most; a monitor reads
it every decision interval, so only a monitor stalled for hours could miss trimmed records."""


def redis_client(url: str, timeout: float = 2.0) -> redis.Redis:
    """A Redis client that fails fast (``timeout`` seconds) instead of hanging when Redis is
    gone: the live loop has its own retry with backoff, and a task must not block its worker."""
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True, health_check_interval=10
    )


@dataclass(slots=True)
class LiveItem:
    """An item on its way through the live pipeline; travels in task messages as a dict.

    It has what a route looks at (``bad``, ``flagged``, ``source``: the scenario room's
    ``Routable``), as the simulator's item does."""

    id: str
    source: str
    created: float  # wall-clock time.time() of its arrival
    size: float = 1.0  # multiplies every service time
    bad: bool = False  # the truth about quality
    flagged: bool = False  # what a validation stage concluded
    attempt: int = 0  # failed attempts at the current stage

    def to_message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "created": self.created,
            "size": self.size,
            "bad": self.bad,
            "flagged": self.flagged,
            "attempt": self.attempt,
        }

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> LiveItem:
        return cls(**message)


class SplitStore:
    """The current probabilities of each controllable split, in Redis (``<prefix>:split:<owner>``):
    the executor writes, the task that routes an item reads. A missing key (a fresh or restarted
    Redis) means the scenario's own split."""

    def __init__(self, client: redis.Redis, scenario: Scenario, prefix: str = "adaptflow"):
        self.client, self.prefix = client, prefix
        self.defaults = {o: {b.to: b.p for b in s.split} for o, s in scenario.controllable_splits().items()}

    def key(self, owner: str) -> str:
        return f"{self.prefix}:split:{owner}"

    def write(self, owner: str, probs: dict[str | None, float]) -> None:
        if owner not in self.defaults:
            raise KeyError(f"{owner!r} has no controllable split; controllable: {list(self.defaults)}")
        self.client.set(self.key(owner), json.dumps([[t, float(p)] for t, p in probs.items()]))

    def read(self, owner: str) -> dict[str | None, float]:
        raw = self.client.get(self.key(owner))
        if raw is None:
            return dict(self.defaults[owner])
        return {t: p for t, p in json.loads(raw)}

    def read_all(self) -> dict[str, dict[str | None, float]]:
        return {owner: self.read(owner) for owner in self.defaults}


@dataclass
class LiveContext:
    """What the tasks, the load generator and the monitor share: the scenario, the broker, the
    time scale and the Redis key prefix of the run."""

    scenario: Scenario
    broker_url: str
    time_scale: float = 1.0
    prefix: str = "adaptflow"
    seed: int | None = None
    _client: redis.Redis | None = field(default=None, repr=False)
    _samplers: dict[str, Callable[[], float]] = field(default_factory=dict, repr=False)
    _rules: dict[str, Decide | None] = field(default_factory=dict, repr=False)
    _rng: random.Random | None = field(default=None, repr=False)
    _pid: int = field(default=0, repr=False)
    task: Any = field(default=None, repr=False)  # the visit task, set by make_app

    @property
    def events_key(self) -> str:
        return f"{self.prefix}:events"

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis_client(self.broker_url)
        return self._client

    @property
    def splits(self) -> SplitStore:
        return SplitStore(self.client, self.scenario, self.prefix)

    def _per_process(self) -> None:
        """Random streams per process: a prefork child must not replay its siblings' draws."""
        pid = os.getpid()
        if self._pid != pid:
            entropy = None if self.seed is None else (self.seed, pid)
            seq = np.random.SeedSequence(entropy)
            self._rng = random.Random(int(seq.generate_state(1)[0]))
            self._samplers = {
                name: service_sampler(stage.service, np.random.default_rng(seq.spawn(1)[0]))
                for name, stage in self.scenario.stages.items()
            }
            self._rules = {
                name: outcome_rule(stage, self._rng.random, self._rng.random)
                for name, stage in self.scenario.stages.items()
            }
            self._pid = pid

    def uniform(self) -> float:
        self._per_process()
        assert self._rng is not None
        return self._rng.random()

    def service_time(self, stage: str) -> float:
        """A service time of ``stage`` in scenario seconds."""
        self._per_process()
        return self._samplers[stage]()

    def event(self, kind: str, **fields: Any) -> None:
        self.client.xadd(
            self.events_key,
            {"e": kind, **{k: _encode(v) for k, v in fields.items()}},
            maxlen=STREAM_MAXLEN,
            approximate=True,
        )

    # -- routing -------------------------------------------------------------------------------
    def next_stage(self, owner: str, route: Route, item: LiveItem) -> Target:
        """Where ``route`` (the route after ``owner``) sends ``item``; ``None`` is the exit. The
        route decides; a controllable split reads its current probabilities from Redis."""
        splits = self.splits.read(owner) if isinstance(route, Split) and route.controllable else None
        return route.choose(item, self.uniform, splits)

    def deliver(self, owner: str, route: Route, item: LiveItem) -> None:
        """Hand ``item`` on after ``owner`` (a source or a stage): to a stage's queue, or out."""
        self.enqueue(self.next_stage(owner, route, item), item)

    def enqueue(self, stage: str | None, item: LiveItem) -> None:
        """Queue a visit of ``item`` at ``stage`` (its retry when ``item.attempt > 0``: the
        ``enter`` record then carries ``r``), or record its exit (``stage=None``)."""
        now = time.time()
        if stage is None:
            self.event("exit", i=item.id, c=item.created, t=now, b=item.bad, f=item.flagged)
            return
        capacity = self.scenario.stages[stage].queue.capacity
        if capacity is not None and self.client.llen(stage) >= capacity:
            self.event("drop", s=stage, i=item.id, c=item.created, t=now)
            return
        from celery import uuid

        task_id = uuid()
        retry = {"r": item.attempt} if item.attempt else {}
        self.event("enter", s=stage, i=item.id, k=task_id, t=now, **retry)
        self.task.apply_async((item.to_message(), stage, now), queue=stage, task_id=task_id)

    def submit(self, source: str, index: int, size: float = 1.0, bad: bool = False) -> str:
        """A new item from ``source`` (the load generator's call): recorded, then routed."""
        now = time.time()
        item = LiveItem(f"{source}-{index}", source, now, float(size), bool(bad))
        self.event("arrive", src=source, i=item.id, t=now)
        self.deliver(source, self.scenario.sources[source].to, item)
        return item.id

    # -- one visit -----------------------------------------------------------------------------
    def visit(self, item: LiveItem, stage: str, enter: float, task_id: str, host: str) -> None:
        """The body of the visit task (a plain method, so that it can be tested without Celery).
        The outcome is the scenario room's rule, as in the simulator."""
        spec = self.scenario.stages[stage]
        start = time.time()
        self.event("start", s=stage, k=task_id, t=start, q=enter, h=host)
        time.sleep(self.service_time(stage) * item.size / self.time_scale)
        outcome = self.outcome(stage, item)
        if outcome.flagged:
            item.flagged = True
        # At most once per visit: a redelivered message whose visit already finished (its worker
        # died between routing and the ack) must not send the item on twice. The claim is taken
        # before routing; a process killed in the microseconds between the two loses the item.
        if not self.client.set(f"{self.prefix}:done:{task_id}", 1, nx=True, ex=3600):
            log.warning("visit %s of %s at %s already finished; not routed again", task_id, item.id, stage)
            return
        end = time.time()
        self.event(
            "finish", s=stage, k=task_id, t=end, q=enter, st=start, h=host, d=outcome is DETECTED, x=outcome.failed
        )
        if outcome is FAILED_RETRY:
            item.attempt += 1
            self.enqueue(stage, item)  # a retry: its enter record carries r = item.attempt
        elif outcome.failed:
            self.event("giveup", s=stage, i=item.id, c=item.created, t=end)
        else:
            item.attempt = 0  # retries are counted per stage visit
            self.deliver(stage, spec.next, item)

    def outcome(self, stage: str, item: LiveItem) -> Outcome:
        """The outcome of ``item``'s attempt at ``stage`` (:func:`outcome_rule`, with this
        process's uniforms)."""
        self._per_process()
        decide = self._rules[stage]
        return Outcome.DONE if decide is None else decide(item.bad, item.attempt)


def _encode(value: Any) -> str | int | float:
    if isinstance(value, bool):
        return int(value)
    if value is None:
        return ""
    return value


def make_app(
    scenario: str | Path | Scenario,
    broker_url: str,
    time_scale: float = 1.0,
    prefix: str = "adaptflow",
    seed: int | None = None,
) -> Celery:
    """A Celery app for ``scenario`` on the Redis broker ``broker_url``: one queue per stage and
    the visit task. The same factory builds the workers' app and the client's (loadgen, monitor,
    executor); ``app.adaptflow`` is the :class:`LiveContext` they share."""
    if not time_scale > 0:
        raise ValueError(f"time_scale must be > 0, got {time_scale}")
    spec = load_scenario(scenario)
    app = Celery(f"adaptflow-{spec.name}", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_queues=[Queue(name) for name in spec.stages],
        task_default_queue=next(iter(spec.stages)),
        task_ignore_result=True,
        # A task is acknowledged after it ran, not when a worker received it; and if the pool
        # process running it dies (SIGKILL, OOM), the worker rejects the message back to the
        # queue. Together: a killed worker process loses no item, it is redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A worker reserves at most (prefetch multiplier x processes) messages. With 1 it holds
        # one per process, so the work still waiting stays in the Redis list, where the
        # monitor sees it (LLEN) and where a grown pool's new processes find it at once, instead
        # of sitting in a worker's buffer behind a long task; a killed worker then also has
        # nothing but its running tasks to give back.
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker outlives a Redis restart and reconnects
        # Running late-ack tasks go on through a broker outage (their items are routed when
        # Redis is back); cancelling them would only redeliver them.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        broker_transport_options={"socket_timeout": 5, "socket_connect_timeout": 5},
        result_backend=None,
    )
    context = LiveContext(spec, broker_url, time_scale, prefix, seed)

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
    def visit(self: Any, item: dict[str, Any], stage: str, enter: float) -> None:
        context.visit(LiveItem.from_message(item), stage, enter, self.request.id, self.request.hostname or "")

    context.task = visit
    app.adaptflow = context  # type: ignore[attr-defined]
    return app


def context_of(app: Celery) -> LiveContext:
    """The :class:`LiveContext` of an app made by :func:`make_app`."""
    try:
        return app.adaptflow  # type: ignore[attr-defined]
    except AttributeError:
        raise TypeError("not an adaptflow app: build it with adaptflow.runtime.celery_app.make_app") from None
