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
long, in a slow minute of a shared VM (docs/deploy.md).
A recording without ``task-received`` events (a worker that does not send them) has no split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .recording import Recording

PARTS = ("broker", "worker")
"""The two parts of a wait, in order: sent to received, received to started."""


def wait_split(recording: Recording) -> dict[str, dict[str, Any]]:
    """Each mapped stage's attempts that were sent, received and started (a worker's received
    stamped a moment before its publisher's sent still pairs with it): how many (``attempts``),
    and each part's mean and 95th percentile in seconds (``broker_mean``, ``broker_p95``,
    ``worker_mean``, ``worker_p95``). A retry is an attempt of its own (sent again, received
    again). Stages with no such attempt are left out."""
    parts: dict[str, list[tuple[float, float]]] = {}
    stage_of: dict[str, str | None] = {}  # task id -> its stage, from the message that sent it
    pending: dict[str, dict[str, float]] = {}  # task id -> this attempt's sent and received times
    for event in sorted(_task_events(recording), key=lambda e: float(e["timestamp"])):
        uuid, kind, t = event["uuid"], event["type"], float(event["timestamp"])
        if kind == "task-sent":
            if uuid not in stage_of:
                queue = event.get("queue") or event.get("routing_key")
                stage_of[uuid] = recording.mapping.stage_of(queue, event.get("name") or "", event.get("hostname"))
            early = pending.get(uuid, {})  # a worker's task-received stamped before the publisher's task-sent
            pending[uuid] = {"sent": t} | (
                {"received": early["received"]} if "received" in early and "sent" not in early else {}
            )
        elif kind == "task-received":
            pending.setdefault(uuid, {}).setdefault("received", t)
        elif kind == "task-started":
            attempt, stage = pending.pop(uuid, {}), stage_of.get(uuid)
            if stage is not None and "sent" in attempt and "received" in attempt:
                parts.setdefault(stage, []).append((attempt["received"] - attempt["sent"], t - attempt["received"]))
    return {stage: _summary(np.asarray(parts[stage])) for stage in recording.mapping.stages if stage in parts}


def _task_events(recording: Recording) -> list[dict[str, Any]]:
    """The events that split a wait (their timestamps the reader has checked: finite numbers)."""
    kinds = ("task-sent", "task-received", "task-started")
    return [e for e in recording.events if e.get("type") in kinds and e.get("uuid")]


def _summary(pairs: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"attempts": len(pairs)}
    for column, part in enumerate(PARTS):
        out[f"{part}_mean"] = float(pairs[:, column].mean())
        out[f"{part}_p95"] = float(np.percentile(pairs[:, column], 95))
    return out


__all__ = ["PARTS", "wait_split"]
