"""Scenario schema: the YAML a user writes, validated completely before a simulation starts.

A scenario declares arrival sources, stages (worker pools with a service-time distribution),
the routing between them, the SLA deadline, the horizon and the seed. The schema is documented
for users in ``configs/scenarios/README.md``; keep the two in step.

Why so strict: a typo in a scenario (``capacty:``) that silently falls back to a default makes
a week of experiments meaningless. Every model forbids unknown keys, and every error names the
field, the value and what was expected (see :func:`format_validation_error`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
"""Stage and source names end up in dotted metric keys (``stages.<name>.mean_wait``): no dots."""

SHIPPED_DIR_NAMES = ("configs/scenarios",)


class ScenarioError(ValueError):
    """A scenario that cannot be simulated; the message lists every problem, one per line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=1)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


# --------------------------------------------------------------------------------------------
# Profiles: a non-negative function of simulated time, used for arrival rates and bad-item rates.
# Each is vectorized (``at`` takes an array) because thinning evaluates thousands at once.
# --------------------------------------------------------------------------------------------
class Constant(_Strict):
    shape: Literal["constant"] = "constant"
    value: NonNegFloat

    def at(self, t: np.ndarray) -> np.ndarray:
        return np.full(np.shape(t), self.value, dtype=float)

    def peak(self) -> float:
        return self.value


class Piecewise(_Strict):
    """``values[i]`` holds from ``times[i]`` until ``times[i+1]``; optionally repeating every ``period``."""

    shape: Literal["piecewise"]
    times: list[NonNegFloat] = Field(min_length=1)
    values: list[NonNegFloat] = Field(min_length=1)
    period: PositiveFloat | None = None

    @model_validator(mode="after")
    def _check(self) -> Piecewise:
        if len(self.times) != len(self.values):
            raise ValueError(
                f"times has {len(self.times)} entries and values {len(self.values)}; expected the same number"
            )
        if self.times[0] != 0:
            raise ValueError(f"times[0] is {self.times[0]}; expected 0 (the profile starts at t=0)")
        if any(b <= a for a, b in zip(self.times, self.times[1:], strict=False)):
            raise ValueError(f"times {self.times} are not strictly increasing")
        if self.period is not None and self.times[-1] >= self.period:
            raise ValueError(f"last time {self.times[-1]} is not below period {self.period}")
        return self

    def at(self, t: np.ndarray) -> np.ndarray:
        tt = np.mod(t, self.period) if self.period is not None else t
        return np.asarray(self.values)[np.searchsorted(self.times, tt, side="right") - 1]

    def peak(self) -> float:
        return max(self.values)


class Diurnal(_Strict):
    """A sinusoid ``base + amplitude * cos(2*pi*(t - peak_time)/period)``: a daily load cycle."""

    shape: Literal["diurnal"]
    base: PositiveFloat
    amplitude: NonNegFloat
    period: PositiveFloat = 86400.0
    peak_time: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _check(self) -> Diurnal:
        if self.amplitude > self.base:
            raise ValueError(
                f"amplitude {self.amplitude} > base {self.base}; expected amplitude <= base "
                "so that the rate never goes negative"
            )
        return self

    def at(self, t: np.ndarray) -> np.ndarray:
        return self.base + self.amplitude * np.cos(2 * np.pi * (np.asarray(t) - self.peak_time) / self.period)

    def peak(self) -> float:
        return self.base + self.amplitude


class Spike(_Strict):
    """``base`` everywhere except ``peak`` during ``[start, start + duration)``: a step or a burst."""

    shape: Literal["spike"]
    base: NonNegFloat
    peak_value: NonNegFloat = Field(alias="peak")
    start: NonNegFloat
    duration: PositiveFloat = math.inf

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def at(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t)
        return np.where((t >= self.start) & (t < self.start + self.duration), self.peak_value, self.base)

    def peak(self) -> float:
        return max(self.base, self.peak_value)


class Ramp(_Strict):
    """``start_value`` until ``start``, linear to ``end_value`` at ``end``, then constant: a drift."""

    shape: Literal["ramp"]
    start: NonNegFloat
    end: NonNegFloat
    start_value: NonNegFloat
    end_value: NonNegFloat

    @model_validator(mode="after")
    def _check(self) -> Ramp:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} <= start {self.start}; expected end > start")
        return self

    def at(self, t: np.ndarray) -> np.ndarray:
        return np.interp(t, [self.start, self.end], [self.start_value, self.end_value])

    def peak(self) -> float:
        return max(self.start_value, self.end_value)


Profile = Annotated[Constant | Piecewise | Diurnal | Spike | Ramp, Field(discriminator="shape")]


