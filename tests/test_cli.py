"""The ``adaptflow`` command, as a user runs it: simulate first, then what a newcomer met."""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

from adaptflow.cli import main
from adaptflow.experiments import simulate

REQUIRED_STAGE_KEYS = {"mean_wait", "p95_wait", "mean_queue_length", "utilization", "throughput", "drops"}
REQUIRED_E2E_KEYS = {"mean_latency", "p95_latency", "sla_violation_rate", "throughput"}


def test_simulate_json_has_the_documented_keys(capsys):
    assert main(["simulate", "mmc", "--horizon", "2000", "--seed", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["stages"]["work"]) >= REQUIRED_STAGE_KEYS
    assert set(out["end_to_end"]) >= REQUIRED_E2E_KEYS
    assert {"cost", "items_completed"} <= set(out)
    assert out["cost"] == pytest.approx(10 * 2000)  # 10 workers at 1/s, never rescaled
    assert 0.8 < out["stages"]["work"]["utilization"] < 1.0


def test_json_matches_the_python_function(capsys):
    main(["simulate", "quality_drift", "--horizon", "600", "--seed", "5", "--json"])
    from_cli = json.loads(capsys.readouterr().out)
    summary, _ = simulate("quality_drift", seed=5, horizon=600)
    assert from_cli["items_completed"] == summary["items_completed"]
    assert from_cli["end_to_end"]["escapes"] == summary["end_to_end"]["escapes"]


def test_table_output_names_every_stage(capsys):
    assert main(["simulate", "etl_diurnal", "--horizon", "600"]) == 0
    out = capsys.readouterr().out
    for word in ("extract", "transform", "load", "end to end", "SLA violations"):
        assert word in out


def test_timeseries_is_written(tmp_path, capsys):
    path = tmp_path / "series.csv"
    assert main(["simulate", "bursty", "--horizon", "600", "--timeseries", str(path), "--interval", "60"]) == 0
    series = pd.read_csv(path, index_col="time")
    assert len(series) == 10 and "stages.process.mean_wait" in series.columns
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary behind


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["simulate", "no_such_scenario"], "neither a file nor a shipped scenario"),
        (["simulate", "mmc", "--horizon", "-1"], "horizon"),
        (["simulate", "mmc", "--seed", "-4"], "seed"),
        (["simulate", "mmc", "--timeseries", "x.csv"], "--timeseries and --interval go together"),
        (["simulate", "mmc", "--horizon", "10", "--timeseries", "x.txt", "--interval", "5"], ".csv or .parquet"),
    ],
)
def test_bad_arguments_exit_nonzero_with_a_message(args, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("adaptflow: error:") and expected in err


def test_bad_scenario_file_from_the_shell_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nhorizon: 100\nsla: {latency: 1}\n"
        "sources: {jobs: {process: poisson, rate: 0, to: work}}\n"
        "stages: {work: {workers: {initial: 5, min: 6, max: 4}, service: {dist: exponential, mean: 1}}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "adaptflow.cli", "simulate", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "sources.jobs.rate: expected a finite rate > 0, got 0" in result.stderr
    assert "stages.work.workers: min is 6 and max is 4" in result.stderr
    assert result.stdout == ""


def test_progress_bar_appears_only_on_long_runs(monkeypatch):
    """tqdm's delay: nothing under PROGRESS_AFTER_SECONDS, a bar (on stderr) after it."""
    import adaptflow.experiments.simulation as module

    shown = []
    real_tqdm = module.tqdm

    def spy(*args, **kwargs):
        shown.append(kwargs["delay"])
        return real_tqdm(*args, **kwargs)

    monkeypatch.setattr(module, "tqdm", spy)
    module.simulate("mmc", horizon=100, progress=True)
    assert shown == [module.PROGRESS_AFTER_SECONDS]


@pytest.mark.parametrize("script", ["bench_simulator.py", "bench_dag.py"])
def test_benchmark_script_prints_one_json_line(script):
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--items", "5000", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["adaptflow_items_per_s"] > 0 and record["simpy_items_per_s"] > 0
    assert record["ratio"] == pytest.approx(record["adaptflow_items_per_s"] / record["simpy_items_per_s"], rel=0.01)


def test_forecast_error_command(capsys):
    assert main(["forecast-error", "etl_diurnal", "--seeds", "2", "--lookahead", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"ewma", "holt_winters", "autoregressive"} and len(out["ewma"]) == 3
    assert out["holt_winters"][2] < out["ewma"][2]
    assert main(["forecast-error", "--interval", "0"]) == 2
    assert "interval must be > 0" in capsys.readouterr().err


@pytest.mark.slow  # make test-slow: keeps make test under 8 minutes on 2 cores
def test_env_benchmark_script_prints_one_json_line():
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_env.py", "--steps", "500", "--repeat", "1", "--ppo-steps", "512"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["step_ratio"] > 0 and record["ppo_ratio"] > 0


# --- What a newcomer met (issue 15): file modes, --version, planner specs, tables, wording ---

SMALL_MMC = """name: small_mmc
horizon: 600
seed: 0
sla: {latency: 5.0}
sources:
  jobs: {process: poisson, rate: 4.0, to: work}
stages:
  work:
    workers: {initial: 6, min: 1, max: 12, startup_delay: 0.0, cost_per_second: 1.0}
    service: {dist: exponential, mean: 1.0}
"""

RAW_FLOAT = re.compile(r"\d\.\d{4,}")
"""What pandas prints for a float it was not told how to format (-399.739236, 0.001953)."""


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def file_modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_written_files_get_the_usual_mode_under_the_umask(mask, tmp_path, capsys):
    """A result is a file like any other (0o666 less the umask), not the 0o600 of mkstemp's
    temporary that the atomic rename used to carry into place."""
    scenario = tmp_path / "small_mmc.yaml"
    scenario.write_text(SMALL_MMC)
    with umask(mask):
        series = tmp_path / "series.csv"
        assert main(["simulate", str(scenario), "--timeseries", str(series), "--interval", "60"]) == 0
        out = tmp_path / "evaluation"
        args = ["evaluate", "--scenario", str(scenario), "--planner", "static", "--planner", "erlang"]
        assert main([*args, "--seeds", "2", "--processes", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert stat.S_IMODE(series.stat().st_mode) == 0o666 & ~mask
    modes = file_modes(out)
    assert {"summary.csv", "paired.csv", "results.parquet", "evaluation.json"} <= set(modes)
    assert modes == dict.fromkeys(modes, 0o666 & ~mask)


def test_the_umask_is_read_without_being_left_changed():
    from adaptflow._io import current_umask

    with umask(0o037):
        assert current_umask() == 0o037
        assert os.umask(0o037) == 0o037  # still the process's umask after reading it


def test_version_is_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"adaptflow {metadata.version('adaptflow')}"


@pytest.mark.parametrize("command", ["evaluate", "serve", "live", "compare-live"])
def test_every_command_taking_a_planner_documents_the_spec_forms(command):
    """onnx:PATH and LABEL@SPEC are in the help of each command whose --planner takes them."""
    from adaptflow.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = " ".join(subparsers.choices[command].format_help().split())
    assert "onnx:PATH" in text and "LABEL@SPEC" in text and "sb3:PATH" in text
    if command == "evaluate":
        from adaptflow.policies.registry import PLANNERS

        assert all(name in text for name in PLANNERS)
        assert "ppo@sb3:" in text


def test_a_mistyped_planner_parameter_is_one_line_naming_it(capsys):
    assert main(["evaluate", "--scenario", "mmc", "--planner", "threshold:target=abc"]) == 2
    err = capsys.readouterr().err
    assert err == "adaptflow: error: planner 'threshold', parameter target 'abc': expected a number\n"


def test_evaluate_and_tune_baseline_print_formatted_tables(tmp_path, capsys):
    """One table formatter: thousands separators, percentages and CIs, never pandas' raw floats."""
    scenario = tmp_path / "small_mmc.yaml"
    scenario.write_text(SMALL_MMC)
    tune = ["tune-baseline", "--scenario", str(scenario), "--planner", "threshold", "--grid", "target=0.6,0.8"]
    assert main([*tune, "--seeds", "2", "--processes", "1"]) == 0
    out = capsys.readouterr().out
    assert "threshold on 2 training seeds (0..1), the best 2 of 2" in out
    assert "95% CI" in out and "SLA viol." in out and "best on 2 training seeds: threshold:target=" in out
    assert not RAW_FLOAT.search(out), out
    args = ["evaluate", "--scenario", str(scenario), "--planner", "static", "--planner", "erlang", "--seeds", "2"]
    assert main([*args, "--processes", "1"]) == 0
    out = capsys.readouterr().out
    assert "small_mmc: 2 held-out seeds" in out and "paired, seed by seed" in out
    assert not RAW_FLOAT.search(out), out


@pytest.mark.parametrize(
    ("args", "title"),
    [
        (["--seed", "3", "--horizon", "500"], "adaptflow simulate mmc: seed 3, horizon 500 s"),
        (["--horizon", "700"], "adaptflow simulate mmc: seed 0, horizon 700 s"),  # mmc.yaml's own seed
    ],
)
def test_the_simulate_title_shows_the_seed_and_horizon_used(args, title, capsys):
    assert main(["simulate", "mmc", *args]) == 0
    assert title in capsys.readouterr().out


def test_forecast_error_names_its_unit_and_its_seeds_plainly(capsys):
    """Seeds 1..N are not evaluation's held-out seeds (1,000,000 + k): the text says which they are."""
    assert main(["forecast-error", "etl_diurnal", "--seeds", "2", "--lookahead", "2"]) == 0
    out = capsys.readouterr().out
    assert "held-out" not in out
    assert "2 episodes on seeds 1..2 (forecasters fitted on seed 10,000)" in out
    assert "lookahead (steps of 30 s)" in out
