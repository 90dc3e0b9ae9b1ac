"""The machine's speed of the moment (adaptflow/runtime/probe.py, ``Host.speed``): the recorder's
CPU probe is kept by calibration as the host's ``probe``, and compare-app's simulation of a live
run runs the host at that run's probe against it. The speed's meaning itself (CPU work and
turnarounds take 1/speed as long) is checked on a sample path in test_theory.py."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptflow.cli import main
from adaptflow.experiments.compare_app import LIVE_SPEED, compare_app_with_simulation, simulated_app_run
from adaptflow.experiments.live_speed import SPEED_TOLERANCE, live_speeds, with_speeds
from adaptflow.runtime.compare_app import RunResult
from adaptflow.runtime.probe import cpu_probe, speed_against
from adaptflow.scenario import load_scenario, parse_scenario

from .test_user_app import MAPPING, SCENARIO


def test_the_probe_measures_work_per_second_and_refuses_a_bad_window():
    rate = cpu_probe(0.05)
    assert math.isfinite(rate) and rate > 0
    for bad in (0.0, -1.0, math.nan, 61.0):
        with pytest.raises(ValueError, match="probe seconds"):
            cpu_probe(bad)
    assert speed_against(100.0, 150.0, 250.0) == pytest.approx(2.0)
    assert speed_against(None, 150.0) is None and speed_against(100.0) is None


def hosted(folder: Path, probe: float | None) -> Path:
    """One stage of one process on host ``vm`` (1 core): 0.2 s of CPU a visit, 0.1 s turnaround."""
    (folder / "arrivals.csv").write_text("timestamp\n" + "".join(f"{t}\n" for t in (0.0, 1.0, 2.0, 3.0)))
    path = folder / "app.yaml"
    probe_text = "" if probe is None else f", probe: {probe}"
    path.write_text(
        "name: app\nhorizon: 20\nsla: {latency: 10}\n"
        "sources: {uploads: {process: trace, file: arrivals.csv, to: work}}\n"
        f"hosts: {{vm: {{cores: 1.0{probe_text}}}}}\n"
        "stages:\n"
        "  work: {workers: {initial: 1, max: 1}, service: {dist: deterministic, mean: 0.2}, turnaround: 0.1,"
        " host: vm, next: null}\n"
    )
    return path


def saved_run(folder: Path, uploads: list[float], **reading: float) -> Path:
    """A compare-app folder as resimulate reads it: one live run of ``static`` (four decisions
    of 5 s) on ``uploads``, its row carrying ``reading`` (a machine reading: ``steal``, ``pulse``)."""
    from adaptflow.runtime.compare_app import arrivals_file

    folder.mkdir()
    pd.DataFrame({"timestamp": uploads}).to_csv(arrivals_file(folder, "static", "uploads"), index=False)
    live = {"world": "live", "planner": "static", "spec": "static", "interval": 5.0, "decisions": 4, "seconds": 20.0,
            "mean_wait": 0.0, **reading}  # fmt: skip
    pd.DataFrame([live]).to_csv(folder / "compare_app.csv", index=False)
    return folder


BURST = [0.0] * 24
"""Items sent at once: each turnaround but the last has the next item waiting, so the
simulated rows read their hand-off as live would (at least MIN_GAPS backlogged gaps)."""


def test_a_run_is_simulated_at_the_speed_its_probes_measured(tmp_path):
    """Probes reading twice the calibration's: the simulated visit and turnaround take half as
    long, and the rows say at what speed they ran. Without ``probe_speed``, as calibrated."""
    scenario = load_scenario(hosted(tmp_path, probe=1000.0))
    run = RunResult("static", [None] * len(BURST), None, 20.0, 0, arrivals={"uploads": BURST})  # type: ignore[arg-type]
    run.probes = [1900.0, 2100.0]
    assert run.speeds(scenario) == {"vm": pytest.approx(2.0)}
    fast = simulated_app_run(scenario, run, "static", 1, 5.0, tmp_path, probe_speed=True)[0]
    plain = simulated_app_run(scenario, run, "static", 1, 5.0, tmp_path)[0]
    assert fast["service_work"] == pytest.approx(0.1) and fast["handoff_work"] == pytest.approx(0.05)
    assert plain["service_work"] == pytest.approx(0.2) and plain["handoff_work"] == pytest.approx(0.1)
    assert fast["speed_vm"] == pytest.approx(2.0) and "speed_vm" not in plain
    assert with_speeds(scenario, {"vm": 2.0}).hosts["vm"].speed == 2.0
    unprobed = load_scenario(hosted(tmp_path, probe=None))
    assert run.speeds(unprobed) == {}  # no calibration probe: nothing to compare with


def test_a_run_can_be_simulated_at_the_speed_its_own_tasks_met(tmp_path):
    """Live tasks that took 0.4 s where the scenario says 0.2 (all CPU, one core, one process),
    sent at once and run one after another 0.2 s apart: the host's speed is read as 0.5 from
    them, and the run simulated at it serves in 0.4 s and turns in 0.2; from a probed speed of
    2 the same tasks read as 0.5 too (the step starts from the speed simulated). A host none of
    whose stages was measured live keeps no speed."""
    scenario = load_scenario(hosted(tmp_path, probe=1000.0))
    attempts = {"work": [(0.0, 0.6 * i, 0.6 * i + 0.4, "node") for i in range(len(BURST))]}
    run = RunResult("static", [None] * len(BURST), None, 20.0, 0, arrivals={"uploads": BURST}, attempts=attempts)  # type: ignore[arg-type]
    plain, slow = simulated_app_run(scenario, run, "static", 1, 5.0, tmp_path, live_speed=True)
    assert plain["world"] == "simulated" and plain["service_work"] == pytest.approx(0.2)
    assert slow["world"] == LIVE_SPEED
    assert slow["speed_vm"] == pytest.approx(0.5)
    assert slow["service_work"] == pytest.approx(0.4) and slow["handoff_work"] == pytest.approx(0.2)
    run.probes = [1900.0, 2100.0]
    probed = simulated_app_run(scenario, run, "static", 1, 5.0, tmp_path, probe_speed=True, live_speed=True)[-1]
    assert probed["speed_vm"] == pytest.approx(0.5) and probed["service_work"] == pytest.approx(0.4)
    assert slow["scale_work"] == pytest.approx(1.0) and probed["scale_work"] == pytest.approx(1.0)
    assert live_speeds(scenario, {"service_work": math.nan}, {"service_work": 0.2}, {}) == {}


def test_stages_that_slowed_unequally_are_each_replayed_at_their_own_live_service(tmp_path):
    """Two stages on one host (2 cores, never oversubscribed): ``cut`` all CPU, live 0.4 s
    against 0.2 simulated; ``pack`` half CPU, live as simulated. The host's one step (geometric
    mean, 1/sqrt 2) would leave the services' geometric mean 8 % short of the live one (pack's
    I/O half does not slow); the search settles where it meets it, at v with
    (0.2/v)(0.1 + 0.1/v) = 0.4 * 0.2, v = 0.640 (within the 3 % it settles to), and each
    stage's residual scale brings both to their live mean."""
    (tmp_path / "arrivals.csv").write_text("timestamp\n0\n1\n2\n3\n")
    path = tmp_path / "two.yaml"
    path.write_text(
        "name: two\nhorizon: 20\nsla: {latency: 10}\n"
        "sources: {uploads: {process: trace, file: arrivals.csv, to: cut}}\n"
        "hosts: {vm: {cores: 2.0}}\n"
        "stages:\n"
        "  cut: {workers: {initial: 1, max: 1}, service: {dist: deterministic, mean: 0.2}, host: vm, next: pack}\n"
        "  pack: {workers: {initial: 1, max: 1}, service: {dist: deterministic, mean: 0.2}, host: vm, cpu: 0.5,"
        " next: null}\n"
    )
    scenario = load_scenario(path)
    attempts = {
        "cut": [(t, t, t + 0.4, "node") for t in (0.0, 1.0, 2.0, 3.0)],
        "pack": [(t + 0.4, t + 0.4, t + 0.6, "node") for t in (0.0, 1.0, 2.0, 3.0)],
    }
    run = RunResult("static", [None] * 4, None, 20.0, 0, arrivals={"uploads": [0.0, 1.0, 2.0, 3.0]}, attempts=attempts)  # type: ignore[arg-type]
    row = simulated_app_run(scenario, run, "static", 1, 5.0, tmp_path, live_speed=True)[-1]
    speed = row["speed_vm"]
    assert speed == pytest.approx(0.640, rel=SPEED_TOLERANCE) and abs(row["speed_gap_vm"]) <= SPEED_TOLERANCE
    assert row["speed_gap_vm"] == pytest.approx(math.sqrt((0.2 / speed) * (0.1 + 0.1 / speed) / 0.08) - 1)
    assert row["scale_cut"] == pytest.approx(0.4 / (0.2 / speed))
    assert row["scale_pack"] == pytest.approx(0.2 / (0.1 + 0.1 / speed))
    assert row["service_cut"] == pytest.approx(0.4) and row["service_pack"] == pytest.approx(0.2)
    assert scenario.stages["cut"].service.scaled(3.0).mean == pytest.approx(0.6)
    with pytest.raises(ValueError, match="service scale"):
        scenario.stages["cut"].service.scaled(0.0)


