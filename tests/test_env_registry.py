"""Every registered adaptflow env, pickled as Gymnasium pickles its own (tests/envs/test_envs.py:
``test_pickle_env``): a made env survives a pickle round trip, and the copy then behaves exactly
as the original. SubprocVecEnv and multiprocessing evaluation ship envs to workers this way.

An env pickles before ``reset``: a running episode holds the simulator's random streams as
Python generators, which cannot be pickled (the same holds for Gymnasium's own envs mid-episode
that hold generators)."""

from __future__ import annotations

import pickle

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import data_equivalence

from adaptflow.envs import ENV_IDS  # importing adaptflow.envs registers the environments

REGISTERED = sorted(env_id for env_id in gym.registry if env_id.startswith("adaptflow/"))


def test_the_registry_is_the_documented_list():
    assert sorted(ENV_IDS) == REGISTERED


@pytest.mark.parametrize("env_id", REGISTERED)
def test_pickle_round_trip(env_id):
    env = gym.make(env_id, horizon=600.0)
    copy = pickle.loads(pickle.dumps(env))
    assert data_equivalence(env.reset(seed=3), copy.reset(seed=3))
    env.action_space.seed(3)
    for _ in range(10):
        action = env.action_space.sample()
        assert data_equivalence(env.step(action), copy.step(action), exact=True)
    env.close()
    copy.close()


def test_the_encoder_is_recompiled_after_unpickling():
    """The observation layout is compiled to a function that cannot be pickled itself; a pickled
    encoder must rebuild it, not drop it."""
    env = gym.make(REGISTERED[0], horizon=600.0).unwrapped
    encoder = pickle.loads(pickle.dumps(env.encoder))
    assert callable(encoder._encode)
    assert encoder.to_dict() == env.encoder.to_dict()
