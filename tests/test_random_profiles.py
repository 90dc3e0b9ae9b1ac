"""Randomized profiles (issue 14): drift schedules and diurnal cycles drawn per seed, so that no
planner can win by reading the clock. A draw is reproducible from its generator, differs between
seeds, keeps its episodes apart and inside their window, stays under the profile's peak, and
the undrawn profile reads as the mean of its draws. Bad ranges get one clear error line."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from adaptflow.scenario import ScenarioError, load_scenario, parse_scenario, shipped_scenarios_dir
from adaptflow.scenario.profiles import Constant, Diurnal, Episodes, Profile, Pulses

MMC = yaml.safe_load((shipped_scenarios_dir() / "mmc.yaml").read_text())
PROFILE = TypeAdapter(Profile)
DRIFT = load_scenario("quality_drift").sources["records"].quality.bad_rate
DAILY = {
    "shape": "diurnal",
    "base": 6.0,
    "amplitude": 4.0,
    "period": 7200.0,
    "peak_time": 3600.0,
    "peak_time_jitter": [-1800, 1800],
    "scale": [0.8, 1.2],
    "amplitude_scale": [0.5, 1.0],
}
# The fixed schedule quality_drift had before issue 14, as (from, bad rate) steps until 7200 s.
OLD_DRIFT = Pulses.model_validate(
    {
        "shape": "pulses",
        "base": 0.02,
        "pulses": [
            {"start": 2400.0, "length": 600.0, "height": 0.08},
            {"start": 3000.0, "length": 600.0, "height": 0.20},
            {"start": 3600.0, "length": 1800.0, "height": 0.30},
            {"start": 5400.0, "length": 600.0, "height": 0.10},
        ],
    }
)


def draw(profile, seed: int):
    return profile.for_episode(np.random.default_rng(seed))


def episodes(**fields) -> Episodes:
    spec = {"shape": "episodes", "base": 0.02, "count": [1, 3], "within": [100, 5100], "length": [200, 1000]}
    return PROFILE.validate_python({**spec, "height": [0.1, 0.5], **fields})


def assert_schedule_fits(spec: Episodes, drawn: Pulses) -> None:
    """The draw's episodes: as many as ``count`` allows, each within its ranges, in time order, at
    least ``gap`` apart and inside ``within`` (to a rounding error of the last bit)."""
    assert isinstance(drawn, Pulses) and drawn.base == spec.base
    assert spec.count[0] <= len(drawn.pulses) <= spec.count[1]
    for p in drawn.pulses:
        assert spec.length[0] <= p.length <= spec.length[1]
        assert spec.height[0] <= p.height <= spec.height[1]
        assert spec.ramp[0] <= p.ramp <= spec.ramp[1]
    for a, b in zip(drawn.pulses, drawn.pulses[1:], strict=False):
        assert a.start + a.length + spec.gap <= b.start * (1 + 1e-12)
    if drawn.pulses:
        assert drawn.pulses[0].start >= spec.within[0]
        last = drawn.pulses[-1]
        assert last.start + last.length <= spec.within[1] * (1 + 1e-12)


def assert_peak_bounds(profile, drawn, end: float) -> None:
    grid = np.linspace(0.0, end, 20_001)
    for p in (profile, drawn):
        values = p.at(grid)
        assert values.min() >= 0 and values.max() <= profile.peak()
    assert drawn.peak() <= profile.peak()


# ---------------------------------------------------------------------------------------------
# Reproducible, varied, within bounds
# ---------------------------------------------------------------------------------------------
def test_same_seed_same_draw_and_other_seeds_other_schedules():
    assert draw(DRIFT, 7) == draw(DRIFT, 7)
    assert draw(DRIFT, 7) != draw(DRIFT, 8)
    starts = {draw(DRIFT, seed).pulses[0].start for seed in range(20)}
    assert len(starts) >= 15
    counts = {len(draw(DRIFT, seed).pulses) for seed in range(20)}
    assert counts == {1, 2}
    diurnal = PROFILE.validate_python(DAILY)
    assert draw(diurnal, 3) == draw(diurnal, 3)
    assert len({draw(diurnal, seed).peak_time for seed in range(20)}) >= 15


def test_the_shipped_drift_schedules_fit_and_stay_under_the_peak():
    assert DRIFT.randomized and DRIFT.peak() == 0.40
    for seed in range(200):
        drawn = draw(DRIFT, seed)
        assert_schedule_fits(DRIFT, drawn)
    for seed in range(10):
        assert_peak_bounds(DRIFT, draw(DRIFT, seed), 7200.0)


def test_drift_exposure_averages_the_old_fixed_schedule():
    """The old schedule held 696 bad-rate-seconds above its 2% base over 7200 s. The drawn ones
    hold that much on average (2000 seeds, within 4 standard errors), and the undrawn profile
    reads as that mean: its integral over the horizon is the old schedule's."""
    grid = np.linspace(0.0, 7200.0, 72_001)
    old = np.trapezoid(OLD_DRIFT.at(grid) - 0.02, grid)
    assert old == pytest.approx(696.0, abs=0.1)
    excess = [sum((p.height - 0.02) * (p.length - p.ramp) for p in draw(DRIFT, seed).pulses) for seed in range(2000)]
    mean, sem = float(np.mean(excess)), float(np.std(excess, ddof=1) / np.sqrt(len(excess)))
    assert abs(mean - 696.0) < 4 * sem, (mean, sem)
    assert np.trapezoid(DRIFT.at(grid) - 0.02, grid) == pytest.approx(696.0, abs=0.1)


