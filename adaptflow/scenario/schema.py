"""Scenario schema: the YAML a user writes, validated completely before a simulation starts.

A scenario declares arrival sources, stages (worker pools with a service-time distribution),
the routing between them, the SLA deadline, the horizon and the seed. The schema is documented
for users in ``configs/scenarios/README.md``; keep the two in step.

Why so strict: a typo in a scenario (``capacty:``) that silently falls back to a default makes
a week of experiments meaningless. Every model forbids unknown keys, and every error names the
field, the value and what was expected (see :func:`adaptflow.scenario.loading.format_validation_error`).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BeforeValidator, Discriminator, Field, Tag, ValidationInfo, field_validator, model_validator

from .base import Name, NonNegFloat, PositiveFloat, Probability, _Strict
from .profiles import Constant, ProbabilityProfile, RateProfile, grid_integral
from .routing import ATTRIBUTE_VALUES, FAN_OUTS, JOIN_AT_EXIT, ByAttribute, Exit, Fork, Route, Scatter, Split
from .series import DATASETS, DAY, NOISE_CLIP, Part, RawSeries, WindowRate, load_csv_series, load_dataset, window_rate

if TYPE_CHECKING:
    from .streams import Streams

# Sane bounds: far beyond any real workflow, and small enough that no arithmetic on them
# overflows (a worker pool's cost over a horizon, a gamma's shape 1/cv**2).
MAX_CV = 100.0
MAX_PRICE = 1e9
MAX_WORKERS = 100_000
MAX_HORIZON = 1e9  # seconds: about 32 years of simulated time
MAX_ITEMS = 20_000_000
"""Default bound on the arrivals one run or episode may ask for (about a minute of simulation);
checked against :meth:`Scenario.expected_arrivals` before any work starts."""
DRAWS_PER_ITEM = 100
"""Thinning candidates that cost about one simulated item (measured: 21 ns a candidate against
3.6 us an item of ``mmc``), so a narrow, high peak is bounded by the draws it makes."""
MAX_STEPS = 1_000_000
"""Bound on the decisions of an episode or the windows of a time series (``horizon / interval``)."""


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------
class Quality(_Strict):
    """Share of bad items a source emits, possibly drifting over time (a profile of probabilities)."""

    bad_rate: ProbabilityProfile = Field(default_factory=lambda: Constant(value=0.0))

    @field_validator("bad_rate")
    @classmethod
    def _at_most_one(cls, profile: Any) -> Any:
        if profile.peak() > 1:
            raise ValueError(f"bad_rate reaches {profile.peak()}; expected a probability <= 1")
        return profile


class _SourceBase(_Strict):
    to: Route
    quality: Quality = Field(default_factory=Quality)
    # the share of each job class among this source's items (the scenario's ``classes``)
    classes: dict[Name, Probability] | None = None

    @field_validator("classes")
    @classmethod
    def _shares_sum_to_one(cls, shares: dict[str, float] | None) -> dict[str, float] | None:
        if shares is not None:
            total = sum(shares.values())
            if not shares or abs(total - 1.0) > 1e-9:
                raise ValueError(f"class shares sum to {total:.12g}; expected 1 (within 1e-9)")
        return shares

    @field_validator("to")
    @classmethod
    def _not_exit(cls, route: Any) -> Any:
        if isinstance(route, Exit):
            raise ValueError("a source must route to a stage; got null")
        return route


class PoissonSource(_SourceBase):
    """Poisson arrivals; a time-varying ``rate`` profile is sampled exactly by thinning."""

    process: Literal["poisson"]
    rate: RateProfile

    @field_validator("rate")
    @classmethod
    def _some_load(cls, profile: Any) -> Any:
        if not profile.peak() > 0:
            raise ValueError("rate profile is zero everywhere; expected a peak rate > 0")
        return profile


def _list_as_tuple(value: Any) -> Any:
    """YAML and JSON write a pair as a list; strict mode wants a tuple (its items stay strict)."""
    return tuple(value) if isinstance(value, list) else value


class MMPPSource(_SourceBase):
    """Two-state Markov-modulated Poisson process: rate ``rates[s]`` while in state ``s``; the
    state is left at rate ``switch_rates[s]`` (mean sojourn ``1/switch_rates[s]`` seconds)."""

    process: Literal["mmpp"]
    rates: Annotated[tuple[NonNegFloat, NonNegFloat], BeforeValidator(_list_as_tuple)]
    switch_rates: Annotated[tuple[PositiveFloat, PositiveFloat], BeforeValidator(_list_as_tuple)]
    initial_state: Literal[0, 1] = 0

    @field_validator("rates")
    @classmethod
    def _some_load(cls, rates: tuple[float, float]) -> tuple[float, float]:
        if max(rates) <= 0:
            raise ValueError(f"rates {list(rates)} are both zero; expected at least one > 0")
        return rates


class TraceSource(_SourceBase):
    """Replay of a CSV of arrival timestamps (seconds, non-decreasing), with an optional
    ``size`` column that multiplies the item's service time, dispatch delay and turnaround at every
    stage (see :class:`Stage`)."""

    process: Literal["trace"]
    file: Path = Field(strict=False)  # a path is written as a string
    time_column: str = "timestamp"
    size_column: str = "size"

    @field_validator("file")
    @classmethod
    def _resolve_and_check(cls, path: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        if not path.is_absolute() and base is not None:
            path = Path(base) / path
        path = path.resolve()
        load_trace(path, info.data.get("time_column", "timestamp"), info.data.get("size_column", "size"))
        return path


def as_trace(source: dict[str, Any], file: str | Path) -> dict[str, Any]:
    """A source's YAML mapping replayed from the trace at ``file`` instead: what every source
    carries (where its items go, their quality, their classes) kept, its process replaced. Used
    wherever a run's own arrivals stand in for a scenario's sources."""
    kept = {key: value for key, value in source.items() if key in _SourceBase.model_fields}
    return {**kept, "process": "trace", "file": str(file)}


def load_trace(
    path: Path, time_column: str = "timestamp", size_column: str = "size"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read and check a trace: every problem is a ``ValueError`` that says what was expected."""
    import pandas as pd

    if not path.is_file():
        raise ValueError(f"trace file {str(path)!r} does not exist; expected a CSV of arrival timestamps")
    try:
        frame = pd.read_csv(path)
    except Exception as exc:  # pandas raises a zoo of parser errors
        raise ValueError(f"trace file {str(path)!r} is not a readable CSV: {exc}") from None
    if time_column not in frame.columns:
        raise ValueError(f"trace file {str(path)!r} has no column {time_column!r}; found {list(frame.columns)}")
    times = pd.to_numeric(frame[time_column], errors="coerce").to_numpy(dtype=float)
    if len(times) == 0:
        raise ValueError(f"trace file {str(path)!r} has no rows; expected at least one arrival")
    bad = np.flatnonzero(~np.isfinite(times) | (times < 0))
    if len(bad):
        row = int(bad[0])
        raise ValueError(
            f"trace file {str(path)!r} row {row + 1}: timestamp {frame[time_column].iloc[row]!r}; "
            "expected a number >= 0"
        )
    down = np.flatnonzero(np.diff(times) < 0)
    if len(down):
        row = int(down[0]) + 1
        raise ValueError(
            f"trace file {str(path)!r} is not sorted: row {row + 1} has timestamp {times[row]:g} "
            f"after {times[row - 1]:g}; expected non-decreasing timestamps"
        )
    sizes = None
    if size_column in frame.columns:
        sizes = pd.to_numeric(frame[size_column], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(sizes) | (sizes <= 0))
        if len(bad):
            row = int(bad[0])
            raise ValueError(
                f"trace file {str(path)!r} row {row + 1}: size {frame[size_column].iloc[row]!r}; expected a number > 0"
            )
    return times, sizes


# --------------------------------------------------------------------------------------------
# Series sources: a recorded load series as the arrival rate (see adaptflow.scenario.series)
# --------------------------------------------------------------------------------------------
Range = Annotated[tuple[PositiveFloat, PositiveFloat], BeforeValidator(_list_as_tuple)]


def _ordered(value: tuple[float, float] | None, name: str) -> None:
    if value is not None and value[0] > value[1]:
        raise ValueError(f"{name} is {list(value)}; expected [low, high] with low <= high")


