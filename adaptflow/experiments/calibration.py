"""Calibration checked by simulation: the runtime fits a scenario from a recording
(:mod:`adaptflow.runtime.calibrate`, which may not import the simulator); this binds its checks
(the validation, and the held runs :func:`fit_growth` simulates) to adaptflow's own
:class:`~adaptflow.simulator.Simulation`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from adaptflow.runtime.calibrate import validate_calibration as _validate
from adaptflow.runtime.calibrate.growth import GrowthFit, fit_growth_file
from adaptflow.simulator import Simulation


def validate_calibration(recording_dir: str | Path, scenario_path: str | Path, seeds: int = 3) -> pd.DataFrame:
    """Per stage mean wait and throughput, end to end p95 latency and throughput: recorded
    against the calibrated scenario simulated on the recorded arrivals and pool changes."""
    return _validate(recording_dir, scenario_path, Simulation, seeds)


def fit_growth(
    scenario_path: str | Path, run_paths: Sequence[str | Path], out: str | Path,
    host: str | None = None, reference: int | None = None,
) -> GrowthFit:  # fmt: skip
    """``adaptflow fit-growth``: the host's turnaround growth, and Celery's CPU on it
    (``visit_cpu``, ``handoff_cpu`` or ``oversubscription``) with the stages' CPU shares
    (checked by simulating the held runs), written to ``out``."""
    return fit_growth_file(scenario_path, run_paths, out, host=host, reference=reference, simulation=Simulation)
