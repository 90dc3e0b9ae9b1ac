"""Planners: each rule against its definition on hand-made inputs, staffing against queueing
theory, and the clairvoyant bound below every other planner on the diurnal ETL scenario."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
import pytest

from adaptflow.agents import (
    ControlLoop,
    Coordinator,
    CostModel,
    Insights,
    MetricsSnapshot,
    SimClock,
    SimExecutor,
    SimMonitor,
    StageMetrics,
    StandardAnalyzer,
)
from adaptflow.policies import (
    CeleryAutoscalePlanner,
    ClairvoyantPlanner,
    ErlangPlanner,
    QualityThresholdPlanner,
    StaticPlanner,
    ThresholdPlanner,
    staff,
    visit_ratios,
)
from adaptflow.scenario import load_scenario
from adaptflow.scenario.theory import mmc_mean_wait
from adaptflow.simulator import Simulation
from tests.helpers import confidence_interval, scenario, stage


def snapshot(time: float, target: int, utilization: float = 0.5, queue: int = 0, busy: int = 0) -> MetricsSnapshot:
    st = StageMetrics(
        queue_length=queue,
        busy=busy,
        active=target,
        starting=0,
        target=target,
        arrivals=0,
        completed=0,
        drops=0,
        failures=0,
        detected=0,
        mean_wait=0.0,
        mean_queue_length=float(queue),
        utilization=utilization,
        worker_seconds=0.0,
        cost=0.0,
    )
    return MetricsSnapshot(
        time=time,
        interval=30.0,
        stages={"w": st},
        source_arrivals={},
        completed=0,
        drops=0,
        failed=0,
        sla_violations=0,
        escapes=0,
        caught=0,
        mean_latency=math.nan,
    )


NO_INSIGHTS = Insights(rates={}, forecasts={}, stage_rates={})


def test_threshold_planner_is_the_hpa_formula():
    hpa = ThresholdPlanner(target=0.7, tolerance=0.1, stabilization_window=300)
    assert hpa.desired(4, 0.9) == math.ceil(4 * 0.9 / 0.7) == 6
    assert hpa.desired(4, 0.75) == 4  # ratio 1.07: inside the tolerance
    assert hpa.desired(4, 0.63) == 4  # ratio 0.90: at the edge of the tolerance, still held
    assert hpa.desired(4, 0.35) == 2
    assert hpa.desired(10, 1.0) == 15
    # The window keeps raw recommendations (as Kubernetes' stabilizeRecommendation does) and a
    # scale-down goes only as low as the highest of the last 300 s.
    plans = [
        hpa.plan(snapshot(0, 4, utilization=0.9), NO_INSIGHTS),  # up to 6 at once
        hpa.plan(snapshot(30, 6, utilization=0.2), NO_INSIGHTS),  # raw 2; the 6 of t=0 holds it
        hpa.plan(snapshot(290, 6, utilization=0.2), NO_INSIGHTS),  # t=0 still inside the window
        hpa.plan(snapshot(310, 6, utilization=0.2), NO_INSIGHTS),  # t=0 has left: down to 2
    ]
    assert [p.workers["w"] for p in plans] == [6, 6, 6, 2]
    queue = ThresholdPlanner(target=2.0, metric="queue_per_worker")
    assert queue.plan(snapshot(0, 4, queue=12, busy=4), NO_INSIGHTS).workers == {"w": 8}  # 4 x (16/4)/2
    with pytest.raises(ValueError, match="metric"):
        ThresholdPlanner(metric="cpu")


def test_celery_autoscale_planner_follows_celerys_rule():
    """Scripted queue on a stage of 2 processes, keepalive 30 s, prefetch 4 per process."""
    celery = CeleryAutoscalePlanner(keepalive=30.0, prefetch_multiplier=4)
    script = [
        (0, 2, 0, 1, {}),  # qty 1 < 2 procs, but no scale-up yet: Celery never shrinks first
        (10, 2, 3, 2, {"w": 5}),  # qty 5 > 2: grow to 5 at once
        (20, 5, 0, 1, {}),  # qty 1 < 5, only 10 s after the scale-up: keep
        (45, 5, 0, 1, {"w": 1}),  # 35 s after: shrink to qty
        (50, 1, 30, 1, {"w": 4}),  # qty capped by prefetch: 4 x 1 process
    ]
    for time, procs, queue, busy, expected in script:
        plan = celery.plan(snapshot(time, procs, queue=queue, busy=busy), NO_INSIGHTS)
        assert plan.workers == expected, f"t={time}"


def test_quality_rule_has_hysteresis():
    rule = QualityThresholdPlanner("ingest", ("fast", "thorough"), high=0.1, low=0.05, smoothing=1.0)
    shares = []
    for bad in (0.02, 0.12, 0.08, 0.06, 0.04, 0.08):
        plan = rule.plan(snapshot(0, 1), Insights(rates={}, forecasts={}, stage_rates={}, bad_rate=bad))
        shares.append(plan.splits["ingest"]["thorough"])
    assert shares == [0, 1, 1, 1, 0, 0]


def test_staffing_matches_erlang_c():
    for rate, mean, target in [(9.0, 1.0, 0.2), (4.0, 0.5, 0.05), (30.0, 0.2, 0.01)]:
        c = staff(rate, mean, target)
        assert mmc_mean_wait(rate, mean, c) <= target < mmc_mean_wait(rate, mean, c - 1)
    assert staff(0.0, 1.0, 0.1, lo=2) == 2
    assert staff(100.0, 1.0, 0.1, hi=20) == 20


def test_visit_ratios_solve_the_traffic_equations():
    spec = scenario(
        {
            "a": stage(3, next=[{"to": "b", "p": 0.5}, {"to": "a", "p": 0.25}, {"to": None, "p": 0.25}]),
            "b": stage(2),
        }
    )
    v = visit_ratios(spec)["src"]
    assert v["a"] == pytest.approx(1 / 0.75) and v["b"] == pytest.approx(0.5 / 0.75)
    drift = load_scenario("quality_drift")
    v = visit_ratios(drift, {"ingest": {"fast_validate": 0.3, "thorough_validate": 0.7}})["records"]
    assert (v["fast_validate"], v["thorough_validate"], v["publish"]) == pytest.approx((0.3, 0.7, 1.0))


def test_erlang_planner_meets_its_wait_target():
    """Stationary M/M/c (rate 9, mean 1): the planner staffs from the analyzer's EWMA rate
    estimate; over 10 replications the measured mean wait is within the target (its 95% CI
    reaches it or lies below), and the usual choice is the fewest workers that meet it."""
    spec = scenario({"w": stage(10, max_workers=30)}, rate=9.0, horizon=6000)
    target = 0.1
    waits, chosen = [], Counter()
    for seed in range(10):
        sim = Simulation(spec, rng=np.random.default_rng(500 + seed))
        loop = ControlLoop(
            SimMonitor(sim),
            StandardAnalyzer.for_scenario(spec, 30.0),
            SimExecutor(sim),
            SimClock(sim),
            CostModel(),
            30.0,
        )
        transitions = Coordinator(loop, ErlangPlanner(spec, target_wait=target)).run(until=6000)
        steady = [t for t in transitions if t.decision_time >= 600]  # after a 10-minute warm-up
        waits.append(
            np.average(
                [t.snapshot.stages["w"].mean_wait for t in steady],
                weights=[t.snapshot.stages["w"].arrivals for t in steady],
            )
        )
        chosen.update(t.applied.workers["w"] for t in steady)
    mean, half = confidence_interval(waits)
    assert mean - half <= target, f"mean wait {mean:.3f} +- {half:.3f} above the target {target}"
    assert mean > 0.2 * target  # and it does not buy far more workers than needed
    usual = chosen.most_common(1)[0][0]
    assert usual == staff(9.0, 1.0, target)


@pytest.mark.slow  # ~190 s: 60 episodes of 14,400 s
def test_clairvoyant_is_cheapest_on_the_diurnal_etl_scenario():
    """The reference bound: over 10 evaluation seeds its mean cost is below every other planner's."""
    from adaptflow.experiments.evaluation import evaluate

    planners = ["static", "threshold", "celery", "erlang", "predictive", "clairvoyant"]
    result = evaluate("etl_diurnal", planners, seeds=10, processes=2)
    costs = result.table.groupby("planner")["cost"].mean()
    assert len(result.table) == 60
    assert costs["clairvoyant"] < costs.drop("clairvoyant").min(), costs.sort_values().to_string()


