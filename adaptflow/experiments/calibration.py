"""Calibration checked by simulation: the runtime fits a scenario from a recording
(:mod:`adaptflow.runtime.calibrate`, which may not import the simulator); this binds its check
to adaptflow's own :class:`~adaptflow.simulator.Simulation`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from adaptflow.runtime.calibrate import validate_calibration as _validate
from adaptflow.simulator import Simulation


def validate_calibration(recording_dir: str | Path, scenario_path: str | Path, seeds: int = 3) -> pd.DataFrame:
    """Per stage mean wait and throughput, end to end p95 latency and throughput: recorded
    against the calibrated scenario simulated on the recorded arrivals and pool changes."""
    return _validate(recording_dir, scenario_path, Simulation, seeds)