@pytest.mark.parametrize(
    ("flag", "refused"),
    [
        ("probe_speed", "--probe-speed: no host of scenario 'shop' has a probe"),
        ("live_speed", "--live-speed: scenario 'shop' has no hosts"),
        ("pulse_speed", "--pulse-speed: no host of scenario 'shop' has a pulse"),
    ],
)
def test_a_speed_flag_needs_a_host_and_a_simulation(flag, refused, capsys):
    """The shop scenario has no host: each speed is refused before any run, and each flag
    without --simulate is refused by the command line."""
    with pytest.raises(ValueError, match=refused):
        compare_app_with_simulation(
            "tests.apps.shop:app", MAPPING, parse_scenario(SCENARIO), ["static"], ["true"], 1.0, 1.0, **{flag: True}
        )
    option = "--" + flag.replace("_", "-")
    base = ["compare-app", "--app", "tests.apps.shop:app", "--mapping", "m.yaml", "--scenario", "mmc"]
    assert main([*base, "--planners", "static", option, "--", sys.executable, "-c", "pass"]) == 2
    expected = f"{option}: the speed is replayed in simulation; give --simulate SEEDS too"
    assert expected in capsys.readouterr().err


def test_calibration_keeps_the_recorders_probe_on_the_recording_machine(tmp_path):
    """The mean of the recording's probes becomes the recording machine's ``probe``; probes that
    disagree by more than a quarter are reported; a recording without probes (before they were
    taken) calibrates as before."""
    from adaptflow.runtime.calibrate import calibrate

    from .test_calibrate import SyntheticApp, write_recording

    folder = write_recording(tmp_path / "rec", SyntheticApp(seed=5, horizon=600.0, cpu={"parse": 1.0}, cores=1.0).run())
    meta_path = folder / "recording.json"
    meta = json.loads(meta_path.read_text())
    plain = calibrate(folder, tmp_path / "plain.yaml", cores="box=1")
    assert load_scenario(plain.scenario).hosts["box"].probe is None
    meta_path.write_text(json.dumps(meta | {"host": {"name": "box", "cores": 1}, "probes": [900.0, 1100.0]}))
    steady = calibrate(folder, tmp_path / "steady.yaml", cores="box=1")
    assert load_scenario(steady.scenario).hosts["box"].probe == pytest.approx(1000.0)
    assert not any("CPU probe" in w for w in steady.report["warnings"])
    meta_path.write_text(json.dumps(meta | {"host": {"name": "box", "cores": 1}, "probes": [800.0, 1200.0]}))
    moved = calibrate(folder, tmp_path / "moved.yaml", cores="box=1")
    meta_path.write_text(json.dumps(meta | {"host": {"name": "box", "cores": 1}, "steal": 0.12345}))
    stolen = calibrate(folder, tmp_path / "stolen.yaml", cores="box=1")
    assert load_scenario(stolen.scenario).hosts["box"].steal == pytest.approx(0.1235)
    assert load_scenario(moved.scenario).hosts["box"].steal is None  # a recording from before steal was read
    assert any("CPU probe read [800.0, 1200.0]" in w for w in moved.report["warnings"]), moved.report["warnings"]


