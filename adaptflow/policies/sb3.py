"""A trained stable-baselines3 model as a Planner: the shared encoder turns the snapshot into the
observation the model was trained on, and the shared decoder turns its action into a Plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adaptflow.agents import ActionDecoder, Insights, MetricsSnapshot, ObservationEncoder, Plan, Planner
from adaptflow.simulator import Scenario

ALGORITHMS = ("PPO", "A2C", "DQN")


class SB3Planner(Planner):
    def __init__(self, model: Any, encoder: ObservationEncoder, decoder: ActionDecoder, deterministic: bool = True):
        self.model, self.encoder, self.decoder, self.deterministic = model, encoder, decoder, deterministic

    @classmethod
    def from_env(cls, model: Any, env: Any, deterministic: bool = True) -> SB3Planner:
        """Wrap ``model`` with the encoder and decoder of the adaptflow env it was trained on."""
        inner = env.unwrapped
        return cls(model, inner.encoder, inner.decoder, deterministic)

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
        sidecar ``<model>.json`` (env id, env options, algorithm) that takes precedence."""
        import json

        import gymnasium as gym

        from adaptflow.experiments.config import algorithm_class

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"SB3 model {str(path)!r} does not exist")
        sidecar = path.with_suffix(".json")
        names: tuple[str, ...] = ALGORITHMS
        if sidecar.is_file():
            meta = json.loads(sidecar.read_text())
            env_id, names = meta["env_id"], (meta["algorithm"],)
            env_options = {**meta["options"], **env_options}
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
        return cls.from_env(model, env)

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        obs = self.encoder.encode(snapshot, insights)
        action, _ = self.model.predict(obs, deterministic=self.deterministic)
        return self.decoder.decode(action, {name: st.target for name, st in snapshot.stages.items()})
