"""The machine's speed within each live run, replayed in its simulation: how much of the stage
waits the model misses does the run's own moment-to-moment speed explain? A diagnosis, not a
model: the speed comes from the run being judged, so no held-out run could be simulated with it.

The speed series: in each WINDOW of the run, the mean over the live tasks that started in it of
their service's log less their stage's mean log (every stage pooled), less the same of the
simulation's services in that window (pass one, unpatched, every seed and row pooled): what the
live services met beyond what the simulation's host sharing already gives them at those loads.
Pass two runs every CPU job begun in a window at exp(ALPHA x that) of its work (1 where either
side had fewer than MIN_TASKS services). Why: live services slow together within a run more
than simulated ones (service_acf.py), and a random speed of the same size (speed_moments.py)
did not lengthen the waits where live's are long; if the run's own series does, the gaps left
are the machine's moments, which no calibration can know ahead.

Usage (from the folder sim_to_real.sh wrote): speed_replay.py SCENARIO SET TAG [ALPHA] [SEEDS]
  writes SET.TAG0_live_speed.csv (pass one: must equal `resimulate SET --live-pools --live-speed`)
  and SET.TAG_live_speed.csv (pass two), to judge with agreement (adaptflow.experiments.compare_app).
Not the package: it patches HostState.run, StageState._served_on_host and
compare_app.simulated_app_run; it may break as they move."""
import inspect
import json
import sys
from pathlib import Path

import numpy as np
from service_acf import task_services

from adaptflow.experiments import compare_app as judged
from adaptflow.runtime.compare_app import run_label
from adaptflow.simulator import hosts
from adaptflow.simulator.model import StageState

WINDOW = 2.0
MIN_TASKS = 5
state: dict = {"planner": None, "collect": None, "factors": None, "alpha": 1.0}


def windowed(services: dict[tuple, list[tuple[float, float]]]) -> dict[int, tuple[float, int]]:
    """Each window's mean centred log service and its count, over groups of (start, length)
    services each centred on its own mean log (a stage of one run, or of one simulation)."""
    sums: dict[int, list[float]] = {}
    for pairs in services.values():
        kept = [(t, d) for t, d in pairs if d > 0]
        if len(kept) < 2:
            continue
        logs = np.log([d for _, d in kept])
        logs -= logs.mean()
        for (t, _), v in zip(kept, logs, strict=True):
            sums.setdefault(int(t // WINDOW), []).append(float(v))
    return {k: (float(np.mean(v)), len(v)) for k, v in sums.items()}


def live_services(recording: Path) -> dict[tuple, list[tuple[float, float]]]:
    """A run's task services by stage, their start in seconds since the recording began (the
    time its arrivals, and so its simulation, count from)."""
    started = json.loads((recording / "recording.json").read_text())["started"]
    by_stage = task_services(recording / "events.jsonl")
    return {(stage,): [(t - started, d) for t, d in pairs] for stage, pairs in by_stage.items()}


_run, _served, _simulated = hosts.HostState.run, StageState._served_on_host, judged.simulated_app_run


def run(self, work, value, callback):  # pass two: the window's speed on every CPU job begun in it
    factors = state["factors"].get(state["planner"], {}) if state["factors"] else {}
    if factors:
        work *= factors.get(int(self._env._now // WINDOW), 1.0)
    _run(self, work, value, callback)


def served(self, item):  # pass one: every hosted service, by run, simulation and stage
    if state["collect"] is not None:
        key = (state["planner"], id(self._env), self.name)
        state["collect"].setdefault(key, []).append((item.served_from, self._env._now - item.served_from))
    _served(self, item)


def simulated_app_run(*args, **kwargs):  # which run is simulated, for the two patches above
    bound = inspect.signature(_simulated).bind(*args, **kwargs)
    state["planner"] = bound.arguments["run"].planner
    return _simulated(*args, **kwargs)


hosts.HostState.run, StageState._served_on_host, judged.simulated_app_run = run, served, simulated_app_run


def factors(folder: Path, collected: dict) -> dict[str, dict[int, float]]:
    out = {}
    for planner in {key[0] for key in collected}:
        sim = windowed({k: v for k, v in collected.items() if k[0] == planner})
        live = windowed(live_services(folder / f"{run_label(planner)}.recording"))
        out[planner] = {k: float(np.exp(state["alpha"] * (live[k][0] - sim[k][0])))
                        for k in live if k in sim and min(live[k][1], sim[k][1]) >= MIN_TASKS}
        logs = np.log(list(out[planner].values()))
        print(f"{planner}: {len(logs)} windows, log factor sd {logs.std():.3f}, mean {logs.mean():+.3f}", flush=True)
    return out


if __name__ == "__main__":
    scenario, folder, tag = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    state["alpha"] = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    seeds = int(sys.argv[5]) if len(sys.argv) > 5 else 8
    state["collect"] = {}
    first = judged.resimulate(folder, scenario, seeds=seeds, live_speed=True, live_pools=True)
    first.to_csv(f"{folder}.{tag}0_live_speed.csv", index=False)
    state["factors"], state["collect"] = factors(folder, state["collect"]), None
    judged.resimulate(folder, scenario, seeds=seeds, live_speed=True, live_pools=True).to_csv(
        f"{folder}.{tag}_live_speed.csv", index=False)
