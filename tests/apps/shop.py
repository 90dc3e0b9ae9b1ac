"""A user's Celery app, as adaptflow meets it: three tasks on three queues, each sending the next
(so Celery links an order's visits by ``root_id``), events enabled by configuration only. Its
service times come in the payload, so a test knows what it should measure."""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery("shop", broker=os.environ.get("SHOP_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_routes={
        "shop.ingest": {"queue": "ingest"},
        "shop.enrich": {"queue": "enrich"},
        "shop.store": {"queue": "store"},
    },
    worker_send_task_events=True,
    task_send_sent_event=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)


if os.environ.get("SHOP_RETIRED_LINGER"):
    # A pool process that outlives its retirement, as one does whose SIGTERM Python swallowed
    # (billiard's handler raised SystemExit inside a weakref callback: "Exception ignored").
    import signal

    from celery.signals import worker_process_init

    @worker_process_init.connect
    def _ignore_sigterm(**_: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


@app.task(name="shop.ingest")
def ingest(order: dict) -> None:
    time.sleep(order["work"][0])
    enrich.apply_async((order,))


@app.task(name="shop.enrich")
def enrich(order: dict) -> None:
    time.sleep(order["work"][1])
    store.apply_async((order,))


@app.task(name="shop.store")
def store(order: dict) -> None:
    time.sleep(order["work"][2])
