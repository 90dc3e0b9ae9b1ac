"""A user's Celery app observed through Celery's own task events: the mapping file and the
translation of events into the event fold's records (pure: synthetic events, no broker)."""

from __future__ import annotations

import pytest

from adaptflow.runtime.live.fold import EventFold
from adaptflow.runtime.live.mapping import load_mapping
from adaptflow.runtime.live.translate import EventTranslator
from adaptflow.scenario.schema import Sla

MAPPING = {
    "stages": {
        "parse": {"queues": ["parse"], "worker": "parse@box"},
        "check": {"tasks": ["etl.check"]},
        "write": {"queues": ["write"]},
    },
    "sources": {"uploads": {"tasks": ["etl.parse"]}},
    "end": {"tasks": ["etl.write"]},
}


def sent(uuid, name, queue, t, root=None, parent=None):
    return {"type": "task-sent", "uuid": uuid, "name": name, "queue": queue, "timestamp": t, "root_id": root or uuid}


def event(kind, uuid, t, **fields):
    return {"type": f"task-{kind}", "uuid": uuid, "timestamp": t, **fields}


def one_item(t0=100.0, item="a"):
    """An upload parsed, checked and written: three visits linked by root_id."""
    return [
        sent(f"{item}1", "etl.parse", "parse", t0, root=item),
        event("started", f"{item}1", t0 + 1),
        {**sent(f"{item}2", "etl.check", "other", t0 + 3, root=item), "parent_id": f"{item}1"},
        event("succeeded", f"{item}1", t0 + 3.1, runtime=2.1),
        event("started", f"{item}2", t0 + 4),
        {**sent(f"{item}3", "etl.write", "write", t0 + 5, root=item), "parent_id": f"{item}2"},
        event("succeeded", f"{item}2", t0 + 5.1),
        event("started", f"{item}3", t0 + 5.5),
        event("succeeded", f"{item}3", t0 + 6.5),
    ]


def test_a_chain_of_tasks_is_one_item_visiting_three_stages():
    records = EventTranslator(load_mapping(MAPPING)).translate(one_item())
    kinds = [(r["e"], r.get("s")) for r in records]
    assert kinds[0] == ("arrive", None) and records[0]["src"] == "uploads" and records[0]["i"] == "a"
    assert [s for e, s in kinds if e == "enter"] == ["parse", "check", "write"]  # check: by task name
    assert kinds[-1] == ("exit", None) and records[-1]["c"] == "100.0" and records[-1]["t"] == "106.5"
    start = next(r for r in records if r["e"] == "start" and r["s"] == "write")
    assert start["q"] == "105.0"  # the wait is from task-sent


def test_the_fold_measures_waits_services_and_latency_from_translated_events():
    records = EventTranslator(load_mapping(MAPPING)).translate(one_item() + one_item(110.0, "b"))
    fold = EventFold(["parse", "check", "write"], ["uploads"], Sla(latency=60), 1.0, origin=0.0, start=99.0)
    for r in records:
        fold.add(r, now=130.0)
    interval = fold.close(130.0)
    assert interval.sources == {"uploads": 2} and interval.completed == 2
    assert interval.latencies == [6.5, 6.5]
    assert interval.stages["check"].mean_wait == pytest.approx(1.0)  # sent 3, started 4
    assert interval.stages["parse"].busy_area == pytest.approx(2 * 2.1)


def test_events_out_of_order_and_a_start_before_its_sent_still_make_the_visit():
    events = one_item()
    events[0], events[1] = events[1], events[0]  # task-started arrives first, and a later batch
    translator = EventTranslator(load_mapping(MAPPING))
    first = translator.translate([events[0]])  # the start alone, stamped 101: it waits for its task-sent
    assert first == [] and translator.tracked()["early"] == 1
    rest = translator.translate(events[1:])
    assert [r["e"] for r in rest[:3]] == ["arrive", "enter", "start"]
    assert translator.tracked() == {"tasks": 0, "items": 0, "early": 0}


def test_a_retry_re_enters_the_same_stage_and_a_final_failure_gives_up_the_item():
    events = [
        sent("x", "etl.parse", "parse", 0.0),
        event("started", "x", 1.0),
        event("retried", "x", 2.0, exception="Timeout"),
        sent("x", "etl.parse", "parse", 2.1),  # the retry is published again with the same id
        event("started", "x", 3.0),
        event("failed", "x", 4.0, exception="Timeout"),
    ]
    records = EventTranslator(load_mapping(MAPPING)).translate(events)
    assert [(r["e"], r.get("r"), r.get("x")) for r in records] == [
        ("arrive", None, None),
        ("enter", None, None),
        ("start", None, None),
        ("finish", None, "1"),
        ("enter", "1", None),
        ("start", None, None),
        ("finish", None, "1"),
        ("giveup", None, None),
    ]


def test_without_task_sent_events_task_received_enters_and_the_worker_names_the_stage():
    events = [
        {"type": "task-received", "uuid": "y", "name": "unknown.task", "timestamp": 1.0, "hostname": "parse@box"},
        {"type": "task-received", "uuid": "y", "name": "unknown.task", "timestamp": 1.0, "hostname": "parse@box"},
        event("started", "y", 2.0),
        event("succeeded", "y", 3.0),
    ]
    records = EventTranslator(load_mapping(MAPPING)).translate(events)
    assert [(r["e"], r.get("s")) for r in records] == [("enter", "parse"), ("start", "parse"), ("finish", "parse")]


def test_unmapped_tasks_are_counted_and_memory_stays_bounded():
    translator = EventTranslator(load_mapping(MAPPING), capacity=50)
    translator.translate([sent(f"u{k}", "other.task", "elsewhere", float(k)) for k in range(10)])
    assert translator.unmapped == 10 and translator.tracked()["tasks"] == 0
    translator.translate([sent(f"p{k}", "etl.parse", "parse", float(k)) for k in range(500)])  # never finish
    assert translator.tracked()["tasks"] == 50 and translator.tracked()["items"] == 50
    assert translator.forgotten == 900


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"stages": {"parse": {}}}, "stages.parse: give the stage's queues or tasks"),
        ({"end": {"stages": ["nope"]}}, "end.stages: 'nope' is not a stage"),
        ({"stages": {"a": {"queues": ["q"]}, "b": {"queues": ["q"]}}}, "stages.b.queues: 'q' is already stage 'a'"),
        ({"sources": {"uploads": {"tasks": []}}}, "sources.uploads.tasks"),
        ({"stages": {"parse": {"queue": ["parse"]}}}, "unknown key 'queue'"),
    ],
)
def test_a_bad_mapping_is_refused_with_the_field_named(patch, needle):
    with pytest.raises(ValueError, match="mapping is not valid") as info:
        load_mapping({**MAPPING, **patch})
    assert needle in str(info.value)


def test_a_loop_that_sizes_pools_refuses_a_mapping_without_every_stages_worker():
    mapping = load_mapping(MAPPING)  # only parse names its worker
    with pytest.raises(ValueError, match=r"stages \['check', 'write'\] name no worker"):
        mapping.require_workers()
    with pytest.raises(ValueError, match=r"stages \['extra'\] name no worker"):
        load_mapping({**MAPPING, "stages": {"parse": MAPPING["stages"]["parse"]}}).require_workers(["parse", "extra"])
