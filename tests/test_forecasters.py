"""Forecasters from the data: Holt-Winters with a given or detected season and its phase from
the calendar, the autoregressive forecaster, fitting on a series' training part, and the
held-out comparison (``adaptflow forecast-error``)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from adaptflow.agents.analyzers import (
    AutoregressiveForecaster,
    EwmaForecaster,
    Forecaster,
    HoltWintersForecaster,
    HoltWintersModel,
    StandardAnalyzer,
    calendar_phase,
    detect_period,
    fit_autoregressive,
    fit_holt_winters,
    fit_key,
    fit_level_only,
    forecaster_from_dict,
    load_fitted,
    season_length_of,
    season_lengths,
)
from adaptflow.agents.fitting import fit_analyzer, fitted_models, training_series
from adaptflow.experiments.forecasting import forecast_errors
from adaptflow.scenario import load_scenario
from adaptflow.scenario.series import DAY, workload_rates

M = 48  # intervals per season of the synthetic series


def seasonal(n: int, seed: int, noise: float = 1.0, period: int = M) -> np.ndarray:
    """A daily-like load: 6 + 3 cos + a second harmonic, with Gaussian noise."""
    t = np.arange(n)
    shape = 6 + 3 * np.cos(2 * np.pi * t / period) + 1.0 * np.sin(4 * np.pi * t / period)
    return shape + noise * np.random.default_rng(seed).standard_normal(n)


def run(f: Forecaster, ys: np.ndarray, steps: int, calendar: np.ndarray | None = None) -> list[list[float]]:
    """Filter ``ys`` as the analyzer does (update, calendar, forecast); every step's forecast."""
    if calendar is not None:
        f.observe_calendar(float(calendar[0]))
    out = []
    for t, y in enumerate(ys):
        f.update(float(y))
        if calendar is not None:
            f.observe_calendar(float(calendar[t + 1]))
        out.append(f.forecast(steps))
    return out


def mae_at(f: Forecaster, ys: np.ndarray, h: int) -> float:
    forecasts = run(f, ys, h)
    return float(np.mean([abs(forecasts[t][h - 1] - ys[t + h]) for t in range(len(ys) - h)]))


# --------------------------------------------------------------------------------------------
# Saved and loaded
# --------------------------------------------------------------------------------------------
def _fitted() -> dict[str, Forecaster]:
    train = seasonal(8 * M, seed=1)
    return {
        "ewma": EwmaForecaster(0.3),
        "holt_winters": HoltWintersForecaster(fit_holt_winters(train, M)),
        "holt_winters_calendar": HoltWintersForecaster(fit_holt_winters(train, M, start_phase=5, calendar_step=60.0)),
        "holt_winters_level_only": HoltWintersForecaster(fit_level_only(train)),
        "autoregressive": AutoregressiveForecaster(fit_autoregressive(train, M)),
        "autoregressive_calendar": AutoregressiveForecaster(fit_autoregressive(train, M, 5, calendar_step=60.0)),
        "autoregressive_no_season": AutoregressiveForecaster(fit_autoregressive(train, None)),
    }


@pytest.mark.parametrize("name", list(_fitted()))
def test_a_saved_forecaster_forecasts_as_the_original_after_the_same_updates(name: str) -> None:
    """Through strict JSON, mid-run (state) and as fitted (after a reset): float for float."""
    original = _fitted()[name]
    ys = seasonal(3 * M, seed=2)
    calendar = 60.0 * (17 + np.arange(len(ys) + 1))  # a window started 17 intervals into the season
    run(original, ys[:50], 4, calendar[:51])
    loaded = forecaster_from_dict(json.loads(json.dumps(original.to_dict(), allow_nan=False)))
    assert loaded.to_dict() == original.to_dict()
    assert run(loaded, ys[50:], 4, calendar[50:]) == run(original, ys[50:], 4, calendar[50:])
    original.reset()
    fresh = forecaster_from_dict(json.loads(json.dumps(original.to_dict(), allow_nan=False)))
    assert run(fresh, ys, 6, calendar) == run(original, ys, 6, calendar)


