"""Live runs from configs, and the simulated world against the live one.

* :func:`live`: ``adaptflow live CONFIG``: planner specs resolved here (``threshold``,
  ``onnx:PATH``...), then :func:`adaptflow.runtime.live_run.run_live_config`.
* :func:`loadgen`: ``adaptflow loadgen``: the scenario's arrivals as Celery tasks.
* :func:`compare_live`: ``adaptflow compare-live``: for one arrival trace (one seed) and one
  planner, the simulated and the measured mean wait, p95 latency and throughput side by side;
  and the live cost and SLA figures of the planner against Celery's own autoscaler
  (``--autoscale=max,min``) on the same load.

The simulated reference runs the scenario as the live system runs it (:func:`as_live`): a
worker's start-up delay is Celery's (a grown prefork pool's processes start at its next
maintenance tick, within 5 wall seconds: 2.5 on average, times the time scale in scenario
seconds) and every pool keeps at least one process, so both worlds run the same system.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adaptflow._signals import sigterm_as_interrupt
from adaptflow.agents import (
    ControlLoop,
    Coordinator,
    CostModel,
    Planner,
    SimClock,
    SimExecutor,
    SimMonitor,
)
from adaptflow.agents.fitting import analyzer_for
from adaptflow.policies import StaticPlanner
from adaptflow.policies.registry import check_trusted, make_planner, split_label
from adaptflow.runtime.celery_app import context_of, make_app
from adaptflow.runtime.live.handoff import mean_of_gaps
from adaptflow.runtime.live.spread import hosted_cv
from adaptflow.runtime.live_run import (
    LiveResult,
    build_loop,
    live_analyzer,
    load_live_config,
    run_live,
    run_live_config,
)
from adaptflow.runtime.loadgen import LoadgenResult, run_loadgen
from adaptflow.runtime.worker import WorkerProcess
from adaptflow.scenario import Scenario, load_scenario, parse_scenario, save_scenario
from adaptflow.scenario.celery_pool import prefork_workers
from adaptflow.simulator import Simulation
from adaptflow.simulator.metrics import StageCounters


def live(config: str | Path, allow_pickle: bool = False, **overrides: Any) -> LiveResult:
    """Run the planner of a live config against its Celery workers (``overrides``: top-level
    config fields, e.g. ``duration=60``). A deployment path: an ``sb3:`` planner (a pickled
    model) is refused unless ``allow_pickle``."""
    cfg = load_live_config(config, **overrides)
    check_trusted([cfg.planner, cfg.fallback], allow_pickle, command="run live")
    scenario = cfg.load_scenario()
    planner, forecaster = make_planner(cfg.planner, scenario, cfg.interval, guard_fallback=cfg.fallback)
    fallback, _ = make_planner(cfg.fallback, scenario, cfg.interval)
    return run_live_config(cfg, planner, fallback, forecaster)


def loadgen(
    scenario: str | Path, broker: str, duration: float | None = None, time_scale: float = 1.0, seed: int = 0,
    prefix: str = "adaptflow",
) -> LoadgenResult:  # fmt: skip
    """Submit ``scenario``'s arrivals for ``seed`` (the trace ``Simulation(scenario, rng=seed)``
    simulates) to the Celery workers on ``broker``, in real time sped up ``time_scale`` times."""
    return run_loadgen(scenario, broker, duration=duration, time_scale=time_scale, seed=seed, prefix=prefix)


CELERY_DISPATCH_SECONDS = 0.002
"""Wall seconds from a visit's publish to a free process starting it (the floor of the live
wait, measured on the built-in app)."""


def as_live(scenario: str | Path | Scenario, time_scale: float = 1.0) -> Scenario:
    """The scenario as the live system runs it: a worker starts at the pool's next maintenance
    tick (``startup_tick``, at a phase drawn per seed) plus the time to fork it, a process retired
    by a shrink is reaped at the next tick as often as Celery did (``late_reap``), a visit waits at
    least Celery's dispatch time, and every pool keeps at least one process (the live envelope's
    minimum), so both worlds run the same system. (A constant half tick, as before, started the
    simulated workers 25 scenario s after a request at x10 where live ones took 0 to 50 s.)

    A stage whose pool the scenario already describes as ticking (``startup_tick``: ``calibrate``
    writes it, with the late reaps, for a recorded prefork worker) keeps its own ``workers``:
    they are that system's, perhaps measured or edited there. Why: overwriting them replayed a
    scenario edited to ``late_reap`` 0 with Celery's measured share, so that figures seemed to
    say the race did not matter (issue 16)."""
    data = load_scenario(scenario).model_dump(mode="json", by_alias=True)
    for stage in data["stages"].values():
        w = stage["workers"]
        if not w.get("startup_tick"):
            w |= prefork_workers(time_scale)  # ticks, fork time, late reaps (scenario/celery_pool.py)
        if not isinstance(stage.get("dispatch_delay"), dict):  # a fitted distribution is kept as it is
            stage["dispatch_delay"] = max(stage.get("dispatch_delay", 0.0), CELERY_DISPATCH_SECONDS * time_scale)
        w["min"], w["max"] = max(1, w["min"]), max(1, w["max"])
        w["initial"] = min(max(w["initial"], w["min"]), w["max"])
    return parse_scenario(data)


def _figures(waits: list[float], latencies: list[float], completed: int, arrived: int, late: int,
             cost: float, worker_seconds: float, duration: float) -> dict[str, float]:  # fmt: skip
    return {
        "mean_wait": float(np.mean(waits)) if waits else float("nan"),
        "p95_latency": float(np.percentile(latencies, 95)) if latencies else float("nan"),
        "throughput": completed / duration,
        "sla_violation_rate": late / arrived if arrived else float("nan"),
        "cost": cost,
        "mean_pool": worker_seconds / duration,
        "arrived": arrived,
        "completed": completed,
    }


def at_tick_phase(scenario: Scenario, fraction: float) -> Scenario:
    """``scenario`` with every pool's ticks at ``fraction`` of a tick (pools with ticks only)."""
    data = scenario.model_dump(mode="json", by_alias=True)
    for stage in data["stages"].values():
        w = stage["workers"]
        if w.get("startup_tick"):
            w["startup_tick_phase"] = fraction * w["startup_tick"]
    return parse_scenario(data)


