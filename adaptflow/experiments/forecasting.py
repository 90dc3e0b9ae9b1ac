"""How good are the analyzers' arrival-rate forecasts? Mean absolute error per lookahead.

Each forecaster is filtered over held-out simulated episodes exactly as it runs inside an env
(one observation per decision interval); its forecast ``h`` intervals ahead is compared with the
rate actually observed then."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from adaptflow.agents.analyzers import (
    EwmaForecaster,
    Forecaster,
    HoltWintersForecaster,
    fit_holt_winters,
    season_length_of,
)
from adaptflow.agents.fitting import simulated_rates
from adaptflow.scenario import Scenario, load_scenario


def forecast_errors(
    scenario: str | Path | Scenario = "etl_diurnal",
    interval: float = 30.0,
    lookahead: int = 4,
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5),
    training_seed: int = 10_000,
) -> pd.DataFrame:
    """MAE (items/s) of EWMA and Holt-Winters forecasts, per lookahead 1..``lookahead``,
    averaged over the episodes of ``seeds`` (Holt-Winters is trained on ``training_seed``)."""
    if not interval > 0:
        raise ValueError(f"interval must be > 0 seconds, got {interval}")
    if lookahead < 1:
        raise ValueError(f"lookahead must be >= 1 interval, got {lookahead}")
    if not seeds:
        raise ValueError("need at least one evaluation seed")
    if training_seed in seeds:
        raise ValueError(f"training seed {training_seed} is also an evaluation seed; keep them apart")
    spec = load_scenario(scenario)
    m = season_length_of(spec, interval)
    candidates: dict[str, Forecaster] = {"ewma": EwmaForecaster(0.3)}
    if m is not None:
        training = simulated_rates(spec, interval, 4 * m * interval, training_seed)
        (series,) = training.values() if len(training) == 1 else (sum(training.values()),)
        candidates["holt_winters"] = HoltWintersForecaster(fit_holt_winters(series, m))
    rows = []
    for seed in seeds:
        rates = simulated_rates(spec, interval, spec.horizon, seed)
        y = sum(rates.values())
        for name, f in candidates.items():
            f.reset()
            errors = np.full((len(y), lookahead), np.nan)
            for t in range(len(y)):
                f.update(float(y[t]))
                for h, value in enumerate(f.forecast(lookahead), start=1):
                    if t + h < len(y):
                        errors[t, h - 1] = abs(value - y[t + h])
            for h in range(lookahead):
                rows.append(
                    {"forecaster": name, "seed": seed, "lookahead": h + 1, "mae": float(np.nanmean(errors[:, h]))}
                )
    table = pd.DataFrame(rows)
    return table.groupby(["forecaster", "lookahead"], as_index=False)["mae"].mean()
