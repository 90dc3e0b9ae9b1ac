"""Training runs from configs: end to end, bad configs, reproducibility, kill and resume."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
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
    for sidecar in [d / "best_model.json", d / "final_model.json", *(d / "checkpoints").glob("model_*.json")]:
        analyzer = json.loads(sidecar.read_text())["fitted_analyzer"]  # loaded, never refitted, by whoever runs it
        assert analyzer["forecaster"] == "ewma" and set(analyzer["forecasters"]) == {"events"}
    assert list((d / "tensorboard").rglob("events.out.tfevents.*"))
    table = pd.read_parquet(d / "evaluation" / "results.parquet")
    assert list(table.planner.unique()) == ["ppo", "static", "erlang"] and table.seed.min() >= 1_000_000
    assert (d / "evaluation" / "plots" / "cost_vs_sla.png").is_file()
    assert not list(d.rglob("*.tmp"))  # no half-written file anywhere
    # Resuming a finished run trains no further and does nothing (issue 15; see
    # test_train_command_bar_tables_file_modes_and_resuming_a_finished_run).
    again = train(None, resume=d)
    assert again.timesteps == 2048 and again.run_dir == d


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["learning_rate=0.1"], "learning_rate: unknown key"),
        (["total_timesteps=lots"], "total_timesteps: Input should be a valid integer"),
        (["algorithm=SAC"], "algorithm: Input should be 'PPO', 'A2C', 'DQN' or 'RecurrentPPO'"),
        (["algorithm=DQN", "hyperparameters={}"], "DQN needs a Discrete action space"),
        (["hyperparameters.n_stepz=3"], "hyperparameters: ['n_stepz'] are not hyperparameters of PPO"),
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
        "total_timesteps=2048",
        "checkpoint_every=512",
        "evaluation.every=1024",
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
    assert 0 < resumed_from < 2048
    run = train(None, resume=run_dir)
    assert run.timesteps == 2048
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    assert (run_dir / "final_model.zip").is_file()
    # the training range went on from the checkpoint's: every observation of all 2048 steps
    assert json.loads((run_dir / "final_model.json").read_text())["training_range"]["observation"]["samples"] == 2048
    from adaptflow.experiments.training import PARTIAL_FILE

    assert not [f for f in run_dir.rglob(".*") if PARTIAL_FILE.fullmatch(f.name)]  # none left, whatever the kill cut


def test_a_signal_during_a_models_write_is_held_until_the_model_is_written():
    """Ctrl-C or SIGTERM arriving while a model is written (``save_model``'s ``_signals_held``)
    is handled once the write is done, as it would have been (KeyboardInterrupt, Terminated), not
    inside ``torch.save``, whose broken zip writer then raised RuntimeError in its place (a
    SIGTERM'd run once exited 1 without its "interrupted" status); the handlers are restored."""
    from adaptflow.experiments.training import Terminated, _signals_held, _sigterm_as_interrupt

    written = []
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for sig, raised in ((signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)):
            with _sigterm_as_interrupt():
                handler = signal.getsignal(sig)
                with pytest.raises(raised), _signals_held():
                    os.kill(os.getpid(), sig)
                    time.sleep(0.05)  # a handler that raises would have raised here
                    written.append(sig.name)
                # restored, and run: training's SIGTERM handler ignores a second SIGTERM once called
                assert signal.getsignal(sig) is (handler if sig == signal.SIGINT else signal.SIG_IGN)
        assert written == ["SIGINT", "SIGTERM"]
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [
        (signal.SIGTERM, 143, "terminated"),
        pytest.param(signal.SIGINT, 130, "interrupted", marks=pytest.mark.slow),  # the same path as SIGTERM
    ],
)
def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path, sig, code, word):
    """SIGTERM (a service manager, a scheduler, ``kill``) like Ctrl-C: a final checkpoint at the
    step it stopped, with its normalization statistics, status "interrupted", and a run that
    --resume finishes."""
    cmd = [
        sys.executable,
        "-m",
        "adaptflow.cli",
        "train",
        str(TINY),
        f"output_dir={tmp_path}",
        "total_timesteps=2048",
        "checkpoint_every=512",
        "evaluation.every=1024",
        "evaluation.final_seeds=0",
        "normalize_observation=true",
    ]

    def default_signals() -> None:  # a background job may inherit SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT, preexec_fn=default_signals
    )
    try:
        run_dir = Path(proc.stderr.readline().strip().split("run directory ", 1)[1])
        deadline = time.monotonic() + 120
        while not list((run_dir / "checkpoints").glob("model_*.json")) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == code
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert f"adaptflow: {word}; continue with: adaptflow train --resume {run_dir}" in proc.stderr.read()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted" and info["signal"] == sig.name
    newest = max((run_dir / "checkpoints").glob("model_*.zip"))
    assert int(newest.stem.split("_")[1]) == info["timesteps"] < 2048  # the final checkpoint, where it stopped
    assert "vec_normalize" in json.loads(newest.with_suffix(".json").read_text())
    run = train(None, resume=run_dir)
    assert 2048 <= run.timesteps < 2048 + 256  # stopped mid-rollout: whole rollouts from there on
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed one, on purpose
def test_a_sigterm_whose_exception_python_swallowed_still_stops_the_run(tmp_path, monkeypatch):
    """A signal handled while the main thread runs a ``__del__`` raises there, and Python only
    prints "Exception ignored": the run must stop at its next step all the same."""
    from adaptflow.experiments import training

    class SignalsOnDelete:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # handled at once, inside __del__: swallowed

    on_step = training.RangeCallback._on_step

    def on_step_that_signals(self) -> bool:
        if self.num_timesteps == 512:
            SignalsOnDelete()
        return on_step(self)

    monkeypatch.setattr(training.RangeCallback, "_on_step", on_step_that_signals)
    with pytest.raises(training.Terminated):
        train(TINY, [f"output_dir={tmp_path}", "evaluation.final_seeds=0"])
    info = json.loads(next(tmp_path.rglob("run.json")).read_text())
    assert info["status"] == "interrupted" and info["signal"] == "SIGTERM" and 512 <= info["timesteps"] < 2048
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back


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
    with pytest.raises(ValueError, match=r"(?s)env.options: .*decision_interval"):
        sweep(TINY, seeds=1, grid={"env.options.decision_interval": [30, -1]}, overrides=[f"output_dir={tmp_path}"])
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="backend"):
        sweep(TINY, seeds=1, backend="slurm")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # make test-slow: keeps make test under 8 minutes on 2 cores
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


