"""Fitting the scenario's structure to what was recorded: routes, failure and retry, worker pools,
their start-up delay, and the SLA.

* Routes: per item, its visits in enter order; each consecutive pair is one transition of the
  first stage's route, the source's route goes to the first visit, and an item that left (an
  exit, recorded or inferred) adds a transition to the exit after its last visit. Items given up
  or dropped add none (they left by failure, not by a route), nor do items still in the system
  or items whose time in the system overlaps a recording gap (a visit may be missing). One
  target is a direct route; several are a split with the observed shares (Wilson 95% intervals
  in the report).
* Failure: ``prob`` = failed attempts / attempts; ``max_retries`` = the most retries any visit
  was seen to take (or give up after).
* Pools: from the ``adaptflow-pools`` lines; the first line's count is ``initial``.
* Start-up delay: per pool grow from ``n`` (the count rising between two lines, taken to happen
  halfway between them), the time until more than ``n`` of the stage's tasks first ran at once
  (a new process served), before the pool line changed again; their median. Not "the first task
  of a process not seen before": Celery's ``task-started`` names the worker node's main process,
  never the pool process, so no new pid ever shows within a node. The sampling interval bounds
  its precision (reported). A grow met by no backlog is served only when work comes (said when
  no task was waiting: the delay is then an upper bound).
* Dispatch delay: the median wait of the visits that entered while the stage had an idle process
  (attempts running at the enter time fewer than the pool size recorded then) and no visit
  waiting before them. Such a visit queued behind nothing, so its whole wait is the hand-off
  (task sent -> fetched -> a process starts it). The median, not the mean: a visit that found a
  process idle can still wait behind one sent just before it, or for a process the pool line
  counts but that is still starting; those few long waits would pull a mean up (measured on a
  synthetic recording with a known 5 ms: the mean of such visits gave 7 ms). The price: a skewed
  hand-off is underestimated (on the example app the median was 20-35 % below the mean, which
  the report gives beside it). So when those waits spread (interquartile range at least
  ``DISPATCH_SPREAD`` of the median) the scenario gets their distribution, drawn per visit,
  instead of the median (:func:`dispatch_block`); nearly constant ones keep the median. Fewer
  than ``DISPATCH_MIN_VISITS`` such visits: 0, with a warning. A process in its turnaround (next point) is not idle.
* Turnaround: the mean gap between an attempt's finish and the start that took its freed slot
  on the same worker node (:mod:`adaptflow.runtime.live.handoff`: Celery's events name the node,
  not the pool process), over the attempts that were ready (sent, plus a first dispatch
  estimate) before that finish: the node had work waiting, so the gap is Celery refilling its slot (with
  ``task_acks_late`` and a prefetch of one, the ack, the next fetch and the hand-off). The mean,
  not the median: it is capacity, and capacity is spent on average. Measured on the example app
  on a loaded machine: 80 ms at four stages, as long as their service times, which made the
  recorded waits 20-40 % longer than a scenario without it simulated. Fewer than
  ``MIN_GAPS`` such gaps: 0. The dispatch delay is then fitted again with it.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats

from ..live.handoff import MIN_GAPS, timed_gaps
from .distributions import fit_service, sig, with_moments
from .recording import Recording
from .sizes import ItemSizes
from .timeline import ItemObs, StageObs, Timeline

Target = str | None
Stretch = Callable[[np.ndarray], np.ndarray]
"""How many times a stage's Celery work was stretched by its host's load (:mod:`.contention`):
a ``VisitStretch`` maps a boolean mask over ``StageObs.waits`` to each masked hand-off's
stretch, a ``GapStretch`` the finishes of turnaround gaps to theirs."""
VisitStretch = GapStretch = Stretch


def wilson(successes: int, n: int, z: float = 1.96) -> list[float]:
    """The Wilson score interval of a proportion (95% by default)."""
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def relative_gaps(recording: Recording) -> list[tuple[float, float]]:
    return [(start - recording.origin, end - recording.origin) for start, end, _ in recording.gaps]


def _overlaps(item: ItemObs, gaps: list[tuple[float, float]], horizon: float) -> bool:
    begin = item.created if item.created is not None else item.visits[0][0]
    end = item.end_time if item.end_time is not None else horizon
    return any(start <= end and begin <= stop for start, stop in gaps)


def transitions(timeline: Timeline, gaps: list[tuple[float, float]]) -> tuple[dict[str, Counter], int]:
    """Counts of where items went after each source and stage; and the items left out for gaps."""
    counts: dict[str, Counter] = {}
    skipped = 0
    for item in timeline.items.values():
        if not item.visits:
            continue
        if gaps and _overlaps(item, gaps, timeline.horizon):
            skipped += 1
            continue
        if item.source is not None:
            counts.setdefault(item.source, Counter())[item.visits[0][1]] += 1
        for (_, here, _), (_, there, _) in zip(item.visits, item.visits[1:], strict=False):
            counts.setdefault(here, Counter())[there] += 1
        if item.end in ("exit", "inferred-exit"):
            counts.setdefault(item.visits[-1][1], Counter())[None] += 1
    return counts, skipped


def route_of(counts: Counter) -> tuple[Any, dict[str, Any]]:
    """A route as the schema writes it (a stage name, null, or a list of branches) and its report."""
    n = sum(counts.values())
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    report = {
        "transitions": n,
        "counts": {_label(t): c for t, c in ordered},
        "p_ci95": {_label(t): wilson(c, n) for t, c in ordered},
    }
    if len(ordered) == 1:
        return ordered[0][0], report
    shares = [round(c / n, 6) for _, c in ordered[:-1]]
    shares.append(round(1.0 - sum(shares), 6))  # sums to 1 within float round-off
    return [{"to": t, "p": p} for (t, _), p in zip(ordered, shares, strict=True)], report


def _label(target: Target) -> str:
    return "exit" if target is None else target


def fit_failure(obs: StageObs) -> tuple[dict[str, Any] | None, dict[str, Any], list[str]]:
    """The ``failure`` block of a stage (None if no attempt failed), its report and warnings."""
    report: dict[str, Any] = {"attempts": obs.attempts, "failures": obs.failures, "giveups": len(obs.giveups)}
    if not obs.failures:
        return None, report, []
    prob = obs.failures / obs.attempts
    max_retries = max([*obs.retry_numbers, *obs.giveups, 0])
    early = sum(1 for r in obs.giveups if r < max_retries)
    report.update(prob=prob, prob_ci95=wilson(obs.failures, obs.attempts), max_retries=max_retries)
    report["retries"] = len(obs.retry_numbers)
    warnings = []
    if early:
        warnings.append(
            f"{early} visits were given up before {max_retries} retries (a non-retryable error?); the scenario "
            "retries every failure up to max_retries"
        )
    return {"prob": sig(prob), "max_retries": max_retries}, report, warnings


def pool_series(recording: Recording, stage: str) -> list[tuple[float, int]]:
    """The stage's pool size at each ``adaptflow-pools`` line that has it (scenario seconds)."""
    return [(t - recording.origin, pools[stage]) for t, pools in recording.pools if stage in pools]


