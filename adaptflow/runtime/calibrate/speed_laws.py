"""One scenario of a host's laws by the machine's speed, from fits made on days of different speeds
(``adaptflow laws-by-speed``).

``adaptflow fit-growth --session-speed`` fits a host's laws (how Celery's hand-offs and way in
grow with the processes, and how much of the cores its own work takes) from one session of
live runs at held pools, and writes them with the speed that session met. On a shared VM those
laws are the session's: on the example app fit sets at speeds 1.08, 1.44 and 1.48 read
hand-offs x1.95-2.65, x1.40-1.74 and x1.21-1.43 from 5 to 10 processes, and one session's fit
missed a held-out set of the same hour by 13 % where another's held it within 5 %. This module
puts such fits side by side as the host's ``by_speed`` entries
(:class:`~adaptflow.scenario.schema.LawsAtSpeed`), so that a replay at a run's own speed meets
the laws of that speed (:meth:`Scenario.laws_at_speed`): on seven held-out sets closer than any
one fit, mostly for the averaging of the sessions' draws, a little for the speed.

Each fit keeps its runs paired within their session (its runs at other pools against its own
reference runs); pooling every session's runs in one fit-growth pairs a run at 10 processes
with a reference run of another day, and its laws mean nothing (on the example app its
hand-offs at 10 read x1.73-3.16).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from adaptflow.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from adaptflow.scenario.loading import load_yaml_file
from adaptflow.scenario.schema import HOST_LAWS, MAX_LAW_SPEEDS, LawsAtSpeed, Stage

from .celery_cpu import at_grid_top
from .growth import _write_scenario, hosted_stages

HOST_KEYS = (*HOST_LAWS, "speed", "by_speed", "pulse", "cores")
"""A host's keys a fit may change: its laws, the speed they hold at, its cores (``--visit-cpu``
searches them: the entry's ``cores``) and the pulse read at it
(``--session-speed``: the session's idle pulses over its runs' own speeds, the pulse of speed 1
in that session; the laws by speed take the geometric mean of the fits' where every fit has one,
:func:`_sessions_pulse`)."""
STAGE_KEYS = ("service", "cpu", "turnaround", "dispatch_delay")
"""A hosted stage's keys a fit may change: Celery's CPU fit rescales services and sets shares,
and the levels settled at the reference rescale turnarounds and dispatch delays."""
GridTop = Literal["refuse", "skip", "keep"]
GRID_TOP_CHOICES: tuple[GridTop, ...] = ("refuse", "skip", "keep")
"""What ``laws-by-speed`` does with a fit whose Celery CPU law sits at its grid's top."""
SAME = 1e-6
"""Relative difference below which two seconds are one (a fit writes its rescaled floats whole)."""


@dataclass(frozen=True)
class SpeedLaws:
    """What ``laws-by-speed`` wrote: the entries, slowest first, and a line for each fit left out
    (``grid_top="skip"``)."""

    entries: list[LawsAtSpeed]
    left_out: list[str]