def test_clairvoyant_refuses_an_unknowable_future():
    with pytest.raises(ValueError, match="MMPP"):
        ClairvoyantPlanner(load_scenario("bursty"))


def drift_snapshot(thorough_active: int) -> MetricsSnapshot:
    """quality_drift at a decision: every pool at its initial size, thorough_validate with
    ``thorough_active`` ready workers, all items on the fast branch so far."""
    spec = load_scenario("quality_drift")
    base = snapshot(600, 1).stages["w"]
    stages = {}
    for name, st in spec.stages.items():
        n = thorough_active if name == "thorough_validate" else st.workers.initial
        stages[name] = dataclasses.replace(base, target=n, active=n)
    return dataclasses.replace(
        snapshot(600, 1), stages=stages, splits={"ingest": {"fast_validate": 1.0, "thorough_validate": 0.0}}
    )


# The rate into ingest is 5/s; thorough_validate has seen nothing yet (all went the fast way).
HIGH_BAD = Insights(
    rates={"records": 5.0},
    forecasts={},
    stage_rates={"ingest": 5.0, "fast_validate": 5.0, "thorough_validate": 0.0, "publish": 5.0},
    bad_rate=0.3,
)


def test_planned_split_staffing_staffs_the_reroute_in_the_same_decision():
    from adaptflow.policies.registry import make_planner

    spec = load_scenario("quality_drift")
    planned, _ = make_planner("quality:smoothing=1", spec, 30.0)
    reactive, _ = make_planner("quality:smoothing=1,staffing=reactive", spec, 30.0)
    for planner in (planned, reactive):
        planner.reset()
    p, r = planned.plan(drift_snapshot(4), HIGH_BAD), reactive.plan(drift_snapshot(4), HIGH_BAD)
    assert p.splits == r.splits == {"ingest": {"fast_validate": 0.0, "thorough_validate": 1.0}}
    # All 5/s go to thorough validation (1.5 s each, cv 0.5): the planned rule staffs for them now,
    # the reactive one for the 0/s it saw under the old split.
    assert p.workers["thorough_validate"] == staff(5.0, 1.5, 0.8, 0.25, 0, 12) >= 8
    assert r.workers["thorough_validate"] == 0
    assert p.workers["fast_validate"] == 1  # and the fast branch is shrunk for the 0/s it will get