def _as_if_killed(run_dir: Path) -> None:
    """Make a finished run look like one killed (SIGKILL) after its last checkpoint: status
    "running" and no final model. Resuming a finished run does nothing (issue 15), so the resume
    tests that start from a finished run make it look killed first."""
    (run_dir / "final_model.zip").unlink()
    (run_dir / "final_model.json").unlink()
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "running"}))


def _normalized_run(tmp_path: Path) -> Path:
    run = train(
        TINY,
        [
            f"output_dir={tmp_path}",
            "normalize_reward=true",
            "normalize_observation=true",
            "total_timesteps=1024",
            "evaluation.final_seeds=0",
        ],
    )
    return run.run_dir


def test_normalization_statistics_are_json_in_each_checkpoint_and_resumed(tmp_path):
    """VecNormalize's statistics live in each checkpoint's sidecar as JSON (no pickle anywhere),
    and a resumed run restores exactly them."""
    from adaptflow.experiments.training import _build_model, _resume_point, load_config

    d = _normalized_run(tmp_path)
    checkpoints = sorted((d / "checkpoints").glob("model_*.zip"))
    assert len(checkpoints) == 2 and not list(d.rglob("*.pkl"))
    state = json.loads(checkpoints[-1].with_suffix(".json").read_text())["vec_normalize"]
    assert state["norm_obs"] and state["norm_reward"] and state["obs_rms"]["count"] > 1000
    config = load_config(d / "config.yaml", new_run=False)
    _, venv, resumed = _build_model(config, d, _resume_point(d, config, False), {})
    assert resumed and venv.obs_rms.count == state["obs_rms"]["count"]
    assert venv.obs_rms.mean.tolist() == state["obs_rms"]["mean"] and venv.ret_rms.var == state["ret_rms"]["var"]
    venv.close()
    again = train(None, resume=d)
    assert again.timesteps == 1024


