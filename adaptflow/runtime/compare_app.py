"""Planners compared live on a user's Celery app, on the same arrivals.

:func:`compare_on_app` runs each planner in turn against the app's own workers, each run on the
same work: the user's producer command (which submits its arrivals reproducibly, e.g.
``python -m examples.etl_app.produce --rate 4 --duration 60 --seed 7``) is started once per run,
after the run's monitor is receiving the app's events. Before a run the app is left to empty
(no message queued, none reserved or running) and the mapped workers' pools are put back to the
scenario's initial sizes, so no planner inherits another's backlog or pools; a planner that holds
fixed pools whatever it sees (``static:pool=2``, :meth:`~adaptflow.agents.Planner.held_pools`)
starts at those instead, so that its run is held at them from its first second (the runs
``fit-growth`` reads; two sizes then interleave in one ``--repeat``).

A run is the Coordinator loop of ``adaptflow control`` with the executor of ``adaptflow live``:
the planner (a registry spec: ``static``, ``keda:target=2``, ``celery``, ``onnx:DIR``...) behind
a :class:`~.fallback.FallbackPlanner` with Erlang staffing, a :class:`~.live.CeleryMonitor` on
the app's events through its mapping, a :class:`~.live.CeleryExecutor` resizing the mapped
workers' pools through the safety envelope, both inside the outage wrappers. It decides every
``interval`` while the producer runs, then until every arrival has left or ``drain`` seconds have
passed; every run is bounded by ``limit`` seconds (a producer still running then is stopped), so
the transitions it keeps are bounded too.

The figures are those of ``adaptflow compare-live`` (:mod:`adaptflow.experiments.compare_live`),
computed here from the same parts (the runtime does not import the experiments): the cost is the
sum of the :class:`~adaptflow.agents.CostModel` totals of the run's intervals (the stages'
worker cost plus the SLA, drop and escape penalties), ``worker_cost`` the stages' cost alone.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from celery import Celery

from adaptflow._signals import sigterm_as_interrupt
from adaptflow.agents import (
    Clock,
    ControlLoop,
    Coordinator,
    CostModel,
    EventLog,
    MetricsSnapshot,
    Monitor,
    Plan,
    Planner,
)
from adaptflow.agents.analyzers import StandardAnalyzer
from adaptflow.agents.coordinator import Transition, read_event_log
from adaptflow.policies.guard import GuardedPlanner
from adaptflow.policies.registry import check_trusted, split_label
from adaptflow.scenario import Scenario, load_scenario, save_scenario

from .celery_app import redis_client
from .compare_progress import Progress, scenario_digest
from .fallback import FallbackPlanner, live_planner
from .live import (
    CeleryExecutor,
    CeleryMonitor,
    LiveTotals,
    PoolLedger,
    ResilientExecutor,
    ResilientMonitor,
    WallClock,
    live_envelope,
)
from .live.events import EventStream
from .live.handoff import Attempt, mean_handoff, mean_idle_wait
from .live.mapping import AppMapping, load_mapping
from .live.nodes import NodeReader
from .live.spread import service_cv_of
from .live.system import EventSource, app_system
from .probe import cpu_probe, cpu_ticks, shares_since, speed_against
from .pulses import PULSES_FILE, PulseSampler, idle_rate, read_pulses
from .record import RunRecording, load_app, require_broker
from .service_client import is_service_spec
from .worker import expand_node

log = logging.getLogger(__name__)

FALLBACK = "erlang"
"""The rule that decides when a compared planner fails (as ``adaptflow control``'s default)."""


@dataclass(frozen=True)
class AppUnderTest:
    """The user's app and what adaptflow knows of it, loaded once for every run."""

    app: Celery
    mapping: AppMapping
    scenario: Scenario
    inspect_timeout: float = 2.0
    spec: str = ""  # MODULE:APP, as a run's recording names the app

    @property
    def workers(self) -> dict[str, str]:
        return self.mapping.workers()


@dataclass(frozen=True)
class RunSettings:
    """How each planner's run goes (wall seconds): ``produce`` is the producer's argv, run in
    ``cwd`` with ``env``; ``settle``: the longest wait for the app to empty and the pools to
    take their starting sizes; ``limit``: the longest run."""

    produce: tuple[str, ...]
    interval: float
    drain: float
    event_log_dir: Path | None = None
    cwd: Path | None = None
    env: Mapping[str, str] | None = None
    settle: float = 120.0
    limit: float = 3600.0


# -- before a run: an empty app, starting pools --------------------------------------------------
def _busy(target: AppUnderTest) -> dict[str, int]:
    """Messages queued in the broker, reserved or running on a mapped worker, by where."""
    client = redis_client(str(target.app.conf.broker_url))
    out = {q: int(client.llen(q)) for names in target.mapping.queues().values() for q in names}
    names = [expand_node(w) for w in target.workers.values()]
    inspect = target.app.control.inspect(destination=names, timeout=target.inspect_timeout)
    for kind, answer in (("active", inspect.active()), ("reserved", inspect.reserved())):
        for worker, tasks in (answer or {}).items():
            out[f"{worker} {kind}"] = len(tasks or [])
    return {where: n for where, n in out.items() if n}


def wait_idle(target: AppUnderTest, timeout: float) -> None:
    """Wait until nothing is queued, reserved or running in the app (the previous run's items
    have left); a ``RuntimeError`` naming what is still there after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (busy := _busy(target)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if busy:
        raise RuntimeError(
            f"the app is still busy after {timeout:g} s ({busy}); expected empty queues and idle workers"
        )


def reset_pools(target: AppUnderTest, timeout: float, start: dict[str, int] | None = None) -> dict[str, int]:
    """Put every mapped worker's pool back to its size in ``start``, else the scenario's initial
    size (through the executor and its envelope: the live minimum of one process) and wait until
    the workers list that many processes, steadily.

    Why steadily: the previous run's last decision may have grown a pool whose new process starts
    only at the pool's next maintenance tick, after the shrink made here; it then lists one more
    process than the run should start with (seen with ``--repeat``: a KEDA run after a KEDA run,
    2 of 5 times). So the pools count as reset only once the list has matched for
    ``PoolLedger.SETTLE`` seconds, and a list that stops matching (or never matched in that time)
    is resized again from a fresh reading; a ``RuntimeError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    listed: dict[str, int] = {}
    wanted: dict[str, int] = {}
    while time.monotonic() < deadline:
        ledger = PoolLedger(target.app, target.workers, timeout=target.inspect_timeout).sync()
        executor = CeleryExecutor(
            target.app, ledger, WallClock(), timeout=target.inspect_timeout, scenario=target.scenario
        )
        initial = {
            name: (start or {}).get(name, stage.workers.initial)
            for name, stage in target.scenario.stages.items()
            if name in ledger.pools
        }
        wanted = executor.apply(Plan(workers=initial)).workers
        if _holds(ledger, wanted, deadline):
            return wanted
        listed = _listed(ledger)
    raise RuntimeError(f"the workers list {listed} processes after {timeout:g} s; expected the starting pools {wanted}")


def _holds(ledger: PoolLedger, wanted: dict[str, int], deadline: float) -> bool:
    """Whether the workers list ``wanted`` processes for ``ledger.SETTLE`` seconds in a row; False
    as soon as the list stops matching, if it has not matched ``SETTLE`` seconds after the resize,
    or at ``deadline``."""
    start, since = time.monotonic(), None
    while (now := time.monotonic()) < deadline:
        if _listed(ledger) == wanted:
            since = now if since is None else since
            if now - since >= ledger.SETTLE:
                return True
        elif since is not None or now - start >= ledger.SETTLE:
            return False
        time.sleep(0.5)
    return False


def _listed(ledger: PoolLedger) -> dict[str, int]:
    stats = ledger.stats()
    return {
        stage: len(stats.get(pool.worker, {}).get("pool", {}).get("processes", []))
        for stage, pool in ledger.pools.items()
    }


# -- the producer --------------------------------------------------------------------------------
class Producer:
    """The user's producer command as a subprocess (its own session, so stopping it stops its
    children), its output in ``log_path`` (or a temporary file)."""

    def __init__(self, argv: Sequence[str], log_path: Path | None, cwd: Path | None, env: Mapping[str, str] | None):
        self.argv = list(argv)
        # closed by check(), which every run reaches (the context manager's exit)
        self._log: IO[bytes] = log_path.open("w+b") if log_path else tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            self.argv, cwd=cwd, env=dict(env) if env is not None else None,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.exited_at: float | None = None  # wall time.monotonic() when first seen exited

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        """Stop it if it outlived the run; after a run that finished, raise its failure."""
        self.stop()
        self.check(raise_failure=kind is None)

    def done(self) -> bool:
        if self.exited_at is None and self.process.poll() is not None:
            self.exited_at = time.monotonic()
        return self.exited_at is not None

    def stop(self) -> None:
        """Stop it if it still runs (SIGTERM to its session, SIGKILL after 10 s)."""
        if self.process.poll() is None:
            log.warning("producer %s still running at the run's end: stopped", self.argv)
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def check(self, raise_failure: bool = True) -> None:
        """A producer that failed makes the run meaningless: an error with its output's tail."""
        rc = self.process.wait()
        self._log.seek(0)
        tail = self._log.read()[-2000:].decode(errors="replace")
        self._log.close()
        if rc != 0 and raise_failure:
            raise RuntimeError(f"producer {self.argv} exited with {rc}; expected 0. Its output ends:\n{tail}")


# -- the run's end -------------------------------------------------------------------------------
class RunClock(Clock):
    """The run's wall clock, which reads ``until`` once the run is over, so that the Coordinator
    (which decides while its clock is before ``until``) stops after the decision in course."""

    def __init__(self, clock: WallClock, until: float):
        self.clock, self.until, self.over = clock, until, False

    def now(self) -> float:
        return self.until if self.over else self.clock.now()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


class EndWatch(Monitor):
    """The run's monitor, which after each observation ends the run (:class:`RunClock`) once the
    producer has exited and then every arrival has left (completed, dropped or failed, nothing
    queued or running) or ``drain`` seconds have passed; or at the clock's ``until``."""

    def __init__(self, monitor: ResilientMonitor, clock: RunClock, producer: Producer, drain: float):
        self.monitor, self.clock, self.producer, self.drain = monitor, clock, producer, drain

    @property
    def totals(self) -> LiveTotals:
        return self.monitor.monitor.totals

    def observe(self) -> MetricsSnapshot:
        snapshot = self.monitor.observe()
        t = self.totals
        left = t.completed + t.drops + t.failed >= t.arrived and snapshot.in_system == 0
        if self.producer.done():
            drained = time.monotonic() - (self.producer.exited_at or 0.0) >= self.drain
            self.clock.over = left or drained
        if self.clock.clock.now() >= self.clock.until:
            self.clock.over = True
        return snapshot


# -- one run -------------------------------------------------------------------------------------
def arrivals_file(folder: Path, planner: str, source: str) -> Path:
    """Where ``compare-app --simulate`` writes the arrivals of ``source`` that ``planner``'s run
    met (``fit-growth`` reads them back: one home for the name)."""
    safe = "".join(c if c.isalnum() or c in "._=-" else "_" for c in planner)
    return folder / f"{safe}.arrivals.{source}.csv"


def recording_dir(folder: Path, planner: str) -> Path:
    """Where ``compare-app --out`` keeps the recording of ``planner``'s run (``LABEL.recording``;
    ``fit-growth --visit-cpu recorded`` and ``adaptflow sharing`` read it back: one home for the name)."""
    return folder / f"{run_label(planner)}.recording"


def run_label(planner: str) -> str:
    """The name a run's files take in compare-app's ``--out`` folder (``LABEL.jsonl``, its event
    log; ``LABEL.recording``; ``LABEL.producer.log``) for the run labelled ``planner``."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", planner)


def logged_pools(folder: Path, planner: str) -> list[dict[str, int]]:
    """The pools ``planner``'s run applied at each decision, in order, from its event log
    (``resimulate --live-pools`` replays them). Records without a decision (a guard's
    takeover or hand-back) are skipped."""
    path = folder / f"{run_label(planner)}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no event log of run {planner!r}; expected compare-app's --out folder")
    return [r["applied"]["workers"] for r in read_event_log(path) if "applied" in r]


@dataclass
class RunResult:
    """What one planner's run produced."""

    planner: str
    transitions: list[Transition]
    totals: LiveTotals
    seconds: float  # wall seconds from the monitor's start to the last observation
    fallbacks: int
    pools: dict[str, int] = field(default_factory=dict)  # each stage's pool at the start
    # each source's arrivals, scenario seconds from the run's start, as the monitor folded them
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    # each stage's finished attempts: (enter, start, finish, node), the same seconds
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)
    # the CPU probe (probe.py) on the idle app before and after the run; empty when the scenario's
    # hosts carry no calibration probe to compare it with
    probes: list[float] = field(default_factory=list)
    # the share of the CPU time the machine wanted during the run that its hypervisor gave to
    # other guests (probe.steal_share); None where the system does not say (not Linux)
    steal: float | None = None
    # the mean of the short CPU probes taken during the run where no task ran (pulses.py); None
    # with too few of them
    pulse: float | None = None
    # the share of the machine's CPU time nice'd processes took during the run (probe.nice_share):
    # beside them the pulses read the machine fast; None where the system does not say
    nice: float | None = None

    def speeds(self, scenario: Scenario) -> dict[str, float]:
        """Each probed host's speed in this run against its calibration (``Host.speed``)."""
        out = {}
        for name, host in scenario.hosts.items():
            speed = speed_against(host.probe, *self.probes)
            if speed is not None:
                out[name] = speed
        return out

    def steal_speeds(self, scenario: Scenario) -> dict[str, float]:
        """Each host that kept its recording's steal (``Host.steal``) at this run's speed against
        it: ``(1 - run's steal) / (1 - recording's)``, the CPU time a busy task got of what it
        wanted, then against when calibrated; over the whole run, where the probe reads two
        seconds beside it. Empty without the run's steal (not Linux)."""
        if self.steal is None:
            return {}
        return {name: (1 - self.steal) / (1 - h.steal) for name, h in scenario.hosts.items() if h.steal is not None}

    def pulse_speeds(self, scenario: Scenario) -> dict[str, float]:
        """Each host with a calibration pulse (``Host.pulse``) at this run's idle pulses over it:
        the machine read during the run, where the probe reads it beside. Empty without them."""
        if self.pulse is None:
            return {}
        return {name: self.pulse / h.pulse for name, h in scenario.hosts.items() if h.pulse is not None}

    def per_task(self, scenario: Scenario) -> dict[str, float]:
        """Each stage's mean service per attempt (``service_<stage>``: started to finished, as
        Celery's events stamp them), mean hand-off between tasks (``handoff_<stage>``:
        :func:`~.live.handoff.mean_handoff`, with the stage's dispatch delay as the time a sent
        task takes to be ready), 95th percentile of its attempts' waits (``p95_wait_<stage>``:
        sent to started), attempts finished per second of the run (``throughput_<stage>``, a
        failed one too) and the mean wait of its attempts that met the stage idle
        (``idle_wait_<stage>``: :func:`~.live.handoff.mean_idle_wait`, with the stage's
        turnaround; what ``fit-growth`` reads the dispatch delay's growth from) and the
        services' spread (``service_cv_<stage>``: :func:`~.live.spread.service_cv_of`); NaN where
        there is nothing to tell (no attempt; too few backlogged gaps, idle visits or services)."""
        row = {}
        for name, stage in scenario.stages.items():
            attempts = self.attempts.get(name, [])
            spans = [finish - start for _, start, finish, _ in attempts]
            waits = [start - enter for enter, start, _, _ in attempts]
            handoff = mean_handoff(attempts, stage.dispatch_mean())
            idle_wait = mean_idle_wait(attempts, stage.turnaround)
            row[f"service_{name}"] = math.fsum(spans) / len(spans) if spans else math.nan
            row[f"service_cv_{name}"] = service_cv_of(spans)
            row[f"handoff_{name}"] = math.nan if handoff is None else handoff
            row[f"idle_wait_{name}"] = math.nan if idle_wait is None else idle_wait
            row[f"p95_wait_{name}"] = float(np.percentile(waits, 95)) if waits else math.nan
            row[f"throughput_{name}"] = len(attempts) / self.seconds if self.seconds > 0 else math.nan
        return row


