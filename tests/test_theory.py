"""The simulator against queueing theory.

Each check runs independent replications with fixed seeds, drops a warm-up period, and asserts
that the closed-form value lies inside the 95% confidence interval of the replication means,
with the interval at most a few percent wide (else the check would prove little).

A 95% interval misses the truth one time in twenty by design, so a check that fails is first
re-run with many more replications (a bias shows up there, chance does not); the seeds are fixed
so the suite is stable. M/D/1 with 20 replications from seed 1000 was such a miss
(1.965 +- 0.029 against 2.0; 100 replications from seed 5000 gave 2.006 +- 0.015), so it runs 40."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from adaptflow.scenario import parse_scenario
from adaptflow.scenario.streams import arrivals_with_quality
from adaptflow.scenario.theory import erlang_c, mg1_mean_wait, mmc_mean_wait
from adaptflow.simulator import Simulation
from tests.helpers import assert_within_ci, replicate, scenario, stage, trace_source


def test_erlang_c_textbook_values():
    # Values from the Erlang C tables: c=2, a=1 -> 1/3; c=10, a=9 -> 0.6687.
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(1, 0.7) == pytest.approx(0.7)
    assert mmc_mean_wait(9.0, 1.0, 10) == pytest.approx(0.66873, rel=1e-4)
    with pytest.raises(ValueError):
        erlang_c(3, 3.0)


def test_mm1_mean_wait_matches_theory():
    spec = scenario({"w": stage(1, "exponential", 1.0)}, rate=0.7, horizon=50_000)
    runs = replicate(spec, n=20, warmup=1000)
    assert_within_ci([r["stages"]["w"]["mean_wait"] for r in runs], mg1_mean_wait(0.7, 1.0, 1.0), "M/M/1 Wq")


def test_mmc_mean_wait_matches_erlang_c():
    """The shipped M/M/c: rate 9, mean service 1, 10 workers (utilization 0.9)."""
    spec = scenario({"w": stage(10, "exponential", 1.0)}, rate=9.0, horizon=20_000)
    runs = replicate(spec, n=20, warmup=1000)
    assert_within_ci([r["stages"]["w"]["mean_wait"] for r in runs], mmc_mean_wait(9.0, 1.0, 10), "M/M/10 Wq")
    assert_within_ci([r["stages"]["w"]["utilization"] for r in runs], 0.9, "M/M/10 utilization", 0.01)


@pytest.mark.slow  # 19 s; the dispatch delay's sample path and its calibrated replay stay in make test
def test_mmc_with_a_dispatch_delay_waits_the_delay_plus_erlang_c():
    """M/M/10 at utilization 0.9 with a dispatch delay d: the items join the queue at their
    arrival times shifted by the constant d, which is again a Poisson process of the same rate,
    so every wait is d plus an M/M/c wait and the mean is d + Erlang C's Wq. The queue's area
    counts an item from entering, so Little's law holds with that whole wait."""
    d = 0.5
    spec = scenario({"w": stage(10, "exponential", 1.0, dispatch_delay=d)}, rate=9.0, horizon=20_000)
    runs = replicate(spec, n=20, warmup=1000)
    st = [r["stages"]["w"] for r in runs]
    assert_within_ci([s["mean_wait"] for s in st], d + mmc_mean_wait(9.0, 1.0, 10), "M/M/10 + d wait")
    assert min(s["p50_wait"] for s in st) >= d  # no item starts before its delay is over
    little = float(np.mean([s["arrival_rate"] * s["mean_wait"] for s in st]))
    assert_within_ci([s["mean_queue_length"] for s in st], little, "Little's law with a dispatch delay")


def test_a_dispatch_delay_drawn_per_visit_adds_its_mean_to_erlang_c():
    """M/M/2 at utilization 0.7 with a dispatch delay drawn per visit (gamma, mean 0.5, cv 1):
    each item reaches the queue after its own independent delay, and a Poisson stream so
    displaced is again Poisson of the same rate (the displacement theorem), so the mean wait is
    the mean delay plus Erlang C's, as for a constant delay; the order of items may change."""
    delay = {"dist": "gamma", "mean": 0.5, "cv": 1.0}
    spec = scenario({"w": stage(2, "exponential", 1.0, dispatch_delay=delay)}, rate=1.4, horizon=20_000)
    assert spec.stages["w"].dispatch_mean() == 0.5
    runs = replicate(spec, n=20, warmup=1000)
    assert_within_ci([r["stages"]["w"]["mean_wait"] for r in runs], 0.5 + mmc_mean_wait(1.4, 1.0, 2), "M/M/2 + D wait")


