"""A host's laws by the machine's speed (``Host.by_speed``, ``Scenario.laws_at_speed``, ``adaptflow
laws-by-speed``): fits of days at different speeds put side by side are taken at a run's own
speed, each fit's own at its speed, mixed in the log of the speed between them and held at the
ends beyond; a simulation runs them; bad entries and fits that are not of one calibration get a
line each and no file."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from adaptflow.cli import main
from adaptflow.experiments.compare_app import with_handoffs
from adaptflow.runtime.calibrate.celery_cpu import grids
from adaptflow.runtime.calibrate.growth import fit_growth_file
from adaptflow.scenario import ScenarioError, load_scenario, parse_scenario
from adaptflow.scenario.schema import LawsAtSpeed, laws_between
from adaptflow.simulator import Simulation

SLOW = {"speed": 1.0, "turnaround_growth": {"per_process": 0.2, "reference": 2}, "handoff_cpu": 0.5,
        "services": {"parse": 0.8, "check": 0.7}, "cpu": {"check": 1.0},
        "turnarounds": {"check": 0.8}, "dispatches": {"parse": 1.3}}  # fmt: skip
FAST = {"speed": 1.44, "turnaround_growth": {"per_process": 0.02, "reference": 2}, "visit_cpu": 0.004,
        "cores": 1.5, "services": {"parse": 0.95}, "turnarounds": {"parse": 1.1}}  # fmt: skip
# (FAST's cores searched, as fit-growth --visit-cpu does; SLOW keeps the calibration's 2)
STAGE_MULTIPLES = ("services", "cpu", "turnarounds", "dispatches")


def calibration() -> dict:
    """Two stages of one process each on host ``vm``; check's service half CPU work."""
    return {
        "name": "app", "horizon": 120, "seed": 3, "sla": {"latency": 2.0},
        "sources": {"uploads": {"process": "poisson", "rate": 4.0, "to": "parse"}},
        "hosts": {"vm": {"cores": 2.0}},
        "stages": {
            "parse": {"workers": {"initial": 1, "max": 4}, "service": {"dist": "lognormal", "mean": 0.1, "cv": 0.5},
                      "turnaround": 0.02, "dispatch_delay": 0.01, "host": "vm", "next": "check"},
            "check": {"workers": {"initial": 1, "max": 4}, "service": {"dist": "empirical", "samples": [0.05, 0.1]},
                      "turnaround": 0.03, "host": "vm", "cpu": 0.5, "next": None},
        },
    }  # fmt: skip


def by_speed(speed: float) -> dict:
    data = calibration()
    data["hosts"]["vm"].update(speed=speed, by_speed=[SLOW, FAST])
    return data


def fitted(entry: dict) -> dict:
    """What fit-growth --session-speed writes for a session at ``entry``'s speed: the laws on the
    host, the services rescaled, the shares set, the levels settled."""
    data = calibration()
    laws = {k: v for k, v in entry.items() if k not in STAGE_MULTIPLES}
    data["hosts"]["vm"].update(laws)
    stages = parse_scenario(calibration()).stages
    for stage, factor in entry["services"].items():
        service = stages[stage].service.scaled(factor)
        data["stages"][stage]["service"] = service.model_dump(mode="json", exclude_none=True)
    for stage, share in entry.get("cpu", {}).items():
        data["stages"][stage]["cpu"] = share
    turnarounds, dispatches = entry.get("turnarounds", {}), entry.get("dispatches", {})
    for stage in {**turnarounds, **dispatches}:
        levels = stages[stage].with_levels(turnarounds.get(stage, 1.0), dispatches.get(stage, 1.0))
        data["stages"][stage].update(turnaround=levels.turnaround, dispatch_delay=levels.dispatch_delay)
    return data


def means(scenario) -> tuple[float, ...]:
    sim = Simulation(scenario, rng=5)
    sim.run(scenario.horizon)
    stages = sim.counters().stages
    return tuple(getattr(stages[s], k) for s in ("parse", "check") for k in ("completed", "queue_area", "busy_area"))


