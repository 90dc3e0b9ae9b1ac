"""Fitting analyzers by simulation: the Sim side of :mod:`adaptflow.agents.analyzers`.

A Holt-Winters forecaster is trained on arrival traces simulated from the scenario (four load
cycles with a seed kept apart from training and evaluation seeds). That takes seconds, so it is
done once per (scenario, decision interval, options) in a process (:func:`fit_analyzer` caches
the fitted models) and its result travels as data: a trained model's sidecar and an export's
``planner.json`` carry ``StandardAnalyzer.to_dict()``, and whoever runs the model loads it
(:func:`adaptflow.agents.analyzers.ready_analyzer`) instead of coming here.

Besides ``agents/sim.py``, this is the only module of :mod:`adaptflow.agents` that imports the
simulator; a deployed planner never imports it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np

from adaptflow.scenario import Scenario, load_scenario
from adaptflow.simulator import Simulation

from .analyzers import (
    HoltWintersModel,
    StandardAnalyzer,
    analyzer_options,
    fit_holt_winters,
    fit_key,
    ready_analyzer,
    season_length_of,
)

log = logging.getLogger(__name__)

TRAINING_SEED = 10_000
"""The seed of the simulated load cycles a forecaster is fitted on: apart from training seeds'
usual range and from evaluation seeds (>= 1,000,000)."""

_CACHE_SIZE = 32
_models: OrderedDict[tuple, dict[str, HoltWintersModel]] = OrderedDict()


def simulated_rates(scenario: Scenario, interval: float, duration: float, seed: int) -> dict[str, np.ndarray]:
    """Arrival rate per source per interval over ``duration`` simulated seconds: training data
    for forecasters. Arrival streams do not depend on the pool, so the scenario runs as is."""
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


def holt_winters_models(
    scenario: Scenario, interval: float, training_seed: int = TRAINING_SEED
) -> dict[str, HoltWintersModel]:
    """One Holt-Winters model per source, trained on 4 load cycles simulated with
    ``training_seed``; cached per (scenario, interval, seed), so a process fits each once."""
    key = (fit_key(scenario, interval), training_seed)
    if key in _models:
        _models.move_to_end(key)
        return _models[key]
    m = season_length_of(scenario, interval)
    if m is None:
        raise ValueError(
            f"forecaster 'holt_winters' needs a periodic load; scenario {scenario.name!r} has no "
            "diurnal or periodic rate profile (use 'ewma')"
        )
    traces = simulated_rates(scenario, interval, 4 * m * interval, training_seed)
    models = {name: fit_holt_winters(y, m) for name, y in traces.items()}
    _models[key] = models
    if len(_models) > _CACHE_SIZE:
        _models.popitem(last=False)
    return models


def fit_analyzer(
    scenario: Scenario,
    interval: float,
    forecaster: str = "ewma",
    forecast_steps: int = 4,
    alpha: float = 0.3,
    training_seed: int = TRAINING_SEED,
) -> StandardAnalyzer:
    """A fresh analyzer for ``scenario`` (what ``StandardAnalyzer.for_scenario`` was before
    fitting moved here): "ewma", or "holt_winters" fitted by simulation (once per process and
    scenario; every call returns its own analyzer, sharing no state with another)."""
    models = holt_winters_models(scenario, interval, training_seed) if forecaster == "holt_winters" else None
    return StandardAnalyzer.for_scenario(scenario, interval, forecaster, forecast_steps, alpha, models)


def analyzer_for(planner: object, scenario: Scenario, interval: float, forecaster: str = "ewma") -> StandardAnalyzer:
    """The analyzer ``planner`` runs with on ``scenario``: the fitted one it carries (a learned
    planner's sidecar), else one fitted here with the options it names (a rule's ``forecaster``).
    A learned planner that should carry a Holt-Winters analyzer but does not (a sidecar older than
    saved analyzers) is refitted, with a warning."""
    ready = ready_analyzer(planner, scenario, interval, forecaster)
    if ready is not None:
        return ready
    options = analyzer_options(planner, forecaster)
    if getattr(planner, "analyzer_options", None):
        log.warning(
            "%s carries no fitted analyzer for %r at %g s; fitting %s by simulation (re-save or re-export the "
            "model to carry it)",
            type(planner).__name__,
            scenario.name,
            interval,
            options["forecaster"],
        )
    return fit_analyzer(scenario, interval, **options)
