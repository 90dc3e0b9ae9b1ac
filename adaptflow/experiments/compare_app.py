"""Simulation against live on a user's app, for the very arrivals each live run met.

``adaptflow compare-app --simulate N`` runs each planner live (:func:`adaptflow.runtime.compare_app.compare_on_app`)
and, after each run, the same planner in simulation on the calibrated scenario as the live
system runs it (:func:`~.compare_live.as_live`: Celery's pool ticks, fork time, dispatch floor),
with every source replaced by a trace of that run's arrivals, for ``N`` seeds. The rows sit
under the live one: ``simulated`` (the mean over the seeds), ``simulated, min`` and ``, max``.

Why the run's own arrivals: a recording's trace starts when the recorder started, the live
run's when its monitor did, and a producer's timing drifts with the machine's load; shifting
the recorded trace by hand (as docs/sim_to_real.md's first runs did) aligns them only to the first
arrival. The monitor's own arrival records are what the live figures count, so both worlds
count the same items. A calibrated trace's item sizes are kept in order when the run replayed
as many items as the trace holds (the same seeded producer submits the same items in the same
order); otherwise every item gets size 1, with a warning.
"""

from __future__ import annotations

import logging
import math
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from adaptflow.agents import Planner
from adaptflow.agents.fitting import analyzer_for
from adaptflow.policies.registry import check_trusted, make_planner, split_label
from adaptflow.policies.static import ScheduledPlanner
from adaptflow.runtime.compare_app import (
    PLANNER_SCENARIO,
    START_POOL,
    RunResult,
    arrivals_file,
    compare_on_app,
    logged_pools,
    repeated,
    repeated_label,
)
from adaptflow.runtime.compare_progress import FINISHED
from adaptflow.runtime.live.mapping import load_mapping
from adaptflow.runtime.probe import BACKGROUND
from adaptflow.scenario import Scenario, load_scenario, parse_scenario
from adaptflow.scenario.schema import TraceSource, as_trace, load_trace

from .compare_live import as_live, at_tick_stratum, simulated
from .live_speed import live_services, settle_speeds, with_service_scales, with_speeds

log = logging.getLogger(__name__)

MAX_SEEDS = 100
"""Most seeds a compare may simulate per run (each is one simulation of the run's length)."""


def on_arrivals(scenario: Scenario, run: RunResult, folder: Path, horizon: float) -> Scenario | None:
    """``scenario`` with each source a trace of ``run``'s arrivals (written as
    ``folder/<label>.arrivals.<source>.csv``) and ``horizon``; a source the run met no arrival
    of is left out (a trace needs a row), and None when no source had any."""
    data = scenario.model_dump(mode="json", by_alias=True)
    for name, source in scenario.sources.items():
        times = np.sort(np.asarray(run.arrivals.get(name, []), dtype=float))
        if not len(times):
            del data["sources"][name]
            continue
        path = arrivals_file(folder, run.planner, name)
        frame = pd.DataFrame({"timestamp": np.maximum(times, 0.0), "size": _sizes(name, source, len(times))})
        frame.to_csv(path, index=False)
        data["sources"][name] = as_trace(data["sources"][name], path)
    if not data["sources"]:
        return None
    data["horizon"] = horizon
    return parse_scenario(data)


def _sizes(name: str, source: Any, count: int) -> np.ndarray:
    """The calibrated trace's item sizes: in order if it holds exactly ``count`` items (the
    same producer run again); else ``count`` drawn from them with replacement (other arrivals,
    whose own sizes the events do not carry: the same spread of sizes, not the same items; one
    fixed draw per source, so the same run replays the same sizes); 1 without sizes.

    Why not 1 for every item: the calibrated services are per unit of size, and items all of
    one size lose the spread that sizes add to latency (on the example app with arrivals no
    recording saw, producer seed 11: simulated p95 0.529 s at size 1, 0.551 s with drawn sizes)."""
    if isinstance(source, TraceSource):
        _, sizes = load_trace(source.file, source.time_column, source.size_column)
        if sizes is not None and len(sizes) == count:
            return np.asarray(sizes, dtype=float)
        if sizes is not None:
            log.info(
                "source %s: the run met %d arrivals, the calibrated trace holds %d; their sizes are drawn from the "
                "trace's", name, count, len(sizes),
            )  # fmt: skip
            draw = np.random.default_rng(zlib.crc32(name.encode()))
            return draw.choice(np.asarray(sizes, dtype=float), size=count, replace=True)
    return np.ones(count)


def with_handoffs(scenario: Scenario, timing: dict[str, float]) -> Scenario:
    """``scenario`` with each stage's ``turnaround`` the hand-off measured for it
    (``handoff_<stage>`` of ``timing``, :meth:`RunResult.per_task`; stages measured as NaN keep
    their own; a stage's ``turnaround_cv`` spreads the new mean), as the run met it: a host's
    ``turnaround_growth`` (of ``by_speed`` too) and such a stage's contention on its turnaround
    are dropped (the hand-offs a run met include them; the host's other laws are kept at its
    speed, :meth:`Scenario.laws_at_speed`), and the seconds are written at the host's ``speed``
    (the simulator divides a hosted turnaround by it), so a replay at any speed meets the
    measured seconds. Apply it after the speed is set."""
    data = scenario.laws_at_speed().model_dump(mode="json", by_alias=True)  # the laws at the speed set
    for host in data.get("hosts", {}).values():
        host["turnaround_growth"] = None
    for name, stage in data["stages"].items():
        seconds = timing.get(f"handoff_{name}", math.nan)
        if math.isfinite(seconds):
            host = scenario.stages[name].host
            stage["turnaround"] = max(0.0, seconds) * (scenario.hosts[host].speed if host is not None else 1.0)
            if not stage["turnaround"]:  # nothing left to spread (Stage.turnaround_cv)
                stage["turnaround_cv"] = 0.0
            if stage.get("contention"):
                stage["contention"]["turnaround"] = 0.0
    return parse_scenario(data)


DRIFT = 1.25
"""A live per-task time this many times the simulation's (or its inverse) is reported."""
PER_TASK = (("service", "service"), ("handoff", "hand-off between tasks"), ("idle_wait", "wait met idle"))
"""The per-task times a live row keeps per stage (``<kind>_<stage>``, :meth:`RunResult.per_task`)
and how a drift report names each: what a saved run reads back and what drifts are checked on."""