def test_trapezoid_area_is_what_the_exposure_counts():
    """A pulse's excess over base integrates to (height - base) x (length - ramp)."""
    drawn = draw(DRIFT, 4)
    grid = np.linspace(0.0, 7200.0, 720_001)
    area = np.trapezoid(drawn.at(grid) - 0.02, grid)
    assert area == pytest.approx(sum((p.height - 0.02) * (p.length - p.ramp) for p in drawn.pulses), rel=1e-4)


def test_a_pulse_rises_holds_and_falls():
    p = Pulses.model_validate(
        {"shape": "pulses", "base": 1.0, "pulses": [{"start": 10.0, "length": 20.0, "height": 3.0, "ramp": 5.0}]}
    )
    t = np.array([0.0, 10.0, 12.5, 15.0, 20.0, 25.0, 27.5, 30.0, 40.0])
    assert p.at(t).tolist() == [1.0, 1.0, 2.0, 3.0, 3.0, 3.0, 2.0, 1.0, 1.0]
    dip = Pulses.model_validate(
        {"shape": "pulses", "base": 1.0, "pulses": [{"start": 0.0, "length": 4.0, "height": 0}]}
    )
    assert dip.at(np.array([0.0, 3.9, 4.0])).tolist() == [0.0, 0.0, 1.0] and dip.peak() == 1.0
    assert p.at(np.float64(15.0)) == 3.0  # a scalar time, as a monitor reads it


def test_a_range_change_leaves_the_other_draws_in_place():
    """Four uniforms per possible episode whatever the options: changing the heights or the
    ramps of a seed moves neither its starts nor its lengths."""
    plain, ramped = episodes(), episodes(ramp=[0, 100], height=[0.3, 0.9])
    for seed in range(20):
        a, b = draw(plain, seed), draw(ramped, seed)
        assert [(p.start, p.length) for p in a.pulses] == [(p.start, p.length) for p in b.pulses]
    base = Diurnal.model_validate({**DAILY, "scale": None, "amplitude_scale": None})
    assert draw(base, 5).peak_time == draw(PROFILE.validate_python(DAILY), 5).peak_time


def test_diurnal_draws_stay_in_their_ranges_and_under_the_peak():
    diurnal = PROFILE.validate_python(DAILY)
    assert diurnal.peak() == pytest.approx(6 * 1.2 + 4 * 1.2)
    for seed in range(50):
        d = draw(diurnal, seed)
        assert not d.randomized and d.period == 7200.0
        assert 6 * 0.8 <= d.base <= 6 * 1.2 and 0 <= d.amplitude <= d.base
        shift = (d.peak_time - 3600.0 + 3600.0) % 7200.0 - 3600.0
        assert -1800 <= shift <= 1800
        ratio = d.amplitude / d.base / (4 / 6)
        assert 0.5 - 1e-9 <= ratio <= 1.0 + 1e-9
    assert_peak_bounds(diurnal, draw(diurnal, 0), 14_400.0)


def test_undrawn_diurnal_reads_at_its_midpoints():
    """Jitter [-1800, 1800], scale [0.8, 1.2] and amplitude scale [0.5, 1] at their midpoints: the
    base as written, the amplitude at 0.75 of it, the peak where written."""
    diurnal = PROFILE.validate_python({**DAILY, "period": 7200})
    t = np.array([3600.0, 0.0])
    assert diurnal.at(t) == pytest.approx([6 + 3.0, 6 - 3.0])


