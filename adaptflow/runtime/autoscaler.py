"""Celery's own extension point for pool sizing, driven by adaptflow's planner.

Celery sizes a worker's prefork pool with the class named by the ``worker_autoscaler`` setting
(default ``celery.worker.autoscale:Autoscaler``), and only when the worker runs with
``--autoscale=MAX,MIN``. Its ``_maybe_scale`` compares the pool with the worker's reserved
messages; :class:`PlannedAutoscaler` compares it with what adaptflow's planner wants for the
worker's stage, as ``celery-resource-autoscaler`` plugs its resource limits into the same method.

Two halves, joined by one Redis hash (``adaptflow:desired`` by default)::

    Coordinator (monitor on the user's app, analyzer, planner)      worker of stage "enrich"
        -> RedisPlanPublisher.apply(plan)  --- HSET --->  hash  <--- HMGET (<= 1/s) ---  PlannedAutoscaler
           safety envelope; every stage, :published, :version      clamp to [min, max]; grow / shrink idle

* :class:`RedisPlanPublisher` is the decider's :class:`~adaptflow.agents.Executor`: it puts a
  plan through the safety envelope (bounds with a minimum of one process, largest step,
  cooldown; every clamp logged and returned) and writes the desired workers of every stage with
  the time of publication taken from Redis' own clock (``TIME``, in a script), so that a worker on
  another machine tells a stale plan without trusting either machine's clock.
* :class:`PlannedAutoscaler` runs in each worker. It reads its stage's desired count (through a
  :class:`PlanReader`: at most one read per ``poll`` seconds, short socket timeouts, five seconds
  between attempts while Redis is unreachable), clamps it to the worker's ``--autoscale`` range
  and moves the pool toward it with Celery's own ``scale_up`` and ``_shrink`` (billiard retires
  idle processes only). When the plan is stale, not published for its stage, or Redis cannot be
  read, it hands the decision to Celery's own queue-length rule (``super()._maybe_scale``) and
  says so once in the worker's log (and once again when the plan is back).

Why Redis and not the planner service's HTTP API, read by every worker: a decision needs the
whole system (every stage's queue, the arrivals, the SLA) and the planner's memory (an
analyzer's smoothed rates, a recurrent policy's state), which one central loop has and a worker
does not (a worker sees its own reserved messages); the service answers a snapshot someone else
built. Redis is already there (it is the broker), a hash read costs well under a millisecond and
fails when the broker fails; the decider's cadence (its decision interval) and the workers'
(about one second) are decoupled, and a decider that stops is seen as staleness, not as a worker
blocked on a request. The planner service still decides if wanted: the central loop asks it for
each plan (``adaptflow control --planner service:URL``, :mod:`.service_client`) and publishes the
answer here.

Deviations from Celery's autoscaler, each for a reason read in Celery 5.7's code:

* Celery's event loop calls the autoscaler every ``keepalive`` seconds (30 by default,
  ``AUTOSCALE_KEEPALIVE``) and on every task message; a plan should be followed within about a
  second, so the class adds a call of its own every ``poll`` seconds to the worker's event loop.
  ``keepalive`` keeps its meaning for Celery's own rule in a fallback.
* A planned shrink does not wait for ``keepalive`` seconds without a received task (Celery's
  ``scale_down`` guard): under steady load a task arrives every few seconds and the pool would
  never shrink. Flapping is the envelope's business (its cooldown and largest step, applied
  centrally); the shrink itself still retires only idle processes.
* A shrink waits until the processes retired by the last one have left the pool's list: billiard
  picks any process without a job, a retiring one included, and would count it twice. It waits
  :data:`LINGER_GRACE` seconds at most: a retired process whose SIGTERM was swallowed never
  leaves the list.
* The pool keeps at least one process under a plan (as :func:`~.live.executor.live_envelope`):
  a prefork pool with none holds its reserved messages and runs nothing.

Kept from Celery, and worth knowing: the read runs in the worker's event loop, as Celery's
autoscaler does (an unreachable Redis holds the loop for at most the 0.25 s socket timeout, once
per five seconds); and the worker reserves up to ``MAX x worker_prefetch_multiplier`` messages
whatever its pool's size, so a stage served by several workers shares its queue less evenly while
a plan holds a pool below ``MAX``.

:func:`adaptflow.runtime.control.app_control` assembles the decider over a user's app (the live
monitor through the app's mapping, a planner spec behind the fallback rule, the publisher): what
``adaptflow control`` runs.

Settings, each from the app's configuration (an ``adaptflow_*`` key, e.g. in a config module
given with ``celery --config``), else the environment (``ADAPTFLOW_*``), else the default:

* ``adaptflow_stage`` / ``ADAPTFLOW_STAGE``: the worker's stage (default: its node name before
  ``@``, as a mapping names it: ``enrich@%h`` serves stage ``enrich``);
* ``adaptflow_plans_url`` / ``ADAPTFLOW_PLANS_URL``: the Redis holding the plans (the broker's);
* ``adaptflow_plans_key`` / ``ADAPTFLOW_PLANS_KEY``: the hash (``adaptflow:desired``);
* ``adaptflow_plans_stale_after`` / ``ADAPTFLOW_PLANS_STALE_AFTER``: seconds after which a plan is
  stale (three of the decision intervals the publisher wrote);
* ``adaptflow_autoscale_poll`` / ``ADAPTFLOW_AUTOSCALE_POLL``: seconds between reads (1).

A worker::

    celery -A proj --config proj.planned worker -Q enrich -n enrich@%h --autoscale=8,1
    # proj/planned.py: worker_autoscaler = "adaptflow.runtime.autoscaler:PlannedAutoscaler"
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from celery.utils.log import get_logger
from celery.worker.autoscale import AUTOSCALE_KEEPALIVE, Autoscaler

from adaptflow.agents import Applied, Clock, Executor, Plan

if TYPE_CHECKING:
    from adaptflow.agents.safety import SafetyEnvelope
    from adaptflow.scenario import Scenario


logger = get_logger(__name__)  # Celery's: the worker's log
log = logging.getLogger(__name__)  # the decider's

DEFAULT_KEY = "adaptflow:desired"
PUBLISHED, INTERVAL, VERSION = ":published", ":interval", ":version"
"""The hash's own fields: a stage name never contains a colon (``NAME_PATTERN``), so they
cannot collide with a stage's."""
STALE_INTERVALS = 3
"""A plan is stale after this many of the publisher's decision intervals (unless configured)."""
DEFAULT_STALE_AFTER = 90.0
"""Seconds, when neither the configuration nor the publication says an interval."""
RETRY_AFTER = 5.0
"""Seconds between attempts while Redis cannot be read: each attempt may hold the worker's event
loop for up to the socket timeout."""
SOCKET_TIMEOUT = 0.25

