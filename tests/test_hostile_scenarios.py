"""Bad scenarios as a careless or hostile user writes them: each gets one clear error (exit 2, the
field named, no traceback) or runs within bounded work. The cases of issue 13 one by one, then a
standing guard: hypothesis mutates the shipped scenarios and every mutant must end one of the two
ways."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptflow.cli import main
from adaptflow.scenario import shipped_scenarios, shipped_scenarios_dir

MMC = (shipped_scenarios_dir() / "mmc.yaml").read_text()


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def assert_clear_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("adaptflow: error: "), err
    for needle in needles:
        assert needle in err, err


CASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "seed_true": (MMC.replace("seed: 0", "seed: true"), ("seed", "valid integer", "True")),
    "mean_as_text": (MMC.replace("mean: 1.0", 'mean: "9.0"'), ("service.mean", "'9.0'")),
    "p_true": (
        MMC.replace("next: null", "next: [{to: null, p: true}]"),
        ("stages.work.next", "True"),
    ),
    "duplicate_stage_key": (MMC + "stages:\n  other: 1\n", ("duplicate key 'stages'", "line")),
    "gamma_cv_overflow": (
        MMC.replace("{dist: exponential, mean: 1.0}", "{dist: gamma, mean: 1.0, cv: 1.0e+300}"),
        ("service.cv", "less than or equal to 100"),
    ),
    "nested_horizon": (MMC.replace("horizon: 20000", "horizon: " + "[" * 2000 + "1" + "]" * 2000), ("nested",)),
    "cost_overflow": (MMC.replace("cost_per_second: 1.0", "cost_per_second: 1e308"), ("cost_per_second",)),
    "split_just_above_one": (
        MMC.replace("next: null", "next: [{to: null, p: 0.5}, {to: null, p: 0.5000001}]"),
        ("1.0000001", "expected 1"),
    ),
    "huge_rate": (MMC.replace("rate: 9.0", "rate: 1.0e+6"), ("about 20,000,000,000 arrivals", "--max-items")),
    # The stationary rate is 0.01/s, but the first stay (mean 0.01 s at 10^12/s) holds 10^10
    # arrivals: bounded by the count from the initial state, not by the long-run rate.
    "mmpp_first_stay": (
        MMC.replace(
            "{process: poisson, rate: 9.0, to: work}",
            "{process: mmpp, rates: [1.0e+12, 0.01], switch_rates: [100.0, 1.0e-9], to: work}",
        ),
        ("about 10,000,200,200 arrivals", "--max-items"),
    ),
    # A microsecond at 10^9/s adds 1,000 arrivals, but thinning draws at the peak rate over the
    # whole horizon: 2 x 10^13 candidates, hours of work behind a small expected count.
    "narrow_spike": (
        MMC.replace(
            "{process: poisson, rate: 9.0, to: work}",
            "{process: poisson, rate: {shape: spike, base: 1.0, peak: 1.0e+9, start: 100, duration: 1.0e-6}, to: work}",
        ),
        ("about 21,000 arrivals drawn from 20,000,000,000,000 candidates", "--max-items"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_scenario_gets_one_clear_error(case, tmp_path):
    text, needles = CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    code, _, err = run_cli("simulate", str(path))
    assert_clear_error(code, err, str(path), *needles)


@pytest.mark.parametrize(
    ("payload", "needle"), [(MMC.encode("utf-16"), "not a UTF-8 text file"), (bytes(range(256)), "byte 0x80")]
)
def test_a_file_that_is_not_text_is_named(payload, needle, tmp_path):
    path = tmp_path / "scenario.yaml"
    path.write_bytes(payload)
    code, _, err = run_cli("simulate", str(path))
    assert_clear_error(code, err, str(path), needle)


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--horizon", "100", "--max-items", "100"], ("about 900 arrivals", "limit of 100")),
        (["--timeseries", "ts.csv", "--interval", "1e-9"], ("interval", "windows", "at least 0.02 s")),
        (["--timeseries", "ts.csv", "--interval", "nan"], ("interval: nan", "finite")),
    ],
)
def test_work_is_estimated_before_it_is_done(argv, needles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("simulate", "mmc", *argv)
    assert_clear_error(code, err, *needles)
    assert not (tmp_path / "ts.csv").exists()


# --------------------------------------------------------------------------------------------
# The standing guard
# --------------------------------------------------------------------------------------------
HOSTILE_VALUES = [None, True, False, "abc", "9.0", "", -1, 0, 0.5, 1e308, -1e308, 10**30, [], {}, [1, 2], {"x": 1}]
SCENARIOS = {
    name: yaml.safe_load((shipped_scenarios_dir() / f"{name}.yaml").read_text()) for name in shipped_scenarios()
}
TALLY: dict[str, int] = {"mutants": 0, "clear errors": 0, "valid runs": 0}


def leaf_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place a value can be replaced or a key deleted."""
    if isinstance(node, dict):
        paths = [(*prefix, k) for k in node]
        return paths + [p for k, v in node.items() for p in leaf_paths(v, (*prefix, k))]
    if isinstance(node, list):
        paths = [(*prefix, i) for i in range(len(node))]
        return paths + [p for i, v in enumerate(node) for p in leaf_paths(v, (*prefix, i))]
    return []


