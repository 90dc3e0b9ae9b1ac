"""The fit of a stage's contention (adaptflow.runtime.calibrate.contention): how much Celery's
own work slows with the busy processes beside it, read off skewed times."""

import numpy as np
import pytest

from adaptflow.runtime.calibrate.contention import contention_of
from adaptflow.scenario import ScenarioError, parse_scenario


def _times(contention: float, seed: int, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Log times of a 30 ms hand-off stretched by 1 + c b, b drawn as on the example app (0:
    half, 1: a third, 2 and 3 the rest), with lognormal noise of sd 0.4."""
    rng = np.random.default_rng(seed)
    busy = rng.choice([0, 1, 2, 3], n, p=[0.5, 0.35, 0.12, 0.03]).astype(float)
    return np.log(0.03) + np.log1p(contention * busy) + rng.normal(0.0, 0.4, n), busy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_known_contention_is_recovered_within_its_interval(seed):
    c, row = contention_of(*_times(0.4, seed))
    lo, hi = row["contention_ci95"]
    assert lo < 0.4 < hi
    assert c == pytest.approx(0.4, abs=0.15)
    assert lo > 0.15  # the interval tells it from none


def test_times_that_do_not_follow_the_load_read_an_interval_from_zero():
    c, row = contention_of(*_times(0.0, 3))
    assert row["contention_ci95"][0] == 0.0
    assert c < 0.1


def test_too_few_times_or_one_load_read_none():
    assert contention_of(*_times(0.4, 4, n=20))[0] is None
    y, busy = _times(0.4, 5)
    c, row = contention_of(y, np.ones_like(busy))
    assert c is None and "busy count not varying" in row["note"]


def test_a_contention_needs_a_host():
    stage = {
        "workers": {"initial": 1, "max": 2},
        "service": {"dist": "exponential", "mean": 1.0},
        "contention": {"dispatch": 0.3},
    }
    data = {
        "name": "x",
        "horizon": 10,
        "sla": {"latency": 5},
        "sources": {"s": {"process": "poisson", "rate": 1.0, "to": "w"}},
        "stages": {"w": stage},
    }
    with pytest.raises(ScenarioError, match=r"stages\.w\.contention: given without a host"):
        parse_scenario(data)
