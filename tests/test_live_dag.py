"""Fork and join live: a DAG scenario (tests/scenarios/dag_small.yaml: jobs -> split -> fork
[a, b] -> join at m -> exit) on a real redis-server and real Celery prefork workers (see
live_fixtures.py). Every item is counted from the run's own event stream: each item exits (or
leaves failed) once, m serves it once, and each branch serves one part of it."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from adaptflow.agents import SimMonitor
from adaptflow.runtime.celery_app import context_of, make_app
from adaptflow.runtime.live import CeleryMonitor, EventFold, PoolLedger, WallClock
from adaptflow.scenario import load_scenario
from adaptflow.simulator import Simulation

from .live_fixtures import TIME_SCALE, app_for, events, wait_for, write_scenario

DAG = Path(__file__).parent / "scenarios" / "dag_small.yaml"
STAGES = ("split", "a", "b", "m")
N_ITEMS = 10


def dag(**stages: dict) -> dict:
    """dag_small with some stages' fields replaced (``b={"failure": ...}``)."""
    spec = yaml.safe_load(DAG.read_text())
    for name, fields in stages.items():
        spec["stages"][name].update(fields)
    return spec


def served(app, stage: str) -> Counter:
    """Items (or parts) that entered ``stage``, by id, first visits only (a retry re-enters)."""
    return Counter(e["i"] for e in events(app, "enter") if e["s"] == stage and not int(e.get("r") or 0))


def assert_each_item_whole_once(app, items: list[str]) -> None:
    """Every item left once (exit or giveup), m served each exited item once, and each branch
    served one part of every item."""
    left = Counter(e["i"] for e in events(app) if e["e"] in ("exit", "drop", "giveup"))
    assert sorted(left) == sorted(items), f"lost: {sorted(set(items) - set(left))}"
    assert set(left.values()) == {1}, f"counted twice: {[i for i, n in left.items() if n > 1]}"
    exited = sorted(e["i"] for e in events(app, "exit"))
    assert sorted(served(app, "m")) == exited and set(served(app, "m").values()) == {1}
    assert served(app, "a") == Counter(f"{i}.0" for i in items), "one part per item at a"
    assert served(app, "b") == Counter(f"{i}.1" for i in items), "one part per item at b"
    completed = Counter(e["i"] for e in events(app, "join") if e["o"] == "complete")
    assert sorted(completed) == exited and set(completed.values()) <= {1}, "each join completed once"


# ------------------------------------------------------------------------------------------------
# Without Redis
# ------------------------------------------------------------------------------------------------
def test_job_classes_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match=r"classes \['gold', 'silver'\] \(job classes\) are not supported live"):
        make_app("etl_dag", "redis://127.0.0.1:1/0")
    make_app(DAG, "redis://127.0.0.1:1/0")  # a fork and a join are run live


def test_a_parts_drop_after_its_item_is_gone_counts_at_its_stage_only() -> None:
    spec = load_scenario(DAG)
    fold = EventFold(spec.stages, spec.sources, spec.sla, 1.0, 0.0, 0.0)
    fold.add({"e": "arrive", "src": "jobs", "i": "jobs-0", "t": "0.1"}, 1.0)
    fold.add({"e": "drop", "s": "a", "i": "jobs-0", "c": "0.1", "t": "0.5"}, 1.0)
    fold.add({"e": "drop", "s": "b", "i": "jobs-0.1", "c": "0.1", "t": "0.6", "w": "0"}, 1.0)
    interval = fold.close(1.0)
    assert interval.drops == 1, "the item is dropped once"
    assert (interval.stages["a"].drops, interval.stages["b"].drops) == (1, 1), "each stage refused a part"


