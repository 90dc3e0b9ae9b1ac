"""The hand-off rule (adaptflow.runtime.live.handoff), which calibration's turnaround and
compare-app's ``handoff_<stage>`` share; and compare-app's tap of a run's attempts."""

from __future__ import annotations

import math
from statistics import mean

import numpy as np
import pytest

from adaptflow.runtime.compare_app import RunTap
from adaptflow.runtime.live.handoff import MIN_GAPS, backlogged_gaps, idle_waits, mean_handoff, mean_idle_wait
from adaptflow.scenario import parse_scenario
from adaptflow.simulator import Simulation

TURN = 0.1


def backlogged_node(processes: int, tasks: int, seed: int = 3) -> list[tuple[float, float, float, str]]:
    """Attempts of one node whose ``processes`` serve a backlog (all sent at 0) with random
    service times and a fixed ``TURN`` between a process's tasks: events name only the node."""
    rng = np.random.default_rng(seed)
    free = [0.0] * processes  # when each process can start its next task
    attempts = []
    for _ in range(tasks):
        k = int(np.argmin(free))
        start = free[k]
        finish = start + rng.lognormal(-0.5, 0.8)
        attempts.append((0.0, start, finish, "enrich@host"))
        free[k] = finish + TURN
    return attempts


@pytest.mark.parametrize("processes", [1, 2, 4])
def test_a_backlogged_node_s_gaps_are_its_turnaround_however_many_processes_it_runs(processes):
    """Each finish is matched with the start that took its slot, though the events do not say
    which process ran what (pairing consecutive starts, as calibration did, found 93 of the 198
    gaps at two processes and 37 of 196 at four, averaging 0.096 and 0.090 s for 0.1)."""
    attempts = backlogged_node(processes, 200)
    gaps = backlogged_gaps(attempts)
    assert len(gaps) == 200 - processes  # every finish but the last one of each process
    assert gaps == pytest.approx([TURN] * len(gaps))
    assert mean_handoff(attempts) == pytest.approx(TURN)


def test_a_process_that_idled_is_no_hand_off():
    """A task sent after the finish before it found the node idle: the gap is idling, not
    refilling; a start with no finish before it (a process idle since the start) matches none."""
    attempts = [(0.0, 0.0, 1.0, "n"), (5.0, 5.0, 6.0, "n"), (5.5, 6.2, 7.0, "n"), (0.0, 0.0, 3.0, "m")]
    assert backlogged_gaps(attempts) == pytest.approx([0.2])
    # a task is ready only after the dispatch delay: sent 0.5 s before the finish, ready 0.5 s after it
    assert backlogged_gaps(attempts, dispatch=1.0) == []
    assert mean_handoff(backlogged_node(1, MIN_GAPS)) is None  # MIN_GAPS - 1 gaps: too few to tell


def test_only_the_waits_of_tasks_that_met_their_stage_idle_are_its_idle_waits():
    """An attempt counts when nothing else of the stage was waiting, running or in its
    turnaround when it entered, whatever the pool: here the first, the one after a long gap and
    the one just after a turnaround; not one sent while another ran, nor one sent while another
    waited, nor one sent inside a turnaround."""
    attempts = [
        (0.0, 0.02, 0.5, "n"),  # idle: waits 0.02
        (0.3, 0.52, 0.9, "n"),  # sent while the first ran
        (0.95, 1.0, 1.2, "n"),  # sent inside the turnaround (0.1) after 0.9
        (1.1, 1.25, 1.3, "n"),  # sent while the one before ran
        (1.41, 1.44, 1.6, "n"),  # idle: 0.11 after the last finish, waits 0.03
        (5.0, 5.04, 5.2, "n"),  # idle after a long gap: waits 0.04
    ]
    assert idle_waits(list(reversed(attempts)), turnaround=0.1) == pytest.approx([0.02, 0.03, 0.04])
    assert idle_waits(attempts) == pytest.approx([0.02, 0.05, 0.03, 0.04])  # no turnaround: the third too
    assert mean_idle_wait(attempts * 4, 0.1) is None  # repeated, they overlap: too few met it idle
    spaced = [(10.0 * k, 10.0 * k + 0.03, 10.0 * k + 0.1, "n") for k in range(MIN_GAPS)]
    assert mean_idle_wait(spaced) == pytest.approx(0.03)


