"""How Celery's own work on a machine slows with the tasks running beside it (``Host.contention``).

A stage's dispatch delay and turnaround are Celery's work, not the task's: the worker's main
process fetching a message, decoding it and handing it to a pool process, and after the task
the result, the ack and the next fetch, with the broker on the same machine. That work waits
for the cores like any other, so it takes longer while the machine's pool processes are busy.
On the example app (five one-process stages on a 2-core VM) the hand-offs divided by their
item's size were 10-45 % longer with two or three tasks running on the machine than with one,
and the turnarounds 20-45 %; a simulation with constant hand-offs met a burst with the same
waits downstream as a quiet moment, where the live app's downstream stages were held up: its
items' waits at successive stages covaried twice as much as the simulation's, and the p95
latency came out 10-16 % short with every mean right (docs/deploy.md).

The model (the simulator's, :meth:`~adaptflow.scenario.schema.Host.overhead_factor`): each
dispatch delay and turnaround of a stage on a host with contention ``c`` takes ``1 + c * b``
times its calibrated seconds, ``b`` the host's pool processes serving a task when it begins
(not the one that has just finished, nor the one that sent the item).

The fit, from a recording: every hand-off (the wait of a visit that found an idle process,
divided by its item's size) with ``b`` at the middle of its wait (at its start the task that
sent it is still running for a few milliseconds: Celery's ``task-sent`` comes before the
sender's ``task-succeeded``), and every turnaround gap with ``b`` just after the finish. Then
``log y = a_g + log(1 + c * b)``, a level ``a_g`` per stage and kind, ``c`` by least squares (the
levels profiled out), its 95 % interval where the likelihood ratio crosses chi-square's 3.84. The
logarithm because these times are skewed: a few hand-offs queued behind one sent just before
them would otherwise set ``c``. The stages' dispatch delays and turnarounds are then fitted to
the times divided by ``1 + c * b`` of their own moment: the times of a machine with nothing
else running, which the simulator stretches again by the load it meets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, stats

from ..live.handoff import MIN_GAPS
from . import system
from .recording import Recording
from .sizes import ItemSizes
from .timeline import StageObs, Timeline

MAX_CONTENTION = 5.0
"""The largest contention fitted: each busy process making Celery's work six times as long."""
MIN_SAMPLES = 30
"""Fewer hand-offs and turnaround gaps than this on a host read no contention (taken as 0)."""

Factor = system.Factor


@dataclass
class ContentionFit:
    """Each host's contention and, per hosted stage, the stretch of its Celery work at any time."""

    hosts: dict[str, float] = field(default_factory=dict)
    factors: dict[str, Factor] = field(default_factory=dict)  # stage -> stretch at times
    report: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def factor(self, stage: str) -> Factor | None:
        """The stretch of ``stage``'s Celery work, or None where none was fitted."""
        return self.factors.get(stage)


def busy_counter(stages: list[StageObs]) -> Callable[[np.ndarray], np.ndarray]:
    """The number of attempts of ``stages`` running at each of some times (started at or before
    it, not finished by it: an attempt finishing at that very time no longer counts)."""
    spans = [span for obs in stages for span in obs.spans]
    starts = np.sort(np.asarray([s for s, _ in spans], dtype=float))
    finishes = np.sort(np.asarray([f for _, f in spans], dtype=float))

    def busy(times: np.ndarray) -> np.ndarray:
        return np.searchsorted(starts, times, side="right") - np.searchsorted(finishes, times, side="right")

    return busy