def at_tick_stratum(scenario: Scenario, seed: int, seeds: int) -> Scenario:
    """``scenario`` for the ``seed``-th of ``seeds`` simulated runs, each pool with ticks and no
    declared phase ticking in its own ``seed``-th stratum of the tick: over the runs, every such
    pool's phase spans the tick evenly (the middle of each of ``seeds`` equal parts, in an order
    per stage, so that stages do not tick together, as separate workers do not).

    Why: where the ticks fall against the decisions is not in a live run's record, and decides
    how long a grown worker waits and how long a late reap holds an item (0 to 5 s). Drawn at
    random per seed, the phases of 8 seeds put write's late reaps 4.2 s after a shrink on
    average, where the tick's uniform phase gives 3.5, and every replayed run met the same 8."""
    data = scenario.model_dump(mode="json", by_alias=True)
    for index, stage in enumerate(data["stages"].values()):
        w = stage["workers"]
        if w.get("startup_tick") and w.get("startup_tick_phase") is None:
            order = np.random.default_rng([index, seeds]).permutation(seeds)  # local: no global state
            w["startup_tick_phase"] = (order[seed % seeds] + 0.5) / seeds * w["startup_tick"]
    return parse_scenario(data)


def simulated_over_ticks(
    scenario: Scenario, planner: str, seed: int, duration: float, interval: float, phases: int
) -> list[dict[str, Any]]:
    """Rows ``simulated`` (the mean over ``phases`` evenly spread tick phases), and the
    column-wise ``simulated, min`` and ``simulated, max`` over them: where Celery's pool ticks
    fall against the planner's decisions is not in the trace (each live run meets them at
    another phase), and a grow that just misses a tick waits a whole one (5 wall s, 50 scenario
    s at x10), so one live run is compared with the spread a tick phase makes."""
    runs = pd.DataFrame(
        [simulated(at_tick_phase(scenario, k / phases), planner, seed, duration, interval) for k in range(phases)]
    )
    rows = [{"world": "simulated", "planner": planner, **runs.mean().to_dict()}]
    if phases > 1:
        rows.append({"world": "simulated, min", "planner": planner, **runs.min().to_dict()})
        rows.append({"world": "simulated, max", "planner": planner, **runs.max().to_dict()})
    return rows


