"""A live run: the one Coordinator loop against Celery workers on a Redis broker.

:class:`LiveConfig` is the YAML of ``adaptflow live CONFIG`` (validated before anything runs);
:func:`build_loop` assembles the live ControlLoop (monitor, executor and clock wrapped so that a
Redis outage is survived); :func:`run_live` runs a Planner through it, wrapped in a
:class:`~adaptflow.runtime.fallback.FallbackPlanner`, and writes the same JSONL event log as a
simulated episode, plus, for a guarded learned planner
(:class:`~adaptflow.policies.guard.GuardedPlanner`), one record per takeover and hand-back of
its guard (``{"event": "guard_takeover" | "guard_handback", "time", "decision", ...}``, written
before the record of the decision it concerns; decision records have no ``event``). Planners
are passed in built: turning a spec (``threshold``, ``onnx:PATH``) into a planner is
:mod:`adaptflow.experiments`' job (runtime imports agents and policies only).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from celery import Celery
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adaptflow._validation import format_problems
from adaptflow.agents import (
    ControlLoop,
    Coordinator,
    CostModel,
    CostWeights,
    EventLog,
    Planner,
)
from adaptflow.agents.analyzers import StandardAnalyzer, analyzer_options, saved_analyzer
from adaptflow.agents.safety import envelope_for
from adaptflow.policies.guard import GuardedPlanner
from adaptflow.scenario.loading import load_scenario, resolve_scenario_path
from adaptflow.scenario.schema import Scenario

from .celery_app import context_of, make_app
from .fallback import FallbackPlanner
from .live import (
    CeleryExecutor,
    CeleryMonitor,
    LiveTotals,
    Outage,
    PoolLedger,
    ResilientExecutor,
    ResilientMonitor,
    WallClock,
    live_envelope,
)
from .worker import node_name

log = logging.getLogger(__name__)


class EnvelopeConfig(BaseModel):
    """The executor's safety envelope beyond the scenario's bounds (``max_step`` processes per
    decision, ``cooldown`` scenario seconds between changes of a stage)."""

    model_config = ConfigDict(extra="forbid")
    max_step: int | None = Field(default=None, ge=1)
    cooldown: float = Field(default=0.0, ge=0)


class LiveConfig(BaseModel):
    """What ``adaptflow live`` runs. Times are scenario seconds; ``time_scale`` says how much
    faster than the scenario the live system runs (the workers must be started with the same)."""

    model_config = ConfigDict(extra="forbid")
    broker: str = Field(description="Redis broker URL, e.g. redis://127.0.0.1:6379/0")
    scenario: str = Field(description="a scenario YAML (relative to this config) or a shipped scenario's name")
    planner: str = "threshold"
    fallback: str = Field(default="static", description="baseline planner used when the planner fails")
    interval: float = Field(default=30.0, gt=0)
    duration: float = Field(gt=0, le=7 * 86400, description="scenario seconds, at most a week")
    time_scale: float = Field(default=1.0, gt=0)
    envelope: EnvelopeConfig = Field(default_factory=EnvelopeConfig)
    workers: dict[str, str] = Field(default_factory=dict, description="stage -> Celery node name (%h: host)")
    event_log: Path = Path("runs/live/events.jsonl")
    prefix: str = "adaptflow"
    cost: CostWeights = Field(default_factory=CostWeights)
    inspect_timeout: float = Field(default=2.0, gt=0)
    outage_grace: float = Field(default=math.inf, ge=0, description="scenario s past the end to wait for Redis")
    visibility_timeout: float | None = Field(
        default=None,
        gt=0,
        description="wall seconds before a dead worker's unacknowledged visits are redelivered; default "
        "4 x the longest expected visit / time_scale, at least 10 (celery_app.default_visibility_timeout)",
    )

    @field_validator("broker")
    @classmethod
    def _broker_is_redis(cls, broker: str) -> str:
        if not broker.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{broker!r}: expected a Redis URL (redis://host:port/db)")
        return broker

    def load_scenario(self) -> Scenario:
        return load_scenario(self.scenario)

    def worker_names(self, scenario: Scenario) -> dict[str, str]:
        """Every stage's worker: the configured name, or ``<stage>@<host>``."""
        unknown = sorted(set(self.workers) - set(scenario.stages))
        if unknown:
            raise ValueError(f"workers names stages {unknown}; the scenario's stages: {list(scenario.stages)}")
        return {stage: self.workers.get(stage, node_name(stage)) for stage in scenario.stages}


