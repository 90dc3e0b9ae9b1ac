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

Fork and join (a :class:`~adaptflow.scenario.routing.Fork` or ``Scatter`` route) run as the
simulator runs them (:mod:`adaptflow.simulator.joins`): the visit whose route fans out publishes
the parts at once, as a Celery group of visit messages, each part carrying its family (id, join,
expected parts, its index, the parent item). A part is an item of its own at every stage; its way
ends at its family's join, kept in Redis by :class:`JoinStore` (see there for why not a Celery
chord). The part whose arrival completes the family sends the parent on, once: to the join
stage's queue, or out (``join: null``). A dropped or given-up part kills the family: the item
leaves dropped or failed once, and the other parts are discarded when they reach the join. The
item counts as a whole: only the parent has ``arrive`` and ``exit``/``drop``/``giveup`` records;
a part's own drop is a ``drop`` record with ``w`` = 0 (the stage's count, not the item's), and a
part's arrival at its join a ``join`` record (``j`` join, ``i`` item, ``p`` part, ``o`` outcome).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import kombu.exceptions
import numpy as np
import redis
from celery import Celery
from kombu import Queue

from adaptflow.runtime.redis_transport import TRANSPORT as REDIS_TRANSPORT
from adaptflow.scenario.loading import load_scenario
from adaptflow.scenario.outcome import DETECTED, FAILED_RETRY, Decide, Outcome, outcome_rule
from adaptflow.scenario.routing import FAN_OUTS, JOIN_AT_EXIT, Fork, Route, Scatter, Split, Target
from adaptflow.scenario.schema import Scenario, TraceSource, load_trace
from adaptflow.scenario.streams import service_sampler

log = logging.getLogger(__name__)
T = TypeVar("T")

TASK_NAME = "adaptflow.visit"
STREAM_MAXLEN = 2_000_000
"""Cap of the event stream (approximate trimming): about 200 MB of Redis at most; a monitor reads
it every decision interval, so only a monitor stalled for hours could miss trimmed records."""

# -- redelivery of a dead worker's messages ---------------------------------------------------------
# Kombu's Redis transport emulates acknowledgements: a message a worker takes from a queue is
# moved to the ``unacked`` hash (with its delivery time in the ``unacked_index`` sorted set) until
# the ack removes it. A worker that dies whole (SIGKILL of its process group, OOM, a lost host)
# acks nothing and rejects nothing: its messages stay there until a consumer's restore sweep
# (``restore_visible``: at a consumer's start and then periodically, in *every* worker on the
# broker, whatever queue it serves) finds them older than ``visibility_timeout`` and pushes them
# back onto their queues. Kombu's defaults (1 hour, a sweep every ~100 s) lost such items for
# an hour; the live world ties the timeout to its longest visit instead.
VISIBILITY_FACTOR = 4.0
"""The visibility timeout is this many times the longest expected visit (wall seconds)..."""
MIN_VISIBILITY_TIMEOUT = 10.0
"""...and never less than this many wall seconds: a visit's wall time is more than its service
(the pool's hand-over, its few Redis writes, each allowed a 2 s socket timeout)."""
REDIS_PATIENCE = 600.0
"""Wall seconds a visit whose item is in hand waits for Redis to come back before it fails; a
failed task is acknowledged, and its item would be lost."""
FAMILY_TTL = 86_400.0
"""Wall seconds a fork's join markers live after their last arrival (at least 3 visibility
timeouts): longer than a part can take to reach its join, short enough to bound Redis."""
LONGEST_VISIT_QUANTILE = 0.9999
"""A stage's longest expected visit: this quantile of its service time (one visit in 10,000 runs
longer and may be redelivered while it still runs: work wasted, never an item routed twice)."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
    ConnectionError,
    TimeoutError,
    OSError,
)
"""What a Redis outage raises, through redis-py directly or through Celery's broker connection."""


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
    # A part of a forked item: its family {id, join (stage or None: the exit), n (parts),
    # k (this part's index), parent (the parent item's message, itself maybe a part)}.
    family: dict[str, Any] | None = None

    def to_message(self) -> dict[str, Any]:
        message = {
            "id": self.id,
            "source": self.source,
            "created": self.created,
            "size": self.size,
            "bad": self.bad,
            "flagged": self.flagged,
            "attempt": self.attempt,
        }
        if self.family is not None:  # a pipeline's messages stay as they were
            message["family"] = self.family
        return message

    def parent(self) -> LiveItem:
        """The item this part was forked from (a part itself when fan-outs nest)."""
        assert self.family is not None, "not a part"
        return LiveItem.from_message(self.family["parent"])

    def root(self) -> LiveItem:
        """The item as the source created it: what is counted end to end."""
        return self if self.family is None else self.parent().root()

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


