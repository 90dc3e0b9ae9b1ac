"""Planners compared live on a user's app (tests/apps/shop.py) on the same arrivals: real Redis,
the shop's own workers, the shop owner's producer replayed once per planner."""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter

import pytest

from adaptflow.runtime.calibrate import calibrate, read_recording
from adaptflow.runtime.compare_app import compare_on_app
from adaptflow.scenario import load_scenario, parse_scenario

from .live_fixtures import broker, redis_server  # noqa: F401  (fixtures)
from .test_user_app import MAPPING, ROOT, SCENARIO, shop  # noqa: F401  (the shop fixture)

ORDERS, RATE = 30, 3.0  # 10 s of orders; enrich at 0.5 s each: one process is overloaded (utilization 1.5)
PRODUCE = [sys.executable, "-m", "tests.apps.shop_produce", "--orders", str(ORDERS), "--rate", str(RATE)]
PRODUCE += ["--seed", "7", "--work", "0.02", "0.5", "0.02"]


@pytest.mark.slow  # make test-slow: keeps make test under 8 minutes on 2 cores
def test_static_and_keda_on_the_same_orders(shop, tmp_path):  # noqa: F811  (the shop fixture)
    table = compare_on_app(
        "tests.apps.shop:app", MAPPING, parse_scenario(SCENARIO), ["static", "queue@keda:target=2"], PRODUCE,
        interval=1.0, drain=30.0, event_log_dir=tmp_path, cwd=ROOT, settle=30.0, limit=60.0, repeat=2,
    )  # fmt: skip
    rows = table.set_index("planner")
    # a LABEL@SPEC row is named by its label; --repeat 2: the second round starts with the second planner
    assert list(rows.index) == ["static#1", "queue#1", "queue#2", "static#2"]
    # the same orders replayed: every one arrived and left in every run
    assert (rows["arrived"] == ORDERS).all() and (rows["completed"] == ORDERS).all()
    # a queue forms at enrich: KEDA's rule grows its pool, static holds the scenario's single process
    for k in ("#1", "#2"):
        assert rows.loc["static" + k, "mean_pool_enrich"] == pytest.approx(1.0, abs=0.05)
        assert rows.loc["queue" + k, "mean_pool_enrich"] > rows.loc["static" + k, "mean_pool_enrich"] + 0.3
        assert rows.loc["queue" + k, "mean_wait"] < rows.loc["static" + k, "mean_wait"]
    # the share of the CPU time wanted during each run that the hypervisor gave away (Linux's steal)
    assert rows["steal"].between(0.0, 1.0).all()
    for label in ("static_1", "queue_1", "static_2", "queue_2"):  # a file name keeps [A-Za-z0-9_.=-] of a label
        records = [json.loads(line) for line in (tmp_path / f"{label}.jsonl").read_text().splitlines()]
        assert records and all("plan" in r for r in records)
    assert (tmp_path / "compare_app.csv").is_file()