class RunTap:
    """The arrivals and the task attempts of a run, read off the records the monitor folds (a
    :class:`~.live.system.RecordSource` in front of the app's): what lets a simulation replay
    the very arrivals a live run met (:func:`adaptflow.experiments.compare_app.simulated_app_run`),
    and the hand-off between tasks it met (:meth:`RunResult.per_task`). Kept per run, so bounded by the
    run's ``limit``, as its transitions are; taken on ``advance``, as the fold takes them."""

    def __init__(self, inner: Any, origin: float):
        self.inner, self.origin = inner, origin
        self.arrivals: dict[str, list[float]] = {}
        self.attempts: dict[str, list[Attempt]] = {}  # per stage: (enter, start, finish, node)
        self._started: dict[str, tuple[float, str]] = {}  # task id -> (enter, node), until it finishes
        self._read: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        records = self.inner.read()
        self._read = [r for r in records if r.get("e") in ("arrive", "start", "finish")]
        return records

    def advance(self) -> None:
        self.inner.advance()
        for r in self._read:
            t = float(r["t"]) - self.origin
            if r["e"] == "arrive":
                self.arrivals.setdefault(str(r["src"]), []).append(t)
            elif r["e"] == "start":
                self._started[str(r["k"])] = (float(r["q"]) - self.origin, str(r.get("h", "")))
            elif (started := self._started.pop(str(r["k"]), None)) is not None:
                enter, node = started
                self.attempts.setdefault(str(r["s"]), []).append((enter, float(r["st"]) - self.origin, t, node))
        self._read = []