# ------------------------------------------------------------------------------------------------
# The join in Redis
# ------------------------------------------------------------------------------------------------
@pytest.mark.live
def test_the_join_counts_each_part_once_and_completes_once(broker: str) -> None:
    ctx = context_of(app_for(DAG, broker))
    joins = ctx.joins
    family = {"id": "f1", "join": "m", "n": 2, "parent": {}}
    assert joins.arrive({**family, "k": 0}, flagged=True) == ("wait", False)
    assert joins.arrive({**family, "k": 0}, flagged=False)[0] == "wait", "a part arriving twice counts once"
    assert joins.waiting(["m"]) == {"m": 1}
    assert joins.arrive({**family, "k": 1}, flagged=False) == ("complete", True), "a flagged part flags the item"
    assert joins.arrive({**family, "k": 1}, flagged=False)[0] == "complete", "the completer, asked again"
    assert joins.arrive({**family, "k": 0}, flagged=False)[0] == "duplicate", "no second completion"
    assert not joins.kill({**family, "k": 0}, "0"), "a completed family cannot die"
    assert joins.waiting(["m"]) == {"m": 0}

    dead = {"id": "f2", "join": None, "n": 3, "parent": {}}
    assert joins.arrive({**dead, "k": 0}, flagged=False)[0] == "wait"
    assert joins.waiting(["exit"]) == {"exit": 1}
    assert joins.kill({**dead, "k": 1}, "1") and joins.kill({**dead, "k": 1}, "1"), "the first killer, again"
    assert not joins.kill({**dead, "k": 2}, "2"), "the item is gone once"
    assert joins.waiting(["exit"]) == {"exit": 0}, "the parts waiting were released"
    assert joins.arrive({**dead, "k": 2}, flagged=False)[0] == "dead", "a later part is discarded"
    assert joins.waiting(["exit"]) == {"exit": 0}
    for key in joins.keys(dead)[:4]:
        assert ctx.client.ttl(key) in (-2, *range(3600, 86_401)), f"{key} expires (or is gone)"
    assert not ctx.client.exists(joins.keys(family)[0]), "a completed family's set is deleted"


# ------------------------------------------------------------------------------------------------
# Real workers
# ------------------------------------------------------------------------------------------------
@pytest.mark.live
@pytest.mark.slow  # a second live run, of the dead-family path: make test-slow (about 9 s)
def test_a_given_up_part_fails_its_item_once(broker: str, workers, tmp_path: Path) -> None:
    """b fails half its parts for good: their items leave failed once, never reach m, and the
    other part is released or discarded at the join (nothing waits there at the end)."""
    path = write_scenario(tmp_path, dag(b={"failure": {"prob": 0.5, "max_retries": 0}}) | {"name": "dag_fail"})
    workers.start(path, broker, dict.fromkeys(STAGES, 2))
    app = app_for(path, broker)
    ctx = context_of(app)
    n = 20  # with 0.5 chance each, all or none failed: 2 in a million
    items = [ctx.submit("jobs", k) for k in range(n)]
    wait_for(lambda: len(events(app, "exit")) + len(events(app, "giveup")) >= n, 30, 0.1, "every item out")
    # two parts at the join per exited item, the a part of each failed one
    wait_for(lambda: len(events(app, "join")) >= 2 * len(events(app, "exit")) + len(events(app, "giveup")),
             10, 0.1, "every a part at the join")  # fmt: skip
    time.sleep(0.3)
    assert_each_item_whole_once(app, items)
    failed = [e["i"] for e in events(app, "giveup")]
    assert 0 < len(failed) < n
    failures = sum(1 for e in events(app, "finish") if e["s"] == "b" and e["x"] == "1")
    assert failures == len(failed), "one failed part per failed item"
    outcomes = {e["p"]: e["o"] for e in events(app, "join") if e["i"] in failed}
    assert set(outcomes) == {f"{i}.0" for i in failed}, "a failed item's a part reached the join..."
    assert set(outcomes.values()) <= {"wait", "dead"}, "...and waited until b failed, or was discarded"
    assert ctx.joins.waiting(["m"]) == {"m": 0} and ctx.client.scard(ctx.items_key) == 0