def load_live_config(path: str | Path, **overrides: Any) -> LiveConfig:
    """Read and validate a live config; a relative scenario path resolves against the config's
    directory. Every problem is one line of the ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"live config {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of live settings")
    data.update({k: v for k, v in overrides.items() if v is not None})
    scenario = data.get("scenario")
    if isinstance(scenario, str) and scenario.endswith((".yaml", ".yml")) and not Path(scenario).is_absolute():
        candidate = path.parent / scenario
        if candidate.is_file():
            data["scenario"] = str(candidate)
    try:
        config = LiveConfig.model_validate(data)
        resolve_scenario_path(config.scenario)
    except ValidationError as exc:
        raise ValueError(format_problems(exc, data, f"{path}: invalid live config")) from None
    return config


@dataclass
class LiveLoop:
    """The live ControlLoop and the parts a caller may want to look at."""

    loop: ControlLoop
    monitor: ResilientMonitor
    executor: ResilientExecutor
    ledger: PoolLedger
    clock: WallClock

    @property
    def celery_monitor(self) -> CeleryMonitor:
        return self.monitor.monitor


def build_loop(
    app: Celery,
    workers: dict[str, str],
    interval: float,
    *,
    max_step: int | None = None,
    cooldown: float = 0.0,
    forecaster: str = "ewma",
    forecast_steps: int = 4,
    weights: CostWeights | None = None,
    give_up_after: float = math.inf,
    inspect_timeout: float = 2.0,
    managed: bool = True,
    analyzer: StandardAnalyzer | None = None,
) -> LiveLoop:
    """The live loop on ``app``'s workers (``{stage: node name}``), its clock starting now.

    ``analyzer``: the planner's (:func:`live_analyzer`); by default one with ``forecaster``
    and ``forecast_steps``. ``managed=False``: the workers run Celery's own autoscaler; the executor then only writes
    splits (a pool plan would be refused by the workers) and the monitor reads the pools."""
    ctx = context_of(app)
    ledger = PoolLedger(app, workers, timeout=inspect_timeout).sync()
    clock = WallClock(ctx.time_scale)
    envelope = live_envelope(ctx.scenario, max_step=max_step, cooldown=cooldown)
    if not managed:
        envelope.bounds = {}  # nothing to resize: a plan naming a pool is an error
    executor = ResilientExecutor(CeleryExecutor(app, ledger, clock, envelope, timeout=inspect_timeout))
    monitor = ResilientMonitor(
        CeleryMonitor(app, ledger, clock, percentiles=True, inspect_timeout=inspect_timeout, empty_start=True),
        executor,
        give_up_after=give_up_after,
        backoff_cap=max(0.5, min(5.0, interval / ctx.time_scale)),
    )
    analyzer = analyzer or live_analyzer(ctx.scenario, interval, None, forecaster, forecast_steps)
    loop = ControlLoop(monitor, analyzer, executor, clock, CostModel(weights), interval)
    return LiveLoop(loop, monitor, executor, ledger, clock)


def live_analyzer(
    scenario: Scenario,
    interval: float,
    planner: Planner | None = None,
    forecaster: str = "ewma",
    forecast_steps: int = 4,
) -> StandardAnalyzer:
    """The analyzer ``planner`` runs with live: the one it carries (an exported planner's
    sidecar), or an EWMA one, with no simulation. Only a Holt-Winters forecaster with nothing
    saved (a rule, a sidecar older than saved analyzers) is fitted, by simulation on the Sim
    side, with a logged warning: the live loop should not have to run SimPy."""
    saved = saved_analyzer(planner, scenario, interval, forecaster) if planner is not None else None
    if saved is not None:
        return saved
    options = {"forecaster": forecaster, "forecast_steps": forecast_steps, **analyzer_options(planner, forecaster)}
    if options["forecaster"] == "ewma":
        return StandardAnalyzer.for_scenario(scenario, interval, **options)
    from adaptflow.agents.fitting import fit_analyzer

    log.warning("fitting a %s analyzer for %r by simulation (none saved)", options["forecaster"], scenario.name)
    return fit_analyzer(scenario, interval, **options)


@dataclass
class LiveResult:
    """A live run in sums: its decisions are in the event log, not kept (a long run would hold
    every snapshot: about 4 KB a decision)."""

    decisions: int
    cost: float  # the cost model's total over the run's intervals
    worker_seconds: float  # the workers paid for, every stage, over the run
    totals: LiveTotals
    outages: list[Outage]  # the latest (live.outage.MAX_OUTAGES_KEPT)
    fallbacks: int
    fallback_reason: str | None
    event_log: Path | None
    final_pools: dict[str, int] = field(default_factory=dict)
    takeovers: int = 0  # by the guard of a guarded planner (each also a record in the event log)


def run_live(
    app: Celery,
    workers: dict[str, str],
    planner: Planner,
    fallback: Planner,
    *,
    interval: float,
    duration: float,
    event_log: str | Path | None = None,
    forecaster: str = "ewma",
    max_step: int | None = None,
    cooldown: float = 0.0,
    weights: CostWeights | None = None,
    outage_grace: float = math.inf,
    inspect_timeout: float = 2.0,
    managed: bool = True,
    live: LiveLoop | None = None,
) -> LiveResult:
    """Run ``planner`` (with ``fallback`` taking over when it fails or answers outside the
    scenario's bounds) against the live workers for ``duration`` scenario seconds, one decision
    every ``interval``; write one JSONL record per decision to ``event_log``, and one per
    takeover and hand-back of a guarded planner's guard."""
    ctx = context_of(app)
    live = live or build_loop(
        app, workers, interval, max_step=max_step, cooldown=cooldown, weights=weights,
        analyzer=live_analyzer(ctx.scenario, interval, planner, forecaster),
        give_up_after=duration + outage_grace, inspect_timeout=inspect_timeout, managed=managed,
    )  # fmt: skip
    guarded = FallbackPlanner(planner, fallback, envelope_for(ctx.scenario))
    log_file = EventLog(event_log) if event_log is not None else None
    listening = isinstance(planner, GuardedPlanner) and log_file is not None
    if listening:
        planner.add_listener(log_file.write)
    decisions, cost, worker_seconds = 0, 0.0, 0.0
    try:
        for step in Coordinator(live.loop, guarded, log_file).steps(until=duration):
            decisions, cost = decisions + 1, cost + step.cost.total
            worker_seconds += sum(stage.worker_seconds for stage in step.snapshot.stages.values())
    finally:
        if listening:
            planner.remove_listener(log_file.write)
        if log_file is not None:
            log_file.close()
    return LiveResult(
        decisions=decisions,
        cost=cost,
        worker_seconds=worker_seconds,
        totals=live.celery_monitor.totals,
        outages=list(live.monitor.outages),
        fallbacks=guarded.fallbacks,
        fallback_reason=guarded.last_reason,
        takeovers=guarded.takeovers,
        event_log=Path(event_log) if event_log is not None else None,
        final_pools=live.ledger.targets(),
    )


def run_live_config(config: LiveConfig, planner: Planner, fallback: Planner, forecaster: str = "ewma") -> LiveResult:
    """:func:`run_live` as a :class:`LiveConfig` says (the app is built from it)."""
    scenario = config.load_scenario()
    app = make_app(
        scenario, config.broker, config.time_scale, config.prefix, visibility_timeout=config.visibility_timeout
    )
    return run_live(
        app, config.worker_names(scenario), planner, fallback,
        interval=config.interval, duration=config.duration, event_log=config.event_log, forecaster=forecaster,
        max_step=config.envelope.max_step, cooldown=config.envelope.cooldown, weights=config.cost,
        outage_grace=config.outage_grace, inspect_timeout=config.inspect_timeout,
    )  # fmt: skip