def pool_changes(recording: Recording, stages: list[str]) -> list[tuple[float, str, int]]:
    """Every change of a pool's size, at the midpoint of the two lines around it, in time order."""
    changes = []
    for stage in stages:
        series = pool_series(recording, stage)
        for (t0, n0), (t1, n1) in itertools.pairwise(series):
            if n1 != n0:
                changes.append(((t0 + t1) / 2, stage, n1))
    return sorted(changes)


def fit_workers(recording: Recording, obs: StageObs, stage: str) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """A stage's ``workers`` block (without its start-up delay), its report and warnings.

    ``initial`` is the first recorded pool size; ``min`` is 1 (0 if the pool was ever seen
    empty); ``max`` twice the largest pool seen, room for a planner to grow it."""
    series = pool_series(recording, stage)
    warnings = []
    if series:
        sizes = [n for _, n in series]
        initial, low, high = sizes[0], min(sizes), max(sizes)
    else:
        initial = low = high = max(1, _most_at_once(obs))
        warnings.append(
            f"no adaptflow-pools line names stage {stage!r}: its pool is taken as the {initial} tasks "
            "seen running at once"
        )
    block = {"initial": initial, "min": 0 if low == 0 else min(1, initial), "max": max(2 * high, 1)}
    report = {"initial": initial, "seen_min": low, "seen_max": high, "samples": len(series)}
    return block, report, warnings


