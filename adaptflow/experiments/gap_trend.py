"""Whether a calibrated simulation's misses grow with the load (``adaptflow gap-trend``).

A judgement of one held-out set (:func:`~.compare_app.agreement`) says how far the simulation
is from the live runs at the load those runs met. It cannot say whether the model holds at a
heavier one: a tail 5 % short at one load may be 15 % short at a tenth more, and a user who
sizes pools with the simulation for next month's traffic needs to know which. Over the runs of
several judged sets (``resimulate --out`` tables), each run's gap against its own load tells a
bias that grows with the load from the noise of one set: a least-squares line through the runs'
gaps, its slope with a 95 % interval.

The load of a run is what its tasks asked of the machine: the CPU seconds of service a second,
the sum over its stages of the live throughput times the live mean service (``throughput_<s>``
and ``service_<s>`` of its row). Why that and not the arrivals: the same arrivals ask more of a
slower machine, and the planners' pools move the load between the stages.

On the example app (nine held-out sets, 72 runs, each simulated at its own speed) the p95
latency's gap fell by 0.41 a unit of load (95 % interval -0.53 to -0.30): the set of the most
load was simulated 15 % short where the lightest was 4 % long; the mean wait's fell by 0.13
(docs/sim_to_real.md, "The tail against the load").
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .compare_app import AGREEMENT_METRICS, LIVE_SPEED, agreement, agreement_counts

MAX_TABLES = 200
"""The most tables one trend reads: 200 judged sets of 8 runs is far more than a study makes."""
MAX_TABLE_BYTES = 1 << 20
"""A resimulate table is tens of kB (five to nine rows a run)."""
TREND_METRICS = tuple(m for m in AGREEMENT_METRICS if m != "throughput")
"""The run's figures whose trend is read; throughput is the arrivals' in both worlds."""
STAGE_TREND_METRICS = ("mean_wait", "p95_wait")
"""Each stage's figures whose trend is read (``mean_wait_<stage>``, ``p95_wait_<stage>``)."""


def load_tables(paths: list[Path], at_live_speed: bool) -> list[tuple[str, pd.DataFrame]]:
    """Each ``resimulate --out`` table, checked before any is used: every problem of every file
    on a line of its own (a missing file, one too large, one without the columns a run's load is
    read from, one without the rows to judge). Raises ValueError with them."""
    problems: list[str] = []
    if not paths or len(paths) > MAX_TABLES:
        raise ValueError(f"tables: {len(paths)} given; expected 1 to {MAX_TABLES} resimulate --out tables")
    tables = []
    for path in paths:
        if not path.is_file():
            problems.append(f"{path}: no such file; expected a table written by adaptflow resimulate --out")
        elif path.stat().st_size > MAX_TABLE_BYTES:
            problems.append(f"{path}: {path.stat().st_size:,} bytes; expected a resimulate table of at most 1 MiB")
        else:
            try:
                table = pd.read_csv(path)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
                problems.append(f"{path}: not a CSV table ({str(exc).strip()}); expected a resimulate --out table")
                continue
            problems += _table_problems(path, table, at_live_speed)
            tables.append((str(path), table))
    if problems:
        raise ValueError("\n".join(problems))
    return tables


def _table_problems(path: Path, table: pd.DataFrame, at_live_speed: bool) -> list[str]:
    stages = _stages(table)
    needed = ["world", "planner", *TREND_METRICS] + [f"{c}_{s}" for s in stages for c in ("throughput", "service")]
    missing = [c for c in needed if c not in table]
    if missing or not stages:
        names = ", ".join(missing or ["mean_wait_<stage>"])
        return [f"{path}: no column {names}; expected a table of resimulate --out"]
    world = _world(at_live_speed)
    if not (table["world"] == world).any():
        hint = " (resimulate --live-speed writes them)" if at_live_speed else ""
        return [f"{path}: no {world!r} rows{hint}; expected each live run's simulation"]
    return []


def _stages(table: pd.DataFrame) -> list[str]:
    return [c.removeprefix("mean_wait_") for c in table.columns if c.startswith("mean_wait_")]


def _world(at_live_speed: bool) -> str:
    return LIVE_SPEED if at_live_speed else "simulated"


