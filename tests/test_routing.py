"""The scenario room's shared semantics: routes decide where an item goes (``choose``), what the
traffic equations see (``expected_branches``) and where they can lead (``targets``); one rule
decides a visit's outcome; the simulator and the live task both call them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from adaptflow.runtime.celery_app import LiveItem, context_of, make_app
from adaptflow.scenario import Scenario, load_scenario
from adaptflow.scenario.outcome import Outcome, outcome_rule, visit_outcome
from adaptflow.scenario.routing import ByAttribute, Direct, Exit, Routable, Split
from adaptflow.scenario.schema import Sla, Stage
from adaptflow.simulator import Simulation
from adaptflow.simulator.model import Item

from .helpers import scenario, stage


@dataclass
class Thing:
    bad: bool = False
    flagged: bool = False
    source: str = "a"


def draws(*values: float):
    """A draw callable that hands out ``values`` in order and fails if asked for more."""
    it = iter(values)
    return lambda: next(it)


def never() -> float:
    raise AssertionError("this route or rule must not draw")


SPLIT = Split(split=[{"to": "x", "p": 0.5}, {"to": None, "p": 0.2}, {"to": "y", "p": 0.3}], controllable=True)


def test_exit_and_direct_choose_without_drawing():
    assert Exit().choose(Thing(), never) is None
    assert Direct(to="x").choose(Thing(), never) == "x"
    assert Exit().expected_branches() == [(None, 1.0)] and Exit().targets() == [None]
    assert Direct(to="x").expected_branches() == [("x", 1.0)] and Direct(to="x").targets() == ["x"]


@pytest.mark.parametrize(
    ("u", "target"), [(0.0, "x"), (0.4999, "x"), (0.5, None), (0.6999, None), (0.7, "y"), (0.999999, "y")]
)
def test_split_picks_the_branch_whose_cumulative_share_the_uniform_is_under(u, target):
    assert SPLIT.choose(Thing(), draws(u)) == target


def test_split_override_changes_the_choice_and_the_expected_branches():
    override = {"x": 0.0, None: 0.0, "y": 1.0}
    assert SPLIT.choose(Thing(), draws(0.1), override) == "y"
    assert SPLIT.choose(Thing(), draws(0.1), {"y": 0.1, "x": 0.9, None: 0.0}) == "x"  # declared order, not dict order
    assert SPLIT.expected_branches() == [("x", 0.5), (None, 0.2), ("y", 0.3)]
    assert SPLIT.expected_branches(override) == [("x", 0.0), (None, 0.0), ("y", 1.0)]
    assert SPLIT.targets() == ["x", None, "y"]
    with pytest.raises(KeyError):
        SPLIT.choose(Thing(), draws(0.1), {"x": 1.0})  # an override names every target


def test_split_last_branch_takes_what_round_off_leaves():
    split = Split(split=[{"to": "a", "p": 0.3}, {"to": "b", "p": 0.6}, {"to": "c", "p": 0.09999999999999998}])
    assert 0.3 + 0.6 + 0.09999999999999998 < 1.0  # floating point: the cumulative sum falls short of 1
    assert split.edges()[-1] == 1.0
    assert split.choose(Thing(), draws(np.nextafter(1.0, 0.0))) == "c"


def test_attribute_routes_choose_by_the_items_attribute():
    quality = ByAttribute(attribute="quality", routes={"good": "g", "bad": None})
    flagged = ByAttribute(attribute="flagged", routes={True: None, False: "next"})
    source = ByAttribute(attribute="source", routes={"a": "x", "b": "y"})
    assert quality.choose(Thing(bad=True), never) is None and quality.choose(Thing(), never) == "g"
    assert flagged.choose(Thing(flagged=True), never) is None and flagged.choose(Thing(), never) == "next"
    assert source.choose(Thing(source="b"), never) == "y"
    assert quality.expected_branches() == [("g", 1.0)]
    assert flagged.expected_branches() == [("next", 1.0)]
    assert source.expected_branches() == [("x", 0.5), ("y", 0.5)]
    assert sorted(source.targets()) == ["x", "y"]


def test_both_worlds_items_are_routable():
    flagged = ByAttribute(attribute="flagged", routes={True: "q", False: None})
    sim_item = Item("a", 0.0, 1.0, True, Sla(latency=5.0))
    sim_item.flagged = True
    live_item = LiveItem("a-1", "a", 0.0, bad=True, flagged=True)
    for item in (sim_item, live_item):
        assert isinstance(item.bad, bool) and isinstance(item.source, str)
        routable: Routable = item
        assert flagged.choose(routable, never) == "q"
    assert LiveItem.from_message(live_item.to_message()) == live_item


def test_simulated_split_shares_follow_the_route_and_its_override():
    spec = scenario(
        {
            "in": stage(
                4, mean=0.01, next={"split": [{"to": "a", "p": 0.25}, {"to": "b", "p": 0.75}], "controllable": True}
            ),
            "a": stage(4, mean=0.01),
            "b": stage(4, mean=0.01),
        },
        rate=20.0,
        horizon=500.0,
    )
    sim = Simulation(spec, rng=3)
    sim.run(250)
    sim.set_split("in", {"a": 0.9, "b": 0.1})
    start = sim.counters()
    sim.run(500)
    first, second = start.stages, sim.counters().stages
    for share, arrivals_a, arrivals_b in [
        (0.25, first["a"].arrivals, first["b"].arrivals),
        (0.9, second["a"].arrivals - first["a"].arrivals, second["b"].arrivals - first["b"].arrivals),
    ]:
        n = arrivals_a + arrivals_b
        assert stats.binomtest(arrivals_a, n, share).pvalue > 0.001, (share, arrivals_a, n)


# -- the outcome of a visit ------------------------------------------------------------------
def stage_spec(failure: dict | None = None, validation: dict | None = None) -> Stage:
    return Stage.model_validate(
        {
            "workers": {"initial": 1, "max": 1},
            "service": {"dist": "exponential", "mean": 1.0},
            "failure": failure,
            "validation": validation,
        }
    )


def test_outcome_of_a_plain_stage_is_done_without_a_draw():
    plain = stage_spec()
    assert outcome_rule(plain, never, never) is None
    assert visit_outcome(plain, True, 0, never, never) is Outcome.DONE
    assert outcome_rule(stage_spec(failure={"prob": 0.0, "max_retries": 3}), never, never) is None


def test_outcome_failure_then_retry_or_give_up_with_exact_draws():
    spec = stage_spec(failure={"prob": 0.3, "max_retries": 1}, validation={"detect_prob": 0.7})
    assert visit_outcome(spec, False, 0, draws(0.29), never) is Outcome.FAILED_RETRY
    assert visit_outcome(spec, False, 1, draws(0.29), never) is Outcome.GAVE_UP  # no validation draw
    assert visit_outcome(spec, True, 0, draws(0.3), draws(0.69)) is Outcome.DETECTED
    assert visit_outcome(spec, True, 0, draws(0.3), draws(0.7)) is Outcome.DONE
    assert Outcome.FAILED_RETRY.failed and Outcome.GAVE_UP.failed and not Outcome.DETECTED.failed
    assert Outcome.DETECTED.flagged and Outcome.FALSE_ALARM.flagged and not Outcome.DONE.flagged


def test_outcome_validation_flags_good_items_at_the_false_positive_rate():
    spec = stage_spec(validation={"detect_prob": 0.9, "false_positive_prob": 0.05})
    assert visit_outcome(spec, False, 0, never, draws(0.049)) is Outcome.FALSE_ALARM
    assert visit_outcome(spec, False, 0, never, draws(0.05)) is Outcome.DONE


def test_outcome_probabilities_within_binomial_confidence():
    """Each outcome's frequency over many attempts lies in its 99.9% binomial interval."""
    rng = np.random.default_rng(7)
    spec = stage_spec(failure={"prob": 0.2, "max_retries": 2}, validation={"detect_prob": 0.6})
    decide = outcome_rule(spec, rng.random, rng.random)
    assert decide is not None
    n = 20_000
    bad = [decide(True, 2) for _ in range(n)]  # the last attempt: a failure gives up
    expected = {Outcome.GAVE_UP: 0.2, Outcome.DETECTED: 0.8 * 0.6, Outcome.DONE: 0.8 * 0.4}
    for outcome, p in expected.items():
        k = sum(o is outcome for o in bad)
        low, high = stats.binomtest(k, n, p).proportion_ci(0.999)
        assert low <= p <= high, (outcome, k / n, p)
    assert all(o is not Outcome.FAILED_RETRY for o in bad)


