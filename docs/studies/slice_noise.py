"""A spread law apart from the means' law: each CPU job on a host draws its work times a gamma
factor of mean 1 and cv ``k * (1 - cores / n)`` (0 while the ``n`` jobs in progress, itself
counted, fit the cores): a kernel's scheduler hands out the cores in slices, so a short task's
wall time depends on where in the others' slices it starts, the more so the more processes wait
for a core; the fluid sharing the simulator models has none of it. The mean work is kept, so a
CPU law fitted on the means (``fit-growth``) stays as fitted; ``k`` is chosen on the fit set's
services' spread growth alone.

  slice_noise.py choose SCENARIO FIT/compare_app.csv        # each k: sim over live spread by size
  slice_noise.py judge K SCENARIO -- resimulate ARGS...     # adaptflow resimulate under the law

Not the package: it patches ``HostState.run``; its noise draws from one stream per host
(seeded 0), not from the simulation's seed."""
import sys

import numpy as np

from adaptflow.simulator import hosts

K = [0.0]
_run = hosts.HostState.run


def run(self, work, value, callback):
    n = len(self._jobs) + 1 + self.handoff_cpu * self.handoffs
    cv = K[0] * max(0.0, 1.0 - self.cores / n)
    if cv > 0:
        rng = self.__dict__.setdefault("_noise", np.random.default_rng(0))
        work *= rng.gamma(1.0 / cv**2, cv**2)
    _run(self, work, value, callback)


hosts.HostState.run = run


def choose(path: str, table: str) -> None:
    from adaptflow.runtime.calibrate.celery_cpu import _simulate
    from adaptflow.runtime.calibrate.growth import hosted_stages, read_runs
    from adaptflow.scenario import load_scenario
    from adaptflow.simulator import Simulation

    scenario = load_scenario(path)
    host, stages = hosted_stages(scenario, None)
    runs, _ = read_runs([table], stages, list(scenario.sources))
    sizes = sorted({r.processes for r in runs})
    live = {p: {s: np.mean([r.spreads[s] for r in runs if r.processes == p]) for s in stages} for p in sizes}
    print("live cv:", {p: {s: round(v, 3) for s, v in by.items()} for p, by in live.items()})
    for k in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        K[0] = k
        sim = {p: {s: [] for s in stages} for p in sizes}
        for r in runs:
            spreads = _simulate(scenario, r.pools, Simulation, r, seeds=(0, 1)).spreads
            for s in stages:
                sim[r.processes][s].append(spreads[s])
        logs = {p: [np.log(np.mean(sim[p][s]) / live[p][s]) for s in stages] for p in sizes}
        growth = [np.log(np.mean(sim[p][s]) / np.mean(sim[sizes[0]][s])) - np.log(live[p][s] / live[sizes[0]][s])
                  for p in sizes[1:] for s in stages]
        print(f"k {k}: log(sim/live) by size " + "; ".join(
            f"{p}: " + " ".join(f"{v:+.2f}" for v in logs[p]) for p in sizes)
            + f" | growth error rms {np.sqrt(np.mean(np.square(growth))):.3f} mean {np.mean(growth):+.3f}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "choose":
        choose(sys.argv[2], sys.argv[3])
    else:
        K[0] = float(sys.argv[2])
        from adaptflow.cli import main

        sys.exit(main(sys.argv[sys.argv.index("--") + 1:]))