@dataclass
class _Parts:
    """The parts of a run (the producer's watch comes on top)."""

    monitor: ResilientMonitor
    analyzer: StandardAnalyzer
    executor: ResilientExecutor
    clock: WallClock
    guarded: FallbackPlanner  # the planner behind its fallback
    primary: Planner
    tap: RunTap


Built = tuple[FallbackPlanner, Planner, StandardAnalyzer]
"""A run's planner behind its fallback, the planner itself and its analyzer (``live_planner``)."""


def _coordinator(target: AppUnderTest, built: Built, interval: float, stream: EventSource, until: float) -> _Parts:
    scenario = target.scenario
    guarded, primary, analyzer = built
    timeout = target.inspect_timeout
    clock, ledger = WallClock(), PoolLedger(target.app, target.workers, timeout=timeout).sync()
    envelope = live_envelope(scenario)
    executor = ResilientExecutor(CeleryExecutor(target.app, ledger, clock, envelope, timeout, scenario=scenario))
    system = app_system(target.app, target.mapping, scenario, stream)
    system.records = tap = RunTap(system.records, clock.start)
    monitor = CeleryMonitor(target.app, ledger, clock, percentiles=True, inspect_timeout=timeout, system=system)
    resilient = ResilientMonitor(monitor, executor, give_up_after=until, backoff_cap=max(0.5, min(5.0, interval)))
    return _Parts(resilient, analyzer, executor, clock, guarded, primary, tap)


