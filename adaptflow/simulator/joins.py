"""Fork and join in the model: an item's parts, and the buffer where they meet.

A fan-out route (:class:`~adaptflow.scenario.routing.Fork` or ``Scatter``) says which stages an
item's parts start at; :class:`Forker` makes the parts and sends them. Each part is an ordinary
``Item`` whose ``family`` points at its :class:`Family`, so the stages serve, fail, retry and
route it as any other item, and no stage's hot path pays for joins. A part's way ends at its
family's :class:`JoinPoint` (in front of the join stage, or at the exit for ``join: null``):
there it waits until the family's last part arrives, then the item itself (the parent, parked
meanwhile) goes on, once.

The item counts as a whole, as the issue asks: only the parent is in the deadline scan and
end-to-end counts, so it is late, dropped or escaped once. A dropped or given-up part kills its
family (:meth:`Family.kill`): the parent is dropped or failed at once, and the family's other
parts, still in flight as a chord's header tasks would be, are discarded at the join.

A join's books follow the queue's (see ``StageState.queue_area``): the area under the number
of parts waiting is the finished waits plus ``waiting * now - sum(enter times)``, so Little's
law can be checked at the buffer (tests/test_theory_dag.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from adaptflow.scenario.routing import Draw, Fork, Scatter, Target

if TYPE_CHECKING:
    from .model import Item, Simulation


class JoinCounters(NamedTuple):
    """One join's cumulative counters since t=0, and its state now."""

    parts: int  # parts that reached the join (of live and of killed families)
    released: int  # part waits finished (their family completed or was killed)
    joined: int  # items that went on after their last part arrived
    wait_sum: float  # sum of the finished part waits
    delay_sum: float  # sum over joined items of (last part's arrival - first part's arrival)
    area: float  # integral of the parts waiting over time
    waiting: int  # parts waiting now


class Family:
    """The parts of one item in flight: how many have not reached the join yet, and the parts
    waiting there (their count and the sum of their arrival times)."""

    __slots__ = ("dead", "enter_sum", "first", "flagged", "item", "point", "remaining", "waiting")

    def __init__(self, item: Item, point: JoinPoint, parts: int):
        self.item, self.point, self.remaining = item, point, parts
        self.waiting, self.enter_sum, self.first = 0, 0.0, 0.0
        self.flagged = False  # a validation stage flagged one of the parts
        self.dead = False  # a part was dropped or given up: the item is gone

    def kill(self, now: float, dropped: bool) -> None:
        """A part was dropped (or given up): end the waits of the parts at the join, and let
        the parent leave the same way (which kills its own family if it is a part too)."""
        if self.dead:
            return
        self.dead = True
        self.point.release_waiting(self, now)
        self.point.sim._lost(self.item, now, dropped)


class JoinPoint:
    """The buffer in front of a join stage (or the exit): parts wait here for their family."""

    def __init__(self, sim: Simulation, name: Target):
        self.sim, self.name = sim, name
        self.go_on: Callable[[Item], None] = sim._exit  # the join stage's enter, or the exit; set by Simulation
        self.parts = self.released = self.joined = self.waiting = 0
        self.wait_sum = self.delay_sum = self.enter_sum = 0.0

    def arrive(self, part: Item) -> None:
        """A part's way ended here: wait for the family, or complete it and let the item go on."""
        family: Family = part.family  # type: ignore[assignment]
        now = self.sim._env._now
        self.parts += 1
        family.remaining -= 1
        if family.dead:  # its item is gone already: the part is discarded as it arrives
            self.released += 1
            return
        family.flagged = family.flagged or part.flagged
        if family.remaining:
            if not family.waiting:
                family.first = now
            family.waiting += 1
            family.enter_sum += now
            self.waiting += 1
            self.enter_sum += now
            return
        self.released += 1  # the last part, which waited 0
        self.joined += 1
        self.delay_sum += now - (family.first if family.waiting else now)
        self.release_waiting(family, now)
        item = family.item
        item.flagged = item.flagged or family.flagged
        self.go_on(item)

    def release_waiting(self, family: Family, now: float) -> None:
        """End the waits of ``family``'s parts waiting here."""
        self.released += family.waiting
        self.wait_sum += family.waiting * now - family.enter_sum
        self.waiting -= family.waiting
        self.enter_sum -= family.enter_sum
        family.waiting, family.enter_sum = 0, 0.0

    def enter_or_wait(self, stage_enter: Callable[[Item], None]) -> Callable[[Item], None]:
        """The delivery into this join's stage: a part of a family joining here waits in the
        buffer, anything else (an item, a part of another family) enters the stage as usual."""

        def deliver(item: Item) -> None:
            family = item.family
            if family is not None and family.point is self:
                self.arrive(item)
            else:
                stage_enter(item)

        return deliver

    def counters(self, now: float) -> JoinCounters:
        area = self.wait_sum + self.waiting * now - self.enter_sum
        return JoinCounters(self.parts, self.released, self.joined, self.wait_sum, self.delay_sum, area, self.waiting)


class Forker:
    """A fan-out's delivery: one part per target the route names, sent at once."""

    def __init__(
        self,
        route: Fork | Scatter,
        deliver: dict[Target, Callable[[Item], None]],
        point: JoinPoint,
        uniform: Draw,
        new_item: Callable[..., Item],
    ):
        self.part_targets, self.deliver, self.point = route.part_targets, deliver, point
        self.uniform, self.new_item = uniform, new_item

    def __call__(self, item: Item) -> None:
        targets = self.part_targets(self.uniform)
        family = Family(item, self.point, len(targets))
        deliver, new_item = self.deliver, self.new_item
        for target in targets:
            part = new_item(item.source, item.created, item.size, item.bad, item.sla, item.klass)
            part.family = family
            deliver[target](part)
            if family.dead:  # a part was dropped at once: the item is gone, send no more
                return
