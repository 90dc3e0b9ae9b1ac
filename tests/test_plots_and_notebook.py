"""Figures and the analysis notebook, on a small results directory made by the harness."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from adaptflow.cli import main
from adaptflow.experiments.evaluation import evaluate
from adaptflow.experiments.plots import FIGURES, episode_series, figures, load_results
from adaptflow.experiments.training import train
from adaptflow.scenario import load_scenario

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "analyze_policies.ipynb"
TINY = Path(__file__).resolve().parents[1] / "configs" / "train" / "tiny.yaml"
FILES = sorted(f"{name}.{suffix}" for name in FIGURES for suffix in ("png", "svg"))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    scenario = load_scenario("quality_drift", horizon=1800)
    evaluate(scenario, ["static", "erlang", "quality", "clairvoyant"], seeds=2, out_dir=out, processes=1)
    return out


@pytest.fixture(scope="module")
def drawn(results) -> dict[str, Figure]:
    return figures(results)


@pytest.fixture(scope="module")
def best(results) -> str:
    """The best baseline as the evaluation's own paired table names it."""
    (baseline,) = set(pd.read_csv(results / "paired.csv").baseline)
    return baseline


def _axes(fig: Figure, label: str) -> Axes:
    (ax,) = [a for a in fig.axes if a.get_label() == label]
    return ax


def _errorbars(ax: Axes) -> dict[str, ErrorbarContainer]:
    return {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}


