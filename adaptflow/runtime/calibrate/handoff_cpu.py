"""Celery's own work as CPU on a host (``Host.handoff_cpu``), fitted by ``adaptflow fit-growth``.

A recording at one pool size reads how each stage's tasks slow with the load of its own moment
(the CPU share, :mod:`.hosts`); it cannot read what more processes cost the machine beyond their
tasks: the main processes' fetching, handing over and acking, and the broker's side of each
call on the same machine. On the example app on a 2-core VM the services grew x2.9-3.4 from 5
to 15 held processes where sharing the cores among the tasks, at the shares calibrated, grew
them x1.4-1.9; a planner that grew the pools met services 1.3-1.7 times the simulation's.

The runs held at several pool sizes (the ones ``fit-growth`` reads for the turnaround growth)
measure that growth. This module simulates each of them and picks, among

* the CPU shares: as calibrated, or every hosted stage's at 1 (a share below 1 read from a
  recording leans low: the speed at a visit's start is a noisy reading of what it met, and a
  task's calls to a broker on the same machine are that machine's CPU work too), and
* ``handoff_cpu``: 0 to :data:`MAX_WEIGHT` in steps of :data:`STEP`,

the pair whose simulated service growth (each stage's mean service at each held size over its
own at the reference) is nearest the live one, in mean squared log ratio. Each candidate's
services are first rescaled until the simulation at the reference pools serves as the
calibrated scenario does there: the calibration already matched the recording at that size,
so a candidate changes only how services grow with the processes, not what they were.

Simulated on the scenario's own sources: the held runs must see the arrivals the recording saw
(the same producer and rate; docs/deploy.md), since the growth depends on the load.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from adaptflow.scenario import Scenario, parse_scenario

from .validate import MakeSimulation

STEP = 0.25
MAX_WEIGHT = 2.0
SEEDS = (0, 1)
RESCALES = 4  # rescaling rounds: the services at the reference settle within 1 % in 2-3 on the example app
SHARE_CHOICES = ("as calibrated", "all 1")

Pools = dict[str, int]


class HeldRun(Protocol):
    """A live run at held pools (``growth.GrowthRun``): each stage's pool, its measured mean
    service, and the host's processes (the pools' sum)."""

    @property
    def pools(self) -> Pools: ...

    @property
    def services(self) -> dict[str, float]: ...

    @property
    def processes(self) -> int: ...


@dataclass
class CpuFit:
    """The pair chosen, the services' rescaling, and every candidate's error (for the report)."""

    shares: str
    weight: float
    scales: dict[str, float]
    error: float
    errors: dict[tuple[str, float], float] = field(default_factory=dict)
    growth: dict[str, dict[int, tuple[float, float]]] = field(default_factory=dict)  # stage -> procs -> (sim, live)

    def apply(self, data: dict[str, Any], scenario: Scenario, host: str) -> None:
        """Write the fit into ``data``, the scenario's YAML mapping (``scenario``, as loaded)."""
        apply(data, scenario, host, self.shares, self.weight, self.scales)


def fit_handoff_cpu(
    scenario: Scenario, host: str, runs: Sequence[HeldRun], reference: Pools, make: MakeSimulation
) -> CpuFit:
    """The candidate whose service growth over ``runs`` is nearest the live one (module
    docstring). ``reference``: the pools the scenario was calibrated at; at least one of
    ``runs`` must hold them and one another size."""
    stages = [s for s, spec in scenario.stages.items() if spec.host == host]
    base = [r for r in runs if r.pools == reference]
    others = [r for r in runs if r.pools != reference]
    if not base or not others:
        raise ValueError(
            f"runs: no live run held the reference pools {reference} and another size; the growth of services "
            "with the processes cannot be read"
        )
    live = _live_growth(base, others, stages)
    if not live:
        raise ValueError("runs: no stage's service was measured both at the reference pools and at another size")
    target = {s: v for s, v in _services(scenario, reference, make).items() if s in stages}
    fits = []
    for shares in SHARE_CHOICES:
        for weight in np.arange(0.0, MAX_WEIGHT + STEP / 2, STEP):
            scales = _rescale(scenario, host, shares, float(weight), reference, target, make)
            candidate = _candidate(scenario, host, shares, float(weight), scales)
            simulated = {key: _services(candidate, run.pools, make) for key, run in _sizes(others).items()}
            error, growth = _error(live, simulated, target)
            fits.append(CpuFit(shares, float(weight), scales, error, growth=growth))
    best = min(fits, key=lambda f: f.error)
    best.errors = {(f.shares, f.weight): f.error for f in fits}
    return best


def _live_growth(base: list[HeldRun], others: list[HeldRun], stages: list[str]) -> dict[str, dict[int, float]]:
    """Each stage's mean live service at each held size (its processes) over its own at the reference."""
    out: dict[str, dict[int, float]] = {}
    for stage in stages:
        at_ref = _mean([r.services.get(stage, math.nan) for r in base])
        if not math.isfinite(at_ref) or at_ref <= 0:
            continue
        by_size = {}
        for procs, runs in _group(others).items():
            value = _mean([r.services.get(stage, math.nan) for r in runs])
            if math.isfinite(value) and value > 0:
                by_size[procs] = value / at_ref
        if by_size:
            out[stage] = by_size
    return out