def fit_startup(recording: Recording, obs: StageObs, stage: str) -> tuple[float | None, dict[str, Any]]:
    """The start-up delay measured at the stage's pool grows (None: no grow that a new process
    served): per grow from ``n0``, the first time more than ``n0`` of its attempts ran at once,
    before the pool line changed again. Celery's events do not name a pool's processes (see
    :mod:`adaptflow.runtime.live.handoff`), so a new process shows by what the pool does at once."""
    series = pool_series(recording, stage)
    starts, finishes = _starts_and_finishes(obs)
    grows = []
    for i, ((t0, n0), (t1, n1)) in enumerate(itertools.pairwise(series)):
        if n1 <= n0:
            continue
        until = next((t for t, n in series[i + 2 :] if n != n1), math.inf)
        first = _first_beyond(starts, finishes, n0, t0, until)
        if first is None:
            continue
        grow_at = (t0 + t1) / 2
        grows.append({"at": grow_at, "from": n0, "to": n1, "first_new_process": first,
                      "delay": max(0.0, first - grow_at), "sampling": t1 - t0,
                      "queue": _queue_at(recording, stage, t1)})  # fmt: skip
    if not grows:
        return None, {"grows": []}
    delay = float(np.median([g["delay"] for g in grows]))
    report = {"grows": grows, "delay": delay, "uncertainty": max(g["sampling"] for g in grows) / 2}
    if all(g["queue"] == 0 for g in grows):
        report["note"] = (
            "no task was waiting at any grow: a new process may have idled before its first task, so the "
            "delay is an upper bound"
        )
    return delay, report


HELD_SECONDS = 0.5
"""A stage shrunk to one process that sat idle longer than this with an item waiting held a task
in the retired process (Celery's shrink race, ``Workers.late_reap``): its hand-off is 0.03-0.07 s
on the example app, the race's holds 0.9-4.9 s."""
HELD_WITHIN = 6.0
"""Seconds after a shrink's second pool line within which a hold counts: the retired process is
reaped at the first maintenance tick at least a second after it (ticks every 5 s)."""


def fit_held_shrinks(recording: Recording, obs: StageObs, stage: str) -> dict[str, Any]:
    """Of the stage's shrinks to one process (a pool line of 1 after a larger one), those after
    which the stage sat idle more than :data:`HELD_SECONDS` with an item waiting (entered, not
    started), before :data:`HELD_WITHIN` seconds past the line: the share whose retired process
    held a task, a prefork pool's ``late_reap``. Only shrinks to one: a larger pool serves on
    with its other processes, and a hold does not show as idleness (not counted either way)."""
    series = pool_series(recording, stage)
    attempts = sorted(obs.attempt_times, key=lambda a: a[1])
    enters, starts, finishes = (np.asarray([a[i] for a in attempts], dtype=float) for i in range(3))
    busy_until = np.maximum.accumulate(finishes) if len(finishes) else finishes  # of the attempts started so far
    shrinks, held = [], []
    for (t0, n0), (t1, n1) in itertools.pairwise(series):
        if not (n1 == 1 < n0):
            continue
        shrinks.append(t1)
        first = max(1, int(np.searchsorted(starts, t0, side="right")))  # starts are sorted
        window = np.arange(first, int(np.searchsorted(starts, t1 + HELD_WITHIN, side="left")))
        idle = starts[window] - np.maximum(busy_until[window - 1], enters[window])
        if len(idle) and idle.max() > HELD_SECONDS:
            held.append(float(starts[window[int(np.argmax(idle))]]))
    return {"shrinks": len(shrinks), "held": len(held), "held_at": held}