class SeriesData(_Strict):
    """Where a series comes from: a shipped ``dataset`` (with ``column`` and ``stride``), or a
    CSV ``file`` with ``time_column`` and, for ``kind`` rate or level, ``value_column``; for
    ``kind: events`` each row is one event, counted per ``bin`` seconds."""

    dataset: Literal["alibaba2018", "azure_v2", "google2019"] | None = None
    column: str | None = None
    stride: Literal[10, 30, 300] = 300
    file: Path | None = Field(default=None, strict=False)  # a path is written as a string
    time_column: str = "timestamp"
    value_column: str | None = None
    kind: Literal["rate", "level", "events"] = "rate"
    bin: PositiveFloat = 60.0

    @field_validator("file")
    @classmethod
    def _resolve(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        base = (info.context or {}).get("base_dir")
        if path is not None and not path.is_absolute() and base is not None:
            path = Path(base) / path
        return None if path is None else path.resolve()

    @model_validator(mode="after")
    def _check(self) -> SeriesData:
        if (self.dataset is None) == (self.file is None):
            raise ValueError(
                "give either dataset (one of "
                + ", ".join(DATASETS)
                + ") or file (a CSV); got "
                + ("both" if self.dataset else "neither")
            )
        if self.file is not None and self.kind != "events" and self.value_column is None:
            raise ValueError(f"kind {self.kind!r} needs value_column (the CSV column with the {self.kind}); got none")
        self.load()  # every problem of the data itself, now rather than at the first episode
        return self

    def load(self) -> RawSeries:
        if self.dataset is not None:
            return load_dataset(self.dataset, self.column, self.stride)
        return load_csv_series(self.file, self.time_column, self.value_column, self.kind, self.bin)  # type: ignore[arg-type]


class Scaling(_Strict):
    """How series values become items/s, measured on the training part only (so that no
    evaluation data shapes the workload): its ``mean`` or its ``peak`` becomes the given rate,
    or its [min, max] maps linearly onto ``range``."""

    mean: PositiveFloat | None = None
    peak: PositiveFloat | None = None
    range: Annotated[tuple[NonNegFloat, PositiveFloat], BeforeValidator(_list_as_tuple)] | None = None

    @model_validator(mode="after")
    def _check(self) -> Scaling:
        given = [k for k in ("mean", "peak", "range") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of mean, peak or range (items/s); got {given or 'none'}")
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError(f"range is {list(self.range)}; expected [low, high] with low < high")
        return self

    def gain_offset(self, train: np.ndarray) -> tuple[float, float]:
        """``rate = gain * value + offset`` for values like ``train``."""
        if self.range is not None:
            lo, hi = float(train.min()), float(train.max())
            if not hi > lo:
                raise ValueError(f"the training part is constant ({lo:g}); expected a varying series for scale.range")
            gain = (self.range[1] - self.range[0]) / (hi - lo)
            return gain, self.range[0] - gain * lo
        reference = float(train.mean() if self.mean is not None else train.max())
        if not reference > 0:
            raise ValueError("the training part of the series is zero everywhere; expected some load")
        return float(self.mean if self.mean is not None else self.peak) / reference, 0.0  # type: ignore[operator]


class Splits(_Strict):
    """Shares of the series' time span for training, validation and test, in that time order."""

    train: Annotated[float, Field(gt=0, le=1)] = 0.6
    validation: Probability = 0.2
    test: Probability = 0.2

    @model_validator(mode="after")
    def _check(self) -> Splits:
        total = self.train + self.validation + self.test
        if abs(total - 1) > 1e-9:
            raise ValueError(f"train + validation + test = {total:g}; expected 1")
        return self

    def as_dict(self) -> dict[str, float]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


class Augment(_Strict):
    """Per-episode variation, each drawn uniformly per seed: ``rate_scale`` multiplies the rate,
    ``stretch`` makes the series pass faster (>1) or slower (<1), ``noise`` is the sigma of a
    mean-one lognormal factor per sample (clipped at 3 sigma)."""

    rate_scale: Range | None = None
    stretch: Range | None = None
    noise: Annotated[float, Field(ge=0, le=1)] = 0.0

    @model_validator(mode="after")
    def _check(self) -> Augment:
        _ordered(self.rate_scale, "rate_scale")
        _ordered(self.stretch, "stretch")
        return self


class Window(_Strict):
    """One episode's window: calendar ``start`` (seconds), and its draws of the augmentations.
    Drawn per seed by :meth:`SeriesSource.draw`; may be pinned in YAML to replay one window."""

    start: NonNegFloat
    stretch: PositiveFloat = 1.0
    scale: PositiveFloat = 1.0
    noise_seed: int = Field(default=0, ge=0)
    length: PositiveFloat | None = None  # calendar seconds; default: to the series' end


class SeriesSource(_SourceBase):
    """Poisson arrivals whose rate follows a recorded series (thinning, as for a rate profile).

    ``day_length``: simulated seconds per calendar day of the series (7200 compresses a day
    into two simulated hours). ``part``: which part of the ``splits`` an episode's window comes
    from; training sets ``train``, tuning ``validation``, evaluation ``test``
    (:meth:`Scenario.for_part`)."""

    process: Literal["series"]
    series: SeriesData
    scale: Scaling
    day_length: Annotated[float, Field(gt=0, le=MAX_HORIZON, allow_inf_nan=False)] = DAY
    splits: Splits = Field(default_factory=Splits)
    part: Part = "all"
    augment: Augment = Field(default_factory=Augment)
    window: Window | None = None

    @property
    def label(self) -> str:
        """The series, as ``dataset:column`` or ``file:column``."""
        return self.raw().label

    def raw(self) -> RawSeries:
        return self.series.load()

    def time_scale(self) -> float:
        """Calendar seconds per simulated second at nominal speed."""
        return DAY / self.day_length

    @functools.cached_property
    def _gain_offset(self) -> tuple[float, float]:
        raw = self.raw()
        lo, hi = raw.part_bounds(self.splits.as_dict(), "train")
        return self.scale.gain_offset(raw.values_between(lo, hi))

    def gain_offset(self) -> tuple[float, float]:
        """``rate = gain * value + offset``, fitted on the training part."""
        return self._gain_offset

    def peak_bound(self) -> float:
        """A rate no episode exceeds: the whole series' peak, scaled, at the largest rate scale
        and noise. For normalization; thinning uses each window's own peak."""
        gain, offset = self.gain_offset()
        top = max(gain * float(self.raw().values.max()) + offset, 0.0)
        scale = self.augment.rate_scale[1] if self.augment.rate_scale else 1.0
        return top * scale * math.exp(self.augment.noise * NOISE_CLIP)

    def window_length(self, horizon: float, stretch: float) -> float:
        """Calendar seconds an episode of ``horizon`` simulated seconds covers."""
        return horizon * self.time_scale() * stretch

    def fit_problem(self, horizon: float) -> str | None:
        """Why an episode of ``horizon`` cannot be drawn from ``part`` (None if it can)."""
        raw = self.raw()
        lo, hi = raw.part_bounds(self.splits.as_dict(), self.part)
        if self.window is not None:
            end = self.window.start + self.window_length(horizon, self.window.stretch)
            if self.window.start < raw.span[0] or end > raw.span[1]:
                return f"window [{self.window.start:g}, {end:g}] s is outside the series' span {list(raw.span)}"
            return None
        need = self.window_length(horizon, self.augment.stretch[1] if self.augment.stretch else 1.0)
        if need > hi - lo:
            return (
                f"an episode of {horizon:g} s covers {need / DAY:.3g} days of the series, but part "
                f"{self.part!r} is {(hi - lo) / DAY:.3g} days long; expected a shorter horizon, a "
                "longer day_length, or another split"
            )
        return None

    def draw(self, rng: np.random.Generator, horizon: float) -> SeriesSource:
        """This source with an episode's window drawn from ``rng``: a start within ``part`` and
        the augmentations. Always draws the same four numbers, whatever the options, so that
        turning one augmentation on does not move the windows of the others."""
        u = rng.random(3)
        noise_seed = int(rng.integers(0, 2**31))
        stretch = _within(self.augment.stretch, u[1])
        scale = _within(self.augment.rate_scale, u[2])
        lo, hi = self.raw().part_bounds(self.splits.as_dict(), self.part)
        length = self.window_length(horizon, stretch)
        start = lo + u[0] * max(hi - lo - length, 0.0)
        window = Window(start=float(start), stretch=stretch, scale=scale, noise_seed=noise_seed, length=length)
        return _replace(self, window=window)

    @functools.cached_property
    def rate(self) -> WindowRate:
        """The episode's rate (its ``window``), or without one the nominal rate: the part from its
        start, at nominal speed and scale (for estimates made before any episode is drawn)."""
        raw = self.raw()
        gain, offset = self.gain_offset()
        w = self.window
        if w is None:
            lo, hi = raw.part_bounds(self.splits.as_dict(), self.part)
            return window_rate(raw, gain, offset, lo, hi - lo, self.time_scale())
        length = min(w.length, raw.span[1] - w.start) if w.length is not None else raw.span[1] - w.start
        return window_rate(
            raw, gain, offset, w.start, length, self.time_scale() * w.stretch, w.scale, self.augment.noise, w.noise_seed
        )


def _replace(model: Any, **update: Any) -> Any:
    """``model`` with fields replaced, as a fresh instance: ``model_copy`` would also copy the
    cached properties (a drawn window's rate) computed for the old values."""
    data = {name: getattr(model, name) for name in type(model).model_fields}
    data.update(update)
    return type(model).model_construct(_fields_set=model.model_fields_set | set(update), **data)


def _within(bounds: tuple[float, float] | None, u: float) -> float:
    return 1.0 if bounds is None else float(bounds[0] + u * (bounds[1] - bounds[0]))


Source = Annotated[PoissonSource | MMPPSource | TraceSource | SeriesSource, Field(discriminator="process")]


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------
class Workers(_Strict):
    """The pool: ``initial`` workers at t=0, kept within ``[min, max]``. A new worker is ready
    ``startup_delay`` seconds after it is requested; every provisioned worker (starting, idle or
    busy) costs ``cost_per_second``.

    ``startup_tick`` (seconds, optional): workers start only at the pool's maintenance ticks,
    one every ``startup_tick`` seconds at a phase drawn per episode (or ``startup_tick_phase``),
    and the workers starting at one tick are ready one after another, ``startup_delay`` apart,
    after it (the pool forks them serially). Celery's prefork pool grows this
    way (``pool_grow`` raises a count; the pool's maintenance loop starts the processes, every 5
    wall seconds), so a request waits 0 to 5 s, not a constant: measured on the built-in app,
    grown processes came 10-32 scenario seconds later at x10 where a constant half tick said 25.

    ``late_reap`` (a probability, with ``startup_tick``): a worker that a scale-down retires idle
    stays, with this probability, somewhere an item can be sent until the pool reaps it, at the
    first tick ``late_reap_after`` seconds or more after the retirement (the time it takes to
    die); the first item sent there waits for that tick and holds one ready worker until then
    (the worker's one free reservation). Celery's prefork pool does this: ``pool_shrink``
    terminates an idle process, but the fair scheduler keeps writing to its pipe until the pool
    reaps it: in 44 of 162 shrinks traced on the example app the process took a second to
    die (billiard's exit pauses 1 s) and was reaped only at a maintenance tick, 0.9-5.0 s
    later (the rest within 0.6 s), and in 39 of 218 a task was written to it meanwhile
    (Celery's share, ``celery_pool.CELERY_LATE_REAP``). With ``acks_late`` and a prefetch multiplier of 1,
    the task written to the dead process fills the worker's reservations: a pool shrunk to 1
    starts nothing until the tick (3.3-4.9 s stalls measured; celery/celery#7266 reports the race
    for the autoscaler)."""

    initial: int = Field(ge=0)
    min: int = Field(default=0, ge=0)
    max: int = Field(ge=1, le=MAX_WORKERS)
    startup_delay: NonNegFloat = 0.0
    startup_tick: Annotated[float, Field(gt=0, le=MAX_HORIZON, allow_inf_nan=False)] | None = None
    # where the ticks fall (the first tick's time, in [0, startup_tick)); None: drawn per episode
    startup_tick_phase: NonNegFloat | None = None
    late_reap: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.0
    # a late-reaped worker dies this long after its retirement; the first tick after that reaps it
    late_reap_after: Annotated[float, Field(ge=0, le=MAX_HORIZON, allow_inf_nan=False)] = 0.0
    # Bounded so that a run's cost stays a finite number (1e308 made the cost infinite).
    cost_per_second: Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)] = 1.0

    @model_validator(mode="after")
    def _check(self) -> Workers:
        if self.startup_tick_phase is not None and not (
            self.startup_tick and self.startup_tick_phase < self.startup_tick
        ):
            raise ValueError(
                f"startup_tick_phase is {self.startup_tick_phase}; expected a time in [0, startup_tick) "
                f"(startup_tick is {self.startup_tick})"
            )
        if self.late_reap and not self.startup_tick:
            raise ValueError(
                f"late_reap is {self.late_reap}; expected 0 without a startup_tick (a retired "
                "process is reaped at the pool's next tick)"
            )
        if self.min > self.max:
            raise ValueError(f"min is {self.min} and max is {self.max}; expected min <= max")
        if not self.min <= self.initial <= self.max:
            raise ValueError(
                f"initial is {self.initial}; expected a value within [min, max] = [{self.min}, {self.max}]"
            )
        return self


