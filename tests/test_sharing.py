"""How a host's tasks slow beside each other (``adaptflow sharing``): the statistic on spans
whose overlaps are known, its reading of a recording of a machine that shares its cores (the
synthetic app of tests/test_calibrate.py, whose sharing is its own code, not the simulator's),
and the cores scan finding that machine's cores from its recording."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from adaptflow.cli import main
from adaptflow.runtime.calibrate.sharing import Tally, live_curve, others_in_progress

from .test_calibrate import ORIGIN, TRUTH, SyntheticApp, write_recording

STAGES = list(TRUTH)
ALL_CPU = dict.fromkeys(STAGES, 1.0)
RATE = 1.2  # items/s: 0.73 CPU seconds a second, 73 % of one core, 46 % of 1.6


def test_the_others_in_progress_are_the_time_mean_of_the_tasks_beside_each():
    starts = np.array([0.0, 1.0, 4.0, 4.0, 6.0, 7.0])
    ends = np.array([2.0, 3.0, 5.0, 5.0, 7.0, 8.0])  # the last two touch: no overlap
    assert others_in_progress(starts, ends) == pytest.approx([0.5, 0.5, 1.0, 1.0, 0.0, 0.0])


def test_the_slowdown_is_each_bins_mean_log_service_over_its_stages_alone():
    """Two stages, each alone at its own length (a 1 s, b 0.5 s); side by side a takes 2.5 s with
    b beside it 0.6 of the time, b 1.5 s with a beside it all along: each in its bin, over its own
    stage's alone."""
    spans = [("a", 0.0, 1.0), ("a", 2.0, 3.0), ("b", 4.0, 4.5), ("a", 10.0, 12.5), ("b", 10.0, 11.5)]
    curve = Tally().add(spans).curve()
    assert curve.tasks == (3, 1, 1, 0, 0, 0)
    assert curve.slowdowns[1] == pytest.approx(2.5) and curve.slowdowns[2] == pytest.approx(3.0)
    assert all(math.isnan(v) for v in curve.logs[3:])


def test_merged_tallies_read_as_one_tally_of_both_runs():
    """``--each`` tallies each file's runs and merges them for the pooled curve: the same sums as
    one tally of every run (each run's spans are added apart either way)."""
    first = [("a", 0.0, 1.0), ("a", 2.0, 3.0), ("a", 10.0, 12.5), ("b", 10.0, 11.5)]
    second = [("b", 0.0, 0.5), ("a", 5.0, 7.0), ("b", 5.0, 6.0)]
    merged = Tally().add(first).merged(Tally().add(second))
    assert merged.sums == Tally().add(first).add(second).sums
    assert merged.curve() == Tally().add(first).add(second).curve()