def test_each_fit_holds_at_its_speed_mixes_in_log_speed_between_and_holds_beyond():
    slow, fast = (parse_scenario(fitted(e)) for e in (SLOW, FAST))
    for speed, fit in ((1.0, slow), (1.44, fast), (0.7, slow), (2.5, fast)):
        at = parse_scenario(by_speed(speed)).laws_at_speed()
        assert at.hosts["vm"].model_dump(exclude={"speed"}) == fit.hosts["vm"].model_dump(exclude={"speed"})
        assert at.stages["check"].cpu_share == fit.stages["check"].cpu_share
        for stage in ("parse", "check"):
            assert at.stages[stage].service.expected() == pytest.approx(fit.stages[stage].service.expected(), 1e-12)
            assert at.stages[stage].turnaround == pytest.approx(fit.stages[stage].turnaround, 1e-12)
            assert at.stages[stage].dispatch_mean() == pytest.approx(fit.stages[stage].dispatch_mean(), 1e-12)
    middle = parse_scenario(by_speed(1.2)).laws_at_speed()  # 1.2 is halfway from 1 to 1.44 in log speed
    host = middle.hosts["vm"]
    assert host.by_speed == [] and host.speed == 1.2
    assert host.turnaround_growth.per_process == pytest.approx(0.11) and host.turnaround_growth.reference == 2
    assert host.handoff_cpu == pytest.approx(0.25) and host.visit_cpu == pytest.approx(0.002)
    assert host.cores == pytest.approx(math.sqrt(2.0 * 1.5))  # SLOW at the host's 2 cores, mixed geometrically
    assert host.dispatch_growth is None
    assert middle.stages["parse"].service.mean == pytest.approx(0.1 * math.sqrt(0.8 * 0.95))
    assert middle.stages["check"].service.expected() == pytest.approx(0.075 * math.sqrt(0.7))  # FAST leaves it at 1
    assert middle.stages["check"].cpu_share == pytest.approx(0.75)  # FAST keeps its own 0.5
    assert middle.stages["parse"].turnaround == pytest.approx(0.02 * math.sqrt(1.1))  # SLOW leaves it at 1
    assert middle.stages["check"].turnaround == pytest.approx(0.03 * math.sqrt(0.8))
    assert middle.stages["parse"].dispatch_mean() == pytest.approx(0.01 * math.sqrt(1.3))
    assert middle.stages["check"].dispatch_mean() == 0.0  # none calibrated: none at any level
    plain = parse_scenario(calibration())
    assert plain.laws_at_speed() is plain


laws = st.fixed_dictionaries({
    "speed": st.floats(0.2, 5.0), "handoff_cpu": st.floats(0, 4), "visit_cpu": st.floats(0, 1),
    "cores": st.one_of(st.none(), st.floats(0.5, 8.0)),
    "turnaround_growth": st.builds(dict, per_process=st.floats(0, 2), reference=st.just(5)),
    "services": st.fixed_dictionaries({"parse": st.floats(0.1, 10)}),
})  # fmt: skip


@given(st.lists(laws, min_size=1, max_size=4, unique_by=lambda e: round(e["speed"], 6)), st.floats(0.05, 20.0))
def test_a_mix_never_leaves_the_two_fits_around_its_speed(entries, speed):
    """Whatever the fits and the speed, each law lies between the values of the two entries
    around the speed (the nearest entry's own beyond the ends): a mix invents no law."""
    fits = sorted((LawsAtSpeed(**e) for e in entries), key=lambda e: e.speed)
    mixed = laws_between(fits, speed, {}, cores=2.0)
    below = [e for e in fits if e.speed <= speed] or fits[:1]
    above = [e for e in fits if e.speed >= speed] or fits[-1:]
    pair = (below[-1], above[0])
    for law, value in (("handoff_cpu", mixed.laws["handoff_cpu"]), ("visit_cpu", mixed.laws["visit_cpu"])):
        ends = [getattr(e, law) for e in pair]
        assert min(ends) - 1e-12 <= value <= max(ends) + 1e-12
    growth = [e.turnaround_growth.per_process for e in pair]
    assert min(growth) - 1e-12 <= mixed.laws["turnaround_growth"].per_process <= max(growth) + 1e-12
    cores = [e.cores or 2.0 for e in pair]  # an entry without cores: the host's
    if "cores" in mixed.laws or any(e.cores for e in pair):
        assert min(cores) * (1 - 1e-12) <= mixed.laws["cores"] <= max(cores) * (1 + 1e-12)
    multiples = [e.services["parse"] for e in pair]
    assert min(multiples) * (1 - 1e-12) <= mixed.services["parse"] <= max(multiples) * (1 + 1e-12)


