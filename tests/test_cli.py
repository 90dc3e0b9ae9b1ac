"""The ``adaptflow simulate`` command, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_benchmark_script_prints_one_json_line():
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_simulator.py", "--items", "5000", "--repeat", "1"],
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
