"""Simulator throughput against an idiomatic SimPy model of the same M/M/c queue, in one process.

Both run M/M/c (arrival rate 9/s, mean service 1 s, 10 workers) until ``--items`` items have
arrived. The reference is how the SimPy documentation writes it: a process per customer that
requests a ``simpy.Resource``, with a local ``random.Random`` for draws, and it records each
wait. adaptflow keeps all its metrics. Each is run ``--repeat`` times alternately and the best
time of each is kept (the machine is shared; the best run is the least disturbed one).

Prints one JSON line: adaptflow_items_per_s, simpy_items_per_s, ratio (target: >= 3.5).

    python benchmarks/bench_simulator.py [--items 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import simpy
from _ratio import best_ratio  # benchmarks/_ratio.py, beside this script

from adaptflow.scenario import load_scenario
from adaptflow.simulator import Simulation

RATE, MEAN_SERVICE, SERVERS = 9.0, 1.0, 10


def idiomatic_simpy(items: int, seed: int) -> tuple[int, float]:
    rng = random.Random(seed)
    env = simpy.Environment()
    workers = simpy.Resource(env, capacity=SERVERS)
    waits: list[float] = []

    def customer(env: simpy.Environment):
        arrived = env.now
        with workers.request() as request:
            yield request
            waits.append(env.now - arrived)
            yield env.timeout(rng.expovariate(1.0 / MEAN_SERVICE))

    def source(env: simpy.Environment):
        for _ in range(items):
            yield env.timeout(rng.expovariate(RATE))
            env.process(customer(env))

    env.process(source(env))
    start = time.perf_counter()
    env.run()
    return items, time.perf_counter() - start


def adaptflow_run(items: int, seed: int) -> tuple[int, float]:
    horizon = items / RATE
    scenario = load_scenario("mmc", horizon=horizon, seed=seed)
    start = time.perf_counter()
    sim = Simulation(scenario)
    sim.run(horizon + 100.0)  # drain what is in service at the horizon, like the reference
    summary = sim.summary()
    elapsed = time.perf_counter() - start
    return summary["items_arrived"], elapsed


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    return best_ratio("simulator_mmc", adaptflow_run, idiomatic_simpy, args.items, args.repeat, target=3.5)


if __name__ == "__main__":
    main(sys.argv[1:])
