"""Each stage's hand-off levels at the reference, settled on a session's runs (``adaptflow fit-growth``).

``adaptflow calibrate`` measures a stage's turnaround from the gaps a backlogged process left
between tasks, and its dispatch delay from the waits of tasks that met it idle, in one
recording: a few minutes, and for a stage seldom backlogged few gaps (on the example app,
validate's turnaround rests on 72, its 95 % interval +-17 %). The growth laws fitted by
:mod:`.growth` are ratios to the runs at the reference size, so they carry nothing of a level
the recording misread. Those runs (two or more of three minutes each in a fit set) hold several
times the recording's gaps: on the example app's three fit sets the simulation of their own
runs at the reference showed validate's hand-offs 12-30 % long and aggregate's mean wait 7-14 %
short at the recording's levels, and four held-out sets missed the same stages the same way
(validate's p95 wait +18-54 % under the planners that held it at one process).

Settled, not read straight: a stage's simulated hand-off is its turnaround lengthened by the
work running beside it (``contention``, Celery's CPU), and a wait met idle its dispatch delay
lengthened the same way, so each round multiplies the stage's level by the live mean over the
simulated one at the reference runs and simulates again, until no stage moves by more than
:data:`SETTLED` (or :data:`ROUNDS` rounds). What stays the recording's: each level's spread
(``turnaround_cv``, the dispatch delay's distribution), its contention and the item sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptflow.scenario import Scenario, parse_scenario

from .figures import positive

ROUNDS = 6
"""At most this many rounds; on the example app's three fit sets the levels settled in one or two."""
SETTLED = 0.02
"""A round that moves every stage's level by at most this share of itself ends the settling
(the simulation's own seeds move a stage's mean hand-off by about as much)."""
LEVEL_SEEDS = tuple(range(6))
"""Seeds each run at the reference is simulated on, each round: a stage seldom backlogged has
150-300 gaps a seed, and its mean hand-off moved 5 % between rounds on the two seeds the laws'
settling uses (whose ratios are of many more gaps)."""
DAMPING = 0.5
"""After the first round a stage moves this power of its step (half the way, in logs). Why: a
stage seldom backlogged answers a level by more than the level (fewer gaps are backlogged at
a shorter turnaround) and its few gaps carry the seeds' noise (5 % on 150-300 gaps): on the
example app's first fit set validate's full steps swung 0.746 -> x1.124 -> x0.933 -> x1.083 ->
x0.924 and never came within 2 %."""
LEVEL_RANGE = (0.25, 4.0)
"""A level settled beyond a quarter or four times the recording's is not a correction of a
misread level but another machine; it is held at the bound (and the report shows it)."""


@dataclass(frozen=True)
class Level:
    """One kind of level: the stage's key it scales, the keyword of
    :meth:`~adaptflow.scenario.schema.Stage.with_levels`, and the run's measure of it (a
    :class:`~.growth.GrowthRun` field)."""

    key: str
    keyword: str
    measure: str
    what: str


TURNAROUND_LEVEL = Level("turnaround", "turnaround", "handoffs", "hand-off")
DISPATCH_LEVEL = Level("dispatch_delay", "dispatch", "idle_waits", "wait met idle")


@dataclass(frozen=True)
class LevelSettling:
    """A kind of level settled: each stage's factor on the calibration's level, the live mean at
    the reference runs, the simulated one at the settled levels, and the rounds run."""

    level: Level
    factors: dict[str, float]
    live: dict[str, float]
    simulated: dict[str, float]
    rounds: int


Simulate = Callable[[Scenario, Any], dict[str, float]]
"""A run's measure of each stage in the simulation of ``scenario`` (its pools, its arrivals)."""


