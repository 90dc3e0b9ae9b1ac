"""Small builders for scenarios and the statistics the tests compare against theory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from adaptflow.scenario import Scenario, parse_scenario
from adaptflow.simulator import Simulation


def stage(
    workers: int,
    dist: str = "exponential",
    mean: float = 1.0,
    next: Any = None,
    max_workers: int | None = None,
    startup_delay: float = 0.0,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "workers": {
            "initial": workers,
            "min": 0,
            "max": max_workers or max(workers, 1),
            "startup_delay": startup_delay,
            "cost_per_second": 1.0,
        },
        "service": {"dist": dist, "mean": mean},
        "next": next,
        **extra,
    }


def scenario(
    stages: dict[str, Any],
    sources: dict[str, Any] | None = None,
    rate: float = 1.0,
    horizon: float = 1000.0,
    sla: float = 5.0,
    **top: Any,
) -> Scenario:
    """A validated scenario; by default one Poisson source at ``rate`` into the first stage."""
    if sources is None:
        sources = {"src": {"process": "poisson", "rate": rate, "to": next(iter(stages))}}
    return parse_scenario(
        {"name": "test", "horizon": horizon, "sla": {"latency": sla}, "sources": sources, "stages": stages, **top}
    )


def trace_source(tmp_path: Path, times: list[float], to: str, name: str = "trace", **extra: Any) -> dict[str, Any]:
    path = tmp_path / f"{name}.csv"
    path.write_text("timestamp\n" + "".join(f"{t}\n" for t in times))
    return {"process": "trace", "file": str(path), "to": to, **extra}


def replicate(spec: Scenario, n: int, warmup: float, seed0: int = 1000) -> list[dict[str, Any]]:
    """``n`` independent replications; each summary covers ``[warmup, horizon]`` (steady state)."""
    summaries = []
    for r in range(n):
        sim = Simulation(spec, rng=np.random.default_rng(seed0 + r))
        sim.run(warmup)
        mark = sim.counters()
        sim.run()
        summaries.append(sim.summary(since=mark))
    return summaries


def confidence_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval of independent replications."""
    x = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(half)


def assert_within_ci(values: list[float], expected: float, what: str, max_relative_width: float = 0.05) -> None:
    """The theory value lies in the 95% CI, and the CI is narrow enough to mean something."""
    mean, half = confidence_interval(values)
    assert half <= max_relative_width * abs(expected), (
        f"{what}: CI half-width {half:.4g} is wider than {max_relative_width:.0%} of {expected:.4g}; "
        "the check would be too weak"
    )
    assert abs(mean - expected) <= half, f"{what}: theory {expected:.5g} outside {mean:.5g} ± {half:.3g}"


def train_and_export(out_dir: Path, *overrides: str, config: str = "configs/train/tiny.yaml") -> tuple[Path, Path]:
    """Train a tiny run (a few seconds) and export it; returns (best model, planner.onnx)."""
    from adaptflow.experiments.training import train
    from adaptflow.runtime.export import export_run

    run = train(config, [f"output_dir={out_dir}", "evaluation.final_seeds=0", *overrides])
    return run.best_model, export_run(run.run_dir)


def shared_export(tmp_path_factory: Any, name: str, *overrides: str) -> tuple[Path, Path]:
    """:func:`train_and_export` once per test session for all the modules that ask for ``name``,
    whichever xdist process they run in (~20 s of training each time saved): the first process
    trains under a file lock, a marker written last says the run is complete, the others read
    it. pytest-xdist's own recipe: the workers' temporary directories share a parent that is
    this session's alone (without xdist, the session's own directory). The run is only read."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / f"shared-{name}"
    with FileLock(str(folder) + ".lock"):
        marker = folder / "export.json"
        if marker.is_file():
            best, onnx = json.loads(marker.read_text())
            return Path(best), Path(onnx)
        made = train_and_export(folder, *overrides)
        marker.write_text(json.dumps([str(p) for p in made]))
        return made


FIXED_DRIFT = {
    "shape": "piecewise",
    "times": [0, 2400, 3000, 3600, 5400, 6000],
    "values": [0.02, 0.08, 0.20, 0.30, 0.10, 0.02],
}
"""quality_drift's bad rate before its drift was drawn per seed (issue 14): 2%, then 8% from
2400 s, 20% from 3000, 30% from 3600, 10% from 5400, 2% from 6000."""


def quality_drift_fixed(horizon: float | None = None) -> Scenario:
    """quality_drift with the fixed drift schedule, for checks against known drift times."""
    from adaptflow.scenario import load_scenario

    data = load_scenario("quality_drift").model_dump(mode="json", by_alias=True)
    data["sources"]["records"]["quality"]["bad_rate"] = FIXED_DRIFT
    if horizon is not None:
        data["horizon"] = horizon
    return parse_scenario(data)
