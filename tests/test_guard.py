"""The out-of-distribution guard (issue 14): a TrainingRange records what training saw, a
GuardedPlanner hands decisions to a rule while the load, the forecast error or the observation is
outside it, and back after a few decisions in range; training saves the range, export carries
it, the registry guards learned planners with it, and the evaluation table, the service's
metrics and the live event log count every takeover."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from adaptflow.agents import (
    MetricsSnapshot,
    ObservationEncoder,
    Plan,
    StageMetrics,
    StandardAnalyzer,
    envelope_for,
    read_event_log,
)
from adaptflow.policies import StaticPlanner
from adaptflow.policies.guard import HANDBACK, TAKEOVER, ForecastTracker, GuardedPlanner, TrainingRange
from adaptflow.policies.registry import make_planner
from adaptflow.runtime.fallback import FallbackPlanner
from adaptflow.runtime.service import app_for, create_app, expected_for
from adaptflow.scenario import load_scenario, parse_scenario

from .helpers import shared_export

MMC = load_scenario("mmc")  # one stage "work", one source "jobs"
RATE = 1.0  # items/s of the constant training load
INTERVAL = 30.0
K = 3  # decisions back in range before the guard hands back


def snapshot(k: int, rate: float = RATE) -> MetricsSnapshot:
    """The ``k``-th decision's snapshot of a steady M/M/c system receiving ``rate`` items/s (the
    first one, as every run's, of an empty interval)."""
    n = round(rate * INTERVAL) if k else 0
    stage = StageMetrics(
        queue_length=1, busy=8, active=10, starting=0, target=10, arrivals=n, completed=n, drops=0, failures=0,
        detected=0, mean_wait=0.5, mean_queue_length=0.8, utilization=0.8, worker_seconds=300.0, cost=300.0,
    )  # fmt: skip
    return MetricsSnapshot(
        time=INTERVAL * k, interval=INTERVAL if k else 0.0, stages={"work": stage}, source_arrivals={"jobs": n},
        completed=n, drops=0, failed=0, sla_violations=0, escapes=0, caught=0, mean_latency=1.5,
    )  # fmt: skip


def analyzer() -> StandardAnalyzer:
    """EWMA with alpha 1: the estimate and every forecast are the last interval's rate."""
    return StandardAnalyzer.for_scenario(MMC, INTERVAL, alpha=1.0)


def constant_range(decisions: int = 60) -> TrainingRange:
    """What training on a constant load of RATE items/s saw over ``decisions`` decisions."""
    encoder, a, tracker = ObservationEncoder.for_scenario(MMC), analyzer(), ForecastTracker()
    seen = TrainingRange.for_encoder(encoder)
    for k in range(decisions):
        s = snapshot(k)
        i = a.analyze(s)
        seen.add_observations(encoder.encode(s, i))
        seen.add_decision(*tracker.step(s, i))
    return seen


PRIMARY, FALLBACK = {"work": 10}, {"work": 20}


def guarded(seen: TrainingRange | None = None) -> GuardedPlanner:
    return GuardedPlanner(
        StaticPlanner(workers=PRIMARY), StaticPlanner(workers=FALLBACK), seen or constant_range(),
        encoder=ObservationEncoder.for_scenario(MMC), hand_back_after=K,
    )  # fmt: skip


def run(planner: GuardedPlanner, rates: list[float]) -> list[Plan]:
    """The planner's plans over decisions 0, 1, ... at these rates, with a fresh analyzer."""
    a = analyzer()
    planner.reset()
    plans = []
    for k, rate in enumerate(rates):
        s = snapshot(k, rate)
        plans.append(planner.plan(s, a.analyze(s)))
    return plans


# -- the range and the guard -----------------------------------------------------------------


def test_a_range_fitted_on_a_constant_load() -> None:
    seen = constant_range()
    assert (seen.load["jobs"].low, seen.load["jobs"].high, seen.load["jobs"].samples) == (RATE, RATE, 59)
    assert seen.forecast_error["jobs"].high == 0.0  # an EWMA of a constant is never wrong after its first interval
    assert seen.samples == 60 and np.all(seen.low <= seen.high)
    assert seen.problems({"jobs": RATE * 1.1}, {"jobs": 0.1}, None) == []  # within the tolerance
    assert [r for r, _ in seen.problems({"jobs": 3 * RATE}, {}, None)] == ["load"]
    assert [r for r, _ in seen.problems({"jobs": 0.5 * RATE}, {}, None)] == ["load"]  # below the range too


