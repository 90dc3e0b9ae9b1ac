"""Figures of an evaluation's results directory, as PNG and SVG: ``adaptflow plot RESULTS_DIR``.

* ``cost_vs_sla``: each episode's cost against its SLA-violation rate, one colour per planner.
* ``workers_vs_load``: one episode per planner: arrival rate and the total worker target.
* ``metrics_ci``: mean and 95% bootstrap CI of each metric per planner.

Matplotlib's object API with the Agg canvas: no pyplot global state, no display needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .evaluation import _label, bootstrap_ci
from .io import atomic_write

METRIC_LABELS = {
    "cost": "cost per episode",
    "sla_violation_rate": "SLA violation rate",
    "p95_latency": "p95 latency (s)",
    "escapes": "quality escapes",
}


def load_results(results_dir: str | Path) -> pd.DataFrame:
    path = Path(results_dir) / "results.parquet"
    if not path.is_file():
        raise ValueError(f"{str(results_dir)!r} has no results.parquet; expected the output of adaptflow evaluate")
    return pd.read_parquet(path)


def episode_series(results_dir: str | Path, planner: str, seed: int) -> pd.DataFrame:
    """One episode's event log as a frame: time, arrival rate, total worker target, queue."""
    path = Path(results_dir) / "episodes" / _label(planner) / f"seed_{seed}.jsonl"
    if not path.is_file():
        raise ValueError(f"no event log {str(path)!r}")
    rows = []
    with path.open() as f:
        for line in f:
            record = json.loads(line)
            m = record["metrics"]
            interval = m["interval"] or float("nan")
            rows.append(
                {
                    "time": record["time"],
                    "arrival_rate": sum(m["source_arrivals"].values()) / interval,
                    "workers": sum(s["target"] for s in m["stages"].values()),
                    "queue": sum(s["queue_length"] for s in m["stages"].values()),
                    "forecast": sum(v[0] for v in record["insights"]["forecasts"].values() if v),
                    "sla_violations": m["sla_violations"],
                    **{f"workers.{k}": s["target"] for k, s in m["stages"].items()},
                }
            )
    return pd.DataFrame(rows)


def _save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    paths = []
    for suffix in ("png", "svg"):
        path = out_dir / f"{name}.{suffix}"
        atomic_write(path, lambda tmp, s=suffix: fig.savefig(tmp, format=s, dpi=110, bbox_inches="tight"))
        paths.append(path)
    return paths


def plot_results(results_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Draw the three figures of an evaluation; return the files written."""
    results_dir = Path(results_dir)
    table = load_results(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir / "plots"
    planners = list(dict.fromkeys(table.planner))
    colours = {p: f"C{i % 10}" for i, p in enumerate(planners)}
    return [
        *_save(_cost_vs_sla(table, colours), out, "cost_vs_sla"),
        *_save(_workers_vs_load(results_dir, table, planners, colours), out, "workers_vs_load"),
        *_save(_metrics_ci(table, planners, colours), out, "metrics_ci"),
    ]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _cost_vs_sla(table: pd.DataFrame, colours: dict[str, str]) -> Figure:
    """Every episode as a point, each planner's mean as a cross."""
    fig = _figure(6.5, 4.5)
    ax = fig.subplots()
    for planner, group in table.groupby("planner", sort=False):
        ax.scatter(group.sla_violation_rate, group.cost, s=18, alpha=0.6, color=colours[planner], label=planner)
        ax.scatter(
            group.sla_violation_rate.mean(),
            group.cost.mean(),
            s=90,
            marker="X",
            color=colours[planner],
            edgecolor="black",
        )
    ax.set_xlabel("SLA violation rate")
    ax.set_ylabel("cost per episode")
    ax.set_title("cost against SLA violations (x: planner mean)")
    ax.legend(fontsize=8)
    return fig


def _workers_vs_load(results_dir: Path, table: pd.DataFrame, planners: list[str], colours: dict[str, str]) -> Figure:
    """One panel per planner: the arrival rate and the pool over the first seed's episode."""
    seed = int(table.seed.min())
    fig = _figure(7.5, 1.8 * len(planners) + 0.6)
    axes = np.atleast_1d(fig.subplots(len(planners), 1, sharex=True))
    for ax, planner in zip(axes, planners, strict=True):
        series = episode_series(results_dir, planner, seed)
        ax.plot(series.time, series.arrival_rate, color="0.5", lw=1, label="arrivals/s")
        twin = ax.twinx()
        twin.step(series.time, series.workers, where="pre", color=colours[planner], label="workers")
        ax.set_ylabel("arrivals/s", fontsize=8)
        twin.set_ylabel("workers", fontsize=8, color=colours[planner])
        ax.set_title(f"{planner} (seed {seed})", fontsize=9)
    axes[-1].set_xlabel("simulated s")
    fig.tight_layout()
    return fig


def _metrics_ci(table: pd.DataFrame, planners: list[str], colours: dict[str, str]) -> Figure:
    """Each metric's mean per planner with a bootstrap confidence interval."""
    # A metric that is zero everywhere (no escapes without validation) would be an empty panel.
    metrics = [m for m in METRIC_LABELS if m in table.columns and table[m].abs().sum() > 0]
    fig = _figure(3.2 * len(metrics), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for ax, metric in zip(axes, metrics, strict=True):
        means, lows, highs = [], [], []
        for planner in planners:
            values = table.loc[table.planner == planner, metric].dropna().to_numpy()
            low, high = bootstrap_ci(values) if len(values) else (np.nan, np.nan)
            means.append(values.mean() if len(values) else np.nan)
            lows.append(means[-1] - low)
            highs.append(high - means[-1])
        ax.bar(range(len(planners)), means, yerr=[lows, highs], capsize=3, color=[colours[p] for p in planners])
        ax.set_xticks(range(len(planners)), planners, rotation=45, ha="right", fontsize=8)
        ax.set_title(METRIC_LABELS[metric], fontsize=9)
    fig.tight_layout()
    return fig
