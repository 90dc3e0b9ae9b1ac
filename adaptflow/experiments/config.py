"""Training-run configs: YAML validated by pydantic before any work starts, with dotted
``key=value`` overrides from the command line (``hyperparameters.learning_rate=1e-4``)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ALGORITHMS = ("PPO", "A2C", "DQN", "RecurrentPPO")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnvConfig(_Strict):
    id: Literal["adaptflow/Autoscale-v0", "adaptflow/Reroute-v0", "adaptflow/Orchestrate-v0"] = "adaptflow/Autoscale-v0"
    options: dict[str, Any] = Field(default_factory=dict)  # checked by the env's own EnvOptions


class EvalConfig(_Strict):
    """``every``: validation every N environment steps on ``episodes`` validation seeds (never the
    evaluation seeds), keeping the best model. At the end: ``final_seeds`` held-out evaluation
    seeds against ``baselines``."""

    every: int = Field(default=10_000, ge=1)
    episodes: int = Field(default=3, ge=1)
    final_seeds: int = Field(default=10, ge=0)
    baselines: list[str] = Field(default_factory=lambda: ["static", "threshold", "erlang", "clairvoyant"])


class WarmStartConfig(_Strict):
    """Behaviour cloning before RL: the ``planner`` (a spec, e.g. "predictive") drives the env
    for ``steps`` steps and the policy is fitted to its actions for ``epochs`` epochs."""

    planner: str
    steps: int = Field(default=20_000, ge=1)
    epochs: int = Field(default=10, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)


class TrainConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    env: EnvConfig = Field(default_factory=EnvConfig)
    algorithm: Literal["PPO", "A2C", "DQN", "RecurrentPPO"] = "PPO"
    policy: str | None = None  # default: MlpPolicy (MlpLstmPolicy for RecurrentPPO)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    normalize_reward: bool = False  # SB3 VecNormalize on returns
    # SB3 VecNormalize on observations: the running statistics are saved in each model's sidecar
    # and applied by SB3Planner and the exported OnnxPlanner, since they live outside the network.
    normalize_observation: bool = False
    warm_start: WarmStartConfig | None = None
    n_envs: int = Field(default=4, ge=1, le=64)
    vec_env: Literal["dummy", "subproc"] = "dummy"
    total_timesteps: int = Field(ge=1)
    seed: int = Field(default=0, ge=0, lt=1_000_000)  # below the evaluation-seed range
    checkpoint_every: int = Field(default=10_000, ge=1)
    torch_threads: int = Field(default=1, ge=1)
    evaluation: EvalConfig = Field(default_factory=EvalConfig)
    output_dir: str = "runs"

    @model_validator(mode="after")
    def _check_hyperparameters(self) -> TrainConfig:
        known = set(inspect.signature(algorithm_class(self.algorithm).__init__).parameters) - {
            "self",
            "policy",
            "env",
            "seed",
            "device",
            "tensorboard_log",
            "verbose",
            "_init_setup_model",
        }
        unknown = sorted(set(self.hyperparameters) - known)
        if unknown:
            raise ValueError(
                f"hyperparameters {unknown} are not parameters of {self.algorithm}; "
                f"expected some of: {', '.join(sorted(known))}"
            )
        return self

    @model_validator(mode="after")
    def _check_warm_start(self) -> TrainConfig:
        if self.warm_start is not None:
            from .planners import parse_planner

            if parse_planner(self.warm_start.planner)[0] == "sb3":
                raise ValueError("warm_start.planner: a rule or staffing planner, not sb3")
            if self.algorithm == "RecurrentPPO":
                raise ValueError("warm_start is not supported with RecurrentPPO (its policy is recurrent)")
        return self

    @property
    def policy_name(self) -> str:
        return self.policy or ("MlpLstmPolicy" if self.algorithm == "RecurrentPPO" else "MlpPolicy")


def algorithm_class(name: str) -> Any:
    if name == "RecurrentPPO":
        from sb3_contrib import RecurrentPPO

        return RecurrentPPO
    import stable_baselines3

    return getattr(stable_baselines3, name)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["a.b=3", "name=x"]``: set nested keys; values are read as YAML scalars."""
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise ValueError(f"override {item!r} is not key=value (e.g. hyperparameters.learning_rate=1e-4)")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config(path: str | Path | dict[str, Any], overrides: list[str] | None = None) -> TrainConfig:
    """Read, override and validate a training config; every problem is one line of the error."""
    if isinstance(path, dict):
        data, label = dict(path), "config"
    else:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file {str(p)!r} does not exist")
        data, label = yaml.safe_load(p.read_text()) or {}, str(p)
        if not isinstance(data, dict):
            raise ValueError(f"{label}: expected a mapping of config fields")
    data = apply_overrides(data, overrides or [])
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            where = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] not in ("value_error", "missing"):
                msg = f"{msg} (got {err['input']!r})"
            lines.append(f"{where}: {msg}" if where else msg)
        raise ValueError(f"{label}: invalid training config\n  " + "\n  ".join(lines)) from None
