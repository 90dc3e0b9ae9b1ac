"""The analysis functions (adaptflow.experiments.analysis) on a tiny training run and a small
evaluation of the cheap planners and the tiny run's exported model."""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from adaptflow.agents.coordinator import read_event_log
from adaptflow.experiments import analysis
from adaptflow.experiments.evaluation import episode_scenario, evaluate
from adaptflow.experiments.plots import episode_series, load_results
from adaptflow.runtime.onnx_planner import OnnxPlanner
from adaptflow.scenario import load_scenario

from .helpers import train_and_export

pytestmark = pytest.mark.xdist_group("analysis")  # one process builds the artifacts both use

RULES = ["static", "erlang", "threshold", "predictive"]
SEEDS = [1_000_000, 1_000_001, 1_000_002]
HORIZON = 1800.0  # the tiny run's (configs/train/tiny.yaml): 60 decisions of 30 s


@dataclass(frozen=True)
class Artifacts:
    run_dir: Path  # a tiny training run with its final evaluation (static, erlang) and its export
    results_dir: Path  # the cheap rules and the exported tiny model ("ppo") on SEEDS
    best_model: Path
    export: Path  # planner.onnx


def build_artifacts(base: Path) -> Artifacts:
    """Made once per test session (~20 s; tests/test_notebook.py reuses it): a marker file written
    last says the directory is complete."""
    marker = base / "artifacts.json"
    if marker.is_file():
        return Artifacts(**{k: Path(v) for k, v in json.loads(marker.read_text()).items()})
    best, onnx = train_and_export(base / "runs", "evaluation.final_seeds=2")
    results = base / "results"
    scenario = load_scenario("etl_diurnal", horizon=HORIZON)
    evaluate(scenario, [*RULES, f"ppo@onnx:{onnx.parent}"], seeds=SEEDS, out_dir=results, processes=1)
    artifacts = Artifacts(best.parent, results, best, onnx)
    marker.write_text(json.dumps({k: str(v) for k, v in artifacts.__dict__.items()}))
    return artifacts


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    base = tmp_path_factory.getbasetemp() / "analysis"
    base.mkdir(exist_ok=True)
    return build_artifacts(base)


def _lines(ax) -> list[np.ndarray]:
    return [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]


# --- where things are ----------------------------------------------------------------------


def test_the_run_its_evaluation_and_its_scenario_are_found(made: Artifacts) -> None:
    assert analysis.latest_run(made.run_dir.parents[1], "tiny") == made.run_dir
    assert analysis.latest_run(made.run_dir.parents[1], "quickstart") is None
    assert analysis.evaluation_dir(made.run_dir) == made.run_dir / "evaluation"
    assert analysis.learned_labels(made.results_dir) == ["ppo"]
    assert analysis.planner_specs(made.results_dir)["ppo"] == f"ppo@onnx:{made.export.parent}"
    assert analysis.repo_root(made.run_dir) == made.run_dir  # no pyproject.toml above a temp dir
    assert (analysis.repo_root(Path(__file__).parent) / "pyproject.toml").is_file()
    # evaluation.json names the scenario only: the shortened horizon comes from the run's config,
    # or without it from the event logs' end
    assert load_scenario("etl_diurnal").horizon != HORIZON
    assert analysis.evaluated_scenario(made.results_dir, made.run_dir).horizon == HORIZON
    assert analysis.evaluated_scenario(made.results_dir).horizon == HORIZON
    assert analysis.evaluated_scenario(made.run_dir / "evaluation").horizon == HORIZON
    assert analysis.export_for(made.run_dir) == made.export