def synthetic_run(folder: Path, cores: float, seed: int, horizon: float = 1500.0, pool: int = 2) -> Path:
    """A held run of the synthetic app (two processes a stage, every stage all CPU on ``cores``)
    as compare-app writes one: its table, its arrivals and its recording."""
    lines = SyntheticApp(seed=seed, horizon=horizon, rate=RATE, servers=pool, cpu=ALL_CPU, cores=cores).run()
    write_recording(folder / "static.recording", lines, horizon=horizon)
    # parse never fails: every send without a parent is an arrival
    arrivals = [line["timestamp"] - ORIGIN for line in lines if line["type"] == "task-sent" and "parent_id" not in line]
    (folder / "static.arrivals.uploads.csv").write_text("timestamp,size\n" + "".join(f"{t:.6f},1\n" for t in arrivals))
    with (folder / "compare_app.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["world", "planner"] + [f"{c}_{s}" for s in STAGES for c in ("mean_pool", "handoff")])
        out.writerow(["live", "static"] + [x for _ in STAGES for x in (str(pool), "")])
    return folder / "compare_app.csv"


def scenario(folder: Path, cores: float, oversubscription: float) -> Path:
    """The synthetic app as a scenario, its host at ``cores`` with ``oversubscription``."""

    def service(spec: dict) -> dict:
        return {
            "dist": spec["dist"],
            "mean": spec["mean"],
            **({"cv": spec["cv"]} if spec["dist"] == "lognormal" else {}),
        }

    def route(spec: dict) -> object:
        split = [{"to": to, "p": p} for to, p in spec["next"]]
        return split[0]["to"] if len(split) == 1 else {"split": split}

    stages = {
        name: {
            "workers": {"initial": 2, "max": 4},
            "service": service(spec),
            "host": "vm",
            "cpu": 1.0,
            "next": route(spec),
            **({"failure": {"prob": spec["fail"], "max_retries": spec["retries"]}} if spec["fail"] else {}),
        }
        for name, spec in TRUTH.items()
    }
    data = {"name": "synthetic", "horizon": 100, "sla": {"latency": 30},
            "sources": {"uploads": {"process": "poisson", "rate": RATE, "to": "parse"}},
            "hosts": {"vm": {"cores": cores, "oversubscription": oversubscription}}, "stages": stages}  # fmt: skip
    path = folder / "synthetic.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("cores, one_other", [(1.0, (1.8, 2.2)), (1.6, (1.12, 1.38))])
def test_a_recording_reads_how_a_machine_sharing_its_cores_slowed_its_tasks(tmp_path, cores, one_other):
    """On ``cores`` shared equally, a task beside one other all along runs at min(1, cores / 2):
    x2 on one core, x1.25 on 1.6 (the bin of 0.75-1.25 others spans a little either side)."""
    synthetic_run(tmp_path, cores, seed=3)
    curve = live_curve([tmp_path / "static.recording"], STAGES)
    low, high = one_other
    assert curve.tasks[0] > 500 and curve.tasks[2] > 100, curve
    assert low <= curve.slowdowns[2] <= high, curve.slowdowns
    assert curve.slowdowns[5] > curve.slowdowns[2] or curve.tasks[5] == 0


def test_the_scan_finds_the_cores_of_the_machine_that_made_the_runs_and_the_law_is_far(tmp_path, capsys):
    """Runs of a machine of 1.6 cores, read with a scenario of one core and an oversubscription
    (the kind of law fit-growth chose on the example app): the scenario's curve is far from live,
    the scan's nearest is 1.6 cores (or a step beside), about ten times nearer."""
    for k in (1, 2):
        (tmp_path / f"run{k}").mkdir()
    runs = [synthetic_run(tmp_path / f"run{k}", 1.6, seed=k) for k in (1, 2)]
    law = scenario(tmp_path, 1.0, 0.1)
    assert main(["sharing", str(law), *map(str, runs), "--scan-cores", "--seeds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    nearest = float(lines[-1].split(": ")[1].split(" cores")[0])
    assert 1.5 <= nearest <= 1.7, "\n".join(lines)
    distances = {line.split()[0]: float(line.split("distance ")[1]) for line in lines if "distance" in line}
    assert distances["the"] > 10 * distances[f"{nearest:g}"], "\n".join(lines)


def test_each_file_apart_shows_which_load_the_scenario_slows_as_live(tmp_path, capsys):
    """Two files, one from a machine of one core and one of 1.6, read on a scenario of 1.6 cores:
    pooled, one curve between them; ``--each``, each file's live curve is its own machine's (x2
    and x1.25 beside one other) and the scenario is near the second file's and far from the
    first's."""
    runs = []
    for name, cores in (("one", 1.0), ("more", 1.6)):
        (tmp_path / name).mkdir()
        runs.append(synthetic_run(tmp_path / name, cores, seed=5))
    world = scenario(tmp_path, 1.6, 0.0)
    assert main(["sharing", str(world), *map(str, runs), "--seeds", "1", "--each"]) == 0
    lines = capsys.readouterr().out.splitlines()
    blocks = {line[:-1]: lines[k + 1 : k + 4] for k, line in enumerate(lines) if line.endswith("compare_app.csv:")}
    assert list(blocks) == list(map(str, runs)), "\n".join(lines)

    def beside_one(row: str) -> float:  # the row's slowdown in the bin of about one other
        return [float(cell[1:]) for cell in row.split() if cell.startswith("x")][2]

    one, more = (blocks[str(run)] for run in runs)
    assert 1.8 <= beside_one(one[1]) <= 2.2 and 1.12 <= beside_one(more[1]) <= 1.38, "\n".join(lines)
    distance = {str(run): float(blocks[str(run)][2].split("distance ")[1]) for run in runs}
    assert distance[str(runs[1])] * 5 < distance[str(runs[0])], "\n".join(lines)
    pooled = [line for line in lines if line.startswith("live ") and line.split()[1].startswith("x")]  # not indented
    assert len(pooled) == 1 and lines.index(pooled[0]) < lines.index(f"{runs[0]}:")  # the pooled curve heads it


def test_bad_inputs_get_a_line_each_before_any_simulation(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    run = synthetic_run(tmp_path / "run", 1.6, seed=1, horizon=200.0)
    law = scenario(tmp_path, 1.0, 0.1)
    assert main(["sharing", str(law), str(run), "--seeds", "9"]) == 2
    assert "--seeds: 9; expected 1 to 8 seeds a run" in capsys.readouterr().err
    (tmp_path / "run" / "static.recording" / "events.jsonl").unlink()
    assert main(["sharing", str(law), str(run)]) == 2
    err = capsys.readouterr().err
    assert (
        f"{tmp_path / 'run' / 'static.recording'}: no run recording; expected compare-app --out's LABEL.recording"
        in err
    )
    assert main(["sharing", str(law), str(run), "--host", "box"]) == 2
    assert "--host: 'box' is not a host of the scenario; expected one of: vm" in capsys.readouterr().err


def test_fit_growths_cores_by_sharing_are_the_scans_with_celerys_cpu_held_beside_the_tasks(tmp_path):
    """``fit-growth --visit-cpu S --cores sharing`` holds the host's cores at the scan's choice
    with Celery's CPU in the sharing (:func:`fitted_cores`): on runs of a machine of 1.6 cores
    and no Celery CPU, 1.6 with none held, more with some held (its work takes cores the tasks
    then need back to slow as they did)."""
    from adaptflow.runtime.calibrate.growth import read_runs
    from adaptflow.runtime.calibrate.sharing import fitted_cores
    from adaptflow.scenario import load_scenario
    from adaptflow.simulator import Simulation

    (tmp_path / "run").mkdir()
    runs, _ = read_runs([synthetic_run(tmp_path / "run", 1.6, seed=1)], STAGES, ["uploads"])
    law = load_scenario(scenario(tmp_path, 1.0, 0.1))
    plain, distance = fitted_cores(law, "vm", STAGES, runs, Simulation, visit_cpu=0.0)
    assert 1.5 <= plain <= 1.7 and distance < 0.01
    held, _ = fitted_cores(law, "vm", STAGES, runs, Simulation, visit_cpu=0.05)
    assert held > plain


def test_cores_by_sharing_need_celerys_cpu_held_and_a_known_word(tmp_path, capsys):
    from .test_growth import write_runs
    from .test_growth import write_scenario as growth_scenario

    path = growth_scenario(tmp_path)
    runs = write_runs(tmp_path / "compare_app.csv", [("live", "static", 1.0, {}), ("live", "p2", 2.0, {})])
    out = str(tmp_path / "out.yaml")
    assert main(["fit-growth", str(path), str(runs), "--out", out, "--cores", "sharing"]) == 2
    assert "--cores sharing: without --visit-cpu; expected it with Celery's CPU held" in capsys.readouterr().err
    assert main(["fit-growth", str(path), str(runs), "--out", out, "--visit-cpu", "0.01", "--cores", "all"]) == 2
    assert "--cores: 'all'; expected search or sharing" in capsys.readouterr().err
    assert not (tmp_path / "out.yaml").exists()


def test_fit_growths_cpu_fit_holds_the_cores_it_read_from_the_recordings(tmp_path):
    """Through ``fit-growth``'s own step (``growth._fit_cpu``): with ``--cores sharing`` the
    cores read from the runs' recordings are the ones the fit holds and writes, one candidate,
    on runs of a machine of 1.6 cores at two pool sizes."""
    from dataclasses import replace

    from adaptflow.runtime.calibrate.celery_cpu import CpuFit
    from adaptflow.runtime.calibrate.growth import SHARING, GrowthFit, _fit_cpu, read_runs
    from adaptflow.scenario import load_scenario
    from adaptflow.scenario.schema import TurnaroundGrowth
    from adaptflow.simulator import Simulation

    paths = []
    for pool in (2, 1):
        folder = tmp_path / f"pool{pool}"
        folder.mkdir()
        paths.append(synthetic_run(folder, 1.6, seed=pool, horizon=600.0, pool=pool))
    law = scenario(tmp_path, 1.0, 0.1)
    runs, _ = read_runs(paths, STAGES, ["uploads"])
    runs = [replace(run, services=recorded_services(run.folder / "static.recording")) for run in runs]
    fit = GrowthFit("vm", TurnaroundGrowth(per_process=0.0, reference=6), runs, [], {}, {})
    data = yaml.safe_load(law.read_text())
    chosen = _fit_cpu(load_scenario(law), data, tmp_path, fit, Simulation, None, 0.001, SHARING)
    assert isinstance(chosen, CpuFit) and fit.sharing_cores is not None
    assert 1.5 <= fit.sharing_cores[0] <= 1.8
    assert chosen.law.cores == fit.sharing_cores[0] and len(chosen.errors) == 1
    assert data["hosts"]["vm"]["cores"] == fit.sharing_cores[0] and data["hosts"]["vm"]["visit_cpu"] == 0.001


def recorded_services(recording: Path) -> dict[str, float]:
    """Each stage's mean service in a run recording, as compare-app's ``service_<stage>`` holds it."""
    from adaptflow.runtime.calibrate.recording import read_recording
    from adaptflow.runtime.calibrate.timeline import build_timeline

    stages = build_timeline(read_recording(recording)).stages
    return {s: float(np.mean(stages[s].services)) for s in STAGES}