def test_simulation_replays_the_arrivals_each_live_run_met(shop, tmp_path):  # noqa: F811
    """``--simulate``: after the live run, the same planner simulated on the scenario with every
    source replaced by that run's arrivals. The shop's tasks sleep fixed times (0.02, 0.5, 0.02 s);
    Celery adds to each task a few ms the machine's load sets, between the events that stamp its
    start and finish (9-10 ms measured beside a training run) and between tasks (8-12 ms), and at
    one enrich process at utilization 1.5 they add up along the queue (a CI run waited 18 % longer
    than the sleeps alone give). So the scenario is made exact from the run itself: each stage's
    service the run's measured mean, and ``live_handoffs`` its hand-off. Then the two worlds'
    waits must agree within 15 %."""
    from adaptflow.experiments.compare_app import simulated_app_run
    from adaptflow.experiments.compare_live import CELERY_DISPATCH_SECONDS

    def after_run(run):
        exact = {**SCENARIO, "stages": {name: {**stage} for name, stage in SCENARIO["stages"].items()}}
        for name in exact["stages"]:
            spans = [finish - start for _, start, finish, _ in run.attempts[name]]
            exact["stages"][name]["service"] = {"dist": "deterministic", "mean": math.fsum(spans) / len(spans)}
        return simulated_app_run(parse_scenario(exact), run, "static", 2, 1.0, tmp_path, live_handoffs=True)

    table = compare_on_app(
        "tests.apps.shop:app", MAPPING, parse_scenario(SCENARIO), ["static"], PRODUCE,
        interval=1.0, drain=30.0, event_log_dir=tmp_path, cwd=ROOT, settle=30.0, limit=60.0, after_run=after_run,
    )  # fmt: skip
    rows = table.set_index("world")
    assert list(rows.index) == ["live", "simulated", "simulated, min", "simulated, max", "simulated, self-agreement"]
    live, sim = rows.loc["live"], rows.loc["simulated"]
    # every order left in both: the replay decides on past the live run's decisions while any
    # remains (a fixed count cut off the last order once under make test's load: 29 of 30)
    assert live["arrived"] == sim["arrived"] == ORDERS and live["completed"] == sim["completed"] == ORDERS
    arrivals = (tmp_path / "static.arrivals.orders.csv").read_text().splitlines()
    assert arrivals[0] == "timestamp,size" and len(arrivals) == ORDERS + 1
    assert live["mean_wait_enrich"] > 2.0  # a real queue: 30 orders at 3/s on one 0.5 s process
    # the hand-off between enrich's backlogged tasks was measured, and simulated as its turnaround
    assert 0.0 < live["handoff_enrich"] < 0.25 and sim["handoff_enrich"] == pytest.approx(live["handoff_enrich"])
    assert math.isnan(live["handoff_ingest"]) and sim["handoff_ingest"] == 0.0  # never backlogged: unknown
    assert 0.5 <= live["service_enrich"] < 0.6 and sim["service_enrich"] == pytest.approx(live["service_enrich"])
    # the way in to an idle stage, read in both worlds by one rule: Celery's few ms live, and
    # simulated the reference's dispatch delay exactly (its floor: the scenario has none);
    # enrich, overloaded, met too few tasks idle
    assert 0.0 < live["idle_wait_ingest"] < 0.1
    assert sim["idle_wait_ingest"] == pytest.approx(CELERY_DISPATCH_SECONDS)
    assert math.isnan(live["idle_wait_enrich"]) and math.isnan(sim["idle_wait_enrich"])
    # the services' spread, one rule in both worlds: sleeps of 0.5 s barely spread live (Celery's
    # few ms between the stamps); the shop's stages are on no host, so the replay reports none
    assert 0.0 < live["service_cv_enrich"] < 0.1 and math.isnan(sim["service_cv_enrich"])
    shown = rows[
        ["mean_wait_enrich", "p95_wait_enrich", "mean_wait", "p95_latency", "service_enrich", "handoff_enrich"]
    ].to_string()
    # each stage's p95 wait, read off the attempts live and the waits simulated: enrich's queue
    # grows along the run, so its p95 is well above its mean in both worlds
    assert live["p95_wait_enrich"] > 1.5 * live["mean_wait_enrich"], shown
    for column in ("mean_wait_enrich", "p95_wait_enrich", "mean_wait", "p95_latency"):  # a miss shows both rows
        assert sim[column] == pytest.approx(live[column], rel=0.15), f"{column}:\n{shown}"
    assert sim["mean_pool_enrich"] == pytest.approx(1.0) and live["mean_pool_enrich"] == pytest.approx(1.0, abs=0.05)
    for stage in SCENARIO["stages"]:  # every order visits each stage once: attempts per second of the run alike
        assert sim[f"throughput_{stage}"] == pytest.approx(live[f"throughput_{stage}"], rel=0.10), stage
    # the scenario the planners were built on, kept for a later resimulate on a refitted one
    assert load_scenario(tmp_path / "scenario.yaml") == parse_scenario(SCENARIO)
    # the run kept as a recording, read and calibrated as adaptflow record's are
    kept = read_recording(tmp_path / "static.recording")
    kinds = Counter(event["type"] for event in kept.events)
    visits = 3 * ORDERS  # every order visits each stage once: each task was sent, received, started, succeeded
    assert [kinds[f"task-{kind}"] for kind in ("sent", "received", "started", "succeeded")] == [visits] * 4
    held = dict.fromkeys(SCENARIO["stages"], 1)  # static: each decision saw the pools it was given
    assert len(kept.pools) == live["decisions"] and all(pools == held for _, pools in kept.pools)
    assert 0 <= kept.meta["steal"] < 1 and kept.meta["stopped"] > kept.meta["started"]
    pulses, meta = kept.pulses, kept.meta  # the CPU pulses of the run, within its recording
    assert len(pulses) >= 2 and meta["started"] <= pulses[0, 0] < pulses[-1, 1] <= meta["stopped"]
    calibration = calibrate(tmp_path / "static.recording", tmp_path / "calibrated.yaml")
    assert load_scenario(calibration.scenario).stages["enrich"].service.expected() == pytest.approx(
        live["service_enrich"], rel=0.1
    )
    # each wait split where it went: enrich's queue sat in the broker (a prefetch of one), and
    # the two parts add up to the wait the live row measured
    split = calibration.report["wait_split"]["enrich"]
    assert split["attempts"] == ORDERS and split["broker_mean"] > 10 * split["worker_mean"]
    assert split["broker_mean"] + split["worker_mean"] == pytest.approx(live["mean_wait_enrich"], rel=0.01)
    # each worker's main process read at both ends of the run (one pid, its CPU rising), so the
    # run reports Celery's own CPU over every one of its visits, as a recording does
    (opened, first), (closed, last) = kept.main_cpu
    assert opened < kept.events[0]["timestamp"] and closed > kept.events[-1]["timestamp"]
    assert set(first) == set(last) == set(SCENARIO["stages"])
    assert all(first[s][0] == last[s][0] and last[s][1] > first[s][1] for s in first)
    cpu = calibration.report["celery_cpu"]["stages"]
    assert {s: cpu[s]["visits"] for s in cpu} == dict.fromkeys(SCENARIO["stages"], ORDERS)
    assert all(0 < cpu[s]["per_visit"] < 0.5 for s in cpu)  # a few ms a visit: not the tasks' 0.5 s sleeps


def test_a_static_planner_s_run_starts_at_its_own_pools_and_is_held_there(shop, tmp_path, capsys, monkeypatch):  # noqa: F811
    """A static planner holds the same pools whatever it sees, so compare-app starts its run at
    them: ``two@static:pool=2`` is held at 2 processes a stage from its first second (the runs
    ``fit-growth`` takes, by its rule for a held pool), its start kept in the row; the next run
    starts back at the scenario's 1. Its simulated twin starts at 2 too, and holds 2 exactly.

    And a compare cut short (Ctrl-C as the second run starts) goes on where it stopped: called
    again, only the second run runs; another command on the same folder is refused first."""
    import adaptflow.runtime.compare_app as compare_module
    from adaptflow.experiments.compare_app import simulated_app_run
    from adaptflow.runtime.calibrate.growth import HELD

    def after_run(run):  # the run at 2 simulated: its twin starts there too
        if run.planner != "two":
            return []
        return simulated_app_run(parse_scenario(SCENARIO), run, "two@static:pool=2", 1, 1.0, tmp_path)

    def ctrl_c_at_the_second_run(target, spec, settings):  # the real run_one for the first run
        if spec == "static":
            raise KeyboardInterrupt
        return run_one(target, spec, settings)

    few = [*PRODUCE[:4], "10", *PRODUCE[5:]]  # 10 orders: the pools are what is tested
    planners = ["two@static:pool=2", "static"]
    options = {"interval": 1.0, "drain": 30.0, "event_log_dir": tmp_path, "cwd": ROOT, "settle": 30.0, "limit": 60.0}
    run_one = compare_module.run_one
    monkeypatch.setattr(compare_module, "run_one", ctrl_c_at_the_second_run)
    with pytest.raises(KeyboardInterrupt):
        compare_on_app("tests.apps.shop:app", MAPPING, parse_scenario(SCENARIO), planners, few, **options,
                       after_run=after_run)  # fmt: skip
    monkeypatch.setattr(compare_module, "run_one", run_one)
    assert not (tmp_path / "compare_app.csv").exists() and (tmp_path / "compare_app.partial.csv").is_file()
    first = (tmp_path / "two.jsonl").stat().st_mtime_ns
    with pytest.raises(ValueError, match=r"(?s)cut short.*runs: \['static'\] where the compare cut short has"):
        compare_on_app("tests.apps.shop:app", MAPPING, parse_scenario(SCENARIO), ["static"], few, **options)
    table = compare_on_app("tests.apps.shop:app", MAPPING, parse_scenario(SCENARIO), planners, few, **options,
                           after_run=after_run)  # fmt: skip
    assert "1 of 2 runs were finished" in capsys.readouterr().err
    assert (tmp_path / "two.jsonl").stat().st_mtime_ns == first  # the finished run was not run again
    assert not (tmp_path / "compare_app.partial.csv").exists() and (tmp_path / "compare_app.csv").is_file()
    live = table[table["world"] == "live"].set_index("planner")
    assert list(live.index) == ["two", "static"]
    for planner, size in (("two", 2), ("static", 1)):
        for stage in SCENARIO["stages"]:
            assert live.loc[planner, f"start_pool_{stage}"] == size, (planner, stage)
            assert abs(live.loc[planner, f"mean_pool_{stage}"] - size) <= HELD, (planner, stage)
    simulated = table[table["world"] == "simulated"].iloc[0]
    assert simulated["planner"] == "two" and all(simulated[f"mean_pool_{s}"] == 2.0 for s in SCENARIO["stages"])