def test_plot_writes_png_and_svg(results, capsys):
    """``adaptflow plot`` (through ``plot_results``, drawn once: each figure takes seconds)."""
    assert main(["plot", str(results), "--out", str(results / "again")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6
    paths = sorted((results / "again").iterdir())
    assert [p.name for p in paths] == FILES
    for path in paths:
        assert path.stat().st_size > 1000
        assert path.read_bytes()[:4] in (b"\x89PNG", b"<?xm")


def test_cost_vs_sla_zooms_on_the_compared_planners_and_labels_every_mean(results, drawn, best):
    """The zoom holds every episode of the best baseline and of the non-baselines (here the
    clairvoyant), tightly; every planner's mean is labelled at its mean, close ones in the zoom."""
    table = load_results(results)
    fig = drawn["cost_vs_sla"]
    full, zoom = _axes(fig, "all"), _axes(fig, "zoom")
    focus = [best, "clairvoyant"]
    points = table[table.planner.isin(focus)]
    (x0, x1), (y0, y1) = zoom.get_xlim(), zoom.get_ylim()
    assert x0 < points.sla_violation_rate.min() and points.sla_violation_rate.max() < x1
    assert y0 < points.cost.min() and points.cost.max() < y1
    # Tight: the margin is a small share of the points' own span, not the whole figure's range.
    assert (y1 - y0) < 1.25 * (points.cost.max() - points.cost.min())
    assert (x1 - x0) < 1.25 * (points.sla_violation_rate.max() - points.sla_violation_rate.min())
    means = table.groupby("planner")[["sla_violation_rate", "cost"]].mean()
    labels = {ax.get_label(): {t.get_text(): t.xy for t in ax.texts} for ax in (full, zoom)}
    assert set(labels["zoom"]) == set(focus)
    assert set(labels["all"]) == set(table.planner) - set(focus)
    for planner, xy in {**labels["all"], **labels["zoom"]}.items():
        assert xy == pytest.approx(tuple(means.loc[planner]))
    markers = [c.lines[0].get_marker() for c in _errorbars(zoom).values()]
    assert len(markers) == len(focus) and len(set(markers)) == len(markers)
    assert [t.get_text() for t in full.get_legend().get_texts()] == list(dict.fromkeys(table.planner))


def test_metrics_ci_shows_paired_differences_to_the_best_baseline(results, drawn, best):
    """Points with intervals around a zero line, not bars from zero: the cost panel agrees with
    paired.csv, and every panel is the mean of per-seed differences; the baseline has no point."""
    table = load_results(results)
    paired = pd.read_csv(results / "paired.csv").set_index("planner")
    fig = drawn["metrics_ci"]
    cost = _axes(fig, "metric:cost")
    points = _errorbars(cost)
    assert set(points) == set(table.planner) - {best} and best not in {t.get_text() for t in cost.get_xticklabels()}
    for planner, container in points.items():
        assert container.lines[0].get_ydata()[0] == pytest.approx(paired.loc[planner, "cost_diff_mean"])
        (segment,) = container.lines[2][0].get_segments()
        low, high = paired.loc[planner, ["cost_diff_ci_low", "cost_diff_ci_high"]]
        assert segment[:, 1] == pytest.approx([low, high])
    per_seed = table.pivot(index="seed", columns="planner", values="sla_violation_rate")
    for planner, container in _errorbars(_axes(fig, "metric:sla_violation_rate")).items():
        expected = (per_seed[planner] - per_seed[best]).mean()
        assert container.lines[0].get_ydata()[0] == pytest.approx(expected)
    for ax in fig.axes:
        assert not ax.patches  # no bars
        assert any(list(line.get_ydata()) == [0, 0] for line in ax.lines)  # the zero line
    assert f"Difference to {best} (the best baseline)" in fig.get_suptitle()


def test_workers_panels_share_one_scale_and_name_the_arrivals(results, drawn):
    """Every panel's worker axis (and arrival axis) is one shared scale from zero that holds
    every planner's pool; every panel's legend names the arrivals line."""
    table = load_results(results)
    fig = drawn["workers_vs_load"]
    planners = list(dict.fromkeys(table.planner))
    workers = [_axes(fig, f"workers:{p}") for p in planners]
    arrivals = [_axes(fig, f"arrivals:{p}") for p in planners]
    most = max(episode_series(results, p, int(table.seed.min())).workers.max() for p in planners)
    for group in (workers, arrivals):
        assert all(group[0].get_shared_y_axes().joined(group[0], ax) for ax in group[1:])
        assert {ax.get_ylim() for ax in group} == {group[0].get_ylim()}
        assert group[0].get_ylim()[0] == 0
    assert workers[0].get_ylim()[1] >= most
    for ax in workers:
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert texts[0] == "arrivals/s" and texts[1].endswith("workers")


def test_every_title_names_the_scenario_part_and_seeds(results, drawn, tmp_path):
    for name, fig in drawn.items():
        assert "quality_drift, 2 seeds (1000000-1000001)" in fig.get_suptitle(), name
        assert "part" not in fig.get_suptitle()  # the evaluation recorded none
    copy = shutil.copytree(results, tmp_path / "copy", ignore=shutil.ignore_patterns("plots", "again"))
    settings = json.loads((copy / "evaluation.json").read_text())
    (copy / "evaluation.json").write_text(json.dumps({**settings, "part": "test"}))
    for name, fig in figures(copy).items():
        assert "quality_drift, test part, 2 seeds" in fig.get_suptitle(), name


def test_without_a_baseline_the_cheapest_planner_is_the_reference(results, tmp_path):
    """A table of one planner, no baseline among them: the figures still draw, and the
    difference figure says what it compares with instead of inventing a baseline."""
    copy = shutil.copytree(results, tmp_path / "copy", ignore=shutil.ignore_patterns("plots", "again"))
    table = load_results(copy)
    table[table.planner == "clairvoyant"].to_parquet(copy / "results.parquet", index=False)
    drawn = figures(copy)
    assert "Difference to clairvoyant (the cheapest planner; no baseline was evaluated)" in (
        drawn["metrics_ci"].get_suptitle()
    )
    assert not _errorbars(_axes(drawn["metrics_ci"], "metric:cost"))
    assert [t.get_text() for t in _axes(drawn["cost_vs_sla"], "zoom").texts] == ["clairvoyant"]


@pytest.mark.slow  # a training run (16 s); the plot command's files stay in make test (test_plot_writes_png_and_svg)
def test_the_cli_and_a_training_run_write_the_same_figures(tmp_path):
    """A training run's final evaluation and ``adaptflow plot`` on its results directory
    write the same files (both through plot_results)."""
    run = train(TINY, [f"output_dir={tmp_path}", "total_timesteps=512", "evaluation.final_seeds=1"])
    evaluation = run.run_dir / "evaluation"
    assert main(["plot", str(evaluation), "--out", str(tmp_path / "cli")]) == 0
    written = sorted(p.name for p in (evaluation / "plots").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "cli").iterdir()) == FILES


def test_episode_series_follows_the_log(results):
    series = episode_series(results, "erlang", 1_000_000)
    assert len(series) == 60 and series.time.is_monotonic_increasing
    assert (series.workers > 0).all() and series.arrival_rate.mean() == pytest.approx(5.0, rel=0.1)


def test_plot_of_a_missing_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "has no results.parquet" in capsys.readouterr().err