def simulated(
    scenario: Scenario,
    planner: str | Planner,
    seed: int,
    duration: float,
    interval: float,
    analyzer: Any = None,
    settle: float = 0.0,
) -> dict[str, float]:
    """The planner through the Coordinator in simulation, on the trace of ``seed``: the figures
    of :func:`_figures`, and each stage's mean wait, mean pool and mean service time per attempt
    (``mean_wait_<stage>``, ``p95_wait_<stage>``, ``throughput_<stage>``: attempts finished per
    second, ``mean_pool_<stage>``, ``service_<stage>``: a host's sharing
    included; ``service_cv_<stage>``: its spread, on a host, :mod:`~adaptflow.runtime.live.spread`;
    ``handoff_<stage>``: the mean turnaround begun with an item waiting, a host's growth
    included, as a live run's is read: :func:`_backlogged_handoff`).
    ``planner``: a spec, built for ``scenario``, or a planner built already (e.g.
    for the scenario a live run had), reset at the start; then ``analyzer`` is needed too.
    ``analyzer``: the one to run with (reset at the start), e.g. the live run's own; default the
    planner's for ``scenario``. ``settle``: past ``duration``, decide on while items remain, at
    most that long (:meth:`Coordinator.run`); the figures then cover the time run."""
    spec = load_scenario(scenario, horizon=duration)
    sim = Simulation(spec, rng=np.random.default_rng(seed))
    if isinstance(planner, Planner):
        if analyzer is None:
            raise ValueError("simulated: a planner built already needs the analyzer it was built with")
        built = planner
    else:
        built, forecaster = make_planner(planner, spec, interval)
        analyzer = analyzer if analyzer is not None else analyzer_for(built, spec, interval, forecaster)
    loop = ControlLoop(SimMonitor(sim), analyzer, SimExecutor(sim), SimClock(sim), CostModel(), interval)
    steps = Coordinator(loop, built).run(until=duration, settle=settle)
    duration = max(duration, sim.now)  # a settled replay covers its extra decisions too
    end = sim.counters()  # the whole run: counters since t=0, per-item values from t=0
    whole = sim.samples(None, end)
    stage_waits = {name: whole.waits(name) for name in end.stages}
    waits = [w for ws in stage_waits.values() for w in ws]
    # The steps' worker time covers their intervals, the last one past ``duration`` when the
    # interval does not divide it: the mean pool is over that span (as the live rows' is).
    span = sum(s.snapshot.interval for s in steps) or duration
    figures = _figures(
        waits, whole.end_to_end(), end.exits, end.arrived, end.late, sum(s.cost.total for s in steps),
        sum(st.worker_seconds for s in steps for st in s.snapshot.stages.values()), duration,
    )  # fmt: skip
    figures["mean_pool"] *= duration / span
    for name, ws in stage_waits.items():  # each stage's, as compare-app's live rows have them (mean_pool_<stage>)
        figures[f"mean_wait_{name}"] = float(np.mean(ws)) if len(ws) else float("nan")
        figures[f"p95_wait_{name}"] = float(np.percentile(ws, 95)) if len(ws) else float("nan")
        figures[f"mean_pool_{name}"] = sum(s.snapshot.stages[name].worker_seconds for s in steps) / span
        stage = end.stages[name]
        attempts = stage.completed + stage.failures
        figures[f"service_{name}"] = stage.busy_area / attempts if attempts else float("nan")
        figures[f"service_cv_{name}"] = hosted_cv([stage])  # on a host only: NaN off one
        figures[f"throughput_{name}"] = attempts / duration if duration > 0 else float("nan")
        figures[f"handoff_{name}"] = _backlogged_handoff(stage)
        idle_wait = mean_of_gaps(stage.idle_wait_sum, stage.idle_waits)  # live's threshold too
        figures[f"idle_wait_{name}"] = float("nan") if idle_wait is None else idle_wait
    return figures


def _backlogged_handoff(stage: StageCounters) -> float:
    """The stage's mean hand-off as live reads it off task events: the turnarounds begun with an
    item waiting (with none waiting, the gap to the next task is idle time there, and not
    counted), NaN below :data:`~adaptflow.runtime.live.handoff.MIN_GAPS` of them, by live's own
    rule (:func:`~adaptflow.runtime.live.handoff.mean_of_gaps`). Why not the mean of every
    turnaround: a turnaround that grows with the load differs when items wait from when none
    does, so that mean is not the figure live reads (on replays of the example app's runs, -13
    to +26 % from this one per stage; docs/sim_to_real.md). 0 where no turnaround ran at all."""
    if not stage.turnaround_sum:  # none ran (the stage has none): nothing between its tasks
        return 0.0
    mean = mean_of_gaps(stage.backlogged_turnaround_sum, stage.backlogged_turnarounds)
    return float("nan") if mean is None else mean


def _live_figures(result: LiveResult, duration: float) -> dict[str, float]:
    t = result.totals
    cost, worker_seconds = result.cost, result.worker_seconds
    figures = _figures([], [], t.completed, t.arrived, t.late, cost, worker_seconds, duration)
    # the live totals keep waits and latencies in bounded histograms: exact mean, p95 within 1 %
    figures.update(mean_wait=t.mean_wait, p95_latency=t.latency_percentile(95))
    return figures


