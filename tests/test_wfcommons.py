"""WfCommons workflows as scenarios: levels become stages, one-to-one levels stay chains inside the
parts, parallel levels meet at the next single task, a barrier or the exit; the shipped scenario is
what the importer makes from its recorded recipe and seed."""

from __future__ import annotations

import json
import random
import sys

import numpy as np
import pytest
import yaml

from adaptflow.scenario import ScenarioError, load_scenario, parse_scenario, shipped_scenarios_dir
from adaptflow.scenario.wfcommons import (
    BARRIER_SERVICE,
    MIN_RUNTIME,
    SHIPPED,
    critical_path,
    read_tasks,
    recipe_instance,
    recipe_scenario,
    scenario_from_wfcommons,
)
from adaptflow.simulator import Simulation


def _wfformat(tasks: list[tuple[str, str, float, list[str]]]) -> dict:
    """A WfFormat 1.5 instance: (id, type, runtime, parents) per task; children as wfcommons writes them."""
    children = {tid: [c for c, _, _, ps in tasks if tid in ps] for tid, _, _, _ in tasks}
    spec = [{"name": kind, "id": tid, "parents": ps, "children": children[tid]} for tid, kind, _, ps in tasks]
    execution = [{"id": tid, "runtimeInSeconds": rt} for tid, _, rt, _ in tasks]
    return {
        "name": "hand-built",
        "schemaVersion": "1.5",
        "workflow": {"specification": {"tasks": spec, "files": []}, "execution": {"tasks": execution}},
    }


# split -> 3 lanes of a -> b -> merge -> c (2) -> d (2, each needing both c): a chain, a join at a
# single task, and a barrier between two parallel levels that cross.
CHAINED = _wfformat(
    [("split_1", "split", 10.0, [])]
    + [(f"a_{i}", "a", float(i), ["split_1"]) for i in (1, 2, 3)]
    + [(f"b_{i}", "b", float(i + 3), [f"a_{i}"]) for i in (1, 2, 3)]
    + [("merge_1", "merge", 7.0, ["b_1", "b_2", "b_3"])]
    + [("c_1", "c", 2.0, ["merge_1"]), ("c_2", "c", 3.0, ["merge_1"])]
    + [("d_1", "d", 1.0, ["c_1", "c_2"]), ("d_2", "d", 1.0, ["c_1", "c_2"])]
)


def test_levels_become_scatters_chains_joins_and_a_barrier():
    sc = scenario_from_wfcommons(CHAINED, name="toy", rate=0.1, utilization=0.5)
    stages = sc["stages"]
    assert list(stages) == ["split", "a", "b", "merge", "c", "barrier_1", "d"]
    assert sc["sources"]["submissions"] == {"process": "poisson", "rate": 0.1, "to": "split"}
    nexts = {name: stage["next"] for name, stage in stages.items()}
    assert nexts == {
        "split": {"scatter": "a", "parts": 3, "join": "merge"},
        "a": "b",  # one to one: b runs inside a's part, no join in between
        "b": "merge",
        "merge": {"scatter": "c", "parts": 2, "join": "barrier_1"},
        "c": "barrier_1",  # d needs both c: the parts meet before d is scattered
        "barrier_1": {"scatter": "d", "parts": 2, "join": None},
        "d": None,  # the last level meets at the exit
    }
    assert stages["a"]["service"] == {"dist": "empirical", "samples": [1.0, 2.0, 3.0]}
    assert stages["b"]["service"]["samples"] == [4.0, 5.0, 6.0]
    assert stages["d"]["service"]["samples"] == [1.0, 1.0]
    assert stages["barrier_1"]["service"] == {"dist": "deterministic", "mean": BARRIER_SERVICE}
    assert parse_scenario(sc).stages["barrier_1"].next.join is None  # and the schema takes it


def test_pools_are_sized_for_the_utilization_and_the_sla_from_the_critical_path():
    sc = scenario_from_wfcommons(CHAINED, name="toy", rate=0.1, utilization=0.5, startup_delay=30.0)
    workers = {name: stage["workers"] for name, stage in sc["stages"].items()}
    # a: 0.1/s x 6 s of work = 0.6 busy -> 2 at 0.5; b: 0.1 x 15 = 1.5 -> exactly 3 (no round-off to 4)
    assert workers["a"] == {"initial": 2, "min": 1, "max": 4, "startup_delay": 30.0, "cost_per_second": 1.0}
    assert workers["b"]["initial"] == 3 and workers["split"]["initial"] == 2
    assert workers["barrier_1"] == {"initial": 1, "min": 1, "max": 1, "startup_delay": 0.0, "cost_per_second": 0.0}
    # critical path: split 10 + the slowest lane (3 + 6) + merge 7 + c 3 + d 1 = 30 s; the SLA is twice that
    assert critical_path(read_tasks(CHAINED)) == 30.0
    assert sc["sla"] == {"latency": 60.0}
    assert scenario_from_wfcommons(CHAINED, name="toy", rate=0.1, sla=45.0)["sla"] == {"latency": 45.0}


# The older flat layout: a level of two types is a fork with one part per task, a type met again
# later gets a second stage, a task without a category takes its name without the numeric suffix.
FLAT = {
    "name": "flat",
    "workflow": {
        "tasks": [
            {"name": "s_00000001", "runtimeInSeconds": 2.0, "parents": []},
            {"name": "x_1", "category": "x", "runtimeInSeconds": 1.5, "parents": ["s_00000001"]},
            {"name": "y_1", "category": "y", "runtimeInSeconds": 2.5, "parents": ["s_00000001"]},
            {"name": "y_2", "category": "y", "runtime": 3.5, "parents": ["s_00000001"]},
            {"name": "s_00000002", "runtimeInSeconds": 0, "parents": ["x_1", "y_1", "y_2"]},
        ]
    },
}


