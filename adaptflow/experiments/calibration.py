"""Calibration checked by simulation: the runtime fits a scenario from a recording
(:mod:`adaptflow.runtime.calibrate`, which may not import the simulator); this binds its checks
(the validation, and the held runs :func:`fit_growth` simulates) to adaptflow's own
:class:`~adaptflow.simulator.Simulation`."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from adaptflow.runtime.calibrate import validate_calibration as _validate
from adaptflow.runtime.calibrate.growth import GrowthFit, GrowthRun, fit_growth_file, write_host_speed
from adaptflow.runtime.calibrate.own_runs import OWN_SEEDS, OwnRuns, note_in_header
from adaptflow.runtime.calibrate.sharing import Sharing, read_sharing
from adaptflow.runtime.compare_progress import FINISHED
from adaptflow.scenario import load_scenario
from adaptflow.scenario.schema import GrowthCounts
from adaptflow.simulator import Simulation

from .compare_app import LIVE_SPEED, resimulate, saved_compare_table
from .gap_trend import counts_of

SESSION_SEEDS = 3
"""Seeds per run of the speed search of ``--session-speed`` (as ``resimulate``'s default)."""


def validate_calibration(recording_dir: str | Path, scenario_path: str | Path, seeds: int = 3) -> pd.DataFrame:
    """Per stage mean wait and throughput, end to end p95 latency and throughput: recorded
    against the calibrated scenario simulated on the recorded arrivals and pool changes."""
    return _validate(recording_dir, scenario_path, Simulation, seeds)


def sharing(
    scenario_path: str | Path, run_paths: Sequence[str | Path], host: str | None = None, scan: bool = False,
    seeds: int = 2, each: bool = False,
) -> Sharing:  # fmt: skip
    """``adaptflow sharing``: how the host's tasks slowed beside each other in the held runs, live
    and in the scenario's simulation of them (:mod:`adaptflow.runtime.calibrate.sharing`)."""
    return read_sharing(scenario_path, run_paths, Simulation, host=host, scan=scan, seeds=seeds, each=each)


def fit_growth(
    scenario_path: str | Path, run_paths: Sequence[str | Path], out: str | Path,
    host: str | None = None, reference: int | None = None, session_speed: bool = False,
    seeds: int = SESSION_SEEDS, stage_slopes: bool = False, line: bool = False, levels: bool = True,
    cpu_law: str | None = None, visit_cpu: float | str | None = None, counts: GrowthCounts = "host",
    own_runs: bool = True, cores: str = "search",
) -> GrowthFit:  # fmt: skip
    """``adaptflow fit-growth``: the host's turnaround growth, and Celery's CPU on it
    (``visit_cpu``, ``handoff_cpu`` or ``oversubscription``) with the stages' CPU shares
    (checked by simulating the held runs), written to ``out``; then, ``own_runs``, the written
    scenario judged on the fit set's own runs (:func:`judge_own_runs`), in ``fit.own_runs`` and
    in the file's header.

    ``session_speed``: the host's ``speed`` too, the mean of the held runs' own speeds on the
    fitted scenario (:func:`run_speeds`), and the laws fitted again with the runs simulated at
    it. Why the speed: the recording fixes speed 1, and a shared VM's speed moves between
    sessions; on the example app the fit set ran at 0.82-0.89 of the recording's speed six
    minutes after it, and runs simulated at 1 were 41-51 % short on mean wait (docs/sim_to_real.md,
    "The whole judgement from scratch"). Runs made in the session the scenario is to predict
    measure the speed it will meet better than the recording does. Why fit again: the simulator
    shares the host's cores among the tasks running at once, and at another speed as many
    overlap no longer; the laws carry what that sharing leaves, so they are fitted at the
    speed the runs met (one round: the speed is measured on the laws fitted at 1). Measured on
    the example app's two fit sets (speeds 1.08 and 1.48), judged at five held-out sets' own
    speeds: 29 -> 32 of 40 cells within 10 % on both (docs/sim_to_real.md)."""
    fit_file = functools.partial(
        fit_growth_file, host=host, reference=reference, simulation=Simulation, stage_slopes=stage_slopes, line=line,
        levels=levels, cpu_law=cpu_law, visit_cpu=visit_cpu, counts=counts, cores=cores,
    )  # fmt: skip
    fit = _fit_at_session_speed(fit_file, scenario_path, run_paths, out, seeds) if session_speed else fit_file(
        scenario_path, run_paths, out)  # fmt: skip
    if own_runs:
        fit.own_runs = judge_own_runs(out, fit)
        if isinstance(fit.own_runs, OwnRuns):
            note_in_header(out, fit.own_runs)
    return fit


def _fit_at_session_speed(
    fit_file: functools.partial[GrowthFit], scenario_path: str | Path, run_paths: Sequence[str | Path],
    out: str | Path, seeds: int,
) -> GrowthFit:  # fmt: skip
    """``--session-speed`` (:func:`fit_growth`): fitted at 1, the runs' own speeds found on that
    fit, fitted again at their mean, written to ``out`` whole or not at all."""
    _check_session_runs(run_paths)
    out = Path(out)
    fitted = out.with_name(f".{out.name}.fitting.yaml")  # beside out: the trace paths are relative to its folder
    try:
        fit = fit_file(scenario_path, run_paths, fitted)
        speeds = run_speeds(fitted, fit, seeds)
        speed = sum(speeds.values()) / len(speeds)
        fit = fit_file(scenario_path, run_paths, fitted, speed=speed)
        fit.session_speeds = speeds
        fit.session_pulses = session_pulses(fitted, fit, speeds)
        write_host_speed(fitted, fit.host, speed, fit.session_pulse)  # the header says where they came from
        fitted.replace(out)  # out written once, whole, or not at all
    finally:
        fitted.unlink(missing_ok=True)
    return fit


def _check_session_runs(run_paths: Sequence[str | Path]) -> None:
    """Before any work: every run file of ``--session-speed`` is a ``compare_app.csv`` (its
    folder is what ``resimulate`` reads), readable by ``resimulate``, with the services the
    speed is searched on."""
    for path in map(Path, run_paths):
        if problem := _speed_search_problem(path):
            raise ValueError(f"--session-speed: {problem}")


def _speed_search_problem(path: Path) -> str | None:
    """Why a run's own speed cannot be searched (``resimulate --live-speed``) for the runs of
    the run file ``path``, or None: it is not a ``compare_app.csv`` (its folder is what
    ``resimulate`` reads), its table is an older compare-app's, or it holds no services. The one
    check of ``--session-speed`` and of the own-runs judgement."""
    if path.name != FINISHED:
        return f"{path}; expected a {FINISHED} in the folder compare-app wrote"
    try:
        columns = saved_compare_table(path.parent).columns
    except ValueError as exc:  # a table of an older compare-app: the line naming what it lacks
        return str(exc)
    if not any(c.startswith("service_") for c in columns):
        return (f"{path} has no service_<stage> columns; expected the runs' mean services (a compare-app since they "
                "were kept), which a run's own speed is searched on")  # fmt: skip
    return None


def session_pulses(scenario_path: str | Path, fit: GrowthFit, speeds: dict[str, float]) -> dict[str, float]:
    """Each run's idle pulse over its own speed (``speeds``, :func:`run_speeds`), where the
    scenario's host has a pulse and every run kept one; else none. Their mean becomes the host's
    ``pulse``: the pulse rate at speed 1 in this session's terms, so that ``--pulse-speed`` reads
    a later run against the session whose laws it meets, not against the recording. Why: on the
    example app on a new VM the fit set's runs met 0.83-0.89 of the recording's speed while
    their pulses read 0.90-1.10 of its pulse, and two held-out sets of the same session ran at
    the recording's pulse 10-36 % short (the app slower against the recording than its idle
    pulses said); read against the session, their mean gaps fell from 21.6 and 28.9 % to 10.6
    and 12.4 % (docs/sim_to_real.md, "A new VM from scratch")."""
    if load_scenario(scenario_path).hosts[fit.host].pulse is None:
        return {}
    pulses: dict[str, float] = {}
    for folder, runs in _runs_by_folder(fit).items():
        table = saved_compare_table(folder)
        live = table[table["world"] == "live"].set_index("planner")
        for run in runs:
            pulse = float(live["pulse"].get(run.planner, math.nan)) if "pulse" in live else math.nan
            pulses[run.session_key] = pulse / speeds[run.session_key]
    return pulses if all(math.isfinite(p) and p > 0 for p in pulses.values()) else {}


def _runs_by_folder(fit: GrowthFit) -> dict[Path, list[GrowthRun]]:
    """``fit``'s runs by the compare-app folder that holds them (each table read once)."""
    by_folder: dict[Path, list[GrowthRun]] = {}
    for run in fit.runs:
        by_folder.setdefault(run.folder, []).append(run)
    return by_folder


def run_speeds(scenario_path: str | Path, fit: GrowthFit, seeds: int = SESSION_SEEDS) -> dict[str, float]:
    """Each run ``fit`` used (``FOLDER/LABEL``, the folder as given): the host's speed at which the
    simulation of ``scenario_path`` met the run's own services, on its arrivals and at the pools
    it held (the search of ``resimulate --live-speed``). Every run must get one: a mean over the
    runs that happened to be measurable would be another session's speed."""
    speeds: dict[str, float] = {}
    for folder, runs in _runs_by_folder(fit).items():
        table = resimulate(folder, scenario_path, seeds=seeds, live_speed=True)
        rows = table[table["world"] == LIVE_SPEED].set_index("planner")
        for run in runs:
            speed = rows[f"speed_{fit.host}"].get(run.planner, math.nan) if f"speed_{fit.host}" in rows else math.nan
            speeds[run.session_key] = float(speed)
    unmeasured = [run for run, speed in speeds.items() if not math.isfinite(speed)]
    if unmeasured:
        raise ValueError(
            f"--session-speed: no speed found for {', '.join(unmeasured)}; expected each held run's services "
            f"(service_<stage>) of the stages on hosts.{fit.host}"
        )
    return speeds


def judge_own_runs(scenario_path: str | Path, fit: GrowthFit, seeds: int = OWN_SEEDS) -> OwnRuns | str:
    """The scenario at ``scenario_path`` (``fit``'s) against ``fit``'s own runs, each simulated
    on its arrivals and at its held pools at its own speed (``resimulate --live-speed``), counted
    as a held-out set's cells are (:func:`~.gap_trend.counts_of`); or why the runs cannot be
    judged (:func:`_speed_search_problem`). Why: see :mod:`adaptflow.runtime.calibrate.own_runs`."""
    for path in dict.fromkeys(run.path for run in fit.runs):
        if problem := _speed_search_problem(path):
            return problem
    tables = []
    for folder, runs in _runs_by_folder(fit).items():
        table = resimulate(folder, scenario_path, seeds=seeds, live_speed=True)
        tables.append((str(folder), table[table["planner"].isin({run.planner for run in runs})]))
    counts = counts_of(tables).set_index("figure")
    stages, planners = ["mean_wait (stages)", "p95_wait (stages)"], ["mean_wait", "p95_latency"]
    if not counts.index.isin(stages).any():
        return "the runs' rows hold no stage's mean_wait_<stage> or p95_wait_<stage>"

    def cells(figures: list[str], column: str) -> float:  # NaN where a figure is missing
        return float(counts.reindex(figures)[f"{column}_at_live_speed"].sum(min_count=len(figures)))

    def count(figures: list[str], column: str) -> int:
        return int(counts.reindex(figures)[f"{column}_at_live_speed"].fillna(0).sum())

    return OwnRuns(
        runs=len(fit.runs), stage_agrees=count(stages, "agrees"), stage_cells=count(stages, "cells"),
        stage_attainable=cells(stages, "attainable"), planner_agrees=count(planners, "agrees"),
        planner_cells=count(planners, "cells"), speed=load_scenario(scenario_path).hosts[fit.host].speed,
    )  # fmt: skip
