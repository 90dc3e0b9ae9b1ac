"""adaptflow gap-trend: each run's gap against its load over judged sets, a line per figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adaptflow.cli import main
from adaptflow.experiments.compare_app import LIVE_SPEED
from adaptflow.experiments.gap_trend import trend_of_tables

STAGES = ("parse", "write")


def write_set(path: Path, loads: list[float], rng: np.random.Generator, slope: float, world: str = "simulated") -> Path:
    """A resimulate table of one set: per run a live row and its simulation. The run's load is
    split between the stages (throughput 5 a second each); its simulated p95 latency misses the
    live one by ``0.1 + slope * (load - 0.5)`` and noise, its mean wait by noise alone."""
    rows = []
    for k, load in enumerate(loads):
        label = f"p2#{k + 1}"
        live = {"world": "live", "planner": label, "mean_wait": 0.2, "p95_latency": 1.0, "cost": 100.0}
        for stage, share in zip(STAGES, (0.6, 0.4), strict=True):
            live |= {f"throughput_{stage}": 5.0, f"service_{stage}": share * load / 5.0,
                     f"mean_wait_{stage}": 0.05, f"p95_wait_{stage}": 0.2}  # fmt: skip
        missed = 1.0 + 0.1 + slope * (load - 0.5) + rng.normal(0.0, 0.02)
        simulated = live | {"world": world, "p95_latency": missed, "mean_wait": 0.2 * (1 + rng.normal(0.0, 0.02))}
        rows += [live, simulated]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_a_gap_that_grows_with_the_load_is_read_with_its_slope_and_one_that_does_not_with_none(tmp_path):
    rng = np.random.default_rng(4)
    paths = [write_set(tmp_path / f"held{k}.csv", list(rng.uniform(0.4, 1.0, 8)), rng, -0.4) for k in range(3)]
    gaps, trend = trend_of_tables(paths)
    assert len(gaps) == 24 and set(gaps["source"]) == {str(p) for p in paths}
    assert gaps["load"].between(0.4, 1.0).all()  # the stages' throughput times service, summed
    by = trend.set_index("figure")
    tail = by.loc["p95_latency"]
    assert tail.runs == 24 and tail.slope_low < -0.4 < tail.slope_high and tail.slope_high < 0
    assert tail.gap_at_min > tail.gap_at_max  # the line's gap at the lightest and heaviest run
    assert by.loc["mean_wait"].slope_low < 0 < by.loc["mean_wait"].slope_high  # noise has no trend
    assert by.loc["p95_wait_parse"].runs == 24 and by.loc["p95_wait_parse"].slope == pytest.approx(0, abs=1e-12)


def test_the_runs_at_their_own_speed_are_judged_from_the_live_speed_rows(tmp_path):
    rng = np.random.default_rng(5)
    table = write_set(tmp_path / "held.csv", list(np.linspace(0.4, 1.0, 8)), rng, 0.3, world=LIVE_SPEED)
    gaps, trend = trend_of_tables([table], at_live_speed=True)
    assert len(gaps) == 8
    assert trend.set_index("figure").loc["p95_latency"].slope == pytest.approx(0.3, abs=0.08)
    with pytest.raises(ValueError, match="no 'simulated' rows"):  # the predicted rows: none in this table
        trend_of_tables([table])


def test_bad_tables_are_refused_each_on_a_line_before_any_work(tmp_path, capsys):
    rng = np.random.default_rng(6)
    good = write_set(tmp_path / "good.csv", [0.5, 0.6, 0.7], rng, 0.0)
    not_csv = tmp_path / "report.csv"  # a row of more cells than its header
    not_csv.write_text("world,planner\nlive,p2#1\nlive,p2#2,0.1,0.2\n")
    no_load = tmp_path / "no_load.csv"
    pd.read_csv(good).drop(columns=["service_write"]).to_csv(no_load, index=False)
    out = tmp_path / "gaps.csv"
    argv = ["gap-trend", str(good), str(tmp_path / "missing.csv"), str(not_csv), str(no_load), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "missing.csv: no such file; expected a table written by adaptflow resimulate --out" in err
    assert "report.csv: not a CSV table" in err
    assert "no_load.csv: no column service_write; expected a table of resimulate --out" in err
    assert not out.exists()
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    assert main(["gap-trend", str(good), "--out", str(blocked / "gaps.csv")]) == 2
    assert "--out: " in capsys.readouterr().err
    assert main(["gap-trend", str(good), "--at-live-speed"]) == 2
    assert "good.csv: no 'simulated, live speed' rows (resimulate --live-speed writes them)" in capsys.readouterr().err


def test_the_command_prints_each_figures_line_and_writes_the_runs_gaps(tmp_path, capsys):
    rng = np.random.default_rng(7)
    table = write_set(tmp_path / "held.csv", list(np.linspace(0.4, 1.0, 8)), rng, -0.4)
    out = tmp_path / "gaps.csv"
    assert main(["gap-trend", str(table), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "the simulation's gap against each run's load (8 runs, as predicted" in printed
    assert "p95_latency" in printed and "p95_wait_write" in printed
    written = pd.read_csv(out)
    assert list(written.columns[:3]) == ["source", "run", "load"] and len(written) == 8


def with_self_agreement(path: Path, p95_share: float) -> Path:
    """``path``'s table with each run's ``simulated, self-agreement`` row: every figure's seeds
    agree with each other, the p95 latency's ``p95_share`` of them."""
    table = pd.read_csv(path)
    live = table[table["world"] == "live"]
    shares = live.assign(world="simulated, self-agreement").copy()
    figures = [c for c in shares.columns if c not in ("world", "planner")]
    shares[figures] = 1.0
    shares["p95_latency"] = p95_share
    pd.concat([table, shares], ignore_index=True).to_csv(path, index=False)
    return path


def test_the_cells_of_every_set_are_counted_against_what_an_exact_model_would_reach(tmp_path, capsys):
    """``gap-trend`` sums each set's cells that agree (one planner of 8 runs a set: one cell a
    figure) beside the chances an exact model would agree (the runs' self-agreement, their
    mean a set); a set whose table has no self-agreement rows leaves the sum unknown."""
    from adaptflow.experiments.gap_trend import counts_of, load_tables

    rng = np.random.default_rng(3)
    first = with_self_agreement(write_set(tmp_path / "a.csv", [0.5] * 8, rng, 0.0), 0.5)
    second = with_self_agreement(write_set(tmp_path / "b.csv", [0.5] * 8, rng, 0.0), 0.25)
    bare = write_set(tmp_path / "c.csv", [0.5] * 8, rng, 0.0)
    counts = counts_of(load_tables([first, second], False)).set_index("figure")
    # the p95 latency 10 % long and noise: some runs' mean within 10 %, some not; the mean wait agrees
    assert counts.loc["mean_wait", "cells"] == 2 and counts.loc["mean_wait", "agrees"] == 2
    assert counts.loc["mean_wait", "attainable"] == 2.0
    assert counts.loc["p95_latency", "attainable"] == pytest.approx(0.75)  # 0.5 + 0.25
    assert counts.loc["mean_wait (stages)", "cells"] == 4  # two stages, two sets
    unknown = counts_of(load_tables([first, bare], False)).set_index("figure")
    assert unknown.loc["mean_wait", "cells"] == 2 and np.isnan(unknown.loc["mean_wait", "attainable"])
    assert main(["gap-trend", str(first), str(second)]) == 0
    printed = capsys.readouterr().out
    assert "cells that agree over the 2 sets, and how many an exact model would agree on" in printed
    assert "about 2" in printed
