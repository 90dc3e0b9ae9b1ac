"""A worker's hand-off between tasks, read off its task events: the one rule that both
``adaptflow calibrate`` (a stage's ``turnaround``) and ``adaptflow compare-app`` (the hand-off a
live run met) use, so they cannot mean different things by it.

Celery stamps ``task-started`` with the worker node's main process (its event dispatcher's
pid), not with the pool process that runs the task: events tell nodes apart, not the processes
of a node's pool. So a gap is read per node, by matching: in time order, each finish frees a
slot of the node's pool, and each start takes the slot freed longest ago (first in, first out,
as billiard hands the next task to the process that became free first). The gap is the start
less that finish, and it counts only when the task started had been ready (sent, plus the
dispatch delay) by that finish: the node had work waiting, so the time between is the node
refilling its slot (the ack, the next fetch, the hand-off to the process), not idling. A start
with no freed slot before it (a process idle since the run began, or a grown one) matches
nothing. With one process per node this is the gap between consecutive tasks.

The other half of a hand-off is a task's way in: its wait when it met an idle stage
(:func:`idle_waits`), the dispatch delay calibration measures, read here by a rule that needs no
pool size so that a run whose pools the reader does not know can still be read.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Iterable

MIN_GAPS = 20
"""Fewer gaps than this measure no hand-off (taken as 0 by calibration, unknown by a compare)."""

Attempt = tuple[float, float, float, Hashable]
"""One attempt of a stage's task: (enter, start, finish, node)."""


def backlogged_gaps(attempts: Iterable[Attempt], dispatch: float = 0.0) -> list[float]:
    """The hand-off gaps of ``attempts`` (see the module docstring), in no particular order."""
    return [gap for _, gap in timed_gaps(attempts, dispatch)]


def timed_gaps(attempts: Iterable[Attempt], dispatch: float = 0.0) -> list[tuple[float, float]]:
    """:func:`backlogged_gaps` with each gap's finish: ``(finish, gap)`` pairs, so that a caller
    can ask what else the machine was doing when the slot was refilled."""
    by_node: dict[Hashable, list[tuple[float, int, float]]] = {}
    for enter, start, finish, node in attempts:
        moments = by_node.setdefault(node, [])
        moments.append((finish, 0, 0.0))  # a slot freed (sorted before a start at the same time)
        moments.append((start, 1, enter))  # a slot taken by a task ready at ``enter + dispatch``
    gaps = []
    for moments in by_node.values():
        freed: deque[float] = deque()
        for t, kind, enter in sorted(moments):
            if kind == 0:
                freed.append(t)
            elif freed:
                finish = freed.popleft()
                if enter + dispatch <= finish:
                    gaps.append((finish, t - finish))
    return gaps


def mean_handoff(attempts: Iterable[Attempt], dispatch: float = 0.0) -> float | None:
    """The mean of :func:`backlogged_gaps`; None when fewer than :data:`MIN_GAPS` were seen."""
    gaps = backlogged_gaps(attempts, dispatch)
    return mean_of_gaps(sum(gaps), len(gaps))


def mean_of_gaps(total: float, count: int) -> float | None:
    """``count`` backlogged gaps of ``total`` seconds as a hand-off: their mean, or None below
    :data:`MIN_GAPS` (the simulation reads its backlogged turnarounds by the same rule)."""
    return total / count if count >= MIN_GAPS else None


def idle_waits(attempts: Iterable[Attempt], turnaround: float = 0.0) -> list[float]:
    """The waits (enter to start) of the attempts that entered a stage with nothing else of it
    in progress: no other attempt sent and not started, none running, none finished less than
    ``turnaround`` before. Such a wait is the hand-off alone, whatever the stage's pool, so a
    compare can read it without the pools (calibration's idle visits, which know the pool, are
    a superset). In enter order; a wait is never negative."""
    ordered = sorted(attempts, key=lambda a: a[0])
    waits = []
    busy_until = -math.inf  # the latest start, or finish plus turnaround, of the attempts before
    for enter, start, finish, _ in ordered:
        if enter >= busy_until:
            waits.append(max(0.0, start - enter))
        busy_until = max(busy_until, start, finish + turnaround)
    return waits


def mean_idle_wait(attempts: Iterable[Attempt], turnaround: float = 0.0) -> float | None:
    """The mean of :func:`idle_waits`; None below :data:`MIN_GAPS` of them (the simulation reads
    the waits of its visits that met the stage idle by the same rule). The mean, not the
    median calibration writes as the dispatch delay: more processes on a host lengthen these
    waits' tail more than their median (on the example app, 5 to 10 processes: median
    x1.04-1.08, mean x1.09-1.19), and a mean wait is made of the tail too."""
    waits = idle_waits(attempts, turnaround)
    return mean_of_gaps(math.fsum(waits), len(waits))


__all__ = [
    "MIN_GAPS", "Attempt", "backlogged_gaps", "idle_waits", "mean_handoff", "mean_idle_wait", "mean_of_gaps",
    "timed_gaps",
]  # fmt: skip