def test_a_saved_run_is_diagnosed_at_its_own_speed_and_its_gap_put_down_to_it(tmp_path):
    """``resimulate --live-speed``: a saved live row whose tasks took 0.4 s where the scenario
    says 0.2 gets the same diagnosis row as compare-app gave the run itself (the speed read
    from the row's ``service_<stage>``, not from events), and ``agreement`` puts the latency
    gap at the calibration's speed down to the run's speed; a scenario with no host is refused."""
    import pandas as pd

    from adaptflow.experiments.compare_app import agreement, resimulate
    from adaptflow.runtime.compare_app import arrivals_file

    scenario = load_scenario(hosted(tmp_path, probe=None))
    attempts = {"work": [(t, t, t + 0.4, "node") for t in (0.0, 1.0, 2.0, 3.0)]}
    arrivals = {"uploads": [0.0, 1.0, 2.0, 3.0]}
    run = RunResult("static#1", [None] * 4, None, 20.0, 0, arrivals=arrivals, attempts=attempts)  # type: ignore[arg-type]
    _, at_speed = simulated_app_run(scenario, run, "static", 1, 5.0, tmp_path, live_speed=True)
    saved = tmp_path / "cmp"
    saved.mkdir()
    pd.DataFrame({"timestamp": arrivals["uploads"]}).to_csv(arrivals_file(saved, "static#1", "uploads"), index=False)
    live = {"world": "live", "planner": "static#1", "spec": "static", "interval": 5.0, "decisions": 4,
            "seconds": 20.0, "service_work": 0.4, "mean_wait": 0.0, "throughput": at_speed["throughput"],
            "p95_latency": at_speed["p95_latency"], "cost": at_speed["cost"]}  # fmt: skip
    pd.DataFrame([live]).to_csv(saved / "compare_app.csv", index=False)

    table = resimulate(saved, scenario, seeds=1, live_speed=True)
    assert list(table["world"]) == ["live", "simulated", LIVE_SPEED]
    again = table.iloc[2]
    assert again["speed_vm"] == pytest.approx(0.5) and again["service_work"] == pytest.approx(0.4)
    assert again["p95_latency"] == pytest.approx(at_speed["p95_latency"])
    judged = agreement(table).set_index("metric")
    assert judged.loc["p95_latency", "gap"] < -0.3 and judged.loc["p95_latency", "verdict"] == "outside"
    assert judged.loc["p95_latency", "verdict_at_live_speed"] == "agrees"
    assert judged.loc["p95_latency", "cause"] == "the run's speed"
    assert judged.loc["throughput", "cause"] == "" and judged.loc["mean_wait", "cause"] == ""  # agrees; 0 s: none
    with pytest.raises(ValueError, match="--live-speed: scenario 'shop' has no hosts"):
        resimulate(saved, parse_scenario(SCENARIO), live_speed=True)


