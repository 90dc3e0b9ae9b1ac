"""Retired workers a pool reaps late (``Workers.late_reap``): Celery's prefork pool after a
``pool_shrink``.

Why it is modelled: live, ``pool_shrink`` terminates an idle process at once, but the worker's
fair scheduler keeps the process's pipe among the places it writes tasks to until the pool
reaps the process, and the reap waited for the pool's next maintenance tick (every 5 s) in 44
of 162 shrinks traced on the example app (the others within 0.6 s). A task written to the dead
process waits for that reap, and then runs elsewhere; about 1 shrink in 5.5 held one so
(``CELERY_LATE_REAP`` is that share: not every late window was written to). With ``acks_late`` and a prefetch
multiplier of 1 the shrink has also lowered the worker's reservations to its new pool, so that
task holds the one a free process would use: a stage shrunk to one process started nothing for 3.3 to 4.9 s (diagnosed
with the scheduler's own sets logged, see docs/sim_to_real.md). celery/celery#7266 reports the same
race for Celery's autoscaler.

Here a retirement is late with the scenario's probability; until the first tick
``late_reap_after`` seconds or more later (the process took a second to die) the retired worker
is a place an item can go: an item about to start on one of ``idle`` workers goes there
with the probability of picking it among them (the scheduler cycles through its ready pipes),
at most one item per retired worker (the scheduler then counts that pipe busy). The item then
waits for the tick and holds a ready worker (its reservation) until it starts on it."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .wakeup import Wakeup

if TYPE_CHECKING:
    from .model import Item, StageState


class LateReaps:
    """The retired workers of one stage that its pool has not reaped yet.

    :attr:`open` counts those no item was sent to; the stage asks :meth:`catch` before it starts
    an item on an idle worker (only while ``open``), and moves a caught item and one ready worker
    to its ``held`` count until the reap hands both back (:meth:`StageState.release`)."""

    def __init__(self, stage: StageState, probability: float, uniform: Callable[[], float]):
        self.stage, self.probability, self.uniform = stage, probability, uniform
        self._open_tokens: deque[list[Item | None]] = deque()  # one [item sent there] per open one

    @property
    def open(self) -> int:
        """The retired workers not reaped yet that no item was sent to."""
        return len(self._open_tokens)

    def retire(self, n: int, now: float, next_tick: float) -> None:
        """``n`` idle workers were retired now: each is reaped late with the probability, at
        ``next_tick`` (the stage's first tick after the process died)."""
        for _ in range(n):
            if self.uniform() < self.probability:
                token: list[Item | None] = [None]
                self._open_tokens.append(token)
                Wakeup(self.stage._env, next_tick - now, token, self._reaped)

    def catch(self, item: Item, idle: int) -> bool:
        """Whether ``item``, about to start on one of ``idle`` workers, goes to a retired one
        instead (then it is that one's, until the reap)."""
        still_open = len(self._open_tokens)
        if self.uniform() * (idle + still_open) >= still_open:
            return False
        self._open_tokens.popleft()[0] = item
        return True

    def _reaped(self, event: Wakeup) -> None:
        token = event._value
        if token[0] is None:  # nothing was sent there: it just leaves
            self._open_tokens.remove(token)
        else:
            self.stage.release(token[0])
