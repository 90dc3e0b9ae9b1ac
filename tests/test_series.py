"""Series sources: recorded load as a workload, windows per seed, disjoint splits, loaders."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from adaptflow.scenario import ScenarioError, load_scenario
from adaptflow.scenario.series import DATASETS, PARTS, load_dataset, workload_rates
from adaptflow.scenario.streams import Streams
from adaptflow.simulator import Simulation

SERIES_SCENARIOS = ["etl_azure", "etl_google", "etl_alibaba"]


def _window(scenario, seed: int):
    """The episode window ``seed`` draws, as the simulator draws it."""
    drawn = scenario.for_episode(Streams(np.random.default_rng(seed)))
    source = drawn.sources["events"]
    return source.window, source


@pytest.mark.parametrize("name", SERIES_SCENARIOS)
def test_windows_of_the_three_parts_are_disjoint(name: str) -> None:
    """Every window lies inside its part, and the parts follow each other in time: no test
    window shares a second of the series with a training or validation window."""
    base = load_scenario(name)
    raw = base.sources["events"].raw()
    spans = {}
    for part in PARTS:
        scenario = base.for_part(part)
        lo, hi = raw.part_bounds(scenario.sources["events"].splits.as_dict(), part)
        windows = [_window(scenario, seed)[0] for seed in range(40)]
        starts = [w.start for w in windows]
        ends = [w.start + w.length for w in windows]
        assert min(starts) >= lo - 1e-6 and max(ends) <= hi + 1e-6, part
        spans[part] = (min(starts), max(ends))
    assert spans["train"][1] <= spans["validation"][0]
    assert spans["validation"][1] <= spans["test"][0]


def test_same_seed_same_window_and_same_arrivals() -> None:
    scenario = load_scenario("etl_alibaba", horizon=1800).for_part("train")
    runs = []
    for seed in (7, 7, 8):
        sim = Simulation(scenario, rng=seed)
        sim.run(scenario.horizon)
        runs.append((sim.scenario.sources["events"].window, sim.summary()["end_to_end"]["completed"]))
    assert runs[0] == runs[1]
    assert runs[0][0].start != runs[2][0].start


def test_seeds_give_distinct_windows() -> None:
    """``--seeds N`` on a series means N workloads (a trace replay gave N copies of one)."""
    scenario = load_scenario("etl_azure").for_part("test")
    starts = {round(_window(scenario, seed)[0].start) for seed in range(20)}
    assert len(starts) == 20


def test_arrivals_follow_the_window_rate() -> None:
    """The count of arrivals over an episode is Poisson with mean the integral of the window's
    rate: within a 99.9% interval of it (|z| < 3.3)."""
    scenario = load_scenario("etl_google", horizon=3600).for_part("validation")
    sim = Simulation(scenario, rng=3)
    sim.run(scenario.horizon)
    rate = sim.scenario.sources["events"].rate
    grid = np.linspace(0, scenario.horizon, 20_001)
    expected = float(np.mean(rate.at(grid))) * scenario.horizon
    z = (sim.sources["events"].arrived - expected) / math.sqrt(expected)
    assert abs(z) < 3.3, (sim.sources["events"].arrived, expected)


def test_scale_is_measured_on_the_training_part() -> None:
    """``range`` maps the training part's min and max onto the given rates."""
    source = load_scenario("etl_azure").sources["events"]
    rates = workload_rates(load_scenario("etl_azure"), 30.0, "train")["events"].rates
    raw = source.raw()
    lo, hi = raw.part_bounds(source.splits.as_dict(), "train")
    gain, offset = source.gain_offset()
    values = raw.values_between(lo, hi)
    assert gain * values.min() + offset == pytest.approx(3.0)
    assert gain * values.max() + offset == pytest.approx(10.0)
    assert rates.min() >= 3.0 and rates.max() <= 10.0 + 1e-9


def test_augmentations_are_named_and_drawn_within_their_ranges() -> None:
    augment = {"rate_scale": [0.8, 1.25], "stretch": [0.9, 1.1], "noise": 0.1}
    scenario = load_scenario("etl_azure").for_part("train", augment)
    plain = load_scenario("etl_azure").for_part("train")
    for seed in range(10):
        window, source = _window(scenario, seed)
        assert 0.8 <= window.scale <= 1.25 and 0.9 <= window.stretch <= 1.1
        assert window.length == pytest.approx(scenario.horizon * 12 * window.stretch)
        assert source.rate.peak() <= source.peak_bound() + 1e-9
        # the same seed without augmentation starts at a different place only through the
        # stretch (the start's uniform is the same draw)
        assert _window(plain, seed)[0].scale == 1.0