@pytest.mark.slow  # a third live run (7 s); the killed-worker fork/join run stays in make test
@pytest.mark.live
def test_the_monitor_counts_items_whole_and_parts_waiting_at_the_join(broker: str, workers) -> None:
    """b unserved: every item's a part waits at m. The monitor sees items (not parts) in the
    system and the parts waiting at m, in the snapshot fields SimMonitor fills."""
    started = {w.stage: w.name for w in workers.start(DAG, broker, {"split": 2, "a": 2, "m": 2})}
    app = app_for(DAG, broker)
    ctx = context_of(app)
    monitor = CeleryMonitor(app, PoolLedger(app, started).sync(), WallClock(TIME_SCALE))
    n = 6
    items = [ctx.submit("jobs", k) for k in range(n)]
    wait_for(lambda: len(events(app, "join")) >= n, 15, 0.1, "every a part at the join")
    first = monitor.observe()
    assert first.join_waiting == {"m": n} and first.in_system == n, (first.join_waiting, first.in_system)
    assert first.stages["b"].queue_length == n and first.completed == 0
    sim = Simulation(load_scenario(DAG), rng=np.random.default_rng(0))
    sim.run(5.0)
    assert set(SimMonitor(sim).observe().join_waiting) == set(first.join_waiting), "the same joins as simulated"

    workers.start(DAG, broker, {"b": 2})
    wait_for(lambda: len(events(app, "exit")) >= n, 15, 0.1, "every item out")
    second = monitor.observe()
    assert second.join_waiting == {"m": 0} and second.in_system == 0
    assert first.completed + second.completed == n
    assert first.stages["m"].arrivals + second.stages["m"].arrivals == n, "m served each item once"
    assert first.stages["a"].arrivals + second.stages["a"].arrivals == n
    assert_each_item_whole_once(app, items)


def kill_a_running_child(app, worker) -> None:
    """SIGKILL one prefork child of ``worker`` in the middle of a task."""

    def running_pid() -> int | None:
        active = app.control.inspect(destination=[worker.name], timeout=1.0).active() or {}
        pids = [t["worker_pid"] for t in active.get(worker.name, []) if t.get("worker_pid") and t.get("time_start")]
        return pids[0] if pids else None

    wait_for(lambda: running_pid() is not None, 10, 0.05, "a running part")
    time.sleep(0.1)
    os.kill(running_pid(), signal.SIGKILL)


@pytest.mark.live
def test_fork_and_join_run_each_item_once_through_a_killed_worker_process(broker: str, workers, tmp_path: Path) -> None:
    """Each item forks at split, its parts are served at a and b, and m serves it once, on real
    workers; a prefork child of a's worker killed mid-part loses no part (its visit is
    redelivered, reject on worker lost) and counts none twice."""
    path = write_scenario(tmp_path, dag(a={"service": {"dist": "deterministic", "mean": 3.0}}) | {"name": "dag_k"})
    started = {w.stage: w for w in workers.start(path, broker, dict.fromkeys(STAGES, 2))}
    app = app_for(path, broker)
    ctx = context_of(app)
    items = [ctx.submit("jobs", k, bad=k % 2 == 0) for k in range(N_ITEMS)]
    kill_a_running_child(app, started["a"])
    wait_for(lambda: len(events(app, "exit")) >= N_ITEMS, 30, 0.2, "every item out")
    time.sleep(0.5)  # a duplicate would show by now
    assert_each_item_whole_once(app, items)
    starts = Counter(e["k"] for e in events(app, "start"))
    assert max(starts.values()) == 2, "the killed part's visit ran again"
    flagged = [e for e in events(app, "exit") if e["f"] == "1"]
    assert flagged and all(e["b"] == "1" for e in flagged), "a part flagged at a flags its item (bad ones only)"
    assert ctx.client.scard(ctx.items_key) == 0 and ctx.joins.waiting(["m"]) == {"m": 0}