def test_fixed_staffing_variant_keeps_the_pools():
    from adaptflow.experiments.evaluation import run_episode
    from adaptflow.policies.registry import make_planner

    spec = load_scenario("quality_drift")
    planner, _ = make_planner("quality:staffing=fixed,high=0.05,low=0.03", spec, 30.0)
    planner.reset()
    plan = planner.plan(drift_snapshot(4), HIGH_BAD)
    assert plan.workers == {} and plan.splits["ingest"]["thorough_validate"] == 1.0
    log = []
    row = run_episode(spec, _Recording(planner, log), seed=3, interval=30.0)
    assert row["decisions"] == len(log) > 0
    initial = {n: s.workers.initial for n, s in spec.stages.items()}
    assert all(snap == initial for snap in log)  # no pool ever changed, over a whole episode
    assert row["escapes"] < run_episode(spec, make_planner("static", spec, 30.0)[0], seed=3)["escapes"]


def test_a_static_pool_holds_every_stage_at_that_many_workers():
    """``static:pool=2`` asks every stage for two workers (``workers`` overrides a stage), each
    decision of a whole episode; a pool below one is refused when the planner is built."""
    from adaptflow.experiments.evaluation import run_episode
    from adaptflow.policies.registry import make_planner

    spec = load_scenario("quality_drift")
    planner, _ = make_planner("static:pool=2", spec, 30.0)
    log = []
    row = run_episode(spec, _Recording(planner, log), seed=3, interval=30.0)
    assert row["decisions"] == len(log) > 2 and log[0] != dict.fromkeys(spec.stages, 2)  # the scenario's first
    assert all(targets == dict.fromkeys(spec.stages, 2) for targets in log[1:])
    assert StaticPlanner(workers={"ingest": 5}, pool=2).plan(drift_snapshot(4), HIGH_BAD).workers == {
        **dict.fromkeys(drift_snapshot(4).stages, 2),
        "ingest": 5,
    }
    with pytest.raises(ValueError, match="static pool 0: expected a whole number of workers of at least 1"):
        make_planner("static:pool=0", spec, 30.0)


