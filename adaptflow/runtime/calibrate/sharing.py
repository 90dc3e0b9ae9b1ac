"""How a host's tasks slow with the tasks beside them, live and simulated (``adaptflow sharing``).

The host model shares its cores among the CPU work in progress (``Host``), and ``fit-growth``
fits Celery's CPU and the CPU shares from how the services *grow* from one held pool size to
another, each load against its own reference run. It never looks at what the host model is
about: how much longer a task takes while other tasks run beside it. A run's recording holds
that, every task's start and end. So for each finished task of a host's stages this module
takes the time-mean number of the host's other tasks in progress during it, and for each bin
of that number (:data:`BINS`) the mean log of the tasks' services over the mean log of their
own stage's services run alone: the slowdown curve. The same statistic from the simulation of
the same runs (each on the arrivals it met, at its held pools, as ``fit-growth`` simulates
them) says whether the model slows a task as the machine did.

Why it matters: a law that slows tasks beside each other too steeply can still match the
services at the fit set's load (its levels are rescaled there), and then errs with the load:
lighter, its services come out too fast; heavier, too slow. Measured on the example app (the
fourth 2-vCPU VM, 106 runs, docs/sim_to_real.md "How tasks slow beside each other"): live
tasks slowed x1.13-1.24 with one other in progress and x2.0-2.6 with more than 2.5; the law
``fit-growth`` chose there (one core, every CPU share 1, ``oversubscription`` 0.075) x2.0 and
x5.0, which is why each held-out set's own speed over its pulse rose +0.038 an item a second
under it. The cores scan (:func:`scan_cores`: no Celery CPU, every share 1) chose 1.6 cores on
each of four fit sets, its curve within 5 % of live's in every bin, and that host's own speed
over the pulse did not rise with the load (-0.013, +-0.026), though it predicted the heaviest
loads' waits short. With Celery's CPU as recorded held beside the tasks the scan read 1.9
cores on each fit set, and that fit (``fit-growth --visit-cpu recorded --cores sharing``,
:func:`fitted_cores`) tied the law at the pulse on two fresh held-out sets and held 14 of 16
planner cells at the runs' own speeds against its 8.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from adaptflow.scenario import Scenario, load_scenario

from ..compare_app import recording_dir
from .celery_cpu import HeldRun, candidate, held_at, plain_sharing
from .recording import missing_run_recording, read_recording
from .timeline import build_timeline
from .validate import MakeSimulation

if TYPE_CHECKING:
    from .growth import GrowthRun

BINS = (0.1, 0.75, 1.25, 1.75, 2.5)
"""Upper edges of the bins of other tasks in progress (time-mean over a task); the last bin is
open. Alone (below 0.1) is each stage's own base."""
LABELS = ("alone", "0.1-0.75", "~1", "~1.5", "~2", ">2.5")
SCAN = tuple(round(1.0 + 0.1 * k, 1) for k in range(16))
"""The cores :func:`scan_cores` tries: 1 to 2.5 in steps of 0.1 (at least one: below, a task
alone would be slowed; with Celery's CPU in the sharing the example app's 2-vCPU VM read 1.9)."""
SEEDS = (0, 1)