def test_an_analyzer_saved_before_series_loads_its_holt_winters_model() -> None:
    """A model saved without ``calendar_step`` (older sidecars) counts its phase from t=0."""
    data = {"alpha": 0.2, "gamma": 0.1, "level": 5.0, "season": [1.0, -1.0]}
    f = forecaster_from_dict({"kind": "holt_winters", "model": data, "level": 5.0, "season": [1.0, -1.0], "phase": 0})
    assert f.model.calendar_step is None and not f.wants_calendar
    f.observe_calendar(12345.0)  # no calendar season: ignored
    assert f.forecast(3) == [6.0, 4.0, 6.0]


# --------------------------------------------------------------------------------------------
# Detecting a season
# --------------------------------------------------------------------------------------------
def test_detect_period_finds_the_season_of_a_noisy_sine_and_none_in_noise() -> None:
    rng = np.random.default_rng(3)
    t = np.arange(20 * M)
    noisy_sine = 10 + 2 * np.sin(2 * np.pi * t / M) + 1.5 * rng.standard_normal(len(t))
    assert detect_period(noisy_sine, max_lag=5 * M) == M
    assert detect_period(noisy_sine + 0.01 * t, max_lag=5 * M) == M  # a trend does not hide it
    assert detect_period(rng.standard_normal(20 * M), max_lag=5 * M) is None
    walk = np.cumsum(rng.standard_normal(20 * M))  # slow wandering, no cycle
    assert detect_period(walk, max_lag=5 * M) is None
    assert detect_period(np.full(100, 3.0), max_lag=40) is None


# --------------------------------------------------------------------------------------------
# The autoregressive forecaster
# --------------------------------------------------------------------------------------------
def test_the_autoregressive_forecaster_beats_ewma_four_steps_ahead_on_a_seasonal_series() -> None:
    model = fit_autoregressive(seasonal(10 * M, seed=4), M)
    assert model.harmonics and len(model.seasonal_effects()) == M
    held_out = seasonal(6 * M, seed=5)
    ar, ewma = mae_at(AutoregressiveForecaster(model), held_out, 4), mae_at(EwmaForecaster(0.3), held_out, 4)
    assert ar < 0.75 * ewma
    assert ar < 1.1  # the noise alone (sigma 1) makes an MAE of 0.8


def test_the_autoregressive_forecaster_without_a_season_is_a_plain_autoregression() -> None:
    """An AR(1) series: the fit finds its coefficient, and forecasts decay to the mean."""
    rng = np.random.default_rng(6)
    y = np.empty(4000)
    y[0] = 5.0
    for t in range(1, len(y)):
        y[t] = 5.0 + 0.8 * (y[t - 1] - 5.0) + rng.standard_normal()
    model = fit_autoregressive(y, None)
    assert model.season_length == 1 and model.harmonics == []
    assert model.lags[0] == pytest.approx(0.8, abs=0.05)
    f = AutoregressiveForecaster(model)
    f.update(9.0)
    far = f.forecast(40)
    assert far[0] > far[5] > far[-1] and far[-1] == pytest.approx(5.0, abs=0.5)