def test_dispatch_delay_sample_path_drops_on_joining_and_counts_waiting_from_entering(tmp_path):
    """1 worker (service 1 s), room for 1 waiting, dispatch delay 0.5 s, items sent at 0, 0.1,
    0.2, 0.3: each can join only 0.5 s after it was sent, so the first starts at 0.5, the second
    queues at 0.6 and the last two find the queue full at 0.7 and 0.8. Until then all four are
    waiting, none dropped (capacity is checked on joining, not on sending)."""
    spec = scenario(
        {"w": {**stage(1, "deterministic", 1.0), "dispatch_delay": 0.5, "queue": {"capacity": 1}}},
        sources={"t": trace_source(tmp_path, [0.0, 0.1, 0.2, 0.3], "w")},
        horizon=3.0,
    )
    sim = Simulation(spec, rng=0)
    sim.run(0.45)
    early = sim.counters().stages["w"]
    assert (early.queue_length, early.busy, early.drops) == (4, 0, 0)
    assert early.queue_area == pytest.approx(0.45 + 0.35 + 0.25 + 0.15)  # from each one's entering
    sim.run(3.0)
    end = sim.counters().stages["w"]
    assert sim.stages["w"].waits == pytest.approx([0.5, 1.4]) and (end.drops, end.completed) == (2, 2)
    assert end.queue_area == pytest.approx(0.5 + 1.4 + 0.5 + 0.5)  # the dropped ones waited 0.5 s each
    e2e = sim.summary()["end_to_end"]
    assert (e2e["arrivals"], e2e["completed"], e2e["drops"], e2e["in_system"]) == (4, 2, 2, 0)


def test_a_retry_pays_the_dispatch_delay_again(tmp_path):
    """A retry is a new message (as in Celery): an attempt that always fails, retried once, is
    sent at 0, starts at 0.25, fails at 1.25, is sent again, starts at 1.5 and is given up at 2.5."""
    failing = {**stage(1, "deterministic", 1.0), "dispatch_delay": 0.25, "failure": {"prob": 1.0, "max_retries": 1}}
    spec = scenario({"w": failing}, sources={"t": trace_source(tmp_path, [0.0], "w")}, horizon=5.0)
    sim = Simulation(spec, rng=0)
    sim.run(1.4)
    assert sim.counters().stages["w"].queue_length == 1 and sim.counters().stages["w"].failures == 1
    sim.run(5.0)
    s = sim.summary()
    assert sim.stages["w"].waits == pytest.approx([0.25, 0.25])
    assert (s["stages"]["w"]["failures"], s["end_to_end"]["failed_items"]) == (2, 1)
    assert sim.counters().stages["w"].busy_area == pytest.approx(2.0)


def test_an_items_size_multiplies_its_dispatch_delay_as_its_service(tmp_path):
    """Sizes 1, 3 and 0.5 sent at 0, 10 and 20 to an idle worker (service 1 s, dispatch delay
    0.2 s): each waits 0.2 times its size and is served for its size (a message carries its
    item's data: Stage.dispatch_delay), and on a host at speed 2 the hand-off takes half."""
    path = tmp_path / "sized.csv"
    path.write_text("timestamp,size\n0,1\n10,3\n20,0.5\n")
    trace = {"process": "trace", "file": str(path), "to": "w"}

    def run(**host: Any) -> Simulation:
        extra = {"host": "h", "cpu": 1.0} if host else {}
        spec = scenario(
            {"w": stage(1, "deterministic", 1.0, dispatch_delay=0.2, **extra)},
            sources={"t": trace},
            horizon=40.0,
            **({"hosts": {"h": {"cores": 1.0, **host}}} if host else {}),
        )
        sim = Simulation(spec, rng=0)
        sim.run(40.0)
        return sim

    plain = run()
    assert plain.stages["w"].waits == pytest.approx([0.2, 0.6, 0.1])
    assert plain.stages["w"].latencies == pytest.approx([1.2, 3.6, 0.6])
    assert run(speed=2.0).stages["w"].waits == pytest.approx([0.1, 0.3, 0.05])


def test_a_stages_contention_stretches_its_hand_offs_and_turnarounds_by_the_busy_processes(tmp_path):
    """A host of 2 cores (no CPU slowdown here): stage ``w`` (service 1 s, dispatch delay 0.2 s,
    turnaround 0.4 s; contention 0.5 on the hand-off, 0.25 on the turnaround) gets items at 1,
    1.1 and 20 while stage ``b`` on the same host serves one item from 0 to 10. The first two
    are handed over while ``b`` serves (1 busy: 0.2 x 1.5 = 0.3 s); the first's turnaround ends
    at 2.8 (0.4 x 1.25 after its finish at 2.3: ``w``'s own process no longer counts), so the
    second waits 1.7 s; the third, with ``b`` done, 0.2 s. Without contention: 0.2, 1.5 and 0.2
    (Stage.contention)."""
    busy, handed = tmp_path / "busy.csv", tmp_path / "handed.csv"
    busy.write_text("timestamp\n0\n")
    handed.write_text("timestamp\n1\n1.1\n20\n")

    def waits(**contention: float) -> list[float]:
        on_host: dict[str, Any] = {"host": "h", "cpu": 1.0}
        spec = scenario(
            {
                "b": stage(1, "deterministic", 10.0, **on_host),
                "w": stage(
                    1, "deterministic", 1.0, dispatch_delay=0.2, turnaround=0.4, contention=contention, **on_host
                ),
            },
            sources={
                "busy": {"process": "trace", "file": str(busy), "to": "b"},
                "handed": {"process": "trace", "file": str(handed), "to": "w"},
            },
            horizon=40.0,
            hosts={"h": {"cores": 2.0}},
        )
        sim = Simulation(spec, rng=0)
        sim.run(40.0)
        return sim.stages["w"].waits

    assert waits(dispatch=0.5, turnaround=0.25) == pytest.approx([0.3, 1.7, 0.2])
    assert waits() == pytest.approx([0.2, 1.5, 0.2])


