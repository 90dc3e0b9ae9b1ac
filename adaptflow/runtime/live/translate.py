"""Celery's own task events, as Flower reads them, turned into the event fold's records: how
adaptflow observes an app it did not write. Pure (no broker, no clock), so every rule is tested
on synthetic events; the monitor, ``adaptflow record`` and ``adaptflow calibrate`` all translate
through this one class, so they cannot mean different things by a task's events.

A Celery task is one stage visit; its ``root_id`` is the item. The rules:

* ``task-sent`` (the publisher's; ``task_send_sent_event``) is the visit's ``enter``: the task
  is queued. A root task (no ``parent_id``) whose name is a source's is also an ``arrive``. The
  same task id sent again (a retry) re-enters with ``r`` = the attempt number.
* ``task-received`` stands in for ``task-sent`` when the app does not send those (the queue
  wait then starts when the worker took the message, not when it was published).
* ``task-started`` is ``start`` (with the worker node's ``hostname``, as the built-in app's
  records have it); ``task-succeeded`` is a ``finish``, and an ``exit`` of the item
  if the mapping says this task ends it; ``task-retried`` is a failed ``finish`` (the retry comes
  as a new ``task-sent``); ``task-failed`` is a failed ``finish`` and the item's ``giveup``;
  ``task-rejected`` and ``task-revoked`` drop the item at the stage.

Events of one batch are taken in timestamp order (each process stamps its own, on one clock per
machine); an event of a task not yet sent (it came before its ``task-sent``) waits for it.
Memory is bounded: tasks in flight, items in the system and early events are each capped, the
oldest forgotten first (and counted in :attr:`EventTranslator.forgotten`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .mapping import AppMapping

Event = Mapping[str, Any]
"""One Celery event: its fields as the event receiver hands them over (``type``, ``uuid``,
``timestamp``, ...)."""

RecordDict = dict[str, str]

TASK_EVENTS = frozenset(
    {"task-sent", "task-received", "task-started", "task-succeeded", "task-failed", "task-retried"}
    | {"task-rejected", "task-revoked"}
)
"""The event types the translator reads (worker heartbeats and the like are not visits)."""


@dataclass
class _Task:
    """A visit in flight: its stage, item, name, when it entered and started, its attempt."""

    stage: str
    item: str
    name: str
    enter: float
    start: float | None = None
    attempt: int = 0
    waiting: bool = True  # entered and not finished (a retried task waits to be sent again)


class EventTranslator:
    """Celery task events in, fold records out (see the module docstring). ``capacity`` bounds
    each of the tasks, items and early events it remembers."""

    def __init__(self, mapping: AppMapping, capacity: int = 100_000):
        self.mapping, self.capacity = mapping, capacity
        self._tasks: OrderedDict[str, _Task] = OrderedDict()
        self._items: OrderedDict[str, float] = OrderedDict()  # item -> created (arrival) time
        self._early: OrderedDict[str, list[Event]] = OrderedDict()
        self._handlers = {  # built once: every event of a task in flight goes through one
            "task-started": self._started,
            "task-succeeded": self._succeeded,
            "task-failed": self._failed,
            "task-retried": self._retried,
        }
        self.unmapped = 0  # tasks that matched no stage
        self.forgotten = 0  # entries dropped to stay within capacity

    def translate(self, events: Iterable[Event]) -> list[RecordDict]:
        """The records of a batch of events, in timestamp order."""
        out: list[RecordDict] = []
        for event in sorted(events, key=lambda e: float(e.get("timestamp") or 0.0)):
            self._one(event, out)
        return out

    def _one(self, event: Event, out: list[RecordDict]) -> None:
        kind, uuid = event.get("type"), event.get("uuid")
        if kind not in TASK_EVENTS or not uuid:
            return
        if kind in ("task-sent", "task-received"):
            self._enter(event, uuid, out)
            for early in self._early.pop(uuid, []):
                self._one(early, out)
            return
        task = self._tasks.get(uuid)
        if task is None:
            self._remember_early(uuid, event)
            return
        self._handlers.get(kind, self._dropped)(event, uuid, task, out)

    # -- entering --------------------------------------------------------------------------------
    def _enter(self, event: Event, uuid: str, out: list[RecordDict]) -> None:
        known = self._tasks.get(uuid)
        if known is not None and (known.waiting or event.get("type") == "task-received"):
            return  # already queued (task-received after task-sent, or a duplicate)
        t = float(event["timestamp"])
        if known is not None:  # sent again after a retry: the same visit re-enters its queue
            known.attempt, known.enter, known.start, known.waiting = known.attempt + 1, t, None, True
            out.append(_record("enter", s=known.stage, i=known.item, k=uuid, t=t, r=known.attempt))
            return
        name = event.get("name") or ""
        item = event.get("root_id") or uuid
        if not event.get("parent_id"):
            self._arrive(item, name, t, out)
        queue = event.get("queue") or event.get("routing_key")
        stage = self.mapping.stage_of(queue, name, event.get("hostname"))
        if stage is None:
            self.unmapped += 1
            return
        self._tasks[uuid] = _Task(stage, item, name, t)
        self._bound(self._tasks)
        out.append(_record("enter", s=stage, i=item, k=uuid, t=t))

    def _arrive(self, item: str, name: str, t: float, out: list[RecordDict]) -> None:
        source = self.mapping.source_of(name)
        if source is not None and item not in self._items:
            self._items[item] = t
            self._bound(self._items)
            out.append(_record("arrive", i=item, src=source, t=t))

    # -- a visit's progress ----------------------------------------------------------------------
    def _started(self, event: Event, uuid: str, task: _Task, out: list[RecordDict]) -> None:
        task.start, task.waiting = float(event["timestamp"]), False
        out.append(_record("start", s=task.stage, k=uuid, t=task.start, q=task.enter, h=event.get("hostname") or ""))

    def _finish(self, event: Event, uuid: str, task: _Task, failed: bool, out: list[RecordDict]) -> float:
        t = float(event["timestamp"])
        start = task.start if task.start is not None else t - float(event.get("runtime") or 0.0)
        out.append(_record("finish", s=task.stage, k=uuid, t=t, st=start, x=int(failed), d=0))
        return t

    def _succeeded(self, event: Event, uuid: str, task: _Task, out: list[RecordDict]) -> None:
        t = self._finish(event, uuid, task, False, out)
        del self._tasks[uuid]
        if self.mapping.ends_item(task.name, task.stage):
            out.append(_record("exit", i=task.item, c=self._created(task), t=t, b=0, f=0))

    def _failed(self, event: Event, uuid: str, task: _Task, out: list[RecordDict]) -> None:
        t = self._finish(event, uuid, task, True, out)
        del self._tasks[uuid]
        out.append(_record("giveup", i=task.item, c=self._created(task), t=t))

    def _retried(self, event: Event, uuid: str, task: _Task, out: list[RecordDict]) -> None:
        self._finish(event, uuid, task, True, out)
        task.start, task.waiting = None, False  # until it is sent again

    def _dropped(self, event: Event, uuid: str, task: _Task, out: list[RecordDict]) -> None:
        t = float(event["timestamp"])
        del self._tasks[uuid]
        out.append(_record("drop", i=task.item, c=self._created(task), t=t, s=task.stage))

    # -- memory ------------------------------------------------------------------------------------
    def _created(self, task: _Task) -> float:
        """The item's arrival time (forgotten once it leaves); a task's own enter time if the
        item arrived before the translator was watching."""
        return self._items.pop(task.item, task.enter)

    def _remember_early(self, uuid: str, event: Event) -> None:
        self._early.setdefault(uuid, []).append(event)
        self._bound(self._early)

    def _bound(self, table: OrderedDict) -> None:
        while len(table) > self.capacity:
            table.popitem(last=False)
            self.forgotten += 1

    def tracked(self) -> dict[str, int]:
        """Sizes of what the translator remembers (for tests of its bound)."""
        return {"tasks": len(self._tasks), "items": len(self._items), "early": len(self._early)}


def _record(kind: str, **fields: Any) -> RecordDict:
    """A fold record: string values, as the built-in app's Redis stream holds them."""
    return {"e": kind, **{key: _text(value) for key, value in fields.items()}}


def _text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)