def others_in_progress(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """For each task (``starts[i]`` to ``ends[i]``), the time-mean number of the *other* tasks in
    progress during it: the integral of the count in progress over its span, over its length,
    less itself. A task of no length counts the others at its instant."""
    times = np.concatenate([starts, ends])
    steps = np.concatenate([np.ones(len(starts)), -np.ones(len(ends))])
    order = np.lexsort((steps, times))  # at one instant an end before a start: touching spans do not overlap
    times, count = times[order], np.cumsum(steps[order])
    area = np.concatenate([[0.0], np.cumsum(np.diff(times) * count[:-1])])

    def integral(t: np.ndarray) -> np.ndarray:
        i = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 1)
        return area[i] + (t - times[i]) * count[i]

    length = ends - starts
    at_start = count[np.clip(np.searchsorted(times, starts, side="right") - 1, 0, len(times) - 1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(length > 0, (integral(ends) - integral(starts)) / length, at_start)
    return np.maximum(mean - 1.0, 0.0)


@dataclass
class Tally:
    """Per (stage, bin) the tasks and the sum of their log services: what a curve is made of,
    added over runs and seeds without keeping a task."""

    sums: dict[tuple[str, int], list[float]] = field(default_factory=dict)

    def add(self, spans: Sequence[tuple[str, float, float]]) -> Tally:
        """The finished tasks of one run (stage, start, end), all on one host."""
        spans = [s for s in spans if s[2] > s[1]]  # a task of no length has no log service
        if not spans:
            return self
        starts = np.array([s[1] for s in spans])
        ends = np.array([s[2] for s in spans])
        bins = np.searchsorted(BINS, others_in_progress(starts, ends), side="right")
        for (stage, _, _), k, log in zip(spans, bins, np.log(ends - starts), strict=True):
            cell = self.sums.setdefault((stage, int(k)), [0, 0.0])
            cell[0] += 1
            cell[1] += float(log)
        return self

    def merged(self, other: Tally) -> Tally:
        """This tally and ``other``'s tasks together (a new tally): the curve of several files'
        runs from each file's own tally, without simulating any run twice."""
        both = Tally({key: list(cell) for key, cell in self.sums.items()})
        for key, (n, total) in other.sums.items():
            cell = both.sums.setdefault(key, [0, 0.0])
            cell[0] += n
            cell[1] += total
        return both

    def curve(self) -> Curve:
        """Each bin's mean log service over its stage's alone mean (stages that ran alone)."""
        alone = {s: total / n for (s, k), (n, total) in self.sums.items() if k == 0 and n}
        logs, tasks = [], []
        for k in range(len(LABELS)):
            cells = [(n, total - n * alone[s]) for (s, b), (n, total) in self.sums.items() if b == k and s in alone]
            n = sum(c[0] for c in cells)
            logs.append(sum(c[1] for c in cells) / n if n else math.nan)
            tasks.append(n)
        return Curve(tuple(logs), tuple(tasks))


@dataclass(frozen=True)
class Curve:
    """The mean log slowdown over alone in each bin of :data:`LABELS` (NaN: no task there), and
    the tasks in it."""

    logs: tuple[float, ...]
    tasks: tuple[int, ...]

    @property
    def slowdowns(self) -> tuple[float, ...]:
        return tuple(math.exp(v) for v in self.logs)

    def distance(self, live: Curve) -> float:
        """Mean squared log difference from ``live``'s, weighted by live's tasks in each bin
        both have (the bins where most tasks ran weigh most)."""
        pairs = [(n, a - b) for a, b, n in zip(self.logs, live.logs, live.tasks, strict=True)
                 if math.isfinite(a) and math.isfinite(b) and n]  # fmt: skip
        weight = sum(n for n, _ in pairs)
        return sum(n * d * d for n, d in pairs) / weight if weight else math.nan


def live_curve(recordings: Iterable[Path], stages: Sequence[str]) -> Curve:
    """The slowdown curve of ``stages`` (one host's) over every run recording (``compare-app``'s
    ``LABEL.recording``): each task a finished attempt, from its start to its end as the
    recording's events have them."""
    return live_tally(recordings, stages).curve()


def live_tally(recordings: Iterable[Path], stages: Sequence[str]) -> Tally:
    """:func:`live_curve`'s tasks, before the curve."""
    tally = Tally()
    for path in recordings:
        timeline = build_timeline(read_recording(path))
        tally.add([(s, a, b) for s in stages if s in timeline.stages for a, b in timeline.stages[s].spans])
    return tally


def run_recordings(runs: Sequence[GrowthRun]) -> list[Path]:
    """Each run's recording (``LABEL.recording`` beside its table), each once; a line of one
    :class:`ValueError` for each run without one."""
    paths = list(dict.fromkeys(recording_dir(run.folder, run.planner) for run in runs))
    missing = [line for p in paths if (line := missing_run_recording(p))]
    if missing:
        raise ValueError("\n".join(missing))
    return paths


def simulated_curve(
    scenario: Scenario, stages: Sequence[str], runs: Sequence[HeldRun], make: MakeSimulation,
    seeds: Sequence[int] = SEEDS,
) -> Curve:  # fmt: skip
    """The slowdown curve of ``stages`` in ``scenario``'s simulation of each run (its pools held,
    on the arrivals it met, as ``fit-growth`` simulates it), over ``seeds``."""
    return simulated_tally(scenario, stages, runs, make, seeds).curve()


def simulated_tally(
    scenario: Scenario, stages: Sequence[str], runs: Sequence[HeldRun], make: MakeSimulation,
    seeds: Sequence[int] = SEEDS,
) -> Tally:  # fmt: skip
    """:func:`simulated_curve`'s tasks, before the curve."""
    tally, wanted = Tally(), set(stages)
    for run in runs:
        held = held_at(scenario, run.pools, run)
        for seed in seeds:
            sim = make(held, seed)
            sim.service_spans = []
            sim.run(held.horizon)
            tally.add([s for s in sim.service_spans if s[0] in wanted])
    return tally


def with_cores(scenario: Scenario, host: str, cores: float, visit_cpu: float = 0.0) -> Scenario:
    """``scenario`` with ``host`` at ``cores``, every hosted stage's CPU share 1 and Celery's CPU
    ``visit_cpu`` a visit (0: none): the plain sharing of the cores, the world :func:`scan_cores`
    tries."""
    return candidate(scenario, host, plain_sharing(visit_cpu, cores), {})


def scan_cores(
    scenario: Scenario, host: str, stages: Sequence[str], runs: Sequence[HeldRun], make: MakeSimulation,
    live: Curve, cores: Sequence[float] = SCAN, seeds: Sequence[int] = SEEDS, visit_cpu: float = 0.0,
) -> list[tuple[float, Curve, float]]:  # fmt: skip
    """Each of ``cores``: its host's simulated curve (:func:`with_cores`, Celery's CPU at
    ``visit_cpu``) and its distance from ``live``; nearest first."""
    found = []
    for c in cores:
        curve = simulated_curve(with_cores(scenario, host, c, visit_cpu), stages, runs, make, seeds)
        found.append((c, curve, curve.distance(live)))
    return sorted(found, key=lambda f: (not math.isfinite(f[2]), f[2]))


def fitted_cores(
    scenario: Scenario, host: str, stages: Sequence[str], runs: Sequence[GrowthRun], make: MakeSimulation,
    visit_cpu: float,
) -> tuple[float, float]:  # fmt: skip
    """``fit-growth --cores sharing``: the cores whose sharing, with Celery's CPU held at
    ``visit_cpu``, slows the tasks of ``runs`` beside each other as their recordings say
    (:func:`scan_cores`), and that distance."""
    live = live_curve(run_recordings(runs), stages)
    if not live.tasks[0]:
        raise ValueError(f"runs: no task of {', '.join(stages)} ran alone on hosts.{host}; the slowdown has no base")
    cores, _, distance = scan_cores(scenario, host, stages, runs, make, live, visit_cpu=visit_cpu)[0]
    return cores, distance


def report_lines(live: Curve, simulated: Curve, scan: Sequence[tuple[float, Curve, float]] = ()) -> list[str]:
    """The curves side by side: a row each, a column a bin, then the cores scan's rows."""
    lines = [f"{'slowdown over alone':<24}" + " ".join(f"{label:>8}" for label in LABELS),
             f"{'live tasks':<24}" + " ".join(f"{n:>8}" for n in live.tasks),
             _row("live", live), _row("the scenario", simulated, simulated.distance(live))]  # fmt: skip
    lines += [_row(f"{c:g} cores, no Celery CPU", curve, d) for c, curve, d in sorted(scan)]
    if scan:
        lines.append(f"nearest live's: {scan[0][0]:g} cores (every CPU share 1, no Celery CPU)")
    return lines


def _row(name: str, curve: Curve, distance: float | None = None) -> str:
    cells = " ".join(f"{'-' if math.isnan(v) else f'x{v:.2f}':>8}" for v in curve.slowdowns)
    return f"{name:<24}{cells}" + ("" if distance is None else f"   distance {distance:.4f}")


@dataclass(frozen=True)
class FileCurves:
    """One RUN_CSV's runs read apart (``adaptflow sharing --each``): live's curve and the
    scenario's. Why: a fit set at two loads pooled hides whether the scenario's curve moves with
    the load as live's does (on the example app live's steepened from x1.97 to x2.53 past 2.5
    others between 5.3 and 6.8 items a second, and a host of 1.9 cores with Celery's CPU as
    recorded steepened the same way, x2.21 to x2.64)."""

    path: Path
    live: Curve
    simulated: Curve

    def lines(self) -> list[str]:
        tasks = f"{'  live tasks':<24}" + " ".join(f"{n:>8}" for n in self.live.tasks)
        scenario = _row("  the scenario", self.simulated, self.simulated.distance(self.live))
        return [f"{self.path}:", tasks, _row("  live", self.live), scenario]


MAX_SEEDS = 8


@dataclass(frozen=True)
class Sharing:
    """``adaptflow sharing``'s reading: the live curve, the scenario's, and the cores scan (empty
    unless asked), nearest first."""

    host: str
    runs: int
    live: Curve
    simulated: Curve
    scan: list[tuple[float, Curve, float]]
    each: list[FileCurves] = field(default_factory=list)

    def lines(self) -> list[str]:
        head = f"hosts.{self.host}: how its tasks slowed beside each other over {self.runs} runs, live and simulated"
        return [head, *report_lines(self.live, self.simulated, self.scan), *(x for f in self.each for x in f.lines())]


def read_sharing(
    scenario_path: str | Path, run_paths: Sequence[str | Path], make: MakeSimulation, host: str | None = None,
    scan: bool = False, seeds: int = len(SEEDS), each: bool = False,
) -> Sharing:  # fmt: skip
    """The slowdown curves of ``host``'s stages over the held runs of ``run_paths`` (``fit-growth``'s
    RUN_CSV files; each run's recording beside its table), live and in the scenario's simulation,
    with ``each`` also every file's runs apart, and with ``scan`` each of :data:`SCAN`'s cores.
    Everything is checked before any simulation."""
    from .growth import read_runs  # growth imports this module

    if not 1 <= seeds <= MAX_SEEDS:
        raise ValueError(f"--seeds: {seeds}; expected 1 to {MAX_SEEDS} seeds a run")
    scenario = load_scenario(scenario_path)
    host, stages = host_stages(scenario, host)
    runs, _ = read_runs(run_paths, stages, list(scenario.sources))
    if not runs:
        raise ValueError("runs: no live row at held pools; expected compare-app runs of static planners")
    found = run_recordings(runs)  # every missing recording a line, before any reading
    by_file: dict[Path, list[GrowthRun]] = {}
    for run in runs:
        by_file.setdefault(run.path, []).append(run)
    lives = {path: live_tally([r for r in found if r.parent == path.parent], stages) for path in by_file}
    live = reduce(Tally.merged, lives.values(), Tally()).curve()
    if not live.tasks[0]:
        raise ValueError(f"runs: no task of {', '.join(stages)} ran alone on hosts.{host}; the slowdown has no base")
    every = tuple(range(seeds))
    sims = {path: simulated_tally(scenario, stages, file_runs, make, every) for path, file_runs in by_file.items()}
    scanned = scan_cores(scenario, host, stages, runs, make, live, seeds=every) if scan else []
    apart = [FileCurves(path, lives[path].curve(), sims[path].curve()) for path in by_file] if each else []
    return Sharing(host, len(runs), live, reduce(Tally.merged, sims.values(), Tally()).curve(), scanned, apart)


def host_stages(scenario: Scenario, host: str | None) -> tuple[str, list[str]]:
    """``host`` (or the scenario's only one) and the stages placed on it; a clear error
    otherwise. The one reading of ``--host`` for ``sharing`` and ``fit-growth``
    (:func:`.growth.hosted_stages`)."""
    if host is None:
        if len(scenario.hosts) != 1:
            names = ", ".join(scenario.hosts) or "none"
            raise ValueError(f"--host: the scenario has {len(scenario.hosts)} hosts ({names}); expected one named")
        host = next(iter(scenario.hosts))
    if host not in scenario.hosts:
        names = ", ".join(scenario.hosts)
        raise ValueError(f"--host: {host!r} is not a host of the scenario; expected one of: {names}")
    stages = [name for name, stage in scenario.stages.items() if stage.host == host]
    if not stages:
        raise ValueError(f"hosts.{host}: no stage is placed on it; expected the stages whose tasks share its cores")
    return host, stages