def test_mm1_with_a_turnaround_is_mg1_on_the_time_a_worker_is_held():
    """M/M/1 (service mean 1) with a turnaround T = 0.25 after each visit: the worker is held
    for S + T, so the wait is Pollaczek-Khinchine's for that time (mean 1.25, variance 1), while
    utilization (busy over ready time) counts the service only, as live counts task-started to
    task-succeeded."""
    spec = scenario({"w": stage(1, "exponential", 1.0, turnaround=0.25)}, rate=0.6, horizon=50_000)
    runs = replicate(spec, n=20, warmup=1000)
    held, scv = 1.25, 1.0 / 1.25**2
    assert spec.stages["w"].occupancy() == held
    assert_within_ci([r["stages"]["w"]["mean_wait"] for r in runs], mg1_mean_wait(0.6, held, scv), "M/M/1 + T Wq")
    assert_within_ci([r["stages"]["w"]["utilization"] for r in runs], 0.6, "M/M/1 + T utilization", 0.01)


def test_a_spread_turnaround_is_mg1_on_the_held_time_with_its_variance():
    """M/M/1 (service mean 1) with a turnaround T = 1 spread by ``turnaround_cv`` 1 (each T a
    lognormal of mean 1): the worker is held for S + T, of mean 2 and variance 1 + 1 = 2, so
    Pollaczek-Khinchine's wait is that of the variance (a constant T's, variance 1, is 17 %
    shorter), while the capacity planners read (``occupancy``) stays 2. And the spread is
    drawn from a stream of its own: the load is the constant turnaround's."""
    spread_stage = stage(1, "exponential", 1.0, turnaround=1.0, turnaround_cv=1.0)
    spread = scenario({"w": spread_stage}, rate=0.375, horizon=50_000)
    runs = replicate(spread, n=20, warmup=1000)
    held = 2.0
    assert spread.stages["w"].occupancy() == held
    waits = [r["stages"]["w"]["mean_wait"] for r in runs]
    assert_within_ci(waits, mg1_mean_wait(0.375, held, 2.0 / held**2), "M/G/1 spread T Wq")
    assert np.mean(waits) > 1.1 * mg1_mean_wait(0.375, held, 1.0 / held**2)  # not the constant T's
    constant = scenario({"w": stage(1, "exponential", 1.0, turnaround=1.0)}, rate=0.375, horizon=2_000)
    sims = [Simulation(spec, rng=3) for spec in (spread, constant)]
    for sim in sims:
        sim.run(2_000)
    a, b = (sim.stages["w"] for sim in sims)
    assert a.arrivals == b.arrivals and a.start_sum != b.start_sum  # the same load, other waits


def test_turnaround_sample_path_and_a_scale_down_while_turning(tmp_path):
    """1 worker, service 1 s, turnaround 0.5 s; items at 0, 0.1 and 3: the second waits for the
    first's service and turnaround (starts at 1.5), the third finds the worker free (no wait).
    An item of size 2 takes twice the service and twice the turnaround.
    A scale-down to 0 asked while the only worker turns retires it when its turnaround ends."""
    spec = scenario(
        {"w": stage(1, "deterministic", 1.0, turnaround=0.5)},
        sources={"t": trace_source(tmp_path, [0.0, 0.1, 3.0], "w")},
        horizon=6.0,
    )
    sim = Simulation(spec, rng=0)
    sim.run(1.2)
    mid = sim.counters().stages["w"]
    assert (mid.busy, mid.idle, mid.queue_length, mid.completed) == (0, 1, 1, 1)  # turning reads as idle
    sim.run(6.0)
    assert sim.stages["w"].waits == pytest.approx([0.0, 1.4, 0.0])
    assert sim.counters().stages["w"].busy_area == pytest.approx(3.0)
    sized = tmp_path / "sized.csv"  # the turnaround scales with the size of the item just served
    sized.write_text("timestamp,size\n0.0,2.0\n0.1,1.0\n")
    spec2 = scenario(
        {"w": stage(1, "deterministic", 1.0, turnaround=0.5)},
        sources={"t": {"process": "trace", "file": str(sized), "to": "w"}},
        horizon=6.0,
    )
    sim2 = Simulation(spec2, rng=0)
    sim2.run(6.0)
    assert sim2.stages["w"].waits == pytest.approx([0.0, 2.9])  # served 0-2, turning 2-3
    shrink = Simulation(spec, rng=0)
    shrink.run(1.2)
    assert shrink.set_workers("w", 0) == 0 and shrink.counters().stages["w"].target == 0
    shrink.run(6.0)
    end = shrink.counters().stages["w"]
    assert (end.idle, end.busy, end.completed, end.queue_length) == (0, 0, 1, 2)


