"""A recording's task events as visits and items: what calibration measures.

The meaning of an event is :class:`~adaptflow.runtime.live.translate.EventTranslator`'s alone;
this module only gathers its records (``enter``, ``start``, ``finish``, ``arrive``, ``exit``,
``giveup``, ``drop``) per stage and per item. Two things the records do not carry are joined in
by task id: the item of a finish (from its visit's ``enter``), and the worker process of a
start (``hostname`` and ``pid`` of Celery's ``task-started``: the worker node, whose main
process stamps the event).

One inference goes beyond the translator: an item whose last task succeeded and sent no
follow-up (a probabilistic exit the mapping's ``end`` cannot name) has left the system. It is
counted as an exit only if the task finished ``settle`` seconds before the recording ended, so
that a follow-up still to be sent is not mistaken for an exit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from adaptflow.runtime.live.translate import EventTranslator

from .recording import Recording

SETTLE_FLOOR = 1.0
"""Least seconds between an item's last success and the recording's end for an exit to be inferred."""


@dataclass
class StageObs:
    """What one stage's records say: per attempt its service time and wait, and the counts; and,
    for the dispatch delay, when each started attempt entered and when attempts were running."""

    services: list[float] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)  # the task id of each service time, in step with services
    waits: list[float] = field(default_factory=list)
    enters: list[float] = field(default_factory=list)  # the enter time of each wait, in step with waits
    started: list[str] = field(default_factory=list)  # the task id of each wait, in step with waits
    spans: list[tuple[float, float]] = field(default_factory=list)  # (start, finish) of each finished attempt
    running: dict[str, float] = field(default_factory=dict)  # task id -> start, of attempts not finished
    entered: dict[str, float] = field(default_factory=dict)  # task id -> enter, of attempts not finished
    attempt_times: list[tuple[float, float, float, str]] = field(default_factory=list)  # (enter, start, finish, k)
    process_of: dict[str, tuple[str, int]] = field(default_factory=dict)  # task id -> its last start's process
    attempts: int = 0  # finished attempts (failed or not)
    failures: int = 0
    completed: int = 0  # successful finishes
    retry_numbers: list[int] = field(default_factory=list)  # r of each re-entry
    giveups: list[int] = field(default_factory=list)  # the retry number of each given-up visit
    drops: int = 0
    starts: list[tuple[float, tuple[str, int]]] = field(default_factory=list)  # (t, (hostname, pid))


@dataclass
class ItemObs:
    """One item (a Celery root id): its arrival, its visits in enter order, how it left."""

    created: float | None = None  # relative time of its arrival (None: arrived before recording)
    source: str | None = None
    visits: list[tuple[float, str, str]] = field(default_factory=list)  # (first enter, stage, task id)
    end: str | None = None  # "exit", "inferred-exit", "giveup", "drop" or None (still in the system)
    end_time: float | None = None


@dataclass
class Timeline:
    """A recording's observations, in scenario seconds from the start of recording."""

    stages: dict[str, StageObs]
    items: dict[str, ItemObs]
    horizon: float
    unmapped: int = 0
    forgotten: int = 0
    settle: float = SETTLE_FLOOR
    inferred_exits: int = 0
    last_finish: dict[str, tuple[float, bool, int]] = field(default_factory=dict)  # task id -> (t, failed, retries)

    def arrivals(self, source: str) -> np.ndarray:
        """Sorted arrival times of one source's items."""
        return np.asarray([t for t, _ in self.arrived(source)], dtype=float)

    def arrived(self, source: str) -> list[tuple[float, str]]:
        """(arrival time, item id) of one source's items that arrived while recording, in time order."""
        return sorted((i.created, k) for k, i in self.items.items() if i.source == source and i.created is not None)


def busy_spans(timeline: Timeline, origin: float = 0.0) -> list[tuple[float, float]]:
    """Every attempt's (start, finish) over all stages, ``origin`` added (wall seconds from the
    timeline's); an attempt still running at the end runs on to infinity."""
    spans = [(origin + a, origin + b) for obs in timeline.stages.values() for a, b in obs.spans]
    return spans + [(origin + a, math.inf) for obs in timeline.stages.values() for a in obs.running.values()]


