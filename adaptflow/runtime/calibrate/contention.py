"""How Celery's own work on a machine slows with the tasks running beside it (``Stage.contention``).

A stage's dispatch delay and turnaround are Celery's work, not the task's: the worker's main
process fetching a message, decoding it and handing it to a pool process, and after the task
the result, the ack and the next fetch, with the broker on the same machine. That work waits
for the cores like any other, so it takes longer while the machine is busy. On the example app
(five one-process stages on a 2-core VM) the hand-offs divided by their item's size were 10-45 %
longer with two or three tasks running on the machine than with one, and the turnarounds
20-45 %; a simulation with constant hand-offs met a burst with the same waits downstream as a
quiet moment, where the live app's downstream stages were held up: its items' waits at
successive stages covaried twice as much as the simulation's, and the p95 latency came out
10-16 % short with every mean right (docs/sim_to_real.md).

The model (the simulator's, ``Stage.contention``): each dispatch delay and turnaround of a
hosted stage takes ``1 + c * b`` times its calibrated seconds, ``c`` that stage's coefficient
for that kind of work and ``b`` the host's pool processes serving a task when it begins (not
the one that has just finished, nor the one that sent the item). Per stage and kind because
they differ, alike in two recordings (parse's turnaround 0.09-0.14, write's 0.40-0.52).

The fit, from a recording: every hand-off (the wait of a visit that found an idle process,
divided by its item's size) with ``b`` at its enter, less the task that sent it if that one is
still running then on the same host (Celery's ``task-sent`` comes a few milliseconds before the
sender's ``task-succeeded``; the simulator's sender has finished), and every turnaround gap with ``b``
just after its finish. Then, per stage and kind, ``log y = a + log(1 + c * b)`` by least
squares (``a`` profiled out), its 95 % interval where the likelihood ratio crosses chi-square's
3.84. The logarithm because these times are skewed: a few hand-offs queued behind one sent just
before them would otherwise set ``c``. (Read at the middle of the wait instead, ``b`` is a
noisy stand-in for the load the hand-off began with, and on a synthetic app with a known 0.6
the fit read 0.31.) The stage's dispatch delay and turnaround are then fitted to the times
divided by ``1 + c * b`` of their own moment: the times of a machine with nothing else
running, which the simulator stretches again by the load it meets.

Tried and left: a second load, the items sent and not yet started on the host. It fitted the
times better (likelihood ratio above 100) but replayed write's mean wait 14-16 % long: the
messages waiting in a burst are mostly parse's, sitting in the broker at no cost, and a line
fitted where a few wait overshoots where ten do.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, stats

from . import system
from .recording import Recording
from .sizes import ItemSizes
from .system import Stretch
from .timeline import StageObs, Timeline

MAX_COEFFICIENT = 5.0
"""The largest coefficient fitted: each busy process making Celery's work six times as long."""
MIN_SAMPLES = 30
"""Fewer times than this of one kind of a stage's work read no contention (none written)."""

CountAt = Callable[[np.ndarray], np.ndarray]
"""How many of something are under way at each of some times."""


KINDS = ("dispatch", "turnaround")
"""The two kinds of a stage's Celery work, as ``Stage.contention`` names them."""


@dataclass
class ContentionFit:
    """Each hosted stage's contention per kind and the stretch of that work at any time."""

    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> kind -> coefficient
    factors: dict[tuple[str, str], Stretch] = field(default_factory=dict)  # (stage, kind) -> its stretch
    report: dict[str, Any] = field(default_factory=dict)  # stage -> kind -> fit row
    warnings: list[str] = field(default_factory=list)

    def factor(self, stage: str, kind: str) -> Stretch | None:
        """The stretch of ``stage``'s ``kind`` of work (:data:`KINDS`): for ``dispatch`` a
        :data:`~.system.VisitStretch`, for ``turnaround`` a :data:`~.system.GapStretch`; None
        where none was fitted."""
        return self.factors.get((stage, kind))


def busy_counter(stages: list[StageObs]) -> CountAt:
    """The number of attempts of ``stages`` running at each of some times (started at or before
    it, not finished by it: an attempt finishing at that very time no longer counts)."""
    spans = [span for obs in stages for span in obs.spans]
    return _between([s for s, _ in spans], [f for _, f in spans])


def _between(opens: list[float], closes: list[float]) -> CountAt:
    """How many of the intervals ``[open, close)`` hold each of some times."""
    opened, closed = np.sort(np.asarray(opens, dtype=float)), np.sort(np.asarray(closes, dtype=float))

    def count(times: np.ndarray) -> np.ndarray:
        return np.searchsorted(opened, times, side="right") - np.searchsorted(closed, times, side="right")

    return count


def sender_spans(timeline: Timeline, counted: list[str]) -> dict[str, tuple[float, float]]:
    """The (start, finish) of the attempt that sent each task (its item's visit before it),
    where that attempt is of one of the ``counted`` stages: a sender on another host is not among
    the busy processes a hand-off is read against, so it is not taken off them either."""
    chosen = [timeline.stages[name] for name in counted]
    span = {k: (start, finish) for obs in chosen for _, start, finish, k in obs.attempt_times}
    senders = {}
    for item in timeline.items.values():
        for (_, _, before), (_, _, task) in itertools.pairwise(item.visits):
            if before in span:
                senders[task] = span[before]
    return senders