def test_a_hosts_turnaround_growth_sample_path(tmp_path):
    """A host whose turnarounds grow by half of themselves per process beyond 1: ``w`` (1
    process, service 1 s, turnaround 0.5 s) shares it with ``x``'s 2 idle processes, so each of
    w's turnarounds is 0.5 * (1 + 0.5 * (3 - 1)) = 1 s. Items at 0 and 0.1: the second starts
    at 2 (wait 1.9); the third, at 3, waits for that turnaround (1.0). x grown to 4 at t = 3 with
    a start-up of 10 s: its starting processes do not count until 13, so the third item's
    turnaround is still 1 s; the fourth, at 14, ends with 5 processes there: 0.5 * 3 = 1.5 s."""
    spec = scenario(
        {
            "w": stage(1, "deterministic", 1.0, turnaround=0.5, host="h"),
            "x": stage(2, "deterministic", 1.0, max_workers=4, startup_delay=10.0, host="h"),
        },
        sources={"t": trace_source(tmp_path, [0.0, 0.1, 3.0, 14.0], "w", name="grown")},
        horizon=20.0,
        hosts={"h": {"cores": 100.0, "turnaround_growth": {"per_process": 0.5, "reference": 1}}},
    )
    sim = Simulation(spec, rng=0)
    sim.run(3.0)
    sim.set_workers("x", 4)
    sim.run(20.0)
    assert sim.stages["w"].waits == pytest.approx([0.0, 1.9, 1.0, 0.0])
    assert sim.counters().stages["w"].turnaround_sum == pytest.approx(1.0 + 1.0 + 1.0 + 1.5)
    constant = scenario(  # without the growth, the same host and pools: 0.5 s each
        {"w": stage(1, "deterministic", 1.0, turnaround=0.5, host="h"), "x": stage(2, "deterministic", 1.0, host="h")},
        sources={"t": trace_source(tmp_path, [0.0, 0.1], "w", name="plain")},
        horizon=20.0,
        hosts={"h": {"cores": 100.0}},
    )
    plain = Simulation(constant, rng=0)
    plain.run(20.0)
    assert plain.stages["w"].waits == pytest.approx([0.0, 1.4]) and plain.counters().stages["w"].turnaround_sum == 1.0
    # counting w's own processes (counts: stage), x's pool is not w's: each turnaround 0.5 s, and
    # with w grown to 2 at t = 3 (no start-up) its turnarounds after it 0.5 * (1 + 0.5) = 0.75 s
    own = scenario(
        {"w": stage(1, "deterministic", 1.0, max_workers=2, turnaround=0.5, host="h"),
         "x": stage(2, "deterministic", 1.0, max_workers=4, host="h")},
        sources={"t": trace_source(tmp_path, [0.0, 0.1, 3.0, 14.0], "w", name="own")},
        horizon=20.0,
        hosts={"h": {"cores": 100.0, "turnaround_growth": {"per_process": 0.5, "reference": 1, "counts": "stage"}}},
    )  # fmt: skip
    mine = Simulation(own, rng=0)
    mine.run(2.9)
    assert mine.counters().stages["w"].turnaround_sum == pytest.approx(0.5 + 0.5)
    mine.set_workers("x", 4)
    mine.set_workers("w", 2)
    mine.run(20.0)
    assert mine.counters().stages["w"].turnaround_sum == pytest.approx(0.5 + 0.5 + 0.75 + 0.75)


def test_the_turnarounds_begun_with_an_item_waiting_are_the_hand_offs_live_reads(tmp_path):
    """Live reads a hand-off only where an item waited for the worker (runtime/live/handoff.py):
    a gap with none waiting is idle time. One worker, service 1 s, turnaround 0.5 s, items at
    0, 0.1 and 5: the first turnaround (1 to 1.5) has the second item waiting, the other two
    have none. The simulated hand-off compared with live's is the mean of such turnarounds,
    NaN below the MIN_GAPS live needs; at 40 items 0.1 s apart every one but the last waits."""
    from adaptflow.experiments.compare_live import _backlogged_handoff
    from adaptflow.runtime.live.handoff import MIN_GAPS

    def run(times: list[float], name: str) -> Simulation:
        spec = scenario(
            {"w": stage(1, "deterministic", 1.0, turnaround=0.5)},
            sources={"t": trace_source(tmp_path, times, "w", name=name)},
            horizon=100.0,
        )
        sim = Simulation(spec, rng=0)
        sim.run(100.0)
        return sim

    few = run([0.0, 0.1, 5.0], "few").counters().stages["w"]
    assert few.turnaround_sum == pytest.approx(1.5)
    assert (few.backlogged_turnaround_sum, few.backlogged_turnarounds) == (pytest.approx(0.5), 1)
    assert np.isnan(_backlogged_handoff(few))  # one gap measures nothing, as live
    many = run([0.1 * i for i in range(40)], "many").counters().stages["w"]
    assert many.backlogged_turnarounds == 39 >= MIN_GAPS
    assert _backlogged_handoff(many) == pytest.approx(0.5)