def build_timeline(recording: Recording) -> Timeline:
    """Translate the recording's events and gather the records per stage and per item."""
    translator = EventTranslator(recording.mapping, capacity=max(100_000, len(recording.events)))
    records = translator.translate(recording.events)
    timeline = Timeline({s: StageObs() for s in recording.mapping.stages}, {}, recording.duration)
    timeline.unmapped, timeline.forgotten = translator.unmapped, translator.forgotten
    origin = recording.origin
    task_stage: dict[str, str] = {}
    for record in records:
        _take(record, origin, timeline, task_stage)
    _join_processes(recording, timeline, task_stage)
    _infer_exits(timeline)
    return timeline


def _take(record: dict[str, str], origin: float, tl: Timeline, task_stage: dict[str, str]) -> None:
    kind, t = record["e"], float(record["t"]) - origin
    if kind == "arrive":
        item = tl.items.setdefault(record["i"], ItemObs())
        item.created, item.source = t, record["src"]
    elif kind == "enter":
        stage, k, retry = record["s"], record["k"], int(record.get("r", 0))
        task_stage[k] = stage
        if retry:
            tl.stages[stage].retry_numbers.append(retry)
        else:
            tl.items.setdefault(record["i"], ItemObs()).visits.append((t, stage, k))
    elif kind == "start":
        obs, entered = tl.stages[record["s"]], float(record["q"]) - origin
        obs.waits.append(t - entered)
        obs.enters.append(entered)
        obs.started.append(record["k"])
        obs.running[record["k"]] = t
        obs.entered[record["k"]] = entered
    elif kind == "finish":
        _finish(record, t, origin, tl)
    elif kind in ("exit", "giveup", "drop"):
        item = tl.items.setdefault(record["i"], ItemObs())
        item.end, item.end_time = kind, t
        if kind == "giveup" and item.visits:
            stage, k = item.visits[-1][1], item.visits[-1][2]
            tl.stages[stage].giveups.append(_retries_of(tl, k))
        elif kind == "drop":
            tl.stages[record["s"]].drops += 1


def _finish(record: dict[str, str], t: float, origin: float, tl: Timeline) -> None:
    obs, failed, started = tl.stages[record["s"]], record.get("x") == "1", float(record["st"]) - origin
    obs.services.append(t - started)
    obs.tasks.append(record["k"])
    obs.spans.append((started, t))
    obs.running.pop(record["k"], None)
    entered = obs.entered.pop(record["k"], None)
    if entered is not None:
        obs.attempt_times.append((entered, started, t, record["k"]))
    obs.attempts += 1
    obs.failures += failed
    obs.completed += not failed
    previous = tl.last_finish.get(record["k"])
    tl.last_finish[record["k"]] = (t, failed, previous[2] + 1 if previous else 0)


def _retries_of(tl: Timeline, k: str) -> int:
    """How many times a task had been retried when it last finished (its attempts less one)."""
    last = tl.last_finish.get(k)
    return last[2] if last else 0


def _join_processes(recording: Recording, tl: Timeline, task_stage: dict[str, str]) -> None:
    """Each start's worker process, from Celery's ``task-started`` (not in the fold's records)."""
    for event in recording.events:
        if event.get("type") != "task-started" or event.get("pid") is None:
            continue
        stage = task_stage.get(str(event.get("uuid")))
        if stage is not None:
            process = (str(event.get("hostname", "")), int(event["pid"]))
            tl.stages[stage].starts.append((float(event["timestamp"]) - recording.origin, process))
            tl.stages[stage].process_of[str(event.get("uuid"))] = process
    for obs in tl.stages.values():
        obs.starts.sort()


def _infer_exits(tl: Timeline) -> None:
    """Items whose last task succeeded without a follow-up have left (see the module docstring)."""
    lags = []  # how long after a task's success its follow-up was sent, at most
    for item in tl.items.values():
        for (_, _, k), (t_next, _, _) in zip(item.visits, item.visits[1:], strict=False):
            done = tl.last_finish.get(k)
            if done is not None:
                lags.append(t_next - done[0])
    tl.settle = max(SETTLE_FLOOR, 2 * max(lags, default=0.0))
    for item in tl.items.values():
        if item.end is not None or not item.visits:
            continue
        done = tl.last_finish.get(item.visits[-1][2])
        if done is not None and not done[1] and done[0] < tl.horizon - tl.settle:
            item.end, item.end_time = "inferred-exit", done[0]
            tl.inferred_exits += 1