def run_gaps(table: pd.DataFrame, at_live_speed: bool, source: str = "") -> pd.DataFrame:
    """One row per live run of a resimulate table: ``source``, ``run`` (its label), ``load``
    (see the module docstring) and, per figure, the gap of its simulation (``simulated`` or,
    ``at_live_speed``, the run at its own speed): simulated over live, minus 1; NaN where either
    world measured nothing."""
    stages = _stages(table)
    figures = list(TREND_METRICS) + [f"{m}_{s}" for s in stages for m in STAGE_TREND_METRICS if f"{m}_{s}" in table]
    live = table[table["world"] == "live"].drop_duplicates("planner").set_index("planner")
    simulated = table[table["world"] == _world(at_live_speed)].drop_duplicates("planner").set_index("planner")
    rows = []
    for run in live.index.intersection(simulated.index, sort=False):
        seen, model = live.loc[run], simulated.loc[run]
        load = sum(_number(seen[f"throughput_{s}"], 0.0) * _number(seen[f"service_{s}"], 0.0) for s in stages)
        gaps = {f: _gap(_number(model[f]), _number(seen[f])) for f in figures}
        rows.append({"source": source, "run": run, "load": load, **gaps})
    return pd.DataFrame(rows)


def _number(value: object, missing: float = math.nan) -> float:
    number = pd.to_numeric(value, errors="coerce")
    return float(number) if pd.notna(number) and math.isfinite(number) else missing


def _gap(simulated: float, live: float) -> float:
    return simulated / live - 1.0 if live > 0 and simulated > 0 else math.nan


def gap_trend(gaps: pd.DataFrame) -> pd.DataFrame:
    """Per figure of :func:`run_gaps`' rows: ``runs``, the load's range (``load_min``,
    ``load_max``), the least-squares ``slope`` of the gap on the load with its 95 % interval
    (``slope_low``, ``slope_high``; Student's t on ``runs - 2`` degrees of freedom), ``r``, and
    the line's gap at the lightest and heaviest load (``gap_at_min``, ``gap_at_max``). A figure
    with fewer than three runs measured, or one load for all, gets no line (NaN)."""
    rows = []
    for figure in [c for c in gaps.columns if c not in ("source", "run", "load")]:
        both = gaps[["load", figure]].dropna()
        x, y = both["load"].to_numpy(float), both[figure].to_numpy(float)
        row = {"figure": figure, "runs": len(x), "load_min": _min(x), "load_max": _max(x)}
        if len(x) >= 3 and np.ptp(x) > 0:
            fit = stats.linregress(x, y)
            half = float(stats.t.ppf(0.975, len(x) - 2)) * float(fit.stderr)
            line = {"slope": fit.slope, "slope_low": fit.slope - half, "slope_high": fit.slope + half,
                    "r": fit.rvalue, "gap_at_min": fit.intercept + fit.slope * x.min(),
                    "gap_at_max": fit.intercept + fit.slope * x.max()}  # fmt: skip
        else:
            line = dict.fromkeys(("slope", "slope_low", "slope_high", "r", "gap_at_min", "gap_at_max"), math.nan)
        rows.append(row | {k: float(v) for k, v in line.items()})
    return pd.DataFrame(rows)


def _min(x: np.ndarray) -> float:
    return float(x.min()) if len(x) else math.nan


def _max(x: np.ndarray) -> float:
    return float(x.max()) if len(x) else math.nan


def trend_of_tables(paths: list[Path], at_live_speed: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs' gaps over every table (:func:`run_gaps`) and their trend (:func:`gap_trend`)."""
    return trend_of(load_tables(paths, at_live_speed), at_live_speed)


def trend_of(tables: list[tuple[str, pd.DataFrame]], at_live_speed: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`trend_of_tables` of tables :func:`load_tables` read."""
    gaps = pd.concat([run_gaps(t, at_live_speed, source) for source, t in tables], ignore_index=True)
    return gaps, gap_trend(gaps)


def counts_of(tables: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """Every table's :func:`~.compare_app.agreement_counts`, summed per figure: the cells that
    agree over all the sets, beside how many an exact model would agree on (NaN where some set's
    table has no self-agreement rows). Why here: a trend reads many sets, and their misses are
    read against what one run of each could reach (docs/sim_to_real.md, "What one run can be
    asked for")."""
    counts = [agreement_counts(agreement(table)) for _, table in tables]
    counts = [c for c in counts if len(c)]
    if not counts:
        return pd.DataFrame()
    every = pd.concat(counts, ignore_index=True)
    whole = every.groupby("figure", sort=False).agg(lambda column: column.sum(min_count=len(column)))
    return whole.reset_index()


__all__ = ["MAX_TABLES", "counts_of", "gap_trend", "load_tables", "run_gaps", "trend_of", "trend_of_tables"]
