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
        """Load a saved model (PPO, A2C or DQN) and rebuild its env's encoder and decoder."""
        import gymnasium as gym
        import stable_baselines3

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"SB3 model {str(path)!r} does not exist")
        model, errors = None, []
        for name in ALGORITHMS:
            try:
                model = getattr(stable_baselines3, name).load(path, device="cpu")
                break
            except Exception as exc:  # SB3 raises assorted errors for a mismatched algorithm
                errors.append(f"{name}: {exc}")
        if model is None:
            raise ValueError(f"{str(path)!r} is not a loadable {'/'.join(ALGORITHMS)} model: {'; '.join(errors)}")
        env = gym.make(env_id, scenario=scenario, decision_interval=interval, **env_options)
        return cls.from_env(model, env)

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        obs = self.encoder.encode(snapshot, insights)
        action, _ = self.model.predict(obs, deterministic=self.deterministic)
        return self.decoder.decode(action, {name: st.target for name, st in snapshot.stages.items()})
