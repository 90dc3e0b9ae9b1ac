"""Celery's own CPU a visit, as its workers report it (the recorder's ``main_cpu`` readings).

A Celery worker is a main process that fetches messages, hands them to its pool, acks them,
sends the task events and, in a chain, publishes the next stage's message; its pool's processes
run the tasks. The main process's work takes the same cores as the tasks, and nothing in the
task events shows it. Its ``stats`` reply carries the main process's CPU seconds
(``getrusage(RUSAGE_SELF)``: user and system, the pool's live children not counted), which the
recorder keeps with each pool sample (:func:`adaptflow.runtime.record.main_cpu`). Here each
stage's CPU over the recording, over the attempts its tasks finished in the same time, is its
main process's CPU a visit; over the stages placed on a host, the host's: the scenario's
``Host.visit_cpu`` as measured, which ``adaptflow fit-growth --visit-cpu`` holds while it fits
the host's cores (:mod:`.celery_cpu`).

Why measure it rather than fit it: on the example app (2-core VM) the workers' main processes
took 42 ms of CPU an upload, about 9 ms a visit, 41 % of the tasks' own, at 4.8 and at 6.4
uploads a second alike (docs/sim_to_real.md, "One sequence at three rates"), while every fit
that searched ``visit_cpu`` on runs at one load chose it at or near 0 and let the calibrated
cores (1.06 of 2) carry that work instead.

Not calibrate's to write into the scenario: the calibration's effective cores
(:func:`.hosts.effective_cores`) already absorbed this work as cores the tasks did not get;
written beside them it would be counted twice. A visit here is one unit of an item's size
(``Host.visit_cpu`` is per unit of size): the fitted sizes average one.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .recording import Recording, missing_run_recording, read_recording
from .timeline import Timeline, build_timeline

MIN_VISITS = 30
"""Attempts a stage must finish between its readings for its CPU a visit to be read."""


def celery_cpu(recording: Recording, timeline: Timeline, hosts: dict[str, str | None]) -> dict[str, Any]:
    """Each stage's main-process CPU a visit and each host's (``hosts``: stage -> the host it was
    placed on), as the report holds them; empty where the recording has no readings (an older
    recorder, or groups of nodes, whose merged replies carry none)."""
    stages: dict[str, dict[str, Any]] = {}
    for stage, obs in timeline.stages.items():
        cpu, windows = _stage_cpu(recording, stage)
        if not windows:
            continue
        finishes = np.sort(np.asarray([finish for _, finish in obs.spans], dtype=float) + recording.origin)
        starts, ends = np.asarray(windows).T  # the attempts that finished in (start, end] of each window
        visits = int(np.sum(np.searchsorted(finishes, ends, "right") - np.searchsorted(finishes, starts, "right")))
        row: dict[str, Any] = {"cpu_seconds": round(cpu, 4), "visits": visits}
        if visits >= MIN_VISITS:
            row["per_visit"] = round(cpu / visits, 6)
        stages[stage] = row
    if not stages:
        return {}
    by_host: dict[str, dict[str, Any]] = {}
    for host in sorted({h for h in hosts.values() if h}):
        mine = [s for s, h in hosts.items() if h == host and "per_visit" in stages.get(s, {})]
        if mine:
            cpu, visits = sum(stages[s]["cpu_seconds"] for s in mine), sum(stages[s]["visits"] for s in mine)
            by_host[host] = {"per_visit": round(cpu / visits, 6), "stages": mine}
    return {"stages": stages, "hosts": by_host}


@dataclass(frozen=True)
class RunsCpu:
    """Celery's own CPU over a set of run recordings: its seconds and the visits its stages
    finished meanwhile, summed over the runs (a figure a visit weighted by each run's visits)."""

    cpu_seconds: float
    visits: int
    runs: int

    @property
    def per_visit(self) -> float:
        return self.cpu_seconds / self.visits


def runs_cpu(recordings: Sequence[Path], stages: Sequence[str]) -> RunsCpu:
    """Celery's own CPU a visit over ``stages`` (a host's) in every one of ``recordings`` (run
    recordings of ``compare-app``, which read each worker at a run's start and end); every
    recording without readings of some stage is a line of one :class:`ValueError`. Why from the
    fit set's own runs: the figure moved with the session (42 ms an upload in one, 48 in the next
    on the same VM, docs/sim_to_real.md), so a figure taken from another recording holds another
    session's level."""
    cpu, visits, problems = 0.0, 0, []
    for path in recordings:
        if missing := missing_run_recording(path):
            problems.append(missing)
            continue
        recording = read_recording(path)
        by_stage = celery_cpu(recording, build_timeline(recording), dict.fromkeys(stages)).get("stages", {})
        unread = [s for s in stages if s not in by_stage]
        if unread:
            problems.append(f"{path}: no main_cpu readings of {unread}; expected a run recorded by a compare-app "
                            "that reads each worker's main process at the run's start and end")  # fmt: skip
            continue
        cpu += sum(by_stage[s]["cpu_seconds"] for s in stages)
        visits += sum(by_stage[s]["visits"] for s in stages)
    if problems:
        raise ValueError("\n".join(problems))
    if visits < MIN_VISITS:
        raise ValueError(f"runs: {visits} visits between the workers' readings; expected at least {MIN_VISITS}")
    return RunsCpu(cpu, visits, len(recordings))


def _stage_cpu(recording: Recording, stage: str) -> tuple[float, list[tuple[float, float]]]:
    """The CPU seconds ``stage``'s main process spent between consecutive readings of one pid, and
    those spans (wall seconds): a restarted worker (a new pid) starts a count of its own."""
    readings = [(t, by[stage]) for t, by in recording.main_cpu if stage in by]
    cpu, windows = 0.0, []
    for (a, (pid_a, sec_a)), (b, (pid_b, sec_b)) in itertools.pairwise(readings):
        if pid_a == pid_b and sec_b >= sec_a and b > a:
            cpu += sec_b - sec_a
            windows.append((a, b))
    return cpu, windows


def report_lines(report: dict[str, Any]) -> list[str]:
    """The fit report's section: each stage's row, and each host's figure with the command that holds it."""
    if not report:
        return []
    rows = [
        "## Celery's own CPU",
        "Each worker's main process (fetching, handing to the pool, acking, events, the next message of a chain), "
        "CPU seconds as its `stats` reply reports them, over the attempts its stage finished meanwhile. Not written "
        "into the scenario: the effective cores above absorbed it. `adaptflow fit-growth --visit-cpu SECONDS` holds "
        "a host's figure and fits its cores instead (docs/deploy.md, step 6).",
        "",
        "| stage | CPU seconds | visits | CPU a visit (ms) |",
        "|---|---|---|---|",
    ]
    for stage, row in report["stages"].items():
        per = f"{1000 * row['per_visit']:.2f}" if "per_visit" in row else f"- (under {MIN_VISITS} visits)"
        rows.append(f"| {stage} | {row['cpu_seconds']:.3f} | {row['visits']:,} | {per} |")
    for host, row in report["hosts"].items():
        rows.append("")
        rows.append(
            f"Host {host}: {1000 * row['per_visit']:.2f} ms a visit over {', '.join(row['stages'])}: "
            f"`adaptflow fit-growth ... --visit-cpu {row['per_visit']:.4g}`."
        )
    return [*rows, ""]
