"""The SimPy model of workflows: the steppable simulation and its metrics.

Knows nothing of Gymnasium, RL or planners: everything above it drives it through
:class:`Simulation` (``run``, ``mark``, ``summary``, ``set_workers``, ``set_split``). What a
scenario means (schema, routes, random streams) lives in :mod:`adaptflow.scenario`, shared with
the live world."""

from .metrics import Mark, flatten, to_jsonable
from .model import Simulation

__all__ = ["Mark", "Simulation", "flatten", "to_jsonable"]