def test_time_features_come_from_the_series_calendar() -> None:
    from adaptflow.envs import make

    env = make("adaptflow/Autoscale-v0", scenario="etl_azure", part="test")
    names = [f["name"] for f in env.unwrapped.encoder.to_dict()["features"]]
    assert "progress:" not in names and "week_sin:" in names
    for seed in (1, 2):
        obs, _ = env.reset(seed=seed)
        start = env.unwrapped.sim.scenario.sources["events"].window.start
        assert obs[names.index("time_sin:")] == pytest.approx(math.sin(2 * math.pi * start / 86400), abs=1e-6)
        assert obs[names.index("week_cos:")] == pytest.approx(math.cos(2 * math.pi * start / 604800), abs=1e-6)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_dataset_loaders(name: str) -> None:
    """Each shipped series loads offline, on a regular grid, finite and non-negative; a day's
    slice has 288 samples of 300 s and varies."""
    raw = load_dataset(name)
    assert raw.label == f"{name}:{DATASETS[name].default_column}"
    assert np.all(np.diff(raw.times) == 300)
    assert np.all(np.isfinite(raw.values)) and raw.values.min() >= 0
    day = raw.values_between(0, 86_400 - 1)
    assert len(day) == 288 and day.std() > 0


def test_alibaba_finer_strides_and_unknown_columns() -> None:
    assert np.all(np.diff(load_dataset("alibaba2018", stride=30).times[:10]) == 30)
    with pytest.raises(ValueError, match="no column 'cpu'; expected one of"):
        load_dataset("azure_v2", column="cpu")
    with pytest.raises(ValueError, match="no stride 10"):
        load_dataset("google2019", stride=10)


def _scenario_with(series: dict, tmp_path: Path, horizon: float = 3600, **source) -> dict:
    return {
        "name": "user",
        "horizon": horizon,
        "sla": {"latency": 10},
        "sources": {"jobs": {"process": "series", "series": series, "scale": {"mean": 2.0}, "to": "work", **source}},
        "stages": {"work": {"workers": {"initial": 2, "max": 4}, "service": {"dist": "exponential", "mean": 0.5}}},
    }


def _load(data: dict, tmp_path: Path):
    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_scenario(path)


def test_a_users_csv_of_dates_and_levels(tmp_path: Path) -> None:
    times = np.datetime64("2024-01-01T00:00") + np.arange(0, 10 * 24 * 60, 30).astype("timedelta64[m]")
    level = 50 + 20 * np.sin(np.arange(len(times)) / 48 * 2 * np.pi)
    (tmp_path / "load.csv").write_text(
        "ts,cpu\n" + "".join(f"{t},{v:.3f}\n" for t, v in zip(times, level, strict=True))
    )
    spec = _load(
        _scenario_with({"file": "load.csv", "time_column": "ts", "value_column": "cpu", "kind": "level"}, tmp_path),
        tmp_path,
    )
    source = spec.sources["jobs"]
    assert source.raw().span[0] == pytest.approx(np.datetime64("2024-01-01T00:00", "s").astype(float))
    rates = workload_rates(spec, 60.0, "train")["jobs"]
    assert rates.rates.mean() == pytest.approx(2.0, rel=0.05)  # scale.mean on the training part
    assert rates.day_steps == pytest.approx(1440)


def test_a_users_csv_of_events(tmp_path: Path) -> None:
    events = np.sort(np.random.default_rng(0).uniform(0, 20 * 86400, 20_000))
    (tmp_path / "events.csv").write_text("timestamp\n" + "".join(f"{t:.3f}\n" for t in events))
    spec = _load(_scenario_with({"file": "events.csv", "kind": "events", "bin": 600}, tmp_path), tmp_path)
    raw = spec.sources["jobs"].raw()
    assert np.diff(raw.times).max() == pytest.approx(600)
    assert raw.values.mean() == pytest.approx(20_000 / (20 * 86400), rel=0.02)


@pytest.mark.parametrize(
    ("series", "source", "message"),
    [
        ({"dataset": "azure_v2", "file": "x.csv"}, {}, "give either dataset"),
        ({"dataset": "aws"}, {}, "'aws'"),
        ({"file": "missing.csv", "value_column": "v"}, {}, "does not exist"),
        ({"file": "load.csv", "kind": "rate"}, {}, "needs value_column"),
        ({"dataset": "azure_v2"}, {"splits": {"train": 0.5, "validation": 0.2, "test": 0.2}}, "expected 1"),
        ({"dataset": "azure_v2"}, {"augment": {"stretch": [1.2, 0.8]}}, "low <= high"),
        ({"dataset": "alibaba2018"}, {"part": "test", "day_length": 1800}, "part 'test' is"),
    ],
)
def test_bad_series_sources_are_refused_with_one_line_each(
    tmp_path: Path, series: dict, source: dict, message: str
) -> None:
    (tmp_path / "load.csv").write_text("timestamp,v\n0,1\n60,2\n")
    data = _scenario_with(series, tmp_path, **source)
    with pytest.raises(ScenarioError) as err:
        _load(data, tmp_path)
    text = str(err.value)
    assert message in text
    assert "sources.jobs" in text