@pytest.mark.slow  # the visibility timeout (10 s) and a restarted worker: about 20 s
@pytest.mark.live
def test_a_killed_worker_group_loses_no_part(broker: str, workers, tmp_path: Path) -> None:
    """a's whole worker (main process and children) SIGKILLed with parts running and queued: its
    parts come back after the visibility timeout, and every item joins and exits once."""
    path = write_scenario(tmp_path, dag(a={"service": {"dist": "deterministic", "mean": 3.0}}) | {"name": "dag_g"})
    started = {w.stage: w for w in workers.start(path, broker, dict.fromkeys(STAGES, 2))}
    app = app_for(path, broker)
    ctx = context_of(app)
    items = [ctx.submit("jobs", k) for k in range(10)]
    wait_for(lambda: sum(e["s"] == "a" for e in events(app, "start")) >= 2, 10, 0.02, "parts running at a")
    os.killpg(started["a"].pid, signal.SIGKILL)
    started["a"].process.wait(5)
    assert ctx.client.hlen("unacked") >= 2
    workers.start(path, broker, {"a": 2})
    wait_for(lambda: len(events(app, "exit")) >= len(items), ctx.visibility_timeout * 1.25 + 20, 0.2, "all out")
    time.sleep(0.5)
    assert_each_item_whole_once(app, items)
    assert ctx.joins.waiting(["m"]) == {"m": 0} and ctx.client.scard(ctx.items_key) == 0


@pytest.mark.slow  # two worlds and four fresh workers: make test-slow
@pytest.mark.live
def test_compare_live_runs_a_dag_scenario(broker: str, tmp_path: Path) -> None:
    from adaptflow.experiments.compare_live import compare_live

    options = {"seed": 2, "duration": 20, "interval": 5, "time_scale": TIME_SCALE, "workdir": tmp_path / "cl"}
    table = compare_live(DAG, broker, "threshold", autoscaler=False, **options)
    assert list(table["world"]) == ["simulated", "simulated, min", "simulated, max", "live"]
    assert table["arrived"].max() - table["arrived"].min() <= 2 and (table["arrived"] > 20).all()
    assert (table["completed"] >= 0.5 * table["arrived"]).all() and (table["completed"] <= table["arrived"]).all()
    assert table[["mean_wait", "p95_latency", "throughput", "cost"]].notna().all().all()


@pytest.mark.slow  # fresh workers for a second shape: make test-slow
@pytest.mark.live
def test_a_scatter_of_drawn_parts_meets_at_the_exit(broker: str, workers, tmp_path: Path) -> None:
    """jobs -> scatter of 1 to 3 parts at work -> join: null: each item leaves once, when its
    last part does, and work serves exactly the parts its family was drawn with."""
    scatter = {"scatter": "work", "parts": {"low": 1, "high": 3}, "join": None}
    spec = {
        "name": "dag_scatter",
        "horizon": 600,
        "sla": {"latency": 10.0},
        "sources": {"jobs": {"process": "poisson", "rate": 1.0, "to": scatter}},
        "stages": {
            "work": {
                "workers": {"initial": 3, "min": 1, "max": 4, "cost_per_second": 1.0},
                "service": {"dist": "exponential", "mean": 0.5},
                "next": None,
            }
        },
    }  # fmt: skip
    path = write_scenario(tmp_path, spec)
    workers.start(path, broker, {"work": 3})
    app = app_for(path, broker)
    ctx = context_of(app)
    items = [ctx.submit("jobs", k) for k in range(N_ITEMS)]
    wait_for(lambda: len(events(app, "exit")) >= N_ITEMS, 30, 0.1, "every item out")
    time.sleep(0.3)
    exits = Counter(e["i"] for e in events(app, "exit"))
    assert sorted(exits) == sorted(items) and set(exits.values()) == {1}
    parts = Counter(e["i"].rsplit(".", 1)[0] for e in events(app, "enter") if e["s"] == "work")
    joined = Counter(e["i"] for e in events(app, "join"))
    assert parts == joined, "every part served at work reached the exit's join, once"
    assert set(parts.values()) <= {1, 2, 3} and len(set(parts.values())) > 1, "counts drawn in [1, 3]"
    last = {e["i"]: float(e["t"]) for e in events(app, "join")}  # the latest join record per item
    assert all(float(e["t"]) >= last[e["i"]] for e in events(app, "exit")), "out when the last part is"
    assert ctx.joins.waiting(["exit"]) == {"exit": 0} and ctx.client.scard(ctx.items_key) == 0
