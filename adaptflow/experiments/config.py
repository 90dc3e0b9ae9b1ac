"""Training-run configs: YAML validated by pydantic before any work starts, with dotted
``key=value`` overrides from the command line (``hyperparameters.learning_rate=1e-4``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from adaptflow._validation import directory_problem, format_problems, validation_lines
from adaptflow._yaml import load_yaml_file, load_yaml_text
from adaptflow.policies.sb3 import ALGORITHMS, algorithm_class

__all__ = [
    "ALGORITHMS",
    "HYPERPARAMETERS",
    "POLICIES",
    "EnvConfig",
    "EvalConfig",
    "TrainConfig",
    "algorithm_class",
    "apply_overrides",
    "load_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _no_bool(value: Any) -> Any:
    """YAML reads ``yes``/``true`` as booleans; pydantic would take them as 1.0: refuse them."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, not a boolean ({value!r})")
    return value


Number = Annotated[float, BeforeValidator(_no_bool)]
"""A float that is not a bool (a string such as ``"1e-4"``, which YAML 1.1 does not read as a
number, is still parsed: that is how ``hyperparameters.learning_rate=1e-4`` arrives)."""
Integer = Annotated[int, BeforeValidator(_no_bool)]
"""An int that is not a bool (``1.0e6`` is read as 1000000, ``1.5`` is refused)."""
Count = Annotated[Integer, Field(ge=1)]

MAX_ROLLOUT = 1_000_000
"""The most transitions an on-policy rollout (n_steps * n_envs) may hold: SB3 allocates the
buffer at once (a trillion steps asked for 189 TiB and failed after the run had started)."""
Steps = Annotated[Count, Field(le=MAX_ROLLOUT)]
LearningRate = Annotated[Number, Field(gt=0, le=1)]

ACTIVATIONS = {"tanh": "Tanh", "relu": "ReLU", "elu": "ELU", "leaky_relu": "LeakyReLU", "gelu": "GELU", "silu": "SiLU"}
"""``policy_kwargs.activation_fn`` by name (a YAML file cannot name a class): name -> torch.nn class."""


def _layers(value: Any) -> Any:
    """``net_arch``: a list of layer sizes, or a mapping of them per network (pi, vf, qf); one
    message when it is neither, rather than one per alternative of a union."""
    if value is None:
        return None
    if isinstance(value, list):
        adapter: TypeAdapter[Any] = TypeAdapter(list[Count])
    elif isinstance(value, dict) and set(value) <= {"pi", "vf", "qf"}:
        adapter = TypeAdapter(dict[str, list[Count]])
    else:
        adapter = None
    try:
        if adapter is not None:
            return adapter.validate_python(value)
    except ValidationError:
        pass
    raise ValueError(f"expected layer sizes >= 1 such as [64, 64] or {{pi: [64, 64], vf: [64, 64]}}, got {value!r}")


class _PolicyKwargs(_Strict):
    """What every SB3 policy of the table takes (DQN's Q-network takes no more)."""

    net_arch: Annotated[Any, BeforeValidator(_layers)] = None  # list[int >= 1] | {pi|vf|qf: list[int >= 1]}
    activation_fn: Literal[tuple(ACTIVATIONS)] | None = None  # type: ignore[valid-type]
    normalize_images: bool | None = None
    optimizer_kwargs: dict[str, Any] | None = None


class _ActorCriticKwargs(_PolicyKwargs):
    ortho_init: bool | None = None
    log_std_init: Number | None = None
    share_features_extractor: bool | None = None


class _LstmKwargs(_ActorCriticKwargs):
    lstm_hidden_size: Count | None = None
    n_lstm_layers: Count | None = None
    enable_critic_lstm: bool | None = None
    shared_lstm: bool | None = None


class _Common(_Strict):
    """The hyperparameters every algorithm of the table takes, with SB3's own ranges."""

    learning_rate: LearningRate = 3e-4
    gamma: Number = Field(default=0.99, gt=0, le=1)
    max_grad_norm: Number = Field(default=0.5, gt=0)
    stats_window_size: Count = 100