LINGER_GRACE = 5.0
"""Seconds a shrink waits for the processes the last one retired to leave the pool's list. A
process still listed after that has not exited and may never (its SIGTERM swallowed inside a
weakref callback, measured on the example app): waiting for it would keep the pool from ever
shrinking again."""

_PUBLISH = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = string.format('%d.%06d', t[1], t[2])
redis.call('HSET', KEYS[1], ':published', now, ':interval', ARGV[1], unpack(ARGV, 2))
redis.call('HINCRBY', KEYS[1], ':version', 1)
return now
"""
"""Every stage's count, the interval and Redis' time of publication, in one atomic step."""


# -- the worker's read ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PlanReading:
    """One read of a stage's plan: ``desired`` (None: follow Celery's own rule), ``kind``
    (``plan``, ``stale``, ``unpublished``, ``invalid``, ``unreachable``), a sentence saying why,
    and the publication's age in seconds when there was one."""

    desired: int | None
    kind: str
    reason: str
    age: float | None = None


class PlanReader:
    """A stage's desired workers from the hash ``key``, read at most once per ``poll`` seconds
    (a worker asks on every task message; the answer in between is the last read). A plan older
    than ``stale_after`` seconds (None: three of the intervals the publisher wrote) is no plan.
    After a failed read the next attempt waits :data:`RETRY_AFTER` seconds. The age is measured
    on Redis' clock, which stamped the publication too."""

    def __init__(
        self,
        client: redis.Redis,
        stage: str,
        key: str = DEFAULT_KEY,
        stale_after: float | None = None,
        poll: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        _positive("poll", poll)
        if stale_after is not None:
            _positive("stale_after", stale_after)
        self.client, self.stage, self.key = client, stage, key
        self.stale_after, self.poll, self.clock = stale_after, poll, clock
        self.reads = 0  # reads that reached Redis (or tried to)
        self._last: PlanReading | None = None
        self._next = -math.inf

    def read(self) -> PlanReading:
        now = self.clock()
        if self._last is not None and now < self._next:
            return self._last
        self.reads += 1
        try:
            reading = self._fetch()
            self._next = now + self.poll
        except redis.RedisError as exc:
            reading = PlanReading(None, "unreachable", f"plans unreachable ({type(exc).__name__}: {exc})")
            self._next = now + max(self.poll, RETRY_AFTER)
        self._last = reading
        return reading

    def _fetch(self) -> PlanReading:
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.key, [self.stage, PUBLISHED, INTERVAL])
        pipe.time()
        (value, published, interval), (seconds, micros) = pipe.execute()
        if published is None:
            return PlanReading(None, "unpublished", f"no plan published at {self.key!r}")
        if value is None:
            return PlanReading(None, "unpublished", f"the plan at {self.key!r} has no stage {self.stage!r}")
        try:
            age = seconds + micros / 1e6 - float(published)
            limit = self.stale_after or (STALE_INTERVALS * float(interval) if interval else DEFAULT_STALE_AFTER)
            desired = int(value)
        except ValueError:
            return PlanReading(None, "invalid", f"{self.key}[{self.stage!r}] = {value!r}: expected a whole number")
        if age > limit:
            return PlanReading(None, "stale", f"the plan was published {age:.1f} s ago (stale after {limit:g} s)", age)
        return PlanReading(desired, "plan", f"{self.stage} = {desired}, published {age:.1f} s ago", age)


