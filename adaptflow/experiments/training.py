"""Train an RL planner from a config: ``adaptflow train CONFIG`` is :func:`train` (config) .

A run directory ``<output_dir>/<name>/<timestamp>/`` holds, each file written atomically:

* ``config.yaml`` (the resolved config), ``run.json`` (command, git commit, package versions,
  status), ``tensorboard/`` (SB3's logs);
* ``checkpoints/model_<steps>.zip`` (the last two), from which ``--resume`` continues: each with
  a sidecar holding VecNormalize's statistics as JSON (model and statistics are one unit; a
  checkpoint without them is never resumed with fresh ones; the model is written last, so a
  kill at any moment leaves only complete checkpoints). Ctrl-C and SIGTERM save a final
  checkpoint and mark the run "interrupted"; ``--resume`` also removes the hidden partial files a
  run killed mid-write (SIGKILL) leaves behind;
* ``validation.csv`` and ``best_model.zip``: every ``evaluation.every`` steps the policy is run
  on validation seeds (a range of their own, never the evaluation seeds) through the
  Coordinator, and the lowest-cost model is kept;
* ``final_model.zip``, and ``evaluation/``: the best model against the baselines on held-out
  evaluation seeds (tables, episode logs and plots).

Every saved model has a sidecar ``<model>.json`` (env id and options, algorithm, observation
normalization, and the fitted analyzer, ``fitted_analyzer``: its forecaster's parameters and the
drift detector's settings), so loading or exporting it never refits the forecaster; and what
training saw, ``training_range`` (:class:`~adaptflow.policies.guard.TrainingRange`), by which a
deployment's guard knows when the policy is out of its depth: the raw observations of every
rollout step (running minimum and maximum per feature, :class:`RangeCallback`) and the load and
forecast errors of :data:`RANGE_EPISODES` episodes on training seeds (:func:`load_range`, before
learning: neither depends on the policy). A checkpoint's range is resumed with it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import yaml
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize

import adaptflow.envs  # noqa: F401  (registers the environments gym.make reads below)
from adaptflow._io import package_versions
from adaptflow.agents import ObservationNormalizer
from adaptflow.policies.guard import ForecastTracker, TrainingRange
from adaptflow.policies.sb3 import algorithm_class
from adaptflow.scenario import Scenario

from .config import ACTIVATIONS, TrainConfig, load_config
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
    already_finished: bool = False  # resumed, but it had finished: nothing was done


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


def save_model(
    model: Any,
    path: Path,
    config: TrainConfig,
    analyzer: dict[str, Any] | None = None,
    checkpoint: bool = False,
    seen: TrainingRange | None = None,
) -> Path:
    """Save atomically, with a sidecar JSON that lets SB3Planner.load rebuild the env's encoder
    and decoder (env id and options, algorithm) and load the analyzer the env used
    (``analyzer``: ``StandardAnalyzer.to_dict(state=False)``) instead of refitting it, and that
    carries what training has seen so far (``seen``, as ``training_range``) for the guard.

    A ``checkpoint``'s sidecar also holds the full VecNormalize state (``vec_normalize``, see
    :func:`vec_normalize_state`). The sidecar is written first and the model last: the model's
    file is the commit, so a checkpoint whose model exists is complete whenever the run is killed
    (a kill between the two leaves only a sidecar, which the next checkpoint prunes)."""
    sidecar = {
        "env_id": config.env.id,
        "options": config.env.options,
        "algorithm": config.algorithm,
        "observation_normalization": _normalizer(model),
        "fitted_analyzer": analyzer,
    }
    if seen is not None:
        sidecar[RANGE_KEY] = seen.to_dict()
    venv = model.get_env()
    if checkpoint and isinstance(venv, VecNormalize):
        sidecar[STATS_KEY] = vec_normalize_state(venv)
    if checkpoint:  # a checkpoint saved again at its step (a resumed run's): no old model beside the new sidecar
        path.unlink(missing_ok=True)
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2))
    with _signals_held():
        atomic_write(path, lambda tmp: model.save(tmp.with_suffix(".zip")) or os.replace(tmp.with_suffix(".zip"), tmp))
    return path


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM held back while a model is written, then handled as they would have been.

    Why: raised inside ``torch.save``, Ctrl-C's or SIGTERM's exception breaks its zip writer,
    whose cleanup then raises ``RuntimeError`` ("unexpected pos ...") in its place, so the run
    died with status 1 and no "interrupted" status instead of leaving a resumable run (1 of 10
    SIGTERMs with both cores busy beside it). Only a signal whose handler is Python's own is held
    (Ctrl-C's, and SIGTERM's during training, :func:`_sigterm_as_interrupt`); an ignored or a
    default one is left alone. In the main thread only, where handlers run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[tuple[int, Any]] = []
    handlers = {
        sig: signal.signal(sig, lambda signum, frame: held.append((signum, frame)))
        for sig in (signal.SIGINT, signal.SIGTERM)
        if callable(signal.getsignal(sig))
    }
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    for signum, frame in held[:1]:  # the first, as it would have met the run; its handler raises
        handlers[signal.Signals(signum)](signum, frame)


STATS_KEY = "vec_normalize"
"""The key of a checkpoint sidecar that holds VecNormalize's running statistics."""