def test_a_simulation_runs_the_laws_of_its_hosts_speed():
    """A replay of the by-speed scenario at the fast day's speed is the fast day's fit's replay;
    at the slow day's, the slow one's; the two differ (or the test could not tell them apart)."""
    fast_sim = means(parse_scenario(by_speed(1.44)))
    assert fast_sim == pytest.approx(means(parse_scenario(fitted(FAST))), rel=1e-9)
    slow_sim = means(parse_scenario(by_speed(1.0)))
    assert slow_sim == pytest.approx(means(parse_scenario(fitted(SLOW))), rel=1e-9)
    assert fast_sim != pytest.approx(slow_sim, rel=0.01)
    # a replay with the run's own hand-offs drops the growth of that speed, keeps its Celery CPU
    replay = with_handoffs(parse_scenario(by_speed(1.2)), {"handoff_parse": 0.05})
    assert replay.hosts["vm"].turnaround_growth is None and replay.hosts["vm"].visit_cpu == pytest.approx(0.002)
    assert replay.stages["parse"].turnaround == pytest.approx(0.05 * 1.2)


def test_bad_entries_get_a_line_each():
    data = by_speed(1.2)
    data["hosts"]["vm"]["handoff_cpu"] = 0.3
    data["hosts"]["vm"]["by_speed"] = [
        FAST,
        {**SLOW, "dispatch_growth": {"per_process": 0.1, "reference": 3}, "services": {"write": 0.9}},
        {"speed": 2.0, "dispatch_growth": {"per_process": 0.1, "reference": 2, "counts": "stage"}},
    ]
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data)
    message = str(caught.value)
    assert "handoff_cpu: 0.3 beside by_speed; expected the laws in by_speed's entries only" in message
    assert "by_speed: speeds [1.44, 1.0, 2.0]; expected increasing speeds, each once" in message
    assert "by_speed.dispatch_growth.reference: [2, 3]; expected one reference for every entry" in message
    assert "by_speed.dispatch_growth.counts: ['host', 'stage']; expected one for every entry" in message
    del data["hosts"]["vm"]["handoff_cpu"]
    data["hosts"]["vm"]["by_speed"] = [{**SLOW, "services": {"write": 0.9}}, FAST]
    with pytest.raises(ScenarioError, match=r"hosts.vm.by_speed.0.services: \['write'\] are not stages placed on"):
        parse_scenario(data)
    data["hosts"]["vm"]["by_speed"] = [{**SLOW, "dispatches": {"write": 0.9}}, FAST]
    with pytest.raises(ScenarioError, match=r"hosts.vm.by_speed.0.dispatches: \['write'\] are not stages placed"):
        parse_scenario(data)


