"""Each hosted stage's services' spread settled at the reference: its service cv moved (its mean
kept) until the simulation of the fit set's runs at the reference pools spreads each stage's
services as the live runs did (``service_cv_<stage>``), as levels.py settles the hand-offs.
Why: a calibrated service already holds the spread the recording's sharing of the cores gave
it (divided out only on average, per visit), and the host model spreads it again; every CPU
law simulated the reference too wide (docs/sim_to_real.md, "The tail against the load").
Usage: spread_level.py SCENARIO FIT/compare_app.csv OUT.yaml"""
import sys
from pathlib import Path

import numpy as np
import yaml
from fit_set import at_reference

from adaptflow.runtime.calibrate.celery_cpu import _simulate
from adaptflow.runtime.calibrate.distributions import with_moments
from adaptflow.runtime.calibrate.levels import DAMPING, LEVEL_SEEDS
from adaptflow.scenario import parse_scenario
from adaptflow.simulator import Simulation

ROUNDS, SETTLED = 5, 0.02
path, table, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
data, scenario, stages, reference, at_ref, live = at_reference(path, table)
print(f"{len(at_ref)} runs at {reference} processes; live cv", {s: round(v, 3) for s, v in live.items()})


def cv_of(block: dict) -> float:
    if block["dist"] == "empirical":
        x = np.asarray(block["samples"], dtype=float)
        return float(np.std(x) / np.mean(x))
    return {"exponential": 1.0, "deterministic": 0.0}.get(block["dist"], block.get("cv", 0.0))


base = {s: dict(data["stages"][s]["service"]) for s in stages}
factors = dict.fromkeys(stages, 1.0)
for done in range(ROUNDS + 1):
    current = parse_scenario(data, base_dir=path.parent)
    sims = [_simulate(current, r.pools, Simulation, r, seeds=LEVEL_SEEDS).spreads for r in at_ref]
    sim = {s: float(np.mean([x[s] for x in sims])) for s in stages}
    steps = {s: live[s] / sim[s] for s in stages if np.isfinite(live[s]) and np.isfinite(sim[s])}
    print(f"round {done}: sim cv", {s: round(v, 3) for s, v in sim.items()},
          "factors", {s: round(v, 3) for s, v in factors.items()}, flush=True)
    if done == ROUNDS or all(abs(v - 1) <= SETTLED for v in steps.values()):
        break
    for s, step in steps.items():
        factors[s] *= step ** (1.0 if done == 0 else DAMPING)
        block = base[s]
        mean = float(np.mean(block["samples"])) if block["dist"] == "empirical" else block["mean"]
        data["stages"][s]["service"] = with_moments(block, mean, cv_of(block) * factors[s])
out.write_text(yaml.safe_dump(data, sort_keys=False))
print("wrote", out)