def timing_drift(planner: str, live: dict[str, Any], simulated: dict[str, Any], stages: list[str]) -> list[str]:
    """One line per stage whose live mean service or hand-off strayed from the simulation's by
    more than :data:`DRIFT` times either way: the scenario no longer describes how that run's
    tasks went (measured on a 2-core VM: 15 processes made every task 1.7-2.2 times slower and
    the hand-off 5 times longer than at the 5 the scenario was calibrated with), so the two
    worlds' waits part for a reason the columns ``service_<stage>`` and ``handoff_<stage>`` show
    (and ``idle_wait_<stage>``, a task's way in to an idle stage, where both worlds read it)."""
    lines = []
    for stage in stages:
        for column, what in PER_TASK:
            seen, assumed = live.get(f"{column}_{stage}", math.nan), simulated.get(f"{column}_{stage}", math.nan)
            if not (math.isfinite(seen) and math.isfinite(assumed)) or assumed <= 0 or seen <= 0:
                continue
            ratio = seen / assumed
            if ratio > DRIFT or ratio < 1 / DRIFT:
                lines.append(
                    f"{planner}: stage {stage}'s {what} was {seen:.3g} s live against {assumed:.3g} s simulated "
                    f"({ratio:.2f} x): the simulated waits of this run are not the live machine's"
                )
    return lines


def background_warning(run: RunResult) -> str | None:
    """A line when nice'd processes took more than :data:`BACKGROUND` of the machine's CPU time
    during the run (:attr:`RunResult.nice`): its idle pulses then read the machine faster than
    its tasks met it (measured: 8-20 % on the example app), and its simulation at the pulse
    speed comes out short; None otherwise, or where the share was not read."""
    if run.nice is None or run.nice <= BACKGROUND:
        return None
    return (
        f"{run.planner}: nice'd processes took {run.nice:.0%} of the machine's CPU during the run: its pulses "
        "read the machine faster than its tasks met it (judge it at its own speed, --live-speed, or run it again "
        "on a quiet machine)"
    )


PROBE_PULSE_GAP = 0.10
"""How far apart (relative) a run's probed and pulsed speeds may be before ``--probe-speed``
says its probe missed the run: twice the pulses' own spread against the speed the runs' tasks
met (log sd 5-6 % over 16 held-out runs of the example app, where the probe's was 10-11 % about a
bias of -14 %). On those runs 9 of 16 were that far apart, and in each the pulse was within 8 %
of the run's own speed where the probe was 9-36 % below it (docs/sim_to_real.md)."""


def probe_warnings(run: RunResult, scenario: Scenario) -> list[str]:
    """A line per host whose probe, a second on the idle app before and after the run, read its
    speed more than :data:`PROBE_PULSE_GAP` from what the run's idle pulses read during it:
    a simulation at the probe's speed is then judged at a speed the run did not meet. Empty
    where the run or the host has no pulse to compare with."""
    pulsed = run.pulse_speeds(scenario)
    return [
        f"{run.planner}: the probe read host {host!r} at {probe:.2f} of its calibration, the run's idle pulses at "
        f"{pulsed[host]:.2f} ({probe / pulsed[host] - 1:+.0%}), further apart than the pulses' own spread allows "
        f"({PROBE_PULSE_GAP:.0%}): the probe missed the speed the run met (judge it at its pulse, --pulse-speed)"
        for host, probe in run.speeds(scenario).items()
        if host in pulsed and abs(probe / pulsed[host] - 1) > PROBE_PULSE_GAP
    ]


def _warn_of(
    run: RunResult, timing: dict[str, float], row: dict[str, Any], scenario: Scenario, pulse: bool, probe: bool
) -> None:
    """What the log says of a run judged: its per-task times that drifted from the simulation's;
    judged at its pulse, the background work its pulses were read beside; judged at its probe,
    a probe that missed what the pulses read."""
    lines = timing_drift(run.planner, timing, row, list(scenario.stages))
    if pulse and (line := background_warning(run)):
        lines.append(line)
    if probe:
        lines += probe_warnings(run, scenario)
    for line in lines:
        log.warning("%s", line)


def simulated_app_run(
    scenario: Scenario,
    run: RunResult,
    spec: str,
    seeds: int,
    interval: float,
    folder: Path,
    live_handoffs: bool = False,
    probe_speed: bool = False,
    live_speed: bool = False,
    steal_speed: bool = False,
    planned_on: Scenario | None = None,
    pools: list[dict[str, int]] | None = None,
    pulse_speed: bool = False,
) -> list[dict[str, Any]]:
    """The simulated rows of one live run (see the module docstring); ``spec``: the planner spec
    the run used (``LABEL@SPEC`` allowed), built on ``planned_on`` (default ``scenario``).
    ``pools``: instead of that planner, the pools the run applied at each decision
    (:class:`~adaptflow.policies.static.ScheduledPlanner`; each row then has ``live_pools`` 1).
    ``live_handoffs``: each stage's turnaround the hand-off the run met between its tasks where
    measured (``handoff_<stage>`` of the live row), not the scenario's; each simulated row's
    ``handoff_<stage>`` is the mean of its turnarounds begun with an item waiting (as live reads
    it). ``probe_speed``: each probed host at the speed the CPU probe measured around the live
    run (:meth:`RunResult.speeds`; ``speed_<host>`` in the rows): a measurement of the machine,
    not of the run's tasks or waits.
    ``steal_speed``, ``pulse_speed``: each host that kept its recording's steal or pulse at the
    speed the run's own steal or idle pulses give against it (:meth:`RunResult.steal_speeds`,
    :meth:`RunResult.pulse_speeds`; ``speed_<host>`` in the rows), instead of the probe's.
    ``live_speed``: one more row, :data:`LIVE_SPEED`, simulated with each host at the speed the
    run's own services met and each stage's service scaled to its own live mean
    (:func:`_at_live_speed`, from the probe's speed with ``probe_speed``): a diagnosis, as
    ``live_handoffs`` is (it takes a figure from the live side), which tells how much of a gap
    is the machine's speed during the run and how much the model's."""
    # As many decisions as the live run made (its last interval ended when the last item was
    # seen leaving, and a simulation run to that odd time would decide and pay once more), then
    # more only while items remain, as the live run ended: an exit a few milliseconds past the
    # last decision is not cut off. At most as long again (_seeds).
    duration = max(1, len(run.transitions)) * interval
    started = {name: n for name, n in run.pools.items() if name in scenario.stages}  # where the live run began
    aligned = on_arrivals(scenario.starting_at(started), run, folder, duration)
    if aligned is None:
        log.warning("%s: the run met no arrival of the scenario's sources; nothing to simulate", run.planner)
        return []
    timing = run.per_task(scenario)  # what the run's tasks met, once for both uses below
    speeds = _measured_speeds(run, scenario, probe_speed, steal_speed, pulse_speed)
    planned_on = scenario if planned_on is None else planned_on
    planner: str | Planner = spec if pools is None else ScheduledPlanner(pools)
    replay = as_live(_replayed(aligned, speeds, timing, live_handoffs))
    runs = _seeds(planned_on, replay, planner, seeds, duration, interval)
    marks = {f"speed_{host}": speed for host, speed in speeds.items()} | ({} if pools is None else {"live_pools": 1.0})
    runs = runs.assign(**marks)
    rows = [{"world": "simulated", "planner": run.planner, **runs.mean().to_dict()}]
    _warn_of(run, timing, rows[0], scenario, pulse_speed, probe_speed)
    rows += _seed_range("simulated", run.planner, runs)
    if live_speed:
        args = (planned_on, aligned, timing, rows[0], speeds, planner, seeds, duration, interval, live_handoffs)
        at_speed, columns = _at_live_speed(*args)
        rows.append({"world": LIVE_SPEED, "planner": run.planner, **at_speed.mean().to_dict(), **columns})
        rows += _seed_range(LIVE_SPEED, run.planner, at_speed)
    return rows