def test_a_schedule_of_pools_is_asked_for_decision_by_decision():
    """``ScheduledPlanner`` (resimulate --live-pools): the k-th decision asks for the k-th pools,
    the last ones past the end, and a reset starts the schedule again; an empty one is refused."""
    from adaptflow.policies import ScheduledPlanner

    planner = ScheduledPlanner([{"ingest": 1}, {"ingest": 3}])
    asked = [planner.plan(drift_snapshot(4), HIGH_BAD).workers for _ in range(3)]
    assert asked == [{"ingest": 1}, {"ingest": 3}, {"ingest": 3}]
    planner.reset()
    assert planner.plan(drift_snapshot(4), HIGH_BAD).workers == {"ingest": 1}
    with pytest.raises(ValueError, match="at least one decision"):
        ScheduledPlanner([])


class _Recording:
    """A planner wrapper that records each decision's pool targets."""

    def __init__(self, planner, log):
        self.planner, self.log = planner, log

    def reset(self):
        self.planner.reset()

    def plan(self, snapshot, insights):
        self.log.append({n: st.target for n, st in snapshot.stages.items()})
        return self.planner.plan(snapshot, insights)


def test_max_utilization_caps_a_branch_by_its_ready_workers():
    from adaptflow.policies.registry import make_planner

    spec = load_scenario("quality_drift")
    for staffing in ("planned", "fixed"):
        planner, _ = make_planner(f"quality:smoothing=1,staffing={staffing},max_utilization=0.9", spec, 30.0)
        planner.reset()
        plan = planner.plan(drift_snapshot(4), HIGH_BAD)
        share = plan.splits["ingest"]["thorough_validate"]
        # 4 ready workers x (1 / 1.5 s) x 0.9 = 2.4/s of the 5/s: a share of 0.48, the rest fast.
        assert share == pytest.approx(4 / 1.5 * 0.9 / 5.0)
        assert plan.splits["ingest"]["fast_validate"] == pytest.approx(1 - share)
        assert ("thorough_validate" in plan.workers) == (staffing == "planned")
        # With 12 ready workers the cap does not bind.
        planner.reset()
        assert planner.plan(drift_snapshot(12), HIGH_BAD).splits["ingest"]["thorough_validate"] == 1.0


