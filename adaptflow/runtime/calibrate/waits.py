"""Where a stage's waits went: the broker's part and the worker's.

Celery stamps three moments of a task before it runs: ``task-sent`` (its publisher sent the
message), ``task-received`` (a worker's main process took it off the broker) and
``task-started`` (a pool process began it). The wait the calibration fits (sent to started) is
the sum of two parts that different things make: **sent to received**, the time the message
sat in the broker's queue (or in transit), and **received to started**, the time the worker
held it: decoding it, handing it to a pool process and, with a prefetch larger than the free
processes, waiting for one. With ``acks_late`` and a prefetch of one (the example app) a worker
takes a message only for a free slot, so the first part is the queue and the second the
worker's own hand-over.

Why it is reported: the two parts grow with different things, and a scenario's dispatch delay
and queue mean one each; only the split says whether the messages queued longer or the workers
handed them over more slowly. On the example app, a run at 10 processes whose downstream waits
doubled against one at 5 had both: the hand-overs 1.7-2.6 times as long, with services twice as
long, in a slow minute of a shared VM (docs/sim_to_real.md).
A recording without ``task-received`` events (a worker that does not send them) has no split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .recording import Recording

PARTS = ("broker", "worker")
"""The two parts of a wait, in order: sent to received, received to started."""


def wait_split(recording: Recording) -> dict[str, dict[str, Any]]:
    """Each mapped stage's attempts that were sent, received and started: how many
    (``attempts``), and each part's mean and 95th percentile in seconds (``broker_mean``,
    ``broker_p95``, ``worker_mean``, ``worker_p95``). A retry is an attempt of its own (sent
    again, received again); a redelivery (received again, not sent again) is left out. Stages
    with no such attempt are left out.

    Why the events are paired per task and not read in time order: Celery stamps ``task-sent``
    after the publish returns (``celery/app/amqp.py``), so an idle worker can receive, and even
    start, a task before its publisher stamps it sent."""
    parts: dict[str, list[tuple[float, float]]] = {}
    for task in _tasks(recording).values():
        stage = recording.mapping.stage_of(task["queue"], task["name"], task["hostname"])
        if stage is None:
            continue
        for sent, received, started in _attempts(task["task-sent"], task["task-received"], task["task-started"]):
            parts.setdefault(stage, []).append((received - sent, started - received))
    return {stage: _summary(np.asarray(parts[stage])) for stage in recording.mapping.stages if stage in parts}


def _tasks(recording: Recording) -> dict[str, dict[str, Any]]:
    """Each sent task id's sent, received and started times (sorted), and where its first
    ``task-sent`` placed it (queue, name, hostname), as the translator places a task."""
    kinds = ("task-sent", "task-received", "task-started")
    tasks: dict[str, dict[str, Any]] = {}
    blank = {"queue": None, "name": "", "hostname": None}
    for event in recording.events:  # the reader has checked each timestamp: a finite number
        if event.get("type") not in kinds or not event.get("uuid"):
            continue
        task = tasks.setdefault(event["uuid"], {kind: [] for kind in kinds} | blank)
        if event["type"] == "task-sent" and not task["task-sent"]:
            queue = event.get("queue") or event.get("routing_key")
            task |= {"queue": queue, "name": event.get("name") or "", "hostname": event.get("hostname")}
        task[event["type"]].append(float(event["timestamp"]))
    sent = {uuid: task for uuid, task in tasks.items() if task["task-sent"]}
    return {uuid: task | {kind: sorted(task[kind]) for kind in kinds} for uuid, task in sent.items()}


def _attempts(sent: list[float], received: list[float], started: list[float]) -> list[tuple[float, float, float]]:
    """One task's attempts as (sent, received, started), each list sorted. Each start pairs with
    the latest receipt at or before it (one worker's clock) not paired yet. A receipt pairs with
    the sent of the same rank when the task was sent as often as received (a retry is sent and
    received again, each in turn), else with the latest unpaired sent at or before it (a
    recording begun mid-task, a redelivery: nothing is invented)."""
    sent_of: dict[int, float] = {}  # receipt's rank -> its sent
    if len(sent) == len(received):
        sent_of = dict(enumerate(sent))
    else:
        free = list(sent)
        for rank, r in enumerate(received):
            earlier = [s for s in free if s <= r]
            if earlier:
                sent_of[rank] = free.pop(free.index(earlier[-1]))
    attempts, paired = [], set()
    for t in started:
        ranks = [rank for rank, r in enumerate(received) if r <= t and rank not in paired]
        if ranks:
            paired.add(ranks[-1])
            if ranks[-1] in sent_of:
                attempts.append((sent_of[ranks[-1]], received[ranks[-1]], t))
    return attempts


def _summary(pairs: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"attempts": len(pairs)}
    for column, part in enumerate(PARTS):
        out[f"{part}_mean"] = float(pairs[:, column].mean())
        out[f"{part}_p95"] = float(np.percentile(pairs[:, column], 95))
    return out


__all__ = ["PARTS", "wait_split"]
