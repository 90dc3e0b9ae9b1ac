"""Gymnasium environments, registered on ``import adaptflow.envs``: a flat table of contents, as
``gymnasium/envs/__init__.py`` is. Gymnasium 1.x has no plugin entry points, and ``import
adaptflow`` stays light (a deployed planner must not load Gymnasium), so a user imports this
package, or names it in the id: ``gymnasium.make("adaptflow.envs:adaptflow/Autoscale-v0")`` (what
SB3's subprocess workers and :func:`adaptflow.policies.sb3.make_env` do). Registration imports
nothing heavy: the entry points are strings, resolved by ``gymnasium.make``."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import register

# Defaults: the ETL scenario (14,400 s) and the quality-drift scenario (7,200 s) at one decision
# every 30 s. With another scenario or interval, use adaptflow.envs.make (it sets the limit).
register(
    id="adaptflow/Autoscale-v0",
    entry_point="adaptflow.envs.workflow:AutoscaleEnv",
    max_episode_steps=480,
    kwargs={"scenario": "etl_diurnal", "decision_interval": 30.0},
)
register(
    id="adaptflow/Reroute-v0",
    entry_point="adaptflow.envs.workflow:RerouteEnv",
    max_episode_steps=240,
    kwargs={"scenario": "quality_drift", "decision_interval": 30.0},
)
register(
    id="adaptflow/Orchestrate-v0",
    entry_point="adaptflow.envs.workflow:OrchestrateEnv",
    max_episode_steps=240,
    kwargs={"scenario": "quality_drift", "decision_interval": 30.0},
)

ENV_IDS = ("adaptflow/Autoscale-v0", "adaptflow/Reroute-v0", "adaptflow/Orchestrate-v0")


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` with ``max_episode_steps`` set to the scenario's horizon / interval."""
    if "max_episode_steps" not in kwargs:
        from adaptflow.envs.workflow import episode_steps
        from adaptflow.scenario import load_scenario

        spec = gym.spec(env_id)
        options = {**spec.kwargs, **kwargs}
        scenario = options["scenario"]
        first = scenario[0] if isinstance(scenario, list | tuple) else scenario  # a mixture shares one horizon
        horizon = options.get("horizon") or load_scenario(first).horizon
        kwargs["max_episode_steps"] = episode_steps(horizon, options["decision_interval"])
    return gym.make(env_id, **kwargs)