def test_a_hosts_speed_sample_path(tmp_path):
    """A host at speed 2 (its CPU twice as fast as when the stage was calibrated): a 1 s service
    with CPU share 0.5 takes 0.5 s off the CPU plus 0.5 / 2 on it, a 0.5 s turnaround 0.25 s and
    a 0.2 s dispatch delay 0.1 s. Items at 0 and 0.1: the first starts at 0.1, is served until
    0.85 and turns until 1.1, where the second starts (wait 1.0 from its entry). At speed 1 it
    starts at 0.2, is served until 1.2 and turns until 1.7 (the second waits 1.6)."""

    def run(speed: float) -> Simulation:
        spec = scenario(
            {"w": stage(1, "deterministic", 1.0, turnaround=0.5, dispatch_delay=0.2, host="h", cpu=0.5)},
            sources={"t": trace_source(tmp_path, [0.0, 0.1], "w", name=f"speed{speed}")},
            horizon=20.0,
            hosts={"h": {"cores": 1.0, "speed": speed}},
        )
        sim = Simulation(spec, rng=0)
        sim.run(20.0)
        return sim

    fast, calibrated = run(2.0), run(1.0)
    assert fast.stages["w"].waits == pytest.approx([0.1, 1.0])
    assert fast.counters().stages["w"].turnaround_sum == pytest.approx(0.5)
    assert calibrated.stages["w"].waits == pytest.approx([0.2, 1.6])
    assert calibrated.counters().stages["w"].turnaround_sum == pytest.approx(1.0)


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_a_hosts_hand_offs_and_turnarounds_take_their_share_of_its_cores(tmp_path, weight):
    """One core; each hand-off and turnaround in progress weighs ``weight`` of a CPU job
    (``Host.handoff_cpu``), so a job beside one runs at ``s = 1 / (1 + weight)``. Dispatch: a
    stage with one process, a 0.5 s hand-off and 1 s of CPU work; items at 0 and 1. The first
    starts at 0.5 and computes alone until 1, beside the second's hand-off until 1.5 (0.5 * s
    done), alone again after: it ends at 1.5 + 0.5 * (1 - s), where the second starts (its wait,
    from its entry at 1: 0.5 + 0.5 * (1 - s)). Turnaround: ``w`` serves an item from 0 to 1 and
    turns until 2; ``x``'s 1 s of CPU work from 1 runs at ``s`` beside it, then alone: latency
    2 - s. At weight 0 nothing changes (0.5 and 1.0)."""
    hosts = {"h": {"cores": 1.0, "handoff_cpu": weight}}
    s = 1.0 / (1.0 + weight)
    handed = scenario(
        {"w": stage(1, "deterministic", 1.0, dispatch_delay=0.5, host="h")},
        sources={"t": trace_source(tmp_path, [0.0, 1.0], "w", name=f"handed{weight}")},
        horizon=10.0, hosts=hosts,
    )  # fmt: skip
    sim = Simulation(handed, rng=0)
    sim.run(10.0)
    assert sim.stages["w"].waits == pytest.approx([0.5, 0.5 + 0.5 * (1.0 - s)])
    turned = scenario(
        {"w": stage(1, "deterministic", 1.0, turnaround=1.0, host="h"), "x": stage(1, "deterministic", 1.0, host="h")},
        sources={
            "t": trace_source(tmp_path, [0.0], "w", name=f"turned{weight}"),
            "u": trace_source(tmp_path, [1.0], "x", name=f"beside{weight}"),
        },
        horizon=10.0, hosts=hosts,
    )  # fmt: skip
    sim = Simulation(turned, rng=0)
    sim.run(10.0)
    assert sim.stages["x"].latencies == pytest.approx([2.0 - s])


@pytest.mark.parametrize("work", [0.0, 0.25, 0.5])
def test_celerys_work_per_visit_takes_its_share_of_the_hosts_cores(tmp_path, work):
    """``Host.visit_cpu``: each visit brings ``work`` seconds of Celery's CPU per unit of size,
    a job of its own in the host's sharing. One core; an item of size 1 at 0 and one of size 2
    at 10, each alone, 1 s of CPU work per unit. The visit's work and the task's start together
    and share the core until the smaller is done, so the task ends when the core has done both:
    latency ``size * (1 + work)``. On two cores each has a core: latency ``size``, whatever the
    work. Nothing waits on Celery's job itself: the process is free again at the task's end."""
    trace = tmp_path / "sized.csv"
    trace.write_text("timestamp,size\n0,1\n10,2\n")
    for cores, expected in ((1.0, [1.0 + work, 2.0 * (1.0 + work)]), (2.0, [1.0, 2.0])):
        spec = scenario(
            {"w": stage(1, "deterministic", 1.0, host="h")},
            sources={"t": {"process": "trace", "file": str(trace), "to": "w", "size_column": "size"}},
            horizon=20.0, hosts={"h": {"cores": cores, "visit_cpu": work}},
        )  # fmt: skip
        sim = Simulation(spec, rng=0)
        sim.run(20.0)
        assert sim.stages["w"].latencies == pytest.approx(expected)
        assert sim.stages["w"].completed == 2


def test_a_retry_brings_celerys_work_per_visit_again(tmp_path):
    """A retry is a new message, and Celery's work per visit comes with it (``StageState._admit``).
    One core, 0.5 s of that work per visit, a 1 s task that always fails, retried once: each
    attempt shares the core with its visit's work until that is done at 1 s, then runs alone, so
    it fails at 1.5 and again at 3.0 (at 2.5 if the retry came without the work)."""
    failing = {**stage(1, "deterministic", 1.0, host="h"), "failure": {"prob": 1.0, "max_retries": 1}}
    spec = scenario(
        {"w": failing}, sources={"t": trace_source(tmp_path, [0.0], "w")}, horizon=5.0,
        hosts={"h": {"cores": 1.0, "visit_cpu": 0.5}},
    )  # fmt: skip
    sim = Simulation(spec, rng=0)
    for until, failures in ((1.45, 0), (1.55, 1), (2.9, 1), (3.05, 2)):
        sim.run(until)
        assert sim.counters().stages["w"].failures == failures, f"at {until}"
    assert sim.summary()["end_to_end"]["failed_items"] == 1