def test_a_learned_planner_is_found_in_a_run_that_was_moved(made: Artifacts, tmp_path: Path) -> None:
    """evaluation.json keeps a model path as the command was given it (relative to where it
    ran); a copied run's evaluation finds the model in the run directory that holds it."""
    moved = tmp_path / "elsewhere" / made.run_dir.name
    shutil.copytree(made.run_dir, moved, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    settings = json.loads((moved / "evaluation" / "evaluation.json").read_text())
    settings["planners"][0] = "ppo@sb3:runs/tiny/20990101T000000Z/best_model.zip"
    (moved / "evaluation" / "evaluation.json").write_text(json.dumps(settings))
    specs = analysis.planner_specs(moved / "evaluation")
    assert specs == {"ppo": f"ppo@sb3:{moved / 'best_model.zip'}", "static": "static", "erlang": "erlang"}


# --- learning curves -----------------------------------------------------------------------


def test_learning_curves_draw_validation_baselines_and_training_reward(made: Artifacts) -> None:
    curve = analysis.validation_curve(made.run_dir)
    pd.testing.assert_frame_equal(curve, pd.read_csv(made.run_dir / "validation.csv"))
    levels = analysis.baseline_levels(made.run_dir).set_index("planner").cost
    summary = pd.read_csv(made.run_dir / "evaluation" / "summary.csv").set_index("planner").cost_mean
    assert sorted(levels.index) == ["erlang", "static"]  # the learned planner is not a baseline
    assert set(analysis.baseline_levels(made.run_dir).kind) == {"baseline"}
    assert levels.to_dict() == pytest.approx(summary[["static", "erlang"]].to_dict())
    rewards = analysis.training_rewards(made.run_dir)
    assert rewards.step.is_monotonic_increasing and rewards.step.max() == 2048
    fig = analysis.learning_curves(made.run_dir)
    left, right = fig.axes
    lines = _lines(left)
    assert np.array_equal(lines[0], curve.cost.to_numpy())
    flat = sorted(float(y[0]) for y in lines[1:] if np.all(y == y[0]))
    assert flat == pytest.approx(sorted(levels.to_numpy()))
    assert np.allclose(_lines(right)[0], rewards.value.to_numpy())


def test_training_rewards_join_the_segments_of_a_resumed_run(made: Artifacts, tmp_path: Path) -> None:
    """A resumed run logs to tensorboard/run_2: its steps follow run_1's, and a step logged by
    both (the checkpoint's) is read from the later segment."""
    from torch.utils.tensorboard import SummaryWriter

    shutil.copytree(made.run_dir / "tensorboard", tmp_path / "tensorboard")
    writer = SummaryWriter(str(tmp_path / "tensorboard" / "run_2"))
    for step, value in ((2048, 7.0), (2304, 8.0)):
        writer.add_scalar("rollout/ep_rew_mean", value, step)
    writer.close()
    rewards = analysis.training_rewards(tmp_path)
    first = analysis.training_rewards(made.run_dir)
    assert list(rewards.step) == [*first.step, 2304]
    assert rewards.set_index("step").value[2048] == 7.0


# --- side by side --------------------------------------------------------------------------


def test_side_by_side_puts_every_planner_of_a_row_on_one_y_scale(made: Artifacts) -> None:
    planners = [*RULES, "ppo"]
    fig = analysis.side_by_side(made.results_dir, SEEDS[0], planners)
    grid = np.array(fig.axes).reshape(len(analysis.SIDE_BY_SIDE_ROWS), len(planners))
    for row in grid:
        assert len({ax.get_ylim() for ax in row}) == 1
    series = {p: episode_series(made.results_dir, p, SEEDS[0]) for p in planners}
    queue_top = grid[2][0].get_ylim()[1]
    assert queue_top >= max(s.queue.max() for s in series.values())
    # the quietest planner's queue is drawn on the busiest one's scale, not stretched to its own
    assert min(s.queue.max() for s in series.values()) < 0.5 * queue_top
    assert [ax.get_title() for ax in grid[0]] == [f"{p} (seed {SEEDS[0]})" for p in planners]
    assert len(grid[1][0].get_lines()) == 3  # one line per stage of etl_diurnal


# --- what a policy saw and chose -----------------------------------------------------------


def test_decision_table_pairs_each_plan_with_the_snapshot_it_read(made: Artifacts) -> None:
    table = analysis.decision_table(made.results_dir, "erlang", [SEEDS[0]])
    records = read_event_log(made.results_dir / "episodes" / "erlang" / f"seed_{SEEDS[0]}.jsonl")
    assert len(table) == len(records) - 1
    for k, (before, record) in enumerate(itertools.pairwise(records)):
        row = table.iloc[k]
        assert row["time"] == record["decision_time"] == before["time"]
        assert row["target:transform"] == before["metrics"]["stages"]["transform"]["target"]
        assert row["workers"] == sum(record["plan"]["workers"].values())
        assert row["rate:events"] == pytest.approx(record["insights"]["rates"]["events"])
    static = analysis.decision_table(made.results_dir, "static")
    assert static.seed.nunique() == len(SEEDS) and static.workers.nunique() == 1


def test_policy_map_draws_erlang_against_the_load_it_staffs_for(made: Artifacts) -> None:
    """Erlang C staffs each stage for its estimated arrival rate: its total workers follow the
    rate features more closely than anything else it observes."""
    table = analysis.decision_table(made.results_dir, "erlang")
    ranking = analysis.feature_ranking(table)
    assert ranking.feature[0].split(":")[0] in ("rate", "stage_rate", "forecast")
    assert ranking.spearman[0] > 0.9
    assert "split:" not in " ".join(ranking.feature)  # etl_diurnal has none: no constant columns
    features = analysis.map_features(table)
    fig = analysis.policy_map(table)
    (points,) = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert np.allclose(points.get_offsets(), table[features].to_numpy())
    assert np.allclose(points.get_array(), table.workers.to_numpy())
    assert (points.norm.vmin, points.norm.vmax) == (table.workers.min(), table.workers.max())
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "workers"  # the colour bar
    three = analysis.policy_map(table, features=[*features, "queue:transform"])
    assert len(three.axes) == 3
    with pytest.raises(ValueError, match="expected 2 or 3 columns"):
        analysis.policy_map(table, features=["queue:transform", "no such feature"])


# --- sensitivity ---------------------------------------------------------------------------


def _depending_on(export: Path, feature: str, observations: np.ndarray, out: Path) -> OnnxPlanner:
    """The exported tiny model with a normalization that hides every observed feature but
    ``feature`` from the network (a variance of 1e12 maps them all to ~0) and spreads ``feature``
    over the clip range: a policy known to depend on that feature alone."""
    shutil.copytree(export.parent, out)
    meta = json.loads((out / "planner.json").read_text())
    names = [f["name"] for f in meta["observation"]["encoder"]["features"]]
    j = names.index(feature)
    mean, var = np.zeros(len(names)), np.full(len(names), 1e12)
    mean[j], var[j] = np.median(observations[:, j]), (observations[:, j].std() / 5) ** 2
    meta["observation"]["normalization"] = {"mean": mean.tolist(), "var": var.tolist(), "clip": 10.0, "epsilon": 1e-8}
    (out / "planner.json").write_text(json.dumps(meta))
    return OnnxPlanner.load(out)


def test_sensitivity_ranks_first_the_feature_the_policy_depends_on(made: Artifacts, tmp_path: Path) -> None:
    planner = OnnxPlanner.load(made.export)
    observations = analysis.encoded_observations(made.results_dir, "ppo", planner.encoder)
    assert observations.shape == (len(SEEDS) * (HORIZON / 30 - 1), planner.encoder.size)
    untouched = analysis.feature_sensitivity(planner, observations)
    assert untouched.feature[0] != "rate:events"  # so the doctored ranking below is the doctoring's
    doctored = _depending_on(made.export, "rate:events", observations, tmp_path / "doctored")
    for method in ("permutation", "difference"):
        ranked = analysis.feature_sensitivity(doctored, observations, method=method, step=0.3)
        assert ranked.feature[0] == "rate:events" and ranked.effect[0] > 0 and ranked.changed[0] > 0
        assert (ranked.effect[1:] == 0).all()
    fig = analysis.sensitivity_figure(untouched, top=5)
    bars = fig.axes[0].patches
    assert [b.get_width() for b in bars] == pytest.approx(list(untouched.effect[:5][::-1]))


def test_sensitivity_through_the_sb3_model_equals_the_onnx_export(made: Artifacts) -> None:
    from adaptflow.policies.sb3 import SB3Planner

    onnx = OnnxPlanner.load(made.export)
    sb3 = SB3Planner.load(made.best_model, load_scenario("etl_diurnal", horizon=HORIZON), 30.0)
    observations = analysis.encoded_observations(made.results_dir, "ppo", onnx.encoder, [SEEDS[0]])
    pd.testing.assert_frame_equal(
        analysis.feature_sensitivity(sb3, observations), analysis.feature_sensitivity(onnx, observations)
    )
    with pytest.raises(ValueError, match="expected \\(n >= 2"):
        analysis.feature_sensitivity(onnx, observations[:, :3])


# --- forecast error ------------------------------------------------------------------------


def test_forecast_error_sets_the_forecast_beside_the_rate_it_was_for(made: Artifacts) -> None:
    """A record's forecast was made at its decision for the interval that followed; its arrivals
    are that interval's: both on one row, never shifted by one. The first decision (a forecast
    made before any arrival was seen) is left out."""
    frame = analysis.forecast_error(made.results_dir, "erlang", SEEDS[1])
    records = read_event_log(made.results_dir / "episodes" / "erlang" / f"seed_{SEEDS[1]}.jsonl")[1:]
    assert frame.time.tolist() == [r["time"] for r in records]
    assert frame.forecast.tolist() == pytest.approx([r["insights"]["forecasts"]["events"][0] for r in records])
    assert frame.arrival_rate.tolist() == pytest.approx(
        [r["metrics"]["source_arrivals"]["events"] / 30 for r in records]
    )
    assert np.allclose(frame.error, frame.forecast - frame.arrival_rate)
    fig = analysis.forecast_error_figure(frame)
    top, bottom = fig.axes
    worst = frame.loc[frame.error.idxmin()]
    (note,) = top.texts
    assert f"forecast {worst.forecast:.1f}/s, real {worst.arrival_rate:.1f}/s" in note.get_text()
    assert np.array_equal(_lines(bottom)[0], frame.workers.to_numpy(dtype=float))
    assert top.get_shared_x_axes().joined(top, bottom)


# --- worst episodes ------------------------------------------------------------------------


def test_worst_episodes_rank_cost_against_the_best_baseline_on_the_same_seed(made: Artifacts) -> None:
    table = load_results(made.results_dir)
    worst = analysis.worst_episodes(made.results_dir, n=len(table))
    assert len(worst) == len(table)  # no clairvoyant here: every episode is ranked
    assert worst.ratio.is_monotonic_decreasing
    for row in worst.itertuples():
        on_seed = table[(table.seed == row.seed) & table.planner.isin(RULES)]
        assert row.baseline_cost == on_seed.cost.min()
        assert row.ratio == pytest.approx(row.cost / on_seed.cost.min())
    assert (worst[worst.planner == worst.best_baseline].ratio == 1).all()
    top = worst.iloc[0]
    series = episode_series(made.results_dir, top.planner, int(top.seed))
    assert top.peak_rate == series.arrival_rate.max() and top.max_queue == series.queue.max()
    assert np.isnan(top.window_start) and top.window == ""  # etl_diurnal has no calendar
    assert list(analysis.worst_episodes(made.results_dir, n=2, planners=["ppo"]).planner) == ["ppo", "ppo"]


def test_the_worst_episodes_of_a_series_workload_name_their_window(tmp_path: Path) -> None:
    """Each seed draws its own window of the recorded series; the digest reads it from the log."""
    scenario = load_scenario("etl_azure", horizon=600)
    evaluate(scenario, ["static"], seeds=2, out_dir=tmp_path, processes=1)
    worst = analysis.worst_episodes(tmp_path)
    for row in worst.itertuples():
        start, _ = episode_scenario(scenario, row.seed).calendar()
        assert row.window_start == pytest.approx(start, abs=1e-3)
        assert row.window.startswith("day ")
    assert worst.window_start.nunique() == 2


# --- what if -------------------------------------------------------------------------------


def test_what_if_is_the_original_until_the_swap_and_another_episode_after(made: Artifacts) -> None:
    scenario = analysis.evaluated_scenario(made.results_dir, made.run_dir)
    at = 900.0
    frame = analysis.what_if(scenario, SEEDS[0], "erlang", "static", at)
    original = frame[frame.run == "original"].reset_index(drop=True)
    swapped = frame[frame.run == "swapped"].reset_index(drop=True)
    assert len(original) == len(swapped) == HORIZON / 30
    before = original.decision_time < at
    columns = ["time", "arrival_rate", "forecast", "workers", "queue", "sla_violations", "cost"]
    pd.testing.assert_frame_equal(original.loc[before, columns], swapped.loc[before, columns])
    assert (original.workers[~before] != swapped.workers[~before]).any()
    assert swapped.workers[~before].nunique() == 1  # the static planner holds the pools it got
    # the original run is the logged evaluation episode of the same seed
    logged = episode_series(made.results_dir, "erlang", SEEDS[0])
    assert np.allclose(original.arrival_rate, logged.arrival_rate) and np.array_equal(original.workers, logged.workers)
    fig = analysis.what_if_figure(frame, at)
    assert all(any(np.allclose(line.get_xdata(), at) for line in ax.get_lines()) for ax in fig.axes)
    after = swapped.cost[~before].sum()
    assert f"swapped {after:,.0f}" in fig.texts[0].get_text()


def test_what_if_swaps_to_a_planner_with_its_own_warm_analyzer(made: Artifacts) -> None:
    """Predictive staffs for Holt-Winters forecasts; erlang's analyzer makes EWMA ones. After the
    swap predictive plans from its own analyzer, which has read every interval since the start:
    arrivals do not depend on the planner, so its plans are those of the logged predictive
    episode, decision for decision, while the loop's (erlang's) insights stay as they were."""
    scenario = analysis.evaluated_scenario(made.results_dir, made.run_dir)
    at = 600.0
    frame = analysis.what_if(scenario, SEEDS[1], "erlang", "predictive", at)
    original, swapped = (frame[frame.run == r].reset_index(drop=True) for r in ("original", "swapped"))
    assert np.allclose(original.forecast, swapped.forecast)
    records = read_event_log(made.results_dir / "episodes" / "predictive" / f"seed_{SEEDS[1]}.jsonl")
    logged = pd.Series([sum(r["plan"]["workers"].values()) for r in records])
    after = swapped.decision_time >= at
    assert swapped.planned[after].tolist() == logged[after].tolist()
    assert swapped.planned[~after].tolist() == original.planned[~after].tolist()
    assert swapped.planned[after].tolist() != original.planned[after].tolist()


def test_what_if_refuses_a_swap_outside_the_episode(made: Artifacts) -> None:
    scenario = analysis.evaluated_scenario(made.results_dir, made.run_dir)
    with pytest.raises(ValueError, match=r"at: 1800.0; expected a time inside the episode"):
        analysis.what_if(scenario, SEEDS[0], "erlang", "static", HORIZON)


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_the_analysis_writes_nothing_into_the_directories_it_reads(made: Artifacts) -> None:
    """A notebook over someone's run must leave it as it was (the export existed already)."""
    before = _listing(made.run_dir), _listing(made.results_dir)
    figures = [
        analysis.learning_curves(made.run_dir),
        analysis.side_by_side(made.results_dir, SEEDS[2]),
        analysis.policy_map(analysis.decision_table(made.results_dir, "ppo")),
        analysis.forecast_error_figure(analysis.forecast_error(made.results_dir, "ppo", SEEDS[2])),
    ]
    analysis.worst_episodes(made.results_dir)
    analysis.export_for(made.run_dir)
    assert (_listing(made.run_dir), _listing(made.results_dir)) == before
    assert all(isinstance(f, Figure) and analysis.to_png(f)[:4] == b"\x89PNG" for f in figures)


def test_the_analyze_command_writes_the_notebooks_figures_as_files(made: Artifacts, tmp_path: Path) -> None:
    from adaptflow.cli import main

    out = tmp_path / "analysis"
    assert main(["analyze", str(made.results_dir), "--run", str(made.run_dir), "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    for figure in ("side_by_side", "forecast_error", "policy_map", "learning_curves"):
        assert {f"{figure}.png", f"{figure}.svg"} <= names
    worst = pd.read_csv(out / "worst_episodes.csv")
    assert list(worst.ratio) == sorted(worst.ratio, reverse=True) and len(worst) >= 1