class _OnPolicy(_Common):
    n_steps: Steps = 2048
    gae_lambda: Number = Field(default=0.95, ge=0, le=1)
    ent_coef: Number = Field(default=0.0, ge=0, le=100)
    vf_coef: Number = Field(default=0.5, ge=0, le=100)
    normalize_advantage: bool = True
    use_sde: bool = False
    sde_sample_freq: Integer = Field(default=-1, ge=-1)
    policy_kwargs: _ActorCriticKwargs | None = None


class _PPO(_OnPolicy):
    batch_size: Steps = 64
    n_epochs: Annotated[Count, Field(le=1000)] = 10
    clip_range: Number = Field(default=0.2, gt=0, le=100)
    clip_range_vf: Number | None = Field(default=None, gt=0)
    target_kl: Number | None = Field(default=None, gt=0)


class _A2C(_OnPolicy):
    learning_rate: LearningRate = 7e-4
    n_steps: Steps = 5
    gae_lambda: Number = Field(default=1.0, ge=0, le=1)
    normalize_advantage: bool = False
    rms_prop_eps: Number = Field(default=1e-5, gt=0)
    use_rms_prop: bool = True


class _RecurrentPPO(_PPO):
    n_steps: Steps = 128
    batch_size: Steps = 128
    policy_kwargs: _LstmKwargs | None = None


class _DQN(_Common):
    learning_rate: LearningRate = 1e-4
    buffer_size: Annotated[Count, Field(le=10 * MAX_ROLLOUT)] = 1_000_000
    learning_starts: Integer = Field(default=100, ge=0)
    batch_size: Steps = 32
    tau: Number = Field(default=1.0, gt=0, le=1)
    train_freq: Count | tuple[Count, Literal["step", "episode"]] = 4
    gradient_steps: Integer = Field(default=1, ge=-1, le=10_000)
    n_steps: Steps = 1
    target_update_interval: Count = 10_000
    exploration_fraction: Number = Field(default=0.1, ge=0, le=1)
    exploration_initial_eps: Number = Field(default=1.0, ge=0, le=1)
    exploration_final_eps: Number = Field(default=0.05, ge=0, le=1)
    max_grad_norm: Number = Field(default=10.0, gt=0)
    policy_kwargs: _PolicyKwargs | None = None


HYPERPARAMETERS: dict[str, type[_Common]] = {"PPO": _PPO, "A2C": _A2C, "DQN": _DQN, "RecurrentPPO": _RecurrentPPO}
"""The hyperparameters a config may set, per algorithm of :data:`ALGORITHMS` (a test checks that
the two tables agree and that every field is a parameter of the SB3 class), typed with the
ranges SB3 assumes: a bad value is refused here, before a run directory exists, instead of
failing in SB3 after work has started. The defaults are SB3's, for the consistency checks."""

POLICIES = {"PPO": "MlpPolicy", "A2C": "MlpPolicy", "DQN": "MlpPolicy", "RecurrentPPO": "MlpLstmPolicy"}
"""The one policy per algorithm that fits adaptflow's observations (a flat vector): CnnPolicy
wants images and MultiInputPolicy a dict of observations."""


class EnvConfig(_Strict):
    id: Literal["adaptflow/Autoscale-v0", "adaptflow/Reroute-v0", "adaptflow/Orchestrate-v0"] = "adaptflow/Autoscale-v0"
    options: dict[str, Any] = Field(default_factory=dict)  # checked by the env's own EnvOptions