def test_a_checkpoint_writes_its_model_last_and_prunes_a_killed_saves_lone_sidecar(tmp_path):
    """The model's file is a checkpoint's commit: a save cut short after the sidecar leaves no
    model (so no checkpoint a resume could find half-written), and the next save prunes the lone
    sidecar with the checkpoints older than the newest two."""
    from adaptflow.experiments.training import CheckpointCallback, _build_model, _resume_point, load_config

    d = _normalized_run(tmp_path)
    config = load_config(d / "config.yaml", new_run=False)
    model, venv, _ = _build_model(config, d, _resume_point(d, config, False), {})
    callback = CheckpointCallback(d, config)
    callback.init_callback(model)
    callback.num_timesteps = 4096  # as SB3 sets it each step

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    save = model.save
    model.save = killed
    with pytest.raises(KeyboardInterrupt):
        callback.save()
    assert (d / "checkpoints" / "model_000000004096.json").is_file()
    assert not (d / "checkpoints" / "model_000000004096.zip").exists()
    assert _resume_point(d, config, False).checkpoint.name == "model_000000001024.zip"
    model.save, callback.num_timesteps = save, 5120
    callback.save()
    venv.close()
    names = sorted(p.name for p in (d / "checkpoints").iterdir() if not p.name.startswith("."))
    assert names == [f"model_{n:012d}.{ext}" for n in (1024, 5120) for ext in ("json", "zip")]


def test_resume_skips_incomplete_checkpoints_and_removes_partial_files(tmp_path):
    """What SIGKILL leaves: hidden temporary files of atomic writes, and a newest model whose
    sidecar (with its statistics) was never written. Resume removes the first and resumes from
    the newest complete checkpoint; with no complete one, it is an error, never fresh statistics."""
    d = _normalized_run(tmp_path)
    partial = [
        d / "checkpoints" / ".model_000000000796.zip.r99k5dnu.zip",
        d / "checkpoints" / ".model_000000000796.json.ab12cd_9.tmp",
        d / ".run.json.x1y2z3w4.tmp",
        d / ".best_model.zip.abcdefgh.zip",
    ]
    for f in partial:
        f.write_bytes(b"partial")
    (d / "checkpoints" / "model_000000099999.zip").write_bytes(b"cut short")  # no sidecar: incomplete
    _as_if_killed(d)
    run = train(None, resume=d)
    assert run.timesteps == 1024  # from model_1024, not the broken newer one
    assert not any(f.exists() for f in partial)
    assert json.loads((d / "run.json").read_text())["removed_partial"] == 4
    for sidecar in (d / "checkpoints").glob("model_*.json"):
        meta = json.loads(sidecar.read_text())
        del meta["vec_normalize"]
        sidecar.write_text(json.dumps(meta))
    _as_if_killed(d)
    with pytest.raises(ValueError, match=r"no complete checkpoint to resume from: .*no normalization statistics"):
        train(None, resume=d)


def test_a_run_with_pickled_statistics_resumes_only_with_allow_pickle(tmp_path, capsys):
    """An older adaptflow saved VecNormalize with pickle: refused unless --allow-pickle."""
    from adaptflow.cli import main
    from adaptflow.experiments.training import restore_vec_normalize

    d = _normalized_run(tmp_path)
    for model in (d / "checkpoints").glob("model_*.zip"):
        meta = json.loads(model.with_suffix(".json").read_text())
        venv = restore_vec_normalize(_dummy_venv(), meta.pop("vec_normalize"))
        venv.save(str(model.with_suffix(".vecnormalize.pkl")))
        model.with_suffix(".json").write_text(json.dumps(meta))
    _as_if_killed(d)
    assert main(["train", "--resume", str(d)]) == 2
    err = capsys.readouterr().err
    assert "normalization statistics stored as a pickle" in err and "--allow-pickle" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert main(["train", "--resume", str(d), "--allow-pickle"]) == 0
    assert json.loads((d / "run.json").read_text())["status"] == "finished"