# -- the worker's settings -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PlannedSettings:
    """What :class:`PlannedAutoscaler` reads (see the module docstring for where from)."""

    stage: str
    url: str
    key: str = DEFAULT_KEY
    stale_after: float | None = None
    poll: float = 1.0

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any], hostname: str | None) -> PlannedSettings:
        def setting(name: str) -> Any:
            value = conf.get(f"adaptflow_{name}")
            return value if value not in (None, "") else os.environ.get(f"ADAPTFLOW_{name.upper()}") or None

        stage = setting("stage") or (hostname.split("@", 1)[0] if hostname and "@" in hostname else None)
        if not stage:
            raise ValueError(
                f"the worker's stage is unknown (node name {hostname!r}); expected adaptflow_stage in the "
                "configuration, ADAPTFLOW_STAGE in the environment, or a node name STAGE@HOST"
            )
        url = setting("plans_url") or _first_url(conf.get("broker_url"))
        if not str(url or "").startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"adaptflow_plans_url / broker_url = {url!r}: expected a Redis URL (redis://...) to read plans from"
            )
        stale = setting("plans_stale_after")
        return cls(
            stage=str(stage),
            url=str(url),
            key=str(setting("plans_key") or DEFAULT_KEY),
            stale_after=None if stale is None else _seconds("adaptflow_plans_stale_after", stale),
            poll=_seconds("adaptflow_autoscale_poll", setting("autoscale_poll") or 1.0),
        )

    def reader(self) -> PlanReader:
        client = redis.Redis.from_url(
            self.url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT, decode_responses=True
        )
        return PlanReader(client, self.stage, self.key, self.stale_after, self.poll)