class Service(_Strict):
    """Service time of one attempt, in seconds. ``mean`` for every parametric distribution;
    ``cv`` (coefficient of variation) for lognormal and gamma; ``samples`` for empirical."""

    dist: Literal["exponential", "deterministic", "lognormal", "gamma", "empirical"]
    mean: PositiveFloat | None = None
    # Bounded so that the distributions' parameters stay finite (a gamma's shape is 1/cv**2).
    cv: Annotated[float, Field(gt=0, le=MAX_CV, allow_inf_nan=False)] | None = None
    samples: list[PositiveFloat] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Service:
        if self.dist == "empirical":
            if self.samples is None:
                raise ValueError("dist 'empirical' needs samples: [...]; got none")
            if self.mean is not None or self.cv is not None:
                raise ValueError("dist 'empirical' takes only samples; remove mean and cv")
            return self
        if self.mean is None:
            raise ValueError(f"dist {self.dist!r} needs mean (seconds); got none")
        if self.samples is not None:
            raise ValueError(f"dist {self.dist!r} takes no samples; remove them")
        needs_cv = self.dist in ("lognormal", "gamma")
        if needs_cv and self.cv is None:
            raise ValueError(f"dist {self.dist!r} needs cv (coefficient of variation); got none")
        if not needs_cv and self.cv is not None:
            raise ValueError(f"dist {self.dist!r} takes no cv; got cv={self.cv}")
        return self

    def expected(self) -> float:
        """Mean service time, for theory checks and planners."""
        return float(np.mean(self.samples)) if self.dist == "empirical" else float(self.mean)  # type: ignore[arg-type]

    def scaled(self, factor: float) -> Service:
        """The same distribution with every time ``factor`` times as long (its cv unchanged)."""
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"service scale {factor!r}: expected a positive finite number")
        if self.dist == "empirical":
            return self.model_copy(update={"samples": [s * factor for s in self.samples]})  # type: ignore[union-attr]
        return self.model_copy(update={"mean": self.mean * factor})  # type: ignore[operator]


DispatchDelay = Annotated[
    Annotated[Annotated[float, Field(ge=0, le=MAX_HORIZON, allow_inf_nan=False)], Tag("seconds")]
    | Annotated[Service, Tag("distribution")],
    Discriminator(lambda v: "distribution" if isinstance(v, dict | Service) else "seconds"),
]
"""A stage's dispatch delay: constant seconds, or a distribution drawn per visit (as a service
time is). Chosen by the value's shape, so a bad value gets the errors of its own form only."""


class QueueSpec(_Strict):
    """``capacity``: how many items may wait (not counting those in service); beyond it an
    arriving item is dropped. ``null`` is unbounded."""

    capacity: int | None = Field(default=None, ge=0)


class Failure(_Strict):
    """Each attempt fails with ``prob`` (after its full service time); a failed item is queued
    again at the back, up to ``max_retries`` times, and then given up as a failed item."""

    prob: Probability
    max_retries: int = Field(default=0, ge=0)


class Validation(_Strict):
    """This stage checks quality: it flags a bad item with ``detect_prob`` and a good one with
    ``false_positive_prob``. Route on ``flagged`` afterwards. A bad item that leaves the system
    unflagged is a quality escape."""

    detect_prob: Probability
    false_positive_prob: Probability = 0.0


class Stage(_Strict):
    """A stage: its worker pool, service times, queue, failures, validation and route.

    ``dispatch_delay`` (seconds, default 0) is the hand-off between an item being sent to the
    stage and a free worker being able to start it: Celery's publish -> the worker's fetch ->
    a pool process starting the task, 2-8 ms per visit measured on the example app, which a
    queue at low load is made of entirely. It counts as waiting (in the wait, the queue length
    and its area, as the live fold counts task-sent -> task-started), and a retry pays it again
    (a retry is a new message). Seconds, or a distribution (the form of ``service``) drawn per
    visit from a stream of its own (so no other stream moves): on a loaded machine the hand-off
    is tens of milliseconds and skewed (the example app on 2 shared cores: median 45-55 ms, mean
    59-74 ms), and a constant at its median reads the waits of lightly loaded stages 20-30 %
    short. Like the service time it is multiplied by the item's size (a trace's ``size``): a
    message carries its item's data, and on the example app the hand-offs of the tasks that
    pass the parsed records on grew with the item's size (log-log slope 1.17-1.44, correlation
    0.30-0.38); drawn independently of it, the waits of one item at successive stages did not
    rise and fall together as recorded (correlation 0.06-0.46 against 0.36-0.60), and the
    validation's end-to-end p95 was 13.5 % short (9.9 % with the size). Either way queueing
    theory still checks the simulator exactly: a Poisson stream whose items are each delayed
    independently is again Poisson (the displacement theorem), so the wait is the mean delay
    plus the queue's own. Items may overtake each other on the way, as Celery's messages do.
    ``adaptflow calibrate`` fits it.

    ``turnaround`` (seconds, default 0) is how long a worker that finished a visit stays unable
    to start the next, though the item has left: with late acknowledgement and a prefetch of
    one (``task_acks_late``, ``worker_prefetch_multiplier = 1``, as at-least-once apps run),
    Celery refills a process's slot only after the ack's round trip, the next fetch and the
    hand-off to the process. Unlike the dispatch delay it costs capacity: a stage serves at
    most ``workers / (mean service + turnaround)`` items a second. Measured on the example app
    on a loaded machine: 80 ms between a task's success and the next start of a backlogged
    worker at four stages, against service times of 80 to 150 ms (a backlogged parse: 13 ms).
    Like the service time it is multiplied by the item's size (a trace's ``size``): the gaps
    measured there grew with the service times beside them (correlation 0.45 with the task
    before, 0.58 with the one after; slow stretches of a shared machine slow both). ``adaptflow
    calibrate`` fits it from those backlogged gaps.

    ``turnaround_cv`` (default 0: every turnaround its mean) spreads the turnarounds: each is the
    mean times a lognormal draw of mean 1 and this coefficient of variation, from a stream of
    its own (so no other stream moves); the mean, and so the capacity planners read
    (:meth:`occupancy`), stay ``turnaround``. Why: live the gaps vary as much as the hand-offs
    into an idle process do (the example app: cv 0.57-0.73 at four stages, their 95th
    percentile 1.9-2.4 times their mean, as a lognormal of that cv has it), and a queue behind
    a process is made of them; held constant, the waits of the stages where the turnaround is
    as long as the service came out short at the runs' own speeds (validate's mean wait by
    11 %, its 95th percentile by 17 %, over eight held-out sets; docs/sim_to_real.md). ``adaptflow
    calibrate`` fits it from the same gaps as the mean.

    ``host`` (a name from the scenario's ``hosts``, optional) places the pool's processes on a
    machine whose cores they share with the other pools placed there, and ``cpu`` (default 1
    with a host) is the share of the service time that is CPU work: that share slows down when
    the host's busy processes outnumber its cores (see :class:`Host`); the rest (I/O, sleeps)
    does not. Without a host a process serves at full speed however many run beside it.

    ``contention`` (optional, with a host; :class:`StageContention`): how the dispatch delay
    and the turnaround slow with the processes busy on the host."""

    workers: Workers
    service: Service
    host: Name | None = None
    cpu: Probability | None = None
    dispatch_delay: DispatchDelay = 0.0
    turnaround: Annotated[float, Field(ge=0, le=MAX_HORIZON, allow_inf_nan=False)] = 0.0
    turnaround_cv: Annotated[float, Field(ge=0, le=MAX_CV, allow_inf_nan=False)] = 0.0
    contention: StageContention | None = None
    queue: QueueSpec = Field(default_factory=QueueSpec)
    # who waits first: arrival order, or the job class's priority (non-preemptive: a job in
    # service is never interrupted; FIFO within a class)
    discipline: Literal["fifo", "priority"] = "fifo"
    failure: Failure | None = None
    validation: Validation | None = None
    next: Route = Field(default_factory=Exit)

    @model_validator(mode="after")
    def _check_turnaround_cv(self) -> Stage:
        if self.turnaround_cv and not self.turnaround:
            raise ValueError(
                f"turnaround_cv {self.turnaround_cv:g} spreads a turnaround of 0; expected a turnaround (seconds) "
                "beside it, or no turnaround_cv"
            )
        return self

    @property
    def cpu_share(self) -> float:
        """The share of the service time that competes for the host's cores (0 without a host)."""
        if self.host is None:
            return 0.0
        return 1.0 if self.cpu is None else self.cpu

    def dispatch_mean(self) -> float:
        """Mean seconds of the dispatch delay (a constant's own value)."""
        d = self.dispatch_delay
        return d.expected() if isinstance(d, Service) else float(d)

    def occupancy(self) -> float:
        """Mean seconds a worker is held per attempt: the service time and the turnaround after
        it. What capacity is made of, for planners, encoders and theory."""
        return self.service.expected() + self.turnaround

    def with_levels(self, turnaround: float = 1.0, dispatch: float = 1.0) -> Stage:
        """This stage with its turnaround ``turnaround`` times as long and its dispatch delay
        (every draw of a distribution) ``dispatch`` times: a session's levels
        (:class:`LawsAtSpeed`'s ``turnarounds`` and ``dispatches``, which ``fit-growth`` settles
        on its runs at the reference). Their spread and contention stay."""
        for what, factor in (("turnaround", turnaround), ("dispatch", dispatch)):
            if not (math.isfinite(factor) and factor > 0):
                raise ValueError(f"{what} level {factor!r}: expected a positive finite factor")
        d = self.dispatch_delay
        delay = d.scaled(dispatch) if isinstance(d, Service) else float(d) * dispatch
        return _replace(self, turnaround=self.turnaround * turnaround, dispatch_delay=delay)


