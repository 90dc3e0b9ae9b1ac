"""The scenario schema: shipped scenarios load, bad input gets one clear error naming the field,
the value and what was expected, and properties hold for generated scenarios (hypothesis)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptflow.scenario import (
    Scenario,
    ScenarioError,
    load_scenario,
    parse_scenario,
    shipped_scenarios,
    shipped_scenarios_dir,
)
from adaptflow.simulator import Simulation

MMC = yaml.safe_load((shipped_scenarios_dir() / "mmc.yaml").read_text())


def test_shipped_scenarios_load_and_run():
    assert set(shipped_scenarios()) >= {"mmc", "etl_diurnal", "quality_drift", "bursty"}
    for name in shipped_scenarios():
        spec = load_scenario(name, horizon=300)
        sim = Simulation(spec)
        sim.run()
        assert sim.summary()["items_arrived"] > 0, name


def test_issue_example_is_expressible():
    spec = parse_scenario(MMC)
    assert spec.stages["work"].workers.max == 20 and spec.sources["jobs"].rate.peak() == 9.0
    assert spec.horizon == 20000 and spec.sla.latency == 5.0


def test_overrides_are_validated():
    assert load_scenario("mmc", seed=7, horizon=50).seed == 7
    with pytest.raises(ScenarioError, match=r"horizon: Input should be greater than 0 \(got -5"):
        load_scenario("mmc", horizon=-5)


def test_a_scenario_starts_at_the_pools_a_run_started_at():
    """``starting_at``: the named stages' ``initial`` pools, their bounds widened to hold them
    (a run held at 30 where the scenario allows 20), the rest unchanged; a pool for a stage the
    scenario has not, or a negative one, is an error naming it."""
    spec = parse_scenario(MMC)
    started = spec.starting_at({"work": 30})
    workers = started.stages["work"].workers
    assert (workers.initial, workers.min, workers.max) == (30, spec.stages["work"].workers.min, 30)
    assert spec.stages["work"].workers.initial != 30 and spec.starting_at({}) is spec
    assert Scenario.model_validate(started.model_dump(by_alias=True)) == started  # still a valid scenario
    for bad in ({"nosuch": 2}, {"work": -1}):
        with pytest.raises(ValueError, match=rf"starting pool {next(iter(bad))}="):
            spec.starting_at(bad)


def test_unknown_scenario_name_lists_the_shipped_ones():
    with pytest.raises(ScenarioError, match=r"neither a file nor a shipped scenario.*etl_diurnal"):
        load_scenario("etl_diurnl")


def _mutated(mutate) -> dict:
    data = copy.deepcopy(MMC)
    mutate(data)
    return data


def _second_stage(next_stage: str) -> dict:
    return {"workers": {"initial": 1, "max": 2}, "service": {"dist": "exponential", "mean": 1}, "next": next_stage}


def _unsorted_trace(tmp: Path) -> str:
    path = tmp / "unsorted.csv"
    path.write_text("timestamp\n1.0\n3.0\n2.0\n")
    return str(path)


BAD_INPUTS = {
    "unknown key": (
        lambda d, tmp: d["stages"]["work"]["workers"].update(maxx=3),
        ["stages.work.workers.maxx", "unknown key 'maxx'"],
    ),
    "unknown top-level key": (lambda d, tmp: d.update(horizn=5), ["horizn", "unknown key"]),
    "zero rate": (lambda d, tmp: d["sources"]["jobs"].update(rate=0), ["sources.jobs.rate", "got 0", "> 0"]),
    "negative rate": (lambda d, tmp: d["sources"]["jobs"].update(rate=-2.5), ["sources.jobs.rate", "got -2.5", "> 0"]),
    "zero profile": (
        lambda d, tmp: d["sources"]["jobs"].update(rate={"shape": "constant", "value": 0}),
        ["sources.jobs.rate", "zero everywhere"],
    ),
    "route to missing stage": (
        lambda d, tmp: d["stages"]["work"].update(next="nowhere"),
        ["stages.work.next", "'nowhere'", "expected one of: work"],
    ),
    "source to missing stage": (
        lambda d, tmp: d["sources"]["jobs"].update(to="wrk"),
        ["sources.jobs.to", "'wrk'", "not a stage"],
    ),
    "split not summing to 1": (
        lambda d, tmp: d["stages"]["work"].update(next=[{"to": None, "p": 0.5}, {"to": "work", "p": 0.4}]),
        ["stages.work.next", "sum to 0.9", "expected 1"],
    ),
    "cycle with no exit": (
        lambda d, tmp: (d["stages"].update(b=_second_stage("work")), d["stages"]["work"].update(next="b")),
        ["routing cycle with no exit", "work -> b -> work"],
    ),
    "min above max": (
        lambda d, tmp: d["stages"]["work"]["workers"].update(min=5, max=3, initial=4),
        ["stages.work.workers", "min is 5 and max is 3", "expected min <= max"],
    ),
    "initial outside bounds": (
        lambda d, tmp: d["stages"]["work"]["workers"].update(initial=30),
        ["stages.work.workers", "initial is 30", "[1, 20]"],
    ),
    "missing trace": (
        lambda d, tmp: d["sources"].update(jobs={"process": "trace", "file": str(tmp / "none.csv"), "to": "work"}),
        ["sources.jobs.file", "none.csv", "does not exist"],
    ),
    "unsorted trace": (
        lambda d, tmp: d["sources"].update(jobs={"process": "trace", "file": _unsorted_trace(tmp), "to": "work"}),
        ["sources.jobs.file", "not sorted", "row 3 has timestamp 2 after 3", "non-decreasing"],
    ),
    "unknown distribution": (
        lambda d, tmp: d["stages"]["work"]["service"].update(dist="weibull"),
        ["stages.work.service.dist", "'weibull'", "'lognormal'"],
    ),
    "unknown process": (
        lambda d, tmp: d["sources"]["jobs"].update(process="poison"),
        ["sources.jobs.process", "'poison'", "'poisson'"],
    ),
    "negative service mean": (
        lambda d, tmp: d["stages"]["work"]["service"].update(mean=-1),
        ["stages.work.service.mean", "greater than 0", "got -1"],
    ),
    "negative dispatch delay": (
        lambda d, tmp: d["stages"]["work"].update(dispatch_delay=-0.005),
        ["stages.work.dispatch_delay", "greater than or equal to 0", "got -0.005"],
    ),
    "infinite dispatch delay": (
        lambda d, tmp: d["stages"]["work"].update(dispatch_delay=float("inf")),
        ["stages.work.dispatch_delay", "finite"],
    ),
    "dispatch distribution without cv": (
        lambda d, tmp: d["stages"]["work"].update(dispatch_delay={"dist": "gamma", "mean": 0.05}),
        ["stages.work.dispatch_delay", "needs cv"],
    ),
    "lognormal without cv": (
        lambda d, tmp: d["stages"]["work"]["service"].update(dist="lognormal"),
        ["stages.work.service", "needs cv"],
    ),
    "bad-rate above 1": (
        lambda d, tmp: d["sources"]["jobs"].update(quality={"bad_rate": 1.5}),
        ["sources.jobs.quality.bad_rate", "1.5", "[0, 1]"],
    ),
    "attribute value unrouted": (
        lambda d, tmp: d["stages"]["work"].update(next={"attribute": "flagged", "routes": {True: None}}),
        ["stages.work.next.routes", "flagged = ['false']"],
    ),
    "unknown host": (
        lambda d, tmp: d["stages"]["work"].update(host="vm"),
        ["stages.work.host", "'vm' is not a host", "none declared in hosts"],
    ),
    "cpu without a host": (
        lambda d, tmp: d["stages"]["work"].update(cpu=0.5),
        ["stages.work.cpu", "0.5 without a host"],
    ),
    "host without cores": (
        lambda d, tmp: d.update(hosts={"vm": {"cores": 0}}),
        ["hosts.vm.cores", "greater than 0"],
    ),
    "turnaround growth below 0": (
        lambda d, tmp: d.update(hosts={"vm": {"cores": 2, "turnaround_growth": {"per_process": -0.3, "reference": 5}}}),
        ["hosts.vm.turnaround_growth.per_process", "greater than or equal to 0", "got -0.3"],
    ),
    "host speed of 0": (
        lambda d, tmp: d.update(hosts={"vm": {"cores": 2, "speed": 0}}),
        ["hosts.vm.speed", "greater than 0", "got 0"],
    ),
    "host probe below 0": (
        lambda d, tmp: d.update(hosts={"vm": {"cores": 2, "probe": -5}}),
        ["hosts.vm.probe", "greater than 0", "got -5"],
    ),
    "turnaround spread without a turnaround": (
        lambda d, tmp: d["stages"]["work"].update(turnaround_cv=0.5),
        ["stages.work", "turnaround_cv 0.5 spreads a turnaround of 0"],
    ),
    "turnaround spread below 0": (
        lambda d, tmp: d["stages"]["work"].update(turnaround=0.1, turnaround_cv=-1),
        ["stages.work.turnaround_cv", "greater than or equal to 0", "got -1"],
    ),
    "missing field": (lambda d, tmp: d.pop("sla"), ["sla", "required"]),
    "name with a dot": (lambda d, tmp: d["stages"].update({"a.b": d["stages"].pop("work")}), ["a.b", "pattern"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_clear_error(case, tmp_path):
    mutate, expected = BAD_INPUTS[case]
    data = _mutated(lambda d: mutate(d, tmp_path))
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, label="bad.yaml")
    message = str(info.value)
    assert message.startswith("bad.yaml: invalid scenario")
    for part in expected:
        assert part in message, f"{part!r} missing from:\n{message}"
    assert len(message.splitlines()) == 2, f"expected exactly one error line:\n{message}"


def test_several_problems_are_all_reported():
    data = _mutated(lambda d: (d["sources"]["jobs"].update(rate=-1), d["stages"]["work"]["workers"].update(cost=1)))
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data)
    message = str(info.value)
    assert "sources.jobs.rate" in message and "stages.work.workers.cost" in message


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ScenarioError, match="expected a mapping"):
        load_scenario(path)
    path.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(path)


def test_trace_path_is_relative_to_the_scenario_file(tmp_path):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "day.csv").write_text("timestamp\n0\n1\n")
    data = _mutated(lambda d: d["sources"].update(jobs={"process": "trace", "file": "traces/day.csv", "to": "work"}))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    spec = load_scenario(tmp_path / "s.yaml")
    assert spec.sources["jobs"].file == (tmp_path / "traces" / "day.csv").resolve()


# ---------------------------------------------------------------------------------------------
# Properties (hypothesis)
# ---------------------------------------------------------------------------------------------
positive = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False)
probability = st.floats(min_value=0, max_value=1, allow_nan=False)


@st.composite
def pipelines(draw) -> dict:
    """A random valid pipeline: 1-4 stages in series with random pools (some starting at pool
    ticks, with retirements reaped late), distributions, optional queue limits, failures and a
    probabilistic split with an exit branch."""
    n = draw(st.integers(1, 4))
    names = [f"s{i}" for i in range(n)]
    stages = {}
    for i, name in enumerate(names):
        lo = draw(st.integers(0, 3))
        hi = draw(st.integers(max(lo, 1), 6))
        dist = draw(st.sampled_from(["exponential", "deterministic", "lognormal", "gamma", "empirical"]))
        service = {"dist": dist}
        if dist == "empirical":
            service["samples"] = draw(st.lists(st.floats(0.01, 2.0), min_size=1, max_size=5))
        else:
            service["mean"] = draw(st.floats(0.01, 2.0))
        if dist in ("lognormal", "gamma"):
            service["cv"] = draw(st.floats(0.1, 2.0))
        nxt = names[i + 1] if i + 1 < n else None
        if nxt is not None and draw(st.booleans()):
            p = draw(st.floats(0.0, 1.0))
            nxt = [{"to": nxt, "p": p}, {"to": None, "p": 1.0 - p}]
        stage = {
            "workers": {
                "initial": draw(st.integers(lo, hi)),
                "min": lo,
                "max": hi,
                "startup_delay": draw(st.floats(0, 20)),
                "cost_per_second": draw(st.floats(0, 3)),
            },
            "service": service,
            "next": nxt,
        }
        if draw(st.booleans()):  # Celery's pool: starts at its ticks, retirements reaped late
            ticks = {"startup_tick": draw(st.floats(0.5, 20)), "late_reap": draw(probability)}
            stage["workers"] |= ticks | {"late_reap_after": draw(st.floats(0, 5))}
        if draw(st.booleans()):
            stage["queue"] = {"capacity": draw(st.integers(0, 20))}
        if draw(st.booleans()):
            stage["failure"] = {"prob": draw(st.floats(0, 0.5)), "max_retries": draw(st.integers(0, 3))}
        stages[name] = stage
    return {
        "name": "generated",
        "horizon": draw(st.floats(10, 200)),
        "seed": draw(st.integers(0, 2**31)),
        "sla": {"latency": draw(positive)},
        "sources": {
            "src": {
                "process": "poisson",
                "rate": draw(st.floats(0.05, 20)),
                "to": "s0",
                "quality": {"bad_rate": draw(probability)},
            }
        },
        "stages": stages,
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipelines())
def test_valid_scenarios_round_trip(data):
    spec = parse_scenario(data)
    again = parse_scenario(spec.model_dump(mode="json", by_alias=True))
    assert again == spec


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipelines(), st.integers(0, 3), st.integers(0, 5))
def test_generated_pipelines_conserve_items(data, stage_index, new_workers):
    """Arrived = completed + dropped + failed + in system, and every item in the system is in a
    queue or in service, whatever the pipeline and however its pools are changed."""
    spec = parse_scenario(data)
    sim = Simulation(spec)
    sim.run(spec.horizon / 2)
    name = list(spec.stages)[stage_index % len(spec.stages)]
    applied = sim.set_workers(name, new_workers)
    w = spec.stages[name].workers
    assert w.min <= applied <= w.max
    sim.run(spec.horizon)
    summary = sim.summary()
    e2e = summary["end_to_end"]
    assert e2e["arrivals"] == e2e["completed"] + e2e["drops"] + e2e["failed_items"] + e2e["in_system"]
    assert e2e["in_system"] == sum(s["queue_length"] + s["busy_workers"] for s in summary["stages"].values())
    assert summary["cost"] >= 0


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.floats(max_value=0, allow_nan=False), st.integers(max_value=0)))
def test_any_non_positive_rate_is_rejected(rate):
    data = _mutated(lambda d: d["sources"]["jobs"].update(rate=rate))
    with pytest.raises(ScenarioError, match=r"sources\.jobs\.rate: expected a finite rate > 0"):
        parse_scenario(data)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=2, max_size=4))
def test_split_accepted_exactly_when_it_sums_to_one(probs):
    targets = ["work"] + [f"x{i}" for i in range(len(probs) - 1)]
    data = _mutated(
        lambda d: d["stages"]["work"].update(
            next=[{"to": None, "p": probs[0]}] + [{"to": t, "p": p} for t, p in zip(targets, probs[1:], strict=False)]
        )
    )
    for t in targets[1:]:
        data["stages"][t] = _second_stage(None)  # type: ignore[arg-type]
    if abs(sum(probs) - 1) <= 1e-9:
        assert isinstance(parse_scenario(data), Scenario)
    else:
        with pytest.raises(ScenarioError, match=r"stages\.work\.next: split probabilities sum to"):
            parse_scenario(data)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 50), st.integers(1, 50), st.integers(0, 50))
def test_worker_bounds_accepted_exactly_when_ordered(lo, hi, initial):
    data = _mutated(lambda d: d["stages"]["work"]["workers"].update(min=lo, max=hi, initial=initial))
    if lo <= initial <= hi:
        assert parse_scenario(data).stages["work"].workers.initial == initial
    else:
        with pytest.raises(ScenarioError, match=r"stages\.work\.workers: (min is|initial is)"):
            parse_scenario(data)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1000, allow_nan=False), min_size=2, max_size=30))
def test_trace_accepted_exactly_when_sorted(tmp_path_factory, times):
    path = tmp_path_factory.mktemp("trace") / "t.csv"
    path.write_text("timestamp\n" + "".join(f"{t!r}\n" for t in times))
    data = _mutated(lambda d: d["sources"].update(jobs={"process": "trace", "file": str(path), "to": "work"}))
    if all(np.diff(times) >= 0):
        assert parse_scenario(data).sources["jobs"].file == path
    else:
        with pytest.raises(ScenarioError, match="not sorted"):
            parse_scenario(data)