def _first_url(broker: Any) -> str | None:
    """The first of a broker setting's URLs (a list, or ``;``-separated failover URLs)."""
    if isinstance(broker, list | tuple):
        broker = broker[0] if broker else None
    return str(broker).split(";", 1)[0].strip() if broker else None


def _seconds(name: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} = {value!r}: expected a positive number of seconds") from None
    return _positive(name, seconds)


def _positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} = {value!r}: expected a positive number of seconds")
    return value


# -- the worker's autoscaler ---------------------------------------------------------------------
class PlannedAutoscaler(Autoscaler):
    """Celery's autoscaler, sizing the pool to the planner's count for the worker's stage
    (see the module docstring): ``worker_autoscaler = "adaptflow.runtime.autoscaler:PlannedAutoscaler"``
    and ``celery worker --autoscale=MAX,MIN``."""

    def __init__(
        self,
        pool: Any,
        max_concurrency: int,
        min_concurrency: int = 0,
        worker: Any = None,
        keepalive: float = AUTOSCALE_KEEPALIVE,
        mutex: Any = None,
        settings: PlannedSettings | None = None,
    ):
        super().__init__(pool, max_concurrency, min_concurrency, worker=worker, keepalive=keepalive, mutex=mutex)
        if settings is None:
            from celery import current_app

            app = worker.app if worker is not None else current_app
            settings = PlannedSettings.from_conf(app.conf, getattr(worker, "hostname", None))
        self.settings, self.reader = settings, settings.reader()
        self.last: PlanReading | None = None
        self._following: str | None = None  # the kind of the last reading logged
        self._unsettled_since: float | None = None  # monotonic time the list first held a retiring process
        self._lingering_said = False
        hub = getattr(worker, "hub", None)
        if hub is not None:  # Celery's event loop calls us every keepalive seconds only
            hub.call_repeatedly(settings.poll, self.maybe_scale)
        logger.info(
            "adaptflow planned autoscaler: stage %r, plans %s[%r], pool in [%d, %d]",
            settings.stage, _safe(settings.url), settings.key, min_concurrency, max_concurrency,
        )  # fmt: skip

    def _maybe_scale(self, req: Any = None) -> bool | None:
        reading = self.last = self.reader.read()
        self._say(reading)
        if reading.desired is None:
            return super()._maybe_scale(req)
        want = min(max(reading.desired, self.min_concurrency, 1), self.max_concurrency)
        procs = self.processes
        if want > procs:
            self.scale_up(want - procs)
            return True
        if want < procs:
            if self._settled():
                self._shrink(procs - want)
            return True  # maintain_pool joins what retired, so the next shrink sees the list as it is
        return None

    def _settled(self) -> bool:
        """Whether every process the pool lists is one it counts (none retiring), or the ones
        retiring have been listed for :data:`LINGER_GRACE` seconds and will not leave. A shrink
        after that may pick a lingering process again (billiard takes any without a job): the
        pool then serves one process more than it counts, which costs, where waiting for good
        left it at its size for the rest of the worker's life."""
        listed = getattr(getattr(self.pool, "_pool", None), "_pool", None)
        if listed is None or len(listed) <= self.processes:
            self._unsettled_since = None
            return True
        now = time.monotonic()
        if self._unsettled_since is None:
            self._unsettled_since = now
        if now - self._unsettled_since < LINGER_GRACE:
            return False
        if not self._lingering_said:
            self._lingering_said = True
            logger.warning(
                "adaptflow autoscaler (stage %s): %d processes listed, %d counted, for %.0f s: a retired "
                "process has not exited; shrinking without waiting for it",
                self.settings.stage, len(listed), self.processes, now - self._unsettled_since,
            )  # fmt: skip
        return True

    def _say(self, reading: PlanReading) -> None:
        """Log a change between following the plan and Celery's own rule (and its reason), once."""
        if reading.kind == self._following:
            return
        if reading.desired is None:
            logger.warning(
                "adaptflow autoscaler (stage %s): %s; following Celery's own autoscaling until a plan is read",
                self.settings.stage, reading.reason,
            )  # fmt: skip
        else:
            logger.info("adaptflow autoscaler (stage %s): following the plan (%s)", self.settings.stage, reading.reason)
        self._following = reading.kind

    def info(self) -> dict[str, Any]:
        info = super().info()
        last = self.last
        info["plan"] = {
            "stage": self.settings.stage,
            "desired": None if last is None else last.desired,
            "following": None if last is None else ("plan" if last.desired is not None else "celery"),
            "reason": None if last is None else last.reason,
        }
        return info