def _first_beyond(starts: np.ndarray, finishes: np.ndarray, pool: int, after: float, before: float) -> float | None:
    """The first of ``starts`` in (``after``, ``before``) at which more than ``pool`` attempts
    ran at once (a finish at the very time has ended); both arrays from :func:`_starts_and_finishes`."""
    candidates = starts[(starts > after) & (starts < before)]
    running = np.searchsorted(starts, candidates, side="right") - np.searchsorted(finishes, candidates, side="right")
    beyond = np.flatnonzero(running > pool)
    return float(candidates[beyond[0]]) if len(beyond) else None


def _most_at_once(obs: StageObs) -> int:
    """The most attempts of the stage seen running at once."""
    starts, finishes = _starts_and_finishes(obs)
    running = np.searchsorted(starts, starts, side="right") - np.searchsorted(finishes, starts, side="right")
    return int(running.max()) if len(running) else 0


def _starts_and_finishes(obs: StageObs) -> tuple[np.ndarray, np.ndarray]:
    """The stage's attempt starts (running ones too) and finishes, each sorted."""
    starts = np.sort(np.asarray([s for s, _ in obs.spans] + list(obs.running.values()), dtype=float))
    return starts, np.sort(np.asarray([f for _, f in obs.spans], dtype=float))


DISPATCH_MIN_VISITS = 20


def fit_dispatch(
    recording: Recording, obs: StageObs, stage: str, turnaround: float = 0.0, idle: np.ndarray | None = None
) -> tuple[float, dict[str, Any], list[str]]:
    """The stage's dispatch delay (see the module docstring), its report and warnings. A
    process in its ``turnaround`` after an attempt is not idle. ``idle``: the
    :func:`idle_waits` for that turnaround, if the caller has them already."""
    if idle is None:
        idle = idle_waits(recording, obs, stage, turnaround)
    report: dict[str, Any] = {"visits": len(obs.waits), "idle_visits": len(idle)}
    if len(idle) < DISPATCH_MIN_VISITS:
        report["note"] = f"{len(idle)} visits found an idle process (< {DISPATCH_MIN_VISITS}): taken as 0"
        return 0.0, report, [f"stages.{stage}.dispatch_delay: {report['note']}"]
    delay = max(0.0, float(np.median(idle)))
    report.update(delay=delay, delay_ci95=median_ci(idle), idle_mean=float(idle.mean()),
                  idle_p95=float(np.percentile(idle, 95)))  # fmt: skip
    return delay, report, []


def idle_waits(
    recording: Recording, obs: StageObs, stage: str, turnaround: float = 0.0, factor: VisitStretch | None = None
) -> np.ndarray:
    """The waits of the visits that entered when a process of the stage was free (not serving,
    not in its turnaround) and no visit was waiting: each is the hand-off alone. ``factor``:
    the stretch of each by its host's load (:mod:`.contention`), divided out."""
    mask = idle_visits(recording, obs, stage, turnaround)
    return np.asarray(obs.waits, dtype=float)[mask] / (1.0 if factor is None else factor(mask))


def idle_visits(recording: Recording, obs: StageObs, stage: str, turnaround: float = 0.0) -> np.ndarray:
    """Which of ``obs.waits`` (and ``obs.started``) are :func:`idle_waits`: a boolean mask."""
    enters, waits = np.asarray(obs.enters, dtype=float), np.asarray(obs.waits, dtype=float)
    free = _busy_at(obs, enters, turnaround) < _pool_at(recording, obs, stage, enters)
    return free & (_waiting_at(enters, waits) == 0)