def _seed_range(world: str, planner: str, runs: pd.DataFrame) -> list[dict[str, Any]]:
    """``WORLD, min`` and ``WORLD, max``: each figure's least and most over the seeds ``runs``
    holds, and ``WORLD, self-agreement`` (:func:`self_agreement`); none for one seed. Why: one
    live run is one draw of what the model draws once a seed, and of ``n`` seeds' draws, [min,
    max] holds one more draw with chance ``(n - 1) / (n + 1)`` whatever their distribution (7/9
    for 8 seeds): the yardstick :func:`agreement` holds a single run's gap against (``inside the
    seeds' spread``)."""
    if len(runs) < 2:
        return []
    ranges = [{"world": f"{world}, {k}", "planner": planner, **runs.agg(k).to_dict()} for k in ("min", "max")]
    return [*ranges, {"world": f"{world}, {SELF_AGREEMENT}", "planner": planner, **self_agreement(runs)}]


SELF_AGREEMENT = "self-agreement"
"""The seed-range row of :func:`self_agreement` (``simulated, self-agreement``)."""


def self_agreement(runs: pd.DataFrame, tolerance: float | None = None) -> dict[str, float]:
    """Each figure's share of the seeds in ``runs`` that the mean of the *other* seeds agrees with
    (within ``tolerance``, judged as :func:`agreement` judges a run: that mean over the seed's
    figure, minus 1): how often the model, were it exact, would agree with one live run of this
    length. Why: on the example app one 180-s run's stage p95 waits agreed with the mean of the
    other seeds 68 % of the time (the run's mean wait 100 %), so a 10 % goal on such a figure is
    not one a live run can meet every time, however right the model (docs/sim_to_real.md). A
    seed whose figure is 0 or not measured is left out; NaN where fewer than two remain.
    ``tolerance``: :data:`TOLERANCE` unless given."""
    tolerance = TOLERANCE if tolerance is None else tolerance
    out = {}
    for column in runs.columns:
        values = pd.to_numeric(runs[column], errors="coerce").to_numpy(float)
        values = values[np.isfinite(values) & (values != 0)]
        if len(values) < 2:
            out[column] = math.nan
            continue
        others = (values.sum() - values) / (len(values) - 1)
        out[column] = float(np.mean(np.abs(others / values - 1.0) <= tolerance))
    return out


LIVE_SPEED = "simulated, live speed"
"""The ``world`` of the row simulated at the live run's own speed (``live_speed``)."""


def _replayed(
    aligned: Scenario, speeds: dict[str, float], timing: dict[str, float], live_handoffs: bool,
    scales: dict[str, float] | None = None,
) -> Scenario:  # fmt: skip
    """``aligned`` at ``speeds``, with services scaled by ``scales`` and, with ``live_handoffs``,
    the run's own hand-offs (set last: :func:`with_handoffs` writes them at the speed set)."""
    replay = with_service_scales(with_speeds(aligned, speeds), scales or {})
    return with_handoffs(replay, timing) if live_handoffs else replay


def _at_live_speed(
    scenario: Scenario, aligned: Scenario, timing: dict[str, float], first: dict[str, Any],
    speeds: dict[str, float], spec: str | Planner, seeds: int, duration: float, interval: float,
    live_handoffs: bool = False,
) -> tuple[pd.DataFrame, dict[str, Any]]:  # fmt: skip
    """One row per seed of ``aligned`` replayed (the planner built on ``scenario``, as in
    :func:`_seeds`) with each host at the speed at which the simulation's services met the
    run's (:func:`~.live_speed.settle_speeds`, from ``first``, the row simulated at ``speeds``)
    and each stage's service scaled by what that speed left (:func:`~.live_speed.live_services`).
    ``speed_<host>``, ``speed_gap_<host>`` (the services' remaining gap at that speed),
    ``speed_rounds`` (replays the search ran) and ``scale_<stage>`` say which (the second of the
    pair returned). ``live_handoffs``: every replay with the run's own hand-offs, as the rows above it."""

    def runs(at: dict[str, float], scales: dict[str, float] | None = None) -> pd.DataFrame:
        run = _replayed(aligned, at, timing, live_handoffs, scales)
        return _seeds(scenario, as_live(run), spec, seeds, duration, interval)

    def replay(at: dict[str, float], scales: dict[str, float] | None = None) -> dict[str, Any]:
        return runs(at, scales).mean().to_dict()

    settled = settle_speeds(aligned, timing, first, speeds, replay)
    scales = live_services(aligned, timing, settled.row)
    columns = {
        **{f"speed_{h}": v for h, v in settled.speeds.items()},
        **{f"speed_gap_{h}": v for h, v in settled.gaps.items()},
        "speed_rounds": settled.rounds,
        **{f"scale_{k}": v for k, v in scales.items()},
    }
    return runs(settled.speeds, scales), columns