# --------------------------------------------------------------------------------------------
# The phase from the calendar
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["holt_winters", "autoregressive"])
def test_the_phase_from_the_calendar_lines_up_a_window_started_mid_season(kind: str) -> None:
    """A window that starts 17 intervals (and 20 calendar seconds) into the season forecasts
    exactly as the filter that was placed at phase 17 by hand, step after step; the same
    filter without a calendar, started at phase 0, does not."""
    train = seasonal(8 * M, seed=7)
    fit = fit_holt_winters if kind == "holt_winters" else fit_autoregressive
    build = HoltWintersForecaster if kind == "holt_winters" else AutoregressiveForecaster
    on_calendar = build(fit(train, M, 0, 60.0))
    by_hand = build(fit(train, M, 0, None))
    by_hand.phase = 17
    ys = seasonal(2 * M, seed=8)[17:]
    calendar = 3 * M * 60.0 + 17 * 60.0 + 20.0 + 60.0 * np.arange(len(ys) + 1)
    assert calendar_phase(calendar[0], M, 60.0) == 17
    assert run(on_calendar, ys, 4, calendar) == run(by_hand, ys, 4)
    unaligned, aligned = build(fit(train, M, 0, None)), build(fit(train, M, 0, None))
    aligned.phase = 17
    assert mae_at(unaligned, ys, 4) > 1.2 * mae_at(aligned, ys, 4)  # no calendar: phase 0 at the window's start


def test_calendar_phase_rounds_to_the_nearest_interval_and_wraps() -> None:
    assert calendar_phase(0.0, 4, 10.0) == 0
    assert calendar_phase(14.0, 4, 10.0) == 1 and calendar_phase(16.0, 4, 10.0) == 2
    assert calendar_phase(39.0, 4, 10.0) == 0  # 3.9 rounds to 4, which is phase 0 again
    assert calendar_phase(-10.0, 4, 10.0) == 3


def test_the_analyzer_passes_the_calendar_only_to_forecasters_that_want_it() -> None:
    """A fitted Holt-Winters model on a calendar takes the phase of each snapshot's calendar;
    EWMA has no use for it (and its analyzer never reads it)."""
    from adaptflow.agents.types import MetricsSnapshot, StageMetrics

    scenario = load_scenario("mmc")
    model = HoltWintersModel(0.0, 0.0, 5.0, [float(i) for i in range(M)], calendar_step=60.0)
    analyzer = StandardAnalyzer.for_scenario(scenario, 30.0, "holt_winters", models={"jobs": model})
    stage = StageMetrics(0, 0, 1, 0, 1, 0, 0, 0, 0, 0, math.nan, 0.0, math.nan, 0.0, 0.0)

    def snapshot(t: float, interval: float, calendar: float) -> MetricsSnapshot:
        return MetricsSnapshot(
            t, interval, {"work": stage}, {"jobs": 150}, 0, 0, 0, 0, 0, 0, math.nan, calendar=calendar
        )

    first = analyzer.analyze(snapshot(0.0, 0.0, 60.0 * 10))
    assert first.forecasts["jobs"][:2] == [15.0, 16.0]  # level 5 + season at phases 10, 11
    after = analyzer.analyze(snapshot(30.0, 30.0, 60.0 * 11))
    assert after.forecasts["jobs"][0] == 16.0
    analyzer.reset()
    assert analyzer.analyze(snapshot(0.0, 0.0, math.nan)).forecasts["jobs"][0] == 5.0  # no calendar: phase 0


# --------------------------------------------------------------------------------------------
# Seasons of scenarios, and the rule without one
# --------------------------------------------------------------------------------------------
def test_season_lengths_of_profiles_and_shipped_series() -> None:
    assert season_length_of(load_scenario("etl_diurnal"), 30.0) == 240  # period 7200 s
    assert season_length_of(load_scenario("bursty"), 30.0) is None
    azure = load_scenario("etl_azure")  # a day of the series lasts 7200 simulated s
    assert season_lengths(azure, 30.0) == {"events": 240}
    assert season_lengths(azure, 60.0) == {"events": 120}


def test_a_cycle_whose_phase_each_episode_draws_has_no_season_to_anchor_to_the_clock() -> None:
    """etl_synthetic's peak falls anywhere in the day (peak_time_jitter spans a period): a
    seasonal model anchored to the clock forecast the peak where it was not, and predictive on
    it cost 536k on 3 held-out seeds against Erlang's 365k (323k without the season)."""
    assert season_lengths(load_scenario("etl_synthetic"), 30.0) == {"events": None}
    assert season_lengths(load_scenario("etl_dag"), 30.0) == {"batches": None}
    assert season_lengths(load_scenario("etl_diurnal"), 30.0) == {"events": 240}  # its phase is fixed