BUSY = """
name: busy
horizon: 300
sla: {latency: 10}
sources: {jobs: {process: poisson, rate: 2.0, to: cut}}
hosts: {vm: {cores: 2.0}}
stages:
  cut: {workers: {initial: 1, max: 8}, service: {dist: exponential, mean: 0.25}, host: vm, next: pack}
  pack: {workers: {initial: 1, max: 8}, service: {dist: exponential, mean: 0.2}, host: vm, next: null}
"""


def test_the_speed_is_searched_until_the_simulations_own_services_meet_the_runs():
    """A planner whose pools follow their queues (keda), on a 2-core host whose processes
    outnumber the cores: a "live" run simulated at speed 0.6 (seed 1) served 0.91 s and 0.72 s.
    Read from the run at the calibration's speed (seed 0), one step puts the machine at about
    0.32, where the simulation grows more processes, shares the cores among them and serves
    several times slower than the run did; the search settles within its tolerance of the
    services, near the true 0.6, with the run's pools."""
    from adaptflow.experiments.compare_live import as_live, simulated
    from adaptflow.experiments.live_speed import service_gaps, settle_speeds

    scenario = parse_scenario(yaml.safe_load(BUSY))

    def replay(speed: float, seed: int = 0) -> dict:
        return simulated(as_live(with_speeds(scenario, {"vm": speed})), "keda", seed, 300.0, 5.0)

    live, first = replay(0.6, seed=1), replay(1.0)
    one_step = live_speeds(scenario, live, first, {})["vm"]
    assert one_step < 0.6 * 0.7  # the overshoot: pools grown at the lower speed slow it further
    assert service_gaps(scenario, live, replay(one_step))["vm"] > math.log(2)
    settled = settle_speeds(scenario, live, first, {}, lambda at: replay(at["vm"]))
    assert abs(settled.gaps["vm"]) <= SPEED_TOLERANCE and 1 < settled.rounds <= 6
    assert settled.speeds["vm"] == pytest.approx(0.6, rel=0.05)
    assert settled.row["mean_pool"] == pytest.approx(live["mean_pool"], rel=0.10)


