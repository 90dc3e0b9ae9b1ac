"""Simulator throughput on a fork/join DAG against an idiomatic SimPy model of the same DAG.

The DAG: Poisson arrivals at 2/s -> ``split`` (4 workers, mean 1 s) -> a fork into ``a``, ``b``
and ``c`` (3, 4 and 5 workers; means 1, 1.5, 2 s) -> ``merge`` once all three parts are done
(3 workers, mean 1 s) -> exit; exponential service everywhere (utilization 0.5-0.8). The
reference is how SimPy's documentation writes a DAG: a process per item that requests each
``simpy.Resource`` in turn, one process per part, and ``AllOf`` for the join, with a local
``random.Random``; it records each wait and each end-to-end latency. adaptflow keeps all its
metrics, the join's included. Each is run ``--repeat`` times alternately and the best time of
each kept (the machine is shared; the best run is the least disturbed one).

Prints one JSON line: adaptflow_items_per_s, simpy_items_per_s, ratio (target: >= 2.5).

    python benchmarks/bench_dag.py [--items 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import simpy
from _ratio import best_ratio  # benchmarks/_ratio.py, beside this script

from adaptflow.scenario import parse_scenario
from adaptflow.simulator import Simulation

RATE = 2.0
STAGES = {"split": (4, 1.0), "a": (3, 1.0), "b": (4, 1.5), "c": (5, 2.0), "merge": (3, 1.0)}
BRANCHES = ("a", "b", "c")


def dag_scenario(items: int, seed: int):
    """The DAG as an adaptflow scenario, with a horizon that brings about ``items`` arrivals."""
    nexts = {"split": {"fork": list(BRANCHES), "join": "merge"}, "merge": None}
    stages = {
        name: {
            "workers": {"initial": c, "min": 0, "max": c},
            "service": {"dist": "exponential", "mean": mean},
            "next": nexts.get(name, "merge"),
        }
        for name, (c, mean) in STAGES.items()
    }
    return parse_scenario(
        {
            "name": "bench_dag",
            "horizon": items / RATE,
            "seed": seed,
            "sla": {"latency": 30.0},
            "sources": {"jobs": {"process": "poisson", "rate": RATE, "to": "split"}},
            "stages": stages,
        }
    )


def idiomatic_simpy(items: int, seed: int) -> tuple[int, float]:
    rng = random.Random(seed)
    env = simpy.Environment()
    pools = {name: simpy.Resource(env, capacity=c) for name, (c, _) in STAGES.items()}
    waits: list[float] = []
    latencies: list[float] = []

    def visit(env: simpy.Environment, stage: str):
        arrived = env.now
        with pools[stage].request() as request:
            yield request
            waits.append(env.now - arrived)
            yield env.timeout(rng.expovariate(1.0 / STAGES[stage][1]))

    def item(env: simpy.Environment):
        created = env.now
        yield env.process(visit(env, "split"))
        yield simpy.AllOf(env, [env.process(visit(env, branch)) for branch in BRANCHES])
        yield env.process(visit(env, "merge"))
        latencies.append(env.now - created)

    def source(env: simpy.Environment):
        for _ in range(items):
            yield env.timeout(rng.expovariate(RATE))
            env.process(item(env))

    env.process(source(env))
    start = time.perf_counter()
    env.run()
    return items, time.perf_counter() - start


def adaptflow_run(items: int, seed: int) -> tuple[int, float]:
    scenario = dag_scenario(items, seed)
    start = time.perf_counter()
    sim = Simulation(scenario)
    sim.run(scenario.horizon + 200.0)  # drain what is in flight at the horizon, like the reference
    summary = sim.summary()
    elapsed = time.perf_counter() - start
    assert summary["joins"]["merge"]["joined"] == summary["items_completed"]  # every item joined once
    return summary["items_arrived"], elapsed


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    return best_ratio("simulator_dag", adaptflow_run, idiomatic_simpy, args.items, args.repeat, target=2.5)


if __name__ == "__main__":
    main(sys.argv[1:])
