"""Fitting analyzers on the scenario's load: the Sim side of :mod:`adaptflow.agents.analyzers`.

A fitted forecaster (Holt-Winters, autoregressive) learns from one training series per source:

* a ``series`` source (a recorded load): the training part of its data
  (:func:`adaptflow.scenario.series.workload_rates` with ``"train"``), one rate per decision
  interval at nominal speed and scale, with the Poisson noise of counting arrivals over an
  interval drawn on top (what the forecaster sees in an episode), placed on the series'
  calendar so that the fitted season has the calendar's phase;
* any other source: arrivals simulated from the scenario, four load cycles (or
  :data:`NO_SEASON_INTERVALS` intervals without one) with a seed kept apart from training and
  evaluation seeds, starting at phase 0 at t=0.

That takes up to seconds, so it is done once per (forecaster, scenario, decision interval, seed)
in a process (:func:`fitted_models` caches the fitted models) and its result travels as data: a
trained model's sidecar and an export's ``planner.json`` carry ``StandardAnalyzer.to_dict()``,
and whoever runs the model loads it (:func:`adaptflow.agents.analyzers.ready_analyzer`) instead
of coming here.

A load with no cycle (no periodic profile, no season found in a user's series) gives
Holt-Winters nothing to learn a season from: it is fitted without one, which is simple
exponential smoothing (a flat forecast, as EWMA's, with a fitted smoothing), and a warning says
so. The same holds for every planner that asks for Holt-Winters, rule or learned, so a baseline
and a learned planner see the same forecaster on the same scenario.

Besides ``agents/sim.py``, this is the only module of :mod:`adaptflow.agents` that imports the
simulator; a deployed planner never imports it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptflow.scenario import Scenario, load_scenario
from adaptflow.scenario.series import workload_rates
from adaptflow.simulator import Simulation

from .analyzers import (
    FIT_PART,
    FORECASTERS,
    AutoregressiveModel,
    HoltWintersModel,
    StandardAnalyzer,
    analyzer_options,
    calendar_phase,
    fit_autoregressive,
    fit_holt_winters,
    fit_key,
    fit_level_only,
    ready_analyzer,
    season_lengths,
)

log = logging.getLogger(__name__)

TRAINING_SEED = 10_000
"""The seed of the simulated load cycles a forecaster is fitted on: apart from training seeds'
usual range and from evaluation seeds (>= 1,000,000)."""

NO_SEASON_INTERVALS = 480
"""Decision intervals simulated to fit a forecaster on a load with no cycle: a level and how
fast it moves to learn, not a season."""

_CACHE_SIZE = 32
_models: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
_training: OrderedDict[tuple, dict[str, TrainingSeries]] = OrderedDict()


@dataclass(frozen=True)
class TrainingSeries:
    """One source's training data: a rate per decision interval and where it sits in its season.

    ``start_phase``: the phase of ``rates[0]`` (0 for simulated load, which starts at t=0).
    ``calendar_step``: calendar seconds per interval of a recorded series (None when simulated):
    a model fitted with it takes its phase from the snapshot's calendar."""

    rates: np.ndarray
    season_length: int | None
    start_phase: int = 0
    calendar_step: float | None = None


