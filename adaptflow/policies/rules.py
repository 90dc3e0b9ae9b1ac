"""Rule-based planners that production systems actually use, implemented faithfully so that a
learned planner is compared with the real thing, not a strawman.

* :class:`ThresholdPlanner`: the Kubernetes Horizontal Pod Autoscaler rule.
* :class:`CeleryAutoscalePlanner`: the rule of Celery's built-in worker autoscaler.
* :class:`QualityThresholdPlanner`: reroute to the thorough validation path while the detected
  bad-item rate is high.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

from adaptflow.agents import Insights, MetricsSnapshot, Plan, Planner


class ThresholdPlanner(Planner):
    """Kubernetes HPA (``pkg/controller/podautoscaler``): ``desired = ceil(current x metric /
    target)``, left unchanged while ``|metric / target - 1| <= tolerance`` (0.1). A scale-down
    takes the highest recommendation of the last ``stabilization_window`` seconds (300 s in
    Kubernetes), so a brief dip does not shed workers; a scale-up is applied at once.

    ``metric``: ``"utilization"`` (busy / ready worker time in the last interval, like CPU
    utilization), ``"queue_per_worker"`` (items waiting or in service per worker), or
    ``"queue_length"`` (items waiting, not those in service, per worker: KEDA's Redis list scaler,
    an ``AverageValue`` external metric, so ``desired = ceil(queue length / target)``; registered
    as the ``keda`` planner)."""

    def __init__(
        self,
        target: float = 0.7,
        metric: Literal["utilization", "queue_per_worker", "queue_length"] = "utilization",
        tolerance: float = 0.1,
        stabilization_window: float = 300.0,
        stages: list[str] | None = None,
    ):
        if not target > 0:
            raise ValueError(f"target must be > 0, got {target}")
        if metric not in ("utilization", "queue_per_worker", "queue_length"):
            raise ValueError(f"metric {metric!r}; expected 'utilization', 'queue_per_worker' or 'queue_length'")
        self.target, self.metric, self.tolerance = target, metric, tolerance
        self.window, self.stages = stabilization_window, stages
        self.reset()

    def reset(self) -> None:
        self._recommendations: dict[str, deque[tuple[float, int]]] = {}

    def desired(self, current: int, value: float) -> int:
        """The HPA formula for one stage."""
        if current == 0:
            return 1 if value > 0 else 0
        ratio = value / self.target
        if abs(ratio - 1.0) <= self.tolerance:
            return current
        return math.ceil(current * ratio)

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        workers = {}
        for name, st in snapshot.stages.items():
            if self.stages is not None and name not in self.stages:
                continue
            current = st.target
            if self.metric == "utilization":
                value = 0.0 if math.isnan(st.utilization) else st.utilization
            elif self.metric == "queue_per_worker":
                value = (st.queue_length + st.busy) / max(current, 1)
            else:
                value = st.queue_length / max(current, 1)
            recommendation = self.desired(current, value)
            history = self._recommendations.setdefault(name, deque())
            history.append((snapshot.time, recommendation))
            while history and history[0][0] < snapshot.time - self.window:
                history.popleft()
            if recommendation < current:  # scale down only to the window's highest recommendation
                recommendation = min(current, max(r for _, r in history))
            workers[name] = recommendation
        return Plan(workers=workers)


class CeleryAutoscalePlanner(Planner):
    """Celery's ``celery.worker.autoscale.Autoscaler._maybe_scale``: with ``qty`` the tasks the
    worker has reserved (running plus prefetched, at most ``prefetch_multiplier`` per process),
    grow at once to ``min(qty, max)``; shrink to ``max(qty, min)``, but only once more than
    ``keepalive`` seconds (30 s in Celery) have passed since the last scale-up, and never before
    a first one. Bounds are the scenario's stage bounds, applied by the executor."""

    def __init__(self, keepalive: float = 30.0, prefetch_multiplier: int = 4, stages: list[str] | None = None):
        if keepalive <= 0:
            raise ValueError(f"keepalive must be > 0 seconds (Celery refuses 0), got {keepalive}")
        self.keepalive, self.prefetch, self.stages = keepalive, prefetch_multiplier, stages
        self.reset()

    def reset(self) -> None:
        self._last_scale_up: dict[str, float] = {}

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        workers = {}
        for name, st in snapshot.stages.items():
            if self.stages is not None and name not in self.stages:
                continue
            procs = st.target
            qty = min(st.queue_length + st.busy, self.prefetch * max(procs, 1))
            if qty > procs:
                workers[name] = qty  # the executor clamps to max
                self._last_scale_up[name] = snapshot.time
            elif qty < procs:
                last = self._last_scale_up.get(name)
                if last is not None and snapshot.time - last > self.keepalive:
                    workers[name] = qty  # clamped to min by the executor
        return Plan(workers=workers)


class QualityThresholdPlanner(Planner):
    """Send ``share`` of the items of a controllable split to its second (thorough) branch
    while the analyzer's estimated bad-item rate is above ``high``, and back to the first
    branch once it falls below ``low`` (hysteresis, so noise does not flap the route)."""

    def __init__(
        self,
        split: str,
        targets: tuple[str | None, str | None],
        high: float = 0.08,
        low: float = 0.04,
        share: float = 1.0,
        smoothing: float = 0.3,
    ):
        if not 0 <= low <= high <= 1:
            raise ValueError(f"expected 0 <= low <= high <= 1, got low={low}, high={high}")
        if not 0 <= share <= 1:
            raise ValueError(f"share must be in [0, 1], got {share}")
        self.split, self.targets = split, targets
        self.high, self.low, self.share, self.smoothing = high, low, share, smoothing
        self.reset()

    def reset(self) -> None:
        self.thorough = False
        self.level = math.nan

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        x = insights.bad_rate
        if not math.isnan(x):
            self.level = x if math.isnan(self.level) else self.smoothing * x + (1 - self.smoothing) * self.level
        if not math.isnan(self.level):
            if not self.thorough and self.level > self.high:
                self.thorough = True
            elif self.thorough and self.level < self.low:
                self.thorough = False
        p = self.share if self.thorough else 0.0
        first, second = self.targets
        return Plan(splits={self.split: {first: 1.0 - p, second: p}})


class CombinedPlanner(Planner):
    """Workers from one planner, splits from another (e.g. HPA + the quality rule)."""

    def __init__(self, workers: Planner, splits: Planner):
        self.workers, self.splits = workers, splits

    def reset(self) -> None:
        self.workers.reset()
        self.splits.reset()

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        w = self.workers.plan(snapshot, insights)
        s = self.splits.plan(snapshot, insights)
        return Plan(workers=w.workers, splits=s.splits)
