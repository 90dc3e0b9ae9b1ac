"""The fit of a host's contention (adaptflow.runtime.calibrate.contention): how much Celery's
own work slows with the busy processes beside it, read off times whose levels differ."""

import numpy as np
import pytest

from adaptflow.runtime.calibrate.contention import contention_of


def _times(contention: float, seed: int, n: int = 1500) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log times of three kinds (levels 5, 30 and 45 ms) stretched by 1 + c b, b drawn as on the
    example app (0: half, 1: a third, 2 and 3 the rest), with lognormal noise of sd 0.4."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 3, n)
    busy = rng.choice([0, 1, 2, 3], n, p=[0.5, 0.35, 0.12, 0.03]).astype(float)
    level = np.log(np.array([0.005, 0.030, 0.045]))[group]
    return level + np.log1p(contention * busy) + rng.normal(0.0, 0.4, n), busy, group


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_known_contention_is_recovered_within_its_interval(seed):
    c, row = contention_of(*_times(0.3, seed))
    lo, hi = row["contention_ci95"]
    assert lo < 0.3 < hi
    assert c == pytest.approx(0.3, abs=0.1)
    assert lo > 0.1  # the interval tells it from no contention


def test_times_that_do_not_follow_the_load_read_an_interval_from_zero():
    c, row = contention_of(*_times(0.0, 3))
    assert row["contention_ci95"][0] == 0.0
    assert c < 0.06


def test_too_few_times_or_one_load_read_none():
    y, busy, group = _times(0.3, 4, n=20)
    assert contention_of(y, busy, group)[0] == 0.0
    y, busy, group = _times(0.3, 5)
    c, row = contention_of(y, np.ones_like(busy), group)
    assert c == 0.0 and "note" in row
