"""What the settling studies (spread_level.py, share_level.py) start from: a scenario and a fit
set's runs at the reference pools, with the services' spread those runs measured. Not a study
of its own; imported by its siblings (the script's folder is on the path)."""
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

from adaptflow.runtime.calibrate.growth import GrowthRun, hosted_stages, read_runs
from adaptflow.scenario import Scenario, parse_scenario


class AtReference(NamedTuple):
    data: dict  # the scenario's YAML mapping, for the study to edit
    scenario: Scenario
    stages: list[str]  # the hosted ones
    reference: int  # the fewest processes a run held
    runs: list[GrowthRun]  # the runs that held them
    live_cv: dict[str, float]  # each stage's services' spread, their mean over those runs


def at_reference(path: Path, table: str) -> AtReference:
    data = yaml.safe_load(path.read_text())
    scenario = parse_scenario(data, base_dir=path.parent)
    _, stages = hosted_stages(scenario, None)
    runs, _ = read_runs([table], stages, list(scenario.sources))
    reference = min(run.processes for run in runs)
    at_ref = [run for run in runs if run.processes == reference]
    live = {s: float(np.mean([r.spreads[s] for r in at_ref if s in r.spreads])) for s in stages}
    return AtReference(data, scenario, stages, reference, at_ref, live)
