"""Training runs from configs: end to end, bad configs, reproducibility, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from adaptflow.experiments.config import load_config
from adaptflow.experiments.training import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "train" / "tiny.yaml"


def test_tiny_config_trains_evaluates_plots_and_resumes(tmp_path):
    run = train(TINY, [f"output_dir={tmp_path}"])
    d = run.run_dir
    assert run.timesteps == 2048
    info = json.loads((d / "run.json").read_text())
    assert info["status"] == "finished" and info["versions"]["stable-baselines3"] and "command" in info
    assert yaml.safe_load((d / "config.yaml").read_text())["total_timesteps"] == 2048
    assert len(list((d / "checkpoints").glob("model_*.zip"))) == 2  # the two newest are kept
    validation = pd.read_csv(d / "validation.csv")
    assert list(validation.timesteps) == [1024, 2048]
    assert (d / "best_model.zip").is_file() and json.loads((d / "best_model.json").read_text())["algorithm"] == "PPO"
    assert list((d / "tensorboard").rglob("events.out.tfevents.*"))
    table = pd.read_parquet(d / "evaluation" / "results.parquet")
    assert list(table.planner.unique()) == ["ppo", "static", "erlang"] and table.seed.min() >= 1_000_000
    assert (d / "evaluation" / "plots" / "cost_vs_sla.png").is_file()
    assert not list(d.rglob("*.tmp"))  # no half-written file anywhere
    # Resuming a finished run trains no further and evaluates again.
    again = train(None, resume=d)
    assert again.timesteps == 2048 and again.run_dir == d


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["learning_rate=0.1"], "learning_rate: unknown key"),
        (["total_timesteps=lots"], "total_timesteps: Input should be a valid integer"),
        (["algorithm=SAC"], "algorithm: Input should be 'PPO', 'A2C', 'DQN' or 'RecurrentPPO'"),
        (["algorithm=DQN", "hyperparameters={}"], "DQN needs a Discrete action space"),
        (["hyperparameters.n_stepz=3"], "hyperparameters ['n_stepz'] are not parameters of PPO"),
        (["env.options.decision_interval=-5"], "decision_interval"),
        (["env.id=adaptflow/Fly-v0"], "env.id"),
        (["seed=1000001"], "seed: Input should be less than 1000000"),
        (["n_envs"], "is not key=value"),
    ],
)
def test_bad_configs_are_rejected_before_work_starts(overrides, message, tmp_path):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        train(TINY, [f"output_dir={tmp_path}", *overrides])
    assert not list(tmp_path.iterdir())  # nothing was written


def test_a_config_file_that_is_not_there():
    with pytest.raises(ValueError, match="does not exist"):
        load_config("configs/train/nope.yaml")


def test_seeded_runs_are_reproducible(tmp_path):
    overrides = [f"output_dir={tmp_path}", "total_timesteps=1024", "evaluation.final_seeds=0"]
    first = train(TINY, overrides)
    second = train(TINY, overrides)
    a = pd.read_csv(first.run_dir / "validation.csv")
    b = pd.read_csv(second.run_dir / "validation.csv")
    assert first.run_dir != second.run_dir
    assert a.cost.iloc[0] == b.cost.iloc[0]
    pd.testing.assert_frame_equal(a, b)


def test_a_killed_run_resumes_and_finishes(tmp_path):
    """SIGKILL (no chance to clean up) once a checkpoint exists; --resume continues from it."""
    cmd = [
        sys.executable,
        "-m",
        "adaptflow.cli",
        "train",
        str(TINY),
        f"output_dir={tmp_path}",
        "total_timesteps=8192",
        "checkpoint_every=1024",
        "evaluation.every=4096",
        "evaluation.final_seeds=0",
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        line = proc.stderr.readline()
        run_dir = Path(line.strip().split("run directory ", 1)[1])
        deadline = time.monotonic() + 120
        while not list((run_dir / "checkpoints").glob("model_*.zip")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list((run_dir / "checkpoints").glob("model_*.zip")), "no checkpoint within 2 minutes"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # died mid-run
    resumed_from = max(int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("model_*.zip"))
    assert 0 < resumed_from < 8192
    run = train(None, resume=run_dir)
    assert run.timesteps == 8192
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    assert (run_dir / "final_model.zip").is_file()


SWEEP_FAST = [
    "total_timesteps=512",
    "evaluation.every=512",
    "evaluation.final_seeds=0",
    "checkpoint_every=512",
    "hyperparameters.n_steps=128",
]


def test_sweep_runs_every_combination_and_seed(tmp_path):
    from adaptflow.experiments.sweep import summarize_sweep, sweep

    table = sweep(
        TINY,
        seeds=2,
        grid={"hyperparameters.learning_rate": [0.0003, 0.001]},
        overrides=[f"output_dir={tmp_path}", *SWEEP_FAST],
        processes=2,
    )
    assert len(table) == 4 and sorted(table.seed.unique()) == [0, 1]
    assert all(Path(p, "best_model.zip").is_file() for p in table.run_dir)
    summary = summarize_sweep(table, ["hyperparameters.learning_rate"])
    assert len(summary) == 2
    assert Path(table.attrs["out_dir"], "sweep.csv").is_file()


def test_sweep_rejects_a_bad_trial_before_running_any(tmp_path):
    from adaptflow.experiments.sweep import sweep

    with pytest.raises(ValueError, match="n_envs"):
        sweep(TINY, seeds=1, grid={"n_envs": [2, 0]}, overrides=[f"output_dir={tmp_path}"])
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="backend"):
        sweep(TINY, seeds=1, backend="slurm")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sweep_on_a_local_ray_cluster(tmp_path):
    """A Ray head node started here on loopback, then the sweep connects to it by address."""
    import shutil

    from adaptflow.experiments.sweep import sweep

    ray_cli = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = subprocess.run(
        [
            ray_cli,
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        table = sweep(
            TINY, seeds=2, overrides=[f"output_dir={tmp_path}", *SWEEP_FAST], backend="ray", address=f"127.0.0.1:{port}"
        )
        assert len(table) == 2 and all(Path(p, "validation.csv").is_file() for p in table.run_dir)
    finally:
        import ray

        ray.shutdown()
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120, env=env)


def test_reward_normalization_is_saved_with_checkpoints_and_resumed(tmp_path):
    run = train(
        TINY, [f"output_dir={tmp_path}", "normalize_reward=true", "total_timesteps=1024", "evaluation.final_seeds=0"]
    )
    stats = sorted((run.run_dir / "checkpoints").glob("*.vecnormalize.pkl"))
    assert len(stats) == 2  # beside each of the two kept checkpoints
    again = train(None, resume=run.run_dir)
    assert again.timesteps == 1024


def test_warm_start_clones_the_teacher_and_validates_it_first(tmp_path):
    """Behaviour cloning of the predictive planner with level actions: the cloned policy is
    validated at step 0 (so it can be the best model) and costs about what its teacher does."""
    from adaptflow.experiments.evaluation import run_episode
    from adaptflow.experiments.planners import make_planner
    from adaptflow.scenario import load_scenario

    run = train(
        TINY,
        [
            f"output_dir={tmp_path}",
            "env.options.action_mode=level",
            "env.options.worker_levels=24",
            "warm_start.planner=predictive",
            "warm_start.steps=1800",
            "warm_start.epochs=40",
            "total_timesteps=512",
            "hyperparameters.n_steps=128",
            "evaluation.final_seeds=0",
        ],
    )
    info = json.loads((run.run_dir / "run.json").read_text())
    assert info["warm_start"]["planner"] == "predictive" and info["warm_start"]["final_nll"] < 1.5
    validation = pd.read_csv(run.run_dir / "validation.csv")
    assert validation.timesteps.iloc[0] == 0
    scenario = load_scenario("etl_diurnal", horizon=1800)
    teacher = run_episode(
        scenario, make_planner("predictive", scenario, 30.0)[0], seed=900_000, forecaster="holt_winters"
    )["cost"]
    assert validation.cost.iloc[0] < 1.25 * teacher


def test_warm_start_config_errors():
    with pytest.raises(ValueError, match=r"warm_start\.planner: a rule"):
        load_config(TINY, ["warm_start.planner=sb3:x.zip"])
    with pytest.raises(ValueError, match="unknown planner 'hpa'"):
        load_config(TINY, ["warm_start.planner=hpa"])


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "train").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_training_config_is_valid(path):
    from adaptflow.experiments.planners import parse_planner
    from adaptflow.experiments.training import check_config

    config = load_config(path)
    check_config(config)
    for spec in config.evaluation.baselines:
        parse_planner(spec)