def _rate_shorthand(value: Any) -> Any:
    """A bare number is a constant rate; it must be positive (a zero rate source is a typo)."""
    if isinstance(value, (bool, str)):
        raise ValueError(f"expected a rate > 0 (items/s) or a profile such as {{shape: diurnal, ...}}, got {value!r}")
    if isinstance(value, (int, float)):
        if not value > 0 or math.isinf(value):
            raise ValueError(f"expected a finite rate > 0, got {value!r}")
        return {"shape": "constant", "value": value}
    return value


def _probability_shorthand(value: Any) -> Any:
    if isinstance(value, (bool, str)):
        raise ValueError(f"expected a probability in [0, 1] or a profile such as {{shape: ramp, ...}}, got {value!r}")
    if isinstance(value, (int, float)):
        if not 0 <= value <= 1:
            raise ValueError(f"expected a probability in [0, 1], got {value!r}")
        return {"shape": "constant", "value": value}
    return value


RateProfile = Annotated[Profile, BeforeValidator(_rate_shorthand)]
ProbabilityProfile = Annotated[Profile, BeforeValidator(_probability_shorthand)]


# --------------------------------------------------------------------------------------------
# Routing: where an item goes after a source or a stage.
#   null                         -> the item leaves the system
#   "stage"                      -> one next stage
#   [{to: a, p: .7}, {to: b, p: .3}]   or {split: [...], controllable: true}  -> a random split
#   {attribute: flagged, routes: {true: quarantine, false: load}}           -> by item attribute
# --------------------------------------------------------------------------------------------
class Exit(_Strict):
    kind: Literal["exit"] = "exit"


class Direct(_Strict):
    kind: Literal["direct"] = "direct"
    to: Name


class Branch(_Strict):
    to: Name | None
    p: Probability


class Split(_Strict):
    """A probabilistic split. ``controllable`` marks it as one a planner may change at run time."""

    kind: Literal["split"] = "split"
    split: list[Branch] = Field(min_length=1)
    controllable: bool = False

    @model_validator(mode="after")
    def _check(self) -> Split:
        total = sum(b.p for b in self.split)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"split probabilities sum to {total:g}; expected 1")
        targets = [b.to for b in self.split]
        if len(set(targets)) != len(targets):
            raise ValueError(f"split names a target twice: {targets}")
        return self


ATTRIBUTE_VALUES: dict[str, tuple[str, ...] | None] = {
    "quality": ("good", "bad"),
    "flagged": ("true", "false"),
    "source": None,  # the scenario's source names
}


class ByAttribute(_Strict):
    """Route on an item attribute: ``quality`` (good/bad, the truth), ``flagged`` (true/false, what
    a validation stage detected) or ``source`` (the source's name). Every value must be routed."""

    kind: Literal["attribute"] = "attribute"
    attribute: Literal["quality", "flagged", "source"]
    routes: dict[str, Name | None]

    @field_validator("routes", mode="before")
    @classmethod
    def _keys_to_str(cls, value: Any) -> Any:
        # YAML reads `true:` as a boolean key; the attribute value is the lower-case string.
        if isinstance(value, dict):
            return {(str(k).lower() if isinstance(k, bool) else k): v for k, v in value.items()}
        return value


def _route_shorthand(value: Any) -> Any:
    if value is None:
        return {"kind": "exit"}
    if isinstance(value, str):
        return {"kind": "direct", "to": value}
    if isinstance(value, list):
        return {"kind": "split", "split": value}
    if isinstance(value, dict) and "kind" not in value:
        if "split" in value:
            return {"kind": "split", **value}
        if "attribute" in value:
            return {"kind": "attribute", **value}
        raise ValueError(
            f"expected null, a stage name, a list of {{to, p}} branches, {{split: [...]}} or "
            f"{{attribute: ..., routes: ...}}; got {value!r}"
        )
    return value


Route = Annotated[
    Exit | Direct | Split | ByAttribute,
    Field(discriminator="kind"),
    BeforeValidator(_route_shorthand),
]


def route_targets(route: Exit | Direct | Split | ByAttribute) -> list[str | None]:
    """Every place a route can send an item (``None`` is the exit)."""
    if isinstance(route, Exit):
        return [None]
    if isinstance(route, Direct):
        return [route.to]
    if isinstance(route, Split):
        return [b.to for b in route.split]
    return list(route.routes.values())


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


class MMPPSource(_SourceBase):
    """Two-state Markov-modulated Poisson process: rate ``rates[s]`` while in state ``s``; the
    state is left at rate ``switch_rates[s]`` (mean sojourn ``1/switch_rates[s]`` seconds)."""

    process: Literal["mmpp"]
    rates: tuple[NonNegFloat, NonNegFloat]
    switch_rates: tuple[PositiveFloat, PositiveFloat]
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
    file: Path
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
    max: int = Field(ge=1)
    startup_delay: NonNegFloat = 0.0
    cost_per_second: NonNegFloat = 1.0

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
    cv: PositiveFloat | None = None
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
    latency: PositiveFloat