DISPATCH_SPREAD = 0.2
"""The interquartile range of the idle visits' waits, relative to their median, from which the
dispatch delay is written as a distribution. A robust spread: the few long waits of visits that
queued behind one sent just before them (see the module docstring) do not move it."""


def dispatch_block(
    idle: np.ndarray, stage: str, delay: float
) -> tuple[float | dict[str, Any], dict[str, Any], list[str]]:
    """What the scenario's ``dispatch_delay`` is written as: the median ``delay`` (a constant)
    when the hand-offs are nearly constant, else their distribution, fitted as a service time
    is. A constant at the median of a skewed hand-off (the example app on a loaded machine:
    median 45-55 ms, mean 59-74 ms) read the waits of lightly loaded stages 20-30 % short.
    ``idle``: the :func:`idle_waits` ``delay`` is the median of."""
    if delay <= 0:
        return delay, {}, []
    idle = np.maximum(idle, 1e-6)
    q1, q3 = np.percentile(idle, [25, 75])
    spread = float((q3 - q1) / delay)
    if spread < DISPATCH_SPREAD:  # nearly constant: a few long waits are visits behind another
        return delay, {"relative_iqr": spread, "chosen": "constant (median)"}, []
    block, report, warnings = fit_service(idle.tolist(), f"{stage}.dispatch_delay")
    return block, {**report, "relative_iqr": spread}, warnings


def dispatch_given_sizes(
    recording: Recording,
    obs: StageObs,
    stage: str,
    turnaround: float,
    sizes: ItemSizes,
    factor: VisitStretch | None = None,
) -> tuple[float | dict[str, Any], dict[str, Any], list[str]]:
    """The trace scenario's dispatch delay, whose items carry sizes: :func:`dispatch_block` of
    each idle visit's wait divided by its item's size (the simulator multiplies it back, as it
    does the service time), a fitted distribution moved to the moments that give the recorded
    waits (:meth:`ItemSizes.moments_of`). Its report says how the waits followed the sizes: the
    log-log slope of wait on size (1: in proportion) and their correlation. On the example app
    the stages after the first, whose messages carry the parsed records, had slopes 1.17-1.44
    (each interval above 0.77; above 1 because an estimated size is shrunk toward 1) and
    correlations 0.30-0.38; the first, whose 2.5 ms hand-off barely matters, 0.25 (-0.10 to
    0.60) and 0.04. One rule for every stage, as for the service time, rather than a choice per
    stage on a slope that is noise where it is small; a stage whose interval holds 0 is warned of.
    Fewer than ``DISPATCH_MIN_VISITS`` idle visits: 0 (the plain fit warned already). ``factor``:
    as :func:`idle_waits`'."""
    mask = idle_visits(recording, obs, stage, turnaround)
    waits = np.maximum(np.asarray(obs.waits, dtype=float)[mask], 0.0) / (1.0 if factor is None else factor(mask))
    if len(waits) < DISPATCH_MIN_VISITS:
        return 0.0, {}, []
    factors = np.asarray([sizes.of_task(k) for k in np.asarray(obs.started)[mask]], dtype=float)
    divided = waits / factors
    delay = max(0.0, float(np.median(divided)))
    block, report, warnings = dispatch_block(divided, stage, delay)
    following = _size_following(waits, factors)
    report.update(delay=delay, **following)
    lo, hi = following.get("size_slope_ci95", [1.0, 1.0])
    if lo <= 0.0 <= hi:  # no sign that they follow the sizes (a slope above 1 is the estimated sizes' shrinkage)
        warnings.append(
            f"stages.{stage}.dispatch_delay: the idle waits did not follow their items' sizes (log-log slope "
            f"{following['size_slope']:.3g}, 95% CI {lo:.3g} to {hi:.3g}); the trace scenario multiplies them by "
            "the size all the same, as it does every per-visit time"
        )
    if isinstance(block, dict):
        mean, cv = sizes.moments_of(waits)
        block = with_moments(block, mean, cv)
        report.update(moment_mean=mean, moment_cv=cv)
    return block, report, warnings