def _seeds(
    scenario: Scenario, replay: Scenario, spec: str | Planner, seeds: int, duration: float, interval: float
) -> pd.DataFrame:
    """One simulated row per seed of ``replay`` (``handoff_<stage>``: as live reads it, the mean of
    the turnarounds begun with an item waiting).

    The planner and analyzer the live run had: built for the calibrated ``scenario``, not for
    the replay (a planner built for the replay would staff for its live hand-offs, which the
    live planner did not know: measured, erlang then held 1.97 processes a stage against
    1.2-1.9). Built afresh per seed: a planner may hold what cannot be copied (an ONNX session).
    ``spec`` a planner built already (a live run's pools, :class:`ScheduledPlanner`): that one,
    reset per seed. Each seed's pools tick in a stratum of their own
    (:func:`~.compare_live.at_tick_stratum`), so the seeds span the phases a live run may meet."""
    figures = []
    for seed in range(seeds):
        if isinstance(spec, Planner):
            built, forecaster = spec, "ewma"
        else:
            built, forecaster = make_planner(split_label(spec)[1], scenario, interval)
        analyzer = analyzer_for(built, scenario, interval, forecaster)
        at = at_tick_stratum(replay, seed, seeds)
        figures.append(simulated(at, built, seed, duration, interval, analyzer, settle=duration))
    return pd.DataFrame(figures)


def _check_seeds(seeds: int) -> None:
    if not (isinstance(seeds, int) and 1 <= seeds <= MAX_SEEDS):
        raise ValueError(f"--simulate {seeds!r}: expected a whole number of seeds from 1 to {MAX_SEEDS}")


def _measured_speeds(
    run: RunResult, scenario: Scenario, probe_speed: bool, steal_speed: bool, pulse_speed: bool
) -> dict[str, float]:
    """The hosts' speeds by the one measurement of the machine asked for (none: the scenario's)."""
    if probe_speed:
        return run.speeds(scenario)
    if steal_speed:
        return run.steal_speeds(scenario)
    return run.pulse_speeds(scenario) if pulse_speed else {}


def _check_speeds(
    spec: Scenario, probe_speed: bool, live_speed: bool, steal_speed: bool = False, pulse_speed: bool = False
) -> None:
    """``--probe-speed``, ``--steal-speed``, ``--pulse-speed`` and ``--live-speed`` refused,
    before any run, on a scenario that has nothing to set; two of the first three together,
    too (each is the speed)."""
    chosen = [flag for flag, on in (("--probe-speed", probe_speed), ("--steal-speed", steal_speed),
                                    ("--pulse-speed", pulse_speed)) if on]  # fmt: skip
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join(chosen)}: expected one of them (each sets the hosts' speed)")
    if pulse_speed and not spec.pulsed:
        raise ValueError(
            f"--pulse-speed: no host of scenario {spec.name!r} has a pulse to compare with; expected a scenario "
            "calibrated (adaptflow calibrate --cores auto) from a recording that kept its pulses (pulses.jsonl)"
        )
    if steal_speed and not any(h.steal is not None for h in spec.hosts.values()):
        raise ValueError(
            f"--steal-speed: no host of scenario {spec.name!r} kept its recording's steal to compare with; expected "
            "a scenario calibrated (adaptflow calibrate --cores auto) from a recording whose recording.json has steal"
        )
    if probe_speed and not spec.probed:
        raise ValueError(
            f"--probe-speed: no host of scenario {spec.name!r} has a probe to compare with; expected a scenario "
            "calibrated (adaptflow calibrate --cores auto) from a recording whose recording.json has probes"
        )
    if live_speed and not spec.hosts:
        raise ValueError(
            f"--live-speed: scenario {spec.name!r} has no hosts whose speed could be set; expected a scenario "
            "calibrated with --cores (its stages placed on a host)"
        )


def compare_app_with_simulation(
    app_spec: str,
    mapping: Any,
    scenario: str | Path | Scenario,
    planners: list[str],
    produce: list[str],
    interval: float,
    drain: float,
    event_log_dir: Path | None = None,
    *,
    seeds: int = 3,
    live_handoffs: bool = False,
    probe_speed: bool = False,
    live_speed: bool = False,
    steal_speed: bool = False,
    pulse_speed: bool = False,
    **options: Any,
) -> pd.DataFrame:
    """:func:`~adaptflow.runtime.compare_app.compare_on_app`, each live row followed by its
    simulated rows over ``seeds`` seeds (``live_handoffs``, ``probe_speed``, ``live_speed``,
    ``steal_speed``, ``pulse_speed``: see :func:`simulated_app_run`; ``probe_speed`` needs a host
    with a calibration ``probe``, ``pulse_speed`` one with a ``pulse``, ``live_speed`` a host). The
    arrival traces go to ``event_log_dir`` (kept beside the event logs), or to a temporary
    directory removed at the end."""
    _check_seeds(seeds)
    spec = load_scenario(scenario)
    unknown = sorted(set(load_mapping(mapping).sources) - set(spec.sources))
    if unknown:  # their arrivals would be counted live and replayed nowhere
        raise ValueError(
            f"mapping: sources {unknown} are not the scenario's; expected some of {sorted(spec.sources)} "
            "(the simulation replays each source's live arrivals)"
        )
    _check_speeds(spec, probe_speed, live_speed, steal_speed, pulse_speed)
    planners = repeated(planners, options.pop("repeat", 1))  # the runs' own labels, LABEL#k, for after_run
    by_label = {split_label(p)[0]: p for p in planners}
    with tempfile.TemporaryDirectory(prefix="adaptflow-compare-") as scratch:
        folder = Path(event_log_dir) if event_log_dir is not None else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)

        def after_run(run: RunResult) -> list[dict[str, Any]]:
            return simulated_app_run(
                spec, run, by_label[run.planner], seeds, interval, folder, live_handoffs, probe_speed, live_speed,
                steal_speed, pulse_speed=pulse_speed,
            )  # fmt: skip

        resume_key = {"simulate": seeds, "live_handoffs": live_handoffs, "probe_speed": probe_speed,
                      "live_speed": live_speed, "steal_speed": steal_speed, "pulse_speed": pulse_speed}  # fmt: skip
        table = compare_on_app(
            app_spec, mapping, spec, planners, produce, interval, drain, event_log_dir, after_run=after_run,
            resume_key=resume_key, **options,
        )  # fmt: skip
    if event_log_dir is not None:
        agreement(table).to_csv(Path(event_log_dir) / "agreement.csv", index=False)
    return table