def test_a_saved_run_is_simulated_again_from_the_pools_it_started_at(tmp_path):
    """A row's ``start_pool_<stage>`` (compare-app started a static planner's run at its pools)
    is where ``resimulate`` starts the run again: three processes a stage from the first second
    under a burst, where the same row without it (an older table) starts at the scenario's one a
    stage and grows at the first decision, its new processes ready only at the pool's tick."""
    import pandas as pd

    from adaptflow.experiments.compare_app import resimulate
    from adaptflow.runtime.compare_app import arrivals_file

    pd.DataFrame({"timestamp": [i / 10 for i in range(30)], "size": 1.0}).to_csv(
        arrivals_file(tmp_path, "three#1", "orders"), index=False
    )
    row = {"world": "live", "planner": "three#1", "spec": "static:pool=3", "interval": 1.0, "decisions": 10,
           "seconds": 10.0, "mean_wait": 0.05, "p95_latency": 0.5, "throughput": 3.0, "cost": 90.0}  # fmt: skip

    def simulated(row: dict) -> pd.Series:
        pd.DataFrame([row]).to_csv(tmp_path / "compare_app.csv", index=False)
        table = resimulate(tmp_path, parse_scenario(SCENARIO), seeds=2)
        return table[table["world"] == "simulated"].iloc[0]

    started = simulated({**row, **{f"start_pool_{stage}": 3 for stage in SCENARIO["stages"]}})
    grown = simulated(row)
    assert started["mean_pool_ingest"] == pytest.approx(3.0)
    waits = started["mean_wait_ingest"], grown["mean_wait_ingest"]
    assert waits[0] < 0.5 * waits[1], waits


def test_a_source_no_arrival_came_from_is_left_out_of_the_replay(tmp_path):
    """A trace needs a row: a source the live run met no arrival of is left out of the replay
    (a run with none at all has nothing to simulate), and a mapping whose sources are not the
    scenario's is refused before any run."""
    from adaptflow.experiments.compare_app import compare_app_with_simulation, on_arrivals
    from adaptflow.runtime.compare_app import RunResult

    returns = {"process": "poisson", "rate": 0.5, "to": "store"}
    spec = parse_scenario({**SCENARIO, "sources": {**SCENARIO["sources"], "returns": returns}})
    run = RunResult("static", [], None, 12.0, 0, arrivals={"orders": [0.5, 1.5, 4.0]})  # type: ignore[arg-type]
    replay = on_arrivals(spec, run, tmp_path, 12.0)
    assert list(replay.sources) == ["orders"] and replay.horizon == 12.0
    assert replay.expected_arrivals() == 3
    assert on_arrivals(spec, RunResult("static", [], None, 12.0, 0), tmp_path, 12.0) is None  # type: ignore[arg-type]
    other = {**MAPPING, "sources": {"checkout": {"tasks": ["shop.ingest"]}}}
    with pytest.raises(ValueError, match=r"sources \['checkout'\] are not the scenario's"):
        compare_app_with_simulation("tests.apps.shop:app", other, spec, ["static"], ["true"], 1.0, 1.0, seeds=2)


def test_sigterm_stops_a_compare_and_its_producer_and_leaves_it_to_go_on(shop, broker, tmp_path):  # noqa: F811
    """A service manager's stop (SIGTERM) mid-run, as Ctrl-C: the user's producer (its own
    session) stopped with the command rather than left submitting orders to the app, exit 130,
    and the compare's manifest kept for the same command to go on."""
    import os
    import signal
    import subprocess
    import time

    import yaml

    scenario, mapping, out = tmp_path / "shop.yaml", tmp_path / "mapping.yaml", tmp_path / "cmp"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    mapping.write_text(yaml.safe_dump(MAPPING))
    produce = [sys.executable, "-m", "tests.apps.shop_produce", "--orders", "600", "--rate", "10", "--seed", "11"]
    cmd = [sys.executable, "-m", "adaptflow.cli", "compare-app", "--app", "tests.apps.shop:app", "--mapping"]
    cmd += [str(mapping), "--scenario", str(scenario), "--planners", "static", "--interval", "1", "--settle", "30"]
    cmd += ["--out", str(out), "--", *produce]
    env = {**os.environ, "SHOP_BROKER_URL": broker}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def producing() -> bool:
        pattern = r"^\S+ -m tests\.apps\.shop_produce --orders 600"  # the producer, not the command naming it
        return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0

    try:
        deadline = time.monotonic() + 60
        while not producing() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert producing(), "the producer never started"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 130, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not producing()  # stopped with the command: no order is sent to the app after it
    assert (out / "compare_app.resume.json").is_file() and not (out / "compare_app.csv").exists()


@pytest.mark.slow  # make test-slow (8 s): a producer's lifecycle stays in make test (the SIGTERM test)
def test_a_failing_producer_is_an_error_naming_it(shop, tmp_path):  # noqa: F811
    with pytest.raises(RuntimeError, match="exited with 2"):
        compare_on_app(
            "tests.apps.shop:app", MAPPING, parse_scenario(SCENARIO), ["static"],
            [sys.executable, "-m", "tests.apps.shop_produce", "--rate", "1"],  # --orders missing: argparse exits 2
            interval=0.5, drain=5.0, cwd=ROOT, settle=30.0, limit=30.0,
        )  # fmt: skip


