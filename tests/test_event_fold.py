"""The live monitor's event fold, without Redis: synthetic event records, as the tasks write them,
folded into intervals (adaptflow/runtime/live/fold.py); and the bounded whole-run histogram."""

from __future__ import annotations

import gc
import heapq
import itertools
import math
import random
import sys
import tracemalloc
import uuid
from collections import deque
from collections.abc import Iterator

import numpy as np
import pytest

from adaptflow.runtime.live import EventFold, LogHistogram
from adaptflow.scenario.schema import Sla


# Records as Redis returns them: every value a string, booleans as 0/1 (built directly, not in
# a loop over fields: the million-record test makes a lot of them).
def _b(flag: bool) -> str:
    return "1" if flag else "0"


def arrive(item: str, t: float) -> dict[str, str]:
    return {"e": "arrive", "src": "jobs", "i": item, "t": str(t)}


def enter(key: str, item: str, t: float, retry: int | None = None, stage: str = "w") -> dict[str, str]:
    record = {"e": "enter", "s": stage, "i": item, "k": key, "t": str(t)}
    if retry is not None:
        record["r"] = str(retry)
    return record


def start(key: str, t: float, queued: float, stage: str = "w") -> dict[str, str]:
    return {"e": "start", "s": stage, "k": key, "t": str(t), "q": str(queued), "h": "w@host"}


def finish(key: str, t: float, queued: float, started: float, failed: bool = False, detected: bool = False,
           stage: str = "w") -> dict[str, str]:  # fmt: skip
    return {"e": "finish", "s": stage, "k": key, "t": str(t), "q": str(queued), "st": str(started), "h": "w@host",
            "d": _b(detected), "x": _b(failed)}  # fmt: skip


def leave(kind: str, item: str, created: float, t: float, bad: bool = False, flagged: bool = False) -> dict[str, str]:
    record = {"e": kind, "i": item, "c": str(created), "t": str(t)}
    if kind == "exit":
        record.update(b=_b(bad), f=_b(flagged))
    else:  # drop, giveup
        record["s"] = "w"
    return record


def make_fold(latency: float = 10.0, scale: float = 1.0, start: float = 0.0) -> EventFold:
    return EventFold(["w"], ["jobs"], Sla(latency=latency), time_scale=scale, origin=0.0, start=start)


def fold_interval(fold: EventFold, records: list[dict[str, str]], now: float, **kw):
    for record in records:
        fold.add(record, now)
    return fold.close(now, **kw)


# ------------------------------------------------------------------------------------------------
# One interval's figures
# ------------------------------------------------------------------------------------------------
def test_queue_and_busy_areas_waits_and_peaks_over_two_intervals() -> None:
    fold = make_fold()
    first = fold_interval(
        fold, [arrive("a", 1), enter("k1", "a", 1), start("k1", 4, 1), arrive("b", 6), enter("k2", "b", 6)], 10
    )
    w = first.stages["w"]
    assert (first.start, first.end) == (0, 10)
    assert w.queue_area == pytest.approx(3 + 4)  # k1 waited 1..4, k2 6..10 (still waiting)
    assert w.busy_area == pytest.approx(6)  # k1 in service 4..10 (still running)
    assert (w.arrivals, w.started, w.mean_wait, w.peak, w.waiting, w.running) == (2, 1, 3.0, 1, 1, 1)
    assert first.sources == {"jobs": 2}

    # A start stamped before the interval but read in it (k3 started at 9.5): no queue area
    # inside the interval, and in service at the interval's start.
    records = [enter("k3", "c", 8), start("k3", 9.5, 8), finish("k1", 12, 1, 4), leave("exit", "a", 1, 12)]
    records += [start("k2", 13, 6), finish("k2", 15, 6, 13), leave("exit", "b", 6, 15, bad=True, flagged=True)]
    second = fold_interval(fold, records, 20)
    w = second.stages["w"]
    assert w.queue_area == pytest.approx(3)  # k2 10..13; k3 entered and started before 10
    assert w.busy_area == pytest.approx(2 + 2 + 10)  # k1 10..12, k2 13..15, k3 10..20
    assert w.mean_wait == pytest.approx((7 + 1.5) / 2) and w.started == 2
    assert w.peak == 2  # k1 and k3 from the start, k1 ends at 12, k2 runs 13..15 beside k3
    assert (w.completed, w.arrivals, w.running, w.waiting) == (2, 1, 1, 0)
    assert (second.completed, second.caught, second.escapes) == (2, 1, 0)
    assert sorted(second.latencies) == [9, 11] and second.mean_latency == 10
    assert second.late == 1  # a: 11 s > 10 s, late when it left; b: 9 s
    assert fold.totals.completed == 2 and fold.totals.waits.count == 3