class Scenario(_Strict):
    """A whole workflow. See ``configs/scenarios/README.md`` for the user-facing schema."""

    name: Name
    description: str = ""
    horizon: PositiveFloat
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
            for target in route_targets(route):
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

    def controllable_splits(self) -> dict[str, Split]:
        """The splits a planner may change, keyed by their owner (a source or stage name)."""
        owners: dict[str, Any] = {n: s.to for n, s in self.sources.items()}
        owners.update({n: s.next for n, s in self.stages.items()})
        return {n: r for n, r in owners.items() if isinstance(r, Split) and r.controllable}


def _trapping_cycle(scenario: Scenario) -> list[str]:
    """A cycle of stages from which no route reaches the exit, or ``[]``.

    Every branch counts, including those with p=0, because a planner may raise them later."""
    succ = {n: route_targets(s.next) for n, s in scenario.stages.items()}
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


# --------------------------------------------------------------------------------------------
# Loading and errors
# --------------------------------------------------------------------------------------------
def shipped_scenarios_dir() -> Path:
    """Where the shipped scenarios live: inside an installed wheel, or the source checkout."""
    packaged = Path(__file__).resolve().parents[1] / "_configs" / "scenarios"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "configs" / "scenarios"


def shipped_scenarios() -> list[str]:
    return sorted(p.stem for p in shipped_scenarios_dir().glob("*.yaml"))


def resolve_scenario_path(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or the name of a shipped scenario (``mmc``, ``etl_diurnal``...)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ScenarioError(f"scenario file {str(path)!r} does not exist")
        return path
    candidate = shipped_scenarios_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise ScenarioError(
        f"scenario {str(name_or_path)!r} is neither a file nor a shipped scenario; "
        f"expected a path or one of: {', '.join(shipped_scenarios())}"
    )


def load_scenario(name_or_path: str | Path | Scenario, **overrides: Any) -> Scenario:
    """Load, validate and return a scenario; raise :class:`ScenarioError` listing every problem.

    ``overrides`` replace top-level fields (``seed=3``, ``horizon=500``) and are validated too."""
    if isinstance(name_or_path, Scenario):
        if not overrides:
            return name_or_path
        data, label, base = name_or_path.model_dump(mode="json", by_alias=True), name_or_path.name, None
    else:
        path = resolve_scenario_path(name_or_path)
        label, base = str(path), path.resolve().parent
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{label}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ScenarioError(f"{label}: expected a mapping of scenario fields, got {type(data).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return parse_scenario(data, label=label, base_dir=base)


def parse_scenario(data: dict[str, Any], label: str = "scenario", base_dir: Path | None = None) -> Scenario:
    """Validate a scenario given as a dict (relative trace paths resolve against ``base_dir``)."""
    try:
        return Scenario.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(exc, data, label)) from None


_DISCRIMINATORS = ("process", "shape", "kind", "dist")


def _clean_loc(data: Any, loc: tuple[Any, ...]) -> str:
    """Turn pydantic's error location into the path a user wrote.

    Pydantic inserts union tags (``poisson``, ``split``, ``float``) into locations; drop every
    part that does not exist in the user's data, so ``sources.jobs.poisson.rate`` reads
    ``sources.jobs.rate``."""
    parts: list[str] = []
    node = data
    for part in loc:
        if isinstance(node, dict):
            tag = any(node.get(k) == part for k in _DISCRIMINATORS) and part not in node
            if tag:
                continue
            parts.append(str(part))
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            if parts:
                parts[-1] += f"[{part}]"
            node = node[part] if part < len(node) else None
        else:
            continue  # a union label inside a scalar or list: not part of the user's path
    return ".".join(parts)


def format_validation_error(exc: ValidationError, data: Any, label: str) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        where = _clean_loc(data, tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {err['loc'][-1]!r}; check the spelling against configs/scenarios/README.md"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "union_tag_invalid":
            key = str(err["ctx"]["discriminator"]).strip("'")
            where = f"{where}.{key}" if where else key
            msg = f"{err['ctx']['tag']!r} is not known; expected one of {err['ctx']['expected_tags']}"
        elif err["type"] == "union_tag_not_found":
            key = str(err["ctx"]["discriminator"]).strip("'")
            msg = f"needs a {key!r} field; got {err['input']!r}"
        elif err["type"] != "value_error":
            msg = f"{msg} (got {err['input']!r})"
        for line in msg.split("\n"):
            lines.append(f"{where}: {line}" if where else line)
    return f"{label}: invalid scenario\n  " + "\n  ".join(dict.fromkeys(lines))