def _error(
    live: dict[str, dict[int, float]], simulated: Mapping[int, dict[str, float]], target: dict[str, float]
) -> tuple[float, dict[str, dict[int, tuple[float, float]]]]:
    """Mean squared log ratio of simulated to live growth, and the growths side by side."""
    squares, growth = [], {}
    for stage, by_size in live.items():
        growth[stage] = {}
        for procs, seen in by_size.items():
            sim = simulated[procs].get(stage, math.nan) / target.get(stage, math.nan)
            if math.isfinite(sim) and sim > 0:
                squares.append(math.log(sim / seen) ** 2)
                growth[stage][procs] = (sim, seen)
    return (float(np.mean(squares)) if squares else math.inf), growth


def _rescale(
    scenario: Scenario, host: str, shares: str, weight: float, reference: Pools, target: dict[str, float],
    make: MakeSimulation,
) -> dict[str, float]:  # fmt: skip
    """Each hosted stage's service factor at which the candidate serves at the reference pools as
    the calibrated scenario does (fixed-point rounds: a stage's service changes the others' load)."""
    scales = {s: 1.0 for s in target}
    if shares == SHARE_CHOICES[0] and weight == 0.0:
        return scales  # the calibrated scenario itself
    for _ in range(RESCALES):
        served = _services(_candidate(scenario, host, shares, weight, scales), reference, make)
        scales = {s: scales[s] * target[s] / served[s] if served.get(s, 0) > 0 else scales[s] for s in scales}
    return scales


def apply(
    data: dict[str, Any], scenario: Scenario, host: str, shares: str, weight: float, scales: dict[str, float]
) -> None:
    """One candidate written into ``data`` (a scenario's mapping; ``scenario`` the same, loaded):
    ``host``'s ``handoff_cpu``, its stages' CPU shares (``all 1``) and services scaled."""
    data["hosts"][host]["handoff_cpu"] = weight
    for name, stage in data["stages"].items():
        if scenario.stages[name].host != host:
            continue
        if shares == SHARE_CHOICES[1]:
            stage["cpu"] = 1.0
        if name in scales:
            stage["service"] = (
                scenario.stages[name].service.scaled(scales[name]).model_dump(mode="json", exclude_none=True)
            )


def _candidate(scenario: Scenario, host: str, shares: str, weight: float, scales: dict[str, float]) -> Scenario:
    data = scenario.model_dump(mode="json", by_alias=True)
    apply(data, scenario, host, shares, weight, scales)
    return parse_scenario(data)


def _services(scenario: Scenario, pools: Pools, make: MakeSimulation) -> dict[str, float]:
    """Each stage's mean service with its pool held at ``pools`` (the others' as they are), over
    :data:`SEEDS`: busy process-seconds per attempt."""
    data = scenario.model_dump(mode="json", by_alias=True)
    for name, n in pools.items():
        workers = data["stages"][name]["workers"]
        workers.update(initial=n, min=min(workers["min"], n), max=max(workers["max"], n))
    held = parse_scenario(data)
    sums: dict[str, list[float]] = {}
    for seed in SEEDS:
        sim = make(held, seed)
        sim.run(held.horizon)
        for name, row in sim.summary()["stages"].items():
            attempts = row["completed"] + row["failures"]
            if attempts:
                sums.setdefault(name, []).append(row["mean_busy_workers"] * held.horizon / attempts)
    return {name: float(np.mean(values)) for name, values in sums.items()}


def _group(runs: list[HeldRun]) -> dict[int, list[HeldRun]]:
    out: dict[int, list[HeldRun]] = {}
    for run in runs:
        out.setdefault(run.processes, []).append(run)
    return out


def _sizes(runs: list[HeldRun]) -> dict[int, HeldRun]:
    """One run's pools per size (runs of one size held the same pools: checked by the caller)."""
    return {procs: group[0] for procs, group in _group(runs).items()}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def report_lines(fit: CpuFit, host: str) -> list[str]:
    """The choice, each candidate's error, and each stage's growth simulated against live."""
    lines = [
        f"hosts.{host}.handoff_cpu: {fit.weight:g}, CPU shares {fit.shares} (services rescaled "
        + ", ".join(f"{s} x{v:.3f}" for s, v in fit.scales.items())
        + f"); growth error {fit.error:.4f}",
        "  mean squared log ratio of service growth, simulated against live, per candidate:",
    ]
    for shares in SHARE_CHOICES:
        row = ", ".join(f"{w:g}: {e:.4f}" for (s, w), e in fit.errors.items() if s == shares)
        lines.append(f"    shares {shares}: {row}")
    for stage, by_size in fit.growth.items():
        cells = ", ".join(f"{p}: x{sim:.2f} (live x{seen:.2f})" for p, (sim, seen) in sorted(by_size.items()))
        lines.append(f"  {stage}: service at {cells}")
    return lines


__all__ = ["CpuFit", "HeldRun", "apply", "fit_handoff_cpu", "report_lines"]