def run_one(target: AppUnderTest, spec: str, settings: RunSettings) -> RunResult:
    """One planner's run on an emptied app with its starting pools (see the module docstring)."""
    built = live_planner(spec, target.scenario, settings.interval, FALLBACK)
    wait_idle(target, settings.settle)
    pools = reset_pools(target, settings.settle, built[1].held_pools(list(target.scenario.stages)))
    probes = [cpu_probe()] if target.scenario.probed else []  # the machine's speed, on the idle app
    planner = split_label(spec)[0]
    label = run_label(planner)
    logs = settings.event_log_dir
    kept = None
    if logs:  # the workers read at both ends of the run for Celery's own CPU
        nodes = NodeReader(target.app, target.workers, timeout=target.inspect_timeout)
        kept = RunRecording(recording_dir(logs, planner), target.mapping, target.app, target.spec, probes, nodes)
    stream = EventStream(target.app).start()  # receiving before anything is produced
    transitions: list[Transition] = []
    try:
        try:
            parts = _coordinator(target, built, settings.interval, kept.tee(stream) if kept else stream, settings.limit)
            run_clock = RunClock(parts.clock, settings.limit)
            producer_log = logs / f"{label}.producer.log" if logs else None
            ticks = cpu_ticks()
            with _pulse_file(kept, target.scenario) as pulse_file:
                producing = Producer(settings.produce, producer_log, settings.cwd, settings.env)
                with PulseSampler(pulse_file) if pulse_file else nullcontext(), producing as producer:
                    watch = EndWatch(parts.monitor, run_clock, producer, settings.drain)
                    loop = ControlLoop(watch, parts.analyzer, parts.executor, run_clock, CostModel(), settings.interval)
                    transitions = _run(loop, parts.guarded, parts.primary, logs / f"{label}.jsonl" if logs else None)
                pulse = run_pulse(read_pulses(pulse_file), parts.tap) if pulse_file else None
            steal, nice = shares_since(ticks)
        finally:
            stream.stop()
        if probes:  # after the run has drained: the mean of both stands for the run
            probes.append(cpu_probe())
    finally:  # the run's pools and queues too, as a recording's samples hold them; and its probes
        if kept is not None:
            kept.close(_samples(transitions, parts.clock.start) if transitions else [], list(stream.gaps), probes)
    seconds = transitions[-1].snapshot.time if transitions else 0.0
    label, fallbacks = split_label(spec)[0], parts.guarded.fallbacks
    tap = parts.tap
    return RunResult(
        label, transitions, watch.totals, seconds, fallbacks, pools, tap.arrivals, tap.attempts, probes, steal, pulse,
        nice,
    )  # fmt: skip