def measured(
    scenario_path: Path, broker: str, planner: str | None, *, seed: int, duration: float, interval: float,
    time_scale: float, workdir: Path, prefix: str = "adaptflow-compare",
) -> dict[str, float]:  # fmt: skip
    """One live run on fresh workers: ``planner`` resizing managed pools, or (``None``) Celery's
    autoscaler (``--autoscale=max,min`` per stage) with no planner acting. SIGTERM stops it as
    Ctrl-C does: the workers it started (each in a session of its own) are stopped with it."""
    with sigterm_as_interrupt():
        return _measured(
            scenario_path, broker, planner, seed=seed, duration=duration, interval=interval, time_scale=time_scale,
            workdir=workdir, prefix=prefix,
        )  # fmt: skip


def _measured(
    scenario_path: Path, broker: str, planner: str | None, *, seed: int, duration: float, interval: float,
    time_scale: float, workdir: Path, prefix: str,
) -> dict[str, float]:  # fmt: skip
    spec = load_scenario(scenario_path)
    app = make_app(spec, broker, time_scale, prefix)
    client = context_of(app).client
    stale = list(client.scan_iter(f"{prefix}:*"))
    if stale:
        client.delete(*stale)
    for stage in spec.stages:
        client.delete(stage)  # a previous run's queued messages
    # node and file names: the planner's label, without the path an onnx:/sb3: spec carries
    label = re.sub(r"[^A-Za-z0-9_.=-]+", "_", split_label(planner)[0]) if planner else "celery-autoscale"
    workers = []
    for name, stage in spec.stages.items():
        pool = {"concurrency": stage.workers.initial} if planner else {
            "autoscale": (stage.workers.max, max(1, stage.workers.min))}  # fmt: skip
        workers.append(WorkerProcess(
            scenario_path, broker, name, time_scale=time_scale, prefix=prefix, seed=seed,
            name=f"{name}-{label}@%h", log_path=workdir / f"{label}-{name}.log", **pool,
        ).start())  # fmt: skip
    try:
        for w in workers:
            w.wait_ready(app)
        names = {w.stage: w.name for w in workers}
        if planner:
            built, forecaster = make_planner(planner, spec, interval)
        else:
            built, forecaster = StaticPlanner(), "ewma"
        # The loop first, then the load on its clock: scenario time 0 is the first arrival's
        # origin in both worlds, so the first decision sees the empty interval the simulated one
        # sees (a load started before the loop handed the live planner a head start of arrivals).
        loop = build_loop(
            app, names, interval, analyzer=live_analyzer(spec, interval, built, forecaster),
            managed=planner is not None,
        )  # fmt: skip
        stop = threading.Event()
        load = threading.Thread(target=run_loadgen, kwargs={
            "scenario": spec, "app": app, "duration": duration, "seed": seed, "stop": stop, "start": loop.clock.start,
        })  # fmt: skip
        load.start()
        try:
            result = run_live(
                app, names, built, StaticPlanner(), interval=interval, duration=duration, forecaster=forecaster,
                event_log=workdir / f"{label}.jsonl", managed=planner is not None, live=loop,
            )  # fmt: skip
        finally:
            stop.set()
            load.join()
    finally:
        for w in workers:
            w.stop()
    return _live_figures(result, duration)


def compare_live(
    scenario: str | Path, broker: str, planner: str = "threshold", *, seed: int = 0, duration: float = 600.0,
    interval: float = 30.0, time_scale: float = 10.0, autoscaler: bool = True,
    workdir: str | Path = "runs/compare-live", tick_phases: int = 8,
) -> pd.DataFrame:  # fmt: skip
    """One row per world: ``simulated`` (the mean over ``tick_phases`` phases of Celery's pool
    ticks, with their column-wise min and max: see :func:`simulated_over_ticks`) and ``live`` for
    ``planner``, and ``live`` for Celery's autoscaler; columns: mean wait, p95 latency,
    throughput, SLA violation rate, cost, mean pool (all in scenario seconds). Written to
    ``workdir/compare_live.csv``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spec = as_live(scenario, time_scale)
    path = save_scenario(spec, workdir / f"{spec.name}.yaml")
    common = {"seed": seed, "duration": duration, "interval": interval}
    rows = simulated_over_ticks(spec, planner, **common, phases=tick_phases)
    live_common = {**common, "time_scale": time_scale, "workdir": workdir}
    rows.append({"world": "live", "planner": planner, **measured(path, broker, planner, **live_common)})
    if autoscaler:
        rows.append({"world": "live", "planner": "celery --autoscale", **measured(path, broker, None, **live_common)})
    table = pd.DataFrame(rows)
    table.to_csv(workdir / "compare_live.csv", index=False)
    return table
