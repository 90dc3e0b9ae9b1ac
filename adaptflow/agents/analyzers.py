"""Analyzers: arrival-rate estimation and forecasting, and drift detection of the bad-item rate.

Forecasters see one number per decision interval (the arrival rate observed in it) and forecast
the next ``k`` intervals (the analyzer option ``forecaster`` names one, see :data:`FORECASTERS`):

* ``ewma``, :class:`EwmaForecaster`: an exponentially weighted moving average, forecast flat.
  Cheap, no training, always a step behind a trend.
* ``holt_winters``, :class:`HoltWintersForecaster`: additive Holt-Winters (level + season). Its
  smoothing parameters and its seasonal profile are *trained* with statsmodels
  (:func:`fit_holt_winters`) on the scenario's load: arrival traces simulated from it, or the
  training part of a recorded series (:mod:`adaptflow.agents.fitting`). The season is a
  periodic profile's period, a series' day, or the period :func:`detect_period` finds in a
  user's series; with none, Holt-Winters is simple exponential smoothing (:func:`fit_level_only`).
* ``autoregressive``, :class:`AutoregressiveForecaster`: a least-squares autoregression on the
  last ``p`` rates plus sine/cosine terms of the season's phase (:func:`fit_autoregressive`).

Both fitted forecasters are filtered online in O(1) per step. On a recorded series their phase
comes from the snapshot's calendar (:meth:`Forecaster.observe_calendar`), so the season lines up
with the window wherever an episode's seed put it.

:class:`CusumDetector` flags a rise of the bad-item rate estimated from validation flags.

A fitted analyzer is data: :meth:`StandardAnalyzer.to_dict` / :meth:`StandardAnalyzer.from_dict`
(plain JSON: floats, lists, strings) carry it in a trained model's sidecar and an export's
``planner.json``, so that whoever runs the model loads the forecaster it was trained with instead
of simulating load cycles to refit it. This module never imports the simulator: fitting by
simulation lives on the Sim side (:mod:`adaptflow.agents.fitting`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from adaptflow.scenario import Scenario

from .interfaces import Analyzer
from .types import Insights, MetricsSnapshot

ANALYZER_FORMAT = "adaptflow-analyzer/1"

log = logging.getLogger(__name__)


class AnalyzerNeedsFitting(ValueError):
    """A fitted forecaster (Holt-Winters, autoregressive) was asked for without fitted models:
    fitting simulates the scenario, which this side of the house does not do (see
    :mod:`adaptflow.agents.fitting`)."""


def _float_or_none(x: float) -> float | None:
    """NaN as None: strict JSON has no NaN."""
    return None if math.isnan(x) else float(x)


def _none_as_nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


FORECASTERS = ("ewma", "holt_winters", "autoregressive")
"""The forecaster kinds, by the name an analyzer option (and a saved forecaster's ``kind``) gives."""


def calendar_phase(calendar: float, season_length: int, calendar_step: float) -> int:
    """The phase (0 .. m-1) of the decision interval that starts at calendar second ``calendar``,
    in a season of ``m = season_length`` intervals of ``calendar_step`` calendar seconds each:
    ``round((calendar mod (m * step)) / step) mod m``. Fitting places a recorded series' values
    with it, and a forecaster its next observation, so that both agree on the phase wherever an
    episode's window starts in the series."""
    return round((calendar % (season_length * calendar_step)) / calendar_step) % season_length


class Forecaster:
    """One number per decision interval in (:meth:`update`), the next ``steps`` out (:meth:`forecast`).

    ``wants_calendar``: the forecaster's season follows the workload's calendar (a recorded
    series' clock). The analyzer then passes each snapshot's calendar to :meth:`observe_calendar`
    after the update, so the phase of the next interval is the calendar's, not a count from the
    episode's start. False for the others, which pay nothing for it."""

    kind = "base"
    wants_calendar = False

    def reset(self) -> None: ...

    def update(self, rate: float) -> None: ...

    def observe_calendar(self, calendar: float) -> None:
        """The calendar second at which the next observed interval starts (NaN: unknown)."""

    def forecast(self, steps: int) -> list[float]: ...

    def to_dict(self) -> dict[str, Any]:
        """Parameters and state as plain data; :func:`forecaster_from_dict` rebuilds it."""
        raise NotImplementedError


def forecaster_from_dict(data: dict[str, Any]) -> Forecaster:
    """The forecaster ``data`` (from ``to_dict``) describes, in the same state."""
    kind = data.get("kind")
    if kind == "ewma":
        return EwmaForecaster.from_dict(data)
    if kind == "holt_winters":
        return HoltWintersForecaster.from_dict(data)
    if kind == "autoregressive":
        return AutoregressiveForecaster.from_dict(data)
    raise ValueError(f"unknown forecaster kind {kind!r}; expected one of {', '.join(map(repr, FORECASTERS))}")


class EwmaForecaster(Forecaster):
    kind = "ewma"

    def __init__(self, alpha: float = 0.3):
        if not 0 < alpha <= 1:
            raise ValueError(f"EWMA alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.level = math.nan

    def reset(self) -> None:
        self.level = math.nan

    def update(self, rate: float) -> None:
        self.level = rate if math.isnan(self.level) else self.alpha * rate + (1 - self.alpha) * self.level

    def rate(self) -> float:
        """The current estimate (0 before the first observation)."""
        return 0.0 if math.isnan(self.level) else self.level

    def forecast(self, steps: int) -> list[float]:
        return [self.rate()] * steps

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "alpha": self.alpha, "level": _float_or_none(self.level)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EwmaForecaster:
        f = cls(float(data["alpha"]))
        f.level = _none_as_nan(data.get("level"))
        return f


def _step_or_none(x: Any) -> float | None:
    return None if x is None else float(x)


@dataclass
class HoltWintersModel:
    """Fitted additive Holt-Winters: smoothing of level and season, and the state at phase 0.

    ``calendar_step``: calendar seconds per interval when fitted on a recorded series (the
    filter then takes its phase from the snapshot's calendar, see :func:`calendar_phase`);
    None when fitted on simulated load, whose phase counts intervals from t=0. A model with
    one season value and ``gamma`` 0 has no season: it is simple exponential smoothing."""

    alpha: float
    gamma: float
    level: float
    season: list[float]  # season[i]: seasonal effect at phase i (intervals since t=0, mod m)
    calendar_step: float | None = None

    def to_dict(self) -> dict:
        return {
            "alpha": self.alpha,
            "gamma": self.gamma,
            "level": self.level,
            "season": list(self.season),
            "calendar_step": self.calendar_step,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HoltWintersModel:
        return cls(
            float(data["alpha"]),
            float(data["gamma"]),
            float(data["level"]),
            [float(x) for x in data["season"]],
            _step_or_none(data.get("calendar_step")),  # absent in analyzers saved before series
        )


class HoltWintersForecaster(Forecaster):
    """Online additive Holt-Winters filter around a model trained by :func:`fit_holt_winters`:
    ``level_t = a (y_t - s_{t-m}) + (1-a) level_{t-1}``, ``s_t = g (y_t - level_t) + (1-g) s_{t-m}``,
    forecast ``level_t + s_{t+h-m}``. (No trend term: a load cycle's level does not drift.)"""

    kind = "holt_winters"

    def __init__(self, model: HoltWintersModel):
        self.model = model
        step = model.calendar_step
        self.wants_calendar = step is not None and len(model.season) > 1
        self._calendar_step = step if step is not None else math.nan
        self.reset()

    def reset(self) -> None:
        self.level = self.model.level
        self.season = list(self.model.season)
        self.phase = 0  # index of the interval the next observation belongs to

    def update(self, rate: float) -> None:
        m, a, g = len(self.season), self.model.alpha, self.model.gamma
        i = self.phase % m
        previous_level = self.level
        self.level = a * (rate - self.season[i]) + (1 - a) * previous_level
        self.season[i] = g * (rate - self.level) + (1 - g) * self.season[i]
        self.phase += 1

    def observe_calendar(self, calendar: float) -> None:
        """Resynchronised every interval (a few float operations): an episode whose series runs
        faster or slower (a stretch) or a live clock still gets the calendar's phase."""
        if calendar == calendar and self.wants_calendar:  # not NaN, and a season on the calendar
            self.phase = calendar_phase(calendar, len(self.season), self._calendar_step)

    def forecast(self, steps: int) -> list[float]:
        m = len(self.season)
        return [max(0.0, self.level + self.season[(self.phase + h) % m]) for h in range(steps)]

    def to_dict(self) -> dict[str, Any]:
        """The fitted model (what :meth:`reset` returns to) and the filter's current state."""
        return {
            "kind": self.kind,
            "model": self.model.to_dict(),
            "level": self.level,
            "season": list(self.season),
            "phase": self.phase,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HoltWintersForecaster:
        f = cls(HoltWintersModel.from_dict(data["model"]))
        f.level = float(data["level"])
        f.season = [float(x) for x in data["season"]]
        f.phase = int(data["phase"])
        return f


def fit_holt_winters(
    rates: np.ndarray, season_length: int | None, start_phase: int = 0, calendar_step: float | None = None
) -> HoltWintersModel:
    """Fit additive Holt-Winters with statsmodels on a training series whose first value is at
    phase ``start_phase``; return the parameters and the state after the last whole season
    (at phase 0 again). The series is cut to start at phase 0 and to whole seasons (at least 2).
    ``season_length`` None: no season, simple exponential smoothing (:func:`fit_level_only`)."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    if season_length is None:
        return fit_level_only(rates)
    if season_length < 2:
        raise ValueError(f"season length must be >= 2 intervals, got {season_length}")
    y = np.asarray(rates, dtype=float)[(-start_phase) % season_length :]
    seasons = len(y) // season_length
    if seasons < 2:
        raise ValueError(f"need at least 2 seasons of {season_length} intervals to fit, got {len(y)} intervals")
    y = y[: seasons * season_length]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' optimizer chatter on convergence
        fit = ExponentialSmoothing(
            y, trend=None, seasonal="add", seasonal_periods=season_length, initialization_method="estimated"
        ).fit()
    alpha = float(fit.params["smoothing_level"])
    gamma = float(fit.params["smoothing_seasonal"])
    level = float(fit.level[-1])
    season = np.asarray(fit.season)[-season_length:]  # s at phases 0..m-1 (series ends at a season end)
    return HoltWintersModel(alpha, gamma, level, [float(s) for s in season], calendar_step)


MIN_LEVEL_ONLY = 10
"""Fewest intervals a level-only (no season) fit takes."""


def fit_level_only(rates: np.ndarray) -> HoltWintersModel:
    """Holt-Winters without a season, which is simple exponential smoothing (an EWMA with a
    fitted ``alpha``, forecast flat): the model for a load with no cycle to learn. Kept as a
    Holt-Winters model (one season value of 0, never updated) so that an analyzer asked for
    Holt-Winters stays one, on any scenario."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    y = np.asarray(rates, dtype=float)
    if len(y) < MIN_LEVEL_ONLY:
        raise ValueError(f"need at least {MIN_LEVEL_ONLY} intervals to fit a level, got {len(y)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ExponentialSmoothing(y, trend=None, seasonal=None, initialization_method="estimated").fit()
    return HoltWintersModel(float(fit.params["smoothing_level"]), 0.0, float(fit.level[-1]), [0.0])


@dataclass
class AutoregressiveModel:
    """A linear autoregression fitted by least squares on lagged rates:
    ``y_{t+1} = intercept + sum_j lags[j] * y_{t-j} + season(phase of t+1)``, with the season
    as ``K`` harmonics of the season length ``m``:
    ``season(i) = sum_k harmonics[2k-2] cos(2 pi k i / m) + harmonics[2k-1] sin(2 pi k i / m)``
    (the sine and cosine of the time of day, and their overtones, for a daily series).

    ``m`` is 1 with no season (no harmonics). ``mean``: the training mean, the lags before the
    first observation. ``calendar_step``: as for :class:`HoltWintersModel`."""

    intercept: float
    lags: list[float]  # coefficient of y_t, y_{t-1}, ...
    harmonics: list[float]
    season_length: int
    mean: float
    calendar_step: float | None = None

    def seasonal_effects(self) -> list[float]:
        """``season(i)`` for i in 0..m-1: a table, so a forecast step costs one lookup."""
        phase = 2 * np.pi * np.arange(self.season_length) / self.season_length
        effect = np.zeros(self.season_length)
        for k in range(len(self.harmonics) // 2):
            a, b = self.harmonics[2 * k], self.harmonics[2 * k + 1]
            effect += a * np.cos((k + 1) * phase) + b * np.sin((k + 1) * phase)
        return [float(x) for x in effect]

    def to_dict(self) -> dict[str, Any]:
        return {
            "intercept": self.intercept,
            "lags": list(self.lags),
            "harmonics": list(self.harmonics),
            "season_length": self.season_length,
            "mean": self.mean,
            "calendar_step": self.calendar_step,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoregressiveModel:
        return cls(
            float(data["intercept"]),
            [float(x) for x in data["lags"]],
            [float(x) for x in data["harmonics"]],
            int(data["season_length"]),
            float(data["mean"]),
            _step_or_none(data.get("calendar_step")),
        )


class AutoregressiveForecaster(Forecaster):
    """Online filter of an :class:`AutoregressiveModel`: keeps the last ``p`` rates (the first
    observation fills them all) and forecasts ``h`` steps by iterating the model, ``p``
    multiply-adds and a table lookup per step ahead."""

    kind = "autoregressive"

    def __init__(self, model: AutoregressiveModel):
        if not model.lags:
            raise ValueError("an autoregressive model needs at least one lag; got none")
        self.model = model
        self.wants_calendar = model.calendar_step is not None and model.season_length > 1
        self._calendar_step = model.calendar_step if model.calendar_step is not None else math.nan
        self._effects = model.seasonal_effects()
        self.reset()

    def reset(self) -> None:
        self.history = [self.model.mean] * len(self.model.lags)  # newest first
        self.observed = False
        self.phase = 0  # index of the interval the next observation belongs to

    def update(self, rate: float) -> None:
        if self.observed:
            self.history.pop()
            self.history.insert(0, rate)
        else:
            self.history = [rate] * len(self.history)
            self.observed = True
        self.phase += 1

    def observe_calendar(self, calendar: float) -> None:
        if calendar == calendar and self.wants_calendar:
            self.phase = calendar_phase(calendar, self.model.season_length, self._calendar_step)

    def forecast(self, steps: int) -> list[float]:
        c, coef, effects = self.model.intercept, self.model.lags, self._effects
        m, phase = len(effects), self.phase
        window = self.history[:]
        out = []
        for h in range(steps):
            y = c + effects[(phase + h) % m]
            for a, x in zip(coef, window, strict=False):
                y += a * x
            window.pop()
            window.insert(0, y)
            out.append(y if y > 0.0 else 0.0)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model.to_dict(),
            "history": list(self.history),
            "observed": self.observed,
            "phase": self.phase,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoregressiveForecaster:
        f = cls(AutoregressiveModel.from_dict(data["model"]))
        f.history = [float(x) for x in data["history"]]
        f.observed = bool(data["observed"])
        f.phase = int(data["phase"])
        return f


AR_LAGS = (1, 2, 3, 4, 6, 8)
AR_HARMONICS = (0, 1, 2, 3, 4)


def fit_autoregressive(
    rates: np.ndarray, season_length: int | None, start_phase: int = 0, calendar_step: float | None = None
) -> AutoregressiveModel:
    """Least-squares autoregression on a training series whose first value is at phase
    ``start_phase`` of a season of ``season_length`` intervals (None: no season).

    The order ``p`` (from :data:`AR_LAGS`) and the number of harmonics ``K`` (from
    :data:`AR_HARMONICS`, at most ``m // 2``; 0 without a season) are chosen by the Bayesian
    information criterion ``n log(RSS / n) + params log(n)`` over the same target rows: the
    fewest terms the data supports, so a short series does not buy noise with lags."""
    y = np.asarray(rates, dtype=float)
    m = season_length if season_length and season_length > 1 else 1
    top = max(AR_LAGS)
    n = len(y) - top
    if n < 4 * (top + 2 * max(AR_HARMONICS) + 1):
        raise ValueError(f"need at least {4 * (top + 2 * max(AR_HARMONICS) + 1) + top} intervals to fit, got {len(y)}")
    target = y[top:]
    angle = 2 * np.pi * ((start_phase + np.arange(top, len(y))) % m) / m  # phase of each target
    best: tuple[float, np.ndarray, int, int] | None = None
    for p in AR_LAGS:
        for k in (h for h in AR_HARMONICS if h <= m // 2):
            columns = [np.ones(n)] + [y[top - 1 - j : len(y) - 1 - j] for j in range(p)]
            for h in range(1, k + 1):
                columns += [np.cos(h * angle), np.sin(h * angle)]
            design = np.column_stack(columns)
            coef, *_ = np.linalg.lstsq(design, target, rcond=None)
            rss = max(float(np.sum((target - design @ coef) ** 2)), 1e-12)
            bic = n * math.log(rss / n) + design.shape[1] * math.log(n)
            if best is None or bic < best[0]:
                best = (bic, coef, p, k)
    assert best is not None
    _, coef, p, k = best
    return AutoregressiveModel(
        float(coef[0]),
        [float(c) for c in coef[1 : 1 + p]],
        [float(c) for c in coef[1 + p : 1 + p + 2 * k]],
        m,
        float(y.mean()),
        calendar_step,
    )


def detect_period(rates: np.ndarray, max_lag: int) -> int | None:
    """The season of a series, or None when it has no clear one. The rule: remove the linear
    trend; take the autocorrelation (ACF) at lags 2..``max_lag`` (at most half the series, so a
    season is seen at least twice); keep the lags ``L`` where the ACF is highest within
    ``L +- L/4`` (a peak, not a bump of noise on its slope) and at least ``max(0.3, 3 / sqrt(n))``
    (white noise stays under 3/sqrt(n)); return the shortest whose peak reaches 80% of the
    highest (a day, not the week that repeats it: the multiples of a period peak too, a little
    lower). A trend or an AR(1) decays monotonically: no peak, no season."""
    y = np.asarray(rates, dtype=float)
    n = len(y)
    max_lag = min(int(max_lag), n // 2)
    if max_lag < 3:
        return None
    t = np.arange(n)
    y = y - np.polyval(np.polyfit(t, y, 1), t)
    spectrum = np.fft.rfft(y, 2 * n)
    acov = np.fft.irfft(spectrum * np.conj(spectrum))[:n]
    if not acov[0] > 1e-12 * max(1.0, float(np.mean(np.asarray(rates, dtype=float) ** 2))):
        return None  # constant
    acf = acov / acov[0]
    floor = max(0.3, 3 / math.sqrt(n))
    peaks = [
        lag
        for lag in range(2, max_lag + 1)
        if acf[lag] >= floor
        and acf[lag] - acf[1:lag].min() >= floor
        and acf[lag] >= acf[lag - max(1, lag // 4) : lag + max(1, lag // 4) + 1].max()
    ]
    if not peaks:
        return None
    highest = max(acf[lag] for lag in peaks)
    first = next(lag for lag in peaks if acf[lag] >= 0.8 * highest)
    return _refined_period(acf, first, max_lag)


def _refined_period(acf: np.ndarray, period: int, max_lag: int) -> int:
    """``period`` made precise by its multiples: the ACF's top near each ``k * period`` within
    ``max_lag``, fitted as ``k * P`` by least squares. The top of one peak is flat and noise
    moves it by a lag or two; divided by ``k``, a multiple's error shrinks."""
    width = max(1, period // 4)
    ks, tops = [], []
    for k in range(1, max_lag // period + 1):
        lo, hi = k * period - width, min(k * period + width, max_lag) + 1
        ks.append(k)
        tops.append(lo + int(np.argmax(acf[lo:hi])))
    k_arr = np.asarray(ks, dtype=float)
    return max(2, round(float(k_arr @ np.asarray(tops, dtype=float) / (k_arr @ k_arr))))


def _season_of_series(source: Any, interval: float) -> int | None:
    """A series source's season in decision intervals: a shipped data-center series has a day,
    ``round(day_steps)``; a user's series has the period :func:`detect_period` finds in its
    training part (a period within 5% of a calendar day is taken as the day, so that its phase
    follows the calendar), or None."""
    from adaptflow.scenario.series import DAY, part_rates

    day_steps = DAY / (interval * source.time_scale())
    day = max(2, round(day_steps))
    if source.series.dataset is not None:
        return day
    train = part_rates(source, interval, "train")
    period = detect_period(train.rates, len(train.rates) // 2)
    if period is not None and abs(period - day_steps) <= 0.05 * day_steps:
        return day
    return period


def season_lengths(scenario: Scenario, interval: float) -> dict[str, int | None]:
    """Intervals per load cycle of each source: a diurnal or periodic rate profile's period, a
    series' day (or detected period, see :func:`_season_of_series`); None without a cycle, and
    None for a cycle whose phase each episode draws (``peak_time_jitter``): a seasonal model
    anchored to the clock would forecast the peak where it is not. (It did: predictive, on
    Holt-Winters, cost 1.8x the clairvoyant on etl_synthetic, where Erlang staffing on the
    current rate cost 1.2x.)"""
    out: dict[str, int | None] = {}
    for name, source in scenario.sources.items():
        if source.process == "series":
            out[name] = _season_of_series(source, interval)
            continue
        rate = getattr(source, "rate", None)
        period = getattr(rate, "period", None)
        out[name] = max(2, round(period / interval)) if period and not getattr(rate, "phase_drawn", False) else None
    return out


def season_length_of(scenario: Scenario, interval: float) -> int | None:
    """Intervals per load cycle: the first source's that has one (see :func:`season_lengths`)."""
    return next((m for m in season_lengths(scenario, interval).values() if m is not None), None)


@dataclass
class CusumDetector:
    """One-sided CUSUM for a rise of a rate: ``S = min(cap, max(0, S + x - (baseline + slack)))``,
    alarm while ``S > threshold``. The baseline is the mean of the first ``warmup`` observations
    unless given. A planner must also learn that a drift is over, so ``S`` is capped (default
    2 x threshold): once the rate is back, the alarm clears within (cap - threshold) / slack
    intervals, however long the drift lasted."""

    slack: float = 0.02
    threshold: float = 0.15
    warmup: int = 10
    baseline: float | None = None
    cap: float | None = None
    _fixed_baseline: float | None = field(default=None, init=False)
    _seen: list[float] = field(default_factory=list, init=False)
    statistic: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._fixed_baseline = self.baseline

    def reset(self) -> None:
        self.baseline = self._fixed_baseline
        self._seen = []
        self.statistic = 0.0

    def update(self, x: float) -> bool:
        if math.isnan(x):
            return self.alarm
        if self.baseline is None:
            self._seen.append(x)
            if len(self._seen) >= self.warmup:
                self.baseline = float(np.mean(self._seen))
            return False
        cap = 2 * self.threshold if self.cap is None else self.cap
        self.statistic = min(cap, max(0.0, self.statistic + x - self.baseline - self.slack))
        return self.alarm

    @property
    def alarm(self) -> bool:
        return self.statistic > self.threshold

    def to_dict(self) -> dict[str, Any]:
        """Settings and state as plain data (the warm-up observations included)."""
        return {
            "slack": self.slack,
            "threshold": self.threshold,
            "warmup": self.warmup,
            "cap": self.cap,
            "fixed_baseline": self._fixed_baseline,
            "baseline": self.baseline,
            "seen": list(self._seen),
            "statistic": self.statistic,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CusumDetector:
        d = cls(
            slack=float(data["slack"]),
            threshold=float(data["threshold"]),
            warmup=int(data["warmup"]),
            baseline=data["fixed_baseline"],
            cap=data["cap"],
        )
        d.baseline, d._seen, d.statistic = data["baseline"], [float(x) for x in data["seen"]], float(data["statistic"])
        return d


class StandardAnalyzer(Analyzer):
    """Rates (EWMA) per source and per stage, a forecast per source, and quality drift.

    The bad-item rate of an interval is estimated from validation flags: detected items divided
    by the number of bad items validation would have caught at each stage's detection rate,
    i.e. ``sum(detected) / sum(completed_i * detect_prob_i)``.

    ``fitted_on``: :func:`fit_key` of the scenario and decision interval it was built for, so
    that a saved analyzer is not silently used on another scenario."""

    def __init__(
        self,
        forecasters: dict[str, Forecaster],
        stages: list[str],
        detect_probs: dict[str, float] | None = None,
        forecast_steps: int = 4,
        alpha: float = 0.3,
        drift: CusumDetector | None = None,
        fitted_on: str | None = None,
    ):
        self.forecasters = forecasters
        self.alpha = alpha
        self.stage_rates = {name: EwmaForecaster(alpha) for name in stages}
        # An EWMA forecaster already is the rate estimate: share it rather than compute it twice.
        self.rate_estimators = {
            name: f if isinstance(f, EwmaForecaster) and f.alpha == alpha else EwmaForecaster(alpha)
            for name, f in forecasters.items()
        }
        self.detect_probs = detect_probs or {}
        self.forecast_steps = forecast_steps
        self.drift = drift or CusumDetector()
        self.fitted_on = fitted_on

    @property
    def forecaster(self) -> str:
        """The forecaster's kind, one of :data:`FORECASTERS` (the option that built it)."""
        kinds = {f.kind for f in self.forecasters.values()}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @classmethod
    def for_scenario(
        cls,
        scenario: Scenario,
        interval: float,
        forecaster: str = "ewma",
        forecast_steps: int = 4,
        alpha: float = 0.3,
        models: dict[str, Any] | None = None,
    ) -> StandardAnalyzer:
        """``forecaster``: "ewma", or "holt_winters" / "autoregressive" with ``models``, one
        fitted model per source (:class:`HoltWintersModel`, :class:`AutoregressiveModel`).
        Fitting them needs the scenario's load (simulated, or a series' training part):
        :func:`adaptflow.agents.fitting.fit_analyzer` does it (and caches it); a trained
        model's sidecar carries the result."""
        detect = {n: s.validation.detect_prob for n, s in scenario.stages.items() if s.validation}
        fitted: dict[str, type] = {"holt_winters": HoltWintersForecaster, "autoregressive": AutoregressiveForecaster}
        if forecaster == "ewma":
            forecasters: dict[str, Forecaster] = {name: EwmaForecaster(alpha) for name in scenario.sources}
        elif forecaster in fitted:
            if models is None:
                raise AnalyzerNeedsFitting(
                    f"a {forecaster} analyzer for {scenario.name!r} needs fitted models: use "
                    "adaptflow.agents.fitting.fit_analyzer, or load a saved analyzer (StandardAnalyzer.from_dict)"
                )
            missing = sorted(set(scenario.sources) - set(models))
            if missing:
                raise ValueError(f"no fitted {forecaster} model for sources {missing} of {scenario.name!r}")
            forecasters = {name: fitted[forecaster](models[name]) for name in scenario.sources}
        else:
            raise ValueError(f"unknown forecaster {forecaster!r}; expected one of {', '.join(map(repr, FORECASTERS))}")
        return cls(
            forecasters, list(scenario.stages), detect, forecast_steps, alpha, fitted_on=fit_key(scenario, interval)
        )

    def to_dict(self, state: bool = True) -> dict[str, Any]:
        """Everything the analyzer is, as JSON-safe data: the forecasters' fitted parameters and
        state, the rate estimators, the drift detector's settings and state. ``state=False``:
        as after :meth:`reset` (what a model's sidecar keeps). :meth:`from_dict` reverses it."""
        a = self if state else self._fresh()
        return {
            "format": ANALYZER_FORMAT,
            "fitted_on": a.fitted_on,
            "forecaster": a.forecaster,
            "forecast_steps": a.forecast_steps,
            "alpha": a.alpha,
            "stages": list(a.stage_rates),
            "detect_probs": dict(a.detect_probs),
            "forecasters": {name: f.to_dict() for name, f in a.forecasters.items()},
            "stage_rates": {name: f.to_dict() for name, f in a.stage_rates.items()},
            # only the estimators that are not the forecaster itself (shared again on loading)
            "rate_estimators": {n: f.to_dict() for n, f in a.rate_estimators.items() if f is not a.forecasters[n]},
            "drift": a.drift.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StandardAnalyzer:
        """The analyzer :meth:`to_dict` saved, in the same state. Never fits anything."""
        if not isinstance(data, dict) or data.get("format") != ANALYZER_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not a saved analyzer: format {found!r}; expected {ANALYZER_FORMAT!r}")
        analyzer = cls(
            {name: forecaster_from_dict(f) for name, f in data["forecasters"].items()},
            list(data["stages"]),
            {name: float(p) for name, p in data["detect_probs"].items()},
            int(data["forecast_steps"]),
            float(data["alpha"]),
            CusumDetector.from_dict(data["drift"]),
            data.get("fitted_on"),
        )
        analyzer.stage_rates.update({n: EwmaForecaster.from_dict(f) for n, f in data["stage_rates"].items()})
        analyzer.rate_estimators.update({n: EwmaForecaster.from_dict(f) for n, f in data["rate_estimators"].items()})
        return analyzer

    def _fresh(self) -> StandardAnalyzer:
        fresh = copy.deepcopy(self)
        fresh.reset()
        return fresh

    def reset(self) -> None:
        for f in {
            id(f): f for f in (*self.forecasters.values(), *self.stage_rates.values(), *self.rate_estimators.values())
        }.values():
            f.reset()
        self.drift.reset()

    def analyze(self, snapshot: MetricsSnapshot) -> Insights:
        # Loops rather than comprehensions: in Python 3.11 each comprehension is a function
        # call, and this runs on every env step.
        dt = snapshot.interval
        rates: dict[str, float] = {}
        forecasts: dict[str, list[float]] = {}
        stage_rates: dict[str, float] = {}
        arrivals = snapshot.source_arrivals
        for name, forecaster in self.forecasters.items():
            estimator = self.rate_estimators[name]
            if dt > 0 and name in arrivals:
                count = arrivals[name]
                forecaster.update(count / dt)
                if estimator is not forecaster:
                    estimator.update(count / dt)
            if forecaster.wants_calendar:  # a season on a series' calendar: its phase from the clock
                forecaster.observe_calendar(snapshot.calendar)
            forecasts[name] = forecaster.forecast(self.forecast_steps)
            rates[name] = estimator.rate()
        for name, est in self.stage_rates.items():
            if dt > 0:
                est.update(snapshot.stages[name].arrivals / dt)
            stage_rates[name] = est.rate()
        bad_rate = math.nan
        if self.detect_probs:
            expected = sum(snapshot.stages[n].completed * p for n, p in self.detect_probs.items())
            if expected > 0:
                bad_rate = sum(snapshot.stages[n].detected for n in self.detect_probs) / expected
        drift = self.drift.update(bad_rate) if dt > 0 else self.drift.alarm
        return Insights(rates, forecasts, stage_rates, bad_rate, drift, ["quality_drift"] if drift else [])


def analyzer_options(planner: object, forecaster: str = "ewma") -> dict[str, Any]:
    """The analyzer ``planner`` needs, as ``StandardAnalyzer.for_scenario`` options: a learned
    planner names the one it was trained with (its ``analyzer_options``: forecaster and forecast
    steps), so it never sees other forecasts than in training; a rule takes ``forecaster``."""
    return {"forecaster": forecaster, **getattr(planner, "analyzer_options", {})}


FIT_PART = "train"
"""The part of a series source's data every forecaster is fitted on, whatever part the
scenario's episodes are drawn from (a model trained on ``train`` is evaluated on ``test``)."""


def fit_key(scenario: Scenario, interval: float, trace_by: Literal["content", "path"] = "content") -> str:
    """What a fitted analyzer depends on, as a short digest: the scenario (all of it but the
    horizon, which a fit does not use) and the decision interval.

    A series source is fitted on its :data:`FIT_PART` part at nominal speed and scale, so the
    part its episodes come from, a pinned window and the augmentations do not enter (the same
    fit serves ``for_part("train")`` and ``for_part("test")``); the training values themselves
    do, as a digest, so that an edited CSV under the same path is a different fit.

    A trace source enters by its file's content, not its path: a recording edited in place is
    a different fit (its path alone kept the stale one), and the same file moved or copied
    beside a calibrated scenario is the same.

    Fields left at their defaults are left out: a field the schema gains later (with a default)
    must not make every saved analyzer "fitted for another scenario" (adding ``startup_tick``
    did, and each model's forecaster was refitted by simulation, with a warning, at load).
    ``trace_by="path"``: the key as it was before traces entered by content, which
    :func:`load_fitted` still accepts, for the same reason."""
    data = scenario.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    data.pop("horizon", None)
    key: dict[str, Any] = {"scenario": data, "interval": float(interval)}
    for name, source in scenario.sources.items():
        if source.process == "trace" and trace_by == "content":
            data["sources"][name]["file"] = _content_digest(source.file)
    recorded = {name: s for name, s in scenario.sources.items() if s.process == "series"}
    if recorded:
        from adaptflow.scenario.series import part_rates

        for name in recorded:
            for field_name in ("part", "window", "augment"):
                data["sources"][name].pop(field_name, None)
        key["training"] = {
            "part": FIT_PART,
            "rates": {
                name: hashlib.sha256(part_rates(s, interval, FIT_PART).rates.tobytes()).hexdigest()[:16]
                for name, s in recorded.items()
            },
        }
    text = json.dumps(key, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _content_digest(path: Path) -> str:
    """A short digest of a file's bytes (its path, if it cannot be read: the scenario's own
    validation reports that)."""
    try:
        return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return str(path)


def load_fitted(
    data: dict[str, Any] | None,
    scenario: Scenario,
    interval: float,
    forecaster: str | None = None,
    forecast_steps: int | None = None,
) -> StandardAnalyzer | None:
    """The saved analyzer ``data``, reset, if it was fitted for ``scenario`` at ``interval`` (and
    has the ``forecaster`` and ``forecast_steps`` asked for); otherwise None, with a logged
    warning when there was something saved that does not fit (the caller then fits anew)."""
    if not data:
        return None
    analyzer = StandardAnalyzer.from_dict(data)
    problems = []
    # a model saved before traces entered by content carries the key of the trace's path
    if analyzer.fitted_on not in (fit_key(scenario, interval), fit_key(scenario, interval, trace_by="path")):
        problems.append(f"it was fitted for another scenario or interval than {scenario.name!r} at {interval:g} s")
    if forecaster is not None and analyzer.forecaster != forecaster:
        problems.append(f"its forecaster is {analyzer.forecaster!r}, not {forecaster!r}")
    if forecast_steps is not None and analyzer.forecast_steps != forecast_steps:
        problems.append(f"it forecasts {analyzer.forecast_steps} steps, not {forecast_steps}")
    if problems:
        log.warning("not using the saved analyzer: %s", "; ".join(problems))
        return None
    analyzer.reset()
    return analyzer


def saved_analyzer(
    planner: object, scenario: Scenario, interval: float, forecaster: str = "ewma"
) -> StandardAnalyzer | None:
    """The fitted analyzer a learned planner carries (``planner.analyzer_state``, read from its
    sidecar), if it was fitted for this scenario and interval with the options the planner
    names; None otherwise."""
    options = analyzer_options(planner, forecaster)
    return load_fitted(
        getattr(planner, "analyzer_state", None),
        scenario,
        interval,
        options["forecaster"],
        options.get("forecast_steps"),
    )


def ready_analyzer(
    planner: object, scenario: Scenario, interval: float, forecaster: str = "ewma"
) -> StandardAnalyzer | None:
    """The analyzer ``planner`` needs, when getting it needs no simulation: the one it carries,
    or an EWMA one built from the scenario. None when a fitted forecaster (Holt-Winters,
    autoregressive) must be fitted (:func:`adaptflow.agents.fitting.analyzer_for` does that on
    the Sim side)."""
    saved = saved_analyzer(planner, scenario, interval, forecaster)
    if saved is not None:
        return saved
    options = analyzer_options(planner, forecaster)
    if options["forecaster"] != "ewma":
        return None
    return StandardAnalyzer.for_scenario(scenario, interval, **options)
