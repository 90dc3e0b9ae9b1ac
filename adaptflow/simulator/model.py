"""The discrete-event model of a workflow, on SimPy, steppable by a planner.

Design, for speed without losing exactness:

* An item costs one scheduled SimPy event per service attempt (its completion: a timeout with a
  callback; a worker that goes on to a queued item re-arms the event it just finished with).
  Moving between stages, queueing and picking the next item are plain function calls at the
  current simulated time. There is no SimPy process per item: a process costs several events
  and a generator frame per item. Arrivals are drawn in advance, so they are merged with
  SimPy's queue by :meth:`Simulation.run` instead of being scheduled as events.
* Statistics that are integrals over time (mean queue length, busy workers) are kept as running
  sums that need no work per event: the area under the queue-length curve is the sum of the waits
  already finished plus, for items still waiting, ``len(queue) * now - sum(enter times)``.
* Worker-pool changes are rare, so the pool's areas (for cost and utilization) are integrated
  exactly at each change.
* What a scenario means is not restated here: where an item goes is the route object's
  ``choose`` (its split's ``pick``), a visit's outcome is :func:`adaptflow.scenario.outcome.outcome_rule`,
  lateness is :class:`adaptflow.scenario.schema.Sla`. The live Celery task calls the same code. The
  model binds each of them once (a delivery closure per owner, a rule per stage, the SLA's bound
  methods), so the hot path pays a call, not a lookup.
* Fork/join (:mod:`.joins`) and job classes (:mod:`.classes`) live in files of their own. A
  scenario without them binds the plain exit and keeps a plain ``deque`` per stage, so a
  pipeline's hot path pays nothing for either (benchmarks/bench_simulator.py).
* The SimPy environment is private (``_env``): stepping it from outside would process the
  model's re-armable events as SimPy's and break the next :meth:`Simulation.run`. Read the model
  through :meth:`Simulation.counters` and :meth:`Simulation.samples`.

Use it like this::

    sim = Simulation(load_scenario("mmc"), rng=np.random.default_rng(1))
    sim.run(until=600)                 # run to t = 600 s
    mark = sim.counters()
    sim.set_workers("work", 12)        # scale up (ready after the startup delay)
    sim.run(until=1200)
    window = sim.summary(since=mark)   # metrics of the last 600 s
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from heapq import heappop, heappush, heapreplace
from types import MethodType
from typing import Any

import numpy as np
import pandas as pd
import simpy
from simpy.core import Infinity as INFINITY

from adaptflow.scenario.outcome import DETECTED, DONE, FAILED_RETRY, FALSE_ALARM, outcome_rule
from adaptflow.scenario.routing import FAN_OUTS, JOIN_AT_EXIT, Route, Split, Target
from adaptflow.scenario.schema import Scenario, Service, Sla, Stage, StageContention, TurnaroundGrowth, Workers
from adaptflow.scenario.streams import BATCH, Streams, arrivals_with_quality, class_picker, service_sampler

from . import metrics
from .classes import ClassBook, PriorityQueue
from .hosts import HostState
from .joins import Family, Forker, JoinPoint
from .reaps import LateReaps
from .wakeup import Wakeup

_new_tuple, _Counters, _StageCounters = tuple.__new__, metrics.Counters, metrics.StageCounters
"""Counters are built with ``tuple.__new__`` in field order: a third of the time of the named
tuple's own ``__new__`` (a Python function), and a monitor builds them on every env step."""

DEADLINE_SCAN_EVERY = 32
"""A source checks the deadlines every this many arrivals (see :meth:`SourceState.arrive`)."""


class Item:
    """One unit of work flowing through the pipeline."""

    __slots__ = (
        "attempt", "bad", "created", "enter", "family", "flagged", "gone", "klass", "late", "met_idle", "served_from",
        "size", "sla", "source", "visit",
    )  # fmt: skip

    def __init__(self, source: str, created: float, size: float, bad: bool, sla: Sla, klass: int = 0):
        self.source = source
        self.sla = sla  # its deadline rule: the scenario's, or its job class's
        self.klass = klass  # its job class (index in the scenario's classes; 0 without classes)
        self.created = created
        self.size = size  # multiplies every service time (a trace's item size)
        self.bad = bad  # the truth about quality, never seen by a planner
        self.flagged = False  # what validation concluded
        self.attempt = 0  # failed attempts at the current stage
        self.late = False  # counted as an SLA violation already
        self.gone = False  # left the system (completed, dropped or given up)
        self.family: Family | None = None  # set on a part of a forked item (see joins.py)
        self.met_idle = False  # entered its stage with nothing else of it in progress (StageState.enter)


def _uniforms(rng: np.random.Generator) -> Callable[[], float]:
    def values():
        while True:
            yield from rng.random(BATCH).tolist()

    return values().__next__


class _SplitRouter:
    """A split's delivery, whose probabilities a planner may change while the model runs.

    The route decides: per item, ``Split.pick`` of one uniform over the split's edges (what
    ``Split.choose`` does), with the edges kept from the last change instead of recomputed."""

    def __init__(self, route: Split, deliver: dict[Target, Callable[[Item], None]], uniform: Callable[[], float]):
        self.route = route
        self.names = route.targets()
        self.deliver = deliver
        self.uniform = uniform
        self._pick = route.pick
        self.set(route.probabilities())

    def set(self, probs: list[float]) -> None:
        """New probabilities, in the order of :attr:`names`."""
        self.probs = list(probs)
        self.edges = self.route.edges(dict(zip(self.names, self.probs, strict=True)))

    def __call__(self, item: Item) -> None:
        self.deliver[self._pick(self.uniform(), self.edges)](item)


def _no_callback(value: Any) -> None:
    """Celery's work of a visit (``StageState._admit``) ends without anyone waiting on it."""


