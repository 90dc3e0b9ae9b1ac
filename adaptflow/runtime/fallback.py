"""A planner that cannot take the system down: if the primary planner raises, or answers with a
plan the executor could not apply as asked (unknown stage, workers outside the bounds, split
probabilities that are not a distribution, NaN), the configured baseline planner's plan is used
for that decision instead. Live and in the planner service alike.

It composes with the out-of-distribution guard (:class:`~adaptflow.policies.guard.GuardedPlanner`,
which the registry wraps around a learned planner): the guard hands decisions to its rule while
the state is outside what training saw; this class catches what goes wrong anyway. Its
``takeovers`` are the guard's, so that whoever holds the outer planner can count them."""

from __future__ import annotations

import logging
import math
from typing import Any

from adaptflow.agents import Insights, MetricsSnapshot, Plan, Planner
from adaptflow.agents.safety import SafetyEnvelope

log = logging.getLogger(__name__)


def plan_problems(plan: object, envelope: SafetyEnvelope | None, bounds: bool = True) -> list[str]:
    """What is wrong with ``plan`` (empty if nothing): it must be a Plan whose stages and splits
    the envelope knows, with worker targets that are whole numbers (inside their bounds, with
    ``bounds``; else at least not negative) and split shares that are probabilities summing to 1.
    Without an envelope only types and finiteness are checked."""
    if not isinstance(plan, Plan):
        return [f"planner returned {type(plan).__name__}, not a Plan"]
    problems = []
    for stage, n in plan.workers.items():
        if isinstance(n, bool) or not isinstance(n, int | float) or not math.isfinite(n) or n != int(n):
            problems.append(f"workers[{stage!r}] = {n!r} is not a whole number")
            continue
        if n < 0:
            problems.append(f"workers[{stage!r}] = {n} is negative")
        elif envelope is not None:
            b = envelope.bounds.get(stage)
            if b is None:
                problems.append(f"unknown stage {stage!r}")
            elif bounds and not b.min_workers <= n <= b.max_workers:
                problems.append(f"workers[{stage!r}] = {n} outside [{b.min_workers}, {b.max_workers}]")
    for owner, probs in plan.splits.items():
        if envelope is not None:
            targets = envelope.split_targets.get(owner)
            if targets is None:
                problems.append(f"unknown split {owner!r}")
                continue
            if set(probs) != set(targets):
                problems.append(f"split {owner!r} names {sorted(map(str, probs))}, expected {targets}")
                continue
        values = list(probs.values())
        if not all(isinstance(p, int | float) and math.isfinite(p) and 0 <= p <= 1 for p in values):
            problems.append(f"split {owner!r} has shares outside [0, 1]: {probs}")
        elif abs(sum(values) - 1) > 1e-6:
            problems.append(f"split {owner!r} shares sum to {sum(values)}, not 1")
    return problems


class FallbackPlanner(Planner):
    """``primary``'s plan when it is valid, else ``fallback``'s.

    Worker targets outside the bounds count as invalid for a primary that does not rely on the
    executor's clamping (a learned planner); a rule asking for 0 workers at night is clamped to
    the minimum by the executor, as its real counterpart would, and keeps deciding.

    The fallback planner is run on every decision, not only when needed, so that a stateful rule
    (the HPA stabilization window, the quality rule's hysteresis) is warm when it takes over."""

    def __init__(self, primary: Planner, fallback: Planner, envelope: SafetyEnvelope | None = None):
        self.primary, self.fallback, self.envelope = primary, fallback, envelope
        self.decisions = 0
        self.fallbacks = 0
        self.last_reason: str | None = None
        self.used_fallback = False  # for the last decision

    @property
    def takeovers(self) -> int:
        """The guard's takeovers, when the primary is guarded (else 0)."""
        return int(getattr(self.primary, "takeovers", 0))

    def reset(self) -> None:
        self.primary.reset()
        self.fallback.reset()

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        self.decisions += 1
        backup = self.fallback.plan(snapshot, insights)
        try:
            plan = self.primary.plan(snapshot, insights)
            problems = plan_problems(plan, self.envelope, bounds=not self.primary.relies_on_clamping)
        except Exception as exc:  # any failure of the primary is survivable: that is the point
            problems = [f"{type(exc).__name__}: {exc}"]
        if not problems:
            self.used_fallback = False
            return plan
        self.fallbacks += 1
        self.used_fallback = True
        self.last_reason = "; ".join(problems)
        log.warning(
            "planner %s failed (%s); using %s",
            type(self.primary).__name__,
            self.last_reason,
            type(self.fallback).__name__,
        )
        return backup


def live_planner(
    spec: str, scenario: Any, interval: float, fallback: str = "erlang"
) -> tuple[FallbackPlanner, Planner, Any]:
    """The planner a loop on a user's app runs, with no simulator at hand: ``spec`` (a registry
    spec) behind a :class:`FallbackPlanner` with the rule ``fallback`` (which also takes over
    when a learned planner leaves its training range), and the analyzer it needs (the one its
    sidecar carries, or an EWMA one). Returns the guarded planner, the primary and the analyzer.
    A planner whose forecaster must be fitted by simulation (Holt-Winters for a rule) is refused.
    One builder for the KEDA scaler, the planned autoscaler's loop and compare-app.

    ``service:URL``: the planner service at URL decides (:mod:`.service_client`, with the
    analyzer it holds); the loop's own EWMA analyzer serves the fallback rule."""
    from adaptflow.agents.analyzers import StandardAnalyzer
    from adaptflow.agents.safety import envelope_for
    from adaptflow.policies.registry import make_planner

    from .service_client import ServicePlanner, is_service_spec

    backup, _ = make_planner(fallback, scenario, interval)  # a bad fallback spec, before any model or service
    if is_service_spec(spec):
        primary, analyzer = (
            ServicePlanner.from_spec(spec, scenario, interval),
            StandardAnalyzer.for_scenario(scenario, interval),
        )
    else:
        primary, analyzer = _in_process(spec, scenario, interval, fallback)
    return FallbackPlanner(primary, backup, envelope_for(scenario)), primary, analyzer


def _in_process(spec: str, scenario: Any, interval: float, fallback: str) -> tuple[Planner, Any]:
    """A registry spec's planner (guarded by ``fallback`` if learned) and the analyzer it needs."""
    from adaptflow.agents.analyzers import ready_analyzer
    from adaptflow.policies.registry import make_planner

    primary, forecaster = make_planner(spec, scenario, interval, guard_fallback=fallback)
    analyzer = ready_analyzer(primary, scenario, interval, forecaster)
    if analyzer is None:
        raise ValueError(
            f"planner {spec!r} forecasts with {forecaster!r}, which is fitted by simulation, and a loop on a live "
            "app runs none: expected an exported planner (its sidecar carries its fitted analyzer) or a planner "
            "with an EWMA forecaster (e.g. erlang, threshold)"
        )
    return primary, analyzer