_JOIN_ARRIVE = """
-- KEYS: 1 parts set, 2 dead marker, 3 completer, 4 flagged, 5 waiting hash (join -> parts)
-- ARGV: 1 part index, 2 expected parts, 3 part flagged (0/1), 4 ttl seconds, 5 join name
local who = redis.call('GET', KEYS[3])
if who then
  if who == ARGV[1] then return {'complete', 0} end
  return {'duplicate', 0}
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'dead', 0} end
local added = redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if ARGV[3] == '1' then redis.call('SET', KEYS[4], '1', 'EX', ARGV[4]) end
local n = redis.call('SCARD', KEYS[1])
if n < tonumber(ARGV[2]) then
  if added == 1 then redis.call('HINCRBY', KEYS[5], ARGV[5], 1) end
  return {'wait', 0}
end
local flagged = redis.call('EXISTS', KEYS[4])
redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[4])
redis.call('HINCRBY', KEYS[5], ARGV[5], 1 - n)
redis.call('DEL', KEYS[1], KEYS[4])
return {'complete', flagged}
"""
_JOIN_KILL = """
-- KEYS: 1 parts set, 2 dead marker, 3 completer, 4 flagged, 5 waiting hash
-- ARGV: 1 killer token, 2 ttl seconds, 3 join name
local who = redis.call('GET', KEYS[2])
if who then
  if who == ARGV[1] then return 1 end
  return 0
end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
redis.call('HINCRBY', KEYS[5], ARGV[3], 0 - redis.call('SCARD', KEYS[1]))
redis.call('DEL', KEYS[1], KEYS[4])
return 1
"""


class JoinStore:
    """The joins of a live run, in Redis, as Celery's Redis backend keeps a chord's header count.

    Why not a Celery chord: a chord's header is a fixed set of tasks, and the body runs when
    those tasks have *returned* (``on_chord_part_return`` in ``celery/backends/redis.py``, with
    a result backend, which this app does without: ``task_ignore_result``). A part here is not
    one task: its way is a chain of visits (stages, retries, splits) that ends at the join, and
    it may be dropped or given up on the way, which must end the whole item at once, not make
    the join wait forever. So the join is kept as that backend keeps a chord's count, in one Lua
    script per arrival (atomic, so two parts arriving at once cannot both complete the family
    nor both miss it):

    * an arriving part does ``SADD`` of its index into the family's set: a part that arrives
      twice (its step written again after a lost reply) counts once, as Celery 5.7 dedupes a
      redelivered header task by its id (its ``.d`` set);
    * the arrival that makes ``SCARD`` reach the expected count takes the family's completer key
      (``SET``; Celery's claim key ``.c``) and alone sends the parent on; asking again with the
      same index answers ``complete`` again (its successor's task id is derived, so a parent
      published twice is routed once by its visit's ``done`` claim);
    * a dropped or given-up part sets the family's dead marker: the first killer (asked again,
      still the first) counts the item as dropped or failed; parts arriving later are discarded;
    * the parts waiting at each join are a hash (``<prefix>:joinwait``) kept by the same scripts,
      which the monitor reads as ``MetricsSnapshot.join_waiting``.

    A completed family deletes its set; the completer and dead keys, which must outlive any
    late duplicate or part still in flight, expire after ``ttl`` wall seconds (refreshed by each
    arrival), so a long run's Redis holds only the families in flight plus a day's small markers.
    A part is lost only as any item is: a worker killed between a visit's ``done`` claim and its
    routing step (microseconds); a killed worker's running and queued parts are redelivered."""

    def __init__(self, client: redis.Redis, prefix: str, ttl: float):
        self.client, self.prefix, self.ttl = client, prefix, int(ttl)
        self._arrive = client.register_script(_JOIN_ARRIVE)
        self._kill = client.register_script(_JOIN_KILL)

    @property
    def waiting_key(self) -> str:
        return f"{self.prefix}:joinwait"

    def keys(self, family: dict[str, Any]) -> list[str]:
        base = f"{self.prefix}:fam:{family['id']}"
        return [f"{base}:parts", f"{base}:dead", f"{base}:done", f"{base}:flag", self.waiting_key]

    def arrive(self, family: dict[str, Any], flagged: bool) -> tuple[str, bool]:
        """Part ``family['k']`` reached the join: ``('wait' | 'complete' | 'dead' | 'duplicate',
        whether a part of the family was flagged)``; the flag is known on ``complete`` only."""
        args = [family["k"], family["n"], int(flagged), self.ttl, join_name(family["join"])]
        outcome, flag = self._arrive(keys=self.keys(family), args=args)
        return str(outcome), bool(int(flag))

    def kill(self, family: dict[str, Any], token: str) -> bool:
        """Mark the family dead; ``True`` for the killer that did it first (and for it again)."""
        args = [token, self.ttl, join_name(family["join"])]
        return bool(int(self._kill(keys=self.keys(family), args=args)))

    def waiting(self, joins: list[str]) -> dict[str, int]:
        """Parts waiting now at each join (by :meth:`Scenario.join_names`)."""
        raw = self.client.hgetall(self.waiting_key)
        return {name: max(0, int(raw.get(name, 0))) for name in joins}


