"""The scenario room: what a scenario *means*, shared by the simulated and the live world.

* :mod:`.schema`: the YAML a user writes (sources, stages, routes, SLA), validated completely.
* :mod:`.profiles`: rate and bad-rate profiles over time.
* :mod:`.routing`: the route objects; each decides where an item goes (``choose``), what the
  traffic equations see (``expected_branches``) and where it can lead (``targets``).
* :mod:`.outcome`: the one rule of a visit's outcome (failure and retry, give-up, validation).
* :class:`.schema.Sla`: the one rule of lateness (``is_late``, ``cutoff``).
* :mod:`.streams`: named random streams, arrival processes and service samplers.
* :mod:`.loading`: finding and reading scenario files, one line per validation problem.
* :mod:`.theory`: closed-form queueing results (Erlang C) for checks and staffing.

Why the behaviour lives on these objects rather than in each world: the SimPy model, the live
Celery task, the staffing rules and the schema's checks all need the same answers, and a meaning
written twice drifts apart (it did: a live retry was counted as an arrival, and the live task
drew a failure uniform the simulator did not). Both worlds call this code; the simulator binds it
once per stage or route, so its hot path pays a call, not a restatement.

It imports numpy, pydantic and yaml only (pandas lazily, to read a trace file), so that both the
SimPy model and the light deployed planner can depend on it."""

from .base import ScenarioError
from .loading import (
    format_validation_error,
    load_scenario,
    parse_scenario,
    resolve_scenario_path,
    save_scenario,
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
    "save_scenario",
    "shipped_scenarios",
    "shipped_scenarios_dir",
]