MAX_GROWTH = 1_000.0
"""A turnaround a thousand times its calibrated one at some size is not a reading, it is a typo."""
MAX_GROWTH_POINTS = 64
"""Sizes a growth law may hold (each one a fit set's held pools)."""


GrowthCounts = Literal["host", "stage"]
"""Whose processes a growth law counts (:attr:`TurnaroundGrowth.counts`)."""


class GrowthPoint(_Strict):
    """A growth law's factor at one host size (:attr:`TurnaroundGrowth.points`)."""

    processes: Annotated[int, Field(ge=1, le=MAX_WORKERS)]
    factor: Annotated[float, Field(ge=0, le=MAX_GROWTH, allow_inf_nan=False)]


class TurnaroundGrowth(_Strict):
    """How the turnaround of every stage on a host grows with the pool processes the host runs:
    each turnaround is multiplied by :meth:`factor` of the processes running there when a visit
    ends (idle, serving or between tasks; not those still starting). ``reference`` is the
    processes the host ran when the turnarounds were measured, so there the factor is 1. As a
    host's ``dispatch_growth`` the same law multiplies each dispatch delay of its stages, by the
    processes running there when the item is sent (see :class:`Host`).

    Why: a Celery worker's main process acks, fetches and hands each task to a pool process,
    and it competes for the cores with every pool process on the machine. On the example app on
    a 2-core VM, the same arrivals with every stage held at 1, 2 and 3 processes (5, 10, 15 on
    the host) met hand-offs 2.6-3.3 and 3.9-5.4 times those at 5 (parse, fed by the producer:
    1.9 and 2.5), about 0.31 of the turnaround per process; with it, a planner that moved the
    pools (erlang, 5 to 9 processes) was simulated within 10 % of a live run on every figure,
    where a constant turnaround missed wait and p95 by 36-38 %. An empirical line, not the
    mechanism: at 7 held processes the hand-offs grew 1.06-1.2 times, not the line's 1.62, and
    the live machine lost there in the services instead (docs/sim_to_real.md).
    ``adaptflow fit-growth`` fits it from live runs at several pool sizes, settled against their
    simulation: the growth beyond what the stages' ``contention`` already gives.

    ``points`` (optional): the factor at each size fit-growth measured other than the
    reference (``{processes, factor}`` each, by processes; ``fit-growth`` writes them from runs
    at two or more other sizes): the law runs straight between them (and the reference, at 1) and by ``per_process``
    beyond the sizes measured. Why: the growth is not a line. On the example app the hand-offs at
    7 processes grew x1.06-1.2 where the line from 5 to 10 said x1.62, and a planner that ran 6-7
    processes (keda) was simulated 13-22 % long on it. On another VM, from a fit set at 5, 7 and
    10, the points held four held-out sets at 30 of 32 planner cells within 10 % at the runs'
    own speeds, the same runs' line 28 (docs/sim_to_real.md, "A third size").

    ``stages`` (optional): a slope of a stage's own, in place of ``per_process`` for it
    (``fit-growth --stage-slopes``); the stages it leaves out grow by ``per_process``. Why: the
    hand-offs of the example app's stages grew unlike each other with the processes (parse, fed
    by the producer, about half as steeply as the rest), and one slope for the host simulated
    parse's hand-offs at 10 processes 20-28 % long. Measured on a new VM's two held-out sets, one
    session's stage slopes were no better than its one slope (parse closer, validate farther):
    an option, not the default. The law a stage meets is :meth:`for_stage`'s, its one reading.

    ``counts`` (default ``host``): whose processes the factor counts: the host's (every stage
    placed there), or with ``stage`` each stage's own running processes alone (``reference``
    and ``points`` are then a stage's sizes; ``fit-growth --counts stage``). Why: a Celery
    worker's main process hands each of its own pool's tasks over, so what it waits on may be
    its own pool more than the machine's. On the example app's fit set (2-core VM), stages held
    at 1 process on a host of 7 met hand-offs 1.02-1.06 times those on a host of 5, and stages
    held at 2 on the same host of 7 1.4-1.9 times (docs/sim_to_real.md, "A stage's own pool")."""

    per_process: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
    reference: Annotated[int, Field(ge=1, le=MAX_WORKERS)]
    stages: dict[Name, Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]] = Field(default_factory=dict)
    points: list[GrowthPoint] = Field(default_factory=list, max_length=MAX_GROWTH_POINTS)
    counts: GrowthCounts = "host"

    @model_validator(mode="after")
    def _check_points(self) -> TurnaroundGrowth:
        sizes = [p.processes for p in self.points]
        if any(b <= a for a, b in itertools.pairwise(sizes)):
            raise ValueError(f"points: processes {sizes}; expected increasing processes, each once")
        if self.reference in sizes:
            raise ValueError(f"points: {self.reference} is the reference, where the factor is 1; expected other sizes")
        if self.points and self.stages:
            raise ValueError("points beside stages; expected one of them (a stage's own slope is a line)")
        return self

    def factor(self, processes: float) -> float:
        """The turnaround's multiplier with ``processes`` on the host (never below 0): straight
        between ``points`` (and the reference, at 1) where given and by ``per_process`` beyond
        them; the law of a stage without a slope of its own."""
        if not self.points:  # the simulator's hot path: a line
            return max(0.0, 1.0 + self.per_process * (processes - self.reference))
        knots = self.knots
        if processes <= knots[0][0] or processes >= knots[-1][0]:  # by the slope beyond the measured sizes
            size, at = knots[0] if processes <= knots[0][0] else knots[-1]
            return max(0.0, at + self.per_process * (processes - size))
        i = bisect.bisect_right(knots, (processes, math.inf))
        (a, fa), (b, fb) = knots[i - 1], knots[i]
        return fa + (fb - fa) * (processes - a) / (b - a)

    @functools.cached_property
    def knots(self) -> tuple[tuple[int, float], ...]:
        """(processes, factor) of the reference (1) and every point, by processes. Cached: the
        simulator reads the factor at every turnaround, and the law never changes (frozen)."""
        return tuple(sorted([(self.reference, 1.0), *((p.processes, p.factor) for p in self.points)]))

    def for_stage(self, stage: str) -> TurnaroundGrowth:
        """The law ``stage`` meets: its own slope where ``stages`` gives one, else ``per_process``."""
        if not self.stages:
            return self
        return TurnaroundGrowth(
            per_process=self.stages.get(stage, self.per_process), reference=self.reference, counts=self.counts
        )