def _finite(value: Any) -> float | None:
    """A saved row's reading, None where the run had none (NaN in the table, or absent)."""
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


class _SavedRun(RunResult):
    """A live run read back from its ``compare_app.csv`` row and arrival files: what the run's
    tasks met (``service_<stage>``, ``handoff_<stage>``, ``idle_wait_<stage>``), the probe's
    speed (``speed_<host>``), the run's ``steal``, its idle ``pulse`` and its ``nice`` share
    come from the row, not from events or readings that were not kept."""

    row: dict[str, Any]

    @classmethod
    def from_row(cls, row: dict[str, Any], arrivals: dict[str, list[float]]) -> _SavedRun:
        steal, pulse, nice = (_finite(row.get(column)) for column in ("steal", "pulse", "nice"))
        # each stage's pool at the run's start; none in a table from before compare-app kept them
        pools = {k.removeprefix(START_POOL): int(v) for k, v in row.items() if k.startswith(START_POOL) and v == v}
        run = cls(
            row["planner"], [None] * int(row["decisions"]), None, row["seconds"], 0, pools, arrivals,  # type: ignore[list-item, arg-type]
            steal=steal, pulse=pulse, nice=nice,
        )  # fmt: skip
        run.row = row
        return run

    def per_task(self, scenario: Scenario) -> dict[str, float]:
        return {f"{kind}_{name}": float(self.row.get(f"{kind}_{name}", math.nan))
                for name in scenario.stages for kind, _ in PER_TASK}  # fmt: skip

    def speeds(self, scenario: Scenario) -> dict[str, float]:
        return {
            h: float(self.row[f"speed_{h}"])
            for h in scenario.hosts
            if math.isfinite(self.row.get(f"speed_{h}", math.nan))
        }


RESIMULATE_COLUMNS = ("world", "planner", "spec", "interval", "decisions", "seconds")


def resimulate(
    folder: Path,
    scenario: str | Path | Scenario,
    seeds: int = 3,
    probe_speed: bool = False,
    allow_pickle: bool = False,
    live_speed: bool = False,
    live_handoffs: bool = False,
    steal_speed: bool = False,
    planned_on: str | Path | Scenario | None = None,
    live_pools: bool = False,
    pulse_speed: bool = False,
) -> pd.DataFrame:
    """Every live run of a ``compare-app --simulate`` directory simulated again on ``scenario``
    (another calibration, a fitted growth law, or the same one without the probe's speed),
    on the arrivals it met, over as many decisions as it made: its ``live`` rows, each followed
    by its new simulated rows (:func:`simulated_app_run`; judge them with :func:`agreement`).
    Why: the live runs are the expensive part (minutes each, on a quiet machine); a scenario is
    judged against them again in seconds. Nothing in ``folder`` is written. Every run's planner
    spec is checked first, and one whose model file is a pickle (``sb3:``) refused unless
    ``allow_pickle``: a table names the files it loads, and a table can come from anywhere.
    ``live_speed``: the diagnosis row too (:data:`LIVE_SPEED`), from the services the row kept
    (``service_<stage>``), so that :func:`agreement` can tell a gap the run's speed explains.
    ``live_handoffs``: every row with the run's own hand-offs (``handoff_<stage>`` of its row),
    as ``compare-app --live-handoffs``: with ``live_speed``, what is left once both are the run's.
    ``steal_speed``, ``pulse_speed``: each run at its own steal's or pulses' speed (the row's).
    ``planned_on``: the scenario the live runs' planners were built for (compare-app's
    ``--scenario``; default: the copy compare-app kept in ``folder``,
    :data:`~adaptflow.runtime.compare_app.PLANNER_SCENARIO`, else ``scenario``). Why: a planner
    reads the scenario it is built for (erlang staffs for its stages' mean services), so a world
    refitted by ``fit-growth``, whose services carry less and Celery's CPU more, would otherwise
    replay another planner than the one that ran: on the example app erlang then held 5.4
    processes where its live runs held 8.7. ``live_pools``: each run with the pools its event log
    (``LABEL.jsonl``) says it applied (:class:`~adaptflow.policies.static.ScheduledPlanner`)."""
    _check_seeds(seeds)
    folder = Path(folder)
    spec, planner_spec = _planned_on(load_scenario(scenario), folder, planned_on)
    _check_speeds(spec, probe_speed, live_speed, steal_speed, pulse_speed)
    table = saved_compare_table(folder)
    check_trusted(sorted(set(table.loc[table["world"] == "live", "spec"])), allow_pickle, command="resimulate")
    runs = []
    for row in table[table["world"] == "live"].to_dict("records"):
        arrivals = {}
        for source in spec.sources:
            path = arrivals_file(folder, row["planner"], source)
            if path.is_file():
                arrivals[source] = load_trace(path)[0].tolist()
        pools = logged_pools(folder, row["planner"]) if live_pools else None
        runs.append((row, _SavedRun.from_row(row, arrivals), pools))
    rows = []
    with tempfile.TemporaryDirectory(prefix="adaptflow-resimulate-") as scratch:
        for row, run, pools in runs:
            rows.append(row)
            label = f"{row['planner']}@{row['spec']}"
            rows += simulated_app_run(
                spec, run, label, seeds, float(row["interval"]), Path(scratch), probe_speed=probe_speed,
                live_speed=live_speed, live_handoffs=live_handoffs, steal_speed=steal_speed, planned_on=planner_spec,
                pools=pools, pulse_speed=pulse_speed,
            )  # fmt: skip
    return pd.DataFrame(rows)


