"""A stage's services' spread: one rule for a live run (its task events) and its simulation
(the model's counters), so that the two worlds' ``service_cv_<stage>`` mean the same thing.

Why it is read: the waits and the tail of a queue answer to how spread its services are, not
only to their mean. On the example app on a 2-core VM the live services' coefficient of
variation grew with the run's load (+0.3 to +0.4 a CPU second a second, per stage) two to three
times as fast as the simulation's under the CPU law the fit chose, and the simulated p95 latency fell
short as the load rose (docs/sim_to_real.md, "The tail against the load").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Protocol

MIN_SERVICES = 20
"""Fewer services than this measure no spread (NaN): a handful of times has no telling cv."""


def service_cv(total: float, squares: float, count: int) -> float:
    """The coefficient of variation (population standard deviation over mean) of ``count``
    services of ``total`` seconds whose squares sum to ``squares``; NaN below
    :data:`MIN_SERVICES` or without time."""
    if count < MIN_SERVICES or total <= 0:
        return math.nan
    mean = total / count
    return math.sqrt(max(squares / count - mean * mean, 0.0)) / mean


def service_cv_of(seconds: Sequence[float]) -> float:
    """:func:`service_cv` of a list of services (a live run's spans)."""
    return service_cv(math.fsum(seconds), math.fsum(s * s for s in seconds), len(seconds))


class HostedServices(Protocol):
    """A stage's counters of its finished services on a host (the simulator's ``StageCounters``;
    named here by shape, so that the runtime imports no simulator)."""

    @property
    def hosted_service_sum(self) -> float: ...

    @property
    def hosted_service_squares(self) -> float: ...

    @property
    def hosted_services(self) -> int: ...


def hosted_cv(counters: Iterable[HostedServices]) -> float:
    """:func:`service_cv` of one stage's hosted services over one simulation or several (its
    seeds): their sums added first, so a seed of few services weighs by its count, as the
    services pooled from every seed would (NaN off any host: no service counted)."""
    counters = list(counters)
    return service_cv(
        math.fsum(c.hosted_service_sum for c in counters),
        math.fsum(c.hosted_service_squares for c in counters),
        sum(c.hosted_services for c in counters),
    )
