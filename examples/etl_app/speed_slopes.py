"""How steeply each figure follows the machine's speed, live and simulated, across live runs::

    python -m examples.etl_app.speed_slopes OUT/held.judged_live_speed.csv [OTHER_SET.csv ...]

Each file is one held-out set judged by ``adaptflow resimulate --live-speed`` (its ``live`` rows
and its ``simulated, live speed`` rows, each run at the speed its own tasks met). Per planner
and figure (each stage's mean service, hand-off, wait met idle and mean wait; the mean wait end
to end) it prints the least-squares slope of the figure's log on the run's log speed, live and
simulated, within each set (each set's means taken out: sets differ in calibration and load),
and last the slope of the simulated mean wait over the live one, every planner pooled, with its
95 % interval.

Why: a simulation that holds at each run's own speed on average can still follow the speed
less steeply than the app does, and then miss in one direction on a fast day and in the other
on a slow one. On the example app (docs/sim_to_real.md, "The waits follow the machine's speed
more steeply live than simulated") the live waits went as the speed to the -2.4 to -2.6 and the
simulated ones to the -2.1 to -2.2, for every planner; 0 in the last column (the simulated
figure's slope minus the live one's) is a simulation that follows the machine as the app does.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
from scipy import stats

FIGURES = ("service", "handoff", "idle_wait", "mean_wait")
AT_OWN_SPEED = "simulated, live speed"


def runs_of(path: str) -> pd.DataFrame:
    """One row per live run of the set at ``path``: its planner (the label before ``#``), its
    own speed (the first host's), and each figure live and simulated (``sim_`` prefixed)."""
    table = pd.read_csv(path)
    live = table[table["world"] == "live"].reset_index(drop=True)
    simulated = table[table["world"] == AT_OWN_SPEED].reset_index(drop=True)
    if len(live) != len(simulated) or not len(live):
        raise ValueError(
            f"{path}: expected a resimulate --live-speed table, a {AT_OWN_SPEED!r} row under each live one"
        )
    speed = next(  # speed_<host>, beside the search's speed_gap_<host> and speed_rounds
        c
        for c in simulated.columns
        if c.startswith("speed_") and not c.startswith("speed_gap_") and c != "speed_rounds"
    )
    runs = pd.DataFrame({"set": path, "planner": live["planner"].str.split("#").str[0], "speed": simulated[speed]})
    for column in _figures(live):
        runs[column] = live[column]
        runs[f"sim_{column}"] = simulated[column]
    return runs


def _figures(table: pd.DataFrame) -> list[str]:
    """The figures the table has, each kind over the stages (in the table's order), then the
    mean wait end to end."""
    stages = [c.removeprefix("service_") for c in table.columns if c.startswith("service_")]
    return [f"{f}_{s}" for f in FIGURES for s in stages if f"{f}_{s}" in table.columns] + ["mean_wait"]


def _within(runs: pd.DataFrame, y: pd.Series, by: list[str]) -> tuple[pd.Series, pd.Series]:
    """``log(speed)`` and ``y`` over the runs where ``y`` is finite, each with its mean over the
    runs sharing ``by`` taken out: what a slope within those groups regresses."""
    keep = np.isfinite(y)
    groups = [runs[column][keep] for column in by]
    x, y = np.log(runs["speed"][keep]), y[keep]
    return x - x.groupby(groups).transform("mean"), y - y.groupby(groups).transform("mean")


def slope(runs: pd.DataFrame, column: str) -> float:
    """The slope of ``log(column)`` on ``log(speed)``, each set's means taken out; NaN where
    fewer than three runs measured it."""
    x, y = _within(runs, np.log(runs[column].where(runs[column] > 0)), ["set"])
    if len(x) < 3 or not (x * x).sum() > 0:
        return math.nan
    return float((x * y).sum() / (x * x).sum())


def table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per planner and figure: its live slope, its simulated slope and the gap's (sim - live)."""
    rows = []
    for planner, group in runs.groupby("planner", sort=False):
        for figure in _figures(group):
            live, sim = slope(group, figure), slope(group, f"sim_{figure}")
            rows.append({"planner": planner, "figure": figure, "runs": len(group), "live": live,
                         "simulated": sim, "sim over live": sim - live})  # fmt: skip
    return pd.DataFrame(rows)


def pooled_gap(runs: pd.DataFrame, figure: str = "mean_wait") -> tuple[float, float, int]:
    """The slope of ``log(simulated / live)`` of ``figure`` on the log speed over every planner,
    each planner's set means taken out, with the half-width of its 95 % interval (the degrees of
    freedom less one for each planner and set) and the runs used. Why pooled: 13-16 runs a
    planner leave each planner's own slope an interval as wide as itself."""
    x, y = _within(runs, np.log(runs[f"sim_{figure}"] / runs[figure]), ["planner", "set"])
    n = len(x)
    dof = n - runs.loc[x.index].groupby(["planner", "set"]).ngroups - 1
    slope = float((x * y).sum() / (x * x).sum())
    residual = y - slope * x
    stderr = math.sqrt(float((residual**2).sum()) / dof / float((x * x).sum()))
    return slope, float(stats.t.ppf(0.975, dof)) * stderr, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="+", help="resimulate --live-speed CSV files, one per held-out set")
    args = parser.parse_args()
    runs = pd.concat([runs_of(path) for path in args.tables], ignore_index=True)
    with pd.option_context("display.width", 160, "display.max_rows", 500):
        print(table(runs).round(2).to_string(index=False))
    slope, half, n = pooled_gap(runs)
    print(f"simulated over live mean wait against the speed, every planner: {slope:+.2f} ± {half:.2f} (95 %, {n} runs)")


if __name__ == "__main__":
    main()
