"""Static p2 runs of each set: live service cv per stage (recording) against the simulation's
(BASE, default fit3's race fit, at the run's own speed, pools held at 2, the run's arrivals, 2
seeds). Run in a sim_to_real.sh folder (S2R, default "."), each SET judged by resimulate
--live-speed into SET.r3_live_speed.csv. Usage: [BASE=S.yaml] sim_cv.py SET [SET ...]"""
import json, os, sys
from pathlib import Path
from types import SimpleNamespace
import numpy as np, pandas as pd
from adaptflow.scenario import load_scenario
from adaptflow.simulator import Simulation
from adaptflow.simulator import model
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

S2R = os.environ.get("S2R", ".")
base = load_scenario(os.environ.get("BASE", f"{S2R}/calgr.fit3.yaml"))
out = []
for s in sys.argv[1:]:
    t = pd.read_csv(f"{S2R}/{s}.r3_live_speed.csv")
    for k in (1, 2):
        L = t[(t.world == "live") & (t.planner == f"p2#{k}")].iloc[0]
        S = t[(t.world == "simulated, live speed") & (t.planner == f"p2#{k}")].iloc[0]
        stages = list(base.stages)
        load = sum(L[f"throughput_{x}"] * L[f"service_{x}"] for x in stages if np.isfinite(L[f"service_{x}"]))
        rec = Path(f"{S2R}/{s}/p2_{k}.recording")
        started, dur = {}, {}
        for line in (rec / "events.jsonl").read_text().splitlines():
            e = json.loads(line)
            if e["type"] == "task-started": started[e["uuid"]] = (e["timestamp"], (e.get("hostname") or "").split("@")[0])
            elif e["type"] == "task-succeeded" and e["uuid"] in started:
                t0, h = started.pop(e["uuid"]); dur.setdefault(h, []).append(e["timestamp"] - t0)
        sc = base.model_copy(update={"hosts": {"vm": base.hosts["vm"].model_copy(update={"speed": float(S.speed_vm)})}})
        run = SimpleNamespace(arrivals={"uploads": Path(f"{S2R}/{s}/p2_{k}.arrivals.uploads.csv")})
        held = held_at(sc, {x: 2 for x in stages}, run)
        sim = {}
        for seed in (0, 1):
            REC.clear()
            Simulation(held, np.random.default_rng(seed)).run(held.horizon)
            for x, d in REC["dur"].items(): sim.setdefault(x, []).extend(d)
        row = dict(set=s, run=f"p2#{k}", load=load, speed=float(S.speed_vm))
        for x in stages:
            if x in dur and x in sim:
                a, b = np.array(dur[x]), np.array(sim[x])
                row[f"live_{x}"], row[f"sim_{x}"] = a.std() / a.mean(), b.std() / b.mean()
                row[f"mean_{x}"] = b.mean() / a.mean()
        out.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
d = pd.DataFrame(out)
for x in base.stages:
    ok = d[["load", f"live_{x}", f"sim_{x}"]].dropna()
    print(x, f"live cv {ok[f'live_{x}'].mean():.3f} slope {np.polyfit(ok.load, ok[f'live_{x}'], 1)[0]:+.3f} | sim cv {ok[f'sim_{x}'].mean():.3f} slope {np.polyfit(ok.load, ok[f'sim_{x}'], 1)[0]:+.3f}")
