"""The SimPy model of workflows: scenarios, the steppable simulation and its metrics.

Knows nothing of Gymnasium, RL or planners: everything above it drives it through
:class:`Simulation` (``run``, ``mark``, ``summary``, ``set_workers``, ``set_split``)."""

from .metrics import Mark, flatten, to_jsonable
from .model import Simulation
from .scenario import (
    Scenario,
    ScenarioError,
    load_scenario,
    parse_scenario,
    shipped_scenarios,
    shipped_scenarios_dir,
)

__all__ = [
    "Mark",
    "Scenario",
    "ScenarioError",
    "Simulation",
    "flatten",
    "load_scenario",
    "parse_scenario",
    "shipped_scenarios",
    "shipped_scenarios_dir",
    "to_jsonable",
]