def test_fixed_profiles_are_their_own_draw_and_unchanged():
    """No range, no change: a diurnal without the new fields is the sinusoid, bit for bit, and
    every fixed profile returns itself without drawing."""
    fixed = PROFILE.validate_python({k: v for k, v in DAILY.items() if "scale" not in k and "jitter" not in k})
    t = np.linspace(0, 20_000, 1001)
    assert np.array_equal(fixed.at(t), 6.0 + 4.0 * np.cos(2 * np.pi * (t - 3600.0) / 7200.0))
    assert fixed.peak() == 10.0
    profiles = [
        fixed,
        Constant(value=2.0),
        OLD_DRIFT,
        PROFILE.validate_python({"shape": "piecewise", "times": [0, 5], "values": [1, 2]}),
        PROFILE.validate_python({"shape": "spike", "base": 1, "peak": 3, "start": 5}),
        PROFILE.validate_python({"shape": "ramp", "start": 0, "end": 5, "start_value": 1, "end_value": 2}),
    ]
    for profile in profiles:
        rng = np.random.default_rng(0)
        assert profile.for_episode(rng) is profile and not profile.randomized
        assert rng.random() == np.random.default_rng(0).random()  # nothing was drawn


def test_expected_arrivals_of_a_random_rate_is_the_mean_over_draws():
    data = copy.deepcopy(MMC)
    rate = {"shape": "episodes", "base": 2.0, "count": [0, 2], "within": [0, 1000], "length": [100, 300]}
    data["sources"]["jobs"]["rate"] = {**rate, "height": [8, 12], "ramp": [0, 50]}
    data["horizon"] = 1000
    spec = parse_scenario(data)
    profile = spec.sources["jobs"].rate
    counts = [2000 + sum((p.height - 2) * (p.length - p.ramp) for p in draw(profile, s).pulses) for s in range(4000)]
    sem = np.std(counts, ddof=1) / np.sqrt(len(counts))
    assert abs(spec.expected_arrivals() - np.mean(counts)) < 4 * sem
    assert spec.expected_arrivals() == pytest.approx(2000 + 1.0 * 8 * 175, rel=1e-3)


# ---------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", [DRIFT, draw(DRIFT, 3), PROFILE.validate_python(DAILY), draw(OLD_DRIFT, 0)])
def test_round_trip(profile):
    assert PROFILE.validate_python(profile.model_dump(by_alias=True)) == profile
    text = yaml.safe_dump(profile.model_dump(mode="json", by_alias=True))
    assert PROFILE.validate_python(yaml.safe_load(text)) == profile


def test_scenario_round_trip_keeps_the_drift():
    spec = load_scenario("quality_drift")
    again = load_scenario(spec, seed=3)
    assert again.sources["records"].quality.bad_rate == DRIFT and again.seed == 3


def _with_bad_rate(profile: dict) -> dict:
    data = copy.deepcopy(MMC)
    data["sources"]["jobs"]["quality"] = {"bad_rate": profile}
    return data


def _with_rate(profile: dict) -> dict:
    data = copy.deepcopy(MMC)
    data["sources"]["jobs"]["rate"] = profile
    return data