def test_a_recurrent_sb3_planner_carries_its_lstm_state_between_decisions():
    """RecurrentPPO decided with memory in training; SB3Planner keeps that memory from one plan
    to the next (the state equals the one a hand-carried ``predict`` loop reaches, and differs
    from a memoryless one), and ``reset`` (the Coordinator's start of an episode) forgets it."""
    import gymnasium as gym
    from sb3_contrib import RecurrentPPO

    import adaptflow.envs  # noqa: F401  (registers the environments)
    from adaptflow.policies.sb3 import SB3Planner

    env = gym.make("adaptflow/Autoscale-v0", scenario="etl_diurnal", horizon=600.0, decision_interval=30.0)
    model = RecurrentPPO("MlpLstmPolicy", env, seed=0, device="cpu", n_steps=16)
    planner = SB3Planner.from_env(model, env)
    inner = env.unwrapped
    env.reset(seed=1)
    inputs = []
    for _ in range(4):
        inputs.append((inner.snapshot, inner.insights))
        env.step(env.action_space.sample())
    states = []
    for snap, insights in inputs:
        planner.plan(snap, insights)
        states.append(planner.state)
    carried, start = None, np.ones(1, dtype=bool)
    for (snap, insights), state in zip(inputs, states, strict=True):
        _, carried = model.predict(planner.observation(snap, insights), state=carried, episode_start=start)
        start = np.zeros(1, dtype=bool)
        assert all(np.allclose(a, b) for a, b in zip(carried, state, strict=True))
    _, fresh = model.predict(planner.observation(*inputs[-1]), state=None, episode_start=np.ones(1, dtype=bool))
    assert not np.allclose(fresh[0], states[-1][0])  # the last plan did use the history
    planner.reset()
    assert planner.state is None
    planner.plan(*inputs[0])
    assert all(np.allclose(a, b) for a, b in zip(planner.state, states[0], strict=True))


# --- Planner parameters in a spec are typed by the planner's own signature (issue 15) ---


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("threshold:target=abc", "planner 'threshold', parameter target 'abc': expected a number"),
        ("threshold:tolerance=nan", "planner 'threshold', parameter tolerance 'nan': expected a number"),
        (
            "threshold:metric=cpu",
            "planner 'threshold', parameter metric 'cpu': expected one of utilization, queue_per_worker, queue_length",
        ),
        (
            "threshold:stages=extract++load",
            "planner 'threshold', parameter stages 'extract++load': expected names separated by + "
            "(e.g. extract+load) or none",
        ),
        (
            "celery:prefetch_multiplier=2.5",
            "planner 'celery', parameter prefetch_multiplier '2.5': expected an integer",
        ),
        ("celery:keepalive=soon", "planner 'celery', parameter keepalive 'soon': expected a number"),
        ("erlang:target_wait=x", "planner 'erlang', parameter target_wait 'x': expected a number or none"),
        ("predictive:target_wait=", "planner 'predictive', parameter target_wait '': expected a number or none"),
        ("clairvoyant:target_wait=1s", "planner 'clairvoyant', parameter target_wait '1s': expected a number or none"),
        (
            "quality:staffing=elastic",
            "planner 'quality', parameter staffing 'elastic': expected one of planned, reactive, fixed",
        ),
        ("quality:high=lots", "planner 'quality', parameter high 'lots': expected a number"),
        (
            "static:workers=3",
            "planner 'static', parameter workers '3': expected names and numbers as name:number, separated by + "
            "(e.g. aggregate:2+write:2) or none",
        ),
        (
            "static:workers=write:2+write:3",
            "planner 'static', parameter workers 'write:2+write:3': expected each name once or none",
        ),
        (
            "static:workers=write:two",
            "planner 'static', parameter workers 'write:two': expected names and numbers as name:number, each "
            "number an integer or none",
        ),
        (
            "static:splits=a:1",
            "planner 'static', parameter splits 'a:1': expected a mapping of mappings, which a spec cannot write "
            "(build the planner in Python)",
        ),
    ],
)
def test_a_mistyped_planner_parameter_names_planner_parameter_value_and_expectation(spec, expected):
    from adaptflow.policies.registry import parse_planner

    with pytest.raises(ValueError) as error:
        parse_planner(spec)
    assert str(error.value) == expected


def test_planner_parameters_are_given_their_declared_types():
    from adaptflow.policies.registry import parse_planner

    name, params = parse_planner("threshold:target=1,stages=extract+load,metric=queue_per_worker")
    assert name == "threshold" and params == {
        "target": 1.0,
        "stages": ["extract", "load"],
        "metric": "queue_per_worker",
    }
    assert type(params["target"]) is float
    assert parse_planner("erlang:target_wait=none") == ("erlang", {"target_wait": None})
    assert parse_planner("celery:prefetch_multiplier=2")[1]["prefetch_multiplier"] == 2
    assert parse_planner("quality:staffing=fixed,max_utilization=0.9")[1] == {
        "staffing": "fixed",
        "max_utilization": 0.9,
    }


