"""Checking a calibration: simulate the calibrated scenario on the recorded arrivals, with the
pools held at their recorded sizes, and compare what the simulation measures with what the
recording measured, per stage (mean wait, throughput) and end to end (p95 latency, throughput).

The runtime never imports the simulator (docs/architecture.md), so the simulation is handed in:
``simulation(scenario, seed)`` builds one (``adaptflow.simulator.Simulation`` itself fits:
``validate_calibration(dir, path, Simulation)``, a binding for the experiments room or the CLI).
This module drives it: it runs to each recorded pool change, applies it, and reads the summary.

It checks twice when the calibrated trace carries item sizes: with each size at its own arrival
(the recording replayed) and with the same sizes shuffled among the arrivals. Why the second:
an item's size is fitted from its own attempts, so it also holds the load of its moment (on the
example app at 8 uploads a second the sizes' part not explained by the rows followed the
arrivals of the seconds around (correlation 0.28) and ran on from item to item (0.32 with the
next); docs/deploy.md). A run on arrivals the recording never saw has no such sizes: compare-app
draws them from the trace. The shuffled check is what the calibration predicts for such a run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from scipy import stats

from adaptflow.scenario import Scenario, load_scenario, parse_scenario
from adaptflow.scenario.schema import load_trace

from . import system
from .recording import Recording, read_recording
from .timeline import Timeline, build_timeline

PoolChanges = list[tuple[float, str, int]]


class Simulating(Protocol):
    """What validation asks of a simulation (``adaptflow.simulator.Simulation`` has it)."""

    def run(self, until: float | None = None) -> None: ...

    def set_workers(self, stage: str, n: int) -> int: ...

    def summary(self) -> dict[str, Any]: ...

    def counters(self) -> Any:
        """The cumulative counters (``adaptflow.simulator.metrics.Counters``): ``stages[name]``
        holds what a summary does not, its backlogged turnarounds (fit-growth's settling)."""

    service_spans: list[tuple[str, float, float]] | None
    """Set to a list before running: each service on a host as (stage, start, end) (:mod:`.sharing`)."""


MakeSimulation = Callable[[Scenario, int], Simulating]
"""``simulation(scenario, seed)``: a fresh simulation of ``scenario`` drawing from ``seed``."""


def recorded_metrics(recording: Recording, timeline: Timeline) -> dict[str, dict[str, float]]:
    """What the recording measured, keyed like the simulator's summary."""
    duration = recording.duration
    out: dict[str, dict[str, float]] = {}
    for name, obs in timeline.stages.items():
        if obs.attempts:
            mean_wait = float(np.mean(obs.waits)) if obs.waits else float("nan")
            out[name] = {"mean_wait": mean_wait, "throughput": obs.completed / duration}
    done = system.latencies(timeline)
    out["end_to_end"] = {
        "p95_latency": float(np.percentile(done, 95)) if len(done) else float("nan"),
        "throughput": len(done) / duration,
    }
    return out


BATCHES = 10
"""Batches of a recorded figure's interval (:func:`batch_interval`): ten of them, each a tenth of
the recording, are long beside the few seconds a burst's waits stay correlated on the example
app, and leave the t interval nine degrees of freedom."""
MIN_PER_BATCH = 5


def batch_interval(
    values: np.ndarray, statistic: Callable[[np.ndarray], float], batches: int = BATCHES, level: float = 0.95
) -> tuple[float, float]:
    """A ``level`` confidence interval of ``statistic`` over ``values`` (in time order) by batch
    means: the values cut into ``batches`` consecutive batches, the statistic of each, and the
    whole's statistic plus or minus Student's t times their standard error (NaN with fewer than
    :data:`MIN_PER_BATCH` values a batch). Why batches: a recording's waits come in bursts, each
    wait much like the one before, so an interval that took them as independent draws would be
    several times too narrow (on an AR(1) series at 0.9, a quarter of the width it needs,
    1/sqrt(19)); batches long beside the bursts are nearly independent. For a quantile the
    batches' quantiles give the standard error (Heidelberger and Lewis's batching of quantiles)."""
    values = np.asarray(values, dtype=float)
    if len(values) < batches * MIN_PER_BATCH:
        return float("nan"), float("nan")
    each = np.array([statistic(part) for part in np.array_split(values, batches)])
    half = float(stats.t.ppf(0.5 + level / 2, batches - 1) * each.std(ddof=1) / np.sqrt(batches))
    whole = float(statistic(values))
    return whole - half, whole + half


def recorded_intervals(timeline: Timeline) -> dict[str, dict[str, tuple[float, float]]]:
    """The 95 % interval of each recorded figure :func:`recorded_metrics` gives that is drawn
    from the recording's noise (each stage's mean wait, in the order the waits began, and the
    p95 latency, in the order the items arrived); the throughputs follow the replayed arrivals
    and have none."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for name, obs in timeline.stages.items():
        if obs.waits:
            order = np.argsort(np.add(obs.enters, obs.waits), kind="stable")
            out[name] = {"mean_wait": batch_interval(np.asarray(obs.waits)[order], np.mean)}
    latencies = system.latencies(timeline)  # in the order the items arrived
    out["end_to_end"] = {"p95_latency": batch_interval(latencies, lambda part: np.percentile(part, 95))}
    return out


def validation_scenario(
    recording: Recording, timeline: Timeline, scenario: Scenario, folder: Path, shuffled: bool = False
) -> Scenario:
    """``scenario`` on the recorded arrivals (a trace per source, written to ``folder``) over the
    recording's length, each pool starting at its first recorded size and free to take every
    recorded size (the changes are applied by the caller). A source that is a trace already is
    kept: calibrate's trace is the recorded arrivals, with the item sizes it fitted; ``shuffled``
    gives its items those sizes in a fixed random order (the module docstring says why)."""
    data = scenario.model_dump(mode="json", by_alias=True, exclude_none=False)
    data["horizon"] = recording.duration
    for source, spec in data["sources"].items():
        if spec["process"] == "trace":
            if shuffled:
                data["sources"][source] = _shuffled_trace(spec, scenario.sources[source], folder / f"{source}.csv")
            continue
        csv = folder / f"{source}.csv"
        times = timeline.arrivals(source)
        csv.write_text("timestamp\n" + "".join(f"{max(float(t), 0.0)!r}\n" for t in times))
        data["sources"][source] = {"process": "trace", "file": str(csv), "to": spec["to"]}
    for stage, spec in data["stages"].items():
        sizes = [n for _, n in system.pool_series(recording, stage)]
        if sizes:
            spec["workers"].update(initial=sizes[0], min=0, max=max(max(sizes), 1))
    return parse_scenario(data, label=f"{scenario.name} (validation)")


def _shuffled_trace(spec: dict[str, Any], source: Any, csv: Path) -> dict[str, Any]:
    """The trace source ``spec`` with its sizes in a fixed random order (written to ``csv``);
    unchanged when it has no sizes."""
    times, sizes = load_trace(Path(source.file), source.time_column, source.size_column)
    if sizes is None:
        return spec
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(sizes))
    pd.DataFrame({"timestamp": times, "size": np.asarray(sizes)[order]}).to_csv(csv, index=False)
    return spec | {"file": str(csv), "time_column": "timestamp", "size_column": "size"}


SHUFFLE_SEED = 20261203
"""One fixed order of the shuffled sizes: the same check prints the same figures."""


def held(simulation: MakeSimulation, scenario: Scenario, changes: PoolChanges, seed: int) -> dict[str, Any]:
    """One simulation of ``scenario`` to its horizon, each pool change applied at its time."""
    sim = simulation(scenario, seed)
    for t, stage, n in changes:
        if t < scenario.horizon:
            sim.run(t)
            sim.set_workers(stage, n)
    sim.run(scenario.horizon)
    return sim.summary()


def validate_calibration(
    recording_dir: str | Path, scenario_path: str | Path, simulation: MakeSimulation, seeds: int = 3
) -> pd.DataFrame:
    """Relative errors of the calibrated scenario against the recording: one row per stage and
    metric (and ``end_to_end``), with the recorded and the simulated value (mean and standard
    deviation over ``seeds`` simulations), ``error`` = (simulated - recorded) / recorded and
    ``rel_error`` its size."""
    recording = read_recording(recording_dir)
    timeline = build_timeline(recording)
    scenario = load_scenario(scenario_path)
    recorded = recorded_metrics(recording, timeline)
    intervals = recorded_intervals(timeline)
    changes = system.pool_changes(recording, list(scenario.stages))
    with tempfile.TemporaryDirectory(prefix="adaptflow-validate-") as folder:
        spec = validation_scenario(recording, timeline, scenario, Path(folder))
        summaries = [held(simulation, spec, changes, seed) for seed in range(seeds)]
        other = validation_scenario(recording, timeline, scenario, Path(folder), shuffled=True)
        # no trace with sizes to shuffle: the same scenario, so the same check
        shuffled = summaries if other == spec else [held(simulation, other, changes, seed) for seed in range(seeds)]
    rows = []
    for scope, metrics in recorded.items():
        if scope == "end_to_end" or scope in scenario.stages:
            for metric, value in metrics.items():
                row, other = _row(scope, metric, value, summaries), _row(scope, metric, value, shuffled)
                low, high = intervals.get(scope, {}).get(metric, (float("nan"), float("nan")))
                shuffled_row = {"shuffled": other["simulated"], "error_shuffled": other["error"]}
                interval = {"recorded_low": low, "recorded_high": high}
                rows.append(row | interval | shuffled_row | {"rel_error_shuffled": other["rel_error"]})
    return pd.DataFrame(rows, columns=COLUMNS)


COLUMNS = [
    "scope", "metric", "recorded", "simulated", "simulated_sd", "error", "rel_error",
    "recorded_low", "recorded_high", "shuffled", "error_shuffled", "rel_error_shuffled",
]  # fmt: skip
"""``simulated`` is the mean over the seeds and ``simulated_sd`` their standard deviation (the
simulation's own noise: a relative error within a few of it is noise, not a wrong fit);
``recorded_low`` and ``recorded_high``, the recorded figure's 95 % interval
(:func:`recorded_intervals`: the recording is one draw too, and a mean wait of a few dozen
backlogged waits can be 15 % off its own expectation), NaN where it has none;
``error`` is signed (+: the simulation waited longer or did more), ``rel_error`` its size;
``shuffled`` and its errors, the same with the trace's item sizes shuffled among its arrivals
(the module docstring)."""


def _row(scope: str, metric: str, recorded: float, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    simulated = np.asarray([_read(s, scope, metric) for s in summaries], dtype=float)
    seen = simulated[np.isfinite(simulated)]
    mean = float(seen.mean()) if len(seen) else float("nan")
    sd = float(seen.std(ddof=1)) if len(seen) > 1 else float("nan")
    error = (mean - recorded) / abs(recorded) if recorded else float("nan")
    return {"scope": scope, "metric": metric, "recorded": recorded, "simulated": mean, "simulated_sd": sd,
            "error": error, "rel_error": abs(error)}  # fmt: skip


def _read(summary: dict[str, Any], scope: str, metric: str) -> float:
    part = summary["end_to_end"] if scope == "end_to_end" else summary["stages"][scope]
    value = part.get(metric)
    return float("nan") if value is None else float(value)