def _size_following(waits: np.ndarray, factors: np.ndarray) -> dict[str, float]:
    """How the idle waits followed their items' sizes: slope of log wait on log size (with its
    95% interval) and the plain correlation; empty when the sizes do not vary."""
    positive = (waits > 0) & (factors > 0)
    x, y = np.log(factors[positive]), np.log(waits[positive])
    if len(x) < 3 or float(np.ptp(x)) == 0.0:
        return {}
    fit = stats.linregress(x, y)
    half = 1.96 * float(fit.stderr)
    return {
        "size_slope": float(fit.slope),
        "size_slope_ci95": [float(fit.slope) - half, float(fit.slope) + half],
        "size_correlation": float(np.corrcoef(waits, factors)[0, 1]),
    }


def fit_turnaround(obs: StageObs, dispatch: float, factor: GapStretch | None = None) -> tuple[float, dict[str, Any]]:
    """The stage's turnaround (see the module docstring) and its report: the mean of the
    :func:`~adaptflow.runtime.live.handoff.backlogged_gaps` of its attempts, each on the worker
    node that started it; each divided by ``factor`` at its finish (:mod:`.contention`), if given.
    The report's ``cv`` is theirs too (``Stage.turnaround_cv``)."""
    x = divided_gaps(obs, dispatch, factor)
    report: dict[str, Any] = {"backlogged_gaps": len(x)}
    if len(x) < MIN_GAPS:
        report["note"] = f"{len(x)} attempts followed a backlogged one (< {MIN_GAPS}): taken as 0"
        return 0.0, report
    half = 1.96 * float(x.std(ddof=1)) / math.sqrt(len(x))
    mean = float(x.mean())
    report.update(turnaround=mean, turnaround_ci95=[mean - half, mean + half], median=float(np.median(x)),
                  p95=float(np.percentile(x, 95)), cv=_cv(x))  # fmt: skip
    return mean, report


def turnaround_cv_given_sizes(
    obs: StageObs, dispatch: float, factor: GapStretch | None, size_of: Callable[[str], float]
) -> float | None:
    """The ``turnaround_cv`` for a trace with item sizes: the simulator multiplies a turnaround
    by the size of the item whose attempt ended it, then by its spread, so the spread is the
    one whose product with those sizes has the gaps' second moment (the sizes' moments matched,
    as :class:`.sizes.ItemSizes` does for services: a gap divided by its own item's size would
    add the sizes' spread twice where the gaps do not follow the sizes). None with fewer than
    ``MIN_GAPS`` gaps."""
    finishes, x = _timed_divided_gaps(obs, dispatch, factor)
    if len(x) < MIN_GAPS:
        return None
    task_at = {finish: k for _, _, finish, k in obs.attempt_times}
    sizes = np.asarray([size_of(task_at[t]) for t in finishes.tolist()])
    second = (1.0 + _cv(x) ** 2) * float(sizes.mean()) ** 2 / float(np.mean(sizes**2))
    return math.sqrt(max(0.0, second - 1.0))


def divided_gaps(obs: StageObs, dispatch: float, factor: GapStretch | None = None) -> np.ndarray:
    """The stage's backlogged gaps (:func:`turnaround_gaps`), each divided by ``factor`` at its
    finish where given."""
    return _timed_divided_gaps(obs, dispatch, factor)[1]


