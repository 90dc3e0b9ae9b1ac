"""The live world: a real redis-server and real Celery prefork workers, started by the tests on
127.0.0.1 (see live_fixtures.py). Runs sped up ``TIME_SCALE`` times."""

from __future__ import annotations

import itertools
import math
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptflow.agents import Insights, MetricsSnapshot, Plan, Planner, read_event_log
from adaptflow.policies import StaticPlanner, ThresholdPlanner
from adaptflow.runtime.celery_app import context_of
from adaptflow.runtime.live import PoolLedger, PoolState, WallClock
from adaptflow.runtime.live_run import build_loop, load_live_config, run_live
from adaptflow.runtime.loadgen import arrival_trace, run_loadgen
from adaptflow.scenario import load_scenario
from adaptflow.simulator import Simulation

from .live_fixtures import FAILING, PIPELINE, SINGLE, app_for, events, wait_for, write_scenario

REPO = Path(__file__).resolve().parents[1]


class Flaky(Planner):
    """A planner that raises at one decision: the fallback must take over, the loop go on."""

    def __init__(self, inner: Planner, fail_at: int):
        self.inner, self.fail_at, self.calls = inner, fail_at, 0

    def reset(self) -> None:
        self.inner.reset()

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("boom")
        return self.inner.plan(snapshot, insights)


def with_load(app, scenario: Path, duration: float, seed: int = 3):
    stop = threading.Event()
    thread = threading.Thread(
        target=run_loadgen, kwargs={"scenario": scenario, "app": app, "duration": duration, "seed": seed, "stop": stop}
    )
    thread.start()
    return stop, thread


def processes(app, worker: str) -> int:
    stats = app.control.inspect(destination=[worker], timeout=1.0).stats() or {}
    return len(stats[worker]["pool"]["processes"]) if worker in stats else -1


def assert_within_bounds(records: list[dict], scenario, measured: bool = True, beyond: bool = False) -> None:
    """Every applied plan within the scenario's bounds, and (``measured``) every pool as the
    monitor reconciled it. ``beyond``: an applied pool may exceed its bound when the monitor found
    the worker running more than that (it is then being shrunk back), but never what was found."""
    for record in records:
        for stage, m in record["metrics"]["stages"].items():
            w = scenario.stages[stage].workers
            assert not measured or max(1, w.min) <= m["target"] <= w.max, (stage, m["target"], record["time"])
        for stage, n in record["applied"]["workers"].items():
            w, found = scenario.stages[stage].workers, record["metrics"]["stages"][stage]["target"]
            top = max(w.max, found) if beyond else w.max
            assert max(1, w.min) <= n <= top, (stage, n, found, record["time"])


# ------------------------------------------------------------------------------------------------
# Without Redis: the pieces
# ------------------------------------------------------------------------------------------------
def test_loadgen_submits_the_simulators_arrival_trace() -> None:
    spec = load_scenario("quality_drift")
    sim = Simulation(spec, rng=np.random.default_rng(11))
    first = sim._arrivals[0][3]
    simulated = [first[0], *(t for t, _, _ in (next(sim.sources["records"].arrivals) for _ in range(199)))]
    live = [t for t, _, _, _ in itertools.islice(arrival_trace(spec, seed=11, duration=1e9), 200)]
    assert live == simulated


def test_the_simulated_reference_starts_workers_at_celerys_pool_ticks() -> None:
    """compare-live's simulated world grows a pool as Celery's prefork pool does: at the pool's
    next maintenance tick (every 5 wall s, in scenario seconds at the time scale) plus the time
    to fork a process, with Celery's dispatch floor on every visit; every pool keeps one process."""
    from adaptflow.experiments.compare_live import as_live
    from adaptflow.simulator import Simulation

    spec = as_live("mmc", time_scale=10.0)
    workers = spec.stages["work"].workers
    assert (workers.startup_tick, workers.startup_delay, workers.min) == (50.0, pytest.approx(0.8), 1)
    assert spec.stages["work"].dispatch_delay == pytest.approx(0.02)
    sim = Simulation(spec, rng=1)
    stage = sim.stages["work"]
    tick = stage.tick_phase
    sim.run(tick + 1.0)  # just after a tick: a request waits the whole next tick
    sim.set_workers("work", 15)
    sim.run(tick + 50.7)
    assert sim.counters().stages["work"].starting == 5
    sim.run(tick + 50.9)  # forked one after another, 0.8 s apart, from the tick
    assert sim.counters().stages["work"].starting == 4
    sim.run(tick + 54.1)
    assert sim.counters().stages["work"].starting == 0


