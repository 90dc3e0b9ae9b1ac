"""The ETL app: five Celery tasks, each routed to a queue of its own, each sending the item on
from inside itself, so that Celery's ``root_id`` names the item through all its visits (and
``parent_id`` the visit before)::

    uploads -> etl.parse -> etl.validate -> etl.aggregate -> etl.write
                                  \\-> etl.repair -/        (when the batch's quality is low)

Run a worker per queue (see README.md)::

    ETL_BROKER_URL=redis://127.0.0.1:6379/0 celery -A examples.etl_app.app worker -Q parse -n parse@%h -c 2 -E

Configuration comes from the environment, read when the app is made: ``ETL_BROKER_URL``
(default ``redis://127.0.0.1:6379/0``), ``ETL_OUTPUT_DIR`` (where write stores each item;
default ``./etl_output``), ``ETL_QUALITY_THRESHOLD`` (the bad share above which a batch goes
through repair; default 0.05) and ``ETL_VISIBILITY_TIMEOUT`` (seconds; see :func:`config`).

No item is lost to a killed worker: a task is acknowledged only after it ran (``acks_late``);
if the pool process running it dies, the worker rejects it back to its queue
(``reject_on_worker_lost``); if the whole worker dies, Redis hands its unacknowledged messages
out again after the visibility timeout. The price is at-least-once: a visit may run twice, and
its successor be sent twice; write is idempotent (the same bytes to the same files, atomically),
so a duplicate only costs work.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, Task
from kombu import Queue

from . import steps

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_OUTPUT = "etl_output"
DEFAULT_VISIBILITY_TIMEOUT = 60.0
"""Seconds: far longer than any visit of this app (tens of milliseconds), short enough that a
dead worker's items are back on their queues within about a minute and a quarter."""

ROUTES = {
    "etl.parse": "parse",
    "etl.validate": "validate",
    "etl.repair": "repair",
    "etl.aggregate": "aggregate",
    "etl.write": "write",
}
"""Each task's queue: one queue, one worker pool, one stage."""


def config(broker_url: str, visibility_timeout: float) -> dict[str, Any]:
    """The app's Celery settings (why each one: in the comments)."""
    if not visibility_timeout > 0:
        raise ValueError(f"ETL_VISIBILITY_TIMEOUT is {visibility_timeout}; expected seconds > 0")
    return {
        "broker_url": broker_url,
        "task_queues": [Queue(queue) for queue in ROUTES.values()],
        "task_routes": {name: {"queue": queue} for name, queue in ROUTES.items()},
        "task_default_queue": "parse",
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,  # the output is the files; no result backend
        "result_backend": None,
        # At-least-once: acknowledged after the task ran; a pool process killed mid-task has
        # its message rejected back to the queue.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One message reserved per pool process: what waits stays in the Redis list (visible,
        # and taken by whichever process frees first); a killed worker holds little.
        "worker_prefetch_multiplier": 1,
        # Events, for Flower, adaptflow and the like: task-sent (queue times) and the workers'.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # A whole worker that died acks nothing: its messages wait in Redis's "unacked" set until
        # a worker's restore sweep (every quarter timeout here, not kombu's ~100 s) finds them
        # older than the visibility timeout (kombu's default: one hour) and requeues them.
        "broker_transport_options": {
            "visibility_timeout": float(visibility_timeout),
            "unacked_restore_interval": max(1, min(10, int(visibility_timeout // 4))),
        },
    }


def make_app(
    broker_url: str | None = None,
    output_dir: str | None = None,
    threshold: float | None = None,
    visibility_timeout: float | None = None,
) -> Celery:
    """The app with its tasks; an argument left out is read from the environment (see the
    module docstring). Workers and producers build the same app."""
    env = os.environ
    broker_url = broker_url or env.get("ETL_BROKER_URL", DEFAULT_BROKER)
    output_dir = output_dir or env.get("ETL_OUTPUT_DIR", DEFAULT_OUTPUT)
    if threshold is None:
        threshold = float(env.get("ETL_QUALITY_THRESHOLD", steps.QUALITY_THRESHOLD))
    if not 0 <= threshold <= 1:
        raise ValueError(f"ETL_QUALITY_THRESHOLD is {threshold}; expected a share in [0, 1]")
    if visibility_timeout is None:
        visibility_timeout = float(env.get("ETL_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT))
    app = Celery("etl", set_as_current=False)
    app.conf.update(config(broker_url, visibility_timeout))
    _register(app, output_dir, threshold)
    return app


def _visited(doc: steps.Doc, stage: str) -> steps.Doc:
    """The document with ``stage`` appended to its trail (the output shows the path taken)."""
    return doc | {"trail": [*doc.get("trail", []), stage]}


def _register(app: Celery, output_dir: str, threshold: float) -> None:
    """The five tasks, each sending the item on to the next (defined in reverse order, so that
    each task's successor exists when it is defined)."""
    # shared=False: these tasks belong to this app only (Celery would otherwise add them to every
    # app made later in the process, where make_app's next call registers its own).
    late = {"bind": True, "acks_late": True, "reject_on_worker_lost": True, "shared": False}

    # A full disk or a lost mount is worth a few tries before the item is given up.
    @app.task(name="etl.write", autoretry_for=(OSError,), retry_backoff=True, max_retries=5, **late)
    def write(self: Task, doc: steps.Doc) -> str:
        return str(steps.write_step(_visited(doc, "write"), output_dir))

    @app.task(name="etl.aggregate", **late)
    def aggregate(self: Task, doc: steps.Doc) -> None:
        write.apply_async((steps.aggregate_step(_visited(doc, "aggregate")),))

    @app.task(name="etl.repair", **late)
    def repair(self: Task, doc: steps.Doc) -> None:
        aggregate.apply_async((steps.repair_step(_visited(doc, "repair")),))

    @app.task(name="etl.validate", **late)
    def validate(self: Task, doc: steps.Doc) -> None:
        doc = steps.validate_step(_visited(doc, "validate"), threshold)
        (repair if doc["needs_repair"] else aggregate).apply_async((doc,))

    @app.task(name="etl.parse", **late)
    def parse(self: Task, upload: steps.Doc) -> None:
        """An upload arrives: the root task of its item (``root_id`` is this task's id)."""
        doc = steps.parse_step(_visited(upload, "parse"))
        validate.apply_async((doc | {"root_id": self.request.root_id or self.request.id},))


app = make_app()
"""The app of ``celery -A examples.etl_app.app``, configured from the environment."""