def test_a_static_spec_holds_the_stages_it_names_at_their_pools_and_refuses_a_stranger():
    """The fit set's third size (``p7@static:pool=1,workers=aggregate:2+write:2``): the stages
    named at theirs, the rest at ``pool``; a misspelt stage or a pool under 1 is a line each."""
    from adaptflow.policies.registry import make_planner

    scenario = load_scenario("etl_diurnal")
    names = list(scenario.stages)
    planner, _ = make_planner(f"p@static:pool=1,workers={names[0]}:3+{names[-1]}:2", scenario, 30.0)
    assert planner.held_pools(names) == {name: 1 for name in names} | {names[0]: 3, names[-1]: 2}
    with pytest.raises(ValueError) as error:
        make_planner(f"static:workers=writ:2+{names[0]}:0", scenario, 30.0)
    assert str(error.value).splitlines() == [
        f"static workers 'writ': not a stage; expected one of {', '.join(names)}",
        f"static workers {names[0]}:0: expected a whole number of workers of at least 1",
    ]


def test_a_list_of_specs_keeps_each_specs_parameters_together():
    from adaptflow.policies.registry import split_specs

    assert split_specs("p1@static:pool=1,p7@static:pool=1,workers=write:2+aggregate:2,keda:target=1,,static") == [
        "p1@static:pool=1", "p7@static:pool=1,workers=write:2+aggregate:2", "keda:target=1", "static"
    ]  # fmt: skip
    assert split_specs("quality:staffing=fixed,max_utilization=0.9,ppo@onnx:runs/x") == [
        "quality:staffing=fixed,max_utilization=0.9", "ppo@onnx:runs/x"
    ]  # fmt: skip
    assert split_specs("p1@static:pool=1,x=2@static:pool=2") == ["p1@static:pool=1", "x=2@static:pool=2"]


def test_every_registered_planner_parameter_has_a_type_a_spec_can_be_checked_against():
    """A parameter added to a planner with a type the spec parser does not know fails here, not
    as a traceback on a user's command line."""
    from adaptflow.policies.registry import PLANNERS, typed_value

    for name, entry in PLANNERS.items():
        assert entry.params, name
        for key, kind in entry.params.items():
            for text in ("1", "x", "none", "a+b", "true"):
                try:
                    typed_value(text, kind)  # a TypeError here: a type the parser does not know
                except ValueError as refusal:
                    assert str(refusal), f"{name}:{key}={text} refused without saying what was expected"


def test_a_stages_parameter_limits_the_rule_to_those_stages():
    """``stages=extract`` is the list ["extract"], not the text "extract", in which a stage named
    "tract" was found too."""
    from adaptflow.policies.registry import make_planner

    planner, _ = make_planner("threshold:stages=extract", load_scenario("etl_diurnal"), 30.0)
    busy = snapshot(30.0, target=4, utilization=1.0)
    three = dataclasses.replace(busy, stages=dict.fromkeys(("extract", "tract", "load"), busy.stages["w"]))
    assert planner.plan(three, NO_INSIGHTS).workers == {"extract": 6}


def test_the_keda_rule_asks_for_queue_length_over_target_replicas_and_holds_them_through_a_dip():
    """KEDA's Redis list scaler as an AverageValue metric: ceil(12 waiting / 5) = 3, whatever is
    in service; a scale-down waits for the stabilization window, as the HPA does."""
    from adaptflow.policies.registry import make_planner

    planner, _ = make_planner("keda:target=5,stabilization_window=60", load_scenario("mmc"), 30.0)
    assert planner.plan(snapshot(30, 1, queue=12, busy=1), NO_INSIGHTS).workers == {"w": 3}
    assert planner.plan(snapshot(60, 3, queue=0, busy=3), NO_INSIGHTS).workers == {"w": 3}  # a dip: held
    assert planner.plan(snapshot(150, 3, queue=0, busy=3), NO_INSIGHTS).workers == {"w": 0}  # window passed
