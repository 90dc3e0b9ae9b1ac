"""Which stages share a machine's cores, and how much of their service is CPU work (``--cores``).

A Celery worker's node name is ``name@machine`` (``-n parse@%h``), so the recording says which
stages' processes ran on which machine. Given the machine's cores (``--cores vm=2``, or
``auto``: the cores of the machine that recorded), the scenario's host model (see
:class:`~adaptflow.scenario.schema.Host`) says a visit of a stage with CPU share ``c`` took

    wall = x * (1 - c + c / v)

where ``x`` is its time at full speed and ``v`` the mean speed of its CPU work over the visit,
``min(1, cores / demand)``, the demand being the visit itself plus the machine's other busy
processes, each weighted by its stage's share (the expected number computing at that moment).
``v`` is measured from the recorded spans of every visit on the machine.

Which ``c``: the one whose full-speed times ``x`` no longer depend on the speed at the visit's
*start*. That speed is an instrument: it is set before the visit's own length is drawn, while
the mean over the span is not (a long visit averages over more of the machine's states, a short
one may fall in a quiet moment, so regressing wall times on ``v`` reads nothing). The demand
depends on every stage's share, so the fit iterates from every share at 1 until they settle.
The service times are then divided by each visit's stretch ``1 - c + c / v`` before the service
distributions and item sizes are fitted: the scenario holds full-speed times, and the simulator,
sharing the cores, stretches them again as the load of the moment does.

The cores written are the machine's *effective* cores (:func:`effective_cores`): fewer than
stated when tasks slow down with the load more than even all-CPU work on the stated cores
explains, as when Celery's own processes, the broker and a hypervisor take part of them;
one when even one core leaves a stage's slowdown unexplained (the most the model gives).

What it cannot tell: a stage whose visits never started with more demand than cores has nothing
to read; it is left off the host, with a warning. The weighted demand is an expectation (a
process computes or waits at any instant), which reads a stage that computes half its time a
little low (0.39-0.44 for a true 0.5 in tests/test_calibrate.py). And a slow stretch of the
machine (another tenant's load) both slows the visits and, by slowing them, raises the number
of busy processes: that reads as CPU share, so on a shared machine ``c`` leans high.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, stats

from adaptflow.scenario.schema import cpu_stretch

from .distributions import sig
from .timeline import Timeline

ITERATIONS = 20
SETTLED = 1e-4  # the largest change of a share between iterations at which the fit stops
MIN_STRETCHED = 30  # visits that started slowed (speed below 1 / STRETCHED) needed to read a share
STRETCHED = 1.05
RESIDUAL = 0.05
"""The correlation left between full-speed times and the speed at a visit's start that still
counts as explained: on a synthetic app with known cores and shares the fit leaves -0.045 at
the true cores (and -0.08 at 1.2 times them); on the example app -0.07 to -0.2 at 2 cores."""


MachineFit = tuple[dict[str, float], dict[str, np.ndarray], dict[str, dict[str, Any]]]
"""One machine's fit on some cores: each stage's CPU share, each visit's stretch, each stage's report row."""


@dataclass
class HostFit:
    """The hosts and the stages placed on them, each visit's stretch, and the report."""

    hosts: dict[str, dict[str, float]] = field(default_factory=dict)  # machine -> {"cores": n}
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> {"host": m, "cpu": c}
    stretch: dict[str, np.ndarray] = field(default_factory=dict)  # stage -> per visit, in step with services
    report: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def machine_of(node: str) -> str:
    """The machine of a Celery node name (``parse@vm`` -> ``vm``; a bare host name is itself)."""
    return node.rsplit("@", 1)[-1]


def parse_cores(text: str, recorded: dict[str, Any] | None) -> dict[str, float]:
    """``--cores``: ``auto`` (the recording machine's own cores) or ``NAME=N[,NAME=N]``."""
    if text == "auto":
        if not recorded or "name" not in recorded or "cores" not in recorded:
            raise ValueError("--cores auto: the recording names no host (an older recorder); expected NAME=N")
        return {str(recorded["name"]): float(recorded["cores"])}
    cores: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not name or not (np.isfinite(number) and number > 0):
            raise ValueError(f"--cores {part!r}: expected NAME=N with N > 0 cores (or auto)")
        cores[name] = number
    return cores


