"""Celery's event stream, received in a background thread, as Flower receives it: every event
of every worker and publisher of an app, through ``app.events.Receiver`` on its own broker
connection. The monitor and ``adaptflow record`` drain what arrived since their last read.

Celery sends events over the broker's fanout (Redis PUB/SUB): events published while the
receiver is disconnected are gone. The stream therefore never papers over a disconnection: it
reconnects with backoff and records the gap (:class:`Gap`), which the monitor writes into the
event log and the recorder into the recording, so nobody reads invented numbers for it.
The buffer between the thread and its reader is bounded; events beyond it are counted and the
time they cover is a gap too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from celery import Celery

log = logging.getLogger(__name__)

EVENT_FIELDS = (
    "type",
    "uuid",
    "name",
    "queue",
    "routing_key",
    "root_id",
    "parent_id",
    "timestamp",
    "hostname",
    "runtime",
    "retries",
    "pid",
    "exception",
    "active",
    "processed",
    "freq",
)
"""The fields kept of an event (args, kwargs and results are the user's data: never kept)."""

HEARTBEAT_EXPIRY = 3.0
"""Heartbeat periods (each node's own ``freq``) without a word after which a node is gone, as
Celery's ``events.state`` decides (two periods and its allowance for drift)."""
ROSTER_WINDOW = 5.0
"""Seconds the stream must have been connected before it can say which nodes are alive: two
and a half of Celery's default heartbeat periods (2 s), so that every live node was heard."""


@dataclass
class Gap:
    """A time (wall seconds) during which events may have been lost, and why."""

    start: float
    end: float | None
    reason: str


def slim(event: dict[str, Any]) -> dict[str, Any]:
    """The fields of an event that adaptflow reads (see :data:`EVENT_FIELDS`), JSON-safe."""
    out = {k: event[k] for k in EVENT_FIELDS if event.get(k) is not None}
    if "exception" in out:
        out["exception"] = str(out["exception"])[:200]
    return out


class EventStream:
    """Receives an app's events in a daemon thread; :meth:`drain` hands over what arrived.

    ``capacity`` bounds the events held between drains (the rest are dropped, counted in
    ``overflowed`` and recorded as a gap); ``task_only`` keeps only ``task-*`` events and
    worker heartbeats are skipped."""

    def __init__(self, app: Celery, capacity: int = 200_000, task_only: bool = False, retry: float = 1.0):
        self.app, self.capacity, self.task_only, self.retry = app, capacity, task_only, retry
        self._buffer: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._receiver: Any = None
        self._thread: threading.Thread | None = None
        self.gaps: deque[Gap] = deque(maxlen=1000)
        self.overflowed = 0
        self.received = 0
        # the worker nodes heard from: hostname -> (monotonic time last heard, heartbeat period);
        # bounded by the nodes alive, since a node is dropped once it expires (alive_nodes)
        self._nodes: dict[str, tuple[float, float]] = {}
        self._since: float | None = None  # monotonic time the stream last (re)connected

    # -- the thread ------------------------------------------------------------------------------
    def start(self, wait: float = 10.0) -> EventStream:
        """Start receiving; wait up to ``wait`` seconds for the connection (events sent before
        it are not seen, so a caller waits before it starts counting)."""
        self._thread = threading.Thread(target=self._run, name="adaptflow-events", daemon=True)
        self._thread.start()
        if not self._connected.wait(wait):
            raise RuntimeError(f"could not receive the app's events within {wait} s: is the broker reachable?")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._receiver is not None:
            self._receiver.should_stop = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.app.connection_for_read() as connection:
                    self._receiver = receiver = self.app.events.Receiver(connection, handlers={"*": self._on_event})
                    receiver.on_consume_ready = self._on_ready(receiver.on_consume_ready)
                    for _ in receiver.consume(limit=None, timeout=None, wakeup=False):
                        pass  # the handler takes each event; should_stop ends the loop within 1 s
            except Exception as exc:  # any broker failure: reconnect, and say so
                if self._stop.is_set():
                    break
                self._lost(exc)
                self._stop.wait(self.retry)

    def _on_ready(self, ready: Any) -> Any:
        def on_ready(*args: Any, **kwargs: Any) -> None:  # subscribed: from here on nothing is missed
            ready(*args, **kwargs)
            self._connected_now()

        return on_ready

    def _lost(self, exc: Exception) -> None:
        self._connected.clear()
        if not self.gaps or self.gaps[-1].end is not None:
            self.gaps.append(Gap(time.time(), None, f"event stream lost: {type(exc).__name__}: {exc}"))
            log.warning("event stream lost (%s); reconnecting", exc)

    def _connected_now(self) -> None:
        gap = self.gaps[-1] if self.gaps else None
        if gap is not None and gap.end is None and gap.reason.startswith("event stream lost"):
            gap.end = time.time()
            log.warning("event stream back after %.1f s; events of that time are missing", gap.end - gap.start)
        self._since = time.monotonic()
        self._connected.set()

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = str(event.get("type", ""))
        if kind.startswith("worker-"):
            self._heard(kind, event)
        if self.task_only and not kind.startswith("task-"):
            return
        with self._lock:
            if len(self._buffer) >= self.capacity:
                if not self.overflowed:
                    self.gaps.append(Gap(time.time(), None, "event buffer full: events dropped"))
                self.overflowed += 1
                return
            self._buffer.append(slim(event))
            self.received += 1

    def _heard(self, kind: str, event: dict[str, Any]) -> None:
        """A worker's online, heartbeat or offline event: the roster of live nodes follows it."""
        node = event.get("hostname")
        if not node:
            return
        with self._lock:
            if kind == "worker-offline":
                self._nodes.pop(node, None)
            else:
                self._nodes[node] = (time.monotonic(), float(event.get("freq") or 2.0))

    # -- the reader ------------------------------------------------------------------------------
    def alive_nodes(self) -> set[str] | None:
        """The worker nodes alive by their heartbeats (Flower's way of knowing them: free, where
        a broadcast ping waits its whole timeout), or None when the stream cannot tell: not
        connected, or connected for less than :data:`ROSTER_WINDOW` (a node not heard yet may be
        alive). Nodes started with ``--without-heartbeat`` send none: ping those."""
        now = time.monotonic()
        with self._lock:
            if not self._connected.is_set() or self._since is None or now - self._since < ROSTER_WINDOW:
                return None
            for node in [n for n, (seen, freq) in self._nodes.items() if now - seen > freq * HEARTBEAT_EXPIRY]:
                del self._nodes[node]
            return set(self._nodes)

    def drain(self) -> list[dict[str, Any]]:
        """Every event received since the last drain, in arrival order."""
        with self._lock:
            out = list(self._buffer)
            self._buffer.clear()
            if self.overflowed and self.gaps and self.gaps[-1].end is None:
                self.gaps[-1].end = time.time()
            return out

    def gaps_since(self, t: float) -> list[Gap]:
        """The gaps that ended after ``t`` or have not ended."""
        return [g for g in self.gaps if g.end is None or g.end > t]
