"""Each hosted stage's CPU share settled on the services' spread at the reference: the share
moved until the simulation of the fit set's runs at the reference pools spreads each stage's
services as the live runs did (``service_cv_<stage>``), its services rescaled each round to
serve there as before (the CPU fit's rule: a change here moves the spread, not the mean).
Why: the service distribution's own cv hardly moves the simulated spread (spread_level.py:
write's cv cut to a quarter, its simulated spread 0.60 -> 0.52 against live 0.41); the host's
sharing makes it, and how much of a service it stretches is the share, which calibrate read at
its cap (1) for write (docs/sim_to_real.md).
Usage: share_level.py SCENARIO FIT/compare_app.csv OUT.yaml [CALIBRATION]
With CALIBRATION, only the stages whose share it read at the cap (1) are moved: a share the
calibration could read inside (0, 1) is kept."""
import sys
from pathlib import Path

import numpy as np
import yaml
from fit_set import at_reference

from adaptflow.runtime.calibrate.celery_cpu import _simulate
from adaptflow.runtime.calibrate.levels import LEVEL_SEEDS
from adaptflow.scenario import parse_scenario
from adaptflow.simulator import Simulation

ROUNDS, SETTLED, LOWEST = 6, 0.02, 0.05
path, table, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
data, scenario, stages, reference, at_ref, live = at_reference(path, table)
if len(sys.argv) > 4:
    capped = yaml.safe_load(Path(sys.argv[4]).read_text())["stages"]
    moved = [s for s in stages if capped[s].get("cpu", 1.0) >= 1.0]
else:
    moved = list(stages)
print("moved:", moved)


def simulate(current):
    sims = [_simulate(current, r.pools, Simulation, r, seeds=LEVEL_SEEDS) for r in at_ref]
    return ({s: float(np.mean([x.spreads[s] for x in sims])) for s in stages},
            {s: float(np.mean([x.services[s] for x in sims])) for s in stages})


spread, target = simulate(scenario)
print(f"{len(at_ref)} runs at {reference}; live cv", {s: round(v, 3) for s, v in live.items()})
print("as fitted: sim cv", {s: round(v, 3) for s, v in spread.items()}, flush=True)
for done in range(ROUNDS):
    steps = {s: live[s] / spread[s] for s in moved}
    if all(abs(v - 1) <= SETTLED for v in steps.values()):
        break
    current = parse_scenario(data, base_dir=path.parent)
    for s in moved:
        share = data["stages"][s].get("cpu", 1.0)
        data["stages"][s]["cpu"] = round(min(1.0, max(LOWEST, share * steps[s] ** (2.0 if done == 0 else 1.0))), 4)
    for _ in range(3):  # the means back where the fit had them
        current = parse_scenario(data, base_dir=path.parent)
        spread, served = simulate(current)
        for s in stages:
            scaled = current.stages[s].service.scaled(target[s] / served[s])
            data["stages"][s]["service"] = scaled.model_dump(mode="json", exclude_none=True)
    current = parse_scenario(data, base_dir=path.parent)
    spread, served = simulate(current)
    print(f"round {done}: shares", {s: data['stages'][s]['cpu'] for s in stages}, "sim cv",
          {s: round(v, 3) for s, v in spread.items()}, "mean/target",
          {s: round(served[s] / target[s], 3) for s in stages}, flush=True)
out.write_text(yaml.safe_dump(data, sort_keys=False))
print("wrote", out)
