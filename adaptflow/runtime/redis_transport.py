"""kombu's Redis transport with three repairs for a broker outage, so that a live item is lost
neither to the outage nor to the worker it crashes.

**1. A message popped as the broker died is put back.** kombu takes a message off its queue with
``BRPOP`` and only then records it in Redis's unacked set (``QoS.append``, a second round trip).
If the broker dies between the two, the record fails, the message never reaches the task and
exists nowhere: not in the queue (the pop was written to the append-only file), not in the
unacked set. Measured: 1 run in 15 of ``tests/test_live_durability.py``'s Redis kill lost an
item this way, its visit entered and never started. Here a failed record keeps the message in
the worker process, and the first channel that consumes after the reconnection pushes it back
to the head of its queue (marked redelivered). If the record had in fact been written (the
reply was lost, not the command), the visibility sweep returns it too: at least once, as the
rest of the live runtime.

**2. The worker survives a close after its connection is gone.** When the broker goes away,
Celery's consumer first ``collect()`` s the connection, then closes it. ``collect`` closes the
channel, but a channel still waiting on its ``BRPOP`` re-reads the dead socket first, raises, and
stays open; ``collect`` then drops the transport's client. The ``close`` that follows closes the
channel for real, and a closing channel puts its unacknowledged messages back on their queues,
which takes a Redis client built from the one just dropped: ``AttributeError: 'NoneType' object
has no attribute 'hostname'``, which Celery takes for an unrecoverable error: the whole worker
shut down (1 run in 4 to 8 of the same test). Those messages need no rescue then: each is also
in the unacked set, from which a worker's sweep returns it after the visibility timeout (see
:func:`adaptflow.runtime.celery_app.redelivery_options`). So without a client the channel leaves
them there, and says so.

**3. A late acknowledgement after the reconnection does not crash the worker either.** With
``task_acks_late`` a task that ran through the outage acknowledges its message when it ends,
and by then the message's channel may be closed (its connection collected, as above): kombu
builds the ack's Redis client from the closed channel's transport, gets ``None``, and raises
``AttributeError: 'NoneType' object has no attribute 'client'``, outside the connection errors
Celery's ``ack_log_error`` expects, so the worker shut down as "unrecoverable" (measured: 1 run
in 3 of ``tests/test_live.py``'s Redis kill; the worker never came back). Here such an ack or
reject raises a connection error instead, which Celery logs ("Couldn't ack"); the message
stays in the unacked set and returns to its queue after the visibility timeout, where the
repeated visit is recognized (at least once, as everywhere in the live runtime).

Everything else is kombu's own. Use it by naming it in an app's configuration, beside the
``redis://`` broker URL: ``broker_transport = "adaptflow.runtime.redis_transport:Transport"``
(adaptflow's own app does; a user's app can too).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from kombu.transport import redis
from redis.exceptions import ConnectionError as BrokerGone

log = logging.getLogger(__name__)

TRANSPORT = f"{__name__}:Transport"
"""The value of Celery's ``broker_transport`` setting that selects this transport."""

MAX_ORPHANS = 10_000
"""Most popped-and-unrecorded messages a process keeps (a prefetching worker holds a few)."""

# Messages popped whose unacked record failed, as (payload, exchange, routing key). Kept for the
# process, not on a transport or channel: a reconnection builds new ones of both.
_orphans: deque[tuple[Any, str, str]] = deque(maxlen=MAX_ORPHANS)
_orphans_lock = threading.Lock()


class QoS(redis.QoS):
    def ack(self, delivery_tag: str) -> None:
        self._require_connection(delivery_tag, "acknowledged")
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self._require_connection(delivery_tag, "rejected")
        super().reject(delivery_tag, requeue=requeue)

    def _require_connection(self, delivery_tag: str, what: str) -> None:
        """Repair 3: a connection error (which Celery logs) where kombu would raise AttributeError."""
        transport = self.channel.connection
        if transport is None or getattr(transport, "client", None) is None:
            raise BrokerGone(
                f"message {delivery_tag} cannot be {what}: its channel's broker connection is gone; it stays "
                "in the unacked set and returns to its queue after the visibility timeout"
            )

    def append(self, message: Any, delivery_tag: str) -> None:
        try:
            super().append(message, delivery_tag)
        except self.channel.connection_errors:
            delivery = message.delivery_info
            with _orphans_lock:
                _orphans.append((message._raw, delivery["exchange"], delivery["routing_key"]))
            log.warning(
                "broker lost between popping message %s and recording it as unacknowledged: it is kept here and "
                "put back on its queue when the broker is back",
                delivery_tag,
            )
            raise

    def restore_unacked(self, client: Any = None) -> None:
        transport = self.channel.connection
        if client is None and getattr(transport, "client", None) is None:
            if self._delivered:
                log.warning(
                    "broker connection gone while closing: %d unacknowledged message(s) stay in Redis's unacked "
                    "set and return to their queues after the visibility timeout",
                    len(self._delivered),
                )
            self._delivered.clear()
            return
        super().restore_unacked(client)


class Channel(redis.Channel):
    QoS = QoS

    def basic_consume(self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any) -> Any:
        requeue_orphans(self)
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)


class Transport(redis.Transport):
    Channel = Channel


def requeue_orphans(channel: redis.Channel) -> int:
    """Push the process's orphaned messages back to the head of their queues; return how many.
    One that cannot be pushed yet (the broker is still away) stays for the next try."""
    with _orphans_lock:
        pending = list(_orphans)
        _orphans.clear()
    if not pending:  # the usual case: every consumer's start asks
        return 0
    done = 0
    try:
        with channel.conn_or_acquire() as client:
            for payload, exchange, routing_key in pending:
                with client.pipeline() as pipe:
                    # kombu publishes with LPUSH and pops with BRPOP: RPUSH (leftmost False) is the head
                    channel._do_restore_message(payload, exchange, routing_key, pipe, leftmost=False)
                    pipe.execute()
                done += 1
    except channel.connection_errors:
        with _orphans_lock:
            _orphans.extendleft(reversed(pending[done:]))
        raise
    if done:
        log.warning("put %d message(s) popped during a broker outage back on their queues", done)
    return done