def test_the_simulated_reference_keeps_a_pool_the_scenario_already_describes() -> None:
    """A stage whose scenario already says its pool ticks (as ``calibrate`` writes a recorded
    prefork worker, perhaps edited since) keeps its own start-up and late reaps in the
    simulated reference; a stage without ticks gets Celery's. Fails where ``as_live`` wrote
    Celery's constants over every stage (a ``late_reap`` of 0 came back as Celery's share)."""
    from adaptflow.experiments.compare_live import as_live
    from adaptflow.scenario import parse_scenario
    from adaptflow.scenario.celery_pool import CELERY_LATE_REAP, CELERY_POOL_TICK

    data = load_scenario("mmc").model_dump(mode="json", by_alias=True)
    stage = data["stages"]["work"]
    stage["workers"] |= {"startup_tick": 3.0, "startup_delay": 0.5, "late_reap": 0.0, "late_reap_after": 2.0}
    own = as_live(parse_scenario(data)).stages["work"].workers
    assert (own.startup_tick, own.startup_delay, own.late_reap, own.late_reap_after) == (3.0, 0.5, 0.0, 2.0)
    stage["workers"] |= {"startup_tick": None, "late_reap": 0.0, "late_reap_after": 0.0}
    celery = as_live(parse_scenario(data)).stages["work"].workers
    assert (celery.startup_tick, celery.late_reap) == (CELERY_POOL_TICK, CELERY_LATE_REAP)


def test_the_seeds_of_a_replay_span_each_pools_tick_phases_evenly() -> None:
    """compare-app's simulated seeds put each ticking pool's phase in its own stratum of the
    tick (the middle of one of ``seeds`` equal parts), every stratum once over the seeds, in an
    order per stage; a phase the scenario declares and a pool without ticks are left alone."""
    from adaptflow.experiments.compare_live import as_live, at_tick_stratum
    from adaptflow.scenario import parse_scenario

    data = as_live("etl_dag").model_dump(mode="json", by_alias=True)
    first, *rest = data["stages"]
    data["stages"][rest[-1]]["workers"] |= {"startup_tick": None, "late_reap": 0.0, "late_reap_after": 0.0}
    data["stages"][first]["workers"]["startup_tick_phase"] = 1.25
    spec, seeds = parse_scenario(data), 8
    runs = [at_tick_stratum(spec, seed, seeds).stages for seed in range(seeds)]
    orders = []
    for name in rest[:-1]:
        tick = spec.stages[name].workers.startup_tick
        phases = [stages[name].workers.startup_tick_phase / tick for stages in runs]
        assert sorted(phases) == pytest.approx([(k + 0.5) / seeds for k in range(seeds)])
        orders.append(phases)
    assert all(stages[first].workers.startup_tick_phase == 1.25 for stages in runs)
    assert all(stages[rest[-1]].workers.startup_tick_phase is None for stages in runs)
    assert len(orders) >= 2 and orders[0] != orders[1]  # the stages do not tick together