def fit_hosts(timeline: Timeline, cores: dict[str, float]) -> HostFit:
    """Place each stage whose processes all ran on one machine of ``cores`` on that host, and
    fit its CPU share (see the module docstring)."""
    fit = HostFit()
    machines = _machines(timeline)
    for machine, count in cores.items():
        stages = [s for s, seen in machines.items() if seen == {machine} and timeline.stages[s].spans]
        fit.report[machine] = {"cores": count, "stages": {}}
        if not stages:
            seen = sorted(set().union(*machines.values()))
            fit.warnings.append(f"--cores {machine}: no stage's workers all ran on {machine!r}; machines seen: {seen}")
            continue
        fit_on = functools.cache(functools.partial(_fit_machine, timeline, stages))  # cores -> fit, once each
        effective, why = effective_cores(fit_on, count)
        fit.report[machine].update(effective_cores=effective, effective_note=why)
        if effective < count:
            fit.warnings.append(f"{machine}: {why}")
        shares, stretch, rows = fit_on(effective)
        for stage in stages:
            row = rows[stage]
            fit.report[machine]["stages"][stage] = row
            if row["started_slowed"] < MIN_STRETCHED:
                fit.warnings.append(
                    f"stages.{stage}: only {row['started_slowed']} visits started with more CPU work than "
                    f"{machine}'s {effective:.3g} cores (need {MIN_STRETCHED}); its CPU share cannot be read: "
                    "not placed on the host"
                )
                continue
            fit.hosts[machine] = {"cores": sig(effective, 4)}
            fit.stages[stage] = {"host": machine, "cpu": sig(shares[stage], 4)}
            fit.stretch[stage] = stretch[stage]
    return fit


def effective_cores(fit_on: Callable[[float], MachineFit], cores: float) -> tuple[float, str]:
    """The cores the stages' processes effectively had: ``cores``, unless some stage's tasks
    slow down with the load more than all-CPU work on ``cores`` explains (its share fitted at 1
    and its full-speed times still significantly dependent on the speed at their start). Then
    the machine gave these processes fewer cores than it has (Celery's own main processes, the
    broker, other tenants, a hypervisor's steal): the most cores, down to one, at which every
    stage's slowdown is explained, found by bisection. Measured on the example app's 2-core VM:
    1.3 with one process per stage, 1.0 with Celery's rule growing the pools to 13. ``fit_on``:
    the machine's fit (:func:`_fit_machine`) on a number of cores.

    When even one core leaves some stage's slowdown unexplained, the host is written with one
    core: fewer cores is more slowdown with the load, so one is the nearest the host model comes
    (below one a task alone would be slowed). Keeping the stated cores instead, as this once
    did, wrote the weakest slowdown of all and left the moment's load to the item sizes, which a
    run on other arrivals does not have: on the example app at 8 uploads a second (docs/sim_to_real.md,
    "The load of the moment") write's residual was -0.315 at 2 cores, -0.119 at 1.2, -0.065 at
    1; written with 2, its simulated mean wait and p95 on live runs' arrivals (no fit saw them)
    fell 30 to 70 % short of live, every planner, with 1, 14 to 57 %."""
    if not _unexplained(fit_on(cores)[2]):
        return cores, f"tasks slow down with the load no more than {cores:g} cores explain"
    low = min(1.0, cores)
    if _unexplained(fit_on(low)[2]):
        return low, (
            f"tasks slow down with the load more than even {low:g} core explains (other load on the machine?): "
            f"the host is written with {low:g}, the most slowdown it can give"
        )
    high = cores
    while high - low > 1e-3 * cores:
        middle = (low + high) / 2
        low, high = (low, middle) if _unexplained(fit_on(middle)[2]) else (middle, high)
    return low, (
        f"tasks slow down with the load as on {low:.3g} of its {cores:g} cores (the most at which every stage's "
        "slowdown is explained): the host is written with those"
    )


