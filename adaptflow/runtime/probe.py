"""A CPU probe: how fast this machine runs a fixed piece of Python work now.

Why: a shared VM's speed moves with its neighbours (CPU steal). On the example app the same
arrivals and pools met tasks 2.3 times faster one hour than 20 minutes before, and a simulation
fitted at one speed cannot reproduce a run at the other. ``adaptflow record`` probes at its start
and stop and ``adaptflow calibrate`` keeps the mean as the host's ``probe``; ``adaptflow
compare-app --probe-speed`` probes before and after each live run and simulates the run with
the host's ``speed`` = its probe / the calibration's (``Host.speed``).

The work is parsing CSV rows and summing their fields, as the example app's tasks do, in one
process; the figure is units of work per second of *wall* time (steal stops the clock of a
process, not the wall's), averaged over the whole window rather than the best slice, since
what a task meets is the average. Probe an idle app: the app's own load lowers the figure too.
"""

from __future__ import annotations

import csv
import io
import math
import time

PROBE_SECONDS = 1.0
"""How long one probe runs: long enough to average over the scheduler's slices, short enough to
run before and after every live run."""

_ROWS = "\n".join(f"{i},{i * 0.5:.3f},name{i % 17},{i * 7 % 101}" for i in range(200))


def _unit() -> float:
    """One unit of work: parse 200 CSV rows and sum two of their fields (about 0.2 ms)."""
    total = 0.0
    for row in csv.reader(io.StringIO(_ROWS)):
        total += float(row[1]) + int(row[3])
    return total


def cpu_probe(seconds: float = PROBE_SECONDS) -> float:
    """Units of :func:`_unit` done per wall second over ``seconds`` (at least one unit)."""
    if not (math.isfinite(seconds) and 0 < seconds <= 60):
        raise ValueError(f"probe seconds {seconds!r}: expected a duration in (0, 60]")
    start = time.perf_counter()
    deadline, units = start + seconds, 0
    while True:
        _unit()
        units += 1
        now = time.perf_counter()
        if now >= deadline:
            return units / (now - start)


def speed_against(reference: float | None, *readings: float) -> float | None:
    """The machine's speed now against the calibration: the mean of ``readings`` over
    ``reference`` (``None`` without a reference or a reading)."""
    if reference is None or not readings:
        return None
    return math.fsum(readings) / len(readings) / reference


__all__ = ["PROBE_SECONDS", "cpu_probe", "speed_against"]
