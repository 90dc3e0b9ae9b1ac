"""The safety envelope every Executor applies, in simulation and live alike: worker bounds, the
largest change per decision, a cooldown between changes, and valid split probabilities. Every
value it changes is reported, so that a planner's intent and the applied action can be told
apart in the event log."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .types import Applied, Plan

if TYPE_CHECKING:
    from adaptflow.scenario import Scenario


@dataclass(frozen=True)
class StageBounds:
    min_workers: int
    max_workers: int


@dataclass
class SafetyEnvelope:
    """``max_step``: the largest change of a stage's worker target in one decision (None: any).
    ``cooldown``: seconds after a change during which the stage's target is held."""

    bounds: dict[str, StageBounds]
    split_targets: dict[str, list[str | None]]
    max_step: int | None = None
    cooldown: float = 0.0
    _last_change: dict[str, float] = field(default_factory=dict)

    def reset(self) -> None:
        self._last_change.clear()

    def constrain(self, plan: Plan, current: dict[str, int], now: float) -> Applied:
        """The plan as it may be applied, given the current targets and the time."""
        clamps: list[str] = []
        workers: dict[str, int] = {}
        for stage, wanted in plan.workers.items():
            b = self.bounds.get(stage)
            if b is None:
                raise KeyError(f"plan names stage {stage!r}; stages: {list(self.bounds)}")
            have = current[stage]
            value = wanted if wanted.__class__ is int else int(wanted)
            if self.cooldown > 0 and value != have and now - self._last_change.get(stage, -math.inf) < self.cooldown:
                clamps.append(f"{stage}: held at {have} (cooldown), wanted {value}")
                value = have
            if self.max_step is not None and abs(value - have) > self.max_step:
                step = self.max_step if value > have else -self.max_step
                clamps.append(f"{stage}: change limited to {step:+d}, wanted {value}")
                value = have + step
            if not b.min_workers <= value <= b.max_workers:
                clamped = min(max(value, b.min_workers), b.max_workers)
                clamps.append(f"{stage}: {value} clamped to {clamped} (bounds [{b.min_workers}, {b.max_workers}])")
                value = clamped
            if value != have:
                self._last_change[stage] = now
            workers[stage] = value
        splits: dict[str, dict[str | None, float]] = {}
        for owner, probs in plan.splits.items():
            if owner not in self.split_targets:
                raise KeyError(f"plan names split {owner!r}; controllable splits: {list(self.split_targets)}")
            targets = self.split_targets[owner]
            if set(probs) != set(targets):
                raise ValueError(f"plan for split {owner!r} has targets {sorted(map(str, probs))}; expected {targets}")
            raw = {t: float(probs[t]) for t in targets}
            fixed = {t: min(max(p, 0.0), 1.0) for t, p in raw.items()}
            total = sum(fixed.values())
            fixed = {t: p / total for t, p in fixed.items()} if total > 0 else {t: 1.0 / len(targets) for t in targets}
            if any(abs(fixed[t] - raw[t]) > 1e-9 for t in targets):
                clamps.append(f"split {owner}: {raw} normalized to {fixed}")
            splits[owner] = fixed
        return Applied(workers=workers, splits=splits, clamps=clamps)

    def constrain_pools(self, plan: Plan, current: dict[str, int], now: float) -> Applied:
        """The plan as it may be applied to a system that routes its own tasks (a user's Celery
        app, or pods KEDA scales): its workers constrained as :meth:`constrain` does, each split
        refused with a clamp saying so, so that the event log never shows a split as applied."""
        applied = self.constrain(Plan(workers=plan.workers), current, now)
        applied.clamps += [f"{owner}: split not applied (a user's app routes its own tasks)" for owner in plan.splits]
        return applied


def envelope_for(scenario: Scenario, max_step: int | None = None, cooldown: float = 0.0) -> SafetyEnvelope:
    """The safety envelope of a scenario: its worker bounds and controllable splits. Here, not on
    the Sim side, because both worlds and the planner service build it."""
    return SafetyEnvelope(
        bounds={n: StageBounds(s.workers.min, s.workers.max) for n, s in scenario.stages.items()},
        split_targets={o: [b.to for b in s.split] for o, s in scenario.controllable_splits().items()},
        max_step=max_step,
        cooldown=cooldown,
    )
