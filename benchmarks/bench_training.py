"""PPO training throughput on Autoscale-v0 against CartPole-v1, by vector-env kind and size.

For DummyVecEnv and SubprocVecEnv with 1, 2 and 4 envs, trains PPO (MlpPolicy, torch threads 1,
``--steps`` steps, n_steps 512 per env) on the quickstart's env and on CartPole-v1 in the same
process, and reports env steps/s of each and their ratio. Used to choose the quickstart's
defaults. Prints one JSON line.

    python benchmarks/bench_training.py [--steps 16384]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from ppo_throughput import ppo_steps_per_second
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import adaptflow.envs  # noqa: F401  (registers the environments)

AUTOSCALE = (
    "adaptflow.envs:adaptflow/Autoscale-v0",
    {"scenario": "etl_diurnal", "decision_interval": 30.0, "observe_forecasts": True, "forecaster": "holt_winters"},
)
CARTPOLE = ("CartPole-v1", {})


def throughput(env_id: str, kwargs: dict, vec_cls: type, n_envs: int, steps: int) -> float:
    return ppo_steps_per_second(env_id, kwargs, steps, n_envs, vec_cls, n_steps=512, batch_size=256)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16_384)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result: dict = {"benchmark": "training_throughput", "steps": args.steps}
    best = ("", 0.0)
    for name, vec_cls in (("dummy", DummyVecEnv), ("subproc", SubprocVecEnv)):
        for n in (1, 2, 4):
            ours = throughput(*AUTOSCALE, vec_cls, n, args.steps)
            ref = throughput(*CARTPOLE, vec_cls, n, args.steps)
            key = f"{name}_{n}"
            result[f"{key}_autoscale_steps_per_s"] = round(ours)
            result[f"{key}_cartpole_steps_per_s"] = round(ref)
            result[f"{key}_ratio"] = round(ours / ref, 3)
            if ours > best[1]:
                best = (key, ours)
    result["fastest_for_autoscale"] = best[0]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