def settle_levels(
    data: dict, folder: Path, runs: Sequence[Any], level: Level, simulate: Simulate
) -> LevelSettling | str:
    """Settle each stage's ``level`` in ``data`` (the scenario's mapping, left at the settled
    levels) on ``runs``, the live runs at the reference (:class:`~.growth.GrowthRun`); or why
    not (no stage measured in them)."""
    live_runs = [getattr(run, level.measure) for run in runs]
    if not any(live_runs):
        return f"{level.key} levels not settled: no stage's {level.what} measured in the runs at the reference"
    calibrated = parse_scenario(data, base_dir=folder)
    factors: dict[str, float] = {}
    for done in range(ROUNDS + 1):
        scenario = parse_scenario(data, base_dir=folder)
        simulated_runs = [simulate(scenario, run) for run in runs]
        live, simulated = _paired_means(live_runs, simulated_runs)
        steps = {s: live[s] / simulated[s] for s in live if _level_of(calibrated, s, level) > 0}  # 0 scales to 0
        if done == ROUNDS or all(abs(step - 1.0) <= SETTLED for step in steps.values()):
            return LevelSettling(level, {s: factors.get(s, 1.0) for s in steps}, live, simulated, done)
        damping = 1.0 if done == 0 else DAMPING
        for stage, step in steps.items():
            factors[stage] = min(max(factors.get(stage, 1.0) * step**damping, LEVEL_RANGE[0]), LEVEL_RANGE[1])
            _write_level(data, calibrated, stage, level, factors[stage])
    raise AssertionError("unreachable: the last round returns")  # pragma: no cover


def _paired_means(
    live_runs: list[dict[str, float]], simulated_runs: list[dict[str, float]]
) -> tuple[dict[str, float], dict[str, float]]:
    """Each stage's mean over the runs measured both live and simulated (a stage of too few
    gaps in either is left out of that run), live and simulated."""
    live: dict[str, float] = {}
    simulated: dict[str, float] = {}
    for stage in sorted({s for run in live_runs for s in run}):
        both = zip(live_runs, simulated_runs, strict=True)
        pairs = [(a.get(stage, math.nan), b.get(stage, math.nan)) for a, b in both]
        pairs = [(x, y) for x, y in pairs if positive(x) and positive(y)]
        if pairs:
            live[stage] = sum(x for x, _ in pairs) / len(pairs)
            simulated[stage] = sum(y for _, y in pairs) / len(pairs)
    return live, simulated


def _level_of(scenario: Scenario, stage: str, level: Level) -> float:
    """``stage``'s mean ``level`` in ``scenario`` (seconds)."""
    spec = scenario.stages[stage]
    return spec.turnaround if level is TURNAROUND_LEVEL else spec.dispatch_mean()


def _write_level(data: dict, calibrated: Scenario, stage: str, level: Level, factor: float) -> None:
    """``stage``'s ``level`` in ``data``: the calibration's times ``factor``, by the one rule of a
    stage's levels (:meth:`~adaptflow.scenario.schema.Stage.with_levels`)."""
    value = getattr(calibrated.stages[stage].with_levels(**{level.keyword: factor}), level.key)
    data["stages"][stage][level.key] = value.model_dump(exclude_none=True) if hasattr(value, "model_dump") else value


def report_lines(settlings: Sequence[LevelSettling | str], reference: int, runs: int) -> list[str]:
    """The levels settled, a line each kind and a line each stage (or why not settled)."""
    lines = []
    for settling in settlings:
        if isinstance(settling, str):
            lines.append(f"  {settling}")
            continue
        rounds = f"{settling.rounds} round" + ("" if settling.rounds == 1 else "s")
        lines.append(f"stages' {settling.level.key} at the reference ({reference} processes, {runs} live runs), "
                     f"settled against their simulation ({rounds}):")  # fmt: skip
        for stage, factor in settling.factors.items():
            bound = " (at its bound)" if factor in LEVEL_RANGE else ""
            lines.append(f"  {stage}: x{factor:.3f} the recording's{bound}; {settling.level.what} live "
                         f"{settling.live[stage]:.4g} s, simulated {settling.simulated[stage]:.4g} s")  # fmt: skip
    return lines
