"""A trained stable-baselines3 model as a Planner: the shared encoder turns the snapshot into the
observation the model was trained on (normalized as in training, when training normalized it),
and the shared decoder turns its action into a Plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adaptflow.agents import (
    ActionDecoder,
    Insights,
    MetricsSnapshot,
    ObservationEncoder,
    ObservationNormalizer,
    Plan,
    Planner,
)
from adaptflow.scenario import Scenario

ALGORITHMS = ("PPO", "A2C", "DQN")


class SB3Planner(Planner):
    """``analyzer_options``: the analyzer the model was trained with (forecaster, forecast
    steps); the evaluation harness builds that analyzer, so that a model trained on Holt-Winters
    forecasts is not evaluated on EWMA ones. ``fixed_workers``: pool sizes the training env held
    when the model controls only the splits (Reroute-v0), applied with every plan."""

    relies_on_clamping = False  # its decoder stays in bounds: anything else is a fault

    def __init__(
        self,
        model: Any,
        encoder: ObservationEncoder,
        decoder: ActionDecoder,
        deterministic: bool = True,
        normalizer: ObservationNormalizer | None = None,
        analyzer_options: dict[str, Any] | None = None,
        fixed_workers: dict[str, int] | None = None,
    ):
        self.model, self.encoder, self.decoder, self.deterministic = model, encoder, decoder, deterministic
        self.normalizer = normalizer
        self.analyzer_options = analyzer_options or {}
        self.fixed_workers = fixed_workers or {}

    @classmethod
    def from_env(
        cls, model: Any, env: Any, deterministic: bool = True, normalizer: ObservationNormalizer | None = None
    ) -> SB3Planner:
        """Wrap ``model`` with the encoder and decoder of the adaptflow env it was trained on."""
        inner = env.unwrapped
        opts = inner.options
        return cls(
            model,
            inner.encoder,
            inner.decoder,
            deterministic,
            normalizer,
            {"forecaster": opts.forecaster, "forecast_steps": opts.forecast_steps},
            {} if inner.control_workers else dict(inner.fixed_workers),
        )

    @classmethod
    def load(
        cls,
        path: str | Path,
        scenario: Scenario,
        interval: float,
        env_id: str = "adaptflow/Autoscale-v0",
        **env_options: Any,
    ) -> SB3Planner:
        """Load a saved model and rebuild its env's encoder and decoder. A training run saves a
        sidecar ``<model>.json`` (env id, env options, algorithm, observation normalization)
        that takes precedence."""
        import gymnasium as gym

        from adaptflow.experiments.config import algorithm_class

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"SB3 model {str(path)!r} does not exist")
        sidecar = path.with_suffix(".json")
        names: tuple[str, ...] = ALGORITHMS
        normalizer = None
        if sidecar.is_file():
            meta = json.loads(sidecar.read_text())
            env_id, names = meta["env_id"], (meta["algorithm"],)
            env_options = {**meta["options"], **env_options}
            normalizer = ObservationNormalizer.from_dict(meta.get("observation_normalization"))
        model, errors = None, []
        for name in names:
            try:
                model = algorithm_class(name).load(path, device="cpu")
                break
            except Exception as exc:  # SB3 raises assorted errors for a mismatched algorithm
                errors.append(f"{name}: {exc}")
        if model is None:
            raise ValueError(f"{str(path)!r} is not a loadable {'/'.join(names)} model: {'; '.join(errors)}")
        env_options = {**env_options, "scenario": scenario, "decision_interval": interval}
        env = gym.make(env_id, **env_options)
        return cls.from_env(model, env, normalizer=normalizer)

    def observation(self, snapshot: MetricsSnapshot, insights: Insights) -> Any:
        """What the policy network sees: the encoded (and, if trained so, normalized) observation."""
        obs = self.encoder.encode(snapshot, insights)
        return obs if self.normalizer is None else self.normalizer(obs)

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        action, _ = self.model.predict(self.observation(snapshot, insights), deterministic=self.deterministic)
        return self.decoder.plan_for(action, snapshot, self.fixed_workers)