def _unexplained(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The stages whose tasks, with shares fitted on some cores (``rows``), still slow down with the load
    more than all-CPU work explains: share 1, and the full-speed times' correlation with the
    speed at the start significantly negative (below -1.96 / sqrt(visits)) and material (below
    ``-RESIDUAL``: the expected-demand approximation leaves a little even on the true cores)."""
    return [
        s for s, r in rows.items()
        if r["cpu"] >= 1.0 and r.get("correlation_at_1", 0.0) < -max(1.96 / np.sqrt(r["visits"]), RESIDUAL)
    ]  # fmt: skip


def _dependence(wall: np.ndarray, mean_speed: np.ndarray, start_speed: np.ndarray, c: float) -> float:
    """Correlation of the full-speed times at CPU share ``c`` with the speed at the visit's start."""
    return float(np.corrcoef(wall / cpu_stretch(c, mean_speed), start_speed)[0, 1])


def busy_peak(timeline: Timeline, machine: str) -> int:
    """The most processes busy at once on ``machine``, over the recorded visits."""
    machines = _machines(timeline)
    spans = [
        np.asarray(obs.spans, dtype=float) for name, obs in timeline.stages.items()
        if obs.spans and machines[name] == {machine}
    ]  # fmt: skip
    if not spans:
        return 0
    return round(float(_demand(spans, [1.0] * len(spans))[1].max()))


def _demand(spans: list[np.ndarray], weights: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The busy processes of several stages (``spans``: each stage's (start, finish) rows),
    each counted with its stage's weight, as a step function: the times it changes (at a tie
    an end before a start: a process freed and one starting then are not busy together) and
    its value from each of them on."""
    times = np.concatenate([np.concatenate([s[:, 0], s[:, 1]]) for s in spans])
    steps = np.concatenate([np.repeat([w, -w], len(s)) for s, w in zip(spans, weights, strict=True)])
    order = np.lexsort((steps, times))
    return times[order], np.cumsum(steps[order])


def _machines(timeline: Timeline) -> dict[str, set[str]]:
    return {name: {machine_of(node) for _, (node, _) in obs.starts} for name, obs in timeline.stages.items()}


def _fit_machine(timeline: Timeline, stages: list[str], cores: float) -> MachineFit:
    """Every stage's CPU share on one machine, from all shares at 1 until they settle (each
    stage's demand on the cores depends on the others' shares); and each visit's stretch."""
    spans = {s: np.asarray(timeline.stages[s].spans, dtype=float) for s in stages}
    walls = {s: np.asarray(timeline.stages[s].services, dtype=float) for s in stages}
    shares = {s: 1.0 for s in stages}
    iteration, rows = 0, {}
    while iteration < ITERATIONS:
        iteration += 1
        speeds = _speeds(spans, shares, cores)
        rows = {s: _share(walls[s], *speeds[s]) for s in stages}
        new = {s: rows[s]["cpu"] for s in stages}
        moved = max(abs(new[s] - shares[s]) for s in stages)
        shares = new
        if moved < SETTLED:
            break
    speeds = _speeds(spans, shares, cores)
    stretch = {s: cpu_stretch(shares[s], speeds[s][0]) for s in stages}
    for s in stages:
        rows[s]["iterations"] = iteration
    return shares, stretch, rows


def _speeds(
    spans: dict[str, np.ndarray], shares: dict[str, float], cores: float
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per visit, the speed of its CPU work, ``min(1, cores / demand)``, averaged over its span,
    and its value when the visit started. The demand a visit's CPU work meets is itself plus
    the other busy processes weighted by their stages' CPU shares (each is computing that share
    of its time): the weighted count of busy processes, a step function of time, with the
    visit's own weight ``c`` replaced by 1."""
    times, demand = _demand(list(spans.values()), [shares[n] for n in spans])
    out = {}
    for name, span in spans.items():
        speed = np.minimum(1.0, cores / np.maximum(1.0, demand + 1.0 - shares[name]))  # on [times[k], times[k+1])
        area = np.concatenate([[0.0], np.cumsum(speed[:-1] * np.diff(times))])
        start, end = span[:, 0], span[:, 1]
        length = end - start
        integral = np.interp(end, times, area) - np.interp(start, times, area)
        mean = np.where(length > 0, integral / np.where(length > 0, length, 1.0), 1.0)
        at_start = speed[np.searchsorted(times, start, side="right") - 1]  # after every step at that time
        out[name] = (np.clip(mean, 1e-12, 1.0), at_start)
    return out


def _share(wall: np.ndarray, mean_speed: np.ndarray, start_speed: np.ndarray) -> dict[str, Any]:
    """The CPU share ``c`` whose full-speed times ``wall / (1 - c + c / mean_speed)`` no longer
    depend on the speed at the visit's start. That speed is an instrument: it was set before the
    visit's own length was drawn, while the mean over the span is not (a long visit averages
    over more of the machine's states, a short one may fall in a quiet moment)."""
    slowed = int((start_speed < 1.0 / STRETCHED).sum())
    row: dict[str, Any] = {"visits": int(wall.size), "started_slowed": slowed, "mean_speed": float(mean_speed.mean())}
    if slowed < MIN_STRETCHED or np.ptp(start_speed) == 0:
        return {**row, "cpu": 1.0, "note": "too few visits started with more CPU work than cores"}

    def dependence(c: float) -> float:
        return _dependence(wall, mean_speed, start_speed, c)

    raw = stats.pearsonr(wall, start_speed)
    row.update(raw_correlation=float(raw.statistic), raw_p=float(raw.pvalue))
    low, high = dependence(0.0), dependence(1.0)
    if low >= 0:
        cpu = 0.0  # no slower when started slowed: no CPU share to read
    elif high <= 0:
        cpu = 1.0  # slower than all-CPU work explains
    else:
        cpu = float(optimize.brentq(dependence, 0.0, 1.0, xtol=1e-6))
    return {**row, "cpu": cpu, "correlation_at_1": high}
