"""The analysis notebook, executed on a tiny run and a small evaluation: every figure it is
meant to draw is found by name (its cell's tag) and must come out as a PNG image, with its
sentence of interpretation; every table as HTML. A figure that stops rendering fails here."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .test_analysis import Artifacts, build_artifacts

pytestmark = pytest.mark.xdist_group("analysis")  # one process builds the artifacts both use

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "analyze_policies.ipynb"
FIGURES = ("comparison", "learning_curves", "side_by_side", "sensitivity", "policy_map", "forecast_error", "what_if")
TABLES = ("summary", "worst_episodes")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    base = tmp_path_factory.getbasetemp() / "analysis"
    base.mkdir(exist_ok=True)
    return build_artifacts(base)


@pytest.fixture(scope="module")
def executed(made: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> dict[str, nbformat.NotebookNode]:
    """The notebook run once, in a scratch directory, on the run and a separate evaluation of
    the run's exported model; its code cells by tag."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    env = {**os.environ, "ADAPTFLOW_RUN": str(made.run_dir), "ADAPTFLOW_RESULTS": str(made.results_dir)}
    cwd = tmp_path_factory.mktemp("notebook")
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute(
        env=env
    )
    assert not list(cwd.iterdir()), "the notebook wrote into its working directory"
    cells = {}
    for cell in notebook.cells:
        for tag in cell.metadata.get("tags", []):
            assert tag not in cells, f"tag {tag!r} is on two cells"
            cells[tag] = cell
    return cells


def test_the_notebook_runs_without_an_error(executed: dict[str, nbformat.NotebookNode]) -> None:
    errors = [o for cell in executed.values() for o in cell.outputs if o.output_type == "error"]
    assert not errors, "\n".join(f"{o.ename}: {o.evalue}" for o in errors)
    text = "".join(o.get("text", "") for o in executed["setup"].outputs)
    assert "episodes: 5 planners x 3 seeds" in text and "about: 'ppo'" in text


def test_every_figure_cell_is_tagged(executed: dict[str, nbformat.NotebookNode]) -> None:
    """Renaming or dropping a figure is a change of this list, not a silent loss."""
    assert sorted(t.removeprefix("figure:") for t in executed if t.startswith("figure:")) == sorted(FIGURES)
    assert sorted(t.removeprefix("table:") for t in executed if t.startswith("table:")) == sorted(TABLES)


@pytest.mark.parametrize("name", FIGURES)
def test_the_figure_is_displayed_as_an_image_with_its_interpretation(
    executed: dict[str, nbformat.NotebookNode], name: str
) -> None:
    outputs = executed[f"figure:{name}"].outputs
    kinds = [o.get("data", {}) for o in outputs if o.output_type in ("display_data", "execute_result")]
    images = [d for d in kinds if "image/png" in d]
    assert images, f"figure {name!r} has no image/png output; outputs: {[list(d) for d in kinds]}"
    assert all(len(d["image/png"]) > 5000 for d in images)  # base64 of a drawn figure, not a blank one
    sentences = [d["text/markdown"] for d in kinds if "text/markdown" in d]
    assert sentences and sentences[0].endswith("."), f"figure {name!r} has no sentence of interpretation"
    assert kinds.index(next(d for d in kinds if "text/markdown" in d)) < kinds.index(images[0])


@pytest.mark.parametrize("name", TABLES)
def test_the_table_is_displayed_formatted(executed: dict[str, nbformat.NotebookNode], name: str) -> None:
    outputs = executed[f"table:{name}"].outputs
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert html and "<table" in html[-1]


def test_the_notebook_reads_an_evaluation_without_a_run(tmp_path: Path) -> None:
    """``adaptflow evaluate --out DIR`` alone (rules, no learned planner, no run directory): the
    sections on training and on the learned policy say why they are empty, the rest is drawn."""
    from adaptflow.experiments.evaluation import evaluate
    from adaptflow.scenario import load_scenario

    results = tmp_path / "results"
    evaluate(load_scenario("etl_diurnal", horizon=900), ["static", "erlang"], seeds=2, out_dir=results, processes=1)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "ADAPTFLOW_RUN"} | {"ADAPTFLOW_RESULTS": str(results)}
    resources = {"metadata": {"path": str(tmp_path)}}
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources=resources).execute(env=env)
    cells = {t: c for c in notebook.cells for t in c.metadata.get("tags", [])}
    assert not [o for c in cells.values() for o in c.outputs if o.output_type == "error"]
    for name in ("comparison", "side_by_side", "policy_map", "forecast_error", "what_if"):
        assert any("image/png" in o.get("data", {}) for o in cells[f"figure:{name}"].outputs), name
    said = {n: "".join(o.get("data", {}).get("text/markdown", "") for o in cells[f"figure:{n}"].outputs)
            for n in ("learning_curves", "sensitivity")}  # fmt: skip
    assert said["learning_curves"].startswith("No run directory")
    assert said["sensitivity"].startswith("No learned policy")
    swap = "".join(o.get("data", {}).get("text/markdown", "") for o in cells["figure:what_if"].outputs)
    assert "from erlang to static at t=450 s" in swap  # half of the evaluated horizon, from the logs
