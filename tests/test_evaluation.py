"""The evaluation harness: reproducible tables, held-out seeds, clear errors, SB3 planners."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from stable_baselines3 import PPO

from adaptflow.agents import Planner
from adaptflow.envs import make
from adaptflow.experiments.evaluation import (
    EVALUATION_SEED_BASE,
    check_disjoint,
    evaluate,
    evaluation_seeds,
    paired_comparison,
    run_episode,
    summarize,
    wilson_interval,
    workload_notes,
)
from adaptflow.policies.registry import make_planner, parse_planner
from adaptflow.policies.sb3 import SB3Planner
from adaptflow.scenario import Scenario, load_scenario
from tests.helpers import scenario as build_scenario
from tests.helpers import stage, trace_source

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
    # no load cycle: Holt-Winters without a season (a flat forecast), the same rule as a learned planner's
    assert make_planner("predictive", load_scenario("bursty"), 30.0)[1] == "holt_winters"


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


# ---------------------------------------------------------------------------------------------
# Paired statistics: share of seeds won, its interval, and the unpaired figure kept apart
# ---------------------------------------------------------------------------------------------
def _table(costs: dict[str, dict[int, float]]) -> pd.DataFrame:
    """An episode table from {planner: {seed: cost}}."""
    return pd.DataFrame(
        [{"planner": p, "seed": s, "cost": c} for p, by_seed in costs.items() for s, c in by_seed.items()]
    )


def test_a_planner_that_wins_every_seed_has_share_won_one_but_not_the_unpaired_figure():
    """Costs vary far more from seed to seed (100 per seed) than between planners (1): the
    planner is cheaper on all 10 seeds, yet over all pairs of episodes only 55 of 100 favour it."""
    table = _table(
        {"static": {k: 100.0 * k for k in range(1, 11)}, "learned": {k: 100.0 * k - 1 for k in range(1, 11)}}
    )
    row = paired_comparison(table).set_index("planner").loc["learned"]
    assert row.baseline == "static" and row.episodes == 10
    assert row.share_won == 1.0
    assert row.unpaired_prob_improvement == pytest.approx(0.55)
    z2 = stats.norm.ppf(0.975) ** 2
    assert row.share_won_ci_low == pytest.approx(1 / (1 + z2 / 10)) and row.share_won_ci_high == 1.0
    assert row.share_won_ci_low == pytest.approx(0.7225, abs=1e-4)  # Wilson, 10 of 10
    assert row.cost_diff_mean == pytest.approx(-1.0) and row.wilcoxon_p < 0.01
    assert "prob_improvement" not in paired_comparison(table).columns


def test_ties_count_half_a_win():
    base = {k: 10.0 for k in range(10)}
    # 4 wins, 2 ties, 4 losses: half the seeds won, an interval symmetric about one half
    even = {**{k: 9.0 for k in range(4)}, 4: 10.0, 5: 10.0, **{k: 11.0 for k in range(6, 10)}}
    # 3 wins, 1 tie on four seeds: 3.5 of 4
    mostly = {0: 9.0, 1: 9.0, 2: 9.0, 3: 10.0}
    paired = paired_comparison(_table({"erlang": base, "even": even, "mostly": mostly})).set_index("planner")
    assert paired.loc["even", "share_won"] == 0.5
    low, high = paired.loc["even", ["share_won_ci_low", "share_won_ci_high"]]
    assert low < 0.5 < high and 0.5 - low == pytest.approx(high - 0.5)
    assert paired.loc["mostly", "episodes"] == 4 and paired.loc["mostly", "share_won"] == 0.875
    assert paired.loc["mostly", "unpaired_prob_improvement"] == 0.875  # equal baseline costs: pairs agree


def test_only_the_seeds_both_planners_ran_are_paired():
    """The planner ran seeds 1-6, the baseline 3-8: seeds 1, 2 (the planner's only wins) and
    7, 8 are left out, so the planner won none of the 4 paired seeds."""
    planner = {1: 0.0, 2: 0.0, 3: 20.0, 4: 20.0, 5: 20.0, 6: 20.0}
    baseline = {s: 10.0 for s in range(3, 9)}
    row = paired_comparison(_table({"threshold": baseline, "learned": planner})).set_index("planner").loc["learned"]
    assert row.episodes == 4 and row.share_won == 0.0 and row.cost_diff_mean == 10.0
    assert row.share_won_ci_low == 0.0 and 0 < row.share_won_ci_high < 0.6
    disjoint = paired_comparison(_table({"threshold": baseline, "other": {100: 1.0}})).set_index("planner")
    assert disjoint.loc["other", "episodes"] == 0 and np.isnan(disjoint.loc["other", "share_won"])


def test_the_best_baseline_is_the_reference_and_a_table_without_baselines_has_no_rows():
    table = _table({"static": {1: 50.0, 2: 50.0}, "erlang": {1: 30.0, 2: 40.0}, "learned": {1: 35.0, 2: 35.0}})
    paired = paired_comparison(table).set_index("planner")
    assert set(paired.baseline) == {"erlang"} and set(paired.index) == {"static", "learned"}
    assert paired.loc["learned", "share_won"] == 0.5  # loses seed 1 (35 > 30), wins seed 2 (35 < 40)
    empty = paired_comparison(_table({"learned": {1: 1.0}, "clairvoyant": {1: 2.0}}))
    assert empty.empty and "share_won" in empty.columns


def test_wilson_interval_matches_the_score_test_it_inverts():
    """At each end of the interval, the score test of share = end on the observed share gives
    p = 0.05: the interval is the set of shares the data do not reject."""
    for successes, n in [(3, 10), (7.5, 20), (0, 5)]:
        low, high = wilson_interval(successes, n)
        for end in (low, high):
            if 0 < end < 1:
                z = (successes / n - end) / np.sqrt(end * (1 - end) / n)
                assert 2 * stats.norm.sf(abs(z)) == pytest.approx(0.05, abs=1e-9)
    assert wilson_interval(0, 5)[0] == 0.0 and np.isnan(wilson_interval(0, 0)[0])


# ---------------------------------------------------------------------------------------------
# Takeovers: decisions a guarded planner handed to its fallback rule, per episode
# ---------------------------------------------------------------------------------------------
class CountingPlanner(Planner):
    """A static planner that counts every third decision as a takeover, like a guard would.
    ``zero_on_reset``: whether its counter restarts with each episode or runs on across them."""

    def __init__(self, inner: Planner, start: int, zero_on_reset: bool):
        self.inner, self.takeovers, self.zero_on_reset, self.decisions = inner, start, zero_on_reset, 0

    def reset(self) -> None:
        self.inner.reset()
        self.decisions = 0
        if self.zero_on_reset:
            self.takeovers = 0

    def plan(self, snapshot, insights):
        self.decisions += 1
        if self.decisions % 3 == 0:
            self.takeovers += 1
        return self.inner.plan(snapshot, insights)


@pytest.mark.parametrize("zero_on_reset", [False, True])
def test_each_episode_records_its_own_takeovers(zero_on_reset):
    static = make_planner("static", SHORT, 30.0)[0]
    planner = CountingPlanner(make_planner("static", SHORT, 30.0)[0], start=7, zero_on_reset=zero_on_reset)
    seed = EVALUATION_SEED_BASE
    first = run_episode(SHORT, planner, seed)
    second = run_episode(SHORT, planner, seed + 1)
    assert first["decisions"] == 60 and first["takeovers"] == 20 and second["takeovers"] == 20
    plain = run_episode(SHORT, static, seed)
    assert plain["takeovers"] == 0 and plain["cost"] == first["cost"]  # counting changed no decision
    rows = [{"planner": "guarded", **first}, {"planner": "guarded", **second}, {"planner": "static", **plain}]
    summary = summarize(pd.DataFrame(rows)).set_index("planner")
    assert summary.loc["guarded", "takeovers_mean"] == 20.0 and summary.loc["static", "takeovers_mean"] == 0.0


# ---------------------------------------------------------------------------------------------
# Notes on what the intervals cover, and the part of a series evaluated
# ---------------------------------------------------------------------------------------------
def test_replayed_traces_get_a_note_that_seeds_vary_only_service_times(tmp_path):
    times = [float(t) for t in range(0, 1800, 2)]
    work = {"work": stage(2, max_workers=4)}
    traced = build_scenario(work, {"jobs": trace_source(tmp_path, times, "work")}, horizon=1800)
    result = evaluate(traced, ["static", "erlang"], seeds=2, out_dir=tmp_path / "out", processes=1)
    assert len(result.notes) == 1 and "seeds vary only service times" in result.notes[0]
    settings = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert settings["notes"] == result.notes and settings["part"] is None
    mixed = build_scenario(
        {"work": stage(2, max_workers=4)},
        {"jobs": trace_source(tmp_path, times, "work"), "more": {"process": "poisson", "rate": 0.1, "to": "work"}},
        horizon=1800,
    )
    assert workload_notes(mixed) == [] and workload_notes(SHORT) == []  # some arrivals vary with the seed


def _series_scenario(tmp_path: Path, **source: Any) -> Scenario:
    """One stage fed by a series source: two days of a daily sine wave, sampled every minute."""
    t = np.arange(0, 2 * 86400, 60.0)
    path = tmp_path / "cpu.csv"
    path.write_text("timestamp,cpu\n" + "".join(f"{a},{1 + 0.5 * np.sin(2 * np.pi * a / 86400)}\n" for a in t))
    series = {"file": str(path), "value_column": "cpu"}
    jobs = {"process": "series", "series": series, "scale": {"mean": 1.0}, "to": "work", **source}
    return build_scenario({"work": stage(2, max_workers=4)}, {"jobs": jobs}, horizon=1800)


def test_windows_of_one_series_get_a_note_naming_the_series(tmp_path):
    schema = pytest.importorskip("adaptflow.scenario.schema")
    if not hasattr(schema, "SeriesSource"):
        pytest.skip("adaptflow.scenario.schema has no SeriesSource yet")
    spec = _series_scenario(tmp_path)
    label = spec.sources["jobs"].label
    expected = (
        f"windows drawn from one series ({label}): the interval covers window-to-window variation "
        "within that series only"
    )
    result = evaluate(spec, ["static"], seeds=3, out_dir=tmp_path / "out", processes=1, part="test")
    assert "cpu" in label and result.notes == [expected]
    settings = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert settings["part"] == "test" and settings["notes"] == [expected]
    # The part reaches the episodes: training windows are other windows, with other arrivals.
    train = evaluate(spec, ["static"], seeds=3, processes=1, part="train")
    assert list(train.table.completed) != list(result.table.completed)
    pinned = workload_notes(_series_scenario(tmp_path, window={"start": 0.0}))
    assert len(pinned) == 1 and pinned[0].startswith(f"one pinned window of {label}:")


def test_part_is_checked_before_any_work_and_saved_with_the_settings(tmp_path):
    with pytest.raises(ValueError, match=r"part: 'tset'; expected one of train, validation, test, all"):
        evaluate(SHORT, ["static"], seeds=1, out_dir=tmp_path / "bad", processes=1, part="tset")
    assert not (tmp_path / "bad").exists()
    # A scenario without series sources is the same scenario for every part.
    with_part = evaluate(SHORT, ["static"], seeds=1, out_dir=tmp_path / "test", processes=1, part="test")
    without = evaluate(SHORT, ["static"], seeds=1, processes=1)
    pd.testing.assert_frame_equal(with_part.table, without.table)
    assert json.loads((tmp_path / "test" / "evaluation.json").read_text())["part"] == "test"