def stage_samples(
    recording: Recording, obs: StageObs, stage: str, sizes: ItemSizes
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A stage's Celery work as recorded: the hand-offs (idle visits' waits over their item's
    size) with the middle of each wait, and the turnaround gaps with each finish."""
    first, _, _ = system.fit_dispatch(recording, obs, stage)
    timed = system.turnaround_gaps(obs, first)
    turnaround = float(np.mean([g for _, g in timed])) if len(timed) >= MIN_GAPS else 0.0
    mask = system.idle_visits(recording, obs, stage, turnaround)
    waits = np.asarray(obs.waits, dtype=float)[mask]
    middles = np.asarray(obs.enters, dtype=float)[mask] + waits / 2
    divided = waits / np.asarray([sizes.of_task(k) for k in np.asarray(obs.started)[mask]], dtype=float)
    finishes = np.asarray([t for t, _ in timed], dtype=float)
    return divided, middles, np.asarray([g for _, g in timed], dtype=float), finishes


def fit_contention(
    recording: Recording, timeline: Timeline, placed: dict[str, dict[str, Any]], sizes: ItemSizes
) -> ContentionFit:
    """Each host's contention (see the module docstring) from the stages ``placed`` on it
    (stage -> ``{"host": name, ...}``, the host fit's placement)."""
    fit = ContentionFit()
    for host in sorted({p["host"] for p in placed.values()}):
        names = [n for n, p in placed.items() if p["host"] == host and n in timeline.stages]
        busy = busy_counter([timeline.stages[n] for n in names])
        logs, loads, groups = [], [], []
        for k, name in enumerate(names):
            handoffs, middles, gaps, finishes = stage_samples(recording, timeline.stages[name], name, sizes)
            for g, (y, at) in enumerate(((handoffs, middles), (gaps, finishes))):
                ok = y > 0
                logs.append(np.log(y[ok]))
                loads.append(busy(at[ok]).astype(float))
                groups.append(np.full(int(ok.sum()), 2 * k + g))
        y, b, group = np.concatenate(logs), np.concatenate(loads), np.concatenate(groups)
        c, row = contention_of(y, b, group)
        fit.report[host] = row
        if "note" in row:
            fit.warnings.append(f"hosts.{host}.contention: {row['note']}")
            continue
        lo, hi = row["contention_ci95"]
        if lo <= 0.0:
            fit.warnings.append(
                f"hosts.{host}.contention: the hand-offs and turnarounds did not slow with the busy processes "
                f"(contention {c:.3g}, 95% CI {lo:.3g} to {hi:.3g}); written all the same"
            )
        fit.hosts[host] = c
        for name in names:
            fit.factors[name] = _stretch(busy, c)
    return fit


def _stretch(busy: Callable[[np.ndarray], np.ndarray], c: float) -> Factor:
    return lambda times: 1.0 + c * busy(np.asarray(times, dtype=float))


def contention_of(y: np.ndarray, b: np.ndarray, group: np.ndarray) -> tuple[float, dict[str, Any]]:
    """``c`` of ``y = a_group + log(1 + c b) + noise`` by least squares, with its likelihood-ratio
    interval: ``y`` the logs of the times, ``b`` the busy processes at each, ``group`` each
    one's level (a stage's hand-offs, its turnarounds), numbered from 0."""
    n = len(y)
    if n < MIN_SAMPLES or float(np.ptp(b)) == 0.0:
        note = f"{n} hand-offs and turnarounds (< {MIN_SAMPLES}) or busy counts not varying: taken as 0"
        return 0.0, {"samples": n, "note": note}
    counts = np.bincount(group)
    used = counts > 0

    def sse(c: float) -> float:
        r = y - np.log1p(c * b)
        means = np.bincount(group, r)[used] / counts[used]
        full = np.zeros(len(counts))
        full[used] = means
        return float(((r - full[group]) ** 2).sum())

    best = optimize.minimize_scalar(sse, bounds=(0.0, MAX_CONTENTION), method="bounded", options={"xatol": 1e-4})
    c, floor = float(best.x), sse(float(best.x))
    limit = floor * math.exp(float(stats.chi2.ppf(0.95, 1)) / n)

    def crossing(bound: float) -> float:  # where sse meets the limit between c and a bound
        if sse(bound) <= limit:
            return bound
        return float(optimize.brentq(lambda x: sse(x) - limit, min(bound, c), max(bound, c)))

    lo, hi = crossing(0.0), crossing(MAX_CONTENTION)
    levels = {int(v): float(np.mean(b == v)) for v in np.unique(np.minimum(b, 3))}
    return c, {"contention": c, "contention_ci95": [lo, hi], "samples": n, "busy_shares": levels}