def test_a_mixed_level_forks_and_a_repeated_type_gets_its_own_stage(tmp_path):
    sc = scenario_from_wfcommons(FLAT, name="flat", rate=0.5, source="jobs")
    assert sc["sources"]["jobs"]["to"] == "s"
    assert {name: stage["next"] for name, stage in sc["stages"].items()} == {
        "s": {"fork": ["x", "y", "y"], "join": "s_2"},
        "x": "s_2",
        "y": "s_2",
        "s_2": None,
    }
    assert sc["stages"]["y"]["service"]["samples"] == [2.5, 3.5]
    assert sc["stages"]["s_2"]["service"]["samples"] == [MIN_RUNTIME]  # runtime 0 -> 1 ms
    assert parse_scenario(sc).stages["s"].next.fork == ["x", "y", "y"]  # and the schema takes it
    path = tmp_path / "flat.json"
    path.write_text(json.dumps(FLAT))
    assert scenario_from_wfcommons(str(path), name="flat", rate=0.5, source="jobs") == sc


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ([("a", "a", 1.0, ["b"]), ("b", "b", 1.0, ["a"])], r"tasks \['a', 'b'\] lie on a cycle; expected a DAG"),
        ([("a", "a", 1.0, ["zz"])], r"task 'a' has parent 'zz'; expected one of the tasks"),
        ([("a", "a", -2.0, [])], r"task 'a' has runtime -2.0; expected seconds >= 0"),
    ],
)
def test_a_broken_instance_names_the_task(tasks, message):
    with pytest.raises(ScenarioError, match=message):
        scenario_from_wfcommons(_wfformat(tasks), name="bad", rate=1.0)


def test_bad_arguments_name_the_field():
    with pytest.raises(ScenarioError, match=r"rate is 0; expected a number > 0"):
        scenario_from_wfcommons(CHAINED, name="toy", rate=0)
    with pytest.raises(ScenarioError, match=r"utilization is 1.5; expected a target in \(0, 1\]"):
        scenario_from_wfcommons(CHAINED, name="toy", rate=1.0, utilization=1.5)
    no_runtime = {"workflow": {"tasks": [{"name": "t_1", "parents": []}]}}
    with pytest.raises(ScenarioError, match=r"task 't_1' has no runtimeInSeconds"):
        scenario_from_wfcommons(no_runtime, name="toy", rate=1.0)
    with pytest.raises(ScenarioError, match=r"recipe is 'nope'; expected one of blast, bwa"):
        recipe_instance("nope", num_tasks=10, seed=0)


def test_without_wfcommons_only_generation_needs_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "wfcommons", None)  # as if it were not installed
    with pytest.raises(ScenarioError, match=r"needs the optional package wfcommons"):
        recipe_instance("epigenomics", num_tasks=43, seed=0)
    assert scenario_from_wfcommons(CHAINED, name="toy", rate=0.1)["stages"]["split"]["next"]["parts"] == 3


# --------------------------------------------------------------------------------------------
# The shipped scenario
# --------------------------------------------------------------------------------------------
SHIPPED_PATH = shipped_scenarios_dir() / "epigenomics_dag.yaml"


def test_the_shipped_scenario_is_what_the_importer_makes_from_its_seed():
    pytest.importorskip("wfcommons")
    args = SHIPPED["epigenomics_dag"]["args"]
    assert yaml.safe_load(SHIPPED_PATH.read_text()) == recipe_scenario(name="epigenomics_dag", **args)


def test_generating_leaves_the_global_random_state_alone():
    pytest.importorskip("wfcommons")
    random.seed(5)
    np.random.seed(5)  # the legacy global state is what wfcommons would disturb
    expected = random.random(), np.random.random()
    random.seed(5)
    np.random.seed(5)
    first = recipe_instance("epigenomics", num_tasks=43, seed=0)
    assert (random.random(), np.random.random()) == expected
    again = recipe_instance("epigenomics", num_tasks=43, seed=0)
    assert read_tasks(first) == read_tasks(again)  # and the seed fixes the instance


def test_the_shipped_scenario_validates_and_keeps_the_lanes():
    spec = load_scenario("epigenomics_dag")
    split = spec.stages["fastqSplit"].next
    assert (split.scatter, split.parts, split.join) == ("filterContams", 9, "mapMerge")
    assert spec.horizon == 3600.0 and spec.sla.latency == 1800.0
    # every pool runs at about 0.6 on average: rate x work / initial workers
    rate = spec.sources["submissions"].rate.peak()
    parts = {"fastqSplit": 1, "filterContams": 9, "sol2sanger": 9, "fast2bfq": 9, "map": 9}
    for name, count in parts.items():
        stage = spec.stages[name]
        utilization = rate * count * stage.service.expected() / stage.workers.initial
        assert 0.3 < utilization <= 0.6 + 1e-9, (name, utilization)


def test_the_shipped_scenario_runs_each_lane_inside_its_workflow():
    sim = Simulation(load_scenario("epigenomics_dag", horizon=2400))
    sim.run()
    stages = sim.summary()["stages"]
    # every split workflow makes 9 parts, each part walks its own lane, and one merge per workflow
    assert stages["fastqSplit"]["completed"] > 10
    assert stages["filterContams"]["arrivals"] == 9 * stages["fastqSplit"]["completed"]
    assert stages["sol2sanger"]["arrivals"] == stages["filterContams"]["completed"]
    assert stages["mapMerge"]["completed"] <= stages["map"]["completed"] // 9