def test_simulator_counts_what_the_outcome_rule_decides(tmp_path: Path):
    """The model applies the rule: with certain failure and 2 retries, each item fails 3 times
    and is given up; with certain detection every bad item is flagged and caught."""
    spec: Scenario = scenario(
        {
            "w": stage(2, mean=0.1, failure={"prob": 1.0, "max_retries": 2}),
        },
        rate=1.0,
        horizon=200.0,
    )
    sim = Simulation(spec, rng=1)
    sim.run(400)
    w = sim.summary()["stages"]["w"]
    assert w["failed_items"] == sim.failed == w["arrivals"] > 100
    assert w["failures"] == 3 * w["arrivals"] and w["completed"] == 0
    drift = load_scenario("quality_drift", horizon=600)
    sim = Simulation(drift, rng=2)
    sim.set_split("ingest", {"fast_validate": 0.0, "thorough_validate": 1.0})
    sim.run(900)
    e2e = sim.summary()["end_to_end"]
    assert e2e["caught"] > 0 and e2e["escapes"] <= 0.05 * (e2e["caught"] + e2e["escapes"]) + 2


@pytest.mark.live
def test_a_live_retry_enters_with_its_attempt_number_and_a_first_visit_without(broker: str):
    """The live task's visits (no worker: the task body called directly, on a real Redis): an
    item whose attempts all fail enters once as an arrival, then twice as retries ``r=1``,
    ``r=2``, and is given up, as the outcome rule says; the next stage is never entered."""
    spec = scenario(
        {
            "w": stage(1, dist="deterministic", mean=0.001, failure={"prob": 1.0, "max_retries": 2}, next="v"),
            "v": stage(1, dist="deterministic", mean=0.001),
        }
    )
    ctx = context_of(make_app(spec, broker, time_scale=1000.0, prefix="retry-test"))
    item_id = ctx.submit("src", 0)
    item = LiveItem(item_id, "src", time.time())
    for attempt in range(3):
        assert item.attempt == attempt
        ctx.visit(item, "w", time.time(), f"task-{attempt}", "test-host")
    records = [f for _, f in ctx.client.xrange(ctx.events_key)]
    enters = [r for r in records if r["e"] == "enter"]
    assert [r["s"] for r in enters] == ["w", "w", "w"]
    assert [r.get("r") for r in enters] == [None, "1", "2"]
    assert [r["x"] for r in records if r["e"] == "finish"] == ["1", "1", "1"]
    assert [r["e"] for r in records].count("giveup") == 1 and not any(r["e"] == "exit" for r in records)