def test_a_cut_short_compare_is_continued_only_by_the_same_command(tmp_path):
    """The progress of ``compare-app --out``: the finished runs' rows read back, the runs done
    known by their live rows, another command's manifest refused (one line a field, both values),
    and ``compare_app.csv`` written only when every run is, the partial files then removed."""
    from adaptflow.runtime.compare_progress import MANIFEST, PARTIAL, Progress

    manifest = {"runs": ["a", "b"], "simulate": 8, "produce": ["python", "-m", "p", "--seed", "7"]}
    progress = Progress.open(tmp_path, manifest)
    progress.start()
    progress.record([{"world": "live", "planner": "a", "mean_wait": 1.0}, {"world": "simulated", "planner": "a"}])
    again = Progress.open(tmp_path, {**manifest, "produce": ("python", "-m", "p", "--seed", "7")})  # argv as a tuple
    assert again.done == {"a"} and [row["world"] for row in again.rows] == ["live", "simulated"]
    with pytest.raises(ValueError) as refused:
        Progress.open(tmp_path, {**manifest, "simulate": 3, "runs": ["b", "a"]})
    lines = str(refused.value).splitlines()
    assert lines[1:3] == [
        "  runs: ['b', 'a'] where the compare cut short has ['a', 'b']",
        "  simulate: 3 where the compare cut short has 8",
    ]
    assert len(lines) == 4 and MANIFEST in lines[3]
    assert not (tmp_path / "compare_app.csv").exists()
    again.record([{"world": "live", "planner": "b", "mean_wait": 2.0}])
    table = again.finish()
    assert list(table["planner"]) == ["a", "a", "b"] and list(table["mean_wait"].iloc[[0, 2]]) == [1.0, 2.0]
    assert (tmp_path / "compare_app.csv").is_file()
    assert not (tmp_path / PARTIAL).exists() and not (tmp_path / MANIFEST).exists()


def test_arguments_are_checked_before_any_run():
    with pytest.raises(ValueError, match=r"nosuch"):
        compare_on_app("tests.apps.shop:app", MAPPING, parse_scenario(SCENARIO), ["nosuch"], ["true"], 1.0, 1.0)
    with pytest.raises(ValueError, match="labels"):
        compare_on_app("tests.apps.shop:app", MAPPING, parse_scenario(SCENARIO), ["static", "static"], ["true"], 1, 1)
    # Builds like a live run, not only parses: a rule whose forecaster is fitted by simulation is
    # refused before the first run (it once failed after two planners' live runs, their table lost).
    with pytest.raises(ValueError, match="'predictive' forecasts with 'holt_winters'"):
        shop = parse_scenario(SCENARIO)
        compare_on_app("tests.apps.shop:app", MAPPING, shop, ["static", "predictive"], ["true"], 1, 1)
    with pytest.raises(ValueError, match=r"\['served@service:http://127.0.0.1:1'\]: compare-app runs each planner in"):
        compare_on_app("tests.apps.shop:app", MAPPING, shop, ["served@service:http://127.0.0.1:1"], ["true"], 1, 1)