RANGE_KEY = "training_range"
"""The key of a sidecar that holds what training saw (:class:`TrainingRange` as data)."""

RANGE_EPISODES = 8
"""Episodes on training seeds whose load and forecast errors make the training range: arrivals
and the analyzer's forecasts do not depend on the policy, so these are seen before learning, at
the cost of a few validation episodes, instead of reaching into every training env every step."""


def vec_normalize_state(venv: VecNormalize) -> dict[str, Any]:
    """VecNormalize's running statistics as data: observations and returns (mean, var, count),
    the discounted returns in progress, and its settings. JSON, not VecNormalize.save's pickle,
    whose loading can run code."""

    def rms(stats: Any) -> dict[str, Any]:
        return {"mean": np.asarray(stats.mean).tolist(), "var": np.asarray(stats.var).tolist(), "count": stats.count}

    settings = {k: getattr(venv, k) for k in ("norm_obs", "norm_reward", "clip_obs", "clip_reward", "gamma", "epsilon")}
    # SB3 keeps a statistic only for what it normalizes (reward-only normalization has no obs_rms)
    stats = {name: rms(getattr(venv, name)) for name in ("obs_rms", "ret_rms") if name in vars(venv)}
    return {**settings, **stats, "returns": venv.returns.tolist()}


def restore_vec_normalize(venv: VecEnv, state: dict[str, Any]) -> VecNormalize:
    """A fresh VecNormalize around ``venv`` holding the statistics of :func:`vec_normalize_state`."""
    settings = ("norm_obs", "norm_reward", "clip_obs", "clip_reward", "gamma", "epsilon")
    wrapped = VecNormalize(venv, **{k: state[k] for k in settings})
    for name in ("obs_rms", "ret_rms"):
        if name not in state or name not in vars(wrapped):
            continue
        stats, saved = getattr(wrapped, name), state[name]
        mean, var = np.array(saved["mean"], dtype=np.float64), np.array(saved["var"], dtype=np.float64)
        if mean.shape != stats.mean.shape or var.shape != stats.var.shape:
            raise ValueError(f"saved {name} has shape {mean.shape}; this env's is {stats.mean.shape}")
        stats.mean, stats.var, stats.count = mean, var, float(saved["count"])
    returns = np.array(state["returns"], dtype=np.float64)
    if returns.shape == wrapped.returns.shape:  # another n_envs: they start afresh, as at every reset
        wrapped.returns = returns
    return wrapped


def _normalizer(model: Any) -> dict[str, Any] | None:
    """The observation-normalization statistics the model was trained with, as data (or None)."""
    normalizer = ObservationNormalizer.from_vec_normalize(model.get_env())
    return None if normalizer is None else normalizer.to_dict()


def fitted_analyzer(env: gym.Env) -> dict[str, Any]:
    """The analyzer ``env`` fitted, as data, reset: what a saved model's sidecar carries."""
    return env.unwrapped.analyzer.to_dict(state=False)