def test_waits_and_latencies_are_scenario_seconds_and_areas_wall_seconds() -> None:
    fold = make_fold(latency=10.0, scale=4.0)  # 1 wall second = 4 scenario seconds
    out = fold_interval(
        fold,
        [arrive("a", 1), enter("k", "a", 1), start("k", 2, 1), finish("k", 3, 1, 2), leave("exit", "a", 1, 3.5)],
        5,
    )
    assert out.stages["w"].mean_wait == 4.0 and out.latencies == [10.0]
    assert out.stages["w"].queue_area == 1.0 and out.stages["w"].busy_area == 1.0
    assert out.late == 0  # exactly at the deadline (10 scenario s) is not late: Sla.is_late is strict
    assert fold.totals.mean_wait == 4.0 and fold.totals.wait_percentile(50) == pytest.approx(4.0, rel=0.01)


# ------------------------------------------------------------------------------------------------
# Deadlines
# ------------------------------------------------------------------------------------------------
def test_an_item_is_late_once_when_its_deadline_passes_in_the_system() -> None:
    fold = make_fold(latency=10.0)
    assert fold_interval(fold, [arrive("a", 1), arrive("b", 2), leave("drop", "b", 2, 3)], 10).late == 0
    assert fold_interval(fold, [], 11).late == 0  # a's deadline is 11: not passed at 11 itself
    assert fold.tracked()["items"] == 2, "a in the system, b gone: both until their deadline is checked"
    assert fold_interval(fold, [], 12.5).late == 1  # a is late; b left in time
    assert fold.tracked() == {"deadlines": 0, "items": 0, "waiting": 0, "running": 0}, "both forgotten"
    later = fold_interval(fold, [leave("exit", "a", 1, 30)], 40)
    assert later.late == 0 and later.completed == 1 and later.latencies == [29]
    assert fold.totals.late == 1


def test_an_item_late_on_leaving_is_not_counted_again_at_its_deadline() -> None:
    fold = make_fold(latency=10.0)
    out = fold_interval(fold, [arrive("a", 1), leave("giveup", "a", 1, 11.5)], 12)
    assert (out.late, out.failed) == (1, 1)
    assert fold_interval(fold, [], 30).late == 0 and fold.totals.late == 1


def test_items_the_fold_did_not_see_arrive_are_checked_when_they_leave() -> None:
    """An item created before the fold started watching has no arrive record in its stream."""
    fold = make_fold(latency=10.0, start=100.0)
    out = fold_interval(fold, [leave("exit", "old", 80, 101), leave("exit", "older", 95, 102)], 110)
    assert out.late == 1 and out.completed == 2


def test_drops_and_giveups_leave_the_system() -> None:
    fold = make_fold(latency=5.0)
    records = [arrive("a", 0), enter("k", "a", 0), leave("drop", "b", 0, 1), leave("drop", "c", 0, 7)]
    records += [start("k", 1, 0), finish("k", 2, 0, 1, failed=True), leave("giveup", "a", 0, 2)]
    out = fold_interval(fold, records, 10)
    assert (out.drops, out.failed, out.completed, out.stages["w"].drops, out.stages["w"].failures) == (2, 1, 0, 2, 1)
    assert out.late == 1  # c was dropped 7 s after it was created
    assert fold.totals.drops == 2 and fold.totals.failed == 1


