"""Figures and the analysis notebook, on a small results directory made by the harness."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from adaptflow.cli import main
from adaptflow.experiments.evaluation import evaluate
from adaptflow.experiments.plots import episode_series, plot_results
from adaptflow.scenario import load_scenario

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "analyze_policies.ipynb"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    scenario = load_scenario("quality_drift", horizon=1800)
    evaluate(scenario, ["static", "erlang", "quality", "clairvoyant"], seeds=2, out_dir=out, processes=1)
    return out


def test_plot_writes_png_and_svg(results, capsys):
    paths = plot_results(results)
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{n}.{s}" for n in ("cost_vs_sla", "workers_vs_load", "metrics_ci") for s in ("png", "svg"))
    for path in paths:
        assert path.stat().st_size > 1000
        assert path.read_bytes()[:4] in (b"\x89PNG", b"<?xm")
    assert main(["plot", str(results), "--out", str(results / "again")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6


def test_episode_series_follows_the_log(results):
    series = episode_series(results, "erlang", 1_000_000)
    assert len(series) == 60 and series.time.is_monotonic_increasing
    assert (series.workers > 0).all() and series.arrival_rate.mean() == pytest.approx(5.0, rel=0.1)


def test_plot_of_a_missing_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "has no results.parquet" in capsys.readouterr().err


def test_the_analysis_notebook_runs(results, monkeypatch):
    """Every cell must run on a real results directory; a failing cell fails the suite."""
    monkeypatch.setenv("ADAPTFLOW_RESULTS", str(results))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(results)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "8 episodes: 4 planners x 2 seeds" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)
