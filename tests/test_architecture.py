"""The rooms of docs/architecture.md hold: the import contracts pass, the light entry points stay
light, and the pieces said to exist once do."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_import_contracts_hold() -> None:
    """``lint-imports`` (as ``make lint`` runs it): a back-edge between rooms fails here too."""
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--no-logo", "--no-cache"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and "0 broken" in out.stdout, out.stdout + out.stderr


def test_import_adaptflow_is_light_and_the_envs_register_on_their_own_import() -> None:
    loaded = run_python(
        "import sys, adaptflow, adaptflow.agents, adaptflow.policies\n"
        "print(sorted(m for m in ('gymnasium', 'simpy', 'torch', 'pandas', 'adaptflow.simulator') if m in sys.modules))"
    )
    assert loaded == "[]"
    registered = run_python(
        "import gymnasium as gym\n"
        "import adaptflow.envs\n"
        "print(sorted(i for i in gym.registry if i.startswith('adaptflow/')) == sorted(adaptflow.envs.ENV_IDS))"
    )
    assert registered == "True"
    # The module-qualified id, for processes that imported nothing of adaptflow (SubprocVecEnv).
    made = run_python(
        "import gymnasium as gym\n"
        "env = gym.make('adaptflow.envs:adaptflow/Autoscale-v0', horizon=300.0)\n"
        "print(type(env.unwrapped).__name__)"
    )
    assert made == "AutoscaleEnv"


def test_lazy_names_of_agents_and_policies_resolve() -> None:
    """The PEP 562 tables name attributes that exist (a rename would surface here, not in a user's code)."""
    import adaptflow.agents as agents
    import adaptflow.policies as policies

    for module in (agents, policies):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"


def test_one_table_of_algorithms() -> None:
    from adaptflow.experiments.config import TrainConfig
    from adaptflow.policies.sb3 import ALGORITHMS, algorithm_class

    assert typing.get_args(TrainConfig.model_fields["algorithm"].annotation) == ALGORITHMS
    assert algorithm_class("RecurrentPPO").__name__ == "RecurrentPPO"
    with pytest.raises(ValueError, match="expected one of PPO, A2C, DQN, RecurrentPPO"):
        algorithm_class("SAC")


def test_every_document_words_an_unknown_key_the_same_way(tmp_path: Path) -> None:
    """Scenario, training config, live config and env options: one formatter of validation errors."""
    import gymnasium as gym

    import adaptflow.envs  # noqa: F401  (registers the environments)
    from adaptflow.experiments.config import load_config
    from adaptflow.runtime.live_run import load_live_config
    from adaptflow.scenario import ScenarioError, parse_scenario

    messages = []
    with pytest.raises(ScenarioError) as err:
        parse_scenario({"name": "x", "horizn": 5})
    messages.append(str(err.value))
    with pytest.raises(ValueError) as err:
        load_config({"name": "x", "total_timesteps": 10, "evaluaton": {}})
    messages.append(str(err.value))
    live = tmp_path / "live.yaml"
    live.write_text("scenario: mmc\nduration: 10\nintervall: 3\n")
    with pytest.raises(ValueError) as err:
        load_live_config(live)
    messages.append(str(err.value))
    with pytest.raises(ValueError) as err:
        gym.make("adaptflow/Autoscale-v0", decision_intervall=5)
    messages.append(str(err.value))
    assert "horizn: unknown key 'horizn'" in messages[0]
    assert "invalid training config" in messages[1] and "evaluaton: unknown key 'evaluaton'" in messages[1]
    assert "invalid live config" in messages[2] and "intervall: unknown key 'intervall'" in messages[2]
    assert "option decision_intervall: unknown option 'decision_intervall'; expected one of" in messages[3]
