"""Profiles: a non-negative function of simulated time, used for arrival rates and bad-item rates.

Each is vectorized (``at`` takes an array) because thinning evaluates thousands at once.

Some profiles are *randomized*: their YAML gives ranges, and each episode draws concrete values
from them (:meth:`_Profile.for_episode`), so that the timing and size of a load cycle or a drift
differ from seed to seed and no planner can win by reading the clock. The model draws once per
episode and source, from a stream of its own, and runs on the drawn profile. Until then a
randomized profile reads as its mean (documented on each), which is what estimates made before
any episode (``Scenario.expected_arrivals``) need; its ``peak`` bounds every draw, which is what
thinning and normalization need."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator

from .base import NonNegFloat, PositiveFloat, _Strict

MAX_EPISODES = 100
"""Most drift episodes one episode of simulation may draw (bounds the work of ``at``)."""
MAX_PULSES = 10_000


class _Profile(_Strict):
    """What every profile offers: ``at`` (vectorized), ``peak`` and ``for_episode``."""

    def at(self, t: np.ndarray) -> np.ndarray:
        """The value at each time of ``t`` (seconds)."""
        raise NotImplementedError

    def peak(self) -> float:
        """An upper bound of ``at`` over all time (and, for a randomized profile, over all draws)."""
        raise NotImplementedError

    def integral(self, horizon: float) -> float:
        """The integral of ``at`` over ``[0, horizon]`` (a rate's expected arrivals): from a fine
        grid, unless the shape knows it exactly."""
        return grid_integral(self, horizon)

    @property
    def randomized(self) -> bool:
        """Whether :meth:`for_episode` draws anything (False: it returns the profile itself)."""
        return False

    def for_episode(self, rng: np.random.Generator) -> Profile:
        """This episode's concrete profile, drawn from ``rng``; a fixed profile is its own draw
        (and draws nothing, so a fixed profile never moves another stream's numbers)."""
        return self  # type: ignore[return-value]


def grid_integral(rate: Any, horizon: float) -> float:
    """The integral of ``rate.at`` over ``[0, horizon]`` as the mean over 20,001 points: any
    rate (a profile, a series window)."""
    grid = np.linspace(0.0, horizon, 20_001)
    return float(np.mean(rate.at(grid))) * horizon


# --------------------------------------------------------------------------------------------
# [low, high] ranges, as YAML writes them
# --------------------------------------------------------------------------------------------
def _pair(value: Any) -> Any:
    """YAML and JSON write a pair as a list; strict mode wants a tuple (its items stay strict)."""
    return tuple(value) if isinstance(value, list) else value


def _ordered(pair: tuple[Any, Any], info: ValidationInfo) -> tuple[Any, Any]:
    if pair[0] > pair[1]:
        raise ValueError(f"{info.field_name} is {list(pair)}; expected [low, high] with low <= high")
    return pair


def _range(item: Any) -> Any:
    return Annotated[tuple[item, item], BeforeValidator(_pair), AfterValidator(_ordered)]


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
FiniteRange = _range(FiniteFloat)
NonNegRange = _range(NonNegFloat)
PositiveRange = _range(PositiveFloat)
CountRange = _range(Annotated[int, Field(ge=0, le=MAX_EPISODES)])


def _uniform(bounds: tuple[float, float] | None, u: float, default: float) -> float:
    """``u`` in [0, 1) mapped onto ``bounds`` (never past its high end), or ``default`` without bounds."""
    if bounds is None:
        return default
    low, high = bounds
    return float(min(low + u * (high - low), high))


def _mid(bounds: tuple[float, float]) -> float:
    return (bounds[0] + bounds[1]) / 2


# --------------------------------------------------------------------------------------------
# Fixed shapes
# --------------------------------------------------------------------------------------------
class Constant(_Profile):
    shape: Literal["constant"] = "constant"
    value: NonNegFloat

    def at(self, t: np.ndarray) -> np.ndarray:
        return np.full(np.shape(t), self.value, dtype=float)

    def peak(self) -> float:
        return self.value


class Piecewise(_Profile):
    """``values[i]`` holds from ``times[i]`` until ``times[i+1]``; optionally repeating every ``period``."""

    shape: Literal["piecewise"]
    times: list[NonNegFloat] = Field(min_length=1)
    values: list[NonNegFloat] = Field(min_length=1)
    period: PositiveFloat | None = None

    @model_validator(mode="after")
    def _check(self) -> Piecewise:
        if len(self.times) != len(self.values):
            raise ValueError(
                f"times has {len(self.times)} entries and values {len(self.values)}; expected the same number"
            )
        if self.times[0] != 0:
            raise ValueError(f"times[0] is {self.times[0]}; expected 0 (the profile starts at t=0)")
        if any(b <= a for a, b in zip(self.times, self.times[1:], strict=False)):
            raise ValueError(f"times {self.times} are not strictly increasing")
        if self.period is not None and self.times[-1] >= self.period:
            raise ValueError(f"last time {self.times[-1]} is not below period {self.period}")
        return self

    def at(self, t: np.ndarray) -> np.ndarray:
        tt = np.mod(t, self.period) if self.period is not None else t
        return np.asarray(self.values)[np.searchsorted(self.times, tt, side="right") - 1]

    def peak(self) -> float:
        return max(self.values)


class Spike(_Profile):
    """``base`` everywhere except ``peak`` during ``[start, start + duration)``: a step or a burst."""

    shape: Literal["spike"]
    base: NonNegFloat
    peak_value: NonNegFloat = Field(alias="peak")
    start: NonNegFloat
    duration: PositiveFloat = math.inf

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    def at(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t)
        return np.where((t >= self.start) & (t < self.start + self.duration), self.peak_value, self.base)

    def peak(self) -> float:
        return max(self.base, self.peak_value)

    def integral(self, horizon: float) -> float:
        """Exact: a grid can land on a spike narrower than its step, or step over it."""
        inside = max(0.0, min(horizon, self.start + self.duration) - min(horizon, self.start))
        return self.base * horizon + (self.peak_value - self.base) * inside


class Ramp(_Profile):
    """``start_value`` until ``start``, linear to ``end_value`` at ``end``, then constant: a drift."""

    shape: Literal["ramp"]
    start: NonNegFloat
    end: NonNegFloat
    start_value: NonNegFloat
    end_value: NonNegFloat

    @model_validator(mode="after")
    def _check(self) -> Ramp:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} <= start {self.start}; expected end > start")
        return self

    def at(self, t: np.ndarray) -> np.ndarray:
        return np.interp(t, [self.start, self.end], [self.start_value, self.end_value])

    def peak(self) -> float:
        return max(self.start_value, self.end_value)


class Pulse(_Strict):
    """One episode of a :class:`Pulses` profile: from ``base`` at ``start`` linearly up (or down)
    to ``height`` over ``ramp`` seconds, held, and back to ``base`` at ``start + length``."""

    start: NonNegFloat
    length: PositiveFloat
    height: NonNegFloat
    ramp: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _check(self) -> Pulse:
        if 2 * self.ramp > self.length:
            raise ValueError(
                f"ramp is {self.ramp:g} and length {self.length:g}; expected 2 * ramp <= length "
                "(the pulse rises and falls within its length)"
            )
        return self


class Pulses(_Profile):
    """``base`` except during its pulses (in time order, none overlapping): a fixed schedule of
    drift episodes, as an :class:`Episodes` profile draws them (or as written by hand, to
    replay one)."""

    shape: Literal["pulses"]
    base: NonNegFloat
    pulses: list[Pulse] = Field(default_factory=list, max_length=MAX_PULSES)

    @model_validator(mode="after")
    def _check(self) -> Pulses:
        for i, (a, b) in enumerate(zip(self.pulses, self.pulses[1:], strict=False)):
            if a.start + a.length > b.start:
                raise ValueError(
                    f"pulses[{i + 1}] starts at {b.start:g}, before pulses[{i}] ends at {a.start + a.length:g}; "
                    "expected pulses in time order, none overlapping"
                )
        return self

    def at(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        if not self.pulses:
            return np.full(t.shape, self.base)
        starts, lengths, heights, ramps = (
            np.array([getattr(p, key) for p in self.pulses]) for key in ("start", "length", "height", "ramp")
        )
        i = np.searchsorted(starts, t, side="right") - 1  # the last pulse that started by t
        j = np.maximum(i, 0)
        x = t - starts[j]
        inside = (i >= 0) & (x < lengths[j])
        r = np.where(ramps[j] > 0, ramps[j], 1.0)
        edge = np.clip(np.minimum(x, lengths[j] - x), 0.0, r)  # seconds to the nearer end, up to the ramp
        f = np.where(ramps[j] > 0, edge / r, 1.0)
        h = heights[j]
        # Clipped to [min, max] of base and height so that rounding never passes the peak.
        value = np.clip(self.base + (h - self.base) * f, np.minimum(h, self.base), np.maximum(h, self.base))
        return np.where(inside, value, self.base)

    def peak(self) -> float:
        return max([self.base, *(p.height for p in self.pulses)])


# --------------------------------------------------------------------------------------------
# Randomized shapes
# --------------------------------------------------------------------------------------------
class Diurnal(_Profile):
    """A sinusoid ``base + amplitude * cos(2*pi*(t - peak_time)/period)``: a daily load cycle.

    Optionally randomized per episode (each range drawn uniformly): ``peak_time_jitter`` seconds
    added to ``peak_time``; ``scale`` multiplies base and amplitude (the load level);
    ``amplitude_scale`` multiplies the amplitude on top (the depth of the swing). Undrawn, it
    reads with every range at its midpoint; without ranges it is exactly the sinusoid above."""

    shape: Literal["diurnal"]
    base: PositiveFloat
    amplitude: NonNegFloat
    period: PositiveFloat = 86400.0
    peak_time: NonNegFloat = 0.0
    peak_time_jitter: FiniteRange | None = None
    scale: PositiveRange | None = None
    amplitude_scale: NonNegRange | None = None

    @model_validator(mode="after")
    def _check(self) -> Diurnal:
        if self.amplitude > self.base:
            raise ValueError(
                f"amplitude {self.amplitude} > base {self.base}; expected amplitude <= base "
                "so that the rate never goes negative"
            )
        if self.amplitude_scale is not None and self.amplitude * self.amplitude_scale[1] > self.base:
            raise ValueError(
                f"amplitude_scale is {list(self.amplitude_scale)}: amplitude {self.amplitude:g} x "
                f"{self.amplitude_scale[1]:g} > base {self.base:g}; expected amplitude x amplitude_scale "
                "high <= base so that the rate never goes negative"
            )
        return self

    @property
    def randomized(self) -> bool:
        return any(r is not None for r in (self.peak_time_jitter, self.scale, self.amplitude_scale))

    @property
    def phase_drawn(self) -> bool:
        """Whether each episode draws where in the cycle the peak falls: then the clock does not
        tell the phase, and a forecaster must not assume one (see ``season_lengths``)."""
        return self.peak_time_jitter is not None and self.peak_time_jitter[1] > self.peak_time_jitter[0]

    def _drawn(self, u: np.ndarray) -> tuple[float, float, float]:
        """(base, amplitude, peak_time) for the uniforms ``u`` (jitter, scale, amplitude scale)."""
        scale = _uniform(self.scale, u[1], 1.0)
        base = self.base * scale
        amplitude = min(self.amplitude * scale * _uniform(self.amplitude_scale, u[2], 1.0), base)
        return base, amplitude, (self.peak_time + _uniform(self.peak_time_jitter, u[0], 0.0)) % self.period

    def at(self, t: np.ndarray) -> np.ndarray:
        if not self.randomized:
            base, amplitude, peak_time = self.base, self.amplitude, self.peak_time
        else:
            base, amplitude, peak_time = self._drawn(np.array([0.5, 0.5, 0.5]))
        return base + amplitude * np.cos(2 * np.pi * (np.asarray(t) - peak_time) / self.period)

    def peak(self) -> float:
        if not self.randomized:
            return self.base + self.amplitude
        scale = self.scale[1] if self.scale else 1.0
        amplitude_scale = self.amplitude_scale[1] if self.amplitude_scale else 1.0
        # The same products as _drawn at the highest draws: rounding is monotone, so this bounds them.
        return self.base * scale + self.amplitude * scale * amplitude_scale

    def for_episode(self, rng: np.random.Generator) -> Profile:
        """A fixed diurnal; draws three uniforms whatever the ranges, so that adding one range
        leaves the others' draws where they were."""
        if not self.randomized:
            return self
        base, amplitude, peak_time = self._drawn(rng.random(3))
        return Diurnal(shape="diurnal", base=base, amplitude=amplitude, period=self.period, peak_time=peak_time)


class Episodes(_Profile):
    """``base``, with a random schedule of episodes per simulation episode: ``count`` of them
    (an integer range), each ``length`` seconds long at ``height`` with ``ramp`` seconds of rise
    and of fall, all within ``within`` = [a, b], none overlapping and at least ``gap`` apart.
    Every episode's numbers are drawn uniformly from their ranges, and the starts uniformly over
    the schedules that fit. Drawn, it is a :class:`Pulses` profile.

    Undrawn, it reads as its mean: ``base`` outside ``within`` and, inside, ``base`` plus the
    expected excess of a schedule spread evenly (mean count x (mean height - base) x (mean length
    - mean ramp) / (b - a)); so its integral over a horizon that covers ``within`` is the mean of
    the draws' integrals."""

    shape: Literal["episodes"]
    base: NonNegFloat
    count: CountRange
    within: NonNegRange
    length: PositiveRange
    height: NonNegRange
    ramp: NonNegRange = (0.0, 0.0)
    gap: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _check(self) -> Episodes:
        if self.count[1] < 1:
            raise ValueError(f"count is {list(self.count)}; expected a high end >= 1 (some episodes)")
        if 2 * self.ramp[1] > self.length[0]:
            raise ValueError(
                f"ramp is {list(self.ramp)} and length {list(self.length)}; expected 2 x ramp high "
                "<= length low, so that every episode rises and falls within its length"
            )
        n, span = self.count[1], self.within[1] - self.within[0]
        need = n * self.length[1] + (n - 1) * self.gap
        if need > span:
            raise ValueError(
                f"within is {list(self.within)} ({span:g} s); expected room for {n} episodes of up to "
                f"{self.length[1]:g} s with gap {self.gap:g} s ({need:g} s): a longer within, fewer or "
                "shorter episodes"
            )
        return self

    @property
    def randomized(self) -> bool:
        return True

    def _mean_level(self) -> float:
        span = self.within[1] - self.within[0]
        excess = _mid(self.count) * (_mid(self.height) - self.base) * (_mid(self.length) - _mid(self.ramp)) / span
        return min(self.base + excess, self.peak())

    def at(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        low, high = self.within
        return np.where((t >= low) & (t < high), self._mean_level(), self.base)

    def peak(self) -> float:
        return max(self.base, self.height[1])

    def for_episode(self, rng: np.random.Generator) -> Profile:
        """A :class:`Pulses` schedule. Draws the count, then four uniforms per possible episode
        whatever the options, so that changing one range (say the heights) leaves the starts
        and lengths of the same seed where they were."""
        n = int(rng.integers(self.count[0], self.count[1] + 1))
        u = rng.random((4, self.count[1]))
        lengths = [_uniform(self.length, x, 0.0) for x in u[0, :n]]
        heights = [_uniform(self.height, x, 0.0) for x in u[1, :n]]
        ramps = [_uniform(self.ramp, x, 0.0) for x in u[2, :n]]
        low, high = self.within
        free = max((high - low) - sum(lengths) - (n - 1) * self.gap, 0.0)
        # Sorted uniform points in the free time are the idle stretches before each episode:
        # every non-overlapping schedule is equally likely. Built forward, so that no rounding
        # can make two episodes overlap.
        offsets = np.sort(u[3, :n]) * free
        pulses, cursor, previous = [], low, 0.0
        for length, height, ramp, offset in zip(lengths, heights, ramps, offsets.tolist(), strict=True):
            start = cursor + (offset - previous)
            pulses.append(Pulse(start=start, length=length, height=height, ramp=ramp))
            cursor, previous = start + length + self.gap, offset
        return Pulses(shape="pulses", base=self.base, pulses=pulses)


Profile = Annotated[Constant | Piecewise | Diurnal | Spike | Ramp | Pulses | Episodes, Field(discriminator="shape")]


def _rate_shorthand(value: Any) -> Any:
    """A bare number is a constant rate; it must be positive (a zero rate source is a typo)."""
    if isinstance(value, (bool, str)):
        raise ValueError(f"expected a rate > 0 (items/s) or a profile such as {{shape: diurnal, ...}}, got {value!r}")
    if isinstance(value, (int, float)):
        if not value > 0 or math.isinf(value):
            raise ValueError(f"expected a finite rate > 0, got {value!r}")
        return {"shape": "constant", "value": value}
    return value


def _probability_shorthand(value: Any) -> Any:
    if isinstance(value, (bool, str)):
        raise ValueError(f"expected a probability in [0, 1] or a profile such as {{shape: ramp, ...}}, got {value!r}")
    if isinstance(value, (int, float)):
        if not 0 <= value <= 1:
            raise ValueError(f"expected a probability in [0, 1], got {value!r}")
        return {"shape": "constant", "value": value}
    return value


RateProfile = Annotated[Profile, BeforeValidator(_rate_shorthand)]
ProbabilityProfile = Annotated[Profile, BeforeValidator(_probability_shorthand)]
