"""Reading a recording of a user's Celery app (what ``adaptflow record`` writes): a directory with
``mapping.yaml`` (an :class:`~adaptflow.runtime.live.mapping.AppMapping`), ``recording.json``
(the app, the broker, when recording started and stopped) and ``events.jsonl``, one JSON object
per line in arrival order: a slimmed Celery event, or one of adaptflow's own lines
(``adaptflow-pools``, ``adaptflow-queues``, ``adaptflow-gap``); and, if the recorder kept them,
``pulses.jsonl``, the short CPU probes taken while recording (:mod:`adaptflow.runtime.pulses`).

Why strict about every line but the last: a recorder killed mid-write leaves a partial last
line, which is expected and only warned about; a bad line anywhere else means the file was
damaged or written by something else, and a calibration fitted from it would be wrong without
saying so, so it is an error that names the file and the line.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adaptflow.runtime.live.mapping import AppMapping, load_mapping
from adaptflow.runtime.pulses import PULSES_FILE, read_pulses

log = logging.getLogger(__name__)

MAPPING_FILE, META_FILE, EVENTS_FILE = "mapping.yaml", "recording.json", "events.jsonl"
ADAPTFLOW_LINES = ("adaptflow-pools", "adaptflow-queues", "adaptflow-gap", "adaptflow-cpu")


@dataclass
class Recording:
    """A recording, read and checked. Times are wall seconds, as recorded; :attr:`origin` (the
    start of recording) is the calibrated scenario's t = 0."""

    path: Path
    mapping: AppMapping
    meta: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)  # Celery events, in file order
    pools: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    queues: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    gaps: list[tuple[float, float, str]] = field(default_factory=list)
    # each stage's pool kind, as its worker named it (``adaptflow-pools`` lines' ``kinds``)
    kinds: dict[str, str] = field(default_factory=dict)
    # each stage's worker main process at each pool sample: (time, {stage: (pid, CPU seconds so far)})
    main_cpu: list[tuple[float, dict[str, tuple[Any, float]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what reading had to assume or skip
    last_time: float = -math.inf  # the latest timestamp of any line
    # the short CPU probes taken while recording, (start, end, rate) (pulses.py); none if not kept
    pulses: np.ndarray = field(default_factory=lambda: np.empty((0, 3)))

    @property
    def origin(self) -> float:
        return float(self.meta["started"])

    @property
    def end(self) -> float:
        """When recording stopped; for a recording that never said so, its last line's time."""
        stopped = self.meta.get("stopped")
        return float(stopped) if stopped is not None else max(self.last_time, self.origin)

    @property
    def duration(self) -> float:
        return self.end - self.origin


def missing_run_recording(path: Path) -> str | None:
    """The problem line of a run's recording (``compare-app --out``'s ``LABEL.recording``) that
    is not there, else None."""
    if (path / "events.jsonl").is_file():
        return None
    return f"{path}: no run recording; expected compare-app --out's LABEL.recording beside the run"


def read_recording(directory: str | Path) -> Recording:
    """The recording in ``directory``; every problem is a ``ValueError`` naming the file (and line)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"recording {str(directory)!r} is not a directory; expected one written by adaptflow record")
    for name in (MAPPING_FILE, META_FILE, EVENTS_FILE):
        if not (directory / name).is_file():
            raise ValueError(
                f"recording {str(directory)!r} has no {name}; expected {MAPPING_FILE}, {META_FILE} and {EVENTS_FILE}"
            )
    recording = Recording(directory, load_mapping(directory / MAPPING_FILE), _read_meta(directory / META_FILE))
    _read_events(directory / EVENTS_FILE, recording)
    recording.pulses = read_pulses(directory / PULSES_FILE)
    if recording.meta.get("stopped") is None:
        recording.notes.append(
            f"recording.json has no 'stopped' time (the recorder did not stop cleanly): the recording is taken "
            f"to end at its last line, {recording.duration:.1f} s after it started"
        )
    if not recording.duration > 0:
        raise ValueError(f"{directory / META_FILE}: the recording lasts {recording.duration:g} s; expected > 0")
    return recording


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc}); expected an object with app, broker, started") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: got {type(meta).__name__}; expected an object with app, broker, started")
    for key in ("started", "stopped"):
        value = meta.get(key)
        if (key == "started" or value is not None) and not _is_number(value):
            raise ValueError(f"{path}: {key} is {value!r}; expected wall seconds (a number)")
    if meta.get("stopped") is not None and meta["stopped"] < meta["started"]:
        raise ValueError(f"{path}: stopped {meta['stopped']} is before started {meta['started']}; expected later")
    return meta


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _read_events(path: Path, recording: Recording) -> None:
    """Every line into ``recording``, in file order; a partial last line (no newline: the
    recorder was killed mid-write) is skipped with a note, any other bad line is an error."""
    pending: tuple[int, bytes] | None = None  # the latest non-blank line, taken once another follows
    try:
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                if raw.strip():
                    if pending is not None:
                        _take(_parse(*pending, path), pending[0], path, recording)
                    pending = (number, raw)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from None
    if pending is None:
        return
    number, raw = pending
    try:
        line = _parse(number, raw, path)
    except ValueError:
        if raw.endswith(b"\n"):
            raise
        note = f"{path.name} line {number}: a partial last line (the recorder stopped mid-write), ignored"
        log.warning(note)
        recording.notes.append(note)
        return
    _take(line, number, path, recording)


def _parse(number: int, raw: bytes, path: Path) -> dict[str, Any]:
    try:
        line = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(
            f"{path} line {number}: not a JSON object ({_short(exc)}); expected one JSON object per line"
        ) from None
    if not isinstance(line, dict):
        raise ValueError(f"{path} line {number}: got a JSON {type(line).__name__}; expected one JSON object per line")
    return line


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:160]


def _take(line: dict[str, Any], number: int, path: Path, recording: Recording) -> None:
    """One line into the recording: adaptflow's own lines checked and kept apart, events kept."""
    kind = line.get("type")
    where = f"{path} line {number}"
    if not isinstance(kind, str):
        raise ValueError(f"{where}: type is {kind!r}; expected a Celery event type or one of {list(ADAPTFLOW_LINES)}")
    if kind == "adaptflow-gap":
        start, end = line.get("start"), line.get("end")
        if not (_is_number(start) and _is_number(end) and end >= start):
            raise ValueError(f"{where}: gap start {start!r}, end {end!r}; expected numbers with end >= start")
        recording.gaps.append((float(start), float(end), str(line.get("reason", ""))))
        recording.last_time = max(recording.last_time, float(end))
        return
    t = line.get("timestamp")
    if not _is_number(t):
        raise ValueError(f"{where}: timestamp is {t!r}; expected wall seconds (a number)")
    recording.last_time = max(recording.last_time, float(t))
    if kind == "adaptflow-cpu":  # a compared run's readings, at its start and its end
        recording.main_cpu.append((float(t), _main_cpu(line.get("main_cpu"), where)))
    elif kind in ("adaptflow-pools", "adaptflow-queues"):
        key = kind.split("-", 1)[1]
        values = line.get(key)
        if not isinstance(values, dict) or not all(_is_count(v) for v in values.values()):
            raise ValueError(f"{where}: {key} is {values!r}; expected {{stage: count >= 0}}")
        getattr(recording, key).append((float(t), {str(s): int(v) for s, v in values.items()}))
        kinds = line.get("kinds", {})
        if not isinstance(kinds, dict) or not all(k is None or isinstance(k, str) for k in kinds.values()):
            raise ValueError(f"{where}: kinds is {kinds!r}; expected {{stage: a pool's implementation name}}")
        recording.kinds.update({str(s): k for s, k in kinds.items() if k is not None})
        if "main_cpu" in line:
            recording.main_cpu.append((float(t), _main_cpu(line["main_cpu"], where)))
    elif kind.startswith("adaptflow-"):
        raise ValueError(f"{where}: unknown line type {kind!r}; expected one of {list(ADAPTFLOW_LINES)}")
    else:
        recording.events.append(line)


def _main_cpu(value: Any, where: str) -> dict[str, tuple[Any, float]]:
    """An ``adaptflow-pools`` or ``adaptflow-cpu`` line's ``main_cpu``, checked: stage -> (pid, CPU seconds so far)."""
    readings = value.items() if isinstance(value, dict) else None
    if readings is None or not all(
        isinstance(r, list) and len(r) == 2 and _is_number(r[1]) and r[1] >= 0 for _, r in readings
    ):
        raise ValueError(f"{where}: main_cpu is {value!r}; expected {{stage: [pid, CPU seconds >= 0]}}")
    return {str(stage): (pid, float(seconds)) for stage, (pid, seconds) in readings}


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