def _dummy_venv():
    from stable_baselines3.common.env_util import make_vec_env

    from adaptflow.experiments.config import load_config

    options = load_config(TINY).env.options
    return make_vec_env("adaptflow.envs:adaptflow/Autoscale-v0", n_envs=2, env_kwargs=options)


def test_warm_start_clones_the_teacher_and_validates_it_first(tmp_path):
    """Behaviour cloning of the predictive planner with level actions: the cloned policy is
    validated at step 0 (so it can be the best model) and costs about what its teacher does."""
    from adaptflow.experiments.evaluation import run_episode
    from adaptflow.policies.registry import make_planner
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
    from adaptflow.experiments.training import check_config
    from adaptflow.policies.registry import parse_planner

    config = load_config(path)
    check_config(config)
    for spec in config.evaluation.baselines:
        parse_planner(spec)


def test_a_run_that_fails_after_it_started_says_so(tmp_path):
    """A fault no check can foresee (here a baseline model file that is not a model, found only
    when the final evaluation loads it) leaves run.json "failed" with the error, not "running"."""
    bogus = tmp_path / "bogus.zip"
    bogus.write_bytes(b"not a model")
    overrides = [f"output_dir={tmp_path}", "total_timesteps=512", "evaluation.final_seeds=1"]
    with pytest.raises(ValueError, match="not a loadable"):
        train(TINY, [*overrides, f"evaluation.baselines=[static, 'sb3:{bogus}']"])
    (run_json,) = tmp_path.glob("tiny/*/run.json")
    info = json.loads(run_json.read_text())
    assert info["status"] == "failed" and "not a loadable" in info["error"]


def test_policy_kwargs_from_a_config_reach_the_network(tmp_path):
    """``activation_fn`` is named in YAML (no class can be) and becomes the torch class."""
    import torch

    from adaptflow.policies.sb3 import algorithm_class

    run = train(
        TINY,
        [
            f"output_dir={tmp_path}",
            "total_timesteps=256",
            "evaluation.final_seeds=0",
            "hyperparameters.policy_kwargs={net_arch: {pi: [16], vf: [8]}, activation_fn: tanh}",
        ],
    )
    model = algorithm_class("PPO").load(run.best_model, device="cpu")
    layers = list(model.policy.mlp_extractor.policy_net) + list(model.policy.mlp_extractor.value_net)
    assert [m.out_features for m in layers if isinstance(m, torch.nn.Linear)] == [16, 8]
    assert any(isinstance(m, torch.nn.Tanh) for m in layers)


def test_reward_only_normalization_statistics_round_trip() -> None:
    """A checkpoint of a run that normalizes rewards only (SB3 keeps no observation statistics
    then) saves and restores: the checkpoint of ppo_real crashed on the missing obs_rms."""
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from adaptflow.experiments.training import restore_vec_normalize, vec_normalize_state

    venv = VecNormalize(DummyVecEnv([lambda: gym.make("CartPole-v1")]), norm_obs=False, norm_reward=True)
    venv.ret_rms.mean, venv.ret_rms.count = 3.5, 42.0
    state = vec_normalize_state(venv)
    assert "obs_rms" not in state
    restored = restore_vec_normalize(DummyVecEnv([lambda: gym.make("CartPole-v1")]), state)
    assert restored.ret_rms.mean == 3.5 and restored.ret_rms.count == 42.0 and not restored.norm_obs


# --- Progress bar, tables, file modes and resuming a finished run (issue 15) ---


