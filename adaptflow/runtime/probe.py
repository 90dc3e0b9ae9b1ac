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
A probe before and after a run reads the machine of those seconds, not of the run; pulses
(:mod:`.pulses`) read it during the run, where no task ran.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

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


STAT = Path("/proc/stat")
"""Where Linux keeps the machine's CPU time by kind (``man 5 proc``)."""
NICE, IDLE, IOWAIT, STEAL = 1, 3, 4, 7
"""The positions of ``nice``, ``idle``, ``iowait`` and ``steal`` among the ``cpu`` line's fields: user,
nice, system, idle, iowait, irq, softirq, steal (then guest and guest_nice, which user and nice
already count)."""


def cpu_ticks(path: Path = STAT) -> list[int] | None:
    """The machine's CPU time so far in clock ticks, by kind: the first eight fields of the
    ``cpu`` line of ``path`` (see :data:`STEAL`); None where there is no such line (not Linux).
    Reading it costs the machine nothing, unlike :func:`cpu_probe`, so it can bracket a run."""
    try:
        first = path.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if len(first) < STEAL + 2 or first[0] != "cpu" or not all(f.isdigit() for f in first[1 : STEAL + 2]):
        return None
    return [int(f) for f in first[1 : STEAL + 2]]


def steal_share(before: list[int] | None, after: list[int] | None) -> float | None:
    """The share of the time the machine's virtual CPUs wanted to run, between two
    :func:`cpu_ticks` readings, that its hypervisor gave to other guests instead (``steal`` over
    all but ``idle`` and ``iowait``): a task that wanted a CPU throughout ran ``1 - steal_share``
    as fast as on an unshared machine. Why: a shared VM's speed moves with its neighbours, and
    steal is the part of that a guest can see (not: shared caches, memory bandwidth, clock
    frequency). Measured on a 2-vCPU VM, a one-process probe of 3 s got 147 ticks of CPU with
    182 of steal beside them: 0.46 of the time wanted, and the probe ran 0.49 of a core. None
    without both readings or without any time wanted between them."""
    if before is None or after is None:
        return None
    spent = [b - a for a, b in zip(before, after, strict=True)]
    wanted = sum(spent) - spent[IDLE] - spent[IOWAIT]
    return spent[STEAL] / wanted if wanted > 0 else None


BACKGROUND = 0.05
"""A share of the machine's CPU time taken by nice'd processes (:func:`nice_share`) above which
a run's or a recording's pulses are said to be read beside background work (a tenth of a core
on two)."""


def nice_share(before: list[int] | None, after: list[int] | None) -> float | None:
    """The share of the machine's CPU time, between two :func:`cpu_ticks` readings, that
    processes run at a lowered priority (``nice``) took: someone's background work. Why: a
    pulse (:mod:`.pulses`), at normal priority, takes a core from such work at once, while the
    app's tasks and Celery's hand-offs still lose time to it: on the example app, runs beside a
    ``nice -n 19`` judging job and test runs had their idle pulses read the machine 8-20 % faster
    than the runs' own tasks met it (docs/sim_to_real.md, "The turnaround's spread"). None
    without both readings or without any time between them."""
    if before is None or after is None:
        return None
    spent = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(spent)
    return spent[NICE] / total if total > 0 else None


def shares_since(before: list[int] | None) -> tuple[float | None, float | None]:
    """The machine's :func:`steal_share` and :func:`nice_share` from ``before`` (a
    :func:`cpu_ticks` reading) to now, from one reading of now: what a run and a recording keep
    beside their pulses."""
    after = cpu_ticks()
    return steal_share(before, after), nice_share(before, after)


def speed_against(reference: float | None, *readings: float) -> float | None:
    """The machine's speed now against the calibration: the mean of ``readings`` over
    ``reference`` (``None`` without a reference or a reading)."""
    if reference is None or not readings:
        return None
    return math.fsum(readings) / len(readings) / reference


__all__ = [
    "BACKGROUND", "IDLE", "IOWAIT", "NICE", "PROBE_SECONDS", "STAT", "STEAL",
    "cpu_probe", "cpu_ticks", "nice_share", "shares_since", "speed_against", "steal_share",
]  # fmt: skip