def _contention(spec: Stage, host: Any) -> tuple[float, float]:
    """A stage's (dispatch, turnaround) coefficients of Stage.contention; 0 without a host."""
    if host is None or spec.contention is None:
        return 0.0, 0.0
    return spec.contention.dispatch, spec.contention.turnaround


def _law_of(growth: TurnaroundGrowth | None, stage: str) -> TurnaroundGrowth | None:
    """The law ``stage`` meets of its host's growth (``TurnaroundGrowth.for_stage``), resolved
    once when the stage is built, not at every visit."""
    return growth.for_stage(stage) if growth is not None else None


class StageState:
    """A queue and a worker pool. Workers are counted, not modelled as objects: ``idle``,
    ``busy``, ``starting`` (requested, not ready yet) and ``draining`` (busy, retiring after
    their current item: scale-down is graceful).

    With a ``turnaround`` a worker that finished a visit is ``turning`` for that long times the
    item's size (and a draw of mean 1 with a ``turnaround_cv``), ready, not serving, not free,
    before it can start the next: the item has left, the process slot has not refilled yet.
    Counted as ready (paid, in the active area) and reported as idle, as live sees a process
    between tasks. On a host with a ``turnaround_growth``, each turnaround is also multiplied by
    its factor for the processes the host runs at that moment; with a ``dispatch_growth``, each
    dispatch delay by its own.

    With a ``dispatch_delay`` (see :class:`~adaptflow.scenario.schema.Stage`) an entering item
    is first ``dispatching`` (sent, not yet able to start) for that long times its size, then joins the queue
    or starts. It counts as waiting from when it entered, in its wait, in the queue's area and in
    ``queue_length`` (as live counts a visit sent and not started, whether it is in the broker's
    list or reserved by a worker).

    With a ``late_reap`` (see :mod:`.reaps`) an item may go to a retired worker not reaped yet;
    it waits for the reap and holds one ready worker meanwhile, ``held``: paid, reported as
    idle, and its item counted as waiting, as live sees the process and the reserved task."""

    def __init__(self, sim: Simulation, name: str, spec: Stage, streams: Streams):
        self.sim, self._env, self.name, self.spec = sim, sim._env, name, spec
        self.queue: deque[Item] | PriorityQueue = deque()
        if spec.discipline == "priority":  # the queue decides who is next (see classes.py)
            self.queue = PriorityQueue([c.priority for c in sim.scenario.classes.values()])
        self.capacity = spec.queue.capacity
        self._init_pool(spec.workers, streams, name)
        self.turnaround, self.turning = spec.turnaround, 0  # workers between visits (see above)
        # each turnaround's multiplier (mean 1; Stage.turnaround_cv), from a stream of its own; None, 1
        self._spread_turnaround: Callable[[], float] | None = None
        if spec.turnaround_cv:
            spread = Service(dist="lognormal", mean=1.0, cv=spec.turnaround_cv)
            self._spread_turnaround = service_sampler(spread, streams.get("turnaround", name))
        # a host's turnaround growth (see TurnaroundGrowth): the stages whose processes it counts,
        # set by Simulation once every stage exists; None, the constant turnaround
        host_spec = sim.scenario.hosts.get(spec.host) if spec.host is not None else None
        self.growth = _law_of(host_spec.turnaround_growth if host_spec is not None and spec.turnaround else None, name)
        self.dispatch_growth = _law_of(host_spec.dispatch_growth if host_spec is not None else None, name)  # of sends
        self.host_spec = host_spec  # its speed (Host.speed) scales CPU work, turnarounds, dispatch delays
        # how much its hand-offs and turnarounds slow per process serving on the host (0: not at all)
        self.dispatch_contention, self.turnaround_contention = _contention(spec, host_spec)
        self.host_stages: list[StageState] = []
        self.turnaround_sum = 0.0  # seconds of turnaround begun, growth included
        self.backlogged_turnaround_sum, self.backlogged_turnarounds = 0.0, 0  # begun with an item waiting
        self.idle_wait_sum, self.idle_waits = 0.0, 0  # waits of the items that met the stage idle
        self.hosted_service_sum, self.hosted_service_squares, self.hosted_services = 0.0, 0.0, 0  # see StageCounters
        # the dispatch delay: a constant, or a draw per visit from a stream of its own
        self.dispatch_delay = spec.dispatch_mean()
        self._draw_dispatch: Callable[[], float] | None = None
        if isinstance(spec.dispatch_delay, Service):
            self._draw_dispatch = service_sampler(spec.dispatch_delay, streams.get("dispatch", name))
        self.dispatching = 0  # items sent, their dispatch delay not over yet
        self._pending_starts: deque[list[bool]] = deque()  # one [cancelled] token per start
        self.sample = service_sampler(spec.service, streams.get("service", name))
        self.cpu = spec.cpu_share  # the share of each service that is CPU work on its host (see hosts.py)
        # the host whatever the CPU share: it counts the processes serving there (Stage.contention);
        # ``host``, the same one where the stage's CPU work shares its cores; ``handoff_host``,
        # where its hand-offs and turnarounds take a share of the cores (Host.handoff_cpu)
        self.on_host: HostState | None = sim.hosts[spec.host] if spec.host is not None else None
        self.host: HostState | None = self.on_host if self.cpu else None
        self.handoff_host = self.on_host if host_spec is not None and host_spec.handoff_cpu else None
        self.visit_work = host_spec.cpu_seconds(host_spec.visit_cpu) if host_spec else 0.0  # Host.visit_cpu
        # the visit rule of the scenario room, bound to this stage's failure and validation streams
        failures, validations = _uniforms(streams.get("failure", name)), _uniforms(streams.get("validation", name))
        self.decide = outcome_rule(spec, failures, validations)
        self.deliver: Callable[[Item], None] = sim._exit  # where a served item goes; set by Simulation
        # cumulative counters (see metrics.StageCounters for their meaning)
        self.arrivals = self.drops = self.completed = self.failures = self.failed_items = 0
        self.detected = self.false_alarms = 0
        self.waits: list[float] = []
        self.latencies: list[float] = []
        self.queue_enter_sum = 0.0  # enter times of the items queued or dispatching
        self.dropped_wait = 0.0  # time dropped items waited (dispatching) before their drop
        self._wait_sum, self._wait_sum_n = 0.0, 0  # sum of waits[:n], brought up to date by counters()
        self.start_sum = self.finish_sum = 0.0  # sums of service start and end times
        self._finish_callback = self._finish  # bound once: the hot path schedules it per item
        self._dispatched_callback = self._dispatched
        self._turned_callback = self._turned
        self.active_area = self.billed_area = 0.0
        self._area_time = 0.0

    def _init_pool(self, w: Workers, streams: Streams, name: str) -> None:
        self.min_workers, self.max_workers = w.min, w.max
        self.startup_delay, self.price = w.startup_delay, w.cost_per_second
        self.tick = w.startup_tick  # workers start at the pool's ticks (see Workers)
        self.tick_phase = w.startup_tick_phase
        self._tick_batch: list[float] = [-1.0, 0]  # [the next tick's time, workers starting at it]
        if self.tick and self.tick_phase is None:  # drawn per episode, from a stream of its own
            self.tick_phase = float(streams.get("startup", name).random()) * self.tick
        self.idle, self.busy, self.starting, self.draining = w.initial, 0, 0, 0
        # retired workers reaped late (see reaps.py): the items sent there, and the ready workers
        # those items hold until the reap (counted as idle, as live sees the process)
        self.reaps: LateReaps | None = None
        if self.tick and w.late_reap:
            self.reaps = LateReaps(self, w.late_reap, _uniforms(streams.get("reap", name)))
        self.held = 0

    # -- the hot path ------------------------------------------------------------------------
    def enter(self, item: Item) -> None:
        now = self._env._now
        item.visit = item.enter = now
        self.arrivals += 1
        # nothing of the stage in progress: its wait is the way in alone (live/handoff.idle_waits)
        item.met_idle = not (self.busy or self.turning or self.held or self.dispatching or self.queue)
        # _admit's body, inlined: one more call per arrival cost a fifth of mmc's speed
        # (benchmarks/bench_simulator.py, ratio 3.1 against 3.9-4.5); a change here goes there too
        if self.visit_work:
            self.on_host.run(self.visit_work * item.size, None, _no_callback)  # type: ignore[union-attr]
        if self.dispatch_delay:
            self._send(item, now)
        elif self.idle:
            self._start(item, now)
        else:
            self._wait_or_drop(item, now)

    def _admit(self, item: Item, now: float) -> None:
        """A retry's message for the stage (``enter`` inlines the same for a first): Celery's CPU
        for it begins (``Host.visit_cpu``, per unit of size, as the dispatch delay: a job beside
        the tasks in the host's sharing that delays nothing itself), then it is dispatched, or
        started on an idle worker, or queued (or dropped)."""
        item.met_idle = not (self.busy or self.turning or self.held or self.dispatching or self.queue)
        if self.visit_work:
            self.on_host.run(self.visit_work * item.size, None, _no_callback)  # type: ignore[union-attr]
        if self.dispatch_delay:
            self._send(item, now)
        elif self.idle:
            self._start(item, now)
        else:
            self._wait_or_drop(item, now)

    def _send(self, item: Item, now: float) -> None:
        """The item is on its way to a worker: it may start a dispatch delay from now."""
        self.dispatching += 1
        self.queue_enter_sum += now
        if self.handoff_host is not None:
            self.handoff_host.handoff(1)
        delay = self.dispatch_delay if self._draw_dispatch is None else self._draw_dispatch()
        delay *= item.size  # a big item's message is slow to hand over too (Stage.dispatch_delay)
        if self.host_spec is not None:  # Celery's own work, at the host's speed and load
            delay = self.host_spec.cpu_seconds(delay)
            if self.dispatch_contention:  # the sender's process has finished: it no longer counts
                delay *= StageContention.factor(self.dispatch_contention, self._host_busy())
            if self.dispatch_growth is not None:
                delay *= self.dispatch_growth.factor(self._processes(self.dispatch_growth))
        Wakeup(self._env, delay, item, self._dispatched_callback)

    def _dispatched(self, event: Wakeup) -> None:
        """The dispatch delay is over: start on an idle worker, or queue (or be dropped) now."""
        item: Item = event._value
        self.dispatching -= 1
        self.queue_enter_sum -= item.enter  # _start measures its wait, _wait_or_drop re-adds it
        if self.handoff_host is not None:
            self.handoff_host.handoff(-1)
        now = self._env._now
        if self.idle:
            self._start(item, now)
        else:
            self._wait_or_drop(item, now)

    def _wait_or_drop(self, item: Item, now: float) -> None:
        if self.capacity is not None and len(self.queue) >= self.capacity:
            self.drops += 1
            self.dropped_wait += now - item.enter  # > 0 only after a dispatch delay
            self.sim._lost(item, now, dropped=True)
        else:
            self.queue.append(item)
            self.queue_enter_sum += item.enter  # = now, unless it was dispatching since enter

    def _start(self, item: Item, now: float, event: Wakeup | None = None) -> None:
        """An idle worker takes ``item``. Its completion is ``event`` re-armed when the worker
        has just finished one, else a new event (re-arming saves ~7% of the model's time on mmc).
        A retired worker not reaped yet may take the item instead (see reaps.py)."""
        reaps = self.reaps
        if reaps is not None and reaps.open and reaps.catch(item, self.idle):
            self.idle -= 1  # the item holds a ready worker until the reap (release)
            self.held += 1
            self.queue_enter_sum += item.enter  # still waiting, as live counts a reserved task
            return
        self.idle -= 1
        self.busy += 1
        if self.on_host is not None:
            self.on_host.serving += 1
        wait = now - item.enter
        self.waits.append(wait)
        if item.met_idle:
            self.idle_wait_sum += wait
            self.idle_waits += 1
        self.start_sum += now
        if self.host is not None:
            self._serve_on_host(item, self.sample() * item.size)
        elif event is None:
            Wakeup(self._env, self.sample() * item.size, item, self._finish_callback)
        else:
            event.rearm(self.sample() * item.size, item)

    def _serve_on_host(self, item: Item, seconds: float) -> None:
        """A service of ``seconds`` as calibrated: its non-CPU share first, as a plain delay,
        then its CPU share on the host, at the host's speed (``Host.speed``) and slowed while its
        cores are oversubscribed."""
        work = self.host_spec.cpu_seconds(seconds * self.cpu)  # type: ignore[union-attr]
        item.served_from = self._env._now
        if self.cpu < 1.0:
            Wakeup(self._env, seconds * (1.0 - self.cpu), (item, work), self._io_done)
        else:
            self.host.run(work, item, self._served_on_host)  # type: ignore[union-attr]

    def _io_done(self, event: Wakeup) -> None:
        item, work = event._value
        self.host.run(work, item, self._served_on_host)  # type: ignore[union-attr]

    def _served_on_host(self, item: Item) -> None:
        """A service on a host is over: its length counted (only here, so that a stage off any
        host, whose services are its distribution's draws, pays nothing for it), then served."""
        seconds = self._env._now - item.served_from
        if self.sim.service_spans is not None:
            self.sim.service_spans.append((self.name, item.served_from, self._env._now))
        self.hosted_service_sum += seconds
        self.hosted_service_squares += seconds * seconds
        self.hosted_services += 1
        self._served(item)

    def _finish(self, event: Wakeup) -> None:
        self._served(event._value, event)

    def _served(self, item: Item, event: Wakeup | None = None) -> None:
        """A visit's service is over: the worker turns, retires or takes the next item (re-arming
        ``event``, the completion it just had, if any), and the visit's outcome is decided."""
        now = self._env._now
        self.finish_sum += now
        if self.on_host is not None:  # this process no longer serves, whichever way it goes on
            self.on_host.serving -= 1
        if self.draining:  # this worker retires
            self._integrate(now)
            self.busy -= 1
            self.draining -= 1
        elif self.turnaround:  # free again only after its turnaround
            self.busy -= 1
            self.turning += 1
            seconds = self.turnaround * item.size
            if self._spread_turnaround is not None:
                seconds *= self._spread_turnaround()
            if self.host_spec is not None:
                seconds = self.host_spec.cpu_seconds(seconds)
                if self.turnaround_contention:  # this process no longer counts: it has just finished
                    seconds *= StageContention.factor(self.turnaround_contention, self._host_busy())
            if self.growth is not None:
                seconds *= self.growth.factor(self._processes(self.growth))
            self.turnaround_sum += seconds
            if self.queue:  # the next item waits for it: the gap a live worker's events show
                self.backlogged_turnaround_sum += seconds  # (runtime/live/handoff.py counts only these)
                self.backlogged_turnarounds += 1
            if self.handoff_host is not None:
                self.handoff_host.handoff(1)
            Wakeup(self._env, seconds, None, self._turned_callback)
        else:
            self.busy -= 1
            self.idle += 1
            if self.queue:
                nxt = self.queue.popleft()
                self.queue_enter_sum -= nxt.enter
                self._start(nxt, now, event)  # the worker's completion event, re-armed
        decide = self.decide
        if decide is not None:
            outcome = decide(item.bad, item.attempt)
            if outcome is not DONE:
                if outcome is DETECTED:
                    item.flagged = True
                    self.detected += 1
                elif outcome is FALSE_ALARM:
                    item.flagged = True
                    self.false_alarms += 1
                else:
                    self._failed(item, now, outcome is FAILED_RETRY)
                    return
            item.attempt = 0  # retries are counted per stage visit
        self.completed += 1
        self.latencies.append(now - item.visit)
        self.deliver(item)

    def _host_busy(self) -> int:
        """The pool processes serving a task on this stage's host (Stage.contention): the host's
        own count, kept where a visit starts and ends (a sum over its stages at every hand-off
        made a contended replay 12-40 % slower)."""
        return self.on_host.serving  # type: ignore[union-attr]

    def _processes(self, law: TurnaroundGrowth) -> int:
        """The pool processes ``law`` counts (TurnaroundGrowth.counts), running: idle, serving or
        between tasks (a draining one is serving; a starting one does not run yet). The host's
        every stage's, or with ``counts: stage`` this stage's own."""
        stages = self.host_stages if law.counts == "host" else (self,)
        return sum(s.idle + s.busy + s.turning + s.held for s in stages)

    def _turned(self, event: Wakeup) -> None:
        """A worker's turnaround is over: it retires if more are draining than busy ones can
        cover (a scale-down asked while it turned), else it takes the next queued item."""
        now = self._env._now
        self.turning -= 1
        if self.handoff_host is not None:
            self.handoff_host.handoff(-1)
        if self.draining > self.busy + self.held:  # (a held worker will serve, then may retire)
            self._integrate(now)
            self.draining -= 1
            return
        self._free_worker(now)

    def _free_worker(self, now: float) -> None:
        """One more worker is free: it takes the next queued item, if any. (``_served`` does the
        same inline, re-arming its completion event: it runs once per item.)"""
        self.idle += 1
        if self.queue:
            nxt = self.queue.popleft()
            self.queue_enter_sum -= nxt.enter
            self._start(nxt, now)

    def _failed(self, item: Item, now: float, retry: bool) -> None:
        """An attempt failed: queue the item again at the back (``retry``), or give it up."""
        self.failures += 1
        if retry:
            item.attempt += 1
            item.enter = now
            self._admit(item, now)  # a retry is a new message: handled and dispatched again
        else:
            self.failed_items += 1
            self.sim._lost(item, now, dropped=False)

    # -- the worker pool ---------------------------------------------------------------------
    @property
    def target(self) -> int:
        """Workers the pool is heading for: ready ones not retiring, plus those starting."""
        return self.idle + self.busy + self.turning + self.held - self.draining + self.starting

    def _integrate(self, now: float) -> None:
        dt = now - self._area_time
        active = self.idle + self.busy + self.turning + self.held
        self.active_area += active * dt
        self.billed_area += (active + self.starting) * dt
        self._area_time = now

    def set_workers(self, n: int) -> int:
        """Head for ``n`` workers, clamped to [min, max]; return what was applied.

        Scale-up first cancels pending retirements, then requests new workers, ready after the
        startup delay. Scale-down first cancels the most recent requests, then removes idle
        workers, then lets busy ones finish their item and retire."""
        n = max(self.min_workers, min(self.max_workers, int(n)))
        now = self._env._now
        self._integrate(now)
        delta = n - self.target
        if delta > 0:
            keep = min(delta, self.draining)
            self.draining -= keep
            for _ in range(delta - keep):
                self._request_worker()
        elif delta < 0:
            remove = -delta
            while remove and self._pending_starts:
                self._pending_starts.pop()[0] = True
                self.starting -= 1
                remove -= 1
            idle = min(remove, self.idle)
            self.idle -= idle
            self.draining += remove - idle
            if self.reaps is not None and idle:
                self.reaps.retire(idle, now, self._next_tick(now + self.spec.workers.late_reap_after))
        return n

    def release(self, item: Item) -> None:
        """A retired worker holding ``item`` was reaped (see reaps.py): the worker the item held
        is free again, and the item starts now (on it, or on another retired one)."""
        self.held -= 1
        self.idle += 1
        self.queue_enter_sum -= item.enter  # _start measures its wait, or a catch re-adds it
        self._start(item, self._env._now)

    def _request_worker(self) -> None:
        delay = self._tick_start() if self.tick else self.startup_delay
        if delay == 0:
            self._worker_ready(None)
            return
        token = [False]
        self._pending_starts.append(token)
        self.starting += 1
        Wakeup(self._env, delay, token, self._worker_ready)

    def _tick_start(self) -> float:
        """Seconds until a worker requested now is ready: the pool's next maintenance tick
        (strictly after now), then ``startup_delay`` per worker starting at that tick, one after
        another (Celery's pool forks them serially in the worker's main process)."""
        now = self._env._now
        tick = self._next_tick(now)
        if self._tick_batch[0] != tick:
            self._tick_batch = [tick, 0]
        self._tick_batch[1] += 1
        return tick - now + self.startup_delay * self._tick_batch[1]

    def _next_tick(self, now: float) -> float:
        """The pool's first maintenance tick strictly after ``now``."""
        return now + self.tick - (now - self.tick_phase) % self.tick  # type: ignore[operator]

    def _worker_ready(self, event: Wakeup | None) -> None:
        now = self._env._now
        self._integrate(now)
        if event is not None:
            token = event._value
            if token[0]:  # cancelled by a scale-down while starting
                return
            self._pending_starts.remove(token)
            self.starting -= 1
        self._free_worker(now)

    def queue_area(self, now: float) -> float:
        """Integral of the queue length from 0 to ``now``: finished waits plus the partial
        waits of the items still queued or dispatching (and of dropped ones, until their drop)."""
        if self._wait_sum_n != len(self.waits):
            self._wait_sum += math.fsum(self.waits[self._wait_sum_n :])
            self._wait_sum_n = len(self.waits)
        waiting = len(self.queue) + self.dispatching + self.held  # a held worker's item waits
        return self._wait_sum + self.dropped_wait + waiting * now - self.queue_enter_sum

    def busy_area(self, now: float) -> float:
        """Integral of the busy workers from 0 to ``now``."""
        return self.finish_sum + self.busy * now - self.start_sum

    def counters(self, now: float) -> metrics.StageCounters:
        """The stage's counters at ``now``. Built positionally, in the field order of
        :class:`~adaptflow.simulator.metrics.StageCounters` (a monitor reads them every env step;
        tests/test_counters.py checks every field by name against the model)."""
        self._integrate(now)
        idle, busy, starting, draining = self.idle + self.turning + self.held, self.busy, self.starting, self.draining
        return _new_tuple(
            _StageCounters,
            (
                self.arrivals,
                self.drops,
                self.completed,
                self.failures,
                self.failed_items,
                self.detected,
                self.false_alarms,
                len(self.waits),  # n_waits
                len(self.latencies),  # n_latencies
                self.queue_area(now),
                self.busy_area(now),
                self.active_area,
                self.billed_area,
                len(self.queue) + self.dispatching + self.held,  # queue_length: sent, not started
                busy,
                idle,
                starting,
                draining,
                idle + busy - draining + starting,  # target (as the property)
                self.turnaround_sum,
                self.backlogged_turnaround_sum,
                self.backlogged_turnarounds,
                self.idle_wait_sum,
                self.idle_waits,
                self.hosted_service_sum,
                self.hosted_service_squares,
                self.hosted_services,
            ),
        )