def test_the_simulated_reference_spans_the_phases_of_celerys_pool_ticks() -> None:
    """compare-live's simulated rows: the mean over tick phases, and the column-wise min and
    max; a planner that grows the pool (erlang from 1 worker) meets the ticks at different
    times, a static pool never does."""
    from adaptflow.experiments.compare_live import as_live, at_tick_phase, simulated_over_ticks

    spec = as_live("mmc", time_scale=10.0)
    assert at_tick_phase(spec, 0.5).stages["work"].workers.startup_tick_phase == 25.0
    rows = {r["world"]: r for r in simulated_over_ticks(spec, "erlang", seed=1, duration=300, interval=10, phases=4)}
    assert set(rows) == {"simulated", "simulated, min", "simulated, max"}
    assert rows["simulated, min"]["mean_wait"] < rows["simulated"]["mean_wait"] < rows["simulated, max"]["mean_wait"]
    static = simulated_over_ticks(spec, "static", seed=1, duration=300, interval=10, phases=4)
    assert static[1]["mean_wait"] == static[2]["mean_wait"]  # no grow, no tick to meet
    # each stage's figures, as compare-app's live rows have them: one stage holds all the waits
    assert static[0]["mean_wait_work"] == pytest.approx(static[0]["mean_wait"])
    assert static[0]["mean_pool_work"] == pytest.approx(spec.stages["work"].workers.initial)
    assert rows["simulated"]["mean_pool_work"] > spec.stages["work"].workers.initial  # erlang grows from it


def test_wall_clock_keeps_a_fixed_grid() -> None:
    clock = WallClock(time_scale=20.0)
    for _ in range(3):
        time.sleep(0.02)  # work between decisions must not shift the grid
        clock.advance(2.0)
    assert clock.now() == pytest.approx(6.0, abs=0.3)


def test_pool_integral_is_the_step_function_area() -> None:
    pool = PoolState("w", 2, [(0.0, 2)])
    pool.set_target(5, 10.0)
    assert pool.integral(5.0, 12.0) == pytest.approx(2 * 5 + 5 * 2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 30.0), st.integers(1, 8), st.booleans()), min_size=1, max_size=60))
def test_a_pool_billed_interval_by_interval_forgets_what_is_billed_and_bills_the_same(steps: list) -> None:
    """The monitor bills each interval from its start, then forgets the targets superseded
    before it: every bill is the step function's area as if nothing were forgotten, the history
    stays a few entries long however many resizes a long-running loop makes, and the last grow
    (which the executor's refused-shrink re-base waits on) is remembered past the forgetting."""
    pool, whole = PoolState("w", 2, [(0.0, 2)]), PoolState("w", 2, [(0.0, 2)])
    start = wall = 0.0
    last_grow = -math.inf
    for gap, target, bill in steps:
        wall += gap
        last_grow = wall if target > pool.target else last_grow
        pool.set_target(target, wall)
        whole.set_target(target, wall)
        assert pool.last_grow == last_grow
        if bill:  # an interval closes at ``wall``
            assert pool.integral(start, wall) == pytest.approx(whole.integral(start, wall))
            pool.forget_before(start)
            assert pool.history[0][0] <= start and all(t > start for t, _ in pool.history[1:])  # in force, and after
            start = wall
    assert pool.integral(start, wall + 5.0) == pytest.approx(whole.integral(start, wall + 5.0))
    ups = [t for (_, before), (t, n) in itertools.pairwise(whole.history) if n > before]
    assert pool.last_grow == (ups[-1] if ups else -math.inf)


def test_live_config_is_validated(tmp_path: Path) -> None:
    config = load_live_config(REPO / "configs/live/quality_drift.yaml")
    assert config.planner and config.time_scale > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("broker: amqp://x\nscenario: mmc\nduration: 10\nintervall: 3\n")
    with pytest.raises(ValueError) as err:
        load_live_config(bad)
    assert "intervall" in str(err.value) and "broker" in str(err.value)


