"""For candidate CPU laws on a fit set: each rescaled to serve at the reference pools as the
base fit does (celery_cpu._rescale), simulated on every fit run (its pools and arrivals, 2 seeds):
the services' spread (hosted cv) against live (recordings), and the mean services' growth
against live. Usage: law_spread.py FITDIR BASE.yaml"""
import json, sys, math
from pathlib import Path
from types import SimpleNamespace
import numpy as np, pandas as pd
from adaptflow.scenario import load_scenario
from adaptflow.simulator import Simulation
from adaptflow.runtime.calibrate import celery_cpu as cc
from adaptflow.runtime.live.spread import service_cv, service_cv_of

folder, base = Path(sys.argv[1]), load_scenario(sys.argv[2])
stages = list(base.stages)
make = lambda sc, seed: Simulation(sc, rng=np.random.default_rng(seed))
SEEDS = (0, 1)
table = pd.read_csv(folder / "compare_app.csv"); live = table[table.world == "live"]
runs = []
for _, L in live.iterrows():
    b, k = L.planner.split("#")[0].split("@")[0], L.planner.split("#")[1]
    rec, arr = folder / f"{b}_{k}.recording", folder / f"{b}_{k}.arrivals.uploads.csv"
    started, dur = {}, {}
    for line in (rec / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["type"] == "task-started": started[e["uuid"]] = (e["timestamp"], (e.get("hostname") or "").split("@")[0])
        elif e["type"] == "task-succeeded" and e["uuid"] in started:
            t0, h = started.pop(e["uuid"]); dur.setdefault(h, []).append(e["timestamp"] - t0)
    runs.append(dict(label=L.planner, pools={s: int(round(L[f"mean_pool_{s}"])) for s in stages},
                     arrivals=SimpleNamespace(arrivals={"uploads": arr}),
                     cv={s: service_cv_of(dur[s]) for s in stages}, mean={s: float(np.mean(dur[s])) for s in stages}))
reference = {s: 1 for s in stages}
target = cc._services(base, reference, make, seeds=SEEDS)
laws = [cc.Law("as calibrated", "handoff_cpu", v) for v in (0.0, 0.25, 0.5)] + \
       [cc.Law("as calibrated", "oversubscription", v) for v in (0.1, 0.15, 0.2, 0.25)] + \
       [cc.Law("as calibrated", "visit_cpu", v) for v in (0.0019, 0.0038)]
for law in laws:
    scales = cc._rescale(base, "vm", law, reference, target, make, SEEDS)
    cand = cc._candidate(base, "vm", law, scales)
    cv_err, by_size = [], {}
    sim_mean = {}
    for r in runs:
        held = cc.held_at(cand, r["pools"], r["arrivals"])
        tot = {s: [0.0, 0.0, 0] for s in stages}
        for seed in SEEDS:
            sim = make(held, seed); sim.run(held.horizon)
            for s, c in sim.counters().stages.items():
                tot[s][0] += c.hosted_service_sum; tot[s][1] += c.hosted_service_squares; tot[s][2] += c.hosted_services
        n = sum(r["pools"].values())
        for s in stages:
            cv = service_cv(*tot[s])
            if math.isfinite(cv) and math.isfinite(r["cv"][s]):
                cv_err.append(math.log(cv / r["cv"][s]))
                by_size.setdefault(n, []).append(math.log(cv / r["cv"][s]))
            sim_mean[(r["label"], s)] = tot[s][0] / tot[s][2]
    # the mean services' growth against live: each run's sim/live mean ratio, at each size over the reference's
    ratio = {n: [] for n in by_size}
    for r in runs:
        n = sum(r["pools"].values())
        ratio[n] += [math.log(sim_mean[(r["label"], s)] / r["mean"][s]) for s in stages]
    ref = np.mean(ratio[5])
    growth = {n: np.mean(v) - ref for n, v in ratio.items() if n != 5}
    print(f"{str(law):45s} spread rms {np.sqrt(np.mean(np.square(cv_err))):.3f} | by size " +
          " ".join(f"{n}p {np.mean(v):+.3f}" for n, v in sorted(by_size.items())) +
          " | mean-growth miss " + " ".join(f"{n}p {g:+.3f}" for n, g in sorted(growth.items())), flush=True)
