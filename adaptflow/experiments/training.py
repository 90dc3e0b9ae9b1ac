"""Train an RL planner from a config: ``adaptflow train CONFIG`` is :func:`train` (config) .

A run directory ``<output_dir>/<name>/<timestamp>/`` holds, each file written atomically:

* ``config.yaml`` (the resolved config), ``run.json`` (command, git commit, package versions,
  status), ``tensorboard/`` (SB3's logs);
* ``checkpoints/model_<steps>.zip`` (the last two), from which ``--resume`` continues;
* ``validation.csv`` and ``best_model.zip``: every ``evaluation.every`` steps the policy is run
  on validation seeds (a range of their own, never the evaluation seeds) through the
  Coordinator, and the lowest-cost model is kept;
* ``final_model.zip``, and ``evaluation/``: the best model against the baselines on held-out
  evaluation seeds (tables, episode logs and plots).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import gymnasium as gym
import pandas as pd
import yaml
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

from adaptflow.agents import ObservationNormalizer

from .config import TrainConfig, algorithm_class, load_config
from .evaluation import Evaluation, evaluate, run_episode
from .io import atomic_write, atomic_write_text

VALIDATION_SEED_BASE = 900_000
"""Validation seeds pick the best model; they are apart from training seeds (< 900,000 by
convention) and from evaluation seeds (>= 1,000,000), so the final table never saw selection."""

PACKAGES = ("adaptflow", "stable-baselines3", "sb3-contrib", "gymnasium", "torch", "simpy", "numpy")


@dataclass
class Run:
    run_dir: Path
    config: TrainConfig
    best_model: Path
    timesteps: int
    evaluation: Evaluation | None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Python's and each package's version (None if not installed): the provenance of a run or export."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def save_model(model: Any, path: Path, config: TrainConfig) -> Path:
    """Save atomically, with a sidecar JSON that lets SB3Planner.load rebuild the env's encoder
    and decoder (env id and options, algorithm)."""
    atomic_write(path, lambda tmp: model.save(tmp.with_suffix(".zip")) or os.replace(tmp.with_suffix(".zip"), tmp))
    sidecar = {
        "env_id": config.env.id,
        "options": config.env.options,
        "algorithm": config.algorithm,
        "observation_normalization": _normalizer(model),
    }
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2))
    return path


def _normalizer(model: Any) -> dict[str, Any] | None:
    """The observation-normalization statistics the model was trained with, as data (or None)."""
    normalizer = ObservationNormalizer.from_vec_normalize(model.get_env())
    return None if normalizer is None else normalizer.to_dict()


def check_config(config: TrainConfig) -> gym.Env:
    """Everything that can be checked before work starts: env options, the algorithm against
    the action space. Returns a probe env."""
    try:
        env = gym.make(config.env.id, **config.env.options)
    except ValueError as exc:
        raise ValueError(f"env.options: {exc}") from None
    if config.algorithm == "DQN" and not isinstance(env.action_space, gym.spaces.Discrete):
        raise ValueError(
            f"algorithm DQN needs a Discrete action space; {config.env.id} on this scenario has "
            f"{env.action_space} (use PPO, A2C or RecurrentPPO, or a single-stage scenario)"
        )
    return env


class ValidationCallback(BaseCallback):
    """Every ``every`` steps: run the policy through the Coordinator on the validation seeds,
    append to validation.csv, and keep the lowest-cost model as best_model.zip."""

    def __init__(self, run_dir: Path, config: TrainConfig, probe: gym.Env):
        super().__init__()
        self.run_dir, self.config, self.probe = run_dir, config, probe
        path = run_dir / "validation.csv"
        self.rows: list[dict[str, Any]] = pd.read_csv(path).to_dict("records") if path.is_file() else []
        self.best = min((r["cost"] for r in self.rows), default=float("inf"))
        self.next_at = (self.rows[-1]["timesteps"] if self.rows else 0) + config.evaluation.every

    def validate(self) -> float:
        from adaptflow.policies.sb3 import SB3Planner

        inner = self.probe.unwrapped
        normalizer = ObservationNormalizer.from_vec_normalize(self.model.get_env())
        planner = SB3Planner.from_env(self.model, self.probe, normalizer=normalizer)
        costs = [
            run_episode(
                inner.scenario,
                planner,
                VALIDATION_SEED_BASE + k,
                inner.interval,
                inner.cost_model.weights,
                inner.options.forecaster,
            )["cost"]
            for k in range(self.config.evaluation.episodes)
        ]
        cost = sum(costs) / len(costs)
        self.rows.append({"timesteps": self.num_timesteps, "cost": cost})
        frame = pd.DataFrame(self.rows)
        atomic_write(self.run_dir / "validation.csv", lambda tmp: frame.to_csv(tmp, index=False))
        if cost < self.best:
            self.best = cost
            save_model(self.model, self.run_dir / "best_model.zip", self.config)
        return cost

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_at:
            self.validate()
            self.next_at += self.config.evaluation.every
        return True


class CheckpointCallback(BaseCallback):
    """Atomic checkpoints every ``every`` steps; the two newest are kept."""

    def __init__(self, run_dir: Path, config: TrainConfig):
        super().__init__()
        self.dir, self.config = run_dir / "checkpoints", config
        self.next_at = 0

    def _on_training_start(self) -> None:
        self.next_at = self.num_timesteps + self.config.checkpoint_every

    def save(self) -> Path:
        path = save_model(self.model, self.dir / f"model_{self.num_timesteps:012d}.zip", self.config)
        venv = self.model.get_env()
        if isinstance(venv, VecNormalize):  # the running statistics, to resume with them
            atomic_write(path.with_suffix(".vecnormalize.pkl"), lambda tmp: venv.save(str(tmp)))
        for old in sorted(self.dir.glob("model_*.zip"))[:-2]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
            old.with_suffix(".vecnormalize.pkl").unlink(missing_ok=True)
        return path

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_at:
            self.save()
            self.next_at += self.config.checkpoint_every
        return True


def teacher_action(env: gym.Env, plan: Any) -> Any:
    """The env action whose decoding comes closest to ``plan`` (in the env's action space)."""
    import numpy as np

    inner = env.unwrapped
    action = inner.decoder.action_for(plan, inner.executor.current_workers(), inner.snapshot.splits)
    return action[0] if isinstance(env.action_space, gym.spaces.Discrete) else np.array(action)


def behaviour_clone(model: Any, config: TrainConfig) -> float:
    """Fit the policy to a teacher planner's actions on the states it visits; returns the final
    mean negative log-likelihood. A warm start: RL then refines a sensible policy instead of
    searching from a random one (which, on etl_diurnal, settles on starving or flooding)."""
    import numpy as np
    import torch

    from .planners import make_planner

    warm = config.warm_start
    env = gym.make(config.env.id, **config.env.options)
    inner = env.unwrapped
    teacher, _ = make_planner(warm.planner, inner.scenario, inner.interval)
    observations, actions = [], []
    obs, _ = env.reset(seed=config.seed)
    teacher.reset()
    while len(observations) < warm.steps:
        action = teacher_action(env, teacher.plan(inner.snapshot, inner.insights))
        observations.append(obs)
        actions.append(action)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
            teacher.reset()
    observed = np.array(observations)
    venv = model.get_env()
    if isinstance(venv, VecNormalize) and venv.norm_obs:
        # Start the running statistics from the teacher's states, so that the policy is cloned
        # on the observations it will see (normalized) and RL starts from the same scale.
        venv.obs_rms.update(observed)
        observed = venv.normalize_obs(observed)
    policy = model.policy
    obs_t = torch.as_tensor(observed, dtype=torch.float32)
    act_t = torch.as_tensor(np.array(actions))
    optimizer = torch.optim.Adam(policy.parameters(), lr=warm.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    loss_value = float("nan")
    policy.set_training_mode(True)
    for _ in range(warm.epochs):
        order = torch.randperm(len(obs_t), generator=generator)
        for start in range(0, len(order), 256):
            batch = order[start : start + 256]
            _, log_prob, _ = policy.evaluate_actions(obs_t[batch], act_t[batch])
            loss = -log_prob.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_value = float(loss.detach())
    policy.set_training_mode(False)
    return loss_value


def _write_status(run_dir: Path, **fields: Any) -> None:
    path = run_dir / "run.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    info.update(fields)
    atomic_write_text(path, json.dumps(info, indent=2))


def new_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    run_dir = Path(config.output_dir) / config.name / stamp
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir


def train(
    config: TrainConfig | str | Path | dict,
    overrides: list[str] | None = None,
    resume: str | Path | None = None,
    progress: bool = False,
) -> Run:
    """Train (or, with ``resume``, continue) a run; evaluate it against the baselines at the end."""
    import torch

    # 1. The config, checked in full before anything is written.
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise ValueError(f"{str(run_dir)!r} is not a run directory (no config.yaml)")
        config = load_config(run_dir / "config.yaml")
    elif not isinstance(config, TrainConfig):
        config = load_config(config, overrides)
    probe = check_config(config)
    torch.set_num_threads(config.torch_threads)

    # 2. The run directory: resolved config, provenance.
    if resume is None:
        run_dir = new_run_dir(config)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        _write_status(
            run_dir,
            command=" ".join(sys.argv),
            git_commit=_git_commit(),
            versions=package_versions(),
            started=datetime.now(UTC).isoformat(),
            status="running",
        )
    else:
        _write_status(run_dir, status="running", resumed=datetime.now(UTC).isoformat())
    if progress:
        print(f"adaptflow: run directory {run_dir}", file=sys.stderr, flush=True)

    # 3. Environments and the model (fresh, or from the newest checkpoint).
    vec_cls = SubprocVecEnv if config.vec_env == "subproc" else DummyVecEnv
    venv = make_vec_env(
        f"adaptflow:{config.env.id}",
        n_envs=config.n_envs,
        seed=config.seed,
        env_kwargs=config.env.options,
        vec_env_cls=vec_cls,
    )
    algorithm = algorithm_class(config.algorithm)
    checkpoints = sorted((run_dir / "checkpoints").glob("model_*.zip"))
    if config.normalize_reward or config.normalize_observation:
        stats = checkpoints[-1].with_suffix(".vecnormalize.pkl") if resume is not None and checkpoints else None
        if stats is not None and stats.is_file():
            venv = VecNormalize.load(str(stats), venv)
        else:
            gamma = config.hyperparameters.get("gamma", 0.99)
            venv = VecNormalize(
                venv, norm_obs=config.normalize_observation, norm_reward=config.normalize_reward, gamma=gamma
            )
    if resume is not None and checkpoints:
        model = algorithm.load(checkpoints[-1], env=venv, device="cpu", tensorboard_log=str(run_dir / "tensorboard"))
    else:
        model = algorithm(
            config.policy_name,
            venv,
            seed=config.seed,
            device="cpu",
            verbose=0,
            tensorboard_log=str(run_dir / "tensorboard"),
            **config.hyperparameters,
        )
        if config.warm_start is not None:  # behaviour cloning of a rule before RL
            nll = behaviour_clone(model, config)
            _write_status(run_dir, warm_start={"planner": config.warm_start.planner, "final_nll": nll})

    # 4. Learn, validating and checkpointing as we go; Ctrl-C leaves a resumable run.
    checkpoint = CheckpointCallback(run_dir, config)
    validation = ValidationCallback(run_dir, config, probe)
    if config.warm_start is not None and model.num_timesteps == 0 and not validation.rows:
        validation.init_callback(model)
        validation.validate()  # the cloned policy is a candidate too, before RL changes it
    try:
        remaining = config.total_timesteps - model.num_timesteps
        if remaining > 0:
            model.learn(
                remaining,
                callback=[checkpoint, validation],
                progress_bar=progress,
                reset_num_timesteps=resume is None or not checkpoints,
                tb_log_name="run",
            )
    except KeyboardInterrupt:
        checkpoint.save()
        _write_status(run_dir, status="interrupted", timesteps=model.num_timesteps)
        venv.close()
        raise
    venv.close()
    if not validation.rows or validation.rows[-1]["timesteps"] != model.num_timesteps:
        validation.validate()  # the final policy is a candidate too
    save_model(model, run_dir / "final_model.zip", config)
    best = run_dir / "best_model.zip"
    if not best.is_file():
        save_model(model, best, config)

    # 5. The best model against the baselines, on held-out evaluation seeds.
    result = None
    if config.evaluation.final_seeds > 0:
        from .plots import plot_results

        scenario = probe.unwrapped.scenario
        planners = [f"{config.algorithm.lower()}@sb3:{best}", *config.evaluation.baselines]
        result = evaluate(
            scenario,
            planners,
            seeds=config.evaluation.final_seeds,
            interval=probe.unwrapped.interval,
            weights=probe.unwrapped.cost_model.weights,
            out_dir=run_dir / "evaluation",
            progress=progress,
        )
        plot_results(run_dir / "evaluation")
    _write_status(run_dir, status="finished", timesteps=model.num_timesteps, finished=datetime.now(UTC).isoformat())
    return Run(run_dir, config, best, model.num_timesteps, result)
