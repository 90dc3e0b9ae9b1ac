"""``adaptflow record``: store the task events of a running Celery app, for ``adaptflow
calibrate`` to fit a scenario from. The app is imported (for its broker and its workers), never
modified; its workers must send task events (``-E`` or ``worker_send_task_events``; the recorder
asks them to start, as Flower does) and its publishers ``task-sent`` events for queue waits
(``task_send_sent_event``).

A recording is a directory:

* ``mapping.yaml``: the app's mapping (:mod:`.live.mapping`), copied;
* ``recording.json``: the app, the broker (without its password), start and stop times, the
  machine and its cores, and a CPU probe of its speed at the start and the stop (:mod:`.probe`);
* ``events.jsonl``: one JSON object per line, in arrival order: Celery's task events, slimmed to
  the fields adaptflow reads (:data:`.live.events.EVENT_FIELDS`: never arguments or results),
  and adaptflow's own lines: ``adaptflow-pools`` (each mapped worker's process count, every
  ``sample_every`` seconds, its pool's kind, ``kinds``, and its main process's CPU seconds so far
  with the process's pid, ``main_cpu``, as the worker's ``stats`` reports them: Celery's own work
  beside the tasks, :mod:`.calibrate.main_cpu`), ``adaptflow-queues`` (each stage's
  broker queue length), ``adaptflow-gap`` (a time the event stream was lost: its events are missing)
  and, in a compared run's recording (:class:`RunRecording`), ``adaptflow-cpu`` (the ``main_cpu``
  readings alone, at the run's start and its end);
* ``pulses.jsonl``: short CPU probes taken throughout, from a process of their own
  (:mod:`.pulses`): ``adaptflow calibrate`` keeps the mean of those taken where no task ran.

Written as it goes (appended and flushed every half second), so stopping it at any time (Ctrl-C,
SIGTERM, a kill) leaves a recording whose last line at worst is cut short, which the reader
skips.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml
from celery import Celery
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from adaptflow._io import atomic_write_text, package_versions
from adaptflow._yaml import load_yaml_file

from .celery_app import TRANSIENT_ERRORS, redis_client
from .live.events import EventStream, Gap
from .live.mapping import AppMapping, load_mapping
from .live.nodes import NodeReader
from .live.system import EventSource
from .probe import cpu_probe, cpu_ticks, shares_since
from .pulses import PULSES_FILE, PulseSampler

log = logging.getLogger(__name__)

FLUSH_EVERY = 0.5  # wall seconds between appends of the received events


@dataclass
class RecordingSummary:
    """What a recording holds when it stopped."""

    directory: Path
    events: int
    task_events: int
    gaps: int
    seconds: float


def load_app(spec: str) -> Celery:
    """The Celery app ``MODULE:ATTR`` (or ``MODULE.ATTR``), imported as ``celery -A`` imports it."""
    from celery.app.utils import find_app

    try:
        app = find_app(spec)
    except Exception as exc:
        raise ValueError(
            f"--app {spec!r}: cannot import it ({type(exc).__name__}: {exc}); expected MODULE:APP"
        ) from None
    if not isinstance(app, Celery):
        raise ValueError(f"--app {spec!r} is a {type(app).__name__}; expected a Celery app")
    return app


def require_broker(app: Celery, timeout: float = 2.0) -> None:
    """Refuse to start when the app's broker does not answer: one line naming it (without its
    password), before any file or run, instead of a traceback from the first connection."""
    url = maybe_sanitize_url(app.conf.broker_url or "")
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
    except Exception as exc:  # kombu raises its OperationalError, or the transport's own error
        raise ValueError(
            f"broker {url!r} of the app does not answer ({type(exc).__name__}: {exc}); expected it running "
            "and reachable (the app's broker_url)"
        ) from None


def _prepare(out_dir: Path, mapping_path: Path, app: Celery, spec: str) -> AppMapping:
    """Check everything, then create the directory with its mapping and header."""
    mapping = load_mapping(mapping_path)
    if (out_dir / "events.jsonl").exists():
        raise ValueError(f"{str(out_dir)!r} already holds a recording; expected a new or empty directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "mapping.yaml", mapping_path.read_text())
    probes = [cpu_probe()]  # before the first event is read: start the recorder before the load
    _write_header(out_dir, spec, app, started=time.time(), stopped=None, probes=probes, ticks=cpu_ticks())
    return mapping


def _write_header(
    out_dir: Path, spec: str, app: Celery, started: float, stopped: float | None, probes: list[float],
    ticks: list[int] | None = None, steal: float | None = None, nice: float | None = None,
) -> None:  # fmt: skip
    header = {
        "app": spec,
        "broker": maybe_sanitize_url(app.conf.broker_url or ""),
        "started": started,
        "stopped": stopped,
        "adaptflow": package_versions(("adaptflow",)).get("adaptflow"),
        "host": local_host(),  # the recording machine and its cores, for calibrate --cores auto
        "probes": probes,  # the machine's speed at the start and the stop (see probe.py)
        "cpu_ticks": ticks,  # /proc/stat's at the start, for the steal over the recording
        "steal": steal,  # the share of the CPU time wanted while recording that the hypervisor took
        "nice": nice,  # the share of the machine's CPU time nice'd processes took (probe.nice_share)
    }
    atomic_write_text(out_dir / "recording.json", json.dumps(header, indent=2) + "\n")


def local_host() -> dict[str, Any]:
    """This machine as ``recording.json`` holds it: its name (what a worker's ``%h`` expands to)
    and the cores this process may run on (a container's CPU set, not the host's count), for
    ``adaptflow calibrate --cores auto``."""
    return {"name": socket.gethostname(), "cores": len(os.sched_getaffinity(0))}


def main_cpu(stats: dict[str, Any]) -> list[Any] | None:
    """A worker's main process, ``[pid, CPU seconds so far]``, from its ``stats`` reply: the
    ``rusage`` Celery reads with ``getrusage(RUSAGE_SELF)``, user and system time of the main
    process alone (its pool's children are not counted while they live). None for a group of
    nodes (its merged reply has no rusage) or a platform without it (``'N/A'``)."""
    usage = stats.get("rusage")
    if not isinstance(usage, dict) or not all(isinstance(usage.get(k), int | float) for k in ("utime", "stime")):
        return None
    return [stats.get("pid"), round(float(usage["utime"]) + float(usage["stime"]), 4)]


def cpu_line(nodes: NodeReader) -> dict[str, Any] | None:
    """The mapped workers' main-process readings now (:func:`main_cpu`) as an ``adaptflow-cpu``
    line, or None where no worker gave one (groups of nodes) or the broker did not answer: a
    recording without them is whole, only Celery's own CPU goes unmeasured."""
    try:
        stats = nodes.read("stats")[0]
    except (OSError, OperationalError) as exc:
        log.warning("Celery's own CPU not read: %s", exc)
        return None
    readings = main_readings(stats, nodes.patterns)
    return {"type": "adaptflow-cpu", "timestamp": time.time(), "main_cpu": readings} if readings else None


def main_readings(stats: dict[str, Any], patterns: dict[str, str]) -> dict[str, list[Any]]:
    """Each stage's worker's :func:`main_cpu` reading from ``stats`` replies by pattern (stage ->
    worker pattern), the stages without one left out: the ``main_cpu`` of both kinds of line."""
    readings = {stage: main_cpu(stats[p]) for stage, p in patterns.items() if p in stats}
    return {stage: reading for stage, reading in readings.items() if reading is not None}


class Recorder:
    """Receives an app's events and appends them, with pool and queue samples, to a recording."""

    def __init__(self, app: Celery, mapping: AppMapping, out_dir: Path, sample_every: float = 5.0):
        self.app, self.mapping, self.out_dir, self.sample_every = app, mapping, out_dir, sample_every
        self.stream = EventStream(app)
        self.client = redis_client(app.conf.broker_url) if str(app.conf.broker_url).startswith("redis") else None
        self.events = self.task_events = 0
        self._gaps_written = 0
        self.sampling_failed = 0  # samples missed in a row: the broker is away
        workers = mapping.workers()  # a stage's node or group of nodes, read as one pool
        self.nodes = NodeReader(app, workers, timeout=2.0, roster=self.stream.alive_nodes) if workers else None

    def run(self, duration: float | None, stop: threading.Event) -> None:
        """Record until ``duration`` seconds have passed or ``stop`` is set (Ctrl-C: the caller's)."""
        self.stream.start()
        self.app.control.enable_events()  # as Flower does: workers started without -E send them now
        end = None if duration is None else time.monotonic() + duration
        next_sample = 0.0
        with (self.out_dir / "events.jsonl").open("a", encoding="utf-8") as out:
            try:
                while not stop.is_set() and (end is None or time.monotonic() < end):
                    if time.monotonic() >= next_sample:
                        self.sample_or_skip(out)
                        next_sample = time.monotonic() + self.sample_every
                    self._flush(out)
                    stop.wait(FLUSH_EVERY)
            finally:
                self._flush(out)
                self.stream.stop()

    def _flush(self, out: IO[str]) -> None:
        for event in self.stream.drain():
            self._line(out, event)
            self.task_events += str(event.get("type", "")).startswith("task-")
        for gap in list(self.stream.gaps)[self._gaps_written :]:
            if gap.end is not None:
                self._line(out, gap_line(gap))
                self._gaps_written += 1
        out.flush()

    def sample_or_skip(self, out: IO[str]) -> bool:
        """A sample, or none while the broker is away (a restart): the recording goes on, the
        event stream's own gap line marks the outage, and the missed samples are not invented.
        Said once an outage in the log; True when a sample was written."""
        try:
            self._sample(out)
        except TRANSIENT_ERRORS as exc:
            if not self.sampling_failed:
                log.warning("no pool and queue samples while the broker is away (%s: %s)", type(exc).__name__, exc)
            self.sampling_failed += 1
            return False
        if self.sampling_failed:
            log.warning("pool and queue samples again, after %d missed", self.sampling_failed)
            self.sampling_failed = 0
        return True

    def _sample(self, out: IO[str]) -> None:
        """The mapped workers' process counts and the stages' queue lengths, now."""
        now = time.time()
        if self.nodes is not None:
            stats = self.nodes.read("stats")[0]
            patterns = self.nodes.patterns
            read = {stage: stats[p]["pool"] for stage, p in patterns.items() if p in stats}
            pools = {stage: len(pool["processes"]) for stage, pool in read.items()}
            # each pool's kind (prefork, threads, ...): calibrate writes a prefork pool's ticks
            kinds = {stage: pool.get("implementation") for stage, pool in read.items()}
            line = {"type": "adaptflow-pools", "timestamp": now, "pools": pools, "kinds": kinds}
            main = main_readings(stats, patterns)
            self._line(out, {**line, "main_cpu": main} if main else line)
        if self.client is not None:
            queues = {stage: sum(self.client.llen(q) for q in qs) for stage, qs in self.mapping.queues().items()}
            self._line(out, {"type": "adaptflow-queues", "timestamp": now, "queues": queues})

    def _line(self, out: IO[str], obj: dict[str, Any]) -> None:
        out.write(event_line(obj))
        self.events += 1


class RunRecording:
    """A live run kept as a recording (see the module docstring), for ``compare-app``: the
    mapping and the header first; the events as the run's monitor drains them (:meth:`tee`);
    at :meth:`close`, each decision's pools and queue lengths as the monitor saw them, the
    stream's gaps, and the header's stop time, probes and steal.

    Why: a compared run is a recording of the app at that run's load and pools, which the
    run's figures alone (``compare_app.csv``: means per stage) do not replace. ``adaptflow
    calibrate`` reads it as it reads ``adaptflow record``'s, and its ``task-received`` events
    split each task's wait into the broker's part (sent to received) and the worker's (received
    to started), which a run's means cannot tell apart: on the example app they told that a run
    whose downstream waits doubled had its hand-overs slowed with its services, by the machine
    of that minute (docs/sim_to_real.md). Bounded as the run is: by its ``limit``.

    ``nodes``: the mapped workers, read for their main processes' CPU (:func:`cpu_line`) when the
    recording opens and when it closes, so that ``calibrate`` reports Celery's own CPU a visit
    over the run: a fit set of runs at several loads measures its own (``fit-growth --visit-cpu
    recorded``) instead of a figure taken once from another recording."""

    def __init__(
        self, out_dir: Path, mapping: AppMapping, app: Celery, spec: str, probes: list[float],
        nodes: NodeReader | None = None,
    ):  # fmt: skip
        out_dir.mkdir(parents=True, exist_ok=True)  # a run again under its label replaces it, as its event log
        text = yaml.safe_dump(mapping.model_dump(mode="json", by_alias=True), sort_keys=False)  # its stages' order
        atomic_write_text(out_dir / "mapping.yaml", text)
        self.out_dir, self.app, self.spec = out_dir, app, spec
        self.started, self.ticks = time.time(), cpu_ticks()
        _write_header(out_dir, spec, app, self.started, None, list(probes), self.ticks)
        self._out = (out_dir / "events.jsonl").open("w", encoding="utf-8")
        self.events = 0
        self.nodes = nodes
        self._read_cpu()

    def _read_cpu(self) -> None:
        line = cpu_line(self.nodes) if self.nodes is not None else None
        if line is not None:
            self.write([line])

    def tee(self, stream: EventStream) -> EventSource:
        """``stream``, each batch it drains also appended here."""
        return _TeeStream(stream, self)

    def write(self, lines: list[dict[str, Any]]) -> None:
        """Append ``lines`` (events, or adaptflow's own lines) and flush them to the file."""
        self._out.writelines(event_line(line) for line in lines)
        self._out.flush()
        self.events += len(lines)

    def close(self, samples: list[tuple[float, dict[str, int], dict[str, int]]], gaps: list[Gap],
              probes: list[float]) -> None:  # fmt: skip
        """The run's samples (wall time, each stage's processes, its queue length), its gaps
        that ended, then the header with the stop time, ``probes`` and the run's steal."""
        self.write([{"type": "adaptflow-pools", "timestamp": t, "pools": pools} for t, pools, _ in samples])
        self.write([{"type": "adaptflow-queues", "timestamp": t, "queues": queues} for t, _, queues in samples])
        self.write([gap_line(g) for g in gaps if g.end is not None])
        self._read_cpu()
        self._out.close()
        steal, nice = shares_since(self.ticks)
        _write_header(self.out_dir, self.spec, self.app, self.started, time.time(), probes, self.ticks, steal, nice)


class _TeeStream:
    """An :class:`EventStream` seen through its :class:`~.live.system.EventSource` side, each
    drained batch also appended to a :class:`RunRecording` (a view, not a second receiver: the
    buffer and the gaps are the stream's)."""

    def __init__(self, stream: EventStream, recording: RunRecording):
        self.stream, self.recording = stream, recording

    @property
    def gaps(self) -> Iterable[Gap]:
        return self.stream.gaps

    def drain(self) -> list[dict[str, Any]]:
        events = self.stream.drain()
        self.recording.write(events)
        return events


def event_line(obj: dict[str, Any]) -> str:
    """One line of ``events.jsonl``: compact JSON and a newline."""
    return json.dumps(obj, separators=(",", ":")) + "\n"


def gap_line(gap: Gap) -> dict[str, Any]:
    """An ended gap of the event stream as the ``adaptflow-gap`` line of ``events.jsonl``."""
    return {"type": "adaptflow-gap", "start": gap.start, "end": gap.end, "reason": gap.reason}


def record(
    spec: str,
    mapping_path: str | Path,
    out_dir: str | Path,
    duration: float | None = None,
    sample_every: float = 5.0,
    stop: threading.Event | None = None,
    started: Callable[[], None] | None = None,
) -> RecordingSummary:
    """Record the app ``spec`` (``MODULE:APP``) into ``out_dir`` (see the module docstring).
    ``started`` is called once the mapping, the app and its broker have been checked and the
    recording's directory written: a "recording" banner printed before them would precede the
    error of a bad mapping or a silent broker, as if something had been recorded."""
    if duration is not None and not duration > 0:
        raise ValueError(f"--duration {duration}: expected seconds > 0")
    if not sample_every > 0:
        raise ValueError(f"--sample-every {sample_every}: expected seconds > 0")
    out_dir, mapping_path = Path(out_dir), Path(mapping_path)
    load_yaml_file(mapping_path)  # a missing or unreadable file: its own clear error first
    app = load_app(spec)
    require_broker(app)
    mapping = _prepare(out_dir, mapping_path, app, spec)
    header = json.loads((out_dir / "recording.json").read_text())
    recorder = Recorder(app, mapping, out_dir, sample_every)
    if started is not None:
        started()
    try:
        with PulseSampler(out_dir / PULSES_FILE):
            recorder.run(duration, stop or threading.Event())
    finally:
        stopped = time.time()  # the probe after it is not recorded time
        steal, nice = shares_since(header.get("cpu_ticks"))
        probes = [*header["probes"], cpu_probe()]
        _write_header(out_dir, spec, app, header["started"], stopped, probes, header.get("cpu_ticks"), steal, nice)
    seconds = time.time() - header["started"]
    return RecordingSummary(out_dir, recorder.events, recorder.task_events, len(recorder.stream.gaps), seconds)