def test_the_guard_hands_over_on_a_load_jump_and_back_after_it() -> None:
    """A load jump to 3x the trained maximum: the fallback's plan from the jump's first
    decision, one takeover; once the load is back, the learned planner's again on the K-th
    consecutive decision in range (the first decision back is out of range on its forecast error:
    the forecast made during the jump missed the drop)."""
    planner, events = guarded(), []
    planner.add_listener(events.append)
    trained_max = planner.training_range.load["jobs"].high
    rates = [RATE] * 10 + [3 * trained_max] * 5 + [RATE] * 8
    plans = run(planner, rates)
    decided = ["primary" if p.workers == PRIMARY else "fallback" for p in plans]
    assert decided == ["primary"] * 10 + ["fallback"] * (5 + 1 + K - 1) + ["primary"] * (8 - K)
    assert planner.takeovers == 1 and planner.guarded_decisions == 5 + K
    assert planner.last_reason.startswith("load: source 'jobs' at 3/s; trained 1 to 1/s")
    assert [(e["event"], e["decision"], e.get("reason")) for e in events] == [
        (TAKEOVER, 11, "load"),
        (HANDBACK, 10 + 5 + 1 + K, None),  # the last decision out of range was the 16th; K later
    ]
    assert events[0]["time"] == 10 * INTERVAL and "forecast_error" in events[0]["detail"]
    # A second episode starts with the learned planner; the count goes on.
    assert [p.workers for p in run(planner, [RATE, 3 * trained_max])] == [PRIMARY, FALLBACK]
    assert planner.takeovers == 2


def test_hysteresis_one_calm_decision_does_not_hand_back() -> None:
    """Out, in, out, in...: the fallback keeps the decisions (and it is one takeover) until the
    state has been in range for K decisions in a row."""
    planner = guarded()
    jump = 3 * RATE
    rates = [RATE] * 3 + [jump, RATE, RATE, jump] + [RATE] * (K + 2)
    decided = [p.workers == FALLBACK for p in run(planner, rates)]
    # the jumps, and the decision after each (its forecast missed the drop), are out of range;
    # the 2nd calm decision does not hand back, the jump after it starts the count again
    assert decided == [False] * 3 + [True] * (4 + K) + [False] * 2
    assert planner.takeovers == 1


def test_an_observation_outside_the_range_takes_over() -> None:
    """The load as trained, but a queue no training episode built."""
    planner = guarded()
    a = analyzer()
    for k in range(5):
        s = snapshot(k)
        assert planner.plan(s, a.analyze(s)).workers == PRIMARY
    s = snapshot(5)
    s.stages["work"].queue_length = 150
    assert planner.plan(s, a.analyze(s)).workers == FALLBACK
    assert planner.last_reason.startswith("observation: feature 'queue:work' at 7.5; trained 0.05 to 0.05")


def test_the_range_round_trips_through_json() -> None:
    seen = constant_range()
    data = json.loads(json.dumps(seen.to_dict()))  # strict JSON: no NaN, no infinity
    again = TrainingRange.from_dict(data)
    assert again.to_dict() == seen.to_dict()
    probe = ({"jobs": 2.0}, {"jobs": 0.5}, seen.low + 1)
    assert again.problems(*probe) == seen.problems(*probe) != []
    empty = TrainingRange.for_encoder(ObservationEncoder.for_scenario(MMC))
    assert TrainingRange.from_dict(json.loads(json.dumps(empty.to_dict()))).to_dict() == empty.to_dict()
    with pytest.raises(ValueError, match="not a training range: format None"):
        TrainingRange.from_dict({"observation": {}})
    data["load"]["jobs"]["low"] = 5.0
    with pytest.raises(ValueError, match=r"load\['jobs'\]: low 5.0 and high 1.0"):
        TrainingRange.from_dict(data)
    other = ObservationEncoder.for_scenario(load_scenario("etl_diurnal"))
    with pytest.raises(ValueError, match="do not match the encoder's"):
        GuardedPlanner(StaticPlanner(), StaticPlanner(), seen, encoder=other)


class Learned(StaticPlanner):
    """A planner that, like a learned one, does not rely on the executor's clamping."""

    relies_on_clamping = False


def test_it_composes_with_the_fallback_planner() -> None:
    """Inside a FallbackPlanner the guard's rule may ask beyond the bounds (the executor
    clamps, as for any rule) without being replaced; the outer planner reports the takeovers."""
    beyond = {"work": MMC.stages["work"].workers.max + 5}
    inner = GuardedPlanner(
        Learned(workers=PRIMARY), StaticPlanner(workers=beyond), constant_range(),
        encoder=ObservationEncoder.for_scenario(MMC),
    )  # fmt: skip
    outer = FallbackPlanner(inner, StaticPlanner(workers={"work": 1}), envelope_for(MMC))
    a = analyzer()
    plans = [outer.plan(s, a.analyze(s)) for s in (snapshot(0), snapshot(1), snapshot(2, 3 * RATE))]
    assert [p.workers for p in plans] == [PRIMARY, PRIMARY, beyond]
    assert outer.fallbacks == 0 and outer.takeovers == inner.takeovers == 1