def test_a_runs_own_hand_offs_are_replayed_as_measured_at_any_speed(tmp_path):
    """``--live-handoffs`` with a speed: the run met 0.3 s between tasks, on a host replayed at
    speed 2 whose stage's turnaround also grows with the busy processes (contention). The replay
    turns in 0.3 s, not 0.15 (the speed divided out again) nor more (the contention counted
    twice); without the run's hand-offs, the scenario's own turnaround at speed 2 (0.05 s)."""
    from adaptflow.experiments.compare_app import with_handoffs
    from adaptflow.experiments.compare_live import simulated

    data = yaml.safe_load(hosted(tmp_path, probe=None).read_text())
    data["stages"]["work"]["contention"] = {"turnaround": 0.5}
    data["sources"]["uploads"] = {"process": "poisson", "rate": 2.0, "to": "work"}
    data["stages"]["work"]["workers"].update(initial=2, max=2)
    data["hosts"]["vm"]["cores"] = 2.0
    fast = with_speeds(parse_scenario(data, base_dir=tmp_path), {"vm": 2.0})
    replay = with_handoffs(fast, {"handoff_work": 0.3})
    assert replay.stages["work"].turnaround == pytest.approx(0.6) and replay.stages["work"].contention.turnaround == 0
    assert simulated(replay, "static", 0, 200.0, 5.0)["handoff_work"] == pytest.approx(0.3)
    own = simulated(fast, "static", 0, 200.0, 5.0)["handoff_work"]
    assert 0.05 < own < 0.05 * 1.5  # 0.1 s at speed 2, grown by the other process when it serves


ONE_STAGE = """
name: one
horizon: 10
sla: {latency: 10}
sources: {jobs: {process: poisson, rate: 1.0, to: work}}
hosts: {vm: {cores: 1.0}}
stages:
  work: {workers: {initial: 1, max: 1}, service: {dist: exponential, mean: 0.2}, host: vm, next: null}
"""


@settings(max_examples=200, deadline=None)
@given(
    slope=st.floats(0.2, 5.0),
    curve=st.floats(0.0, 0.5),
    root=st.floats(0.06, 15.0),
)
def test_the_speed_search_settles_on_any_falling_gap_within_its_rounds(slope: float, curve: float, root: float):
    """However steeply the services follow the speed (a stage of CPU share 0.2 moves them a
    fifth as far as the speed; pools that grow at a lower speed, five times as far) and wherever
    the run's speed lies in 0.06-15, a gap that falls with the speed is settled to within
    SPEED_TOLERANCE in SPEED_ROUNDS replays (one step, then secants or false position)."""
    from adaptflow.experiments.live_speed import SPEED_ROUNDS, settle_speeds

    scenario = parse_scenario(yaml.safe_load(ONE_STAGE))

    def replay(at: dict[str, float]) -> dict[str, float]:
        away = math.log(root) - math.log(at["vm"])
        return {"service_work": math.exp(slope * away + curve * away**3)}

    settled = settle_speeds(scenario, {"service_work": 1.0}, replay({"vm": 1.0}), {}, replay)
    assert abs(settled.gaps["vm"]) <= SPEED_TOLERANCE and settled.rounds <= SPEED_ROUNDS
    assert abs(math.log(settled.speeds["vm"] / root)) <= math.log1p(SPEED_TOLERANCE) / slope * (1 + 1e-9)