def write(folder: Path, name: str, data: dict) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_command_puts_fits_side_by_side_and_refuses_fits_of_another_calibration(tmp_path, capsys):
    base = write(tmp_path, "cal.yaml", calibration())
    session = fitted(FAST)
    session["hosts"]["vm"]["pulse"] = 850.0  # fit-growth --session-speed anchors its pulse to its session
    fits = [write(tmp_path, f"fit{e['speed']}.yaml", d) for e, d in ((FAST, session), (SLOW, fitted(SLOW)))]
    out = tmp_path / "bs.yaml"
    assert main(["laws-by-speed", str(base), *map(str, fits), "--out", str(out)]) == 0
    assert "speed 1.0: turnaround_growth" in capsys.readouterr().out
    combined = load_scenario(out)
    assert [e.speed for e in combined.hosts["vm"].by_speed] == [1.0, 1.44]  # slowest first
    assert combined.hosts["vm"].speed == 1.0 and combined.stages["parse"].service.mean == 0.1  # the calibration's
    assert combined.hosts["vm"].pulse is None  # the calibration's: one fit holds no pulse of its session
    assert [e.cores for e in combined.hosts["vm"].by_speed] == [None, 1.5]  # FAST's searched, SLOW's the host's
    slow = fitted(SLOW)
    slow["hosts"]["vm"]["pulse"] = 900.0
    both = [fits[0], write(tmp_path, "slow_pulsed.yaml", slow)]
    assert main(["laws-by-speed", str(base), *map(str, both), "--out", str(tmp_path / "pulsed.yaml")]) == 0
    assert load_scenario(tmp_path / "pulsed.yaml").hosts["vm"].pulse == round((850.0 * 900.0) ** 0.5, 1)  # 874.6
    at_fast = combined.model_copy(update={"hosts": {"vm": combined.hosts["vm"].model_copy(update={"speed": 1.44})}})
    assert means(at_fast) == pytest.approx(means(parse_scenario(fitted(FAST))), rel=1e-9)
    assert out.read_text().startswith("# cal.yaml, hosts.vm.by_speed from")
    # fit-growth fits one session on the calibration, not on laws by speed
    with pytest.raises(ValueError, match=r"hosts.vm.by_speed: .* holds laws by speed; expected the calibration"):
        fit_growth_file(out, [tmp_path / "runs.csv"], tmp_path / "never.yaml")

    other = fitted(SLOW)
    other["stages"]["parse"]["turnaround_cv"] = 0.5  # another calibration
    other["stages"]["check"]["service"]["samples"] = [0.05, 0.2]  # not one factor of the calibration's
    other["stages"]["check"]["dispatch_delay"] = 0.01  # none calibrated: no level of it
    twice = copy.deepcopy(fitted(FAST))
    twice["stages"]["parse"]["service"]["cv"] = 0.5  # the same (as it was)
    bad = [write(tmp_path, "other.yaml", other), write(tmp_path, "twice.yaml", twice), fits[0]]
    never = tmp_path / "never.yaml"
    assert main(["laws-by-speed", str(base), *map(str, bad), "--out", str(never)]) == 2
    err = capsys.readouterr().err
    assert "other.yaml: stages.parse.turnaround_cv: differs from the calibration's; expected a fit-growth of it" in err
    assert "other.yaml: stages.check.service: not the calibration's scaled by one factor" in err
    assert "other.yaml: stages.check.dispatch_delay: not the calibration's scaled by one factor" in err
    assert "FIT: speeds [1.44] met twice; expected each fit at a speed of its own" in err
    assert main(["laws-by-speed", str(base), str(fits[0]), "--out", str(never)]) == 2
    assert "FIT: 1 given; expected two or more fits" in capsys.readouterr().err
    assert main(["laws-by-speed", str(base), str(out), str(fits[0]), "--out", str(never)]) == 2
    assert "bs.yaml: hosts.vm.by_speed: already laws by speed" in capsys.readouterr().err
    assert main(["laws-by-speed", str(fits[1]), *map(str, fits), "--out", str(never)]) == 2  # a fit as calibration
    assert "fit1.0.yaml: hosts.vm.turnaround_growth: " in capsys.readouterr().err
    assert not never.exists()


