"""The Gymnasium environments, checked the way Gymnasium checks its own (tests/envs/test_envs.py):
the env checkers on every registered id, same-seed determinism, vector envs, bad input."""

from __future__ import annotations

import copy
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import adaptflow.envs  # noqa: F401  (registers the environments)
from adaptflow.envs import ENV_IDS, make
from adaptflow.scenario import load_scenario
from adaptflow.simulator import Simulation, flatten

SHORT = {"horizon": 600.0}  # 20 decisions: enough to exercise everything, quick to run


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_env_checker(env_id):
    env = gym.make(env_id, **SHORT).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker's warnings are failures here
        gym_check_env(env, skip_render_check=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_env_checker(env_id):
    env = gym.make(env_id, **SHORT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(env, warn=True)


def rollout(env: gym.Env, seed: int, steps: int) -> tuple[np.ndarray, np.ndarray, list]:
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    observations, rewards, costs = [obs], [], []
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        observations.append(obs)
        rewards.append(reward)
        costs.append(info["cost"])
        if terminated or truncated:
            break
    return np.array(observations), np.array(rewards), costs


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_trajectory(env_id):
    a = rollout(gym.make(env_id, **SHORT), seed=7, steps=20)
    b = rollout(gym.make(env_id, **SHORT), seed=7, steps=20)
    c = rollout(gym.make(env_id, **SHORT), seed=8, steps=20)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("scenario", ["etl_diurnal", "quality_drift", "bursty"])
def test_fixed_action_reproduces_the_simulator(scenario):
    """Holding every pool (action 1 = hold) is the scenario as declared: the env's per-step
    costs and counts add up to the simulator's own metrics for the same scenario and seed."""
    horizon = 1800.0
    env = make("adaptflow/Autoscale-v0", scenario=scenario, horizon=horizon, decision_interval=60.0)
    env.reset(seed=11)
    hold = np.ones(env.action_space.shape or (), dtype=np.int64) if env.action_space.shape else 1
    worker_cost = sla = 0.0
    truncated, steps = False, 0
    while not truncated:
        _, _, _, truncated, info = env.step(hold)
        worker_cost += info["cost"]["workers"]
        sla += info["cost"]["sla"]
        steps += 1
    assert steps == 30
    sim = Simulation(load_scenario(scenario, horizon=horizon), rng=np.random.default_rng(11))
    sim.run(horizon)
    summary = sim.summary()
    weights = env.unwrapped.cost_model.weights
    assert worker_cost == pytest.approx(weights.workers * summary["cost"], rel=1e-9)
    assert sla == pytest.approx(weights.sla * summary["end_to_end"]["sla_violations"])
    ours = flatten(env.unwrapped.sim.summary())
    # Integers exactly; floats to rounding (the monitor sums waits in per-interval chunks).
    assert ours == pytest.approx(flatten(summary), rel=1e-12, nan_ok=True)
    assert all(ours[k] == v for k, v in flatten(summary).items() if isinstance(v, int))


def test_time_limit_follows_the_horizon():
    env = gym.make("adaptflow/Autoscale-v0")
    assert env.spec.max_episode_steps == env.unwrapped.max_steps == 480
    custom = make("adaptflow/Autoscale-v0", scenario="mmc", decision_interval=10.0)
    assert custom.spec.max_episode_steps == custom.unwrapped.max_steps == 2000
    assert make("adaptflow/Reroute-v0", horizon=900.0).spec.max_episode_steps == 30


def test_episode_truncates_at_the_horizon():
    env = make("adaptflow/Reroute-v0", horizon=300.0)
    env.reset(seed=0)
    flags = [env.step(env.action_space.sample())[3] for _ in range(10)]
    assert flags == [False] * 9 + [True]
    assert env.unwrapped.sim.now == 300.0


def test_gymnasium_vector_envs():
    for vector_cls in (gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv):
        envs = vector_cls([lambda: gym.make("adaptflow/Orchestrate-v0", **SHORT) for _ in range(2)])
        obs, _ = envs.reset(seed=[1, 2])
        assert obs.shape == (2, *envs.single_observation_space.shape)
        for _ in range(3):
            obs, rewards, *_ = envs.step(envs.action_space.sample())
        assert rewards.shape == (2,) and np.all(rewards <= 0)
        envs.close()


@pytest.mark.parametrize("vec_cls", [DummyVecEnv, SubprocVecEnv])
def test_sb3_vec_envs(vec_cls):
    # Subprocesses start fresh (forkserver): the "module:" prefix makes gymnasium import adaptflow.
    vec = make_vec_env("adaptflow.envs:adaptflow/Autoscale-v0", n_envs=2, seed=3, vec_env_cls=vec_cls, env_kwargs=SHORT)
    obs = vec.reset()
    assert obs.shape == (2, *vec.observation_space.shape)
    for _ in range(3):
        obs, rewards, _, infos = vec.step(np.array([vec.action_space.sample() for _ in range(2)]))
    assert rewards.shape == (2,) and "cost" in infos[0]
    vec.close()


def test_step_info_deep_copies_cheaply_and_correctly():
    """SB3 deep-copies every info; the env's immutable values may be shared by the copy, anything
    a wrapper adds must still be copied."""
    env = gym.make("adaptflow/Autoscale-v0", scenario="mmc", **SHORT)
    env.reset(seed=0)
    info = env.step(1)[-1]
    info["terminal_observation"] = np.zeros(3)  # what DummyVecEnv adds at an episode's end
    copied = copy.deepcopy([info])[0]
    assert copied == {k: v for k, v in info.items() if k != "terminal_observation"} | {
        "terminal_observation": copied["terminal_observation"]
    }
    assert copied["cost"] is info["cost"] and copied["cost"]["total"] == info["cost"].total
    assert copied["terminal_observation"] is not info["terminal_observation"]
    copied["terminal_observation"][0] = 1.0
    assert info["terminal_observation"][0] == 0.0


def test_out_of_range_action_is_a_clear_error():
    env = gym.make("adaptflow/Orchestrate-v0", **SHORT).unwrapped
    env.reset(seed=0)
    good = env.action_space.sample()
    bad = good.copy()
    bad[-1] = 7
    with pytest.raises(ValueError, match=r"action\[4\] is 7; expected an integer in \[0, 4\]"):
        env.step(bad)
    with pytest.raises(ValueError, match="action has 2 entries; expected 5"):
        env.step(good[:2])
    with pytest.raises(ValueError, match=r"action\[0\] is 1.5"):
        env.step(np.array([1.5, 1, 1, 1, 0]))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"decision_intervall": 5}, "unknown option 'decision_intervall'"),
        ({"decision_interval": -1}, "option decision_interval: Input should be greater than 0"),
        ({"scenario": "no_such"}, "neither a file nor a shipped scenario"),
        ({"forecaster": "prophet"}, "option forecaster"),
        ({"workers": {"extract": 99}}, "option workers.extract is 99"),
        ({"reward_weights": {"sla": -1}}, "option reward_weights.sla"),
    ],
)
def test_wrong_option_is_a_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        gym.make("adaptflow/Autoscale-v0", **options)