def _safe(url: str) -> str:
    """A URL without its password, for the log."""
    head, at, tail = url.rpartition("@")
    return f"{head.split('//', 1)[0]}//***@{tail}" if at else url


# -- the decider's publisher ---------------------------------------------------------------------
class RedisPlanPublisher(Executor):
    """The Coordinator's executor when the workers size their own pools
    (:class:`PlannedAutoscaler`): a plan goes through the envelope (``envelope``, by default the
    scenario's :func:`~.live.executor.live_envelope`) relative to the counts last published, then
    every stage's desired count is written to the hash ``key`` with the decision ``interval``
    (wall seconds; the workers' default staleness is three of them) and Redis' time. Splits are
    the app's own routing: a plan's splits are refused, and the refusal logged.

    The same shape as :class:`~.live.executor.CeleryExecutor` (``current_workers``, ``splits``),
    so :class:`~.live.outage.ResilientExecutor` keeps the last plan through a Redis outage."""

    def __init__(
        self,
        client: redis.Redis,
        scenario: Scenario,
        interval: float,
        envelope: SafetyEnvelope | None = None,
        key: str = DEFAULT_KEY,
        clock: Clock | None = None,
    ):
        from .live.executor import live_envelope

        self.client, self.key, self.clock = client, key, clock
        self.interval = _positive("interval", interval)
        self.envelope = envelope or live_envelope(scenario)
        bounds = self.envelope.bounds
        self.desired = {
            name: min(max(stage.workers.initial, bounds[name].min_workers), bounds[name].max_workers)
            for name, stage in scenario.stages.items()
        }
        self.splits: dict[str, dict[str | None, float]] = {}  # never written: the app routes its tasks
        self._script = client.register_script(_PUBLISH)

    def current_workers(self) -> dict[str, int]:
        return dict(self.desired)

    def apply(self, plan: Plan) -> Applied:
        now = self.clock.now() if self.clock is not None else time.monotonic()
        applied = self.envelope.constrain_pools(plan, self.current_workers(), now)
        self.publish({**self.desired, **applied.workers})
        for clamp in applied.clamps:
            log.info("safety envelope: %s", clamp)
        return applied

    def publish(self, workers: Mapping[str, int]) -> float:
        """Write every stage's count (after the envelope: call :meth:`apply` for a plan); returns
        Redis' time of publication."""
        unknown = sorted(set(workers) - set(self.desired))
        if unknown:
            raise KeyError(f"workers name stages {unknown}; expected some of {sorted(self.desired)}")
        counts = {stage: int(n) for stage, n in workers.items()}
        pairs = [str(x) for stage, n in counts.items() for x in (stage, n)]
        published = float(self._script(keys=[self.key], args=[repr(float(self.interval)), *pairs]))
        self.desired.update(counts)
        return published


__all__ = [
    "DEFAULT_KEY",
    "PlanReader",
    "PlanReading",
    "PlannedAutoscaler",
    "PlannedSettings",
    "RedisPlanPublisher",
]
