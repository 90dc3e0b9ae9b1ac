"""A bounded distribution of durations for a whole live run: percentiles without keeping every value.

A live monitor runs for days; keeping every wait and latency (as a list) grows without bound. A
:class:`LogHistogram` keeps a fixed number of log-spaced buckets instead (the idea of DDSketch,
Masson et al. 2019): bucket ``i >= 1`` holds the values in ``[smallest * g**(i-1), smallest * g**i)``
with ``g = (1 + a) / (1 - a)``, and stands for the value ``2 * smallest * g**i / (g + 1)``, which
is within a relative error ``a`` of every value in the bucket. The count, sum, least and largest
value are kept exactly, so the mean is exact and no estimate leaves ``[least, largest]``.
"""

from __future__ import annotations

import math

import numpy as np


class LogHistogram:
    """Counts of nonnegative values in log-spaced buckets.

    Guarantee: ``percentile(q)`` is within ``relative_error`` (relative to the true value) of
    ``numpy.percentile(values, q)`` (linear interpolation between order statistics) for values in
    ``[smallest, largest]``; a value below ``smallest`` (0 included) counts as 0, so there the
    error is at most ``smallest`` in absolute terms. Memory: ``buckets`` Python ints (about 1,700
    for the defaults: 1 % error over 1 microsecond to 30 years), whatever the number of values."""

    def __init__(self, relative_error: float = 0.01, smallest: float = 1e-6, largest: float = 1e9):
        if not 0 < relative_error < 1 or not 0 < smallest < largest:
            raise ValueError(f"need 0 < relative_error < 1 and 0 < smallest < largest; got {relative_error}, "
                             f"{smallest}, {largest}")  # fmt: skip
        self.relative_error, self.smallest, self.largest = relative_error, smallest, largest
        self._gamma = (1 + relative_error) / (1 - relative_error)
        self._log_gamma = math.log(self._gamma)
        self.buckets = math.ceil(math.log(largest / smallest) / self._log_gamma) + 2
        self._counts = [0] * self.buckets  # bucket 0: values below ``smallest``
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def _index(self, value: float) -> int:
        if value < self.smallest:
            return 0
        if value >= self.largest:
            return self.buckets - 1
        return min(self.buckets - 1, int(math.log(value / self.smallest) / self._log_gamma) + 1)

    def add(self, value: float) -> None:
        """Count one value (a negative one, from clock jitter, counts as 0 in the buckets)."""
        self._counts[self._index(value)] += 1
        self.count += 1
        self.sum += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def extend(self, values: list[float]) -> None:
        for value in values:
            self.add(value)

    def __len__(self) -> int:
        return self.count

    @property
    def mean(self) -> float:
        """The exact mean (NaN when empty)."""
        return self.sum / self.count if self.count else math.nan

    def _representative(self, index: np.ndarray) -> np.ndarray:
        value = 2 * self.smallest * self._gamma ** index.astype(float) / (self._gamma + 1)
        return np.clip(np.where(index == 0, 0.0, value), self.min, self.max)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100), interpolated between order statistics as numpy's
        default; NaN when empty."""
        if not 0 <= q <= 100:
            raise ValueError(f"q must be in [0, 100], got {q}")
        if self.count == 0:
            return math.nan
        position = q / 100 * (self.count - 1)
        ranks = np.array([math.floor(position), min(math.floor(position) + 1, self.count - 1)])
        cumulative = np.cumsum(self._counts)
        low, high = self._representative(np.searchsorted(cumulative, ranks, side="right"))
        low = self.min if ranks[0] == 0 else self.max if ranks[0] == self.count - 1 else low  # extremes are exact
        high = self.max if ranks[1] == self.count - 1 else high
        return float(low + (position - ranks[0]) * (high - low))