class StageContention(_Strict):
    """How a hosted stage's dispatch delay and turnaround slow with the work running beside them:
    each takes ``1 + c * b`` times its calibrated seconds (:meth:`factor`), ``c`` its kind's
    coefficient here and ``b`` the pool processes serving a task on the stage's host when it
    begins (not the one that has just finished, nor the one that sent the item).

    Why: that work (fetching, decoding and handing over a message; the result, the ack and the
    next fetch) waits for the cores like any other, so a burst that keeps the machine busy holds
    every stage's hand-offs up together, and an item met by a burst waits longer at every stage.
    On the example app (2-core VM) a hand-off grew 0.17-0.51 per busy process and a turnaround
    0.07-0.52, fitted per stage in two recordings; with constant ones the replayed p95 latency
    was 10 and 16.5 % short with every mean wait within 13 %, with these 5 and 12 % short and
    every mean wait within 8 %. Per stage and kind because they differ: parse's turnaround
    0.09-0.14 against write's 0.40-0.52 in both recordings.
    :mod:`adaptflow.runtime.calibrate.contention` fits them (docs/sim_to_real.md)."""

    dispatch: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] = 0.0
    turnaround: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] = 0.0

    @staticmethod
    def factor(coefficient: float, busy: int) -> float:
        """How many times its calibrated seconds the work takes with ``busy`` processes serving."""
        return 1.0 + coefficient * busy


def cpu_stretch(cpu_share: Any, speed: Any) -> Any:
    """How many times its full-speed time a visit takes when its CPU share ``cpu_share`` runs at
    ``speed`` (its CPU seconds ``1 / speed`` as long, the rest as it was): ``1 - c + c / v``.
    The one formula of a partly-CPU visit slowed (floats or numpy arrays): calibration divides
    recorded times by it, compare-app's ``--live-speed`` scales services by it, and the
    simulator runs it as a delay followed by CPU work on the host (``StageState._serve_on_host``)."""
    return 1.0 - cpu_share + cpu_share / speed


MAX_HANDOFF_CPU = 4.0
"""A hand-off weighing more than four tasks' CPU work is not a reading of Celery, it is a typo."""


MAX_VISIT_CPU = 60.0
"""A minute of Celery's own CPU per visit is not a reading of Celery, it is a typo."""
MAX_OVERSUBSCRIPTION = 1.0
"""Each runnable job past the cores costing the machine half its capacity or more is not a
reading of a scheduler, it is a typo."""


HOST_LAWS = ("turnaround_growth", "dispatch_growth", "handoff_cpu", "visit_cpu", "oversubscription")
"""The host's laws of Celery's own growth and CPU, as ``adaptflow fit-growth`` fits them: what a
:class:`LawsAtSpeed` entry holds and what :meth:`Scenario.laws_at_speed` interpolates."""
MAX_LAW_SPEEDS = 32
"""Fit sets a host's ``by_speed`` may hold (each one a session of live runs)."""


class LawsAtSpeed(_Strict):
    """A host's laws (:data:`HOST_LAWS`, each as on :class:`Host`) as one fit set found them on a
    day the machine ran at ``speed`` (``adaptflow fit-growth --session-speed``), with what that
    fit did to the stages placed there: ``services``, each stage's service as a multiple of the
    scenario's (Celery's CPU fit rescales them so that the reference pools meet the recorded
    services under its law), and ``cpu``, each stage's CPU share where the fit chose one. Why
    several: on a shared VM how much Celery's hand-offs, the way in and the services grow with
    the processes depends on the session: on the example app, from 5 to 10 held processes the
    hand-offs grew x1.95-2.65 in a session at speed 1.08, x1.21-1.43 in one at 1.48 and
    x1.40-1.74 in one at 1.44. Three sessions' fits taken at each run's speed held seven
    held-out sets closer than any one fit (mean gap 5.3 % against 6.9-8.5 % at the runs' own
    speeds), mostly by averaging the sessions' draws; the speed added 0.5-1 point beyond a
    plain average (docs/sim_to_real.md). ``adaptflow laws-by-speed`` writes them from such fits.
    ``turnarounds`` and ``dispatches``: each stage's turnaround and dispatch delay as multiples
    of the scenario's, the levels that fit settled on its runs at the reference
    (:meth:`Stage.with_levels`). ``cores``: the cores that fit found the pools effectively had
    (``fit-growth --visit-cpu`` searches them), none where it kept the host's: on a shared VM
    they are the session's too (on the example app five sessions' fits read 1.27-1.90 of 2)."""

    speed: Annotated[float, Field(gt=0, le=1_000, allow_inf_nan=False)]
    cores: Annotated[float, Field(gt=0, le=MAX_WORKERS, allow_inf_nan=False)] | None = None
    turnaround_growth: TurnaroundGrowth | None = None
    dispatch_growth: TurnaroundGrowth | None = None
    handoff_cpu: Annotated[float, Field(ge=0, le=MAX_HANDOFF_CPU, allow_inf_nan=False)] = 0.0
    visit_cpu: Annotated[float, Field(ge=0, le=MAX_VISIT_CPU, allow_inf_nan=False)] = 0.0
    oversubscription: Annotated[float, Field(ge=0, le=MAX_OVERSUBSCRIPTION, allow_inf_nan=False)] = 0.0
    services: dict[Name, Annotated[float, Field(gt=0, le=1_000, allow_inf_nan=False)]] = Field(default_factory=dict)
    cpu: dict[Name, Probability] = Field(default_factory=dict)
    turnarounds: dict[Name, Annotated[float, Field(gt=0, le=1_000, allow_inf_nan=False)]] = Field(default_factory=dict)
    dispatches: dict[Name, Annotated[float, Field(gt=0, le=1_000, allow_inf_nan=False)]] = Field(default_factory=dict)


@dataclass(frozen=True)
class SpeedLaws:
    """What a host's ``by_speed`` gives at one speed (:func:`laws_between`): the host's laws, and
    its stages' service multiples, CPU shares and levels (turnaround and dispatch multiples)."""

    laws: dict[str, Any]
    services: dict[str, float]
    cpu: dict[str, float]
    turnarounds: dict[str, float] = field(default_factory=dict)
    dispatches: dict[str, float] = field(default_factory=dict)


def _mix(a: float, b: float, w: float, geometric: bool = False) -> float:
    """``a`` and ``b`` weighed ``1 - w`` and ``w`` (in their logs when ``geometric``); either
    one exactly at its end, so that at an entry's own speed its laws are its fit's exactly."""
    if w in (0.0, 1.0):
        return b if w else a
    return math.exp((1 - w) * math.log(a) + w * math.log(b)) if geometric else (1 - w) * a + w * b


def _mix_growth(a: TurnaroundGrowth | None, b: TurnaroundGrowth | None, w: float) -> TurnaroundGrowth | None:
    """Two growth laws of one reference mixed (no law: none per process); a stage's own slope
    where either law gives one, mixed with the other law's slope for that stage."""
    if a is None and b is None:
        return None

    def slope(g: TurnaroundGrowth | None, stage: str | None) -> float:
        return 0.0 if g is None else g.per_process if stage is None else g.for_stage(stage).per_process

    own = {**(a.stages if a else {}), **(b.stages if b else {})}
    reference = (a or b).reference  # type: ignore[union-attr]
    # each law's factor at every size either measured (a law without points: its line's); a
    # host's by_speed never holds points beside stage slopes (Host._check_by_speed)
    sizes = sorted({p.processes for g in (a, b) if g is not None for p in g.points})

    def at(g: TurnaroundGrowth | None, size: int) -> float:
        return 1.0 if g is None else g.factor(size)

    return TurnaroundGrowth(
        per_process=_mix(slope(a, None), slope(b, None), w),
        reference=reference,
        stages={s: _mix(slope(a, s), slope(b, s), w) for s in sorted(own)},
        points=[GrowthPoint(processes=n, factor=_mix(at(a, n), at(b, n), w)) for n in sizes],
        counts=(a or b).counts,  # type: ignore[union-attr]  # one for every entry (Host._check_by_speed)
    )


def laws_between(
    entries: list[LawsAtSpeed], speed: float, cpu: dict[str, float], cores: float | None = None
) -> SpeedLaws:
    """``entries``' laws at ``speed`` (see :meth:`Scenario.laws_at_speed`): linear in the log of the
    speed between the two entries around it, an end entry's own beyond the ends. Service,
    turnaround and dispatch multiples mix geometrically (a multiple is a ratio); a stage an
    entry leaves out counts at 1 and at its share of ``cpu`` (the stages' own). Where an entry
    has ``cores``, the laws hold ``cores`` too, mixed geometrically (a capacity is a scale), an
    entry without them at the host's ``cores``."""
    lo = hi = entries[0] if speed <= entries[0].speed else entries[-1]
    if entries[0].speed < speed < entries[-1].speed:
        hi = next(e for e in entries if e.speed > speed)
        lo = entries[entries.index(hi) - 1]
    w = 0.0 if lo is hi else math.log(speed / lo.speed) / math.log(hi.speed / lo.speed)
    laws: dict[str, Any] = {}
    for law in HOST_LAWS:
        a, b = getattr(lo, law), getattr(hi, law)
        laws[law] = _mix_growth(a, b, w) if law.endswith("growth") else _mix(a, b, w)
    if cores is not None and (lo.cores is not None or hi.cores is not None):
        laws["cores"] = _mix(lo.cores or cores, hi.cores or cores, w, True)
    multiples = {what: _mix_multiples(getattr(lo, what), getattr(hi, what), w)
                 for what in ("services", "turnarounds", "dispatches")}  # fmt: skip
    shares = {s: _mix(lo.cpu.get(s, cpu[s]), hi.cpu.get(s, cpu[s]), w) for s in {**lo.cpu, **hi.cpu}}
    return SpeedLaws(laws, cpu=shares, **multiples)


def _mix_multiples(a: dict[str, float], b: dict[str, float], w: float) -> dict[str, float]:
    """Two entries' multiples of the stages mixed geometrically (a multiple is a ratio), a stage
    one leaves out at 1 there."""
    return {s: _mix(a.get(s, 1.0), b.get(s, 1.0), w, True) for s in {**a, **b}}


