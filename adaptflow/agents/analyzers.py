"""Analyzers: arrival-rate estimation and forecasting, and drift detection of the bad-item rate.

Forecasters see one number per decision interval (the arrival rate observed in it) and forecast
the next ``k`` intervals:

* :class:`EwmaForecaster`: an exponentially weighted moving average, forecast flat. Cheap, no
  training, always a step behind a trend.
* :class:`HoltWintersForecaster`: additive Holt-Winters (level + season). Its smoothing
  parameters and its seasonal profile are *trained* with statsmodels on arrival traces simulated
  from the scenario (:func:`fit_holt_winters`); in an episode it is filtered online in O(1) per
  step, so it costs no more than EWMA at run time.

:class:`CusumDetector` flags a rise of the bad-item rate estimated from validation flags.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adaptflow.scenario import Scenario
from adaptflow.simulator import Simulation

from .interfaces import Analyzer
from .types import Insights, MetricsSnapshot


class Forecaster:
    def reset(self) -> None: ...

    def update(self, rate: float) -> None: ...

    def forecast(self, steps: int) -> list[float]: ...


class EwmaForecaster(Forecaster):
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


@dataclass
class HoltWintersModel:
    """Fitted additive Holt-Winters: smoothing of level and season, and the state at phase 0."""

    alpha: float
    gamma: float
    level: float
    season: list[float]  # season[i]: seasonal effect at phase i (intervals since t=0, mod m)

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "gamma": self.gamma, "level": self.level, "season": list(self.season)}


class HoltWintersForecaster(Forecaster):
    """Online additive Holt-Winters filter around a model trained by :func:`fit_holt_winters`:
    ``level_t = a (y_t - s_{t-m}) + (1-a) level_{t-1}``, ``s_t = g (y_t - level_t) + (1-g) s_{t-m}``,
    forecast ``level_t + s_{t+h-m}``."""

    def __init__(self, model: HoltWintersModel):
        self.model = model
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

    def forecast(self, steps: int) -> list[float]:
        m = len(self.season)
        return [max(0.0, self.level + self.season[(self.phase + h) % m]) for h in range(steps)]


def simulated_rates(scenario: Scenario, interval: float, duration: float, seed: int) -> dict[str, np.ndarray]:
    """Arrival rate per source per interval over ``duration`` simulated seconds: training data
    for forecasters. Arrival streams do not depend on the pool, so the scenario runs as is."""
    from adaptflow.scenario import load_scenario

    spec = load_scenario(scenario, horizon=duration)
    sim = Simulation(spec, rng=np.random.default_rng(seed))
    steps = int(duration // interval)
    out = {name: np.empty(steps) for name in sim.sources}
    previous = {name: 0 for name in sim.sources}
    for k in range(steps):
        sim.run((k + 1) * interval)
        for name, src in sim.sources.items():
            out[name][k] = (src.arrived - previous[name]) / interval
            previous[name] = src.arrived
    return out


def fit_holt_winters(rates: np.ndarray, season_length: int) -> HoltWintersModel:
    """Fit additive Holt-Winters with statsmodels on a training series that starts at phase 0
    and spans whole seasons; return the parameters and the state after it (at phase 0 again)."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    if season_length < 2:
        raise ValueError(f"season length must be >= 2 intervals, got {season_length}")
    seasons = len(rates) // season_length
    if seasons < 2:
        raise ValueError(f"need at least 2 seasons of {season_length} intervals to fit, got {len(rates)} intervals")
    y = np.asarray(rates[: seasons * season_length], dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' optimizer chatter on convergence
        fit = ExponentialSmoothing(
            y, trend=None, seasonal="add", seasonal_periods=season_length, initialization_method="estimated"
        ).fit()
    alpha = float(fit.params["smoothing_level"])
    gamma = float(fit.params["smoothing_seasonal"])
    level = float(fit.level[-1])
    season = np.asarray(fit.season)[-season_length:]  # s at phases 0..m-1 (series ends at a season end)
    return HoltWintersModel(alpha=alpha, gamma=gamma, level=level, season=[float(s) for s in season])


def season_length_of(scenario: Scenario, interval: float) -> int | None:
    """Intervals per load cycle, from the scenario's diurnal or periodic rate profile."""
    for source in scenario.sources.values():
        rate = getattr(source, "rate", None)
        period = getattr(rate, "period", None)
        if period:
            return max(2, round(period / interval))
    return None


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


class StandardAnalyzer(Analyzer):
    """Rates (EWMA) per source and per stage, a forecast per source, and quality drift.

    The bad-item rate of an interval is estimated from validation flags: detected items divided
    by the number of bad items validation would have caught at each stage's detection rate,
    i.e. ``sum(detected) / sum(completed_i * detect_prob_i)``."""

    def __init__(
        self,
        forecasters: dict[str, Forecaster],
        stages: list[str],
        detect_probs: dict[str, float] | None = None,
        forecast_steps: int = 4,
        alpha: float = 0.3,
        drift: CusumDetector | None = None,
    ):
        self.forecasters = forecasters
        self.stage_rates = {name: EwmaForecaster(alpha) for name in stages}
        # An EWMA forecaster already is the rate estimate: share it rather than compute it twice.
        self.rate_estimators = {
            name: f if isinstance(f, EwmaForecaster) and f.alpha == alpha else EwmaForecaster(alpha)
            for name, f in forecasters.items()
        }
        self.detect_probs = detect_probs or {}
        self.forecast_steps = forecast_steps
        self.drift = drift or CusumDetector()

    @classmethod
    def for_scenario(
        cls,
        scenario: Scenario,
        interval: float,
        forecaster: str = "ewma",
        forecast_steps: int = 4,
        alpha: float = 0.3,
        training_seed: int = 10_000,
    ) -> StandardAnalyzer:
        """``forecaster``: "ewma", or "holt_winters" (trained on 4 load cycles simulated from the
        scenario with ``training_seed``, a seed kept apart from training and evaluation seeds)."""
        detect = {n: s.validation.detect_prob for n, s in scenario.stages.items() if s.validation}
        if forecaster == "ewma":
            forecasters: dict[str, Forecaster] = {name: EwmaForecaster(alpha) for name in scenario.sources}
        elif forecaster == "holt_winters":
            m = season_length_of(scenario, interval)
            if m is None:
                raise ValueError(
                    f"forecaster 'holt_winters' needs a periodic load; scenario {scenario.name!r} has no "
                    "diurnal or periodic rate profile (use 'ewma')"
                )
            traces = simulated_rates(scenario, interval, 4 * m * interval, training_seed)
            forecasters = {name: HoltWintersForecaster(fit_holt_winters(y, m)) for name, y in traces.items()}
        else:
            raise ValueError(f"unknown forecaster {forecaster!r}; expected 'ewma' or 'holt_winters'")
        return cls(forecasters, list(scenario.stages), detect, forecast_steps, alpha)

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
