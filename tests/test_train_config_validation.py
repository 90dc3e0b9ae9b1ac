"""Training configs a careless or hostile user writes: every one is refused by ``adaptflow
train`` before anything is written, with exit 2, one line per problem naming the field, the
value and what was expected, and no traceback (issue 13)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptflow.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "train" / "tiny.yaml"


def _config(tmp_path: Path, **changes: object) -> tuple[Path, Path]:
    """tiny.yaml with dotted ``changes`` (``hyperparameters__n_steps`` is hyperparameters.n_steps),
    its output directory an empty folder under ``tmp_path``; returns the file and that folder."""
    out = tmp_path / "runs"
    out.mkdir()
    data = yaml.safe_load(TINY.read_text())
    data["output_dir"] = str(out)
    for key, value in changes.items():
        node = data
        *parents, last = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, out


CASES = [
    (
        {"hyperparameters__learning_rate": "abc"},
        "hyperparameters.learning_rate: Input should be a valid number",
        "'abc'",
    ),
    ({"hyperparameters__n_steps": 0}, "hyperparameters.n_steps: Input should be greater than or equal to 1", "(got 0)"),
    ({"hyperparameters__n_steps": 1.5}, "hyperparameters.n_steps: Input should be a valid integer", "(got 1.5)"),
    ({"hyperparameters__batch_size": 0}, "hyperparameters.batch_size: Input should be greater than or equal to 1", "0"),
    ({"hyperparameters__n_epochs": 0}, "hyperparameters.n_epochs: Input should be greater than or equal to 1", "0"),
    ({"hyperparameters__clip_range": "x"}, "hyperparameters.clip_range: Input should be a valid number", "'x'"),
    (
        {"hyperparameters__policy_kwargs": "junk"},
        "hyperparameters.policy_kwargs: Input should be a valid dict",
        "'junk'",
    ),
    ({"hyperparameters__policy_kwargs": {"net_arch": [64], "nope": 1}}, "policy_kwargs.nope: unknown key", "'nope'"),
    (
        {"hyperparameters__policy_kwargs": {"net_arch": [64, 0]}},
        "policy_kwargs.net_arch: expected layer sizes",
        "[64, 0]",
    ),
    ({"policy": "CnnPolicy"}, "policy: 'CnnPolicy' does not fit PPO", "expected 'MlpPolicy'"),
    ({"hyperparameters__gamma": 2}, "hyperparameters.gamma: Input should be less than or equal to 1", "(got 2)"),
    ({"hyperparameters__gamma": True}, "hyperparameters.gamma: expected a number, not a boolean", "True"),
    ({"hyperparameters__batch_size": 100000}, "hyperparameters.batch_size: 100000 is more than the rollout", "256"),
    ({"hyperparameters__n_steps": 10**12}, "hyperparameters.n_steps: Input should be less than or equal to", "1000000"),
    ({"hyperparameters__n_steps": 600000}, "n_steps * n_envs = 600000 * 2 = 1,200,000", "expected at most 1,000,000"),
    ({"hyperparameters__learning_rate": float("nan")}, "hyperparameters.learning_rate: Input should be", "nan"),
    ({"hyperparameters__n_stepz": 3}, "hyperparameters: ['n_stepz'] are not hyperparameters of PPO", "n_epochs"),
    ({"hyperparameters__n_steps": 1, "n_envs": 1, "hyperparameters__batch_size": 1}, "n_steps * n_envs = 1", "more"),
    (
        {"evaluation__baselines": ["static", "nope"]},
        "evaluation.baselines: [1] 'nope': unknown planner 'nope'",
        "static",
    ),
    ({"evaluation__baselines": ["sb3:missing.zip"]}, "evaluation.baselines: [0] 'sb3:missing.zip'", "does not exist"),
    ({"evaluation__baselines": ["quality"]}, "evaluation.baselines: [0] 'quality'", "controllable split"),
    ({"output_dir": "/dev/null"}, "output_dir: '/dev/null' is not a directory", "expected a directory"),
    ({"output_dir": "/dev/null/runs"}, "output_dir: '/dev/null/runs' cannot be created", "'/dev/null'"),
    ({"output_dir": ""}, "output_dir: String should have at least 1 character", "''"),
    ({"warm_start": {"planner": "nope"}}, "warm_start.planner: unknown planner 'nope'", "predictive"),
    ({"evaluation__episodes": 10**12}, "evaluation.episodes: Input should be less than or equal to 1000", "10000"),
    ({"evaluation__processes": 0}, "evaluation.processes: Input should be greater than or equal to 1", "0"),
    ({"env__options__horizon": 1e9}, "env.options.horizon: about 5,999,458,880 arrivals per episode", "at most"),
    ({"env__options__horizon": 1e12}, "horizon: Input should be less than or equal to 1000000000", "1000000000000.0"),
    ({"name": ".."}, "name: '..' is not a folder name", "expected"),
    ({"name": "a/b"}, "name: String should match pattern", "'a/b'"),
    ({"name": ""}, "name: String should match pattern", "''"),
]


@pytest.mark.parametrize(("changes", "field", "detail"), CASES, ids=[str(c[0]) for c in CASES])
def test_a_bad_training_config_is_one_clear_line_and_writes_nothing(tmp_path, capsys, changes, field, detail):
    path, out = _config(tmp_path, **changes)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("adaptflow: error: ")
    problem = next((line for line in err.splitlines() if field in line), None)
    assert problem is not None, err
    assert detail in problem, problem
    assert not list(out.iterdir())  # no run directory
    assert not Path("/dev/null").is_dir()


def test_every_problem_of_a_config_is_reported_at_once(tmp_path, capsys):
    path, out = _config(tmp_path, hyperparameters__n_steps=0, hyperparameters__gamma=2, n_envs=0, name="..")
    assert main(["train", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"adaptflow: error: {path}: invalid training config"
    fields = sorted(line.split(":")[0].strip() for line in lines[1:])
    assert fields == ["hyperparameters.gamma", "hyperparameters.n_steps", "n_envs", "name"]
    assert not list(out.iterdir())


def test_a_yaml_tag_that_would_run_code_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/name:os.system\ntotal_timesteps: 10\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{path}: not valid YAML" in err and "python/name:os.system" in err and "line 1" in err


def test_a_duplicated_key_is_refused_not_overwritten(tmp_path, capsys):
    path, out = _config(tmp_path)
    path.write_text(path.read_text() + "seed: 3\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: not valid YAML" in err and "duplicate key 'seed'" in err
    assert not list(out.iterdir())


def test_a_file_that_is_not_text_is_named(tmp_path, capsys):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00n\x00a")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: not a UTF-8 text file" in err


def test_an_override_that_is_not_yaml_is_named(tmp_path, capsys):
    path, out = _config(tmp_path)
    assert main(["train", str(path), "hyperparameters.policy_kwargs={net_arch: [64"]) == 2
    err = capsys.readouterr().err
    assert "override 'hyperparameters.policy_kwargs={net_arch: [64': not valid YAML" in err
    assert not list(out.iterdir())


def test_valid_hyperparameters_are_kept_as_given_and_converted():
    from adaptflow.experiments.config import load_config

    config = load_config(
        TINY,
        ["hyperparameters.learning_rate=1e-4", "hyperparameters.policy_kwargs={net_arch: [32], activation_fn: tanh}"],
    )
    assert config.hyperparameters["learning_rate"] == 1e-4  # YAML 1.1 reads 1e-4 as a string
    assert config.hyperparameters["policy_kwargs"] == {"net_arch": [32], "activation_fn": "tanh"}
    assert set(config.hyperparameters) == {"learning_rate", "n_steps", "batch_size", "n_epochs", "policy_kwargs"}


def test_the_hyperparameter_table_covers_every_algorithm_with_its_sb3_parameters():
    import inspect

    from adaptflow.experiments.config import HYPERPARAMETERS, POLICIES
    from adaptflow.policies.sb3 import ALGORITHMS, algorithm_class

    assert set(HYPERPARAMETERS) == set(ALGORITHMS) == set(POLICIES)
    for name, table in HYPERPARAMETERS.items():
        cls = algorithm_class(name)
        parameters = inspect.signature(cls.__init__).parameters
        assert set(table.model_fields) <= set(parameters), name
        for field, info in table.model_fields.items():
            if field != "policy_kwargs":
                assert info.default == parameters[field].default, (name, field)
        assert POLICIES[name] in cls.policy_aliases


@pytest.mark.parametrize(("key", "value"), [("seed", True), ("total_timesteps", True), ("n_envs", 2.5)])
def test_booleans_and_fractions_are_not_counts(tmp_path, capsys, key, value):
    path, out = _config(tmp_path, **{key: value})
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"\n  {key}: " in err and "Traceback" not in err
    assert not list(out.iterdir())


HOSTILE = [0, -1, 1, 2, 1.5, True, None, "abc", "", [], {}, [1, 2], {"a": 1}, 1e308, float("nan"), 10**12, "../x"]
BENIGN = [0.5, 0.01, 4, 64, 128, "MlpPolicy", "A2C", "tiny2", ["static"], {"net_arch": [16]}, False]
FIELDS = [
    "hyperparameters.n_steps",
    "hyperparameters.batch_size",
    "hyperparameters.n_epochs",
    "hyperparameters.learning_rate",
    "hyperparameters.gamma",
    "hyperparameters.clip_range",
    "hyperparameters.gae_lambda",
    "hyperparameters.ent_coef",
    "hyperparameters.policy_kwargs",
    "hyperparameters.target_kl",
    "policy",
    "algorithm",
    "n_envs",
    "name",
    "seed",
    "output_dir",
    "normalize_reward",
    "evaluation.baselines",
    "evaluation.episodes",
    "evaluation.final_seeds",
    "evaluation.processes",
    "warm_start.steps",
    "env.options.decision_interval",
    "env.options.horizon",
]
TALLY = {"mutants": 0, "clear errors": 0, "valid runs": 0}


@pytest.mark.slow  # make test-slow: keeps make test under 8 minutes on 2 cores
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(HOSTILE + BENIGN), min_size=1, max_size=2))
def test_every_mutant_of_a_training_config_errs_clearly_or_trains(changes, tmp_path_factory):
    """A standing guard: a mutant of tiny.yaml is refused with one clear error before anything
    is written, or is a valid run that trains one rollout and finishes (never a traceback, a run
    left "running", or files written for a refused config)."""
    tmp = tmp_path_factory.mktemp("mutant")
    path, _ = _config(tmp, **{key.replace(".", "__"): value for key, value in changes.items()})
    data = yaml.safe_load(path.read_text())
    cwd = tmp / "work" / "deep"  # a relative output_dir ("../x", "abc") lands in here, not in the repository
    cwd.mkdir(parents=True)
    before = set(tmp.rglob("*"))
    TALLY["mutants"] += 1
    budget = ["evaluation.final_seeds=0", "evaluation.every=100000", "checkpoint_every=100000", "total_timesteps=1"]
    err = io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", str(path), *budget])
    text = err.getvalue()
    if code == 2:
        assert "Traceback" not in text and text.startswith("adaptflow: error: "), text
        assert set(tmp.rglob("*")) == before  # nothing written
        TALLY["clear errors"] += 1
        return
    assert code == 0, text
    (run_json,) = (cwd / str(data["output_dir"])).glob(f"{data['name']}/*/run.json")
    assert json.loads(run_json.read_text())["status"] == "finished"
    TALLY["valid runs"] += 1


def test_the_training_guard_tried_both_outcomes():
    """Runs after the guard (file order): it exercised errors and valid runs alike."""
    print(f"hostile training configs: {TALLY}")
    if TALLY["mutants"]:
        assert TALLY["clear errors"] > 0
