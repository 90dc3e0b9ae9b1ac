"""What the live monitor reads of a system, whoever wrote the system: the scenario that describes
it, its event records (in the fold's vocabulary), its broker queue lengths and its splits.

Two systems:

* :func:`builtin_system`: adaptflow's own emulated app (:mod:`adaptflow.runtime.celery_app`),
  whose tasks write their records into a Redis stream.
* :func:`app_system`: any user's Celery app, observed through Celery's own event stream
  (:class:`~.events.EventStream`) translated by the app's mapping (:mod:`.translate`); its
  queues are read from the broker. Its splits are the app's own business: none are reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from celery import Celery

from adaptflow.scenario.schema import Scenario

from ..celery_app import context_of, redis_client
from .events import Gap
from .fold import Record
from .mapping import AppMapping
from .translate import EventTranslator


class EventSource(Protocol):
    """Where a user's app's events are read: an :class:`~.events.EventStream`, or a view of one
    that also keeps them (``compare-app``'s run recording, :class:`adaptflow.runtime.record.RunRecording`)."""

    @property
    def gaps(self) -> Iterable[Gap]: ...

    def drain(self) -> list[dict[str, Any]]: ...


class RecordSource(Protocol):
    """Event records since the last :meth:`advance`: ``read`` may be retried after a failure
    elsewhere in the observation; ``advance`` marks what was read as folded."""

    def read(self) -> list[Record]: ...

    def advance(self) -> None: ...


@dataclass
class LiveSystem:
    """What the monitor reads (see the module docstring)."""

    scenario: Scenario
    time_scale: float
    records: RecordSource
    queue_lengths: Callable[[], dict[str, int]]  # stage -> messages waiting in the broker
    splits: Callable[[], dict[str, dict[str | None, float]]]
    gaps: Callable[[], list[Gap]] = list  # times events may have been lost (a user's app only)
    # Fork/join (adaptflow's own app, a DAG scenario): the items in the system now (parts are
    # visits at several stages at once), and the parts waiting at each join. None: not known,
    # the monitor counts queue plus busy, and no joins.
    in_system: Callable[[], int] | None = None
    join_waiting: Callable[[], dict[str, int]] | None = None


class StreamRecords:
    """The records adaptflow's own tasks write to the run's Redis stream, read by id."""

    def __init__(self, client: redis.Redis, key: str):
        self.client, self.key = client, key
        last = client.xrevrange(key, count=1)
        self._last_id = last[0][0] if last else "0-0"
        self._read_to = self._last_id

    def read(self) -> list[Record]:
        out, start = [], f"({self._last_id}"
        while True:
            batch = self.client.xrange(self.key, min=start, max="+", count=10_000)
            out += batch
            if len(batch) < 10_000:
                break
            start = f"({batch[-1][0]}"
        self._read_to = out[-1][0] if out else self._last_id
        return [record for _, record in out]

    def advance(self) -> None:
        self._last_id = self._read_to


class CeleryEventRecords:
    """Celery's task events, drained from an :class:`EventStream` and translated."""

    def __init__(self, stream: EventSource, translator: EventTranslator):
        self.stream, self.translator = stream, translator

    def read(self) -> list[Record]:
        return self.translator.translate(self.stream.drain())

    def advance(self) -> None:
        pass  # draining is reading: what was drained is translated and folded in the same observe


def builtin_system(app: Celery) -> LiveSystem:
    """adaptflow's own app: the scenario, time scale, stream and splits of its :class:`LiveContext`."""
    context = context_of(app)
    client, joins = context.client, context.scenario.join_names()
    return LiveSystem(
        scenario=context.scenario,
        time_scale=context.time_scale,
        records=StreamRecords(client, context.events_key),
        queue_lengths=lambda: {name: client.llen(name) for name in context.scenario.stages},
        splits=context.splits.read_all,
        in_system=(lambda: int(client.scard(context.items_key))) if joins else None,
        join_waiting=(lambda: context.joins.waiting(joins)) if joins else None,
    )


def app_system(app: Celery, mapping: AppMapping, scenario: Scenario, stream: EventSource) -> LiveSystem:
    """A user's app: its events through ``mapping`` (whose stages must be the scenario's), its
    queues' lengths from its Redis broker. The scenario (calibrated from a recording, or written
    by hand) is what the planner reasons about: its stages, sources, SLA and costs."""
    missing = sorted(set(scenario.stages) ^ set(mapping.stages))
    if missing:
        raise ValueError(
            f"the mapping's stages {sorted(mapping.stages)} and the scenario's {sorted(scenario.stages)} "
            f"differ in {missing}; expected the same stages"
        )
    broker = app.conf.broker_url or ""
    if not broker.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"broker {broker!r}: expected a Redis broker (redis://...) to read queue lengths from")
    client, queues = redis_client(broker), mapping.queues()
    return LiveSystem(
        scenario=scenario,
        time_scale=1.0,
        records=CeleryEventRecords(stream, EventTranslator(mapping)),
        queue_lengths=lambda: {stage: sum(client.llen(q) for q in names) for stage, names in queues.items()},
        splits=dict,
        gaps=lambda: list(stream.gaps),
    )
