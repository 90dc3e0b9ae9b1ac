"""adaptflow: learn and deploy adaptive workflow orchestrators.

``import adaptflow`` is light on purpose (no Gymnasium, SimPy or torch): a deployed planner
imports only what it needs. The Gymnasium environments (``adaptflow/Autoscale-v0``,
``adaptflow/Reroute-v0``, ``adaptflow/Orchestrate-v0``) are registered by ``import
adaptflow.envs``, or named with their module: ``gymnasium.make("adaptflow.envs:adaptflow/Autoscale-v0")``."""

__version__ = "0.1.0"
