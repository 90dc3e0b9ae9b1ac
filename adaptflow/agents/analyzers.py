"""Analyzers: arrival-rate estimation and forecasting, and drift detection of the bad-item rate.

Forecasters see one number per decision interval (the arrival rate observed in it) and forecast
the next ``k`` intervals:

* :class:`EwmaForecaster`: an exponentially weighted moving average, forecast flat. Cheap, no
  training, always a step behind a trend.
* :class:`HoltWintersForecaster`: additive Holt-Winters (level + season). Its smoothing
  parameters and its seasonal profile are *trained* with statsmodels on arrival traces simulated
  from the scenario (:func:`fit_holt_winters`, fed by :mod:`adaptflow.agents.fitting`); in an
  episode it is filtered online in O(1) per step, so it costs no more than EWMA at run time.

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
from typing import Any

import numpy as np

from adaptflow.scenario import Scenario

from .interfaces import Analyzer
from .types import Insights, MetricsSnapshot

ANALYZER_FORMAT = "adaptflow-analyzer/1"

log = logging.getLogger(__name__)


class AnalyzerNeedsFitting(ValueError):
    """A Holt-Winters analyzer was asked for without fitted models: fitting simulates the
    scenario, which this side of the house does not do (see :mod:`adaptflow.agents.fitting`)."""


def _float_or_none(x: float) -> float | None:
    """NaN as None: strict JSON has no NaN."""
    return None if math.isnan(x) else float(x)


def _none_as_nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


class Forecaster:
    kind = "base"

    def reset(self) -> None: ...

    def update(self, rate: float) -> None: ...

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
    raise ValueError(f"unknown forecaster kind {kind!r}; expected 'ewma' or 'holt_winters'")


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


@dataclass
class HoltWintersModel:
    """Fitted additive Holt-Winters: smoothing of level and season, and the state at phase 0."""

    alpha: float
    gamma: float
    level: float
    season: list[float]  # season[i]: seasonal effect at phase i (intervals since t=0, mod m)

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "gamma": self.gamma, "level": self.level, "season": list(self.season)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HoltWintersModel:
        return cls(float(data["alpha"]), float(data["gamma"]), float(data["level"]), [float(x) for x in data["season"]])


class HoltWintersForecaster(Forecaster):
    """Online additive Holt-Winters filter around a model trained by :func:`fit_holt_winters`:
    ``level_t = a (y_t - s_{t-m}) + (1-a) level_{t-1}``, ``s_t = g (y_t - level_t) + (1-g) s_{t-m}``,
    forecast ``level_t + s_{t+h-m}``. (No trend term: a load cycle's level does not drift.)"""

    kind = "holt_winters"

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
        """The forecaster's kind: "ewma" or "holt_winters" (the option that built it)."""
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
        models: dict[str, HoltWintersModel] | None = None,
    ) -> StandardAnalyzer:
        """``forecaster``: "ewma", or "holt_winters" with ``models``, one fitted model per source.
        Fitting them simulates the scenario: :func:`adaptflow.agents.fitting.fit_analyzer` does
        it (and caches it); a trained model's sidecar carries the result."""
        detect = {n: s.validation.detect_prob for n, s in scenario.stages.items() if s.validation}
        if forecaster == "ewma":
            forecasters: dict[str, Forecaster] = {name: EwmaForecaster(alpha) for name in scenario.sources}
        elif forecaster == "holt_winters":
            if models is None:
                raise AnalyzerNeedsFitting(
                    f"a Holt-Winters analyzer for {scenario.name!r} needs fitted models: use "
                    "adaptflow.agents.fitting.fit_analyzer, or load a saved analyzer (StandardAnalyzer.from_dict)"
                )
            missing = sorted(set(scenario.sources) - set(models))
            if missing:
                raise ValueError(f"no fitted Holt-Winters model for sources {missing} of {scenario.name!r}")
            forecasters = {name: HoltWintersForecaster(models[name]) for name in scenario.sources}
        else:
            raise ValueError(f"unknown forecaster {forecaster!r}; expected 'ewma' or 'holt_winters'")
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


def fit_key(scenario: Scenario, interval: float) -> str:
    """What a fitted analyzer depends on, as a short digest: the scenario (all of it but the
    horizon, which a fit does not use) and the decision interval."""
    data = scenario.model_dump(mode="json", by_alias=True)
    data.pop("horizon", None)
    text = json.dumps({"scenario": data, "interval": float(interval)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    if analyzer.fitted_on != fit_key(scenario, interval):
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
    or an EWMA one built from the scenario. None when a Holt-Winters forecaster must be fitted
    (:func:`adaptflow.agents.fitting.analyzer_for` does that on the Sim side)."""
    saved = saved_analyzer(planner, scenario, interval, forecaster)
    if saved is not None:
        return saved
    options = analyzer_options(planner, forecaster)
    if options["forecaster"] != "ewma":
        return None
    return StandardAnalyzer.for_scenario(scenario, interval, **options)