def check_config(config: TrainConfig) -> gym.Env:
    """Everything that can be checked before work starts and needs the env: its options, the
    algorithm against the action space, every baseline built for the env's scenario. Returns a
    probe env."""
    try:
        env = gym.make(config.env.id, **config.env.options)
    except ValueError as exc:
        # "horizon: ..." from the env names its option: report it as the config's field
        field = str(exc).split(":", 1)[0]
        prefix = (
            "env.options."
            if field in config.env.options or field in ("horizon", "decision_interval")
            else "env.options: "
        )
        raise ValueError(f"{prefix}{exc}") from None
    problems = []
    if config.algorithm == "DQN" and not isinstance(env.action_space, gym.spaces.Discrete):
        problems.append(
            f"algorithm DQN needs a Discrete action space; {config.env.id} on this scenario has "
            f"{env.action_space} (use PPO, A2C or RecurrentPPO, or a single-stage scenario)"
        )
    if config.evaluation.final_seeds > 0:  # the baselines are used only then
        problems += _baseline_problems(config, env)
    if problems:
        raise ValueError("invalid training config\n  " + "\n  ".join(problems))
    return env


def _baseline_problems(config: TrainConfig, env: gym.Env) -> list[str]:
    """Each rule or staffing baseline built for the env's scenario (a parameter can be valid
    in the registry and still not fit it, e.g. a split planner on a scenario without splits)."""
    from adaptflow.policies.registry import LEARNED, make_planner, parse_planner

    inner = env.unwrapped
    problems = []
    for k, spec in enumerate(config.evaluation.baselines):
        if parse_planner(spec)[0] in LEARNED:
            continue  # its file was checked with the config; loading it is the evaluation's work
        try:
            make_planner(spec, inner.scenario, inner.interval)
        except ValueError as exc:
            problems.append(f"evaluation.baselines: [{k}] {spec!r}: {exc}")
    return problems


class ValidationCallback(BaseCallback):
    """Every ``every`` steps: run the policy through the Coordinator on the validation seeds,
    append to validation.csv, and keep the lowest-cost model as best_model.zip."""

    def __init__(self, run_dir: Path, config: TrainConfig, probe: gym.Env, seen: TrainingRange | None = None):
        super().__init__()
        self.run_dir, self.config, self.probe, self.seen = run_dir, config, probe, seen
        self.analyzer = fitted_analyzer(probe)
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
                scenario,
                planner,
                VALIDATION_SEED_BASE + k,
                inner.interval,
                inner.cost_model.weights,
                inner.options.forecaster,
            )["cost"]
            for scenario in held_out(inner.scenarios, "validation")
            for k in range(self.config.evaluation.episodes)
        ]
        cost = sum(costs) / len(costs)
        self.rows.append({"timesteps": self.num_timesteps, "cost": cost})
        frame = pd.DataFrame(self.rows)
        atomic_write(self.run_dir / "validation.csv", lambda tmp: frame.to_csv(tmp, index=False))
        if cost < self.best:
            self.best = cost
            save_model(self.model, self.run_dir / "best_model.zip", self.config, self.analyzer, seen=self.seen)
        return cost

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_at:
            self.validate()
            self.next_at += self.config.evaluation.every
        return True


class CheckpointCallback(BaseCallback):
    """Atomic checkpoints every ``every`` steps; the two newest are kept. Each sidecar holds the
    training range so far (``seen``), which a resumed run goes on widening."""

    def __init__(
        self,
        run_dir: Path,
        config: TrainConfig,
        analyzer: dict[str, Any] | None = None,
        seen: TrainingRange | None = None,
    ):
        super().__init__()
        self.dir, self.config, self.analyzer, self.seen = run_dir / "checkpoints", config, analyzer, seen
        self.next_at = 0

    def _on_training_start(self) -> None:
        self.next_at = self.num_timesteps + self.config.checkpoint_every

    def save(self) -> Path:
        name = f"model_{self.num_timesteps:012d}.zip"
        path = save_model(self.model, self.dir / name, self.config, self.analyzer, checkpoint=True, seen=self.seen)
        kept = {p.stem for p in sorted(self.dir.glob("model_*.zip"))[-2:]}
        for old in self.dir.glob("model_*.*"):  # older checkpoints, and a killed save's lone sidecar
            if old.name.split(".", 1)[0] not in kept:
                old.unlink(missing_ok=True)
        return path

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_at:
            self.save()
            self.next_at += self.config.checkpoint_every
        return True


