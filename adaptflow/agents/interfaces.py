"""The agent interfaces. The simulator implements Monitor, Executor and Clock now
(:mod:`adaptflow.agents.sim`); a live Celery system implements the same three later. Analyzers
and planners never learn which world they are in."""

from __future__ import annotations

from abc import ABC, abstractmethod

from .types import Applied, Insights, MetricsSnapshot, Plan


class Monitor(ABC):
    """Reads the world: the metrics of the interval since the previous ``observe``."""

    @abstractmethod
    def observe(self) -> MetricsSnapshot: ...


class Analyzer(ABC):
    """Turns a stream of snapshots into insights (rate estimates, forecasts, anomaly flags)."""

    def reset(self) -> None:  # noqa: B027  (optional hook: stateless analyzers need nothing)
        """Forget the past: called at the start of every episode or live run."""

    @abstractmethod
    def analyze(self, snapshot: MetricsSnapshot) -> Insights: ...


class Planner(ABC):
    """Decides what the world should look like for the next interval."""

    #: The rules ask for what their formula says and rely on the executor to clamp it to the
    #: pool's bounds (as Kubernetes' HPA and Celery's autoscaler clamp to their min and max). A
    #: learned planner's decoder never leaves the bounds, so a learned planner that does is
    #: broken: :class:`~adaptflow.runtime.fallback.FallbackPlanner` then replaces its plan.
    relies_on_clamping: bool = True

    def reset(self) -> None:  # noqa: B027  (optional hook: stateless planners need nothing)
        """Forget the past: called at the start of every episode or live run."""

    def held_pools(self, stages: list[str]) -> dict[str, int]:
        """The pools of ``stages`` this planner asks for at every decision whatever it sees
        (a static planner's); empty for one that decides on what it observes. Why: a live
        comparison starts such a planner's run at them (``compare-app``), so that the run is
        held at its pools from its first second, as its simulated twin is."""
        return {}

    @abstractmethod
    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan: ...


class Executor(ABC):
    """Applies a plan within the safety envelope and reports what it actually did."""

    @abstractmethod
    def apply(self, plan: Plan) -> Applied: ...


class Clock(ABC):
    """Time of the world: simulated seconds in simulation, wall-clock seconds live."""

    @abstractmethod
    def now(self) -> float: ...

    @abstractmethod
    def advance(self, seconds: float) -> None:
        """Let the world run for ``seconds`` (simulate them, or wait for them)."""

    def interrupt(self) -> None:  # noqa: B027  (a hook: a simulated clock has no wait to cut short)
        """Cut short an ``advance`` waiting in another thread, and every later one: the loop
        over this clock is stopping. A clock that waits for nothing needs nothing here."""