def test_holt_winters_without_a_load_cycle_is_simple_exponential_smoothing_with_a_warning(caplog) -> None:
    """The one rule for every planner that asks for Holt-Winters on a load with no cycle: a
    level-only fit (the analyzer stays Holt-Winters, its forecast is flat), said in a warning."""
    scenario = load_scenario("bursty")
    with caplog.at_level(logging.WARNING, logger="adaptflow.agents.fitting"):
        analyzer = fit_analyzer(scenario, 30.0, "holt_winters")
    assert "no load cycle" in caplog.text and "simple exponential smoothing" in caplog.text
    assert analyzer.forecaster == "holt_winters"
    f = analyzer.forecasters["requests"]
    assert f.model.season == [0.0] and f.model.gamma == 0.0 and 0 < f.model.alpha <= 1
    f.update(7.0)
    f.update(9.0)
    forecast = f.forecast(4)
    assert len(set(forecast)) == 1 and 7.0 <= forecast[0] <= 9.0
    ar = fit_analyzer(scenario, 30.0, "autoregressive").forecasters["requests"]
    assert ar.model.season_length == 1  # an autoregression needs no season


# --------------------------------------------------------------------------------------------
# Series: fitted on the training part, phase from the calendar
# --------------------------------------------------------------------------------------------
def _user_series(tmp_path: Path, cycle: float | None, days: int = 10, name: str = "load.csv") -> Path:
    """A user's CSV of rates every 300 s over ``days`` days: a sine of period ``cycle`` (s)
    with noise, or noise only."""
    t = np.arange(0, days * DAY, 300.0)
    rng = np.random.default_rng(9)
    wave = 3 * np.sin(2 * np.pi * t / cycle) if cycle else 0.0
    rate = np.maximum(6 + wave + 0.5 * rng.standard_normal(len(t)), 0.0)
    path = tmp_path / name
    path.write_text("timestamp,rate\n" + "".join(f"{a:.0f},{b:.4f}\n" for a, b in zip(t, rate, strict=True)))
    return path


def _series_scenario(tmp_path: Path, csv: Path, scale: float = 6.0):
    """One day of the series per episode, a day lasting 3600 simulated s (calendar step 720 s
    per 30 s decision: 120 decisions a day)."""
    data = {
        "name": "user_series",
        "horizon": 3600,
        "sla": {"latency": 10},
        "sources": {
            "jobs": {
                "process": "series",
                "series": {"file": csv.name, "value_column": "rate"},
                "scale": {"mean": scale},
                "day_length": 3600,
                "to": "work",
            }
        },
        "stages": {"work": {"workers": {"initial": 10, "max": 20}, "service": {"dist": "exponential", "mean": 0.5}}},
    }
    path = tmp_path / f"{csv.stem}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_scenario(path)


def test_a_users_series_season_is_detected(tmp_path: Path) -> None:
    """A daily cycle is the day (120 decisions); a 6-hour cycle is detected as such (30); a
    series of noise has none (and Holt-Winters is then fitted without a season)."""
    daily = _series_scenario(tmp_path, _user_series(tmp_path, DAY, name="daily.csv"))
    quarter = _series_scenario(tmp_path, _user_series(tmp_path, DAY / 4, name="quarter.csv"))
    noise = _series_scenario(tmp_path, _user_series(tmp_path, None, name="noise.csv"))
    assert season_lengths(daily, 30.0) == {"jobs": 120}
    assert season_lengths(quarter, 30.0) == {"jobs": 30}
    assert season_lengths(noise, 30.0) == {"jobs": None}
    assert fitted_models("holt_winters", noise, 30.0)["jobs"].season == [0.0]


