"""Calibration: a scenario fitted from a recording of a user's Celery app (``adaptflow calibrate``).

* :mod:`.recording`: reading the recording directory (``mapping.yaml``, ``recording.json``,
  ``events.jsonl``), with errors that name the file and line.
* :mod:`.timeline`: the task events through the one translator, gathered per stage and item.
* :mod:`.distributions`: service-time families (KS test, BIC) and arrival rates.
* :mod:`.system`: routes, failure and retry, pools, start-up delay, SLA.
* :mod:`.core`: :func:`calibrate`, which writes the scenario, its arrivals and the fit report.
* :mod:`.growth`: a host's turnaround growth with its processes, fitted from compare-app runs at
  held pool sizes (``adaptflow fit-growth``).
* :mod:`.validate`: :func:`validate_calibration`, the calibrated scenario simulated against the
  recording (the simulation is handed in: the runtime does not import the simulator).
"""

from .core import Calibration, calibrate
from .recording import Recording, read_recording
from .validate import MakeSimulation, PoolChanges, recorded_metrics, validate_calibration

__all__ = [
    "Calibration",
    "MakeSimulation",
    "PoolChanges",
    "Recording",
    "calibrate",
    "read_recording",
    "recorded_metrics",
    "validate_calibration",
]