class SourceState:
    """An arrival source. Its arrival times are known in advance (drawn in batches), so they do
    not go through SimPy's event queue: :meth:`Simulation.run` merges the sources' next arrival
    times with SimPy's queue (see there)."""

    def __init__(self, sim: Simulation, name: str, spec: Any, streams: Streams, order: int):
        self.sim, self.name, self.order = sim, name, order
        self.arrivals = arrivals_with_quality(
            spec, streams.get("arrivals", name), streams.get("quality", name), sim.horizon
        )
        self.deliver: Callable[[Item], None] = sim._exit  # set by Simulation
        self.deadlines = sim._deadlines  # items, in creation (hence deadline) order
        self.sla = sim.sla
        self.pick_class: Callable[[], int] | None = None
        if sim.class_book is not None:  # each item's job class, from a stream of this source's own
            self.pick_class = class_picker(spec.classes, sim.class_book.names, streams.get("class", name))
            self.slas = sim.scenario.class_slas()
        self.countdown = DEADLINE_SCAN_EVERY  # arrivals until the next check of deadlines
        self.arrived = 0

    def push_next(self, heap: list) -> None:
        """Put this source's next arrival on the simulation's arrival heap (if it has one)."""
        arrival = next(self.arrivals, None)
        if arrival is not None:
            heappush(heap, (arrival[0], self.order, self, arrival))

    def arrive(self, arrival: tuple[float, float, bool], heap: list) -> None:
        """Handle ``arrival``, which is on top of ``heap``: replace it there by the next one."""
        now, size, bad = arrival
        self.arrived += 1
        following = next(self.arrivals, None)
        if following is None:
            heappop(heap)
        else:
            heapreplace(heap, (following[0], self.order, self, following))
        if self.pick_class is None:
            item = Item(self.name, now, size, bad, self.sla)
            self.deadlines.append(item)
        else:
            k = self.pick_class()
            item = Item(self.name, now, size, bad, self.slas[k], k)
            self.sim._pending[k][1].append(item)  # each class's deadlines in their own order
            self.sim.class_book.arrived[k] += 1  # type: ignore[union-attr]
        # Retire expired deadlines every few arrivals, so that only about the last SLA window of
        # items is held (holding every item until the next metrics read slows Python's GC badly).
        # Not at every arrival: when deadlines are checked changes no count read through
        # Simulation.counters (see check_deadlines), and a check per arrival cost ~5% of the speed.
        self.countdown -= 1
        if not self.countdown:
            self.countdown = DEADLINE_SCAN_EVERY
            self.sim.check_deadlines()
        self.deliver(item)