def test_steal_is_read_off_the_machines_cpu_time_between_two_readings(tmp_path):
    """The ``cpu`` line of /proc/stat read twice: of the 1,000 ticks between them, 220 idle and
    10 waiting for I/O, and of the 770 the CPUs wanted, 250 were steal (the 8th field; guest time,
    after it, is not counted twice). A file that is not
    Linux's (no such line, or not numbers) and a missing one read as None, and so does a share
    over no time; on this Linux machine the real file reads."""
    from adaptflow.runtime.probe import cpu_ticks, steal_share

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 10 0 5 20 7 0\ncpu0 1 2 3\n")
    before = cpu_ticks(stat)
    stat.write_text("cpu  500 0 150 1020 20 0 25 270 99 0\ncpu0 1 2 3\n")
    assert before == [100, 0, 50, 800, 10, 0, 5, 20]
    assert steal_share(before, cpu_ticks(stat)) == pytest.approx(250 / 770)
    assert steal_share(before, before) is None and steal_share(None, before) is None
    for text in ("intr 1 2 3\n", "cpu  1 2 x 4 5 6 7 8\n", "cpu  1 2 3\n"):
        stat.write_text(text)
        assert cpu_ticks(stat) is None, text
    assert cpu_ticks(tmp_path / "absent") is None
    if sys.platform.startswith("linux"):
        assert len(cpu_ticks() or []) == 8


def test_the_nice_share_is_read_off_the_machines_cpu_time_and_a_real_nice_job_shows(tmp_path):
    """Of the 1,000 ticks between two readings, 300 were nice'd processes' (the 2nd field): 0.3.
    And on this machine a real busy process under ``nice -n 19`` shows in the share between two
    real readings: at least the CPU time it got itself (its own /proc/<pid>/stat), whatever else
    the machine was running then."""
    import subprocess
    import time

    from adaptflow.runtime.probe import cpu_ticks, nice_share

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 10 0 5 20 7 0\n")
    before = cpu_ticks(stat)
    stat.write_text("cpu  350 300 100 1160 30 0 15 30 9 0\n")
    assert nice_share(before, cpu_ticks(stat)) == pytest.approx(300 / 1000)
    assert nice_share(before, before) is None and nice_share(None, before) is None
    if not sys.platform.startswith("linux"):
        return
    busy = "import time\nend = time.perf_counter() + 3.0\nwhile time.perf_counter() < end: pass\n"
    child = subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", busy])
    own = Path(f"/proc/{child.pid}/stat")

    def child_ticks() -> int:  # utime + stime, fields 14 and 15 (after the command's parentheses)
        fields = own.read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    time.sleep(0.3)  # exec'd and busy
    ticks, got = cpu_ticks(), child_ticks()
    time.sleep(1.5)
    after, got = cpu_ticks(), child_ticks() - got
    child.wait(timeout=10)
    share = nice_share(ticks, after)
    assert ticks is not None and after is not None and share is not None
    assert got > 0 and share * (sum(after) - sum(ticks)) >= got - 2, (share, got)


def test_a_run_beside_background_work_is_said_so_when_judged_at_its_pulse(tmp_path, caplog):
    """A saved run whose ``nice`` share was 30 % (a judging job under ``nice`` beside it) is
    simulated at its pulse with a warning naming the share; at 2 % (under ``BACKGROUND``) or
    without ``--pulse-speed``, no warning."""
    from adaptflow.experiments.compare_app import resimulate

    data = yaml.safe_load(hosted(tmp_path, probe=1000.0).read_text())
    data["hosts"]["vm"]["pulse"] = 1000.0
    scenario = parse_scenario(data, base_dir=tmp_path)
    for name, nice, pulse_speed, warned in (("a", 0.3, True, True), ("b", 0.02, True, False), ("c", 0.3, False, False)):
        saved = saved_run(tmp_path / name, [0.0, 1.0, 2.0, 3.0], pulse=800.0, nice=nice)
        caplog.clear()
        resimulate(saved, scenario, seeds=1, pulse_speed=pulse_speed)
        said = [r.getMessage() for r in caplog.records if "nice'd processes took" in r.getMessage()]
        assert bool(said) == warned, (name, said)
        if warned:
            assert said[0].startswith("static: nice'd processes took 30% of the machine's CPU"), said