# -- the service counts takeovers ------------------------------------------------------------


def request(k: int, rate: float = RATE) -> dict:
    """The decision's snapshot and insights (as the alpha-1 analyzer would say) as a request."""
    s = snapshot(k, rate)
    insights = analyzer().analyze(s)  # alpha 1: the rates of this one interval
    body = insights.to_dict()
    del body["anomalies"]  # named by the service from the flags
    return {"metrics": s.to_dict(), "insights": body}


def test_the_service_counts_a_takeover_and_answers_with_the_fallback() -> None:
    scenario, planner = MMC, guarded()
    expected = expected_for(scenario, 4)
    app = create_app(planner, analyzer(), envelope_for(scenario), expected, StaticPlanner(), names=("ppo", "rule"))
    client = TestClient(app)
    assert client.get("/healthz").json()["guarded"]
    answers = [client.post("/v1/decide", json=request(k, 3 * RATE if k == 4 else RATE)).json() for k in range(9)]
    by_fallback = [a["fallback"] for a in answers]
    assert by_fallback == [False] * 4 + [True] * (1 + K) + [False]
    assert answers[4]["workers"] == FALLBACK and answers[4]["reason"].startswith("out of the training range: load:")
    assert answers[5]["reason"].startswith("out of the training range: forecast_error:")
    assert answers[6]["reason"] == f"out of the training range: back in the training range for 1 of {K} decisions"
    metrics = client.get("/metrics").text
    assert 'adaptflow_guard_takeovers_total{reason="load"} 1.0' in metrics
    assert 'adaptflow_guard_takeovers_total{reason="observation"} 0.0' in metrics
    assert "adaptflow_guard_active 0.0" in metrics  # handed back
    assert 'adaptflow_decisions_total{decided_by="rule"} 4.0' in metrics
    assert "adaptflow_fallbacks_total 4.0" in metrics


# -- a trained model carries its range; the registry guards it -------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny PPO run (normalized observations), exported: (best model, planner.onnx)."""
    return shared_export(tmp_path_factory, "tiny-normalized", "normalize_observation=true")


TINY = load_scenario("etl_diurnal", horizon=1800)