class Host(_Strict):
    """A machine the processes of one or more stages' pools run on, with ``cores`` CPUs (a
    fraction, as a Kubernetes CPU limit, is allowed). Its cores are shared equally among the CPU
    work in progress (egalitarian processor sharing, as a kernel's fair scheduler shares them
    among runnable processes): with ``n`` busy CPU-bound processes on ``c`` cores each runs at
    ``min(1, c / n)`` of its full speed. So a pool grown past the cores adds no capacity, only
    slower tasks: measured on the example app, 13-14 processes on a 2-core VM took about 2.5
    times as long per task as 5. Why a scenario needs it: a planner trained without it learns
    that more processes always help, which on a real machine they do not.

    ``turnaround_growth`` (optional, :class:`TurnaroundGrowth`): how the turnarounds of the
    stages placed here grow with the processes the host runs. ``dispatch_growth`` (optional,
    the same law, its own slope): how their dispatch delays grow with them. Why a second law:
    the two halves of Celery's hand-off grow differently. On the example app on a 2-core VM, the
    same arrivals at 5 and 10 held processes met hand-offs between tasks 1.4-2.0 times as long,
    and the waits of tasks that met their stage idle 1.09-1.19 times (their median 1.04-1.08:
    the tail grows); with the turnarounds alone grown, the replayed mean waits of runs at 10-13
    processes were 8-25 % short, and with both 2-12 % (docs/sim_to_real.md).

    ``speed`` (default 1): how fast the host's CPU runs relative to when its stages were
    calibrated; every CPU second of a service (its ``cpu`` share), every turnaround and every
    dispatch delay of a stage placed here takes ``1 / speed`` as long (:meth:`cpu_seconds`).
    The dispatch delay too: it is the worker's main process's work and, with the broker on the
    same machine, the broker's; on the example app it shrank 2.1-2.4 times between two
    recordings a day apart, as the turnarounds (2.0-2.5) and the services (1.5-2.0) did. Why: a
    shared VM's speed moves with its neighbours. On the example app the same arrivals and pools
    met tasks twice as fast as on the day they were calibrated, and the simulation at the
    calibrated speed missed every wait by a factor of 3 to 5 (docs/sim_to_real.md).
    ``probe``: what ``adaptflow record``'s CPU probe measured on this host
    while the services were recorded (:mod:`adaptflow.runtime.probe`), so that a later probe can
    tell the speed of the moment (``adaptflow compare-app --probe-speed``). ``pulse``: the mean
    of the short CPU probes taken *during* the recording at moments no task ran
    (:mod:`adaptflow.runtime.pulses`), so that a later run's own idle pulses tell its speed over
    the run (``adaptflow compare-app --pulse-speed``); on a shared VM they tracked the speed runs
    met three times as closely as a probe before and after each. ``steal``: the share
    of the CPU time the recording machine wanted while recording that its hypervisor gave to
    other guests (:func:`adaptflow.runtime.probe.steal_share`), so that a later run's own steal
    tells the speed over the whole run, ``(1 - the run's steal) / (1 - steal)`` (``compare-app
    --steal-speed``; on a 2-vCPU VM a one-process probe read ``3,597 x (1 - steal)`` within 5 %).

    ``handoff_cpu`` (default 0): how much of a CPU job each hand-off and each turnaround in
    progress on the host weighs in the sharing of its cores (``n`` jobs and ``h`` hand-offs and
    turnarounds in progress: each job runs at ``min(1, cores / (n + handoff_cpu * h))``). Why:
    Celery's own work for a task (the main process fetching, decoding, handing over and acking
    it; the broker's side of each call when it runs on the same machine) takes the same cores
    the tasks compute on, and there is more of it the more processes turn over tasks. On the
    example app on a 2-core VM the tasks' services grew x2.9-3.4 from 5 to 15 held processes,
    where sharing the cores among the tasks alone grew them x1.4-1.9.
    ``adaptflow fit-growth`` fits it from live runs at several pool sizes.

    ``visit_cpu`` (seconds, default 0): the CPU work Celery itself does on the host for each
    visit of a stage placed here (per unit of the item's size, at the calibration's speed, as
    the dispatch delay): a job of its own in the sharing of the cores, begun when the item is
    sent to the stage, that delays nothing itself and takes its share of the cores until its
    work is done. The same work as ``handoff_cpu``'s, counted as work rather than as time in
    progress: a hand-off that lasts longer because the cores are busy is not more work, and a
    weight on its duration feeds the sharing's own slowdown back into itself (on the example
    app a weight fitted at one load over-read the growth at a lighter one by half).
    ``adaptflow fit-growth`` fits it, or one of the other two laws, from live runs at several
    pool sizes and loads.

    ``oversubscription`` (default 0): the share of the cores' capacity each CPU job beyond the
    cores costs: with ``n`` jobs on ``c`` cores, ``n > c``, each runs at
    ``c / (n * (1 + oversubscription * (n - c)))``. Why: a machine whose runnable processes
    outnumber its cores loses capacity to slicing its time among them (switches, caches,
    Celery's main processes woken for each), and the loss appears only then. On the example app
    on a 2-core VM, services grew x1.2-1.3 from 5 to 15 held processes at 2 uploads a second and
    x2.7-3.3 at 3 a second; no amount of Celery work per hand-off in progress or per visit fitted
    both loads (a third off a cell), this came nearest (0.15: 14 % at 3 a second, 20 % at 2).
    ``adaptflow fit-growth`` fits it as the third law of Celery's CPU.

    ``by_speed`` (optional, :class:`LawsAtSpeed` entries, slowest first): the laws above as fit
    sets on days of different speeds found them, in place of one set of them; a simulation
    takes them at the host's ``speed`` (:meth:`Scenario.laws_at_speed`), so a replay at a run's
    own speed meets the laws of a day like its own. ``adaptflow laws-by-speed`` writes them."""

    cores: Annotated[float, Field(gt=0, le=MAX_WORKERS, allow_inf_nan=False)]
    turnaround_growth: TurnaroundGrowth | None = None
    dispatch_growth: TurnaroundGrowth | None = None
    handoff_cpu: Annotated[float, Field(ge=0, le=MAX_HANDOFF_CPU, allow_inf_nan=False)] = 0.0
    visit_cpu: Annotated[float, Field(ge=0, le=MAX_VISIT_CPU, allow_inf_nan=False)] = 0.0
    oversubscription: Annotated[float, Field(ge=0, le=MAX_OVERSUBSCRIPTION, allow_inf_nan=False)] = 0.0
    speed: Annotated[float, Field(gt=0, le=1_000, allow_inf_nan=False)] = 1.0
    probe: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    pulse: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    steal: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] | None = None
    by_speed: list[LawsAtSpeed] = Field(default_factory=list, max_length=MAX_LAW_SPEEDS)

    @model_validator(mode="after")
    def _check_by_speed(self) -> Host:
        if not self.by_speed:
            return self
        problems = [
            f"{law}: {getattr(self, law)!r} beside by_speed; expected the laws in by_speed's entries only"
            for law in HOST_LAWS
            if law in self.model_fields_set and getattr(self, law) not in (None, 0.0)
        ]
        speeds = [e.speed for e in self.by_speed]
        if any(b <= a for a, b in itertools.pairwise(speeds)):
            problems.append(f"by_speed: speeds {speeds}; expected increasing speeds, each once")
        for law in ("turnaround_growth", "dispatch_growth"):
            references = sorted({g.reference for e in self.by_speed if (g := getattr(e, law)) is not None})
            if len(references) > 1:
                problems.append(f"by_speed.{law}.reference: {references}; expected one reference for every entry")
            laws = [g for e in self.by_speed if (g := getattr(e, law)) is not None]
            if any(g.points for g in laws) and any(g.stages for g in laws):
                problems.append(f"by_speed.{law}: points in one entry, stages in another; expected one kind of law")
            if len(counts := sorted({g.counts for g in laws})) > 1:
                problems.append(f"by_speed.{law}.counts: {counts}; expected one for every entry")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def cpu_seconds(self, calibrated: float) -> float:
        """The seconds ``calibrated`` CPU seconds of the calibration take on this host now."""
        return calibrated / self.speed


class Sla(_Strict):
    """The end-to-end deadline: an item is late once ``latency`` seconds have passed since it was
    created, whether it is still in the system, completed or dropped. This class is the one rule
    of lateness; the simulator and the live monitor both ask it."""

    latency: PositiveFloat

    def is_late(self, created: float, now: float) -> bool:
        """Whether an item created at ``created`` has passed its deadline at ``now``."""
        return now - created > self.latency

    def cutoff(self, now: float) -> float:
        """Items created before this time have passed their deadline at ``now`` (for a scan
        over items in creation order: ``while items[0].created < sla.cutoff(now)``)."""
        return now - self.latency


class JobClass(_Strict):
    """A kind of job with its own deadline and price of lateness. ``priority``: at a stage with
    ``discipline: priority`` a waiting job of a lower number starts first. ``sla``: its deadline
    (default: the scenario's). ``late_weight``: what one late job of this class costs, in units
    of the cost model's SLA price (default 1)."""

    priority: int = Field(default=0, ge=0, le=1_000)
    sla: Sla | None = None
    late_weight: Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)] = 1.0