def _timed_divided_gaps(obs: StageObs, dispatch: float, factor: GapStretch | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`divided_gaps` with each gap's finish beside it."""
    timed = turnaround_gaps(obs, dispatch)
    finishes = np.asarray([t for t, _ in timed], dtype=float)
    gaps = np.asarray([g for _, g in timed], dtype=float)
    return finishes, (gaps / factor(finishes) if factor is not None and len(gaps) else gaps)


def _cv(x: np.ndarray) -> float:
    mean = float(x.mean())
    return float(x.std(ddof=1)) / mean if mean > 0 else 0.0


def turnaround_gaps(obs: StageObs, dispatch: float) -> list[tuple[float, float]]:
    """The stage's backlogged gaps with their finishes (:func:`~..live.handoff.timed_gaps`), each
    attempt on the worker node that started it."""
    node = obs.process_of
    attempts = [(enter, start, finish, node[k]) for enter, start, finish, k in obs.attempt_times if k in node]
    return timed_gaps(attempts, dispatch)


def median_ci(values: np.ndarray, z: float = 1.96) -> list[float]:
    """A distribution-free 95% interval of the median: the order statistics ``n/2 -+ z sqrt(n)/2``."""
    x, n = np.sort(values), len(values)
    lo = max(0, math.floor(n / 2 - z * math.sqrt(n) / 2))
    hi = min(n - 1, math.ceil(n / 2 + z * math.sqrt(n) / 2))
    return [float(x[lo]), float(x[hi])]


def _busy_at(obs: StageObs, times: np.ndarray, turnaround: float = 0.0) -> np.ndarray:
    """Processes of the stage held at each of ``times``: an attempt started before it and not
    finished, turnaround included, by it (a process freed at the very time is idle then)."""
    starts, finishes = _starts_and_finishes(obs)
    return np.searchsorted(starts, times, side="left") - np.searchsorted(finishes + turnaround, times, side="right")


def _waiting_at(enters: np.ndarray, waits: np.ndarray) -> np.ndarray:
    """Visits waiting (entered, not started) just before each of ``enters``."""
    starts = np.sort(enters + waits)
    return np.searchsorted(np.sort(enters), enters, side="left") - np.searchsorted(starts, enters, side="right")


def _pool_at(recording: Recording, obs: StageObs, stage: str, times: np.ndarray) -> np.ndarray:
    """The stage's pool size at each of ``times``: the last ``adaptflow-pools`` line before it
    (the first line before any), or the most tasks seen running at once if no line names it."""
    series = pool_series(recording, stage)
    if not series:
        return np.full(len(times), max(1, _most_at_once(obs)))
    at, sizes = np.array([t for t, _ in series]), np.array([n for _, n in series])
    index = np.clip(np.searchsorted(at, times, side="right") - 1, 0, len(sizes) - 1)
    return sizes[index]


def _queue_at(recording: Recording, stage: str, t: float) -> int | None:
    """The stage's last recorded queue length at or before scenario time ``t``."""
    before = [q[stage] for w, q in recording.queues if stage in q and w - recording.origin <= t]
    return before[-1] if before else None


def latencies(timeline: Timeline) -> np.ndarray:
    """End-to-end latencies of the items that arrived while recording and left by an exit, in
    the order they arrived (a recorded figure's interval batches them in time)."""
    done = sorted(
        (i.created, i.end_time - i.created)
        for i in timeline.items.values()
        if i.created is not None and i.end in ("exit", "inferred-exit") and i.end_time is not None
    )
    return np.asarray([latency for _, latency in done], dtype=float)


def fit_sla(recording: Recording, timeline: Timeline) -> tuple[float, str]:
    """The SLA latency and where it came from."""
    if recording.mapping.sla is not None:
        return float(recording.mapping.sla.latency), "from mapping.yaml (sla.latency)"
    done = latencies(timeline)
    if not len(done):
        raise ValueError(
            f"{recording.path}: no item both arrived and left while recording, so no SLA can be derived; "
            "expected sla: {latency: seconds} in mapping.yaml"
        )
    p95 = float(np.percentile(done, 95))
    return sig(1.5 * p95), f"not in mapping.yaml: 1.5 x the recorded p95 latency ({p95:.3g} s, {len(done)} items)"