@contextmanager
def _pulse_file(kept: RunRecording | None, scenario: Scenario) -> Iterator[Path | None]:
    """Where a run's pulses go: its recording's ``pulses.jsonl`` (``calibrate`` reads them there,
    as a recorder's), or a file removed after the run when no recording is kept and a host has
    a ``pulse`` to compare with; None (no pulses: 2.5 % of a core saved) when neither."""
    if kept is not None:
        path = kept.out_dir / PULSES_FILE
        path.unlink(missing_ok=True)  # a run again under its label replaces its recording, pulses too
        yield path
        return
    if not scenario.pulsed:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="adaptflow-pulses-") as scratch:
        yield Path(scratch) / PULSES_FILE


def run_pulse(pulses: np.ndarray, tap: RunTap) -> float | None:
    """The mean of a run's pulses during which none of its tasks ran (:func:`.pulses.idle_rate`;
    the tap's attempts are seconds from its origin, the pulses wall seconds)."""
    attempts = [a for stage in tap.attempts.values() for a in stage]
    spans = [(tap.origin + start, tap.origin + finish) for _, start, finish, _ in attempts]
    return idle_rate(pulses, spans)[0]


def _samples(transitions: list[Transition], origin: float) -> list[tuple[float, dict[str, int], dict[str, int]]]:
    """Each decision's pools (processes serving) and queue lengths, at its wall time, as the
    monitor saw them: a run recording's ``adaptflow-pools`` and ``adaptflow-queues`` lines."""
    return [
        (
            origin + t.snapshot.time,
            {name: stage.active for name, stage in t.snapshot.stages.items()},
            {name: stage.queue_length for name, stage in t.snapshot.stages.items()},
        )
        for t in transitions
    ]