class Scenario(_Strict):
    """A whole workflow. See ``configs/scenarios/README.md`` for the user-facing schema."""

    name: Name
    description: str = ""
    horizon: Annotated[float, Field(gt=0, le=MAX_HORIZON, allow_inf_nan=False)]
    seed: int = Field(default=0, ge=0)
    sla: Sla
    sources: dict[Name, Source] = Field(min_length=1)
    stages: dict[Name, Stage] = Field(min_length=1)
    classes: dict[Name, JobClass] = Field(default_factory=dict, max_length=64)
    hosts: dict[Name, Host] = Field(default_factory=dict, max_length=1024)

    @model_validator(mode="after")
    def _check_graph(self) -> Scenario:
        problems: list[str] = _class_problems(self) + _host_problems(self)
        clash = sorted(set(self.sources) & set(self.stages))
        if clash:
            problems.append(f"names {clash} are both a source and a stage; expected distinct names")
        routes = {f"sources.{n}.to": s.to for n, s in self.sources.items()}
        routes.update({f"stages.{n}.next": s.next for n, s in self.stages.items()})
        stage_list = ", ".join(self.stages)
        for where, route in routes.items():
            for target in route.targets():
                if target is not None and target not in self.stages:
                    problems.append(
                        f"{where}: routes to {target!r}, which is not a stage; expected one of: {stage_list}"
                    )
            if isinstance(route, ByAttribute):
                allowed = ATTRIBUTE_VALUES[route.attribute] or tuple(self.sources)
                unknown = sorted(set(route.routes) - set(allowed))
                missing = [v for v in allowed if v not in route.routes]
                if unknown:
                    problems.append(
                        f"{where}.routes: {unknown} are not values of {route.attribute!r}; "
                        f"expected keys from {list(allowed)}"
                    )
                if missing:
                    problems.append(
                        f"{where}.routes: no route for {route.attribute} = {missing}; expected every value routed"
                    )
        for name, source in self.sources.items():
            problem = source.fit_problem(self.horizon) if isinstance(source, SeriesSource) else None
            if problem:
                problems.append(f"sources.{name}: {problem}")
        if problems:
            raise ValueError("\n".join(problems))
        problems = _unjoinable_parts(self)
        if problems:
            raise ValueError("\n".join(problems))
        cycle = _trapping_cycle(self)
        if cycle:
            raise ValueError(
                f"routing cycle with no exit: {' -> '.join(cycle)}; expected every stage to have a path to the exit"
            )
        return self

    @property
    def probed(self) -> bool:
        """Whether any host carries a calibration probe (``Host.probe``): what a probe of the
        machine later can be compared with, to tell its speed then."""
        return any(host.probe is not None for host in self.hosts.values())

    @property
    def pulsed(self) -> bool:
        """Whether any host carries a calibration pulse (``Host.pulse``): what a run's own idle
        pulses can be compared with, to tell its speed (``--pulse-speed``)."""
        return any(host.pulse is not None for host in self.hosts.values())

    def expected_arrivals(self, horizon: float | None = None) -> float:
        """About how many items the sources emit over ``horizon`` (default: the scenario's): the
        work a run asks for, estimated before any of it is done (a profile's mean rate from a
        fine grid, an MMPP's stationary rate, a trace's rows)."""
        horizon = self.horizon if horizon is None else horizon
        return float(sum(_expected_count(source, horizon) for source in self.sources.values()))

    def expected_work(self, horizon: float | None = None) -> tuple[float, str]:
        """``(units, what)``: the arrivals over ``horizon`` times the parts each item can become
        (:meth:`parts_per_item`), or the thinning draws of a narrow high peak in items' worth
        (:data:`DRAWS_PER_ITEM`) if more: what :data:`MAX_ITEMS` bounds; and those words for an
        error."""
        horizon = self.horizon if horizon is None else horizon
        items, parts = self.expected_arrivals(horizon), self.parts_per_item()
        what = f"about {items:,.0f} arrivals" + (f" x up to {parts:,.0f} parts each" if parts > 1 else "")
        draws = sum(_thinning_draws(source, horizon) for source in self.sources.values())
        if draws / DRAWS_PER_ITEM > items * parts:  # a narrow, high peak: the draws are the work
            what += f" drawn from {draws:,.0f} candidates at the sources' peak rates"
        return max(items * parts, draws / DRAWS_PER_ITEM), what

    def parts_per_item(self) -> float:
        """An upper bound on the visits-making units one item can become: 1 for a pipeline; a
        fan-out adds its largest part count times (1 + what the fan-outs on its parts' way to
        its join add), so nested scatters multiply and sequential ones add. Infinite when a
        fan-out can reach itself (a loop that forks again). What bounds a run's work together
        with :meth:`expected_arrivals`, before any of it is done."""
        weights: dict[str, float] = {}
        return 1.0 + sum(_fan_out_weight(self, owner, route, weights, ()) for owner, route in self.fan_outs().items())

    def for_part(self, part: Part, augment: dict[str, Any] | None = None) -> Scenario:
        """This scenario with every series source drawing its windows from ``part`` ("train",
        "validation", "test" or "all"), and with ``augment`` (an :class:`Augment` as a dict) if
        given; unchanged without series sources. Validated, so a part too short for the horizon
        is an error here, not at the first episode."""
        if not any(isinstance(s, SeriesSource) for s in self.sources.values()):
            return self
        data = self.model_dump(by_alias=True)
        for name, source in self.sources.items():
            if isinstance(source, SeriesSource):
                data["sources"][name]["part"] = part
                if augment is not None:
                    data["sources"][name]["augment"] = augment
        from pydantic import ValidationError

        from .base import ScenarioError
        from .loading import format_validation_error

        try:
            return Scenario.model_validate(data)
        except ValidationError as exc:
            raise ScenarioError(format_validation_error(exc, data, f"{self.name} (part {part!r})")) from None

    def laws_at_speed(self) -> Scenario:
        """This scenario with every host's ``by_speed`` laws taken at its ``speed`` (the host
        then without ``by_speed``) and the stages placed there served and shared as those laws'
        fits had them: each linear in the log of the speed between the two fit sets around it,
        the nearest one's beyond them (:func:`laws_between`). The one reading of laws by speed:
        the simulator runs a scenario through it, so a replay at a run's own speed meets that
        day's laws. Log speed: a speed is a ratio, 1.1 to 1.2 as far as 1.2 to 1.31. Not beyond
        the ends: two or three days cannot tell a curve, and a line carried past them soon
        turns a law negative."""
        if not any(h.by_speed for h in self.hosts.values()):
            return self
        hosts, stages = dict(self.hosts), dict(self.stages)
        for name, host in self.hosts.items():
            if not host.by_speed:
                continue
            shares = {s: spec.cpu_share for s, spec in self.stages.items() if spec.host == name}
            mixed = laws_between(host.by_speed, host.speed, shares, host.cores)
            hosts[name] = _replace(host, by_speed=[], **mixed.laws)
            for stage, factor in mixed.services.items():
                stages[stage] = _replace(stages[stage], service=stages[stage].service.scaled(factor))
            for stage, share in mixed.cpu.items():
                stages[stage] = _replace(stages[stage], cpu=share)
            for stage in {**mixed.turnarounds, **mixed.dispatches}:
                levels = {"turnaround": mixed.turnarounds.get(stage, 1.0), "dispatch": mixed.dispatches.get(stage, 1.0)}
                stages[stage] = stages[stage].with_levels(**levels)
        return _replace(self, hosts=hosts, stages=stages)

    def starting_at(self, pools: dict[str, int]) -> Scenario:
        """This scenario with each stage ``pools`` names starting at that many workers (its
        ``initial``; ``min`` and ``max`` widened to include it), the others as they are. Why:
        a live run that started at other pools than the scenario's (``compare-app`` starts a
        static planner's run at its pool) is simulated from where it started, and a run held at
        its pools (``fit-growth``) at those pools: one meaning of "a run's starting pools"."""
        stages = dict(self.stages)
        for name, n in pools.items():
            if name not in stages or not 0 <= n <= MAX_WORKERS:
                raise ValueError(
                    f"starting pool {name}={n!r}: expected a stage of {sorted(stages)} and 0-{MAX_WORKERS} workers"
                )
            w = stages[name].workers
            stages[name] = _replace(stages[name], workers=_replace(w, initial=n, min=min(w.min, n), max=max(w.max, n)))
        return _replace(self, stages=stages) if pools else self

    def series_labels(self) -> list[str]:
        """The recorded series this scenario's load comes from (``dataset:column``), if any."""
        return [s.label for s in self.sources.values() if isinstance(s, SeriesSource)]

    def for_episode(self, streams: Streams) -> Scenario:
        """The concrete scenario of one episode: every series source with its window drawn and
        every randomized profile with its parameters drawn, each from a stream of its own (so a
        draw never shifts the arrival or service streams). What the simulator runs and what the
        clairvoyant reads; a scenario with nothing to draw is returned as is."""
        sources = {name: _episode_source(name, s, streams, self.horizon) for name, s in self.sources.items()}
        if all(sources[n] is s for n, s in self.sources.items()):
            return self
        return _replace(self, sources=sources)

    def calendar(self) -> tuple[float, float] | None:
        """``(start, speed)``: the calendar second at t=0 and calendar seconds per simulated
        second, from the first series source with a drawn window; None when the load has no
        calendar of its own (time-of-day features then follow the load cycle's period)."""
        for source in self.sources.values():
            if isinstance(source, SeriesSource) and source.window is not None:
                return source.rate.start, source.rate.speed
        return None

    def routes(self) -> dict[str, Route]:
        """Every route, keyed by its owner (a source's ``to``, a stage's ``next``)."""
        owners: dict[str, Any] = {n: s.to for n, s in self.sources.items()}
        owners.update({n: s.next for n, s in self.stages.items()})
        return owners

    def fan_outs(self) -> dict[str, Fork | Scatter]:
        """The fork and scatter routes, keyed by their owner (a source or stage name)."""
        return {n: r for n, r in self.routes().items() if isinstance(r, FAN_OUTS)}

    def join_names(self) -> list[str]:
        """The joins of the scenario's fan-outs by the names metrics give them: the join stage,
        or ``"exit"`` for parts that meet at the exit (``join: null``)."""
        return list(dict.fromkeys(JOIN_AT_EXIT if r.join is None else r.join for r in self.fan_outs().values()))

    def class_slas(self) -> list[Sla]:
        """Each job class's deadline rule, in declared order (``[sla]`` without classes)."""
        return [c.sla or self.sla for c in self.classes.values()] or [self.sla]

    def controllable_splits(self) -> dict[str, Split]:
        """The splits a planner may change, keyed by their owner (a source or stage name)."""
        return {n: r for n, r in self.routes().items() if isinstance(r, Split) and r.controllable}