class RangeCallback(BaseCallback):
    """Widens the training range by the observation of every env at every rollout step: what
    the policy network is trained on, before normalization (VecNormalize's original observation
    when it normalizes). A running minimum and maximum per feature: a few microseconds a step."""

    def __init__(self, seen: TrainingRange):
        super().__init__()
        self.seen = seen

    def _on_step(self) -> bool:
        venv = self.training_env
        observations = venv.get_original_obs() if isinstance(venv, VecNormalize) else self.locals.get("new_obs")
        if observations is not None:
            self.seen.add_observations(observations)
        return True


def load_range(config: TrainConfig, analyzer: dict[str, Any], seen: TrainingRange) -> TrainingRange:
    """Widen ``seen`` by the load and forecast errors of :data:`RANGE_EPISODES` episodes per
    workload (a mixture draws one per episode) on training seeds (``config.seed + k``). Arrivals,
    and the analyzer's forecasts of them, are the same whatever the policy does, so the actions
    are random (seeded) and nothing is learned."""
    env = gym.make(config.env.id, **{**config.env.options, "analyzer": analyzer})
    inner, tracker = env.unwrapped, ForecastTracker()
    for k in range(RANGE_EPISODES * len(inner.scenarios)):
        env.reset(seed=config.seed + k)
        env.action_space.seed(config.seed + k)
        tracker.reset()
        done = False
        while True:
            seen.add_decision(*tracker.step(inner.snapshot, inner.insights))
            if done:
                break
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            done = terminated or truncated
    env.close()
    return seen


def training_range(config: TrainConfig, probe: gym.Env, analyzer: dict[str, Any], saved: dict | None) -> TrainingRange:
    """The range a run starts from: a resumed checkpoint's (``saved``), else an empty one for
    the env's observation layout; with the load and forecast errors of :func:`load_range` if it
    has none yet (a fresh run, or one resumed from a checkpoint older than training ranges)."""
    encoder = probe.unwrapped.encoder
    seen = TrainingRange.from_dict(saved) if saved else TrainingRange.for_encoder(encoder)
    seen.check_layout(encoder)
    return seen if seen.load else load_range(config, analyzer, seen)


def teacher_action(env: gym.Env, plan: Any) -> Any:
    """The env action whose decoding comes closest to ``plan`` (in the env's action space)."""
    import numpy as np

    inner = env.unwrapped
    action = inner.decoder.action_for(plan, inner.executor.current_workers(), inner.snapshot.splits)
    return action[0] if isinstance(env.action_space, gym.spaces.Discrete) else np.array(action)


def behaviour_clone(model: Any, config: TrainConfig, seen: TrainingRange | None = None) -> float:
    """Fit the policy to a teacher planner's actions on the states it visits; returns the final
    mean negative log-likelihood. A warm start: RL then refines a sensible policy instead of
    searching from a random one (which, on etl_diurnal, settles on starving or flooding). The
    policy is trained on those states too: they widen ``seen``."""
    import numpy as np
    import torch

    from adaptflow.policies.registry import make_planner

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
    if seen is not None:
        seen.add_observations(observed)
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
    info = _status(run_dir)
    info.update(fields)
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2))


