"""The speed a live run's own tasks met, read back through the simulation (``--live-speed``).

A live run of a user's app serves at whatever speed the machine had at that moment; the
calibrated scenario assumes the recording's. To tell a gap of the model from a gap of the
machine, compare-app replays the run with each host at the speed its tasks met
(:func:`settle_speeds`) and each stage's service scaled to its own live mean
(:func:`live_services`), and judges that row as well (``compare_app.agreement``'s ``cause``).

Why a search and not one step: a host's simulated services depend on its speed *and* on how
many processes share its cores, and a planner whose pools follow their queues grows more
processes as the speed drops. One step (:func:`live_speeds`, the ratio of simulated to live
service applied once) therefore overshoots for such a planner (measured on the example app:
erlang's one step read the machine at 0.66 where its simulation, sharing the cores among the
processes the simulation grew, then served 1.6 times slower than live). :func:`settle_speeds`
looks for the speed at which the simulation's own services meet the live ones, pools and all:
a root of :func:`service_gaps` in the log of each host's speed: one step, then secants until
the root is bracketed, then false position.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adaptflow.scenario import Scenario, parse_scenario

SPEED_TOLERANCE = 0.03
"""A host's simulated services within 3 % (geometric mean over its stages) of the live ones:
settled. Finer than the 10 % the figures are judged by, coarser than a seed's noise on them."""
SPEED_ROUNDS = 6
"""Most replays (of all seeds each) :func:`settle_speeds` may run; the nearest one is kept."""
REACH = 4.0
"""A secant step of the search goes at most this many one-steps far (a noisy pair of replays
can make the secant's slope nearly flat)."""
SPEED_RANGE = (0.05, 20.0)
"""The speeds searched: a machine 20 times slower or faster than its calibration is not a speed."""


def with_speeds(scenario: Scenario, speeds: dict[str, float]) -> Scenario:
    """``scenario`` with each host in ``speeds`` at that ``speed`` (``Host.speed``: its CPU
    work and turnarounds take ``1 / speed`` as long as calibrated)."""
    if not speeds:
        return scenario
    data = scenario.model_dump(mode="json", by_alias=True)
    for name, speed in speeds.items():
        data["hosts"][name]["speed"] = speed
    return parse_scenario(data)


def with_service_scales(scenario: Scenario, scales: dict[str, float]) -> Scenario:
    """``scenario`` with each stage in ``scales`` serving that many times as long
    (:meth:`~adaptflow.scenario.schema.Service.scaled`)."""
    if not scales:
        return scenario
    data = scenario.model_dump(mode="json", by_alias=True)
    for name, factor in scales.items():
        data["stages"][name]["service"] = scenario.stages[name].service.scaled(factor).model_dump(mode="json")
    return parse_scenario(data)


def service_gaps(scenario: Scenario, timing: dict[str, float], simulated_row: dict[str, Any]) -> dict[str, float]:
    """Per host, the log of the geometric mean over the stages placed on it of the simulated
    mean service over the live one (``service_<stage>`` of ``simulated_row`` and ``timing``):
    above 0, the simulation served slower than the run did. Why the geometric mean: a stage
    twice as slow and one half as slow cancel, as they would on one machine's speed. Hosts with
    no stage measured both ways are left out."""
    out = {}
    for name in scenario.hosts:
        ratios = [
            simulated_row.get(f"service_{stage}", math.nan) / timing.get(f"service_{stage}", math.nan)
            for stage, spec in scenario.stages.items()
            if spec.host == name
        ]
        logs = [math.log(r) for r in ratios if math.isfinite(r) and r > 0]
        if logs:
            out[name] = math.fsum(logs) / len(logs)
    return out


def live_speeds(
    scenario: Scenario, timing: dict[str, float], simulated_row: dict[str, Any], speeds: dict[str, float]
) -> dict[str, float]:
    """One step toward each host's speed as the run's tasks met it: the speed it was simulated
    at (``speeds``, else its ``speed``) times its :func:`service_gaps` ratio. Exact for pools
    that do not move and a host never oversubscribed; otherwise the first step of
    :func:`settle_speeds`."""
    return {
        name: speeds.get(name, scenario.hosts[name].speed) * math.exp(gap)
        for name, gap in service_gaps(scenario, timing, simulated_row).items()
    }


