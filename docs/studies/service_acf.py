"""Consecutive services at a stage, live and simulated: the lag-1 autocorrelation of their
logs, in start order. Why: a stage's wait the model misses with every part of it (hand-off,
wait met idle, service, services' spread) within 10 % (agreement's cause: "none of its own
parts") must come from how the services follow one another, which those means and spreads do
not say: slow services that come in runs build queues that the same services in a random order
do not.
Usage: service_acf.py SCENARIO RUN_FOLDER LABEL [SEEDS]
  RUN_FOLDER/LABEL.recording/events.jsonl: the live run's task events (compare-app --out);
  RUN_FOLDER/LABEL.arrivals.<source>.csv: its arrivals; every pool held at the scenario's initial
  size (a static or erlang run at one process a stage)."""
import json
import sys
from pathlib import Path

import numpy as np

from adaptflow.runtime.calibrate.celery_cpu import _on_arrivals
from adaptflow.scenario import load_scenario, parse_scenario
from adaptflow.simulator import Simulation
from adaptflow.simulator.model import StageState


def lag1(pairs):
    pairs.sort()
    logs = np.log([d for _, d in pairs if d > 0])
    return float(np.corrcoef(logs[:-1], logs[1:])[0, 1]) if len(logs) > 50 else float("nan")


WINDOW = 2.0  # seconds: a window's services, each stage's log less its mean, averaged


def together(by_stage: dict[str, list[tuple[float, float]]]) -> float:
    """How much the stages slow together: the mean correlation, over pairs of stages, of their
    services' mean log (each less its stage's mean) in the same :data:`WINDOW`. A machine whose
    speed moves within a run slows every stage at once; the simulation's host sharing does too,
    as far as its busy processes say."""
    means = {}
    for stage, pairs in by_stage.items():
        t = np.array([a for a, d in pairs if d > 0]); logs = np.log([d for _, d in pairs if d > 0])
        logs -= logs.mean()
        bins = ((t - t.min()) // WINDOW).astype(int) if len(t) else np.array([], int)
        means[stage] = {b: float(logs[bins == b].mean()) for b in set(bins.tolist())}
    stages = sorted(means)
    rs = []
    for i, a in enumerate(stages):
        for b in stages[i + 1:]:
            common = sorted(set(means[a]) & set(means[b]))
            if len(common) > 20:
                rs.append(np.corrcoef([means[a][k] for k in common], [means[b][k] for k in common])[0, 1])
    return float(np.mean(rs)) if rs else float("nan")


def task_services(events: Path) -> dict[str, list[tuple[float, float]]]:
    """A run's succeeded tasks by stage (the task's name): (its start, its length), wall seconds."""
    names, started, out = {}, {}, {}
    for line in events.open():
        e = json.loads(line)
        if e["type"] == "task-sent":
            names[e["uuid"]] = e["name"].rsplit(".", 1)[-1]
        elif e["type"] == "task-started":
            started[e["uuid"]] = e["timestamp"]
        elif e["type"] == "task-succeeded" and e["uuid"] in started and e["uuid"] in names:
            out.setdefault(names[e["uuid"]], []).append((started[e["uuid"]], e["timestamp"] - started[e["uuid"]]))
    return out


def live(events: Path) -> dict[str, float]:
    out = task_services(events)
    return {stage: lag1(pairs) for stage, pairs in out.items()} | {"(stages together)": together(out)}


def simulated(scenario_path: Path, folder: Path, label: str, seeds: int) -> dict[str, float]:
    scenario = load_scenario(scenario_path)
    data = scenario.model_dump(mode="json", by_alias=True)
    _on_arrivals(data, {s: folder / f"{label}.arrivals.{s}.csv" for s in scenario.sources})
    held = parse_scenario(data)
    seen: dict[str, list[tuple[float, float]]] = {}
    original = StageState._served_on_host

    def served(self, item):  # every hosted service, as it ends: (its start, its length)
        seen.setdefault(self.name, []).append((item.served_from, self._env._now - item.served_from))
        original(self, item)

    StageState._served_on_host = served
    out: dict[str, list[float]] = {}
    for seed in range(seeds):
        seen.clear()
        Simulation(held, seed).run(held.horizon)
        out.setdefault("(stages together)", []).append(together(seen))
        for stage, pairs in seen.items():
            out.setdefault(stage, []).append(lag1(pairs))
    StageState._served_on_host = original
    return {stage: float(np.nanmean(v)) for stage, v in out.items()}


if __name__ == "__main__":
    scenario_path, folder, label = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    seeds = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    mine = simulated(scenario_path, folder, label, seeds)
    for stage, r in live(folder / f"{label}.recording" / "events.jsonl").items():
        print(f"{stage}: live {r:+.3f}, simulated {mine.get(stage, float('nan')):+.3f}")
