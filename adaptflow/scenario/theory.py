"""Closed-form queueing results the simulator is checked against (and planners staff with).

All times in seconds, rates per second. References: Kleinrock, *Queueing Systems* vol. 1;
Gross and Harris, *Fundamentals of Queueing Theory*.
"""

from __future__ import annotations

import math
from collections.abc import Iterator


def erlang_b_steps(offered_load: float, most: int) -> Iterator[tuple[int, float]]:
    """Erlang B with k = 1, 2, ..., ``most`` servers (``offered_load`` in Erlangs), one step of
    its stable recursion each: :func:`erlang_c` takes the last, and the staffing rule searches
    them (its tests count its work by these steps)."""
    b = 1.0
    for k in range(1, most + 1):
        b = offered_load * b / (k + offered_load * b)
        yield k, b


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits in an M/M/c queue (Erlang C).

    ``offered_load`` is a = lambda / mu in Erlangs; requires a < servers. Computed through the
    Erlang B recursion, which is numerically stable for hundreds of servers."""
    if servers < 1:
        raise ValueError(f"servers must be >= 1, got {servers}")
    if not 0 <= offered_load < servers:
        raise ValueError(f"offered load {offered_load} must be in [0, {servers}) for a stable queue")
    b = 1.0
    for _, step in erlang_b_steps(offered_load, servers):
        b = step  # the last: Erlang B with all the servers
    rho = offered_load / servers
    return b / (1 - rho + rho * b)


def mmc_mean_wait(arrival_rate: float, mean_service: float, servers: int) -> float:
    """Mean time in queue (before service) of an M/M/c queue."""
    a = arrival_rate * mean_service
    return erlang_c(servers, a) * mean_service / (servers - a)


def mg1_mean_wait(arrival_rate: float, mean_service: float, service_scv: float) -> float:
    """Pollaczek-Khinchine mean wait of an M/G/1 queue; ``service_scv`` is the squared
    coefficient of variation of service (0 for deterministic: M/D/1; 1 for M/M/1)."""
    rho = arrival_rate * mean_service
    if not 0 <= rho < 1:
        raise ValueError(f"utilization {rho} must be in [0, 1) for a stable queue")
    return rho * mean_service * (1 + service_scv) / (2 * (1 - rho))


def min_servers_for_wait(arrival_rate: float, mean_service: float, target_wait: float) -> int:
    """Fewest servers whose M/M/c mean wait is at most ``target_wait``."""
    c = max(1, math.floor(arrival_rate * mean_service) + 1)
    while mmc_mean_wait(arrival_rate, mean_service, c) > target_wait:
        c += 1
    return c
