"""Profiles: a non-negative function of simulated time, used for arrival rates and bad-item rates.

Each is vectorized (``at`` takes an array) because thinning evaluates thousands at once."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BeforeValidator, ConfigDict, Field, model_validator

from .base import NonNegFloat, PositiveFloat, _Strict


class Constant(_Strict):
    shape: Literal["constant"] = "constant"
    value: NonNegFloat

    def at(self, t: np.ndarray) -> np.ndarray:
        return np.full(np.shape(t), self.value, dtype=float)

    def peak(self) -> float:
        return self.value


class Piecewise(_Strict):
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


class Diurnal(_Strict):
    """A sinusoid ``base + amplitude * cos(2*pi*(t - peak_time)/period)``: a daily load cycle."""

    shape: Literal["diurnal"]
    base: PositiveFloat
    amplitude: NonNegFloat
    period: PositiveFloat = 86400.0
    peak_time: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _check(self) -> Diurnal:
        if self.amplitude > self.base:
            raise ValueError(
                f"amplitude {self.amplitude} > base {self.base}; expected amplitude <= base "
                "so that the rate never goes negative"
            )
        return self

    def at(self, t: np.ndarray) -> np.ndarray:
        return self.base + self.amplitude * np.cos(2 * np.pi * (np.asarray(t) - self.peak_time) / self.period)

    def peak(self) -> float:
        return self.base + self.amplitude


class Spike(_Strict):
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


class Ramp(_Strict):
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


Profile = Annotated[Constant | Piecewise | Diurnal | Spike | Ramp, Field(discriminator="shape")]


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