def _run(loop: ControlLoop, guarded: FallbackPlanner, primary: Any, event_log: Path | None) -> list[Transition]:
    """Run the Coordinator until the run's clock says it is over, writing the event log (with a
    guarded planner's takeovers, as ``adaptflow live`` does)."""
    log_file = EventLog(event_log) if event_log is not None else None
    listening = isinstance(primary, GuardedPlanner) and log_file is not None
    if listening:
        primary.add_listener(log_file.write)
    try:
        assert isinstance(loop.clock, RunClock)
        return Coordinator(loop, guarded, log_file).run(until=loop.clock.until)
    finally:
        if listening:
            primary.remove_listener(log_file.write)
        if log_file is not None:
            log_file.close()


# -- the table -----------------------------------------------------------------------------------
START_POOL = "start_pool_"
"""The prefix of a row's column for each stage's pool at the run's start (``start_pool_<stage>``):
what a later ``resimulate`` starts its simulation from."""


def figures(run: RunResult, scenario: Scenario) -> dict[str, Any]:
    """One row: the columns of ``adaptflow compare-live`` (mean wait, p95 latency, throughput,
    SLA violation rate, cost, mean pool, arrived, completed), each stage's mean pool and mean
    wait, its pool at the start (:data:`START_POOL`), and each stage's mean service and hand-off
    between tasks (:meth:`RunResult.per_task`)."""
    t, stages = run.totals, list(scenario.stages)
    span = math.fsum(s.snapshot.interval for s in run.transitions)
    worker_seconds = {
        name: math.fsum(s.snapshot.stages[name].worker_seconds for s in run.transitions) for name in stages
    }
    row: dict[str, Any] = {
        "world": "live",
        "planner": run.planner,
        "mean_wait": t.mean_wait,
        "p95_latency": t.latency_percentile(95),
        "throughput": t.completed / run.seconds if run.seconds > 0 else math.nan,
        "sla_violation_rate": t.late / t.arrived if t.arrived else math.nan,
        "cost": math.fsum(s.cost.total for s in run.transitions),
        "mean_pool": math.fsum(worker_seconds.values()) / span if span > 0 else math.nan,
        "arrived": t.arrived,
        "completed": t.completed,
        "worker_cost": math.fsum(st.cost for s in run.transitions for st in s.snapshot.stages.values()),
    }
    row |= {f"mean_pool_{name}": ws / span if span > 0 else math.nan for name, ws in worker_seconds.items()}
    row |= {f"{START_POOL}{name}": n for name, n in run.pools.items()}
    row |= {f"mean_wait_{name}": t.stage_mean_wait(name) for name in stages}
    row |= run.per_task(scenario)
    row |= {f"speed_{name}": speed for name, speed in run.speeds(scenario).items()}
    row |= {"steal": run.steal} if run.steal is not None else {}
    row |= {"pulse": run.pulse} if run.pulse is not None else {}
    row |= {"nice": run.nice} if run.nice is not None else {}
    row |= {"seconds": run.seconds, "decisions": len(run.transitions), "fallbacks": run.fallbacks}
    return row


