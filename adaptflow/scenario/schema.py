"""Scenario schema: the YAML a user writes, validated completely before a simulation starts.

A scenario declares arrival sources, stages (worker pools with a service-time distribution),
the routing between them, the SLA deadline, the horizon and the seed. The schema is documented
for users in ``configs/scenarios/README.md``; keep the two in step.

Why so strict: a typo in a scenario (``capacty:``) that silently falls back to a default makes
a week of experiments meaningless. Every model forbids unknown keys, and every error names the
field, the value and what was expected (see :func:`adaptflow.scenario.loading.format_validation_error`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from .base import Name, NonNegFloat, PositiveFloat, Probability, _Strict
from .profiles import Constant, ProbabilityProfile, RateProfile
from .routing import ATTRIBUTE_VALUES, ByAttribute, Exit, Route, Split

# Sane bounds: far beyond any real workflow, and small enough that no arithmetic on them
# overflows (a worker pool's cost over a horizon, a gamma's shape 1/cv**2).
MAX_CV = 100.0
MAX_PRICE = 1e9
MAX_WORKERS = 100_000
MAX_HORIZON = 1e9  # seconds: about 32 years of simulated time
MAX_ITEMS = 20_000_000
"""Default bound on the arrivals one run or episode may ask for (about a minute of simulation);
checked against :meth:`Scenario.expected_arrivals` before any work starts."""
MAX_STEPS = 1_000_000
"""Bound on the decisions of an episode or the windows of a time series (``horizon / interval``)."""


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------
class Quality(_Strict):
    """Share of bad items a source emits, possibly drifting over time (a profile of probabilities)."""

    bad_rate: ProbabilityProfile = Field(default_factory=lambda: Constant(value=0.0))

    @field_validator("bad_rate")
    @classmethod
    def _at_most_one(cls, profile: Any) -> Any:
        if profile.peak() > 1:
            raise ValueError(f"bad_rate reaches {profile.peak()}; expected a probability <= 1")
        return profile


class _SourceBase(_Strict):
    to: Route
    quality: Quality = Field(default_factory=Quality)

    @field_validator("to")
    @classmethod
    def _not_exit(cls, route: Any) -> Any:
        if isinstance(route, Exit):
            raise ValueError("a source must route to a stage; got null")
        return route


class PoissonSource(_SourceBase):
    """Poisson arrivals; a time-varying ``rate`` profile is sampled exactly by thinning."""

    process: Literal["poisson"]
    rate: RateProfile

    @field_validator("rate")
    @classmethod
    def _some_load(cls, profile: Any) -> Any:
        if not profile.peak() > 0:
            raise ValueError("rate profile is zero everywhere; expected a peak rate > 0")
        return profile


def _list_as_tuple(value: Any) -> Any:
    """YAML and JSON write a pair as a list; strict mode wants a tuple (its items stay strict)."""
    return tuple(value) if isinstance(value, list) else value


class MMPPSource(_SourceBase):
    """Two-state Markov-modulated Poisson process: rate ``rates[s]`` while in state ``s``; the
    state is left at rate ``switch_rates[s]`` (mean sojourn ``1/switch_rates[s]`` seconds)."""

    process: Literal["mmpp"]
    rates: Annotated[tuple[NonNegFloat, NonNegFloat], BeforeValidator(_list_as_tuple)]
    switch_rates: Annotated[tuple[PositiveFloat, PositiveFloat], BeforeValidator(_list_as_tuple)]
    initial_state: Literal[0, 1] = 0

    @field_validator("rates")
    @classmethod
    def _some_load(cls, rates: tuple[float, float]) -> tuple[float, float]:
        if max(rates) <= 0:
            raise ValueError(f"rates {list(rates)} are both zero; expected at least one > 0")
        return rates


class TraceSource(_SourceBase):
    """Replay of a CSV of arrival timestamps (seconds, non-decreasing), with an optional
    ``size`` column that multiplies the item's service time at every stage."""

    process: Literal["trace"]
    file: Path = Field(strict=False)  # a path is written as a string
    time_column: str = "timestamp"
    size_column: str = "size"

    @field_validator("file")
    @classmethod
    def _resolve_and_check(cls, path: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        if not path.is_absolute() and base is not None:
            path = Path(base) / path
        path = path.resolve()
        load_trace(path, info.data.get("time_column", "timestamp"), info.data.get("size_column", "size"))
        return path


def load_trace(
    path: Path, time_column: str = "timestamp", size_column: str = "size"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read and check a trace: every problem is a ``ValueError`` that says what was expected."""
    import pandas as pd

    if not path.is_file():
        raise ValueError(f"trace file {str(path)!r} does not exist; expected a CSV of arrival timestamps")
    try:
        frame = pd.read_csv(path)
    except Exception as exc:  # pandas raises a zoo of parser errors
        raise ValueError(f"trace file {str(path)!r} is not a readable CSV: {exc}") from None
    if time_column not in frame.columns:
        raise ValueError(f"trace file {str(path)!r} has no column {time_column!r}; found {list(frame.columns)}")
    times = pd.to_numeric(frame[time_column], errors="coerce").to_numpy(dtype=float)
    if len(times) == 0:
        raise ValueError(f"trace file {str(path)!r} has no rows; expected at least one arrival")
    bad = np.flatnonzero(~np.isfinite(times) | (times < 0))
    if len(bad):
        row = int(bad[0])
        raise ValueError(
            f"trace file {str(path)!r} row {row + 1}: timestamp {frame[time_column].iloc[row]!r}; "
            "expected a number >= 0"
        )
    down = np.flatnonzero(np.diff(times) < 0)
    if len(down):
        row = int(down[0]) + 1
        raise ValueError(
            f"trace file {str(path)!r} is not sorted: row {row + 1} has timestamp {times[row]:g} "
            f"after {times[row - 1]:g}; expected non-decreasing timestamps"
        )
    sizes = None
    if size_column in frame.columns:
        sizes = pd.to_numeric(frame[size_column], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(sizes) | (sizes <= 0))
        if len(bad):
            row = int(bad[0])
            raise ValueError(
                f"trace file {str(path)!r} row {row + 1}: size {frame[size_column].iloc[row]!r}; expected a number > 0"
            )
    return times, sizes


Source = Annotated[PoissonSource | MMPPSource | TraceSource, Field(discriminator="process")]


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------
class Workers(_Strict):
    """The pool: ``initial`` workers at t=0, kept within ``[min, max]``. A new worker is ready
    ``startup_delay`` seconds after it is requested; every provisioned worker (starting, idle or
    busy) costs ``cost_per_second``."""

    initial: int = Field(ge=0)
    min: int = Field(default=0, ge=0)
    max: int = Field(ge=1, le=MAX_WORKERS)
    startup_delay: NonNegFloat = 0.0
    # Bounded so that a run's cost stays a finite number (1e308 made the cost infinite).
    cost_per_second: Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)] = 1.0

    @model_validator(mode="after")
    def _check(self) -> Workers:
        if self.min > self.max:
            raise ValueError(f"min is {self.min} and max is {self.max}; expected min <= max")
        if not self.min <= self.initial <= self.max:
            raise ValueError(
                f"initial is {self.initial}; expected a value within [min, max] = [{self.min}, {self.max}]"
            )
        return self


class Service(_Strict):
    """Service time of one attempt, in seconds. ``mean`` for every parametric distribution;
    ``cv`` (coefficient of variation) for lognormal and gamma; ``samples`` for empirical."""

    dist: Literal["exponential", "deterministic", "lognormal", "gamma", "empirical"]
    mean: PositiveFloat | None = None
    # Bounded so that the distributions' parameters stay finite (a gamma's shape is 1/cv**2).
    cv: Annotated[float, Field(gt=0, le=MAX_CV, allow_inf_nan=False)] | None = None
    samples: list[PositiveFloat] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Service:
        if self.dist == "empirical":
            if self.samples is None:
                raise ValueError("dist 'empirical' needs samples: [...]; got none")
            if self.mean is not None or self.cv is not None:
                raise ValueError("dist 'empirical' takes only samples; remove mean and cv")
            return self
        if self.mean is None:
            raise ValueError(f"dist {self.dist!r} needs mean (seconds); got none")
        if self.samples is not None:
            raise ValueError(f"dist {self.dist!r} takes no samples; remove them")
        needs_cv = self.dist in ("lognormal", "gamma")
        if needs_cv and self.cv is None:
            raise ValueError(f"dist {self.dist!r} needs cv (coefficient of variation); got none")
        if not needs_cv and self.cv is not None:
            raise ValueError(f"dist {self.dist!r} takes no cv; got cv={self.cv}")
        return self

    def expected(self) -> float:
        """Mean service time, for theory checks and planners."""
        return float(np.mean(self.samples)) if self.dist == "empirical" else float(self.mean)  # type: ignore[arg-type]


class QueueSpec(_Strict):
    """``capacity``: how many items may wait (not counting those in service); beyond it an
    arriving item is dropped. ``null`` is unbounded."""

    capacity: int | None = Field(default=None, ge=0)


class Failure(_Strict):
    """Each attempt fails with ``prob`` (after its full service time); a failed item is queued
    again at the back, up to ``max_retries`` times, and then given up as a failed item."""

    prob: Probability
    max_retries: int = Field(default=0, ge=0)


class Validation(_Strict):
    """This stage checks quality: it flags a bad item with ``detect_prob`` and a good one with
    ``false_positive_prob``. Route on ``flagged`` afterwards. A bad item that leaves the system
    unflagged is a quality escape."""

    detect_prob: Probability
    false_positive_prob: Probability = 0.0


class Stage(_Strict):
    workers: Workers
    service: Service
    queue: QueueSpec = Field(default_factory=QueueSpec)
    failure: Failure | None = None
    validation: Validation | None = None
    next: Route = Field(default_factory=Exit)


class Sla(_Strict):
    """The end-to-end deadline: an item is late once ``latency`` seconds have passed since it was
    created, whether it is still in the system, completed or dropped. This class is the one rule
    of lateness; the simulator and the live monitor both ask it."""

    latency: PositiveFloat

    def is_late(self, created: float, now: float) -> bool:
        """Whether an item created at ``created`` has passed its deadline at ``now``."""
        return now - created > self.latency

    def cutoff(self, now: float) -> float:
        """Items created before this time have passed their deadline at ``now`` (for a scan
        over items in creation order: ``while items[0].created < sla.cutoff(now)``)."""
        return now - self.latency


class Scenario(_Strict):
    """A whole workflow. See ``configs/scenarios/README.md`` for the user-facing schema."""

    name: Name
    description: str = ""
    horizon: Annotated[float, Field(gt=0, le=MAX_HORIZON, allow_inf_nan=False)]
    seed: int = Field(default=0, ge=0)
    sla: Sla
    sources: dict[Name, Source] = Field(min_length=1)
    stages: dict[Name, Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_graph(self) -> Scenario:
        problems: list[str] = []
        clash = sorted(set(self.sources) & set(self.stages))
        if clash:
            problems.append(f"names {clash} are both a source and a stage; expected distinct names")
        routes = {f"sources.{n}.to": s.to for n, s in self.sources.items()}
        routes.update({f"stages.{n}.next": s.next for n, s in self.stages.items()})
        stage_list = ", ".join(self.stages)
        for where, route in routes.items():
            for target in route.targets():
                if target is not None and target not in self.stages:
                    problems.append(
                        f"{where}: routes to {target!r}, which is not a stage; expected one of: {stage_list}"
                    )
            if isinstance(route, ByAttribute):
                allowed = ATTRIBUTE_VALUES[route.attribute] or tuple(self.sources)
                unknown = sorted(set(route.routes) - set(allowed))
                missing = [v for v in allowed if v not in route.routes]
                if unknown:
                    problems.append(
                        f"{where}.routes: {unknown} are not values of {route.attribute!r}; "
                        f"expected keys from {list(allowed)}"
                    )
                if missing:
                    problems.append(
                        f"{where}.routes: no route for {route.attribute} = {missing}; expected every value routed"
                    )
        if problems:
            raise ValueError("\n".join(problems))
        cycle = _trapping_cycle(self)
        if cycle:
            raise ValueError(
                f"routing cycle with no exit: {' -> '.join(cycle)}; expected every stage to have a path to the exit"
            )
        return self

    def expected_arrivals(self, horizon: float | None = None) -> float:
        """About how many items the sources emit over ``horizon`` (default: the scenario's): the
        work a run asks for, estimated before any of it is done (a profile's mean rate from a
        fine grid, an MMPP's stationary rate, a trace's rows)."""
        horizon = self.horizon if horizon is None else horizon
        return float(sum(_expected_count(source, horizon) for source in self.sources.values()))

    def controllable_splits(self) -> dict[str, Split]:
        """The splits a planner may change, keyed by their owner (a source or stage name)."""
        owners: dict[str, Any] = {n: s.to for n, s in self.sources.items()}
        owners.update({n: s.next for n, s in self.stages.items()})
        return {n: r for n, r in owners.items() if isinstance(r, Split) and r.controllable}


def _expected_count(source: Any, horizon: float) -> float:
    if isinstance(source, PoissonSource):
        grid = np.linspace(0.0, horizon, 20_001)
        return float(np.mean(source.rate.at(grid))) * horizon
    if isinstance(source, MMPPSource):
        (r0, r1), (s0, s1) = source.rates, source.switch_rates
        return (r0 * s1 + r1 * s0) / (s0 + s1) * horizon  # stationary share of state 0 is s1/(s0+s1)
    times, _ = load_trace(source.file, source.time_column, source.size_column)
    return float(np.searchsorted(times, horizon))


def _trapping_cycle(scenario: Scenario) -> list[str]:
    """A cycle of stages from which no route reaches the exit, or ``[]``.

    Every branch counts, including those with p=0, because a planner may raise them later."""
    succ = {n: s.next.targets() for n, s in scenario.stages.items()}
    can_exit: set[str] = set()
    changed = True
    while changed:
        changed = False
        for node, targets in succ.items():
            if node not in can_exit and any(t is None or t in can_exit for t in targets):
                can_exit.add(node)
                changed = True
    trapped = [n for n in scenario.stages if n not in can_exit]
    if not trapped:
        return []
    # Every trapped stage only leads to trapped stages, so walking forward must revisit one.
    path, node = [], trapped[0]
    while node not in path:
        path.append(node)
        node = next(t for t in succ[node] if t is not None)
    return [*path[path.index(node) :], node]