class Simulation:
    """A scenario brought to life: run it to a time, read metrics, change pools and splits.

    ``rng`` is the only source of randomness: a ``numpy.random.Generator`` (a Gymnasium env hands
    over ``self.np_random``), an int seed, or ``None`` for the scenario's own seed."""

    def __init__(self, scenario: Scenario, rng: np.random.Generator | int | None = None):
        if rng is None:
            rng = scenario.seed
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        streams = Streams(rng)
        # The episode's own scenario: series windows and randomized profiles drawn from named
        # streams of their own (see Scenario.for_episode); ``scenario`` itself when nothing is random.
        # Each host's laws are those of its speed (Scenario.laws_at_speed: a host's by_speed).
        scenario = scenario.for_episode(streams).laws_at_speed()
        self.scenario = scenario
        self.horizon = scenario.horizon
        self.sla = scenario.sla  # the one rule of lateness
        self._env = simpy.Environment()
        self.hosts = {
            name: HostState(self._env, h.cores, h.handoff_cpu, h.oversubscription) for name, h in scenario.hosts.items()
        }
        self._calendar = scenario.calendar()
        self._deadlines: deque[Item] = deque()  # items whose deadline has not been checked yet
        # job classes (see classes.py): each class's deadline rule and unchecked items; one pair
        # without classes. Items of one class reach their deadlines in creation order.
        self.class_book = ClassBook(scenario) if scenario.classes else None
        slas = scenario.class_slas()
        self._pending = [(self.sla, self._deadlines)] if self.class_book is None else [(sla, deque()) for sla in slas]
        # bound once, every exit asks it; with classes, _exit_classed asks the item's own rule first
        self._is_late = self.sla.is_late if self.class_book is None else _never_late
        self.joins = self._join_points(scenario)
        # how an item leaves served: the plain exit, or with its class's books; a part's way
        # ends at its family's join instead (see joins.py). Bound per instance, so a pipeline
        # pays nothing for either.
        self._served = self._exit_classed if self.class_book is not None else MethodType(Simulation._exit, self)
        if self.joins:
            self._exit = self._exit_or_join
        elif self.class_book is not None:
            self._exit = self._exit_classed
        self.stages = {n: StageState(self, n, s, streams) for n, s in scenario.stages.items()}
        for stage in self.stages.values():
            if stage.growth is not None or stage.dispatch_growth is not None:
                stage.host_stages = [s for s in self.stages.values() if s.spec.host == stage.spec.host]
        for name, point in self.joins.items():
            # where a joined item goes: as any item sent there, so that an item that is itself a
            # part (nested forks) goes on to its own family's join, even at the same stage
            point.go_on = self._delivery(name)
        self.sources = {n: SourceState(self, n, s, streams, k) for k, (n, s) in enumerate(scenario.sources.items())}
        self.splits: dict[str, _SplitRouter] = {}
        for name, stage in self.stages.items():
            stage.deliver = self._router(name, scenario.stages[name].next, streams)
        for name, source in self.sources.items():
            source.deliver = self._router(name, scenario.sources[name].to, streams)
        # end-to-end counters
        self.dropped = self.failed = self.exits = self.late = 0
        self.escapes = self.caught = self.false_rejections = 0
        self.e2e_latencies: list[float] = []
        # Opt-in: set to a list before running and every service on a host is appended as
        # (stage, start, end), the spans live recordings hold (runtime/calibrate/sharing.py
        # compares how tasks slow beside each other); None, the default, costs one test a service.
        self.service_spans: list[tuple[str, float, float]] | None = None
        self._arrivals: list = []  # heap of (time, source order, source, (time, size, bad))
        for source in self.sources.values():
            source.push_next(self._arrivals)

    def _router(self, owner: str, route: Route, streams: Streams) -> Callable[[Item], None]:
        """The function that hands an item on after ``owner``, built once from its route: the
        route decides (``choose``), this only maps its answer to a stage's ``enter`` or the exit.
        A split draws from the owner's routing stream; a route with one target needs no choice."""
        deliver = {t: self._delivery(t) for t in route.targets()}
        if isinstance(route, FAN_OUTS):
            return Forker(route, deliver, self.joins[route.join], _uniforms(streams.get("routing", owner)), Item)
        if isinstance(route, Split):
            router = _SplitRouter(route, deliver, _uniforms(streams.get("routing", owner)))
            self.splits[owner] = router
            return router
        if len(deliver) == 1:
            return next(iter(deliver.values()))
        choose = route.choose
        return lambda item: deliver[choose(item)](item)

    def _join_points(self, scenario: Scenario) -> dict[Target, JoinPoint]:
        """One join point per join target any fan-out names (a stage, or ``None``: the exit)."""
        return {r.join: JoinPoint(self, r.join) for r in scenario.fan_outs().values()}

    def _delivery(self, target: Target) -> Callable[[Item], None]:
        """How an item is handed to ``target``: the exit, a stage's enter, or, at a join stage,
        the join's check of whether it is a part to wait there."""
        if target is None:
            return self._exit
        point = self.joins.get(target)
        enter = self.stages[target].enter
        return enter if point is None else point.enter_or_wait(enter)

    def _exit_or_join(self, item: Item) -> None:
        """The exit of a scenario with joins: a part's way ends at its family's join."""
        if item.family is None:
            self._served(item)
        else:
            item.family.point.arrive(item)

    def _exit_classed(self, item: Item) -> None:
        """The exit, judged late by the item's class's own deadline, and the class's books."""
        if not item.late and item.sla.is_late(item.created, self._env._now):
            self._count_late(item)
        Simulation._exit(self, item)  # its own lateness check answers no (_never_late)
        book, k = self.class_book, item.klass
        book.exits[k] += 1  # type: ignore[union-attr]
        book.latencies[k].append(self.e2e_latencies[-1])  # type: ignore[union-attr]

    def _lost(self, item: Item, now: float, dropped: bool) -> None:
        """The item is dropped (refused by a full queue) or, ``dropped`` False, given up after
        its last retry; a part takes its whole item with it (see ``Family.kill``)."""
        if item.family is not None:
            item.family.kill(now, dropped)
            return
        self._leave(item, now)
        if dropped:
            self.dropped += 1
        else:
            self.failed += 1
        if self.class_book is not None:
            (self.class_book.dropped if dropped else self.class_book.failed)[item.klass] += 1

    def _exit(self, item: Item) -> None:
        """An item leaves served. A scenario with joins binds :meth:`_exit_or_join` in its place
        (per instance), so a pipeline's exit pays nothing for joins."""
        now = self._env._now
        self.exits += 1
        self.e2e_latencies.append(now - item.created)
        item.gone = True
        if not item.late and self._is_late(item.created, now):
            item.late = True
            self.late += 1
        if item.bad or item.flagged:
            if not item.bad:
                self.false_rejections += 1
            elif item.flagged:
                self.caught += 1
            else:
                self.escapes += 1

    def _leave(self, item: Item, now: float) -> None:
        """A dropped or given-up item: late too if its deadline had already passed."""
        item.gone = True
        if not item.late and item.sla.is_late(item.created, now):
            self._count_late(item)

    def check_deadlines(self) -> None:
        """Count as late every item still in the system whose deadline has passed.

        An item is an SLA violation from the moment its deadline passes, not when (or whether)
        it completes: a planner that lets work pile up pays at once, and an episode that ends
        with a backlog cannot hide it. Items are in deadline order, so this pops each item once
        (amortized O(1) per item); an item that leaves after its deadline but before a check is
        counted as it leaves. After a check at time t the count is the same whatever the earlier
        checks were."""
        now = self._env._now
        for sla, pending in self._pending:  # one pair per job class (one without classes)
            cutoff = sla.cutoff(now)
            while pending and pending[0].created < cutoff:
                expired = pending.popleft()
                if not expired.gone:
                    self._count_late(expired)

    def _count_late(self, item: Item) -> None:
        if not item.late:
            item.late = True
            self.late += 1
            if self.class_book is not None:
                self.class_book.late[item.klass] += 1

    @property
    def deadlines_passed(self) -> int:
        """Items whose deadline has been checked: the denominator of the violation rate."""
        return self.arrived - self._unchecked()

    def _unchecked(self) -> int:
        """Items whose deadline has not been checked yet: one deque without job classes (a
        monitor asks on every env step, so no sum over classes there)."""
        if self.class_book is None:
            return len(self._deadlines)
        return sum(len(pending) for _, pending in self._pending)

    def _join_counters(self, now: float) -> dict[str, Any]:
        return {JOIN_AT_EXIT if name is None else name: point.counters(now) for name, point in self.joins.items()}

    # -- the steppable interface ---------------------------------------------------------------
    @property
    def now(self) -> float:
        return self._env._now  # = env.now, without a second property call

    @property
    def arrived(self) -> int:
        return sum(s.arrived for s in self.sources.values())

    def run(self, until: float | None = None) -> None:
        """Advance simulated time to ``until`` (default: the horizon). Arrivals stop at the
        horizon; running past it drains the items still in the system."""
        until = self.horizon if until is None else float(until)
        env = self._env
        if until < env._now:
            raise ValueError(f"cannot run to t={until}: the simulation is already at t={env._now}")
        # Two event sources, merged in time order: the arrivals (a heap of each source's next
        # arrival, known in advance) and SimPy's queue (service completions, worker start-ups).
        # An arrival at the same time as a SimPy event goes first. As in SimPy's own
        # run(until), events at exactly `until` are left for the next call. Setting env._now
        # is what SimPy's step() does when it pops an event (simpy is pinned below 5).
        arrivals, queue, step = self._arrivals, env._queue, env.step
        while True:
            next_event = queue[0][0] if queue else INFINITY
            if arrivals and arrivals[0][0] <= next_event:
                if arrivals[0][0] >= until:
                    break
                _, _, source, arrival = arrivals[0]
                env._now = arrival[0]
                source.arrive(arrival, arrivals)
            elif next_event < until:
                event = queue[0][3]
                if event.__class__ is Wakeup:  # SimPy's step(), for the model's own events
                    heappop(queue)  # (callbacks stay in place, so the event can be re-armed)
                    env._now = next_event
                    event.callbacks[0](event)
                else:
                    step()
            else:
                break
        env._now = until

    def set_workers(self, stage: str, n: int) -> int:
        """Head for ``n`` workers at ``stage``, clamped to its [min, max]; return the applied n."""
        return self._stage(stage).set_workers(n)

    def set_split(self, owner: str, probs: dict[str | None, float]) -> None:
        """Change the split after ``owner`` (a stage or source name): ``{target: p}``, same
        targets as the scenario declares, probabilities summing to 1."""
        if owner not in self.splits:
            raise KeyError(f"{owner!r} has no probabilistic split; splits: {sorted(self.splits)}")
        router = self.splits[owner]
        if set(probs) != set(router.names):
            raise ValueError(f"split of {owner!r} has targets {router.names}; got {sorted(map(str, probs))}")
        values = [float(probs[n]) for n in router.names]
        if any(not 0 <= p <= 1 for p in values) or abs(sum(values) - 1) > 1e-9:
            raise ValueError(f"split of {owner!r}: expected probabilities in [0, 1] summing to 1, got {probs}")
        router.set(values)

    def split(self, owner: str) -> dict[str | None, float]:
        router = self.splits[owner]
        return dict(zip(router.names, router.probs, strict=True))

    def _stage(self, name: str) -> StageState:
        if name not in self.stages:
            raise KeyError(f"no stage {name!r}; stages: {list(self.stages)}")
        return self.stages[name]

    # -- metrics -------------------------------------------------------------------------------
    def counters(self) -> metrics.Counters:
        """The model's cumulative counters now, by name (deadlines checked up to now). Two of
        them bound a metrics window: :meth:`summary`, :meth:`samples`, or their difference."""
        now = self._env._now
        self.check_deadlines()
        sources, arrived = {}, 0
        for name, source in self.sources.items():  # loops, not comprehensions: a monitor calls this per env step
            sources[name] = source.arrived
            arrived += source.arrived
        stages = {}
        for name, stage in self.stages.items():
            stages[name] = stage.counters(now)
        return _new_tuple(  # positional, in field order: a monitor calls this per env step
            _Counters,
            (
                now,  # time
                stages,
                sources,  # source_arrivals
                arrived,
                self.exits,
                self.dropped,
                self.failed,
                self.late,
                arrived - self._unchecked(),  # deadlines_passed
                self.escapes,
                self.caught,
                self.false_rejections,
                len(self.e2e_latencies),  # n_latencies
                self._join_counters(now) if self.joins else {},
                {} if self.class_book is None else self.class_book.counters([p for _, p in self._pending]),
            ),
        )

    def calendar(self, t: float | None = None) -> float:
        """The workload's calendar second at simulated time ``t`` (default: now), or NaN when
        the load has no calendar of its own (see :meth:`Scenario.calendar`)."""
        if self._calendar is None:
            return math.nan
        start, speed = self._calendar
        return start + (self._env._now if t is None else t) * speed

    def mark(self) -> metrics.Counters:
        """:meth:`counters`, named for its use as the start of a window: ``summary(since=mark)``."""
        return self.counters()

    def samples(self, start: metrics.Counters | None, end: metrics.Counters) -> metrics.Samples:
        """The per-item values (waits, latencies) recorded between two :meth:`counters`."""
        return metrics.Samples(self, start, end)

    def summary(self, since: metrics.Counters | None = None) -> dict[str, Any]:
        """Metrics over the window from ``since`` (default: t=0) to now, as a nested dict."""
        return metrics.summarize(self, since, self.counters())

    def windows(self, interval: float, until: float | None = None) -> Iterator[dict[str, Any]]:
        """Run to ``until`` (default: the horizon), yielding the summary of each ``interval``
        seconds (the last window may be shorter) as soon as it is simulated."""
        until = self.horizon if until is None else until
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        start = self.counters()
        while self.now < until:
            self.run(min(self.now + interval, until))
            end = self.counters()
            yield metrics.summarize(self, start, end)
            start = end

    def record(self, interval: float, until: float | None = None) -> pd.DataFrame:
        """Run to ``until`` and return one row of window metrics per ``interval`` seconds, with
        flat column names (``stages.work.mean_wait``, ``end_to_end.p95_latency``, ``cost``)."""
        return frames(self.windows(interval, until))


def _never_late(created: float, now: float) -> bool:
    """The scenario-wide lateness check of a scenario with job classes, where each item is
    judged by its own class's deadline before (see ``Simulation._exit_classed``)."""
    return False


def frames(windows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Window summaries as a time series: one row per window, flat column names, indexed by time."""
    return pd.DataFrame([metrics.flatten(w) for w in windows]).set_index("time")
