"""How good are the analyzers' arrival-rate forecasts? Mean absolute error per lookahead.

Every forecaster kind (EWMA, Holt-Winters, autoregressive) is fitted as an env fits it (on the
training part of a recorded series, or on simulated load cycles with the training seed:
:func:`adaptflow.agents.fitting.fit_analyzer`), then filtered over held-out episodes exactly as
it runs inside an env: one observation per decision interval, the phase from the workload's
calendar when it has one. Its forecast ``h`` intervals ahead of the total arrival rate is
compared with the rate actually observed then. Held out: episodes whose windows come from the
``part`` of a series scenario ("test" by default), or other seeds of a synthetic one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from adaptflow.agents.analyzers import FORECASTERS, Forecaster
from adaptflow.agents.fitting import TRAINING_SEED, fit_analyzer, simulated_episode
from adaptflow.scenario import Scenario, load_scenario
from adaptflow.scenario.series import Part


def forecast_errors(
    scenario: str | Path | Scenario = "etl_diurnal",
    interval: float = 30.0,
    lookahead: int = 4,
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5),
    training_seed: int = TRAINING_SEED,
    part: Part = "test",
) -> pd.DataFrame:
    """MAE (items/s) of each forecaster kind's forecasts, per lookahead 1..``lookahead``,
    averaged over the episodes of ``seeds`` (drawn from ``part`` for a series scenario)."""
    if not interval > 0:
        raise ValueError(f"interval must be > 0 seconds, got {interval}")
    if lookahead < 1:
        raise ValueError(f"lookahead must be >= 1 interval, got {lookahead}")
    if not seeds:
        raise ValueError("need at least one evaluation seed")
    if training_seed in seeds:
        raise ValueError(f"training seed {training_seed} is also an evaluation seed; keep them apart")
    spec = load_scenario(scenario)
    held_out = spec.for_part(part)
    candidates = {
        kind: fit_analyzer(spec, interval, kind, forecast_steps=lookahead, training_seed=training_seed).forecasters
        for kind in FORECASTERS
    }
    rows = []
    for seed in seeds:
        rates, calendar = simulated_episode(held_out, interval, held_out.horizon, seed)
        for kind, forecasters in candidates.items():
            errors = _errors(forecasters, rates, calendar, lookahead)
            rows += [
                {"forecaster": kind, "seed": seed, "lookahead": h + 1, "mae": float(np.nanmean(errors[:, h]))}
                for h in range(lookahead)
            ]
    table = pd.DataFrame(rows)
    return table.groupby(["forecaster", "lookahead"], as_index=False)["mae"].mean()


def _errors(
    forecasters: dict[str, Forecaster], rates: dict[str, np.ndarray], calendar: np.ndarray, lookahead: int
) -> np.ndarray:
    """Absolute error of the total forecast (the sum of the sources') at each step and lookahead,
    NaN past the episode's end. The loop is the analyzer's: update, calendar, forecast."""
    for f in forecasters.values():
        f.reset()
        if f.wants_calendar:
            f.observe_calendar(float(calendar[0]))
    total = sum(rates.values())
    steps = len(total)
    errors = np.full((steps, lookahead), np.nan)
    for t in range(steps):
        forecast = np.zeros(lookahead)
        for name, f in forecasters.items():
            f.update(float(rates[name][t]))
            if f.wants_calendar:
                f.observe_calendar(float(calendar[t + 1]))
            forecast += f.forecast(lookahead)
        ahead = min(lookahead, steps - 1 - t)
        errors[t, :ahead] = np.abs(forecast[:ahead] - total[t + 1 : t + 1 + ahead])
    return errors