def test_the_simulation_reads_the_waits_that_met_its_stage_idle_by_the_same_rule():
    """A visit that met the stage idle waits the dispatch delay alone (0.05); the rule leaves out
    those sent while another was dispatching, queued, served or in its turnaround (0.2, longer
    than the delay, so one sent during it waits more). Counted on enough of each to tell."""
    scenario = parse_scenario({
        "name": "idle", "horizon": 2000, "sla": {"latency": 10},
        "sources": {"in": {"process": "poisson", "rate": 2.0, "to": "s"}},
        "stages": {"s": {"workers": {"initial": 1, "max": 1}, "service": {"dist": "exponential", "mean": 0.1},
                         "turnaround": 0.2, "dispatch_delay": 0.05, "next": None}},
    })  # fmt: skip
    sim = Simulation(scenario, 3)
    sim.run(scenario.horizon)
    stage = sim.counters().stages["s"]
    assert 0.3 * stage.arrivals < stage.idle_waits < 0.8 * stage.arrivals
    assert stage.idle_wait_sum / stage.idle_waits == pytest.approx(0.05)
    assert mean(sim.samples(None, sim.counters()).waits("s")) > 0.08  # the others waited longer


def test_the_run_tap_keeps_arrivals_and_attempts_as_the_fold_takes_them():
    records = [
        {"e": "arrive", "src": "orders", "i": "a", "t": "100.5"},
        {"e": "enter", "s": "enrich", "i": "a", "k": "t1", "t": "100.5"},
        {"e": "start", "s": "enrich", "k": "t1", "t": "101.0", "q": "100.5", "h": "enrich@x"},
        {"e": "finish", "s": "enrich", "k": "t1", "t": "101.5", "st": "101.0", "x": "0", "d": "0"},
        {"e": "finish", "s": "enrich", "k": "before", "t": "101.6", "st": "99.0", "x": "0", "d": "0"},
    ]

    class Source:
        def read(self):
            return records

        def advance(self):
            pass

    tap = RunTap(Source(), origin=100.0)
    assert tap.read() == records and tap.arrivals == {} and tap.attempts == {}  # nothing before advance
    tap.advance()
    assert tap.arrivals == {"orders": [0.5]}
    # a task whose start the run did not see (started before it) has no attempt
    assert tap.attempts == {"enrich": [(0.5, 1.0, 1.5, "enrich@x")]}


def test_a_run_whose_tasks_strayed_from_the_simulation_is_said_to():
    """compare-app warns, per stage, when a live run's mean service, hand-off or wait met idle was more than
    1.25 times the simulation's either way (the 15-process run of docs/sim_to_real.md: 1.8 x, 4.9 x)."""
    from adaptflow.experiments.compare_app import timing_drift

    live = {
        "service_a": 0.185,
        "handoff_a": 0.403,
        "service_b": 0.10,
        "handoff_b": math.nan,
        "service_c": 0.05,
        "idle_wait_b": 0.04,
        "idle_wait_c": 0.1,
    }
    sim = {"service_a": 0.102, "handoff_a": 0.0821, "service_b": 0.09, "handoff_b": 0.0, "service_c": 0.07,
           "idle_wait_b": 0.035, "idle_wait_c": 0.06}  # fmt: skip
    lines = timing_drift("static", live, sim, ["a", "b", "c"])
    assert lines == [
        "static: stage a's service was 0.185 s live against 0.102 s simulated (1.81 x): "
        "the simulated waits of this run are not the live machine's",
        "static: stage a's hand-off between tasks was 0.403 s live against 0.0821 s simulated (4.91 x): "
        "the simulated waits of this run are not the live machine's",
        "static: stage c's service was 0.05 s live against 0.07 s simulated (0.71 x): "
        "the simulated waits of this run are not the live machine's",
        "static: stage c's wait met idle was 0.1 s live against 0.06 s simulated (1.67 x): "
        "the simulated waits of this run are not the live machine's",
    ]  # b: within 1.25 x, and a hand-off not measured is no drift