def test_a_series_is_fitted_on_its_training_part_on_the_calendar(tmp_path: Path) -> None:
    """The training data is the ``train`` part, counted (Poisson) per interval; the models carry
    the calendar step; the fit serves every part of the scenario (one key), and another scale
    or another file content is another fit."""
    csv = _user_series(tmp_path, DAY)
    scenario = _series_scenario(tmp_path, csv)
    (train,) = training_series(scenario, 30.0).values()
    nominal = workload_rates(scenario, 30.0, "train")["jobs"]
    assert len(train.rates) == len(nominal.rates) and train.calendar_step == nominal.calendar_step == 720.0
    assert train.rates.mean() == pytest.approx(nominal.rates.mean(), rel=0.02)
    assert not np.allclose(train.rates, nominal.rates)  # counted: noise on top
    analyzer = fit_analyzer(scenario.for_part("train"), 30.0, "holt_winters")
    f = analyzer.forecasters["jobs"]
    assert len(f.model.season) == 120 and f.model.calendar_step == 720.0 and f.wants_calendar
    peak_phase = int(np.argmax(f.model.season))  # the sine peaks at a quarter day
    assert abs(peak_phase - 30) <= 4
    saved = analyzer.to_dict(state=False)
    assert load_fitted(saved, scenario.for_part("test"), 30.0, "holt_winters") is not None
    assert fit_key(scenario.for_part("test"), 30.0) == fit_key(scenario.for_part("validation"), 30.0)
    assert fit_key(_series_scenario(tmp_path, csv, scale=7.0), 30.0) != fit_key(scenario, 30.0)
    before = fit_key(scenario, 30.0)
    csv.write_text(csv.read_text().replace("timestamp,rate\n0,", "timestamp,rate\n0,1"))
    assert fit_key(_series_scenario(tmp_path, csv), 30.0) != before


def test_in_an_episode_the_phase_is_the_windows_calendar() -> None:
    """Wherever the seed put the window, the fitted forecaster's phase after reset is the one of
    the window's start on the calendar, and it follows the calendar step by step."""
    from adaptflow.envs import make

    env = make("adaptflow/Autoscale-v0", scenario="etl_azure", part="test", forecaster="holt_winters")
    inner = env.unwrapped
    f = inner.analyzer.forecasters["events"]
    m, step = len(f.season), f.model.calendar_step
    phases = set()
    for seed in (1, 2, 3):
        env.reset(seed=seed)
        assert f.phase == calendar_phase(inner.sim.calendar(0.0), m, step)
        phases.add(f.phase)
        for k in range(1, 4):
            env.step(env.action_space.sample())
            assert f.phase == calendar_phase(inner.sim.calendar(k * inner.interval), m, step)
    assert len(phases) == 3  # three windows, three places in the day


def test_forecasts_are_scored_on_the_held_out_part_of_a_series(tmp_path: Path) -> None:
    """On the test part of a daily series, both fitted forecasters beat EWMA 4 steps ahead."""
    scenario = _series_scenario(tmp_path, _user_series(tmp_path, DAY))
    table = forecast_errors(scenario, 30.0, lookahead=4, seeds=(1, 2))
    mae = table[table.lookahead == 4].set_index("forecaster")["mae"]
    assert set(mae.index) == {"ewma", "holt_winters", "autoregressive"}
    assert mae["holt_winters"] < 0.9 * mae["ewma"] and mae["autoregressive"] < 0.9 * mae["ewma"]


def test_the_forecast_error_command_takes_a_part(capsys) -> None:
    from adaptflow.cli import main

    assert main(["forecast-error", "etl_azure", "--seeds", "1", "--lookahead", "2", "--part", "validation"]) == 0
    out = capsys.readouterr().out
    assert "part 'validation'" in out and "autoregressive" in out and "holt_winters" in out
    with pytest.raises(SystemExit):
        main(["forecast-error", "etl_azure", "--part", "nope"])