def _planned_on(world: Scenario, folder: Path, planned_on: str | Path | Scenario | None) -> tuple[Scenario, Scenario]:
    """The world to simulate and the scenario to build the planners on, for :func:`resimulate`:
    ``planned_on``, or the copy compare-app kept in ``folder``, or (neither) ``world`` for both.
    Given one: ``world`` with each stage's pool (``initial``, ``min``, ``max``) the one the live runs
    started from and were bounded by, ``planned_on``'s, and ``planned_on`` itself, checked to
    describe the same workflow (the same stages and sources: a planner built for other stages
    cannot act on this world's). Why the pools: compare-app sets them from its ``--scenario``
    before each run (a static planner's run starts at its own pools, kept in the row's
    ``start_pool_<stage>``, which the replay starts from); a world refitted from runs at the
    calibration's pools would replay runs held at 2 a stage at 1. The runs' accounting too:
    ``planned_on``'s SLA and each stage's ``cost_per_second``, by which the live rows were
    costed: a world is a description of the machine, and one calibrated afresh carries
    ``calibrate``'s defaults (an SLA of 30 s where the runs were judged at 2 s simulated the
    example app's runs 45-58 % cheap on that alone)."""
    kept = folder / PLANNER_SCENARIO
    where = "--planner-scenario"
    if planned_on is None and kept.is_file():
        planned_on, where = kept, f"the scenario compare-app kept, {kept}"
    if planned_on is None:
        return world, world
    planned_on = load_scenario(planned_on)
    for what, ours, theirs in (
        ("stages", world.stages, planned_on.stages), ("sources", world.sources, planned_on.sources)
    ):  # fmt: skip
        if sorted(ours) != sorted(theirs):
            raise ValueError(
                f"{where} ({planned_on.name!r}): {what} {sorted(theirs)}; expected the {what} of "
                f"--scenario {world.name!r}, {sorted(ours)} (the scenario the live runs' planners were built for)"
            )
    data = world.model_dump(mode="json", by_alias=True)
    data["sla"] = planned_on.sla.model_dump(mode="json")
    for name, stage in planned_on.stages.items():
        kept_fields = {"initial", "min", "max", "cost_per_second"}
        data["stages"][name]["workers"].update(stage.workers.model_dump(mode="json", include=kept_fields))
    return parse_scenario(data), planned_on


def saved_compare_table(folder: Path) -> pd.DataFrame:
    """``folder/compare_app.csv``, checked for what :func:`resimulate` reads (``fit-growth
    --session-speed`` checks its folders with it before any work)."""
    path = folder / FINISHED
    if not path.is_file():
        raise ValueError(f"{path}: no such file; expected a directory written by adaptflow compare-app --out")
    table = pd.read_csv(path)
    missing = [c for c in RESIMULATE_COLUMNS if c not in table]
    if missing:
        raise ValueError(
            f"{path}: columns {missing} missing; expected a table written by adaptflow compare-app since it "
            "records each run's spec and interval"
        )
    live = table[table["world"] == "live"]
    blank = [
        f"{c} (live rows {list(live.index[live[c].isna()] + 2)})" for c in RESIMULATE_COLUMNS if live[c].isna().any()
    ]
    if blank:  # + 2: the CSV's line numbers, after its header
        raise ValueError(f"{path}: empty cells in {', '.join(blank)}; expected every live run's {RESIMULATE_COLUMNS}")
    return table


AGREEMENT_METRICS = ("mean_wait", "p95_latency", "throughput", "cost")
"""What the simulation must predict of a live run (docs/deploy.md, step 5)."""
STAGE_METRICS = ("mean_wait", "p95_wait", "throughput", "mean_pool", "service_cv")
"""Judged per stage too (``mean_wait_<stage>`` and so on; ``throughput``: attempts finished per
second): a stage's worker cost is its mean pool times its price, so the pool's gap is the
stage's cost gap. ``service_cv``, its services' spread on a host (:mod:`adaptflow.runtime.live.spread`),
says whether a tail that agrees agrees for the model's reason: on the example app the CPU law
that held the most planner cells over eleven held-out sets spread validate's and write's
services 18-40 % wider than live at the held-out loads (docs/sim_to_real.md)."""
TOLERANCE = 0.10
"""A simulation this close (relative) to the live runs' mean agrees with them."""
SEEDS_SPREAD = "inside the seeds' spread"
"""The verdict of a gap above :data:`TOLERANCE` where every live run's figure lies within the
least and most its own simulated seeds drew (:func:`_seed_range`): the model, were it exact,
would draw a run that far from its mean as often (one run of 180 s on the example app: the 8
seeds' stage p95 waits spanned a median 11-22 % either side of their mean, docs/sim_to_real.md)."""
STAGE_PARTS = (("handoff", "hand-off"), ("idle_wait", "wait met idle"), ("service", "service"),
               ("service_cv", "services' spread"))  # fmt: skip
"""What a stage's wait is made of, as compare-app measures each (``handoff_<stage>`` and so on):
the wait a task met with its stage idle, and the queue behind the services, their spread and
the hand-offs between them. A stage's wait the model misses at the run's own speed names those
that miss the same way (:func:`_parts`): on the example app, of the stage waits three sessions'
fits missed at the runs' own speeds over twelve held-out sets (82, 76, 131), 48, 42 and 95 named
one, most often the hand-off (a level settled on one fit set's runs: validate's, 1.35 times as
long in one session's fit as in the others'); the rest none, which puts them in the queueing
between the parts, such as how items come bunched from the stage before (docs/sim_to_real.md)."""
STAGE_WAITS = {"mean_wait": "mean_wait", "p95_latency": "p95_wait"}
"""A run's figure and the stages' figure it is made of: where a run's misses at its own speed,
the cause names the stages that miss the same way (:func:`_stages`), each of them named by its
own parts in its row (a p95 latency is more than its stages' p95 waits, but a tail long in one
stage is where to look)."""