@pytest.mark.parametrize("loss", [0.0, 0.15, 0.5])
def test_jobs_past_the_cores_cost_the_host_capacity(tmp_path, loss):
    """``Host.oversubscription``: with ``n`` jobs on ``c`` cores, ``n > c``, each runs at
    ``c / (n (1 + loss (n - c)))``. Three stages each start 1 s of CPU work at 0 on 2 cores:
    each at ``2 / (3 (1 + loss))``, all end at ``1.5 (1 + loss)``. Two of them on 2 cores are
    not past the cores: 1 s whatever the loss."""
    names = ("a", "b", "c")
    for used, expected in ((names, 1.5 * (1.0 + loss)), (names[:2], 1.0)):
        spec = scenario(
            {name: stage(1, "deterministic", 1.0, host="h") for name in used},
            sources={f"to_{n}": trace_source(tmp_path, [0.0], n, name=f"{n}{loss}{len(used)}") for n in used},
            horizon=10.0, hosts={"h": {"cores": 2.0, "oversubscription": loss}},
        )  # fmt: skip
        sim = Simulation(spec, rng=0)
        sim.run(10.0)
        assert [sim.stages[n].latencies for n in used] == [pytest.approx([expected])] * len(used)


def test_md1_mean_wait_matches_pollaczek_khinchine():
    spec = scenario({"w": stage(1, "deterministic", 1.0)}, rate=0.8, horizon=50_000)
    runs = replicate(spec, n=40, warmup=1000)
    assert_within_ci([r["stages"]["w"]["mean_wait"] for r in runs], mg1_mean_wait(0.8, 1.0, 0.0), "M/D/1 Wq")


def test_mg1_lognormal_mean_wait_matches_pollaczek_khinchine():
    s = stage(1, "lognormal", 1.0)
    s["service"]["cv"] = 0.5
    spec = scenario({"w": s}, rate=0.7, horizon=50_000)
    runs = replicate(spec, n=20, warmup=1000)
    assert_within_ci([r["stages"]["w"]["mean_wait"] for r in runs], mg1_mean_wait(0.7, 1.0, 0.25), "M/G/1 Wq")


@pytest.mark.slow  # 16 s; the product form per stage stays in make test (the feedback-and-split network below)
def test_tandem_jackson_network_per_stage_waits():
    """Three M/M/c stations in series: by Burke's theorem each sees Poisson arrivals at the same
    rate, so each stage's wait is its own Erlang C value."""
    stages = {
        "a": stage(5, "exponential", 1.0, next="b"),
        "b": stage(1, "exponential", 0.2, next="c"),
        "c": stage(3, "exponential", 0.6),
    }
    runs = replicate(scenario(stages, rate=4.0, horizon=10_000), n=20, warmup=1000)
    for name, servers, mean in [("a", 5, 1.0), ("b", 1, 0.2), ("c", 3, 0.6)]:
        waits = [r["stages"][name]["mean_wait"] for r in runs]
        assert_within_ci(waits, mmc_mean_wait(4.0, mean, servers), f"tandem stage {name} Wq")


def test_jackson_network_with_feedback_and_split():
    """Open Jackson network with feedback: a -> {b: .5, a: .25, exit: .25}, b -> exit.
    Traffic equations: lambda_a = 2 / (1 - .25), lambda_b = .5 lambda_a; each stage then behaves
    as an M/M/c queue at its total rate (product form)."""
    stages = {
        "a": stage(
            4, "exponential", 1.0, next=[{"to": "b", "p": 0.5}, {"to": "a", "p": 0.25}, {"to": None, "p": 0.25}]
        ),
        "b": stage(2, "exponential", 0.5),
    }
    runs = replicate(scenario(stages, rate=2.0, horizon=20_000), n=20, warmup=1000)
    lam_a = 2.0 / 0.75
    lam_b = 0.5 * lam_a
    assert_within_ci([r["stages"]["a"]["arrival_rate"] for r in runs], lam_a, "feedback lambda_a", 0.02)
    assert_within_ci([r["stages"]["a"]["mean_wait"] for r in runs], mmc_mean_wait(lam_a, 1.0, 4), "feedback Wq(a)")
    assert_within_ci(
        [r["stages"]["b"]["mean_wait"] for r in runs], mmc_mean_wait(lam_b, 0.5, 2), "feedback Wq(b)", 0.08
    )