def _episode_source(name: str, source: Any, streams: Streams, horizon: float) -> Any:
    """``source`` as one episode draws it (itself when it has nothing random to draw)."""
    if isinstance(source, SeriesSource):
        return source if source.window is not None else source.draw(streams.get("window", name), horizon)
    update = {}
    rate = getattr(source, "rate", None)
    if rate is not None and hasattr(rate, "for_episode"):
        drawn = rate.for_episode(streams.get("profile", f"{name}/rate"))
        if drawn is not rate:
            update["rate"] = drawn
    bad = source.quality.bad_rate
    if hasattr(bad, "for_episode"):
        drawn = bad.for_episode(streams.get("profile", f"{name}/bad_rate"))
        if drawn is not bad:
            update["quality"] = _replace(source.quality, bad_rate=drawn)
    return _replace(source, **update) if update else source


def _expected_count(source: Any, horizon: float) -> float:
    if isinstance(source, PoissonSource):
        return source.rate.integral(horizon)
    if isinstance(source, SeriesSource):
        return grid_integral(source.rate, horizon)
    if isinstance(source, MMPPSource):
        # Exact over a finite horizon from the initial state: the chance of state 0 at t is
        # pi0 + (p0 - pi0) exp(-(s0 + s1) t). The stationary rate alone misses a first stay at a
        # high rate that the horizon never leaves.
        (r0, r1), (s0, s1) = source.rates, source.switch_rates
        pi0, p0, speed = s1 / (s0 + s1), float(source.initial_state == 0), s0 + s1
        transient = -np.expm1(-speed * horizon) / speed
        return (r0 * pi0 + r1 * (1 - pi0)) * horizon + (r0 - r1) * (p0 - pi0) * transient
    times, _ = load_trace(source.file, source.time_column, source.size_column)
    return float(np.searchsorted(times, horizon))


def _thinning_draws(source: Any, horizon: float) -> float:
    """The candidates a time-varying rate is thinned from (:func:`~.streams.poisson_arrivals`
    draws at the peak rate over the whole horizon): a spike of 10^9/s lasting a microsecond adds
    a thousand arrivals but 10^9 draws per second of horizon."""
    if isinstance(source, SeriesSource):  # an episode's window: at most the series' scaled peak
        return source.peak_bound() * horizon
    if isinstance(source, PoissonSource) and getattr(source.rate, "shape", None) != "constant":
        return source.rate.peak() * horizon
    return 0.0


def _trapping_cycle(scenario: Scenario) -> list[str]:
    """A cycle of stages from which no route reaches the exit, or ``[]``.

    Every branch counts, including those with p=0, because a planner may raise them later."""
    succ = {n: s.next.targets() for n, s in scenario.stages.items()}
    can_exit: set[str] = set()
    changed = True
    while changed:
        changed = False
        for node, targets in succ.items():
            if node not in can_exit and any(t is None or t in can_exit for t in targets):
                can_exit.add(node)
                changed = True
    trapped = [n for n in scenario.stages if n not in can_exit]
    if not trapped:
        return []
    # Every trapped stage only leads to trapped stages, so walking forward must revisit one.
    path, node = [], trapped[0]
    while node not in path:
        path.append(node)
        node = next(t for t in succ[node] if t is not None)
    return [*path[path.index(node) :], node]


def _unjoinable_parts(scenario: Scenario) -> list[str]:
    """One line per fan-out whose parts can miss their join: a path from a part's first stage
    that reaches the exit without passing the join. That join could never complete, and the
    item would never leave. (A join at the exit, ``join: null``, is always reached.)

    A nested fan-out on the way counts as a step to its own join (its parts are checked on
    their own); every branch counts, including those with p=0, as in :func:`_trapping_cycle`."""
    owners = {f"sources.{n}.to": s.to for n, s in scenario.sources.items()}
    owners.update({f"stages.{n}.next": s.next for n, s in scenario.stages.items()})
    problems = []
    for where, route in owners.items():
        if not isinstance(route, FAN_OUTS) or route.join is None:
            continue
        for first in route.branches():
            path = _path_to_exit(scenario, first, route.join)
            if path:
                problems.append(
                    f"{where}: a part sent to {first!r} can leave the system ({' -> '.join(path)} -> exit) "
                    f"without reaching its join {route.join!r}; expected every path of a part to lead to {route.join!r}"
                )
    return problems


def _path_to_exit(scenario: Scenario, start: str, join: str) -> list[str]:
    """A path of stages from ``start`` to the exit that avoids ``join``, or ``[]``."""
    parent: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        node = frontier.pop()
        if node == join:
            continue
        route = scenario.stages[node].next
        nexts = [route.join] if isinstance(route, FAN_OUTS) else route.targets()
        for target in nexts:
            if target is None:
                path = [node]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])  # type: ignore[arg-type]
                return path[::-1]
            if target not in parent:
                parent[target] = node
                frontier.append(target)
    return []


def _host_problems(scenario: Scenario) -> list[str]:
    """A stage's ``host`` must name one of the scenario's hosts; ``cpu`` and ``contention`` need one."""
    problems = []
    for name, stage in scenario.stages.items():
        if stage.host is not None and stage.host not in scenario.hosts:
            hosts = ", ".join(scenario.hosts) or "none declared in hosts"
            problems.append(f"stages.{name}.host: {stage.host!r} is not a host; expected one of: {hosts}")
        if stage.host is None and stage.cpu is not None:
            problems.append(f"stages.{name}.cpu: {stage.cpu} without a host; expected a host for the stage's CPU work")
        if stage.host is None and stage.contention is not None:
            problems.append(f"stages.{name}.contention: given without a host; expected a host whose load it counts")
    for name, host in scenario.hosts.items():
        placed = [s for s, spec in scenario.stages.items() if spec.host == name]
        laws = [(law, getattr(host, law)) for law in ("turnaround_growth", "dispatch_growth")]
        laws += [(f"by_speed.{i}.{law}", getattr(e, law)) for i, e in enumerate(host.by_speed) for law in
                 ("turnaround_growth", "dispatch_growth")]  # fmt: skip
        for where, growth in laws:
            strangers = sorted(set(growth.stages) - set(placed)) if growth is not None else []
            if strangers:
                problems.append(f"hosts.{name}.{where}.stages: {strangers} are not stages placed on {name!r}; "
                                f"expected some of: {', '.join(placed) or 'none placed there'}")  # fmt: skip
        for i, entry in enumerate(host.by_speed):
            for key in ("services", "cpu", "turnarounds", "dispatches"):
                strangers = sorted(set(getattr(entry, key)) - set(placed))
                if strangers:
                    problems.append(
                        f"hosts.{name}.by_speed.{i}.{key}: {strangers} are not stages placed on {name!r}; "
                        f"expected some of: {', '.join(placed) or 'none placed there'}"
                    )
    return problems


def _class_problems(scenario: Scenario) -> list[str]:
    """Job classes: every source of a scenario with classes gives their shares (and only theirs);
    a scenario without classes has no shares and no priority stage."""
    problems = []
    names = list(scenario.classes)
    for name, source in scenario.sources.items():
        if source.classes is None:
            if names:
                problems.append(f"sources.{name}.classes: missing; expected the share of each class of {names}")
            continue
        unknown = sorted(set(source.classes) - set(names))
        if unknown:
            problems.append(f"sources.{name}.classes: {unknown} are not job classes; expected names from {names}")
    if not names:
        for name, stage in scenario.stages.items():
            if stage.discipline == "priority":
                problems.append(
                    f"stages.{name}.discipline: 'priority' needs job classes; expected 'fifo' or a classes: map"
                )
    return problems


def _fan_out_weight(
    scenario: Scenario, owner: str, route: Fork | Scatter, memo: dict[str, float], stack: tuple[str, ...]
) -> float:
    """Most parts ``route`` (the fan-out after ``owner``) makes, counting the fan-outs its parts
    meet before its join (see :meth:`Scenario.parts_per_item`)."""
    if owner in memo:
        return memo[owner]
    if owner in stack:
        return math.inf
    inner = 0.0
    for stage in _stages_before(scenario, route.branches(), route.join):
        nested = scenario.stages[stage].next
        if isinstance(nested, FAN_OUTS):
            inner += _fan_out_weight(scenario, stage, nested, memo, (*stack, owner))
    memo[owner] = route.max_parts() * (1.0 + inner)
    return memo[owner]


def _stages_before(scenario: Scenario, starts: list[str], join: str | None) -> set[str]:
    """Stages reachable from ``starts`` without passing ``join``."""
    seen: set[str] = set()
    frontier = [s for s in starts if s != join]
    while frontier:
        node = frontier.pop()
        if node in seen:
            continue
        seen.add(node)
        frontier += [t for t in scenario.stages[node].next.targets() if t is not None and t != join and t not in seen]
    return seen