def laws_by_speed_file(
    calibration: str | Path, fits: Sequence[str | Path], out: str | Path, host: str | None = None,
    grid_top: GridTop = "refuse",
) -> SpeedLaws:  # fmt: skip
    """The scenario at ``calibration`` with ``host``'s laws by speed (``by_speed``), one entry per
    scenario of ``fits`` (each fitted from ``calibration`` by ``fit-growth --session-speed`` on
    a session of its own: its host's laws, at its speed, and its stages' rescaled services,
    levels and shares), written to ``out`` atomically after every check. The host's own ``speed`` stays the
    calibration's (a replay without a measured speed runs at it). A fit whose Celery CPU law sits
    at the top of the grid fit-growth searched (:func:`~.celery_cpu.at_grid_top`, the fit the
    docs say to distrust) is refused (``grid_top="refuse"``), left out with a line
    (``"skip"``), or kept (``"keep"``)."""
    if grid_top not in GRID_TOP_CHOICES:
        raise ValueError(f"--grid-top: {grid_top!r}; expected one of {', '.join(GRID_TOP_CHOICES)}")
    if len(fits) < 2:
        raise ValueError(f"FIT: {len(fits)} given; expected two or more fits to put side by side")
    base = load_scenario(calibration)
    host, stages = hosted_stages(base, host)
    problems = [
        f"{calibration}: hosts.{host}.{law}: {getattr(base.hosts[host], law)!r}; expected the calibration fit-growth "
        "started from, without laws (each FIT holds its own)"
        for law in (*HOST_LAWS, "by_speed")
        if getattr(base.hosts[host], law) not in (None, 0.0, [])
    ]
    kept, left_out = _read_fits(base, list(map(Path, fits)), host, stages, grid_top, problems)
    entries = [entry for _, entry, _ in kept]
    if grid_top == "skip" and len(entries) < 2 and not problems:
        problems += [*left_out, f"FIT: {len(entries)} left beside the fits at their grid's top; expected two or more"]
    entries.sort(key=lambda e: e.speed)
    speeds = [e.speed for e in entries]
    clashes = sorted({a for a, b in itertools.pairwise(speeds) if a == b})
    if clashes:
        problems.append(
            f"FIT: speeds {clashes} met twice; expected each fit at a speed of its own (the session's, which "
            "fit-growth --session-speed writes)"
        )
    if len(entries) > MAX_LAW_SPEEDS:
        problems.append(f"FIT: {len(entries)} fits; expected at most {MAX_LAW_SPEEDS}")
    if problems:
        raise ValueError("\n".join(problems))
    data = load_yaml_file(calibration)
    data["hosts"][host]["by_speed"] = [e.model_dump(mode="json", exclude_defaults=True) for e in entries]
    pulse = _sessions_pulse([pulse for _, _, pulse in kept], base.hosts[host].pulse)
    if pulse is not None:
        data["hosts"][host]["pulse"] = pulse
    out = Path(out)
    try:
        parse_scenario(data, label=str(out), base_dir=out.parent.resolve())
    except ScenarioError as exc:
        raise ScenarioError(f"{exc}\n--out: write it beside the calibration, whose trace paths are relative") from None
    names = ", ".join(str(path) for path, _, _ in kept)
    header = f"# {Path(calibration).name}, hosts.{host}.by_speed from {names} (adaptflow laws-by-speed)\n"
    _write_scenario(out, header, data)
    return SpeedLaws(entries, left_out)


def _sessions_pulse(pulses: list[float | None], calibrated: float | None) -> float | None:
    """The geometric mean of the fits' ``pulses`` of speed 1, where each fit wrote one of its
    session (``fit-growth --session-speed``; not the calibration's ``calibrated``); else None
    (the calibration's pulse stays).

    Why not the calibration's: the pulse follows the machine's speed at under half the amplitude
    the app's tasks meet, so the recording's pulse, read on another day (7,818 on the example app,
    where three sessions' were 8,526-9,072), read the held-out runs some 15 % fast: 5 of 40 planner
    cells within 10 % at the pulse on five sets, 21 with the sessions' mean. Each session's pulse
    is read against its runs' own speeds on the calibration's scale, the one the fits' ``speed``
    is on (docs/sim_to_real.md)."""
    if any(p is None or p == calibrated for p in pulses):
        return None
    return round(math.exp(math.fsum(math.log(p) for p in pulses) / len(pulses)), 1)


def _read_fits(
    base: Scenario, fits: list[Path], host: str, stages: list[str], grid_top: GridTop, problems: list[str]
) -> tuple[list[tuple[Path, LawsAtSpeed, float | None]], list[str]]:
    """Each fit's entry and its host's pulse, where it is a fit of ``base`` (else its lines in
    ``problems``) and not at its grid's top (refused into ``problems`` or, with
    ``grid_top="skip"``, a line left out)."""
    kept: list[tuple[Path, LawsAtSpeed, float | None]] = []
    left_out: list[str] = []
    for path in fits:
        fit = load_scenario(path)
        found = _differences(base, fit, host, stages, path)
        problems += found
        top = [] if found or grid_top == "keep" else at_grid_top(fit, host, base, stages)
        if top:
            line = (f"{path}: hosts.{host}: {', '.join(top)}, the top of the grid fit-growth searched; expected a law "
                    "inside it (its runs at more processes likely met a slower machine, or their services' spread "
                    "grew faster than any law spreads it: its fit report says which; run that fit set again; "
                    "--grid-top skip leaves such a fit out, keep keeps it)")  # fmt: skip
            (problems if grid_top == "refuse" else left_out).append(line)
        elif not found:
            kept.append((path, _entry(base, fit, host, stages), fit.hosts[host].pulse))
    return kept, left_out