def test_a_fit_at_its_grids_top_is_refused_left_out_or_kept(tmp_path, capsys):
    """A fit whose Celery CPU law sits at the top of fit-growth's grid (the fit docs/deploy.md says
    to distrust) is refused by default, with a line naming the file and the law; ``--grid-top
    skip`` leaves it out and says so, ``keep`` keeps it."""
    base = write(tmp_path, "cal.yaml", calibration())
    top = parse_scenario(calibration())
    visit_top = grids(top, ["parse", "check"])["visit_cpu"][-1]
    assert visit_top == pytest.approx(0.0875)  # the hosted stages' mean calibrated service (0.1 and 0.075)
    at_top = {**FAST, "speed": 1.2, "visit_cpu": visit_top}
    below = {**FAST, "speed": 1.3, "visit_cpu": round(visit_top * 0.95, 6)}  # the grid's last step but one
    fits = [write(tmp_path, f"fit{e['speed']}.yaml", fitted(e)) for e in (SLOW, FAST, at_top, below)]
    never, out = tmp_path / "never.yaml", tmp_path / "bs.yaml"

    assert main(["laws-by-speed", str(base), *map(str, fits), "--out", str(never)]) == 2
    err = capsys.readouterr().err
    assert f"fit1.2.yaml: hosts.vm: visit_cpu {visit_top:.6g}, the top of the grid fit-growth searched; expected" in err
    assert "fit1.3.yaml" not in err and "fit1.44.yaml" not in err
    assert not never.exists()

    assert main(["laws-by-speed", str(base), *map(str, fits), "--out", str(out), "--grid-top", "skip"]) == 0
    assert "left out " in capsys.readouterr().err
    assert [e.speed for e in load_scenario(out).hosts["vm"].by_speed] == [1.0, 1.3, 1.44]
    assert "fit1.2.yaml" not in out.read_text().partition("\n")[0]  # the header names the fits kept

    assert main(["laws-by-speed", str(base), *map(str, fits), "--out", str(out), "--grid-top", "keep"]) == 0
    assert [e.speed for e in load_scenario(out).hosts["vm"].by_speed] == [1.0, 1.2, 1.3, 1.44]

    handoff_top = write(tmp_path, "handoff.yaml", fitted({**SLOW, "speed": 1.1, "handoff_cpu": 2.0}))
    assert main(["laws-by-speed", str(base), str(fits[0]), str(handoff_top), "--out", str(never)]) == 2
    assert "handoff.yaml: hosts.vm: handoff_cpu 2, the top of the grid" in capsys.readouterr().err
    assert (
        main(["laws-by-speed", str(base), str(fits[0]), str(fits[2]), "--out", str(never), "--grid-top", "skip"]) == 2
    )
    err = capsys.readouterr().err
    assert "FIT: 1 left beside the fits at their grid's top; expected two or more" in err
    assert "fit1.2.yaml: hosts.vm: visit_cpu" in err  # which one, and why
    assert not never.exists()


def test_a_stages_own_slope_is_its_law_mixed_with_the_other_fits_slope_for_it():
    """``turnaround_growth.stages``: a stage's own slope is the law it meets
    (``TurnaroundGrowth.for_stage``), the others meet ``per_process``; mixed by speed, a stage one
    fit gives a slope of its own meets that slope mixed with the other fit's for it (its host's
    slope where it has none of its own); a slope for a stage not on the host is one line."""
    slow = {**SLOW, "turnaround_growth": {"per_process": 0.2, "reference": 2, "stages": {"parse": 0.1}}}
    data = by_speed(1.2)
    data["hosts"]["vm"]["by_speed"] = [slow, FAST]
    host = parse_scenario(data).laws_at_speed().hosts["vm"]
    growth = host.turnaround_growth
    assert growth.per_process == pytest.approx(0.11)  # halfway from 0.2 to 0.02
    assert growth.for_stage("parse").per_process == pytest.approx(0.06)  # halfway from 0.1 to FAST's 0.02
    assert growth.for_stage("check").per_process == pytest.approx(0.11)
    at_slow = parse_scenario(fitted(slow))
    assert at_slow.hosts["vm"].turnaround_growth.for_stage("parse").factor(4) == pytest.approx(1.2)
    assert at_slow.hosts["vm"].turnaround_growth.for_stage("check").factor(4) == pytest.approx(1.4)
    # the simulator meets each stage's own law: only parse's turnarounds change with its slope
    grown, flat = copy.deepcopy(fitted(slow)), copy.deepcopy(fitted(slow))  # fitted() shares the entry's dicts
    flat["hosts"]["vm"]["turnaround_growth"]["stages"] = {"parse": 0.0}
    per_visit = []
    for data_ in (grown, flat):
        for spec in data_["stages"].values():
            spec["workers"]["initial"] = 2  # 4 processes: past the reference, the law counts
        sim = Simulation(parse_scenario(data_), rng=5)
        sim.run(sim.scenario.horizon)
        per_visit.append({s: c.turnaround_sum / c.completed for s, c in sim.counters().stages.items()})
    assert per_visit[0]["parse"] == pytest.approx(1.2 * per_visit[1]["parse"], rel=0.05)
    assert per_visit[0]["check"] == pytest.approx(per_visit[1]["check"], rel=0.05)
    bad = copy.deepcopy(data)
    bad["hosts"]["vm"]["by_speed"][0]["turnaround_growth"]["stages"] = {"write": 0.1}
    with pytest.raises(ScenarioError, match=r"hosts.vm.by_speed.0.turnaround_growth.stages: \['write'\] are not"):
        parse_scenario(bad)


