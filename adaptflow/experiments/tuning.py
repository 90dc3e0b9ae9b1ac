"""Grid search of a baseline's parameters on training seeds, so that a learned planner is
compared with the best-tuned rule, not a strawman: ``adaptflow tune-baseline``."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from adaptflow.agents import CostWeights
from adaptflow.policies.registry import PLANNERS, make_planner, parse_planner, parse_value
from adaptflow.scenario import Scenario, load_scenario

from .evaluation import check_disjoint, evaluate, evaluation_seeds
from .io import atomic_write, atomic_write_text


def training_seeds(n: int) -> list[int]:
    """Seeds 0..n-1: below the evaluation range by construction."""
    if n < 1:
        raise ValueError(f"need at least 1 training seed, got {n}")
    return list(range(n))


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["target=0.5,0.6", "metric=utilization"]`` -> ``{"target": [0.5, 0.6], "metric": [...]}``."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, eq, values = item.partition("=")
        if not eq or not key:
            raise ValueError(f"grid entry {item!r} is not key=v1,v2,...")
        parsed = [parse_value(v) for v in values.split(",") if v != ""]
        if not parsed:
            raise ValueError(f"grid entry {item!r} has no values")
        if key in grid:
            raise ValueError(f"grid names {key!r} twice")
        grid[key] = parsed
    return grid


@dataclass
class Tuning:
    table: pd.DataFrame  # one row per parameter combination, best first
    best: str  # the best combination as a planner spec
    out_dir: Path | None
    skipped: dict[str, str] = field(default_factory=dict)  # combinations the planner rejects: spec -> why


def grid_specs(planner: str, grid: dict[str, list[Any]]) -> list[str]:
    """Every combination of ``grid`` as a planner spec, each parsed (so a bad name fails now)."""
    keys = list(grid)
    specs = [
        f"{planner}:" + ",".join(f"{k}={v}" for k, v in zip(keys, combo, strict=True))
        for combo in itertools.product(*(grid[k] for k in keys))
    ]
    for spec in specs:
        parse_planner(spec)
    return specs


def tune_baseline(
    scenario: str | Path | Scenario,
    planner: str,
    grid: dict[str, list[Any]],
    seeds: int = 5,
    interval: float = 30.0,
    weights: CostWeights | dict | None = None,
    out_dir: str | Path | None = None,
    processes: int | None = None,
    progress: bool = False,
    part: str = "train",
) -> Tuning:
    """Evaluate every combination of ``grid`` for ``planner`` on ``seeds`` training seeds and
    return them ranked by mean cost. Every name and value is checked before any episode runs.

    A combination the planner rejects (e.g. the quality rule's ``low`` above its ``high``) is
    skipped and reported in ``skipped`` (and best.json), so that a grid may cross such values;
    if the planner rejects every combination, that is an error."""
    # A rule is tuned on the training part of a series (its windows), as a learned planner is
    # trained there: evaluation then compares both on the test part neither has seen.
    if planner not in PLANNERS:
        raise ValueError(f"unknown planner {planner!r}; tunable planners: {', '.join(PLANNERS)}")
    if not grid:
        raise ValueError("empty grid: give at least one key=v1,v2 entry")
    specs = grid_specs(planner, grid)
    spec_scenario = load_scenario(scenario)
    skipped: dict[str, str] = {}
    for spec in specs:
        try:
            make_planner(spec, spec_scenario, interval)
        except ValueError as exc:
            skipped[spec] = str(exc)
    if len(skipped) == len(specs):
        raise ValueError(next(iter(skipped.values())))
    specs = [s for s in specs if s not in skipped]
    train = training_seeds(seeds)
    check_disjoint(train, evaluation_seeds(1))
    result = evaluate(
        spec_scenario,
        specs,
        seeds=train,
        interval=interval,
        weights=weights,
        processes=processes,
        progress=progress,
        part=part,
    )
    table = result.summary.sort_values("cost_mean").reset_index(drop=True)
    best = str(table.planner.iloc[0])
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        atomic_write(out / "tuning.csv", lambda tmp: table.to_csv(tmp, index=False))
        atomic_write(out / "episodes.csv", lambda tmp: result.table.to_csv(tmp, index=False))
        atomic_write_text(
            out / "best.json",
            json.dumps({"planner": best, "grid": grid, "training_seeds": train, "part": part, "skipped": skipped}),
        )
    return Tuning(table, best, out, skipped)
