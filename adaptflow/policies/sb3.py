"""A trained stable-baselines3 model as a Planner: the shared encoder turns the snapshot into the
observation the model was trained on (normalized as in training, when training normalized it),
and the shared decoder turns its action into a Plan.

The one table of algorithms lives here (:data:`ALGORITHMS`, :func:`algorithm_class`): training
configs, model loading and export all read it, so an algorithm that can be trained can also be
loaded and evaluated."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

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

log = logging.getLogger(__name__)

ALGORITHMS = ("PPO", "A2C", "DQN", "RecurrentPPO")
"""Every algorithm adaptflow trains and loads: stable-baselines3's, and sb3-contrib's RecurrentPPO."""


def algorithm_class(name: str) -> Any:
    """The SB3 class of an algorithm in :data:`ALGORITHMS` (imported on use: torch is heavy)."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; expected one of {', '.join(ALGORITHMS)}")
    if name == "RecurrentPPO":
        from sb3_contrib import RecurrentPPO

        return RecurrentPPO
    import stable_baselines3

    return getattr(stable_baselines3, name)


def make_env(env_id: str, **options: Any) -> Any:
    """The adaptflow env a model was trained in, through Gymnasium's registry: the observation
    layout and action mapping of a learned model are the env's. The id is qualified with the
    module that registers it (``adaptflow.envs:adaptflow/Autoscale-v0``), so this works without
    anyone having imported :mod:`adaptflow.envs`; it is a plugin lookup by a name stored in the
    model's sidecar, not an import of the envs room (see docs/architecture.md)."""
    import gymnasium as gym

    module = "adaptflow.envs:" if env_id.startswith("adaptflow/") else ""
    return gym.make(module + env_id, **options)


class SB3Planner(Planner):
    """``analyzer_options``: the analyzer the model was trained with (forecaster, forecast
    steps); the evaluation harness builds that analyzer, so that a model trained on Holt-Winters
    forecasts is not evaluated on EWMA ones. ``analyzer_state``: that analyzer as fitted in
    training (``StandardAnalyzer.to_dict``, from the sidecar), so that nobody refits it.
    ``fixed_workers``: pool sizes the training env held when the model controls only the splits
    (Reroute-v0), applied with every plan.

    A recurrent policy (RecurrentPPO) carries its LSTM state from one decision to the next, as it
    did in training; :meth:`reset` (called by the Coordinator at the start of every episode or
    live run) starts a fresh state. For feed-forward policies the state stays ``None``.

    ``training_range``: what training saw (:class:`~adaptflow.policies.guard.TrainingRange` as
    data, from the sidecar; None for a sidecar older than the guard): the registry wraps the
    planner in a :class:`~adaptflow.policies.guard.GuardedPlanner` with it."""

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
        analyzer_state: dict[str, Any] | None = None,
        training_range: dict[str, Any] | None = None,
    ):
        self.model, self.encoder, self.decoder, self.deterministic = model, encoder, decoder, deterministic
        self.training_range = training_range
        self.normalizer = normalizer
        self.analyzer_options = analyzer_options or {}
        self.fixed_workers = fixed_workers or {}
        self.analyzer_state = analyzer_state
        self.reset()

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
            inner.analyzer.to_dict(state=False),
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
        sidecar ``<model>.json`` (env id, env options, algorithm, observation normalization, the
        fitted analyzer) that takes precedence. The analyzer is loaded from it, not refitted,
        when it was fitted for ``scenario`` at ``interval``; a sidecar older than saved analyzers
        (or another scenario) makes the env fit one by simulation, with a logged warning. The
        sidecar's ``training_range`` (what training saw) is kept as :attr:`training_range`."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"SB3 model {str(path)!r} does not exist")
        sidecar = path.with_suffix(".json")
        names: tuple[str, ...] = ALGORITHMS
        normalizer, meta = None, {}
        if sidecar.is_file():
            meta = json.loads(sidecar.read_text())
            env_id, names = meta["env_id"], (meta["algorithm"],)
            env_options = {**meta["options"], "analyzer": meta.get("fitted_analyzer"), **env_options}
            if isinstance(meta["options"].get("scenario"), list):  # trained on a mixture: its layout
                env_options.setdefault("layout", meta["options"]["scenario"])
            normalizer = ObservationNormalizer.from_dict(meta.get("observation_normalization"))
            fitted = meta["options"].get("forecaster") in ("holt_winters", "autoregressive")
            if "fitted_analyzer" not in meta and fitted:
                log.warning("%s has no fitted analyzer (an older sidecar): refitting it by simulation", sidecar)
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
        planner = cls.from_env(model, make_env(env_id, **env_options), normalizer=normalizer)
        planner.training_range = meta.get("training_range")
        return planner

    def reset(self) -> None:
        """A new episode: a recurrent policy starts from a fresh LSTM state."""
        self.state: Any = None
        self._episode_start = np.ones(1, dtype=bool)

    def observation(self, snapshot: MetricsSnapshot, insights: Insights) -> Any:
        """What the policy network sees: the encoded (and, if trained so, normalized) observation."""
        obs = self.encoder.encode(snapshot, insights)
        return obs if self.normalizer is None else self.normalizer(obs)

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        action, self.state = self.model.predict(
            self.observation(snapshot, insights),
            state=self.state,
            episode_start=self._episode_start,
            deterministic=self.deterministic,
        )
        self._episode_start = np.zeros(1, dtype=bool)
        return self.decoder.plan_for(action, snapshot, self.fixed_workers)