def test_littles_law_on_every_stage():
    """L = lambda W on every stage of a pipeline with mixed distributions, twice: for the queue
    (time-average queue length against arrival rate x mean wait) and for the servers (mean busy
    workers against throughput x mean service time). Both sides are measured on the same sample
    path: the time averages come from areas, the right-hand sides from per-item records, so this
    checks that the two bookkeepings agree. On one sample path the law holds but for the items
    in the system at the window's two edges, so each replication is checked on its own (measured:
    within 0.2 % at the queues, 0.07 % at the servers), which is stronger and twenty times cheaper
    than a confidence interval over twenty replications of their means."""
    stages = {
        "a": stage(4, "exponential", 1.0, next="b"),
        "b": {**stage(2, "deterministic", 0.55, next="c")},
        "c": {**stage(8, "gamma", 2.0), "service": {"dist": "gamma", "mean": 2.0, "cv": 1.5}},
    }
    for run in replicate(scenario(stages, rate=3.0, horizon=5_000), n=3, warmup=500):
        for name, s in run["stages"].items():
            little_queue = s["arrival_rate"] * s["mean_wait"]
            assert s["mean_queue_length"] == pytest.approx(little_queue, rel=0.01), f"Little's law (queue) at {name}"
            little_busy = s["throughput"] * (s["mean_latency"] - s["mean_wait"])
            assert s["mean_busy_workers"] == pytest.approx(little_busy, rel=0.005), f"Little's law (servers) at {name}"


PROFILES = {
    "diurnal": {"shape": "diurnal", "base": 5.0, "amplitude": 4.0, "period": 1000.0, "peak_time": 250.0},
    "piecewise": {"shape": "piecewise", "times": [0, 300, 500], "values": [2.0, 9.0, 0.5], "period": 1000.0},
    "spike": {"shape": "spike", "base": 2.0, "peak": 12.0, "start": 5000.0, "duration": 2000.0},
    "ramp": {"shape": "ramp", "start": 2000.0, "end": 16000.0, "start_value": 1.0, "end_value": 8.0},
}


@pytest.mark.parametrize("profile", list(PROFILES))
def test_thinning_reproduces_time_varying_rate(profile):
    """Counts per 100 s window of one model run against the integral of the rate over each
    window: a chi-square test of Poisson counts (variance = mean). Then the total count of the
    arrival process over 50 replications against the integral over the horizon."""
    horizon, width = 20_000.0, 100.0
    spec = scenario(
        {"w": stage(50, "deterministic", 0.001, max_workers=50)},
        sources={"src": {"process": "poisson", "rate": PROFILES[profile], "to": "w"}},
        horizon=horizon,
    )
    sim = Simulation(spec, rng=np.random.default_rng(7))
    series = sim.record(interval=width)
    counts = series["stages.w.arrivals"].to_numpy()
    edges = np.arange(0, horizon + width, width)
    fine = np.linspace(0, horizon, int(horizon) * 20 + 1)
    rate = spec.sources["src"].rate.at((fine[:-1] + fine[1:]) / 2)
    expected = np.add.reduceat(rate * np.diff(fine), np.searchsorted(fine, edges[:-1]))
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    p_value = stats.chi2.sf(chi2, df=len(counts))
    assert p_value > 0.01, f"{profile}: counts per window do not follow the rate (chi2={chi2:.1f}, p={p_value:.2g})"
    # The test has power: a constant rate with the same total is rejected.
    flat = np.full_like(expected, counts.sum() / len(expected))
    assert stats.chi2.sf(float(np.sum((counts - flat) ** 2 / flat)), df=len(counts)) < 1e-6
    source = spec.sources["src"]
    totals = [
        sum(1 for _ in arrivals_with_quality(source, np.random.default_rng(s), np.random.default_rng(0), horizon))
        for s in range(50)
    ]
    assert_within_ci(totals, float(expected.sum()), f"{profile} total arrivals", 0.01)


def test_mmpp_long_run_rate_and_burstiness():
    """Mean rate r0 pi0 + r1 pi1 with pi0 = s1 / (s0 + s1); counts are over-dispersed
    (index of dispersion > 1), unlike a Poisson process."""
    spec = parse_scenario(
        {
            "name": "mmpp",
            "horizon": 20_000,
            "sla": {"latency": 5},
            "sources": {"src": {"process": "mmpp", "rates": [2.0, 12.0], "switch_rates": [0.01, 0.04], "to": "w"}},
            "stages": {"w": stage(40, "deterministic", 0.001)},
        }
    )
    pi0 = 0.04 / 0.05
    mean_rate = 2.0 * pi0 + 12.0 * (1 - pi0)
    runs = replicate(spec, n=20, warmup=0)
    assert_within_ci([r["stages"]["w"]["arrival_rate"] for r in runs], mean_rate, "MMPP mean rate", 0.03)
    counts = Simulation(spec, rng=np.random.default_rng(3)).record(interval=50.0)["stages.w.arrivals"]
    assert counts.var() / counts.mean() > 3.0


def _arrival_counts(source, horizon: float, seeds: int) -> list[int]:
    return [
        sum(1 for _ in arrivals_with_quality(source, np.random.default_rng(s), np.random.default_rng(0), horizon))
        for s in range(seeds)
    ]


