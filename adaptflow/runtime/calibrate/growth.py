"""A host's turnaround growth fitted from live runs at several pool sizes (``adaptflow fit-growth``).

A recording made with every pool held at one size measures each stage's turnaround at that many
processes on the host, and says nothing of how it changes with more (``adaptflow calibrate``
says so in its assumptions). Runs of ``adaptflow compare-app --planners static`` on the same
arrivals, with the pools held at other sizes, measure the hand-off at each (``handoff_<stage>``
of their live rows, by the one rule of :mod:`adaptflow.runtime.live.handoff`). The law fitted
is the scenario's :class:`~adaptflow.scenario.schema.TurnaroundGrowth`: each hand-off, relative
to its own at the reference processes, grows by ``per_process`` for each process beyond them:

    handoff_s(P) / handoff_s(R) - 1 = per_process * (P - R)

a least-squares line through the origin over every stage and run (each stage its own
baseline, so a stage with a short hand-off weighs as much as one with a long one). With a
simulation, the law is then settled against the simulation of the same runs (:func:`_settle`):
the simulator already lengthens a turnaround with the processes serving beside it (the stages'
``contention``, from the recording), and a hand-off counts only when a task waits, in a burst,
when more serve, so the simulated hand-offs grow with the pools before any law does. The law
read straight off the live ratios counted that growth twice: on the example app it read x1.82
from 5 to 10 processes, and its own fitting runs simulated at 10 showed hand-offs x2.3 their
simulation at 5 where live showed x1.7-1.9 (live 0.56-0.71 of the simulated hand-off; the
held-out p2 runs, 0.58-1.03 per stage and set). Each round multiplies the law's factor at each
size by the live ratio over the simulated one and draws the line again: 0.163 -> 0.083 ->
0.076 -> 0.073. Where the
rows carry each stage's mean wait of the tasks that met it idle (``idle_wait_<stage>``, the way
in to a worker: :func:`~adaptflow.runtime.live.handoff.mean_idle_wait`), the host's
``dispatch_growth`` is fitted from them by the same line, settled the same way (the simulation's
``contention`` lengthens the dispatch delays at more processes too: on the example app's three
fit sets the law read 0.0616, 0.0409 and 0.0133 straight and settled at 0.0527, 0.0433 and
0.0162); the two halves grow differently (on
the example app, x1.4-2.0 and x1.09-1.19 from 5 to 10 processes). Celery's CPU is fitted first,
with the turnarounds' law alone, and the dispatch growth added after: it is measured directly,
and with it inside the CPU fit's simulations the fit read 0.027 s of Celery's work per visit
(its grid's top) instead of 0.019, and the fitting runs' own replays drifted (p95 latency at
10 processes +15 % where it was +4 %; at 5, +35 % where it was +17 %). Runs whose
pools moved are refused: the processes of a moving planner change with the load, and the load
lengthens hand-offs on its own (on the example app, a fit on an erlang run read three times
the slope the held pools showed). A file's rows of such planners are skipped, and said so.
Before the laws are settled, each stage's turnaround and dispatch delay are settled on the runs
at the reference (:mod:`.levels`): the laws are ratios to those runs, and carry nothing of a
level the recording misread.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from adaptflow._io import atomic_write_text
from adaptflow.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from adaptflow.scenario.loading import load_yaml_file
from adaptflow.scenario.schema import MAX_VISIT_CPU, GrowthCounts, GrowthPoint, TurnaroundGrowth

from ..compare_app import arrivals_file, recording_dir
from ..live.handoff import mean_of_gaps
from .celery_cpu import LAWS, NONE, SEEDS, WAITS, CpuFit, fit_celery_cpu, held_at
from .celery_cpu import report_lines as cpu_report
from .core import _PlainDumper
from .figures import positive
from .levels import DISPATCH_LEVEL, LEVEL_SEEDS, TURNAROUND_LEVEL, LevelSettling, settle_levels
from .levels import report_lines as level_lines
from .main_cpu import RunsCpu, runs_cpu
from .own_runs import OwnRuns
from .own_runs import report_lines as own_lines
from .sharing import fitted_cores, host_stages
from .validate import MakeSimulation

SETTLE_ROUNDS = 8
"""At most this many rounds of settling the turnaround law against its simulation; it stops
sooner when a round moves the law less than :data:`SETTLED` of itself (on the example app
0.163 -> 0.083 -> 0.076 -> 0.073 -> 0.073: each round moves it a fourth to a third as far as the
one before, the seeds' noise left at the end)."""
SETTLED = 0.02
MAX_RUN_FILES = 100
MAX_RUN_FILE_BYTES = 1 << 20  # a compare_app.csv is a few kB
MAX_ARRIVALS_BYTES = 8 << 20  # a run's arrivals beside it: 20 bytes an item, 400,000 items
HELD = 1e-6
"""A stage's mean pool this close to a whole number was held at it for the whole run. A pool
grown at the run's start from the run before's size reads a little under (1.99980-1.99995 on
the example app) and is refused too, on purpose: counting two such runs moved Celery's CPU law
to its grid's top and doubled a fresh held-out set's mean gap (10 -> 21 %, docs/sim_to_real.md;
the probe read them on a slower machine than the runs at 5 processes, their own speeds did not).
Hold the pools from the run's first second: ``compare-app`` starts a static planner's run at
its pools (``p1@static:pool=1,p2@static:pool=2 --repeat 3`` interleaves two sizes), as
``examples/etl_app/sim_to_real.sh`` does."""


@dataclass(frozen=True)
class GrowthRun:
    """One live run at held pools: where it was read, each hosted stage's measured hand-off
    (stages with too few backlogged gaps are left out), its held pool and its mean service
    (where measured), and the arrivals it met (each source's file, where ``compare-app
    --simulate`` wrote them). A :class:`~.celery_cpu.HeldRun`."""

    source: str
    handoffs: dict[str, float]
    pools: dict[str, int]
    services: dict[str, float]
    arrivals: dict[str, Path] = field(default_factory=dict)
    idle_waits: dict[str, float] = field(default_factory=dict)  # where the row has them (idle_wait_<stage>)
    # stage -> figure (celery_cpu.WAITS) -> seconds, where the row has them (mean_wait_<stage>, p95_wait_<stage>)
    waits: dict[str, dict[str, float]] = field(default_factory=dict)
    planner: str = ""  # the row's label (compare-app's LABEL#k): its arrivals and event log are named by it
    spreads: dict[str, float] = field(default_factory=dict)  # where the row has them (service_cv_<stage>)

    @property
    def processes(self) -> int:
        """The host's processes: its stages' pools."""
        return sum(self.pools.values())

    @property
    def path(self) -> Path:
        """The file the run's row came from (its ``source`` is ``PATH:LINE``)."""
        return Path(self.source.rsplit(":", 1)[0])

    @property
    def folder(self) -> Path:
        """The compare-app folder the run's row came from."""
        return self.path.parent

    @property
    def session_key(self) -> str:
        """How ``--session-speed`` names the run (:attr:`GrowthFit.session_speeds`): folder and label."""
        return f"{self.folder}/{self.planner}"


@dataclass(frozen=True)
class Settling:
    """The turnaround law settled against its simulation (:func:`_settle`): the slope read
    straight off the live ratios, each round's, and each stage's simulated hand-off ratios at
    the settled law (stage -> processes -> ratio, as :attr:`GrowthFit.ratios` live)."""

    direct: float
    rounds: list[float]
    simulated: dict[str, dict[int, float]]


@dataclass
class GrowthFit:
    """The fitted law and what it was fitted from."""

    host: str
    growth: TurnaroundGrowth
    runs: list[GrowthRun]
    skipped: list[str]  # live rows not used, and why
    per_stage: dict[str, float]  # each stage's own slope, for the report
    ratios: dict[str, dict[int, float]]  # stage -> processes -> mean hand-off / its reference
    cpu: CpuFit | str | None = None  # Celery's CPU and the shares, or why not fitted
    dispatch: TurnaroundGrowth | None = None  # the dispatch delays' law, where the rows had idle waits
    dispatch_ratios: dict[str, dict[int, float]] = field(default_factory=dict)  # as ratios, of idle waits
    session_speeds: dict[str, float] = field(default_factory=dict)  # each run's own speed (--session-speed)
    session_pulses: dict[str, float] = field(default_factory=dict)  # each run's idle pulse over its own speed
    settling: Settling | str | None = None  # the law settled against its simulation, or why not
    dispatch_settling: Settling | str | None = None  # the same, of the dispatch law
    levels: list[LevelSettling | str] = field(default_factory=list)  # the stages' levels at the reference
    recorded_cpu: RunsCpu | None = None  # Celery's CPU a visit the runs' own recordings read (--visit-cpu recorded)
    held_visit_cpu: float | None = None  # the figure held: the recorded one as work at the host's speed
    sharing_cores: tuple[float, float] | None = None  # --cores sharing: the cores read, and the curves' distance
    host_reference: int = 0  # the host's processes in the runs at the reference (0: the law's own reference)
    own_runs: OwnRuns | str | None = None  # the fit against its own runs (experiments.calibration), or why not

    @property
    def processes_at_reference(self) -> int:
        """The host's processes in the runs at the reference: the law's reference, unless it counts
        a stage's own pool (``counts: stage``)."""
        return self.host_reference or self.growth.reference

    def speed_drift(self) -> tuple[int, float, float] | None:
        """The runs' own speeds (:attr:`session_speeds`) at the reference and at the largest
        size: (its processes, the mean at the reference, the mean there); None without them."""
        by_size: dict[int, list[float]] = {}
        for run in self.runs:
            if run.session_key in self.session_speeds:
                by_size.setdefault(run.processes, []).append(self.session_speeds[run.session_key])
        reference = self.processes_at_reference
        largest = max(by_size, default=reference)
        if reference not in by_size or largest == reference:
            return None
        mean = {size: sum(v) / len(v) for size, v in by_size.items()}
        return largest, mean[reference], mean[largest]

    @property
    def session_pulse(self) -> float | None:
        """The host's pulse in this session's terms: the mean of :attr:`session_pulses` (None
        without them), what ``--session-speed`` writes and the report shows."""
        return sum(self.session_pulses.values()) / len(self.session_pulses) if self.session_pulses else None


def hosted_stages(scenario: Scenario, host: str | None) -> tuple[str, list[str]]:
    """The host to fit (``host``, or the scenario's only one, :func:`.sharing.host_stages`) and the
    stages placed on it, one of them with a turnaround to grow."""
    host, stages = host_stages(scenario, host)
    if not any(scenario.stages[s].turnaround for s in stages):
        raise ValueError(f"hosts.{host}: no stage placed on it has a turnaround; there is nothing to grow")
    return host, stages


def read_runs(
    paths: Sequence[str | Path], stages: list[str], sources: Sequence[str] = ()
) -> tuple[list[GrowthRun], list[str]]:
    """The live rows of ``compare_app.csv`` files that ran at held pools, and a line for each
    live row skipped (its planner moved the pools); every problem of every file in one
    :class:`ValueError`, a line each. A run's arrivals are each of ``sources``' files beside
    its ``compare_app.csv``, when every one is there."""
    if not 1 <= len(paths) <= MAX_RUN_FILES:
        raise ValueError(f"runs: {len(paths)} files; expected 1 to {MAX_RUN_FILES} compare_app.csv files")
    problems: list[str] = []
    runs: list[GrowthRun] = []
    skipped: list[str] = []
    for path in map(Path, paths):
        if not path.is_file():
            problems.append(f"{path}: no such file; expected a compare_app.csv written by adaptflow compare-app")
        elif path.stat().st_size > MAX_RUN_FILE_BYTES:
            problems.append(f"{path}: {path.stat().st_size:,} bytes; expected a compare_app.csv of at most 1 MiB")
        else:
            runs += _read_one(path, stages, sources, problems, skipped)
    if problems:
        raise ValueError("\n".join(problems))
    return runs, skipped


def _read_one(
    path: Path, stages: list[str], sources: Sequence[str], problems: list[str], skipped: list[str]
) -> list[GrowthRun]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        needed = ["world", "planner"] + [f"{c}_{s}" for s in stages for c in ("mean_pool", "handoff")]
        missing = [c for c in needed if c not in (reader.fieldnames or [])]
        if missing:
            names = ", ".join(missing)
            problems.append(f"{path}: no column {names}; expected a compare_app.csv of this scenario's stages")
            return []
        runs = []
        for line, row in enumerate(reader, start=2):
            if row["world"] == "live":
                run = _run_of(f"{path}:{line}", row, stages, problems, skipped)
                if run is not None:
                    arrivals = _arrivals(path.parent, row["planner"], sources, problems)
                    runs.append(replace(run, arrivals=arrivals, planner=row["planner"]))
        return runs


def _arrivals(folder: Path, planner: str, sources: Sequence[str], problems: list[str]) -> dict[str, Path]:
    """Each source's arrivals file of ``planner``'s run in ``folder``, when every one is there
    (else none: the run is simulated on the scenario's own sources); a file too large to be one
    run's arrivals is a problem (each candidate of the fit simulates it)."""
    files = {s: arrivals_file(folder, planner, s) for s in sources}
    if not files or not all(f.is_file() for f in files.values()):
        return {}
    for path in files.values():
        if path.stat().st_size > MAX_ARRIVALS_BYTES:
            problems.append(
                f"{path}: {path.stat().st_size:,} bytes; expected one run's arrivals, at most {MAX_ARRIVALS_BYTES:,}"
            )
    return files


def _run_of(
    source: str, row: dict[str, str], stages: list[str], problems: list[str], skipped: list[str]
) -> GrowthRun | None:
    columns = ("mean_pool", "handoff", "service", "service_cv", "idle_wait", *WAITS)
    cells = _numbers(source, row, [f"{c}_{s}" for s in stages for c in columns], problems)
    if cells is None:
        return None
    pools = {}
    for stage in stages:
        pool = cells[f"mean_pool_{stage}"]
        if not math.isfinite(pool):
            problems.append(f"{source}: mean_pool_{stage} is {_cell(row, f'mean_pool_{stage}')}; expected a number")
            return None
        if not abs(pool - round(pool)) <= HELD:
            skipped.append(f"{source}: planner {row['planner']!r} moved its pools (mean_pool_{stage} {pool:.6g}; "
                           "a held run starts at its pools: run it as compare-app's static:pool=N)")  # fmt: skip
            return None
        pools[stage] = round(pool)

    def measured(column: str) -> dict[str, float]:  # where the row measured one (figures.positive)
        return {stage: v for stage in stages if positive(v := cells[f"{column}_{stage}"])}

    waits = {stage: w for stage in stages if (w := {f: v for f in WAITS if positive(v := cells[f"{f}_{stage}"])})}
    return GrowthRun(
        source, measured("handoff"), pools, measured("service"), idle_waits=measured("idle_wait"), waits=waits,
        spreads=measured("service_cv"),
    )  # fmt: skip


def _numbers(source: str, row: dict[str, str], columns: list[str], problems: list[str]) -> dict[str, float] | None:
    """``row``'s cells in ``columns`` as numbers, ``nan`` where empty or absent (a file of an
    older compare-app has fewer columns, a stage with too few gaps an empty cell), or None with a
    problem for each cell that is not a number."""
    out, bad = {}, []
    for column in columns:
        try:
            out[column] = float(row.get(column) or "nan")
        except ValueError:
            bad.append(f"{source}: {column} is {_cell(row, column)}; expected a number")
    problems.extend(bad)
    return None if bad else out


def _cell(row: dict[str, str], column: str) -> str:
    """A cell as a problem names it: quoted, or "missing" in a row cut short (csv reads None)."""
    return "missing" if row.get(column) is None else repr(row[column])


def fit_growth(
    runs: list[GrowthRun], reference: int, host: str, skipped: list[str] | None = None, line: bool = False,
    counts: GrowthCounts = "host",
) -> GrowthFit:  # fmt: skip
    """The least-squares slope (see the module docstring), and with runs at two or more sizes
    beside the reference each size's factor as a point of the law (unless ``line``); clear
    errors when the runs cannot give one. ``counts``: the law's sizes the host's processes, or
    with ``stage`` each stage's own pool (``TurnaroundGrowth.counts``), its reference the pool
    every stage held in the runs at the host's ``reference``."""
    at_reference = [r for r in runs if r.processes == reference]
    elsewhere = sorted({r.processes for r in runs if r.processes != reference})
    if not at_reference or not elsewhere:
        seen = sorted({r.processes for r in runs})
        raise ValueError(
            f"runs: the live runs at held pools had {seen} processes on {host}; expected at least one run at the "
            f"reference {reference} (the processes the turnarounds were calibrated at) and one at another size"
            + "".join(f"\nskipped {line}" for line in skipped or [])
        )
    law_reference = reference if counts == "host" else _stage_reference(at_reference, host)
    ratios = _ratios(runs, law_reference, lambda r: r.handoffs, counts)  # only stages measured at two sizes
    if not ratios:
        raise ValueError(
            f"runs: no stage on {host} had its hand-off measured both at {law_reference} processes"
            f"{' of its own' if counts == 'stage' else ''} and at another size"
        )
    per_stage = {s: _slope([(p - law_reference, v - 1.0) for p, v in by_size.items()]) for s, by_size in ratios.items()}
    growth = _law(ratios, law_reference, line, counts)
    dispatch_ratios = _ratios(runs, law_reference, lambda r: r.idle_waits, counts)
    dispatch = _law(dispatch_ratios, law_reference, line, counts) if dispatch_ratios else None
    return GrowthFit(host, growth, runs, list(skipped or []), per_stage, ratios, dispatch=dispatch,
                     dispatch_ratios=dispatch_ratios, host_reference=reference)  # fmt: skip


def _stage_reference(at_reference: list[GrowthRun], host: str) -> int:
    """The pool every stage held in the runs at the host's reference: the law's reference when
    it counts a stage's own processes (one size for every stage: the law has one reference)."""
    held = sorted({pool for run in at_reference for pool in run.pools.values()})
    if len(held) != 1:
        raise ValueError(f"--counts stage: the runs at the reference held pools of {held} on {host}; expected every "
                         "stage at one size (the law's reference: a stage's own processes at calibration)")  # fmt: skip
    return held[0]


def _size(run: GrowthRun, stage: str, counts: GrowthCounts) -> int:
    """A run's size as a law counting ``counts`` reads it for ``stage``: the host's processes,
    or the stage's own pool."""
    return run.processes if counts == "host" else run.pools[stage]


def _law(
    ratios: dict[str, dict[int, float]], reference: int, line: bool, counts: GrowthCounts = "host"
) -> TurnaroundGrowth:
    """The law through the stages' ratios: the least-squares line through the origin of every
    stage's (processes - reference, ratio - 1), and, with two or more sizes measured beside the
    reference (and not ``line``), each size's mean ratio over the stages as its point."""
    pairs = [(p - reference, v - 1.0) for by_size in ratios.values() for p, v in by_size.items()]
    return TurnaroundGrowth(per_process=max(0.0, _round(_slope(pairs))), reference=reference,
                            points=[] if line else _points(ratios), counts=counts)  # fmt: skip


def _points(ratios: dict[str, dict[int, float]]) -> list[GrowthPoint]:
    """Each size's mean ratio over the stages measured there, as the law's points; none with one
    size (its one point is the line's own: the law of two sizes stays a line)."""
    sizes = sorted({p for by_size in ratios.values() for p in by_size})
    if len(sizes) < 2:
        return []
    means = {p: _mean([by_size[p] for by_size in ratios.values() if p in by_size]) for p in sizes}
    return [GrowthPoint(processes=p, factor=max(0.0, _round(v))) for p, v in means.items() if v is not None]


def _law_data(growth: TurnaroundGrowth) -> dict:
    """``growth`` as the scenario file writes it (its points only where it has them)."""
    data = {"per_process": growth.per_process, "reference": growth.reference}
    if growth.points:
        data["points"] = [p.model_dump() for p in growth.points]
    if growth.counts != "host":
        data["counts"] = growth.counts
    return data


def _ratios(
    runs: list[GrowthRun],
    reference: int,
    measure: Callable[[GrowthRun], dict[str, float]],
    counts: GrowthCounts = "host",
) -> dict[str, dict[int, float]]:
    """Each stage's mean ``measure`` at each other size over its mean at ``reference``, sizes
    as a law counting ``counts`` reads them (:func:`_size`; stages measured at the reference and
    at another size only)."""
    ratios: dict[str, dict[int, float]] = {}
    for stage in sorted({s for r in runs for s in measure(r)}):
        sizes: dict[int, list[float]] = {}
        for run in runs:
            if stage in measure(run):
                sizes.setdefault(_size(run, stage, counts), []).append(measure(run)[stage])
        base = _mean(sizes.pop(reference, []))
        if base is not None and sizes:
            ratios[stage] = {p: sum(v) / len(v) / base for p, v in sorted(sizes.items())}
    return ratios


def fit_growth_file(
    scenario_path: str | Path, run_paths: Sequence[str | Path], out: str | Path,
    host: str | None = None, reference: int | None = None, simulation: MakeSimulation | None = None,
    speed: float | None = None, stage_slopes: bool = False, line: bool = False, levels: bool = True,
    cpu_law: str | None = None, visit_cpu: float | str | None = None, counts: GrowthCounts = "host",
    cores: str = "search",
) -> GrowthFit:  # fmt: skip
    """Fit the growth of ``host`` in the scenario at ``scenario_path`` from ``run_paths`` and write
    the scenario with it to ``out`` (atomically, after validating everything). ``reference``:
    default the host's processes in the scenario (its stages' ``initial`` pools). With a
    ``simulation`` (``adaptflow.simulator.Simulation``; the runtime never imports it) and runs
    that measured services (``service_<stage>``), Celery's CPU on the host (``visit_cpu``,
    ``handoff_cpu`` or ``oversubscription``) and its stages' CPU shares are fitted too
    (:mod:`.celery_cpu`), in ``fit.cpu``. ``speed``: the host's ``speed`` while fitting, written
    with the laws (``--session-speed``).
    ``stage_slopes``, ``line``, ``levels``, ``counts``: ``--stage-slopes`` (each stage's own
    slope, a line), ``--line`` (one line through every size), not ``--recorded-levels`` (each
    stage's turnaround and dispatch delay settled on the runs at the reference, :mod:`.levels`),
    ``--counts``.
    ``cpu_law``: Celery's CPU searched in that law alone (``--cpu-law``; the report names a law
    in a near tie, :func:`.celery_cpu.near_ties`). ``visit_cpu``: Celery's CPU a visit as measured
    (``--visit-cpu``), held, with the host's cores searched in its place; :data:`RECORDED`, the
    figure the runs' own recordings read (:func:`.main_cpu.runs_cpu`), held as work at the speed
    the host is simulated at (the scenario's ``visit_cpu`` is work at speed 1: the simulator
    divides it by the speed, and the runs measured CPU seconds at theirs). ``cores``: ``--cores``
    (:data:`SHARING`: the cores read from the runs' recordings, held too)."""
    scenario_path, out = Path(scenario_path), Path(out)
    scenario = load_scenario(scenario_path)
    host, stages = hosted_stages(scenario, host)
    reference = _checked_options(scenario, scenario_path, host, stages, reference, cpu_law, visit_cpu, cores)
    runs, skipped = read_runs(run_paths, stages, list(scenario.sources))
    fit = fit_growth(runs, reference, host, skipped, line=line or stage_slopes, counts=counts)
    data = load_yaml_file(scenario_path)
    if speed is not None:  # before any simulation: every one below runs the host at it
        data["hosts"][host]["speed"] = round(speed, 4)
    if visit_cpu == RECORDED:  # before any simulation too: a run without readings is refused first
        visit_cpu = _recorded_visit_cpu(fit, stages, float(data["hosts"][host].get("speed", 1.0)))
    data["hosts"][host]["turnaround_growth"] = _law_data(fit.growth)
    if stage_slopes:
        data["hosts"][host]["turnaround_growth"]["stages"] = {s: max(0.0, _round(v)) for s, v in fit.per_stage.items()}
    if simulation is not None:  # visit_cpu a number by now (RECORDED resolved above)
        held = None if isinstance(visit_cpu, str) else visit_cpu
        fit.cpu = _fit_cpu(scenario, data, scenario_path.parent.resolve(), fit, simulation, cpu_law, held, cores)
    if fit.dispatch is not None:  # after Celery's CPU: see the module docstring
        data["hosts"][host]["dispatch_growth"] = _law_data(fit.dispatch)
    if simulation is not None:  # last: the simulation they settle against is the scenario written
        _settle_all(data, scenario_path.parent.resolve(), fit, simulation, reference, levels)
    try:
        parse_scenario(data, label=str(out), base_dir=out.parent.resolve())
    except ScenarioError as exc:
        hint = "" if out.parent.resolve() == scenario_path.parent.resolve() else (
            "\n--out: write it beside the scenario, whose trace paths are relative to its folder")  # fmt: skip
        raise ScenarioError(f"{exc}{hint}") from None
    sources = ", ".join(r.source for r in fit.runs)
    laws = "turnaround_growth" + (" and dispatch_growth" if fit.dispatch is not None else "")
    if any(isinstance(s, LevelSettling) for s in fit.levels):
        laws += ", its stages' turnarounds and dispatch delays at the reference"
    header = f"# {scenario_path.name}, hosts.{host}.{laws} fitted by adaptflow fit-growth from {sources}\n"
    _write_scenario(out, header, data)
    return fit


def _checked_options(
    scenario: Scenario, path: Path, host: str, stages: list[str], reference: int | None,
    cpu_law: str | None = None, visit_cpu: float | str | None = None, cores: str = "search",
) -> int:  # fmt: skip
    """fit-growth's options checked against the scenario before any work: the reference
    processes (default: the host's stages' ``initial`` pools), returned."""
    if scenario.hosts[host].by_speed:
        raise ValueError(
            f"hosts.{host}.by_speed: {path} holds laws by speed; expected the calibration each session's "
            "runs are fitted on (then adaptflow laws-by-speed puts the fits together)"
        )
    if reference is None:
        reference = sum(scenario.stages[s].workers.initial for s in stages)
    if reference < 1:
        raise ValueError(f"--reference: {reference}; expected the processes the host ran at calibration, at least 1")
    if cpu_law is not None and cpu_law not in (*LAWS, NONE):
        raise ValueError(f"--cpu-law: {cpu_law!r}; expected one of {', '.join(LAWS)} or {NONE}")
    if isinstance(visit_cpu, str) and visit_cpu != RECORDED:
        raise ValueError(f"--visit-cpu: {visit_cpu!r}; expected Celery's CPU seconds a visit or {RECORDED!r}")
    if isinstance(visit_cpu, float | int) and not 0 < visit_cpu <= MAX_VISIT_CPU:  # NaN fails too
        raise ValueError(f"--visit-cpu: {visit_cpu!r}; expected Celery's CPU seconds a visit, above 0, at most "
                         f"{MAX_VISIT_CPU:g}")  # fmt: skip
    if visit_cpu is not None and cpu_law not in (None, "visit_cpu"):
        raise ValueError(f"--cpu-law: {cpu_law!r} with --visit-cpu; expected one or the other (--visit-cpu holds "
                         "Celery's CPU in the visit_cpu law and searches the cores)")  # fmt: skip
    if cores not in (SEARCH, SHARING):
        raise ValueError(f"--cores: {cores!r}; expected {SEARCH} or {SHARING}")
    if cores == SHARING and visit_cpu is None:
        raise ValueError(f"--cores {SHARING}: without --visit-cpu; expected it with Celery's CPU held (the cores are "
                         "read beside it)")  # fmt: skip
    return reference


SEARCH, SHARING = "search", "sharing"
"""``--cores``: searched by the services' growth beside a held Celery CPU (the default), or read
from how the runs' tasks slowed beside each other (:func:`.sharing.fitted_cores`). Why the
second: on the example app's fourth VM the search's cores were 1.6-1.8 and a task beside
another slowed x1.3-1.5 in their simulation against x1.1-1.3 live; the curve read 1.9 on four
fit sets, and that fit held 54 of 64 planner cells on eight held-out sets at the runs' own
speeds (the searched 47) and as many as the law at the pulse on two fresh ones (15 of 16)."""
RECORDED = "recorded"
"""``--visit-cpu recorded``: Celery's CPU a visit as the fit set's own run recordings read it."""


def _recorded_visit_cpu(fit: GrowthFit, stages: list[str], speed: float) -> float:
    """Celery's CPU a visit over ``fit``'s runs' own recordings (``LABEL.recording`` beside each
    run's table), as the scenario's work at ``speed`` within the schema's bound; both kept in
    ``fit`` for the report."""
    recordings = list(dict.fromkeys(recording_dir(run.folder, run.planner) for run in fit.runs))
    fit.recorded_cpu = recorded = runs_cpu(recordings, stages)
    fit.held_visit_cpu = held = round(recorded.per_visit * speed, 6)
    if not 0 < held <= MAX_VISIT_CPU:
        raise ValueError(f"--visit-cpu recorded: {held:g} s a visit read from {recorded.runs} runs; expected above 0, "
                         f"at most {MAX_VISIT_CPU:g}")  # fmt: skip
    return held


def _write_scenario(out: Path, header: str, data: dict) -> None:
    """The fitted scenario ``data`` (already checked) written to ``out`` under ``header``: the
    one format of the files fit-growth writes."""
    atomic_write_text(
        out, header + yaml.dump(data, Dumper=_PlainDumper, sort_keys=False, default_flow_style=None, width=120)
    )


def write_host_speed(out: str | Path, host: str, speed: float, pulse: float | None = None) -> None:
    """Set ``hosts.<host>.speed`` (and its ``pulse``, when given) in the scenario
    ``fit_growth_file`` wrote to ``out`` (its header line kept), checked before the file is
    replaced."""
    out = Path(out)
    first = out.read_text().partition("\n")[0]
    data = load_yaml_file(out)
    data["hosts"][host]["speed"] = round(speed, 4)
    note = f"; hosts.{host}.speed from the held runs' own speeds"
    if pulse is not None:
        data["hosts"][host]["pulse"] = round(pulse, 1)
        note += " and its pulse from their idle pulses over those speeds"
    parse_scenario(data, label=str(out), base_dir=out.parent.resolve())
    _write_scenario(out, first + note + " (--session-speed)\n" if first.startswith("#") else "", data)


def _fit_cpu(
    scenario: Scenario, data: dict, folder: Path, fit: GrowthFit, simulation: MakeSimulation,
    law: str | None = None, visit_cpu: float | None = None, cores: str = SEARCH,
) -> CpuFit | str:  # fmt: skip
    """Celery's CPU and the shares (:mod:`.celery_cpu`), written into ``data``; or why not (runs
    without services, or runs of one size at different pools). ``cores``: :data:`SHARING`, the
    cores read from the runs' recordings (``--cores sharing``), kept in ``fit.sharing_cores``."""
    host, runs = fit.host, fit.runs
    if not all(r.services for r in runs):
        return "Celery's CPU not fitted: the runs hold no service_<stage> columns (an older compare-app)"
    by_size: dict[int, dict[str, int]] = {}
    for run in runs:
        if by_size.setdefault(run.processes, run.pools) != run.pools:
            return f"Celery's CPU not fitted: runs at {run.processes} processes held different pools"
    grown = parse_scenario(data, base_dir=folder)  # the growth law fitted: it lengthens the hand-offs
    reference = {s: scenario.stages[s].workers.initial for s in runs[0].pools}
    held_cores = None
    if cores == SHARING and visit_cpu is not None:
        fit.sharing_cores = fitted_cores(grown, host, host_stages(grown, host)[1], runs, simulation, visit_cpu)
        held_cores = fit.sharing_cores[0]
    chosen = fit_celery_cpu(grown, host, runs, reference, simulation, law, visit_cpu, held_cores)
    chosen.apply(data, grown, host)
    return chosen


@dataclass(frozen=True)
class Kind:
    """One law :func:`_settle` settles: its key under the host, what it is read from live (a
    :class:`GrowthRun` field and ``GrowthFit`` ratios), and the simulator's counters of the same
    measure by live's rule (their sum and count, of ``StageCounters``)."""

    name: str
    law: str
    measure: str
    ratios: str
    total: str
    count: str
    what: str


TURNAROUND = Kind("turnaround", "turnaround_growth", "handoffs", "ratios", "backlogged_turnaround_sum",
                  "backlogged_turnarounds", "backlogged hand-offs")  # fmt: skip
DISPATCH = Kind("dispatch", "dispatch_growth", "idle_waits", "dispatch_ratios", "idle_wait_sum", "idle_waits",
                "waits met idle")  # fmt: skip


def _settle(data: dict, folder: Path, fit: GrowthFit, simulation: MakeSimulation, kind: Kind) -> Settling | str:
    """Settle ``fit``'s ``kind`` of law in ``data`` (the scenario's mapping, every other fit in
    it) against the simulation of ``fit.runs``: each round, the law's factor at each size times
    the live ratio over the simulated one is a point, and the line through them the next law
    (the module docstring). The settled law is left in ``data``."""
    law = data["hosts"][fit.host][kind.law]
    seen_ratios: dict[str, dict[int, float]] = getattr(fit, kind.ratios)
    direct, rounds, before = law["per_process"], [], None
    while True:
        scenario = parse_scenario(data, base_dir=folder)
        runs = [replace(run, **{kind.measure: _simulated(scenario, run, simulation, kind)}) for run in fit.runs]
        simulated = _ratios(runs, law["reference"], lambda r: getattr(r, kind.measure), law.get("counts", "host"))
        if len(rounds) == SETTLE_ROUNDS or (before is not None and _settled(before, law)):
            return Settling(direct, rounds, simulated)
        growth = getattr(scenario.hosts[fit.host], kind.law)
        points = {stage: [(p - law["reference"], growth.for_stage(stage).factor(p) * seen / simulated[stage][p] - 1.0)
                          for p, seen in by_size.items() if p in simulated.get(stage, {})]
                  for stage, by_size in seen_ratios.items()}  # fmt: skip
        if not any(points.values()):
            return f"the {kind.name} law not settled: the simulated runs had too few {kind.what} at two sizes"
        before = {"per_process": law["per_process"], "stages": dict(law.get("stages", {})),
                  "points": list(law.get("points", []))}  # fmt: skip
        law["per_process"] = max(0.0, _round(_slope([pt for pts in points.values() for pt in pts])))
        if "stages" in law:  # each stage's own line through its own points (--stage-slopes)
            law["stages"] = {s: max(0.0, _round(_slope(pts))) for s, pts in points.items() if pts}
        if "points" in law:  # each size's factor, the stages' mean there (the law of three sizes or more)
            factors = {s: {x + law["reference"]: 1.0 + y for x, y in pts} for s, pts in points.items()}
            law["points"] = [p.model_dump() for p in _points(factors)]
        rounds.append(law["per_process"])


def _settled(before: dict, law: dict) -> bool:
    """A round moved the law (and each stage's own slope, and each point's growth, where it has
    them) by at most :data:`SETTLED` of its size (a stage's, of its own slope or the host's,
    whichever is larger: a slope near 0 moves by the seeds' noise alone; a point's, of its own
    growth or the line's there)."""
    scale = law["per_process"]
    if abs(law["per_process"] - before["per_process"]) > SETTLED * scale:
        return False
    stages = law.get("stages", {})
    if not all(abs(v - before["stages"].get(s, v)) <= SETTLED * max(v, scale) for s, v in stages.items()):
        return False
    was = {p["processes"]: p["factor"] for p in before["points"]}
    return all(
        abs(p["factor"] - was.get(p["processes"], p["factor"]))
        <= SETTLED * max(abs(p["factor"] - 1.0), scale * abs(p["processes"] - law["reference"]))
        for p in law.get("points", [])
    )


def _settle_all(data: dict, folder: Path, fit: GrowthFit, simulation: MakeSimulation, reference: int,
                levels: bool) -> None:  # fmt: skip
    """The levels (where ``levels``), then the turnaround law, then the dispatch law, each settled
    against the simulation of ``fit``'s runs in ``data``, and ``fit`` told what they became."""
    if levels:  # before the laws: their ratios are to the reference, which the levels make live's
        fit.levels = _settle_levels(data, folder, fit, simulation, reference)
    fit.settling = _settle(data, folder, fit, simulation, TURNAROUND)
    fit.growth = TurnaroundGrowth(**data["hosts"][fit.host]["turnaround_growth"])
    if fit.dispatch is not None:
        fit.dispatch_settling = _settle(data, folder, fit, simulation, DISPATCH)
        fit.dispatch = TurnaroundGrowth(**data["hosts"][fit.host]["dispatch_growth"])


def _settle_levels(
    data: dict, folder: Path, fit: GrowthFit, simulation: MakeSimulation, reference: int
) -> list[LevelSettling | str]:
    """The stages' turnarounds, then their dispatch delays, settled on ``fit``'s runs at the
    reference (:mod:`.levels`), in ``data``."""
    runs = [run for run in fit.runs if run.processes == reference]
    simulate = functools.partial(_simulated, simulation=simulation, seeds=LEVEL_SEEDS)
    return [
        settle_levels(data, folder, runs, level, functools.partial(simulate, kind=kind))
        for level, kind in ((TURNAROUND_LEVEL, TURNAROUND), (DISPATCH_LEVEL, DISPATCH))
    ]


def _simulated(
    scenario: Scenario, run: GrowthRun, simulation: MakeSimulation, kind: Kind, seeds: Sequence[int] = SEEDS
) -> dict[str, float]:
    """Each of ``run``'s measured stages' ``kind`` of measure in the simulation of the run (its
    pools held, on its arrivals, over the CPU fit's seeds), by live's rule: a mean over the
    seeds pooled (one seed of a short run can fall under the floor), none below
    :data:`~..live.handoff.MIN_GAPS`."""
    held = held_at(scenario, run.pools, run)
    measured = getattr(run, kind.measure)
    sums, counts = dict.fromkeys(measured, 0.0), dict.fromkeys(measured, 0)
    for seed in seeds:
        sim = simulation(held, seed)
        sim.run(held.horizon)
        stages = sim.counters().stages
        for name in sums:
            sums[name] += getattr(stages[name], kind.total)
            counts[name] += getattr(stages[name], kind.count)
    means = {name: mean_of_gaps(sums[name], counts[name]) for name in sums}
    return {name: mean for name, mean in means.items() if mean}


def report_lines(fit: GrowthFit) -> list[str]:
    """The fit, a line each: each stage's hand-off ratios by processes and its own slope."""
    sizes = sorted({p for by_size in fit.ratios.values() for p in by_size})
    lines = _turnaround_lines(fit, sizes)
    if fit.dispatch is None:
        lines.append(f"hosts.{fit.host}.dispatch_growth: not fitted (no stage's idle_wait_<stage> at the reference "
                     "and at another size; rows of an older compare-app)")  # fmt: skip
    else:
        lines.append(f"hosts.{fit.host}.dispatch_growth: per_process {fit.dispatch.per_process} of the dispatch delay")
        simulated = _settling_lines(fit.dispatch_settling, lines, "lengthens the dispatch delays at more processes")
        for stage, by_size in fit.dispatch_ratios.items():
            lines.append(f"  {stage}: wait met idle at {_cells(by_size, simulated.get(stage, {}), sizes)}")
    at = fit.processes_at_reference
    lines += level_lines(fit.levels, at, sum(r.processes == at for r in fit.runs))
    lines += [f"  skipped {line}" for line in fit.skipped]
    if fit.recorded_cpu is not None:
        rec = fit.recorded_cpu
        lines.append(f"Celery's CPU a visit, read from the {rec.runs} runs' own recordings: "
                     f"{1000 * rec.per_visit:.2f} ms ({rec.cpu_seconds:.1f} CPU s over {rec.visits:,} visits), held "
                     f"as {fit.held_visit_cpu:g} s of work at the host's speed (--visit-cpu recorded)")  # fmt: skip
    if fit.sharing_cores is not None:
        lines.append(f"hosts.{fit.host}.cores: {fit.sharing_cores[0]:g}, whose sharing with Celery's CPU held slows "
                     "the runs' tasks beside each other nearest their recordings (distance "
                     f"{fit.sharing_cores[1]:.4f}; --cores sharing, adaptflow sharing)")  # fmt: skip
    if isinstance(fit.cpu, CpuFit):
        lines += cpu_report(fit.cpu, fit.host)
    elif fit.cpu:
        lines.append(fit.cpu)
    if fit.session_speeds:
        speeds = fit.session_speeds.values()
        lines.append(f"hosts.{fit.host}.speed: {round(sum(speeds) / len(speeds), 4)}, the mean of the held runs' own "
                     "speeds on the scenario fitted at 1; the laws above fitted at it (--session-speed)")  # fmt: skip
        lines += [f"  {run}: {speed:.3f}" for run, speed in fit.session_speeds.items()]
        lines += _drift_lines(fit)
    if fit.session_pulse is not None:
        lines.append(f"hosts.{fit.host}.pulse: {round(fit.session_pulse, 1)}, the mean of the held runs' idle pulses "
                     "over their own speeds: --pulse-speed reads a run against this session (each run's: "
                     + ", ".join(f"{a:.0f}" for a in fit.session_pulses.values()) + ")")  # fmt: skip
    return lines + own_lines(fit.own_runs)


SPEED_DRIFT = 0.08
"""The runs at the largest size this much slower (their own speeds' mean, relative) than those
at the reference: their growth with the processes holds the machine's slowing too, and the
report says so. Why 8 %: on the example app a fit set whose one run a size met 1.223, 1.132 and
1.079 from 5 to 10 processes (-12 %) held 48 of 96 held-out planner cells where its session's
other sequence (1.000 to 0.968, -3 %) held 88; three fit sets of two interleaved runs a size
drifted -5 to +1 % and held 85-89 (docs/sim_to_real.md, "Write's CPU share searched with the law")."""


def _drift_lines(fit: GrowthFit) -> list[str]:
    """A warning where the runs at the largest size met a machine :data:`SPEED_DRIFT` slower."""
    drift = fit.speed_drift()
    if drift is None or drift[2] >= drift[1] * (1 - SPEED_DRIFT):
        return []
    size, at_reference, largest = drift
    return [f"  warning: the runs at {size} processes met a machine {1 - largest / at_reference:.0%} slower than "
            f"those at the reference ({largest:.3f} against {at_reference:.3f}): the growth fitted holds the "
            "machine's slowing too; run the fit set again, its sizes interleaved and repeated"]  # fmt: skip


_OWN = " of each stage's own (counts: stage: its sizes below are a stage's own pool)"


def _turnaround_lines(fit: GrowthFit, sizes: list[int]) -> list[str]:
    """The turnaround law's part of the report: the law, how it settled, each stage's ratios."""
    g = fit.growth
    law = ", ".join(f"{p}: x{g.factor(p):.2f}" for p in sizes)
    lines = [
        f"hosts.{fit.host}.turnaround_growth: per_process {g.per_process} of the turnaround, "
        f"reference {g.reference} processes{_OWN if g.counts == 'stage' else ''} ({len(fit.runs)} live runs)",
        f"  the law: each turnaround at {law} "
        + (
            "(straight between the sizes measured, by the slope beyond; not a mechanism)"
            if g.points
            else "(a line, not a mechanism)"
        )
        + ("; a stage with a slope of its own (below) by it" if g.stages else ""),
    ]
    simulated = _settling_lines(fit.settling, lines, "lengthens hand-offs at more processes")
    for stage, by_size in fit.ratios.items():
        own = f"; its law per_process {g.stages[stage]}" if stage in g.stages else ""
        lines.append(f"  {stage}: hand-off at {_cells(by_size, simulated.get(stage, {}), sizes)}"
                     f" (read straight, its own slope {fit.per_stage.get(stage, math.nan):.3f}{own})")  # fmt: skip
    return lines


def _settling_lines(settling: Settling | str | None, lines: list[str], how: str) -> dict[str, dict[int, float]]:
    """A law's settling as a report line appended to ``lines`` (or why it was not settled), and
    its simulated ratios (none when not settled)."""
    if isinstance(settling, Settling):
        steps = " -> ".join(f"{v:g}" for v in [settling.direct, *settling.rounds])
        lines.append(f"  settled against the simulation of these runs: per_process {steps} (the simulation's "
                     f"contention {how} before the law does)")  # fmt: skip
        return settling.simulated
    if settling:
        lines.append(f"  {settling}")
    return {}


def _cells(seen: dict[int, float], simulated: dict[int, float], sizes: list[int]) -> str:
    """A stage's live ratios by processes, and its simulated ones where the law was settled."""
    cells = ", ".join(f"{p}: x{seen[p]:.2f}" for p in sizes if p in seen)
    sim = ", ".join(f"x{simulated[p]:.2f}" for p in sizes if p in simulated)
    return cells + (f", simulated {sim}" if sim else "")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _slope(points: list[tuple[float, float]]) -> float:
    """Least squares through the origin."""
    return sum(x * y for x, y in points) / sum(x * x for x, _ in points)


def _round(value: float) -> float:
    return float(f"{value:.4g}")


__all__ = [
    "GrowthFit",
    "GrowthRun",
    "fit_growth",
    "fit_growth_file",
    "hosted_stages",
    "read_runs",
    "report_lines",
    "write_host_speed",
]