# ------------------------------------------------------------------------------------------------
# Live
# ------------------------------------------------------------------------------------------------
@pytest.mark.live
def test_end_to_end_loadgen_celery_monitor_planner_resizes_the_pool(broker: str, workers, tmp_path: Path) -> None:
    scenario_path = write_scenario(tmp_path, PIPELINE)
    scenario = load_scenario(scenario_path)
    initial = {"ingest": 1, "fast": 1, "thorough": 1}
    started = workers.start(scenario_path, broker, initial)
    names = {w.stage: w.name for w in started}
    app = app_for(scenario_path, broker)
    planner = Flaky(ThresholdPlanner(target=0.6, stabilization_window=30), fail_at=3)
    stop, load = with_load(app, scenario_path, duration=100)
    try:
        result = run_live(
            app, names, planner, StaticPlanner(), interval=10, duration=100, max_step=1,
            event_log=tmp_path / "events.jsonl",
        )  # fmt: skip
    finally:
        stop.set()
        load.join()
    records = read_event_log(tmp_path / "events.jsonl")
    assert len(records) == result.decisions >= 9
    assert {"plan", "applied", "metrics", "cost", "insights"} <= set(records[0])
    # the planner saw an overloaded ingest stage and grew its pool one step per decision, from
    # the pool it started at (each record's pool is the one after its decision: the first
    # decision can already see the load and grow, when a loaded machine starts the loop late)
    ingest = [initial["ingest"]] + [r["metrics"]["stages"]["ingest"]["target"] for r in records]
    assert max(ingest) >= 3, ingest
    assert all(b - a <= 1 for a, b in itertools.pairwise(ingest)), ingest
    # every clamp is in the log (the idle thorough stage asked for 0 processes, live minimum 1)
    assert any("thorough: 0 clamped to 1" in c for r in records for c in r["applied"]["clamps"])
    assert_within_bounds(records, scenario)
    # the planner's failure was survived through the fallback
    assert result.fallbacks == 1 and "boom" in (result.fallback_reason or "")
    # the worker really runs the pool the ledger says (after the pool's maintenance tick)
    final = result.final_pools["ingest"]
    wait_for(lambda: processes(app, names["ingest"]) == final, 8, 0.5, f"ingest to run {final} processes")
    # metrics are filled as in simulation, and priced by the shared cost model
    last = records[-1]["metrics"]
    assert last["source_arrivals"]["jobs"] > 0 and last["completed"] > 0 and not math.isnan(last["mean_latency"])
    assert records[-1]["cost"]["workers"] == pytest.approx(sum(s["cost"] for s in last["stages"].values()))
    worker_seconds = sum(s["worker_seconds"] for s in last["stages"].values())
    pools = sum(s["target"] for s in last["stages"].values())
    assert worker_seconds == pytest.approx(last["interval"] * pools, rel=0.3)
    assert result.totals.arrived > 150 and result.totals.completed > 0.7 * result.totals.arrived


@pytest.mark.slow  # make test-slow: keeps make test under 8 minutes on 2 cores
@pytest.mark.live
def test_end_to_end_with_the_exported_onnx_planner(broker: str, workers, tmp_path: Path) -> None:
    """loadgen -> Celery -> monitor -> ONNX planner -> pool resized: a planner trained in
    simulation on the same scenario (cloned from the HPA rule, then a little PPO), exported,
    and run live through onnxruntime, with the analyzer it was trained with."""
    import yaml

    from adaptflow.policies.registry import make_planner
    from adaptflow.runtime.onnx_planner import OnnxPlanner

    from .helpers import train_and_export

    scenario_path = write_scenario(tmp_path, PIPELINE)
    scenario = load_scenario(scenario_path)
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "live_onnx",
                "env": {
                    "id": "adaptflow/Autoscale-v0",
                    "options": {"scenario": str(scenario_path), "decision_interval": 10, "action_mode": "level"},
                },
                "warm_start": {"planner": "threshold:target=0.6,stabilization_window=30", "steps": 1500},
                "hyperparameters": {"n_steps": 128, "batch_size": 64, "n_epochs": 2},
                "normalize_observation": True,
                "n_envs": 2,
                "total_timesteps": 512,
                "evaluation": {"every": 512, "episodes": 1, "final_seeds": 0},
            }
        )
    )
    _, onnx_path = train_and_export(tmp_path / "runs", config=str(config))
    planner, _ = make_planner(f"onnx:{onnx_path.parent}", scenario, 10)
    assert isinstance(planner.primary, OnnxPlanner)  # guarded by its training range

    started = workers.start(scenario_path, broker, {"ingest": 1, "fast": 1, "thorough": 1})
    names = {w.stage: w.name for w in started}
    app = app_for(scenario_path, broker)
    stop, load = with_load(app, scenario_path, duration=70)
    try:
        result = run_live(
            app, names, planner, StaticPlanner(), interval=10, duration=70, event_log=tmp_path / "events.jsonl"
        )
    finally:
        stop.set()
        load.join()
    # decision records (the guard's takeover and hand-back records carry an "event" key)
    records = [r for r in read_event_log(tmp_path / "events.jsonl") if "event" not in r]
    assert len(records) >= 6 and result.fallbacks == 0, result.fallback_reason  # no decision failed
    # the analyzer was the one the policy was trained with, forecasts included
    assert len(records[-1]["insights"]["forecasts"]["jobs"]) == planner.analyzer_options["forecast_steps"]
    # the overloaded ingest pool was grown from its single process, and the worker runs it
    ingest = [r["applied"]["workers"]["ingest"] for r in records]
    assert max(ingest) > 1, ingest
    assert_within_bounds(records, scenario)
    final = result.final_pools["ingest"]
    wait_for(lambda: processes(app, names["ingest"]) == final, 8, 0.5, f"ingest to run {final} processes")
    assert result.totals.completed > 0.5 * result.totals.arrived