def test_a_probe_that_missed_what_the_pulses_read_is_said_so_when_judged_at_the_probe(tmp_path, caplog):
    """A saved run whose probe read 0.70 of the calibration where its idle pulses read 0.95
    (more apart than ``PROBE_PULSE_GAP``) is judged at the probe's speed with a warning naming
    both; 0.90 against 0.95, a run without pulses, or a judgement at its pulse: no such warning."""
    from adaptflow.experiments.compare_app import PROBE_PULSE_GAP, resimulate

    data = yaml.safe_load(hosted(tmp_path, probe=1000.0).read_text())
    data["hosts"]["vm"]["pulse"] = 1000.0
    scenario = parse_scenario(data, base_dir=tmp_path)
    cases = (("a", 0.70, 950.0, "probe", True), ("b", 0.90, 950.0, "probe", False),
             ("c", 0.70, None, "probe", False), ("d", 0.70, 950.0, "pulse", False))  # fmt: skip
    assert abs(0.90 / 0.95 - 1) < PROBE_PULSE_GAP < abs(0.70 / 0.95 - 1)
    for name, probed, pulse, judged_at, warned in cases:
        reading = {"speed_vm": probed} | ({} if pulse is None else {"pulse": pulse})
        saved = saved_run(tmp_path / name, [0.0, 1.0, 2.0, 3.0], **reading)
        caplog.clear()
        row = resimulate(saved, scenario, seeds=1, **{f"{judged_at}_speed": True}).iloc[1]
        said = [r.getMessage() for r in caplog.records if "the probe read host" in r.getMessage()]
        assert bool(said) == warned, (name, said)
        if warned:
            assert row["speed_vm"] == pytest.approx(0.70)
            assert said[0].startswith("static: the probe read host 'vm' at 0.70 of its calibration, the run's idle "
                                      "pulses at 0.95 (-26%)"), said  # fmt: skip


@pytest.mark.parametrize(
    "reading, recorded, seen, missing",
    [
        ("steal", 0.1, 0.28, "kept its recording's steal"),  # busy tasks got 0.72 of the CPU, not 0.9
        ("pulse", 1000.0, 800.0, "has a pulse"),  # idle pulses at 800 where the recording's read 1,000
    ],
)
def test_a_run_is_simulated_at_the_speed_its_own_steal_or_pulses_give(tmp_path, reading, recorded, seen, missing):
    """A run whose reading (steal: 28 % against the recording's 10 %; pulse: 800 against 1,000)
    says it met 0.8 of the recording's speed is simulated at 0.8 with ``--steal-speed`` or
    ``--pulse-speed`` (the visit 0.25 s where the scenario says 0.2); a saved row's reading gives
    the same in resimulate; a run with none (not Linux; too few idle pulses) gives no speed; a
    scenario whose host kept no such reading, and two speeds at once, are refused before any work."""
    from adaptflow.experiments.compare_app import resimulate

    data = yaml.safe_load(hosted(tmp_path, probe=1000.0).read_text())
    data["hosts"]["vm"][reading] = recorded
    scenario = parse_scenario(data, base_dir=tmp_path)
    arrivals = {"uploads": [0.0, 1.0, 2.0, 3.0]}
    speeds = getattr(RunResult, f"{reading}_speeds")
    run = RunResult("static", [None] * 4, None, 20.0, 0, arrivals=arrivals, **{reading: seen})  # type: ignore[arg-type]
    assert speeds(run, scenario) == {"vm": pytest.approx(0.8)}
    flag = {f"{reading}_speed": True}
    row = simulated_app_run(scenario, run, "static", 1, 5.0, tmp_path, **flag)[0]
    assert row["speed_vm"] == pytest.approx(0.8) and row["service_work"] == pytest.approx(0.25)
    assert speeds(RunResult("static", [], None, 0.0, 0), scenario) == {}

    saved = saved_run(tmp_path / "cmp", arrivals["uploads"], **{reading: seen})
    again = resimulate(saved, scenario, seeds=1, **flag).iloc[1]
    assert again["speed_vm"] == pytest.approx(0.8) and again["service_work"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match=f"--{reading}-speed: no host of scenario 'app' {missing}"):
        resimulate(saved, load_scenario(hosted(tmp_path, probe=1000.0)), **flag)
    with pytest.raises(ValueError, match=f"--probe-speed and --{reading}-speed: expected one of them"):
        resimulate(saved, scenario, probe_speed=True, **flag)