def simulated_episode(
    scenario: Scenario, interval: float, duration: float, seed: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Arrival rate per source per interval over ``duration`` simulated seconds, and the
    workload's calendar at each decision time (``steps + 1`` values, NaN without one).
    Arrival streams do not depend on the pool, so the scenario runs as is."""
    spec = load_scenario(scenario, horizon=duration)
    sim = Simulation(spec, rng=np.random.default_rng(seed))
    steps = int(duration // interval)
    out = {name: np.empty(steps) for name in sim.sources}
    calendar = np.empty(steps + 1)
    calendar[0] = sim.calendar(0.0)
    previous = {name: 0 for name in sim.sources}
    for k in range(steps):
        sim.run((k + 1) * interval)
        calendar[k + 1] = sim.calendar((k + 1) * interval)
        for name, src in sim.sources.items():
            out[name][k] = (src.arrived - previous[name]) / interval
            previous[name] = src.arrived
    return out, calendar


def simulated_rates(scenario: Scenario, interval: float, duration: float, seed: int) -> dict[str, np.ndarray]:
    """Arrival rate per source per interval over ``duration`` simulated seconds: training data
    for forecasters (see :func:`simulated_episode`)."""
    return simulated_episode(scenario, interval, duration, seed)[0]


def training_series(scenario: Scenario, interval: float, seed: int = TRAINING_SEED) -> dict[str, TrainingSeries]:
    """Each source's training data (see the module docstring); cached per (scenario, interval,
    seed), so the Holt-Winters and autoregressive fits of one scenario share it."""
    key = (fit_key(scenario, interval), seed)
    if key in _training:
        _training.move_to_end(key)
        return _training[key]
    seasons = season_lengths(scenario, interval)
    recorded = workload_rates(scenario, interval, FIT_PART) or {}
    out: dict[str, TrainingSeries] = {}
    for index, (name, series) in enumerate(recorded.items()):
        m = seasons[name]
        rng = np.random.default_rng([seed, index])  # a stream per source: one's noise never moves another's
        counted = rng.poisson(series.rates * interval) / interval
        phase = calendar_phase(series.calendar_start, m, series.calendar_step) if m else 0
        out[name] = TrainingSeries(counted, m, phase, series.calendar_step)
    simulated = [name for name in scenario.sources if name not in recorded]
    if simulated:
        cycle = max((m for n in simulated if (m := seasons[n]) is not None), default=None)
        duration = (4 * cycle if cycle else NO_SEASON_INTERVALS) * interval
        traces = simulated_rates(scenario, interval, duration, seed)
        out.update({name: TrainingSeries(traces[name], seasons[name]) for name in simulated})
    _remember(_training, key, out)
    return out


def _remember(cache: OrderedDict, key: tuple, value: Any) -> None:
    cache[key] = value
    if len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


def _holt_winters(scenario: Scenario, source: str, data: TrainingSeries) -> HoltWintersModel:
    """Holt-Winters with the source's season; without one (or with under two seasons of data),
    simple exponential smoothing, with a warning: the one rule for every planner."""
    m = data.season_length
    usable = len(data.rates) - (-data.start_phase) % m if m else 0
    if m is not None and usable >= 2 * m:
        return fit_holt_winters(data.rates, m, data.start_phase, data.calendar_step)
    why = (
        f"its training data has {usable} intervals, under two load cycles of {m}"
        if m
        else "it has no load cycle at a known phase (no periodic rate profile, a cycle whose phase each episode "
        "draws, or no season in its series)"
    )
    log.warning(
        "forecaster 'holt_winters' on source %r of %r: %s; fitted without a season (simple exponential "
        "smoothing: a flat forecast, as EWMA's, with a fitted smoothing)",
        source,
        scenario.name,
        why,
    )
    return fit_level_only(data.rates)


def _autoregressive(scenario: Scenario, source: str, data: TrainingSeries) -> AutoregressiveModel:
    return fit_autoregressive(data.rates, data.season_length, data.start_phase, data.calendar_step)


_FITS: dict[str, Callable[[Scenario, str, TrainingSeries], Any]] = {
    "holt_winters": _holt_winters,
    "autoregressive": _autoregressive,
}


def fitted_models(
    forecaster: str, scenario: Scenario, interval: float, training_seed: int = TRAINING_SEED
) -> dict[str, Any]:
    """One fitted model per source for ``forecaster`` ("holt_winters" or "autoregressive"),
    trained on :func:`training_series`; cached per (forecaster, scenario, interval, seed), so
    a process fits each once."""
    if forecaster not in _FITS:
        raise ValueError(f"forecaster {forecaster!r} is not fitted; expected one of {', '.join(map(repr, _FITS))}")
    key = (forecaster, fit_key(scenario, interval), training_seed)
    if key in _models:
        _models.move_to_end(key)
        return _models[key]
    fit = _FITS[forecaster]
    models = {
        name: fit(scenario, name, data) for name, data in training_series(scenario, interval, training_seed).items()
    }
    _remember(_models, key, models)
    return models


def holt_winters_models(
    scenario: Scenario, interval: float, training_seed: int = TRAINING_SEED
) -> dict[str, HoltWintersModel]:
    """One Holt-Winters model per source (see :func:`fitted_models`)."""
    return fitted_models("holt_winters", scenario, interval, training_seed)


def autoregressive_models(
    scenario: Scenario, interval: float, training_seed: int = TRAINING_SEED
) -> dict[str, AutoregressiveModel]:
    """One autoregressive model per source (see :func:`fitted_models`)."""
    return fitted_models("autoregressive", scenario, interval, training_seed)


def fit_analyzer(
    scenario: Scenario,
    interval: float,
    forecaster: str = "ewma",
    forecast_steps: int = 4,
    alpha: float = 0.3,
    training_seed: int = TRAINING_SEED,
) -> StandardAnalyzer:
    """A fresh analyzer for ``scenario`` with ``forecaster`` (one of
    :data:`~adaptflow.agents.analyzers.FORECASTERS`), fitted on the scenario's load when it is
    not "ewma" (once per process and scenario; every call returns its own analyzer, sharing no
    state with another)."""
    if forecaster not in FORECASTERS:
        raise ValueError(f"unknown forecaster {forecaster!r}; expected one of {', '.join(map(repr, FORECASTERS))}")
    models = None if forecaster == "ewma" else fitted_models(forecaster, scenario, interval, training_seed)
    return StandardAnalyzer.for_scenario(scenario, interval, forecaster, forecast_steps, alpha, models)


def analyzer_for(planner: object, scenario: Scenario, interval: float, forecaster: str = "ewma") -> StandardAnalyzer:
    """The analyzer ``planner`` runs with on ``scenario``: the fitted one it carries (a learned
    planner's sidecar), else one fitted here with the options it names (a rule's ``forecaster``).
    A learned planner that should carry a fitted analyzer but does not (a sidecar older than
    saved analyzers) is refitted, with a warning."""
    ready = ready_analyzer(planner, scenario, interval, forecaster)
    if ready is not None:
        return ready
    options = analyzer_options(planner, forecaster)
    if getattr(planner, "analyzer_options", None):
        log.warning(
            "%s carries no fitted analyzer for %r at %g s; fitting %s on the scenario's load (re-save or re-export "
            "the model to carry it)",
            type(planner).__name__,
            scenario.name,
            interval,
            options["forecaster"],
        )
    return fit_analyzer(scenario, interval, **options)
