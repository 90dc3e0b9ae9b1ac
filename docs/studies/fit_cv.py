"""The fit set's static runs: live service cv per stage (recording) against the simulation's
under each scenario given (its own speed, pools held at the run's, the run's arrivals, 2 seeds).
Usage: fit_cv.py FITDIR SCENARIO [SCENARIO ...]"""
import json, sys
from pathlib import Path
from types import SimpleNamespace
import numpy as np, pandas as pd
from adaptflow.scenario import load_scenario
from adaptflow.simulator import Simulation, model
from adaptflow.runtime.calibrate.celery_cpu import held_at

REC = {}
orig_serve, orig_served = model.StageState._serve_on_host, model.StageState._served
def serve(self, item, seconds):
    REC.setdefault("start", {})[(self.name, id(item))] = self._env._now
    return orig_serve(self, item, seconds)
def served(self, item, event=None):
    t0 = REC.get("start", {}).pop((self.name, id(item)), None)
    if t0 is not None: REC.setdefault("dur", {}).setdefault(self.name, []).append(self._env._now - t0)
    return orig_served(self, item, event)
model.StageState._serve_on_host, model.StageState._served = serve, served

folder = Path(sys.argv[1]); scenarios = [load_scenario(p) for p in sys.argv[2:]]
table = pd.read_csv(folder / "compare_app.csv"); live = table[table.world == "live"]
stages = list(scenarios[0].stages)
res = {}
for _, L in live.iterrows():
    label = L.planner; base, k = label.split("#")[0].split("@")[0], label.split("#")[1]
    rec = folder / f"{base}_{k}.recording"
    arr = folder / f"{base}_{k}.arrivals.uploads.csv"
    if not rec.is_dir() or not arr.is_file(): print("skip", label, rec); continue
    started, dur = {}, {}
    for line in (rec / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["type"] == "task-started": started[e["uuid"]] = (e["timestamp"], (e.get("hostname") or "").split("@")[0])
        elif e["type"] == "task-succeeded" and e["uuid"] in started:
            t0, h = started.pop(e["uuid"]); dur.setdefault(h, []).append(e["timestamp"] - t0)
    pools = {s: int(round(L[f"mean_pool_{s}"])) for s in stages}
    line = [f"{label:28s} {sum(pools.values()):2d}p live " + " ".join(f"{np.std(dur[s])/np.mean(dur[s]):.2f}" for s in stages)]
    for j, sc in enumerate(scenarios):
        held = held_at(sc, pools, SimpleNamespace(arrivals={"uploads": arr}))
        sim = {}
        for seed in (0, 1):
            REC.clear(); Simulation(held, np.random.default_rng(seed)).run(held.horizon)
            for s, d in REC["dur"].items(): sim.setdefault(s, []).extend(d)
        cvs = [np.std(sim[s]) / np.mean(sim[s]) / (np.std(dur[s]) / np.mean(dur[s])) for s in stages]
        res.setdefault(j, []).extend(np.log(cvs))
        line.append(f"| {j}: " + " ".join(f"{c:.2f}" for c in cvs))
    print(" ".join(line), flush=True)
for j in res: print(f"scenario {j} ({sys.argv[2 + j]}): rms log(sim cv / live cv) {np.sqrt(np.mean(np.square(res[j]))):.3f}, mean {np.mean(res[j]):+.3f}")