def join_name(join: str | None) -> str:
    """A join's name in metrics: its stage, or ``"exit"`` (``join: null``)."""
    return JOIN_AT_EXIT if join is None else join


def part_task_id(family_id: str, k: int) -> str:
    """The task id of part ``k``'s first visit: derived, so a fan-out step written again after
    a lost reply publishes the same visits (run twice, routed once by their ``done`` claims)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{family_id}/{k}"))


@dataclass
class LiveContext:
    """What the tasks, the load generator and the monitor share: the scenario, the broker, the
    time scale and the Redis key prefix of the run."""

    scenario: Scenario
    broker_url: str
    time_scale: float = 1.0
    prefix: str = "adaptflow"
    seed: int | None = None
    visibility_timeout: float = 3600.0  # wall seconds; make_app sets the run's
    _client: redis.Redis | None = field(default=None, repr=False)
    _samplers: dict[str, Callable[[], float]] = field(default_factory=dict, repr=False)
    _rules: dict[str, Decide | None] = field(default_factory=dict, repr=False)
    _rng: random.Random | None = field(default=None, repr=False)
    _pid: int = field(default=0, repr=False)
    task: Any = field(default=None, repr=False)  # the visit task, set by make_app
    _joins: JoinStore | None = field(default=None, repr=False)

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

    @property
    def joins(self) -> JoinStore:
        if self._joins is None:
            self._joins = JoinStore(self.client, self.prefix, max(FAMILY_TTL, 3 * self.visibility_timeout))
        return self._joins

    @property
    def items_key(self) -> str:
        """The set of the items in the system now (a DAG scenario's ``in_system``: its parts are
        visits at several stages at once, so queue plus busy would count an item many times)."""
        return f"{self.prefix}:items"

    # -- routing -------------------------------------------------------------------------------
    def next_stage(self, owner: str, route: Route, item: LiveItem) -> Target:
        """Where ``route`` (the route after ``owner``) sends ``item``; ``None`` is the exit. The
        route decides; a controllable split reads its current probabilities from Redis."""
        splits = self.splits.read(owner) if isinstance(route, Split) and route.controllable else None
        return route.choose(item, self.uniform, splits)

    def deliver(self, owner: str, route: Route, item: LiveItem, task_id: str | None = None) -> None:
        """Hand ``item`` on after ``owner`` (a source or a stage): to a stage's queue, out, or,
        for a fan-out, as parts to their stages' queues."""
        if isinstance(route, FAN_OUTS):
            self.fan_out(route, item, task_id)
        else:
            self.enqueue(self.next_stage(owner, route, item), item, task_id)

    def fan_out(self, route: Fork | Scatter, item: LiveItem, task_id: str | None = None) -> None:
        """Send ``item``'s parts to their first stages at once, as one Celery group. The family id
        is the visit's successor id (derived: written again, the same parts). As in the simulator,
        a part refused by a full queue kills the family and no further part is sent."""
        from celery import group

        family_id = task_id or uuid.uuid4().hex
        targets = route.part_targets(self.uniform)
        parent, now, sigs = item.to_message(), time.time(), []
        for k, stage in enumerate(targets):
            family = {"id": family_id, "join": route.join, "n": len(targets), "k": k, "parent": parent}
            part = LiveItem(f"{item.id}.{k}", item.source, item.created, item.size, item.bad, family=family)
            if self.full(stage):
                self.drop(stage, part, now)
                break
            visit_id = part_task_id(family_id, k)
            self.event("enter", s=stage, i=part.id, k=visit_id, t=now)
            sigs.append(self.task.signature((part.to_message(), stage, now), queue=stage, task_id=visit_id))
        if sigs:
            group(sigs).apply_async()

    def full(self, stage: str) -> bool:
        capacity = self.scenario.stages[stage].queue.capacity
        return capacity is not None and self.client.llen(stage) >= capacity

    def enqueue(self, stage: str | None, item: LiveItem, task_id: str | None = None) -> None:
        """Hand ``item`` to ``stage`` (``None``: the exit): a part whose way ends there arrives at
        its family's join; anything else is queued there (:meth:`visit_at`) or leaves."""
        family = item.family
        if family is not None and family["join"] == stage:
            self.arrive_at_join(item, task_id)
        elif stage is None:
            self.leave("exit", item, time.time())
        else:
            self.visit_at(stage, item, task_id)

    def visit_at(self, stage: str, item: LiveItem, task_id: str | None = None) -> None:
        """Queue a visit of ``item`` at ``stage`` (its retry when ``item.attempt > 0``: the
        ``enter`` record then carries ``r``). ``task_id``: the new visit's id (default a fresh
        one); a visit gives its successor an id derived from its own, so that a successor
        published twice (a write retried through an outage) is run twice but routed once, by the
        ``done`` claim."""
        now = time.time()
        if self.full(stage):
            self.drop(stage, item, now)
            return
        from celery import uuid as celery_uuid

        task_id = task_id or celery_uuid()
        retry = {"r": item.attempt} if item.attempt else {}
        self.event("enter", s=stage, i=item.id, k=task_id, t=now, **retry)
        self.task.apply_async((item.to_message(), stage, now), queue=stage, task_id=task_id)

    def arrive_at_join(self, part: LiveItem, task_id: str | None) -> None:
        """``part`` reached its family's join; the arrival that completes the family sends the
        parent on (into the join stage, bypassing the join, or out), with ``task_id``."""
        family = part.family
        assert family is not None
        outcome, flagged = self.joins.arrive(family, part.flagged)
        root = part.root()
        self.event("join", j=join_name(family["join"]), i=root.id, p=part.id, o=outcome, t=time.time())
        if outcome != "complete":
            return
        parent = part.parent()
        parent.flagged = parent.flagged or flagged
        if family["join"] is None:
            self.enqueue(None, parent, task_id)
        else:
            self.visit_at(family["join"], parent, task_id)

    def drop(self, stage: str, item: LiveItem, now: float) -> None:
        """``item`` was refused by ``stage``'s full queue: dropped, a part taking its item with
        it (once: a ``drop`` record with ``w`` = 0 counts only the stage's drop)."""
        root = self.kill(item)
        if root is None:
            self.event("drop", s=stage, i=item.id, c=item.created, t=now, w=0)
        else:
            self.leave("drop", root, now, s=stage)

    def kill(self, item: LiveItem) -> LiveItem | None:
        """``item`` is gone (dropped or given up): its family dies with it, and their parents'
        families; the root item if this death is the first to reach it, else ``None``."""
        if item.family is None:
            return item
        if not self.joins.kill(item.family, str(item.family["k"])):
            return None
        return self.kill(item.parent())

    def leave(self, kind: str, item: LiveItem, now: float, **fields: Any) -> None:
        """A root item leaves (``exit``, ``drop``, ``giveup``): its one record."""
        if kind == "exit":
            fields |= {"b": item.bad, "f": item.flagged}
        self.event(kind, i=item.id, c=item.created, t=now, **fields)
        if self._dag:
            self.client.srem(self.items_key, item.id)

    def submit(self, source: str, index: int, size: float = 1.0, bad: bool = False) -> str:
        """A new item from ``source`` (the load generator's call): recorded, then routed."""
        now = time.time()
        item = LiveItem(f"{source}-{index}", source, now, float(size), bool(bad))
        if self._dag:
            self.client.sadd(self.items_key, item.id)
        self.event("arrive", src=source, i=item.id, t=now)
        self.deliver(source, self.scenario.sources[source].to, item)
        return item.id

    @cached_property
    def _dag(self) -> bool:
        return bool(self.scenario.fan_outs())

    # -- one visit -----------------------------------------------------------------------------
    def visit(self, item: LiveItem, stage: str, enter: float, task_id: str, host: str) -> None:
        """The body of the visit task (a plain method, so that it can be tested without Celery).
        The outcome is the scenario room's rule, as in the simulator."""
        spec = self.scenario.stages[stage]
        start = time.time()
        self.until_redis(lambda: self.event("start", s=stage, k=task_id, t=start, q=enter, h=host))
        time.sleep(self.service_time(stage) * item.size / self.time_scale)
        outcome = self.outcome(stage, item)
        if outcome.flagged:
            item.flagged = True
        # At most once per visit: a redelivered message whose visit already finished (its worker
        # died between routing and the ack) must not send the item on twice. The claim is taken
        # before routing; a process killed in the microseconds between the two loses the item.
        # Each Redis step waits through an outage (until_redis), so a visit finishing while Redis
        # restarts routes its item when Redis is back instead of failing and losing it.
        token = uuid.uuid4().hex
        if not self.until_redis(lambda: self.claim(task_id, token)):
            log.warning("visit %s of %s at %s already finished; not routed again", task_id, item.id, stage)
            return
        end = time.time()
        finish = {"q": enter, "st": start, "h": host, "d": outcome is DETECTED, "x": outcome.failed}
        self.until_redis(lambda: self.event("finish", s=stage, k=task_id, t=end, **finish))
        successor = str(uuid.uuid5(uuid.NAMESPACE_URL, task_id))
        if outcome is FAILED_RETRY:
            item.attempt += 1
            self.until_redis(lambda: self.visit_at(stage, item, successor))  # enter record with r = item.attempt
        elif outcome.failed:
            self.until_redis(lambda: self.give_up(stage, item, end))
        else:
            item.attempt = 0  # retries are counted per stage visit
            self.until_redis(lambda: self.deliver(stage, spec.next, item, successor))

    def give_up(self, stage: str, item: LiveItem, now: float) -> None:
        """``item`` failed its last retry at ``stage``: given up, a part taking its item with it
        (once; the stage's failure is the visit's ``finish`` record)."""
        root = self.kill(item)
        if root is not None:
            self.leave("giveup", root, now, s=stage)

    def until_redis(self, action: Callable[[], T], patience: float = REDIS_PATIENCE) -> T:
        """``action`` (a visit's Redis step), retried with backoff (0.05 s doubling to 2 s) while
        Redis is unreachable, for up to ``patience`` wall seconds, then the error. A step that
        reached Redis but lost its reply is written again: a duplicate record, or a successor
        published twice, which its ``done`` claim routes once."""
        deadline, delay = time.monotonic() + patience, 0.05
        while True:
            try:
                return action()
            except TRANSIENT_ERRORS as exc:
                if time.monotonic() + delay > deadline:
                    raise
                if delay == 0.05:
                    log.warning("redis unavailable in a visit (%s); waiting for it", exc)
                time.sleep(delay)
                delay = min(2.0, delay * 2)

    def claim(self, task_id: str, token: str = "1") -> bool:
        """Take the one ``done`` claim of visit ``task_id`` for this run of it (``token``);
        ``False`` if another run of the same message took it. Asking again with the same token
        (the reply was lost in an outage) answers ``True``. Kept 3 visibility timeouts (at least
        an hour): longer than any redelivery of that message can come."""
        key, ttl = f"{self.prefix}:done:{task_id}", int(max(3600, 3 * self.visibility_timeout))
        return bool(self.client.set(key, token, nx=True, ex=ttl)) or self.client.get(key) == token

    def outcome(self, stage: str, item: LiveItem) -> Outcome:
        """The outcome of ``item``'s attempt at ``stage`` (:func:`outcome_rule`, with this
        process's uniforms)."""
        self._per_process()
        decide = self._rules[stage]
        return Outcome.DONE if decide is None else decide(item.bad, item.attempt)


