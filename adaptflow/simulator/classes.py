"""Job classes in the model: the priority queue of a stage, and the books kept per class.

A scenario's ``classes`` give each job its class when it is created (drawn from a stream of its
own per source, so arrivals and service times do not move). The class decides two things:

* where the job waits at a stage with ``discipline: priority``: :class:`PriorityQueue`, a drop-in
  for the stage's ``deque`` (``append``, ``popleft``, ``len``), one FIFO per priority level,
  served from the lowest number up. Non-preemptive: the stage only asks it for the next job when
  a worker is free, so a job in service is never interrupted.
* its deadline and the price of its lateness (``JobClass.sla``, ``late_weight``): the item
  carries its class's :class:`~adaptflow.scenario.schema.Sla`, and :class:`ClassBook` counts
  arrivals, exits, drops, lateness and latencies per class.

A scenario without classes builds neither: its stages keep a plain ``deque`` and its exit stays
the plain one, so a pipeline pays nothing for classes."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from adaptflow.scenario.schema import Scenario

    from .model import Item


class PriorityQueue:
    """Waiting jobs, one FIFO per priority level; ``popleft`` takes the oldest job of the most
    urgent (lowest-numbered) level that has one."""

    __slots__ = ("_levels", "_n", "_rank")

    def __init__(self, priorities: list[int]):
        """``priorities``: each class's priority number, by class index."""
        order = sorted(set(priorities))
        self._rank = [order.index(p) for p in priorities]  # class index -> level
        self._levels: list[deque[Item]] = [deque() for _ in order]
        self._n = 0

    def append(self, item: Item) -> None:
        self._levels[self._rank[item.klass]].append(item)
        self._n += 1

    def popleft(self) -> Item:
        for level in self._levels:
            if level:
                self._n -= 1
                return level.popleft()
        raise IndexError("pop from an empty PriorityQueue")

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0


class ClassCounters(NamedTuple):
    """One job class's cumulative counters since t=0."""

    arrived: int
    exits: int
    dropped: int
    failed: int
    late: int  # SLA violations (each against its class's own deadline)
    late_units: float  # late x the class's late_weight
    deadlines_passed: int
    n_latencies: int  # length of the class's end-to-end latency list


class ClassBook:
    """Per-class counts and end-to-end latencies, kept beside the model's totals."""

    def __init__(self, scenario: Scenario):
        self.names = list(scenario.classes)
        self.weights = [c.late_weight for c in scenario.classes.values()]
        k = len(self.names)
        self.arrived, self.exits, self.dropped, self.failed, self.late = ([0] * k for _ in range(5))
        self.latencies: list[list[float]] = [[] for _ in range(k)]

    def counters(self, pending: list[deque[Item]]) -> dict[str, ClassCounters]:
        """``pending``: each class's items whose deadline has not been checked yet."""
        return {
            name: ClassCounters(
                self.arrived[k],
                self.exits[k],
                self.dropped[k],
                self.failed[k],
                self.late[k],
                self.late[k] * self.weights[k],
                self.arrived[k] - len(pending[k]),
                len(self.latencies[k]),
            )
            for k, name in enumerate(self.names)
        }
