"""The live clock: scenario seconds on the wall clock, sped up ``time_scale`` times."""

from __future__ import annotations

import threading
import time

from adaptflow.agents import Clock


class WallClock(Clock):
    """Scenario seconds since the run started, on the wall clock sped up ``time_scale`` times.

    ``advance`` sleeps until the next decision time on a fixed grid (start + k x interval), so
    the time the loop spends observing and planning does not shift later decisions; after a
    stall longer than an interval (an outage) the grid restarts from now."""

    def __init__(self, time_scale: float = 1.0, start: float | None = None):
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.time_scale = time_scale
        self.start = time.time() if start is None else start  # wall time.time(), shared by all processes
        self._target: float | None = None
        self._interrupted = threading.Event()

    def now(self) -> float:
        return (time.time() - self.start) * self.time_scale

    def to_scenario(self, wall: float) -> float:
        return (wall - self.start) * self.time_scale

    def to_wall(self, t: float) -> float:
        return self.start + t / self.time_scale

    def advance(self, seconds: float) -> None:
        now = self.now()
        target = (0.0 if self._target is None else self._target) + seconds
        self._target = max(target, now)
        delay = (self._target - self.now()) / self.time_scale
        if delay > 0:
            self._interrupted.wait(delay)  # a sleep :meth:`interrupt` can cut short

    def interrupt(self) -> None:
        self._interrupted.set()

    @property
    def interrupted(self) -> bool:
        """The loop over this clock is stopping: a wait for the world (a retry) should end too."""
        return self._interrupted.is_set()