# ------------------------------------------------------------------------------------------------
# Redelivery, retries, lost records
# ------------------------------------------------------------------------------------------------
def test_a_redelivered_start_ends_the_earlier_attempt() -> None:
    fold = make_fold()
    records = [enter("k", "a", 1), start("k", 2, 1), start("k", 5, 1), finish("k", 6, 1, 5)]
    w = fold_interval(fold, records, 10).stages["w"]
    assert w.peak == 1, "one visit in service at a time, not two"
    assert (w.running, w.completed, w.started) == (0, 1, 2)
    assert w.busy_area == pytest.approx(1)  # the redelivered attempt; when the first one died is unknown

    fold = make_fold()  # the first attempt began in an earlier interval
    fold_interval(fold, [enter("k", "a", 1), start("k", 2, 1)], 10)
    w = fold_interval(fold, [start("k", 12, 1), finish("k", 13, 1, 12)], 20).stages["w"]
    assert w.peak == 1 and w.running == 0


def test_a_retry_is_a_queue_entry_but_not_an_arrival() -> None:
    fold = make_fold()
    records = [arrive("a", 0), enter("k1", "a", 0), start("k1", 1, 0), finish("k1", 2, 0, 1, failed=True)]
    records += [enter("k2", "a", 2, retry=1), start("k2", 4, 2), finish("k2", 5, 2, 4), leave("exit", "a", 0, 5)]
    w = fold_interval(fold, records, 10).stages["w"]
    assert (w.arrivals, w.retries, w.failures, w.completed) == (1, 1, 1, 1)
    assert w.queue_area == pytest.approx(1 + 2) and w.mean_wait == pytest.approx(1.5)
    assert fold.totals.retries == 1
    # a record with r=0 (or none) is a first visit
    assert fold_interval(fold, [enter("k3", "b", 11, retry=0)], 20).stages["w"].arrivals == 1


def test_visits_whose_records_were_lost_are_forgotten() -> None:
    fold = make_fold()
    fold_interval(fold, [enter("q1", "a", 1), enter("q2", "b", 2), enter("r1", "c", 1), start("r1", 3, 1)], 10)
    # Redis restarted: the queue is empty and the worker runs nothing
    w = fold_interval(fold, [], 20, queued={"w": 0}, active={"w": set()}).stages["w"]
    assert (w.waiting, w.running) == (0, 0)
    assert fold.tracked()["waiting"] == 0 and fold.tracked()["running"] == 0


# ------------------------------------------------------------------------------------------------
# Bounded memory over a long run
# ------------------------------------------------------------------------------------------------
def synthetic_stream(seed: int = 0, rate: float = 50.0, latency: float = 2.0) -> Iterator[dict[str, str]]:
    """An endless stream of records in time order, as one stage's tasks write them: Poisson
    arrivals, exponential waits and services, 10 % failed visits retried up to twice, 1 % drops,
    a few items past the deadline. Task ids are UUIDs, as Celery's."""
    rng, order, heap = random.Random(seed), itertools.count(), []
    t = 0.0
    for index in itertools.count():
        t += rng.expovariate(rate)
        item = f"jobs-{index}"
        pending = [arrive(item, t)]
        if rng.random() < 0.01:
            pending.append(leave("drop", item, t, t))
        else:
            visit, attempt = t, 0
            while True:
                key = str(uuid.UUID(int=rng.getrandbits(128)))
                began = visit + rng.expovariate(1 / (0.3 * latency))
                ended = began + rng.expovariate(20.0)
                failed = rng.random() < 0.1
                pending += [enter(key, item, visit, retry=attempt or None), start(key, began, visit)]
                pending.append(finish(key, ended, visit, began, failed=failed))
                if failed and attempt < 2:
                    visit, attempt = ended, attempt + 1
                    continue
                pending.append(leave("giveup" if failed else "exit", item, t, ended, bad=rng.random() < 0.1))
                break
        for record in pending:
            heapq.heappush(heap, (float(record["t"]), next(order), record))
        while heap and heap[0][0] <= t:
            yield heapq.heappop(heap)[2]


def feed(fold: EventFold, stream: Iterator[dict[str, str]], n: int, state: dict, interval: float = 1.0) -> None:
    """Fold ``n`` records, closing an interval every ``interval`` seconds of record time."""
    boundary = state.setdefault("boundary", interval)
    for record in itertools.islice(stream, n):
        while float(record["t"]) >= boundary:
            fold.close(boundary)
            boundary += interval
        fold.add(record, boundary)
    state["boundary"] = boundary