@pytest.mark.slow  # make test-slow: keeps make test under 8 minutes on 2 cores
@pytest.mark.live
def test_pool_size_reconciliation(broker: str, workers, tmp_path: Path) -> None:
    """The pool the executor applied, what the worker's stats say and what the tasks' own start
    and finish times show, reconciled (see adaptflow.runtime.live.ledger's docstring)."""
    scenario_path = write_scenario(tmp_path, SINGLE)
    (worker,) = workers.start(scenario_path, broker, {"work": 2})
    app = app_for(scenario_path, broker)
    ctx = context_of(app)
    live = build_loop(app, {"work": worker.name}, interval=10)
    executor, monitor, pool = live.executor, live.celery_monitor, live.ledger.pools["work"]
    assert pool.target == 2

    applied = executor.apply(Plan(workers={"work": 100}))  # bounds [1, 6]
    assert applied.workers == {"work": 6} and any("clamped to 6" in c for c in applied.clamps)
    snap = monitor.observe().stages["work"]
    assert snap.target == 6 and snap.active + snap.starting == 6
    # Celery starts the new processes at the pool's next maintenance tick (<= 5 s)
    wait_for(lambda: processes(app, worker.name) == 6, 8, 0.25, "6 processes")
    for k in range(18):
        ctx.submit("jobs", k)
    time.sleep(1.2)  # 0.6 s tasks: six at a time if the pool really has six processes
    snap = monitor.observe().stages["work"]
    assert monitor.last_peaks["work"] == 6, "measured from the tasks' start and finish times"
    assert (snap.active, snap.starting, snap.target) == (6, 0, 6)
    # stats' max-concurrency is the start-up setting, not the pool: never trusted
    assert pool.reported_max_concurrency == 2

    wait_for(lambda: len(events(app, "exit")) == 18, 10, 0.2, "18 items out")
    applied = executor.apply(Plan(workers={"work": -3}))
    assert applied.workers == {"work": 1}
    wait_for(lambda: processes(app, worker.name) == 1, 5, 0.25, "1 process")
    monitor.observe()  # a fresh interval, after the shrink
    for k in range(18, 22):
        ctx.submit("jobs", k)
    wait_for(lambda: len(events(app, "exit")) == 22, 10, 0.2, "22 items out")
    monitor.observe()
    assert monitor.last_peaks["work"] == 1
    assert live.ledger.pools["work"].target == 1

    # a restarted worker starts at its command-line concurrency: the ledger re-bases on it
    worker.stop()
    (again,) = workers.start(scenario_path, broker, {"work": 3})
    live.ledger.workers["work"] = pool.worker = again.name
    snap = monitor.observe().stages["work"]
    assert snap.target == 3 and pool.target == 3


