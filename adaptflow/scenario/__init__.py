"""The scenario room: what a scenario *means*, shared by the simulated and the live world.

* :mod:`.schema`: the YAML a user writes (sources, stages, routes, SLA), validated completely.
* :mod:`.profiles`: rate and bad-rate profiles over time.
* :mod:`.routing`: the route objects; where an item goes is decided on them.
* :mod:`.streams`: named random streams, arrival processes and service samplers.
* :mod:`.loading`: finding and reading scenario files, one line per validation problem.
* :mod:`.theory`: closed-form queueing results (Erlang C) for checks and staffing.

It imports numpy, pydantic and yaml only (pandas lazily, to read a trace file), so that both the
SimPy model and the light deployed planner can depend on it."""

from .base import ScenarioError
from .loading import (
    format_validation_error,
    load_scenario,
    parse_scenario,
    resolve_scenario_path,
    shipped_scenarios,
    shipped_scenarios_dir,
)
from .schema import Scenario, Stage

__all__ = [
    "Scenario",
    "ScenarioError",
    "Stage",
    "format_validation_error",
    "load_scenario",
    "parse_scenario",
    "resolve_scenario_path",
    "shipped_scenarios",
    "shipped_scenarios_dir",
]