def _entry(base: Scenario, fit: Scenario, host: str, stages: list[str]) -> LawsAtSpeed:
    """``fit``'s host laws at its speed, and how its stages' services, shares and levels differ
    from ``base``'s."""
    spec = fit.hosts[host]
    cpu = {s: fit.stages[s].cpu_share for s in stages if fit.stages[s].cpu_share != base.stages[s].cpu_share}
    multiples = {what: {s: f for s in stages if abs((f := factor(base.stages[s], fit.stages[s])) - 1) > SAME}
                 for what, factor in FACTORS.items()}  # fmt: skip
    cores = None if _same(spec.cores, base.hosts[host].cores) else spec.cores
    laws = {law: getattr(spec, law) for law in HOST_LAWS}
    return LawsAtSpeed(speed=spec.speed, cores=cores, **laws, cpu=cpu, **multiples)


def _ratio(fitted: float, calibrated: float) -> float:
    """How many times ``calibrated`` ``fitted`` is (1 where the calibration has none: 0 stays 0)."""
    return fitted / calibrated if calibrated > 0 else 1.0


FACTORS: dict[str, Callable[[Stage, Stage], float]] = {
    "services": lambda base, fit: _ratio(fit.service.expected(), base.service.expected()),
    "turnarounds": lambda base, fit: _ratio(fit.turnaround, base.turnaround),
    "dispatches": lambda base, fit: _ratio(fit.dispatch_mean(), base.dispatch_mean()),
}
"""How a fit rescaled a stage, by :class:`LawsAtSpeed`'s field: its mean service, turnaround
and dispatch delay over the calibration's."""


def _differences(base: Scenario, fit: Scenario, host: str, stages: list[str], path: Path) -> list[str]:
    """Why ``fit`` (read from ``path``) is not a fit of ``base``: anything changed beyond
    ``host``'s laws, speed and cores and its stages' services, turnarounds and dispatch delays
    (by one factor each) and shares."""
    if host not in fit.hosts:
        return [f"{path}: hosts: no host {host!r}; expected a fit of the calibration's"]
    if fit.hosts[host].by_speed:
        return [f"{path}: hosts.{host}.by_speed: already laws by speed; expected one fit-growth's output"]
    problems = [
        f"{path}: {where}: differs from the calibration's; expected a fit-growth of it (only the host's laws and "
        "speed, its cores, its stages' services, levels and shares changed)"
        for where in _changed(_core(base, host, stages), _core(fit, host, stages))
    ]  # fmt: skip
    for s in (s for s in stages if s in fit.stages):
        was, now = base.stages[s], fit.stages[s]
        factor = FACTORS["services"](was, now)
        if not _same(was.service.scaled(factor).model_dump(), now.service.model_dump()):
            problems.append(f"{path}: stages.{s}.service: not the calibration's scaled by one factor; expected "
                            "fit-growth's rescaling of it")  # fmt: skip
        levels = was.with_levels(FACTORS["turnarounds"](was, now), FACTORS["dispatches"](was, now))
        for key in ("turnaround", "dispatch_delay"):
            if not _same(_dumped(getattr(levels, key)), _dumped(getattr(now, key))):
                problems.append(f"{path}: stages.{s}.{key}: not the calibration's scaled by one factor; expected "
                                "fit-growth's level of it")  # fmt: skip
    return problems


def _dumped(value: Any) -> Any:
    """A stage's value as data: a distribution's fields, a number as it is."""
    return value.model_dump() if hasattr(value, "model_dump") else float(value)


def _core(scenario: Scenario, host: str, stages: list[str]) -> dict[str, Any]:
    """``scenario`` as data without what a fit may change."""
    data = scenario.model_dump(mode="json")
    data["hosts"][host] = {k: v for k, v in data["hosts"][host].items() if k not in HOST_KEYS}
    for s in stages:
        if s in data["stages"]:
            data["stages"][s] = {k: v for k, v in data["stages"][s].items() if k not in STAGE_KEYS}
    return data


def _changed(a: Any, b: Any, where: str = "") -> list[str]:
    """The paths (``stages.parse.workers``) at which ``a`` and ``b`` differ, at most one per top key."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            found = _changed(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
            out += found[:1]
        return out
    return [] if _same(a, b) else [where]


def _same(a: Any, b: Any) -> bool:
    """Equal, floats within :data:`SAME` of each other, lists item by item."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=SAME, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return not _changed(a, b)
    return a == b
