"""The data that flows between agents: Monitor -> MetricsSnapshot -> Analyzer -> Insights ->
Planner -> Plan -> Executor -> Applied.

Plain slotted dataclasses, not pydantic models: a Gymnasium step builds one of each, and at tens
of thousands of steps per second validation would cost more than the simulation. Data that
comes from outside (the planner service, live adapters) is validated at that border instead.
Nothing here assumes SimPy: a live Celery monitor fills the same fields.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from adaptflow._json import to_jsonable

# What a field means to a request from outside: the planner service builds its request schema
# from these dataclasses, so the fields are written once. Unmarked fields are optional there (0,
# or False, when left out); the marks say otherwise.
REQUIRED = {"required": True}  # state a caller must send
NAN_AS_NULL = {"nan": True}  # NaN here is ``null`` in JSON (nothing to measure)


def _keyed(keys: str) -> dict[str, Any]:
    """A mapping keyed by the scenario's ``stages``, ``sources`` or ``splits``: a request must
    name exactly those."""
    return {"request": {"keys": keys}}


@dataclass(slots=True)
class StageMetrics:
    """One stage over the last interval (counts, means) and at its end (state)."""

    queue_length: int = field(metadata={"request": REQUIRED})  # waiting now
    busy: int = field(metadata={"request": REQUIRED})  # workers serving now
    active: int = field(metadata={"request": REQUIRED})  # ready workers now (idle + busy)
    starting: int  # requested, not ready yet
    # where the pool is heading (ready, not retiring, plus starting)
    target: int = field(metadata={"request": REQUIRED})
    arrivals: int  # visits that entered in the interval
    completed: int
    drops: int
    failures: int
    detected: int  # items flagged by this stage's validation
    mean_wait: float = field(metadata={"request": NAN_AS_NULL})  # NaN if nothing started service
    mean_queue_length: float
    # busy / ready worker time; NaN with no ready workers. A hair above 1 is a ratio of two time
    # integrals rounded apart (busy and ready worker-seconds), not an error: the encoder clips it.
    utilization: float = field(metadata={"request": {**NAN_AS_NULL, "le": 1 + 1e-6}})
    worker_seconds: float  # provisioned (billed) worker time
    cost: float  # worker_seconds x price


@dataclass(slots=True)
class MetricsSnapshot:
    """What a Monitor reads at a decision time: the interval that just ended, and the state now."""

    time: float = field(metadata={"request": REQUIRED})
    interval: float = field(metadata={"request": REQUIRED})  # 0: the first snapshot of a run
    stages: dict[str, StageMetrics] = field(metadata=_keyed("stages"))
    source_arrivals: dict[str, int] = field(metadata=_keyed("sources"))  # per source, in the interval
    completed: int  # left the system
    drops: int
    failed: int  # given up after retries
    sla_violations: int
    escapes: int  # bad items that left unflagged (known in simulation and to the live load generator)
    caught: int
    mean_latency: float = field(metadata={"request": NAN_AS_NULL})
    splits: dict[str, dict[str | None, float]] = field(default_factory=dict, metadata=_keyed("splits"))
    # filled only when the monitor is asked for percentiles
    p95_latency: float = field(default=math.nan, metadata={"request": NAN_AS_NULL})
    in_system: int = 0  # items queued or in service now
    # The workload's calendar second now (a recorded series' own clock; a live system's wall
    # clock), NaN when the load has none: time-of-day features read it (see agents.encoding).
    calendar: float = field(default=math.nan, metadata={"request": NAN_AS_NULL})
    # SLA violations weighted by their job class's late_weight (a scenario with classes); NaN:
    # every violation weighs 1. What the cost model prices, where sla_violations is the count.
    sla_violation_units: float = field(default=math.nan, metadata={"request": NAN_AS_NULL})
    # Fork/join: parts waiting at each join now (by join stage, "exit" for join: null).
    join_waiting: dict[str, int] = field(default_factory=dict, metadata=_keyed("joins"))
    # Job classes: items of each class in the system now (created, not gone).
    class_backlog: dict[str, int] = field(default_factory=dict, metadata=_keyed("classes"))

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))


@dataclass(slots=True)
class Insights:
    """What an Analyzer adds: estimated and forecast arrival rates (items/s) per source, the
    estimated rate into each stage, and anomaly flags."""

    rates: dict[str, float] = field(metadata=_keyed("sources"))
    forecasts: dict[str, list[float]] = field(metadata=_keyed("sources"))  # per source, the next k intervals
    stage_rates: dict[str, float] = field(metadata=_keyed("stages"))
    # estimated share of bad items (from validation flags)
    bad_rate: float = field(default=math.nan, metadata={"request": {**NAN_AS_NULL, "le": 1}})
    drift: bool = False  # a drift of the bad-item rate was detected
    # named from the flags above: a request does not send them
    anomalies: list[str] = field(default_factory=list, metadata={"request": {"omit": True}})

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))


@dataclass(slots=True)
class Plan:
    """What a Planner decides: target workers per stage and split probabilities per split
    owner. A stage or split left out keeps its current setting."""

    workers: dict[str, int] = field(default_factory=dict)
    splits: dict[str, dict[str | None, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))


@dataclass(slots=True)
class Applied:
    """What the Executor actually did: the plan after the safety envelope (bounds, largest
    change per decision), and a note for every value it had to change."""

    workers: dict[str, int]
    splits: dict[str, dict[str | None, float]]
    clamps: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))


@dataclass(slots=True, frozen=True)
class CostComponents:
    """Cost of one interval, in the scenario's currency (worker cost) and weighted penalties.

    Immutable, readable as a mapping (``cost["sla"]``, ``cost["total"]``, ``dict(cost)``), and
    copied by reference: SB3's DummyVecEnv deep-copies every step's ``info``, and a dict here
    would cost a deep copy per step of training."""

    workers: float
    sla: float
    drops: float
    escapes: float
    backlog: float = 0.0  # at the end of an episode only: items left unfinished

    KEYS: ClassVar[tuple[str, ...]] = ("workers", "sla", "drops", "escapes", "backlog", "total")

    @property
    def total(self) -> float:
        return self.workers + self.sla + self.drops + self.escapes + self.backlog

    def __add__(self, other: CostComponents) -> CostComponents:
        return CostComponents(
            self.workers + other.workers,
            self.sla + other.sla,
            self.drops + other.drops,
            self.escapes + other.escapes,
            self.backlog + other.backlog,
        )

    def __getitem__(self, key: str) -> float:
        if key not in self.KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def keys(self) -> tuple[str, ...]:
        return self.KEYS

    def __deepcopy__(self, memo: dict) -> CostComponents:
        return self

    def to_dict(self) -> dict[str, float]:
        return {key: self[key] for key in self.KEYS}
