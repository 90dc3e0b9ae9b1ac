"""Random processes of the model: named random streams, arrival processes and service samplers.

Speed matters here: a Python call into numpy per draw costs about a microsecond, which is most of
an item's budget. So every process draws in vectorized batches and hands values out one at a time
through a plain Python iterator; the sequence of values is the same as one-by-one draws from the
same stream would be, only faster.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator

import numpy as np

from .schema import MMPPSource, PoissonSource, SeriesSource, Service, Source, TraceSource, load_trace

BATCH = 4096
MAX_PIECE = 1 << 20  # arrivals one MMPP draw may hold (8 MiB of times)


class Streams:
    """Independent random streams, one per (kind, name), all derived from one generator.

    Why by name and not by order: adding a stage to a scenario or changing a planner must not
    shift the arrival sequence of an existing source, so that paired comparisons see the same
    load. The root entropy is drawn once from the generator handed to the model (for a Gymnasium
    env, ``self.np_random``)."""

    def __init__(self, rng: np.random.Generator):
        self._root = [int(x) for x in rng.integers(0, 2**63, size=2)]

    def get(self, kind: str, name: str) -> np.random.Generator:
        key = zlib.crc32(f"{kind}/{name}".encode())
        return np.random.default_rng(np.random.SeedSequence(self._root, spawn_key=(key,)))


# --------------------------------------------------------------------------------------------
# Arrival processes: each yields batches (times, sizes-or-None, covered_until): the absolute
# arrival times in the batch, and the time up to which the batch accounts for every arrival.
# --------------------------------------------------------------------------------------------
ArrivalBatches = Iterator[tuple[np.ndarray, np.ndarray | None, float]]


def poisson_arrivals(spec: PoissonSource | SeriesSource, rng: np.random.Generator) -> ArrivalBatches:
    """Homogeneous Poisson, or non-homogeneous by thinning (Lewis and Shedler): candidates at the
    peak rate, each kept with probability rate(t)/peak. Exact for any bounded rate profile, and
    for a series source's window (its rate is the series, its peak the window's)."""
    profile, peak = spec.rate, spec.rate.peak()
    constant = getattr(profile, "shape", None) == "constant"
    t = 0.0
    while True:
        candidates = t + np.cumsum(rng.exponential(1.0 / peak, BATCH))
        t = float(candidates[-1])
        if constant:
            yield candidates, None, t
        else:
            keep = rng.random(BATCH) * peak < profile.at(candidates)
            yield candidates[keep], None, t


def mmpp_arrivals(spec: MMPPSource, rng: np.random.Generator) -> ArrivalBatches:
    """Two-state MMPP: in state s for an Exp(switch_rates[s]) sojourn, arrivals within it are a
    Poisson(rates[s] * sojourn) count placed uniformly (the order statistics of a Poisson process).

    A sojourn expecting more than :data:`MAX_PIECE` arrivals is drawn in equal pieces, each its
    own Poisson count placed uniformly (the same process: counts on disjoint intervals are
    independent). Without that, one long stay at a high rate asks numpy for all of its arrivals at
    once, however far past the horizon they lie (a rate of 10^9 for a mean stay of 10^4 s is
    80 TB). Sojourns under the cap draw exactly as before, so seeded runs keep their numbers."""
    state, t = spec.initial_state, 0.0
    chunks: list[np.ndarray] = []
    pending = 0
    while True:
        end = t + rng.exponential(1.0 / spec.switch_rates[state])
        rate = spec.rates[state]
        pieces = max(1, math.ceil(rate * (end - t) / MAX_PIECE))
        step = (end - t) / pieces
        for k in range(pieces):
            start, stop = t + k * step, (end if k == pieces - 1 else t + (k + 1) * step)
            count = rng.poisson(rate * (stop - start))
            chunks.append(np.sort(rng.uniform(start, stop, count)))
            pending += count
            if pending >= BATCH // 4:
                yield np.concatenate(chunks), None, stop
                chunks, pending = [], 0
        t, state = end, 1 - state


def trace_arrivals(spec: TraceSource, rng: np.random.Generator) -> ArrivalBatches:
    """A replay: the same arrivals whatever the seed (a ``series`` source draws windows)."""
    times, sizes = load_trace(spec.file, spec.time_column, spec.size_column)
    yield times, sizes, np.inf


def arrival_batches(spec: Source, rng: np.random.Generator) -> ArrivalBatches:
    if isinstance(spec, PoissonSource | SeriesSource):
        return poisson_arrivals(spec, rng)
    if isinstance(spec, MMPPSource):
        return mmpp_arrivals(spec, rng)
    return trace_arrivals(spec, rng)


def arrivals_with_quality(
    spec: Source, arrivals_rng: np.random.Generator, quality_rng: np.random.Generator, horizon: float
) -> Iterator[tuple[float, float, bool]]:
    """(time, size, bad) for each arrival up to the horizon.

    Quality has a stream of its own, so a scenario that only changes its bad-rate keeps the same
    arrival times."""
    bad_rate = spec.quality.bad_rate
    never_bad = bad_rate.peak() == 0
    for times, sizes, covered_until in arrival_batches(spec, arrivals_rng):
        keep = times <= horizon
        times = times[keep]
        n = len(times)
        bad = [False] * n if never_bad else (quality_rng.random(n) < bad_rate.at(times)).tolist()
        size_list = sizes[keep].tolist() if sizes is not None else [1.0] * n
        yield from zip(times.tolist(), size_list, bad, strict=True)
        if covered_until >= horizon:
            return


def class_picker(shares: dict[str, float], names: list[str], rng: np.random.Generator) -> Callable[[], int]:
    """A zero-argument callable giving each new item's job class (its index in ``names``),
    drawn with the source's ``shares`` from ``rng`` (a stream of the source's own, so that a
    scenario that only adds classes keeps the same arrivals). One uniform per item, in batches."""
    weights = [shares.get(name, 0.0) for name in names]
    edges = np.cumsum(weights)
    last = max(k for k, w in enumerate(weights) if w > 0)
    edges[last:] = 2.0  # the round-off of the shares goes to the last class with a share

    def classes() -> Iterator[int]:
        while True:
            yield from np.searchsorted(edges, rng.random(BATCH), side="right").tolist()

    return classes().__next__


# --------------------------------------------------------------------------------------------
# Service times
# --------------------------------------------------------------------------------------------
def service_sampler(spec: Service, rng: np.random.Generator) -> Callable[[], float]:
    """A zero-argument callable returning the next service time (seconds) of one attempt."""
    if spec.dist == "deterministic":
        value = float(spec.mean)  # type: ignore[arg-type]
        return lambda: value

    def draw(n: int) -> np.ndarray:
        mean = spec.mean
        if spec.dist == "exponential":
            return rng.exponential(mean, n)
        if spec.dist == "lognormal":
            sigma2 = np.log1p(spec.cv**2)  # type: ignore[operator]
            return rng.lognormal(np.log(mean) - sigma2 / 2, np.sqrt(sigma2), n)  # type: ignore[arg-type]
        if spec.dist == "gamma":
            shape = 1.0 / spec.cv**2  # type: ignore[operator]
            return rng.gamma(shape, mean / shape, n)  # type: ignore[operator]
        return rng.choice(np.asarray(spec.samples, dtype=float), n)

    def values() -> Iterator[float]:
        while True:
            yield from draw(BATCH).tolist()

    return values().__next__