def test_the_progress_bar_total_is_the_steps_sb3_takes():
    """SB3 stops between whole rollouts, past the steps asked for; the bar's total is those steps."""
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.env_util import make_vec_env

    from adaptflow.experiments.training import TrainingProgress, steps_to_take

    ppo = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), n_steps=64, batch_size=64, n_epochs=1, seed=0)
    dqn = DQN("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1, seed=0), train_freq=4, learning_starts=0, seed=0)
    for model, asked, rounded in [(ppo, 300, 384), (dqn, 10, 12)]:
        assert steps_to_take(model, asked) == rounded  # predicted: the bar's total from its start
        bar = TrainingProgress(steps_to_take(model, asked))
        model.learn(asked, callback=bar)
        assert model.num_timesteps == bar.completed == bar.total == rounded


def test_train_command_bar_tables_file_modes_and_resuming_a_finished_run(tmp_path, capsys):
    """The bar ends at its total (768/768, not 768/600), the tables are formatted, every file has
    the usual mode, and ``--resume`` of the finished run says so and changes nothing."""
    from adaptflow._io import current_umask
    from adaptflow.cli import main

    # The process's own umask, not one set here: evaluation's workers fork from a forkserver that
    # an earlier test may have started, and they keep the umask it had (test_cli sets others).
    usual = 0o666 & ~current_umask()
    assert main(["train", str(TINY), f"output_dir={tmp_path}", "total_timesteps=600"]) == 0
    captured = capsys.readouterr()
    assert "768/768 steps" in captured.err and "/600" not in captured.err
    assert "etl_diurnal: 2 held-out seeds (mean, 95% bootstrap CI)" in captured.out and "Wilcoxon p" in captured.out
    tables = captured.out.split("\n", 1)[1]  # below the "run <dir>" line, whose timestamp has a fraction
    assert not re.search(r"\d\.\d{4,}", tables), tables  # no raw pandas float
    (run_dir,) = (tmp_path / "tiny").iterdir()
    files = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {usual}  # not mkstemp's 0o600
    assert main(["train", "--resume", str(run_dir)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"run {run_dir} has finished (768 steps): nothing to resume, nothing done" in out
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == files


@pytest.mark.slow  # 16 s; resuming a killed run and a stopped one stay in make test
def test_a_run_cut_short_in_its_final_evaluation_resumes_with_that_evaluation_only(tmp_path):
    """Training had ended (final_model.zip exists), the final evaluation had not: resuming runs
    the evaluation and never retrains from an older checkpoint (which overwrote the final model)."""
    run = train(TINY, [f"output_dir={tmp_path}", "total_timesteps=600", "evaluation.final_seeds=1"])
    d = run.run_dir
    shutil.rmtree(d / "evaluation")  # as an interruption during the final evaluation leaves it
    info = json.loads((d / "run.json").read_text())
    (d / "run.json").write_text(json.dumps({**info, "status": "interrupted", "signal": "SIGINT"}))
    kept = {name: (d / name).stat().st_mtime_ns for name in ("final_model.zip", "best_model.zip", "validation.csv")}
    again = train(None, resume=d)
    assert {name: (d / name).stat().st_mtime_ns for name in kept} == kept
    assert list(pd.read_csv(d / "validation.csv").timesteps) == [768]
    assert again.timesteps == 768 and not again.already_finished
    assert (d / "evaluation" / "summary.csv").is_file() and again.evaluation is not None
    assert json.loads((d / "run.json").read_text())["status"] == "finished"


def test_the_final_evaluation_of_a_series_workload_says_it_ran_on_the_test_part(tmp_path):
    """Training saw the training part of the series; its final evaluation the test part, and its
    evaluation.json (what the plots' titles read) says so."""
    overrides = [f"output_dir={tmp_path}", "env.options.scenario=etl_azure", "total_timesteps=256"]
    overrides += ["evaluation.every=256", "evaluation.final_seeds=1", "checkpoint_every=256"]
    run = train(TINY, overrides)
    assert json.loads((run.run_dir / "evaluation" / "evaluation.json").read_text())["part"] == "test"
