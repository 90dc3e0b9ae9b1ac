"""Evaluate a planner on a scenario: one episode through the Coordinator, summarized.

Every planner, from a rule to a trained model, is evaluated by the same loop that runs it live
(the Coordinator), with the same cost model that trains the RL planners."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from adaptflow.agents import (
    ControlLoop,
    Coordinator,
    CostModel,
    CostWeights,
    EventLog,
    Planner,
    SimClock,
    SimExecutor,
    SimMonitor,
    StandardAnalyzer,
)
from adaptflow.simulator import Scenario, Simulation, load_scenario


def run_episode(
    scenario: str | Path | Scenario,
    planner: Planner,
    seed: int,
    interval: float = 30.0,
    weights: CostWeights | dict | None = None,
    forecaster: str = "ewma",
    log_path: str | Path | None = None,
) -> dict[str, Any]:
    """One episode of ``planner`` on ``scenario`` with ``seed``; returns the episode's metrics:
    cost (total and by component), SLA violation rate, p95 latency, drops, escapes, reward."""
    spec = load_scenario(scenario)
    sim = Simulation(spec, rng=np.random.default_rng(seed))
    analyzer = StandardAnalyzer.for_scenario(spec, interval, forecaster=forecaster)
    cost_model = CostModel(weights)
    loop = ControlLoop(SimMonitor(sim), analyzer, SimExecutor(sim), SimClock(sim), cost_model, interval)
    log = EventLog(log_path) if log_path is not None else None
    try:
        transitions = Coordinator(loop, planner, log).run(until=spec.horizon)
    finally:
        if log is not None:
            log.close()
    summary = sim.summary()
    e2e = summary["end_to_end"]
    components = {key: sum(t.cost[key] for t in transitions) for key in ("workers", "sla", "drops", "escapes")}
    total = sum(components.values())
    reward_scale = interval * sum(s.workers.max * s.workers.cost_per_second for s in spec.stages.values()) or 1.0
    return {
        "scenario": spec.name,
        "seed": seed,
        "cost": total,
        **{f"cost_{k}": v for k, v in components.items()},
        "sla_violation_rate": e2e["sla_violation_rate"],
        "p95_latency": e2e["p95_latency"],
        "drops": e2e["drops"] + e2e["failed_items"],
        "escapes": e2e["escapes"],
        "completed": e2e["completed"],
        "mean_workers": sum(s["mean_workers"] for s in summary["stages"].values()),
        "reward": -total / reward_scale,
        "decisions": len(transitions),
        "clamps": sum(len(t.applied.clamps) for t in transitions),
        "p95_latency_is_defined": not math.isnan(e2e["p95_latency"]),
    }