def test_mmpp_expected_arrivals_include_the_first_stay():
    """Over a horizon short against the stays, the count depends on the initial state: the chance
    of state 0 at t is pi0 + (p0 - pi0) exp(-(s0 + s1) t), integrated over the horizon. That is
    what bounds a run's work before it starts; the stationary rate alone read 21 arrivals here, not 80."""
    source = {"process": "mmpp", "rates": [10.0, 0.5], "switch_rates": [0.05, 0.01], "to": "w"}
    spec = parse_scenario(
        {"name": "mmpp", "horizon": 10, "sla": {"latency": 5}, "sources": {"src": source}, "stages": {"w": stage(4)}}
    )
    expected = spec.expected_arrivals()
    assert expected == pytest.approx(10 * (10.0 / 6 + 0.5 * 5 / 6) + 9.5 * (5 / 6) * (1 - np.exp(-0.6)) / 0.06)
    totals = _arrival_counts(spec.sources["src"], 10.0, seeds=400)
    assert_within_ci(totals, expected, "MMPP arrivals from state 0 over 10 s", 0.05)


def test_a_long_mmpp_stay_at_a_high_rate_is_drawn_in_pieces_with_poisson_counts():
    """A first stay of mean 10^6 s at 10^4 arrivals/s would be 10^10 arrival times in one draw
    (80 GB); pieces of at most 2^20 keep the memory bounded, and the count over the horizon is
    still Poisson(10^4 x 2): mean and variance 20,000."""
    source = {"process": "mmpp", "rates": [1e4, 0.0], "switch_rates": [1e-6, 1.0], "to": "w"}
    spec = parse_scenario(
        {"name": "mmpp", "horizon": 2, "sla": {"latency": 5}, "sources": {"src": source}, "stages": {"w": stage(4)}}
    )
    totals = _arrival_counts(spec.sources["src"], 2.0, seeds=30)
    assert_within_ci(totals, 20_000.0, "MMPP long stay count", 0.01)
    assert stats.chi2(29).ppf(0.001) < np.var(totals, ddof=1) * 29 / 20_000 < stats.chi2(29).ppf(0.999)


# -- a host's cores shared by the pools on it (scenario ``hosts``) ------------------------------
def test_a_pool_larger_than_its_hosts_cores_serves_as_many_servers_as_cores():
    """4 processes of exponential CPU work (mean 1) on a 2-core host: each of the n busy ones runs
    at min(1, 2/n), so the stage completes at rate min(n, 2): the number in system is that of
    M/M/2, whatever the pool. By Little's law the mean time in the stage (wait + slowed
    service) is M/M/2's. The wait before starting is shorter (4 processes take items sooner and
    serve them slower): items wait only when N > 4, and M/M/2's tail is geometric in
    rho = 0.8 from N = 2, so the queue is rho**2 times M/M/2's, and so is the mean wait."""
    hosted = stage(4, "exponential", 1.0, host="vm")
    spec = scenario({"w": hosted}, rate=1.6, horizon=20_000, hosts={"vm": {"cores": 2}})
    runs = replicate(spec, n=20, warmup=1000)
    sojourn = mmc_mean_wait(1.6, 1.0, 2) + 1.0
    assert_within_ci([r["stages"]["w"]["mean_latency"] for r in runs], sojourn, "M/M/4 on 2 cores = M/M/2 sojourn")
    waits = [r["stages"]["w"]["mean_wait"] for r in runs]
    assert_within_ci(waits, 0.8**2 * mmc_mean_wait(1.6, 1.0, 2), "M/M/4 on 2 cores wait", 0.08)


def test_host_sample_path_shares_cores_among_the_cpu_work_in_progress(tmp_path):
    """One core. (a) Two CPU-bound visits of 1 s at two stages, both at t = 0: each runs at half
    speed, both end at 2. (b) One visit at 0 and one at 0.5 at the same 2-process stage: the
    first has 0.5 s of work left at half speed (ends 1.5), the second then runs alone (ends 2).
    (c) cpu 0.5: the first half of each visit is a plain delay, the CPU halves share the core
    from 0.5, so both end at 1.5. A stage on a host with cpu 0 runs at full speed."""
    hosts = {"vm": {"cores": 1}}

    def run(stages, times_by_stage):
        sources = {f"t{k}": trace_source(tmp_path, t, to, name=f"t{k}") for k, (to, t) in enumerate(times_by_stage)}
        sim = Simulation(scenario(stages, sources=sources, horizon=10.0, hosts=hosts), rng=0)
        sim.run(10.0)
        return {name: sorted(s.latencies) for name, s in sim.stages.items()}

    one = stage(1, "deterministic", 1.0, host="vm")
    assert run({"a": one, "b": one}, [("a", [0.0]), ("b", [0.0])]) == {"a": [2.0], "b": [2.0]}
    two = stage(2, "deterministic", 1.0, host="vm")
    assert run({"a": two}, [("a", [0.0, 0.5])]) == {"a": pytest.approx([1.5, 1.5])}  # ends 1.5 and 2.0
    half = stage(1, "deterministic", 1.0, host="vm", cpu=0.5)
    assert run({"a": half, "b": half}, [("a", [0.0]), ("b", [0.0])]) == {"a": [1.5], "b": [1.5]}
    free = stage(1, "deterministic", 1.0, host="vm", cpu=0.0)
    assert run({"a": free, "b": free}, [("a", [0.0]), ("b", [0.0])]) == {"a": [1.0], "b": [1.0]}
