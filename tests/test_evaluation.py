"""The evaluation harness: reproducible tables, held-out seeds, clear errors, SB3 planners."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from stable_baselines3 import PPO

from adaptflow.envs import make
from adaptflow.experiments.evaluation import (
    EVALUATION_SEED_BASE,
    check_disjoint,
    evaluate,
    evaluation_seeds,
    run_episode,
)
from adaptflow.policies.registry import make_planner, parse_planner
from adaptflow.policies.sb3 import SB3Planner
from adaptflow.scenario import load_scenario

SHORT = load_scenario("etl_diurnal", horizon=1800)


def test_same_planners_and_seeds_give_identical_tables(tmp_path):
    planners = ["static", "threshold:target=0.6", "erlang"]
    first = evaluate(SHORT, planners, seeds=3, out_dir=tmp_path / "a", processes=2)
    second = evaluate(SHORT, planners, seeds=3, out_dir=tmp_path / "b", processes=1)
    pd.testing.assert_frame_equal(first.table, second.table)
    pd.testing.assert_frame_equal(first.summary, second.summary)
    assert (tmp_path / "a" / "results.csv").read_text() == (tmp_path / "b" / "results.csv").read_text()
    on_disk = pd.read_parquet(tmp_path / "a" / "results.parquet")
    assert list(on_disk.planner.unique()) == planners and len(on_disk) == 9
    assert set(on_disk.seed) == set(evaluation_seeds(3))
    logs = sorted((tmp_path / "a" / "episodes").rglob("*.jsonl"))
    assert len(logs) == 9 and len(logs[0].read_text().splitlines()) == 60  # 1800 s / 30 s
    assert {"cost", "sla_violation_rate", "p95_latency", "drops", "escapes", "reward"} <= set(on_disk.columns)


def test_evaluation_fits_the_analyzer_once_with_the_numbers_of_a_fit_per_episode():
    """Holt-Winters is fitted on cycles simulated with its own training seed, so the fit of each
    episode used to be the same fit: fitting once per evaluation (in the parent, handed to the
    episodes as data) must give every episode's row bit for bit as a fresh fit per episode did."""
    from adaptflow.agents.analyzers import StandardAnalyzer, fit_holt_winters, season_length_of
    from adaptflow.agents.fitting import simulated_rates

    result = evaluate(SHORT, ["predictive"], seeds=2, processes=1)
    m = season_length_of(SHORT, 30.0)
    for row in result.table.to_dict("records"):
        traces = simulated_rates(SHORT, 30.0, 4 * m * 30.0, 10_000)  # what for_scenario did per episode
        models = {name: fit_holt_winters(y, m) for name, y in traces.items()}
        analyzer = StandardAnalyzer.for_scenario(SHORT, 30.0, "holt_winters", models=models)
        planner, forecaster = make_planner("predictive", SHORT, 30.0)
        assert forecaster == "holt_winters"
        expected = run_episode(SHORT, planner, row["seed"], 30.0, None, forecaster, analyzer=analyzer)
        assert {k: row[k] for k in expected} == expected


def test_paired_comparison_is_against_the_best_baseline():
    result = evaluate(SHORT, ["static", "erlang", "clairvoyant"], seeds=4, processes=1)
    means = result.table.groupby("planner")["cost"].mean()
    best = "erlang" if means["erlang"] < means["static"] else "static"
    assert set(result.paired.baseline) == {best}
    row = result.paired.set_index("planner").loc["clairvoyant"]
    own = result.table[result.table.planner == "clairvoyant"].set_index("seed")["cost"]
    ref = result.table[result.table.planner == best].set_index("seed")["cost"]
    assert row.cost_diff_mean == pytest.approx((own - ref).mean())
    assert row.cost_diff_ci_low <= row.cost_diff_mean <= row.cost_diff_ci_high
    summary = result.summary.set_index("planner")
    assert (summary.cost_ci_low <= summary.cost_mean).all() and (summary.cost_mean <= summary.cost_ci_high).all()


def test_training_and_evaluation_seeds_never_overlap():
    assert min(evaluation_seeds(20)) >= EVALUATION_SEED_BASE
    check_disjoint(list(range(100)), evaluation_seeds(20))
    with pytest.raises(ValueError, match="both training and evaluation"):
        check_disjoint([3, EVALUATION_SEED_BASE + 1], evaluation_seeds(5))
    with pytest.raises(ValueError, match="must be below"):
        check_disjoint([EVALUATION_SEED_BASE + 99], evaluation_seeds(5))
    with pytest.raises(ValueError, match="expected a count from 1 to 10,000"):
        evaluation_seeds(0)