MAX_REPEATS = 10
"""Most runs of each planner a compare may ask for (each is a live run of the producer's length)."""
_REPEATED = re.compile(r"(?P<label>.+)#(?P<round>[0-9]+)")


def repeated(planners: Sequence[str], repeat: int) -> list[str]:
    """Each planner spec ``repeat`` times, labelled ``LABEL#1`` .. ``LABEL#repeat``, in rounds
    whose order rotates (round ``k`` starts at the ``k``-th planner, wrapping). Why: live runs
    on the same arrivals differ (the machine's speed of the moment); their spread is what a
    simulation's gap is measured against, and a planner always run first after the settle, or
    always after the same other planner, would carry that place's bias into its spread.
    ``repeat`` 1 leaves the specs as given."""
    if not (isinstance(repeat, int) and 1 <= repeat <= MAX_REPEATS):
        raise ValueError(f"--repeat {repeat!r}: expected a whole number of runs per planner from 1 to {MAX_REPEATS}")
    if repeat == 1:
        return list(planners)
    runs = []
    for k in range(repeat):
        for i in range(len(planners)):
            label, spec = split_label(planners[(k + i) % len(planners)])
            runs.append(f"{label}#{k + 1}@{spec}")
    return runs


def repeated_label(label: str) -> str:
    """The planner's own label of a run labelled by :func:`repeated` (``erlang#2`` -> ``erlang``)."""
    match = _REPEATED.fullmatch(label)
    return match["label"] if match else label