def deep_size(obj: object, seen: set[int] | None = None) -> int:
    """Bytes held by ``obj`` and everything it holds (containers, and the fold's own objects)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | deque):
        size += sum(deep_size(x, seen) for x in obj)
    elif type(obj).__module__.startswith("adaptflow.runtime.live") and hasattr(obj, "__dict__"):
        size += deep_size(vars(obj), seen)
    return size


def test_a_million_events_fold_in_bounded_memory() -> None:
    """1,000,000 records (about 170,000 items over 3,400 intervals): the fold holds what is in
    flight, not what has been; the bytes it holds after 1M records are those after 100k."""
    fold = make_fold(latency=2.0)
    stream, state = synthetic_stream(), {}
    feed(fold, stream, 100_000, state)
    early, early_sizes = deep_size(fold), fold.tracked()
    feed(fold, stream, 900_000, state)
    late, sizes = deep_size(fold), fold.tracked()
    print(f"\nfold holds {early / 1e3:.0f} kB after 100k records {early_sizes}, {late / 1e3:.0f} kB after 1M {sizes}")
    totals = fold.totals
    assert totals.arrived > 150_000 and totals.retries > 10_000 and totals.late > 0
    assert totals.waits.count > totals.arrived  # every visit's wait, in a fixed number of buckets
    # in-flight counts fluctuate and more histogram buckets fill; a list of every wait alone would
    # hold about 10 MB by now
    assert late < 2 * early and late < 250_000, (early, late)
    # what the fold holds is what is in flight: about rate x (SLA + an interval) items
    assert sizes["items"] <= 50 * (2.0 + 1.0) * 2 and sizes["deadlines"] == sizes["items"]
    assert sizes["waiting"] + sizes["running"] <= 200


@pytest.mark.slow
def test_a_million_events_fold_in_bounded_memory_under_tracemalloc() -> None:
    """The same, measured by Python's allocator (every allocation, not only the fold's
    containers): the peak over records 100k..1M is that of the first 100k. Slow: tracemalloc
    makes the fold about four times slower (about 20 s)."""
    fold = make_fold(latency=2.0)
    stream, state = synthetic_stream(), {}
    gc.collect()
    tracemalloc.start()
    try:
        feed(fold, stream, 100_000, state)
        early_current, early_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        feed(fold, stream, 900_000, state)
        late_current, late_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\ntraced after 100k records: {early_current / 1e6:.2f} MB (peak {early_peak / 1e6:.2f} MB); "
          f"after 1M: {late_current / 1e6:.2f} MB (peak over 100k..1M {late_peak / 1e6:.2f} MB)")  # fmt: skip
    assert late_peak < 1.5 * early_peak, (early_peak, late_peak)


# ------------------------------------------------------------------------------------------------
# The whole-run histogram
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 99.9, 100])
def test_histogram_percentiles_are_within_the_stated_relative_error(q: float) -> None:
    values = np.random.default_rng(5).lognormal(0.0, 2.0, 50_000)
    hist = LogHistogram(relative_error=0.01)
    hist.extend(values.tolist())
    assert hist.percentile(q) == pytest.approx(np.percentile(values, q), rel=0.01)
    assert hist.mean == pytest.approx(values.mean(), rel=1e-12) and len(hist) == 50_000


def test_histogram_of_zeros_and_an_empty_one() -> None:
    hist = LogHistogram()
    assert math.isnan(hist.percentile(50)) and math.isnan(hist.mean)
    hist.extend([0.0, 0.0, 0.0, 2.0])
    assert hist.percentile(50) == 0.0 and hist.percentile(100) == 2.0
    with pytest.raises(ValueError):
        hist.percentile(101)


def test_the_fold_is_pure() -> None:
    """The fold and its histogram import no broker, no Celery and no clock: everything they know
    comes in as records and interval bounds."""
    import ast
    from pathlib import Path

    import adaptflow.runtime.live as live

    for name in ("fold.py", "histogram.py"):
        tree = ast.parse((Path(live.__file__).parent / name).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {"." * n.level + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in imported if m.split(".")[0] in {"redis", "celery", "kombu", "time"}}, (name, imported)
        assert not {m for m in imported if m.startswith(("..", "adaptflow.runtime", "adaptflow.agents"))}, imported