def test_reroute_needs_a_controllable_split():
    with pytest.raises(ValueError, match="no controllable split"):
        gym.make("adaptflow/Reroute-v0", scenario="mmc")


def test_render_modes():
    env = gym.make("adaptflow/Orchestrate-v0", render_mode="ansi", **SHORT)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    line = env.render()
    assert line.startswith("t=") and line.endswith("\n") and "reward=" in line and "ingest" in line
    env = gym.make("adaptflow/Autoscale-v0", render_mode="rgb_array", **SHORT)
    env.reset(seed=0)
    for _ in range(5):
        env.step(env.action_space.sample())
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.std() > 0  # something was drawn
    with pytest.raises(ValueError, match="render_mode 'console'"), pytest.warns(UserWarning, match="render_mode"):
        gym.make("adaptflow/Autoscale-v0", render_mode="console")


def test_forecasts_in_the_observation():
    plain = gym.make("adaptflow/Autoscale-v0", **SHORT)
    with_forecast = gym.make(
        "adaptflow/Autoscale-v0", observe_forecasts=True, forecaster="holt_winters", forecast_steps=3, **SHORT
    )
    assert with_forecast.observation_space.shape[0] == plain.observation_space.shape[0] + 3
    names = [f.name for f in with_forecast.unwrapped.encoder.features]
    assert names.count("forecast:events:0") == 1 and "forecast:events:2" in names
    obs, _ = with_forecast.reset(seed=0)
    for _ in range(5):
        obs, *_ = with_forecast.step(with_forecast.action_space.sample())
    index = names.index("forecast:events:0")
    assert 0 < obs[index] <= 5


def test_an_env_loads_the_fitted_analyzer_it_is_given_and_fits_once_otherwise(caplog):
    """Given a fitted analyzer (as a model's sidecar carries it), the env uses it as it is; given
    one fitted for other options, it says so and fits its own; two envs of one scenario share one
    fit (a fit simulates four load cycles: it is not redone per construction)."""
    import logging

    options = {"observe_forecasts": True, "forecaster": "holt_winters", "forecast_steps": 3, **SHORT}
    first = gym.make("adaptflow/Autoscale-v0", **options).unwrapped
    second = gym.make("adaptflow/Autoscale-v0", **options).unwrapped
    assert first.analyzer is not second.analyzer
    assert first.analyzer.forecasters["events"].model is second.analyzer.forecasters["events"].model  # one fit
    saved = first.analyzer.to_dict(state=False)
    saved["forecasters"]["events"]["model"]["level"] += 1.0  # tell the given analyzer from a refit
    given = gym.make("adaptflow/Autoscale-v0", analyzer=saved, **options).unwrapped
    assert given.analyzer.forecasters["events"].model.level == saved["forecasters"]["events"]["model"]["level"]
    with caplog.at_level(logging.WARNING, logger="adaptflow.agents.analyzers"):
        other = gym.make("adaptflow/Autoscale-v0", analyzer=saved, **{**options, "forecast_steps": 2}).unwrapped
    assert "forecasts 3 steps, not 2" in caplog.text
    assert other.analyzer.forecasters["events"].model is first.analyzer.forecasters["events"].model


def test_single_stage_scenarios_get_a_discrete_action_space():
    env = gym.make("adaptflow/Autoscale-v0", scenario="mmc", decision_interval=1.0)
    assert isinstance(env.action_space, gym.spaces.Discrete) and env.action_space.n == 3
    env.reset(seed=0)
    before = env.unwrapped.sim.stages["work"].target
    env.step(2)
    assert env.unwrapped.sim.stages["work"].target == before + 1
