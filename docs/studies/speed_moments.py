"""The machine's speed moving within a run, put in the simulation: does it lengthen the stage
waits the model misses with every part of them within 10 % (agreement's cause "none of its own
parts")? Each CPU second begun in a window of WINDOW seconds takes a factor exp(sigma z - sigma^2/2)
of its time (z standard normal per window and seed, AR(1) with rho across windows; mean 1, so the
services' mean barely moves). Why: live services of different stages slow together within a run
more than the simulation's host sharing makes them (service_acf.py: 0.50-0.61 against 0.40-0.48
over five held-out sets), as a machine whose speed moves would.
Usage: speed_moments.py SCENARIO RUN_FOLDER LABEL SIGMA [RHO] [SEEDS]
Prints each stage's mean and p95 wait, live (the run's compare_app.csv row) and simulated."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from adaptflow.runtime.calibrate.celery_cpu import _on_arrivals
from adaptflow.scenario import load_scenario, parse_scenario
from adaptflow.scenario.schema import Host
from adaptflow.simulator import Simulation

WINDOW = 2.0
scenario_path, folder, label = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
sigma = float(sys.argv[4])
rho = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
seeds = int(sys.argv[6]) if len(sys.argv) > 6 else 4
scenario = load_scenario(scenario_path)
data = scenario.model_dump(mode="json", by_alias=True)
_on_arrivals(data, {s: folder / f"{label}.arrivals.{s}.csv" for s in scenario.sources})
held = parse_scenario(data)
original = Host.cpu_seconds
state = {}


def factor(now: float) -> float:
    k = int(now // WINDOW)
    z = state["z"]
    while len(z) <= k:
        z.append(rho * z[-1] + np.sqrt(1 - rho * rho) * state["rng"].standard_normal())
    return float(np.exp(sigma * z[k] - sigma * sigma / 2))


def moving(self, calibrated: float) -> float:
    env = state.get("env")  # None while a simulation is built (its fixed work per visit)
    return original(self, calibrated) * (factor(env._now) if env is not None else 1.0)


Host.cpu_seconds = moving
rows = []
for seed in range(seeds):
    state["env"] = None
    sim = Simulation(held, seed)
    state.update(env=sim._env, rng=np.random.default_rng(1000 + seed), z=[np.random.default_rng(1000 + seed).standard_normal()])
    sim.run(held.horizon)
    for name, row in sim.summary()["stages"].items():
        attempts = row["completed"] + row["failures"]
        rows.append({"stage": name, "mean_wait": row["mean_wait"], "p95_wait": row["p95_wait"],
                     "service": row["mean_busy_workers"] * held.horizon / attempts if attempts else np.nan})
Host.cpu_seconds = original
sim = pd.DataFrame(rows).groupby("stage").mean()
live = pd.read_csv(folder / "compare_app.csv")
run = label.replace("erlang_target_wait=0.02", "erlang:target_wait=0.02").replace("keda_target=1", "keda:target=1")
run = run.rsplit("_", 1)[0] + "#" + run.rsplit("_", 1)[1]
live = live[(live.world == "live") & (live.planner == run)].iloc[0]
for stage in sim.index:
    print(f"{stage:10s} mean wait live {live[f'mean_wait_{stage}']:.4f} sim {sim.loc[stage, 'mean_wait']:.4f}"
          f" | p95 live {live[f'p95_wait_{stage}']:.4f} sim {sim.loc[stage, 'p95_wait']:.4f}"
          f" | service live {live[f'service_{stage}']:.4f} sim {sim.loc[stage, 'service']:.4f}")