def test_the_compare_app_command_needs_a_producer_and_valid_planners(capsys):
    from adaptflow.cli import main

    base = ["compare-app", "--app", "tests.apps.shop:app", "--mapping", "m.yaml", "--scenario", "mmc"]
    assert main([*base, "--planners", "static"]) == 2
    assert "give the producer's command after --" in capsys.readouterr().err
    assert main([*base, "--planners", "static,nope", "--", sys.executable, "-c", "pass"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main([*base, "--planners", "static", "--live-handoffs", "--", sys.executable, "-c", "pass"]) == 2
    assert "--live-handoffs: the hand-offs are replayed in simulation; give --simulate" in capsys.readouterr().err


def test_repeated_runs_rotate_their_order_and_keep_their_planners_label():
    """``--repeat``: rounds of every planner, each round starting one planner later, so no planner
    always runs first after the settle; ``LABEL#k`` names a run, and the planner is its label."""
    from adaptflow.runtime.compare_app import MAX_REPEATS, repeated, repeated_label

    runs = repeated(["static", "queue@keda:target=2", "erlang"], 2)
    assert runs == [
        "static#1@static", "queue#1@keda:target=2", "erlang#1@erlang",
        "queue#2@keda:target=2", "erlang#2@erlang", "static#2@static",
    ]  # fmt: skip
    planners = [repeated_label(run.partition("@")[0]) for run in runs]
    assert planners == ["static", "queue", "erlang", "queue", "erlang", "static"]
    assert repeated_label("blue#green") == "blue#green" and repeated(["static"], 1) == ["static"]
    for bad in (0, MAX_REPEATS + 1, 2.5):
        with pytest.raises(ValueError, match=rf"--repeat {bad}: expected a whole number of runs per planner"):
            repeated(["static"], bad)  # type: ignore[arg-type]


def test_the_simulation_is_judged_against_the_spread_of_the_live_runs():
    """``agreement``: per planner and metric, the live runs' mean, range and 95 % t-interval, the
    simulated rows' mean, and a verdict: within 10 % agrees; beyond, inside the live runs'
    range is as near as the runs are to one another; else outside."""
    import pandas as pd
    from scipy import stats

    from adaptflow.experiments.compare_app import agreement

    def row(world, planner, wait, cost):
        return {"world": world, "planner": planner, "mean_wait": wait, "p95_latency": 1.0, "throughput": 2.0,
                "cost": cost}  # fmt: skip

    table = pd.DataFrame([
        row("live", "erlang#1", 1.0, 100.0), row("simulated", "erlang#1", 1.6, 104.0),
        row("simulated, min", "erlang#1", 0.1, 1.0), row("live", "static#1", 0.5, 50.0),
        row("simulated", "static#1", 0.9, 50.0), row("live", "erlang#2", 2.0, 100.0),
        row("simulated", "erlang#2", 1.4, 106.0), row("live", "static#2", 0.5, 50.0),
        row("simulated", "static#2", 0.9, 50.0),
    ])  # fmt: skip
    rows = agreement(table).set_index(["planner", "metric"])
    assert list(rows.index.get_level_values(0).unique()) == ["erlang", "static"]
    wait = rows.loc[("erlang", "mean_wait")]
    assert wait["runs"] == 2 and wait["live"] == 1.5 and (wait["live_min"], wait["live_max"]) == (1.0, 2.0)
    assert wait["simulated"] == pytest.approx(1.5) and wait["verdict"] == "agrees"  # the min/max rows not counted
    assert wait["live_ci"] == pytest.approx(stats.t.ppf(0.975, 1) * 0.5)  # sd 0.5**0.5, over sqrt(2)
    assert (
        rows.loc[("erlang", "cost"), "gap"] == pytest.approx(0.05)
        and rows.loc[("erlang", "cost"), "verdict"] == "agrees"
    )
    assert rows.loc[("static", "mean_wait"), "verdict"] == "outside"  # 0.9 against two runs at 0.5
    assert rows.loc[("static", "mean_wait"), "gap"] == pytest.approx(0.8)
    table.loc[table.planner == "erlang#1", "mean_wait"] = [1.0, 1.9, 0.1]  # simulated 1.65: 10 % off, within 1-2
    table.loc[table.planner == "erlang#2", "mean_wait"] = [2.0, 1.4]
    wait = agreement(table).set_index(["planner", "metric"]).loc[("erlang", "mean_wait")]
    assert wait["simulated"] == pytest.approx(1.65) and wait["verdict"] == "agrees"
    table.loc[table.planner == "erlang#2", "mean_wait"] = [2.0, 2.5]  # simulated 2.2: 47 % off, outside 1-2
    assert agreement(table).set_index(["planner", "metric"]).loc[("erlang", "mean_wait"), "verdict"] == "outside"
    table.loc[table.planner == "erlang#2", "mean_wait"] = [2.0, 1.9]  # simulated 1.9: 27 % off, inside 1-2
    assert agreement(table).set_index(["planner", "metric"]).loc[("erlang", "mean_wait"), "verdict"] == (
        "inside the live range"
    )


def test_each_stage_is_judged_too_its_wait_and_its_pool_the_stage_s_cost():
    """Item 5 asks per stage: ``agreement`` judges each stage's mean wait, p95 wait, throughput,
    mean pool (its worker cost over its price) and services' spread that the table has, as it
    judges the run's figures, after them, with the stage named; a figure no live run measured is
    left out (stage b's wait here; an older compare-app's runs have no p95 wait, a run of too few
    services no spread)."""
    import pandas as pd

    from adaptflow.experiments.compare_app import agreement

    def row(world: str, planner: str, wait_a: float, pool_b: float) -> dict:
        return {"world": world, "planner": planner, "mean_wait": 1.0, "cost": 10.0, "mean_wait_a": wait_a,
                "mean_pool_a": 2.0, "throughput_a": 3.0, "mean_wait_b": float("nan"),
                "mean_pool_b": pool_b, "service_cv_a": 0.5 if world == "live" else 0.6,
                "service_cv_b": float("nan") if world == "live" else 0.7}  # fmt: skip

    table = pd.DataFrame([
        row("live", "keda#1", 0.2, 3.0), row("simulated", "keda#1", 0.3, 3.1),
        row("live", "keda#2", 0.4, 3.0), row("simulated", "keda#2", 0.5, 3.1),
    ])  # fmt: skip
    judged = agreement(table)
    assert list(zip(judged.stage, judged.metric, strict=True)) == [
        ("", "mean_wait"), ("", "cost"), ("a", "mean_wait_a"), ("a", "throughput_a"), ("a", "mean_pool_a"),
        ("a", "service_cv_a"), ("b", "mean_pool_b"),
    ]  # fmt: skip
    rows = judged.set_index("metric")
    wait_a = rows.loc["mean_wait_a"]  # 0.4 simulated against runs at 0.2 and 0.4: a third long, in their range
    assert wait_a["gap"] == pytest.approx(0.4 / 0.3 - 1) and wait_a["verdict"] == "inside the live range"
    assert rows.loc["mean_pool_b", "gap"] == pytest.approx(0.1 / 3) and rows.loc["mean_pool_b", "verdict"] == "agrees"
    assert rows.loc["service_cv_a", "gap"] == pytest.approx(0.2) and rows.loc["service_cv_a", "verdict"] == "outside"
    table["p95_wait_a"] = [float("nan"), 0.5] * 2  # only simulated: an older compare-app's runs did not read it
    assert "p95_wait_a" not in set(agreement(table).metric)


def test_a_gap_is_put_down_to_the_runs_speed_only_where_the_run_at_its_own_speed_agrees():
    """With ``--live-speed``'s diagnosis rows, each gap the simulation did not agree on gets a
    cause: the run's speed where the diagnosis agrees or falls inside the live range, not the
    speed where it still misses, not diagnosed without the rows; none where it agreed."""
    import pandas as pd

    from adaptflow.experiments.compare_app import LIVE_SPEED, agreement

    def row(world, planner, wait):
        return {"world": world, "planner": planner, "mean_wait": wait, "cost": 10.0}

    table = pd.DataFrame([
        row("live", "slow#1", 1.0), row("simulated", "slow#1", 2.0), row(LIVE_SPEED, "slow#1", 1.05),
        row("live", "slow#2", 1.2), row("simulated", "slow#2", 2.0), row(LIVE_SPEED, "slow#2", 1.15),
        row("live", "model", 1.0), row("simulated", "model", 0.5), row(LIVE_SPEED, "model", 0.6),
        row("live", "spread#1", 1.0), row("simulated", "spread#1", 0.5), row(LIVE_SPEED, "spread#1", 0.7),
        row("live", "spread#2", 0.6), row("simulated", "spread#2", 0.5), row(LIVE_SPEED, "spread#2", 0.7),
        row("live", "plain", 1.0), row("simulated", "plain", 0.5),
    ])  # fmt: skip
    rows = agreement(table).set_index(["planner", "metric"])
    slow = rows.loc[("slow", "mean_wait")]
    assert slow["verdict"] == "outside" and slow["at_live_speed"] == pytest.approx(1.1)
    assert slow["verdict_at_live_speed"] == "agrees" and slow["cause"] == "the run's speed"
    assert rows.loc[("model", "mean_wait"), "gap_at_live_speed"] == pytest.approx(-0.4)
    assert rows.loc[("model", "mean_wait"), "cause"] == "not the speed"
    assert rows.loc[("spread", "mean_wait"), "verdict_at_live_speed"] == "inside the live range"  # 0.7 in 0.6-1.0
    assert rows.loc[("spread", "mean_wait"), "cause"] == "the run's speed"
    assert rows.loc[("plain", "mean_wait"), "cause"] == "not diagnosed"
    assert math.isnan(rows.loc[("plain", "mean_wait"), "at_live_speed"])
    assert (rows.xs("cost", level="metric")["cause"] == "").all()  # every simulation agreed on it


def test_a_wait_the_model_misses_names_the_stages_and_their_own_parts_that_miss_the_same_way():
    """A wait that still misses at the run's own speed is followed down in its cause: a run's
    mean wait names the stages whose mean waits miss by more than 10 % the same way, and a
    stage's wait names its own parts (hand-off, wait met idle, service, services' spread) that
    do; a stage or part that misses the other way, or by less, is not named; where none does the
    cause says so; a wait put down to the run's speed names nothing."""
    import pandas as pd

    from adaptflow.experiments.compare_app import LIVE_SPEED, agreement

    def row(world, planner, wait, wait_a, handoff_a, cv_a, wait_b, wait_c):
        return {"world": world, "planner": planner, "mean_wait": wait, "mean_wait_a": wait_a,
                "p95_wait_a": 3 * wait_a, "handoff_a": handoff_a, "idle_wait_a": 0.01, "service_a": 0.1,
                "service_cv_a": cv_a, "mean_wait_b": wait_b, "handoff_b": 0.02, "mean_wait_c": wait_c,
                "handoff_c": 0.02}  # fmt: skip

    table = pd.DataFrame([
        row("live", "rule", 1.0, 1.0, 0.02, 0.5, 1.0, 1.0),
        row("simulated", "rule", 1.5, 1.5, 0.03, 0.4, 0.5, 1.5),
        row(LIVE_SPEED, "rule", 1.3, 1.4, 0.025, 0.4, 0.6, 1.05),  # a: hand-off +25 %, spread -20 % (the other way)
        row("live", "even", 1.0, 1.0, 0.02, 0.5, 1.0, 1.0),
        row("simulated", "even", 0.7, 1.0, 0.02, 0.5, 1.0, 1.0),
        row(LIVE_SPEED, "even", 0.7, 0.95, 0.02, 0.5, 1.05, 1.0),  # the run's wait short, no stage's by 10 %
    ])  # fmt: skip
    causes = agreement(table).set_index(["planner", "metric"])["cause"]
    assert causes["rule", "mean_wait"] == "not the speed: a's +40%"  # b's -40 % is the other way, c's +5 % less
    assert causes["rule", "mean_wait_a"] == "not the speed: its hand-off +25%"
    assert causes["rule", "p95_wait_a"] == "not the speed: its hand-off +25%"
    assert causes["rule", "mean_wait_b"] == "not the speed: none of its own parts off by 10%"
    assert causes["rule", "mean_wait_c"] == "the run's speed"
    assert causes["rule", "service_cv_a"] == "not the speed"  # a part itself: judged, not explained
    assert causes["even", "mean_wait"] == "not the speed: no stage's mean wait off by 10%"


def test_a_saved_compare_is_simulated_again_as_compare_app_simulated_it(tmp_path, capsys):
    """``adaptflow resimulate``: the live runs of a compare-app directory (their rows and arrival
    files) simulated again on a scenario give what compare-app's own ``--simulate`` gives for
    the same runs, and nothing in the directory is written."""
    import pandas as pd

    from adaptflow.experiments.compare_app import agreement, resimulate, simulated_app_run
    from adaptflow.runtime.compare_app import RunResult, arrivals_file
    from adaptflow.scenario.schema import load_trace

    spec = parse_scenario(SCENARIO)
    rows = []
    for k, (rate, decisions) in enumerate(((2.0, 12), (3.0, 10)), start=1):
        label = f"queue#{k}"
        times = [i / rate for i in range(int(8 * rate))]
        pd.DataFrame({"timestamp": times, "size": 1.0}).to_csv(arrivals_file(tmp_path, label, "orders"), index=False)
        rows.append({"world": "live", "planner": label, "spec": "keda:target=2", "interval": 1.0,
                     "decisions": decisions, "seconds": decisions * 1.0, "mean_wait": 0.05 * k, "p95_latency": 0.5,
                     "throughput": rate, "cost": 20.0 + k})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "compare_app.csv", index=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    table = resimulate(tmp_path, spec, seeds=2)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    seeds_rows = ["simulated, min", "simulated, max", "simulated, self-agreement"]
    assert list(table["world"]) == ["live", "simulated", *seeds_rows] * 2
    (tmp_path / "scratch").mkdir()
    for k, row in enumerate(rows, start=1):
        label = f"queue#{k}"
        arrivals = {"orders": load_trace(arrivals_file(tmp_path, label, "orders"))[0].tolist()}
        run = RunResult(label, [None] * row["decisions"], None, row["seconds"], 0, arrivals=arrivals)  # type: ignore[list-item, arg-type]
        expected = simulated_app_run(spec, run, f"{label}@keda:target=2", 2, 1.0, tmp_path / "scratch")
        got = table[(table["planner"] == label) & (table["world"] == "simulated")].iloc[0]
        assert got["arrived"] == len(arrivals["orders"]) == expected[0]["arrived"]
        for column in ("mean_wait", "p95_latency", "cost", "mean_pool"):
            assert got[column] == pytest.approx(expected[0][column]), column
    judged = agreement(table).set_index("metric")
    assert set(judged["planner"]) == {"queue"} and (judged["runs"] == 2).all()
    # the command prints the runs' figures (not the seeds' shares) and the cells counted against
    # what the model's own seeds reach
    import yaml

    from adaptflow.cli import main

    scenario = tmp_path.parent / f"{tmp_path.name}.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    assert main(["resimulate", str(tmp_path), "--scenario", str(scenario), "--simulate", "2"]) == 0
    printed = capsys.readouterr().out
    assert "self-agreement" not in printed and "simulated, min" in printed
    assert "how many an exact model would agree on" in printed
    assert re.search(r"│ cost +│ +\d of 1 │ +about 1 │", printed), printed  # one cell: its chance, all but 1

    pd.DataFrame([{**rows[0], "spec": "sb3:model.zip"}]).to_csv(tmp_path / "compare_app.csv", index=False)
    with pytest.raises(ValueError, match=r"refusing to resimulate 'sb3:model\.zip'"):
        resimulate(tmp_path, spec)  # a table names the model files it loads: no pickle unless allowed
    pd.DataFrame([rows[0], {**rows[1], "spec": None}]).to_csv(tmp_path / "compare_app.csv", index=False)
    with pytest.raises(ValueError, match=r"empty cells in spec \(live rows \[3\]\)"):
        resimulate(tmp_path, spec)  # a careless edit: the line named, before any planner is built
    pd.DataFrame(rows).drop(columns=["spec"]).to_csv(tmp_path / "compare_app.csv", index=False)
    with pytest.raises(ValueError, match=r"columns \['spec'\] missing"):
        resimulate(tmp_path, spec)


def test_a_saved_compare_is_simulated_again_with_each_runs_own_pools(tmp_path):
    """``resimulate --live-pools``: each run replayed with the pools its event log says it
    applied, not its planner's new choices. A run that held store at 1 for 10 s and then at 4
    (keda at this load would hold 1 throughout) is simulated at that mean pool, 2.5, marked
    ``live_pools``; a guard's record without a decision is skipped; a run without its event log
    is refused, its path named."""
    import pandas as pd

    from adaptflow.experiments.compare_app import resimulate
    from adaptflow.runtime.compare_app import arrivals_file

    spec = parse_scenario(SCENARIO)
    pd.DataFrame({"timestamp": [i * 1.0 for i in range(20)], "size": 1.0}).to_csv(
        arrivals_file(tmp_path, "queue#1", "orders"), index=False
    )
    row = {"world": "live", "planner": "queue#1", "spec": "keda:target=2", "interval": 1.0, "decisions": 20,
           "seconds": 20.0, "mean_wait": 0.05, "p95_latency": 0.5, "throughput": 1.0, "cost": 60.0}  # fmt: skip
    pd.DataFrame([row]).to_csv(tmp_path / "compare_app.csv", index=False)
    with pytest.raises(FileNotFoundError, match=r"queue_1\.jsonl: no event log of run 'queue#1'"):
        resimulate(tmp_path, spec, seeds=1, live_pools=True)
    pools = [{"ingest": 1, "enrich": 1, "store": 1 if k < 10 else 4} for k in range(20)]
    records = [{"applied": {"workers": p, "splits": {}, "clamps": []}} for p in pools]
    records.insert(3, {"event": "guard_takeover", "time": 3.0})
    (tmp_path / "queue_1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    replayed = resimulate(tmp_path, spec, seeds=1, live_pools=True).set_index("world")
    again = resimulate(tmp_path, spec, seeds=1).set_index("world")
    assert replayed.loc["simulated", "live_pools"] == 1.0 and "live_pools" not in again.columns
    assert again.loc["simulated", "mean_pool_store"] == pytest.approx(1.0)
    assert replayed.loc["simulated", "mean_pool_store"] == pytest.approx(2.5)  # billed from each request
    assert replayed.loc["simulated", "mean_pool_ingest"] == pytest.approx(1.0)


def test_a_saved_compare_is_simulated_on_a_refitted_world_with_the_planners_that_ran(tmp_path):
    """``resimulate --planner-scenario``: runs made on a scenario held at 2 processes a stage
    with 0.1 s services, simulated again on a world refitted slower (0.3 s) and written at the
    calibration's 1 a stage. The live planners are rebuilt on the scenario they ran with: static
    keeps 2 a stage, and erlang staffs for the 0.1 s it was given, not the world's 0.3 s (it
    would hold more). Without ``--planner-scenario``, the copy compare-app kept beside the runs
    is the one. The runs are costed as they were live, by the planner scenario's SLA and prices.
    A planner scenario of other stages is refused."""
    import copy

    import pandas as pd

    from adaptflow.experiments.compare_app import resimulate
    from adaptflow.runtime.compare_app import arrivals_file, write_planner_scenario

    planned, world = copy.deepcopy(SCENARIO), copy.deepcopy(SCENARIO)
    for stage in planned["stages"].values():
        stage["workers"] = {**stage["workers"], "initial": 2}
    for stage in world["stages"].values():
        stage["service"] = {"dist": "exponential", "mean": 0.3}
    rows = []
    for label, spec in (("static#1", "static"), ("erlang#1", "erlang:target_wait=0.05")):
        times = [i / 3.0 for i in range(60)]
        pd.DataFrame({"timestamp": times}).to_csv(arrivals_file(tmp_path, label, "orders"), index=False)
        rows.append({"world": "live", "planner": label, "spec": spec, "interval": 1.0, "decisions": 20,
                     "seconds": 20.0, "mean_wait": 0.1, "p95_latency": 1.0, "throughput": 3.0,
                     "cost": 60.0})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "compare_app.csv", index=False)

    def pools(table: pd.DataFrame) -> dict[str, float]:
        simulated = table[table["world"] == "simulated"]
        return dict(zip(simulated["planner"], simulated["mean_pool"], strict=True))

    as_ran = pools(resimulate(tmp_path, parse_scenario(world), seeds=1, planned_on=parse_scenario(planned)))
    rebuilt = pools(resimulate(tmp_path, parse_scenario(world), seeds=1))
    assert as_ran["static#1"] == pytest.approx(6.0) and rebuilt["static#1"] == pytest.approx(3.0)
    assert as_ran["erlang#1"] < rebuilt["erlang#1"] - 0.5, (as_ran, rebuilt)
    write_planner_scenario(tmp_path, parse_scenario(planned))  # as compare-app --out does
    assert pools(resimulate(tmp_path, parse_scenario(world), seeds=1)) == pytest.approx(as_ran)
    # the runs' accounting, not the world's: a world calibrated afresh carries calibrate's SLA (30 s)
    # and prices (1 a second); the live rows were costed by the planner scenario's
    priced = {**planned, "sla": {"latency": 1.0}}
    priced["stages"] = {name: {**stage, "workers": {**stage["workers"], "cost_per_second": 3.0}}
                        for name, stage in planned["stages"].items()}  # fmt: skip
    accounted = {**world, "sla": priced["sla"]}
    accounted["stages"] = {name: {**stage, "workers": {**stage["workers"], "cost_per_second": 3.0}}
                           for name, stage in world["stages"].items()}  # fmt: skip
    figures = ["cost", "sla_violation_rate", "mean_wait", "mean_pool"]
    judged = resimulate(tmp_path, parse_scenario(world), seeds=1, planned_on=parse_scenario(priced))
    by_hand = resimulate(tmp_path, parse_scenario(accounted), seeds=1, planned_on=parse_scenario(priced))
    simulated = judged["world"] == "simulated"
    pd.testing.assert_frame_equal(judged.loc[simulated, figures], by_hand.loc[simulated, figures])
    unpriced = resimulate(tmp_path, parse_scenario(world), seeds=1, planned_on=parse_scenario(planned))
    assert (judged.loc[simulated, "cost"] > 2.5 * unpriced.loc[simulated, "cost"]).all()
    assert (judged.loc[simulated, "sla_violation_rate"] > unpriced.loc[simulated, "sla_violation_rate"]).all()
    other = {**planned, "stages": {"ingest": {**planned["stages"]["ingest"], "next": None}}}
    with pytest.raises(ValueError, match=r"--planner-scenario \('shop'\): stages \['ingest'\]; expected the stages"):
        resimulate(tmp_path, parse_scenario(world), seeds=1, planned_on=parse_scenario(other))
    write_planner_scenario(tmp_path, parse_scenario(other))
    with pytest.raises(ValueError, match=r"the scenario compare-app kept, .*scenario\.yaml \('shop'\): stages"):
        resimulate(tmp_path, parse_scenario(world), seeds=1)


def test_a_single_runs_gap_inside_what_its_own_seeds_drew_is_told_from_one_outside():
    """One live run is one draw of what the model draws once a seed: a gap above 10 % whose live
    figure lies within the least and most of that run's seeds (``simulated, min`` / ``, max``, and
    the same at the live speed) is ``inside the seeds' spread``, put down to the run's speed where
    the diagnosis is; one beyond them is ``outside``; with two runs, every run must lie within its
    own seeds' range; a table without the rows judges as before."""
    import pandas as pd

    from adaptflow.experiments.compare_app import LIVE_SPEED, SEEDS_SPREAD, agreement

    def run(label: str, live: float, mean: float, low: float, high: float, at_speed: float) -> list[dict]:
        worlds = [("live", live), ("simulated", mean), ("simulated, min", low), ("simulated, max", high),
                  (LIVE_SPEED, at_speed), (f"{LIVE_SPEED}, min", low), (f"{LIVE_SPEED}, max", high)]  # fmt: skip
        return [{"world": w, "planner": label, "p95_wait_a": v, "mean_wait_a": 1.0} for w, v in worlds]

    table = pd.DataFrame([
        *run("noisy", 1.0, 0.8, 0.7, 1.05, 0.85),  # 20 % and 15 % short, but 1.0 within 0.7-1.05
        *run("off", 1.0, 0.8, 0.7, 0.95, 0.85),  # the same gaps, 1.0 beyond every seed
        *run("two#1", 1.0, 0.8, 0.7, 1.05, 0.85), *run("two#2", 1.2, 0.8, 0.7, 1.05, 0.85),  # the second beyond
    ])  # fmt: skip
    rows = agreement(table).set_index(["planner", "metric"])
    noisy = rows.loc[("noisy", "p95_wait_a")]
    assert noisy["gap"] == pytest.approx(-0.2) and noisy["verdict"] == SEEDS_SPREAD
    assert noisy["gap_at_live_speed"] == pytest.approx(-0.15) and noisy["verdict_at_live_speed"] == SEEDS_SPREAD
    assert noisy["cause"] == "the run's speed"
    assert (noisy["seeds_min_at_live_speed"], noisy["seeds_max_at_live_speed"]) == (0.7, 1.05)
    off = rows.loc[("off", "p95_wait_a")]
    assert (
        off["verdict"] == "outside"
        and off["verdict_at_live_speed"] == "outside"
        and off["cause"].startswith("not the speed")
    )
    assert rows.loc[("two", "p95_wait_a"), "verdict_at_live_speed"] == "outside"
    assert rows.loc[("noisy", "mean_wait_a"), "verdict"] == "agrees"  # within 10 %: agrees, whatever the seeds
    bare = table[~table["world"].str.endswith((", min", ", max"))]
    assert agreement(bare).set_index(["planner", "metric"]).loc[("noisy", "p95_wait_a"), "verdict"] == "outside"


def test_the_agreements_are_counted_against_what_the_models_own_seeds_reach():
    """``self_agreement``: a figure's share of seeds the other seeds' mean agrees with (within
    10 %, as a run is judged): all of them for a tight figure, none for one whose seeds lie far
    apart, zeros and gaps left out. The seed-range rows carry it (``simulated, self-agreement``),
    ``agreement`` reads it per cell (``attainable``, the mean over a planner's runs) and
    ``agreement_counts`` sums it beside the cells that agree, per figure, a stage's pooled."""
    import pandas as pd

    from adaptflow.experiments.compare_app import (
        LIVE_SPEED,
        SELF_AGREEMENT,
        _seed_range,
        agreement,
        agreement_counts,
        self_agreement,
    )

    seeds = pd.DataFrame({
        "tight": [1.0, 1.02, 0.98, 1.01],  # each within 3 % of the others' mean
        "wide": [1.0, 3.0, 9.0, 27.0],  # 9 against 10.3 the nearest: none within 10 %
        "half": [1.0, 1.0, 1.0, 1.5],  # 1.0 against 1.17 (+17 %), 1.5 against 1.0 (-33 %): none
        "some": [1.0, 1.0, 1.2, 1.0],  # the three 1.0 against 1.07: agree; 1.2 against 1.0 (-17 %): not
        "gaps": [0.0, float("nan"), 2.0, 2.0],  # two seeds measured, equal
    })  # fmt: skip
    shares = self_agreement(seeds)
    assert shares["tight"] == 1.0 and shares["wide"] == 0.0 and shares["half"] == 0.0
    assert shares["some"] == pytest.approx(0.75) and shares["gaps"] == 1.0
    assert math.isnan(self_agreement(seeds[["gaps"]].iloc[:3])["gaps"])  # one seed measured: no share
    rows = _seed_range("simulated", "p", seeds)
    assert [r["world"] for r in rows] == ["simulated, min", "simulated, max", f"simulated, {SELF_AGREEMENT}"]
    assert _seed_range("simulated", "p", seeds.iloc[:1]) == []

    def run(label: str, live: float, wait_share: float) -> list[dict]:
        rows = [{"world": "live", "planner": label, "mean_wait": live, "mean_wait_a": live}]
        for world in ("simulated", LIVE_SPEED):
            rows += [{"world": world, "planner": label, "mean_wait": 1.0, "mean_wait_a": 1.0},
                     {"world": f"{world}, min", "planner": label, "mean_wait": 0.5, "mean_wait_a": 0.5},
                     {"world": f"{world}, max", "planner": label, "mean_wait": 1.5, "mean_wait_a": 1.5},
                     {"world": f"{world}, {SELF_AGREEMENT}", "planner": label, "mean_wait": 1.0,
                      "mean_wait_a": wait_share}]  # fmt: skip
        return rows

    table = pd.DataFrame([*run("x", 1.0, 0.5), *run("y#1", 1.3, 0.25), *run("y#2", 1.3, 0.75)])
    judged = agreement(table).set_index(["planner", "metric"])
    assert judged.loc[("x", "mean_wait_a"), "attainable"] == 0.5
    assert judged.loc[("y", "mean_wait_a"), "attainable_at_live_speed"] == pytest.approx(0.5)  # two runs' mean
    counts = agreement_counts(agreement(table)).set_index("figure")
    assert list(counts.index) == ["mean_wait", "mean_wait (stages)"]
    whole, staged = counts.loc["mean_wait"], counts.loc["mean_wait (stages)"]
    assert (whole["cells"], whole["agrees"], whole["attainable"]) == (2, 1, 2.0)  # y's runs' mean 1.3: 23 % off
    assert (staged["cells_at_live_speed"], staged["agrees_at_live_speed"]) == (2, 1)
    assert staged["attainable_at_live_speed"] == pytest.approx(1.0)
    bare = table[~table["world"].str.endswith(SELF_AGREEMENT)]
    assert math.isnan(agreement_counts(agreement(bare)).set_index("figure").loc["mean_wait", "attainable"])