def handoff_busy(obs: StageObs, mask: np.ndarray, busy: CountAt, senders: dict[str, tuple[float, float]]) -> np.ndarray:
    """The busy processes each masked visit's hand-off began with: at its enter, less its sender
    if still running then."""
    enters = np.asarray(obs.enters, dtype=float)[mask]
    tasks = np.asarray(obs.started)[mask]
    spans = [senders.get(k, (1.0, 0.0)) for k in tasks]  # no sender: an empty span
    running = [start <= t < finish for t, (start, finish) in zip(enters, spans, strict=True)]
    return busy(enters) - np.asarray(running, dtype=int)


def stage_samples(
    recording: Recording, obs: StageObs, stage: str, sizes: ItemSizes, busy: CountAt,
    senders: dict[str, tuple[float, float]],
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """A stage's Celery work as recorded, each time with the busy processes it began with: the
    hand-offs (idle visits' waits over their item's size) and the turnaround gaps."""
    first, _, _ = system.fit_dispatch(recording, obs, stage)  # the same steps as the stage's own fit
    recorded, _ = system.fit_turnaround(obs, first)
    mask = system.idle_visits(recording, obs, stage, recorded)
    timed = system.turnaround_gaps(obs, first)
    waits = np.asarray(obs.waits, dtype=float)[mask]
    divided = waits / np.asarray([sizes.of_task(k) for k in np.asarray(obs.started)[mask]], dtype=float)
    gaps = np.asarray([g for _, g in timed], dtype=float)
    finishes = np.asarray([t for t, _ in timed], dtype=float)
    return (divided, handoff_busy(obs, mask, busy, senders)), (gaps, busy(finishes))


def fit_contention(
    recording: Recording, timeline: Timeline, placed: dict[str, dict[str, Any]], sizes: ItemSizes
) -> ContentionFit:
    """Each hosted stage's contention per kind (see the module docstring), the busy processes
    counted over the stages ``placed`` on its host (stage -> ``{"host": name, ...}``, the host
    fit's placement)."""
    fit = ContentionFit()
    for host in sorted({p["host"] for p in placed.values()}):
        names = [n for n, p in placed.items() if p["host"] == host and n in timeline.stages]
        busy, senders = busy_counter([timeline.stages[n] for n in names]), sender_spans(timeline, names)
        for name in names:
            obs = timeline.stages[name]
            samples = stage_samples(recording, obs, name, sizes, busy, senders)
            for kind, (y, b) in zip(KINDS, samples, strict=True):
                ok = y > 0
                c, row = contention_of(np.log(y[ok]), b[ok].astype(float))
                fit.report.setdefault(name, {})[kind] = row
                if c is None:
                    continue
                lo, hi = row["contention_ci95"]
                if lo <= 0.0:  # no sign of it: a small c does little harm, and one rule for every stage
                    fit.warnings.append(
                        f"stages.{name}.contention.{kind}: the recorded times did not follow the busy processes "
                        f"({c:.3g}, 95% CI {lo:.3g} to {hi:.3g}); written all the same"
                    )
                fit.stages.setdefault(name, {})[kind] = c
                if kind == "dispatch":
                    fit.factors[(name, kind)] = _visit_stretch(obs, busy, senders, c)
                else:
                    fit.factors[(name, kind)] = _gap_stretch(busy, c)
    return fit


def _visit_stretch(obs: StageObs, busy: CountAt, senders: dict[str, tuple[float, float]], c: float) -> Stretch:
    return lambda mask: 1.0 + c * handoff_busy(obs, mask, busy, senders)


def _gap_stretch(busy: CountAt, c: float) -> Stretch:
    return lambda finishes: 1.0 + c * busy(np.asarray(finishes, dtype=float))


def contention_of(y: np.ndarray, busy: np.ndarray) -> tuple[float | None, dict[str, Any]]:
    """``c`` of ``y = a + log(1 + c * busy) + noise`` by least squares, with its likelihood-ratio
    interval: ``y`` the logs of one kind of a stage's times, ``busy`` the processes serving at
    each. None, with a note, when there are too few times or the busy count never varies."""
    n = len(y)
    if n < MIN_SAMPLES or float(np.ptp(busy)) == 0.0:
        return None, {"samples": n, "note": f"{n} times (< {MIN_SAMPLES}) or the busy count not varying: none fitted"}

    def sse(c: float) -> float:
        r = y - np.log1p(c * busy)
        return float(((r - r.mean()) ** 2).sum())

    best = optimize.minimize_scalar(sse, bounds=(0.0, MAX_COEFFICIENT), method="bounded", options={"xatol": 1e-5})
    c = float(best.x)
    limit = sse(c) * math.exp(float(stats.chi2.ppf(0.95, 1)) / n)

    def crossing(bound: float) -> float:  # where sse meets the limit between c and a bound
        if sse(bound) <= limit:
            return bound
        return float(optimize.brentq(lambda x: sse(x) - limit, min(bound, c), max(bound, c), xtol=1e-5))

    shares = {int(v): float(np.mean(np.minimum(busy, 3) == v)) for v in range(4)}
    row = {"contention": c, "contention_ci95": [crossing(0.0), crossing(MAX_COEFFICIENT)], "samples": n,
           "busy_shares": shares}  # fmt: skip
    return c, row