@pytest.mark.live
def test_a_killed_worker_process_loses_no_task(broker: str, workers, tmp_path: Path) -> None:
    scenario_path = write_scenario(tmp_path, SINGLE)
    (worker,) = workers.start(scenario_path, broker, {"work": 2})
    app = app_for(scenario_path, broker)
    ctx = context_of(app)
    submitted = [ctx.submit("jobs", k) for k in range(10)]

    def running_pid() -> int | None:
        active = app.control.inspect(destination=[worker.name], timeout=1.0).active() or {}
        pids = [t["worker_pid"] for t in active.get(worker.name, []) if t.get("worker_pid") and t.get("time_start")]
        return pids[0] if pids else None

    wait_for(lambda: running_pid() is not None, 10, 0.05, "a running task")
    time.sleep(0.1)
    os.kill(running_pid(), signal.SIGKILL)  # a prefork child, mid-task (0.6 s tasks)
    wait_for(lambda: len(events(app, "exit")) >= 10, 30, 0.2, "every item out")
    time.sleep(0.5)
    done = Counter(e["i"] for e in events(app, "exit"))
    assert sorted(done) == sorted(submitted) and set(done.values()) == {1}, done
    starts = Counter(e["k"] for e in events(app, "start"))
    assert max(starts.values()) == 2, "the killed visit was redelivered and ran again"


@pytest.mark.live
def test_rerouting_takes_effect_live(broker: str, workers, tmp_path: Path) -> None:
    scenario_path = write_scenario(tmp_path, PIPELINE)
    (ingest,) = workers.start(scenario_path, broker, {"ingest": 2})  # validation queues left unserved
    app = app_for(scenario_path, broker)
    ctx = context_of(app)
    live = build_loop(app, {"ingest": ingest.name}, interval=10)

    live.executor.apply(Plan(splits={"ingest": {"fast": 1.0, "thorough": 0.0}}))
    for k in range(8):
        ctx.submit("jobs", k)
    wait_for(lambda: ctx.client.llen("fast") == 8, 10, 0.1, "8 items in the fast queue")
    live.executor.apply(Plan(splits={"ingest": {"fast": 0.0, "thorough": 1.0}}))
    for k in range(8, 16):
        ctx.submit("jobs", k)
    wait_for(lambda: ctx.client.llen("thorough") == 8, 10, 0.1, "8 items in the thorough queue")
    snapshot = live.monitor.observe()
    assert ctx.client.llen("fast") == 8
    assert snapshot.splits == {"ingest": {"fast": 0.0, "thorough": 1.0}}
    assert snapshot.stages["thorough"].queue_length == 8 and snapshot.stages["fast"].queue_length == 8
    assert snapshot.stages["ingest"].completed == 16


