"""Write BASE with its CPU law replaced by LAW VALUE, rescaled as the fit rescales (reference pools 1).
Usage: write_law.py BASE LAW VALUE OUT"""
import sys
import numpy as np, yaml
from adaptflow.scenario import load_scenario
from adaptflow.simulator import Simulation
from adaptflow.runtime.calibrate import celery_cpu as cc
base = load_scenario(sys.argv[1]); law = cc.Law("as calibrated", sys.argv[2], float(sys.argv[3]))
make = lambda sc, seed: Simulation(sc, rng=np.random.default_rng(seed))
reference = {s: 1 for s in base.stages}
target = cc._services(base, reference, make, seeds=cc.RACE_SEEDS)
scales = cc._rescale(base, "vm", law, reference, target, make, cc.RACE_SEEDS)
cand = cc._candidate(base, "vm", law, scales)
print(scales)
open(sys.argv[4], "w").write(yaml.safe_dump(cand.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False))
