"""The model's one kind of scheduled event (its own file so that :mod:`.hosts` can use it)."""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappush
from typing import Any

import simpy
from simpy.events import NORMAL, Event


class Wakeup(Event):
    """A timeout created with its one callback: the cheapest event SimPy can process.

    It is SimPy's own ``Timeout.__init__`` (an ``Event`` subclass that schedules itself) minus
    the separate ``callbacks.append`` call, with ``Environment.schedule`` inlined: the same
    ``(time, priority, event id)`` heap entry, so it orders exactly as a ``Timeout`` would
    (tests/test_mechanics.py checks this). It runs once per item per stage, and the two saved
    calls are 7% of the simulator's speed. It touches SimPy's ``_queue`` and ``_eid``, which is
    why pyproject.toml pins simpy below 5."""

    def __init__(self, env: simpy.Environment, delay: float, value: Any, callback: Callable[[Any], None]):
        self.env = env
        self.callbacks = [callback]
        self._value = value
        self._ok = True
        heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), self))

    def rearm(self, delay: float, value: Any) -> None:
        """Schedule this event again, ``delay`` from now, with a new value and the same callback.

        Only :meth:`Simulation.run` processes Wakeups, and it leaves their callbacks in place,
        so a processed Wakeup can be scheduled again; it then orders as a new Timeout would."""
        env = self.env
        self._value = value
        heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), self))