def agreement(table: pd.DataFrame, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """Simulation against live per planner and metric, over the live runs of each planner
    (``compare-app --repeat``: runs labelled ``LABEL#k`` are one planner's).

    One row per planner and figure: the run's (:data:`AGREEMENT_METRICS`, ``stage`` empty), then
    each stage's (:data:`STAGE_METRICS`, ``metric`` ``mean_wait_<stage>`` and so on) where the
    table has them. Columns: ``live`` (the runs' mean), ``live_min``, ``live_max``, ``live_ci`` (half the 95 %
    Student-t interval of that mean; NaN for one run), ``simulated`` (the mean of the runs'
    ``simulated`` rows, each on its run's arrivals), ``gap`` (simulated over live, minus 1) and
    ``verdict``: ``agrees`` (within ``tolerance``), ``inside the live range`` (no nearer the
    mean than ``tolerance``, but no farther than some live run is: the live runs differ from
    one another by as much as the simulation differs from them) or ``outside``. Why a range and
    not only the 10 %: a live run is one draw of the machine's speed of the moment, and a gap
    smaller than the runs' own spread is not one the model can be asked to close.
    ``attainable`` (and ``attainable_at_live_speed``): how often the model, were it exact, would
    agree with one such run, from its own seeds (:func:`self_agreement`, at :data:`TOLERANCE`
    whatever ``tolerance`` is; NaN without the rows): the yardstick for counting agreements,
    since a figure a run draws widely cannot agree every time.

    With the diagnosis rows of ``--live-speed`` (:data:`LIVE_SPEED`), the same judgement of
    them (``at_live_speed``, ``gap_at_live_speed``, ``verdict_at_live_speed``) and a ``cause``
    for each gap the simulation did not agree on: ``the run's speed`` when at the speed the
    run's own services met it agrees or falls inside the live range (the calibration did not
    know the machine's speed of that moment; the queueing model did not miss), ``not the
    speed`` when it still misses at that speed (the model's; for a run's wait, followed by the
    stages whose waits miss the same way, :func:`_stages`; for a stage's, by its own parts that
    do, :func:`_parts`), ``not diagnosed``
    without those rows; empty where the simulation agreed or nothing was measured."""
    base = table["planner"].map(repeated_label)
    live, simulated_rows, at_speed_rows = (table[table["world"] == w] for w in ("live", "simulated", LIVE_SPEED))
    rows = []
    for planner in dict.fromkeys(base[live.index]):  # the planners in the order first run
        runs = live[base[live.index] == planner]
        predicted = simulated_rows[base[simulated_rows.index] == planner]
        diagnosed = at_speed_rows[base[at_speed_rows.index] == planner]
        labels = list(runs["planner"])
        bounds, at_bounds = (_seeds_rows(table, world, labels) for world in ("simulated", LIVE_SPEED))
        selves, at_selves = (_self_rows(table, world, labels) for world in ("simulated", LIVE_SPEED))
        for stage, metric in _judged(table):
            values = runs[metric].to_numpy(float)
            figures = _against(values, float(predicted[metric].mean()), tolerance, _spread(bounds, metric))
            at_speed = _against(values, float(diagnosed[metric].mean()), tolerance, _spread(at_bounds, metric))
            cause = _cause(figures["verdict"], at_speed["verdict"])
            if cause == "not the speed" and metric in {f"{wait}_{stage}" for wait in STAGE_WAITS.values()}:
                cause += _parts(runs, diagnosed, stage, at_speed["gap"], tolerance)
            elif cause == "not the speed" and metric in STAGE_WAITS:
                cause += _stages(runs, diagnosed, STAGE_WAITS[metric], at_speed["gap"], tolerance)
            rows.append({
                "planner": planner, "stage": stage, "metric": metric, "runs": len(runs), **figures,
                "at_live_speed": at_speed["simulated"], "gap_at_live_speed": at_speed["gap"],
                "verdict_at_live_speed": at_speed["verdict"], "cause": cause,
                "seeds_min_at_live_speed": at_speed["seeds_min"], "seeds_max_at_live_speed": at_speed["seeds_max"],
                "attainable": _attainable(selves, metric), "attainable_at_live_speed": _attainable(at_selves, metric),
            })  # fmt: skip
    return pd.DataFrame(rows)


def agreement_counts(judged: pd.DataFrame) -> pd.DataFrame:
    """Per figure of :func:`agreement`'s rows (a stage's figures pooled over the stages, as
    ``p95_wait (stages)``): how many cells were judged (``cells``: those with a figure), how many
    agree, and how many an exact model would agree on (``attainable``: the sum of the cells'
    chances, :func:`self_agreement`; NaN where a cell has none); the same at the live speed where
    the table has the diagnosis. Why: the issue's goal counts cells within 10 %, and on one short
    run a figure a run draws widely (a stage's p95 wait) cannot reach every cell however right the
    model: the count is read against what the model's own seeds reach."""
    if not len(judged):
        return pd.DataFrame()
    pairs = zip(judged["metric"], judged["stage"], strict=True)
    figure = [m if not st else f"{m.removesuffix('_' + st)} (stages)" for m, st in pairs]
    rows = []
    for name, cells in judged.assign(figure=figure).groupby("figure", sort=False):
        row: dict[str, Any] = {"figure": name}
        for suffix in ("", "_at_live_speed"):
            measured = cells[cells[f"verdict{suffix}"] != "no figure"]
            row[f"cells{suffix}"] = len(measured)
            row[f"agrees{suffix}"] = int((measured[f"verdict{suffix}"] == "agrees").sum())
            chances = measured[f"attainable{suffix}"]
            row[f"attainable{suffix}"] = float(chances.sum()) if len(chances) and chances.notna().all() else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


Spread = tuple[np.ndarray, np.ndarray]
"""Each live run's seeds' least and most of one figure, in the order of the runs."""


def _seeds_rows(table: pd.DataFrame, world: str, labels: list[str]) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The ``WORLD, min`` and ``WORLD, max`` rows (:func:`_seed_range`) of the runs labelled in
    ``labels``, in their order, read once a planner; None where some run has none (one seed, or a
    table from before them)."""
    lows, highs = (_runs_row(table, f"{world}, {k}", labels) for k in ("min", "max"))
    return None if lows is None or highs is None else (lows, highs)


def _self_rows(table: pd.DataFrame, world: str, labels: list[str]) -> pd.DataFrame | None:
    """The ``WORLD, self-agreement`` rows (:func:`self_agreement`) of the runs labelled in
    ``labels``; None where some run has none (one seed, or a table from before them)."""
    return _runs_row(table, f"{world}, {SELF_AGREEMENT}", labels)


def _runs_row(table: pd.DataFrame, world: str, labels: list[str]) -> pd.DataFrame | None:
    """The rows of ``world`` of the runs labelled in ``labels``, in their order; None where some
    run has none: the one reading of a run's seed-range rows."""
    rows = table[table["world"] == world].set_index("planner")
    return rows.loc[labels] if all(label in rows.index for label in labels) else None


def _attainable(rows: pd.DataFrame | None, metric: str) -> float:
    """One figure's :func:`self_agreement` over a planner's runs (their mean), NaN without it.
    For one run, the chance an exact model agrees with it; a mean of several runs agrees more often."""
    if rows is None or metric not in rows:
        return math.nan
    return float(pd.to_numeric(rows[metric], errors="coerce").mean())


def _spread(rows: tuple[pd.DataFrame, pd.DataFrame] | None, metric: str) -> Spread | None:
    """One figure's :data:`Spread` from :func:`_seeds_rows`, or None where they or the figure are missing."""
    if rows is None or metric not in rows[0]:
        return None
    return rows[0][metric].to_numpy(float), rows[1][metric].to_numpy(float)


def _stages(live: pd.DataFrame, diagnosed: pd.DataFrame, wait: str, gap: float, tolerance: float) -> str:
    """The stages whose ``wait`` (``mean_wait`` or ``p95_wait``) the diagnosis rows miss by more
    than ``tolerance`` in the direction of the run's ``gap``, as ``: parse's -14%, ...``, or
    that none does: where a run's wait goes, each of them then named by its own parts. Nothing
    where the table has no stage's ``wait`` (an older compare-app, or a scenario of one queue)."""
    columns = [f"{wait}_{stage}" for stage in _stage_names(live) if f"{wait}_{stage}" in live]
    if not columns:
        return ""
    missed = _missed_alike(live, diagnosed, columns, gap, tolerance)
    named = [f"{column.removeprefix(wait + '_')}'s {off:+.0%}" for column, off in missed]
    return ": " + ", ".join(named) if named else f": no stage's {wait.replace('_', ' ')} off by {tolerance:.0%}"


def _parts(live: pd.DataFrame, diagnosed: pd.DataFrame, stage: str, gap: float, tolerance: float) -> str:
    """The ``stage``'s own parts (:data:`STAGE_PARTS`) that the diagnosis rows miss by more than
    ``tolerance`` in the direction of its wait's ``gap`` (a hand-off too long where the wait is
    too long), as ``: its hand-off +24%, ...``; or that none does. Means over the runs, as the
    wait's own."""
    words = {f"{part}_{stage}": said for part, said in STAGE_PARTS}
    missed = _missed_alike(live, diagnosed, list(words), gap, tolerance)
    named = [f"its {words[column]} {off:+.0%}" for column, off in missed]
    return ": " + ", ".join(named) if named else f": none of its own parts off by {tolerance:.0%}"


def _missed_alike(
    live: pd.DataFrame, diagnosed: pd.DataFrame, columns: list[str], gap: float, tolerance: float
) -> list[tuple[str, float]]:
    """Those of ``columns`` (in the table) whose mean over the diagnosis rows misses their mean
    over the live runs by more than ``tolerance`` in the direction of ``gap``, each with its own
    gap: the one rule :func:`_stages` and :func:`_parts` name by."""
    missed = []
    for column in (c for c in columns if c in live and c in diagnosed):
        seen, mine = float(live[column].mean()), float(diagnosed[column].mean())
        off = mine / seen - 1.0 if seen > 0 else math.nan
        if math.isfinite(off) and abs(off) > tolerance and off * gap > 0:
            missed.append((column, off))
    return missed


def _judged(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(stage, column) of every figure :func:`agreement` judges that ``table`` has: the run's
    (stage ``""``), then each stage's :data:`STAGE_METRICS` that some live run measured (a table
    of an older compare-app has no ``p95_wait_<stage>``: its replays' alone would be rows of no
    figure), stages in the table's order."""
    live = table[table["world"] == "live"]
    whole = [("", m) for m in AGREEMENT_METRICS if m in table]
    staged = [(s, f"{m}_{s}") for s in _stage_names(table) for m in STAGE_METRICS]
    return whole + [(s, c) for s, c in staged if c in live and live[c].notna().any()]


def _stage_names(table: pd.DataFrame) -> list[str]:
    """The stages a compare table holds, in its order: those with a ``mean_wait_<stage>`` column."""
    return [c.removeprefix("mean_wait_") for c in table.columns if c.startswith("mean_wait_")]


def _cause(verdict: str, at_live_speed: str) -> str:
    """What a gap of ``verdict`` comes from, by how the diagnosis at the run's speed fared (:func:`agreement`)."""
    if verdict in ("agrees", "no figure"):
        return ""
    if at_live_speed == "no figure":
        return "not diagnosed"
    return "the run's speed" if at_live_speed in ("agrees", "inside the live range", SEEDS_SPREAD) else "not the speed"


def _against(values: np.ndarray, predicted: float, tolerance: float, spread: Spread | None = None) -> dict[str, Any]:
    """The live runs' ``values`` of one figure judged against the ``predicted`` mean (the
    verdicts of :func:`agreement`); ``spread``: each run's seeds' range, where the table has it."""
    mean = float(values.mean())
    n = len(values)
    ci = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    gap = predicted / mean - 1.0 if mean else math.nan
    inside_seeds = spread is not None and bool(np.all((spread[0] <= values) & (values <= spread[1])))
    if not math.isfinite(gap):  # no item, no such row, or a figure neither world could measure
        verdict = "no figure"
    elif abs(gap) <= tolerance:
        verdict = "agrees"
    elif values.min() <= predicted <= values.max():
        verdict = "inside the live range"
    elif inside_seeds:
        verdict = SEEDS_SPREAD
    else:
        verdict = "outside"
    low, high = (float(spread[0].min()), float(spread[1].max())) if spread is not None else (math.nan, math.nan)
    return {"live": mean, "live_min": float(values.min()), "live_max": float(values.max()), "live_ci": ci,
            "simulated": predicted, "gap": gap, "verdict": verdict, "seeds_min": low, "seeds_max": high}  # fmt: skip


__all__ = [
    "AGREEMENT_METRICS",
    "DRIFT",
    "LIVE_SPEED",
    "MAX_SEEDS",
    "PROBE_PULSE_GAP",
    "SELF_AGREEMENT",
    "STAGE_METRICS",
    "STAGE_PARTS",
    "STAGE_WAITS",
    "TOLERANCE",
    "agreement",
    "agreement_counts",
    "background_warning",
    "compare_app_with_simulation",
    "on_arrivals",
    "probe_warnings",
    "resimulate",
    "saved_compare_table",
    "self_agreement",
    "simulated_app_run",
    "timing_drift",
    "with_handoffs",
]
