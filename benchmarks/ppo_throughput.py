"""Shared by the benchmarks: PPO training throughput (env steps/s) of one env configuration."""

from __future__ import annotations

import time

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv


def ppo_steps_per_second(
    env_id: str, kwargs: dict, steps: int, n_envs: int = 4, vec_cls: type = DummyVecEnv, **ppo_kwargs
) -> float:
    """MlpPolicy, torch threads 1, seed 0: env steps per second of ``model.learn(steps)``."""
    torch.set_num_threads(1)
    vec = make_vec_env(env_id, n_envs=n_envs, seed=0, env_kwargs=kwargs, vec_env_cls=vec_cls)
    model = PPO("MlpPolicy", vec, seed=0, device="cpu", verbose=0, **ppo_kwargs)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    elapsed = time.perf_counter() - start
    vec.close()
    return model.num_timesteps / elapsed