@pytest.mark.parametrize(
    ("scenario", "planners", "message"),
    [
        (SHORT, ["static", "hpa"], "unknown planner 'hpa'"),
        (SHORT, ["threshold:target"], "is not key=value"),
        (SHORT, ["erlang:wait=3"], "has no parameter 'wait'"),
        (SHORT, ["erlang:target_wait=-1"], "target_wait must be > 0"),
        (SHORT, ["quality"], "needs a controllable split"),
        ("quality_drift", ["quality:staffing=elastic"], "expected one of planned, reactive, fixed"),
        ("quality_drift", ["quality:max_utilization=0"], "max_utilization must be > 0"),
        (SHORT, [], "no planner"),
        (SHORT, ["static", "static"], "named twice"),
        ("no_such_scenario", ["static"], "neither a file nor a shipped scenario"),
        (load_scenario("bursty"), ["clairvoyant"], "MMPP"),
        (SHORT, ["sb3:missing.zip"], "does not exist"),
    ],
)
def test_bad_evaluations_fail_before_any_work(scenario, planners, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        evaluate(scenario, planners, seeds=2, out_dir=tmp_path / "out", processes=1)
    assert not (tmp_path / "out").exists()


def test_planner_specs_parse_values():
    assert parse_planner("threshold:target=0.6,metric=queue_per_worker,tolerance=0") == (
        "threshold",
        {"target": 0.6, "metric": "queue_per_worker", "tolerance": 0},
    )
    planner, forecaster = make_planner("predictive", SHORT, 30.0)
    assert forecaster == "holt_winters" and planner.target_wait == pytest.approx(1.0)
    assert make_planner("predictive", load_scenario("bursty"), 30.0)[1] == "ewma"  # no load cycle


def test_sb3_planner_acts_like_the_model_in_its_env(tmp_path):
    torch.set_num_threads(1)
    env = make("adaptflow/Autoscale-v0", horizon=1800.0)
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(128)
    planner = SB3Planner.from_env(model, env)
    obs, _ = env.reset(seed=4)
    inner = env.unwrapped
    plan = planner.plan(inner.snapshot, inner.insights)
    action, _ = model.predict(obs, deterministic=True)
    assert plan == inner.decoder.decode(action, inner.executor.current_workers())
    path = tmp_path / "model.zip"
    model.save(path)
    result = run_episode(SHORT, make_planner(f"sb3:{path}", SHORT, 30.0)[0], seed=EVALUATION_SEED_BASE)
    assert result["decisions"] == 60 and np.isfinite(result["cost"])


def test_tune_baseline_ranks_combinations_on_training_seeds(tmp_path):
    from adaptflow.experiments.tuning import tune_baseline

    result = tune_baseline(
        SHORT, "threshold", {"target": [0.5, 0.9], "tolerance": [0.1]}, seeds=2, out_dir=tmp_path, processes=1
    )
    assert list(result.table.cost_mean) == sorted(result.table.cost_mean)
    assert result.best == result.table.planner.iloc[0] and result.best.startswith("threshold:target=")
    episodes = pd.read_csv(tmp_path / "episodes.csv")
    assert set(episodes.seed) == {0, 1} and episodes.seed.max() < EVALUATION_SEED_BASE
    assert (tmp_path / "best.json").read_text().count(result.best) == 1


def test_tuning_skips_combinations_the_planner_rejects(tmp_path):
    from adaptflow.experiments.tuning import tune_baseline

    grid = {"staffing": ["fixed"], "high": [0.0, 0.08], "low": [0.0, 0.05]}
    result = tune_baseline("quality_drift", "quality", grid, seeds=1, out_dir=tmp_path, processes=1)
    assert list(result.skipped) == ["quality:staffing=fixed,high=0.0,low=0.05"]
    assert "low <= high" in result.skipped["quality:staffing=fixed,high=0.0,low=0.05"]
    assert len(result.table) == 3 and not result.table.planner.isin(list(result.skipped)).any()
    assert "low=0.05" in (tmp_path / "best.json").read_text()


@pytest.mark.parametrize(
    ("planner", "grid", "message"),
    [
        ("hpa", {"target": [0.5]}, "unknown planner 'hpa'"),
        ("threshold", {}, "empty grid"),
        ("threshold", {"targett": [0.5]}, "has no parameter 'targett'"),
        ("threshold", {"metric": ["cpu"]}, "metric 'cpu'"),
    ],
)
def test_bad_tuning_grids_fail_before_any_work(planner, grid, message, tmp_path):
    from adaptflow.experiments.tuning import tune_baseline

    with pytest.raises(ValueError, match=message):
        tune_baseline(SHORT, planner, grid, seeds=2, out_dir=tmp_path / "t", processes=1)
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize(
    ("items", "message"),
    [(["target"], "is not key=v1,v2"), (["target="], "has no values"), (["a=1", "a=2"], "twice")],
)
def test_grid_parsing_errors(items, message):
    from adaptflow.experiments.tuning import parse_grid

    with pytest.raises(ValueError, match=message):
        parse_grid(items)
    assert parse_grid(["target=0.5,0.7", "metric=utilization"]) == {"target": [0.5, 0.7], "metric": ["utilization"]}