def test_a_law_of_points_runs_straight_between_its_sizes_and_mixes_size_by_size():
    """``turnaround_growth.points``: the factor measured at each size, straight between them and
    the reference (1), by ``per_process`` beyond; two fits mixed by speed mix their factors at
    every size either measured (a law without points: its line's); bad points get a line."""
    knee = {"per_process": 0.3, "reference": 2, "points": [{"processes": 4, "factor": 1.1},
                                                           {"processes": 6, "factor": 2.1}]}  # fmt: skip
    growth = parse_scenario(fitted({**SLOW, "turnaround_growth": knee})).hosts["vm"].turnaround_growth
    factors = [growth.factor(p) for p in (1, 2, 3, 4, 5, 6, 8)]
    assert factors == pytest.approx([0.7, 1.0, 1.05, 1.1, 1.6, 2.1, 2.7])
    data = by_speed(1.2)
    data["hosts"]["vm"]["by_speed"] = [{**SLOW, "turnaround_growth": knee}, FAST]
    mixed = parse_scenario(data).laws_at_speed().hosts["vm"].turnaround_growth
    assert mixed.per_process == pytest.approx(0.16)  # halfway from 0.3 to 0.02
    assert [p.processes for p in mixed.points] == [4, 6]
    assert [p.factor for p in mixed.points] == pytest.approx([1.07, 1.59])  # FAST's line: 1.04, 1.08
    bad = copy.deepcopy(data)
    bad["hosts"]["vm"]["by_speed"][0]["turnaround_growth"]["points"] = [
        {"processes": 6, "factor": 2.1}, {"processes": 4, "factor": 1.1}]  # fmt: skip
    with pytest.raises(ScenarioError, match=r"points: processes \[6, 4\]; expected increasing processes, each once"):
        parse_scenario(bad)
    bad["hosts"]["vm"]["by_speed"][0]["turnaround_growth"]["points"] = [{"processes": 2, "factor": 1.3}]
    with pytest.raises(ScenarioError, match="points: 2 is the reference, where the factor is 1; expected other sizes"):
        parse_scenario(bad)
    bad["hosts"]["vm"]["by_speed"][0]["turnaround_growth"] = {**knee, "stages": {"parse": 0.1}}
    with pytest.raises(ScenarioError, match="points beside stages; expected one of them"):
        parse_scenario(bad)
    bad["hosts"]["vm"]["by_speed"][0]["turnaround_growth"] = knee
    bad["hosts"]["vm"]["by_speed"][1]["turnaround_growth"] = {"per_process": 0.02, "reference": 2,
                                                              "stages": {"parse": 0.1}}  # fmt: skip
    with pytest.raises(ScenarioError, match=r"by_speed\.turnaround_growth: points in one entry, stages in another"):
        parse_scenario(bad)


def test_laws_counting_each_stages_own_pool_mix_into_one_that_counts_them_too():
    """Two sessions' laws of ``counts: stage`` mix into a law that still counts a stage's own
    pool, its slope mixed as any other (halfway in log speed)."""
    data = by_speed(1.2)
    slow, fast = copy.deepcopy(SLOW), copy.deepcopy(FAST)
    slow["turnaround_growth"] = {"per_process": 0.6, "reference": 1, "counts": "stage"}
    fast["turnaround_growth"] = {"per_process": 0.2, "reference": 1, "counts": "stage"}
    data["hosts"]["vm"]["by_speed"] = [slow, fast]
    mixed = parse_scenario(data).laws_at_speed().hosts["vm"].turnaround_growth
    assert mixed.counts == "stage" and mixed.reference == 1 and mixed.per_process == pytest.approx(0.4)