def test_a_part_too_short_for_the_horizon_is_refused_when_chosen() -> None:
    """etl_alibaba's one-day episodes fit its 1.6-day test part; two days do not."""
    with pytest.raises(ScenarioError, match=r"part .test. is 1\.56 days long"):
        load_scenario("etl_alibaba", horizon=14_400).for_part("test")


def test_a_mixture_env_draws_one_workload_per_episode() -> None:
    """Training over a distribution of workloads: each reset picks one scenario of the list
    (by the seed), with one encoder whose rate reference covers all of them."""
    from adaptflow.envs import make

    names = ["etl_azure", "etl_google", "etl_diurnal"]
    env = make("adaptflow/Autoscale-v0", scenario=names, part="train")
    seen = []
    for seed in range(12):
        env.reset(seed=seed)
        seen.append(env.unwrapped.sim.scenario.name)
    assert set(seen) == set(names)
    env.reset(seed=3)
    again = env.unwrapped.sim.scenario
    env.reset(seed=3)
    assert env.unwrapped.sim.scenario.name == again.name
    single = [make("adaptflow/Autoscale-v0", scenario=n).unwrapped.encoder.features_scale("rate:") for n in names]
    assert env.unwrapped.encoder.features_scale("rate:") == pytest.approx(max(single))


def test_a_mixture_must_share_its_layout_and_horizon() -> None:
    from adaptflow.envs import make

    with pytest.raises(ValueError, match="another layout"):
        make("adaptflow/Autoscale-v0", scenario=["etl_azure", "mmc"], max_episode_steps=10)
    with pytest.raises(ValueError, match="expected one horizon"):
        make("adaptflow/Autoscale-v0", scenario=["etl_azure", "etl_alibaba"], part="train", max_episode_steps=10)


def test_a_mixture_observes_the_week_whichever_workload_comes_first() -> None:
    """The layout is decided for the whole mixture: a synthetic member listed first does not
    take the week features away from the series members (nor shift the layout between them)."""
    from adaptflow.envs import make

    names = lambda env: [f.name for f in env.unwrapped.encoder.features]  # noqa: E731
    synthetic_first = make("adaptflow/Autoscale-v0", scenario=["etl_synthetic", "etl_azure"], part="train")
    series_first = make("adaptflow/Autoscale-v0", scenario=["etl_azure", "etl_synthetic"], part="train")
    assert "week_sin:" in names(synthetic_first) and names(synthetic_first) == names(series_first)
    assert "week_sin:" not in names(make("adaptflow/Autoscale-v0", scenario="etl_synthetic"))


def test_a_model_trained_on_a_mixture_runs_on_its_synthetic_member(tmp_path) -> None:
    """The bug this pins: a PPO trained on [etl_azure, etl_synthetic] was loaded for an
    evaluation on etl_synthetic alone with etl_synthetic's own layout (no week features), two
    features short of the policy's input; its final evaluation failed on the guard's check. The
    sidecar's mixture now gives the layout, whichever member runs."""
    from adaptflow.experiments.evaluation import run_episode
    from adaptflow.experiments.training import train
    from adaptflow.policies.sb3 import SB3Planner

    run = train(
        "configs/train/tiny.yaml",
        [
            f"output_dir={tmp_path}",
            "env.options.scenario=[etl_azure, etl_synthetic]",
            "env.options.horizon=3600",
            "env.options.part=train",
            "total_timesteps=256",
            "evaluation.every=256",
            "evaluation.final_seeds=0",
        ],
    )
    synthetic = load_scenario("etl_synthetic", horizon=3600)
    planner = SB3Planner.load(run.best_model, synthetic, 30.0)
    assert planner.encoder.size == run_model_inputs(run.best_model)
    assert "week_sin:" in [f.name for f in planner.encoder.features]
    result = run_episode(synthetic, planner, 1_000_000, 30.0)
    assert result["cost"] > 0


def run_model_inputs(path) -> int:
    from stable_baselines3 import PPO

    return int(PPO.load(path, device="cpu").observation_space.shape[0])