@pytest.mark.live
def test_the_loop_survives_redis_killed_and_restarted(broker: str, redis_server, workers, tmp_path: Path) -> None:
    scenario_path = write_scenario(tmp_path, PIPELINE)
    scenario = load_scenario(scenario_path)
    started = workers.start(scenario_path, broker, {"ingest": 2, "fast": 1, "thorough": 1})
    names, logs = {w.stage: w.name for w in started}, {w.stage: w.log_path for w in started}
    app = app_for(scenario_path, broker)
    # Celery's consumer reconnects on kombu's fixed back-off, 2, 4, 6, 8 s apart (not
    # configurable): after a 3 s outage it is back 6 to 20 s after the kill, by when the Redis
    # that restarted has replayed its AOF. The run lasts long enough after that (32 s of wall
    # time, the kill at 5 s) to see work done again; at 24 s with the kill at 7 s, a loaded CI
    # machine's workers were still away when the run ended.
    stop, load = with_load(app, scenario_path, duration=160)

    def outage() -> None:
        time.sleep(5.0)
        redis_server.kill()
        time.sleep(3.0)
        redis_server.start()

    killer = threading.Thread(target=outage)
    killer.start()
    live = build_loop(app, names, interval=10, max_step=1)
    try:
        result = run_live(
            app, names, ThresholdPlanner(target=0.6, stabilization_window=30), StaticPlanner(),
            interval=10, duration=160, event_log=tmp_path / "events.jsonl", live=live,
        )  # fmt: skip
    finally:
        killer.join()
        stop.set()
        load.join()
    records = read_event_log(tmp_path / "events.jsonl")
    assert len(result.outages) >= 1
    outage_seen = result.outages[0]
    assert outage_seen.end is not None and outage_seen.failures >= 1
    assert outage_seen.plan["workers"], "the plan in force during the outage is recorded"
    notes = [c for r in records for c in r["applied"]["clamps"] if "redis was unavailable" in c]
    assert notes, "the outage is in the event log"
    # the loop went on after Redis came back, to the end of the run, and saw the work again
    after = [r for r in records if r["decision_time"] > outage_seen.end]
    assert after and records[-1]["time"] >= 150
    assert any(r["metrics"]["completed"] > 0 for r in after)
    # Every pool the executor set stays within bounds. The pool the worker runs may not, for a
    # while: a resize command around a broker restart can take effect twice (kombu publishes a
    # control message with retries), and the worker then runs more processes than the ledger
    # applied (measured: ingest at 5 on a max of 4, with 5 tasks running at once). The monitor
    # adopts that pool, and the executor shrinks it back as its processes go idle (a busy pool
    # shrinks at later decisions): the applied pool is then above the bound, never above the pool
    # the monitor found, and by the end the pools are back within their bounds.
    assert_within_bounds(records, scenario, measured=False, beyond=True)
    assert_within_bounds(records[-1:], scenario)
    # The pools were kept through the outage: once settled (a resize at the last decision shows
    # in the worker's process list a few seconds later), the monitor's reconciliation finds the
    # workers running what the ledger says.
    time.sleep(PoolLedger.SETTLE)
    live.monitor.observe()
    for stage, pool in live.ledger.pools.items():
        listed = processes(app, names[stage])
        assert listed == pool.target or (pool.lingering and listed > pool.target), (
            f"{stage}: the worker lists {listed} processes, the ledger says {pool.target} (history "
            f"{pool.history}); last records {records[-3:]}; its log ends\n{logs[stage].read_text()[-3000:]}"
        )