def test_a_trained_model_carries_its_range_and_is_guarded(
    trained: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from adaptflow.experiments.training import RANGE_EPISODES
    from adaptflow.policies.onnx import OnnxPlanner
    from adaptflow.policies.sb3 import SB3Planner
    from adaptflow.policies.staffing import ErlangPlanner

    model, onnx_path = trained
    run_dir = model.parent
    final = json.loads((run_dir / "final_model.json").read_text())["training_range"]
    encoder = ObservationEncoder.for_scenario(TINY)
    assert final["observation"]["features"] == [f.name for f in encoder.features]
    assert final["observation"]["samples"] == 2048  # every env's observation at every step
    intervals = round(1800 / 30)
    assert final["load"]["events"]["samples"] == RANGE_EPISODES * intervals
    assert final["forecast_error"]["events"]["samples"] == RANGE_EPISODES * (intervals - 1)
    low, high = np.array(final["observation"]["low"]), np.array(final["observation"]["high"])
    assert np.all(low <= high) and np.all(low >= encoder.low) and np.all(high <= encoder.high)
    assert np.any(high > low)  # raw observations, not VecNormalize's normalized ones (whose range is ~[-10, 10])
    for sidecar in [run_dir / "best_model.json", *(run_dir / "checkpoints").glob("model_*.json")]:
        assert json.loads(sidecar.read_text())["training_range"]["load"] == final["load"]
    assert (
        json.loads(onnx_path.with_suffix(".json").read_text())["training_range"]
        == json.loads(model.with_suffix(".json").read_text())["training_range"]
    )

    planner, forecaster = make_planner(f"sb3:{model}", TINY, 30.0)
    assert isinstance(planner, GuardedPlanner) and isinstance(planner.primary, SB3Planner)
    assert isinstance(planner.fallback, ErlangPlanner) and forecaster == "ewma"
    assert planner.analyzer_state == planner.primary.analyzer_state  # whoever runs it loads the trained analyzer
    assert isinstance(make_planner(f"sb3:{model}", TINY, 30.0, guard_fallback="static")[0].fallback, StaticPlanner)
    assert isinstance(make_planner(f"sb3:{model}", TINY, 30.0, guard_fallback=None)[0], SB3Planner)
    exported, _ = make_planner(f"onnx:{onnx_path.parent}", TINY, 30.0)
    assert isinstance(exported, GuardedPlanner) and isinstance(exported.primary, OnnxPlanner)
    with pytest.raises(ValueError, match="guard fallback 'sb3:x': expected a rule"):
        make_planner(f"sb3:{model}", TINY, 30.0, guard_fallback="sb3:x")

    old = tmp_path / "old_model.zip"  # a model saved before training ranges: unguarded, said so
    shutil.copy(model, old)
    meta = json.loads(model.with_suffix(".json").read_text())
    del meta["training_range"]
    old.with_suffix(".json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="adaptflow.policies.registry"):
        unguarded, _ = make_planner(f"sb3:{old}", TINY, 30.0)
    assert isinstance(unguarded, SB3Planner) and "carries no training range" in caplog.text


def test_the_evaluation_table_counts_takeovers_under_three_times_the_trained_load(trained: tuple[Path, Path]) -> None:
    from adaptflow.experiments.evaluation import evaluate

    model, _ = trained
    data = TINY.model_dump(mode="json", by_alias=True)
    data["sources"]["events"]["rate"].update(base=18.0, amplitude=12.0)  # the tiny run saw 2-6 items/s
    heavy = parse_scenario(data)
    table = evaluate(heavy, [f"ppo@sb3:{model}"], seeds=1, interval=30.0, processes=1).table
    assert table.takeovers.iloc[0] >= 1


def test_the_service_of_an_exported_model_counts_a_load_takeover(trained: tuple[Path, Path]) -> None:
    _, onnx_path = trained
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    peak = meta["training_range"]["load"]["events"]["high"]
    client = TestClient(app_for(f"onnx:{onnx_path.parent}", fallback="erlang"))
    stage = {"queue_length": 0, "busy": 1, "active": 2, "target": 2}
    jump = round(3 * peak * 30)
    body = {
        "metrics": {
            "time": 30.0, "interval": 30.0, "stages": dict.fromkeys(meta["scenario"]["stages"], stage),
            "source_arrivals": {"events": jump},
        }
    }  # fmt: skip
    answer = client.post("/v1/decide", json=body).json()
    assert answer["fallback"] and answer["reason"].startswith("out of the training range: load: source 'events'")
    assert client.get("/healthz").json()["guarded"]
    metrics = client.get("/metrics").text
    assert 'adaptflow_guard_takeovers_total{reason="load"} 1.0' in metrics and "adaptflow_guard_active 1.0" in metrics
    assert 'adaptflow_decisions_total{decided_by="erlang"} 1.0' in metrics


# -- the live event log ------------------------------------------------------------------------


@pytest.mark.slow  # make test-slow: keeps make test under 8 minutes on 2 cores
@pytest.mark.live
def test_the_live_event_log_records_each_takeover_and_hand_back(broker: str, workers, tmp_path: Path) -> None:
    """A guard whose training saw no load at all: the live load makes it take over, and once
    the load generator stops it hands back; each is one record, before its decision's record."""
    import threading

    from adaptflow.policies.guard import Span
    from adaptflow.runtime.live_run import run_live
    from adaptflow.runtime.loadgen import run_loadgen

    from .live_fixtures import PIPELINE, app_for, write_scenario

    scenario_path = write_scenario(tmp_path, PIPELINE)
    started = workers.start(scenario_path, broker, {"ingest": 1, "fast": 1, "thorough": 1})
    names = {w.stage: w.name for w in started}
    app = app_for(scenario_path, broker)
    idle = TrainingRange([], load={"jobs": Span(0.0, 0.0, 1)})  # load only: nothing else is checked
    planner = GuardedPlanner(StaticPlanner(workers={"ingest": 2}), StaticPlanner(workers={"ingest": 3}), idle, None)
    planner.hand_back_after = 2
    stop = threading.Event()
    load = threading.Thread(
        target=run_loadgen, kwargs={"scenario": scenario_path, "app": app, "duration": 25, "seed": 3, "stop": stop}
    )
    load.start()
    try:
        result = run_live(
            app, names, planner, StaticPlanner(), interval=10, duration=90, event_log=tmp_path / "events.jsonl"
        )
    finally:
        stop.set()
        load.join()
    records = read_event_log(tmp_path / "events.jsonl")
    guard = [(i, r) for i, r in enumerate(records) if "event" in r]
    assert [r["event"] for _, r in guard] == [TAKEOVER, HANDBACK], guard
    assert guard[0][1]["reason"] == "load" and result.takeovers == 1
    after_takeover, after_handback = records[guard[0][0] + 1], records[guard[1][0] + 1]
    assert after_takeover["plan"]["workers"] == {"ingest": 3} and after_handback["plan"]["workers"] == {"ingest": 2}
    assert len(records) - len(guard) == result.decisions