def new_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    run_dir = Path(config.output_dir) / config.name / stamp
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt: a run stopped by a service
    manager, a scheduler or ``kill`` checkpoints and is marked "interrupted" just the same."""


_sigterm_received: list[str] = []
"""The SIGTERM a run was sent, until it stops. Signal handlers are process-wide, so this is too.
Kept because a handler's exception can be swallowed: raised while the main thread runs a
``__del__`` or a weakref callback, Python prints "Exception ignored" and goes on, and the run
would finish as if never asked to stop. :class:`StopOnSignal` raises it again at the next step."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While training, SIGTERM raises :class:`Terminated` (once: a second one does not break
    the final checkpoint). Signal handlers belong to the main thread; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _sigterm_received.append(signal.Signals(signum).name)
        raise Terminated(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _sigterm_received.clear()


def _raise_if_terminated() -> None:
    if _sigterm_received:
        raise Terminated(_sigterm_received[0])


def steps_to_take(model: Any, remaining: int) -> int:
    """The env steps ``model.learn(remaining)`` takes: SB3 stops only between whole rollouts
    (``n_steps`` per env for PPO, A2C and RecurrentPPO; ``train_freq`` steps per env for DQN,
    whose ``n_steps`` is its n-step return instead), so ``remaining`` rounded up to whole
    rollouts (100,000 -> 100,352 in the quickstart). A ``train_freq`` in episodes has no fixed
    length: then ``remaining``."""
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
    from stable_baselines3.common.type_aliases import TrainFrequencyUnit

    if isinstance(model, OffPolicyAlgorithm):
        freq = model.train_freq
        per_env = freq.frequency if freq.unit == TrainFrequencyUnit.STEP else None
    else:
        per_env = model.n_steps
    if per_env is None or remaining <= 0:
        return max(remaining, 0)
    rollout = per_env * model.n_envs
    return -(-remaining // rollout) * rollout


class TrainingProgress(BaseCallback):
    """A progress bar (on stderr) of the steps learning will take (:func:`steps_to_take`).
    SB3's own bar counts to the ``total_timesteps`` asked for, which rollouts overshoot, so it
    ended at 100,352/100,000; this one ends at its total (should a rollout ever run longer than
    predicted, its total grows to the steps taken before it closes)."""

    def __init__(self, total: int):
        super().__init__()
        self.total, self.completed = total, 0
        self.progress: Any = None

    def _on_training_start(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = (
            TextColumn("[progress.percentage]{task.percentage:>3.0f}%"),
            BarColumn(bar_width=None),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self.progress = Progress(*columns, console=Console(stderr=True))
        self.progress.start()
        self.task = self.progress.add_task("train", total=self.total)

    def _on_step(self) -> bool:
        self.completed += self.training_env.num_envs
        self.progress.update(self.task, completed=self.completed)
        return True

    def _on_training_end(self) -> None:
        self.total = max(self.total, self.completed)
        self.progress.update(self.task, completed=self.completed, total=self.total)
        self.close()

    def close(self) -> None:
        """Stop the bar's live display, also when learning was interrupted (which skips
        ``_on_training_end``): a live display left running keeps the terminal's cursor hidden."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class StopOnSignal(BaseCallback):
    """Stops learning at the next step after a SIGTERM whose exception was swallowed."""

    def _on_step(self) -> bool:
        _raise_if_terminated()
        return True


def train(
    config: TrainConfig | str | Path | dict,
    overrides: list[str] | None = None,
    resume: str | Path | None = None,
    progress: bool = False,
    allow_pickle: bool = False,
) -> Run:
    """Train (or, with ``resume``, continue) a run; evaluate it against the baselines at the end.
    SIGTERM stops it as Ctrl-C does (a final checkpoint, status "interrupted"); any other failure
    after the run directory exists is recorded in run.json (status "failed"), so no run says
    "running" forever. ``allow_pickle``: resume a run of an older adaptflow whose normalization
    statistics are a pickle (loading one can run code).

    Resuming a run that finished does nothing (``already_finished``: its files are left as they
    are); one whose training ended but whose final evaluation did not (interrupted, or failed)
    runs only that evaluation, never retraining from an older checkpoint."""
    import torch

    config, probe = _resolve_config(config, overrides, resume)  # checked in full before anything is written
    if resume is not None and _status(Path(resume)).get("status") == "finished":
        run_dir = Path(resume)
        return Run(run_dir, config, run_dir / "best_model.zip", _trained_steps(run_dir), None, already_finished=True)
    trained = resume is not None and (Path(resume) / FINAL_MODEL).is_file()
    start = _resume_point(Path(resume), config, allow_pickle) if resume is not None and not trained else None
    torch.set_num_threads(config.torch_threads)
    run_dir = _open_run_dir(config, resume)
    if progress:
        print(f"adaptflow: run directory {run_dir}", file=sys.stderr, flush=True)
    try:
        with _sigterm_as_interrupt():
            return _train_in(config, probe, run_dir, start, progress)
    except KeyboardInterrupt as exc:
        _write_status(run_dir, status="interrupted", signal=str(exc) or "SIGINT")
        exc.run_dir = run_dir  # type: ignore[attr-defined]  (for the command's resume hint)
        raise
    except Exception as exc:
        _write_status(run_dir, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise


def _train_in(config: TrainConfig, probe: gym.Env, run_dir: Path, start: ResumePoint | None, progress: bool) -> Run:
    """The work of :func:`train` once its run directory is open: training, unless a resumed run's
    training had ended (its final model exists), then the final evaluation."""
    if (run_dir / FINAL_MODEL).is_file():
        timesteps = _trained_steps(run_dir)
    else:
        analyzer = fitted_analyzer(probe)  # fitted once here; every env, checkpoint and sidecar reuses it
        seen = training_range(config, probe, analyzer, start.training_range if start is not None else None)
        model, venv, resumed = _build_model(config, run_dir, start, analyzer, seen)
        _learn(model, venv, config, run_dir, probe, (analyzer, seen), resumed, progress)
        timesteps = model.num_timesteps
    best = run_dir / "best_model.zip"
    result = _final_evaluation(config, run_dir, probe, best, progress) if config.evaluation.final_seeds > 0 else None
    _write_status(run_dir, status="finished", timesteps=timesteps, finished=datetime.now(UTC).isoformat())
    return Run(run_dir, config, best, timesteps, result)


FINAL_MODEL = "final_model.zip"
"""Saved once learning has ended, never before: a run that has it is trained."""


def _status(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _trained_steps(run_dir: Path) -> int:
    """A trained run's steps: those of its last validation, which learning's end always runs."""
    return int(pd.read_csv(run_dir / "validation.csv").timesteps.iloc[-1])


def _resolve_config(
    config: TrainConfig | str | Path | dict, overrides: list[str] | None, resume: str | Path | None
) -> tuple[TrainConfig, gym.Env]:
    """The run's config (a resumed run's own), checked, and a probe env built from it."""
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise ValueError(f"{str(run_dir)!r} is not a run directory (no config.yaml)")
        config = load_config(run_dir / "config.yaml", new_run=False)
    elif not isinstance(config, TrainConfig):
        config = load_config(config, overrides)
    return config, check_config(config)


@dataclass
class ResumePoint:
    """The newest complete checkpoint of a run (None: there is none yet, start afresh) and its
    VecNormalize statistics: a state from its sidecar, or a legacy pickle's path."""

    checkpoint: Path | None
    stats: dict[str, Any] | Path | None = None
    training_range: dict[str, Any] | None = None  # what training had seen by the checkpoint


PARTIAL_FILE = re.compile(r"\..+\.[a-z0-9_]{8}\.(tmp|zip)")
"""The hidden temporary files of :func:`atomic_write` (``.model_000000000796.zip.r99k5dnu.zip``):
what a run killed mid-write (SIGKILL, power loss) leaves behind."""


def remove_partial_files(run_dir: Path) -> list[Path]:
    """Delete what writes cut short left in ``run_dir``; returns the removed files."""
    removed = [f for f in run_dir.rglob(".*") if f.is_file() and PARTIAL_FILE.fullmatch(f.name)]
    for f in removed:
        f.unlink(missing_ok=True)
    return removed


def _resume_point(run_dir: Path, config: TrainConfig, allow_pickle: bool) -> ResumePoint:
    """The newest checkpoint whose model, sidecar and (if the run normalizes) statistics all
    exist. One whose statistics are missing is skipped, never resumed with fresh statistics;
    if checkpoints exist but none is complete, that is an error."""
    normalized = config.normalize_reward or config.normalize_observation
    skipped = []
    for path in sorted((run_dir / "checkpoints").glob("model_*.zip"), reverse=True):
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError):
            skipped.append(f"{path.name} (no readable sidecar)")
            continue
        legacy = path.with_suffix(".vecnormalize.pkl")
        if not normalized or STATS_KEY in meta:
            return ResumePoint(path, meta.get(STATS_KEY) if normalized else None, meta.get(RANGE_KEY))
        if legacy.is_file():
            if not allow_pickle:
                raise ValueError(
                    f"{legacy}: normalization statistics stored as a pickle (by an older adaptflow), and loading a "
                    "pickle can run code; resume with --allow-pickle only if you trust this run directory"
                )
            return ResumePoint(path, legacy, meta.get(RANGE_KEY))
        skipped.append(f"{path.name} (no normalization statistics)")
    if skipped:
        raise ValueError(f"{run_dir}: no complete checkpoint to resume from: {', '.join(skipped)}")
    return ResumePoint(None)


def _open_run_dir(config: TrainConfig, resume: str | Path | None) -> Path:
    """A new run directory with the resolved config and provenance, or the resumed one (rid of
    partial files), marked running."""
    if resume is not None:
        run_dir = Path(resume)
        removed = remove_partial_files(run_dir)
        _write_status(run_dir, status="running", resumed=datetime.now(UTC).isoformat(), removed_partial=len(removed))
        return run_dir
    run_dir = new_run_dir(config)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    _write_status(
        run_dir,
        command=" ".join(sys.argv),
        git_commit=_git_commit(),
        versions=package_versions(PACKAGES),
        started=datetime.now(UTC).isoformat(),
        status="running",
    )
    return run_dir


def _build_model(
    config: TrainConfig,
    run_dir: Path,
    start: ResumePoint | None,
    analyzer: dict[str, Any],
    seen: TrainingRange | None = None,
) -> tuple[Any, VecEnv, bool]:
    """The training envs (each given the fitted analyzer, so none refits it) and the model:
    fresh (warm-started if the config says so), or from the resume point's checkpoint with its
    statistics. Also returns whether it was resumed from a checkpoint. A warm start's states
    widen ``seen`` (the policy is trained on them)."""
    venv: VecEnv = make_vec_env(
        f"adaptflow.envs:{config.env.id}",
        n_envs=config.n_envs,
        seed=config.seed,
        env_kwargs={**config.env.options, "analyzer": analyzer},
        vec_env_cls=SubprocVecEnv if config.vec_env == "subproc" else DummyVecEnv,
    )
    algorithm = algorithm_class(config.algorithm)
    start = start or ResumePoint(None)
    if isinstance(start.stats, dict):
        venv = restore_vec_normalize(venv, start.stats)
    elif isinstance(start.stats, Path):
        venv = VecNormalize.load(str(start.stats), venv)  # an older run's pickle, allowed explicitly
    elif config.normalize_reward or config.normalize_observation:
        gamma = config.hyperparameters.get("gamma", 0.99)
        venv = VecNormalize(
            venv, norm_obs=config.normalize_observation, norm_reward=config.normalize_reward, gamma=gamma
        )
    tensorboard = str(run_dir / "tensorboard")
    if start.checkpoint is not None:
        return algorithm.load(start.checkpoint, env=venv, device="cpu", tensorboard_log=tensorboard), venv, True
    model = algorithm(
        config.policy_name, venv, seed=config.seed, device="cpu", verbose=0, tensorboard_log=tensorboard,
        **sb3_hyperparameters(config),
    )  # fmt: skip
    if config.warm_start is not None:  # behaviour cloning of a rule before RL
        nll = behaviour_clone(model, config, seen)
        _write_status(run_dir, warm_start={"planner": config.warm_start.planner, "final_nll": nll})
    return model, venv, False


def sb3_hyperparameters(config: TrainConfig) -> dict[str, Any]:
    """The config's hyperparameters as SB3 takes them: an activation function named in the
    config (``policy_kwargs.activation_fn: tanh``) becomes its torch class."""
    import torch

    hyperparameters = dict(config.hyperparameters)
    kwargs = hyperparameters.get("policy_kwargs") or {}
    if kwargs.get("activation_fn") is not None:
        hyperparameters["policy_kwargs"] = {
            **kwargs,
            "activation_fn": getattr(torch.nn, ACTIVATIONS[kwargs["activation_fn"]]),
        }
    return hyperparameters


def _learn(
    model: Any,
    venv: VecEnv,
    config: TrainConfig,
    run_dir: Path,
    probe: gym.Env,
    saved: tuple[dict[str, Any], TrainingRange],
    resumed: bool,
    progress: bool,
) -> None:
    """Learn, validating and checkpointing as we go (Ctrl-C leaves a resumable run), widening the
    training range with every rollout step; then save the final model, and the best one if no
    validation saved it. ``saved``: what every sidecar carries (the fitted analyzer, the range:
    a model saved mid-run carries the range as it was then, what that model was trained on)."""
    analyzer, seen = saved
    checkpoint = CheckpointCallback(run_dir, config, analyzer, seen)
    validation = ValidationCallback(run_dir, config, probe, seen)
    if config.warm_start is not None and model.num_timesteps == 0 and not validation.rows:
        validation.init_callback(model)
        validation.validate()  # the cloned policy is a candidate too, before RL changes it
    remaining = config.total_timesteps - model.num_timesteps
    bar = [TrainingProgress(steps_to_take(model, remaining))] if progress and remaining > 0 else []
    try:
        if remaining > 0:
            model.learn(
                remaining,
                callback=[StopOnSignal(), RangeCallback(seen), checkpoint, validation, *bar],
                reset_num_timesteps=not resumed,
                tb_log_name="run",
            )
        _raise_if_terminated()  # a signal whose exception was swallowed after the last step
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (see _sigterm_as_interrupt), even before learn() began
        checkpoint.model, checkpoint.num_timesteps = model, model.num_timesteps
        checkpoint.save()
        _write_status(run_dir, status="interrupted", timesteps=model.num_timesteps)
        venv.close()
        raise
    finally:
        for b in bar:  # also when learning stopped early (an interruption skips the bar's own end)
            b.close()
    venv.close()
    if not validation.rows or validation.rows[-1]["timesteps"] != model.num_timesteps:
        validation.validate()  # the final policy is a candidate too
    save_model(model, run_dir / FINAL_MODEL, config, analyzer, seen=seen)
    if not (run_dir / "best_model.zip").is_file():
        save_model(model, run_dir / "best_model.zip", config, analyzer, seen=seen)


def _final_evaluation(config: TrainConfig, run_dir: Path, probe: gym.Env, best: Path, progress: bool) -> Evaluation:
    """The best model against the baselines, on held-out evaluation seeds, with plots."""
    from .plots import plot_results

    inner = probe.unwrapped
    results = []
    for scenario in held_out(inner.scenarios, "test"):
        out = run_dir / "evaluation" if len(inner.scenarios) == 1 else run_dir / "evaluation" / scenario.name
        results.append(
            evaluate(
                scenario,
                [f"{config.algorithm.lower()}@sb3:{best}", *config.evaluation.baselines],
                seeds=config.evaluation.final_seeds,
                interval=inner.interval,
                weights=inner.cost_model.weights,
                out_dir=out,
                processes=config.evaluation.processes,
                progress=progress,
                part="test" if scenario.series_labels() else None,  # already chosen: recorded as such
            )
        )
        plot_results(out)
    return results[0]


def held_out(scenarios: list[Scenario], part: str) -> list[Scenario]:
    """The training workloads as validation (``part="validation"``) or final evaluation
    (``"test"``) sees them: series windows from that part of their time split, without the
    training augmentation; synthetic scenarios as they are (held-out seeds keep them apart)."""
    return [s.for_part(part, augment={}) for s in scenarios]