class EvalConfig(_Strict):
    """``every``: validation every N environment steps on ``episodes`` validation seeds (never the
    evaluation seeds), keeping the best model. At the end: ``final_seeds`` held-out evaluation
    seeds against ``baselines``, in ``processes`` worker processes (default one per core, up to
    its episodes; 1 runs it in the training process, which for a few short episodes is faster
    than starting processes that each import torch: 12 s against 26 s for a tiny run)."""

    every: Integer = Field(default=10_000, ge=1)
    episodes: Integer = Field(default=3, ge=1, le=1000)  # each a whole episode, at every validation
    final_seeds: Integer = Field(default=10, ge=0, le=10_000)
    processes: Integer | None = Field(default=None, ge=1, le=256)
    baselines: list[str] = Field(default_factory=lambda: ["static", "threshold", "erlang", "clairvoyant"])

    @field_validator("baselines")
    @classmethod
    def _resolve_baselines(cls, specs: list[str]) -> list[str]:
        """Every baseline resolved now, not after training has finished: a name and its
        parameters in the registry, a learned model's file present."""
        from adaptflow.policies.registry import LEARNED, parse_planner

        problems = []
        for k, spec in enumerate(specs):
            try:
                name, params = parse_planner(spec)
            except ValueError as exc:
                problems.append(f"[{k}] {spec!r}: {exc}")
                continue
            if name in LEARNED and not Path(params["path"]).exists():
                problems.append(f"[{k}] {spec!r}: model {params['path']!r} does not exist")
        if problems:
            raise ValueError("\n".join(problems))
        return specs


class WarmStartConfig(_Strict):
    """Behaviour cloning before RL: the ``planner`` (a spec, e.g. "predictive") drives the env
    for ``steps`` steps and the policy is fitted to its actions for ``epochs`` epochs."""

    planner: str
    steps: Integer = Field(default=20_000, ge=1, le=10_000_000)  # the teacher's states are kept in memory
    epochs: Integer = Field(default=10, ge=1, le=10_000)
    learning_rate: LearningRate = 1e-3


class TrainConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    env: EnvConfig = Field(default_factory=EnvConfig)
    algorithm: Literal[ALGORITHMS] = "PPO"  # the one table: adaptflow.policies.sb3.ALGORITHMS
    policy: str | None = None  # default: MlpPolicy (MlpLstmPolicy for RecurrentPPO)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    normalize_reward: bool = False  # SB3 VecNormalize on returns
    # SB3 VecNormalize on observations: the running statistics are saved in each model's sidecar
    # and applied by SB3Planner and the exported OnnxPlanner, since they live outside the network.
    normalize_observation: bool = False
    warm_start: WarmStartConfig | None = None
    n_envs: Integer = Field(default=4, ge=1, le=64)
    vec_env: Literal["dummy", "subproc"] = "dummy"
    total_timesteps: Integer = Field(ge=1)
    seed: Integer = Field(default=0, ge=0, lt=1_000_000)  # below the evaluation-seed range
    checkpoint_every: Integer = Field(default=10_000, ge=1)
    torch_threads: Integer = Field(default=1, ge=1, le=256)
    evaluation: EvalConfig = Field(default_factory=EvalConfig)
    output_dir: str = Field(default="runs", min_length=1)

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, name: str) -> str:
        if name in (".", ".."):
            raise ValueError(f"{name!r} is not a folder name; expected letters, digits, '_', '-' or '.'")
        return name

    @field_validator("output_dir")
    @classmethod
    def _writable(cls, output_dir: str, info: ValidationInfo) -> str:
        """Checked for a new run only (``context={"new_run": True}``): a resumed run writes
        into its own directory, wherever its config once said."""
        if (info.context or {}).get("new_run"):
            problem = directory_problem(Path(output_dir))
            if problem is not None:
                raise ValueError(problem)
        return output_dir

    @field_validator("hyperparameters")
    @classmethod
    def _typed_hyperparameters(cls, given: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Each value checked against the algorithm's table (:data:`HYPERPARAMETERS`); the
        values kept are the ones given, converted (``"1e-4"`` -> 1e-4)."""
        algorithm = info.data.get("algorithm")
        if algorithm is None:
            return given  # the algorithm itself is wrong: that is the problem to report
        table = HYPERPARAMETERS[algorithm]
        unknown = [key for key in given if key not in table.model_fields]
        if unknown:
            accepted = ", ".join(sorted(table.model_fields))
            raise ValueError(f"{unknown} are not hyperparameters of {algorithm}; expected some of: {accepted}")
        try:
            return table.model_validate(given).model_dump(exclude_unset=True)
        except ValidationError as exc:
            lines = [re.sub(r" or instance of \w+", "", line) for line in validation_lines(exc, given)]
            raise ValueError("\n".join(lines)) from None

    @model_validator(mode="after")
    def _check_consistency(self) -> TrainConfig:
        """What no single field can say: the policy against the observations, the minibatch
        against the rollout (SB3 asserts these only once the model is built)."""
        problems = []
        expected = POLICIES[self.algorithm]
        if self.policy is not None and self.policy != expected:
            why = " (CnnPolicy is for image observations)" if "Cnn" in self.policy else ""
            problems.append(
                f"policy: {self.policy!r} does not fit {self.algorithm} on adaptflow's vector observations{why}; "
                f"expected {expected!r}"
            )
        hp = HYPERPARAMETERS[self.algorithm].model_validate(self.hyperparameters)
        rollout = getattr(hp, "n_steps", 0) * self.n_envs
        if isinstance(hp, _OnPolicy) and rollout > MAX_ROLLOUT:
            problems.append(
                f"hyperparameters.n_steps: n_steps * n_envs = {hp.n_steps} * {self.n_envs} = {rollout:,}; "
                f"expected at most {MAX_ROLLOUT:,} (the rollout buffer is allocated at once)"
            )
        if isinstance(hp, _PPO):
            if hp.normalize_advantage and rollout <= 1:
                problems.append(
                    f"hyperparameters.n_steps: n_steps * n_envs = {rollout}; expected more than 1 "
                    "(advantages are normalized over the rollout)"
                )
            if hp.batch_size > rollout:
                problems.append(
                    f"hyperparameters.batch_size: {hp.batch_size} is more than the rollout, n_steps * n_envs = "
                    f"{hp.n_steps} * {self.n_envs} = {rollout}; expected at most {rollout}"
                )
            elif hp.normalize_advantage and hp.batch_size < 2:
                problems.append(
                    f"hyperparameters.batch_size: {hp.batch_size}; expected at least 2 "
                    "(advantages are normalized per minibatch)"
                )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @model_validator(mode="after")
    def _check_warm_start(self) -> TrainConfig:
        if self.warm_start is not None:
            from adaptflow.policies.registry import parse_planner

            try:
                name = parse_planner(self.warm_start.planner)[0]
            except ValueError as exc:
                raise ValueError(f"warm_start.planner: {exc}") from None
            if name == "sb3":
                raise ValueError(f"warm_start.planner: a rule or staffing planner, not {name}")
            if self.algorithm == "RecurrentPPO":
                raise ValueError("warm_start is not supported with RecurrentPPO (its policy is recurrent)")
        return self

    @property
    def policy_name(self) -> str:
        return self.policy or ("MlpLstmPolicy" if self.algorithm == "RecurrentPPO" else "MlpPolicy")


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
        node[parts[-1]] = load_yaml_text(raw, f"override {item!r}")
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    """A config file's mapping; any reason it cannot be read (not there, not UTF-8 text, not
    YAML, a tag that would build a Python object, a duplicated key) is one line naming the file."""
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    data = load_yaml_file(path) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    return data


def load_config(
    path: str | Path | dict[str, Any], overrides: list[str] | None = None, new_run: bool = True
) -> TrainConfig:
    """Read, override and validate a training config; every problem is one line of the error.
    ``new_run``: also check that the output directory can hold a new run (not for a resumed run's
    own config, which writes into the directory it is in)."""
    if isinstance(path, dict):
        data, label = dict(path), "config"
    else:
        data, label = _read_yaml(Path(path)), str(path)
    data = apply_overrides(data, overrides or [])
    try:
        return TrainConfig.model_validate(data, context={"new_run": new_run})
    except ValidationError as exc:
        text = format_problems(exc, data, f"{label}: invalid training config")
        raise ValueError(re.sub(r"\n  hyperparameters: (\S+): ", r"\n  hyperparameters.\1: ", text)) from None