def longest_visit(scenario: Scenario) -> float:
    """The longest visit the run should expect, in scenario seconds: the largest, over the
    stages, of the :data:`LONGEST_VISIT_QUANTILE` of the stage's service time, times the largest
    item size a trace source carries (sizes multiply every service time). Exact for deterministic
    and empirical services; otherwise estimated from 2**16 draws of the scenario room's own
    sampler with a fixed seed, so that every process of a run computes the same number."""
    sizes = [1.0]
    for source in scenario.sources.values():
        if isinstance(source, TraceSource):
            _, trace_sizes = load_trace(source.file, source.time_column, source.size_column)
            if trace_sizes is not None and len(trace_sizes):
                sizes.append(float(np.max(trace_sizes)))
    longest = 0.0
    for stage in scenario.stages.values():
        service = stage.service
        if service.dist == "deterministic":
            value = float(service.mean)  # type: ignore[arg-type]
        elif service.dist == "empirical":
            value = float(max(service.samples))  # type: ignore[arg-type]
        else:
            draw = service_sampler(service, np.random.default_rng(0))
            value = float(np.quantile([draw() for _ in range(2**16)], LONGEST_VISIT_QUANTILE))
        longest = max(longest, value)
    return longest * max(sizes)


def default_visibility_timeout(scenario: Scenario, time_scale: float = 1.0) -> float:
    """Wall seconds a delivered, unacknowledged visit waits before the broker hands it out again:
    :data:`VISIBILITY_FACTOR` x :func:`longest_visit` / ``time_scale``, at least
    :data:`MIN_VISIBILITY_TIMEOUT`. Too short, and a visit still running is redelivered and run
    twice (the ``done`` claim of :meth:`LiveContext.visit` routes the item once; the second run
    is wasted work); too long, and the items of a dead worker wait that long."""
    return max(MIN_VISIBILITY_TIMEOUT, VISIBILITY_FACTOR * longest_visit(scenario) / time_scale)