@pytest.mark.live
@pytest.mark.slow  # make test-slow (10 s): the loop itself runs in make test (test_end_to_end_loadgen_...)
def test_cli_loadgen_and_live(broker: str, workers, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``adaptflow loadgen`` submits the seed's trace; ``adaptflow live CONFIG`` runs the loop on
    it and writes the event log; a wrong config is refused before anything starts."""
    import yaml

    from adaptflow.cli import main

    from .live_fixtures import TIME_SCALE

    scenario_path = write_scenario(tmp_path, SINGLE)
    workers.start(scenario_path, broker, {"work": 2})
    config = tmp_path / "live.yaml"
    settings = {
        "broker": broker,
        "scenario": str(scenario_path),
        "planner": "erlang",
        "interval": 10,
        "duration": 40,
        "time_scale": TIME_SCALE,
        "workers": {"work": "work-0@%h"},
        "event_log": str(tmp_path / "events.jsonl"),
    }
    config.write_text(yaml.safe_dump(settings))
    argv = ["loadgen", str(scenario_path), "--broker", broker, "--duration", "40", "--time-scale", str(TIME_SCALE)]
    loadgen = threading.Thread(target=main, args=([*argv, "--seed", "2"],))
    loadgen.start()
    try:
        assert main(["live", str(config)]) == 0
    finally:
        loadgen.join()
    out = capsys.readouterr().out
    expected = sum(1 for _ in arrival_trace(load_scenario(scenario_path), seed=2, duration=40))
    assert f"{expected} items submitted (0 lost)" in out
    records = read_event_log(tmp_path / "events.jsonl")
    assert len(records) == 4 and sum(r["metrics"]["source_arrivals"]["jobs"] for r in records) > 0

    config.write_text(yaml.safe_dump({**settings, "interval": -1}))
    assert main(["live", str(config)]) == 2
    assert "interval" in capsys.readouterr().err


@pytest.mark.slow  # make test-slow: keeps make test under 8 minutes on 2 cores
@pytest.mark.live
def test_compare_live_runs_both_worlds_and_the_autoscaler_on_one_trace(broker: str, tmp_path: Path) -> None:
    from adaptflow.experiments.compare_live import compare_live

    from .live_fixtures import TIME_SCALE

    scenario_path = write_scenario(tmp_path, SINGLE)
    options = {"seed": 4, "duration": 60, "interval": 10, "time_scale": TIME_SCALE, "workdir": tmp_path / "cl"}
    table = compare_live(scenario_path, broker, "erlang", **options)
    assert list(table["world"]) == ["simulated", "simulated, min", "simulated, max", "live", "live"]
    assert list(table["planner"]) == ["erlang"] * 4 + ["celery --autoscale"]
    # the same arrival trace in all three runs (the last live arrival may land after the last
    # decision's read, at the edge of the run)
    assert table["arrived"].max() - table["arrived"].min() <= 2 and (table["arrived"] > 30).all()
    assert (table["completed"] >= 0.5 * table["arrived"]).all()  # a 60 s run ends with work in flight
    assert table[["mean_wait", "p95_latency", "throughput", "cost", "mean_pool"]].notna().all().all()
    assert (tmp_path / "cl" / "compare_live.csv").is_file()


@pytest.mark.live
def test_a_failing_stage_retries_are_not_arrivals(broker: str, workers, tmp_path: Path) -> None:
    """A stage whose visits fail and are retried, through real Redis and real workers: the
    monitor's arrivals, retries, failures and completions are those of the run's own event
    records (a retry re-enters the queue with its attempt number ``r`` and is not an arrival,
    as in simulation), and every item arrives once at the failing stage."""
    scenario_path = write_scenario(tmp_path, FAILING)
    started = workers.start(scenario_path, broker, {"work": 2, "ship": 1})
    app = app_for(scenario_path, broker)
    ctx = context_of(app)
    live = build_loop(app, {w.stage: w.name for w in started}, interval=10)
    monitor = live.celery_monitor
    seen = {stage: Counter() for stage in FAILING["stages"]}

    def observe() -> None:
        snapshot = monitor.observe()
        assert monitor.last_interval is not None
        for stage, m in snapshot.stages.items():
            retries = monitor.last_interval.stages[stage].retries
            seen[stage].update(arrivals=m.arrivals, retries=retries, failures=m.failures, completed=m.completed)

    n = 40
    for k in range(n):
        ctx.submit("jobs", k)
    deadline = time.monotonic() + 60
    while len(events(app, "exit")) + len(events(app, "giveup")) < n:
        assert time.monotonic() < deadline, "timed out waiting for every item to leave"
        time.sleep(0.5)
        observe()
    observe()

    records = events(app)
    for stage in FAILING["stages"]:
        enters = [r for r in records if r["e"] == "enter" and r["s"] == stage]
        finishes = [r for r in records if r["e"] == "finish" and r["s"] == stage]
        expected = Counter(
            arrivals=sum(1 for r in enters if int(r.get("r") or 0) == 0),
            retries=sum(1 for r in enters if int(r.get("r") or 0) > 0),
            failures=sum(1 for r in finishes if r["x"] == "1"),
            completed=sum(1 for r in finishes if r["x"] == "0"),
        )
        print(f"\n{stage}: monitor {dict(seen[stage])}, event records {dict(expected)}")
        assert seen[stage] == expected, (stage, seen[stage], expected)
    giveups, exits = len(events(app, "giveup")), len(events(app, "exit"))
    work = seen["work"]
    assert work["arrivals"] == n, "each item arrived once; its retries are not arrivals"
    assert work["retries"] > 0 and work["retries"] == work["failures"] - giveups
    assert seen["ship"]["arrivals"] == work["completed"] == exits
    assert monitor.totals.retries == work["retries"] and monitor.totals.failed == giveups
    assert monitor.totals.completed == exits and monitor.totals.arrived == n