@dataclass
class _Search:
    """One host's search in ``log(speed)`` for a gap of 0 (the gap falls as the speed rises):
    steps (:meth:`_step`) until a point on each side brackets the root, then false position with
    the Illinois rule (an end kept twice has its gap halved) so that a curved gap does not pin
    one end for ever."""

    slow: tuple[float, float] | None = None  # (log speed, gap > 0): the simulation served slower
    fast: tuple[float, float] | None = None  # (log speed, gap < 0)
    kept: str = ""  # which end the last point did not replace
    seen: list[tuple[float, float]] = field(default_factory=list)

    def add(self, x: float, gap: float) -> None:
        self.seen.append((x, gap))
        side = "slow" if gap > 0 else "fast"
        setattr(self, side, (x, gap))
        other = "fast" if side == "slow" else "slow"
        end = getattr(self, other)
        if end is not None and self.kept == other:
            setattr(self, other, (end[0], end[1] / 2))
        self.kept = other

    def next(self) -> float:
        if self.slow is not None and self.fast is not None:
            (xs, gs), (xf, gf) = self.slow, self.fast
            return xs - gs * (xf - xs) / (gf - gs)
        low, high = (math.log(v) for v in SPEED_RANGE)
        return min(max(self.seen[-1][0] + self._step(), low), high)

    def _step(self) -> float:
        """No bracket yet: the secant through the last two points, where they show the gap
        falling, at most :data:`REACH` one-steps far; else one step, as :func:`live_speeds` (a
        gap falling by 1 per unit of log speed). Why the secant: a host whose stages are mostly
        I/O moves its services less than its speed, and one step at a time would creep towards
        the root without crossing it (a stage of CPU share 0.3 closes 30 % of the gap a step)."""
        x, gap = self.seen[-1]
        if len(self.seen) >= 2:
            xp, gp = self.seen[-2]
            if x != xp and (gap - gp) / (x - xp) < 0:
                secant = -gap * (x - xp) / (gap - gp)
                return math.copysign(min(abs(secant), REACH * abs(gap)), gap)
        return gap


@dataclass
class SettledSpeeds:
    """What :func:`settle_speeds` found: each host's speed, the replay's row at them, each
    host's remaining gap (simulated over live service, minus 1) and the replays it ran."""

    speeds: dict[str, float]
    row: dict[str, Any]
    gaps: dict[str, float]
    rounds: int


def settle_speeds(
    scenario: Scenario,
    timing: dict[str, float],
    first: dict[str, Any],
    speeds: dict[str, float],
    replay: Callable[[dict[str, float]], dict[str, Any]],
    tolerance: float = SPEED_TOLERANCE,
    rounds: int = SPEED_ROUNDS,
) -> SettledSpeeds:
    """Each host's speed at which the simulation's own services meet the run's (``timing``),
    its pools included: from ``first``, the row simulated at ``speeds`` (else each host's
    ``speed``), at most ``rounds`` calls of ``replay`` (host -> speed, to a simulated row), all
    hosts searched at once (each by its own :class:`_Search`: a host's gap hangs mostly on its
    own speed). Stops when every host's gap is within ``tolerance`` or a replay measured some
    host's services no more; keeps the replay nearest the live services (its largest host gap
    smallest). Hosts not measured both ways are left out (:func:`service_gaps`)."""
    gaps = service_gaps(scenario, timing, first)
    at = {h: speeds.get(h, scenario.hosts[h].speed) for h in gaps}
    searches = {h: _Search() for h in gaps}
    best, used = (at, first, gaps), 0
    while used < rounds and math.log1p(tolerance) < _worst(gaps) < math.inf:
        for host, gap in gaps.items():
            searches[host].add(math.log(at[host]), gap)
        at = {h: math.exp(search.next()) for h, search in searches.items()}
        row = replay(at)
        used += 1
        gaps = {h: service_gaps(scenario, timing, row).get(h, math.nan) for h in at}
        if _worst(gaps) < _worst(best[2]):
            best = (at, row, gaps)
    return SettledSpeeds(best[0], best[1], {h: math.expm1(g) for h, g in best[2].items()}, used)


def _worst(gaps: dict[str, float]) -> float:
    """The largest host gap in size; infinite when some host's services were not measured."""
    return max((abs(g) if math.isfinite(g) else math.inf for g in gaps.values()), default=0.0)


def live_services(scenario: Scenario, timing: dict[str, float], simulated_row: dict[str, Any]) -> dict[str, float]:
    """Each hosted stage's service scale left at the speed ``simulated_row`` ran at: the live
    mean service over the simulated one (``service_<stage>`` of ``timing`` and ``simulated_row``).
    Why per stage: on one machine at one moment the stages did not slow alike (a slow quarter
    hour of the example app: write's service ran 1.29 times the simulation's, validate's 1.08),
    and a stage staffed near saturation turns a few per cent of service into tens of per cent
    of wait. Stages not measured both ways, or on no host, are left out."""
    out = {}
    for stage, spec in scenario.stages.items():
        seen, assumed = timing.get(f"service_{stage}", math.nan), simulated_row.get(f"service_{stage}", math.nan)
        if spec.host is not None and all(math.isfinite(x) and x > 0 for x in (seen, assumed)):
            out[stage] = seen / assumed
    return out


__all__ = [
    "SPEED_RANGE",
    "SPEED_ROUNDS",
    "SPEED_TOLERANCE",
    "SettledSpeeds",
    "live_services",
    "live_speeds",
    "service_gaps",
    "settle_speeds",
    "with_service_scales",
    "with_speeds",
]
