"""Pulses: short CPU probes taken *during* a recording or a live run, read where the app was idle.

Why: the machine's speed is what a calibrated simulation misses most on a shared VM, and the
probe before and after a run (:mod:`.probe`, one second on the idle app) does not tell it. On
the example app (a 2-vCPU VM, eight held-out runs) the speed each run's own services met moved
between 0.79 and 0.91 of the calibration's while the before-and-after probe read 0.79 to 1.05
of it, its ratio to the run's speed spreading by 11 % (coefficient of variation). A pulse of
25 ms every second or so in a process of its own, kept only when no task of the app ran during
it, averages some fifty readings over the run itself: its ratio to the same runs' speeds
spread by 4-6 %, and a pulse read beside a running task, which the app's own load slows (by a
third there), is left out rather than modelled.

What a pulse measures is not the one-second probe's figure: a 25-ms pulse after a pause reads
the machine's speed for short bursts, as the app's tasks meet it, and read 0.7-0.9 of the
one-second probe on that VM. So pulses compare only with pulses: ``adaptflow calibrate`` keeps
the recording's idle mean as the host's ``pulse`` (``Host.pulse``), and ``compare-app
--pulse-speed`` (or ``resimulate --pulse-speed``) runs a live run's simulation at its own idle
mean over that.

The sampler writes ``pulses.jsonl`` as it goes, one ``[start, end, rate]`` a line (wall
seconds, units of :func:`.probe.cpu_probe`'s work per second), so a recorder stopped at any
time leaves whole lines but the last.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import random
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import numpy as np

from .probe import cpu_probe

PULSES_FILE = "pulses.jsonl"
PULSE_SECONDS = 0.025
"""How long one pulse runs: a task's length on the example app, and 2.5 % of one core at one
pulse a second."""
PULSE_GAP = (0.5, 1.5)
"""The pause between pulses is drawn from this range (seconds), so that pulses do not keep step
with a periodic load (a producer's tick, a monitor's poll)."""
MIN_IDLE_PULSES = 20
"""Fewer idle pulses than this tell no speed (about a tenth of a three-minute run's)."""


def _pulse_loop(path: str, seed: int) -> None:  # pragma: no cover - runs in the sampler's process
    gaps = random.Random(seed)
    with open(path, "a", encoding="utf-8", buffering=1) as out:  # a line at a time: whole lines survive a kill
        while True:
            start = time.time()
            rate = cpu_probe(PULSE_SECONDS)
            out.write(json.dumps([start, time.time(), rate]) + "\n")
            time.sleep(gaps.uniform(*PULSE_GAP))


class PulseSampler:
    """Pulses into ``path`` from a process of its own while the ``with`` block runs.

    A process, not a thread: a thread's pulse would wait for the interpreter's lock behind the
    monitor's threads and read the recorder's work as the machine's."""

    def __init__(self, path: Path, seed: int = 0):
        self.path, self.seed = Path(path), seed
        self._process: multiprocessing.process.BaseProcess | None = None

    def __enter__(self) -> PulseSampler:
        context = multiprocessing.get_context("spawn")  # nothing of this process's threads or sockets
        self._process = context.Process(target=_pulse_loop, args=(str(self.path), self.seed), daemon=True)
        self._process.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.join(timeout=5.0)
            self._process = None


def read_pulses(path: Path) -> np.ndarray:
    """The pulses of ``path`` as rows ``(start, end, rate)``; none (an empty array) without the
    file. A cut-short last line is skipped; any other bad line is a ``ValueError`` naming it."""
    if not path.is_file():
        return np.empty((0, 3))
    lines = path.read_text(encoding="utf-8").split("\n")
    rows = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        row = _pulse(text)
        if row is None:
            if number == len(lines):  # no newline after it: the sampler was stopped mid-write
                continue
            raise ValueError(
                f"{path} line {number}: {text[:80]!r}; expected [start, end, rate] with start < end and rate > 0"
            )
        rows.append(row)
    return np.asarray(rows, dtype=float).reshape(-1, 3)


def _pulse(text: str) -> tuple[float, float, float] | None:
    try:
        row = json.loads(text)
    except ValueError:
        return None
    ok = isinstance(row, list) and len(row) == 3 and all(isinstance(v, int | float) and math.isfinite(v) for v in row)
    if not ok or not (row[0] < row[1] and row[2] > 0):
        return None
    return float(row[0]), float(row[1]), float(row[2])


def idle_rate(pulses: np.ndarray, busy: Iterable[tuple[float, float]]) -> tuple[float | None, int]:
    """The mean rate of the pulses during which nothing of ``busy`` ran (spans ``(start, end)``,
    in the pulses' wall seconds; an end of ``inf`` for a task still running), and how many
    they were; None for the rate with fewer than :data:`MIN_IDLE_PULSES`."""
    starts, ends = _union(busy)
    if not len(pulses):
        return None, 0
    # the busy stretch that began last before a pulse's end is the only one that can overlap it
    last = np.searchsorted(starts, pulses[:, 1], side="left") - 1
    if len(starts):
        overlapped = (last >= 0) & (ends[np.maximum(last, 0)] > pulses[:, 0])
    else:
        overlapped = np.zeros(len(pulses), dtype=bool)
    idle = pulses[~overlapped, 2]
    if len(idle) < MIN_IDLE_PULSES:
        return None, len(idle)
    return float(idle.mean()), len(idle)


def _union(spans: Iterable[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """The stretches of time covered by any of ``spans``: disjoint, as sorted starts and ends."""
    starts, ends = [], []
    for start, end in sorted(spans):
        if ends and start <= ends[-1]:
            ends[-1] = max(ends[-1], end)
        else:
            starts.append(start)
            ends.append(end)
    return np.asarray(starts, dtype=float), np.asarray(ends, dtype=float)


__all__ = ["MIN_IDLE_PULSES", "PULSES_FILE", "PULSE_GAP", "PULSE_SECONDS", "PulseSampler", "idle_rate", "read_pulses"]