GOOD = {"shape": "episodes", "base": 0.02, "count": [1, 2], "within": [0, 1000], "length": [100, 200]}
GOOD = {**GOOD, "height": [0.2, 0.3]}
WHERE = "sources.jobs.quality.bad_rate"
BAD = {
    "reversed range": (
        _with_bad_rate({**GOOD, "length": [300, 100]}),
        [f"{WHERE}.length", "[300.0, 100.0]", "low <= high"],
    ),
    "range not a pair": (_with_bad_rate({**GOOD, "height": 0.3}), [f"{WHERE}.height", "valid tuple", "0.3"]),
    "range of three": (_with_bad_rate({**GOOD, "height": [0.1, 0.2, 0.3]}), [f"{WHERE}.height", "at most 2"]),
    "negative start": (
        _with_bad_rate({**GOOD, "within": [-5, 1000]}),
        [f"{WHERE}.within[0]", "-5", "greater than or equal to 0"],
    ),
    "fractional count": (_with_bad_rate({**GOOD, "count": [1, 2.5]}), [f"{WHERE}.count[1]", "integer", "2.5"]),
    "too many episodes": (_with_bad_rate({**GOOD, "count": [1, 101]}), [f"{WHERE}.count[1]", "100", "101"]),
    "no episode": (_with_bad_rate({**GOOD, "count": [0, 0]}), [WHERE, "count is [0, 0]", "high end >= 1"]),
    "ramp too long": (
        _with_bad_rate({**GOOD, "ramp": [0, 60]}),
        [WHERE, "ramp is [0.0, 60.0]", "length [100.0, 200.0]", "2 x ramp high <= length low"],
    ),
    "does not fit": (
        _with_bad_rate({**GOOD, "count": [1, 5], "gap": 100}),
        [WHERE, "within is [0.0, 1000.0] (1000 s)", "5 episodes of up to 200 s", "1400 s"],
    ),
    "height above one": (_with_bad_rate({**GOOD, "height": [0.2, 1.5]}), [WHERE, "reaches 1.5", "<= 1"]),
    "unknown key": (_with_bad_rate({**GOOD, "heigth": [0.2, 0.3]}), [f"{WHERE}.heigth", "unknown key 'heigth'"]),
    "missing field": (_with_bad_rate({k: v for k, v in GOOD.items() if k != "within"}), [f"{WHERE}.within", "missing"]),
    "overlapping pulses": (
        _with_bad_rate({"shape": "pulses", "base": 0, "pulses": [{"start": 0, "length": 10, "height": 0.5}] * 2}),
        [WHERE, "pulses[1] starts at 0, before pulses[0] ends at 10", "none overlapping"],
    ),
    "pulse ramp too long": (
        _with_bad_rate(
            {"shape": "pulses", "base": 0, "pulses": [{"start": 0, "length": 10, "height": 0.5, "ramp": 6}]}
        ),
        [f"{WHERE}.pulses[0]", "ramp is 6 and length 10", "2 * ramp <= length"],
    ),
    "jitter not finite": (
        _with_rate({**DAILY, "peak_time_jitter": [0, float("inf")]}),
        ["sources.jobs.rate.peak_time_jitter[1]", "finite", "inf"],
    ),
    "zero scale": (_with_rate({**DAILY, "scale": [0, 1]}), ["sources.jobs.rate.scale[0]", "greater than 0", "got 0"]),
    "swing below zero": (
        _with_rate({**DAILY, "amplitude_scale": [1.0, 1.6]}),
        ["sources.jobs.rate", "amplitude_scale is [1.0, 1.6]", "4 x 1.6 > base 6", "<= base"],
    ),
    "reversed jitter": (
        _with_rate({**DAILY, "peak_time_jitter": [10, -10]}),
        ["sources.jobs.rate.peak_time_jitter", "peak_time_jitter is [10.0, -10.0]", "low <= high"],
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_one_clear_line(case):
    data, expected = BAD[case]
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, label="bad.yaml")
    message = str(info.value)
    assert message.startswith("bad.yaml: invalid scenario")
    for part in expected:
        assert part in message, f"{part!r} missing from:\n{message}"
    assert len(message.splitlines()) == 2, f"expected exactly one error line:\n{message}"


# ---------------------------------------------------------------------------------------------
# Properties (hypothesis)
# ---------------------------------------------------------------------------------------------
@st.composite
def episode_specs(draw_) -> Episodes:
    """A valid episodes profile: ranges ordered, ramps within lengths, the schedule fitting."""
    n_low = draw_(st.integers(0, 4))
    n_high = draw_(st.integers(max(n_low, 1), 6))
    length_low = draw_(st.floats(0.5, 500))
    length_high = draw_(st.floats(length_low, 1000))
    ramp_high = draw_(st.floats(0, length_low / 2))
    gap = draw_(st.floats(0, 300))
    a = draw_(st.floats(0, 1e5))
    span = (n_high * length_high + (n_high - 1) * gap) * (1 + 1e-9) + draw_(st.floats(0, 5000))
    base, h1, h2 = (draw_(st.floats(0, 20)) for _ in range(3))
    return PROFILE.validate_python(
        {
            "shape": "episodes",
            "base": base,
            "count": [n_low, n_high],
            "within": [a, a + span],
            "length": [length_low, length_high],
            "height": sorted([h1, h2]),
            "ramp": [draw_(st.floats(0, ramp_high)), ramp_high],
            "gap": gap,
        }
    )


@settings(max_examples=150, deadline=None)
@given(spec=episode_specs(), seed=st.integers(0, 2**32 - 1))
def test_every_draw_fits_and_stays_under_the_peak(spec, seed):
    drawn = draw(spec, seed)
    assert_schedule_fits(spec, drawn)
    grid = np.concatenate([np.linspace(0, spec.within[1] * 1.1 + 1, 2001), [p.start + p.ramp for p in drawn.pulses]])
    assert drawn.at(grid).max() <= spec.peak() and spec.at(grid).max() <= spec.peak()
    assert drawn.at(grid).min() >= min(spec.base, spec.height[0]) - 1e-12