def compare_on_app(
    app_spec: str,
    mapping: str | Path | dict[str, Any],
    scenario: str | Path | Scenario,
    planners: list[str],
    produce: list[str],
    interval: float,
    drain: float,
    event_log_dir: Path | None = None,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    settle: float = 120.0,
    limit: float = 3600.0,
    inspect_timeout: float = 2.0,
    allow_pickle: bool = False,
    after_run: Callable[[RunResult], list[dict[str, Any]]] | None = None,
    repeat: int = 1,
    resume_key: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Each planner's live run on the user's app ``app_spec`` (``MODULE:APP``), on the arrivals
    the command ``produce`` submits (the same each run: the producer must be reproducible, e.g.
    seeded), one row each (see :func:`figures`); with ``event_log_dir``, each run's event log
    (``LABEL.jsonl``), its producer's output, the run kept as a recording (``LABEL.recording``,
    :class:`~.record.RunRecording`: ``adaptflow calibrate`` reads it) and ``compare_app.csv`` are
    written there.

    Every spec and setting is checked before the first run; an ``sb3:`` planner (a pickled
    model) is refused unless ``allow_pickle``. ``after_run``: rows to add after each run's own
    (the simulated side of :func:`adaptflow.experiments.compare_app.compare_app_with_simulation`).
    ``repeat``: each planner that many times (:func:`repeated`: labels ``LABEL#k``, rounds in a
    rotating order), for the spread of live runs on the same arrivals.

    With ``event_log_dir``, a compare cut short (Ctrl-C, SIGTERM, a crash) goes on where it
    stopped when called again the same way (:mod:`.compare_progress`; ``resume_key``: what else
    makes the rows, such as the simulation's settings, which the same call must repeat)."""
    planners = repeated(planners, repeat)
    target = _target(app_spec, mapping, scenario, planners, produce, interval, drain, inspect_timeout, allow_pickle)
    folder = Path(event_log_dir) if event_log_dir is not None else None
    progress = _progress(folder, target, planners, produce, interval, drain, resume_key)
    done = progress.done if progress is not None else set()
    settings = RunSettings(tuple(produce), interval, drain, folder, cwd, env, settle, limit)
    rows: list[dict[str, Any]] = []
    with sigterm_as_interrupt():  # a service manager's stop: the producer stopped, the finished runs kept
        for spec in planners:
            if split_label(spec)[0] in done:
                continue
            log.info("compare on %s: running %s", app_spec, spec)
            run = run_one(target, spec, settings)
            # what a later resimulation needs to run this planner again (experiments/compare_app.resimulate)
            rows_of_run = [{**figures(run, target.scenario), "spec": split_label(spec)[1], "interval": interval}]
            rows_of_run += after_run(run) if after_run is not None else []
            if progress is not None:
                progress.record(rows_of_run)
            else:
                rows += rows_of_run
    return progress.finish() if progress is not None else pd.DataFrame(rows)


def _progress(folder: Path | None, target: AppUnderTest, runs: list[str], produce: Sequence[str], interval: float,
              drain: float, resume_key: Mapping[str, Any] | None) -> Progress | None:  # fmt: skip
    """The compare's progress in ``folder`` (none without one): an earlier cut-short compare of
    the same command goes on (said on stderr), another command's is refused before any file is
    written; then the scenario the planners read is kept and the compare's manifest written."""
    if folder is None:
        return None
    manifest = {"app": target.spec, "runs": runs, "produce": list(produce), "interval": interval, "drain": drain}
    manifest["scenario"] = scenario_digest(target.scenario)
    progress = Progress.open(folder, {**manifest, **(resume_key or {})})
    folder.mkdir(parents=True, exist_ok=True)
    write_planner_scenario(folder, target.scenario)
    progress.start()
    if progress.done:
        print(f"adaptflow: compare-app goes on in {folder}: {len(progress.done)} of {len(runs)} runs were finished",
              file=sys.stderr)  # fmt: skip
    return progress


PLANNER_SCENARIO = "scenario.yaml"
"""The scenario the runs' planners were built for and their pools set from, kept beside the runs."""


def write_planner_scenario(folder: Path, scenario: Scenario) -> Path:
    """``scenario`` written to ``folder``/:data:`PLANNER_SCENARIO` (files it names, absolute).
    Why: a later ``resimulate`` on a refitted scenario must rebuild the planners that ran, on
    the scenario they read (erlang staffs for its stages' mean services), not on the new one."""
    return save_scenario(scenario, folder / PLANNER_SCENARIO)


def _target(app_spec: str, mapping: str | Path | dict[str, Any], scenario: str | Path | Scenario,
            planners: list[str], produce: list[str], interval: float, drain: float, inspect_timeout: float,
            allow_pickle: bool) -> AppUnderTest:  # fmt: skip
    """Check every argument (every problem before any connection), then import the app."""
    if not planners:
        raise ValueError("planners: expected at least one planner spec (e.g. static, keda:target=2)")
    if not produce:
        raise ValueError("produce: expected the producer's command (argv), e.g. python -m myapp.produce --seed 7")
    if not interval > 0 or not drain >= 0:
        raise ValueError(f"interval {interval}, drain {drain}: expected seconds, interval > 0 and drain >= 0")
    remote = [p for p in planners if is_service_spec(split_label(p)[1])]
    if remote:
        raise ValueError(
            f"planners {remote}: compare-app runs each planner in this process (and its simulated twin); "
            "service:URL is for adaptflow control and keda: compare the model the service serves as onnx:PATH"
        )
    check_trusted(planners, allow_pickle, command="compare on an app")
    labels = [split_label(p)[0] for p in planners]
    if len(set(labels)) != len(labels):
        raise ValueError(f"planners {planners}: labels {labels} repeat; expected one run per label (label@spec)")
    the_mapping, the_scenario = load_mapping(mapping), load_scenario(scenario)
    the_mapping.require_workers(the_scenario.stages)
    the_mapping.require_named_workers("compare-app resets and resizes each stage's pool")
    for spec in planners:  # built now as each run builds it: a typo, or a planner a live loop cannot
        live_planner(spec, the_scenario, interval, FALLBACK)  # feed, fails before the first run, not after it
    app = load_app(app_spec)
    require_broker(app)
    return AppUnderTest(app, the_mapping, the_scenario, inspect_timeout, app_spec)