@st.composite
def mutants(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(SCENARIOS[draw(st.sampled_from(sorted(SCENARIOS)))])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(leaf_paths(data)))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "scale", "delete", "add_key"]))
        value = parent[path[-1]]
        if action == "scale" and isinstance(value, (int, float)) and not isinstance(value, bool):
            parent[path[-1]] = value * draw(st.sampled_from([-1, 0, 1e-9, 0.5, 2, 1e3, 1e9, 1e300]))
        elif action in ("replace", "scale"):
            parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(HOSTILE_VALUES)))
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["capacty", "rate2", "extra"]))] = 1
        if not isinstance(data, dict):
            break
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutants())
def test_every_mutant_of_a_shipped_scenario_errs_clearly_or_runs(data, tmp_path):
    """A mutant ends with a clear error or a bounded, valid run: never a traceback, a hang (the
    work bound keeps every run to 200,000 arrivals) or a non-finite figure."""
    path = Path(tmp_path) / "mutant.yaml"
    path.write_text(yaml.safe_dump(data))
    code, out, err = run_cli("simulate", str(path), "--horizon", "200", "--max-items", "200000", "--json")
    TALLY["mutants"] += 1
    if code == 2:
        assert_clear_error(code, err, str(path))
        TALLY["clear errors"] += 1
        return
    assert code == 0, err
    summary = json.loads(out)
    assert all(v is None or math.isfinite(v) for v in _numbers(summary)), f"non-finite figure in a valid run of {data}"
    TALLY["valid runs"] += 1


def _numbers(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [x for v in node.values() for x in _numbers(v)]
    if isinstance(node, list):
        return [x for v in node for x in _numbers(v)]
    return [node] if isinstance(node, (int, float)) and not isinstance(node, bool) else []


def test_the_guard_tried_both_outcomes():
    """Runs after the guard (file order): it exercised errors and valid runs alike."""
    print(f"hostile scenarios: {TALLY}")
    if TALLY["mutants"]:
        assert TALLY["clear errors"] > 0


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--interval", "nan"], ("interval: nan", "finite")),
        (["--interval", "1e-9"], ("decisions per episode", "at least 0.02 s")),
        (["--interval", "1e9"], ("interval", "(0, 20000]")),
        (["--processes", "0"], ("processes: 0",)),
    ],
)
def test_evaluate_checks_its_request_before_any_episode(argv, needles, tmp_path):
    code, _, err = run_cli("evaluate", "--scenario", "mmc", "--planner", "static", "--out", str(tmp_path / "ev"), *argv)
    assert_clear_error(code, err, *needles)
    assert not (tmp_path / "ev").exists()
