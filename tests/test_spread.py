"""The services' spread (``service_cv_<stage>``): one rule for a live run and its simulation, the
model's counters of the services on a host, and what the sharing of the cores does to it."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from adaptflow.experiments.compare_live import simulated
from adaptflow.runtime.live.spread import MIN_SERVICES, hosted_cv, service_cv, service_cv_of
from adaptflow.simulator import Simulation

from .helpers import scenario, stage


def one_core_cv(workers: int, dist: str, rate: float, seed: int, horizon: float = 3000.0) -> float:
    """The spread of stage ``w``'s services: ``workers`` processes on a host of one core."""
    spec = scenario(
        {"w": stage(workers, dist, 1.0, host="h", cpu=1.0)}, rate=rate, horizon=horizon, hosts={"h": {"cores": 1.0}}
    )
    sim = Simulation(spec, rng=np.random.default_rng(seed))
    sim.run(horizon)
    w = sim.counters().stages["w"]
    assert w.hosted_services == w.completed  # every finished service on the host is counted
    return hosted_cv([w])


def test_the_rule_is_the_population_cv_and_reads_nothing_from_a_handful():
    assert service_cv_of([1.0, 3.0] * 10) == 0.5  # mean 2, standard deviation 1
    assert service_cv_of([2.0] * 30) == 0.0
    assert math.isnan(service_cv_of([1.0, 3.0] * ((MIN_SERVICES - 1) // 2)))
    assert math.isnan(service_cv(0.0, 0.0, 50))


def test_seeds_pool_their_services_before_the_spread_is_read():
    """Two seeds' counters: 20 services of 1 s and 20 of 3 s are one population of cv 0.5,
    where each seed alone has none; and off any host (nothing counted) there is no spread."""
    from types import SimpleNamespace

    ones = SimpleNamespace(hosted_service_sum=20.0, hosted_service_squares=20.0, hosted_services=20)
    threes = SimpleNamespace(hosted_service_sum=60.0, hosted_service_squares=180.0, hosted_services=20)
    assert hosted_cv([ones]) == 0.0 and hosted_cv([threes]) == 0.0
    assert hosted_cv([ones, threes]) == 0.5
    off_host = SimpleNamespace(hosted_service_sum=0.0, hosted_service_squares=0.0, hosted_services=0)
    assert math.isnan(hosted_cv([off_host]))


def test_one_process_alone_on_its_core_keeps_its_distributions_spread():
    """One worker on one core never shares it: its services are the exponential draws (cv 1),
    judged by a 95 % t interval over eight seeds; deterministic ones stay exact."""
    cvs = [one_core_cv(1, "exponential", 0.5, seed) for seed in range(8)]
    half = stats.t.ppf(0.975, len(cvs) - 1) * np.std(cvs, ddof=1) / math.sqrt(len(cvs))
    assert abs(np.mean(cvs) - 1.0) <= half + 0.01  # 0.01: the sample cv's own bias at ~1,500 draws
    assert one_core_cv(1, "deterministic", 0.5, 0) < 1e-9


def test_sharing_the_cores_spreads_equal_services():
    """Four processes on one core, each service 1 s of CPU: a service that meets others running
    takes longer, so equal services come out spread where one process alone keeps them exact.
    (Not monotone in the load: where nearly every service is shared, all are long alike; at 0.3
    a second the cv came to 0.45, at 0.8 to 0.37.)"""
    shared = np.mean([one_core_cv(4, "deterministic", 0.3, seed) for seed in range(3)])
    assert 0.1 < shared < 1.0
    assert one_core_cv(1, "deterministic", 0.3, 0) < 1e-9


def test_a_simulated_run_reports_the_spread_on_a_host_and_none_off_one():
    spec = scenario(
        {"a": stage(2, "deterministic", 0.5, next="b", host="h", cpu=1.0), "b": stage(2, "exponential", 0.5)},
        rate=1.5, horizon=400.0, hosts={"h": {"cores": 1.0}},
    )  # fmt: skip
    figures = simulated(spec, "static", seed=3, duration=400.0, interval=10.0)
    assert 0.0 < figures["service_cv_a"] < 2.0
    assert math.isnan(figures["service_cv_b"])  # off any host: its draws' spread is the scenario's
