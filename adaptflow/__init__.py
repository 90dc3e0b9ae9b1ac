"""adaptflow: learn and deploy adaptive workflow orchestrators.

Importing the package registers its Gymnasium environments (``adaptflow/Autoscale-v0``,
``adaptflow/Reroute-v0``, ``adaptflow/Orchestrate-v0``) and does nothing else."""

from adaptflow import envs as _envs  # noqa: F401  (registers the environments)

__version__ = "0.1.0"
