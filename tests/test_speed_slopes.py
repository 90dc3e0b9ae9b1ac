"""examples/etl_app/speed_slopes.py reads how steeply each figure follows the machine's speed,
live and simulated, within each held-out set (docs/sim_to_real.md)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from examples.etl_app.speed_slopes import pooled_gap, runs_of, table

AT_OWN_SPEED = "simulated, live speed"


def _set(
    path: Path, level: float, speeds: list[float], live_power: float, sim_power: float, sim_level: float = 1.0
) -> str:
    """A resimulate --live-speed table of one set: each run's figures at ``level`` times its
    speed to the power given (the simulated hand-off and the waits less steep than live), the
    simulated mean wait ``sim_level`` times that (a set simulated long or short throughout)."""
    rows = []
    for k, speed in enumerate(speeds, start=1):
        for world, power in (("live", live_power), (AT_OWN_SPEED, sim_power)):
            wait = level * speed**power * (sim_level if world == AT_OWN_SPEED else 1.0)
            rows.append({
                "world": world, "planner": f"p2#{k}", "mean_wait": wait,
                "service_parse": level * speed**-2.0, "handoff_parse": level * speed**power,
                "idle_wait_parse": math.nan, "mean_wait_parse": level * speed**power,
                "speed_vm": speed if world == AT_OWN_SPEED else 0.9, "speed_gap_vm": 0.01, "speed_rounds": 2,
            })  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_the_slopes_are_read_within_each_set_live_and_simulated(tmp_path: Path) -> None:
    """Two sets on different levels (another calibration) and speeds: the slopes are the powers
    the figures were made with, not the sets' difference; the service's is the same both ways;
    a figure no run measured has none."""
    fast = _set(tmp_path / "a.csv", 1.0, [1.2, 1.4, 1.5], live_power=-2.5, sim_power=-2.0)
    slow = _set(tmp_path / "b.csv", 3.0, [0.7, 0.8, 0.95], live_power=-2.5, sim_power=-2.0, sim_level=0.8)
    runs = pd.concat([runs_of(fast), runs_of(slow)], ignore_index=True)
    assert list(runs["speed"][:3]) == [1.2, 1.4, 1.5]  # the own speed, not the live row's probe
    slopes = table(runs).set_index("figure")
    for figure in ("mean_wait", "handoff_parse", "mean_wait_parse"):
        assert slopes.loc[figure, "live"] == pytest.approx(-2.5)
        assert slopes.loc[figure, "simulated"] == pytest.approx(-2.0)
        assert slopes.loc[figure, "sim over live"] == pytest.approx(0.5)
    assert slopes.loc["service_parse", "sim over live"] == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(slopes.loc["idle_wait_parse", "live"])
    assert list(slopes.index[:4]) == ["service_parse", "handoff_parse", "idle_wait_parse", "mean_wait_parse"]
    slope, half, n = pooled_gap(runs)  # the slow set simulated 20 % short throughout: its mean, taken out
    assert (slope, n) == (pytest.approx(0.5), 6) and half < 1e-6


def test_the_pooled_gap_s_interval_covers_the_slope_the_runs_were_drawn_with(tmp_path: Path) -> None:
    """Noisy runs (3 % a run on the simulated wait, 8 sets of 4 runs): the 95 % interval holds
    the slope they were made with, 0.4, and is narrower than the slope itself."""
    rng = np.random.default_rng(5)
    sets = []
    for k in range(8):
        speeds = list(rng.uniform(0.8, 1.5, 4))
        path = Path(_set(tmp_path / f"{k}.csv", 1.0 + k, speeds, live_power=-2.4, sim_power=-2.0))
        table_k = pd.read_csv(path)
        simulated = table_k["world"] == AT_OWN_SPEED
        table_k.loc[simulated, "mean_wait"] *= np.exp(rng.normal(0.0, 0.03, simulated.sum()))
        table_k.to_csv(path, index=False)
        sets.append(runs_of(str(path)))
    slope, half, n = pooled_gap(pd.concat(sets, ignore_index=True))
    assert n == 32 and abs(slope - 0.4) <= half < 0.4


def test_a_table_without_its_own_speed_rows_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    pd.DataFrame([{"world": "live", "planner": "p2#1", "mean_wait": 1.0}]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"plain\.csv: expected a resimulate --live-speed table"):
        runs_of(str(path))