def redelivery_options(visibility_timeout: float) -> dict[str, float | int]:
    """Kombu's Redis transport options for ``visibility_timeout``: its restore sweep runs every
    quarter of the timeout (1 to 10 s, every sweep a scan), so that a dead worker's visit is back
    on its queue within about 1.25 x the timeout, not kombu's default ~100 s later."""
    return {
        "visibility_timeout": float(visibility_timeout),
        "unacked_restore_interval": max(1, min(10, int(visibility_timeout // 4))),
        "unacked_restore_throttle": 1,
    }


def _encode(value: Any) -> str | int | float:
    if isinstance(value, bool):
        return int(value)
    if value is None:
        return ""
    return value


def refuse_unsupported(scenario: Scenario) -> Scenario:
    """``scenario``, or a ``ValueError`` for what the live world does not run as the simulator
    does, raised before any worker runs.

    Job classes (``classes``, a stage's ``discipline: priority``) are not run live: every stage
    is one FIFO Celery queue, and a class's own deadline would be judged by the scenario's."""
    if scenario.classes:
        raise ValueError(
            f"scenario {scenario.name!r}: classes {sorted(scenario.classes)} (job classes) are not supported "
            f"live; expected a scenario without classes (stages are single FIFO Celery queues)"
        )
    return scenario


def app_config(spec: Scenario, visibility_timeout: float) -> dict[str, Any]:
    """The Celery settings of adaptflow's app (why each one: in the comments)."""
    return dict(
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
        # A dead worker's unacknowledged visits are redelivered after the visibility timeout
        # (see redelivery_options); task_reject_on_worker_lost covers only a dead pool process.
        broker_transport_options={"socket_timeout": 5, "socket_connect_timeout": 5}
        | redelivery_options(visibility_timeout),
        # kombu's Redis transport with two outage windows closed (see redis_transport): a message
        # popped as Redis died is put back, and a close mid-poll no longer crashes the worker.
        broker_transport=REDIS_TRANSPORT,
        result_backend=None,
    )


def make_app(
    scenario: str | Path | Scenario,
    broker_url: str,
    time_scale: float = 1.0,
    prefix: str = "adaptflow",
    seed: int | None = None,
    visibility_timeout: float | None = None,
) -> Celery:
    """A Celery app for ``scenario`` on the Redis broker ``broker_url``: one queue per stage and
    the visit task. The same factory builds the workers' app and the client's (loadgen, monitor,
    executor); ``app.adaptflow`` is the :class:`LiveContext` they share.

    ``visibility_timeout``: wall seconds after which a visit delivered to a worker that never
    acknowledged it (the worker died) is put back on its queue; default
    :func:`default_visibility_timeout`. Every worker on the broker sweeps with its own value:
    give them all the same."""
    if not time_scale > 0:
        raise ValueError(f"time_scale must be > 0, got {time_scale}")
    if visibility_timeout is not None and not visibility_timeout > 0:
        raise ValueError(f"visibility_timeout must be > 0 seconds, got {visibility_timeout}")
    spec = refuse_unsupported(load_scenario(scenario))
    if visibility_timeout is None:
        visibility_timeout = default_visibility_timeout(spec, time_scale)
    app = Celery(f"adaptflow-{spec.name}", broker=broker_url, set_as_current=False)
    app.conf.update(app_config(spec, visibility_timeout))
    context = LiveContext(spec, broker_url, time_scale, prefix, seed, visibility_timeout)

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
