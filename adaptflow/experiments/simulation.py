"""Run one scenario in the simulator and summarize it: what ``adaptflow simulate`` does."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table
from tqdm import tqdm

from adaptflow.scenario import Scenario, load_scenario
from adaptflow.scenario.schema import MAX_ITEMS
from adaptflow.scenario.schema import MAX_STEPS as MAX_WINDOWS
from adaptflow.simulator import Simulation
from adaptflow.simulator.model import frames

from .io import atomic_write

PROGRESS_AFTER_SECONDS = 2.0
"""Runs shorter than this show no progress bar; longer ones get one (tqdm's ``delay``)."""


def check_work(
    spec: Scenario, record_interval: float | None, max_items: float = MAX_ITEMS, label: str | None = None
) -> None:
    """Refuse, before any work, a run that would take hours or never end: too many arrivals
    (``rate: 1e6`` over a long horizon), a window that is not a finite positive number, or so
    many windows that the time series alone would fill the memory."""
    if record_interval is not None:
        if not (math.isfinite(record_interval) and record_interval > 0):
            raise ValueError(f"interval: {record_interval!r}; expected a finite number of seconds > 0")
        windows = spec.horizon / record_interval
        if windows > MAX_WINDOWS:
            raise ValueError(
                f"interval: {record_interval:g} s over a horizon of {spec.horizon:g} s is {windows:,.0f} windows; "
                f"expected at most {MAX_WINDOWS:,} (an interval of at least {spec.horizon / MAX_WINDOWS:g} s)"
            )
    items, what = spec.expected_work()
    if not items <= max_items:  # also a NaN or infinite estimate (a fan-out on a loop)
        raise ValueError(
            f"{label or spec.name}: sources: {what} over a horizon of {spec.horizon:g} s, "
            f"more than the limit of "
            f"{max_items:,.0f} (roughly a minute of wall time per 20 million); shorten --horizon or raise --max-items"
        )


def simulate(
    scenario: str | Path | Scenario,
    seed: int | None = None,
    horizon: float | None = None,
    progress: bool = False,
    record_interval: float | None = None,
    max_items: float = MAX_ITEMS,
) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """Simulate ``scenario`` (a path, a shipped name or a :class:`Scenario`) to its horizon.

    Returns the whole-run summary (see :func:`adaptflow.simulator.metrics.summarize`) and, when
    ``record_interval`` is given, the time series of window metrics at that interval. The work
    asked for is estimated first (:func:`check_work`): over ``max_items`` arrivals, or more
    windows than :data:`MAX_WINDOWS`, nothing runs and the error says how much was asked for."""
    spec = load_scenario(scenario, seed=seed, horizon=horizon)
    check_work(spec, record_interval, max_items, None if isinstance(scenario, Scenario) else str(scenario))
    sim = Simulation(spec, rng=np.random.default_rng(spec.seed))
    bar = tqdm(
        total=spec.horizon,
        unit="sim s",
        delay=PROGRESS_AFTER_SECONDS,
        disable=not progress,
        desc=spec.name,
        leave=False,
    )
    series = None
    with bar:
        if record_interval is None:
            step = spec.horizon / 200  # paces the progress bar only
            while sim.now < spec.horizon:
                before = sim.now
                sim.run(min(sim.now + step, spec.horizon))
                bar.update(sim.now - before)
        else:  # Simulation.record, window by window, to move the bar as it goes
            windows = []
            for window in sim.windows(record_interval, spec.horizon):
                bar.update(window["duration"])
                windows.append(window)
            series = frames(windows)
    return sim.summary(), series


def write_timeseries(series: pd.DataFrame, path: str | Path) -> Path:
    """Write a time series as CSV or Parquet (by the file's suffix), atomically."""
    path = Path(path)
    if path.suffix == ".parquet":
        return atomic_write(path, lambda tmp: series.to_parquet(tmp))
    if path.suffix == ".csv":
        return atomic_write(path, lambda tmp: series.to_csv(tmp))
    raise ValueError(f"time series file {str(path)!r}: expected a .csv or .parquet suffix")


def _fmt(value: float | int | None) -> str:
    """Integers with thousands separators; floats to 3 significant digits (no float noise)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def summary_table(summary: dict[str, Any], title: str = "") -> Table:
    """A readable table of a summary: one row per stage, then the end-to-end row."""
    table = Table(title=title or None, title_justify="left")
    columns = [
        ("stage", None),
        ("workers", "mean_workers"),
        ("util", "utilization"),
        ("queue", "mean_queue_length"),
        ("wait s", "mean_wait"),
        ("p95 wait", "p95_wait"),
        ("latency", "mean_latency"),
        ("p95 lat", "p95_latency"),
        ("per s", "throughput"),
        ("done", "completed"),
        ("drops", "drops"),
        ("fails", "failures"),
        ("cost", "cost"),
    ]
    for header, _ in columns:
        table.add_column(header, justify="left" if header == "stage" else "right", no_wrap=header == "stage")
    for name, stage in summary["stages"].items():
        table.add_row(name, *[_fmt(stage[key]) for _, key in columns[1:]])
    e2e = summary["end_to_end"]
    table.add_section()
    table.add_row(
        "end to end",
        "",
        "",
        "",
        "",
        "",
        _fmt(e2e["mean_latency"]),
        _fmt(e2e["p95_latency"]),
        _fmt(e2e["throughput"]),
        _fmt(e2e["completed"]),
        _fmt(e2e["drops"]),
        _fmt(e2e["failed_items"]),
        _fmt(summary["cost"]),
    )
    table.caption = (
        f"{summary['duration']:,.0f} simulated s · {e2e['arrivals']:,} arrived · "
        f"SLA violations {_fmt(100 * e2e['sla_violation_rate'])}% · "
        f"quality escapes {e2e['escapes']:,} (caught {e2e['caught']:,}) · in system {e2e['in_system']:,}"
    )
    table.caption_justify = "left"
    return table


def timed_simulate(*args: Any, **kwargs: Any) -> tuple[dict[str, Any], pd.DataFrame | None, float]:
    start = time.perf_counter()
    summary, series = simulate(*args, **kwargs)
    return summary, series, time.perf_counter() - start
