"""The SimPy model of workflows: the steppable simulation and its metrics.

Knows nothing of Gymnasium, RL or planners: everything above it drives it through
:class:`Simulation` (``run``, ``counters``, ``samples``, ``summary``, ``set_workers``,
``set_split``). What a scenario means (schema, routes, a visit's outcome, lateness, random
streams) lives in :mod:`adaptflow.scenario`, shared with the live world."""

from .metrics import Counters, Samples, StageCounters, flatten, to_jsonable
from .model import Simulation

__all__ = ["Counters", "Samples", "Simulation", "StageCounters", "flatten", "to_jsonable"]
